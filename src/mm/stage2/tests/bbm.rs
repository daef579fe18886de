//! Break-before-make ordering, checked on the event log of the recording TLB, and tests
//! showing that the recorder does catch the mistakes it is there to catch.
use super::recorder::Event;
use super::*;
use crate::addr::{Ipa, PhysAddr};
use crate::mm::frame::FrameAllocator;
use crate::mm::stage2::desc::{LeafAttrs, S2Perms, table_addr};
use crate::mm::stage2::hw::Stage2Tlb;
use crate::mm::stage2::memcache::MemCache;
use crate::mm::stage2::walk::load;

const RAM: LeafAttrs = LeafAttrs::ram(S2Perms::RWX);

fn ipa(v: u64) -> Ipa {
    Ipa::new(v)
}
fn pa(v: u64) -> PhysAddr {
    PhysAddr::new(v)
}

/// The barrier and TLBI events only.
fn without_stores(ev: &[Event]) -> Vec<Event> {
    ev.iter()
        .filter(|e| !matches!(e, Event::Store { .. } | Event::Fill { .. }))
        .copied()
        .collect()
}

#[test]
fn remapping_a_page_breaks_invalidates_with_level_hint_then_makes() {
    let (rec, phys) = recorded(64);
    let mut t = rec_table(&phys, &rec, 40);
    let mut c = MemCache::new();
    c.topup(&phys, &phys, 2).unwrap();
    t.map(&mut c, ipa(0x4000_3000), pa(0x10_0000), K4, RAM)
        .unwrap();
    rec.clear_events();
    t.map(&mut c, ipa(0x4000_3000), pa(0x20_0000), K4, RAM)
        .unwrap();
    let ev = rec.events();
    // The new page becomes executable: its I-cache lines go first.
    assert_eq!(
        ev[0],
        Event::IcacheInval {
            pa: 0x20_0000,
            size: K4
        }
    );
    let ev = &ev[1..];
    let Event::Store {
        table,
        index,
        old,
        new: 0,
    } = ev[0]
    else {
        panic!("first the break: {ev:?}");
    };
    assert_ne!(old, 0);
    assert_eq!(
        ev[1..8],
        [
            Event::DsbIshst,
            Event::TlbiIpa {
                ipa: 0x4000_3000,
                level: Some(3)
            },
            Event::DsbIsh,
            Event::TlbiVmallE1,
            Event::DsbIsh,
            Event::Isb,
            Event::Store {
                table,
                index,
                old: 0,
                new: c_desc(&t, 0x4000_3000),
            },
        ]
    );
    assert_eq!(
        ev[8..],
        [Event::DsbIshst],
        "the operation ends by publishing"
    );
    assert_eq!(t.stats().bbm, 1);
    rec.assert_clean();
}

fn c_desc(t: &RecTable<'_>, at: u64) -> u64 {
    let tr = t.translate(ipa(at)).unwrap();
    crate::mm::stage2::desc::DescFormat::new(false).leaf(tr.block_pa.as_u64(), tr.level, tr.attrs)
}

#[test]
fn splitting_a_block_fills_the_new_table_before_the_break_and_hooks_it_after() {
    let (rec, phys) = recorded(64);
    let mut t = rec_table(&phys, &rec, 40);
    let mut c = MemCache::new();
    c.topup(&phys, &phys, 1).unwrap();
    t.map(&mut c, ipa(M2), pa(0x4000_0000), M2, RAM).unwrap();
    c.topup(&phys, &phys, 1).unwrap();
    rec.clear_events();
    t.split(&mut c, ipa(M2), M2, 3).unwrap();
    let ev = rec.events();
    // 512 stores into the fresh page, then the break of the block.
    let first_tlbi = ev
        .iter()
        .position(|e| matches!(e, Event::TlbiIpa { .. }))
        .unwrap();
    let fresh: Vec<_> = ev[..first_tlbi]
        .iter()
        .filter(|e| matches!(e, Event::Store { old: 0, new, .. } if *new != 0))
        .collect();
    assert_eq!(fresh.len(), 512);
    assert_eq!(
        ev[first_tlbi],
        Event::TlbiIpa {
            ipa: M2,
            level: Some(2)
        }
    );
    assert_eq!(
        without_stores(&ev),
        [
            Event::DsbIshst,
            Event::TlbiIpa {
                ipa: M2,
                level: Some(2)
            },
            Event::DsbIsh,
            Event::TlbiVmallE1,
            Event::DsbIsh,
            Event::Isb,
            Event::DsbIshst,
        ]
    );
    assert_eq!(t.translate(ipa(M2 + 0x5000)).unwrap().level, 3);
    assert_eq!(t.translate(ipa(M2 + 0x5000)).unwrap().pa, pa(0x4000_5000));
    rec.assert_clean();
}

