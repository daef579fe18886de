//! One VM's stage-2 table and its operations.
//!
//! Every operation that may need new table pages is done in two phases (Hafnium's
//! prepare/commit): a counting walk computes exactly how many pages the commit will take, the
//! operation fails with [`Stage2Error::CacheEmpty`] *before changing anything* when the cache
//! holds fewer, and the commit walk then cannot run out. So there is never a half-built
//! mapping.
//!
//! Every store into a live table goes through `Writer::set_entry`, the one function that may
//! overwrite a valid entry; see its comment for the break-before-make sequence.
#![forbid(unsafe_code)]

use super::Stage2Error;
use super::desc::{
    Change, DescFormat, LeafAttrs, S2Perms, classify, is_leaf, is_table, is_valid, leaf_attr_bits,
    leaf_like, leaf_oa, leaf_perms, table_addr, table_count, table_desc, with_count, with_perms,
};
use super::dirty::DirtyLog;
use super::geometry::{
    ENTRIES_PER_TABLE, LAST_LEVEL, Stage2Geometry, leaf_size_index, level_allows_leaf, level_size,
};
use super::hw::{Stage2Tlb, TableMemory, store_entry, zero_pages};
use super::memcache::MemCache;
use super::stats::Stage2Stats;
use super::vmid::Vmid;
use super::walk::{Entry, Flow, Visitor, load, walk};
use crate::addr::{Ipa, PAGE_SIZE, PhysAddr};
use crate::mm::frame::FrameAllocator;

/// The result of translating one IPA.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Translation {
    /// The PA the queried IPA maps to.
    pub pa: PhysAddr,
    /// Level of the leaf (1: 1 GiB block, 2: 2 MiB block, 3: 4 KiB page).
    pub level: u8,
    pub attrs: LeafAttrs,
    /// First IPA and PA of the whole leaf.
    pub block_ipa: Ipa,
    pub block_pa: PhysAddr,
}

impl Translation {
    pub fn size(&self) -> u64 {
        level_size(self.level)
    }
}

/// One leaf mapping, as reported by [`Stage2Table::for_each_leaf`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Leaf {
    pub ipa: Ipa,
    pub pa: PhysAddr,
    pub level: u8,
    pub attrs: LeafAttrs,
}

impl Leaf {
    pub fn size(&self) -> u64 {
        level_size(self.level)
    }
}

/// A VM's stage-2 translation table: the PGD (1..=16 concatenated root pages, one allocation)
/// and the tables below it.
///
/// Not internally locked: mutations take `&mut self`. Share it between vCPUs inside
/// [`super::LockedStage2`] (a per-VM spin lock). Release it with [`Stage2Table::destroy`];
/// dropping it leaks its pages.
pub struct Stage2Table<M: TableMemory, T: Stage2Tlb> {
    pub(super) mem: M,
    pub(super) tlb: T,
    pub(super) geo: Stage2Geometry,
    pub(super) fmt: DescFormat,
    pub(super) vmid: Vmid,
    pub(super) root: PhysAddr,
    pub(super) stats: Stage2Stats,
    pub(super) dirty: Option<DirtyLog>,
}

impl<M: TableMemory, T: Stage2Tlb> Stage2Table<M, T> {
    /// Allocates and zeroes the PGD: `2^geo.pgd_order()` pages in one block aligned to its size
    /// (the alignment VTTBR_EL2.BADDR needs for a concatenated root). `fwb` selects the
    /// FEAT_S2FWB attribute encodings; pass it only when HCR_EL2.FWB will be set for the VM.
    pub fn new<A: FrameAllocator + ?Sized>(
        geo: Stage2Geometry,
        vmid: Vmid,
        fwb: bool,
        mem: M,
        tlb: T,
        alloc: &A,
    ) -> Result<Self, Stage2Error> {
        let order = geo.pgd_order();
        let root = alloc.alloc_frames(order).ok_or(Stage2Error::NoMemory)?;
        if !root.is_aligned(PAGE_SIZE << order) {
            alloc.free_frames(root, order);
            return Err(Stage2Error::Misaligned);
        }
        zero_pages(&mem, root, geo.root_pages());
        let stats = Stage2Stats {
            table_pages: geo.root_pages() as u64,
            ..Stage2Stats::default()
        };
        Ok(Self {
            mem,
            tlb,
            geo,
            fmt: DescFormat::new(fwb),
            vmid,
            root,
            stats,
            dirty: None,
        })
    }

    /// Tears the table down: invalidates the whole VMID (TLBI VMALLS12E1IS), then frees every
    /// table page and finally the PGD, each with the order it was allocated with. Returns the
    /// VMID for the caller to give back to the [`super::VmidAllocator`].
    pub fn destroy<A: FrameAllocator + ?Sized>(mut self, alloc: &A) -> Vmid {
        let mut w = Writer::new(&self.mem, &self.tlb, self.vmid, &mut self.stats);
        w.invalidate_vmid();
        let mut v = FreeAll { alloc, freed: 0 };
        let end = Ipa::new(self.geo.ipa_limit());
        // The visitor cannot fail.
        let _ = walk(&self.mem, &self.geo, self.root, Ipa::new(0), end, &mut v);
        alloc.free_frames(self.root, self.geo.pgd_order());
        self.stats.table_pages -= v.freed + self.geo.root_pages() as u64;
        debug_assert_eq!(self.stats.table_pages, 0);
        self.vmid
    }

