use crate::addr::PhysAddr;
use crate::mm::stage2::Stage2Error;
use crate::mm::stage2::geometry::{PaRange, Stage2Geometry, vttbr};
use crate::mm::stage2::vmid::{Vmid, VmidAllocator, VmidBits};

/// The architecture's rule for a stage-2 start level with a 4 KiB granule (Arm ARM
/// `AArch64.S2InconsistentSL` / `S2InvalidSL`), written independently of the code under test:
/// the start level must resolve 1..=13 bits and level 0 needs PAMax >= 44.
fn start_level_is_legal(ipa_bits: u32, level: u32, pa_bits: u32) -> bool {
    let resolved_below = (3 - level) * 9 + 12;
    let at_start = ipa_bits as i64 - resolved_below as i64;
    (1..=13).contains(&at_start) && !(level == 0 && pa_bits < 44)
}

#[test]
fn every_ipa_size_gets_the_fewest_levels_the_architecture_allows() {
    // (ipa bits, start level, root pages)
    let expected: [(u8, u8, usize); 17] = [
        (32, 2, 4),
        (33, 2, 8),
        (34, 2, 16),
        (35, 1, 1),
        (36, 1, 1),
        (37, 1, 1),
        (38, 1, 1),
        (39, 1, 1),
        (40, 1, 2),
        (41, 1, 4),
        (42, 1, 8),
        (43, 1, 16),
        (44, 0, 1),
        (45, 0, 1),
        (46, 0, 1),
        (47, 0, 1),
        (48, 0, 1),
    ];
    for (ipa, level, pages) in expected {
        let g = Stage2Geometry::new(ipa, PaRange::Bits48).unwrap();
        assert_eq!(g.ipa_bits(), ipa);
        assert_eq!(g.start_level(), level, "ipa {ipa}");
        assert_eq!(g.root_pages(), pages, "ipa {ipa}");
        assert_eq!(1usize << g.pgd_order(), pages);
        assert!(g.pgd_order() <= 4);
        assert_eq!(g.levels(), 4 - level);
        assert_eq!(g.fault_cache_pages(), (3 - level) as usize);
        // A concatenated root spans exactly the IPA space; a single page may be partly used.
        if pages > 1 {
            assert_eq!(g.root_page_span() * pages as u64, 1u64 << ipa, "ipa {ipa}");
        } else {
            assert!(g.root_page_span() >= 1u64 << ipa, "ipa {ipa}");
        }
        // Legal, and one level fewer would not be.
        assert!(start_level_is_legal(ipa as u32, level as u32, 48));
        if level < 2 {
            assert!(!start_level_is_legal(ipa as u32, level as u32 + 1, 48));
        }
        let vtcr = g.vtcr(VmidBits::Bits8);
        assert_eq!(vtcr.t0sz(), 64 - ipa as u64);
        assert_eq!(vtcr.start_level(), Some(level));
        // SL0 encodings for 4 KiB (Arm ARM VTCR_EL2.SL0): 0b00 level 2, 0b01 level 1, 0b10 level 0.
        assert_eq!(vtcr.sl0(), [0b10, 0b01, 0b00][level as usize]);
    }
}

#[test]
fn vtcr_fields_are_write_back_inner_shareable_4k_with_ps_and_vs() {
    let g = Stage2Geometry::new(40, PaRange::Bits40).unwrap();
    let v = g.vtcr(VmidBits::Bits16);
    assert_eq!(v.irgn0(), 0b01);
    assert_eq!(v.orgn0(), 0b01);
    assert_eq!(v.sh0(), 0b11);
    assert_eq!(v.tg0(), 0b00);
    assert_eq!(v.ps(), 0b010);
    assert!(v.vmid16());
    // T0SZ 24, SL0 01, IRGN0 01, ORGN0 01, SH0 11, TG0 00, PS 010, VS 1, RES1 bit 31.
    assert_eq!(
        v.value(),
        0x8000_0000 | 1 << 19 | 0b010 << 16 | 0b11 << 12 | 0b01 << 10 | 0b01 << 8 | 0b01 << 6 | 24
    );
    assert!(!g.vtcr(VmidBits::Bits8).vmid16());
}

#[test]
fn ipa_size_is_clamped_to_the_pa_range() {
    for pa in PaRange::ALL {
        for req in 32..=48u8 {
            let g = Stage2Geometry::new(req, pa).unwrap();
            let pa_bits = pa.bits().min(48);
            assert_eq!(g.ipa_bits(), req.min(pa_bits));
            assert!(start_level_is_legal(
                g.ipa_bits() as u32,
                g.start_level() as u32,
                pa_bits as u32
            ));
            // PS is the PA range, with 52 bits used as 48 (no FEAT_LPA2).
            assert_eq!(g.vtcr(VmidBits::Bits8).ps(), pa.usable() as u64);
        }
    }
    assert_eq!(
        Stage2Geometry::new(48, PaRange::Bits36).unwrap().ipa_bits(),
        36
    );
    assert_eq!(
        Stage2Geometry::new(48, PaRange::Bits52).unwrap().ipa_bits(),
        48
    );
}

