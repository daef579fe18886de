//! A vCPU whose TLB keeps the entry that faulted until a TLBI removes it (the recorder's
//! per-PE model, [`Recorder::vcpu_access`]), driven through the fault path the way the exit
//! handler drives it: access, stage-2 fault, `handle_fault`, retry. The architecture allows a
//! TLB to keep an entry that caused a permission fault, so a fault path that relaxes (or finds
//! already relaxed) a permission without invalidating the faulting IPA can send the vCPU back
//! to the same stale entry forever. TCG does not cache like this, so only these host tests can
//! show it (KVM's fix: always invalidate the IPA on a stage-2 permission fault,
//! `kvm_pgtable_stage2_relax_perms`).
use super::recorder::{Event, HwFault, Recorder};
use super::*;
use crate::addr::{Ipa, PhysAddr};
use crate::mm::stage2::desc::S2Perms;
use crate::mm::stage2::fault::{AccessKind, FaultOutcome, GuestMemoryMap, MemRegion, Stage2Fault};
use crate::mm::stage2::locked::LockedStage2;
use crate::mm::stage2::memcache::MemCache;
use crate::mm::stage2::stats::FaultKind;
use crate::mm::stage2::{DirtyLog, Stage2Error};

const RAM: u64 = 0x4000_0000;
const RAM_SIZE: u64 = 4 * M2;
const RAM_PA: u64 = 0x1_0000_0000;
/// Faults one access may take before the test calls it a livelock (a correct fault path
/// needs at most two: one to map, one to relax).
const MAX_FAULTS: usize = 8;

type Locked<'a> = LockedStage2<&'a FakePhys, &'a Recorder>;

struct Vm<'a> {
    phys: &'a FakePhys,
    rec: &'a Recorder,
    s2: Locked<'a>,
    regions: GuestMemoryMap,
    cache: MemCache,
}

/// What a fault path run by the model vCPU did, for the failure message.
type Trace = Vec<(HwFault, Result<FaultOutcome, Stage2Error>)>;

impl<'a> Vm<'a> {
    fn new(phys: &'a FakePhys, rec: &'a Recorder) -> Self {
        let mut regions = GuestMemoryMap::new();
        regions
            .add(MemRegion::ram(
                Ipa::new(RAM),
                RAM_SIZE,
                PhysAddr::new(RAM_PA),
            ))
            .unwrap();
        Self {
            phys,
            rec,
            s2: LockedStage2::new(rec_table(phys, rec, 40)),
            regions,
            cache: MemCache::new(),
        }
    }

    fn start_dirty_log(&mut self) {
        let log = DirtyLog::new(Ipa::new(RAM), RAM_SIZE).unwrap();
        self.s2.lock().start_dirty_log(log).unwrap();
        self.regions.set_dirty_log(Ipa::new(RAM), true).unwrap();
    }

    /// The model vCPU performs `access` at `ipa`. Each stage-2 fault goes to the fault path
    /// as the exit handler would report it (`report` builds the [`Stage2Fault`] from what the
    /// hardware says), then the access is retried. Returns the number of faults taken, or the
    /// trace when the vCPU is still faulting after [`MAX_FAULTS`].
    fn run_with(
        &mut self,
        ipa: u64,
        access: AccessKind,
        report: impl Fn(HwFault) -> Stage2Fault,
    ) -> Result<usize, Trace> {
        let mut trace = Vec::new();
        loop {
            match self.rec.vcpu_access(Ipa::new(ipa), access) {
                Ok(()) => return Ok(trace.len()),
                Err(hw) if trace.len() < MAX_FAULTS => {
                    let f = report(hw);
                    let r = self
                        .s2
                        .handle_fault(&mut self.cache, self.phys, &self.regions, &f);
                    trace.push((hw, r));
                }
                Err(_) => return Err(trace),
            }
        }
    }

    /// An access reported as what it is (WnR for data, instruction aborts are Exec).
    fn run(&mut self, ipa: u64, access: AccessKind) -> Result<usize, Trace> {
        self.run_with(ipa, access, |hw| Stage2Fault {
            ipa: Ipa::new(ipa),
            kind: hw.kind,
            level: hw.level,
            access,
        })
    }

    /// A fault handled for another vCPU, on another PE.
    fn other_vcpu_fault(&self, ipa: u64, kind: FaultKind, level: u8, access: AccessKind) {
        let mut cache = MemCache::new();
        let f = Stage2Fault {
            ipa: Ipa::new(ipa),
            kind,
            level,
            access,
        };
        self.rec.elsewhere(|| {
            self.s2
                .handle_fault(&mut cache, self.phys, &self.regions, &f)
                .unwrap()
        });
        cache.drain(self.phys, self.phys);
    }

