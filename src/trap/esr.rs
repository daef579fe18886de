//! ESR_EL2 decoding, fault-address helpers, and ESR_EL1 values for injected exceptions.
//!
//! References are to the Arm Architecture Reference Manual for A-profile (DDI 0487 K.a):
//! D24.2.40 "ESR_EL2, Exception Syndrome Register (EL2)" for the EC values and every ISS
//! layout, D24.2.72 "HPFAR_EL2" for the faulting IPA, and D1.4 "Exceptions" for injection.
//!
//! All decoders take the 64-bit value saved on exit; the bit layouts are written once, as
//! tock-registers bitfields, and read through `LocalRegisterCopy`.
#![forbid(unsafe_code)]

use core::fmt;

use tock_registers::LocalRegisterCopy;
use tock_registers::register_bitfields;

use crate::addr::Ipa;
use crate::vdev::AccessWidth;

register_bitfields! [u64,
    /// ESR_ELx, the common part (D24.2.40).
    pub ESR [
        /// [55:32] ISS2, further syndrome for some data aborts (FEAT_LS64, FEAT_GCS, ...).
        ISS2 OFFSET(32) NUMBITS(24) [],
        /// [31:26] Exception Class.
        EC OFFSET(26) NUMBITS(6) [],
        /// [25] Instruction Length: 1 = 32-bit instruction. RES1 for aborts without a valid
        /// instruction syndrome, SError, alignment faults and EC 0x00.
        IL OFFSET(25) NUMBITS(1) [],
        /// [24:0] Instruction Specific Syndrome.
        ISS OFFSET(0) NUMBITS(25) []
    ],

    /// ISS for a Data Abort, EC 0x24/0x25 (D24.2.40, "ISS encoding for an exception from a
    /// Data Abort").
    pub ISS_DABT [
        /// [24] Instruction Syndrome Valid: SAS, SSE, SRT, SF and AR hold the access.
        ISV OFFSET(24) NUMBITS(1) [],
        /// [23:22] Syndrome Access Size.
        SAS OFFSET(22) NUMBITS(2) [
            Byte = 0,
            Halfword = 1,
            Word = 2,
            Doubleword = 3
        ],
        /// [21] Syndrome Sign Extend: the load sign-extends.
        SSE OFFSET(21) NUMBITS(1) [],
        /// [20:16] Syndrome Register Transfer: Rt of the load/store.
        SRT OFFSET(16) NUMBITS(5) [],
        /// [15] Sixty Four: Rt is an X register (1) or a W register (0).
        SF OFFSET(15) NUMBITS(1) [],
        /// [14] Acquire/Release semantics.
        AR OFFSET(14) NUMBITS(1) [],
        /// [13] The fault came from a VNCR_EL2 access (FEAT_NV2).
        VNCR OFFSET(13) NUMBITS(1) [],
        /// [12:11] Synchronous Error Type (FEAT_RAS) for external aborts.
        SET OFFSET(11) NUMBITS(2) [],
        /// [10] FAR not Valid.
        FNV OFFSET(10) NUMBITS(1) [],
        /// [9] External Abort type (IMPLEMENTATION DEFINED classification).
        EA OFFSET(9) NUMBITS(1) [],
        /// [8] Cache Maintenance: the fault came from a cache maintenance or address
        /// translation instruction.
        CM OFFSET(8) NUMBITS(1) [],
        /// [7] Stage-2 fault on a Stage-1 translation table walk.
        S1PTW OFFSET(7) NUMBITS(1) [],
        /// [6] Write not Read.
        WNR OFFSET(6) NUMBITS(1) [],
        /// [5:0] Data Fault Status Code.
        DFSC OFFSET(0) NUMBITS(6) []
    ],

    /// ISS for an Instruction Abort, EC 0x20/0x21.
    pub ISS_IABT [
        /// [12:11] Synchronous Error Type.
        SET OFFSET(11) NUMBITS(2) [],
        /// [10] FAR not Valid.
        FNV OFFSET(10) NUMBITS(1) [],
        /// [9] External Abort type.
        EA OFFSET(9) NUMBITS(1) [],
        /// [7] Stage-2 fault on a Stage-1 translation table walk.
        S1PTW OFFSET(7) NUMBITS(1) [],
        /// [5:0] Instruction Fault Status Code.
        IFSC OFFSET(0) NUMBITS(6) []
    ],

    /// ISS for a trapped MSR, MRS or System instruction, EC 0x18.
    pub ISS_SYS [
        /// [21:20] Op0.
        OP0 OFFSET(20) NUMBITS(2) [],
        /// [19:17] Op2.
        OP2 OFFSET(17) NUMBITS(3) [],
        /// [16:14] Op1.
        OP1 OFFSET(14) NUMBITS(3) [],
        /// [13:10] CRn.
        CRN OFFSET(10) NUMBITS(4) [],
        /// [9:5] Rt.
        RT OFFSET(5) NUMBITS(5) [],
        /// [4:1] CRm.
        CRM OFFSET(1) NUMBITS(4) [],
        /// [0] Direction: 0 = write (MSR, System instructions), 1 = read (MRS).
        DIRECTION OFFSET(0) NUMBITS(1) [
            Write = 0,
            Read = 1
        ]
    ],

    /// ISS for HVC and SMC, EC 0x12/0x13/0x16/0x17.
    pub ISS_HVC [
        /// [15:0] The immediate of the instruction.
        IMM16 OFFSET(0) NUMBITS(16) []
    ],

    /// ISS for a trapped WFI/WFE/WFIT/WFET, EC 0x01.
    pub ISS_WFX [
        /// [24] Condition code valid (AArch32 only).
        CV OFFSET(24) NUMBITS(1) [],
        /// [23:20] Condition code.
        COND OFFSET(20) NUMBITS(4) [],
        /// [9:5] Register holding the timeout of WFIT/WFET.
        RN OFFSET(5) NUMBITS(5) [],
        /// [2] RN is valid.
        RV OFFSET(2) NUMBITS(1) [],
        /// [1:0] Trapped instruction.
        TI OFFSET(0) NUMBITS(2) [
            Wfi = 0,
            Wfe = 1,
            Wfit = 2,
            Wfet = 3
        ]
    ],

    /// HPFAR_EL2, Hypervisor IPA Fault Address Register (D24.2.72).
    pub HPFAR_EL2 [
        /// [63] The faulting IPA is in the Non-secure IPA space.
        NS OFFSET(63) NUMBITS(1) [],
        /// [47:4] Faulting IPA bits [55:12]. Bits [47:44] are RES0 without 56-bit IPAs
        /// (FEAT_D128) and bits [43:40] without 52-bit IPAs (FEAT_LPA), so reading the
        /// widest field is correct everywhere.
        FIPA OFFSET(4) NUMBITS(44) []
    ]
];

