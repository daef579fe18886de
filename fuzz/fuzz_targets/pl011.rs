//! cargo-fuzz target `pl011`: see `kestrel_fuzz::pl011` (fuzz/src/harness.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kestrel_fuzz::pl011(data);
});
