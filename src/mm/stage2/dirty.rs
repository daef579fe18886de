//! Dirty logging: which 4 KiB pages of guest RAM the guest wrote since logging started.
//!
//! Start: every writable Normal-memory leaf in the logged range loses write permission and gets
//! the software `DIRTY_WP` mark (blocks stay blocks; one TLB invalidation batch). A write then
//! takes a stage-2 permission fault; the fault path (`Stage2Table::dirty_write`) splits a
//! block down to 4 KiB pages if needed, marks the one page dirty and makes it writable in place
//! (a relaxation: no break-before-make). New mappings made while logging are 4 KiB and
//! write-protected unless the fault was a write. Device mappings are never touched.
//! Stop: every `DIRTY_WP` leaf gets write permission back, then tables in the range are merged
//! back into blocks where possible.
//!
//! What the hypervisor itself writes into guest RAM on the guest's behalf (virtio devices:
//! received frames, disk reads, used rings) never goes through stage 2, so no fault marks it:
//! [`HypDirty`] records those pages while a log runs, and the VM merges them into the
//! [`DirtyLog`] when it stops. A log that missed them would lose data in a migration or a
//! snapshot built on it.
#![forbid(unsafe_code)]

use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::Stage2Error;
use super::desc::{MemType, is_valid, leaf_perms, with_perms};
use super::geometry::{LAST_LEVEL, level_size};
use super::hw::{Stage2Tlb, TableMemory};
use super::memcache::MemCache;
use super::table::{CommitVisitor, Ctx, Inval, MergeCommit, SplitCommit, SplitOp, Stage2Table};
use super::walk::{Entry, Flow};
use crate::addr::{Ipa, PAGE_SIZE};

/// A bitmap with one bit per 4 KiB page of an IPA range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirtyLog {
    base: Ipa,
    pages: usize,
    bits: Vec<u64>,
}

impl DirtyLog {
    /// A clean log for `[base, base + size)` (page aligned). Allocates the bitmap: create it
    /// before taking the table lock.
    pub fn new(base: Ipa, size: u64) -> Result<Self, Stage2Error> {
        if size == 0 || !base.is_aligned(PAGE_SIZE) || !size.is_multiple_of(PAGE_SIZE) {
            return Err(Stage2Error::Misaligned);
        }
        base.checked_add(size).ok_or(Stage2Error::OutOfRange)?;
        let pages = (size / PAGE_SIZE) as usize;
        Ok(Self {
            base,
            pages,
            bits: vec![0; pages.div_ceil(64)],
        })
    }

    pub fn base(&self) -> Ipa {
        self.base
    }
    pub fn size(&self) -> u64 {
        self.pages as u64 * PAGE_SIZE
    }
    pub fn contains(&self, ipa: Ipa) -> bool {
        ipa >= self.base && ipa.as_u64() - self.base.as_u64() < self.size()
    }

    fn index(&self, ipa: Ipa) -> Option<usize> {
        if self.contains(ipa) {
            Some(((ipa.as_u64() - self.base.as_u64()) / PAGE_SIZE) as usize)
        } else {
            None
        }
    }

    /// Marks the page holding `ipa`; false when outside the log.
    pub fn mark(&mut self, ipa: Ipa) -> bool {
        match self.index(ipa) {
            Some(i) => {
                self.bits[i / 64] |= 1 << (i % 64);
                true
            }
            None => false,
        }
    }

    pub fn is_dirty(&self, ipa: Ipa) -> bool {
        self.index(ipa)
            .is_some_and(|i| self.bits[i / 64] & (1 << (i % 64)) != 0)
    }

    /// Number of dirty pages.
    pub fn dirty_count(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// The dirty pages, in IPA order.
    pub fn dirty_pages(&self) -> impl Iterator<Item = Ipa> + '_ {
        (0..self.pages)
            .filter(|&i| self.bits[i / 64] & (1 << (i % 64)) != 0)
            .map(|i| self.base + i as u64 * PAGE_SIZE)
    }