    pub fn geometry(&self) -> &Stage2Geometry {
        &self.geo
    }
    pub fn vmid(&self) -> Vmid {
        self.vmid
    }
    /// Base of the PGD.
    pub fn root(&self) -> PhysAddr {
        self.root
    }
    /// The VTTBR_EL2 value for this VM.
    pub fn vttbr(&self) -> u64 {
        super::geometry::vttbr(self.root, self.vmid)
    }
    pub fn stats(&self) -> &Stage2Stats {
        &self.stats
    }
    pub fn fwb(&self) -> bool {
        self.fmt.fwb()
    }
    /// The table memory (the same handle the table was created with).
    pub fn memory(&self) -> &M {
        &self.mem
    }

    pub(super) fn check_range(&self, ipa: Ipa, size: u64) -> Result<(u64, u64), Stage2Error> {
        if size == 0 || !ipa.is_aligned(PAGE_SIZE) || !size.is_multiple_of(PAGE_SIZE) {
            return Err(Stage2Error::Misaligned);
        }
        let end = ipa
            .as_u64()
            .checked_add(size)
            .ok_or(Stage2Error::OutOfRange)?;
        if end > self.geo.ipa_limit() {
            return Err(Stage2Error::OutOfRange);
        }
        Ok((ipa.as_u64(), end))
    }

    fn check_pa(&self, pa: PhysAddr, size: u64) -> Result<(), Stage2Error> {
        if !pa.is_aligned(PAGE_SIZE) {
            return Err(Stage2Error::Misaligned);
        }
        match pa.as_u64().checked_add(size) {
            Some(end) if end <= self.geo.pa_limit() => Ok(()),
            _ => Err(Stage2Error::OutOfRange),
        }
    }

    /// Runs the counting phase of `op` over `[start, end)`.
    pub(super) fn pages_needed(
        &self,
        op: &dyn RangeOp,
        start: u64,
        end: u64,
    ) -> Result<usize, Stage2Error> {
        let mut v = CountPages { op, needed: 0 };
        walk(
            &self.mem,
            &self.geo,
            self.root,
            Ipa::new(start),
            Ipa::new(end),
            &mut v,
        )?;
        Ok(v.needed)
    }

    /// Fails with `CacheEmpty` unless `cache` holds the pages `op` needs.
    fn ensure_pages(
        &self,
        op: &dyn RangeOp,
        cache: &MemCache,
        start: u64,
        end: u64,
    ) -> Result<(), Stage2Error> {
        let needed = self.pages_needed(op, start, end)?;
        if cache.len() < needed {
            return Err(Stage2Error::CacheEmpty { needed });
        }
        Ok(())
    }

    /// Runs a committing visitor over `[start, end)` and completes its TLB maintenance.
    pub(super) fn commit<V>(&mut self, start: u64, end: u64, v: &mut V) -> Result<(), Stage2Error>
    where
        V: CommitVisitor<M, T>,
    {
        let Self {
            mem,
            tlb,
            geo,
            fmt,
            vmid,
            root,
            stats,
            ..
        } = self;
        let mut cx = Ctx {
            w: Writer::new(&*mem, &*tlb, *vmid, stats),
            fmt: *fmt,
        };
        let mut adapter = Adapter { cx: &mut cx, v };
        let r = walk(
            &*mem,
            geo,
            *root,
            Ipa::new(start),
            Ipa::new(end),
            &mut adapter,
        );
        cx.w.finish();
        r
    }

    /// Number of cache pages [`Stage2Table::map`] would take for this mapping now.
    pub fn pages_needed_for_map(
        &self,
        ipa: Ipa,
        pa: PhysAddr,
        size: u64,
        attrs: LeafAttrs,
    ) -> Result<usize, Stage2Error> {
        let (s, e) = self.check_range(ipa, size)?;
        self.check_pa(pa, size)?;
        let op = MapOp {
            ipa: s,
            pa: pa.as_u64(),
            attrs,
            fmt: self.fmt,
        };
        self.pages_needed(&op, s, e)
    }

    /// Maps `[ipa, ipa + size)` to `[pa, pa + size)` with the largest leaves the alignment of
    /// IPA, PA and size allows (1 GiB, 2 MiB, 4 KiB). Existing mappings in the range are
    /// replaced (break-before-make where valid ones change; tables replaced by a block are
    /// freed into `cache`; blocks only partly covered are split first, so mappings outside the
    /// range are kept). New table pages come only from `cache`: with too few pages, nothing is
    /// changed and `CacheEmpty { needed }` is returned.
    pub fn map(
        &mut self,
        cache: &mut MemCache,
        ipa: Ipa,
        pa: PhysAddr,
        size: u64,
        attrs: LeafAttrs,
    ) -> Result<(), Stage2Error> {
        let (s, e) = self.check_range(ipa, size)?;
        self.check_pa(pa, size)?;
        let op = MapOp {
            ipa: s,
            pa: pa.as_u64(),
            attrs,
            fmt: self.fmt,
        };
        self.ensure_pages(&op, cache, s, e)?;
        self.commit(s, e, &mut MapCommit { op, cache })
    }

    /// Removes every mapping in `[ipa, ipa + size)`, splitting blocks that straddle the range
    /// ends (which may need cache pages), and frees tables that become empty into `cache`.
    pub fn unmap(&mut self, cache: &mut MemCache, ipa: Ipa, size: u64) -> Result<(), Stage2Error> {
        let (s, e) = self.check_range(ipa, size)?;
        self.ensure_pages(&Unmap, cache, s, e)?;
        self.commit(s, e, &mut UnmapCommit { cache })
    }

