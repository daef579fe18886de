//! Starting a secondary vCPU with PSCI CPU_ON at a Rust function, on its own stack.
//!
//! PSCI enters the target at `entry` with x0 = `context_id`, at EL1 with the MMU off (DEN0022
//! §6.4 "CPU_ON"); the trampoline below reads [`SecondaryBoot`] (its address is the context),
//! installs the vector table, switches to the given stack and calls the entry function.
//!
//! With the MMU off all memory is Device-nGnRnE (uncached), so what the boot CPU wrote before
//! the call is visible to the new CPU without cache maintenance; a DSB orders it before the
//! call. A secondary must not print (the console has no lock) nor use
//! [`crate::exception::probe`] (one shared record); signal the boot CPU through atomics (loads
//! and stores only: exclusives are not guaranteed on Device memory).
use core::arch::{asm, global_asm};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::psci::{self, Conduit};

global_asm!(
    r#"
    .section .text
    .balign 4
    .global guest_secondary_trampoline
guest_secondary_trampoline:
    ldr     x1, [x0, #24]
    msr     vbar_el1, x1
    isb
    ldr     x1, [x0]
    mov     sp, x1
    ldr     x1, [x0, #8]
    ldr     x0, [x0, #16]
    blr     x1
1:  wfi
    b       1b
"#
);

unsafe extern "C" {
    fn guest_secondary_trampoline();
    static guest_vectors: u8;
}

/// What the trampoline reads: stack top, entry, its argument, VBAR_EL1 (in this order).
#[repr(C)]
pub struct SecondaryBoot {
    sp: AtomicU64,
    entry: AtomicU64,
    arg: AtomicU64,
    vbar: AtomicU64,
}

impl SecondaryBoot {
    pub const fn new() -> Self {
        SecondaryBoot {
            sp: AtomicU64::new(0),
            entry: AtomicU64::new(0),
            arg: AtomicU64::new(0),
            vbar: AtomicU64::new(0),
        }
    }

    /// Fills in what the trampoline reads and orders the stores before a following CPU_ON.
    pub fn prepare(&self, stack_top: u64, entry: extern "C" fn(u64) -> !, arg: u64) {
        self.sp.store(stack_top & !0xf, Ordering::Relaxed);
        self.entry.store(entry as usize as u64, Ordering::Relaxed);
        self.arg.store(arg, Ordering::Relaxed);
        self.vbar
            .store(core::ptr::addr_of!(guest_vectors) as u64, Ordering::Relaxed);
        // SAFETY: a barrier; makes the stores above complete before the CPU_ON call.
        unsafe { asm!("dsb sy", options(nostack)) };
    }
}

impl Default for SecondaryBoot {
    fn default() -> Self {
        Self::new()
    }
}

/// A stack for a secondary CPU.
#[repr(C, align(16))]
pub struct Stack<const N: usize>(UnsafeCell<[u8; N]>);

// SAFETY: the memory is handed to exactly one CPU at a time by `start_secondary`; Rust code
// never forms a reference to its contents.
unsafe impl<const N: usize> Sync for Stack<N> {}

impl<const N: usize> Stack<N> {
    pub const fn new() -> Self {
        Stack(UnsafeCell::new([0; N]))
    }
    pub fn top(&self) -> u64 {
        self.0.get() as u64 + N as u64
    }
}

impl<const N: usize> Default for Stack<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// The address of the secondary entry trampoline (a valid CPU_ON entry point).
pub fn trampoline_address() -> u64 {
    guest_secondary_trampoline as *const () as u64
}

/// PSCI CPU_ON for `mpidr`, which then runs `entry(arg)` on the stack ending at `stack_top`.
/// `boot` must stay untouched until the new CPU runs `entry`. Returns the PSCI result.
pub fn start_secondary(
    conduit: Conduit,
    mpidr: u64,
    boot: &'static SecondaryBoot,
    stack_top: u64,
    entry: extern "C" fn(u64) -> !,
    arg: u64,
) -> i64 {
    boot.prepare(stack_top, entry, arg);
    psci::cpu_on(
        conduit,
        mpidr,
        trampoline_address(),
        boot as *const SecondaryBoot as u64,
    )
}
