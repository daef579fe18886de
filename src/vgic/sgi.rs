//! Decoding of the two ways a guest sends a software-generated interrupt (SGI): the GICv3
//! `ICC_SGI0R_EL1` / `ICC_SGI1R_EL1` / `ICC_ASGI1R_EL1` system-register write (trapped by the
//! lead and handed over as the 64-bit value written) and the GICv2 `GICD_SGIR` register.
//! Turning a decoded request into target vCPUs needs the VM's MPIDRs and lives in
//! [`super::Vgic`].
#![forbid(unsafe_code)]

use tock_registers::{LocalRegisterCopy, register_bitfields};

register_bitfields![u64,
    /// ICC_SGI1R_EL1 (also ICC_SGI0R_EL1 and ICC_ASGI1R_EL1, same layout): IHI 0069H
    /// and Arm ARM DDI 0487, "ICC_SGI1R_EL1".
    pub ICC_SGI1R [
        /// [15:0] TargetList: bit n targets the PE with Aff0 = RS * 16 + n.
        TARGETLIST OFFSET(0) NUMBITS(16) [],
        /// [23:16] Aff1 of the targets.
        AFF1 OFFSET(16) NUMBITS(8) [],
        /// [27:24] INTID of the SGI.
        INTID OFFSET(24) NUMBITS(4) [],
        /// [39:32] Aff2 of the targets.
        AFF2 OFFSET(32) NUMBITS(8) [],
        /// [40] IRM: 1 = all PEs in the system excluding the sender; TargetList etc. ignored.
        IRM OFFSET(40) NUMBITS(1) [],
        /// [47:44] RS: range selector, Aff0 of TargetList bit n is RS * 16 + n.
        RS OFFSET(44) NUMBITS(4) [],
        /// [55:48] Aff3 of the targets.
        AFF3 OFFSET(48) NUMBITS(8) []
    ]
];

register_bitfields![u32,
    /// GICD_SGIR, Software Generated Interrupt Register (IHI 0048B.b, GICD_SGIR).
    pub GICD_SGIR [
        /// [3:0] SGIINTID.
        SGIINTID OFFSET(0) NUMBITS(4) [],
        /// [15] NSATT: only meaningful with the Security Extensions, ignored here.
        NSATT OFFSET(15) NUMBITS(1) [],
        /// [23:16] CPUTargetList: bit n = CPU interface n.
        CPUTARGETLIST OFFSET(16) NUMBITS(8) [],
        /// [25:24] TargetListFilter.
        TARGETLISTFILTER OFFSET(24) NUMBITS(2) [
            List = 0b00,
            AllButSelf = 0b01,
            SelfOnly = 0b10
        ]
    ]
];

/// Which system register the guest wrote, which decides which interrupt groups it may raise.
/// With a single Security state (GICD_CTLR.DS == 1, what we emulate), `ICC_SGI1R_EL1` raises
/// the SGI whatever group it is configured to, `ICC_SGI0R_EL1` and `ICC_ASGI1R_EL1` raise it
/// only when it is configured as Group 0 (IHI 0069H, "Forwarding an SGI to a
/// target PE", the GICD_CTLR.DS == 1 case; KVM's vGIC reads it the same way).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SgiRegister {
    /// ICC_SGI0R_EL1.
    Sgi0r,
    /// ICC_SGI1R_EL1.
    Sgi1r,
    /// ICC_ASGI1R_EL1.
    Asgi1r,
}

impl SgiRegister {
    /// The SGI register that a trapped `MSR` writes, and its source register Rt, from the
    /// ESR_EL2 value of an exception with EC 0x18 (trapped MSR/MRS/system instruction); `None`
    /// for any other register or a read. ISS layout (Arm ARM DDI 0487, ESR_ELx, "ISS encoding
    /// for an exception from MSR, MRS, or System instruction execution in AArch64 state"):
    /// Op0 `[21:20]`, Op2 `[19:17]`, Op1 `[16:14]`, CRn `[13:10]`, Rt `[9:5]`, CRm `[4:1]`,
    /// Direction `[0]` (0 = write). The exit path's shortcut for IPIs; `trap::esr` decodes
    /// every other register.
    pub const fn from_msr_esr(esr: u64) -> Option<(SgiRegister, u8)> {
        const fn iss(op0: u64, op1: u64, crn: u64, crm: u64, op2: u64) -> u64 {
            (op0 << 20) | (op2 << 17) | (op1 << 14) | (crn << 10) | (crm << 1)
        }
        // Everything but Rt [9:5], with Direction [0] = 0 (a write).
        const MASK: u64 = 0x1ff_ffff & !(0x1f << 5);
        let rt = ((esr >> 5) & 0x1f) as u8;
        let reg = match esr & MASK {
            // ICC_SGI1R_EL1 S3_0_C12_C11_5, ICC_ASGI1R_EL1 S3_1_C12_C11_6,
            // ICC_SGI0R_EL1 S3_2_C12_C11_7 (IHI 0069H, ICC_SGI1R_EL1 and neighbours).
            x if x == iss(3, 0, 12, 11, 5) => SgiRegister::Sgi1r,
            x if x == iss(3, 1, 12, 11, 6) => SgiRegister::Asgi1r,
            x if x == iss(3, 2, 12, 11, 7) => SgiRegister::Sgi0r,
            _ => return None,
        };
        Some((reg, rt))
    }