    /// Sets the permissions of every mapped page in `[ipa, ipa + size)` (unmapped parts stay
    /// unmapped; devices stay execute-never; the dirty-log write-protect mark is cleared).
    /// Relaxing needs no TLB maintenance; restricting invalidates before returning. Blocks that
    /// straddle the range ends are split first.
    pub fn set_perms(
        &mut self,
        cache: &mut MemCache,
        ipa: Ipa,
        size: u64,
        perms: S2Perms,
    ) -> Result<(), Stage2Error> {
        let (s, e) = self.check_range(ipa, size)?;
        self.ensure_pages(&Unmap, cache, s, e)?;
        self.commit(s, e, &mut PermCommit { perms, cache })
    }

    /// Splits every block in `[ipa, ipa + size)` down to `to_level` (2: 2 MiB blocks, 3: 4 KiB
    /// pages); translations do not change.
    pub fn split(
        &mut self,
        cache: &mut MemCache,
        ipa: Ipa,
        size: u64,
        to_level: u8,
    ) -> Result<(), Stage2Error> {
        let (s, e) = self.check_range(ipa, size)?;
        let to_level = to_level.clamp(2, LAST_LEVEL);
        let op = SplitOp { to_level };
        self.ensure_pages(&op, cache, s, e)?;
        self.commit(s, e, &mut SplitCommit { to_level, cache })
    }

    /// Merges tables wholly inside `[ipa, ipa + size)` back into blocks wherever all 512 leaves
    /// below are valid, physically contiguous, aligned to the block size and have identical
    /// attributes (bottom-up, so 4 KiB pages can become a 2 MiB and then a 1 GiB block). Freed
    /// tables go into `cache`.
    pub fn merge(&mut self, cache: &mut MemCache, ipa: Ipa, size: u64) -> Result<(), Stage2Error> {
        let (s, e) = self.check_range(ipa, size)?;
        self.commit(s, e, &mut MergeCommit { cache })
    }

    /// The leaf entry translating `ipa`, with its descriptor.
    pub(super) fn leaf_entry(&self, ipa: Ipa) -> Option<(Entry, u64)> {
        if ipa.as_u64() >= self.geo.ipa_limit() {
            return None;
        }
        let page = ipa.align_down(PAGE_SIZE);
        let mut v = Lookup { found: None };
        walk(
            &self.mem,
            &self.geo,
            self.root,
            page,
            page + PAGE_SIZE,
            &mut v,
        )
        .ok()?;
        v.found
    }

    /// Translates one IPA.
    pub fn translate(&self, ipa: Ipa) -> Option<Translation> {
        let (e, desc) = self.leaf_entry(ipa)?;
        let block_pa = leaf_oa(desc);
        Some(Translation {
            pa: PhysAddr::new(block_pa + (ipa.as_u64() - e.base)),
            level: e.level,
            attrs: self.fmt.leaf_attrs(desc),
            block_ipa: Ipa::new(e.base),
            block_pa: PhysAddr::new(block_pa),
        })
    }

    /// Calls `f` for every leaf intersecting `[ipa, ipa + size)`, in IPA order.
    pub fn for_each_leaf(
        &self,
        ipa: Ipa,
        size: u64,
        f: &mut dyn FnMut(Leaf),
    ) -> Result<(), Stage2Error> {
        let (s, e) = self.check_range(ipa, size)?;
        let mut v = Leaves { fmt: self.fmt, f };
        walk(
            &self.mem,
            &self.geo,
            self.root,
            Ipa::new(s),
            Ipa::new(e),
            &mut v,
        )
    }

    /// Checks the table's internal invariants (tests and debugging): every table descriptor's
    /// count equals the number of non-zero entries below it, no table is empty, and the page
    /// and leaf counters match the tables. Returns the number of table pages found.
    pub fn check_invariants(&self) -> Result<u64, &'static str> {
        let mut v = Audit {
            tables: 0,
            mapped: [0; 3],
            error: None,
        };
        let end = Ipa::new(self.geo.ipa_limit());
        walk(&self.mem, &self.geo, self.root, Ipa::new(0), end, &mut v)
            .map_err(|_| "walk failed")?;
        if let Some(e) = v.error {
            return Err(e);
        }
        let pages = v.tables + self.geo.root_pages() as u64;
        if pages != self.stats.table_pages {
            return Err("table page counter does not match the tables");
        }
        if v.mapped != self.stats.mapped {
            return Err("leaf counters do not match the tables");
        }
        Ok(pages)
    }
}

// ---------------------------------------------------------------------------------------------
// The writer: the one place that stores into live tables.

/// Maximum IPA invalidations batched before a whole-VMID invalidation is used instead.
const PENDING_MAX: usize = 16;

/// When the TLB maintenance of a restricting or invalidating change happens.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Inval {
    /// Before `set_entry` returns.
    Now,
    /// Batched; done at the latest by `Writer::finish` at the end of the operation (and before
    /// any table page is freed or any valid entry is made).
    Deferred,
}

pub(super) struct Writer<'a, M: ?Sized, T: ?Sized> {
    mem: &'a M,
    tlb: &'a T,
    vmid: Vmid,
    pub(super) stats: &'a mut Stage2Stats,
    pending: [(u64, u8); PENDING_MAX],
    pending_len: usize,
    pending_overflow: bool,
    unpublished: bool,
}

impl<'a, M: TableMemory + ?Sized, T: Stage2Tlb + ?Sized> Writer<'a, M, T> {
    pub(super) fn new(mem: &'a M, tlb: &'a T, vmid: Vmid, stats: &'a mut Stage2Stats) -> Self {
        Self {
            mem,
            tlb,
            vmid,
            stats,
            pending: [(0, 0); PENDING_MAX],
            pending_len: 0,
            pending_overflow: false,
            unpublished: false,
        }
    }

