//! What a guest reads from the ID registers: the hardware's values sanitised to what kestrel
//! supports, as KVM's `sys_regs.c` does (`read_sanitised_id_reg`).
//!
//! HCR_EL2.TID3 traps guest reads of the ID register group 3: every encoding with op0 = 3,
//! op1 = 0, CRn = 0, CRm = 1..7 (Arm ARM D24.2.49 HCR_EL2.TID3), i.e. the AArch32 ID registers
//! (CRm 1-3), ID_AA64PFR*/ZFR0/SMFR0/FPFR0 (CRm 4), ID_AA64DFR*/AFR* (CRm 5), ID_AA64ISAR*
//! (CRm 6) and ID_AA64MMFR* (CRm 7), reserved encodings included. [`IdRegs`] holds the 56
//! values a VM reads, computed once when the VM is built.
//!
//! The rule is a whitelist: a field kestrel does not list is read as 0 ("not implemented"), so
//! a feature that appears in a newer CPU stays hidden until someone decides it is safe. A
//! feature is offered when its state is the guest's own in hardware, reset at VM start
//! (`vcpu_hw::reset_el1`, `reset_fp_state`) and not trapped. Hidden, and why:
//!
//! - EL2, EL3 stay as KVM has them (EL2 hidden: no nested virtualization; EL3 kept);
//!   everything that only means something to an EL2 (VMID bits, VHE, stage-2 granules, FGT,
//!   NV, FWB, EVT, HCX, TWED, XNX, HPMN0) hidden.
//! - MTE (HCR_EL2.ATA = 0 traps its registers: TFSR_EL1 would UNDEF), SME (CPTR_EL2.TSM), SVE
//!   when CPTR_EL2 traps it, FP8 (FPMR not managed), RAS error records, MPAM, AMU, SPE,
//!   trace, BRBE, TME, LS64, GCS, NMI, THE, LOR (its registers are trapped), MOPS, TCR2,
//!   SCTLR2, the permission-indirection and overlay extensions, 128-bit system registers and
//!   D128 (each needs an HCRX_EL2 enable or a register kestrel neither resets nor switches).
//! - ID_AA64MMFR0_EL1.PARange says the VM's own IPA size, as KVM does.
#![forbid(unsafe_code)]

use crate::trap::esr::SysReg;

/// The trapped space: op0 = 3, op1 = 0, CRn = 0, CRm = 1..=7, op2 = 0..=7.
pub const ID_SPACE_LEN: usize = 56;

/// The index of an ID-space register in [`IdRegs`], or `None` outside the TID3 space.
pub fn index(reg: SysReg) -> Option<usize> {
    (reg.op0 == 3 && reg.op1 == 0 && reg.crn == 0 && (1..=7).contains(&reg.crm) && reg.op2 < 8)
        .then(|| usize::from(reg.crm - 1) * 8 + usize::from(reg.op2))
}

/// The encoding at index `i` (the inverse of [`index`]).
pub fn encoding(i: usize) -> SysReg {
    SysReg::new(3, 0, 0, (i / 8) as u8 + 1, (i % 8) as u8)
}

/// What a field of an ID register becomes for the guest.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Rule {
    /// The hardware value.
    Keep,
    /// The hardware value, at most this (for unsigned fields where larger means more).
    Max(u8),
    /// This value whatever the hardware says.
    Set(u8),
    /// The hardware value, except 0xF ("IMPLEMENTATION DEFINED", e.g. a PMU that is not
    /// PMUv3), which reads as 0 (not implemented).
    ArchOnly,
}

/// A 4-bit field at `shift` and its rule. Fields not listed read as 0.
type Field = (u8, Rule);

use Rule::{ArchOnly, Keep, Max, Set};

