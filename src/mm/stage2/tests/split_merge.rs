//! Split, merge, dirty logging of devices, and out-of-memory at every allocation.
use super::*;
use crate::addr::{Ipa, PhysAddr};
use crate::mm::stage2::desc::{LeafAttrs, S2Perms};
use crate::mm::stage2::locked::LockedStage2;
use crate::mm::stage2::memcache::MemCache;
use crate::mm::stage2::testing::{FakePhys, NoopTlb};
use crate::mm::stage2::{DirtyLog, Stage2Error, Stage2Table};

const RAM: LeafAttrs = LeafAttrs::ram(S2Perms::RWX);

fn ipa(v: u64) -> Ipa {
    Ipa::new(v)
}
fn pa(v: u64) -> PhysAddr {
    PhysAddr::new(v)
}

fn levels<M: crate::mm::stage2::TableMemory, T: crate::mm::stage2::Stage2Tlb>(
    t: &Stage2Table<M, T>,
) -> [u64; 3] {
    t.stats().mapped
}

#[test]
fn split_breaks_blocks_down_without_changing_any_translation() {
    let (rec, phys) = recorded(1024);
    let mut t = rec_table(&phys, &rec, 40);
    let mut c = MemCache::new();
    t.map(&mut c, ipa(G1), pa(2 * G1), G1, RAM).unwrap();
    assert_eq!(
        t.split(&mut c, ipa(G1), G1, 2),
        Err(Stage2Error::CacheEmpty { needed: 1 })
    );
    c.topup(&phys, &phys, 1).unwrap();
    t.split(&mut c, ipa(G1), G1, 2).unwrap();
    assert_eq!(levels(&t), [0, 512, 0]);
    rec.assert_clean();
    // Now only the 2 MiB blocks that [G1 + 3 MiB, G1 + 7 MiB) touches (blocks 1, 2, 3).
    assert_eq!(
        t.split(&mut c, ipa(G1 + 3 * M2 / 2), 2 * M2, 3),
        Err(Stage2Error::CacheEmpty { needed: 3 })
    );
    c.topup(&phys, &phys, 3).unwrap();
    t.split(&mut c, ipa(G1 + 3 * M2 / 2), 2 * M2, 3).unwrap();
    assert_eq!(levels(&t), [3 * 512, 509, 0]);
    for at in [G1, G1 + M2 + 0x1234, G1 + 3 * M2 - 1, G1 + G1 - 1] {
        assert_eq!(t.translate(ipa(at)).unwrap().pa, pa(at + G1));
    }
    for (block, level) in [(0, 2), (1, 3), (2, 3), (3, 3), (4, 2)] {
        assert_eq!(t.translate(ipa(G1 + block * M2)).unwrap().level, level);
    }
    // Splitting where there is nothing to split takes no pages.
    t.split(&mut c, ipa(G1 + M2), M2, 3).unwrap();
    t.split(&mut c, ipa(5 * G1), G1, 3).unwrap();
    assert_eq!(t.stats().splits, 4);
    t.check_invariants().unwrap();
    rec.assert_clean();
}

#[test]
fn merge_rebuilds_a_block_from_contiguous_identical_pages() {
    let (rec, phys) = recorded(64);
    let mut t = rec_table(&phys, &rec, 40);
    let mut c = MemCache::new();
    c.topup(&phys, &phys, 2).unwrap();
    t.map(&mut c, ipa(G1 + M2), pa(3 * G1 + M2), M2, RAM)
        .unwrap();
    t.split(&mut c, ipa(G1 + M2), M2, 3).unwrap();
    assert_eq!(levels(&t), [512, 0, 0]);
    t.merge(&mut c, ipa(G1), G1).unwrap();
    assert_eq!(levels(&t), [0, 1, 0]);
    assert_eq!(
        t.translate(ipa(G1 + M2 + 0x42)).unwrap().pa,
        pa(3 * G1 + M2 + 0x42)
    );
    assert_eq!(t.stats().table_pages, 3);
    assert_eq!(
        t.stats().tlbi_vmalls12,
        1,
        "a table of live pages replaced by a block"
    );
    t.check_invariants().unwrap();
    rec.assert_clean();
}

