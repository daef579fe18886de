//! cargo-fuzz target `virtio`: see `kestrel_fuzz::virtio` (fuzz/src/harness.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kestrel_fuzz::virtio(data);
});