    /// The raw bitmap (bit i of word i / 64 = page i).
    pub fn bitmap(&self) -> &[u64] {
        &self.bits
    }

    fn clear(&mut self) {
        self.bits.iter_mut().for_each(|w| *w = 0);
    }
}

/// The 4 KiB pages of `[base, base + size)` that the hypervisor wrote into guest RAM while a
/// dirty log runs (the writes that bypass stage 2). Writers call [`HypDirty::mark`] for every
/// range they are about to write; without a running log that is one load and one branch. The
/// bitmap is allocated the first time a log starts ([`HypDirty::prepare`]), so a VM that never
/// logs pays nothing else.
///
/// Marks are made before the bytes move, so a page is never written unmarked while the log
/// runs. A write that races with the start of the log itself (it checked the flag just before
/// the log started) may go unmarked: the start has no quiescent point to wait for device
/// writes in flight (KVM's memslot update waits for SRCU readers there).
pub struct HypDirty {
    base: Ipa,
    pages: usize,
    active: AtomicBool,
    bits: spin::Once<Vec<AtomicU64>>,
}

impl HypDirty {
    /// For the RAM range `[base, base + size)`. Allocates nothing.
    pub const fn new(base: Ipa, size: u64) -> Self {
        Self {
            base,
            pages: (size / PAGE_SIZE) as usize,
            active: AtomicBool::new(false),
            bits: spin::Once::new(),
        }
    }

    /// Whether a log runs (marks are being recorded).
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Allocates the bitmap if it is not yet (call before taking locks a log start holds).
    pub fn prepare(&self) {
        self.bits.call_once(|| {
            (0..self.pages.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect()
        });
    }

    /// Starts recording: clears the bitmap (allocating it if needed), then turns marking on.
    pub fn start(&self) {
        self.prepare();
        if let Some(bits) = self.bits.get() {
            bits.iter().for_each(|w| w.store(0, Ordering::Relaxed));
        }
        self.active.store(true, Ordering::Release);
    }

    /// Stops recording; what was marked stays until the next [`HypDirty::start`].
    pub fn stop(&self) {
        self.active.store(false, Ordering::Release);
    }

    /// The hypervisor is about to write `[ipa, ipa + len)` of guest RAM: marks its pages
    /// while a log runs. Pages outside the range are ignored.
    #[inline]
    pub fn mark(&self, ipa: Ipa, len: u64) {
        if self.active.load(Ordering::Relaxed) {
            self.mark_range(ipa, len);
        }
    }

    #[cold]
    fn mark_range(&self, ipa: Ipa, len: u64) {
        let Some(bits) = self.bits.get() else {
            return;
        };
        let base = self.base.as_u64();
        let start = ipa.as_u64().max(base);
        let end = ipa
            .as_u64()
            .saturating_add(len)
            .min(base + self.pages as u64 * PAGE_SIZE);
        if start >= end {
            return;
        }
        for p in (start - base) / PAGE_SIZE..(end - base).div_ceil(PAGE_SIZE) {
            let p = p as usize;
            bits[p / 64].fetch_or(1 << (p % 64), Ordering::Relaxed);
        }
    }

    /// Whether the page holding `ipa` is marked.
    pub fn is_dirty(&self, ipa: Ipa) -> bool {
        let Some(bits) = self.bits.get() else {
            return false;
        };
        let Some(off) = ipa.as_u64().checked_sub(self.base.as_u64()) else {
            return false;
        };
        let p = (off / PAGE_SIZE) as usize;
        p < self.pages && bits[p / 64].load(Ordering::Relaxed) & (1 << (p % 64)) != 0
    }

    /// How many pages are marked.
    pub fn count(&self) -> usize {
        self.bits.get().map_or(0, |b| {
            b.iter()
                .map(|w| w.load(Ordering::Relaxed).count_ones() as usize)
                .sum()
        })
    }

    /// Marks every page recorded here in `log` (pages outside the log are ignored).
    pub fn merge_into(&self, log: &mut DirtyLog) {
        let Some(bits) = self.bits.get() else {
            return;
        };
        for (w, word) in bits.iter().enumerate() {
            let mut m = word.load(Ordering::Relaxed);
            while m != 0 {
                let p = w * 64 + m.trailing_zeros() as usize;
                m &= m - 1;
                log.mark(self.base + p as u64 * PAGE_SIZE);
            }
        }
    }
}

/// Write-protects writable RAM leaves, marking them `DIRTY_WP`.
struct Protect;

impl<M: TableMemory, T: Stage2Tlb> CommitVisitor<M, T> for Protect {
    fn leaf(&mut self, cx: &mut Ctx<'_, M, T>, e: &Entry) -> Result<Flow, Stage2Error> {
        if is_valid(e.desc) {
            let attrs = cx.fmt.leaf_attrs(e.desc);
            if attrs.mem == MemType::Normal && attrs.perms.write {
                let mut perms = attrs.perms;
                perms.write = false;
                let new = with_perms(cx.fmt, e.desc, perms, true);
                cx.w.set_entry(e, new, Inval::Deferred);
            }
        }
        Ok(Flow::Skip)
    }
}

/// Gives write permission back to `DIRTY_WP` leaves (a relaxation: no TLB maintenance).
struct Unprotect;

impl<M: TableMemory, T: Stage2Tlb> CommitVisitor<M, T> for Unprotect {
    fn leaf(&mut self, cx: &mut Ctx<'_, M, T>, e: &Entry) -> Result<Flow, Stage2Error> {
        if is_valid(e.desc) && cx.fmt.leaf_attrs(e.desc).dirty_wp {
            let mut perms = leaf_perms(e.desc);
            perms.write = true;
            cx.w.set_entry(e, with_perms(cx.fmt, e.desc, perms, false), Inval::Now);
        }
        Ok(Flow::Skip)
    }
}

impl<M: TableMemory, T: Stage2Tlb> Stage2Table<M, T> {
    /// Starts dirty logging over the log's range: write-protects every writable RAM leaf in it.
    /// Needs no pages. Fails with `DirtyLogActive` if a log is already running.
    pub fn start_dirty_log(&mut self, log: DirtyLog) -> Result<(), Stage2Error> {
        if self.dirty.is_some() {
            return Err(Stage2Error::DirtyLogActive);
        }
        let (s, e) = self.check_range(log.base(), log.size())?;
        self.dirty = Some(log);
        self.commit(s, e, &mut Protect)
    }

