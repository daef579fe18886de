//! List registers: the arch-neutral [`LrValue`], its two hardware encodings and the
//! [`ListRegisters`] trait through which the LR algorithm reaches the real registers.
//!
//! The hypervisor programs virtual interrupts into the hardware virtual CPU interface through
//! list registers. GICv3 has up to 16 64-bit `ICH_LR<n>_EL2` system registers, GICv2 up to 64
//! 32-bit `GICH_LR<n>` registers in the GICH frame. Both carry the same information (virtual
//! INTID, state, priority, group, HW link to a physical INTID or an EOI-maintenance request),
//! so the algorithm in `super::cpu` works on [`LrValue`] and converts at the edge with
//! [`LrFormat::encode`] / [`LrFormat::decode`].
#![forbid(unsafe_code)]

use tock_registers::{LocalRegisterCopy, register_bitfields};

register_bitfields![u64,
    /// ICH_LR<n>_EL2, Interrupt Controller List Registers (GIC architecture specification
    /// IHI 0069H and Arm ARM DDI 0487, "ICH_LR<n>_EL2").
    pub ICH_LR [
        /// [31:0] Virtual INTID.
        VINTID OFFSET(0) NUMBITS(32) [],
        /// [41] When HW == 0: request a maintenance interrupt when the guest deactivates the
        /// interrupt (ICH_EISR_EL2 / ICH_MISR_EL2.EOI). RES0 when HW == 1.
        EOI OFFSET(41) NUMBITS(1) [],
        /// [44:32] When HW == 1: the physical INTID that the guest's deactivation deactivates.
        PINTID OFFSET(32) NUMBITS(13) [],
        /// [55:48] Priority.
        PRIORITY OFFSET(48) NUMBITS(8) [],
        /// [60] Group: 0 = Group 0, 1 = Group 1.
        GROUP OFFSET(60) NUMBITS(1) [],
        /// [61] HW: the virtual interrupt is linked to physical interrupt PINTID.
        HW OFFSET(61) NUMBITS(1) [],
        /// [63:62] State: 00 invalid, 01 pending, 10 active, 11 pending and active.
        STATE OFFSET(62) NUMBITS(2) []
    ]
];

register_bitfields![u32,
    /// GICH_LR<n>, List Registers (GICv2 architecture specification IHI 0048B.b,
    /// "List Registers, GICH_LRn").
    pub GICH_LR [
        /// [9:0] VirtualID.
        VIRTUALID OFFSET(0) NUMBITS(10) [],
        /// [12:10] When HW == 0 and the interrupt is an SGI: CPUID, the source processor.
        CPUID OFFSET(10) NUMBITS(3) [],
        /// [19] When HW == 0: EOI, request a maintenance interrupt on deactivation.
        EOI OFFSET(19) NUMBITS(1) [],
        /// [19:10] When HW == 1: PhysicalID, the physical INTID to deactivate.
        PHYSICALID OFFSET(10) NUMBITS(10) [],
        /// [27:23] Priority: the top five bits of the 8-bit priority.
        PRIORITY OFFSET(23) NUMBITS(5) [],
        /// [29:28] State: 00 invalid, 01 pending, 10 active, 11 pending and active.
        STATE OFFSET(28) NUMBITS(2) [],
        /// [30] Grp1: the interrupt is Group 1.
        GRP1 OFFSET(30) NUMBITS(1) [],
        /// [31] HW: hardware interrupt.
        HW OFFSET(31) NUMBITS(1) []
    ]
];

/// The State field of a list register; both formats use the same 2-bit encoding.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum LrState {
    #[default]
    Invalid = 0b00,
    Pending = 0b01,
    Active = 0b10,
    PendingActive = 0b11,
}

impl LrState {
    pub const fn from_bits(bits: u64) -> Self {
        match bits & 0b11 {
            0b00 => LrState::Invalid,
            0b01 => LrState::Pending,
            0b10 => LrState::Active,
            _ => LrState::PendingActive,
        }
    }
    pub const fn from_flags(pending: bool, active: bool) -> Self {
        match (pending, active) {
            (false, false) => LrState::Invalid,
            (true, false) => LrState::Pending,
            (false, true) => LrState::Active,
            (true, true) => LrState::PendingActive,
        }
    }
    pub const fn pending(self) -> bool {
        matches!(self, LrState::Pending | LrState::PendingActive)
    }
    pub const fn active(self) -> bool {
        matches!(self, LrState::Active | LrState::PendingActive)
    }
}

