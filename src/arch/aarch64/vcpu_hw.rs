//! The hardware side of running a vCPU on this physical CPU: EL2 controls for a guest, the EL1
//! register file (reset, and save/restore for when a vCPU stops), the live EL1 registers for
//! exception injection, and the jump into the guest.
use crate::vcpu::{El1Access, GuestRegs, PeFeatures};
use aarch64_cpu::registers::*;
use core::arch::asm;

/// HCR_EL2 for a guest (Arm ARM D19.2.49): stage 2 on (VM), set/way invalidation upgraded to
/// clean+invalidate (SWIO), physical FIQ/IRQ/SError to EL2 (FMO/IMO/AMO), TLB and cache
/// maintenance broadcast within the inner shareable domain (FB, BSU), SMC trapped (TSC),
/// implementation-defined registers trapped (TIDCP), auxiliary control trapped (TACR), EL1 is
/// AArch64 (RW), pointer authentication not trapped (API/APK). WFI/WFE are *not* trapped: each
/// vCPU owns its physical CPU and sleeps in hardware.
pub fn guest_hcr() -> u64 {
    (HCR_EL2::VM::Enable
        + HCR_EL2::SWIO::SET
        + HCR_EL2::FMO::EnableVirtualFIQ
        + HCR_EL2::IMO::EnableVirtualIRQ
        + HCR_EL2::AMO::SET
        + HCR_EL2::FB::SET
        + HCR_EL2::BSU::InnerShareable
        + HCR_EL2::TSC::EnableTrapEl1SmcToEl2
        + HCR_EL2::TIDCP::SET
        + HCR_EL2::TACR::SET
        + HCR_EL2::RW::EL1IsAarch64
        + HCR_EL2::API::SET
        + HCR_EL2::APK::SET)
        .value
}

/// Programs the EL2 controls for running a guest vCPU on this CPU.
pub fn configure_el2(vttbr: u64, vtcr: u64, vmpidr: u64, fwb: bool) {
    VTCR_EL2.set(vtcr);
    VTTBR_EL2.set(vttbr);
    VMPIDR_EL2.set(vmpidr | (1 << 31));
    // SAFETY: VPIDR_EL2 only changes what the guest reads from MIDR_EL1.
    unsafe { asm!("mrs {t}, midr_el1", "msr vpidr_el2, {t}", t = out(reg) _, options(nostack)) };
    // The guest reads the physical counter and programs both EL1 timers (virtual and
    // physical) directly: each physical CPU runs one vCPU, so the timers are its own; their
    // interrupts are forwarded (exit::irq). The virtual timer runs with no offset.
    CNTHCTL_EL2.write(CNTHCTL_EL2::EL1PCTEN::SET + CNTHCTL_EL2::EL1PCEN::SET);
    CNTVOFF_EL2.set(0);
    let pfr0: u64;
    // SAFETY: reading ID_AA64PFR0_EL1 has no side effect.
    unsafe { asm!("mrs {}, id_aa64pfr0_el1", out(reg) pfr0, options(nomem, nostack)) };
    CPTR_EL2.set(crate::trap::cptr::guest_cptr_el2(pfr0));
    if (pfr0 >> 32) & 0xf != 0 {
        // SVE: let the guest use the largest vector length the hardware has.
        // SAFETY: ZCR_EL2 only bounds EL1/EL0 SVE vector lengths.
        unsafe { asm!("msr s3_4_c1_c2_0, {}", in(reg) 0x1ffu64, options(nomem, nostack)) };
    }
    // PMU counters all belong to EL1; debug registers not trapped.
    let pmcr: u64;
    // SAFETY: reading PMCR_EL0 at EL2 has no side effect.
    unsafe { asm!("mrs {}, pmcr_el0", out(reg) pmcr, options(nostack, nomem)) };
    MDCR_EL2.set((pmcr >> 11) & 0x1f);
    let fwb = if fwb { HCR_EL2::FWB::SET.value } else { 0 };
    HCR_EL2.set(guest_hcr() | fwb);
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
}

