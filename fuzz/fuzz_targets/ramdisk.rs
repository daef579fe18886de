//! cargo-fuzz target `ramdisk`: see `kestrel_fuzz::ramdisk` (fuzz/src/harness.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kestrel_fuzz::ramdisk(data);
});