/// One list register's content, independent of the GIC version.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct LrValue {
    /// Virtual INTID the guest sees.
    pub intid: u32,
    pub state: LrState,
    /// 8-bit priority (GICv2 keeps only bits `[7:3]`).
    pub priority: u8,
    pub group1: bool,
    /// Linked to physical interrupt `pintid`: the guest's deactivation deactivates it.
    pub hw: bool,
    /// Physical INTID, meaningful only when `hw`.
    pub pintid: u32,
    /// Ask for a maintenance interrupt when the guest deactivates it (only when `!hw`).
    pub eoi_maintenance: bool,
    /// GICv2 SGIs only: the CPU that sent the SGI (GICH_LR.CPUID). Ignored by GICv3.
    pub source_cpu: u8,
}

/// Which hardware encoding a CPU interface uses.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LrFormat {
    /// GICv3 `ICH_LR<n>_EL2`, 64 bits.
    V3,
    /// GICv2 `GICH_LR<n>`, 32 bits (zero-extended in the `u64` the trait carries).
    V2,
}

impl LrFormat {
    pub fn encode(self, v: &LrValue) -> u64 {
        match self {
            LrFormat::V3 => encode_v3(v),
            LrFormat::V2 => u64::from(encode_v2(v)),
        }
    }
    pub fn decode(self, raw: u64) -> LrValue {
        match self {
            LrFormat::V3 => decode_v3(raw),
            // GICH_LR is 32 bits wide; the upper half of the carrier is ignored.
            LrFormat::V2 => decode_v2(raw as u32),
        }
    }
}

/// Encodes an [`LrValue`] as `ICH_LR<n>_EL2`. With `hw` the EOI bit is not encodable (RES0).
pub fn encode_v3(v: &LrValue) -> u64 {
    let mut r = LocalRegisterCopy::<u64, ICH_LR::Register>::new(0);
    r.modify(
        ICH_LR::VINTID.val(u64::from(v.intid))
            + ICH_LR::STATE.val(v.state as u64)
            + ICH_LR::PRIORITY.val(u64::from(v.priority))
            + ICH_LR::GROUP.val(u64::from(v.group1))
            + ICH_LR::HW.val(u64::from(v.hw)),
    );
    if v.hw {
        r.modify(ICH_LR::PINTID.val(u64::from(v.pintid)));
    } else {
        r.modify(ICH_LR::EOI.val(u64::from(v.eoi_maintenance)));
    }
    r.get()
}

/// Decodes `ICH_LR<n>_EL2`.
pub fn decode_v3(raw: u64) -> LrValue {
    let r = LocalRegisterCopy::<u64, ICH_LR::Register>::new(raw);
    let hw = r.is_set(ICH_LR::HW);
    LrValue {
        intid: r.read(ICH_LR::VINTID) as u32,
        state: LrState::from_bits(r.read(ICH_LR::STATE)),
        priority: r.read(ICH_LR::PRIORITY) as u8,
        group1: r.is_set(ICH_LR::GROUP),
        hw,
        pintid: if hw { r.read(ICH_LR::PINTID) as u32 } else { 0 },
        eoi_maintenance: !hw && r.is_set(ICH_LR::EOI),
        source_cpu: 0,
    }
}

/// Encodes an [`LrValue`] as `GICH_LR<n>`. The priority keeps bits `[7:3]`; the INTIDs keep 10
/// bits; with `hw` the PhysicalID field replaces EOI and CPUID.
pub fn encode_v2(v: &LrValue) -> u32 {
    let mut r = LocalRegisterCopy::<u32, GICH_LR::Register>::new(0);
    r.modify(
        GICH_LR::VIRTUALID.val(v.intid)
            + GICH_LR::STATE.val(v.state as u32)
            + GICH_LR::PRIORITY.val(u32::from(v.priority >> 3))
            + GICH_LR::GRP1.val(u32::from(v.group1))
            + GICH_LR::HW.val(u32::from(v.hw)),
    );
    if v.hw {
        r.modify(GICH_LR::PHYSICALID.val(v.pintid));
    } else {
        r.modify(
            GICH_LR::EOI.val(u32::from(v.eoi_maintenance))
                + GICH_LR::CPUID.val(u32::from(v.source_cpu)),
        );
    }
    r.get()
}

