//! The EL1 exception vector table and "probing": running one access that may fault and learning
//! what happened, instead of dying.
//!
//! Every vector saves x0-x30 and calls [`guest_exception`]. A synchronous exception taken while a
//! [`probe`] is running is recorded (ESR_EL1, FAR_EL1, ELR_EL1, see [`Exception`]) and the
//! program resumes:
//! - at the address a probe stored in `LANDING` when there is one (for instruction aborts and
//!   PC alignment faults after a branch into the void, where ELR points at the target, and for
//!   anything that executing from a device may raise), see [`probe_exec`];
//! - otherwise at ELR_EL1 + 4: the faulting instruction is skipped (Arm ARM D1.10.2: for a
//!   synchronous exception other than SVC/HVC/SMC the preferred return address is the
//!   instruction that caused it). The probe macros put a `nop` after the probed instruction so
//!   that a hypervisor that reports ELR one instruction too far skips only that `nop`.
//!
//! An SError is masked (PSTATE.A) while the guest runs; [`probe`] checks ISR_EL1.A after the
//! access and, if one is pending, unmasks it briefly so that it is taken and recorded too.
//!
//! IRQs go to the hook set with [`set_irq_handler`]. An exception from EL0 during
//! [`crate::el0::run`] ends that run. Anything else (FIQ, an exception outside a probe, one from
//! EL0 outside a run or with SP_EL0) prints `GUEST: unexpected exception ...` and powers off.
use core::arch::{asm, global_asm};
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, compiler_fence};

use crate::{println, system_off};