    /// Whether an SGI configured in Group 1 is raised by a write to this register.
    pub const fn raises_group1(self) -> bool {
        matches!(self, SgiRegister::Sgi1r)
    }
}

/// The targets named by an `ICC_SGI*R_EL1` write.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SgiTargets {
    /// PEs with affinity `aff3.aff2.aff1.(rs * 16 + n)` for every set bit n of `list`.
    List {
        aff3: u8,
        aff2: u8,
        aff1: u8,
        rs: u8,
        list: u16,
    },
    /// IRM == 1: every PE except the sender.
    AllButSelf,
}

/// A decoded `ICC_SGI*R_EL1` value.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Sgi1r {
    pub intid: u8,
    pub targets: SgiTargets,
}

impl Sgi1r {
    pub fn decode(value: u64) -> Self {
        let r = LocalRegisterCopy::<u64, ICC_SGI1R::Register>::new(value);
        let targets = if r.is_set(ICC_SGI1R::IRM) {
            SgiTargets::AllButSelf
        } else {
            SgiTargets::List {
                aff3: r.read(ICC_SGI1R::AFF3) as u8,
                aff2: r.read(ICC_SGI1R::AFF2) as u8,
                aff1: r.read(ICC_SGI1R::AFF1) as u8,
                rs: r.read(ICC_SGI1R::RS) as u8,
                list: r.read(ICC_SGI1R::TARGETLIST) as u16,
            }
        };
        Sgi1r {
            intid: r.read(ICC_SGI1R::INTID) as u8,
            targets,
        }
    }

    /// The `ICC_SGI1R_EL1` value that sends SGI `intid` (0..=15) to the one PE with MPIDR_EL1
    /// affinity `mpidr`: TargetList bit `Aff0 % 16` with range selector `Aff0 / 16` (RS is
    /// only honoured where ICC_CTLR_EL1.RSS == 1; below Aff0 16 it is 0 either way).
    pub fn encode_one(mpidr: u64, intid: u8) -> u64 {
        let a = Affinity::from_mpidr(mpidr);
        let mut r = LocalRegisterCopy::<u64, ICC_SGI1R::Register>::new(0);
        r.modify(
            ICC_SGI1R::TARGETLIST.val(1 << (a.aff0 % 16))
                + ICC_SGI1R::AFF1.val(u64::from(a.aff1))
                + ICC_SGI1R::INTID.val(u64::from(intid & 0xf))
                + ICC_SGI1R::AFF2.val(u64::from(a.aff2))
                + ICC_SGI1R::RS.val(u64::from(a.aff0 / 16))
                + ICC_SGI1R::AFF3.val(u64::from(a.aff3)),
        );
        r.get()
    }

    /// Whether a PE with this MPIDR_EL1 value is named by the target list (not used for
    /// `AllButSelf`, which depends on the sender).
    pub fn names(&self, mpidr: u64) -> bool {
        match self.targets {
            SgiTargets::AllButSelf => false,
            SgiTargets::List {
                aff3,
                aff2,
                aff1,
                rs,
                list,
            } => {
                let m = Affinity::from_mpidr(mpidr);
                if (m.aff3, m.aff2, m.aff1) != (aff3, aff2, aff1) {
                    return false;
                }
                let base = u16::from(rs) * 16;
                let aff0 = u16::from(m.aff0);
                aff0 >= base && aff0 - base < 16 && list & (1 << (aff0 - base)) != 0
            }
        }
    }
}

/// The four affinity fields of MPIDR_EL1 (Arm ARM DDI 0487, "MPIDR_EL1": Aff0 `[7:0]`,
/// Aff1 `[15:8]`, Aff2 `[23:16]`, Aff3 `[39:32]`). `GICD_IROUTER<n>` uses the same bit
/// positions for its affinity fields (IHI 0069H, `GICD_IROUTER<n>`), so `packed()` is also the
/// IROUTER affinity.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Affinity {
    pub aff3: u8,
    pub aff2: u8,
    pub aff1: u8,
    pub aff0: u8,
}

