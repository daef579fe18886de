//! The hardware layer: the only place with inline assembly, system-register access, MMIO and
//! TLB maintenance. Compiled for the bare-metal AArch64 target only.
pub mod aarch64;
