//! Register layouts and access rules shared by the emulated GIC register frames in
//! `src/vdev/` (GICv3 distributor, GICv3 redistributors, GICv2 distributor).
//!
//! The interrupt-array registers sit at the same offsets in all three frames (IHI 0069H,
//! the "Distributor register map" and the SGI_base part of the redistributor register map;
//! IHI 0048B, "Distributor register map"): IGROUPR 0x080, ISENABLER 0x100, ICENABLER 0x180,
//! ISPENDR 0x200, ICPENDR 0x280, ISACTIVER 0x300, ICACTIVER 0x380, IPRIORITYR 0x400-0x7FF,
//! ICFGR 0xC00-0xCFF. [`read_arrays`] / [`write_arrays`] implement them once for a frame that
//! shows a given INTID range of a given bank.
#![forbid(unsafe_code)]

use tock_registers::{LocalRegisterCopy, register_bitfields};

use super::VcpuMask;
use super::dist::{BitReg, Dist};
use crate::vdev::{AccessWidth, MmioError};

register_bitfields![u32,
    /// GICD_CTLR with a single Security state, GICD_CTLR.DS == 1 (IHI 0069H, GICD_CTLR).
    pub GICD_CTLR_V3 [
        ENABLE_GRP0 OFFSET(0) NUMBITS(1) [],
        ENABLE_GRP1 OFFSET(1) NUMBITS(1) [],
        /// [4] ARE: affinity routing enable. RAO/WI here: legacy operation is not offered.
        ARE OFFSET(4) NUMBITS(1) [],
        /// [6] DS: disable security. RAO/WI: one Security state.
        DS OFFSET(6) NUMBITS(1) [],
        /// [31] RWP: register write pending. Always 0, writes take effect at once.
        RWP OFFSET(31) NUMBITS(1) []
    ],
    /// GICD_CTLR of a GICv2 distributor without the Security Extensions (IHI 0048B, GICD_CTLR).
    pub GICD_CTLR_V2 [
        ENABLE_GRP0 OFFSET(0) NUMBITS(1) [],
        ENABLE_GRP1 OFFSET(1) NUMBITS(1) []
    ],
    /// GICD_TYPER (IHI 0069H, GICD_TYPER; the GICv2 subset in IHI 0048B).
    pub GICD_TYPER [
        /// [4:0] ITLinesNumber: the largest INTID is 32 * (N + 1) - 1.
        ITLINESNUMBER OFFSET(0) NUMBITS(5) [],
        /// [7:5] CPUNumber: GICv2, CPU interfaces - 1. GICv3: PEs usable when ARE == 0, so 0
        /// when affinity routing cannot be disabled.
        CPUNUMBER OFFSET(5) NUMBITS(3) [],
        /// [10] SecurityExtn: 0, one Security state.
        SECURITYEXTN OFFSET(10) NUMBITS(1) [],
        /// [16] MBIS: message-based SPIs (GICD_SETSPI_NSR...). 0.
        MBIS OFFSET(16) NUMBITS(1) [],
        /// [17] LPIS: 0, no LPIs.
        LPIS OFFSET(17) NUMBITS(1) [],
        /// [23:19] IDbits: interrupt identifier bits - 1.
        IDBITS OFFSET(19) NUMBITS(5) [],
        /// [24] A3V: non-zero Aff3 values supported.
        A3V OFFSET(24) NUMBITS(1) [],
        /// [25] No1N: 1 of N SPI distribution not supported. 0: it is.
        NO1N OFFSET(25) NUMBITS(1) [],
        /// [26] RSS: SGI target Aff0 values 0-255 (range selector) supported.
        RSS OFFSET(26) NUMBITS(1) []
    ],
    /// GICD_IIDR / GICR_IIDR (IHI 0069H and IHI 0048B, GICD_IIDR).
    pub GIC_IIDR [
        IMPLEMENTER OFFSET(0) NUMBITS(12) [],
        REVISION OFFSET(12) NUMBITS(4) [],
        VARIANT OFFSET(16) NUMBITS(4) [],
        PRODUCTID OFFSET(24) NUMBITS(8) []
    ],
    /// GICR_WAKER (IHI 0069H, GICR_WAKER).
    pub GICR_WAKER [
        /// [1] ProcessorSleep. Resets to 1 in hardware; a VM's redistributors start awake (0).
        PROCESSOR_SLEEP OFFSET(1) NUMBITS(1) [],
        /// [2] ChildrenAsleep, RO, follows ProcessorSleep.
        CHILDREN_ASLEEP OFFSET(2) NUMBITS(1) []
    ]
];

