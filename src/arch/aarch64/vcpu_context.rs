//! Saving and restoring what a guest can observe of its physical CPU, for a CPU that several
//! vCPUs share (docs/scheduling.md, "What a switch saves and restores"). Everything
//! `vcpu_hw::reset_el1` and `reset_fp_state` reset is here: the EL1 system registers, both EL1
//! timers, the pointer-authentication keys, debug breakpoints and watchpoints with the OS lock,
//! the PMU, FP/SIMD (and SVE where the guest may use it), the active state of the vCPU's
//! hardware-linked private interrupts and its virtual GIC CPU interface. General registers are
//! the exit frame's (`GuestRegs`), copied by the caller; the stage-2 identity (VTTBR, VTCR,
//! VMPIDR, HCR) is loaded by `vcpu_hw::configure_el2`.
//!
//! A vCPU that runs alone on its CPU never comes here: its state stays live in the hardware.
use super::gic::{self, VirtualInterface};
use alloc::vec::Vec;
use core::arch::asm;

/// The plain EL1/EL0 system registers, saved and restored in this order.
macro_rules! el1_registers {
    ($m:ident) => {
        $m!(
            "sctlr_el1",
            "actlr_el1",
            "cpacr_el1",
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
            "cntkctl_el1",
            "csselr_el1",
            "mdscr_el1",
            "mdccint_el1"
        )
    };
}

macro_rules! count {
    ($($r:literal),*) => { [$($r),*].len() };
}
const EL1_COUNT: usize = el1_registers!(count);

/// The private interrupts a vCPU owns on its CPU: the EL1 timers' and the PMU's PPIs.
const VCPU_PPIS: u32 = (1 << gic::PPI_VTIMER) | (1 << gic::PPI_PTIMER) | (1 << gic::PPI_PMU);

/// A vCPU's CPU state while it is not loaded.
pub struct SavedCpu {
    el1: [u64; EL1_COUNT],
    /// CNTV_CTL, CNTV_CVAL, CNTP_CTL, CNTP_CVAL.
    timers: [u64; 4],
    /// APIA, APIB, APDA, APDB, APGA keys, Lo then Hi.
    pauth: [u64; 10],
    /// DBGBCR/DBGBVR n, DBGWCR/DBGWVR n.
    bp: [(u64, u64); 16],
    wp: [(u64, u64); 16],
    /// OSLSR_EL1.OSLK.
    os_lock: bool,
    /// PMCR, PMSELR, PMCNTENSET, PMINTENSET, PMOVSSET, PMUSERENR, PMCCNTR, PMCCFILTR.
    pmu: [u64; 8],
    /// PMEVTYPER<n>, PMEVCNTR<n>.
    pmev: [(u64, u64); 31],
    /// V0-V31 (16 bytes each), or Z0-Z31, P0-P15 and FFR at the vector length EL2 allows.
    fp: Vec<u8>,
    fpcr: u64,
    fpsr: u64,
    zcr_el1: u64,
    sve: bool,
    /// Active bits of [`VCPU_PPIS`] on the CPU when the vCPU left it.
    ppi_active: u32,
    pub vgic: VirtualInterface,
}

impl Default for SavedCpu {
    fn default() -> Self {
        SavedCpu {
            el1: [0; EL1_COUNT],
            timers: [0; 4],
            pauth: [0; 10],
            bp: [(0, 0); 16],
            wp: [(0, 0); 16],
            os_lock: false,
            pmu: [0; 8],
            pmev: [(0, 0); 31],
            fp: Vec::new(),
            fpcr: 0,
            fpsr: 0,
            zcr_el1: 0,
            sve: false,
            ppi_active: 0,
            vgic: VirtualInterface::default(),
        }
    }
}

fn has_pauth() -> bool {
    let (isar1, isar2): (u64, u64);
    // SAFETY: reading ID registers has no side effect.
    unsafe {
        asm!("mrs {}, id_aa64isar1_el1", "mrs {}, s3_0_c0_c6_2",
            out(reg) isar1, out(reg) isar2, options(nomem, nostack))
    };
    isar1 & 0xff00_0ff0 != 0 || isar2 & 0xff00 != 0
}