/// The Exception Class, ESR_ELx.EC (D24.2.40, table "ESR_ELx.EC").
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ExceptionClass {
    /// 0x00 Unknown reason (includes UNDEFINED instructions).
    Unknown,
    /// 0x01 Trapped WFI, WFE, WFIT or WFET.
    Wfx,
    /// 0x03 Trapped MCR or MRC, coproc 0b1111 (AArch32).
    Cp15McrMrc,
    /// 0x04 Trapped MCRR or MRRC, coproc 0b1111 (AArch32).
    Cp15McrrMrrc,
    /// 0x05 Trapped MCR or MRC, coproc 0b1110 (AArch32).
    Cp14McrMrc,
    /// 0x06 Trapped LDC or STC (AArch32).
    Cp14LdcStc,
    /// 0x07 Access to SVE, Advanced SIMD or floating-point trapped by CPACR/CPTR.
    FpAccess,
    /// 0x08 Trapped VMRS from an ID group trap (AArch32).
    Cp10Vmrs,
    /// 0x09 Pointer authentication instruction trapped by HCR_EL2.API.
    PointerAuth,
    /// 0x0A LD64B/ST64B* (FEAT_LS64).
    Ld64b,
    /// 0x0C Trapped MRRC, coproc 0b1110 (AArch32).
    Cp14Mrrc,
    /// 0x0D Branch Target Exception (FEAT_BTI).
    BranchTarget,
    /// 0x0E Illegal Execution state.
    IllegalState,
    /// 0x11 SVC in AArch32.
    Svc32,
    /// 0x12 HVC in AArch32.
    Hvc32,
    /// 0x13 SMC in AArch32.
    Smc32,
    /// 0x15 SVC in AArch64.
    Svc64,
    /// 0x16 HVC in AArch64.
    Hvc64,
    /// 0x17 SMC in AArch64 (trapped by HCR_EL2.TSC).
    Smc64,
    /// 0x18 Trapped MSR, MRS or System instruction in AArch64.
    SysReg,
    /// 0x19 SVE access trapped by CPACR/CPTR.ZEN.
    Sve,
    /// 0x1A Trapped ERET, ERETAA or ERETAB (FEAT_NV).
    Eret,
    /// 0x1B TSTART (FEAT_TME).
    Tstart,
    /// 0x1C Pointer authentication failure (FEAT_FPAC).
    Fpac,
    /// 0x1D SME access trap.
    Sme,
    /// 0x20 Instruction Abort from a lower Exception level.
    InstructionAbortLower,
    /// 0x21 Instruction Abort taken without a change of Exception level.
    InstructionAbortSame,
    /// 0x22 PC alignment fault.
    PcAlignment,
    /// 0x24 Data Abort from a lower Exception level.
    DataAbortLower,
    /// 0x25 Data Abort taken without a change of Exception level.
    DataAbortSame,
    /// 0x26 SP alignment fault.
    SpAlignment,
    /// 0x27 Memory Operation (FEAT_MOPS).
    Mops,
    /// 0x28 Trapped floating-point exception (AArch32).
    Fp32,
    /// 0x2C Trapped floating-point exception (AArch64).
    Fp64,
    /// 0x2D Guarded Control Stack (FEAT_GCS).
    Gcs,
    /// 0x2F SError.
    SError,
    /// 0x30 Breakpoint from a lower Exception level.
    BreakpointLower,
    /// 0x31 Breakpoint without a change of Exception level.
    BreakpointSame,
    /// 0x32 Software Step from a lower Exception level.
    SoftwareStepLower,
    /// 0x33 Software Step without a change of Exception level.
    SoftwareStepSame,
    /// 0x34 Watchpoint from a lower Exception level.
    WatchpointLower,
    /// 0x35 Watchpoint without a change of Exception level.
    WatchpointSame,
    /// 0x38 BKPT (AArch32).
    Bkpt32,
    /// 0x3A Vector Catch (AArch32).
    VectorCatch32,
    /// 0x3C BRK (AArch64).
    Brk64,
    /// Any EC not listed (reserved or newer than this table).
    Other(u8),
}

/// (EC value, class, report name), one row per named class.
const CLASSES: &[(u8, ExceptionClass, &str)] = &[
    (0x00, ExceptionClass::Unknown, "unknown reason"),
    (0x01, ExceptionClass::Wfx, "WFI/WFE"),
    (0x03, ExceptionClass::Cp15McrMrc, "MCR/MRC (cp15)"),
    (0x04, ExceptionClass::Cp15McrrMrrc, "MCRR/MRRC (cp15)"),
    (0x05, ExceptionClass::Cp14McrMrc, "MCR/MRC (cp14)"),
    (0x06, ExceptionClass::Cp14LdcStc, "LDC/STC (cp14)"),
    (0x07, ExceptionClass::FpAccess, "SVE/SIMD/FP access"),
    (0x08, ExceptionClass::Cp10Vmrs, "VMRS (cp10)"),
    (0x09, ExceptionClass::PointerAuth, "pointer authentication"),
    (0x0a, ExceptionClass::Ld64b, "LD64B/ST64B"),
    (0x0c, ExceptionClass::Cp14Mrrc, "MRRC (cp14)"),
    (0x0d, ExceptionClass::BranchTarget, "branch target"),
    (
        0x0e,
        ExceptionClass::IllegalState,
        "illegal execution state",
    ),
    (0x11, ExceptionClass::Svc32, "SVC (AArch32)"),
    (0x12, ExceptionClass::Hvc32, "HVC (AArch32)"),
    (0x13, ExceptionClass::Smc32, "SMC (AArch32)"),
    (0x15, ExceptionClass::Svc64, "SVC"),
    (0x16, ExceptionClass::Hvc64, "HVC"),
    (0x17, ExceptionClass::Smc64, "SMC"),
    (0x18, ExceptionClass::SysReg, "MSR/MRS/system instruction"),
    (0x19, ExceptionClass::Sve, "SVE access"),
    (0x1a, ExceptionClass::Eret, "ERET"),
    (0x1b, ExceptionClass::Tstart, "TSTART"),
    (0x1c, ExceptionClass::Fpac, "pointer authentication failure"),
    (0x1d, ExceptionClass::Sme, "SME access"),
    (
        0x20,
        ExceptionClass::InstructionAbortLower,
        "instruction abort (lower EL)",
    ),
    (
        0x21,
        ExceptionClass::InstructionAbortSame,
        "instruction abort (same EL)",
    ),
    (0x22, ExceptionClass::PcAlignment, "PC alignment fault"),
    (
        0x24,
        ExceptionClass::DataAbortLower,
        "data abort (lower EL)",
    ),
    (0x25, ExceptionClass::DataAbortSame, "data abort (same EL)"),
    (0x26, ExceptionClass::SpAlignment, "SP alignment fault"),
    (0x27, ExceptionClass::Mops, "memory operation"),
    (0x28, ExceptionClass::Fp32, "FP exception (AArch32)"),
    (0x2c, ExceptionClass::Fp64, "FP exception"),
    (0x2d, ExceptionClass::Gcs, "guarded control stack"),
    (0x2f, ExceptionClass::SError, "SError"),
    (
        0x30,
        ExceptionClass::BreakpointLower,
        "breakpoint (lower EL)",
    ),
    (0x31, ExceptionClass::BreakpointSame, "breakpoint (same EL)"),
    (
        0x32,
        ExceptionClass::SoftwareStepLower,
        "software step (lower EL)",
    ),
    (
        0x33,
        ExceptionClass::SoftwareStepSame,
        "software step (same EL)",
    ),
    (
        0x34,
        ExceptionClass::WatchpointLower,
        "watchpoint (lower EL)",
    ),
    (0x35, ExceptionClass::WatchpointSame, "watchpoint (same EL)"),
    (0x38, ExceptionClass::Bkpt32, "BKPT (AArch32)"),
    (
        0x3a,
        ExceptionClass::VectorCatch32,
        "vector catch (AArch32)",
    ),
    (0x3c, ExceptionClass::Brk64, "BRK"),
];