/// Decodes `GICH_LR<n>`.
pub fn decode_v2(raw: u32) -> LrValue {
    let r = LocalRegisterCopy::<u32, GICH_LR::Register>::new(raw);
    let hw = r.is_set(GICH_LR::HW);
    LrValue {
        intid: r.read(GICH_LR::VIRTUALID),
        state: LrState::from_bits(u64::from(r.read(GICH_LR::STATE))),
        priority: (r.read(GICH_LR::PRIORITY) as u8) << 3,
        group1: r.is_set(GICH_LR::GRP1),
        hw,
        pintid: if hw { r.read(GICH_LR::PHYSICALID) } else { 0 },
        eoi_maintenance: !hw && r.is_set(GICH_LR::EOI),
        source_cpu: if hw { 0 } else { r.read(GICH_LR::CPUID) as u8 },
    }
}

/// The virtual CPU interface's list registers and the few control bits the LR algorithm
/// needs, implemented by the arch layer with the real registers (GICv3 `ICH_*_EL2` system
/// registers, GICv2 the GICH frame) and by tests with a fake.
///
/// All calls happen on the vCPU's own physical CPU, on its exit path, while the guest is not
/// running, so the values read are stable.
pub trait ListRegisters {
    /// Which encoding `read` returns and `write` expects.
    fn format(&self) -> LrFormat;
    /// Number of implemented list registers: `ICH_VTR_EL2.ListRegs + 1` (at most 16) or
    /// `GICH_VTR.ListRegs + 1` (at most 64).
    fn count(&self) -> usize;
    /// Raw value of list register `i` (GICv2: zero-extended).
    fn read(&self, i: usize) -> u64;
    /// Writes list register `i` (GICv2: the low 32 bits).
    fn write(&mut self, i: usize, value: u64);
    /// Empty list registers, bit n = LR n: `ICH_ELRSR_EL2` / `GICH_ELRSR0 | GICH_ELRSR1 << 32`.
    /// An LR is empty when its state is invalid and it has no EOI maintenance outstanding.
    fn empty_mask(&self) -> u64;
    /// LRs with an outstanding EOI maintenance interrupt: `ICH_EISR_EL2` /
    /// `GICH_EISR0 | GICH_EISR1 << 32`. Such an LR is invalid too, but not in `empty_mask`.
    fn eoi_mask(&self) -> u64;
    /// Sets or clears the underflow maintenance interrupt enable: `ICH_HCR_EL2.UIE` (bit 1) /
    /// `GICH_HCR.UIE` (bit 1). When set, the maintenance interrupt fires while at most one LR
    /// holds a valid interrupt.
    fn set_underflow_irq(&mut self, on: bool);
    /// Deactivates physical interrupt `pintid`, which the hypervisor took and left active and
    /// which no HW-linked LR will deactivate any more: `ICC_DIR_EL1` / `GICC_DIR` for a PPI of
    /// this CPU, the distributor's `GICD_ICACTIVER` for an SPI.
    fn deactivate(&mut self, pintid: u32);
    /// The current level of the line behind physical PPI `pintid` of this CPU, for interrupts
    /// set up with `Vgic::map_phys_ppi`: for the EL1 timers `ENABLE && ISTATUS && !IMASK` of
    /// `CNTV_CTL_EL0` / `CNTP_CTL_EL0` (Arm ARM D11, "The timer output signal").
    fn line_level(&self, pintid: u32) -> bool;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lr(intid: u32, state: LrState, priority: u8) -> LrValue {
        LrValue {
            intid,
            state,
            priority,
            ..LrValue::default()
        }
    }

    /// Hand-computed encodings from the field tables cited above.
    #[test]
    fn v3_encodings_match_hand_computed_values() {
        let cases: &[(LrValue, u64)] = &[
            // State 01 at [63:62], Group [60], priority 0xa0 at [55:48], vINTID 27.
            (
                LrValue {
                    group1: true,
                    ..lr(27, LrState::Pending, 0xa0)
                },
                0x5000_0000_0000_0000 | 0x00a0_0000_0000_0000 | 27,
            ),
            // HW [61] with pINTID 27 at [44:32].
            (
                LrValue {
                    group1: true,
                    hw: true,
                    pintid: 27,
                    ..lr(27, LrState::Pending, 0xa0)
                },
                0x7000_0000_0000_0000 | 0x00a0_0000_0000_0000 | (27 << 32) | 27,
            ),
            // EOI [41], active state 10.
            (
                LrValue {
                    eoi_maintenance: true,
                    ..lr(40, LrState::Active, 0)
                },
                0x8000_0000_0000_0000 | (1 << 41) | 40,
            ),
            // Pending and active, the largest SPI, the lowest priority.
            (
                lr(1019, LrState::PendingActive, 0xf8),
                0xc000_0000_0000_0000 | 0x00f8_0000_0000_0000 | 1019,
            ),
            (lr(0, LrState::Invalid, 0), 0),
        ];
        for (value, raw) in cases {
            assert_eq!(encode_v3(value), *raw, "encode {value:?}");
            assert_eq!(decode_v3(*raw), *value, "decode {raw:#x}");
        }
    }