    fn store(&mut self, table: PhysAddr, index: usize, value: u64) {
        store_entry(self.mem, table, index, value);
        self.unpublished = true;
    }

    /// Stores `new` into the entry `e`. This is the only function that writes a descriptor of
    /// a live table (a table reachable from the PGD), and so the only one that may overwrite a
    /// valid entry. What it does depends on the change (Arm ARM D8.16.1, "Using
    /// break-before-make when updating translation table entries"; the sequence is Linux's
    /// `stage2_try_break_pte` + `stage2_make_pte` and Hafnium's `mm_replace_entry`):
    ///
    /// - invalid -> anything: store (TLBs never hold translations that fault).
    /// - permissions/AF only grow (same output, type, size): store, no break and no TLBI. A
    ///   PE that cached the old entry may keep it and take a permission fault on it; the
    ///   fault path then invalidates that IPA on that PE ([`Writer::invalidate_local`]).
    /// - permissions shrink: store, then invalidate the IPA (no break is needed for a
    ///   permission change, but the old, more permissive entry must not outlive the operation).
    /// - valid -> invalid: store 0, then invalidate.
    /// - any other valid -> valid change (new output address, memory type, block size, block
    ///   <-> table): break-before-make:
    ///   1. store the invalid entry;
    ///   2. `DSB ISHST` so every walker sees it;
    ///   3. if the old entry was a leaf: `TLBI IPAS2E1IS` for the IPA with the leaf's level
    ///      as TTL hint, `DSB ISH`, `TLBI VMALLE1IS` (combined stage-1+2 entries are tagged by
    ///      VA, so they cannot be invalidated by IPA), `DSB ISH`, `ISB`;
    ///      if the old entry was a table with entries below it: `TLBI VMALLS12E1IS` for the
    ///      VMID (the leaves below may sit at several levels and the walk caches hold the
    ///      table), `DSB ISH`, `ISB`; an empty table only needs `TLBI IPAS2E1IS` without a
    ///      level hint (which covers walk-cache entries);
    ///   4. store the new entry (release).
    ///
    /// When the old entry was a table, the caller frees the unhooked subtree only after this
    /// returns, i.e. after the invalidation completed. The parent's entry count (kept in
    /// the parent descriptor's ignored bits) is updated when the entry turns zero or non-zero.
    pub(super) fn set_entry(&mut self, e: &Entry, new: u64, when: Inval) -> u64 {
        let old = load(self.mem, e.table, e.index);
        let change = classify(old, new, e.level);
        match change {
            Change::None => return old,
            Change::FromInvalid => {
                // A batched invalidation may still cover this slot's previous entry.
                self.flush();
                self.sync_icache(old, new, e.level);
                self.store(e.table, e.index, new);
            }
            Change::SoftwareOnly => self.store(e.table, e.index, new),
            Change::Relax => {
                self.sync_icache(old, new, e.level);
                self.store(e.table, e.index, new);
                self.stats.relaxed += 1;
            }
            Change::Restrict => {
                // A restriction may still add execute permission (RW -> RX).
                self.sync_icache(old, new, e.level);
                self.store(e.table, e.index, new);
                self.stats.restricted += 1;
                self.invalidate_leaf(e.base, e.level, when);
            }
            Change::ToInvalid => {
                self.store(e.table, e.index, 0);
                if is_table(old, e.level) {
                    self.invalidate_table(e.base, old);
                } else {
                    self.invalidate_leaf(e.base, e.level, when);
                }
            }
            Change::BreakBeforeMake => {
                self.sync_icache(old, new, e.level);
                self.store(e.table, e.index, 0);
                if is_table(old, e.level) {
                    self.invalidate_table(e.base, old);
                } else {
                    self.invalidate_leaf(e.base, e.level, Inval::Now);
                }
                // Nothing batched may still cover this IPA when the new entry appears.
                self.flush();
                self.store(e.table, e.index, new);
                self.stats.bbm += 1;
            }
        }
        if (old == 0) != (new == 0)
            && let Some(p) = e.parent
        {
            let pd = load(self.mem, p.table, p.index);
            let count = table_count(pd);
            let count = if new == 0 { count - 1 } else { count + 1 };
            debug_assert!(is_table(pd, p.level) && count <= ENTRIES_PER_TABLE);
            self.store(p.table, p.index, with_count(pd, count));
        }
        if is_leaf(old, e.level) {
            self.stats.mapped[leaf_size_index(e.level)] -= 1;
        }
        if is_leaf(new, e.level) {
            self.stats.mapped[leaf_size_index(e.level)] += 1;
            if matches!(change, Change::FromInvalid | Change::BreakBeforeMake) {
                self.stats.installed[leaf_size_index(e.level)] += 1;
            }
        }
        old
    }

    /// Before `new` replaces `old` at `level`: when `new` is a leaf that makes memory
    /// executable to the guest which was not executable at this entry before (a new leaf, a
    /// new output address, execute permission added), the instruction caches are invalidated
    /// for its whole output range (see [`Stage2Tlb::icache_inval_pou`]). Split blocks keep
    /// their addresses and permissions and do not come here for their new leaves.
    fn sync_icache(&mut self, old: u64, new: u64, level: u8) {
        let exec = |d: u64| is_leaf(d, level) && leaf_perms(d).exec;
        if exec(new) && !(exec(old) && leaf_oa(old) == leaf_oa(new)) {
            self.tlb
                .icache_inval_pou(PhysAddr::new(leaf_oa(new)), level_size(level));
            self.stats.icache_syncs += 1;
        }
    }