register_bitfields![u64,
    /// GICR_TYPER (IHI 0069H, GICR_TYPER).
    pub GICR_TYPER [
        /// [0] PLPIS: physical LPIs. 0.
        PLPIS OFFSET(0) NUMBITS(1) [],
        /// [4] Last: the last redistributor of the contiguous region.
        LAST OFFSET(4) NUMBITS(1) [],
        /// [23:8] Processor_Number, as used by the ITS and GICv2-style target lists.
        PROCESSOR_NUMBER OFFSET(8) NUMBITS(16) [],
        /// [31:27] PPInum: 0, only INTIDs 16-31.
        PPINUM OFFSET(27) NUMBITS(5) [],
        /// [63:32] Affinity_Value: Aff3.Aff2.Aff1.Aff0 of the PE.
        AFFINITY OFFSET(32) NUMBITS(32) []
    ]
];

/// JEP106 code in IIDR.Implementer: 0x43B as KVM's vGIC uses, with our own ProductID so that
/// no erratum workaround keyed on an Arm GIC product applies.
pub(crate) const IIDR_IMPLEMENTER: u32 = 0x43b;
pub(crate) const IIDR_PRODUCT: u32 = 0x6b; // 'k'

pub(crate) fn iidr() -> u32 {
    let mut r = LocalRegisterCopy::<u32, GIC_IIDR::Register>::new(0);
    r.modify(GIC_IIDR::IMPLEMENTER.val(IIDR_IMPLEMENTER) + GIC_IIDR::PRODUCTID.val(IIDR_PRODUCT));
    r.get()
}

/// The identification block at the end of a frame (offsets from the block start 0x?FD0):
/// PIDR4-7 0x00-0x0C, PIDR0-3 0x10-0x1C, CIDR0-3 0x20-0x2C (IHI 0069H and IHI 0048B,
/// "Identification registers"). PIDR2.ArchRev [7:4] is what guests probe; CIDR0-3 carry the
/// standard component identification preamble 0xB105F00D. Everything else reads 0.
pub(crate) fn id_register(block_offset: u64, arch_rev: u32) -> u32 {
    match block_offset {
        0x18 => arch_rev << 4, // PIDR2
        0x20 => 0x0d,          // CIDR0
        0x24 => 0xf0,          // CIDR1
        0x28 => 0x05,          // CIDR2
        0x2c => 0xb1,          // CIDR3
        _ => 0,
    }
}

/// Which access widths a register allows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Widths {
    Word,
    ByteOrWord,
    WordOrDouble,
    /// Reserved space: any naturally aligned access, RAZ/WI.
    Any,
}

/// Checks width and natural alignment (IHI 0069H, "GIC memory-mapped register access":
/// word accesses to 32-bit registers, byte accesses where a register is byte-accessible,
/// 64-bit registers as a doubleword or either word).
pub(crate) fn check(offset: u64, width: AccessWidth, widths: Widths) -> Result<(), MmioError> {
    if !offset.is_multiple_of(width.bytes()) {
        return Err(MmioError::BadWidth);
    }
    let ok = match widths {
        Widths::Word => width == AccessWidth::Word,
        Widths::ByteOrWord => matches!(width, AccessWidth::Byte | AccessWidth::Word),
        Widths::WordOrDouble => matches!(width, AccessWidth::Word | AccessWidth::Double),
        Widths::Any => true,
    };
    if ok { Ok(()) } else { Err(MmioError::BadWidth) }
}

