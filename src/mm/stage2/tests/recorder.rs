//! A recording TLB model that checks the break-before-make rules.
//!
//! It observes every descriptor store, page fill and free of a [`FakePhys`] (through
//! [`MemObserver`]) and every barrier and TLBI (as the table's [`Stage2Tlb`]), logs them as
//! [`Event`]s, and keeps a model of what TLBs may hold:
//!
//! - stage-2 leaf entries and combined stage-1+2 entries: every leaf becomes cached the moment
//!   it is stored (a walker may fetch it at any time), and is dropped only by a *completed*
//!   TLBI that covers it (a TLBI completes at the next `DSB ISH`);
//! - walk-cache entries for every table descriptor, likewise;
//! - after a TLBI completes, whatever the table still holds in its scope is cached again.
//!
//! Violations recorded:
//! - a valid entry stored while some cached translation for an overlapping IPA differs from
//!   what the table now says (output address, memory type or block size): break-before-make
//!   was skipped or its invalidation had not completed;
//! - a TLBI issued while descriptor stores were not yet made visible with a DSB;
//! - a table page freed or reused (zeroed, poisoned) while a walk-cache entry may point at it,
//!   or while it is still reachable;
//! - after an operation (`check_coherent`): a cached translation that grants more than the
//!   table does now, or a walk-cache entry for a table that is gone;
//! - a leaf that makes memory executable to the guest (a new leaf, a new output address,
//!   execute permission added) stored without an I-cache invalidation of its whole output
//!   range since the previous such leaf (`icache_inval_pou`).
//!
//! It also models the TLB of one PE, "this vCPU" ([`Recorder::vcpu_access`]), the way real
//! hardware may behave and TCG does not: an entry the vCPU used (including one that then
//! faulted for lack of permission) stays until a completed TLBI removes it — a broadcast one
//! at the next `DSB ISH`, a local one (`TLBI IPAS2E1` / `VMALLE1`) at the next `DSB NSH` or
//! `DSB ISH`. As on hardware, a stage-2 TLBI by IPA leaves combined stage-1+2 entries alone
//! (only `VMALLE1`/`VMALLS12E1` reach them, and a `VMALLE1` completed before the IPA TLBI lets
//! them refill from the stale stage-2 entry). Entries with AF = 0 are never cached (the access
//! flag fault comes from the walk). While [`Recorder::elsewhere`] runs, local maintenance is
//! another PE's and does not reach this model.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::addr::{Ipa, PAGE_SIZE, PhysAddr};
use crate::mm::stage2::desc::{
    DescFormat, S2_LEAF, af_set, is_leaf, is_table, is_valid, leaf_oa, leaf_perms, table_addr,
};
use crate::mm::stage2::fault::AccessKind;
use crate::mm::stage2::geometry::{Stage2Geometry, level_shift, level_size};
use crate::mm::stage2::hw::Stage2Tlb;
use crate::mm::stage2::stats::FaultKind;
use crate::mm::stage2::testing::MemObserver;
use crate::mm::stage2::vmid::Vmid;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Event {
    Store {
        table: u64,
        index: usize,
        old: u64,
        new: u64,
    },
    Fill {
        pa: u64,
        value: u64,
    },
    Alloc {
        pa: u64,
        order: u32,
    },
    Free {
        pa: u64,
        order: u32,
    },
    DsbIshst,
    DsbIsh,
    Isb,
    TlbiIpa {
        ipa: u64,
        level: Option<u8>,
    },
    TlbiVmallE1,
    TlbiVmallS12,
    DsbNsh,
    /// `TLBI IPAS2E1` (this PE only).
    TlbiIpaLocal {
        ipa: u64,
        level: Option<u8>,
    },
    /// `TLBI VMALLE1` (this PE only).
    TlbiVmallE1Local,
    IcacheInval {
        pa: u64,
        size: u64,
    },
}

/// A stage-2 fault as the model vCPU's hardware reports it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct HwFault {
    pub kind: FaultKind,
    pub level: u8,
}

#[derive(Clone, Copy, Debug)]
enum Tlbi {
    Ipa(u64, Option<u8>),
    VmallE1,
    VmallS12,
}

type Key = (u64, u8); // (first IPA, level)