#[test]
fn replacing_a_table_of_live_pages_by_a_block_invalidates_the_vmid_before_freeing() {
    let (rec, phys) = recorded(64);
    let mut t = rec_table(&phys, &rec, 40);
    let mut c = MemCache::new();
    c.topup(&phys, &phys, 2).unwrap();
    t.map(&mut c, ipa(M2), pa(0x10_0000), 3 * K4, RAM).unwrap();
    let l2 = t.translate(ipa(M2)).unwrap();
    assert_eq!(l2.level, 3);
    rec.clear_events();
    t.map(&mut c, ipa(M2), pa(0x20_0000), M2, RAM).unwrap();
    let ev = rec.events();
    let s12 = ev
        .iter()
        .position(|e| *e == Event::TlbiVmallS12)
        .expect("VMALLS12E1IS");
    let dsb = s12 + 1;
    assert_eq!(ev[dsb], Event::DsbIsh);
    let fill = ev
        .iter()
        .position(|e| matches!(e, Event::Fill { value: 0, .. }))
        .expect("freed");
    assert!(
        fill > dsb,
        "subtree reused only after the invalidation completed: {ev:?}"
    );
    assert!(!ev.iter().any(|e| matches!(e, Event::TlbiIpa { .. })));
    assert_eq!(t.stats().tlbi_vmalls12, 1);
    rec.assert_clean();
}

#[test]
fn unmapping_a_whole_subtree_unhooks_it_with_one_vmid_invalidation() {
    let (rec, phys) = recorded(128);
    let mut t = rec_table(&phys, &rec, 40);
    let mut c = MemCache::new();
    c.topup(&phys, &phys, 8).unwrap();
    t.map(&mut c, ipa(G1), pa(0x10_0000), 64 * K4, RAM).unwrap();
    t.map(&mut c, ipa(G1 + 4 * M2), pa(0x4000_0000), M2, RAM)
        .unwrap();
    rec.clear_events();
    t.unmap(&mut c, ipa(G1), G1).unwrap();
    let ev = without_stores(&rec.events());
    assert_eq!(
        ev,
        [
            Event::DsbIshst,
            Event::TlbiVmallS12,
            Event::DsbIsh,
            Event::Isb
        ]
    );
    assert_eq!(t.stats().table_pages, 2);
    rec.assert_clean();
}

#[test]
fn unmapping_pages_batches_their_invalidations_before_freeing_the_emptied_table() {
    let (rec, phys) = recorded(64);
    let mut t = rec_table(&phys, &rec, 40);
    let mut c = MemCache::new();
    c.topup(&phys, &phys, 2).unwrap();
    t.map(&mut c, ipa(M2), pa(0x10_0000), 4 * K4, RAM).unwrap();
    rec.clear_events();
    t.unmap(&mut c, ipa(M2), 4 * K4).unwrap();
    let ev = rec.events();
    // Four cleared pages (invalidation batched), then the emptied level-3 table: one
    // VMID-wide invalidation covers both, before the table page is zeroed for reuse; then the
    // level-2 table, now empty too, needs only a TLBI by IPA without level hint.
    let cleared = ev
        .iter()
        .filter(|e| matches!(e, Event::Store { old, new: 0, .. } if *old & 3 == 3))
        .count();
    assert!(cleared >= 4);
    let s12 = ev
        .iter()
        .position(|e| *e == Event::TlbiVmallS12)
        .expect("VMALLS12E1IS");
    let first_fill = ev
        .iter()
        .position(|e| matches!(e, Event::Fill { .. }))
        .unwrap();
    assert!(s12 < first_fill);
    assert_eq!(ev[s12 + 1], Event::DsbIsh);
    assert!(
        ev.contains(&Event::TlbiIpa {
            ipa: 0,
            level: None
        }),
        "{ev:?}"
    );
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, Event::TlbiIpa { level: Some(_), .. }))
            .count(),
        0
    );
    rec.assert_clean();
    assert_eq!(
        t.stats().table_pages,
        2,
        "both tables freed, the two root pages remain"
    );
}

#[test]
fn relaxing_permissions_needs_no_tlbi_but_restricting_does() {
    // (Adding execute permission invalidates the I-cache for the page first.)
    let (rec, phys) = recorded(64);
    let mut t = rec_table(&phys, &rec, 40);
    let mut c = MemCache::new();
    c.topup(&phys, &phys, 2).unwrap();
    t.map(
        &mut c,
        ipa(0x5000),
        pa(0x9000),
        K4,
        LeafAttrs::ram(S2Perms::R),
    )
    .unwrap();
    rec.clear_events();
    t.set_perms(&mut c, ipa(0x5000), K4, S2Perms::RWX).unwrap();
    let ev = without_stores(&rec.events());
    assert_eq!(
        ev,
        [
            Event::IcacheInval {
                pa: 0x9000,
                size: K4
            },
            Event::DsbIshst
        ]
    );
    assert_eq!(t.stats().relaxed, 1);
    rec.clear_events();
    t.set_perms(&mut c, ipa(0x5000), K4, S2Perms::RX).unwrap();
    let ev = without_stores(&rec.events());
    assert_eq!(
        ev,
        [
            Event::DsbIshst,
            Event::TlbiIpa {
                ipa: 0x5000,
                level: Some(3)
            },
            Event::DsbIsh,
            Event::TlbiVmallE1,
            Event::DsbIsh,
            Event::Isb,
        ]
    );
    assert_eq!(t.stats().restricted, 1);
    assert_eq!(t.stats().bbm, 0);
    rec.assert_clean();
}

