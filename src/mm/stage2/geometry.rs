//! Stage-2 geometry: IPA size, start level, concatenated root tables, VTCR_EL2 and VTTBR_EL2.
//!
//! With a 4 KiB granule each level resolves 9 bits of the IPA: level 3 bits `[20:12]`, level 2
//! `[29:21]`, level 1 `[38:30]`, level 0 `[47:39]`. The table at the start level must resolve between
//! 1 and 13 bits (Arm ARM DDI 0487, D8.2.6 "Concatenating translation tables at the initial
//! level of stage 2 translation", and the pseudocode `AArch64.S2InconsistentSL`): when it has
//! to resolve 10..=13 bits, 2..=16 tables are concatenated, i.e. laid out contiguously and
//! aligned to their total size, and the hardware indexes them as one table of 1024..8192
//! entries. Like Linux (`stage2_pgtable_levels(ipa) = ARM64_HW_PGTABLE_LEVELS(ipa - 4)`) we
//! pick the fewest levels, so the walk is as short as the architecture allows:
//!
//! | IPA bits | start level | levels | root pages |
//! |----------|-------------|--------|------------|
//! | 32..=34  | 2           | 2      | 4, 8, 16   |
//! | 35..=39  | 1           | 3      | 1          |
//! | 40..=43  | 1           | 3      | 2, 4, 8, 16|
//! | 44..=48  | 0           | 4      | 1          |
//!
//! Start level 0 is only valid when PAMax >= 44 bits (`AArch64.S2InvalidSL`); since the IPA
//! size is clamped to the PA range this always holds when it is chosen.
#![forbid(unsafe_code)]

use aarch64_cpu::registers::{VTCR_EL2, VTTBR_EL2};
use tock_registers::LocalRegisterCopy;

use super::Stage2Error;
use super::vmid::{Vmid, VmidBits};
use crate::addr::{PAGE_SHIFT, PhysAddr};

/// Number of descriptors in one 4 KiB translation table.
pub const ENTRIES_PER_TABLE: usize = 512;
/// Largest number of concatenated initial-level tables (Arm ARM D8.2.6).
pub const MAX_ROOT_PAGES: usize = 16;
/// The last level of a 4 KiB-granule walk.
pub const LAST_LEVEL: u8 = 3;

/// Bit position of the lowest IPA bit resolved at `level` (12, 21, 30, 39 for 3, 2, 1, 0).
pub const fn level_shift(level: u8) -> u32 {
    PAGE_SHIFT + 9 * (LAST_LEVEL - level) as u32
}

/// Bytes of IPA space one descriptor at `level` covers (4 KiB, 2 MiB, 1 GiB, 512 GiB).
pub const fn level_size(level: u8) -> u64 {
    1u64 << level_shift(level)
}

/// True when a descriptor at `level` may be a block or page. With a 4 KiB granule and no
/// FEAT_LPA2, level 0 has no blocks; level 1 (1 GiB) and 2 (2 MiB) blocks and level 3 pages are
/// allowed at stage 2 (Arm ARM D8.3.1).
pub const fn level_allows_leaf(level: u8) -> bool {
    level >= 1 && level <= LAST_LEVEL
}

/// The mapping sizes a stage-2 leaf can have, by level: 1 GiB (1), 2 MiB (2), 4 KiB (3).
pub const fn leaf_size_index(level: u8) -> usize {
    // 4 KiB -> 0, 2 MiB -> 1, 1 GiB -> 2, so counters read smallest first.
    (LAST_LEVEL - level) as usize
}

/// Physical address range, as ID_AA64MMFR0_EL1.PARange encodes it (Arm ARM D19.2.64).
/// The same encoding is used by VTCR_EL2.PS.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum PaRange {
    Bits32 = 0b0000,
    Bits36 = 0b0001,
    Bits40 = 0b0010,
    Bits42 = 0b0011,
    Bits44 = 0b0100,
    Bits48 = 0b0101,
    Bits52 = 0b0110,
}

impl PaRange {
    /// Decodes the ID_AA64MMFR0_EL1.PARange field (bits `[3:0]`, already extracted).
    pub fn from_id_field(field: u64) -> Result<Self, Stage2Error> {
        Ok(match field {
            0b0000 => Self::Bits32,
            0b0001 => Self::Bits36,
            0b0010 => Self::Bits40,
            0b0011 => Self::Bits42,
            0b0100 => Self::Bits44,
            0b0101 => Self::Bits48,
            0b0110 => Self::Bits52,
            other => return Err(Stage2Error::UnsupportedPaRange(other)),
        })
    }