fn debug_counts() -> (usize, usize) {
    let dfr0: u64;
    // SAFETY: reading ID_AA64DFR0_EL1 has no side effect.
    unsafe { asm!("mrs {}, id_aa64dfr0_el1", out(reg) dfr0, options(nomem, nostack)) };
    (
        ((dfr0 >> 12) & 0xf) as usize + 1,
        ((dfr0 >> 20) & 0xf) as usize + 1,
    )
}

fn pmu_counters() -> usize {
    let pmcr: u64;
    // SAFETY: reading PMCR_EL0 at EL2 has no side effect.
    unsafe { asm!("mrs {}, pmcr_el0", out(reg) pmcr, options(nostack, nomem)) };
    (((pmcr >> 11) & 0x1f) as usize).min(31)
}

/// `mrs` of register `$r` (a literal name) into a fresh value.
macro_rules! mrs {
    ($r:expr) => {{
        let v: u64;
        // SAFETY: reading a guest EL1/EL0 register at EL2 has no side effect.
        unsafe { asm!(concat!("mrs {}, ", $r), out(reg) v, options(nomem, nostack)) };
        v
    }};
}
macro_rules! msr {
    ($r:expr, $v:expr) => {
        // SAFETY: a register of the guest being loaded; the hypervisor's own state (EL2
        // registers, its stage 1) does not depend on it.
        unsafe { asm!(concat!("msr ", $r, ", {}"), in(reg) ($v), options(nomem, nostack)) }
    };
}

/// Index-dispatched access to numbered registers (breakpoints, watchpoints, PMU counters).
macro_rules! numbered {
    (read $i:expr, $($n:literal => $r:literal),*) => {
        match $i { $( $n => mrs!($r), )* _ => 0 }
    };
    (write $i:expr, $v:expr, $($n:literal => $r:literal),*) => {
        match $i { $( $n => msr!($r, $v), )* _ => {} }
    };
}
macro_rules! bcr { ($op:ident $($a:expr),*) => { numbered!($op $($a),*,
    0 => "dbgbcr0_el1", 1 => "dbgbcr1_el1", 2 => "dbgbcr2_el1", 3 => "dbgbcr3_el1",
    4 => "dbgbcr4_el1", 5 => "dbgbcr5_el1", 6 => "dbgbcr6_el1", 7 => "dbgbcr7_el1",
    8 => "dbgbcr8_el1", 9 => "dbgbcr9_el1", 10 => "dbgbcr10_el1", 11 => "dbgbcr11_el1",
    12 => "dbgbcr12_el1", 13 => "dbgbcr13_el1", 14 => "dbgbcr14_el1", 15 => "dbgbcr15_el1") } }
macro_rules! bvr { ($op:ident $($a:expr),*) => { numbered!($op $($a),*,
    0 => "dbgbvr0_el1", 1 => "dbgbvr1_el1", 2 => "dbgbvr2_el1", 3 => "dbgbvr3_el1",
    4 => "dbgbvr4_el1", 5 => "dbgbvr5_el1", 6 => "dbgbvr6_el1", 7 => "dbgbvr7_el1",
    8 => "dbgbvr8_el1", 9 => "dbgbvr9_el1", 10 => "dbgbvr10_el1", 11 => "dbgbvr11_el1",
    12 => "dbgbvr12_el1", 13 => "dbgbvr13_el1", 14 => "dbgbvr14_el1", 15 => "dbgbvr15_el1") } }
macro_rules! wcr { ($op:ident $($a:expr),*) => { numbered!($op $($a),*,
    0 => "dbgwcr0_el1", 1 => "dbgwcr1_el1", 2 => "dbgwcr2_el1", 3 => "dbgwcr3_el1",
    4 => "dbgwcr4_el1", 5 => "dbgwcr5_el1", 6 => "dbgwcr6_el1", 7 => "dbgwcr7_el1",
    8 => "dbgwcr8_el1", 9 => "dbgwcr9_el1", 10 => "dbgwcr10_el1", 11 => "dbgwcr11_el1",
    12 => "dbgwcr12_el1", 13 => "dbgwcr13_el1", 14 => "dbgwcr14_el1", 15 => "dbgwcr15_el1") } }