    fn finish(mut self) {
        self.rec.assert_clean();
        self.rec.detach();
        self.s2.destroy(self.phys);
        self.cache.drain(self.phys, self.phys);
        self.phys.check_clean().unwrap();
    }
}

#[test]
fn a_write_to_a_dirty_logged_page_completes_while_the_tlb_keeps_the_read_only_entry() {
    let (rec, phys) = recorded(64);
    let mut vm = Vm::new(&phys, &rec);
    vm.start_dirty_log();
    let at = RAM + M2 + 0x5008;
    // A read maps the page write-protected (dirty logging) and caches that entry.
    assert_eq!(vm.run(at, AccessKind::Read), Ok(1));
    rec.clear_events();
    // The write takes one permission fault on the cached entry; the fault path marks the page
    // dirty, makes it writable and must drop the faulting entry from this PE's TLB.
    assert_eq!(vm.run(at, AccessKind::Write), Ok(1));
    let log = vm.s2.lock().dirty_log().unwrap().clone();
    assert_eq!(
        log.dirty_pages().map(|p| p.as_u64()).collect::<Vec<_>>(),
        [at & !0xfff]
    );
    // Only this PE's TLB: local TLBI by IPA (the leaf's level as hint), then the combined
    // entries, each completed with DSB NSH; no broadcast invalidation.
    let ev = rec.events();
    let page = at & !0xfff;
    let tail = [
        Event::TlbiIpaLocal {
            ipa: page,
            level: Some(3),
        },
        Event::DsbNsh,
        Event::TlbiVmallE1Local,
        Event::DsbNsh,
        Event::Isb,
    ];
    assert!(ev.ends_with(&tail), "{ev:#?}");
    assert!(
        !ev.iter().any(|e| matches!(
            e,
            Event::TlbiIpa { .. } | Event::TlbiVmallE1 | Event::TlbiVmallS12
        )),
        "{ev:#?}"
    );
    vm.finish();
}

#[test]
fn permissions_relaxed_by_the_fault_path_reach_a_vcpu_that_cached_the_old_entry() {
    let (rec, phys) = recorded(64);
    let mut vm = Vm::new(&phys, &rec);
    let at = RAM + 0x3000;
    assert_eq!(vm.run(at, AccessKind::Read), Ok(1), "maps a 2 MiB block");
    for (perms, access) in [
        (S2Perms::R, AccessKind::Write),
        (S2Perms::new(true, true, false), AccessKind::Exec),
    ] {
        let mut c = MemCache::new();
        vm.s2
            .lock()
            .set_perms(&mut c, Ipa::new(RAM), M2, perms)
            .unwrap();
        assert_eq!(
            vm.run(at, AccessKind::Read),
            Ok(0),
            "the restricted block is cached"
        );
        assert_eq!(
            vm.run(at, access),
            Ok(1),
            "{access:?} after restricting to {perms:?}"
        );
        c.drain(&phys, &phys);
    }
    assert_eq!(vm.s2.lock().stats().perm_fault_relaxed, 2);
    vm.finish();
}

#[test]
fn a_spurious_permission_fault_drops_the_stale_entry_of_the_faulting_vcpu() {
    let (rec, phys) = recorded(64);
    let mut vm = Vm::new(&phys, &rec);
    vm.start_dirty_log();
    let at = RAM + 0x7010;
    assert_eq!(vm.run(at, AccessKind::Read), Ok(1));
    // Another vCPU writes the page first: it is now writable and dirty.
    vm.other_vcpu_fault(at, FaultKind::Permission, 3, AccessKind::Write);
    // Our vCPU still holds the write-protected entry: its write faults, the fault path finds
    // the write already allowed, and must still invalidate, or the vCPU faults forever.
    assert_eq!(vm.run(at, AccessKind::Write), Ok(1));
    assert_eq!(vm.s2.lock().stats().spurious_faults, 1);
    vm.finish();
}

#[test]
fn translation_and_access_flag_faults_need_no_invalidation() {
    // Entries that fault for translation or the access flag are never cached, so those fault
    // paths stay free of TLB maintenance (a boot takes thousands of them).
    let (rec, phys) = recorded(64);
    let mut vm = Vm::new(&phys, &rec);
    rec.clear_events();
    assert_eq!(vm.run(RAM + 0x10, AccessKind::Read), Ok(1));
    assert_eq!(vm.run(RAM + M2 + 0x10, AccessKind::Exec), Ok(1));
    let ev = rec.events();
    assert!(
        !ev.iter().any(|e| matches!(
            e,
            Event::TlbiIpa { .. }
                | Event::TlbiVmallE1
                | Event::TlbiVmallS12
                | Event::TlbiIpaLocal { .. }
                | Event::TlbiVmallE1Local
        )),
        "{ev:#?}"
    );
    vm.finish();
}