// --- The recorder catches what it should (so the tests above can fail). ---

#[test]
fn recorder_flags_a_valid_to_valid_store_without_break_before_make() {
    let (rec, phys) = recorded(64);
    let mut t = rec_table(&phys, &rec, 40);
    let mut c = MemCache::new();
    c.topup(&phys, &phys, 2).unwrap();
    t.map(&mut c, ipa(0x5000), pa(0x9000), K4, RAM).unwrap();
    let (e, desc) = t.leaf_entry(ipa(0x5000)).unwrap();
    let moved = crate::mm::stage2::desc::leaf_like(desc, 0xa000, 3);
    phys.write_entry(e.table, e.index, moved);
    assert!(
        rec.violations()
            .iter()
            .any(|v| v.contains("break-before-make"))
    );
}

#[test]
fn recorder_flags_a_break_whose_invalidation_did_not_complete() {
    let (rec, phys) = recorded(64);
    let mut t = rec_table(&phys, &rec, 40);
    let mut c = MemCache::new();
    c.topup(&phys, &phys, 2).unwrap();
    t.map(&mut c, ipa(0x5000), pa(0x9000), K4, RAM).unwrap();
    let (e, desc) = t.leaf_entry(ipa(0x5000)).unwrap();
    phys.write_entry(e.table, e.index, 0);
    rec.dsb_ishst();
    rec.tlbi_ipas2e1is(t.vmid(), ipa(0x5000), Some(3));
    // No DSB ISH: the TLBI has not completed.
    phys.write_entry(
        e.table,
        e.index,
        crate::mm::stage2::desc::leaf_like(desc, 0xa000, 3),
    );
    assert!(
        rec.violations()
            .iter()
            .any(|v| v.contains("break-before-make"))
    );
}

#[test]
fn recorder_flags_a_wrong_level_hint_and_a_missing_vmalle1() {
    for (hint, vmalle1) in [(Some(2), true), (Some(3), false)] {
        let (rec, phys) = recorded(64);
        let mut t = rec_table(&phys, &rec, 40);
        let mut c = MemCache::new();
        c.topup(&phys, &phys, 2).unwrap();
        t.map(&mut c, ipa(0x5000), pa(0x9000), K4, RAM).unwrap();
        let (e, _) = t.leaf_entry(ipa(0x5000)).unwrap();
        phys.write_entry(e.table, e.index, 0);
        rec.dsb_ishst();
        rec.tlbi_ipas2e1is(t.vmid(), ipa(0x5000), hint);
        rec.dsb_ish();
        if vmalle1 {
            rec.tlbi_vmalle1is(t.vmid());
            rec.dsb_ish();
        }
        rec.check_coherent();
        assert!(
            rec.violations().iter().any(|v| v.contains("stale")),
            "hint {hint:?} vmalle1 {vmalle1}"
        );
    }
}

#[test]
fn recorder_flags_a_tlbi_before_the_store_was_published() {
    let (rec, phys) = recorded(64);
    let mut t = rec_table(&phys, &rec, 40);
    let mut c = MemCache::new();
    c.topup(&phys, &phys, 2).unwrap();
    t.map(&mut c, ipa(0x5000), pa(0x9000), K4, RAM).unwrap();
    let (e, _) = t.leaf_entry(ipa(0x5000)).unwrap();
    phys.write_entry(e.table, e.index, 0);
    rec.tlbi_ipas2e1is(t.vmid(), ipa(0x5000), Some(3));
    assert!(rec.violations().iter().any(|v| v.contains("made visible")));
}

#[test]
fn recorder_flags_a_table_page_freed_before_its_invalidation() {
    let (rec, phys) = recorded(64);
    let mut t = rec_table(&phys, &rec, 40);
    let mut c = MemCache::new();
    c.topup(&phys, &phys, 2).unwrap();
    t.map(&mut c, ipa(0x5000), pa(0x9000), K4, RAM).unwrap();
    // Unhook the level-2 table from the root and free it at once.
    let root = t.root();
    let d = load(&phys, root, 0);
    phys.write_entry(root, 0, 0);
    rec.dsb_ishst();
    let l2 = table_addr(d);
    let l3 = table_addr(load(&phys, l2, 0));
    phys.free_frames(l3, 0);
    assert!(
        rec.violations().iter().any(|v| v.contains("walk-cache")),
        "{:?}",
        rec.violations()
    );
}
