//! cargo-fuzz target `vgic_v2`: a GICv2 virtual GIC driven through its MMIO devices, its
//! interrupt inputs and the vCPU exit path; see `kestrel_fuzz::vgic` (fuzz/src/harness.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kestrel_fuzz::vgic(data, false);
});
