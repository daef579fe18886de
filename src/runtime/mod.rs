//! The running hypervisor: the boot sequence, the VM manager, the exit path and the shared
//! console. This is glue between the pure logic of the crate and the `arch` layer; bare metal
//! only.
pub mod boot;
pub mod console;
pub mod exit;
pub mod virtio;
pub mod vm;
pub mod vmm;