impl ExceptionClass {
    /// The class of a 6-bit EC value (higher bits are ignored).
    pub fn from_ec(ec: u8) -> Self {
        let ec = ec & 0x3f;
        CLASSES
            .iter()
            .find(|&&(v, _, _)| v == ec)
            .map_or(ExceptionClass::Other(ec), |&(_, c, _)| c)
    }

    /// The 6-bit EC value.
    pub fn ec(self) -> u8 {
        match self {
            ExceptionClass::Other(ec) => ec,
            c => CLASSES
                .iter()
                .find(|&&(_, k, _)| k == c)
                .map_or(0, |&(v, _, _)| v),
        }
    }

    /// A short human-readable name for reports.
    pub fn name(self) -> &'static str {
        CLASSES
            .iter()
            .find(|&&(_, k, _)| k == self)
            .map_or("reserved exception class", |&(_, _, n)| n)
    }
}

impl fmt::Display for ExceptionClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (EC {:#04x})", self.name(), self.ec())
    }
}

/// A fault status code (DFSC/IFSC, D24.2.40 "ISS encoding for an exception from a Data
/// Abort"), with the translation level where the code has one. Level -1 exists with 52-bit
/// addresses (FEAT_LPA2).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FaultStatus {
    AddressSize {
        level: i8,
    },
    Translation {
        level: i8,
    },
    AccessFlag {
        level: i8,
    },
    Permission {
        level: i8,
    },
    /// Synchronous External abort, not on a translation table walk.
    SyncExternal,
    /// Synchronous External abort on a translation table walk.
    SyncExternalOnWalk {
        level: i8,
    },
    /// Synchronous parity or ECC error, not on a translation table walk.
    SyncParity,
    SyncParityOnWalk {
        level: i8,
    },
    /// Synchronous Tag Check Fault (FEAT_MTE2).
    TagCheck,
    Alignment,
    /// Granule Protection Fault on a translation table walk (FEAT_RME).
    GranuleProtectionOnWalk {
        level: i8,
    },
    GranuleProtection,
    TlbConflict,
    /// Unsupported atomic hardware update (FEAT_HAFDBS).
    UnsupportedAtomicUpdate,
    /// 0x34 (lockdown) and 0x35 (unsupported exclusive or atomic access).
    ImplementationDefined(u8),
    Reserved(u8),
}

impl FaultStatus {
    /// Decodes a 6-bit DFSC or IFSC.
    pub fn decode(fsc: u8) -> Self {
        let fsc = fsc & 0x3f;
        let level = (fsc & 0b11) as i8;
        match fsc {
            0x00..=0x03 => FaultStatus::AddressSize { level },
            0x29 => FaultStatus::AddressSize { level: -1 },
            0x04..=0x07 => FaultStatus::Translation { level },
            0x2b => FaultStatus::Translation { level: -1 },
            0x08..=0x0b => FaultStatus::AccessFlag { level },
            0x0c..=0x0f => FaultStatus::Permission { level },
            0x10 => FaultStatus::SyncExternal,
            0x11 => FaultStatus::TagCheck,
            0x13 => FaultStatus::SyncExternalOnWalk { level: -1 },
            0x14..=0x17 => FaultStatus::SyncExternalOnWalk { level },
            0x18 => FaultStatus::SyncParity,
            0x1b => FaultStatus::SyncParityOnWalk { level: -1 },
            0x1c..=0x1f => FaultStatus::SyncParityOnWalk { level },
            0x21 => FaultStatus::Alignment,
            0x23 => FaultStatus::GranuleProtectionOnWalk { level: -1 },
            0x24..=0x27 => FaultStatus::GranuleProtectionOnWalk { level },
            0x28 => FaultStatus::GranuleProtection,
            0x30 => FaultStatus::TlbConflict,
            0x31 => FaultStatus::UnsupportedAtomicUpdate,
            0x34 | 0x35 => FaultStatus::ImplementationDefined(fsc),
            other => FaultStatus::Reserved(other),
        }
    }

    /// Where the faulting IPA of a stage-2 abort with this status and ISS.S1PTW can be read.
    ///
    /// HPFAR_EL2 is written only for stage-2 Translation, Access flag and Address size faults,
    /// and for stage-2 Permission faults *on a stage-1 table walk* (Arm ARM R_FKLWR, D24.2
    /// "HPFAR_EL2"; KVM's `__hpfar_valid`). For any other stage-2 permission fault it is
    /// UNKNOWN: translate FAR_EL2 instead (AT S1E1R, as KVM's `__translate_far_to_hpfar`).
    /// External aborts, parity errors and the rest are not stage-2 translation faults: their
    /// IPA is not needed (the guest gets the abort) and translating FAR could fault again on
    /// the same walk, so there is no source.
    pub fn ipa_source(self, s1ptw: bool) -> IpaSource {
        match self {
            FaultStatus::Translation { .. }
            | FaultStatus::AccessFlag { .. }
            | FaultStatus::AddressSize { .. } => IpaSource::Hpfar,
            FaultStatus::Permission { .. } if s1ptw => IpaSource::Hpfar,
            FaultStatus::Permission { .. } => IpaSource::TranslateFar,
            _ => IpaSource::None,
        }
    }

    /// The translation table level the fault is reported at, when the code carries one.
    pub fn level(self) -> Option<i8> {
        match self {
            FaultStatus::AddressSize { level }
            | FaultStatus::Translation { level }
            | FaultStatus::AccessFlag { level }
            | FaultStatus::Permission { level }
            | FaultStatus::SyncExternalOnWalk { level }
            | FaultStatus::SyncParityOnWalk { level }
            | FaultStatus::GranuleProtectionOnWalk { level } => Some(level),
            _ => None,
        }
    }
}

/// Where a stage-2 abort's IPA comes from ([`FaultStatus::ipa_source`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum IpaSource {
    /// HPFAR_EL2.FIPA with FAR_EL2`[11:0]` ([`fault_ipa`]).
    Hpfar,
    /// HPFAR_EL2 is UNKNOWN: translate FAR_EL2 with the guest's stage 1 (`AT S1E1R`) and take
    /// the IPA from PAR_EL1 ([`fault_ipa_from_par`]).
    TranslateFar,
    /// Not a stage-2 translation fault: no IPA.
    None,
}

/// A decoded data abort ISS.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct DataAbort {
    /// The load/store, when the hardware described it (ISV = 1).
    pub access: Option<MmioAccess>,
    /// Acquire/release semantics (AR; meaningful when ISV = 1).
    pub acquire_release: bool,
    /// FAR_EL2 does not hold the faulting address (FnV).
    pub far_not_valid: bool,
    /// External abort type (EA).
    pub external: bool,
    /// Caused by a cache maintenance or address translation instruction (CM).
    pub cache_maintenance: bool,
    /// A stage-2 fault during a stage-1 table walk (S1PTW).
    pub s1ptw: bool,
    /// The access was a write (WnR; also 1 for cache maintenance faults).
    pub write: bool,
    pub status: FaultStatus,
}