    /// Invalidates one leaf translation at `level` for `ipa`.
    fn invalidate_leaf(&mut self, ipa: u64, level: u8, when: Inval) {
        if when == Inval::Deferred {
            if self.pending_len < PENDING_MAX {
                self.pending[self.pending_len] = (ipa, level);
                self.pending_len += 1;
            } else {
                self.pending_overflow = true;
            }
            return;
        }
        self.tlb.dsb_ishst();
        self.unpublished = false;
        self.tlb
            .tlbi_ipas2e1is(self.vmid, Ipa::new(ipa), Some(level));
        self.tlb.dsb_ish();
        self.tlb.tlbi_vmalle1is(self.vmid);
        self.tlb.dsb_ish();
        self.tlb.isb();
        self.stats.tlbi_ipa += 1;
        self.stats.tlbi_vmalle1 += 1;
    }

    /// Invalidates after a table descriptor `old` at `ipa` was replaced.
    fn invalidate_table(&mut self, ipa: u64, old: u64) {
        if table_count(old) == 0 && self.pending_len == 0 && !self.pending_overflow {
            // Nothing below: only walk-cache entries for this IPA range can exist.
            self.tlb.dsb_ishst();
            self.unpublished = false;
            self.tlb.tlbi_ipas2e1is(self.vmid, Ipa::new(ipa), None);
            self.tlb.dsb_ish();
            self.tlb.isb();
            self.stats.tlbi_ipa += 1;
        } else {
            // Also completes anything batched.
            self.invalidate_vmid();
        }
    }

    /// Drops this PE's TLB entries for `ipa` (a leaf at `level`, if known): `TLBI IPAS2E1`,
    /// `DSB NSH`, `TLBI VMALLE1`, `DSB NSH`, `ISB` — the stage-2 entry first, so that no
    /// combined entry can refill from it (Linux's `__kvm_tlb_flush_vmid_ipa_nsh`). Used on a
    /// stage-2 permission fault, after the fix (if any) was published: the faulting entry may
    /// stay in the faulting PE's TLB, and only there, until invalidated.
    pub(super) fn invalidate_local(&mut self, ipa: u64, level: Option<u8>) {
        self.flush();
        if self.unpublished {
            self.tlb.dsb_ishst();
            self.unpublished = false;
        }
        self.tlb.tlbi_ipas2e1(self.vmid, Ipa::new(ipa), level);
        self.tlb.dsb_nsh();
        self.tlb.tlbi_vmalle1(self.vmid);
        self.tlb.dsb_nsh();
        self.tlb.isb();
        self.stats.tlbi_local += 1;
    }

    /// `TLBI VMALLS12E1IS` for the VMID; completes batched invalidations too.
    pub(super) fn invalidate_vmid(&mut self) {
        self.tlb.dsb_ishst();
        self.unpublished = false;
        self.tlb.tlbi_vmalls12e1is(self.vmid);
        self.tlb.dsb_ish();
        self.tlb.isb();
        self.stats.tlbi_vmalls12 += 1;
        self.pending_len = 0;
        self.pending_overflow = false;
    }

    /// Completes batched invalidations.
    fn flush(&mut self) {
        if self.pending_overflow {
            self.invalidate_vmid();
        } else if self.pending_len > 0 {
            self.tlb.dsb_ishst();
            self.unpublished = false;
            for &(ipa, level) in &self.pending[..self.pending_len] {
                self.tlb
                    .tlbi_ipas2e1is(self.vmid, Ipa::new(ipa), Some(level));
            }
            self.tlb.dsb_ish();
            self.tlb.tlbi_vmalle1is(self.vmid);
            self.tlb.dsb_ish();
            self.tlb.isb();
            self.stats.tlbi_ipa += self.pending_len as u64;
            self.stats.tlbi_vmalle1 += 1;
            self.pending_len = 0;
        }
    }

