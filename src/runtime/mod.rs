//! The running hypervisor: the boot sequence on the primary and secondary CPUs, and (later) the
//! VMs. This is glue between the pure logic of the crate and the `arch` layer; bare metal only.
pub mod boot;