// VBAR_EL1 layout (Arm ARM D1.10.2, table "Vector offsets from vector table base address"):
// 16 entries of 0x80 bytes, 2 KiB aligned: {current EL with SP_EL0, current EL with SP_ELx,
// lower EL AArch64, lower EL AArch32} x {synchronous, IRQ, FIQ, SError}. Entry k passes k in x0.
global_asm!(
    r#"
    .section .text.vectors, "ax"
    .balign 2048
    .global guest_vectors
guest_vectors:
    .irp kind, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
    .balign 0x80
    sub     sp, sp, #256
    stp     x0, x1, [sp]
    mov     x0, #\kind
    b       guest_vector_common
    .endr

guest_vector_common:
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    str     x30, [sp, #240]
    mov     x1, sp
    bl      guest_exception
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x19, [sp, #144]
    ldp     x20, x21, [sp, #160]
    ldp     x22, x23, [sp, #176]
    ldp     x24, x25, [sp, #192]
    ldp     x26, x27, [sp, #208]
    ldp     x28, x29, [sp, #224]
    ldr     x30, [sp, #240]
    ldp     x0, x1, [sp]
    add     sp, sp, #256
    eret
"#
);

/// Vector entries (index = offset / 0x80) the runtime handles.
const VEC_SYNC_SPX: u64 = 4;
const VEC_IRQ_SPX: u64 = 5;
const VEC_SERROR_SPX: u64 = 7;

/// Exception classes, ESR_ELx.EC [31:26] (Arm ARM D24.2.40, "ESR_EL1").
pub mod ec {
    pub const UNKNOWN: u8 = 0x00;
    pub const FP_ACCESS: u8 = 0x07;
    pub const SVC64: u8 = 0x15;
    pub const SYSREG: u8 = 0x18;
    pub const IABT_LOWER: u8 = 0x20;
    pub const IABT_CURRENT: u8 = 0x21;
    pub const PC_ALIGNMENT: u8 = 0x22;
    pub const DABT_LOWER: u8 = 0x24;
    pub const DABT_CURRENT: u8 = 0x25;
    pub const SP_ALIGNMENT: u8 = 0x26;
    pub const BRK64: u8 = 0x3c;
}

/// What kind of vector an exception came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Sync,
    SError,
}

/// One recorded exception.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exception {
    pub kind: Kind,
    pub esr: u64,
    pub far: u64,
    pub elr: u64,
}

impl Exception {
    /// ESR_EL1.EC [31:26].
    pub fn ec(&self) -> u8 {
        ((self.esr >> 26) & 0x3f) as u8
    }
    /// ESR_EL1.ISS [24:0].
    pub fn iss(&self) -> u32 {
        (self.esr & 0x1ff_ffff) as u32
    }
    /// For an abort: the fault status code, ISS.DFSC/IFSC [5:0].
    pub fn fault_status(&self) -> u8 {
        (self.esr & 0x3f) as u8
    }
    /// True for a data or instruction abort.
    pub fn is_abort(&self) -> bool {
        self.kind == Kind::Sync
            && matches!(
                self.ec(),
                ec::DABT_CURRENT | ec::DABT_LOWER | ec::IABT_CURRENT | ec::IABT_LOWER
            )
    }
    /// True for an exception with EC "Unknown reason" (UNDEFINED instruction).
    pub fn is_undef(&self) -> bool {
        self.kind == Kind::Sync && self.ec() == ec::UNKNOWN
    }
}

/// The fault status codes of ISS.DFSC/IFSC (Arm ARM D24.2.40, "ISS encoding for an exception
/// from a Data Abort"), named.
pub struct FaultStatus(pub u8);

impl fmt::Display for FaultStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = self.0 & 3;
        match self.0 {
            0x00..=0x03 => write!(f, "address size fault L{level}"),
            0x04..=0x07 => write!(f, "translation fault L{level}"),
            0x09..=0x0b => write!(f, "access flag fault L{level}"),
            0x0d..=0x0f => write!(f, "permission fault L{level}"),
            0x10 => f.write_str("external abort"),
            0x11 => f.write_str("tag check fault"),
            0x14..=0x17 => write!(f, "external abort on walk L{level}"),
            0x18 => f.write_str("parity/ECC error"),
            0x21 => f.write_str("alignment fault"),
            0x30 => f.write_str("TLB conflict"),
            0x31 => f.write_str("unsupported atomic update"),
            0x34 => f.write_str("lockdown"),
            0x35 => f.write_str("unsupported exclusive or atomic"),
            s => write!(f, "fsc {s:#x}"),
        }
    }
}

/// The outcome words the test guests print: `undef`, `abort`, `iabort`, `pc-alignment`,
/// `serror`, `fp-trap` or `exception ec=...`, then `esr=` and (for aborts) `far=`.
impl fmt::Display for Exception {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let esr = self.esr;
        if self.kind == Kind::SError {
            return write!(f, "serror esr={esr:#x}");
        }
        match self.ec() {
            ec::UNKNOWN => write!(f, "undef esr={esr:#x}"),
            ec::DABT_CURRENT | ec::DABT_LOWER => write!(
                f,
                "abort esr={esr:#x} far={:#x} ({})",
                self.far,
                FaultStatus(self.fault_status())
            ),
            ec::IABT_CURRENT | ec::IABT_LOWER => write!(
                f,
                "iabort esr={esr:#x} far={:#x} ({})",
                self.far,
                FaultStatus(self.fault_status())
            ),
            ec::PC_ALIGNMENT => write!(f, "pc-alignment esr={esr:#x} far={:#x}", self.far),
            ec::FP_ACCESS => write!(f, "fp-trap esr={esr:#x}"),
            c => write!(f, "exception ec={c:#x} esr={esr:#x}"),
        }
    }
}

static COUNT: AtomicU64 = AtomicU64::new(0);
static LAST_KIND: AtomicU64 = AtomicU64::new(0);
static LAST_ESR: AtomicU64 = AtomicU64::new(0);
static LAST_FAR: AtomicU64 = AtomicU64::new(0);
static LAST_ELR: AtomicU64 = AtomicU64::new(0);
static PROBING: AtomicBool = AtomicBool::new(false);
/// Where to resume after an exception during [`probe_exec`]; 0 = none.
static LANDING: AtomicU64 = AtomicU64::new(0);
/// A `fn()` called for every IRQ; 0 = none.
static IRQ_HOOK: AtomicUsize = AtomicUsize::new(0);

/// How many exceptions (synchronous and SError) the vectors have recorded so far.
pub fn count() -> u64 {
    COUNT.load(Ordering::Acquire)
}

/// The most recently recorded exception, if any.
pub fn last() -> Option<Exception> {
    if count() == 0 {
        return None;
    }
    Some(Exception {
        kind: if LAST_KIND.load(Ordering::Relaxed) == VEC_SERROR_SPX {
            Kind::SError
        } else {
            Kind::Sync
        },
        esr: LAST_ESR.load(Ordering::Relaxed),
        far: LAST_FAR.load(Ordering::Relaxed),
        elr: LAST_ELR.load(Ordering::Relaxed),
    })
}

/// Installs the IRQ handler (called from the IRQ vector with interrupts masked).
pub fn set_irq_handler(h: fn()) {
    IRQ_HOOK.store(h as usize, Ordering::Release);
}

/// Runs `f` (one access that may fault) and returns its result and the exception it raised,
/// if any; a pending SError (ISR_EL1.A) after `f` is taken and reported as well.
pub fn probe<T>(f: impl FnOnce() -> T) -> (T, Option<Exception>) {
    let before = count();
    PROBING.store(true, Ordering::Release);
    compiler_fence(Ordering::SeqCst);
    let v = f();
    compiler_fence(Ordering::SeqCst);
    take_pending_serror();
    compiler_fence(Ordering::SeqCst);
    PROBING.store(false, Ordering::Release);
    LANDING.store(0, Ordering::Release);
    let e = if count() != before { last() } else { None };
    (v, e)
}

/// ISR_EL1.A [8]: an SError interrupt is pending (Arm ARM D24.2.89).
const ISR_A: u64 = 1 << 8;

fn take_pending_serror() {
    let isr: u64;
    // SAFETY: reading ISR_EL1 has no side effects.
    unsafe { asm!("isb", "mrs {}, isr_el1", out(reg) isr, options(nomem, nostack)) };
    if isr & ISR_A != 0 {
        // SAFETY: unmasking SError for two instructions lets the pending one be taken by our own
        // vector (which records it and returns); PSTATE.A is masked again right after.
        unsafe {
            asm!(
                "msr daifclr, #4",
                "isb",
                "msr daifset, #4",
                options(nostack)
            )
        };
    }
}

/// Branches (BLR) to `target` and returns what happened there: normally an instruction abort,
/// a PC alignment fault or an UNDEFINED instruction (EC 0x20/0x21, 0x22, 0x00). The first
/// exception raised after the branch resumes execution right after the BLR, whatever ELR says.
/// Returns `None` if `target` executed and returned (then it was code).
///
/// # Safety
/// Whatever is at `target` runs at EL1 if it is executable; the caller picks targets that
/// cannot be valid code of this guest (devices, unmapped addresses, misaligned addresses).
pub unsafe fn probe_exec(target: u64) -> Option<Exception> {
    let (_, e) = probe(|| {
        // SAFETY: see the function's contract. The landing address is stored before the branch;
        // the vector restores every general-purpose register, so the asm's registers hold their
        // values when execution resumes at label 2.
        unsafe {
            asm!(
                "adr x9, 2f",
                "str x9, [{landing}]",
                "blr {target}",
                "2:",
                "nop",
                target = in(reg) target,
                landing = in(reg) LANDING.as_ptr(),
                out("x9") _,
                clobber_abi("C"),
            )
        }
    });
    e
}

fn read_esr_far_elr() -> (u64, u64, u64) {
    let (esr, far, elr): (u64, u64, u64);
    // SAFETY: reading the EL1 exception syndrome registers has no side effects.
    unsafe {
        asm!("mrs {}, esr_el1", "mrs {}, far_el1", "mrs {}, elr_el1",
             out(reg) esr, out(reg) far, out(reg) elr, options(nomem, nostack))
    };
    (esr, far, elr)
}

fn set_elr(v: u64) {
    // SAFETY: only called from the exception handler, before it returns with ERET: the new ELR
    // is the probe's resume address, inside this program's code.
    unsafe { asm!("msr elr_el1, {}", in(reg) v, options(nomem, nostack)) };
}

fn record(kind: u64, esr: u64, far: u64, elr: u64) {
    LAST_KIND.store(kind, Ordering::Relaxed);
    LAST_ESR.store(esr, Ordering::Relaxed);
    LAST_FAR.store(far, Ordering::Relaxed);
    LAST_ELR.store(elr, Ordering::Relaxed);
    // One writer (this CPU's vector), so no read-modify-write atomic: with the MMU off memory
    // is Device-nGnRnE, where exclusives are not guaranteed to work.
    COUNT.store(COUNT.load(Ordering::Relaxed) + 1, Ordering::Release);
}

/// Called by every vector with its index (0..16) and the saved x0..x30.
#[unsafe(no_mangle)]
extern "C" fn guest_exception(kind: u64, frame: *mut u64) {
    match kind {
        VEC_SYNC_SPX => {
            let (esr, far, elr) = read_esr_far_elr();
            record(kind, esr, far, elr);
            if PROBING.load(Ordering::Acquire) {
                let landing = LANDING.load(Ordering::Acquire);
                if landing != 0 {
                    LANDING.store(0, Ordering::Release);
                    set_elr(landing);
                    return;
                }
                let e = Exception {
                    kind: Kind::Sync,
                    esr,
                    far,
                    elr,
                };
                // SVC/HVC/SMC-class exceptions already return past the instruction; aborts on
                // instruction fetch cannot be skipped.
                if !matches!(
                    e.ec(),
                    ec::SVC64 | ec::IABT_CURRENT | ec::IABT_LOWER | ec::PC_ALIGNMENT
                ) {
                    set_elr(elr.wrapping_add(4));
                    return;
                }
            }
            let e = Exception {
                kind: Kind::Sync,
                esr,
                far,
                elr,
            };
            println!("GUEST: unexpected exception: {e} elr={elr:#x}");
            system_off()
        }
        VEC_IRQ_SPX => {
            let h = IRQ_HOOK.load(Ordering::Acquire);
            if h == 0 {
                println!("GUEST: unexpected IRQ (no handler)");
                system_off()
            }
            // SAFETY: IRQ_HOOK only ever holds a `fn()` stored by `set_irq_handler`.
            let f: fn() = unsafe { core::mem::transmute::<usize, fn()>(h) };
            f()
        }
        VEC_SERROR_SPX => {
            let (esr, far, elr) = read_esr_far_elr();
            record(kind, esr, far, elr);
            if !PROBING.load(Ordering::Acquire) {
                println!("GUEST: unexpected SError esr={esr:#x} elr={elr:#x}");
                system_off()
            }
        }
        8..=15 if crate::el0::on_lower_el_exception(kind, frame) => {}
        k => {
            let (esr, far, elr) = read_esr_far_elr();
            println!(
                "GUEST: unexpected exception: vector {:#x} esr={esr:#x} far={far:#x} elr={elr:#x}",
                k * 0x80
            );
            system_off()
        }
    }
}

/// A probed access: its value (0 when it faulted), the exception, and the probed instruction's
/// address (to tell whether ELR_EL1 pointed at it).
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    pub value: u64,
    pub exc: Option<Exception>,
    pub insn: u64,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.exc.is_none()
    }
}

/// Prints an exception outcome, adding `elr=insn+N` (or the raw ELR) when ELR_EL1 did not point
/// at the probed instruction.
pub struct ExcAt<'a>(pub &'a Exception, pub u64);

