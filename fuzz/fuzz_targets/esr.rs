//! cargo-fuzz target `esr`: see `kestrel_fuzz::esr` (fuzz/src/harness.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kestrel_fuzz::esr(data);
});
