//! The library of the `kestrel-fuzz` package: the harness functions the targets in
//! `fuzz_targets/` call. See `harness.rs` and docs/fuzzing.md.
#![forbid(unsafe_code)]

mod harness;

pub use harness::*;