/// Puts the EL1 register file in its reset state, so nothing of a previous guest survives and
/// the vCPU starts as the boot protocol says (MMU and caches off).
pub fn reset_el1() {
    // SCTLR_EL1 RES1 bits with the MMU, caches and alignment checks off.
    SCTLR_EL1.set(0x30d0_0800);
    macro_rules! zero {
        ($($r:literal),*) => {
            // SAFETY: these EL1 registers only affect the guest's own EL1/EL0 state, which is
            // being reset; the MMU they control is off.
            $( unsafe { asm!(concat!("msr ", $r, ", xzr"), options(nostack, nomem)) }; )*
        };
    }
    zero!(
        "ttbr0_el1",
        "ttbr1_el1",
        "tcr_el1",
        "mair_el1",
        "amair_el1",
        "vbar_el1",
        "contextidr_el1",
        "tpidr_el0",
        "tpidrro_el0",
        "tpidr_el1",
        "sp_el0",
        "sp_el1",
        "elr_el1",
        "spsr_el1",
        "esr_el1",
        "far_el1",
        "afsr0_el1",
        "afsr1_el1",
        "par_el1",
        "cpacr_el1",
        "cntkctl_el1",
        "csselr_el1",
        "mdscr_el1",
        "cntv_ctl_el0",
        "cntv_cval_el0",
        "cntp_ctl_el0",
        "cntp_cval_el0"
    );
    reset_debug_and_pmu();
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
}

/// Clears what a previous guest on this CPU may have left in the debug breakpoint and
/// watchpoint registers and the PMU (counters, enables, overflow flags), so nothing of it is
/// visible to the next one.
fn reset_debug_and_pmu() {
    let dfr0: u64;
    // SAFETY: reading ID_AA64DFR0_EL1 has no side effect.
    unsafe { asm!("mrs {}, id_aa64dfr0_el1", out(reg) dfr0, options(nomem, nostack)) };
    let brps = ((dfr0 >> 12) & 0xf) + 1;
    let wrps = ((dfr0 >> 20) & 0xf) + 1;
    macro_rules! zero_pairs {
        ($n:expr, $($i:literal => $a:literal, $b:literal);*) => {
            $( if $i < $n {
                // SAFETY: debug registers of the guest's own EL1 state, being reset.
                unsafe { asm!(concat!("msr ", $a, ", xzr"), concat!("msr ", $b, ", xzr"), options(nostack, nomem)) };
            } )*
        };
    }
    zero_pairs!(brps,
        0 => "dbgbcr0_el1", "dbgbvr0_el1"; 1 => "dbgbcr1_el1", "dbgbvr1_el1";
        2 => "dbgbcr2_el1", "dbgbvr2_el1"; 3 => "dbgbcr3_el1", "dbgbvr3_el1";
        4 => "dbgbcr4_el1", "dbgbvr4_el1"; 5 => "dbgbcr5_el1", "dbgbvr5_el1";
        6 => "dbgbcr6_el1", "dbgbvr6_el1"; 7 => "dbgbcr7_el1", "dbgbvr7_el1";
        8 => "dbgbcr8_el1", "dbgbvr8_el1"; 9 => "dbgbcr9_el1", "dbgbvr9_el1";
        10 => "dbgbcr10_el1", "dbgbvr10_el1"; 11 => "dbgbcr11_el1", "dbgbvr11_el1";
        12 => "dbgbcr12_el1", "dbgbvr12_el1"; 13 => "dbgbcr13_el1", "dbgbvr13_el1";
        14 => "dbgbcr14_el1", "dbgbvr14_el1"; 15 => "dbgbcr15_el1", "dbgbvr15_el1");
    zero_pairs!(wrps,
        0 => "dbgwcr0_el1", "dbgwvr0_el1"; 1 => "dbgwcr1_el1", "dbgwvr1_el1";
        2 => "dbgwcr2_el1", "dbgwvr2_el1"; 3 => "dbgwcr3_el1", "dbgwvr3_el1";
        4 => "dbgwcr4_el1", "dbgwvr4_el1"; 5 => "dbgwcr5_el1", "dbgwvr5_el1";
        6 => "dbgwcr6_el1", "dbgwvr6_el1"; 7 => "dbgwcr7_el1", "dbgwvr7_el1";
        8 => "dbgwcr8_el1", "dbgwvr8_el1"; 9 => "dbgwcr9_el1", "dbgwvr9_el1";
        10 => "dbgwcr10_el1", "dbgwvr10_el1"; 11 => "dbgwcr11_el1", "dbgwvr11_el1";
        12 => "dbgwcr12_el1", "dbgwvr12_el1"; 13 => "dbgwcr13_el1", "dbgwvr13_el1";
        14 => "dbgwcr14_el1", "dbgwvr14_el1"; 15 => "dbgwcr15_el1", "dbgwvr15_el1");
    // PMU: counters disabled and reset (PMCR_EL0.P and .C), enables, interrupt enables and
    // overflow flags cleared, EL0 access off.
    // SAFETY: PMU registers of the guest's EL1/EL0 state, being reset; no memory effect.
    unsafe {
        asm!(
            "msr pmcntenclr_el0, {all}",
            "msr pmintenclr_el1, {all}",
            "msr pmovsclr_el0, {all}",
            "msr pmuserenr_el0, xzr",
            "msr pmselr_el0, xzr",
            "msr pmcr_el0, {pc}",
            all = in(reg) u64::MAX,
            pc = in(reg) 0b110u64,
            options(nostack, nomem)
        )
    };
}