#[derive(Default)]
struct State {
    attached: Option<(Stage2Geometry, u64, Vmid)>,
    shadow: BTreeMap<u64, Box<[u64; 512]>>,
    s2: BTreeMap<Key, Vec<u64>>,
    /// Combined stage-1+2 entries are `s2` plus `evicted`: what IPA TLBIs removed from the
    /// stage-2 entries since the last VMALLE1IS (a TLBI by IPA cannot reach combined entries).
    evicted: BTreeMap<Key, Vec<u64>>,
    walks: BTreeMap<Key, Vec<u64>>,
    pos: BTreeMap<u64, (u8, u64)>,
    pending: Vec<Tlbi>,
    unpublished: bool,
    events: Vec<Event>,
    violations: Vec<String>,
    recording: bool,
    /// The model vCPU's TLB: stage-2 entries it used, combined stage-1+2 entries.
    local_s2: BTreeMap<Key, Vec<u64>>,
    local_combined: BTreeMap<Key, Vec<u64>>,
    /// Local TLBIs issued on this PE, completed at its next DSB.
    local_pending: Vec<Tlbi>,
    /// Code runs on another PE: its local TLBIs do not reach the model vCPU.
    elsewhere: bool,
    /// I-cache invalidations not yet used by an executable leaf: (pa, size).
    icache_synced: Vec<(u64, u64)>,
    /// The last store: (table, index, old value), to see through break-before-make.
    last_store: Option<(u64, usize, u64)>,
}

pub struct Recorder {
    state: Mutex<State>,
    fmt: DescFormat,
}

fn memattr(d: u64) -> u64 {
    S2_LEAF::MEMATTR.read(d)
}

impl State {
    fn entry(&self, table: u64, index: usize) -> u64 {
        self.shadow.get(&table).map_or(0, |p| p[index])
    }

    fn geo(&self) -> Option<(Stage2Geometry, u64, Vmid)> {
        self.attached
    }

    /// The table page holding the entry for `ipa` at `level`, if reachable.
    fn table_at(&self, ipa: u64, level: u8) -> Option<u64> {
        let (geo, root, _) = self.geo()?;
        if ipa >= geo.ipa_limit() || level < geo.start_level() {
            return None;
        }
        let mut table = root + (ipa / geo.root_page_span()) * PAGE_SIZE;
        let mut l = geo.start_level();
        while l < level {
            let d = self.entry(table, ((ipa >> level_shift(l)) & 511) as usize);
            if !is_table(d, l) {
                return None;
            }
            table = table_addr(d).as_u64();
            l += 1;
        }
        Some(table)
    }

    /// Where a table page sits in the live tree: (level, first IPA). Pages are registered
    /// when a descriptor pointing at them is stored into the live tree, and checked against
    /// the tree on every query (an unhooked page is not live).
    fn position(&self, page: u64) -> Option<(u8, u64)> {
        let (geo, root, _) = self.geo()?;
        let root_end = root + geo.root_pages() as u64 * PAGE_SIZE;
        if (root..root_end).contains(&page) {
            return Some((
                geo.start_level(),
                (page - root) / PAGE_SIZE * geo.root_page_span(),
            ));
        }
        let &(level, base) = self.pos.get(&page)?;
        (self.table_at(base, level) == Some(page)).then_some((level, base))
    }

    /// The leaf translating `ipa` now: (first IPA, level, descriptor).
    fn lookup(&self, ipa: u64) -> Option<(u64, u8, u64)> {
        let (geo, _, _) = self.geo()?;
        for level in geo.start_level()..=3 {
            let t = self.table_at(ipa, level)?;
            let d = self.entry(t, ((ipa >> level_shift(level)) & 511) as usize);
            if !is_valid(d) {
                return None;
            }
            if is_leaf(d, level) {
                return Some((ipa & !(level_size(level) - 1), level, d));
            }
        }
        None
    }

    fn add(map: &mut BTreeMap<Key, Vec<u64>>, key: Key, d: u64) {
        let v = map.entry(key).or_default();
        if !v.contains(&d) {
            v.push(d);
        }
    }

    /// Caches the entry (and, for a table, everything below it).
    fn cache_subtree(&mut self, base: u64, level: u8, d: u64) {
        if is_leaf(d, level) {
            if level == 0 {
                return;
            }
            Self::add(&mut self.s2, (base, level), d);
        } else if is_table(d, level) {
            let t = table_addr(d).as_u64();
            Self::add(&mut self.walks, (base, level), t);
            self.pos.insert(t, (level + 1, base));
            for i in 0..512 {
                let c = self.entry(t, i);
                if is_valid(c) {
                    self.cache_subtree(base + i as u64 * level_size(level + 1), level + 1, c);
                }
            }
        }
    }