    /// Ends an operation: completes batched invalidations and makes new entries visible to the
    /// table walkers (`DSB ISHST`, as Linux does after `kvm_pgtable_stage2_map`) before the
    /// lock is released and the guest resumes.
    pub(super) fn finish(&mut self) {
        self.flush();
        if self.unpublished {
            self.tlb.dsb_ishst();
            self.unpublished = false;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shared context of the committing visitors.

pub(super) struct Ctx<'a, M: ?Sized, T: ?Sized> {
    pub(super) w: Writer<'a, M, T>,
    pub(super) fmt: DescFormat,
}

impl<M: TableMemory + ?Sized, T: Stage2Tlb + ?Sized> Ctx<'_, M, T> {
    /// Hooks a fresh empty table into the invalid entry `e`.
    fn install_table(&mut self, cache: &mut MemCache, e: &Entry) -> Result<(), Stage2Error> {
        debug_assert!(!is_valid(e.desc) && e.level < LAST_LEVEL);
        let page = cache
            .pop(self.w.mem)
            .ok_or(Stage2Error::CacheEmpty { needed: 1 })?;
        self.w.stats.table_pages += 1;
        self.w.set_entry(e, table_desc(page, 0), Inval::Now);
        Ok(())
    }

    /// Replaces the block `e` by a table of 512 entries one level down that translate exactly
    /// as the block did (break-before-make on the block).
    pub(super) fn split_block(
        &mut self,
        cache: &mut MemCache,
        e: &Entry,
    ) -> Result<(), Stage2Error> {
        debug_assert!(is_leaf(e.desc, e.level) && e.level < LAST_LEVEL);
        let page = cache
            .pop(self.w.mem)
            .ok_or(Stage2Error::CacheEmpty { needed: 1 })?;
        let child_level = e.level + 1;
        let child_size = level_size(child_level);
        let oa = leaf_oa(e.desc);
        // The new table is not reachable yet: plain stores.
        for i in 0..ENTRIES_PER_TABLE {
            let d = leaf_like(e.desc, oa + i as u64 * child_size, child_level);
            store_entry(self.w.mem, page, i, d);
        }
        self.w.stats.table_pages += 1;
        self.w.stats.mapped[leaf_size_index(child_level)] += ENTRIES_PER_TABLE as u64;
        self.w
            .set_entry(e, table_desc(page, ENTRIES_PER_TABLE), Inval::Now);
        self.w.stats.splits += 1;
        Ok(())
    }

    /// Frees the subtree rooted at the (already unhooked and invalidated) table `table` at
    /// `level` into `cache`, page by page, bottom-up.
    fn free_subtree(&mut self, cache: &mut MemCache, table: PhysAddr, level: u8) {
        for i in 0..ENTRIES_PER_TABLE {
            let d = load(self.w.mem, table, i);
            if is_table(d, level) {
                self.free_subtree(cache, table_addr(d), level + 1);
            } else if is_leaf(d, level) {
                self.w.stats.mapped[leaf_size_index(level)] -= 1;
            }
        }
        cache.push(self.w.mem, table);
        self.w.stats.table_pages -= 1;
    }

    /// Replaces the entry `e` by `new` and frees what it pointed to, if a table.
    fn replace_and_free(&mut self, cache: &mut MemCache, e: &Entry, new: u64, when: Inval) {
        let old = self.w.set_entry(e, new, when);
        if is_table(old, e.level) {
            self.free_subtree(cache, table_addr(old), e.level + 1);
        }
    }
}

/// A committing visitor: like [`Visitor`] but with the shared context.
pub(super) trait CommitVisitor<M: TableMemory, T: Stage2Tlb> {
    fn table_pre(&mut self, _cx: &mut Ctx<'_, M, T>, _e: &Entry) -> Result<Flow, Stage2Error> {
        Ok(Flow::Continue)
    }
    fn leaf(&mut self, _cx: &mut Ctx<'_, M, T>, _e: &Entry) -> Result<Flow, Stage2Error> {
        Ok(Flow::Continue)
    }
    fn table_post(&mut self, _cx: &mut Ctx<'_, M, T>, _e: &Entry) -> Result<Flow, Stage2Error> {
        Ok(Flow::Continue)
    }
}

struct Adapter<'c, 'a, M: TableMemory, T: Stage2Tlb, V> {
    cx: &'c mut Ctx<'a, M, T>,
    v: &'c mut V,
}

impl<M: TableMemory, T: Stage2Tlb, V: CommitVisitor<M, T>> Visitor<M> for Adapter<'_, '_, M, T, V> {
    fn table_pre(&mut self, _mem: &M, e: &Entry) -> Result<Flow, Stage2Error> {
        self.v.table_pre(self.cx, e)
    }
    fn leaf(&mut self, _mem: &M, e: &Entry) -> Result<Flow, Stage2Error> {
        self.v.leaf(self.cx, e)
    }
    fn table_post(&mut self, _mem: &M, e: &Entry) -> Result<Flow, Stage2Error> {
        self.v.table_post(self.cx, e)
    }
}

// ---------------------------------------------------------------------------------------------
// Counting phase.

/// What an operation does to an entry that is not (yet) a table.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Existing {
    Invalid,
    Leaf,
}

/// The allocation-relevant part of an operation.
pub(super) trait RangeOp {
    /// Does the operation have to put a table at entry (`level`, `base`) whose `[start, end)`
    /// it touches, given what is there now?
    fn needs_table(&self, level: u8, base: u64, start: u64, end: u64, now: Existing) -> bool;
    /// Does it go into an existing table there (rather than replacing it)?
    fn enters_table(&self, level: u8, base: u64, start: u64, end: u64) -> bool;
}

fn covers(level: u8, base: u64, start: u64, end: u64) -> bool {
    start == base && end == base + level_size(level)
}

/// Pages needed below a table that would be created at `level - 1` for `[start, end)`; its
/// entries would be `now` (invalid for a fresh table, leaves for a split block).
fn virtual_pages(op: &dyn RangeOp, level: u8, start: u64, end: u64, now: Existing) -> usize {
    if level >= LAST_LEVEL {
        return 0;
    }
    let size = level_size(level);
    let mut needed = 0;
    let mut addr = start;
    while addr < end {
        let base = addr & !(size - 1);
        let piece_end = end.min(base + size);
        if op.needs_table(level, base, addr, piece_end, now) {
            needed += 1 + virtual_pages(op, level + 1, addr, piece_end, now);
        }
        addr = piece_end;
    }
    needed
}

struct CountPages<'o> {
    op: &'o dyn RangeOp,
    needed: usize,
}

