//! The running hypervisor: glue between the pure logic of the crate and the `arch` layer; bare
//! metal only.
//!
//! Layered from the bottom up; each module uses only those above it in this list, except where
//! noted:
//!
//! - [`machine`]: what is known about the machine once booted (features VMs are built for,
//!   forwarded interrupts, CPUs online, panic state, power-off).
//! - [`console`]: the shared console's output multiplexer and keyboard decoding.
//! - [`passthrough`]: which VM owns each forwarded physical interrupt; what no VM may be given.
//! - [`vm`]: one VM: memory, stage 2, vGIC, devices, PSCI state, counters.
//! - [`virtio`]: a VM's virtio devices and the RAM handle they use. It and [`vm`] refer to each
//!   other (a VM holds its devices; they are built from its images and RAM chunks): the one pair.
//! - [`percpu`]: each physical CPU's slot: the loaded vCPU, start requests, kicks, starting and
//!   parking a vCPU. Tells the registry that a stopping VM's last vCPU left through one hook.
//! - [`effects`]: carrying out what a VM's emulated device asked for.
//! - [`vms`]: the VM registry and lifecycle (boot, stop, end, restart, power-off).
//! - [`control`], [`irq`], [`idle`]: console input and commands, interrupts that are not the
//!   loaded vCPU's, the idle loop.
//! - [`exit`]: the exit path; [`boot`]: the boot sequence, the entry points from assembly (it
//!   enters the idle loop once [`vms`] has started the VMs).
pub mod boot;
pub mod console;
pub mod control;
pub mod effects;
pub mod exit;
pub mod idle;
pub mod irq;
pub mod machine;
pub mod passthrough;
pub mod percpu;
pub mod virtio;
pub mod vm;
pub mod vms;