    /// Caches everything the live tree holds.
    fn cache_all(&mut self) {
        let Some((geo, root, _)) = self.geo() else {
            return;
        };
        for p in 0..geo.root_pages() as u64 {
            for i in 0..512u64 {
                let d = self.entry(root + p * PAGE_SIZE, i as usize);
                let base = p * geo.root_page_span() + i * level_size(geo.start_level());
                if is_valid(d) && base < geo.ipa_limit() {
                    self.cache_subtree(base, geo.start_level(), d);
                }
            }
        }
    }

    /// Caches the live path for `ipa`.
    fn cache_path(&mut self, ipa: u64) {
        let Some((geo, _, _)) = self.geo() else {
            return;
        };
        for level in geo.start_level()..=3 {
            let Some(t) = self.table_at(ipa, level) else {
                return;
            };
            let d = self.entry(t, ((ipa >> level_shift(level)) & 511) as usize);
            let base = ipa & !(level_size(level) - 1);
            if is_table(d, level) {
                Self::add(&mut self.walks, (base, level), table_addr(d).as_u64());
                self.pos.insert(table_addr(d).as_u64(), (level + 1, base));
            } else {
                if is_valid(d) && level > 0 {
                    Self::add(&mut self.s2, (base, level), d);
                }
                return;
            }
        }
    }

    fn overlapping(map: &BTreeMap<Key, Vec<u64>>, start: u64, end: u64) -> Vec<(Key, u64)> {
        let from = start.saturating_sub(1 << 39);
        map.range((from, 0)..(end, 0))
            .filter(|((b, l), _)| b + level_size(*l) > start)
            .flat_map(|(k, v)| v.iter().map(move |d| (*k, *d)))
            .collect()
    }

    /// Checks, after a valid entry was stored at (`base`, `level`), that no cached
    /// translation conflicts with the table.
    fn check_make(&mut self, base: u64, level: u8) {
        let end = base + level_size(level);
        let mut bad = Vec::new();
        for (name, map) in [("stage-2", &self.s2), ("combined", &self.evicted)] {
            for ((cb, cl), cd) in Self::overlapping(map, base, end) {
                let probe = cb.max(base);
                if let Some((nb, nl, nd)) = self.lookup(probe) {
                    let same = nl == cl
                        && nb == cb
                        && leaf_oa(nd) == leaf_oa(cd)
                        && memattr(nd) == memattr(cd);
                    if !same {
                        bad.push(format!(
                            "break-before-make: {name} TLB may hold {cd:#x} (level {cl} at \
                             {cb:#x}) while the table now maps {nd:#x} (level {nl} at {nb:#x})"
                        ));
                    }
                }
            }
        }
        for ((wb, wl), pa) in Self::overlapping(&self.walks, base, end) {
            if self.table_at(wb, wl + 1) != Some(pa) {
                bad.push(format!(
                    "break-before-make: walk cache may hold table {pa:#x} for level {wl} at \
                     {wb:#x}, which the table no longer has"
                ));
            }
        }
        self.violations.extend(bad);
    }

    fn complete(&mut self) {
        let Some((_, _, _)) = self.geo() else {
            self.pending.clear();
            return;
        };
        let pending = std::mem::take(&mut self.pending);
        for &t in &pending {
            self.complete_local(t);
        }
        for t in pending {
            match t {
                Tlbi::Ipa(ipa, hint) => {
                    let hit: Vec<Key> = Self::overlapping(&self.s2, ipa, ipa + 1)
                        .into_iter()
                        .map(|(k, _)| k)
                        .filter(|(_, l)| hint.is_none_or(|h| h == *l))
                        .collect();
                    for k in hit {
                        if let Some(ds) = self.s2.remove(&k) {
                            for d in ds {
                                Self::add(&mut self.evicted, k, d);
                            }
                        }
                    }
                    if hint.is_none() {
                        self.walks
                            .retain(|(b, l), _| !(ipa >= *b && ipa < b + level_size(*l)));
                    }
                    self.cache_path(ipa);
                }
                Tlbi::VmallE1 => {
                    // Combined entries now only come from what stage 2 may still translate.
                    self.evicted.clear();
                }
                Tlbi::VmallS12 => {
                    self.s2.clear();
                    self.evicted.clear();
                    self.walks.clear();
                    self.cache_all();
                }
            }
        }
    }