macro_rules! wvr { ($op:ident $($a:expr),*) => { numbered!($op $($a),*,
    0 => "dbgwvr0_el1", 1 => "dbgwvr1_el1", 2 => "dbgwvr2_el1", 3 => "dbgwvr3_el1",
    4 => "dbgwvr4_el1", 5 => "dbgwvr5_el1", 6 => "dbgwvr6_el1", 7 => "dbgwvr7_el1",
    8 => "dbgwvr8_el1", 9 => "dbgwvr9_el1", 10 => "dbgwvr10_el1", 11 => "dbgwvr11_el1",
    12 => "dbgwvr12_el1", 13 => "dbgwvr13_el1", 14 => "dbgwvr14_el1", 15 => "dbgwvr15_el1") } }
// PMEVTYPER<n>_EL0 is S3_3_C14_C<12 + n/8>_<n%8>, PMEVCNTR<n>_EL0 S3_3_C14_C<8 + n/8>_<n%8>.
macro_rules! evtyper { ($op:ident $($a:expr),*) => { numbered!($op $($a),*,
    0 => "s3_3_c14_c12_0", 1 => "s3_3_c14_c12_1", 2 => "s3_3_c14_c12_2", 3 => "s3_3_c14_c12_3",
    4 => "s3_3_c14_c12_4", 5 => "s3_3_c14_c12_5", 6 => "s3_3_c14_c12_6", 7 => "s3_3_c14_c12_7",
    8 => "s3_3_c14_c13_0", 9 => "s3_3_c14_c13_1", 10 => "s3_3_c14_c13_2", 11 => "s3_3_c14_c13_3",
    12 => "s3_3_c14_c13_4", 13 => "s3_3_c14_c13_5", 14 => "s3_3_c14_c13_6", 15 => "s3_3_c14_c13_7",
    16 => "s3_3_c14_c14_0", 17 => "s3_3_c14_c14_1", 18 => "s3_3_c14_c14_2", 19 => "s3_3_c14_c14_3",
    20 => "s3_3_c14_c14_4", 21 => "s3_3_c14_c14_5", 22 => "s3_3_c14_c14_6", 23 => "s3_3_c14_c14_7",
    24 => "s3_3_c14_c15_0", 25 => "s3_3_c14_c15_1", 26 => "s3_3_c14_c15_2", 27 => "s3_3_c14_c15_3",
    28 => "s3_3_c14_c15_4", 29 => "s3_3_c14_c15_5", 30 => "s3_3_c14_c15_6") } }
macro_rules! evcntr { ($op:ident $($a:expr),*) => { numbered!($op $($a),*,
    0 => "s3_3_c14_c8_0", 1 => "s3_3_c14_c8_1", 2 => "s3_3_c14_c8_2", 3 => "s3_3_c14_c8_3",
    4 => "s3_3_c14_c8_4", 5 => "s3_3_c14_c8_5", 6 => "s3_3_c14_c8_6", 7 => "s3_3_c14_c8_7",
    8 => "s3_3_c14_c9_0", 9 => "s3_3_c14_c9_1", 10 => "s3_3_c14_c9_2", 11 => "s3_3_c14_c9_3",
    12 => "s3_3_c14_c9_4", 13 => "s3_3_c14_c9_5", 14 => "s3_3_c14_c9_6", 15 => "s3_3_c14_c9_7",
    16 => "s3_3_c14_c10_0", 17 => "s3_3_c14_c10_1", 18 => "s3_3_c14_c10_2", 19 => "s3_3_c14_c10_3",
    20 => "s3_3_c14_c10_4", 21 => "s3_3_c14_c10_5", 22 => "s3_3_c14_c10_6", 23 => "s3_3_c14_c10_7",
    24 => "s3_3_c14_c11_0", 25 => "s3_3_c14_c11_1", 26 => "s3_3_c14_c11_2", 27 => "s3_3_c14_c11_3",
    28 => "s3_3_c14_c11_4", 29 => "s3_3_c14_c11_5", 30 => "s3_3_c14_c11_6") } }

