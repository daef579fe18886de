//! Walker, map, unmap, translate, destroy.
use super::*;
use crate::addr::{Ipa, PhysAddr};
use crate::mm::stage2::desc::{LeafAttrs, MemType, S2Perms};
use crate::mm::stage2::memcache::MemCache;
use crate::mm::stage2::testing::{FakePhys, NoopTlb};
use crate::mm::stage2::{Stage2Error, Stage2Table};

const RAM: LeafAttrs = LeafAttrs::ram(S2Perms::RWX);

fn ipa(v: u64) -> Ipa {
    Ipa::new(v)
}
fn pa(v: u64) -> PhysAddr {
    PhysAddr::new(v)
}

/// (ipa, pa, level) of every leaf.
fn shape<M: crate::mm::stage2::TableMemory, T: crate::mm::stage2::Stage2Tlb>(
    t: &Stage2Table<M, T>,
) -> Vec<(u64, u64, u8)> {
    leaves(t)
        .into_iter()
        .map(|l| (l.ipa.as_u64(), l.pa.as_u64(), l.level))
        .collect()
}

#[test]
fn map_of_an_aligned_gigabyte_is_one_level1_block_in_the_root() {
    let (rec, phys) = recorded(64);
    let mut t = rec_table(&phys, &rec, 40);
    let mut cache = MemCache::new();
    assert_eq!(t.pages_needed_for_map(ipa(G1), pa(4 * G1), G1, RAM), Ok(0));
    t.map(&mut cache, ipa(G1), pa(4 * G1), G1, RAM).unwrap();
    assert_eq!(shape(&t), vec![(G1, 4 * G1, 1)]);
    let tr = t.translate(ipa(G1 + 0x1234)).unwrap();
    assert_eq!(tr.pa, pa(4 * G1 + 0x1234));
    assert_eq!(tr.level, 1);
    assert_eq!(tr.attrs, RAM);
    assert_eq!(t.stats().mapped, [0, 0, 1]);
    assert_eq!(
        t.stats().table_pages,
        2,
        "only the two concatenated root pages"
    );
    assert_eq!(t.check_invariants(), Ok(2));
    rec.assert_clean();
}

#[test]
fn map_uses_the_largest_blocks_alignment_allows_at_each_point() {
    let (rec, phys) = recorded(64);
    let mut t = rec_table(&phys, &rec, 40);
    let mut cache = MemCache::new();
    // [1G - 2M, 2G + 2M + 8K): a 2 MiB block, a 1 GiB block, a 2 MiB block, two pages.
    let (start, size) = (G1 - M2, M2 + G1 + M2 + 2 * K4);
    let base_pa = 8 * G1 - M2;
    let needed = t
        .pages_needed_for_map(ipa(start), pa(base_pa), size, RAM)
        .unwrap();
    assert_eq!(needed, 3, "two level-2 tables and one level-3 table");
    cache.topup(&phys, &phys, needed).unwrap();
    t.map(&mut cache, ipa(start), pa(base_pa), size, RAM)
        .unwrap();
    assert!(cache.is_empty());
    assert_eq!(
        shape(&t),
        vec![
            (G1 - M2, 8 * G1 - M2, 2),
            (G1, 8 * G1, 1),
            (2 * G1, 9 * G1, 2),
            (2 * G1 + M2, 9 * G1 + M2, 3),
            (2 * G1 + M2 + K4, 9 * G1 + M2 + K4, 3),
        ]
    );
    assert_eq!(t.stats().mapped, [2, 2, 1]);
    assert_eq!(t.check_invariants(), Ok(5));
    rec.assert_clean();
}

#[test]
fn a_pa_offset_that_differs_from_the_ipa_offset_forces_pages() {
    let (rec, phys) = recorded(64);
    let mut t = rec_table(&phys, &rec, 40);
    let mut cache = MemCache::new();
    cache.topup(&phys, &phys, 8).unwrap();
    t.map(&mut cache, ipa(M2), pa(0x4000_1000), M2, RAM)
        .unwrap();
    let s = shape(&t);
    assert_eq!(s.len(), 512);
    assert!(
        s.iter()
            .all(|&(i, p, l)| l == 3 && p == i - M2 + 0x4000_1000)
    );
    assert_eq!(t.stats().table_pages, 2 + 2);
    rec.assert_clean();
    cache.drain(&phys, &phys);
}