    /// A leaf `new` that makes memory executable must follow an I-cache invalidation of its
    /// whole output range (consumed here).
    fn check_icache(&mut self, old: u64, new: u64, level: u8) {
        let exec = |d: u64| is_leaf(d, level) && leaf_perms(d).exec;
        if !exec(new) || (exec(old) && leaf_oa(old) == leaf_oa(new)) {
            return;
        }
        let (pa, size) = (leaf_oa(new), level_size(level));
        match self
            .icache_synced
            .iter()
            .position(|&(p, n)| p <= pa && pa + size <= p + n)
        {
            Some(i) => {
                self.icache_synced.remove(i);
            }
            None => self.violations.push(format!(
                "executable leaf {new:#x} (level {level}) for PA {pa:#x}..{:#x} stored without \
                 I-cache invalidation",
                pa + size
            )),
        }
    }

    /// A TLBI reaching the model vCPU's TLB has completed.
    fn complete_local(&mut self, t: Tlbi) {
        match t {
            Tlbi::Ipa(ipa, hint) => {
                let hit: Vec<Key> = Self::overlapping(&self.local_s2, ipa, ipa + 1)
                    .into_iter()
                    .map(|(k, _)| k)
                    .filter(|(_, l)| hint.is_none_or(|h| h == *l))
                    .collect();
                for k in hit {
                    self.local_s2.remove(&k);
                }
            }
            // Combined entries may refill from whatever stage-2 entries are still cached.
            Tlbi::VmallE1 => self.local_combined = self.local_s2.clone(),
            Tlbi::VmallS12 => {
                self.local_s2.clear();
                self.local_combined.clear();
            }
        }
    }

    fn complete_local_pending(&mut self) {
        for t in std::mem::take(&mut self.local_pending) {
            self.complete_local(t);
        }
    }

    fn page_released(&mut self, page: u64, what: &str) {
        if self.geo().is_none() {
            return;
        }
        if self.walks.values().any(|v| v.contains(&page)) {
            self.violations.push(format!(
                "{what} of table page {page:#x} while a walk-cache entry may point at it"
            ));
        }
        let (geo, root, _) = self.geo().unwrap();
        let is_root = (root..root + geo.root_pages() as u64 * PAGE_SIZE).contains(&page);
        if !is_root && self.position(page).is_some() {
            self.violations.push(format!(
                "{what} of table page {page:#x} that is still reachable"
            ));
        }
    }
}

impl Recorder {
    pub fn new(fwb: bool) -> Self {
        Self {
            state: Mutex::new(State {
                recording: true,
                ..State::default()
            }),
            fmt: DescFormat::new(fwb),
        }
    }

    /// Starts checking a table: its geometry, PGD and VMID.
    pub fn attach(&self, geo: Stage2Geometry, root: PhysAddr, vmid: Vmid) {
        let mut s = self.state.lock().unwrap();
        s.attached = Some((geo, root.as_u64(), vmid));
        s.cache_all();
    }

    /// Stops checking (before destroy frees everything).
    pub fn detach(&self) {
        let mut s = self.state.lock().unwrap();
        s.attached = None;
        s.s2.clear();
        s.evicted.clear();
        s.walks.clear();
    }

    pub fn events(&self) -> Vec<Event> {
        self.state.lock().unwrap().events.clone()
    }

    pub fn clear_events(&self) {
        self.state.lock().unwrap().events.clear();
    }

    pub fn violations(&self) -> Vec<String> {
        self.state.lock().unwrap().violations.clone()
    }

    /// Records a violation when a cached translation grants more than the table does now or
    /// a walk-cache entry names a table that is gone; call after an operation returned.
    pub fn check_coherent(&self) {
        let mut s = self.state.lock().unwrap();
        if s.attached.is_none() {
            return;
        }
        let mut bad = Vec::new();
        for (name, map) in [("stage-2", &s.s2), ("combined", &s.evicted)] {
            for (&(b, l), ds) in map.iter() {
                for &d in ds {
                    let ok = match s.lookup(b) {
                        Some((nb, nl, nd)) => {
                            nb == b
                                && nl == l
                                && leaf_oa(nd) == leaf_oa(d)
                                && memattr(nd) == memattr(d)
                                && leaf_perms(nd).contains(leaf_perms(d))
                                && (af_set(nd) || !af_set(d))
                        }
                        None => false,
                    };
                    if !ok {
                        bad.push(format!(
                            "stale {name} translation {d:#x} (level {l} at {b:#x}) usable after \
                             the operation; the table holds {:?}",
                            s.lookup(b)
                        ));
                    }
                }
            }
        }
        for (&(b, l), pas) in s.walks.iter() {
            for &pa in pas {
                if s.table_at(b, l + 1) != Some(pa) {
                    bad.push(format!(
                        "stale walk-cache entry: table {pa:#x} for level {l} at {b:#x}"
                    ));
                }
            }
        }
        s.violations.extend(bad);
    }