/// A decoded instruction abort ISS.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct InstructionAbort {
    pub far_not_valid: bool,
    pub external: bool,
    pub s1ptw: bool,
    pub status: FaultStatus,
}

/// A System register or System instruction encoding (op0, op1, CRn, CRm, op2), as in the
/// `S<op0>_<op1>_C<n>_C<m>_<op2>` assembler syntax.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct SysReg {
    pub op0: u8,
    pub op1: u8,
    pub crn: u8,
    pub crm: u8,
    pub op2: u8,
}

macro_rules! sysregs {
    ($($name:ident = ($op0:literal, $op1:literal, $crn:literal, $crm:literal, $op2:literal);)*) => {
        impl SysReg {
            $(pub const $name: SysReg = SysReg::new($op0, $op1, $crn, $crm, $op2);)*
        }
        const SYSREG_NAMES: &[(SysReg, &str)] = &[$((SysReg::$name, stringify!($name)),)*];
    };
}

// Encodings from the Arm ARM register descriptions (D24/D23 "Accessing <reg>").
sysregs! {
    // GICv3 CPU interface (IHI 0069 §12).
    ICC_PMR_EL1 = (3, 0, 4, 6, 0);
    ICC_DIR_EL1 = (3, 0, 12, 11, 1);
    ICC_SGI1R_EL1 = (3, 0, 12, 11, 5);
    ICC_ASGI1R_EL1 = (3, 1, 12, 11, 6);
    ICC_SGI0R_EL1 = (3, 2, 12, 11, 7);
    ICC_IAR1_EL1 = (3, 0, 12, 12, 0);
    ICC_EOIR1_EL1 = (3, 0, 12, 12, 1);
    ICC_CTLR_EL1 = (3, 0, 12, 12, 4);
    ICC_SRE_EL1 = (3, 0, 12, 12, 5);
    ICC_IGRPEN1_EL1 = (3, 0, 12, 12, 7);
    // Generic timer.
    CNTFRQ_EL0 = (3, 3, 14, 0, 0);
    CNTPCT_EL0 = (3, 3, 14, 0, 1);
    CNTVCT_EL0 = (3, 3, 14, 0, 2);
    CNTPCTSS_EL0 = (3, 3, 14, 0, 5);
    CNTVCTSS_EL0 = (3, 3, 14, 0, 6);
    CNTP_TVAL_EL0 = (3, 3, 14, 2, 0);
    CNTP_CTL_EL0 = (3, 3, 14, 2, 1);
    CNTP_CVAL_EL0 = (3, 3, 14, 2, 2);
    CNTV_TVAL_EL0 = (3, 3, 14, 3, 0);
    CNTV_CTL_EL0 = (3, 3, 14, 3, 1);
    CNTV_CVAL_EL0 = (3, 3, 14, 3, 2);
    // Debug / OS lock (trapped by MDCR_EL2.TDOSA).
    MDSCR_EL1 = (2, 0, 0, 2, 2);
    OSLAR_EL1 = (2, 0, 1, 0, 4);
    OSLSR_EL1 = (2, 0, 1, 1, 4);
    OSDLR_EL1 = (2, 0, 1, 3, 4);
    // Set/way cache maintenance (trapped by HCR_EL2.TSW).
    DC_ISW = (1, 0, 7, 6, 2);
    DC_CSW = (1, 0, 7, 10, 2);
    DC_CISW = (1, 0, 7, 14, 2);
    // Identification.
    MIDR_EL1 = (3, 0, 0, 0, 0);
    MPIDR_EL1 = (3, 0, 0, 0, 5);
    ID_AA64PFR0_EL1 = (3, 0, 0, 4, 0);
    ID_AA64PFR1_EL1 = (3, 0, 0, 4, 1);
    ID_AA64DFR0_EL1 = (3, 0, 0, 5, 0);
    ID_AA64ISAR0_EL1 = (3, 0, 0, 6, 0);
    ID_AA64ISAR1_EL1 = (3, 0, 0, 6, 1);
    ID_AA64MMFR0_EL1 = (3, 0, 0, 7, 0);
    ID_AA64MMFR1_EL1 = (3, 0, 0, 7, 1);
    ID_AA64MMFR2_EL1 = (3, 0, 0, 7, 2);
    // Virtual memory control (trapped by HCR_EL2.TVM/TRVM).
    SCTLR_EL1 = (3, 0, 1, 0, 0);
    ACTLR_EL1 = (3, 0, 1, 0, 1);
    TTBR0_EL1 = (3, 0, 2, 0, 0);
    TTBR1_EL1 = (3, 0, 2, 0, 1);
    TCR_EL1 = (3, 0, 2, 0, 2);
    AFSR0_EL1 = (3, 0, 5, 1, 0);
    AFSR1_EL1 = (3, 0, 5, 1, 1);
    ESR_EL1 = (3, 0, 5, 2, 0);
    FAR_EL1 = (3, 0, 6, 0, 0);
    MAIR_EL1 = (3, 0, 10, 2, 0);
    AMAIR_EL1 = (3, 0, 10, 3, 0);
    CONTEXTIDR_EL1 = (3, 0, 13, 0, 1);
    // PMU.
    PMCR_EL0 = (3, 3, 9, 12, 0);
    PMUSERENR_EL0 = (3, 3, 9, 14, 0);
}

impl SysReg {
    pub const fn new(op0: u8, op1: u8, crn: u8, crm: u8, op2: u8) -> Self {
        SysReg {
            op0,
            op1,
            crn,
            crm,
            op2,
        }
    }

    /// The architectural name when this table knows the encoding.
    pub fn name(self) -> Option<&'static str> {
        SYSREG_NAMES
            .iter()
            .find(|&&(r, _)| r == self)
            .map(|&(_, n)| n)
    }
}

impl fmt::Display for SysReg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(
                f,
                "S{}_{}_C{}_C{}_{}",
                self.op0, self.op1, self.crn, self.crm, self.op2
            ),
        }
    }
}

/// A trapped MSR/MRS/System instruction.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SysRegAccess {
    pub reg: SysReg,
    /// The general-purpose register transferred (31 = XZR).
    pub rt: u8,
    /// MRS (read) rather than MSR or a System instruction (write).
    pub read: bool,
}

/// Which wait instruction trapped.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum WfxKind {
    Wfi,
    Wfe,
    /// WFI with timeout (FEAT_WFxT).
    Wfit,
    /// WFE with timeout (FEAT_WFxT).
    Wfet,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Wfx {
    pub kind: WfxKind,
    /// The register holding the timeout, for WFIT/WFET (when RV = 1).
    pub timeout_reg: Option<u8>,
}

/// A guest load or store to an emulated device, from a data abort with a valid instruction
/// syndrome (ISV = 1).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MmioAccess {
    pub write: bool,
    pub width: AccessWidth,
    /// Rt: 31 is XZR (a store of zero; a load whose result is discarded).
    pub reg: u8,
    /// The load sign-extends (SSE).
    pub sign_extend: bool,
    /// Rt is an X register (SF = 1) rather than a W register.
    pub sixty_four: bool,
}