/// Saves the state of the vCPU leaving this CPU into `s`, then leaves nothing of it armed:
/// both EL1 timers off, its private interrupts inactive, the virtual interface empty and off.
/// The guest's FP/SIMD registers must still be live (the hypervisor is soft-float).
pub fn save(s: &mut SavedCpu) {
    macro_rules! save_el1 {
        ($($r:literal),*) => {{ let mut i = 0; $( s.el1[i] = mrs!($r); i += 1; )* let _ = i; }};
    }
    el1_registers!(save_el1);
    s.timers = [
        mrs!("cntv_ctl_el0"),
        mrs!("cntv_cval_el0"),
        mrs!("cntp_ctl_el0"),
        mrs!("cntp_cval_el0"),
    ];
    msr!("cntv_ctl_el0", 0u64);
    msr!("cntp_ctl_el0", 0u64);
    if has_pauth() {
        s.pauth = [
            mrs!("s3_0_c2_c1_0"),
            mrs!("s3_0_c2_c1_1"),
            mrs!("s3_0_c2_c1_2"),
            mrs!("s3_0_c2_c1_3"),
            mrs!("s3_0_c2_c2_0"),
            mrs!("s3_0_c2_c2_1"),
            mrs!("s3_0_c2_c2_2"),
            mrs!("s3_0_c2_c2_3"),
            mrs!("s3_0_c2_c3_0"),
            mrs!("s3_0_c2_c3_1"),
        ];
    }
    let (brps, wrps) = debug_counts();
    for i in 0..brps {
        s.bp[i] = (bcr!(read i), bvr!(read i));
    }
    for i in 0..wrps {
        s.wp[i] = (wcr!(read i), wvr!(read i));
    }
    s.os_lock = mrs!("oslsr_el1") & (1 << 1) != 0;
    if super::vcpu_hw::has_pmuv3() {
        s.pmu = [
            mrs!("pmcr_el0"),
            mrs!("pmselr_el0"),
            mrs!("pmcntenset_el0"),
            mrs!("pmintenset_el1"),
            mrs!("pmovsset_el0"),
            mrs!("pmuserenr_el0"),
            mrs!("pmccntr_el0"),
            mrs!("pmccfiltr_el0"),
        ];
        for i in 0..pmu_counters() {
            s.pmev[i] = (evtyper!(read i), evcntr!(read i));
        }
        // Counting stops and the overflow interrupt stays quiet while another vCPU runs.
        msr!("pmcntenclr_el0", u64::MAX);
        msr!("pmintenclr_el1", u64::MAX);
        msr!("pmovsclr_el0", u64::MAX);
    }
    save_fp(s);
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
    s.ppi_active = gic::private_active() & VCPU_PPIS;
    for ppi in [gic::PPI_VTIMER, gic::PPI_PTIMER, gic::PPI_PMU] {
        if s.ppi_active & (1 << ppi) != 0 {
            gic::clear_active_private(ppi);
        }
    }
    gic::save_virtual_interface(&mut s.vgic);
}

/// Loads a state saved by [`save`] on this CPU (after `vcpu_hw::configure_el2` for its VM).
pub fn restore(s: &SavedCpu) {
    gic::set_private_active(s.ppi_active);
    gic::restore_virtual_interface(&s.vgic);
    macro_rules! restore_el1 {
        ($($r:literal),*) => {{ let mut i = 0; $( msr!($r, s.el1[i]); i += 1; )* let _ = i; }};
    }
    el1_registers!(restore_el1);
    if has_pauth() {
        msr!("s3_0_c2_c1_0", s.pauth[0]);
        msr!("s3_0_c2_c1_1", s.pauth[1]);
        msr!("s3_0_c2_c1_2", s.pauth[2]);
        msr!("s3_0_c2_c1_3", s.pauth[3]);
        msr!("s3_0_c2_c2_0", s.pauth[4]);
        msr!("s3_0_c2_c2_1", s.pauth[5]);
        msr!("s3_0_c2_c2_2", s.pauth[6]);
        msr!("s3_0_c2_c2_3", s.pauth[7]);
        msr!("s3_0_c2_c3_0", s.pauth[8]);
        msr!("s3_0_c2_c3_1", s.pauth[9]);
    }
    let (brps, wrps) = debug_counts();
    for i in 0..brps {
        bcr!(write i, s.bp[i].0);
        bvr!(write i, s.bp[i].1);
    }
    for i in 0..wrps {
        wcr!(write i, s.wp[i].0);
        wvr!(write i, s.wp[i].1);
    }
    msr!("oslar_el1", u64::from(s.os_lock));
    if super::vcpu_hw::has_pmuv3() {
        for i in 0..pmu_counters() {
            evtyper!(write i, s.pmev[i].0);
            evcntr!(write i, s.pmev[i].1);
        }
        // PMCR without P and C (bits 1, 2: they reset counters, they are not state).
        msr!("pmcr_el0", s.pmu[0] & !0b110);
        msr!("pmselr_el0", s.pmu[1]);
        msr!("pmcntenclr_el0", u64::MAX);
        msr!("pmcntenset_el0", s.pmu[2]);
        msr!("pmintenclr_el1", u64::MAX);
        msr!("pmintenset_el1", s.pmu[3]);
        msr!("pmovsclr_el0", u64::MAX);
        msr!("pmovsset_el0", s.pmu[4]);
        msr!("pmuserenr_el0", s.pmu[5]);
        msr!("pmccntr_el0", s.pmu[6]);
        msr!("pmccfiltr_el0", s.pmu[7]);
    }
    restore_fp(s);
    // The timers last: one whose condition is met fires as soon as the guest runs.
    msr!("cntv_cval_el0", s.timers[1]);
    msr!("cntp_cval_el0", s.timers[3]);
    msr!("cntv_ctl_el0", s.timers[0]);
    msr!("cntp_ctl_el0", s.timers[2]);
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
}