    /// Asserts there were no violations so far.
    pub fn assert_clean(&self) {
        self.check_coherent();
        let v = self.violations();
        assert!(
            v.is_empty(),
            "{} violations, first: {:#?}",
            v.len(),
            &v[..v.len().min(5)]
        );
    }

    fn event(&self, s: &mut State, e: Event) {
        if s.recording {
            s.events.push(e);
        }
    }

    fn tlbi(&self, vmid: Vmid, t: Tlbi, e: Event) {
        let mut s = self.state.lock().unwrap();
        self.event(&mut s, e);
        let Some((_, _, mine)) = s.attached else {
            return;
        };
        if s.unpublished {
            s.violations.push(format!(
                "{e:?} issued before earlier stores were made visible (DSB)"
            ));
        }
        if vmid == mine {
            s.pending.push(t);
        }
    }

    /// A TLBI that reaches only the PE issuing it.
    fn local_tlbi(&self, vmid: Vmid, t: Tlbi, e: Event) {
        let mut s = self.state.lock().unwrap();
        self.event(&mut s, e);
        let Some((_, _, mine)) = s.attached else {
            return;
        };
        if s.unpublished {
            s.violations.push(format!(
                "{e:?} issued before earlier stores were made visible (DSB)"
            ));
        }
        if vmid == mine && !s.elsewhere {
            s.local_pending.push(t);
        }
    }

    pub fn fmt(&self) -> DescFormat {
        self.fmt
    }

    /// Runs `f` as code on another PE: its local TLB maintenance does not reach the model
    /// vCPU's TLB (broadcast maintenance still does).
    pub fn elsewhere<R>(&self, f: impl FnOnce() -> R) -> R {
        self.state.lock().unwrap().elsewhere = true;
        let r = f();
        self.state.lock().unwrap().elsewhere = false;
        r
    }

    /// One access by the model vCPU to `ipa`. A cached entry answers if there is one (the least
    /// permissive, if several: a TLB may use any of them); otherwise the table is walked and
    /// the leaf cached (unless AF = 0) whether or not it allows the access.
    pub fn vcpu_access(&self, ipa: Ipa, access: AccessKind) -> Result<(), HwFault> {
        let mut s = self.state.lock().unwrap();
        let ipa = ipa.as_u64();
        let allows = |d: u64| {
            let p = leaf_perms(d);
            match access {
                AccessKind::Read => p.read,
                AccessKind::Write => p.write,
                AccessKind::Exec => p.exec,
            }
        };
        let mut cached = Self::cached_for(&s.local_combined, ipa);
        cached.extend(Self::cached_for(&s.local_s2, ipa));
        if !cached.is_empty() {
            return match cached.iter().find(|(_, d)| !allows(*d)) {
                Some(&((_, level), _)) => Err(HwFault {
                    kind: FaultKind::Permission,
                    level,
                }),
                None => Ok(()),
            };
        }
        let Some((base, level, d)) = s.lookup(ipa) else {
            return Err(HwFault {
                kind: FaultKind::Translation,
                level: 3,
            });
        };
        if !af_set(d) {
            return Err(HwFault {
                kind: FaultKind::AccessFlag,
                level,
            });
        }
        State::add(&mut s.local_s2, (base, level), d);
        State::add(&mut s.local_combined, (base, level), d);
        if allows(d) {
            Ok(())
        } else {
            Err(HwFault {
                kind: FaultKind::Permission,
                level,
            })
        }
    }

    fn cached_for(map: &BTreeMap<Key, Vec<u64>>, ipa: u64) -> Vec<(Key, u64)> {
        State::overlapping(map, ipa, ipa + 1)
    }
}

