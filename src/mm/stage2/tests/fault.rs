//! Memory map, mapping-size decisions, the fault handler and the memory cache.
use super::recorder::Event;
use super::*;
use crate::addr::{Ipa, PhysAddr};
use crate::mm::frame::FrameAllocator;
use crate::mm::stage2::desc::{MemType, S2Perms};
use crate::mm::stage2::fault::{
    AccessKind, FaultOutcome, GuestMemoryMap, MappingDecision, MemRegion, RegionKind, Stage2Fault,
    decide_mapping,
};
use crate::mm::stage2::locked::LockedStage2;
use crate::mm::stage2::memcache::MemCache;
use crate::mm::stage2::stats::FaultKind;
use crate::mm::stage2::testing::{FakePhys, NoopTlb, POISON};
use crate::mm::stage2::{DirtyLog, Stage2Error, Stage2Table};

fn ipa(v: u64) -> Ipa {
    Ipa::new(v)
}
fn pa(v: u64) -> PhysAddr {
    PhysAddr::new(v)
}
fn ram(i: u64, size: u64, p: u64) -> MemRegion {
    MemRegion::ram(ipa(i), size, pa(p))
}
fn decision(i: u64, p: u64, size: u64, level: u8) -> MappingDecision {
    MappingDecision {
        ipa: ipa(i),
        pa: pa(p),
        size,
        level,
    }
}
fn fault(at: u64, kind: FaultKind, level: u8, access: AccessKind) -> Stage2Fault {
    Stage2Fault {
        ipa: ipa(at),
        kind,
        level,
        access,
    }
}
fn tfault(at: u64, access: AccessKind) -> Stage2Fault {
    fault(at, FaultKind::Translation, 3, access)
}

// --- Mapping-size decision table. ---

#[test]
fn mapping_size_decision_table() {
    let g40 = geo(40);
    let g34 = geo(34);
    let mut logged = ram(G1, 2 * G1, 4 * G1);
    logged.dirty_log = true;
    let mut dev_logged = MemRegion::device(ipa(0x0800_0000), 4 * M2, pa(0xfe00_0000));
    dev_logged.dirty_log = true; // not accepted by GuestMemoryMap; ignored by the decision
    #[rustfmt::skip]
    let cases: [(&str, u64, MemRegion, &Stage2Geometry, MappingDecision); 11] = [
        ("1 GiB: both aligned, block inside",
            G1 + 0x1234_5000, ram(G1, 2 * G1, 4 * G1), &g40, decision(G1, 4 * G1, G1, 1)),
        ("2 MiB: PA only 2 MiB aligned relative to IPA",
            G1 + 0x1234_5000, ram(G1, 2 * G1, 4 * G1 + M2), &g40, decision(G1 + 0x1220_0000, 4 * G1 + M2 + 0x1220_0000, M2, 2)),
        ("4 KiB: PA offset differs by a page",
            G1 + 0x1234_5000, ram(G1, 2 * G1, 4 * G1 + K4), &g40, decision(G1 + 0x1234_5000, 4 * G1 + K4 + 0x1234_5000, K4, 3)),
        ("unaligned IPA start: the 1 GiB block would start before the region",
            G1 + 3 * M2 + 0x10, ram(G1 + M2, G1, 4 * G1 + M2), &g40, decision(G1 + 3 * M2, 4 * G1 + 3 * M2, M2, 2)),
        ("region end: the 2 MiB block would cross it",
            G1 + M2 + 0x3000, ram(G1, M2 + 0x8000, 4 * G1), &g40, decision(G1 + M2 + 0x3000, 4 * G1 + M2 + 0x3000, K4, 3)),
        ("region start: last 2 MiB before the end fits",
            G1 + M2 - K4, ram(G1, M2 + 0x8000, 4 * G1), &g40, decision(G1, 4 * G1, M2, 2)),
        ("device range gets a 2 MiB device block",
            0x0800_0000 + 0x1_0000, MemRegion::device(ipa(0x0800_0000), 4 * M2, pa(0xfe00_0000)), &g40, decision(0x0800_0000, 0xfe00_0000, M2, 2)),
        ("small device range: pages",
            0x0900_0000, MemRegion::device(ipa(0x0900_0000), K4, pa(0xfe20_1000)), &g40, decision(0x0900_0000, 0xfe20_1000, K4, 3)),
        ("dirty logging forces 4 KiB for RAM",
            G1 + 0x1234_5678, logged, &g40, decision(G1 + 0x1234_5000, 4 * G1 + 0x1234_5000, K4, 3)),
        ("dirty logging never affects devices",
            0x0800_0000, dev_logged, &g40, decision(0x0800_0000, 0xfe00_0000, M2, 2)),
        ("start level 2: no 1 GiB blocks",
            G1 + 0x1234_5000, ram(G1, 2 * G1, 4 * G1), &g34, decision(G1 + 0x1220_0000, 4 * G1 + 0x1220_0000, M2, 2)),
    ];
    for (name, at, region, g, want) in cases {
        assert_eq!(decide_mapping(ipa(at), &region, g), want, "{name}");
    }
}

