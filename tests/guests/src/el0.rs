//! Running a piece of code at EL0, in AArch64 or AArch32 state, until it raises an exception.
//!
//! [`run`] saves the callee-saved registers and the stack pointer, loads x0-x14 (r0-r14 for a
//! 32-bit program: in User mode R0-R14 are X0-X14, Arm ARM D1.x "Mapping of the AArch32
//! registers to AArch64"), and ERETs to `entry` with the given SPSR. The first exception from
//! EL0 arrives at one of the lower-EL vectors (0x400-0x780); [`crate::exception`] hands it to
//! [`on_lower_el_exception`], which records it and returns to the [`run`] caller. The code at
//! EL0 must end with an exception (an SVC, say).
use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

global_asm!(
    r#"
    .section .text
    .balign 4
    .global guest_run_el0
guest_run_el0:
    sub     sp, sp, #96
    stp     x19, x20, [sp]
    stp     x21, x22, [sp, #16]
    stp     x23, x24, [sp, #32]
    stp     x25, x26, [sp, #48]
    stp     x27, x28, [sp, #64]
    stp     x29, x30, [sp, #80]
    adrp    x9, GUEST_EL0_RESUME_SP
    add     x9, x9, :lo12:GUEST_EL0_RESUME_SP
    mov     x10, sp
    str     x10, [x9]
    msr     elr_el1, x0
    msr     spsr_el1, x1
    mov     x16, x2
    ldp     x0, x1, [x16]
    ldp     x2, x3, [x16, #16]
    ldp     x4, x5, [x16, #32]
    ldp     x6, x7, [x16, #48]
    ldp     x8, x9, [x16, #64]
    ldp     x10, x11, [x16, #80]
    ldp     x12, x13, [x16, #96]
    ldr     x14, [x16, #112]
    isb
    eret

    .global guest_el0_resume
guest_el0_resume:
    adrp    x9, GUEST_EL0_RESUME_SP
    add     x9, x9, :lo12:GUEST_EL0_RESUME_SP
    ldr     x10, [x9]
    mov     sp, x10
    ldp     x19, x20, [sp]
    ldp     x21, x22, [sp, #16]
    ldp     x23, x24, [sp, #32]
    ldp     x25, x26, [sp, #48]
    ldp     x27, x28, [sp, #64]
    ldp     x29, x30, [sp, #80]
    add     sp, sp, #96
    ret
"#
);

unsafe extern "C" {
    fn guest_run_el0(entry: u64, spsr: u64, regs: *const u64);
    fn guest_el0_resume();
}

#[unsafe(no_mangle)]
static GUEST_EL0_RESUME_SP: AtomicU64 = AtomicU64::new(0);
static ACTIVE: AtomicBool = AtomicBool::new(false);
static VECTOR: AtomicU64 = AtomicU64::new(0);
static ESR: AtomicU64 = AtomicU64::new(0);
static FAR: AtomicU64 = AtomicU64::new(0);
static ELR: AtomicU64 = AtomicU64::new(0);
static SPSR: AtomicU64 = AtomicU64::new(0);
static REGS: [AtomicU64; 15] = [const { AtomicU64::new(0) }; 15];

/// SPSR_EL1 for AArch32 User mode (M[4:0] = 0b10000) in A32 state, A, I, F masked.
pub const SPSR_A32_USER: u64 = 0x1d0;
/// The same in T32 state (T, bit 5).
pub const SPSR_T32_USER: u64 = 0x1f0;

/// How an EL0 run ended.
#[derive(Clone, Copy, Debug)]
pub struct El0Exit {
    /// The vector's offset from VBAR_EL1 (0x400: lower EL AArch64 synchronous, 0x600: lower
    /// EL AArch32 synchronous, ...).
    pub vector: u64,
    pub esr: u64,
    pub far: u64,
    pub elr: u64,
    pub spsr: u64,
    /// x0-x14 (r0-r14) when the exception was taken.
    pub x: [u64; 15],
}

impl El0Exit {
    pub fn ec(&self) -> u8 {
        ((self.esr >> 26) & 0x3f) as u8
    }
}

/// Runs the code at `entry` at EL0 with SPSR_EL1 = `spsr` and x0-x14 = `x` until its first
/// exception.
///
/// # Safety
/// `entry` must be code for the state `spsr` selects that ends in an exception; it runs with
/// the MMU off, so it can reach any address this guest can.
pub unsafe fn run(entry: u64, spsr: u64, x: [u64; 15]) -> El0Exit {
    ACTIVE.store(true, Ordering::Release);
    // SAFETY: per the contract; guest_run_el0 returns (through guest_el0_resume) with the
    // callee-saved registers and the stack it saved, like a C function.
    unsafe { guest_run_el0(entry, spsr, x.as_ptr()) };
    ACTIVE.store(false, Ordering::Release);
    let mut regs = [0; 15];
    for (r, s) in regs.iter_mut().zip(REGS.iter()) {
        *r = s.load(Ordering::Relaxed);
    }
    El0Exit {
        vector: VECTOR.load(Ordering::Relaxed),
        esr: ESR.load(Ordering::Relaxed),
        far: FAR.load(Ordering::Relaxed),
        elr: ELR.load(Ordering::Relaxed),
        spsr: SPSR.load(Ordering::Relaxed),
        x: regs,
    }
}

/// Called by the exception handler for a vector from a lower EL (`kind` 8..16) with the saved
/// x0..x30. Returns false when no [`run`] is in progress.
pub(crate) fn on_lower_el_exception(kind: u64, frame: *mut u64) -> bool {
    if !ACTIVE.load(Ordering::Acquire) {
        return false;
    }
    let (esr, far, elr, spsr): (u64, u64, u64, u64);
    // SAFETY: reading the EL1 exception registers has no side effects.
    unsafe {
        core::arch::asm!("mrs {}, esr_el1", "mrs {}, far_el1", "mrs {}, elr_el1", "mrs {}, spsr_el1",
            out(reg) esr, out(reg) far, out(reg) elr, out(reg) spsr, options(nomem, nostack))
    };
    VECTOR.store(kind * 0x80, Ordering::Relaxed);
    ESR.store(esr, Ordering::Relaxed);
    FAR.store(far, Ordering::Relaxed);
    ELR.store(elr, Ordering::Relaxed);
    SPSR.store(spsr, Ordering::Relaxed);
    for (i, r) in REGS.iter().enumerate() {
        // SAFETY: `frame` points at the 31 registers the vector saved.
        r.store(unsafe { frame.add(i).read() }, Ordering::Relaxed);
    }
    let resume = guest_el0_resume as *const () as u64;
    // SAFETY: the vector returns with ERET to guest_el0_resume at EL1h with DAIF masked, which
    // restores the stack and registers `run` saved.
    unsafe {
        core::arch::asm!("msr elr_el1, {}", "msr spsr_el1, {}", in(reg) resume, in(reg) 0x3c5u64,
            options(nomem, nostack))
    };
    true
}
