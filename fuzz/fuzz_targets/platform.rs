//! cargo-fuzz target `platform`: see `kestrel_fuzz::platform` (fuzz/src/harness.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kestrel_fuzz::platform(data);
});
