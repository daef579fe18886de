//! Reports of exceptions the hypervisor did not expect (taken at EL2 from EL2, or from a lower
//! EL in a form the runtime does not handle): decoded syndrome, addresses and registers. Before
//! the console is up, the early vectors (boot/entry.S) report through [`kestrel_early_exception`]
//! on the early UART instead.
use super::console;
use super::cpu;
use super::early_uart;
use core::sync::atomic::{AtomicBool, Ordering};

/// The register frame vectors.S stores: x0-x30, then ELR_EL2 and SPSR_EL2.
pub use crate::vcpu::GuestRegs as TrapFrame;

const _: () = assert!(core::mem::size_of::<TrapFrame>() <= super::boot::FRAME_SIZE);

fn kind_name(kind: u64) -> &'static str {
    let base = match kind & 3 {
        0 => "synchronous",
        1 => "IRQ",
        2 => "FIQ",
        _ => "SError",
    };
    match kind >> 2 {
        0 => base,
        _ => base,
    }
}

fn origin(kind: u64) -> &'static str {
    match kind >> 2 {
        0 => "lower EL (AArch64)",
        1 => "EL2 with SP_EL0",
        2 => "EL2",
        _ => "lower EL (AArch32)",
    }
}

/// Prints a full report of an unexpected exception.
pub fn report(frame: &TrapFrame, kind: u64, esr: u64, far: u64) {
    console::with_console(|w| {
        let _ = console::write_prefix(w);
        let _ = writeln!(
            w,
            "UNEXPECTED EXCEPTION: {} from {}: EC {:#04x} ({}) ESR {:#010x} FAR {:#018x}",
            kind_name(kind),
            origin(kind),
            (esr >> 26) & 0x3f,
            crate::trap::esr::Esr(esr).class().name(),
            esr,
            far
        );
        let _ = writeln!(w, "  ELR {:#018x} SPSR {:#010x}", frame.pc, frame.pstate);
        for (i, pair) in frame.x.chunks(2).enumerate() {
            let _ = write!(w, "  x{:<2} {:#018x}", i * 2, pair[0]);
            if let Some(v) = pair.get(1) {
                let _ = write!(w, "  x{:<2} {:#018x}", i * 2 + 1, v);
            }
            let _ = writeln!(w);
        }
    });
}

/// Entry from vectors.S for an exception taken from EL2 itself: report it and halt this CPU.
/// The one exception that returns (vectors.S then resumes from `frame`): a synchronous
/// exception of the `AT` that looks up a fault's IPA, resumed at its fixup.
#[unsafe(no_mangle)]
extern "C" fn kestrel_hyp_exception(frame: *mut TrapFrame, kind: u64) {
    use aarch64_cpu::registers::{ESR_EL2, FAR_EL2, Readable};
    // SAFETY: vectors.S passes a pointer to the frame it just filled on this CPU's stack,
    // used by nothing else until this returns.
    let frame = unsafe { &mut *frame };
    let sync_at_el2 = kind & 3 == 0 && matches!(kind >> 2, 1 | 2);
    if sync_at_el2 && let Some(fixup) = super::stage2_hw::at_fixup(frame.pc) {
        frame.pc = fixup;
        return;
    }
    report(frame, kind, ESR_EL2.get(), FAR_EL2.get());
    console::with_console(|w| {
        let _ = writeln!(w, "kestrel: cpu{} halted", cpu::current_index());
    });
    cpu::halt()
}

static EARLY_REPORTING: AtomicBool = AtomicBool::new(false);

/// Entry from the early vectors (boot/entry.S), on a stack of their own: an exception before
/// the console was up, possibly with the MMU off and possibly before the image's relocations
/// were applied. Prints the syndrome on the early UART with no formatting machinery (no
/// vtables, no locks, no atomic read-modify-write) and halts this CPU. A second exception while
/// reporting halts at once.
#[unsafe(no_mangle)]
extern "C" fn kestrel_early_exception(kind: u64, esr: u64, elr: u64, far: u64, spsr: u64) -> ! {
    if EARLY_REPORTING.load(Ordering::Relaxed) {
        cpu::halt();
    }
    EARLY_REPORTING.store(true, Ordering::Relaxed);
    let w = early_uart::write;
    let hex = early_uart::write_hex;
    w(b"kestrel: UNEXPECTED EXCEPTION before the console was up: ");
    w(kind_name(kind).as_bytes());
    w(b" from ");
    w(origin(kind).as_bytes());
    w(b", EC ");
    hex((esr >> 26) & 0x3f);
    w(b" (");
    w(crate::trap::esr::Esr(esr).class().name().as_bytes());
    w(b")\n  ESR ");
    hex(esr);
    w(b" ELR ");
    hex(elr);
    w(b" FAR ");
    hex(far);
    w(b" SPSR ");
    hex(spsr);
    w(b"\n  MPIDR ");
    hex(cpu::mpidr_affinity());
    w(b"; this CPU is halted\n");
    cpu::halt()
}
