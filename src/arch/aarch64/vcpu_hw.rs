//! The hardware side of running a vCPU on this physical CPU: EL2 controls for a guest, the EL1
//! register file (reset, and save/restore for when a vCPU stops), the live EL1 registers for
//! exception injection, and the jump into the guest.
use crate::vcpu::{El1Access, GuestRegs, PeFeatures};
use aarch64_cpu::registers::*;
use core::arch::asm;

/// HCR_EL2 for a guest (Arm ARM D19.2.49): stage 2 on (VM), set/way invalidation upgraded to
/// clean+invalidate (SWIO), physical FIQ/IRQ/SError to EL2 (FMO/IMO/AMO), TLB and cache
/// maintenance broadcast within the inner shareable domain (FB, BSU), SMC trapped (TSC),
/// implementation-defined registers trapped (TIDCP), ID register group 3 reads trapped (TID3:
/// the guest reads sanitised values, `trap::idregs`), auxiliary control trapped (TACR), EL1 is
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
        + HCR_EL2::TID3::SET
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
    HCR_EL2.set(guest_hcr() | fwb | feature_traps());
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
}

/// Traps WFI and WFE (HCR_EL2.TWI [13], TWE [14]) for the loaded vCPU, or not: a vCPU that
/// shares its CPU must not sleep in hardware; one alone on it does.
pub fn set_wfx_traps(on: bool) {
    const TWX: u64 = (1 << 13) | (1 << 14);
    let h = HCR_EL2.get();
    let want = if on { h | TWX } else { h & !TWX };
    if want != h {
        HCR_EL2.set(want);
        aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
    }
}

/// HCR_EL2 traps for features the guest is not offered but that exist on this CPU (the ID
/// registers hide both; a trapped access is UNDEF, `trap::sysreg`). Set only where implemented
/// (the bits are RES0 otherwise):
/// - LORegions (TLOR, bit 35): LORSA_EL1 and friends would keep one guest's values for the next.
/// - RAS error records (TERR, bit 36): ERRSELR_EL1 and the ERX*_EL1 window reach the CPU's and
///   cluster's error records, shared with the host and other VMs (a guest could turn off error
///   detection, clear errors logged for others, or read the physical addresses in them).
fn feature_traps() -> u64 {
    let mut traps = 0;
    if ID_AA64MMFR1_EL1.read(ID_AA64MMFR1_EL1::LO) != 0 {
        traps |= 1 << 35;
    }
    // ID_AA64PFR0_EL1.RAS is bits [31:28] (the crate's register names no such field).
    if (ID_AA64PFR0_EL1.get() >> 28) & 0xf != 0 {
        traps |= 1 << 36;
    }
    traps
}

/// Whether the guest may use SVE on this CPU: implemented, and CPTR_EL2 as [`configure_el2`]
/// set it for the running vCPU does not trap it (TZ, bit 8). Called while a vCPU runs.
pub fn guest_sve_usable() -> bool {
    let (pfr0, cptr): (u64, u64);
    // SAFETY: reading ID_AA64PFR0_EL1 and CPTR_EL2 has no side effect.
    unsafe {
        asm!("mrs {}, id_aa64pfr0_el1", "mrs {}, cptr_el2", out(reg) pfr0, out(reg) cptr,
            options(nomem, nostack))
    };
    (pfr0 >> 32) & 0xf != 0 && cptr & (1 << 8) == 0
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
    reset_os_lock_and_debug_comms();
    reset_pointer_auth_keys();
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
}