#[test]
fn merge_rebuilds_blocks_bottom_up_from_contiguous_identical_leaves() {
    // Large: without the recording TLB.
    let phys = FakePhys::new(1024);
    let mut t = Stage2Table::new(geo(40), Vmid::new(1), false, &phys, NoopTlb, &phys).unwrap();
    let mut c = MemCache::new();
    c.topup(&phys, &phys, 1 + 512).unwrap();
    t.map(&mut c, ipa(G1), pa(3 * G1), G1, RAM).unwrap();
    t.split(&mut c, ipa(G1), G1, 3).unwrap();
    assert_eq!(levels(&t), [512 * 512, 0, 0]);
    assert_eq!(t.stats().table_pages, 2 + 1 + 512);
    t.merge(&mut c, ipa(G1), G1).unwrap();
    assert_eq!(levels(&t), [0, 0, 1]);
    assert_eq!(t.stats().table_pages, 2);
    assert_eq!(t.stats().merges, 513);
    assert_eq!(c.len(), 513, "freed tables are back in the cache");
    t.check_invariants().unwrap();
    t.destroy(&phys);
    c.drain(&phys, &phys);
    phys.check_clean().unwrap();
}

#[test]
fn merge_leaves_tables_whose_leaves_differ_or_are_outside_the_range() {
    let (rec, phys) = recorded(64);
    let mut t = rec_table(&phys, &rec, 40);
    let mut c = MemCache::new();
    c.topup(&phys, &phys, 8).unwrap();
    // Three 2 MiB ranges of pages: one with a hole in the PA run, one with a read-only page,
    // one clean.
    t.map(&mut c, ipa(0), pa(0x4000_0000), 3 * M2, RAM).unwrap();
    t.split(&mut c, ipa(0), 3 * M2, 3).unwrap();
    t.map(&mut c, ipa(0x5000), pa(0x9999_9000), K4, RAM)
        .unwrap();
    t.set_perms(&mut c, ipa(M2 + 0x7000), K4, S2Perms::RX)
        .unwrap();
    // A range that covers the clean table only partly merges nothing.
    t.merge(&mut c, ipa(2 * M2), M2 - K4).unwrap();
    assert_eq!(levels(&t), [3 * 512, 0, 0]);
    t.merge(&mut c, ipa(0), 3 * M2).unwrap();
    assert_eq!(levels(&t), [2 * 512, 1, 0]);
    assert_eq!(t.translate(ipa(2 * M2)).unwrap().level, 2);
    assert_eq!(t.translate(ipa(0x5000)).unwrap().pa, pa(0x9999_9000));
    assert!(!t.translate(ipa(M2 + 0x7000)).unwrap().attrs.perms.write);
    // A misaligned PA run never merges.
    t.map(&mut c, ipa(8 * M2), pa(0x5000_1000), M2, RAM)
        .unwrap();
    t.merge(&mut c, ipa(8 * M2), M2).unwrap();
    assert_eq!(t.translate(ipa(8 * M2)).unwrap().level, 3);
    t.check_invariants().unwrap();
    rec.assert_clean();
}

#[test]
fn dirty_logging_leaves_device_mappings_writable() {
    let (rec, phys) = recorded(64);
    let mut t = rec_table(&phys, &rec, 40);
    let mut c = MemCache::new();
    c.topup(&phys, &phys, 2).unwrap();
    t.map(&mut c, ipa(0), pa(0xfe00_0000), M2, LeafAttrs::device(true))
        .unwrap();
    t.map(&mut c, ipa(M2), pa(0x4020_0000), M2, RAM).unwrap();
    t.start_dirty_log(DirtyLog::new(ipa(0), 2 * M2).unwrap())
        .unwrap();
    assert!(t.translate(ipa(0)).unwrap().attrs.perms.write);
    assert!(!t.translate(ipa(M2)).unwrap().attrs.perms.write);
    t.stop_dirty_log(&mut c).unwrap();
    assert!(t.translate(ipa(M2)).unwrap().attrs.perms.write);
    rec.assert_clean();
}

#[test]
fn read_only_ram_is_not_made_writable_by_stopping_a_dirty_log() {
    let (rec, phys) = recorded(64);
    let mut t = rec_table(&phys, &rec, 40);
    let mut c = MemCache::new();
    c.topup(&phys, &phys, 2).unwrap();
    t.map(
        &mut c,
        ipa(M2),
        pa(0x4020_0000),
        M2,
        LeafAttrs::ram(S2Perms::RX),
    )
    .unwrap();
    t.start_dirty_log(DirtyLog::new(ipa(0), 4 * M2).unwrap())
        .unwrap();
    t.stop_dirty_log(&mut c).unwrap();
    assert_eq!(t.translate(ipa(M2)).unwrap().attrs.perms, S2Perms::RX);
    rec.assert_clean();
}

