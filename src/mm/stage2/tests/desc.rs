use crate::addr::PhysAddr;
use crate::mm::stage2::desc::*;

const RAM: DescFormat = DescFormat::new(false);
const FWB: DescFormat = DescFormat::new(true);

#[test]
fn level1_block_of_ram_encodes_memattr_wb_rw_inner_af() {
    // VALID | block | MemAttr 1111 | S2AP 11 | SH 11 | AF | OA 0x4000_0000.
    let d = RAM.leaf(0x4000_0000, 1, LeafAttrs::ram(S2Perms::RWX));
    assert_eq!(d, 0x4000_07fd);
    assert!(is_leaf(d, 1) && !is_table(d, 1));
    assert_eq!(RAM.leaf_attrs(d), LeafAttrs::ram(S2Perms::RWX));
    assert_eq!(leaf_oa(d), 0x4000_0000);
}

#[test]
fn level2_block_of_device_is_ngnre_and_execute_never() {
    // VALID | block | MemAttr 0001 | S2AP 11 | SH 11 | AF | XN (bit 54).
    let d = RAM.leaf(0x8020_0000, 2, LeafAttrs::device(true));
    assert_eq!(d, 0x0040_0000_8020_07c5);
    let a = RAM.leaf_attrs(d);
    assert_eq!(a.mem, MemType::Device);
    assert!(!a.perms.exec);
    // Asking for exec on a device still gives XN.
    let mut dev_x = LeafAttrs::device(false);
    dev_x.perms.exec = true;
    assert!(!RAM.leaf_attrs(RAM.leaf(0x20_0000, 2, dev_x)).perms.exec);
}

#[test]
fn level3_page_with_fwb_uses_forced_write_back_encoding() {
    // VALID | page | MemAttr 0110 | S2AP 01 | SH 11 | AF.
    let d = FWB.leaf(0x1234_5000, 3, LeafAttrs::ram(S2Perms::RX));
    assert_eq!(d, 0x1234_575b);
    assert!(is_leaf(d, 3) && !is_table(d, 3));
    assert_eq!(FWB.leaf_attrs(d), LeafAttrs::ram(S2Perms::RX));
    // FWB device nGnRE is 0b0001 too, and decodes as device.
    assert_eq!(
        FWB.leaf_attrs(FWB.leaf(0x1000, 3, LeafAttrs::device(true)))
            .mem,
        MemType::Device
    );
    // The non-FWB decoder reads 0110 as Normal too (outer WT, inner WB) but the encoders differ.
    assert_ne!(
        RAM.leaf(0x1000, 3, LeafAttrs::ram(S2Perms::RX)),
        FWB.leaf(0x1000, 3, LeafAttrs::ram(S2Perms::RX))
    );
}

#[test]
fn table_descriptor_keeps_its_count_in_ignored_bits() {
    for level in 0..3 {
        let d = table_desc(PhysAddr::new(0x8_0000_1000), 5);
        assert_eq!(d, 0x8_0000_1017);
        assert!(is_table(d, level));
        assert_eq!(table_addr(d), PhysAddr::new(0x8_0000_1000));
        assert_eq!(table_count(d), 5);
        let d2 = with_count(d, 512);
        assert_eq!(table_count(d2), 512);
        assert_eq!(table_addr(d2), PhysAddr::new(0x8_0000_1000));
        assert_eq!(classify(d, d2, level), Change::SoftwareOnly);
    }
    // The same low bits at level 3 are a page, not a table.
    assert!(!is_table(0x8_0000_1017, 3));
}

#[test]
fn dirty_wp_bit_round_trips_and_is_software_only() {
    let base = RAM.leaf(0x20_0000, 2, LeafAttrs::ram(S2Perms::RWX));
    let wp = with_perms(RAM, base, S2Perms::RX, true);
    let a = RAM.leaf_attrs(wp);
    assert!(a.dirty_wp);
    assert_eq!(a.perms, S2Perms::RX);
    assert_eq!(leaf_oa(wp), 0x20_0000);
    assert_eq!(classify(base, wp, 2), Change::Restrict);
    assert_eq!(classify(wp, base, 2), Change::Relax);
}

#[test]
fn classify_separates_relax_restrict_and_break_before_make() {
    let ram = |pa, perms| RAM.leaf(pa, 3, LeafAttrs::ram(perms));
    assert_eq!(
        classify(0, ram(0x1000, S2Perms::RW), 3),
        Change::FromInvalid
    );
    assert_eq!(classify(ram(0x1000, S2Perms::RW), 0, 3), Change::ToInvalid);
    assert_eq!(
        classify(ram(0x1000, S2Perms::R), ram(0x1000, S2Perms::RWX), 3),
        Change::Relax
    );
    assert_eq!(
        classify(ram(0x1000, S2Perms::RWX), ram(0x1000, S2Perms::RX), 3),
        Change::Restrict
    );
    // Swapping write for exec is not a pure relaxation.
    assert_eq!(
        classify(ram(0x1000, S2Perms::RW), ram(0x1000, S2Perms::RX), 3),
        Change::Restrict
    );
    // New output address, new memory type, block <-> table: break-before-make.
    assert_eq!(
        classify(ram(0x1000, S2Perms::RW), ram(0x2000, S2Perms::RW), 3),
        Change::BreakBeforeMake
    );
    assert_eq!(
        classify(
            ram(0x1000, S2Perms::RW),
            RAM.leaf(0x1000, 3, LeafAttrs::device(true)),
            3
        ),
        Change::BreakBeforeMake
    );
    let block = RAM.leaf(0x20_0000, 2, LeafAttrs::ram(S2Perms::RW));
    let table = table_desc(PhysAddr::new(0x5000), 512);
    assert_eq!(classify(block, table, 2), Change::BreakBeforeMake);
    assert_eq!(classify(table, block, 2), Change::BreakBeforeMake);
    assert_eq!(
        classify(table, table_desc(PhysAddr::new(0x6000), 512), 2),
        Change::BreakBeforeMake
    );
    // Clearing AF takes something away.
    let no_af = block & !(1 << 10);
    assert_eq!(classify(block, no_af, 2), Change::Restrict);
    assert_eq!(classify(no_af, with_af(no_af), 2), Change::Relax);
}

#[test]
fn split_and_merge_helpers_keep_attributes() {
    let block = RAM.leaf(0x4000_0000, 1, LeafAttrs::ram(S2Perms::RW));
    let child = leaf_like(block, 0x4020_0000, 2);
    assert_eq!(leaf_attr_bits(child), leaf_attr_bits(block));
    assert_eq!(leaf_oa(child), 0x4020_0000);
    assert!(is_leaf(child, 2));
    let page = leaf_like(block, 0x4020_1000, 3);
    assert!(is_leaf(page, 3));
    assert_eq!(page & 0b11, 0b11);
    assert_eq!(RAM.leaf_attrs(page), LeafAttrs::ram(S2Perms::RW));
}