/// The earliest time (physical counter) at which one of the vCPU's EL1 timers, as `save`
/// recorded them, asserts its interrupt: enabled and not masked (CNTV_CVAL compares with the
/// virtual counter; CNTVOFF_EL2 is 0).
pub fn timer_deadline(s: &SavedCpu) -> Option<u64> {
    let armed = |ctl: u64| ctl & 1 != 0 && ctl & 2 == 0;
    let v = armed(s.timers[0]).then_some(s.timers[1]);
    let p = armed(s.timers[2]).then_some(s.timers[3]);
    match (v, p) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The same for the vCPU loaded on this CPU, from the live registers.
pub fn live_timer_deadline() -> Option<u64> {
    let armed = |ctl: u64| ctl & 1 != 0 && ctl & 2 == 0;
    let v = armed(mrs!("cntv_ctl_el0")).then(|| mrs!("cntv_cval_el0"));
    let p = armed(mrs!("cntp_ctl_el0")).then(|| mrs!("cntp_cval_el0"));
    match (v, p) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn save_fp(s: &mut SavedCpu) {
    let cptr = mrs!("cptr_el2");
    // CPTR_EL2 TFP [10]: FP/SIMD trapped (the guest cannot have used it either).
    if cptr & (1 << 10) != 0 {
        return;
    }
    s.fpcr = mrs!("s3_3_c4_c4_0");
    s.fpsr = mrs!("s3_3_c4_c4_1");
    s.sve = super::vcpu_hw::guest_sve_usable();
    if s.sve {
        // Vector length in bytes at EL2's (the largest) length: Z 32 * vl, P 16 * vl/8, FFR.
        let vl: u64;
        // SAFETY: SVE is implemented and untrapped (guest_sve_usable); RDVL has no effect.
        unsafe { asm!(".arch_extension sve", "rdvl {}, #1", out(reg) vl, options(nomem, nostack)) };
        let vl = vl as usize;
        s.fp.resize(32 * vl + 17 * (vl / 8), 0);
        s.zcr_el1 = mrs!("s3_0_c1_c2_0");
        let base = s.fp.as_mut_ptr();
        // SAFETY: `fp` holds 32 Z registers of `vl` bytes, then 16 P registers and FFR of
        // `vl / 8` bytes; the stores stay inside it. SVE is untrapped at EL2.
        unsafe {
            asm!(
                ".arch_extension sve",
                "str z0, [{z}, #0, mul vl]", "str z1, [{z}, #1, mul vl]",
                "str z2, [{z}, #2, mul vl]", "str z3, [{z}, #3, mul vl]",
                "str z4, [{z}, #4, mul vl]", "str z5, [{z}, #5, mul vl]",
                "str z6, [{z}, #6, mul vl]", "str z7, [{z}, #7, mul vl]",
                "str z8, [{z}, #8, mul vl]", "str z9, [{z}, #9, mul vl]",
                "str z10, [{z}, #10, mul vl]", "str z11, [{z}, #11, mul vl]",
                "str z12, [{z}, #12, mul vl]", "str z13, [{z}, #13, mul vl]",
                "str z14, [{z}, #14, mul vl]", "str z15, [{z}, #15, mul vl]",
                "str z16, [{z}, #16, mul vl]", "str z17, [{z}, #17, mul vl]",
                "str z18, [{z}, #18, mul vl]", "str z19, [{z}, #19, mul vl]",
                "str z20, [{z}, #20, mul vl]", "str z21, [{z}, #21, mul vl]",
                "str z22, [{z}, #22, mul vl]", "str z23, [{z}, #23, mul vl]",
                "str z24, [{z}, #24, mul vl]", "str z25, [{z}, #25, mul vl]",
                "str z26, [{z}, #26, mul vl]", "str z27, [{z}, #27, mul vl]",
                "str z28, [{z}, #28, mul vl]", "str z29, [{z}, #29, mul vl]",
                "str z30, [{z}, #30, mul vl]", "str z31, [{z}, #31, mul vl]",
                "str p0, [{p}, #0, mul vl]", "str p1, [{p}, #1, mul vl]",
                "str p2, [{p}, #2, mul vl]", "str p3, [{p}, #3, mul vl]",
                "str p4, [{p}, #4, mul vl]", "str p5, [{p}, #5, mul vl]",
                "str p6, [{p}, #6, mul vl]", "str p7, [{p}, #7, mul vl]",
                "str p8, [{p}, #8, mul vl]", "str p9, [{p}, #9, mul vl]",
                "str p10, [{p}, #10, mul vl]", "str p11, [{p}, #11, mul vl]",
                "str p12, [{p}, #12, mul vl]", "str p13, [{p}, #13, mul vl]",
                "str p14, [{p}, #14, mul vl]", "str p15, [{p}, #15, mul vl]",
                "rdffr p0.b",
                "str p0, [{p}, #16, mul vl]",
                "ldr p0, [{p}, #0, mul vl]",
                z = in(reg) base,
                p = in(reg) base.add(32 * vl),
                options(nostack)
            )
        };
    } else {
        s.fp.resize(32 * 16, 0);
        let base = s.fp.as_mut_ptr();
        // SAFETY: `fp` holds 32 * 16 bytes; FP/SIMD is untrapped (checked above).
        unsafe {
            asm!(
                ".arch_extension fp", ".arch_extension simd",
                "stp q0, q1, [{b}, #0]", "stp q2, q3, [{b}, #32]",
                "stp q4, q5, [{b}, #64]", "stp q6, q7, [{b}, #96]",
                "stp q8, q9, [{b}, #128]", "stp q10, q11, [{b}, #160]",
                "stp q12, q13, [{b}, #192]", "stp q14, q15, [{b}, #224]",
                "stp q16, q17, [{b}, #256]", "stp q18, q19, [{b}, #288]",
                "stp q20, q21, [{b}, #320]", "stp q22, q23, [{b}, #352]",
                "stp q24, q25, [{b}, #384]", "stp q26, q27, [{b}, #416]",
                "stp q28, q29, [{b}, #448]", "stp q30, q31, [{b}, #480]",
                b = in(reg) base,
                options(nostack)
            )
        };
    }
}

fn restore_fp(s: &SavedCpu) {
    if s.fp.is_empty() {
        // Never saved (FP trapped): nothing of it to give back.
        return;
    }
    let base = s.fp.as_ptr();
    if s.sve {
        let vl: u64;
        // SAFETY: as in `save_fp`: SVE untrapped, RDVL has no effect.
        unsafe { asm!(".arch_extension sve", "rdvl {}, #1", out(reg) vl, options(nomem, nostack)) };
        let vl = vl as usize;
        if s.fp.len() < 32 * vl + 17 * (vl / 8) {
            return;
        }
        // SAFETY: `fp` was laid out by `save_fp` at this vector length; loads stay inside it.
        unsafe {
            asm!(
                ".arch_extension sve",
                "ldr p0, [{p}, #16, mul vl]",
                "wrffr p0.b",
                "ldr z0, [{z}, #0, mul vl]", "ldr z1, [{z}, #1, mul vl]",
                "ldr z2, [{z}, #2, mul vl]", "ldr z3, [{z}, #3, mul vl]",
                "ldr z4, [{z}, #4, mul vl]", "ldr z5, [{z}, #5, mul vl]",
                "ldr z6, [{z}, #6, mul vl]", "ldr z7, [{z}, #7, mul vl]",
                "ldr z8, [{z}, #8, mul vl]", "ldr z9, [{z}, #9, mul vl]",
                "ldr z10, [{z}, #10, mul vl]", "ldr z11, [{z}, #11, mul vl]",
                "ldr z12, [{z}, #12, mul vl]", "ldr z13, [{z}, #13, mul vl]",
                "ldr z14, [{z}, #14, mul vl]", "ldr z15, [{z}, #15, mul vl]",
                "ldr z16, [{z}, #16, mul vl]", "ldr z17, [{z}, #17, mul vl]",
                "ldr z18, [{z}, #18, mul vl]", "ldr z19, [{z}, #19, mul vl]",
                "ldr z20, [{z}, #20, mul vl]", "ldr z21, [{z}, #21, mul vl]",
                "ldr z22, [{z}, #22, mul vl]", "ldr z23, [{z}, #23, mul vl]",
                "ldr z24, [{z}, #24, mul vl]", "ldr z25, [{z}, #25, mul vl]",
                "ldr z26, [{z}, #26, mul vl]", "ldr z27, [{z}, #27, mul vl]",
                "ldr z28, [{z}, #28, mul vl]", "ldr z29, [{z}, #29, mul vl]",
                "ldr z30, [{z}, #30, mul vl]", "ldr z31, [{z}, #31, mul vl]",
                "ldr p0, [{p}, #0, mul vl]", "ldr p1, [{p}, #1, mul vl]",
                "ldr p2, [{p}, #2, mul vl]", "ldr p3, [{p}, #3, mul vl]",
                "ldr p4, [{p}, #4, mul vl]", "ldr p5, [{p}, #5, mul vl]",
                "ldr p6, [{p}, #6, mul vl]", "ldr p7, [{p}, #7, mul vl]",
                "ldr p8, [{p}, #8, mul vl]", "ldr p9, [{p}, #9, mul vl]",
                "ldr p10, [{p}, #10, mul vl]", "ldr p11, [{p}, #11, mul vl]",
                "ldr p12, [{p}, #12, mul vl]", "ldr p13, [{p}, #13, mul vl]",
                "ldr p14, [{p}, #14, mul vl]", "ldr p15, [{p}, #15, mul vl]",
                z = in(reg) base,
                p = in(reg) base.add(32 * vl),
                options(nostack, readonly)
            )
        };
        msr!("s3_0_c1_c2_0", s.zcr_el1);
    } else if s.fp.len() >= 32 * 16 {
        // SAFETY: `fp` holds 32 * 16 bytes saved by `save_fp`; FP/SIMD is untrapped (the
        // same VM's CPTR_EL2 as when it was saved).
        unsafe {
            asm!(
                ".arch_extension fp", ".arch_extension simd",
                "ldp q0, q1, [{b}, #0]", "ldp q2, q3, [{b}, #32]",
                "ldp q4, q5, [{b}, #64]", "ldp q6, q7, [{b}, #96]",
                "ldp q8, q9, [{b}, #128]", "ldp q10, q11, [{b}, #160]",
                "ldp q12, q13, [{b}, #192]", "ldp q14, q15, [{b}, #224]",
                "ldp q16, q17, [{b}, #256]", "ldp q18, q19, [{b}, #288]",
                "ldp q20, q21, [{b}, #320]", "ldp q22, q23, [{b}, #352]",
                "ldp q24, q25, [{b}, #384]", "ldp q26, q27, [{b}, #416]",
                "ldp q28, q29, [{b}, #448]", "ldp q30, q31, [{b}, #480]",
                b = in(reg) base,
                options(nostack, readonly)
            )
        };
    }
    msr!("s3_3_c4_c4_0", s.fpcr);
    msr!("s3_3_c4_c4_1", s.fpsr);
}
