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
#![forbid(unsafe_code)]

use alloc::vec;
use alloc::vec::Vec;

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