impl fmt::Display for ExcAt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (e, insn) = (self.0, self.1);
        write!(f, "{e}")?;
        if e.kind == Kind::Sync && insn != 0 && e.elr != insn {
            let d = e.elr.wrapping_sub(insn) as i64;
            if (-64..=64).contains(&d) {
                write!(f, " elr=insn{d:+}")?;
            } else {
                write!(f, " elr={:#x}", e.elr)?;
            }
        }
        Ok(())
    }
}

/// Runs one instruction under [`probe`] and returns an [`Outcome`]. Forms:
/// - `probe_insn!(load "ldr {v}, [{a}]", addr)`: `{v}` is 0 before and the result after,
///   `{a}` an input;
/// - `probe_insn!(read "mrs {v}, midr_el1")`: only `{v}`;
/// - `probe_insn!(write "msr pmcr_el0, {a}", value)`: only `{a}`;
/// - `probe_insn!(none "tlbi alle2")`: no operands.
///
/// A `nop` follows the instruction (see the module comment).
#[macro_export]
macro_rules! probe_insn {
    (load $insn:expr, $a:expr) => {{
        let a: u64 = $a;
        let mut insn: u64 = 0;
        let (value, exc) = $crate::exception::probe(|| {
            let mut v: u64 = 0;
            // SAFETY: a probe: the instruction may fault, and the vector then resumes at the
            // `nop` after it with every register restored. The caller chose the operand.
            unsafe {
                core::arch::asm!("adr {pc}, 2f", "2:", $insn, "nop",
                    pc = out(reg) insn, v = inout(reg) v, a = in(reg) a, options(nostack))
            };
            v
        });
        $crate::exception::Outcome { value, exc, insn }
    }};
    (read $insn:expr) => {{
        let mut insn: u64 = 0;
        let (value, exc) = $crate::exception::probe(|| {
            let mut v: u64 = 0;
            // SAFETY: as in the `load` form.
            unsafe {
                core::arch::asm!("adr {pc}, 2f", "2:", $insn, "nop",
                    pc = out(reg) insn, v = inout(reg) v, options(nostack))
            };
            v
        });
        $crate::exception::Outcome { value, exc, insn }
    }};
    (write $insn:expr, $a:expr) => {{
        let a: u64 = $a;
        let mut insn: u64 = 0;
        let ((), exc) = $crate::exception::probe(|| {
            // SAFETY: as in the `load` form.
            unsafe {
                core::arch::asm!("adr {pc}, 2f", "2:", $insn, "nop",
                    pc = out(reg) insn, a = in(reg) a, options(nostack))
            };
        });
        $crate::exception::Outcome { value: 0, exc, insn }
    }};
    (none $insn:expr) => {{
        let mut insn: u64 = 0;
        let ((), exc) = $crate::exception::probe(|| {
            // SAFETY: as in the `load` form.
            unsafe {
                core::arch::asm!("adr {pc}, 2f", "2:", $insn, "nop",
                    pc = out(reg) insn, options(nostack))
            };
        });
        $crate::exception::Outcome { value: 0, exc, insn }
    }};
}