impl Affinity {
    /// Bits of MPIDR_EL1 / GICD_IROUTER that hold affinity.
    pub const MASK: u64 = 0xff_00ff_ffff;

    pub const fn from_mpidr(mpidr: u64) -> Self {
        Affinity {
            aff3: (mpidr >> 32) as u8,
            aff2: (mpidr >> 16) as u8,
            aff1: (mpidr >> 8) as u8,
            aff0: mpidr as u8,
        }
    }
    /// MPIDR_EL1 / GICD_IROUTER layout.
    pub const fn packed(self) -> u64 {
        ((self.aff3 as u64) << 32)
            | ((self.aff2 as u64) << 16)
            | ((self.aff1 as u64) << 8)
            | self.aff0 as u64
    }
    /// GICR_TYPER.Affinity_Value layout, bits `[63:32]` of GICR_TYPER: Aff3 `[63:56]`,
    /// Aff2 `[55:48]`, Aff1 `[47:40]`, Aff0 `[39:32]` (IHI 0069H, GICR_TYPER).
    pub const fn gicr_value(self) -> u32 {
        ((self.aff3 as u32) << 24)
            | ((self.aff2 as u32) << 16)
            | ((self.aff1 as u32) << 8)
            | self.aff0 as u32
    }
}

/// Who a GICv2 `GICD_SGIR` write targets.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SgirTargets {
    /// CPU interfaces in this bitmap.
    List(u8),
    AllButSelf,
    SelfOnly,
    /// TargetListFilter == 0b11: reserved, the write has no effect.
    Reserved,
}

/// A decoded `GICD_SGIR` value.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Sgir {
    pub intid: u8,
    pub targets: SgirTargets,
}

impl Sgir {
    pub fn decode(value: u32) -> Self {
        let r = LocalRegisterCopy::<u32, GICD_SGIR::Register>::new(value);
        let targets = match r.read_as_enum(GICD_SGIR::TARGETLISTFILTER) {
            Some(GICD_SGIR::TARGETLISTFILTER::Value::List) => {
                SgirTargets::List(r.read(GICD_SGIR::CPUTARGETLIST) as u8)
            }
            Some(GICD_SGIR::TARGETLISTFILTER::Value::AllButSelf) => SgirTargets::AllButSelf,
            Some(GICD_SGIR::TARGETLISTFILTER::Value::SelfOnly) => SgirTargets::SelfOnly,
            None => SgirTargets::Reserved,
        };
        Sgir {
            intid: r.read(GICD_SGIR::SGIINTID) as u8,
            targets,
        }
    }