/// Zeroes the guest-visible FP/SIMD state (V0-V31, FPCR, FPSR) and, where the guest may use
/// SVE, Z0-Z31, P0-P15, FFR and ZCR_EL1. The hypervisor is soft-float and never saves or
/// touches these registers, so whatever the previous vCPU on this CPU left in them would
/// otherwise be read by the next. Must run after [`configure_el2`]: CPTR_EL2 then leaves FP
/// (and SVE, when the guest gets it) untrapped at EL2, and ZCR_EL2 gives EL2 the largest
/// vector length, so every bit of every Z register is cleared.
pub fn reset_fp_state() {
    let cptr: u64;
    // SAFETY: reading CPTR_EL2 has no side effect.
    unsafe { asm!("mrs {}, cptr_el2", out(reg) cptr, options(nomem, nostack)) };
    // CPTR_EL2 (E2H = 0): TFP [10] traps FP/SIMD, TZ [8] traps SVE, at EL2 as at EL1/EL0; a
    // trapped unit is one the guest cannot use either.
    const TFP: u64 = 1 << 10;
    const TZ: u64 = 1 << 8;
    if cptr & TFP != 0 {
        return;
    }
    // SAFETY: FP/SIMD is not trapped (checked above); these registers belong to the guest
    // being reset, and no Rust code holds values in them (soft-float target).
    unsafe {
        asm!(
            ".arch_extension fp",
            ".arch_extension simd",
            "movi v0.2d, #0",
            "movi v1.2d, #0",
            "movi v2.2d, #0",
            "movi v3.2d, #0",
            "movi v4.2d, #0",
            "movi v5.2d, #0",
            "movi v6.2d, #0",
            "movi v7.2d, #0",
            "movi v8.2d, #0",
            "movi v9.2d, #0",
            "movi v10.2d, #0",
            "movi v11.2d, #0",
            "movi v12.2d, #0",
            "movi v13.2d, #0",
            "movi v14.2d, #0",
            "movi v15.2d, #0",
            "movi v16.2d, #0",
            "movi v17.2d, #0",
            "movi v18.2d, #0",
            "movi v19.2d, #0",
            "movi v20.2d, #0",
            "movi v21.2d, #0",
            "movi v22.2d, #0",
            "movi v23.2d, #0",
            "movi v24.2d, #0",
            "movi v25.2d, #0",
            "movi v26.2d, #0",
            "movi v27.2d, #0",
            "movi v28.2d, #0",
            "movi v29.2d, #0",
            "movi v30.2d, #0",
            "movi v31.2d, #0",
            "msr fpcr, xzr",
            "msr fpsr, xzr",
            options(nomem, nostack)
        )
    };
    let pfr0: u64;
    // SAFETY: reading ID_AA64PFR0_EL1 has no side effect.
    unsafe { asm!("mrs {}, id_aa64pfr0_el1", out(reg) pfr0, options(nomem, nostack)) };
    if (pfr0 >> 32) & 0xf == 0 || cptr & TZ != 0 {
        return;
    }
    // SAFETY: SVE is implemented and not trapped (checked above); as for FP/SIMD.
    unsafe {
        asm!(
            ".arch_extension sve",
            "dup z0.d, #0",
            "dup z1.d, #0",
            "dup z2.d, #0",
            "dup z3.d, #0",
            "dup z4.d, #0",
            "dup z5.d, #0",
            "dup z6.d, #0",
            "dup z7.d, #0",
            "dup z8.d, #0",
            "dup z9.d, #0",
            "dup z10.d, #0",
            "dup z11.d, #0",
            "dup z12.d, #0",
            "dup z13.d, #0",
            "dup z14.d, #0",
            "dup z15.d, #0",
            "dup z16.d, #0",
            "dup z17.d, #0",
            "dup z18.d, #0",
            "dup z19.d, #0",
            "dup z20.d, #0",
            "dup z21.d, #0",
            "dup z22.d, #0",
            "dup z23.d, #0",
            "dup z24.d, #0",
            "dup z25.d, #0",
            "dup z26.d, #0",
            "dup z27.d, #0",
            "dup z28.d, #0",
            "dup z29.d, #0",
            "dup z30.d, #0",
            "dup z31.d, #0",
            "pfalse p0.b",
            "pfalse p1.b",
            "pfalse p2.b",
            "pfalse p3.b",
            "pfalse p4.b",
            "pfalse p5.b",
            "pfalse p6.b",
            "pfalse p7.b",
            "pfalse p8.b",
            "pfalse p9.b",
            "pfalse p10.b",
            "pfalse p11.b",
            "pfalse p12.b",
            "pfalse p13.b",
            "pfalse p14.b",
            "pfalse p15.b",
            "wrffr p0.b",
            // ZCR_EL1: the guest's own vector length request.
            "msr s3_0_c1_c2_0, xzr",
            options(nomem, nostack)
        )
    };
}