#[test]
fn ipa_sizes_outside_32_to_48_are_rejected() {
    assert_eq!(
        Stage2Geometry::new(31, PaRange::Bits48),
        Err(Stage2Error::InvalidIpaSize(31))
    );
    assert_eq!(
        Stage2Geometry::new(49, PaRange::Bits52),
        Err(Stage2Error::InvalidIpaSize(49))
    );
    assert_eq!(
        PaRange::from_id_field(7),
        Err(Stage2Error::UnsupportedPaRange(7))
    );
    assert_eq!(PaRange::from_id_field(4), Ok(PaRange::Bits44));
}

/// Raspberry Pi 4 (Cortex-A72, ID_AA64MMFR0_EL1.PARange = 0b0100, 44 bits).
///
/// A 44-bit IPA space cannot start at level 1: level 1 with 16 concatenated tables resolves
/// bits [42:30] only (16 x 512 x 1 GiB = 8 TiB = 43 bits), so the architecture requires start
/// level 0 and four levels (Linux agrees: `stage2_pgtable_levels(44)` = 4). Three levels with a
/// 16-page root is what a 43-bit request gets, and 40 bits (Linux's default IPA size) gives
/// three levels with a 2-page root.
#[test]
fn raspberry_pi4_pa_range_44_geometry() {
    let pa = PaRange::from_id_field(0b0100).unwrap();
    let full = Stage2Geometry::new(48, pa).unwrap();
    assert_eq!(
        (
            full.ipa_bits(),
            full.start_level(),
            full.levels(),
            full.root_pages()
        ),
        (44, 0, 4, 1)
    );
    assert_eq!(full.vtcr(VmidBits::Bits8).t0sz(), 20);

    let g43 = Stage2Geometry::new(43, pa).unwrap();
    assert_eq!(
        (
            g43.start_level(),
            g43.levels(),
            g43.root_pages(),
            g43.pgd_order()
        ),
        (1, 3, 16, 4)
    );
    let v = g43.vtcr(VmidBits::Bits8);
    assert_eq!((v.t0sz(), v.sl0(), v.ps()), (21, 0b01, 0b100));

    let g40 = Stage2Geometry::new(40, pa).unwrap();
    assert_eq!(
        (g40.start_level(), g40.levels(), g40.root_pages()),
        (1, 3, 2)
    );
}

#[test]
fn vttbr_holds_baddr_and_vmid() {
    assert_eq!(
        vttbr(PhysAddr::new(0x4008_0000), Vmid::new(7)),
        0x0007_0000_4008_0000
    );
    assert_eq!(
        vttbr(PhysAddr::new(0x8_0000_0000), Vmid::new(0xabcd)),
        0xabcd_0008_0000_0000
    );
}

#[test]
fn vmids_are_unique_while_in_use_and_reusable_after_free() {
    let mut a = VmidAllocator::new(VmidBits::Bits8);
    let mut got = std::collections::BTreeSet::new();
    for _ in 0..255 {
        let v = a.alloc().unwrap();
        assert_ne!(v.as_u16(), 0, "VMID 0 is reserved");
        assert!(got.insert(v), "{v:?} handed out twice");
    }
    assert_eq!(a.in_use(), 255);
    assert_eq!(a.alloc(), Err(Stage2Error::VmidExhausted));
    a.free(Vmid::new(17)).unwrap();
    assert_eq!(
        a.free(Vmid::new(17)),
        Err(Stage2Error::VmidNotAllocated(17))
    );
    assert_eq!(a.free(Vmid::new(0)), Err(Stage2Error::VmidNotAllocated(0)));
    assert_eq!(a.alloc(), Ok(Vmid::new(17)));
    assert_eq!(a.alloc(), Err(Stage2Error::VmidExhausted));
}

#[test]
fn a_freed_vmid_is_reused_last() {
    let mut a = VmidAllocator::new(VmidBits::Bits16);
    let first = a.alloc().unwrap();
    a.free(first).unwrap();
    let second = a.alloc().unwrap();
    assert_ne!(first, second);
    assert_eq!(
        a.free(Vmid::new(300)),
        Err(Stage2Error::VmidNotAllocated(300))
    );
    assert_eq!(VmidBits::from_id_field(0b0010), VmidBits::Bits16);
    assert_eq!(VmidBits::from_id_field(0), VmidBits::Bits8);
}