/// Why a data abort cannot be emulated as an MMIO access; the caller injects an external abort.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MmioDecodeError {
    /// The exception is not a data abort from the guest (EC != 0x24).
    NotDataAbort,
    /// ISV = 0: the hardware did not describe the access (load/store pair, writeback,
    /// SIMD register, ...).
    NoSyndrome,
    /// A stage-1 table walk touched the region (S1PTW = 1).
    TableWalk,
    /// A cache maintenance or address translation instruction (CM = 1).
    CacheMaintenance,
}

impl MmioAccess {
    /// The value a store writes, given the value of register Rt: zero for XZR, otherwise the
    /// low `width` bytes.
    pub fn store_value(&self, rt_value: u64) -> u64 {
        if self.reg == 31 {
            0
        } else {
            rt_value & self.width.mask()
        }
    }

    /// The new value of register Rt after a load that returned `data`, or `None` when Rt is
    /// XZR and the result is discarded. The data is truncated to the access width, then
    /// sign-extended when SSE = 1, then truncated to 32 bits when Rt is a W register (writes
    /// to a W register zero bits [63:32]; Arm ARM C1.2.5 "Register names").
    pub fn load_result(&self, data: u64) -> Option<u64> {
        if self.reg == 31 {
            return None;
        }
        let mut value = data & self.width.mask();
        if self.sign_extend && self.width != AccessWidth::Double {
            let bits = (self.width.bytes() * 8) as u32;
            let shift = 64 - bits;
            value = (((value << shift) as i64) >> shift) as u64;
        }
        if !self.sixty_four {
            value &= 0xffff_ffff;
        }
        Some(value)
    }
}

/// A saved ESR_EL2 value.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Esr(pub u64);

impl Esr {
    fn esr(self) -> LocalRegisterCopy<u64, ESR::Register> {
        LocalRegisterCopy::new(self.0)
    }

    pub fn class(self) -> ExceptionClass {
        ExceptionClass::from_ec(self.esr().read(ESR::EC) as u8)
    }

    /// IL: the trapped instruction was 32 bits long (always, for AArch64).
    pub fn il32(self) -> bool {
        self.esr().is_set(ESR::IL)
    }

    /// The raw ISS field, bits [24:0].
    pub fn iss(self) -> u32 {
        self.esr().read(ESR::ISS) as u32
    }

    /// The data abort syndrome, for EC 0x24 and 0x25.
    pub fn data_abort(self) -> Option<DataAbort> {
        if !matches!(
            self.class(),
            ExceptionClass::DataAbortLower | ExceptionClass::DataAbortSame
        ) {
            return None;
        }
        let iss: LocalRegisterCopy<u64, ISS_DABT::Register> = LocalRegisterCopy::new(self.0);
        let write = iss.is_set(ISS_DABT::WNR);
        let access = iss.is_set(ISS_DABT::ISV).then(|| MmioAccess {
            write,
            width: match iss.read_as_enum(ISS_DABT::SAS) {
                Some(ISS_DABT::SAS::Value::Byte) => AccessWidth::Byte,
                Some(ISS_DABT::SAS::Value::Halfword) => AccessWidth::Half,
                Some(ISS_DABT::SAS::Value::Word) => AccessWidth::Word,
                _ => AccessWidth::Double,
            },
            reg: iss.read(ISS_DABT::SRT) as u8,
            sign_extend: iss.is_set(ISS_DABT::SSE),
            sixty_four: iss.is_set(ISS_DABT::SF),
        });
        Some(DataAbort {
            access,
            acquire_release: iss.is_set(ISS_DABT::AR),
            far_not_valid: iss.is_set(ISS_DABT::FNV),
            external: iss.is_set(ISS_DABT::EA),
            cache_maintenance: iss.is_set(ISS_DABT::CM),
            s1ptw: iss.is_set(ISS_DABT::S1PTW),
            write,
            status: FaultStatus::decode(iss.read(ISS_DABT::DFSC) as u8),
        })
    }

    /// The instruction abort syndrome, for EC 0x20 and 0x21.
    pub fn instruction_abort(self) -> Option<InstructionAbort> {
        if !matches!(
            self.class(),
            ExceptionClass::InstructionAbortLower | ExceptionClass::InstructionAbortSame
        ) {
            return None;
        }
        let iss: LocalRegisterCopy<u64, ISS_IABT::Register> = LocalRegisterCopy::new(self.0);
        Some(InstructionAbort {
            far_not_valid: iss.is_set(ISS_IABT::FNV),
            external: iss.is_set(ISS_IABT::EA),
            s1ptw: iss.is_set(ISS_IABT::S1PTW),
            status: FaultStatus::decode(iss.read(ISS_IABT::IFSC) as u8),
        })
    }

    /// The trapped System register access, for EC 0x18.
    pub fn sysreg(self) -> Option<SysRegAccess> {
        if self.class() != ExceptionClass::SysReg {
            return None;
        }
        let iss: LocalRegisterCopy<u64, ISS_SYS::Register> = LocalRegisterCopy::new(self.0);
        Some(SysRegAccess {
            reg: SysReg::new(
                iss.read(ISS_SYS::OP0) as u8,
                iss.read(ISS_SYS::OP1) as u8,
                iss.read(ISS_SYS::CRN) as u8,
                iss.read(ISS_SYS::CRM) as u8,
                iss.read(ISS_SYS::OP2) as u8,
            ),
            rt: iss.read(ISS_SYS::RT) as u8,
            read: iss.matches_all(ISS_SYS::DIRECTION::Read),
        })
    }

    /// The immediate of an HVC or SMC (AArch64 or AArch32).
    pub fn hvc_smc_imm(self) -> Option<u16> {
        match self.class() {
            ExceptionClass::Hvc64
            | ExceptionClass::Smc64
            | ExceptionClass::Hvc32
            | ExceptionClass::Smc32 => {
                let iss: LocalRegisterCopy<u64, ISS_HVC::Register> = LocalRegisterCopy::new(self.0);
                Some(iss.read(ISS_HVC::IMM16) as u16)
            }
            _ => None,
        }
    }

    /// The trapped wait instruction, for EC 0x01.
    pub fn wfx(self) -> Option<Wfx> {
        if self.class() != ExceptionClass::Wfx {
            return None;
        }
        let iss: LocalRegisterCopy<u64, ISS_WFX::Register> = LocalRegisterCopy::new(self.0);
        let kind = match iss.read_as_enum(ISS_WFX::TI) {
            Some(ISS_WFX::TI::Value::Wfi) => WfxKind::Wfi,
            Some(ISS_WFX::TI::Value::Wfe) => WfxKind::Wfe,
            Some(ISS_WFX::TI::Value::Wfit) => WfxKind::Wfit,
            _ => WfxKind::Wfet,
        };
        let timeout_reg = iss.is_set(ISS_WFX::RV).then(|| iss.read(ISS_WFX::RN) as u8);
        Some(Wfx { kind, timeout_reg })
    }

    /// The guest MMIO access a stage-2 data abort from the guest describes.
    pub fn mmio_access(self) -> Result<MmioAccess, MmioDecodeError> {
        if self.class() != ExceptionClass::DataAbortLower {
            return Err(MmioDecodeError::NotDataAbort);
        }
        let dabt = self.data_abort().ok_or(MmioDecodeError::NotDataAbort)?;
        if dabt.s1ptw {
            return Err(MmioDecodeError::TableWalk);
        }
        if dabt.cache_maintenance {
            return Err(MmioDecodeError::CacheMaintenance);
        }
        dabt.access.ok_or(MmioDecodeError::NoSyndrome)
    }
}