#[test]
fn unmap_frees_every_table_it_emptied_and_only_the_pgd_remains() {
    let (rec, phys) = recorded(64);
    let mut t = rec_table(&phys, &rec, 44);
    let mut cache = MemCache::new();
    cache.topup(&phys, &phys, 3).unwrap();
    t.map(&mut cache, ipa(0x7f_0000_0000), pa(0x1000), 3 * K4, RAM)
        .unwrap();
    assert_eq!(t.stats().table_pages, 1 + 3);
    t.unmap(&mut cache, ipa(0x7f_0000_1000), K4).unwrap();
    assert_eq!(t.stats().table_pages, 4, "the table still has two pages");
    t.unmap(&mut cache, ipa(0x7f_0000_0000), 3 * K4).unwrap();
    assert_eq!(t.stats().table_pages, 1, "only the PGD remains");
    assert_eq!(t.check_invariants(), Ok(1));
    assert!(shape(&t).is_empty());
    assert_eq!(cache.len(), 3, "freed tables went back to the cache");
    rec.assert_clean();
    rec.detach();
    let vmid = t.destroy(&phys);
    assert_eq!(vmid.as_u16(), 1);
    cache.drain(&phys, &phys);
    phys.check_clean().unwrap();
}

#[test]
fn unmapping_a_page_inside_a_gigabyte_block_splits_it_and_keeps_the_rest() {
    let (rec, phys) = recorded(64);
    let mut t = rec_table(&phys, &rec, 39);
    let mut cache = MemCache::new();
    t.map(&mut cache, ipa(G1), pa(2 * G1), G1, RAM).unwrap();
    let hole = G1 + 5 * M2 + 7 * K4;
    assert_eq!(
        t.unmap(&mut cache, ipa(hole), K4),
        Err(Stage2Error::CacheEmpty { needed: 2 })
    );
    assert_eq!(shape(&t), vec![(G1, 2 * G1, 1)], "nothing changed");
    cache.topup(&phys, &phys, 2).unwrap();
    t.unmap(&mut cache, ipa(hole), K4).unwrap();
    assert_eq!(t.translate(ipa(hole)), None);
    assert_eq!(
        t.translate(ipa(hole - K4)).unwrap().pa,
        pa(2 * G1 + 5 * M2 + 6 * K4)
    );
    assert_eq!(
        t.translate(ipa(hole + K4)).unwrap().pa,
        pa(2 * G1 + 5 * M2 + 8 * K4)
    );
    assert_eq!(t.translate(ipa(G1)).unwrap().level, 2);
    assert_eq!(t.stats().mapped, [511, 511, 0]);
    assert_eq!(t.stats().splits, 2);
    assert_eq!(t.check_invariants(), Ok(3));
    rec.assert_clean();
}

#[test]
fn mapping_a_block_over_pages_replaces_the_table_and_frees_it() {
    let (rec, phys) = recorded(64);
    let mut t = rec_table(&phys, &rec, 39);
    let mut cache = MemCache::new();
    cache.topup(&phys, &phys, 2).unwrap();
    t.map(&mut cache, ipa(M2), pa(0x10_0000), 4 * K4, RAM)
        .unwrap();
    assert_eq!(t.stats().table_pages, 3);
    t.map(&mut cache, ipa(M2), pa(0x40_0000), M2, RAM).unwrap();
    assert_eq!(shape(&t), vec![(M2, 0x40_0000, 2)]);
    assert_eq!(t.stats().table_pages, 2);
    assert_eq!(cache.len(), 1);
    assert_eq!(t.stats().mapped, [0, 1, 0]);
    assert_eq!(t.check_invariants(), Ok(2));
    rec.assert_clean();
}