/// ID_AA64PFR0_EL1 (D24.2.85): EL0 [3:0] (a 32-bit EL0 is supported), EL1 [7:4] (at most 1:
/// AArch64 only, HCR_EL2.RW = 1), EL3 [15:12], FP [19:16], AdvSIMD [23:20],
/// GIC [27:24], SVE [35:32] (only when offered, see [`GuestCaps::sve`]), DIT [51:48],
/// CSV2 [59:56], CSV3 [63:60]. Hidden: EL2 [11:8], RAS [31:28], SEL2, MPAM, AMU, RME.
const PFR0: &[Field] = &[
    (0, Keep),
    (4, Max(1)),
    (12, Keep),
    (16, Keep),
    (20, Keep),
    (24, Keep),
    (48, Keep),
    (56, Keep),
    (60, Keep),
];
const PFR0_SVE_SHIFT: u8 = 32;
/// ID_AA64PFR1_EL1 (D24.2.86): BT [3:0], SSBS [7:4], CSV2_frac [35:32]. Hidden: MTE [11:8],
/// RAS_frac, MPAM_frac, SME [27:24], RNDR_trap, NMI [39:36], MTE_frac, GCS [47:44], THE,
/// MTEX, DF2, PFAR.
const PFR1: &[Field] = &[(0, Keep), (4, Keep), (32, Keep)];
/// ID_AA64DFR0_EL1 (D24.2.76): DebugVer [3:0], PMUVer [11:8] (0xF, an IMPLEMENTATION DEFINED
/// PMU, reads as none: the guest DTB's PMU node is PMUv3), BRPs [15:12], WRPs [23:20], CTX_CMPs [31:28], DoubleLock [39:36].
/// Hidden: TraceVer, PMSS, SEBEP, PMSVer (SPE), TraceFilt, TraceBuffer, MTPMU, BRBE,
/// ExtTrcBuff, HPMN0.
const DFR0: &[Field] = &[
    (0, Keep),
    (8, ArchOnly),
    (12, Keep),
    (20, Keep),
    (28, Keep),
    (36, Keep),
];
/// ID_AA64ISAR0_EL1 (D24.2.80): AES, SHA1, SHA2, CRC32, Atomic, RDM, SHA3, SM3, SM4, DP,
/// FHM, TS, TLB, RNDR. Hidden: TME [27:24].
const ISAR0: &[Field] = &[
    (4, Keep),
    (8, Keep),
    (12, Keep),
    (16, Keep),
    (20, Keep),
    (28, Keep),
    (32, Keep),
    (36, Keep),
    (40, Keep),
    (44, Keep),
    (48, Keep),
    (52, Keep),
    (56, Keep),
    (60, Keep),
];
/// ID_AA64ISAR1_EL1 (D24.2.81): DPB, APA, API, JSCVT, FCMA, LRCPC, GPA, GPI, FRINTTS, SB,
/// SPECRES, BF16, DGH, I8MM, XS. Hidden: LS64 [63:60].
const ISAR1: &[Field] = &[
    (0, Keep),
    (4, Keep),
    (8, Keep),
    (12, Keep),
    (16, Keep),
    (20, Keep),
    (24, Keep),
    (28, Keep),
    (32, Keep),
    (36, Keep),
    (40, Keep),
    (44, Keep),
    (48, Keep),
    (52, Keep),
    (56, Keep),
];
/// ID_AA64ISAR2_EL1 (D24.2.82): WFxT [3:0], RPRES [7:4], GPA3 [11:8], APA3 [15:12], BC
/// [23:20], PAC_frac [27:24], CLRBHB [31:28], CSSC [55:52]. Hidden: MOPS [19:16] (UNDEFINED
/// unless HCRX_EL2.MSCEn), SYSREG_128, SYSINSTR_128, PRFMSLC, RPRFM, LUT, ATS1A.
const ISAR2: &[Field] = &[
    (0, Keep),
    (4, Keep),
    (8, Keep),
    (12, Keep),
    (20, Keep),
    (24, Keep),
    (28, Keep),
    (52, Keep),
];
/// ID_AA64MMFR0_EL1 (D24.2.83): PARange [3:0] (see [`GuestCaps::pa_range`]), ASIDBits,
/// BigEnd, SNSMem, BigEndEL0, TGran16, TGran64, TGran4 [31:28], ExS [47:44], ECV [63:60] (at
/// most 1: the self-synchronised counter views; 2 adds EL2's CNTPOFF). TGran16_2,
/// TGran64_2, TGran4_2 read 0b0001 ("no stage 2"). Hidden: FGT [59:56].
const MMFR0: &[Field] = &[
    (4, Keep),
    (8, Keep),
    (12, Keep),
    (16, Keep),
    (20, Keep),
    (24, Keep),
    (28, Keep),
    (32, Set(1)),
    (36, Set(1)),
    (40, Set(1)),
    (44, Keep),
    (60, Max(1)),
];
const MMFR0_PARANGE_SHIFT: u8 = 0;
/// ID_AA64MMFR1_EL1 (D24.2.84): HAFDBS [3:0], HPDS [15:12], PAN [23:20], SpecSEI [27:24],
/// ETS [39:36], AFP [47:44], nTLBPA [51:48], TIDCP1 [55:52], CMOW [59:56], ECBHB [63:60].
/// Hidden: VMIDBits, VH, LO [19:16], XNX, TWED, HCX.
const MMFR1: &[Field] = &[
    (0, Keep),
    (12, Keep),
    (20, Keep),
    (24, Keep),
    (36, Keep),
    (44, Keep),
    (48, Keep),
    (52, Keep),
    (56, Keep),
    (60, Keep),
];
/// ID_AA64MMFR2_EL1 (D24.2.85): CnP, UAO, LSM, IESB, VARange, CCIDX, ST [31:28], AT
/// [35:32], IDS [39:36], TTL [51:48], BBM [55:52], E0PD [63:60]. Hidden: NV [27:24], FWB
/// [43:40], EVT [59:56].
const MMFR2: &[Field] = &[
    (0, Keep),
    (4, Keep),
    (8, Keep),
    (12, Keep),
    (16, Keep),
    (20, Keep),
    (28, Keep),
    (32, Keep),
    (36, Keep),
    (48, Keep),
    (52, Keep),
    (60, Keep),
];
/// AArch32 ID registers (for 32-bit programs at EL0): as the hardware says, except the
/// features hidden above. ID_PFR0_EL1: RAS [31:28], AMU [23:20] hidden.
const ID_PFR0: &[Field] = &[
    (0, Keep),
    (4, Keep),
    (8, Keep),
    (12, Keep),
    (16, Keep),
    (24, Keep),
];
/// ID_DFR0_EL1: CopDbg [3:0], CopSDbg [7:4], MMapDbg [11:8], MProfDbg [23:20], PerfMon [27:24]
/// (0xF reads as none). Hidden: the trace fields CopTrc, MMapTrc, TraceFilt.
const ID_DFR0: &[Field] = &[(0, Keep), (4, Keep), (8, Keep), (20, Keep), (24, ArchOnly)];
/// ID_PFR1_EL1: ProgMod [3:0], Security [7:4], MProgMod [11:8], GenTimer [19:16], Sec_frac
/// [23:20], GIC [31:28]. Hidden: Virtualization [15:12] and Virt_frac [27:24] (an AArch32
/// EL2).
const ID_PFR1: &[Field] = &[
    (0, Keep),
    (4, Keep),
    (8, Keep),
    (16, Keep),
    (20, Keep),
    (28, Keep),
];
/// ID_PFR2_EL1: CSV3 [3:0], SSBS [7:4]. Hidden: RAS_frac [11:8].
const ID_PFR2: &[Field] = &[(0, Keep), (4, Keep)];
/// Every field of the register (AArch32 ISA and memory-model features, MVFR*).
const ALL: &[Field] = &[
    (0, Keep),
    (4, Keep),
    (8, Keep),
    (12, Keep),
    (16, Keep),
    (20, Keep),
    (24, Keep),
    (28, Keep),
];

