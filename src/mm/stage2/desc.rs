//! Stage-2 descriptors (VMSAv8-64, 4 KiB granule, 48-bit output addresses, no FEAT_LPA2).
//!
//! Every bit position lives in the two `register_bitfields!` layouts below; the rest of the
//! module tree asks these helpers, never shifts by hand.
#![forbid(unsafe_code)]

use tock_registers::register_bitfields;

use super::geometry::{LAST_LEVEL, level_size};
use crate::addr::PhysAddr;

register_bitfields! {u64,
    /// Stage-2 block descriptor (levels 1 and 2) and page descriptor (level 3).
    /// Arm ARM DDI 0487, D8.3.1 "Block descriptor" / "Page descriptor" formats and D8.3.2
    /// "Stage 2 Page and Block descriptor attributes".
    pub S2_LEAF [
        /// [0] Valid.
        VALID OFFSET(0) NUMBITS(1) [],
        /// [1] 0 = block (levels 1, 2), 1 = page (level 3; 0 there is reserved/invalid).
        TYPE OFFSET(1) NUMBITS(1) [
            Block = 0,
            Page = 1
        ],
        /// `[5:2]` MemAttr`[3:0]` (D8.6.5 without FEAT_S2FWB, D8.6.6 with HCR_EL2.FWB = 1).
        MEMATTR OFFSET(2) NUMBITS(4) [],
        /// [6] S2AP[0]: read allowed.
        S2AP_R OFFSET(6) NUMBITS(1) [],
        /// [7] S2AP[1]: write allowed.
        S2AP_W OFFSET(7) NUMBITS(1) [],
        /// `[9:8]` Shareability.
        SH OFFSET(8) NUMBITS(2) [
            NonShareable = 0b00,
            OuterShareable = 0b10,
            InnerShareable = 0b11
        ],
        /// [10] Access flag. Always set by us: an AF = 0 entry takes an Access flag fault.
        AF OFFSET(10) NUMBITS(1) [],
        /// `[47:12]` Output address (bits below the block size are RES0 in a block).
        OA OFFSET(12) NUMBITS(36) [],
        /// [54] XN (XN[1] with FEAT_XNX; 1 = not executable at EL1 or EL0).
        XN OFFSET(54) NUMBITS(1) [],
        /// [55] Reserved for software use (`[58:55]`): write-protected for dirty logging, so a
        /// write permission fault on this entry marks the page dirty and makes it writable.
        DIRTY_WP OFFSET(55) NUMBITS(1) []
    ],
    /// Stage-2 table descriptor (levels 0..=2). Arm ARM D8.3.1 "Table descriptor format".
    pub S2_TABLE [
        /// [0] Valid.
        VALID OFFSET(0) NUMBITS(1) [],
        /// [1] 1 = table.
        TYPE OFFSET(1) NUMBITS(1) [
            Table = 1
        ],
        /// `[11:2]` IGNORED by the table walker (we enable neither FEAT_HAFT nor VTCR_EL2.DS, which
        /// would give bits 10 and `[9:8]` a meaning). We keep here the number of non-zero entries
        /// of the next-level table, so an empty table is found without scanning it.
        COUNT OFFSET(2) NUMBITS(10) [],
        /// `[47:12]` Next-level table address.
        NLTA OFFSET(12) NUMBITS(36) []
    ]
}

/// Memory type of a stage-2 mapping.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MemType {
    /// Normal, Inner/Outer Write-Back cacheable, Inner Shareable (guest RAM).
    Normal,
    /// Device-nGnRE (passed-through MMIO). Always mapped execute-never.
    Device,
}

/// Stage-2 access permissions (S2AP and XN).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct S2Perms {
    pub read: bool,
    pub write: bool,
    pub exec: bool,
}

impl S2Perms {
    pub const NONE: Self = Self::new(false, false, false);
    pub const R: Self = Self::new(true, false, false);
    pub const RW: Self = Self::new(true, true, false);
    pub const RX: Self = Self::new(true, false, true);
    pub const RWX: Self = Self::new(true, true, true);

    pub const fn new(read: bool, write: bool, exec: bool) -> Self {
        Self { read, write, exec }
    }
    /// True when every access `other` allows is allowed by `self`.
    pub const fn contains(self, other: Self) -> bool {
        (self.read || !other.read) && (self.write || !other.write) && (self.exec || !other.exec)
    }
    pub const fn union(self, other: Self) -> Self {
        Self::new(
            self.read || other.read,
            self.write || other.write,
            self.exec || other.exec,
        )
    }
}

/// The attributes of a leaf (block or page) mapping.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct LeafAttrs {
    pub mem: MemType,
    pub perms: S2Perms,
    /// Write-protected by dirty logging (software bit).
    pub dirty_wp: bool,
}

impl LeafAttrs {
    /// Guest RAM with the given permissions.
    pub const fn ram(perms: S2Perms) -> Self {
        Self {
            mem: MemType::Normal,
            perms,
            dirty_wp: false,
        }
    }
    /// Device MMIO, read/write (or read-only), never executable.
    pub const fn device(writable: bool) -> Self {
        Self {
            mem: MemType::Device,
            perms: S2Perms::new(true, writable, false),
            dirty_wp: false,
        }
    }
}