/// The INTIDs a frame shows, and from which bank (the vCPU whose SGIs/PPIs INTIDs 0-31 mean).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Window {
    pub bank: usize,
    /// First INTID shown (0 or 32); lower ones are RAZ/WI in this frame.
    pub lo: u32,
    /// One past the last INTID shown.
    pub hi: u32,
}

impl Window {
    fn shows(&self, intid: u32) -> bool {
        (self.lo..self.hi).contains(&intid)
    }
}

/// Reads the interrupt-array registers; `None` when `offset` is not one of them.
pub(crate) fn read_arrays(
    d: &Dist,
    w: Window,
    offset: u64,
    width: AccessWidth,
) -> Option<Result<u64, MmioError>> {
    match offset {
        0x080..0x400 => Some(check(offset, width, Widths::Word).map(|()| {
            let Some((reg, n)) = BitReg::at(offset) else {
                return 0;
            };
            let first = n * 32;
            if w.shows(first) {
                u64::from(d.read_bits(w.bank, reg, first))
            } else {
                0
            }
        })),
        0x400..0x800 => Some(check(offset, width, Widths::ByteOrWord).map(|()| {
            let first = (offset - 0x400) as u32;
            (0..width.bytes() as u32)
                .map(|k| {
                    let intid = first + k;
                    let p = if w.shows(intid) {
                        d.read_priority(w.bank, intid)
                    } else {
                        0
                    };
                    u64::from(p) << (8 * k)
                })
                .sum()
        })),
        0xc00..0xd00 => Some(check(offset, width, Widths::Word).map(|()| {
            let first = ((offset - 0xc00) / 4) as u32 * 16;
            if w.shows(first) {
                u64::from(d.read_config(w.bank, first))
            } else {
                0
            }
        })),
        _ => None,
    }
}

/// Writes the interrupt-array registers; `None` when `offset` is not one of them.
pub(crate) fn write_arrays(
    d: &mut Dist,
    w: Window,
    offset: u64,
    width: AccessWidth,
    value: u64,
) -> Option<Result<VcpuMask, MmioError>> {
    match offset {
        0x080..0x400 => Some(check(offset, width, Widths::Word).map(|()| {
            let Some((reg, n)) = BitReg::at(offset) else {
                return 0;
            };
            let first = n * 32;
            if w.shows(first) {
                d.write_bits(w.bank, reg, first, value as u32)
            } else {
                0
            }
        })),
        0x400..0x800 => Some(check(offset, width, Widths::ByteOrWord).map(|()| {
            let first = (offset - 0x400) as u32;
            for k in 0..width.bytes() as u32 {
                let intid = first + k;
                if w.shows(intid) {
                    d.write_priority(w.bank, intid, (value >> (8 * k)) as u8);
                }
            }
            0
        })),
        0xc00..0xd00 => Some(check(offset, width, Widths::Word).map(|()| {
            let first = ((offset - 0xc00) / 4) as u32 * 16;
            if w.shows(first) {
                d.write_config(w.bank, first, value as u32)
            } else {
                0
            }
        })),
        _ => None,
    }
}

/// Reads `width` bytes of a 64-bit register at byte `offset & 7` within it.
pub(crate) fn read_u64_part(reg: u64, offset: u64, width: AccessWidth) -> u64 {
    (reg >> (8 * (offset & 7))) & width.mask()
}

/// Replaces `width` bytes at byte `offset & 7` of a 64-bit register.
pub(crate) fn write_u64_part(reg: u64, offset: u64, width: AccessWidth, value: u64) -> u64 {
    let shift = 8 * (offset & 7);
    let mask = width.mask() << shift;
    (reg & !mask) | ((value << shift) & mask)
}
