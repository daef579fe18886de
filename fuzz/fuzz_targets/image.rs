//! cargo-fuzz target `image`: see `kestrel_fuzz::image` (fuzz/src/harness.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kestrel_fuzz::image(data);
});