    /// The running log, if any.
    pub fn dirty_log(&self) -> Option<&DirtyLog> {
        self.dirty.as_ref()
    }

    /// True when `ipa` is inside a running dirty log.
    pub fn dirty_logging(&self, ipa: Ipa) -> bool {
        self.dirty.as_ref().is_some_and(|l| l.contains(ipa))
    }

    /// Stops dirty logging: restores write permission on write-protected leaves and merges
    /// the range back into blocks where possible (freed tables go into `cache`). Returns the
    /// log with the pages dirtied since the start (or the last harvest).
    pub fn stop_dirty_log(&mut self, cache: &mut MemCache) -> Result<DirtyLog, Stage2Error> {
        let log = self.dirty.take().ok_or(Stage2Error::DirtyLogInactive)?;
        let (s, e) = self.check_range(log.base(), log.size())?;
        // A block that straddled the log's ends was write-protected whole, and may since have
        // been split: unprotect over the enclosing 1 GiB-aligned range (no leaf is larger).
        let us = s & !(level_size(1) - 1);
        let ue = e
            .checked_next_multiple_of(level_size(1))
            .unwrap_or(e)
            .min(self.geo.ipa_limit());
        self.commit(us, ue, &mut Unprotect)?;
        self.commit(s, e, &mut MergeCommit { cache })?;
        Ok(log)
    }