/// The OS lock, the OS double lock and the debug communication state: OS lock clear (as KVM
/// presents it: OSLSR_EL1.OSLK = 0), OSDLR_EL1.DLK = 0, the OS-lock save/restore registers
/// (OSECCR_EL1, OSDTRRX_EL1, OSDTRTX_EL1, writable only with the OS lock set) zeroed, the
/// claim tags (DBGCLAIM) clear, DCC interrupts (MDCCINT_EL1) off.
fn reset_os_lock_and_debug_comms() {
    // SAFETY: debug registers of the guest's own EL1 state, being reset; no memory effect.
    // The OS lock is set only around the writes that need it.
    unsafe {
        asm!(
            "msr oslar_el1, {one}",
            "isb",
            "msr oseccr_el1, xzr",
            "msr osdtrrx_el1, xzr",
            "msr osdtrtx_el1, xzr",
            "msr oslar_el1, xzr",
            "msr osdlr_el1, xzr",
            "msr dbgclaimclr_el1, {claims}",
            "msr mdccint_el1, xzr",
            "isb",
            one = in(reg) 1u64,
            claims = in(reg) 0xffu64,
            options(nomem, nostack)
        )
    };
}

/// Zeroes the pointer-authentication keys (APIA, APIB, APDA, APDB, APGA; FEAT_PAuth), which
/// the guest reads and writes untrapped (HCR_EL2.APK).
fn reset_pointer_auth_keys() {
    let (isar1, isar2): (u64, u64);
    // SAFETY: reading ID registers has no side effect.
    unsafe {
        asm!("mrs {}, id_aa64isar1_el1", "mrs {}, s3_0_c0_c6_2",
            out(reg) isar1, out(reg) isar2, options(nomem, nostack))
    };
    // ID_AA64ISAR1_EL1 APA [7:4], API [11:8], GPA [27:24], GPI [31:28]; ID_AA64ISAR2_EL1
    // GPA3 [11:8], APA3 [15:12].
    let pauth = isar1 & 0xff00_0ff0 != 0 || isar2 & 0xff00 != 0;
    if !pauth {
        return;
    }
    // SAFETY: the key registers exist (checked above) and belong to the guest being reset.
    unsafe {
        asm!(
            "msr s3_0_c2_c1_0, xzr",
            "msr s3_0_c2_c1_1, xzr", // APIAKeyLo/Hi_EL1
            "msr s3_0_c2_c1_2, xzr",
            "msr s3_0_c2_c1_3, xzr", // APIBKeyLo/Hi_EL1
            "msr s3_0_c2_c2_0, xzr",
            "msr s3_0_c2_c2_1, xzr", // APDAKeyLo/Hi_EL1
            "msr s3_0_c2_c2_2, xzr",
            "msr s3_0_c2_c2_3, xzr", // APDBKeyLo/Hi_EL1
            "msr s3_0_c2_c3_0, xzr",
            "msr s3_0_c2_c3_1, xzr", // APGAKeyLo/Hi_EL1
            options(nomem, nostack)
        )
    };
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
    // PMU: every event counter's type (event and filter) and value, and the cycle counter's
    // filter, zeroed; PMCR_EL0.N [15:11] says how many event counters there are.
    let pmcr: u64;
    // SAFETY: reading PMCR_EL0 at EL2 has no side effect.
    unsafe { asm!("mrs {}, pmcr_el0", out(reg) pmcr, options(nostack, nomem)) };
    let counters = (pmcr >> 11) & 0x1f;
    macro_rules! zero_counters {
        ($n:expr, $($i:literal => $t:literal, $c:literal);*) => {
            $( if $i < $n {
                // SAFETY: PMU registers of the guest's EL0/EL1 state, being reset.
                unsafe { asm!(concat!("msr ", $t, ", xzr"), concat!("msr ", $c, ", xzr"), options(nostack, nomem)) };
            } )*
        };
    }
    // PMEVTYPER<n>_EL0 is S3_3_C14_C<12 + n/8>_<n%8>, PMEVCNTR<n>_EL0 S3_3_C14_C<8 + n/8>_<n%8>.
    zero_counters!(counters,
        0 => "s3_3_c14_c12_0", "s3_3_c14_c8_0"; 1 => "s3_3_c14_c12_1", "s3_3_c14_c8_1";
        2 => "s3_3_c14_c12_2", "s3_3_c14_c8_2"; 3 => "s3_3_c14_c12_3", "s3_3_c14_c8_3";
        4 => "s3_3_c14_c12_4", "s3_3_c14_c8_4"; 5 => "s3_3_c14_c12_5", "s3_3_c14_c8_5";
        6 => "s3_3_c14_c12_6", "s3_3_c14_c8_6"; 7 => "s3_3_c14_c12_7", "s3_3_c14_c8_7";
        8 => "s3_3_c14_c13_0", "s3_3_c14_c9_0"; 9 => "s3_3_c14_c13_1", "s3_3_c14_c9_1";
        10 => "s3_3_c14_c13_2", "s3_3_c14_c9_2"; 11 => "s3_3_c14_c13_3", "s3_3_c14_c9_3";
        12 => "s3_3_c14_c13_4", "s3_3_c14_c9_4"; 13 => "s3_3_c14_c13_5", "s3_3_c14_c9_5";
        14 => "s3_3_c14_c13_6", "s3_3_c14_c9_6"; 15 => "s3_3_c14_c13_7", "s3_3_c14_c9_7";
        16 => "s3_3_c14_c14_0", "s3_3_c14_c10_0"; 17 => "s3_3_c14_c14_1", "s3_3_c14_c10_1";
        18 => "s3_3_c14_c14_2", "s3_3_c14_c10_2"; 19 => "s3_3_c14_c14_3", "s3_3_c14_c10_3";
        20 => "s3_3_c14_c14_4", "s3_3_c14_c10_4"; 21 => "s3_3_c14_c14_5", "s3_3_c14_c10_5";
        22 => "s3_3_c14_c14_6", "s3_3_c14_c10_6"; 23 => "s3_3_c14_c14_7", "s3_3_c14_c10_7";
        24 => "s3_3_c14_c15_0", "s3_3_c14_c11_0"; 25 => "s3_3_c14_c15_1", "s3_3_c14_c11_1";
        26 => "s3_3_c14_c15_2", "s3_3_c14_c11_2"; 27 => "s3_3_c14_c15_3", "s3_3_c14_c11_3";
        28 => "s3_3_c14_c15_4", "s3_3_c14_c11_4"; 29 => "s3_3_c14_c15_5", "s3_3_c14_c11_5";
        30 => "s3_3_c14_c15_6", "s3_3_c14_c11_6");
    // SAFETY: PMCCFILTR_EL0, of the guest's state being reset.
    unsafe { asm!("msr pmccfiltr_el0, xzr", options(nostack, nomem)) };
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
    quiesce_pmu();
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
    super::gic::clear_active_private(super::gic::PPI_VTIMER);
    super::gic::clear_active_private(super::gic::PPI_PTIMER);
    super::gic::clear_active_private(super::gic::PPI_PMU);
}

/// The guest's PMU overflow interrupt off (interrupt enables and overflow flags cleared), so
/// an idle CPU is not interrupted by a line its stopped guest left high.
fn quiesce_pmu() {
    if !has_pmuv3() {
        return;
    }
    // SAFETY: PMU registers of the stopped guest's state; no memory effect.
    unsafe {
        asm!("msr pmintenclr_el1, {all}", "msr pmovsclr_el0, {all}", all = in(reg) u64::MAX,
            options(nostack, nomem))
    };
}

/// Whether this CPU has a PMUv3 (ID_AA64DFR0_EL1.PMUVer [11:8] neither 0 nor 0xF,
/// IMPLEMENTATION DEFINED), which guests get with its overflow interrupt.
pub fn has_pmuv3() -> bool {
    let dfr0: u64;
    // SAFETY: reading ID_AA64DFR0_EL1 has no side effect.
    unsafe { asm!("mrs {}, id_aa64dfr0_el1", out(reg) dfr0, options(nomem, nostack)) };
    !matches!((dfr0 >> 8) & 0xf, 0 | 0xf)
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