impl<M: TableMemory + ?Sized> Visitor<M> for CountPages<'_> {
    fn table_pre(&mut self, _mem: &M, e: &Entry) -> Result<Flow, Stage2Error> {
        Ok(if self.op.enters_table(e.level, e.base, e.start, e.end) {
            Flow::Continue
        } else {
            Flow::Skip
        })
    }
    fn leaf(&mut self, _mem: &M, e: &Entry) -> Result<Flow, Stage2Error> {
        let now = if is_valid(e.desc) {
            Existing::Leaf
        } else {
            Existing::Invalid
        };
        if e.level < LAST_LEVEL && self.op.needs_table(e.level, e.base, e.start, e.end, now) {
            self.needed += 1 + virtual_pages(self.op, e.level + 1, e.start, e.end, now);
        }
        Ok(Flow::Skip)
    }
}

// ---------------------------------------------------------------------------------------------
// Map.

pub(super) struct MapOp {
    pub(super) ipa: u64,
    pub(super) pa: u64,
    pub(super) attrs: LeafAttrs,
    pub(super) fmt: DescFormat,
}

impl MapOp {
    fn pa_at(&self, ipa: u64) -> u64 {
        self.pa + (ipa - self.ipa)
    }
    /// A leaf at (`level`, `base`) can serve `[start, end)`.
    fn fits(&self, level: u8, base: u64, start: u64, end: u64) -> bool {
        level_allows_leaf(level)
            && covers(level, base, start, end)
            && self.pa_at(base) & (level_size(level) - 1) == 0
    }
    fn leaf_desc(&self, level: u8, base: u64) -> u64 {
        self.fmt.leaf(self.pa_at(base), level, self.attrs)
    }
}

impl RangeOp for MapOp {
    fn needs_table(&self, level: u8, base: u64, start: u64, end: u64, _now: Existing) -> bool {
        !self.fits(level, base, start, end)
    }
    fn enters_table(&self, level: u8, base: u64, start: u64, end: u64) -> bool {
        !self.fits(level, base, start, end)
    }
}

pub(super) struct MapCommit<'c> {
    pub(super) op: MapOp,
    pub(super) cache: &'c mut MemCache,
}

impl<M: TableMemory, T: Stage2Tlb> CommitVisitor<M, T> for MapCommit<'_> {
    fn table_pre(&mut self, cx: &mut Ctx<'_, M, T>, e: &Entry) -> Result<Flow, Stage2Error> {
        if self.op.fits(e.level, e.base, e.start, e.end) {
            let new = self.op.leaf_desc(e.level, e.base);
            cx.replace_and_free(self.cache, e, new, Inval::Now);
            return Ok(Flow::Skip);
        }
        Ok(Flow::Continue)
    }
    fn leaf(&mut self, cx: &mut Ctx<'_, M, T>, e: &Entry) -> Result<Flow, Stage2Error> {
        if self.op.fits(e.level, e.base, e.start, e.end) {
            cx.w.set_entry(e, self.op.leaf_desc(e.level, e.base), Inval::Now);
            Ok(Flow::Skip)
        } else if !is_valid(e.desc) {
            cx.install_table(self.cache, e)?;
            Ok(Flow::Continue)
        } else {
            cx.split_block(self.cache, e)?;
            Ok(Flow::Continue)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Unmap and permission changes (same allocation needs: split blocks that straddle the ends).

struct Unmap;

impl RangeOp for Unmap {
    fn needs_table(&self, level: u8, base: u64, start: u64, end: u64, now: Existing) -> bool {
        now == Existing::Leaf && !covers(level, base, start, end)
    }
    /// A wholly covered table is unhooked (unmap) or has only wholly covered leaves below it
    /// (permissions): nothing below it needs pages.
    fn enters_table(&self, level: u8, base: u64, start: u64, end: u64) -> bool {
        !covers(level, base, start, end)
    }
}

struct UnmapCommit<'c> {
    cache: &'c mut MemCache,
}

impl<M: TableMemory, T: Stage2Tlb> CommitVisitor<M, T> for UnmapCommit<'_> {
    fn table_pre(&mut self, cx: &mut Ctx<'_, M, T>, e: &Entry) -> Result<Flow, Stage2Error> {
        if e.fully_covered() {
            // Unhook the whole subtree at once (one VMID-wide invalidation), then free it.
            cx.replace_and_free(self.cache, e, 0, Inval::Now);
            return Ok(Flow::Skip);
        }
        Ok(Flow::Continue)
    }
    fn leaf(&mut self, cx: &mut Ctx<'_, M, T>, e: &Entry) -> Result<Flow, Stage2Error> {
        if !is_valid(e.desc) {
            Ok(Flow::Skip)
        } else if e.fully_covered() {
            cx.w.set_entry(e, 0, Inval::Deferred);
            Ok(Flow::Skip)
        } else {
            cx.split_block(self.cache, e)?;
            Ok(Flow::Continue)
        }
    }
    fn table_post(&mut self, cx: &mut Ctx<'_, M, T>, e: &Entry) -> Result<Flow, Stage2Error> {
        if table_count(e.desc) == 0 {
            cx.replace_and_free(self.cache, e, 0, Inval::Now);
        }
        Ok(Flow::Continue)
    }
}

struct PermCommit<'c> {
    perms: S2Perms,
    cache: &'c mut MemCache,
}