/// The faulting IPA of a stage-2 abort: page from HPFAR_EL2.FIPA (IPA[55:12]), offset within
/// the page from FAR_EL2.
///
/// HPFAR_EL2 is valid for stage-2 translation and access flag faults and for any stage-2 fault
/// on a stage-1 walk (S1PTW = 1); for a stage-2 *permission* fault without S1PTW the
/// architecture allows it to be UNKNOWN on some implementations (D24.2.72), and FAR_EL2 is not
/// valid when ISS.FnV = 1. The caller checks those conditions before trusting the result.
pub fn fault_ipa(hpfar_el2: u64, far_el2: u64) -> Ipa {
    let hpfar: LocalRegisterCopy<u64, HPFAR_EL2::Register> = LocalRegisterCopy::new(hpfar_el2);
    Ipa::new((hpfar.read(HPFAR_EL2::FIPA) << 12) | (far_el2 & 0xfff))
}

/// The faulting IPA from the PAR_EL1 value of an `AT S1E1R` of FAR_EL2 (D24.2 "PAR_EL1"):
/// PA`[51:12]` is the IPA's page when F = 0, FAR_EL2`[11:0]` the offset. `None` when the
/// translation failed (F = 1): the guest changed its stage-1 tables since the fault, and
/// retrying the access will fault again with a fresh syndrome.
pub fn fault_ipa_from_par(par_el1: u64, far_el2: u64) -> Option<Ipa> {
    const F: u64 = 1;
    const PA: u64 = 0x000f_ffff_ffff_f000;
    (par_el1 & F == 0).then(|| Ipa::new((par_el1 & PA) | (far_el2 & 0xfff)))
}

/// Which synchronous abort to inject.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum InjectedAbort {
    /// A data abort; `write` sets WnR.
    Data { write: bool },
    /// An instruction abort (prefetch abort).
    Instruction,
}

const FSC_SYNC_EXTERNAL: u64 = 0x10;

/// ESR_EL1 for a synchronous external abort injected into an AArch64 guest: EC 0x24/0x20 when
/// the guest was at EL0 (the exception is taken from a lower level to EL1), 0x25/0x21 when it
/// was at EL1; IL = 1 (RES1 for aborts without an instruction syndrome, D24.2.40), ISV = 0,
/// FSC = 0b010000 "synchronous External abort, not on translation table walk". The caller sets
/// FAR_EL1 to the faulting virtual address, as KVM's `inject_abt64` does.
pub fn esr_el1_external_abort(abort: InjectedAbort, from_el0: bool) -> u64 {
    let (class, wnr) = match (abort, from_el0) {
        (InjectedAbort::Data { write }, true) => (ExceptionClass::DataAbortLower, write),
        (InjectedAbort::Data { write }, false) => (ExceptionClass::DataAbortSame, write),
        (InjectedAbort::Instruction, true) => (ExceptionClass::InstructionAbortLower, false),
        (InjectedAbort::Instruction, false) => (ExceptionClass::InstructionAbortSame, false),
    };
    let mut v = (ESR::EC.val(u64::from(class.ec())) + ESR::IL::SET).value;
    v |= ISS_DABT::DFSC.val(FSC_SYNC_EXTERNAL).value;
    if wnr {
        v |= ISS_DABT::WNR::SET.value;
    }
    v
}