// MemAttr[3:0] values (Arm ARM D8.6.5, "Stage 2 memory type and Cacheability attributes when
// FEAT_S2FWB is disabled"): 0b0001 Device-nGnRE, 0b1111 Normal Outer WB / Inner WB.
const MEMATTR_DEVICE_NGNRE: u64 = 0b0001;
const MEMATTR_NORMAL_WB: u64 = 0b1111;
// With FEAT_S2FWB and HCR_EL2.FWB = 1 (D8.6.6): MemAttr[2] = 0 is Device with MemAttr[1:0] the
// device type (0b01 nGnRE); 0b110 forces Normal Write-Back whatever stage 1 says.
const MEMATTR_FWB_DEVICE_NGNRE: u64 = 0b0001;
const MEMATTR_FWB_NORMAL_WB: u64 = 0b0110;

/// Encoder/decoder for leaf descriptors: the MemAttr encodings depend on whether the VM runs
/// with HCR_EL2.FWB (FEAT_S2FWB), fixed when the table is created.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct DescFormat {
    fwb: bool,
}

impl DescFormat {
    pub const fn new(fwb: bool) -> Self {
        Self { fwb }
    }
    pub const fn fwb(self) -> bool {
        self.fwb
    }

    fn memattr(self, mem: MemType) -> u64 {
        match (mem, self.fwb) {
            (MemType::Normal, false) => MEMATTR_NORMAL_WB,
            (MemType::Device, false) => MEMATTR_DEVICE_NGNRE,
            (MemType::Normal, true) => MEMATTR_FWB_NORMAL_WB,
            (MemType::Device, true) => MEMATTR_FWB_DEVICE_NGNRE,
        }
    }

    /// A block (levels 1, 2) or page (level 3) descriptor mapping `pa`, which must be aligned to
    /// the level's size. AF is set, shareability is Inner, devices are XN.
    pub fn leaf(self, pa: u64, level: u8, attrs: LeafAttrs) -> u64 {
        debug_assert!((1..=LAST_LEVEL).contains(&level));
        debug_assert_eq!(pa & (level_size(level) - 1), 0);
        let ty = if level == LAST_LEVEL {
            S2_LEAF::TYPE::Page
        } else {
            S2_LEAF::TYPE::Block
        };
        let exec = attrs.perms.exec && attrs.mem == MemType::Normal;
        (S2_LEAF::VALID::SET
            + ty
            + S2_LEAF::MEMATTR.val(self.memattr(attrs.mem))
            + S2_LEAF::S2AP_R.val(attrs.perms.read as u64)
            + S2_LEAF::S2AP_W.val(attrs.perms.write as u64)
            + S2_LEAF::SH::InnerShareable
            + S2_LEAF::AF::SET
            + S2_LEAF::OA.val(pa >> S2_LEAF::OA.shift)
            + S2_LEAF::XN.val(!exec as u64)
            + S2_LEAF::DIRTY_WP.val(attrs.dirty_wp as u64))
        .value
    }

    /// The attributes of a leaf descriptor.
    pub fn leaf_attrs(self, desc: u64) -> LeafAttrs {
        let memattr = S2_LEAF::MEMATTR.read(desc);
        let device = if self.fwb {
            memattr & 0b0100 == 0
        } else {
            memattr & 0b1100 == 0
        };
        LeafAttrs {
            mem: if device {
                MemType::Device
            } else {
                MemType::Normal
            },
            perms: leaf_perms(desc),
            dirty_wp: S2_LEAF::DIRTY_WP.is_set(desc),
        }
    }
}

/// The permissions of a leaf descriptor.
pub fn leaf_perms(desc: u64) -> S2Perms {
    S2Perms::new(
        S2_LEAF::S2AP_R.is_set(desc),
        S2_LEAF::S2AP_W.is_set(desc),
        !S2_LEAF::XN.is_set(desc),
    )
}

/// `desc` with its permissions replaced (device entries stay execute-never) and the dirty-log
/// write-protect bit set to `dirty_wp`.
pub fn with_perms(fmt: DescFormat, desc: u64, perms: S2Perms, dirty_wp: bool) -> u64 {
    let device = fmt.leaf_attrs(desc).mem == MemType::Device;
    let exec = perms.exec && !device;
    (S2_LEAF::S2AP_R.val(perms.read as u64)
        + S2_LEAF::S2AP_W.val(perms.write as u64)
        + S2_LEAF::XN.val(!exec as u64)
        + S2_LEAF::DIRTY_WP.val(dirty_wp as u64))
    .modify(desc)
}

/// `desc` with the access flag set.
pub fn with_af(desc: u64) -> u64 {
    S2_LEAF::AF::SET.modify(desc)
}

pub fn af_set(desc: u64) -> bool {
    S2_LEAF::AF.is_set(desc)
}

pub const fn is_valid(desc: u64) -> bool {
    desc & 1 != 0
}

/// True for a table descriptor: valid, type bit set, and not at the last level (where the same
/// encoding is a page).
pub fn is_table(desc: u64, level: u8) -> bool {
    level < LAST_LEVEL && is_valid(desc) && S2_TABLE::TYPE.is_set(desc)
}