// --- The memory map. ---

#[test]
fn memory_map_rejects_overlaps_and_bad_regions_and_looks_up_by_ipa() {
    let mut m = GuestMemoryMap::new();
    m.add(ram(0x4000_0000, 0x1000_0000, 0x8000_0000)).unwrap();
    m.add(MemRegion::device(ipa(0x0900_0000), 0x1000, pa(0xfe20_1000)))
        .unwrap();
    m.add(ram(0x5000_0000, 0x1000, 0x9000_0000)).unwrap();
    assert_eq!(
        m.add(ram(0x4fff_f000, 0x2000, 0)),
        Err(Stage2Error::RegionOverlap)
    );
    assert_eq!(
        m.add(ram(0x08ff_f000, 0x2000, 0)),
        Err(Stage2Error::RegionOverlap)
    );
    assert_eq!(
        m.add(ram(0x100, 0x1000, 0)),
        Err(Stage2Error::InvalidRegion)
    );
    assert_eq!(m.add(ram(0x1000, 0, 0)), Err(Stage2Error::InvalidRegion));
    assert_eq!(
        m.add(ram(0x1000, 0x1000, 0x10)),
        Err(Stage2Error::InvalidRegion)
    );
    assert_eq!(
        m.add(ram(!0xfff, 0x2000, 0)),
        Err(Stage2Error::InvalidRegion)
    );
    let mut dev = MemRegion::device(ipa(0x1000), 0x1000, pa(0));
    dev.dirty_log = true;
    assert_eq!(m.add(dev), Err(Stage2Error::InvalidRegion));
    assert_eq!(m.regions().len(), 3);
    assert_eq!(m.lookup(ipa(0x0900_0fff)).unwrap().kind, RegionKind::Device);
    assert!(m.lookup(ipa(0x0900_1000)).is_none());
    assert!(m.lookup(ipa(0x3fff_ffff)).is_none());
    assert_eq!(m.lookup(ipa(0x4000_0000)).unwrap().pa, pa(0x8000_0000));
    assert_eq!(m.lookup(ipa(0x4fff_ffff)).unwrap().pa, pa(0x8000_0000));
    assert_eq!(m.lookup(ipa(0x5000_0000)).unwrap().pa, pa(0x9000_0000));
    assert!(m.lookup(ipa(0)).is_none());
    assert_eq!(
        m.set_dirty_log(ipa(0x0900_0000), true),
        Err(Stage2Error::InvalidRegion)
    );
    assert_eq!(
        m.set_dirty_log(ipa(0x1234_0000), true),
        Err(Stage2Error::NoSuchRegion)
    );
    m.set_dirty_log(ipa(0x4000_0000), true).unwrap();
    assert!(m.lookup(ipa(0x4000_0000)).unwrap().logs_dirty());
    assert!(m.remove(ipa(0x5000_0000)).is_some());
    assert!(m.lookup(ipa(0x5000_0000)).is_none());
}

// --- The fault handler. ---