    /// Target bitmap for a sender among `nr_cpus` CPU interfaces.
    pub fn target_mask(&self, sender: usize, nr_cpus: usize) -> u8 {
        let all = if nr_cpus >= 8 {
            0xff
        } else {
            (1u8 << nr_cpus) - 1
        };
        let me = if sender < 8 { 1u8 << sender } else { 0 };
        match self.targets {
            SgirTargets::List(l) => l & all,
            SgirTargets::AllButSelf => all & !me,
            SgirTargets::SelfOnly => me & all,
            SgirTargets::Reserved => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sgi1r_fields_decode_from_their_bit_positions() {
        // INTID 5, Aff3 0x12, Aff2 0x34, Aff1 0x56, RS 2, TargetList 0b1001.
        let v = (0x12u64 << 48) | (2 << 44) | (0x34 << 32) | (5 << 24) | (0x56 << 16) | 0b1001;
        assert_eq!(
            Sgi1r::decode(v),
            Sgi1r {
                intid: 5,
                targets: SgiTargets::List {
                    aff3: 0x12,
                    aff2: 0x34,
                    aff1: 0x56,
                    rs: 2,
                    list: 0b1001
                }
            }
        );
    }

    #[test]
    fn msr_esr_shortcut_agrees_with_the_full_decoder() {
        use crate::trap::esr::{Esr, SysReg};
        let ec = 0x18u64 << 26 | 1 << 25;
        let regs = [
            (
                (3, 0, 12, 11, 5),
                Some(SgiRegister::Sgi1r),
                SysReg::ICC_SGI1R_EL1,
            ),
            (
                (3, 1, 12, 11, 6),
                Some(SgiRegister::Asgi1r),
                SysReg::ICC_ASGI1R_EL1,
            ),
            (
                (3, 2, 12, 11, 7),
                Some(SgiRegister::Sgi0r),
                SysReg::ICC_SGI0R_EL1,
            ),
            // ICC_EOIR1_EL1 (S3_0_C12_C12_1) and ICC_SRE_EL1 (S3_0_C12_C12_5): not SGIs.
            ((3, 0, 12, 12, 1), None, SysReg::new(3, 0, 12, 12, 1)),
            ((3, 0, 12, 12, 5), None, SysReg::new(3, 0, 12, 12, 5)),
        ];
        for ((op0, op1, crn, crm, op2), want, sysreg) in regs {
            for rt in [0u64, 5, 30, 31] {
                for read in [false, true] {
                    let iss = (op0 << 20)
                        | (op2 << 17)
                        | (op1 << 14)
                        | (crn << 10)
                        | (rt << 5)
                        | (crm << 1)
                        | u64::from(read);
                    let esr = ec | iss;
                    let full = Esr(esr).sysreg().expect("EC 0x18 decodes");
                    assert_eq!((full.reg, full.rt as u64, full.read), (sysreg, rt, read));
                    let got = SgiRegister::from_msr_esr(esr);
                    let expect = if read {
                        None
                    } else {
                        want.map(|r| (r, rt as u8))
                    };
                    assert_eq!(got, expect, "{esr:#x}");
                }
            }
        }
    }

    #[test]
    fn encode_one_names_exactly_its_target_for_every_aff0() {
        // The physical kick used `1 << (Aff0 & 0xf)` with RS 0: a CPU with Aff0 >= 16 was
        // never reached, and Aff0 - 16 was kicked instead.
        for aff0 in 0..=255u64 {
            let target = (0x3u64 << 32) | (0x2 << 16) | (0x1 << 8) | aff0;
            let v = Sgi1r::encode_one(target, 9);
            let d = Sgi1r::decode(v);
            assert_eq!(d.intid, 9);
            for other in 0..=255u64 {
                let m = (target & !0xff) | other;
                assert_eq!(
                    d.names(m),
                    other == aff0,
                    "Aff0 {aff0}: {v:#x} vs Aff0 {other}"
                );
            }
            assert!(!d.names(target ^ (1 << 8)), "other Aff1");
        }
    }

    #[test]
    fn sgi1r_irm_means_all_but_self_whatever_the_list() {
        let v = (1u64 << 40) | (7 << 24) | 0xffff;
        assert_eq!(
            Sgi1r::decode(v),
            Sgi1r {
                intid: 7,
                targets: SgiTargets::AllButSelf
            }
        );
    }

    #[test]
    fn sgi1r_names_pes_by_affinity_and_range_selector() {
        let mpidr = |aff3: u64, aff2: u64, aff1: u64, aff0: u64| {
            0x8000_0000 | (aff3 << 32) | (aff2 << 16) | (aff1 << 8) | aff0
        };
        // Target list bits 0 and 3 in range 1 of cluster 0.0.1: Aff0 16 and 19.
        let s = Sgi1r::decode((1u64 << 44) | (1 << 16) | 0b1001);
        let cases = [
            (mpidr(0, 0, 1, 16), true),
            (mpidr(0, 0, 1, 19), true),
            (mpidr(0, 0, 1, 17), false),
            (mpidr(0, 0, 1, 0), false),
            (mpidr(0, 0, 1, 3), false),
            (mpidr(0, 0, 0, 16), false),
            (mpidr(0, 1, 1, 16), false),
            (mpidr(1, 0, 1, 16), false),
        ];
        for (m, want) in cases {
            assert_eq!(s.names(m), want, "mpidr {m:#x}");
        }
    }

    #[test]
    fn sgir_filters_select_targets() {
        let cases: &[(u32, usize, usize, u8, u8)] = &[
            // (value, sender, nr_cpus, intid, targets)
            ((0b0110 << 16) | 3, 0, 4, 3, 0b0110),
            // List bits beyond the implemented CPUs are dropped.
            ((0xf0 << 16) | 3, 0, 4, 3, 0),
            ((0b01 << 24) | 15, 1, 4, 15, 0b1101),
            ((0b10 << 24) | (0xff << 16) | 1, 2, 4, 1, 0b0100),
            ((0b11 << 24) | (0xff << 16) | 1, 2, 4, 1, 0),
            ((0b01 << 24) | 2, 0, 8, 2, 0xfe),
        ];
        for &(v, sender, n, intid, targets) in cases {
            let s = Sgir::decode(v);
            assert_eq!(s.intid, intid, "{v:#x}");
            assert_eq!(s.target_mask(sender, n), targets, "{v:#x}");
        }
    }

    #[test]
    fn affinity_packs_into_mpidr_iroute_and_gicr_layouts() {
        let a = Affinity::from_mpidr(0x0000_00ab_80cd_ef01 | (1 << 30));
        assert_eq!(
            a,
            Affinity {
                aff3: 0xab,
                aff2: 0xcd,
                aff1: 0xef,
                aff0: 0x01
            }
        );
        assert_eq!(a.packed(), 0xab_00cd_ef01);
        assert_eq!(a.gicr_value(), 0xabcd_ef01);
    }
}
