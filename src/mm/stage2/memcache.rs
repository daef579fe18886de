//! The per-vCPU memory cache: zeroed pages set aside before the table lock is taken, so that
//! the map path never calls the frame allocator while it holds the lock (Linux's
//! `kvm_mmu_memory_cache` / `kvm_mmu_topup_memory_cache`).
//!
//! Pages are kept on an intrusive list threaded through the pages themselves (word 0 holds the
//! next page's address | 1), so the cache needs no heap and can take back any number of pages:
//! table pages freed by unmap/merge come back here, zeroed, and serve the next fault. Every page
//! in the cache is all-zero except that link word, which `pop` clears.
#![forbid(unsafe_code)]

use super::Stage2Error;
use super::hw::{TableMemory, load_entry, store_entry, zero_pages};
use crate::addr::PhysAddr;
use crate::mm::frame::FrameAllocator;

/// A list of zeroed 4 KiB pages owned by one vCPU (or by whoever does a table operation).
///
/// Drain it with [`MemCache::drain`] before dropping it; dropping a non-empty cache leaks its
/// pages.
#[derive(Debug, Default)]
pub struct MemCache {
    head: Option<PhysAddr>,
    len: usize,
}

const LINK_TAG: u64 = 1;

impl MemCache {
    pub const fn new() -> Self {
        Self { head: None, len: 0 }
    }

    /// Pages held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Fills the cache to at least `min` pages from `alloc` (order-0 blocks), zeroing each.
    /// Called without the table lock held. On allocator failure the pages obtained so far stay
    /// in the cache and `NoMemory` is returned.
    pub fn topup<A, M>(&mut self, alloc: &A, mem: &M, min: usize) -> Result<(), Stage2Error>
    where
        A: FrameAllocator + ?Sized,
        M: TableMemory + ?Sized,
    {
        while self.len < min {
            let pa = alloc.alloc_frames(0).ok_or(Stage2Error::NoMemory)?;
            self.push(mem, pa);
        }
        Ok(())
    }

    /// Returns pages to `alloc` until at most `keep` remain (after a large unmap refilled the
    /// cache). Called without the table lock held.
    pub fn trim<A, M>(&mut self, alloc: &A, mem: &M, keep: usize)
    where
        A: FrameAllocator + ?Sized,
        M: TableMemory + ?Sized,
    {
        while self.len > keep {
            match self.pop(mem) {
                Some(pa) => alloc.free_frames(pa, 0),
                None => break,
            }
        }
    }

    /// Returns every page to `alloc` (vCPU destruction).
    pub fn drain<A, M>(&mut self, alloc: &A, mem: &M)
    where
        A: FrameAllocator + ?Sized,
        M: TableMemory + ?Sized,
    {
        self.trim(alloc, mem, 0);
    }

    /// Takes one zeroed page.
    pub(super) fn pop<M: TableMemory + ?Sized>(&mut self, mem: &M) -> Option<PhysAddr> {
        let pa = self.head?;
        let link = load_entry(mem, pa, 0);
        self.head = if link & LINK_TAG != 0 {
            Some(PhysAddr::new(link & !LINK_TAG))
        } else {
            None
        };
        store_entry(mem, pa, 0, 0);
        self.len -= 1;
        Some(pa)
    }

    /// Adds a page, zeroing it. The page must be unreachable by any table walker: for a table
    /// page unhooked from a live table, only after the TLB invalidation that covers it has
    /// completed.
    pub(super) fn push<M: TableMemory + ?Sized>(&mut self, mem: &M, pa: PhysAddr) {
        zero_pages(mem, pa, 1);
        if let Some(next) = self.head {
            store_entry(mem, pa, 0, next.as_u64() | LINK_TAG);
        }
        self.head = Some(pa);
        self.len += 1;
    }
}