/// How the guest's machine differs from the hardware's.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct GuestCaps {
    /// The VM's IPA size in bits (stage 2's input range): ID_AA64MMFR0_EL1.PARange says the
    /// smallest range that holds it, at most the hardware's.
    pub ipa_bits: u8,
    /// SVE is usable by the guest (CPTR_EL2 does not trap it); otherwise SVE and
    /// ID_AA64ZFR0_EL1 read as absent.
    pub sve: bool,
}

impl GuestCaps {
    /// The PARange encoding (D24.2.83: 32, 36, 40, 42, 44, 48, 52 bits) covering `ipa_bits`.
    fn pa_range(self) -> u64 {
        const BITS: [u8; 7] = [32, 36, 40, 42, 44, 48, 52];
        BITS.iter().position(|&b| b >= self.ipa_bits).unwrap_or(6) as u64
    }
}

/// The ID-space values a VM reads.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct IdRegs {
    values: [u64; ID_SPACE_LEN],
}

fn apply(hw: u64, fields: &[Field]) -> u64 {
    fields.iter().fold(0, |acc, &(shift, rule)| {
        let v = (hw >> shift) & 0xf;
        let v = match rule {
            Keep => v,
            Max(m) => v.min(u64::from(m)),
            Set(s) => u64::from(s),
            ArchOnly if v == 0xf => 0,
            ArchOnly => v,
        };
        acc | (v << shift)
    })
}