/// An allocator that fails at the n-th call, for every n up to the number of calls the
/// operation makes: either the whole mapping is there or none of it, and nothing leaks.
#[test]
fn allocation_failure_at_any_call_leaves_no_half_built_mapping() {
    let size = 3 * M2;
    let at = 0x7f_ffe0_0000u64; // straddles a level-1 boundary: two level-2 tables
    let run = |fail_at: Option<usize>| {
        let phys = FakePhys::new(256);
        let t = Stage2Table::new(geo(44), Vmid::new(1), false, &phys, NoopTlb, &phys).unwrap();
        let vm = LockedStage2::new(t);
        let mut c = MemCache::new();
        // A mapping already there must survive a failed attempt untouched.
        vm.with_retry(&mut c, &phys, 0, |t, c| {
            t.map(c, ipa(at - K4), pa(0x10_0000), K4, RAM)
        })
        .unwrap();
        c.drain(&phys, &phys);
        let before = leaves(&*vm.lock());
        let pages_before = vm.lock().stats().table_pages;
        if let Some(n) = fail_at {
            phys.fail_from_call(n);
        }
        let r = vm.with_retry(&mut c, &phys, 0, |t, c| {
            t.map(c, ipa(at), pa(0x2000_1000), size, RAM)
        });
        phys.stop_failing();
        let t = vm.into_inner();
        t.check_invariants().unwrap();
        match r {
            Ok(()) => assert_eq!(t.stats().mapped[0], 1 + size / K4),
            Err(e) => {
                assert_eq!(e, Stage2Error::NoMemory);
                assert_eq!(leaves(&t), before, "fail at {fail_at:?}");
                assert_eq!(t.stats().table_pages, pages_before);
            }
        }
        t.destroy(&phys);
        c.drain(&phys, &phys);
        phys.check_clean().unwrap();
        r
    };
    assert_eq!(run(None), Ok(()));
    let mut failures = 0;
    for n in 1..=12 {
        if run(Some(n)).is_err() {
            failures += 1;
        }
    }
    // The map needs five pages (a level-3 table under the existing level-2 table, then past
    // the 512 GiB boundary a level-1, a level-2 and two level-3 tables); failing any of the
    // five top-up calls fails it, failing a later (unmade) call does not.
    assert_eq!(failures, 5);
}

#[test]
fn stopping_a_log_unprotects_a_split_block_that_straddled_its_start() {
    use crate::mm::stage2::fault::{
        AccessKind, FaultOutcome, GuestMemoryMap, MemRegion, Stage2Fault,
    };
    use crate::mm::stage2::stats::FaultKind;
    let (rec, phys) = recorded(64);
    let mut t = rec_table(&phys, &rec, 40);
    let mut c = MemCache::new();
    c.topup(&phys, &phys, 2).unwrap();
    t.map(&mut c, ipa(0), pa(0x4000_0000), M2, RAM).unwrap();
    // The log starts in the middle of the 2 MiB block.
    t.start_dirty_log(DirtyLog::new(ipa(M2 / 2), M2).unwrap())
        .unwrap();
    assert!(
        t.translate(ipa(0)).unwrap().attrs.dirty_wp,
        "protected whole"
    );
    let mut m = GuestMemoryMap::new();
    m.add(MemRegion::ram(ipa(0), 4 * M2, pa(0x4000_0000)))
        .unwrap();
    c.topup(&phys, &phys, 1).unwrap();
    let f = Stage2Fault {
        ipa: ipa(M2 / 2 + K4),
        kind: FaultKind::Permission,
        level: 2,
        access: AccessKind::Write,
    };
    assert_eq!(
        t.handle_fault(&mut c, &m, &f),
        Ok(FaultOutcome::DirtyMarked { split: true })
    );
    assert!(!t.translate(ipa(0)).unwrap().attrs.perms.write);
    let log = t.stop_dirty_log(&mut c).unwrap();
    assert_eq!(
        log.dirty_pages().collect::<Vec<_>>(),
        vec![ipa(M2 / 2 + K4)]
    );
    let before_log = t.translate(ipa(0)).unwrap();
    assert!(before_log.attrs.perms.write && !before_log.attrs.dirty_wp);
    // All 512 pages agree again, but stop merges only tables wholly inside the log range.
    assert_eq!(
        before_log.level, 3,
        "the block straddles the log range, so it is not merged"
    );
    t.merge(&mut c, ipa(0), M2).unwrap();
    assert_eq!(t.translate(ipa(0)).unwrap().level, 2);
    rec.assert_clean();
}
