//! kestrel: a bare-metal AArch64 type-1 hypervisor for Linux guests.
//!
//! # Layering
//!
//! Everything in this crate except [`arch`] is *logic*: it holds no inline assembly, no MMIO and
//! no live system-register access, and `cargo test` runs it on the host. Side effects reach the
//! hardware through small traits that the arch layer implements for real and the tests implement
//! with fakes:
//!
//! - [`addr`]: typed host-physical, guest-physical (IPA) and hypervisor-virtual addresses.
//! - [`mm`]: the physical page allocator and the stage-2 page tables (walker, map/unmap,
//!   split/merge, dirty logging, the per-vCPU memory cache and the fault-time mapping decision).
//! - [`trap`]: decoding of exception syndromes (ESR_EL2) into typed exits.
//! - [`psci`]: SMCCC and PSCI 1.1 for guests, including the vCPU power-state machine.
//! - [`pv_time`]: SMCCC paravirtualized stolen time (Arm DEN0057A) for guests.
//! - [`sched`]: sharing physical CPUs between vCPUs: run queues and vCPU placement.
//! - [`mitigations`]: which CPU-vulnerability workarounds guests are offered (SMCCC).
//! - [`ratelimit`]: at most so many messages a guest can cause, per window of time.
//! - [`vgic`]: the virtual GIC (v2 and v3): per-interrupt state and list-register management.
//! - [`vdev`]: emulated devices, one per file, each behind [`vdev::MmioDevice`].
//! - [`console_cmd`]: the hypervisor console's command prompt (`Ctrl-A :`).
//! - [`guest`]: the ramdisk (cpio, gzip), VM configuration, arm64 Image header and guest DTB.
//! - [`platform`]: the machine description read from the DTB the hypervisor is handed.
//! - [`lifecycle`]: the count of live VMs and when the machine powers off.
//!
//! [`arch`] (bare-metal AArch64 only) is the one place for assembly glue, system registers,
//! TLB maintenance, the physical GIC, UART and PSCI calls. `src/main.rs` wires the two together.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod addr;
pub mod console_cmd;
pub mod console_mux;
pub mod console_rx;
pub mod guest;
pub mod lifecycle;
pub mod mitigations;
pub mod mm;
pub mod platform;
pub mod psci;
pub mod pv_time;
pub mod ratelimit;
pub mod sched;
pub mod trap;
pub mod vcpu;
pub mod vdev;
pub mod vgic;
pub mod virtio;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod arch;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod runtime;