fn vm_map() -> GuestMemoryMap {
    let mut m = GuestMemoryMap::new();
    m.add(ram(G1, G1, 3 * G1)).unwrap(); // 1 GiB blocks possible
    m.add(ram(2 * G1, 4 * M2, 5 * G1 + K4)).unwrap(); // pages only
    let mut rom = ram(2 * G1 + 8 * M2, M2, 6 * G1);
    rom.writable = false;
    m.add(rom).unwrap();
    m.add(MemRegion::device(ipa(0x0800_0000), 2 * M2, pa(0xfe00_0000)))
        .unwrap();
    m
}

#[test]
fn translation_faults_map_what_the_decision_says_and_a_repeat_is_already_mapped() {
    let (rec, phys) = recorded(256);
    let mut t = rec_table(&phys, &rec, 40);
    let m = vm_map();
    let mut c = MemCache::new();
    c.topup(&phys, &phys, 2).unwrap();
    let r = t.handle_fault(&mut c, &m, &tfault(G1 + 0x777, AccessKind::Read));
    assert_eq!(
        r,
        Ok(FaultOutcome::Mapped {
            ipa: ipa(G1),
            size: G1,
            level: 1
        })
    );
    assert_eq!(t.translate(ipa(G1 + 0x777)).unwrap().pa, pa(3 * G1 + 0x777));
    let r = t.handle_fault(&mut c, &m, &tfault(G1 + 0x5000, AccessKind::Write));
    assert_eq!(r, Ok(FaultOutcome::AlreadyMapped));
    assert_eq!(t.stats().spurious_faults, 1);

    let r = t.handle_fault(&mut c, &m, &tfault(2 * G1 + M2 + 0x10, AccessKind::Exec));
    assert_eq!(
        r,
        Ok(FaultOutcome::Mapped {
            ipa: ipa(2 * G1 + M2),
            size: K4,
            level: 3
        })
    );
    let tr = t.translate(ipa(2 * G1 + M2)).unwrap();
    assert_eq!(tr.pa, pa(5 * G1 + K4 + M2));
    assert_eq!(tr.attrs.perms, S2Perms::RWX);

    c.topup(&phys, &phys, 2).unwrap();
    let r = t.handle_fault(&mut c, &m, &tfault(0x0800_0000 + 0x40, AccessKind::Write));
    assert_eq!(
        r,
        Ok(FaultOutcome::Mapped {
            ipa: ipa(0x0800_0000),
            size: M2,
            level: 2
        })
    );
    let tr = t.translate(ipa(0x0800_0040)).unwrap();
    assert_eq!(tr.attrs.mem, MemType::Device);
    assert_eq!(tr.attrs.perms, S2Perms::RW);

    // The read-only region maps read-only.
    let r = t.handle_fault(&mut c, &m, &tfault(2 * G1 + 8 * M2, AccessKind::Read));
    assert!(matches!(r, Ok(FaultOutcome::Mapped { level: 2, .. })));
    assert_eq!(
        t.translate(ipa(2 * G1 + 8 * M2)).unwrap().attrs.perms,
        S2Perms::RX
    );
    assert_eq!(t.stats().faults[FaultKind::Translation as usize][3], 5);
    t.check_invariants().unwrap();
    rec.assert_clean();
}

#[test]
fn faults_outside_regions_or_forbidden_by_them_change_nothing() {
    let (rec, phys) = recorded(64);
    let mut t = rec_table(&phys, &rec, 40);
    let m = vm_map();
    let mut c = MemCache::new();
    c.topup(&phys, &phys, 2).unwrap();
    rec.clear_events();
    let cases = [
        (
            tfault(0x0900_0000, AccessKind::Read),
            FaultOutcome::NotInRegion,
        ),
        (
            tfault(0xff_ffff_f000, AccessKind::Read),
            FaultOutcome::NotInRegion,
        ),
        (tfault(1 << 41, AccessKind::Read), FaultOutcome::NotInRegion),
        (
            tfault(2 * G1 + 8 * M2, AccessKind::Write),
            FaultOutcome::AccessDenied,
        ),
        (
            tfault(0x0800_0000, AccessKind::Exec),
            FaultOutcome::AccessDenied,
        ),
    ];
    for (f, want) in cases {
        assert_eq!(t.handle_fault(&mut c, &m, &f), Ok(want), "{f:?}");
    }
    assert!(rec.events().is_empty());
    assert_eq!(t.stats().faults_of(FaultKind::Translation), 5);
}