#[test]
fn a_map_the_cache_cannot_cover_changes_nothing() {
    let (rec, phys) = recorded(64);
    let mut t = rec_table(&phys, &rec, 44);
    let mut cache = MemCache::new();
    cache.topup(&phys, &phys, 2).unwrap();
    rec.clear_events();
    let r = t.map(&mut cache, ipa(0x123_4000_0000), pa(0x5000), K4, RAM);
    assert_eq!(r, Err(Stage2Error::CacheEmpty { needed: 3 }));
    assert!(
        rec.events().is_empty(),
        "no store, no TLBI: {:?}",
        rec.events()
    );
    assert_eq!(cache.len(), 2);
    assert_eq!(t.stats().table_pages, 1);
    cache.topup(&phys, &phys, 3).unwrap();
    t.map(&mut cache, ipa(0x123_4000_0000), pa(0x5000), K4, RAM)
        .unwrap();
    assert_eq!(t.translate(ipa(0x123_4000_0000)).unwrap().pa, pa(0x5000));
    rec.assert_clean();
}

#[test]
fn bad_ranges_are_rejected() {
    let phys = FakePhys::new(64);
    let g = geo(36);
    let mut t = Stage2Table::new(g, Vmid::new(3), false, &phys, NoopTlb, &phys).unwrap();
    let mut c = MemCache::new();
    assert_eq!(
        t.map(&mut c, ipa(0x800), pa(0), K4, RAM),
        Err(Stage2Error::Misaligned)
    );
    assert_eq!(
        t.map(&mut c, ipa(0), pa(0x800), K4, RAM),
        Err(Stage2Error::Misaligned)
    );
    assert_eq!(
        t.map(&mut c, ipa(0), pa(0), 0, RAM),
        Err(Stage2Error::Misaligned)
    );
    assert_eq!(
        t.map(&mut c, ipa(0), pa(0), 100, RAM),
        Err(Stage2Error::Misaligned)
    );
    assert_eq!(
        t.map(&mut c, ipa(1 << 36), pa(0), K4, RAM),
        Err(Stage2Error::OutOfRange)
    );
    assert_eq!(
        t.map(&mut c, ipa((1 << 36) - K4), pa(0), 2 * K4, RAM),
        Err(Stage2Error::OutOfRange)
    );
    assert_eq!(
        t.map(&mut c, ipa(0), pa(1 << 48), K4, RAM),
        Err(Stage2Error::OutOfRange)
    );
    assert_eq!(
        t.unmap(&mut c, ipa(!0xfff), K4),
        Err(Stage2Error::OutOfRange)
    );
    assert_eq!(t.translate(ipa(1 << 36)), None);
    t.destroy(&phys);
    phys.check_clean().unwrap();
}

/// Maps across the boundaries between concatenated root pages and checks each side.
#[test]
fn mappings_cross_concatenated_root_page_boundaries() {
    for (bits, pages) in [(39u8, 1usize), (40, 2), (42, 8), (34, 16), (43, 16)] {
        let (rec, phys) = recorded(256);
        let mut t = rec_table(&phys, &rec, bits);
        assert_eq!(t.geometry().root_pages(), pages);
        let span = t.geometry().root_page_span();
        let mut cache = MemCache::new();
        cache.topup(&phys, &phys, 8).unwrap();
        // Straddle each boundary between root pages with 2 MiB blocks and pages.
        for p in 1..pages as u64 {
            let b = p * span;
            t.map(
                &mut cache,
                ipa(b - M2),
                pa(0x4000_0000 + p * 4 * M2),
                2 * M2,
                RAM,
            )
            .unwrap();
            t.map(
                &mut cache,
                ipa(b + 8 * M2 - K4),
                pa(0x1000 * p),
                2 * K4,
                RAM,
            )
            .unwrap();
            cache.topup(&phys, &phys, 8).unwrap();
        }
        // And the very end of the IPA space.
        let end = 1u64 << bits;
        t.map(&mut cache, ipa(end - M2), pa(0x6000_0000), M2, RAM)
            .unwrap();
        for p in 1..pages as u64 {
            let b = p * span;
            assert_eq!(
                t.translate(ipa(b - 1)).unwrap().pa,
                pa(0x4000_0000 + p * 4 * M2 + M2 - 1)
            );
            assert_eq!(
                t.translate(ipa(b)).unwrap().pa,
                pa(0x4000_0000 + p * 4 * M2 + M2)
            );
            assert_eq!(t.translate(ipa(b)).unwrap().level, 2);
            assert_eq!(
                t.translate(ipa(b + 8 * M2)).unwrap().pa,
                pa(0x1000 * p + K4)
            );
        }
        assert_eq!(
            t.translate(ipa(end - 1)).unwrap().pa,
            pa(0x6000_0000 + M2 - 1)
        );
        t.check_invariants().unwrap();
        rec.assert_clean();
        // Unmap everything: only the PGD stays.
        t.unmap(&mut cache, ipa(0), end).unwrap();
        assert_eq!(t.stats().table_pages, pages as u64, "ipa {bits}");
        assert_eq!(t.check_invariants(), Ok(pages as u64));
        rec.assert_clean();
        rec.detach();
        t.destroy(&phys);
        cache.drain(&phys, &phys);
        phys.check_clean().unwrap();
    }
}