impl<M: TableMemory, T: Stage2Tlb> CommitVisitor<M, T> for PermCommit<'_> {
    fn leaf(&mut self, cx: &mut Ctx<'_, M, T>, e: &Entry) -> Result<Flow, Stage2Error> {
        if !is_valid(e.desc) {
            Ok(Flow::Skip)
        } else if e.fully_covered() {
            let new = with_perms(cx.fmt, e.desc, self.perms, false);
            cx.w.set_entry(e, new, Inval::Deferred);
            Ok(Flow::Skip)
        } else {
            cx.split_block(self.cache, e)?;
            Ok(Flow::Continue)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Split and merge.

pub(super) struct SplitOp {
    pub(super) to_level: u8,
}

impl RangeOp for SplitOp {
    fn needs_table(&self, level: u8, _base: u64, _start: u64, _end: u64, now: Existing) -> bool {
        now == Existing::Leaf && level < self.to_level
    }
    fn enters_table(&self, _level: u8, _base: u64, _start: u64, _end: u64) -> bool {
        true
    }
}

pub(super) struct SplitCommit<'c> {
    pub(super) to_level: u8,
    pub(super) cache: &'c mut MemCache,
}

impl<M: TableMemory, T: Stage2Tlb> CommitVisitor<M, T> for SplitCommit<'_> {
    fn leaf(&mut self, cx: &mut Ctx<'_, M, T>, e: &Entry) -> Result<Flow, Stage2Error> {
        if is_valid(e.desc) && e.level < self.to_level {
            cx.split_block(self.cache, e)?;
            Ok(Flow::Continue)
        } else {
            Ok(Flow::Skip)
        }
    }
}

pub(super) struct MergeCommit<'c> {
    pub(super) cache: &'c mut MemCache,
}

/// The block descriptor that can replace the table at `table` (level `child_level`), if its
/// 512 entries are leaves with contiguous, suitably aligned output and identical attributes.
fn mergeable<M: TableMemory + ?Sized>(mem: &M, table: PhysAddr, child_level: u8) -> Option<u64> {
    let first = load(mem, table, 0);
    if !is_leaf(first, child_level) {
        return None;
    }
    let oa = leaf_oa(first);
    if oa & (level_size(child_level - 1) - 1) != 0 {
        return None;
    }
    let attrs = leaf_attr_bits(first);
    let step = level_size(child_level);
    for i in 1..ENTRIES_PER_TABLE {
        let d = load(mem, table, i);
        if !is_leaf(d, child_level)
            || leaf_oa(d) != oa + i as u64 * step
            || leaf_attr_bits(d) != attrs
        {
            return None;
        }
    }
    Some(leaf_like(first, oa, child_level - 1))
}

impl<M: TableMemory, T: Stage2Tlb> CommitVisitor<M, T> for MergeCommit<'_> {
    fn table_post(&mut self, cx: &mut Ctx<'_, M, T>, e: &Entry) -> Result<Flow, Stage2Error> {
        if level_allows_leaf(e.level)
            && e.fully_covered()
            && let Some(block) = mergeable(cx.w.mem, table_addr(e.desc), e.level + 1)
        {
            cx.replace_and_free(self.cache, e, block, Inval::Now);
            cx.w.stats.merges += 1;
        }
        Ok(Flow::Continue)
    }
}

// ---------------------------------------------------------------------------------------------
// Read-only visitors.

struct Lookup {
    found: Option<(Entry, u64)>,
}

impl<M: TableMemory + ?Sized> Visitor<M> for Lookup {
    fn leaf(&mut self, _mem: &M, e: &Entry) -> Result<Flow, Stage2Error> {
        if is_valid(e.desc) {
            self.found = Some((*e, e.desc));
        }
        Ok(Flow::Stop)
    }
}

struct Leaves<'f> {
    fmt: DescFormat,
    f: &'f mut dyn FnMut(Leaf),
}

impl<M: TableMemory + ?Sized> Visitor<M> for Leaves<'_> {
    fn leaf(&mut self, _mem: &M, e: &Entry) -> Result<Flow, Stage2Error> {
        if is_valid(e.desc) {
            (self.f)(Leaf {
                ipa: Ipa::new(e.base),
                pa: PhysAddr::new(leaf_oa(e.desc)),
                level: e.level,
                attrs: self.fmt.leaf_attrs(e.desc),
            });
        }
        Ok(Flow::Continue)
    }
}

struct Audit {
    tables: u64,
    mapped: [u64; 3],
    error: Option<&'static str>,
}

impl<M: TableMemory + ?Sized> Visitor<M> for Audit {
    fn table_post(&mut self, mem: &M, e: &Entry) -> Result<Flow, Stage2Error> {
        self.tables += 1;
        let child = table_addr(e.desc);
        let nonzero = (0..ENTRIES_PER_TABLE)
            .filter(|&i| load(mem, child, i) != 0)
            .count();
        if nonzero != table_count(e.desc) {
            self.error = Some("table descriptor count differs from its non-zero entries");
        }
        if nonzero == 0 {
            self.error = Some("an empty table was left in the tree");
        }
        Ok(Flow::Continue)
    }
    fn leaf(&mut self, _mem: &M, e: &Entry) -> Result<Flow, Stage2Error> {
        if is_valid(e.desc) {
            if !level_allows_leaf(e.level) {
                self.error = Some("a leaf at level 0");
            } else {
                self.mapped[leaf_size_index(e.level)] += 1;
            }
        } else if e.desc != 0 {
            self.error = Some("an invalid entry that is not zero");
        }
        Ok(Flow::Continue)
    }
}

/// Frees every table page below the root (post-order) after the whole VMID was invalidated.
struct FreeAll<'a, A: ?Sized> {
    alloc: &'a A,
    freed: u64,
}

impl<M: TableMemory + ?Sized, A: FrameAllocator + ?Sized> Visitor<M> for FreeAll<'_, A> {
    fn table_post(&mut self, _mem: &M, e: &Entry) -> Result<Flow, Stage2Error> {
        self.alloc.free_frames(table_addr(e.desc), 0);
        self.freed += 1;
        Ok(Flow::Continue)
    }
}