/// The stolen-time records' page: the guest reads it as Normal memory, never writes or
/// executes it, and a running dirty log over its IPA does not touch it.
#[test]
fn hypervisor_data_maps_normal_read_only_execute_never_and_is_never_dirty_logged() {
    let (rec, phys) = recorded(64);
    let mut t = rec_table(&phys, &rec, 40);
    let mut m = vm_map();
    let page = 0x090a_0000;
    m.add(MemRegion::hypervisor_data(ipa(page), K4, pa(0x7000_0000)))
        .unwrap();
    // A writable or dirty-logged one is refused.
    let mut w = MemRegion::hypervisor_data(ipa(0x090b_0000), K4, pa(0x7000_1000));
    w.writable = true;
    assert_eq!(m.add(w), Err(Stage2Error::InvalidRegion));
    let mut d = MemRegion::hypervisor_data(ipa(0x090b_0000), K4, pa(0x7000_1000));
    d.dirty_log = true;
    assert_eq!(m.add(d), Err(Stage2Error::InvalidRegion));
    let mut c = MemCache::new();
    c.topup(&phys, &phys, 4).unwrap();
    t.start_dirty_log(DirtyLog::new(ipa(0), 4 * G1).unwrap())
        .unwrap();
    for access in [AccessKind::Write, AccessKind::Exec] {
        assert_eq!(
            t.handle_fault(&mut c, &m, &tfault(page + 8, access)),
            Ok(FaultOutcome::AccessDenied),
            "{access:?}"
        );
    }
    assert_eq!(
        t.handle_fault(&mut c, &m, &tfault(page + 8, AccessKind::Read)),
        Ok(FaultOutcome::Mapped {
            ipa: ipa(page),
            size: K4,
            level: 3
        })
    );
    let tr = t.translate(ipa(page + 8)).unwrap();
    assert_eq!(tr.pa, pa(0x7000_0008));
    assert_eq!(tr.attrs.mem, MemType::Normal);
    assert_eq!(tr.attrs.perms, S2Perms::new(true, false, false));
    assert!(!tr.attrs.dirty_wp);
    // Once mapped, a write is still refused, and nothing was marked dirty.
    assert_eq!(
        t.handle_fault(
            &mut c,
            &m,
            &fault(page, FaultKind::Permission, 3, AccessKind::Write)
        ),
        Ok(FaultOutcome::AccessDenied)
    );
    assert_eq!(t.stats().dirty_marked, 0);
    // Not guest RAM: no region a device could copy into.
    let phys = crate::virtio::testing::FakePhys::new(pa(0x7000_0000), 0x1000);
    let ram = crate::virtio::mem::GuestRam::from_map(&m, phys)
        .regions()
        .to_vec();
    assert!(crate::virtio::mem::ram_piece(&ram, ipa(page), 8).is_err());
}