/// ESR_EL1 for an UNDEFINED instruction injected into an AArch64 guest: EC 0x00 "unknown
/// reason", IL = 1 (RES1 for EC 0x00), ISS = 0.
pub fn esr_el1_undefined() -> u64 {
    (ESR::EC.val(u64::from(ExceptionClass::Unknown.ec())) + ESR::IL::SET).value
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds an ESR from an EC and an ISS.
    fn esr(ec: u8, iss: u64) -> Esr {
        Esr((u64::from(ec) << 26) | (1 << 25) | iss)
    }

    #[test]
    fn every_named_class_round_trips_through_its_ec() {
        for &(ec, class, name) in CLASSES {
            assert_eq!(ExceptionClass::from_ec(ec), class);
            assert_eq!(class.ec(), ec);
            assert_eq!(class.name(), name);
            assert_eq!(esr(ec, 0).class(), class);
        }
        assert_eq!(ExceptionClass::from_ec(0x3f), ExceptionClass::Other(0x3f));
        assert_eq!(ExceptionClass::Other(0x3f).ec(), 0x3f);
        assert_eq!(
            ExceptionClass::Other(0x02).name(),
            "reserved exception class"
        );
    }

    #[test]
    fn class_names_for_reports() {
        assert_eq!(esr(0x16, 0).class().name(), "HVC");
        assert_eq!(esr(0x18, 0).class().name(), "MSR/MRS/system instruction");
        assert_eq!(
            alloc::format!("{}", ExceptionClass::DataAbortLower),
            "data abort (lower EL) (EC 0x24)"
        );
    }

    #[test]
    fn data_abort_fields_decode_from_a_real_syndrome() {
        // ldrsh w3, [x1] faulting at stage 2, translation fault level 3:
        // ISV=1 SAS=01 SSE=1 SRT=3 SF=0 AR=0 FnV=0 EA=0 CM=0 S1PTW=0 WnR=0 DFSC=0b000111.
        let iss = (1 << 24) | (0b01 << 22) | (1 << 21) | (3 << 16) | 0b000111;
        let d = esr(0x24, iss).data_abort().unwrap();
        assert_eq!(
            d,
            DataAbort {
                access: Some(MmioAccess {
                    write: false,
                    width: AccessWidth::Half,
                    reg: 3,
                    sign_extend: true,
                    sixty_four: false,
                }),
                acquire_release: false,
                far_not_valid: false,
                external: false,
                cache_maintenance: false,
                s1ptw: false,
                write: false,
                status: FaultStatus::Translation { level: 3 },
            }
        );
    }

    #[test]
    fn data_abort_flag_bits_each_map_to_one_field() {
        let base = 0b001101; // permission fault level 1
        type Field = fn(&DataAbort) -> bool;
        let cases: [(u64, Field); 6] = [
            (1 << 14, |d| d.acquire_release),
            (1 << 10, |d| d.far_not_valid),
            (1 << 9, |d| d.external),
            (1 << 8, |d| d.cache_maintenance),
            (1 << 7, |d| d.s1ptw),
            (1 << 6, |d| d.write),
        ];
        for (bit, field) in cases {
            let d = esr(0x25, base | bit).data_abort().unwrap();
            assert!(field(&d), "bit {bit:#x}");
            assert_eq!(d.status, FaultStatus::Permission { level: 1 });
            assert_eq!(d.access, None);
            let others = cases.iter().filter(|&&(b, _)| b != bit).any(|(_, f)| f(&d));
            assert!(!others, "bit {bit:#x} set another field");
        }
    }

    #[test]
    fn fault_status_codes_decode_with_levels() {
        let cases = [
            (0x00, FaultStatus::AddressSize { level: 0 }),
            (0x29, FaultStatus::AddressSize { level: -1 }),
            (0x05, FaultStatus::Translation { level: 1 }),
            (0x2b, FaultStatus::Translation { level: -1 }),
            (0x0a, FaultStatus::AccessFlag { level: 2 }),
            (0x0f, FaultStatus::Permission { level: 3 }),
            (0x10, FaultStatus::SyncExternal),
            (0x11, FaultStatus::TagCheck),
            (0x13, FaultStatus::SyncExternalOnWalk { level: -1 }),
            (0x16, FaultStatus::SyncExternalOnWalk { level: 2 }),
            (0x18, FaultStatus::SyncParity),
            (0x1d, FaultStatus::SyncParityOnWalk { level: 1 }),
            (0x21, FaultStatus::Alignment),
            (0x25, FaultStatus::GranuleProtectionOnWalk { level: 1 }),
            (0x28, FaultStatus::GranuleProtection),
            (0x30, FaultStatus::TlbConflict),
            (0x31, FaultStatus::UnsupportedAtomicUpdate),
            (0x35, FaultStatus::ImplementationDefined(0x35)),
            (0x3f, FaultStatus::Reserved(0x3f)),
        ];
        for (code, status) in cases {
            assert_eq!(FaultStatus::decode(code), status, "{code:#x}");
        }
        assert_eq!(FaultStatus::decode(0x07).level(), Some(3));
        assert_eq!(FaultStatus::decode(0x21).level(), None);
    }

    #[test]
    fn instruction_abort_decodes_ifsc_and_flags() {
        let i = esr(0x20, (1 << 10) | (1 << 7) | 0x0e)
            .instruction_abort()
            .unwrap();
        assert_eq!(
            i,
            InstructionAbort {
                far_not_valid: true,
                external: false,
                s1ptw: true,
                status: FaultStatus::Permission { level: 2 }
            }
        );
        assert_eq!(esr(0x24, 0).instruction_abort(), None);
        assert_eq!(esr(0x20, 0).data_abort(), None);
    }

    /// The ISS of an MSR/MRS trap for `reg`, with Rt and direction.
    fn sys_iss(r: SysReg, rt: u64, read: bool) -> u64 {
        (u64::from(r.op0) << 20)
            | (u64::from(r.op2) << 17)
            | (u64::from(r.op1) << 14)
            | (u64::from(r.crn) << 10)
            | (rt << 5)
            | (u64::from(r.crm) << 1)
            | u64::from(read)
    }

    #[test]
    fn sysreg_trap_matches_named_encodings() {
        // msr ICC_SGI1R_EL1, x5: S3_0_C12_C11_5.
        let a = esr(0x18, sys_iss(SysReg::new(3, 0, 12, 11, 5), 5, false))
            .sysreg()
            .unwrap();
        assert_eq!(
            a,
            SysRegAccess {
                reg: SysReg::ICC_SGI1R_EL1,
                rt: 5,
                read: false
            }
        );
        assert_eq!(a.reg.name(), Some("ICC_SGI1R_EL1"));
        // mrs x0, CNTP_CTL_EL0: S3_3_C14_C2_1.
        let a = esr(0x18, sys_iss(SysReg::new(3, 3, 14, 2, 1), 0, true))
            .sysreg()
            .unwrap();
        assert_eq!(
            a,
            SysRegAccess {
                reg: SysReg::CNTP_CTL_EL0,
                rt: 0,
                read: true
            }
        );
        // dc isw, x2 (trapped by HCR_EL2.TSW) is a "write".
        let a = esr(0x18, sys_iss(SysReg::DC_ISW, 2, false))
            .sysreg()
            .unwrap();
        assert_eq!(alloc::format!("{}", a.reg), "DC_ISW");
        // An encoding the table does not name prints in generic form.
        let unknown = SysReg::new(3, 7, 15, 15, 7);
        assert_eq!(unknown.name(), None);
        assert_eq!(alloc::format!("{unknown}"), "S3_7_C15_C15_7");
        assert_eq!(esr(0x16, 0).sysreg(), None);
    }

    #[test]
    fn every_named_sysreg_survives_an_iss_round_trip() {
        for &(reg, name) in SYSREG_NAMES {
            for (rt, read) in [(0, true), (31, false), (17, true)] {
                let a = esr(0x18, sys_iss(reg, rt, read)).sysreg().unwrap();
                assert_eq!(
                    a,
                    SysRegAccess {
                        reg,
                        rt: rt as u8,
                        read
                    },
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn hvc_and_smc_immediates() {
        assert_eq!(esr(0x16, 0x4b1d).hvc_smc_imm(), Some(0x4b1d));
        assert_eq!(esr(0x17, 0).hvc_smc_imm(), Some(0));
        assert_eq!(esr(0x12, 0xffff).hvc_smc_imm(), Some(0xffff));
        assert_eq!(esr(0x18, 0x1234).hvc_smc_imm(), None);
    }

    #[test]
    fn wfx_kinds_and_timeout_register() {
        assert_eq!(
            esr(0x01, 0b00).wfx(),
            Some(Wfx {
                kind: WfxKind::Wfi,
                timeout_reg: None
            })
        );
        assert_eq!(
            esr(0x01, 0b01).wfx(),
            Some(Wfx {
                kind: WfxKind::Wfe,
                timeout_reg: None
            })
        );
        assert_eq!(
            esr(0x01, (7 << 5) | (1 << 2) | 0b10).wfx(),
            Some(Wfx {
                kind: WfxKind::Wfit,
                timeout_reg: Some(7)
            })
        );
        assert_eq!(
            esr(0x01, (30 << 5) | (1 << 2) | 0b11).wfx(),
            Some(Wfx {
                kind: WfxKind::Wfet,
                timeout_reg: Some(30)
            })
        );
        assert_eq!(esr(0x00, 0).wfx(), None);
    }

    #[test]
    fn hpfar_is_trusted_only_for_the_faults_that_write_it() {
        // Every FSC with and without S1PTW: HPFAR_EL2 for translation, access flag and
        // address size faults, and for permission faults on a stage-1 walk; other stage-2
        // permission faults translate FAR_EL2; the rest have no IPA.
        for fsc in 0..64u8 {
            let st = FaultStatus::decode(fsc);
            for s1ptw in [false, true] {
                let want = match st {
                    FaultStatus::Translation { .. }
                    | FaultStatus::AccessFlag { .. }
                    | FaultStatus::AddressSize { .. } => IpaSource::Hpfar,
                    FaultStatus::Permission { .. } if s1ptw => IpaSource::Hpfar,
                    FaultStatus::Permission { .. } => IpaSource::TranslateFar,
                    _ => IpaSource::None,
                };
                assert_eq!(st.ipa_source(s1ptw), want, "FSC {fsc:#x} S1PTW {s1ptw}");
            }
        }
        // Named spot checks (DFSC 0b0011xx permission, 0b0001xx translation).
        let perm3 = FaultStatus::decode(0x0f);
        assert_eq!(perm3.ipa_source(false), IpaSource::TranslateFar);
        assert_eq!(perm3.ipa_source(true), IpaSource::Hpfar);
        assert_eq!(
            FaultStatus::decode(0x07).ipa_source(false),
            IpaSource::Hpfar
        );
        assert_eq!(FaultStatus::decode(0x10).ipa_source(false), IpaSource::None);
    }

    #[test]
    fn par_el1_gives_the_ipa_page_and_far_the_offset() {
        // F = 0: PA[51:12] (attributes in [63:56] and SH/NS bits ignored) | FAR[11:0].
        let par = (0xff << 56) | 0x0000_0012_3456_7000 | (0b11 << 7) | (1 << 9);
        assert_eq!(
            fault_ipa_from_par(par, 0xffff_8000_0000_0abc),
            Some(Ipa::new(0x12_3456_7abc))
        );
        assert_eq!(
            fault_ipa_from_par(0x000f_ffff_ffff_f000, 0xfff),
            Some(Ipa::new(0x000f_ffff_ffff_ffff))
        );
        // F = 1: the AT failed (FST in [6:1]); no IPA.
        assert_eq!(
            fault_ipa_from_par(0x0000_0012_3456_7000 | 1 | (0x07 << 1), 0),
            None
        );
    }

    #[test]
    fn fault_ipa_combines_hpfar_page_and_far_offset() {
        // IPA 0x0900_0018: HPFAR.FIPA = 0x9000 at bit 4; FAR holds a guest VA with the same
        // page offset.
        assert_eq!(
            fault_ipa(0x9000 << 4, 0xffff_0000_1234_5018),
            Ipa::new(0x0900_0018)
        );
        // The NS bit and RES0 bits [3:0] do not leak into the IPA.
        assert_eq!(
            fault_ipa((1 << 63) | (0x9000 << 4) | 0xf, 0x18),
            Ipa::new(0x0900_0018)
        );
        // A 52-bit IPA (FIPA bits [43:4] all set) and a 56-bit one ([47:4]).
        assert_eq!(
            fault_ipa(((1 << 40) - 1) << 4, 0xabc),
            Ipa::new(0x000f_ffff_ffff_fabc)
        );
        assert_eq!(
            fault_ipa(((1 << 44) - 1) << 4, 0),
            Ipa::new(0x00ff_ffff_ffff_f000)
        );
    }

    #[test]
    fn mmio_access_from_store_and_load_syndromes() {
        // str w1, [x0]: ISV SAS=Word SRT=1 SF=0 WnR=1, translation fault level 3.
        let st = esr(0x24, (1 << 24) | (0b10 << 22) | (1 << 16) | (1 << 6) | 0x07);
        assert_eq!(
            st.mmio_access(),
            Ok(MmioAccess {
                write: true,
                width: AccessWidth::Word,
                reg: 1,
                sign_extend: false,
                sixty_four: false
            })
        );
        // ldr x30, [x2]: SAS=Double SRT=30 SF=1.
        let ld = esr(
            0x24,
            (1 << 24) | (0b11 << 22) | (30 << 16) | (1 << 15) | 0x06,
        );
        assert_eq!(
            ld.mmio_access(),
            Ok(MmioAccess {
                write: false,
                width: AccessWidth::Double,
                reg: 30,
                sign_extend: false,
                sixty_four: true
            })
        );
    }

    #[test]
    fn mmio_access_refusals() {
        assert_eq!(
            esr(0x24, 0x07).mmio_access(),
            Err(MmioDecodeError::NoSyndrome)
        );
        assert_eq!(
            esr(0x25, (1 << 24) | 0x07).mmio_access(),
            Err(MmioDecodeError::NotDataAbort)
        );
        assert_eq!(
            esr(0x16, 0).mmio_access(),
            Err(MmioDecodeError::NotDataAbort)
        );
        assert_eq!(
            esr(0x24, (1 << 24) | (1 << 7) | 0x07).mmio_access(),
            Err(MmioDecodeError::TableWalk)
        );
        assert_eq!(
            esr(0x24, (1 << 24) | (1 << 8) | 0x07).mmio_access(),
            Err(MmioDecodeError::CacheMaintenance)
        );
    }

    fn access(width: AccessWidth, reg: u8, sign_extend: bool, sixty_four: bool) -> MmioAccess {
        MmioAccess {
            write: false,
            width,
            reg,
            sign_extend,
            sixty_four,
        }
    }

    #[test]
    fn load_results_extend_per_sse_and_sf() {
        use AccessWidth::*;
        let cases = [
            // ldrb w0: zero-extend a byte.
            (access(Byte, 0, false, false), 0xffff_ff80, 0x80),
            // ldrsb w0: sign-extend to 32 bits, upper half zero.
            (access(Byte, 0, true, false), 0x80, 0xffff_ff80),
            // ldrsb x0: sign-extend to 64 bits.
            (access(Byte, 0, true, true), 0x80, 0xffff_ffff_ffff_ff80),
            (access(Byte, 0, true, true), 0x7f, 0x7f),
            // ldrsh x0 / ldrsh w0.
            (access(Half, 0, true, true), 0x8001, 0xffff_ffff_ffff_8001),
            (access(Half, 0, true, false), 0x8001, 0xffff_8001),
            // ldrsw x0.
            (
                access(Word, 0, true, true),
                0x8000_0000,
                0xffff_ffff_8000_0000,
            ),
            // ldr w0 drops anything above 32 bits.
            (
                access(Word, 0, false, false),
                0x1234_5678_9abc_def0,
                0x9abc_def0,
            ),
            // ldr x0.
            (
                access(Double, 0, false, true),
                0x1234_5678_9abc_def0,
                0x1234_5678_9abc_def0,
            ),
        ];
        for (a, data, want) in cases {
            assert_eq!(a.load_result(data), Some(want), "{a:?} {data:#x}");
        }
        assert_eq!(access(Word, 31, false, false).load_result(5), None);
    }

    #[test]
    fn store_values_are_truncated_and_xzr_stores_zero() {
        let mut a = access(AccessWidth::Half, 4, false, false);
        a.write = true;
        assert_eq!(a.store_value(0xdead_beef), 0xbeef);
        a.reg = 31;
        assert_eq!(a.store_value(0xdead_beef), 0);
    }

    #[test]
    fn injected_abort_syndromes() {
        // Data abort from EL1: EC 0x25, IL, DFSC 0x10.
        assert_eq!(
            esr_el1_external_abort(InjectedAbort::Data { write: false }, false),
            0x9600_0010
        );
        // ... from EL0 and a write: EC 0x24, WnR.
        assert_eq!(
            esr_el1_external_abort(InjectedAbort::Data { write: true }, true),
            0x9200_0050
        );
        // Instruction abort from EL1 / EL0: EC 0x21 / 0x20.
        assert_eq!(
            esr_el1_external_abort(InjectedAbort::Instruction, false),
            0x8600_0010
        );
        assert_eq!(
            esr_el1_external_abort(InjectedAbort::Instruction, true),
            0x8200_0010
        );
        // Decoding what we inject gives back a synchronous external abort.
        let d = Esr(esr_el1_external_abort(
            InjectedAbort::Data { write: true },
            false,
        ))
        .data_abort()
        .unwrap();
        assert_eq!(
            (d.status, d.write, d.access),
            (FaultStatus::SyncExternal, true, None)
        );
    }

    #[test]
    fn injected_undef_is_ec_zero_with_il() {
        assert_eq!(esr_el1_undefined(), 0x0200_0000);
        assert_eq!(Esr(esr_el1_undefined()).class(), ExceptionClass::Unknown);
        assert!(Esr(esr_el1_undefined()).il32());
    }
}