    /// Calls `f` for every page dirtied since the start or the last harvest, clears the log and
    /// write-protects those pages again (for iterative copying, as KVM_CLEAR_DIRTY_LOG does).
    pub fn harvest_dirty(&mut self, f: &mut dyn FnMut(Ipa)) -> Result<(), Stage2Error> {
        let Some(mut log) = self.dirty.take() else {
            return Err(Stage2Error::DirtyLogInactive);
        };
        let mut result = Ok(());
        for page in log.dirty_pages() {
            f(page);
            if let Err(e) = self.commit(page.as_u64(), page.as_u64() + PAGE_SIZE, &mut Protect) {
                result = Err(e);
            }
        }
        log.clear();
        self.dirty = Some(log);
        result
    }

    /// Handles a write to a `DIRTY_WP` leaf at `ipa`: splits a block down to 4 KiB pages (the
    /// rest stays write-protected), makes the page writable in place and marks it dirty.
    /// Returns whether a split was needed. `CacheEmpty` (nothing changed) when the cache holds
    /// fewer than the levels to split.
    pub(super) fn dirty_write(
        &mut self,
        cache: &mut MemCache,
        ipa: Ipa,
        level: u8,
    ) -> Result<bool, Stage2Error> {
        let page = ipa.align_down(PAGE_SIZE);
        let (s, e) = (page.as_u64(), page.as_u64() + PAGE_SIZE);
        let split = level < LAST_LEVEL;
        if split {
            let needed = (LAST_LEVEL - level) as usize;
            if cache.len() < needed {
                return Err(Stage2Error::CacheEmpty { needed });
            }
            debug_assert_eq!(
                self.pages_needed(
                    &SplitOp {
                        to_level: LAST_LEVEL
                    },
                    s,
                    e
                ),
                Ok(needed)
            );
            self.commit(
                s,
                e,
                &mut SplitCommit {
                    to_level: LAST_LEVEL,
                    cache,
                },
            )?;
        }
        self.commit(s, e, &mut Unprotect)?;
        if let Some(log) = self.dirty.as_mut()
            && log.mark(page)
        {
            self.stats.dirty_marked += 1;
        }
        Ok(split)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x4000_0000;

    #[test]
    fn hypervisor_writes_are_marked_only_while_a_log_runs_and_merge_into_it() {
        let h = HypDirty::new(Ipa::new(BASE), 64 * PAGE_SIZE);
        h.mark(Ipa::new(BASE), 8);
        assert!(!h.is_dirty(Ipa::new(BASE)), "no log: nothing recorded");
        h.start();
        // A range across two pages, one byte at the end of another, ranges partly or wholly
        // outside RAM.
        h.mark(Ipa::new(BASE + 0xff0), 0x20);
        h.mark(Ipa::new(BASE + 10 * PAGE_SIZE - 1), 1);
        h.mark(Ipa::new(BASE - 0x10), 0x20);
        h.mark(Ipa::new(BASE + 63 * PAGE_SIZE + 0x800), PAGE_SIZE);
        h.mark(Ipa::new(BASE + 64 * PAGE_SIZE), PAGE_SIZE);
        h.mark(Ipa::new(BASE + 20 * PAGE_SIZE), 0);
        h.stop();
        h.mark(Ipa::new(BASE + 30 * PAGE_SIZE), 8);
        let marked: Vec<u64> = (0..70)
            .filter(|&p| h.is_dirty(Ipa::new(BASE + p * PAGE_SIZE)))
            .collect();
        assert_eq!(marked, [0, 1, 9, 63]);
        assert_eq!(h.count(), 4);

        // Into the stage-2 log (which already holds a page the guest wrote).
        let mut log = DirtyLog::new(Ipa::new(BASE), 64 * PAGE_SIZE).unwrap();
        log.mark(Ipa::new(BASE + 5 * PAGE_SIZE));
        h.merge_into(&mut log);
        let pages: Vec<u64> = log
            .dirty_pages()
            .map(|i| (i.as_u64() - BASE) / PAGE_SIZE)
            .collect();
        assert_eq!(pages, [0, 1, 5, 9, 63]);

        // A new log starts clean.
        h.start();
        assert!(!h.is_dirty(Ipa::new(BASE)));
        h.mark(Ipa::new(BASE + 2 * PAGE_SIZE), 1);
        assert!(h.is_dirty(Ipa::new(BASE + 2 * PAGE_SIZE)));
    }
}