#[test]
fn an_exec_permission_fault_relaxes_in_place_without_bbm_and_invalidates_only_locally() {
    let (rec, phys) = recorded(64);
    let mut t = rec_table(&phys, &rec, 40);
    let m = vm_map();
    let mut c = MemCache::new();
    c.topup(&phys, &phys, 2).unwrap();
    t.handle_fault(&mut c, &m, &tfault(2 * G1, AccessKind::Read))
        .unwrap();
    t.set_perms(&mut c, ipa(2 * G1), K4, S2Perms::RW).unwrap();
    rec.clear_events();
    let f = fault(2 * G1, FaultKind::Permission, 3, AccessKind::Exec);
    assert_eq!(
        t.handle_fault(&mut c, &m, &f),
        Ok(FaultOutcome::PermissionRelaxed { level: 3 })
    );
    assert_eq!(t.translate(ipa(2 * G1)).unwrap().attrs.perms, S2Perms::RWX);
    // I-cache maintenance for the page turning executable, the store, published; then the
    // faulting IPA leaves this PE's TLB (see `vcpu_tlb.rs`).
    let ev = rec.events();
    assert!(
        matches!(
            ev[..],
            [
                Event::IcacheInval { size: K4, .. },
                Event::Store { .. },
                Event::DsbIshst,
                ..
            ]
        ),
        "{ev:?}"
    );
    assert_eq!(
        ev[3..],
        [
            Event::TlbiIpaLocal {
                ipa: 2 * G1,
                level: Some(3)
            },
            Event::DsbNsh,
            Event::TlbiVmallE1Local,
            Event::DsbNsh,
            Event::Isb
        ]
    );
    assert_eq!(t.stats().bbm, 0);
    assert_eq!(t.stats().tlbi_local, 1);
    assert_eq!(t.stats().perm_fault_relaxed, 1);
    assert_eq!(t.stats().faults[FaultKind::Permission as usize][3], 1);
    rec.assert_clean();
}

#[test]
fn dirty_logging_splits_a_written_block_marks_one_page_and_stop_merges_back() {
    let (rec, phys) = recorded(256);
    let mut t = rec_table(&phys, &rec, 40);
    let m = vm_map();
    let mut c = MemCache::new();
    t.handle_fault(&mut c, &m, &tfault(G1, AccessKind::Read))
        .unwrap();
    assert_eq!(t.stats().table_pages, 2);
    t.start_dirty_log(DirtyLog::new(ipa(G1), G1).unwrap())
        .unwrap();
    assert_eq!(
        t.start_dirty_log(DirtyLog::new(ipa(G1), G1).unwrap()),
        Err(Stage2Error::DirtyLogActive)
    );
    let tr = t.translate(ipa(G1)).unwrap();
    assert!(!tr.attrs.perms.write && tr.attrs.dirty_wp && tr.level == 1);
    rec.assert_clean();

    // Reads still work without a fault.
    assert_eq!(
        t.handle_fault(&mut c, &m, &tfault(G1 + 0x10, AccessKind::Read)),
        Ok(FaultOutcome::AlreadyMapped)
    );
    // A write needs two tables (1 GiB -> 2 MiB -> 4 KiB).
    let w = fault(
        G1 + 3 * M2 + 5 * K4 + 8,
        FaultKind::Permission,
        1,
        AccessKind::Write,
    );
    assert_eq!(
        t.handle_fault(&mut c, &m, &w),
        Err(Stage2Error::CacheEmpty { needed: 2 })
    );
    assert_eq!(t.translate(ipa(G1)).unwrap().level, 1, "nothing changed");
    c.topup(&phys, &phys, 2).unwrap();
    assert_eq!(
        t.handle_fault(&mut c, &m, &w),
        Ok(FaultOutcome::DirtyMarked { split: true })
    );
    rec.assert_clean();
    let page = G1 + 3 * M2 + 5 * K4;
    let tr = t.translate(ipa(page)).unwrap();
    assert!(tr.level == 3 && tr.attrs.perms.write && !tr.attrs.dirty_wp);
    assert_eq!(tr.pa, pa(3 * G1 + 3 * M2 + 5 * K4));
    for other in [page - K4, page + K4, G1, G1 + 5 * M2] {
        let o = t.translate(ipa(other)).unwrap();
        assert!(!o.attrs.perms.write && o.attrs.dirty_wp, "{other:#x}");
        assert_eq!(o.pa, pa(other - G1 + 3 * G1));
    }
    assert_eq!(t.stats().table_pages, 4);
    // A second write in the same 2 MiB needs no split.
    let w2 = fault(page + K4, FaultKind::Permission, 3, AccessKind::Write);
    assert_eq!(
        t.handle_fault(&mut c, &m, &w2),
        Ok(FaultOutcome::DirtyMarked { split: false })
    );
    let log = t.dirty_log().unwrap();
    assert_eq!(
        log.dirty_pages().collect::<Vec<_>>(),
        vec![ipa(page), ipa(page + K4)]
    );
    assert_eq!(t.stats().dirty_marked, 2);

    // Harvest re-protects the dirty pages.
    let mut seen = Vec::new();
    t.harvest_dirty(&mut |p| seen.push(p)).unwrap();
    assert_eq!(seen, vec![ipa(page), ipa(page + K4)]);
    assert_eq!(t.dirty_log().unwrap().dirty_count(), 0);
    assert!(!t.translate(ipa(page)).unwrap().attrs.perms.write);
    rec.assert_clean();
    assert_eq!(
        t.handle_fault(&mut c, &m, &w2),
        Ok(FaultOutcome::DirtyMarked { split: false })
    );

    // Stop: everything writable again and merged back into one 1 GiB block.
    let log = t.stop_dirty_log(&mut c).unwrap();
    assert_eq!(log.dirty_count(), 1);
    let tr = t.translate(ipa(page)).unwrap();
    assert_eq!(
        (tr.level, tr.attrs.perms, tr.attrs.dirty_wp),
        (1, S2Perms::RWX, false)
    );
    assert_eq!(t.stats().table_pages, 2);
    assert_eq!(t.stats().merges, 2);
    assert_eq!(c.len(), 2, "the two split tables came back to the cache");
    assert_eq!(t.stop_dirty_log(&mut c), Err(Stage2Error::DirtyLogInactive));
    t.check_invariants().unwrap();
    rec.assert_clean();
}