#[test]
fn the_model_keeps_combined_entries_until_vmalle1_after_the_ipa_invalidation() {
    // The model itself: relaxing a descriptor behind the vCPU's back leaves the cached entry
    // in charge; `TLBI IPAS2E1` alone leaves the combined entry; `VMALLE1` *before* the IPA
    // invalidation lets the combined entry refill from the stale stage-2 entry; only the
    // order the fault path uses clears it.
    use crate::mm::stage2::Stage2Tlb;
    use crate::mm::stage2::vmid::Vmid;
    type Step = fn(&Recorder, Ipa);
    let ipa_only: Step = |r, ipa| {
        r.tlbi_ipas2e1(Vmid::new(1), ipa, Some(2));
        r.dsb_nsh();
    };
    let wrong_order: Step = |r, ipa| {
        r.tlbi_vmalle1(Vmid::new(1));
        r.dsb_nsh();
        r.tlbi_ipas2e1(Vmid::new(1), ipa, Some(2));
        r.dsb_nsh();
    };
    let right_order: Step = |r, ipa| {
        r.tlbi_ipas2e1(Vmid::new(1), ipa, Some(2));
        r.dsb_nsh();
        r.tlbi_vmalle1(Vmid::new(1));
        r.dsb_nsh();
    };
    for (name, step, fixed) in [
        ("IPA only", ipa_only, false),
        ("VMALLE1 first", wrong_order, false),
        ("IPA, then VMALLE1", right_order, true),
    ] {
        let (rec, phys) = recorded(64);
        let mut vm = Vm::new(&phys, &rec);
        let at = RAM + 0x2000;
        assert_eq!(vm.run(at, AccessKind::Read), Ok(1));
        let mut c = MemCache::new();
        vm.s2
            .lock()
            .set_perms(&mut c, Ipa::new(RAM), M2, S2Perms::R)
            .unwrap();
        assert_eq!(vm.run(at, AccessKind::Read), Ok(0));
        // Relax behind the fault path's back (a plain store, as set_perms would).
        let (e, desc) = vm.s2.lock().leaf_entry(Ipa::new(at)).unwrap();
        let w = crate::mm::stage2::desc::with_perms(rec.fmt(), desc, S2Perms::RW, false);
        phys.write_entry(e.table, e.index, w);
        rec.dsb_ishst();
        assert!(rec.vcpu_access(Ipa::new(at), AccessKind::Write).is_err());
        step(&rec, Ipa::new(RAM));
        assert_eq!(
            rec.vcpu_access(Ipa::new(at), AccessKind::Write).is_ok(),
            fixed,
            "{name}"
        );
        c.drain(&phys, &phys);
        vm.finish();
    }
}

#[test]
fn a_hardware_update_of_a_guest_table_in_a_dirty_logged_page_is_a_write() {
    // The guest's stage-1 tables live in its RAM. With FEAT_HAFDBS the walker writes the
    // access flag into a descriptor: under dirty logging that page is write-protected, so
    // the walk takes a stage-2 permission fault with S1PTW = 1 (WnR is not reliable there;
    // here 0). Decoded as a read, the fault path finds reads allowed and the walk faults
    // forever; decoded as a write, the page is marked dirty and made writable.
    let (rec, phys) = recorded(64);
    let mut vm = Vm::new(&phys, &rec);
    vm.start_dirty_log();
    let table_page = RAM + 3 * M2 + 0x4000;
    // The walker reads the table (a translation fault on the walk: a read, mapped RO).
    let walk = |hw: HwFault| Stage2Fault {
        ipa: Ipa::new(table_page),
        kind: hw.kind,
        level: hw.level,
        access: AccessKind::of_abort(false, false, true, hw.kind),
    };
    assert_eq!(vm.run_with(table_page, AccessKind::Read, walk), Ok(1));
    assert!(
        !vm.s2
            .lock()
            .dirty_log()
            .unwrap()
            .is_dirty(Ipa::new(table_page))
    );
    // The walker sets AF in a descriptor there.
    assert_eq!(vm.run_with(table_page, AccessKind::Write, walk), Ok(1));
    assert!(
        vm.s2
            .lock()
            .dirty_log()
            .unwrap()
            .is_dirty(Ipa::new(table_page))
    );
    vm.finish();
}
