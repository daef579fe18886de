//! AArch64 at EL2: boot glue, MMU, caches and TLBs, exception entry, the physical UART, GIC,
//! timer and PSCI firmware calls.
pub mod boot;
pub mod cache;
pub mod console;
pub mod cpu;
pub mod early_uart;
pub mod exception;
pub mod gic;
pub mod guest_phys;
pub mod heap;
pub mod id_space;
pub mod mitigation;
pub mod mmu;
pub mod psci_fw;
pub mod shared_page;
pub mod stage2_hw;
pub mod vcpu_context;
pub mod vcpu_hw;