/// True for a valid block or page descriptor.
pub fn is_leaf(desc: u64, level: u8) -> bool {
    is_valid(desc) && !is_table(desc, level)
}

/// A table descriptor for the next-level table at `pa` holding `count` non-zero entries.
pub fn table_desc(pa: PhysAddr, count: usize) -> u64 {
    debug_assert!(pa.is_aligned(crate::addr::PAGE_SIZE));
    debug_assert!(count <= 512);
    (S2_TABLE::VALID::SET
        + S2_TABLE::TYPE::Table
        + S2_TABLE::COUNT.val(count as u64)
        + S2_TABLE::NLTA.val(pa.as_u64() >> S2_TABLE::NLTA.shift))
    .value
}

/// The next-level table a table descriptor points at.
pub fn table_addr(desc: u64) -> PhysAddr {
    PhysAddr::new(S2_TABLE::NLTA.read(desc) << S2_TABLE::NLTA.shift)
}

/// The non-zero entry count kept in a table descriptor's ignored bits.
pub fn table_count(desc: u64) -> usize {
    S2_TABLE::COUNT.read(desc) as usize
}

/// `desc` with a new entry count (only IGNORED bits change).
pub fn with_count(desc: u64, count: usize) -> u64 {
    debug_assert!(count <= 512);
    S2_TABLE::COUNT.val(count as u64).modify(desc)
}

/// The output address of a leaf descriptor (aligned to its level's size).
pub fn leaf_oa(desc: u64) -> u64 {
    S2_LEAF::OA.read(desc) << S2_LEAF::OA.shift
}

/// The bits of a leaf descriptor other than its output address and type bit: two leaves with
/// equal `leaf_attr_bits` have the same memory type, shareability, permissions, AF and
/// software bits. Used to decide whether 512 leaves can merge into one block.
pub fn leaf_attr_bits(desc: u64) -> u64 {
    let oa_mask = S2_LEAF::OA.mask << S2_LEAF::OA.shift;
    let type_mask = S2_LEAF::TYPE.mask << S2_LEAF::TYPE.shift;
    desc & !oa_mask & !type_mask
}

/// Re-encodes a leaf's attributes at another level and address (used by split and merge; the
/// attribute bits are copied unchanged).
pub fn leaf_like(template: u64, pa: u64, level: u8) -> u64 {
    debug_assert_eq!(pa & (level_size(level) - 1), 0);
    let ty = if level == LAST_LEVEL {
        S2_LEAF::TYPE::Page
    } else {
        S2_LEAF::TYPE::Block
    };
    (ty + S2_LEAF::OA.val(pa >> S2_LEAF::OA.shift)).modify(template)
}

/// How a store of `new` over `old` at `level` must be carried out (Arm ARM D8.16.1, "Using
/// break-before-make when updating translation table entries").
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Change {
    /// Same value: nothing to do.
    None,
    /// The old entry was invalid: TLBs hold nothing for it (translation faults are not cached),
    /// so the new entry is simply stored.
    FromInvalid,
    /// Only bits the walker ignores differ (a table's entry count): plain store.
    SoftwareOnly,
    /// Same output address, memory type and size; permissions or AF only grow. Needs neither
    /// break-before-make nor invalidation here: a stale, more restrictive TLB entry causes a
    /// permission fault, and the fault path then invalidates that IPA on the faulting PE
    /// (`Stage2Table::handle_fault`; a TLB may keep the entry until then).
    Relax,
    /// Same output address, memory type and size; some permission is taken away. No break is
    /// needed, but the old entry must be invalidated before the operation completes.
    Restrict,
    /// A valid entry becomes invalid: the break half of break-before-make.
    ToInvalid,
    /// Anything else (output address, memory type, block size, table <-> block): full
    /// break-before-make.
    BreakBeforeMake,
}

/// Classifies the store of `new` over `old` at `level`.
pub fn classify(old: u64, new: u64, level: u8) -> Change {
    if old == new {
        return Change::None;
    }
    if !is_valid(old) {
        return Change::FromInvalid;
    }
    if !is_valid(new) {
        return Change::ToInvalid;
    }
    match (is_table(old, level), is_table(new, level)) {
        (true, true) if table_addr(old) == table_addr(new) => Change::SoftwareOnly,
        (false, false) => {
            let perm_bits = (S2_LEAF::S2AP_R::SET
                + S2_LEAF::S2AP_W::SET
                + S2_LEAF::XN::SET
                + S2_LEAF::AF::SET
                + S2_LEAF::DIRTY_WP::SET)
                .value;
            if old & !perm_bits != new & !perm_bits {
                return Change::BreakBeforeMake;
            }
            let (po, pn) = (leaf_perms(old), leaf_perms(new));
            if (af_set(new) || !af_set(old)) && pn.contains(po) {
                if po == pn && af_set(new) == af_set(old) {
                    Change::SoftwareOnly
                } else {
                    Change::Relax
                }
            } else {
                Change::Restrict
            }
        }
        _ => Change::BreakBeforeMake,
    }
}