    /// Every value, smallest first.
    pub const ALL: [PaRange; 7] = [
        Self::Bits32,
        Self::Bits36,
        Self::Bits40,
        Self::Bits42,
        Self::Bits44,
        Self::Bits48,
        Self::Bits52,
    ];

    pub const fn bits(self) -> u8 {
        match self {
            Self::Bits32 => 32,
            Self::Bits36 => 36,
            Self::Bits40 => 40,
            Self::Bits42 => 42,
            Self::Bits44 => 44,
            Self::Bits48 => 48,
            Self::Bits52 => 52,
        }
    }

    /// The range our descriptors can express: without FEAT_LPA2 (VTCR_EL2.DS = 0) output
    /// addresses stop at 48 bits, so a 52-bit PARange is used as 48 (as Linux does).
    pub const fn usable(self) -> Self {
        match self {
            Self::Bits52 => Self::Bits48,
            other => other,
        }
    }
}

/// The shape of one VM's stage-2 tables, fixed at creation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Stage2Geometry {
    ipa_bits: u8,
    start_level: u8,
    root_pages: usize,
    pa_range: PaRange,
}

impl Stage2Geometry {
    /// Geometry for an IPA space of `requested_ipa_bits` (32..=48) on a CPU whose physical
    /// address range is `pa_range`. The IPA size is clamped down to the (usable) PA range: the
    /// Arm ARM makes an IPA size larger than PAMax CONSTRAINED UNPREDICTABLE.
    pub fn new(requested_ipa_bits: u8, pa_range: PaRange) -> Result<Self, Stage2Error> {
        if !(32..=48).contains(&requested_ipa_bits) {
            return Err(Stage2Error::InvalidIpaSize(requested_ipa_bits));
        }
        let pa_range = pa_range.usable();
        let ipa_bits = requested_ipa_bits.min(pa_range.bits());
        // Fewest levels first: the start level must resolve 1..=13 bits (9 + up to 4 more
        // through concatenation of up to 16 tables).
        let mut start_level = 2u8;
        loop {
            let bits = ipa_bits as u32 - level_shift(start_level);
            if bits <= 13 {
                debug_assert!(bits >= 1);
                let root_pages = 1usize << bits.saturating_sub(9);
                debug_assert!(start_level != 0 || pa_range.bits() >= 44);
                return Ok(Self {
                    ipa_bits,
                    start_level,
                    root_pages,
                    pa_range,
                });
            }
            // ipa_bits <= 48 guarantees level 0 fits (48 - 39 = 9).
            start_level -= 1;
        }
    }

    /// The IPA size in bits after clamping.
    pub const fn ipa_bits(&self) -> u8 {
        self.ipa_bits
    }
    /// The first IPA the tables cannot translate.
    pub const fn ipa_limit(&self) -> u64 {
        1u64 << self.ipa_bits
    }
    pub const fn start_level(&self) -> u8 {
        self.start_level
    }
    /// Number of lookup levels (2, 3 or 4).
    pub const fn levels(&self) -> u8 {
        LAST_LEVEL + 1 - self.start_level
    }
    /// Number of concatenated tables at the start level (1..=16).
    pub const fn root_pages(&self) -> usize {
        self.root_pages
    }
    /// The PGD is one allocation of `2^pgd_order` pages aligned to its size (order 0..=4).
    pub const fn pgd_order(&self) -> u32 {
        self.root_pages.trailing_zeros()
    }
    /// The (usable) PA range the geometry was built for.
    pub const fn pa_range(&self) -> PaRange {
        self.pa_range
    }
    /// The first physical address a descriptor may not point at.
    pub const fn pa_limit(&self) -> u64 {
        1u64 << self.pa_range.bits()
    }
    /// Pages a fault may need in the worst case: one table for each level below the start
    /// level (the start level's tables are the PGD, allocated with the VM).
    pub const fn fault_cache_pages(&self) -> usize {
        (LAST_LEVEL - self.start_level) as usize
    }
    /// Bytes of IPA space one concatenated root page covers.
    pub const fn root_page_span(&self) -> u64 {
        level_size(self.start_level) * ENTRIES_PER_TABLE as u64
    }

