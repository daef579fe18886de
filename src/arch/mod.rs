//! Bare-metal AArch64
