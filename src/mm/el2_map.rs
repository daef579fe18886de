//! The hypervisor's own translation (EL2 stage 1, HCR_EL2.E2H = 0): which memory attributes
//! each kind of range gets, as MAIR_EL2 and descriptor bits. Pure: `arch::aarch64::mmu` builds
//! the tables from these values and switches them.
//!
//! Descriptor bits: Arm ARM (DDI 0487) D8.3 "Translation table descriptor formats" and D8.4
//! "Memory region attributes". In a translation regime with one VA range (EL2 without E2H,
//! EL3), AP[1] (bit 6) is RES1 and nG (bit 11) RES0; a TLB may cache the bit as written, so it
//! is set in every block and page descriptor rather than relied on being ignored.
#![forbid(unsafe_code)]

use aarch64_paging::descriptor::El23Attributes;

/// MAIR_EL2: Attr0 Device-nGnRE, Attr1 Normal write-back read/write-allocate (inner and outer),
/// Attr2 Normal non-cacheable (Arm ARM D19.2, MAIR_EL2).
pub const MAIR: u64 = 0x04 | (0xff << 8) | (0x44 << 16);
const ATTR_DEVICE: u64 = 0;
const ATTR_NORMAL: u64 = 1;

/// Stage-1 descriptor bits (Arm ARM D8.3.2).
const DESC_BLOCK: u64 = 0b01;
const DESC_ATTR_INDX_SHIFT: u64 = 2;
/// AP[1]: RES1 at EL2 with one VA range.
pub const DESC_AP1_RES1: u64 = 1 << 6;
const DESC_SH_INNER: u64 = 3 << 8;
const DESC_AF: u64 = 1 << 10;
const DESC_XN: u64 = 1 << 54;

/// How a range of the final map is to be mapped.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MapKind {
    /// Normal write-back memory, read-write, execute-never.
    Ram,
    /// Image text: read-only, executable.
    Text,
    /// Image read-only data.
    ReadOnly,
    /// Device-nGnRE, execute-never.
    Device,
}

/// The final map's attributes for `kind` (the `aarch64-paging` crate adds the output address
/// and the block/page type).
pub fn attributes(kind: MapKind) -> El23Attributes {
    let normal = El23Attributes::ATTRIBUTE_INDEX_1 | El23Attributes::INNER_SHAREABLE;
    let base = El23Attributes::VALID | El23Attributes::ACCESSED | El23Attributes::USER_RES1;
    base | match kind {
        MapKind::Ram => normal | El23Attributes::XN,
        MapKind::Text => normal | El23Attributes::READ_ONLY,
        MapKind::ReadOnly => normal | El23Attributes::READ_ONLY | El23Attributes::XN,
        MapKind::Device => El23Attributes::ATTRIBUTE_INDEX_0 | El23Attributes::XN,
    }
}

/// A block descriptor of the early map (built with the MMU off, before the DTB is read):
/// normal write-back read-write executable memory for the image and the DTB, else
/// Device-nGnRE execute-never. `pa` must be aligned to the block size of its level.
pub fn early_block(pa: u64, normal: bool) -> u64 {
    let common = DESC_BLOCK | DESC_AF | DESC_AP1_RES1;
    if normal {
        pa | common | (ATTR_NORMAL << DESC_ATTR_INDX_SHIFT) | DESC_SH_INNER
    } else {
        pa | common | (ATTR_DEVICE << DESC_ATTR_INDX_SHIFT) | DESC_XN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [MapKind; 4] = [
        MapKind::Ram,
        MapKind::Text,
        MapKind::ReadOnly,
        MapKind::Device,
    ];

    #[test]
    fn every_final_descriptor_has_ap1_set_where_it_is_res1() {
        for kind in KINDS {
            assert!(
                attributes(kind).contains(El23Attributes::USER_RES1),
                "{kind:?}"
            );
            assert_eq!(
                attributes(kind).bits() as u64 & DESC_AP1_RES1,
                DESC_AP1_RES1
            );
        }
    }

    #[test]
    fn every_early_block_has_ap1_set_where_it_is_res1() {
        for normal in [true, false] {
            assert_ne!(early_block(0x4000_0000, normal) & DESC_AP1_RES1, 0);
        }
    }

    #[test]
    fn early_and_final_maps_agree_on_memory_types() {
        // AttrIndx [4:2] and the MAIR entry each selects.
        let attr = |d: u64| (MAIR >> (((d >> 2) & 7) * 8)) & 0xff;
        assert_eq!(attr(early_block(0, true)), 0xff);
        assert_eq!(attr(early_block(0, false)), 0x04);
        assert_eq!(attr(attributes(MapKind::Ram).bits() as u64), 0xff);
        assert_eq!(attr(attributes(MapKind::Device).bits() as u64), 0x04);
    }

    #[test]
    fn only_text_is_executable_and_only_ram_writable() {
        for kind in KINDS {
            let a = attributes(kind);
            assert_eq!(!a.contains(El23Attributes::XN), kind == MapKind::Text);
            assert_eq!(
                !a.contains(El23Attributes::READ_ONLY),
                matches!(kind, MapKind::Ram | MapKind::Device)
            );
        }
        assert_ne!(early_block(0, false) & DESC_XN, 0);
    }

    #[test]
    fn early_blocks_keep_the_output_address_and_are_valid_blocks() {
        let d = early_block(0x1_4020_0000, true);
        assert_eq!(d & 0x0000_ffff_ffe0_0000, 0x1_4020_0000);
        assert_eq!(d & 0b11, DESC_BLOCK);
        assert_ne!(d & DESC_AF, 0);
    }
}
