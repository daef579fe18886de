//! cargo-fuzz target `gzip`: see `kestrel_fuzz::gzip` (fuzz/src/harness.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kestrel_fuzz::gzip(data);
});