    /// The VTCR_EL2 value for this geometry (Arm ARM D19.2.166, VTCR_EL2): T0SZ = 64 - IPA
    /// bits, SL0 for the start level, table walks Normal Inner/Outer Write-Back
    /// Read/Write-Allocate, Inner Shareable, 4 KiB granule, PS from the PA range, VS when 16-bit
    /// VMIDs are used, RES1 bit 31 set. HA/HD (hardware AF/dirty management) stay off: the
    /// dirty log relies on permission faults.
    pub fn vtcr(&self, vmid_bits: VmidBits) -> Vtcr {
        let sl0 = match self.start_level {
            0 => VTCR_EL2::SL0::Granule4KBLevel0,
            1 => VTCR_EL2::SL0::Granule4KBLevel1,
            _ => VTCR_EL2::SL0::Granule4KBLevel2,
        };
        let vs = match vmid_bits {
            VmidBits::Bits8 => VTCR_EL2::VS::Bits8,
            VmidBits::Bits16 => VTCR_EL2::VS::Bits16,
        };
        let value = (VTCR_EL2::RES1::SET
            + VTCR_EL2::T0SZ.val(64 - self.ipa_bits as u64)
            + sl0
            + VTCR_EL2::IRGN0::NormalWBRAWA
            + VTCR_EL2::ORGN0::NormalWBRAWA
            + VTCR_EL2::SH0::Inner
            + VTCR_EL2::TG0::Granule4KB
            + VTCR_EL2::PS.val(self.pa_range as u64)
            + vs)
            .value;
        Vtcr(LocalRegisterCopy::new(value))
    }
}

/// A computed VTCR_EL2 value with named accessors (values only: nothing here touches the live
/// register; the arch layer writes [`Vtcr::value`]).
#[derive(Clone, Copy)]
pub struct Vtcr(LocalRegisterCopy<u64, VTCR_EL2::Register>);

impl Vtcr {
    pub fn value(&self) -> u64 {
        self.0.get()
    }
    pub fn t0sz(&self) -> u64 {
        self.0.read(VTCR_EL2::T0SZ)
    }
    /// The raw SL0 field.
    pub fn sl0(&self) -> u64 {
        self.0.read(VTCR_EL2::SL0)
    }
    /// The start level SL0 encodes for a 4 KiB granule (SL2 = 0).
    pub fn start_level(&self) -> Option<u8> {
        match self.0.read_as_enum(VTCR_EL2::SL0) {
            Some(VTCR_EL2::SL0::Value::Granule4KBLevel0) => Some(0),
            Some(VTCR_EL2::SL0::Value::Granule4KBLevel1) => Some(1),
            Some(VTCR_EL2::SL0::Value::Granule4KBLevel2) => Some(2),
            Some(VTCR_EL2::SL0::Value::Granule4KBLevel3) => Some(3),
            None => None,
        }
    }
    pub fn ps(&self) -> u64 {
        self.0.read(VTCR_EL2::PS)
    }
    pub fn tg0(&self) -> u64 {
        self.0.read(VTCR_EL2::TG0)
    }
    pub fn sh0(&self) -> u64 {
        self.0.read(VTCR_EL2::SH0)
    }
    pub fn irgn0(&self) -> u64 {
        self.0.read(VTCR_EL2::IRGN0)
    }
    pub fn orgn0(&self) -> u64 {
        self.0.read(VTCR_EL2::ORGN0)
    }
    pub fn vmid16(&self) -> bool {
        self.0.is_set(VTCR_EL2::VS)
    }
}

impl core::fmt::Debug for Vtcr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Vtcr({:#x})", self.value())
    }
}

/// The VTTBR_EL2 value for a VM (Arm ARM D19.2.167): BADDR = PGD base (aligned to the size of
/// the concatenated root), VMID in bits `[63:48]` (only `[55:48]` with 8-bit VMIDs, which the VMID
/// allocator guarantees), CnP = 0.
pub fn vttbr(pgd: PhysAddr, vmid: Vmid) -> u64 {
    (VTTBR_EL2::VMID.val(vmid.as_u16() as u64) + VTTBR_EL2::BADDR.val(pgd.as_u64() >> 1)).value
}