#[test]
fn faults_in_a_dirty_logged_region_map_pages_writable_only_on_write() {
    let (rec, phys) = recorded(256);
    let mut t = rec_table(&phys, &rec, 40);
    let mut m = vm_map();
    m.set_dirty_log(ipa(G1), true).unwrap();
    t.start_dirty_log(DirtyLog::new(ipa(G1), G1).unwrap())
        .unwrap();
    let mut c = MemCache::new();
    c.topup(&phys, &phys, 2).unwrap();
    assert_eq!(
        t.handle_fault(&mut c, &m, &tfault(G1 + 0x5010, AccessKind::Read)),
        Ok(FaultOutcome::Mapped {
            ipa: ipa(G1 + 0x5000),
            size: K4,
            level: 3
        })
    );
    let tr = t.translate(ipa(G1 + 0x5000)).unwrap();
    assert!(!tr.attrs.perms.write && tr.attrs.dirty_wp);
    assert_eq!(
        t.handle_fault(&mut c, &m, &tfault(G1 + 0x6000, AccessKind::Write)),
        Ok(FaultOutcome::Mapped {
            ipa: ipa(G1 + 0x6000),
            size: K4,
            level: 3
        })
    );
    assert!(t.translate(ipa(G1 + 0x6000)).unwrap().attrs.perms.write);
    assert!(t.dirty_log().unwrap().is_dirty(ipa(G1 + 0x6000)));
    assert!(!t.dirty_log().unwrap().is_dirty(ipa(G1 + 0x5000)));
    // Devices are not affected by dirty logging.
    c.topup(&phys, &phys, 2).unwrap();
    assert!(matches!(
        t.handle_fault(&mut c, &m, &tfault(0x0800_0000, AccessKind::Write)),
        Ok(FaultOutcome::Mapped { size: M2, .. })
    ));
    rec.assert_clean();
}

#[test]
fn an_access_flag_fault_sets_af_in_place() {
    let (rec, phys) = recorded(64);
    let mut t = rec_table(&phys, &rec, 40);
    let m = vm_map();
    let mut c = MemCache::new();
    t.handle_fault(&mut c, &m, &tfault(G1, AccessKind::Read))
        .unwrap();
    // Age the entry: clear AF (a restriction, invalidated).
    let (e, d) = t.leaf_entry(ipa(G1)).unwrap();
    {
        let mut stats = crate::mm::stage2::Stage2Stats {
            mapped: [0, 0, 1],
            ..Default::default()
        };
        let mut w = crate::mm::stage2::table::Writer::new(&phys, &*rec, t.vmid(), &mut stats);
        w.set_entry(&e, d & !(1 << 10), crate::mm::stage2::table::Inval::Now);
        w.finish();
    }
    rec.assert_clean();
    let f = fault(G1 + 0x100, FaultKind::AccessFlag, 1, AccessKind::Read);
    assert_eq!(
        t.handle_fault(&mut c, &m, &f),
        Ok(FaultOutcome::AccessFlagSet)
    );
    assert_eq!(t.leaf_entry(ipa(G1)).unwrap().1, d);
    assert_eq!(t.stats().faults[FaultKind::AccessFlag as usize][1], 1);
    rec.assert_clean();
}

