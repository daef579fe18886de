//! Several vCPU threads faulting on overlapping ranges of one shared table.
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use super::*;
use crate::addr::{Ipa, PAGE_SIZE, PhysAddr};
use crate::mm::stage2::desc::MemType;
use crate::mm::stage2::fault::{
    AccessKind, FaultOutcome, GuestMemoryMap, MemRegion, RegionKind, Stage2Fault,
};
use crate::mm::stage2::locked::LockedStage2;
use crate::mm::stage2::memcache::MemCache;
use crate::mm::stage2::stats::FaultKind;
use crate::mm::stage2::testing::{CountingTlb, FakePhys};
use crate::mm::stage2::{DirtyLog, Stage2Table};

const THREADS: u64 = 4;
const FAULTS_PER_THREAD: usize = 2500;

fn regions() -> GuestMemoryMap {
    let mut m = GuestMemoryMap::new();
    // 8 MiB with a PA that is only page aligned relative to the IPA: 4 KiB pages.
    m.add(MemRegion::ram(
        Ipa::new(0x4000_0000),
        8 << 20,
        PhysAddr::new(0x1_0000_1000),
    ))
    .unwrap();
    // 32 MiB, 2 MiB aligned: 2 MiB blocks.
    m.add(MemRegion::ram(
        Ipa::new(0x8000_0000),
        32 << 20,
        PhysAddr::new(0x2_0000_0000),
    ))
    .unwrap();
    // 1 GiB, aligned: one block.
    m.add(MemRegion::ram(
        Ipa::new(4 * G1),
        G1,
        PhysAddr::new(0x3_0000_0000),
    ))
    .unwrap();
    // A small device range.
    m.add(MemRegion::device(
        Ipa::new(0x0900_0000),
        64 << 10,
        PhysAddr::new(0xfe20_0000),
    ))
    .unwrap();
    m
}

/// xorshift64*: a small deterministic generator per thread.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// A random IPA inside one of the regions (overlapping between threads on purpose).
fn pick(rng: &mut Rng, m: &GuestMemoryMap, narrow: bool) -> (Ipa, AccessKind) {
    let rs = m.regions();
    let r = &rs[(rng.next() % rs.len() as u64) as usize];
    // Concentrate on few pages so that threads collide often.
    let span = if narrow {
        r.size.min(64 * PAGE_SIZE)
    } else {
        r.size
    };
    let off = (rng.next() % span) & !7;
    let access = match rng.next() % 3 {
        0 => AccessKind::Read,
        1 => AccessKind::Write,
        _ if r.kind == RegionKind::Ram => AccessKind::Exec,
        _ => AccessKind::Read,
    };
    (r.ipa + off, access)
}