#[test]
fn start_level_2_tables_have_no_gigabyte_blocks() {
    let phys = FakePhys::new(64);
    let mut t = Stage2Table::new(geo(34), Vmid::new(2), false, &phys, NoopTlb, &phys).unwrap();
    let mut c = MemCache::new();
    t.map(&mut c, ipa(G1), pa(G1), G1, RAM).unwrap();
    assert_eq!(t.stats().mapped, [0, 512, 0]);
    assert_eq!(t.stats().table_pages, 16);
    t.destroy(&phys);
    phys.check_clean().unwrap();
}

#[test]
fn destroy_returns_every_page_with_its_allocation_order() {
    for bits in [32u8, 36, 40, 42, 43, 44, 48] {
        let phys = FakePhys::new(1024);
        let g = geo(bits);
        let mut t = Stage2Table::new(g, Vmid::new(9), false, &phys, NoopTlb, &phys).unwrap();
        assert_eq!(phys.outstanding_pages(), g.root_pages());
        assert!(
            t.root().is_aligned(4096 << g.pgd_order()),
            "PGD aligned to its size"
        );
        let mut c = MemCache::new();
        c.topup(&phys, &phys, 64).unwrap();
        for i in 0..20u64 {
            let at = ((i * 0x1_2345_6000) % (1u64 << bits)) & !0xfff;
            t.map(&mut c, ipa(at), pa(0x1000 * i), K4, RAM).unwrap();
            c.topup(&phys, &phys, 8).unwrap();
        }
        t.check_invariants().unwrap();
        assert_eq!(t.destroy(&phys), Vmid::new(9));
        c.drain(&phys, &phys);
        phys.check_clean().unwrap();
    }
}

#[test]
fn device_mappings_are_execute_never_and_translate_with_device_type() {
    let phys = FakePhys::new(64);
    let mut t = Stage2Table::new(geo(40), Vmid::new(2), false, &phys, NoopTlb, &phys).unwrap();
    let mut c = MemCache::new();
    c.topup(&phys, &phys, 1).unwrap();
    let mut dev = LeafAttrs::device(true);
    dev.perms.exec = true; // ignored for devices
    t.map(&mut c, ipa(0x0800_0000), pa(0xfe00_0000), M2, dev)
        .unwrap();
    let tr = t.translate(ipa(0x0800_0010)).unwrap();
    assert_eq!(tr.attrs.mem, MemType::Device);
    assert!(!tr.attrs.perms.exec);
    assert_eq!(tr.pa, pa(0xfe00_0010));
    t.destroy(&phys);
}

#[test]
fn a_pgd_allocation_failure_is_no_memory() {
    let phys = FakePhys::new(8);
    phys.fail_from_call(1);
    let r = Stage2Table::new(geo(40), Vmid::new(1), false, &phys, NoopTlb, &phys);
    assert_eq!(r.err(), Some(Stage2Error::NoMemory));
    phys.stop_failing();
    phys.check_clean().unwrap();
}