// --- The memory cache and the top-up/retry loop. ---

#[test]
fn topup_fills_with_zeroed_pages_and_drain_returns_them_all() {
    let phys = FakePhys::new(32);
    let mut c = MemCache::new();
    c.topup(&phys, &phys, 5).unwrap();
    assert_eq!(c.len(), 5);
    assert_eq!(phys.outstanding_pages(), 5);
    c.topup(&phys, &phys, 3).unwrap();
    assert_eq!(c.len(), 5, "already enough");
    let p = c.pop(&phys).unwrap();
    assert!(
        phys.page(p)
            .iter()
            .all(|e| e.load(std::sync::atomic::Ordering::Relaxed) == 0),
        "a popped page is all zero (fresh pages are poisoned with {POISON:#x})"
    );
    phys.free_frames(p, 0);
    c.trim(&phys, &phys, 2);
    assert_eq!(c.len(), 2);
    c.drain(&phys, &phys);
    assert!(c.is_empty());
    phys.check_clean().unwrap();
}

#[test]
fn topup_failure_keeps_what_it_got_and_reports_no_memory() {
    let phys = FakePhys::new(32);
    let mut c = MemCache::new();
    phys.fail_from_call(3);
    assert_eq!(c.topup(&phys, &phys, 5), Err(Stage2Error::NoMemory));
    assert_eq!(c.len(), 2);
    phys.stop_failing();
    c.drain(&phys, &phys);
    phys.check_clean().unwrap();
}

#[test]
fn the_locked_fault_path_tops_up_outside_the_lock_and_retries_after_cache_empty() {
    let phys = FakePhys::new(256);
    let t = Stage2Table::new(geo(44), Vmid::new(4), false, &phys, NoopTlb, &phys).unwrap();
    let vm = LockedStage2::new(t);
    let mut m = GuestMemoryMap::new();
    m.add(ram(0x80_0000_0000, G1, 0x1_0000_0000)).unwrap();
    m.add(ram(0xa0_0000_0000, M2, 0x3000_0000)).unwrap();
    let mut c = MemCache::new();
    // The cache is topped up to the worst case for start level 0 (three pages); a 1 GiB block
    // needs only the level-1 table.
    let r = vm.handle_fault(&mut c, &phys, &m, &tfault(0x80_0000_0000, AccessKind::Read));
    assert_eq!(
        r,
        Ok(FaultOutcome::Mapped {
            ipa: ipa(0x80_0000_0000),
            size: G1,
            level: 1
        })
    );
    assert_eq!(
        c.len(),
        2,
        "one level-1 table used, two left for the next fault"
    );
    // Start logging and write: the split needs two pages; the cache has them.
    vm.lock()
        .start_dirty_log(DirtyLog::new(ipa(0x80_0000_0000), G1).unwrap())
        .unwrap();
    c.drain(&phys, &phys);
    // With an empty cache the locked path tops up first (3 pages) and succeeds at once.
    let w = fault(0x80_0000_1000, FaultKind::Permission, 1, AccessKind::Write);
    assert_eq!(
        vm.handle_fault(&mut c, &phys, &m, &w),
        Ok(FaultOutcome::DirtyMarked { split: true })
    );
    assert_eq!(vm.lock().stats().cache_retries, 0);
    // A large map through with_retry: the first attempt reports its need, the second succeeds.
    let need = vm.with_retry(&mut c, &phys, 0, |t, c| {
        t.map(
            c,
            ipa(0x90_0000_0000),
            pa(0x2000_1000),
            4 * M2,
            LeafAttrs::ram(S2Perms::RW),
        )
    });
    assert_eq!(need, Ok(()));
    assert_eq!(vm.lock().stats().cache_retries, 1);
    assert_eq!(vm.lock().stats().mapped[0], 512 * 5);
    // Allocator failure: NoMemory, nothing half-built.
    c.drain(&phys, &phys);
    phys.fail_from_call(1);
    let before = vm.lock().stats().table_pages;
    let r = vm.handle_fault(&mut c, &phys, &m, &tfault(0xa0_0000_0000, AccessKind::Read));
    assert_eq!(r, Err(Stage2Error::NoMemory));
    assert_eq!(vm.lock().stats().table_pages, before);
    phys.stop_failing();
    let t = vm.into_inner();
    t.check_invariants().unwrap();
    t.destroy(&phys);
    c.drain(&phys, &phys);
    phys.check_clean().unwrap();
}