/// Access widths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    B8,
    B16,
    B32,
    B64,
}

impl Width {
    pub fn bits(self) -> u32 {
        match self {
            Width::B8 => 8,
            Width::B16 => 16,
            Width::B32 => 32,
            Width::B64 => 64,
        }
    }
}

/// A probed load of `width` from `addr` (one LDRB/LDRH/LDR instruction).
pub fn probe_read(addr: u64, width: Width) -> Outcome {
    match width {
        Width::B8 => crate::probe_insn!(load "ldrb {v:w}, [{a}]", addr),
        Width::B16 => crate::probe_insn!(load "ldrh {v:w}, [{a}]", addr),
        Width::B32 => crate::probe_insn!(load "ldr {v:w}, [{a}]", addr),
        Width::B64 => crate::probe_insn!(load "ldr {v}, [{a}]", addr),
    }
}

/// A probed store of `width` bytes of `value` to `addr` (one STRB/STRH/STR instruction).
pub fn probe_write(addr: u64, width: Width, value: u64) -> Outcome {
    let mut insn: u64 = 0;
    let (_, exc) = probe(|| {
        // SAFETY: a probe (see `probe_insn!`); the caller chose the address.
        unsafe {
            match width {
                Width::B8 => asm!("adr {pc}, 2f", "2:", "strb {v:w}, [{a}]", "nop",
                    pc = out(reg) insn, v = in(reg) value, a = in(reg) addr, options(nostack)),
                Width::B16 => asm!("adr {pc}, 2f", "2:", "strh {v:w}, [{a}]", "nop",
                    pc = out(reg) insn, v = in(reg) value, a = in(reg) addr, options(nostack)),
                Width::B32 => asm!("adr {pc}, 2f", "2:", "str {v:w}, [{a}]", "nop",
                    pc = out(reg) insn, v = in(reg) value, a = in(reg) addr, options(nostack)),
                Width::B64 => asm!("adr {pc}, 2f", "2:", "str {v}, [{a}]", "nop",
                    pc = out(reg) insn, v = in(reg) value, a = in(reg) addr, options(nostack)),
            }
        }
    });
    Outcome {
        value: 0,
        exc,
        insn,
    }
}