    #[test]
    fn v2_encodings_match_hand_computed_values() {
        let cases: &[(LrValue, u32)] = &[
            // State 01 at [29:28], priority 0xa0 >> 3 = 0x14 at [27:23], VirtualID 27.
            (
                lr(27, LrState::Pending, 0xa0),
                0x1000_0000 | (0x14 << 23) | 27,
            ),
            // HW [31], PhysicalID 30 at [19:10], Grp1 [30].
            (
                LrValue {
                    hw: true,
                    pintid: 30,
                    group1: true,
                    ..lr(27, LrState::Active, 0)
                },
                0x8000_0000 | 0x4000_0000 | 0x2000_0000 | (30 << 10) | 27,
            ),
            // SGI 3 from CPU 5 with EOI maintenance: CPUID [12:10], EOI [19].
            (
                LrValue {
                    eoi_maintenance: true,
                    source_cpu: 5,
                    ..lr(3, LrState::Pending, 0x08)
                },
                0x1000_0000 | (1 << 23) | (1 << 19) | (5 << 10) | 3,
            ),
            (
                lr(1019, LrState::PendingActive, 0xf8),
                0x3000_0000 | (0x1f << 23) | 1019,
            ),
        ];
        for (value, raw) in cases {
            assert_eq!(encode_v2(value), *raw, "encode {value:?}");
            assert_eq!(decode_v2(*raw), *value, "decode {raw:#x}");
        }
    }

    #[test]
    fn v2_drops_the_low_priority_bits_and_v3_keeps_them() {
        let v = lr(33, LrState::Pending, 0xa7);
        assert_eq!(decode_v2(encode_v2(&v)).priority, 0xa0);
        assert_eq!(decode_v3(encode_v3(&v)).priority, 0xa7);
    }

    #[test]
    fn hw_links_hide_the_eoi_bit_and_the_source_cpu() {
        let v = LrValue {
            hw: true,
            pintid: 27,
            eoi_maintenance: true,
            source_cpu: 3,
            ..lr(27, LrState::Pending, 0)
        };
        let back3 = decode_v3(encode_v3(&v));
        assert!(!back3.eoi_maintenance);
        assert_eq!(back3.pintid, 27);
        assert_eq!(encode_v3(&v) & (1 << 41), 0);
        let back2 = decode_v2(encode_v2(&v));
        assert!(!back2.eoi_maintenance);
        assert_eq!(back2.source_cpu, 0);
        assert_eq!(back2.pintid, 27);
    }

    #[test]
    fn format_dispatch_round_trips() {
        let v = LrValue {
            group1: true,
            eoi_maintenance: true,
            ..lr(45, LrState::PendingActive, 0x40)
        };
        for fmt in [LrFormat::V3, LrFormat::V2] {
            assert_eq!(fmt.decode(fmt.encode(&v)), v, "{fmt:?}");
        }
        assert!(LrFormat::V2.encode(&v) <= u64::from(u32::MAX));
    }

    #[test]
    fn state_flags_round_trip() {
        for (p, a) in [(false, false), (true, false), (false, true), (true, true)] {
            let s = LrState::from_flags(p, a);
            assert_eq!((s.pending(), s.active()), (p, a));
            assert_eq!(LrState::from_bits(s as u64), s);
        }
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    fn state() -> impl Strategy<Value = LrState> {
        (0u64..4).prop_map(LrState::from_bits)
    }

    proptest! {
        /// Every value the fields can hold survives a trip through the register format,
        /// after the format's own normalisation (v2 keeps priority bits [7:3]; a HW link
        /// has no EOI bit and no source CPU; v3 has no source CPU).
        #[test]
        fn encodings_round_trip(
            intid in 0u32..1020, st in state(), priority: u8, group1: bool, hw: bool,
            pintid in 16u32..1020, eoi: bool, src in 0u8..8,
        ) {
            let v = LrValue {
                intid, state: st, priority, group1, hw,
                pintid: if hw { pintid } else { 0 },
                eoi_maintenance: eoi && !hw,
                source_cpu: if hw { 0 } else { src },
            };
            prop_assert_eq!(decode_v3(encode_v3(&v)), LrValue { source_cpu: 0, ..v });
            prop_assert_eq!(
                decode_v2(encode_v2(&v)),
                LrValue { priority: priority & 0xf8, ..v }
            );
        }
    }
}