use crate::mm::stage2::desc::LeafAttrs;
use crate::mm::stage2::geometry::Stage2Geometry;

#[test]
fn the_access_of_an_abort_follows_wnr_except_on_a_stage1_walk() {
    use FaultKind::{AccessFlag, Permission, Translation};
    let of = AccessKind::of_abort;
    for kind in [Translation, AccessFlag, Permission] {
        assert_eq!(of(false, false, false, kind), AccessKind::Read);
        assert_eq!(of(false, true, false, kind), AccessKind::Write);
        assert_eq!(of(true, false, false, kind), AccessKind::Exec);
        // On the guest's stage-1 walk (data or instruction side, WnR ignored): a permission
        // fault is a hardware descriptor update, a write; anything else a read of the table.
        let walk = if kind == Permission {
            AccessKind::Write
        } else {
            AccessKind::Read
        };
        for (instruction, wnr) in [(false, false), (false, true), (true, false)] {
            assert_eq!(of(instruction, wnr, true, kind), walk, "{kind:?}");
        }
    }
}

#[test]
fn ram_becomes_executable_only_after_its_icache_lines_are_invalidated() {
    // A RAM fault installs an executable leaf: the I-cache for the leaf's whole output range
    // is invalidated before the leaf is stored. Devices are never executable; a dirty-log
    // split keeps addresses and execute permission and needs nothing.
    let (rec, phys) = recorded(64);
    let mut t = rec_table(&phys, &rec, 40);
    let m = vm_map();
    let mut c = MemCache::new();
    c.topup(&phys, &phys, 4).unwrap();
    rec.clear_events();
    t.handle_fault(&mut c, &m, &tfault(G1 + 0x777, AccessKind::Read))
        .unwrap();
    let ev = rec.events();
    let sync = ev
        .iter()
        .position(|e| {
            *e == Event::IcacheInval {
                pa: 3 * G1,
                size: G1,
            }
        })
        .expect("I-cache invalidation of the 1 GiB block");
    let store = ev
        .iter()
        .position(|e| matches!(e, Event::Store { new, .. } if *new & 1 == 1))
        .unwrap();
    assert!(sync < store, "{ev:?}");
    assert_eq!(t.stats().icache_syncs, 1);

    rec.clear_events();
    t.handle_fault(&mut c, &m, &tfault(0x0800_0040, AccessKind::Read))
        .unwrap();
    assert!(
        !rec.events()
            .iter()
            .any(|e| matches!(e, Event::IcacheInval { .. })),
        "device mappings are execute-never"
    );

    t.start_dirty_log(DirtyLog::new(ipa(G1), G1).unwrap())
        .unwrap();
    rec.clear_events();
    let w = fault(G1 + 0x5000, FaultKind::Permission, 1, AccessKind::Write);
    assert_eq!(
        t.handle_fault(&mut c, &m, &w),
        Ok(FaultOutcome::DirtyMarked { split: true })
    );
    assert!(
        !rec.events()
            .iter()
            .any(|e| matches!(e, Event::IcacheInval { .. })),
        "a split changes no executable range"
    );
    assert_eq!(t.stats().icache_syncs, 1);
    rec.assert_clean();
}
