//! cargo-fuzz target `config`: see `kestrel_fuzz::config` (fuzz/src/harness.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kestrel_fuzz::config(data);
});
