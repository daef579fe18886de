//! cargo-fuzz target `cpio`: see `kestrel_fuzz::cpio` (fuzz/src/harness.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kestrel_fuzz::cpio(data);
});
