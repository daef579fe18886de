//! A VM's stage-2 table behind its per-VM lock, with the fault path's top-up-and-retry loop.
#![forbid(unsafe_code)]

use spin::{Mutex, MutexGuard};

use super::Stage2Error;
use super::fault::{FaultOutcome, GuestMemoryMap, Stage2Fault};
use super::hw::{Stage2Tlb, TableMemory};
use super::memcache::MemCache;
use super::table::Stage2Table;
use super::vmid::Vmid;
use crate::mm::frame::FrameAllocator;

/// Attempts of [`LockedStage2::handle_fault`] / [`LockedStage2::with_retry`] before giving up
/// with `RetriesExhausted`. Each retry tops the cache up to what the last attempt reported it
/// needs, so a second attempt only fails when another thread keeps reshaping the table.
pub const MAX_RETRIES: usize = 4;

/// A stage-2 table shared by the vCPUs of one VM.
pub struct LockedStage2<M: TableMemory + Clone, T: Stage2Tlb> {
    mem: M,
    fault_pages: usize,
    table: Mutex<Stage2Table<M, T>>,
}

impl<M: TableMemory + Clone, T: Stage2Tlb> LockedStage2<M, T> {
    pub fn new(table: Stage2Table<M, T>) -> Self {
        Self {
            mem: table.memory().clone(),
            fault_pages: table.geometry().fault_cache_pages(),
            table: Mutex::new(table),
        }
    }

    /// Takes the per-VM table lock.
    pub fn lock(&self) -> MutexGuard<'_, Stage2Table<M, T>> {
        self.table.lock()
    }

    pub fn into_inner(self) -> Stage2Table<M, T> {
        self.table.into_inner()
    }

    /// Destroys the table (see [`Stage2Table::destroy`]) and returns its VMID.
    pub fn destroy<A: FrameAllocator + ?Sized>(self, alloc: &A) -> Vmid {
        self.into_inner().destroy(alloc)
    }

    /// The fault path of one vCPU: tops `cache` up (without the lock) to the worst case of a
    /// fault, takes the lock, handles the fault, and on `CacheEmpty` drops the lock, tops up to
    /// the reported need and retries. `NoMemory` when the allocator cannot supply the pages
    /// (the caller stops the VM or injects an abort).
    pub fn handle_fault<A: FrameAllocator + ?Sized>(
        &self,
        cache: &mut MemCache,
        alloc: &A,
        regions: &GuestMemoryMap,
        fault: &Stage2Fault,
    ) -> Result<FaultOutcome, Stage2Error> {
        let want = self.fault_pages;
        self.with_retry(cache, alloc, want, |t, c| t.handle_fault(c, regions, fault))
    }

    /// Runs `op` on the locked table with `cache` topped up to `min` pages first, retrying
    /// after a `CacheEmpty` with the cache topped up to the reported need. Use it for map,
    /// unmap, split and the other operations outside the fault path.
    pub fn with_retry<A, R>(
        &self,
        cache: &mut MemCache,
        alloc: &A,
        min: usize,
        mut op: impl FnMut(&mut Stage2Table<M, T>, &mut MemCache) -> Result<R, Stage2Error>,
    ) -> Result<R, Stage2Error>
    where
        A: FrameAllocator + ?Sized,
    {
        let mut want = min;
        for attempt in 0..MAX_RETRIES {
            cache.topup(alloc, &self.mem, want)?;
            let r = {
                let mut t = self.table.lock();
                if attempt > 0 {
                    t.stats.cache_retries += 1;
                }
                op(&mut t, cache)
            };
            match r {
                Err(Stage2Error::CacheEmpty { needed }) => want = want.max(needed),
                other => return other,
            }
        }
        Err(Stage2Error::RetriesExhausted)
    }
}