impl MemObserver for Recorder {
    fn stored(&self, table: PhysAddr, index: usize, old: u64, new: u64) {
        let mut s = self.state.lock().unwrap();
        let table = table.as_u64();
        self.event(
            &mut s,
            Event::Store {
                table,
                index,
                old,
                new,
            },
        );
        s.shadow.entry(table).or_insert_with(|| Box::new([0; 512]))[index] = new;
        // What the slot held before a break-before-make (stored 0, then the new entry).
        let before = match s.last_store.replace((table, index, old)) {
            Some((t, i, prev)) if old == 0 && (t, i) == (table, index) => prev,
            _ => old,
        };
        if s.attached.is_none() {
            return;
        }
        let Some((level, page_base)) = s.position(table) else {
            return; // Not (yet) part of the live tree.
        };
        s.unpublished = true;
        if is_valid(new) {
            let base = page_base + index as u64 * level_size(level);
            s.check_make(base, level);
            s.check_icache(before, new, level);
            s.cache_subtree(base, level, new);
        }
    }

    fn filled(&self, pa: PhysAddr, pages: usize, value: u64) {
        let mut s = self.state.lock().unwrap();
        for p in 0..pages as u64 {
            let page = pa.as_u64() + p * PAGE_SIZE;
            self.event(&mut s, Event::Fill { pa: page, value });
            let what = if value == 0 { "zeroing" } else { "poisoning" };
            s.page_released(page, what);
            s.shadow.insert(page, Box::new([value; 512]));
        }
    }

    fn allocated(&self, pa: PhysAddr, order: u32) {
        let mut s = self.state.lock().unwrap();
        self.event(
            &mut s,
            Event::Alloc {
                pa: pa.as_u64(),
                order,
            },
        );
    }

    fn freed(&self, pa: PhysAddr, order: u32) {
        let mut s = self.state.lock().unwrap();
        self.event(
            &mut s,
            Event::Free {
                pa: pa.as_u64(),
                order,
            },
        );
        for p in 0..1u64 << order {
            s.page_released(pa.as_u64() + p * PAGE_SIZE, "free");
        }
    }
}

impl Stage2Tlb for Recorder {
    fn dsb_ishst(&self) {
        let mut s = self.state.lock().unwrap();
        self.event(&mut s, Event::DsbIshst);
        s.unpublished = false;
    }
    fn dsb_ish(&self) {
        let mut s = self.state.lock().unwrap();
        self.event(&mut s, Event::DsbIsh);
        s.unpublished = false;
        if !s.elsewhere {
            s.complete_local_pending();
        }
        s.complete();
    }
    fn isb(&self) {
        let mut s = self.state.lock().unwrap();
        self.event(&mut s, Event::Isb);
    }
    fn tlbi_ipas2e1is(&self, vmid: Vmid, ipa: Ipa, level_hint: Option<u8>) {
        self.tlbi(
            vmid,
            Tlbi::Ipa(ipa.as_u64(), level_hint),
            Event::TlbiIpa {
                ipa: ipa.as_u64(),
                level: level_hint,
            },
        );
    }
    fn tlbi_vmalle1is(&self, vmid: Vmid) {
        self.tlbi(vmid, Tlbi::VmallE1, Event::TlbiVmallE1);
    }
    fn tlbi_vmalls12e1is(&self, vmid: Vmid) {
        self.tlbi(vmid, Tlbi::VmallS12, Event::TlbiVmallS12);
    }
    fn dsb_nsh(&self) {
        let mut s = self.state.lock().unwrap();
        self.event(&mut s, Event::DsbNsh);
        if !s.elsewhere {
            s.complete_local_pending();
        }
    }
    fn tlbi_ipas2e1(&self, vmid: Vmid, ipa: Ipa, level_hint: Option<u8>) {
        let e = Event::TlbiIpaLocal {
            ipa: ipa.as_u64(),
            level: level_hint,
        };
        self.local_tlbi(vmid, Tlbi::Ipa(ipa.as_u64(), level_hint), e);
    }
    fn tlbi_vmalle1(&self, vmid: Vmid) {
        self.local_tlbi(vmid, Tlbi::VmallE1, Event::TlbiVmallE1Local);
    }
    fn icache_inval_pou(&self, pa: PhysAddr, size: u64) {
        let mut s = self.state.lock().unwrap();
        let pa = pa.as_u64();
        self.event(&mut s, Event::IcacheInval { pa, size });
        s.icache_synced.push((pa, size));
    }
}