/// The live EL1 registers of the vCPU running on this CPU.
pub struct LiveEl1;

impl El1Access for LiveEl1 {
    fn vbar_el1(&self) -> u64 {
        VBAR_EL1.get()
    }
    fn sctlr_el1(&self) -> u64 {
        SCTLR_EL1.get()
    }
    fn features(&self) -> PeFeatures {
        PeFeatures {
            pan: ID_AA64MMFR1_EL1.read(ID_AA64MMFR1_EL1::PAN) != 0,
            ssbs: (ID_AA64PFR1_EL1.get() >> 4) & 0xf != 0,
        }
    }
    fn set_elr_el1(&mut self, v: u64) {
        ELR_EL1.set(v)
    }
    fn set_spsr_el1(&mut self, v: u64) {
        SPSR_EL1.set(v)
    }
    fn set_esr_el1(&mut self, v: u64) {
        ESR_EL1.set(v)
    }
    fn set_far_el1(&mut self, v: u64) {
        FAR_EL1.set(v)
    }
}

// SAFETY: these symbols are defined in boot/*.S (or the linker script) with exactly these
// signatures; each call site states why its use is sound.
unsafe extern "C" {
    fn kestrel_guest_resume(frame: *mut GuestRegs) -> !;
}

/// Switches to the guest described by `frame`, which must be this CPU's guest frame at the top
/// of its stack (see vectors.S). Everything below it on the stack is abandoned.
pub fn enter_guest(frame: &'static mut GuestRegs) -> ! {
    // SAFETY: the frame is this CPU's register frame at its stack top; vectors.S restores it and
    // erets. The EL2 controls were set by `configure_el2`.
    unsafe { kestrel_guest_resume(frame) }
}

/// This CPU's guest register frame (at the top of its stack).
pub fn this_cpu_frame() -> &'static mut GuestRegs {
    let idx = super::cpu::current_index();
    let top = super::boot::stack_top(idx);
    // SAFETY: each CPU's frame lies at the top of its own stack and only that CPU touches it;
    // vectors.S and this function agree on its location and layout.
    unsafe { &mut *((top - super::boot::FRAME_SIZE as u64) as *mut GuestRegs) }
}

/// Leaves nothing of a stopped guest armed on this CPU: its virtual timer is switched off and
/// the physical timer interrupt it may have left active (hardware-linked) is deactivated.
pub fn quiesce_guest() {
    CNTV_CTL_EL0.set(0);
    CNTP_CTL_EL0.set(0);
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
    super::gic::clear_active_private(super::gic::PPI_VTIMER);
    super::gic::clear_active_private(super::gic::PPI_PTIMER);
}

// SAFETY: these symbols are defined in boot/*.S (or the linker script) with exactly these
// signatures; each call site states why its use is sound.
unsafe extern "C" {
    fn kestrel_idle_on_stack(sp: u64) -> !;
}

/// Abandons the current stack and runs the idle loop from the top of this CPU's stack.
pub fn idle_on_fresh_stack() -> ! {
    let top = super::boot::stack_top(super::cpu::current_index()) - super::boot::FRAME_SIZE as u64;
    // SAFETY: nothing on the current stack is used afterwards (callers hold no locks and their
    // frames are abandoned); the new stack pointer is this CPU's own stack top.
    unsafe { kestrel_idle_on_stack(top) }
}