fn set_field(v: u64, shift: u8, field: u64) -> u64 {
    (v & !(0xf << shift)) | ((field & 0xf) << shift)
}

impl IdRegs {
    /// Sanitises `hw` (the hardware's 56 values, indexed as [`index`]) for a guest.
    pub fn sanitise(hw: &[u64; ID_SPACE_LEN], caps: GuestCaps) -> Self {
        let mut values = [0; ID_SPACE_LEN];
        for (i, v) in values.iter_mut().enumerate() {
            *v = sanitise_one(i, hw[i], caps);
        }
        IdRegs { values }
    }

    /// What the guest reads from `reg`, or `None` when `reg` is outside the trapped space.
    pub fn read(&self, reg: SysReg) -> Option<u64> {
        index(reg).map(|i| self.values[i])
    }
}

/// What the guest reads from ID-space register `i` (see [`index`]) whose hardware value is
/// `h`. (The exit path calls this for the one register a trapped MRS names.)
pub fn sanitise_one(i: usize, h: u64, caps: GuestCaps) -> u64 {
    let r = encoding(i);
    match (r.crm, r.op2) {
        // AArch32: ID_PFR0, ID_PFR1, ID_DFR0, ID_AFR0 (IMPLEMENTATION DEFINED: 0),
        // ID_MMFR0-3, ID_ISAR0-5, ID_MMFR4, ID_ISAR6, MVFR0-2, ID_PFR2, ID_DFR1 (0),
        // ID_MMFR5.
        (1, 0) => apply(h, ID_PFR0),
        (1, 2) => apply(h, ID_DFR0),
        (1, 3) => 0,
        (1, 1) => apply(h, ID_PFR1),
        (1, 4..=7) | (2, 0..=7) => apply(h, ALL),
        (3, 0..=2) => apply(h, ALL),
        (3, 4) => apply(h, ID_PFR2),
        (3, 6) => apply(h, ALL),
        // AArch64.
        (4, 0) => {
            let mut v = apply(h, PFR0);
            if caps.sve {
                v = set_field(v, PFR0_SVE_SHIFT, h >> PFR0_SVE_SHIFT);
            }
            v
        }
        (4, 1) => apply(h, PFR1),
        (4, 4) if caps.sve => h,
        (5, 0) => apply(h, DFR0),
        (6, 0) => apply(h, ISAR0),
        (6, 1) => apply(h, ISAR1),
        (6, 2) => apply(h, ISAR2),
        (7, 0) => {
            let hw_range = h & 0xf;
            let v = apply(h, MMFR0);
            set_field(v, MMFR0_PARANGE_SHIFT, hw_range.min(caps.pa_range()))
        }
        (7, 1) => apply(h, MMFR1),
        (7, 2) => apply(h, MMFR2),
        // ID_AA64PFR2 (4,2), ZFR0 without SVE, SMFR0 (4,5), FPFR0 (4,7), DFR1/DFR2,
        // AFR0/AFR1, ISAR3, MMFR3, MMFR4 and every reserved encoding.
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPS: GuestCaps = GuestCaps {
        ipa_bits: 40,
        sve: false,
    };

    fn hw_with(pairs: &[(SysReg, u64)]) -> [u64; ID_SPACE_LEN] {
        let mut hw = [0; ID_SPACE_LEN];
        for &(r, v) in pairs {
            hw[index(r).unwrap()] = v;
        }
        hw
    }

    fn read(hw: &[u64; ID_SPACE_LEN], caps: GuestCaps, r: SysReg) -> u64 {
        IdRegs::sanitise(hw, caps).read(r).unwrap()
    }

    fn field(v: u64, shift: u8) -> u64 {
        (v >> shift) & 0xf
    }

    /// QEMU 10's `-cpu max` ID_AA64PFR1_EL1 with `mte=on`: BT 1, SSBS 2, MTE 3, SME 2, NMI 1,
    /// GCS 1 (fields as QEMU sets them).
    const MAX_PFR1: u64 = 0x0000_1010_0200_0321;

    #[test]
    fn the_trapped_space_is_crm_1_to_7_of_op0_3_op1_0_crn_0() {
        assert_eq!(index(SysReg::ID_AA64PFR0_EL1), Some(24));
        assert_eq!(index(SysReg::ID_AA64MMFR2_EL1), Some(50));
        assert_eq!(index(SysReg::new(3, 0, 0, 1, 0)), Some(0));
        assert_eq!(index(SysReg::new(3, 0, 0, 7, 7)), Some(55));
        assert_eq!(index(SysReg::MIDR_EL1), None);
        assert_eq!(index(SysReg::MPIDR_EL1), None);
        assert_eq!(index(SysReg::new(3, 1, 0, 4, 0)), None);
        assert_eq!(index(SysReg::new(3, 0, 1, 4, 0)), None);
        for i in 0..ID_SPACE_LEN {
            assert_eq!(index(encoding(i)), Some(i));
        }
    }

    #[test]
    fn mte_sme_nmi_and_gcs_are_hidden_bti_and_ssbs_kept() {
        let hw = hw_with(&[(SysReg::ID_AA64PFR1_EL1, MAX_PFR1)]);
        let v = read(&hw, CAPS, SysReg::ID_AA64PFR1_EL1);
        assert_eq!(field(v, 8), 0, "MTE");
        assert_eq!(field(v, 24), 0, "SME");
        assert_eq!(field(v, 36), 0, "NMI");
        assert_eq!(field(v, 44), 0, "GCS");
        assert_eq!(field(v, 0), 1, "BT");
        assert_eq!(field(v, 4), 2, "SSBS");
        assert_eq!(v, 0x21);
    }

    #[test]
    fn sve_is_offered_only_when_the_guest_can_use_it() {
        // FP and AdvSIMD 0 (implemented), EL0/EL1 AArch64+AArch32, GIC 1, SVE 1, CSV2 1,
        // CSV3 1; and EL2 1, RAS 2, MPAM 1, AMU 1 to be hidden.
        let pfr0 = 0x1100_1101_2100_1122u64;
        let zfr0 = 0x0110_0000_0000_0011u64;
        let hw = hw_with(&[
            (SysReg::ID_AA64PFR0_EL1, pfr0),
            (SysReg::new(3, 0, 0, 4, 4), zfr0),
        ]);
        let no_sve = read(&hw, CAPS, SysReg::ID_AA64PFR0_EL1);
        assert_eq!(no_sve, 0x1100_0000_0100_1012, "EL1 AArch64 only");
        assert_eq!(read(&hw, CAPS, SysReg::new(3, 0, 0, 4, 4)), 0);
        let caps = GuestCaps { sve: true, ..CAPS };
        let sve = read(&hw, caps, SysReg::ID_AA64PFR0_EL1);
        assert_eq!(sve, 0x1100_0001_0100_1012);
        assert_eq!(read(&hw, caps, SysReg::new(3, 0, 0, 4, 4)), zfr0);
    }

    #[test]
    fn el2_features_are_hidden_and_pa_range_is_the_vms() {
        // PARange 5 (48 bits), TGran4/64/16 supported, TGran*_2 2 (supported at stage 2),
        // FGT 1, ECV 2.
        let mmfr0 = 0x2100_0222_0000_1125u64;
        // HAFDBS 2, VMIDBits 2, VH 1, HPDS 1, LO 1, PAN 3, XNX 1, TWED 1, ETS 1, HCX 1.
        let mmfr1 = 0x0000_0111_1031_1122u64;
        // NV 2, FWB 1, EVT 2, IDS 1, TTL 1, CnP 1.
        let mmfr2 = 0x0201_0110_0200_0001u64;
        let hw = hw_with(&[
            (SysReg::ID_AA64MMFR0_EL1, mmfr0),
            (SysReg::ID_AA64MMFR1_EL1, mmfr1),
            (SysReg::ID_AA64MMFR2_EL1, mmfr2),
        ]);
        let m0 = read(&hw, CAPS, SysReg::ID_AA64MMFR0_EL1);
        assert_eq!(field(m0, 0), 2, "PARange: the VM's 40-bit IPA space");
        assert_eq!((field(m0, 32), field(m0, 36), field(m0, 40)), (1, 1, 1));
        assert_eq!(field(m0, 56), 0, "FGT");
        assert_eq!(field(m0, 60), 1, "ECV capped at 1");
        assert_eq!(field(m0, 4), 2, "ASIDBits");
        // A VM whose IPA space is wider than the hardware's PA range still reads the latter.
        let wide = GuestCaps {
            ipa_bits: 52,
            ..CAPS
        };
        assert_eq!(field(read(&hw, wide, SysReg::ID_AA64MMFR0_EL1), 0), 5);
        // 41 bits need the 42-bit range.
        let odd = GuestCaps {
            ipa_bits: 41,
            ..CAPS
        };
        assert_eq!(field(read(&hw, odd, SysReg::ID_AA64MMFR0_EL1), 0), 3);
        let m1 = read(&hw, CAPS, SysReg::ID_AA64MMFR1_EL1);
        assert_eq!(m1, 0x0000_0010_0030_1002);
        let m2 = read(&hw, CAPS, SysReg::ID_AA64MMFR2_EL1);
        assert_eq!(m2, 0x0001_0010_0000_0001);
    }

    #[test]
    fn debug_trace_spe_and_impdef_pmus_are_hidden() {
        // DebugVer 6, TraceVer 1, PMUVer 0xF (IMPLEMENTATION DEFINED), BRPs 5, WRPs 3,
        // CTX_CMPs 1, PMSVer 1, DoubleLock 0, BRBE 1.
        let dfr0 = 0x0010_0001_1030_5f16u64;
        let hw = hw_with(&[(SysReg::ID_AA64DFR0_EL1, dfr0)]);
        assert_eq!(
            read(&hw, CAPS, SysReg::ID_AA64DFR0_EL1),
            0x0000_0000_1030_5006
        );
        let hw = hw_with(&[(SysReg::ID_AA64DFR0_EL1, 0x0000_0000_1030_5406)]);
        assert_eq!(
            read(&hw, CAPS, SysReg::ID_AA64DFR0_EL1),
            0x0000_0000_1030_5406,
            "PMUv3p5 kept"
        );
    }

    #[test]
    fn instruction_sets_are_kept_but_tme_ls64_and_mops_hidden() {
        let isar0 = 0x1111_1111_1111_1110u64; // TME [27:24] = 1
        let isar1 = 0x1111_1111_1111_1111u64; // LS64 [63:60] = 1
        let isar2 = 0x1111_1111_1111_1111u64; // MOPS [19:16] = 1
        let hw = hw_with(&[
            (SysReg::ID_AA64ISAR0_EL1, isar0),
            (SysReg::ID_AA64ISAR1_EL1, isar1),
            (SysReg::new(3, 0, 0, 6, 2), isar2),
        ]);
        assert_eq!(
            read(&hw, CAPS, SysReg::ID_AA64ISAR0_EL1),
            0x1111_1111_1011_1110
        );
        assert_eq!(
            read(&hw, CAPS, SysReg::ID_AA64ISAR1_EL1),
            0x0111_1111_1111_1111
        );
        assert_eq!(
            read(&hw, CAPS, SysReg::new(3, 0, 0, 6, 2)),
            0x0010_0000_1110_1111
        );
    }

    #[test]
    fn registers_for_hidden_features_and_reserved_encodings_read_zero() {
        let hw = [u64::MAX; ID_SPACE_LEN];
        let regs = IdRegs::sanitise(&hw, CAPS);
        for (crm, op2, what) in [
            (4, 2, "ID_AA64PFR2_EL1"),
            (4, 4, "ID_AA64ZFR0_EL1 (no SVE)"),
            (4, 5, "ID_AA64SMFR0_EL1"),
            (4, 7, "ID_AA64FPFR0_EL1"),
            (5, 1, "ID_AA64DFR1_EL1"),
            (5, 4, "ID_AA64AFR0_EL1"),
            (5, 5, "ID_AA64AFR1_EL1"),
            (6, 3, "ID_AA64ISAR3_EL1"),
            (7, 3, "ID_AA64MMFR3_EL1"),
            (7, 4, "ID_AA64MMFR4_EL1"),
            (4, 3, "reserved"),
            (7, 7, "reserved"),
            (3, 3, "reserved"),
            (1, 3, "ID_AFR0_EL1"),
        ] {
            assert_eq!(regs.read(SysReg::new(3, 0, 0, crm, op2)), Some(0), "{what}");
        }
        // A value with every bit set loses every field kestrel does not list.
        assert_eq!(
            regs.read(SysReg::ID_AA64PFR1_EL1),
            Some(0x0000_000f_0000_00ff)
        );
    }

    #[test]
    fn aarch32_id_registers_keep_isa_fields_but_hide_ras_amu_and_trace() {
        let hw = [u64::MAX; ID_SPACE_LEN];
        let regs = IdRegs::sanitise(&hw, CAPS);
        // ID_PFR0: RAS [31:28] and AMU [23:20] hidden.
        assert_eq!(regs.read(SysReg::new(3, 0, 0, 1, 0)), Some(0x0f0f_ffff));
        // ID_DFR0: trace hidden, PerfMon 0xF (IMPLEMENTATION DEFINED) reads as none.
        assert_eq!(regs.read(SysReg::new(3, 0, 0, 1, 2)), Some(0x00f0_0fff));
        // ID_PFR1: no AArch32 EL2.
        assert_eq!(regs.read(SysReg::new(3, 0, 0, 1, 1)), Some(0xf0ff_0fff));
        // ID_ISAR0 and MVFR0: every field, the upper 32 bits (RES0) cleared.
        assert_eq!(regs.read(SysReg::new(3, 0, 0, 2, 0)), Some(0xffff_ffff));
        assert_eq!(regs.read(SysReg::new(3, 0, 0, 3, 0)), Some(0xffff_ffff));
        assert_eq!(regs.read(SysReg::new(3, 0, 0, 3, 4)), Some(0xff));
    }
}