#[test]
fn vcpus_faulting_concurrently_leave_a_consistent_table_and_no_leak() {
    let phys = FakePhys::new(4096);
    let tlb = CountingTlb::default();
    let table = Stage2Table::new(geo(40), Vmid::new(5), false, &phys, &tlb, &phys).unwrap();
    let vm = LockedStage2::new(table);
    let mut m = regions();

    // Phase 1: translation faults everywhere.
    let results: Vec<(BTreeSet<u64>, usize, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|id| {
                let (vm, m, phys) = (&vm, &m, &phys);
                s.spawn(move || {
                    let mut cache = MemCache::new();
                    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((id + 1) * 0x1234_5678));
                    let mut touched = BTreeSet::new();
                    let (mut mapped, mut already) = (0, 0);
                    for i in 0..FAULTS_PER_THREAD {
                        let (ipa, access) = pick(&mut rng, m, i % 2 == 0);
                        let f = Stage2Fault {
                            ipa,
                            kind: FaultKind::Translation,
                            level: 3,
                            access,
                        };
                        match vm.handle_fault(&mut cache, phys, m, &f).unwrap() {
                            FaultOutcome::Mapped { .. } => mapped += 1,
                            FaultOutcome::AlreadyMapped => already += 1,
                            other => panic!("unexpected {other:?} for {f:?}"),
                        }
                        touched.insert(ipa.as_u64());
                    }
                    cache.drain(phys, phys);
                    (touched, mapped, already)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let t = vm.lock();
    let mut all = BTreeSet::new();
    let mut mapped_outcomes = 0;
    for (touched, mapped, already) in &results {
        assert_eq!(mapped + already, FAULTS_PER_THREAD);
        mapped_outcomes += mapped;
        all.extend(touched.iter().copied());
    }
    for &at in &all {
        let r = m.lookup(Ipa::new(at)).unwrap();
        let tr = t.translate(Ipa::new(at)).expect("faulted IPA is mapped");
        assert_eq!(tr.pa, r.pa_of(Ipa::new(at)), "{at:#x}");
        assert_eq!(
            tr.attrs.mem,
            match r.kind {
                RegionKind::Ram | RegionKind::HypervisorData => MemType::Normal,
                RegionKind::Device => MemType::Device,
            }
        );
    }
    // Each leaf was installed exactly once, by the one thread whose fault came first.
    let installed: u64 = t.stats().installed.iter().sum();
    let live: u64 = t.stats().mapped.iter().sum();
    assert_eq!(installed as usize, mapped_outcomes);
    assert_eq!(installed, live);
    assert_eq!(t.stats().mapped[2], 1, "the aligned gigabyte is one block");
    assert!(t.stats().mapped[1] >= 1 && t.stats().mapped[1] <= 16);
    assert_eq!(t.stats().bbm, 0, "no fault ever replaced a valid entry");
    t.check_invariants().unwrap();
    drop(t);

    // Phase 2: dirty logging on the 1 GiB block and the 2 MiB region, concurrent writes.
    {
        let mut t = vm.lock();
        t.start_dirty_log(DirtyLog::new(Ipa::new(0x8000_0000), 4 * G1 - 0x8000_0000 + G1).unwrap())
            .unwrap();
    }
    m.set_dirty_log(Ipa::new(0x8000_0000), true).unwrap();
    m.set_dirty_log(Ipa::new(4 * G1), true).unwrap();
    let written: Vec<BTreeSet<u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|id| {
                let (vm, m, phys) = (&vm, &m, &phys);
                s.spawn(move || {
                    let mut cache = MemCache::new();
                    let mut rng = Rng(0x51ed_270b ^ ((id + 7) * 0x9876_5431));
                    let mut written = BTreeSet::new();
                    for _ in 0..FAULTS_PER_THREAD / 2 {
                        let base = if rng.next().is_multiple_of(2) {
                            0x8000_0000
                        } else {
                            4 * G1
                        };
                        let ipa = Ipa::new(base + ((rng.next() % (4 << 20)) & !7));
                        let f = Stage2Fault {
                            ipa,
                            kind: FaultKind::Permission,
                            level: 2,
                            access: AccessKind::Write,
                        };
                        let out = vm.handle_fault(&mut cache, phys, m, &f).unwrap();
                        assert!(
                            matches!(
                                out,
                                FaultOutcome::DirtyMarked { .. } | FaultOutcome::AlreadyMapped
                            ),
                            "{out:?}"
                        );
                        written.insert(ipa.align_down(PAGE_SIZE).as_u64());
                    }
                    cache.drain(phys, phys);
                    written
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all_written: BTreeSet<u64> = written.into_iter().flatten().collect();
    {
        let t = vm.lock();
        let log = t.dirty_log().unwrap();
        let dirty: BTreeSet<u64> = log.dirty_pages().map(|p| p.as_u64()).collect();
        assert_eq!(dirty, all_written, "exactly the written pages are dirty");
        for &p in &all_written {
            let tr = t.translate(Ipa::new(p)).unwrap();
            assert!(tr.attrs.perms.write && tr.level == 3, "{p:#x}");
        }
        t.check_invariants().unwrap();
    }
    // Stop: everything merges back.
    let mut cache = MemCache::new();
    let log = vm.lock().stop_dirty_log(&mut cache).unwrap();
    assert_eq!(log.dirty_count(), all_written.len());
    {
        let t = vm.lock();
        assert_eq!(t.translate(Ipa::new(4 * G1)).unwrap().level, 1);
        assert_eq!(t.translate(Ipa::new(0x8000_0000)).unwrap().level, 2);
        t.check_invariants().unwrap();
    }
    assert!(tlb.tlbi_vmalls12.load(Ordering::Relaxed) > 0);

    let table = vm.into_inner();
    table.destroy(&phys);
    cache.drain(&phys, &phys);
    phys.check_clean().unwrap();
}
