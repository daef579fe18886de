//! Host test doubles for the stage-2 code, public so that the benchmark and integration tests
//! can use them: a fake physical memory that is at once the frame allocator and the table
//! memory (leak, double-free and wrong-order checking, poisoned fresh pages, failure
//! injection), and TLBs that do nothing or count. Nothing at EL2 uses this module.
// Only the `TableMemory` impl (whose methods the trait declares `unsafe`) is allowed unsafe;
// its bodies are safe code (the fake pages are ordinary boxes, every address is checked).
#![deny(unsafe_code)]

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use super::hw::{Stage2Tlb, TableMemory, TablePage};
use super::vmid::Vmid;
use crate::addr::{Ipa, PAGE_SIZE, PhysAddr};
use crate::mm::frame::FrameAllocator;

/// Value freshly allocated pages are filled with: bit 0 is set, so a table page used without
/// being zeroed is full of "valid" garbage and any test walking it fails.
pub const POISON: u64 = 0xdead_beef_dead_beef;

/// Sees every write to fake memory and every allocation and free (used by the recording TLB
/// of the unit tests).
pub trait MemObserver: Send + Sync {
    fn stored(&self, _table: PhysAddr, _index: usize, _old: u64, _new: u64) {}
    fn filled(&self, _pa: PhysAddr, _pages: usize, _value: u64) {}
    fn allocated(&self, _pa: PhysAddr, _order: u32) {}
    fn freed(&self, _pa: PhysAddr, _order: u32) {}
}

struct FakeState {
    used: Vec<bool>,
    blocks: BTreeMap<usize, u32>,
    outstanding_pages: usize,
    alloc_calls: usize,
    fail_from_call: Option<usize>,
    errors: Vec<String>,
    hint: usize,
}

/// Fake physical memory: `pages` 4 KiB pages at [`FakePhys::BASE`], handed out as aligned
/// power-of-two blocks.
pub struct FakePhys {
    pages: Vec<Box<TablePage>>,
    state: spin::Mutex<FakeState>,
    observer: Option<Arc<dyn MemObserver>>,
}

impl FakePhys {
    /// Physical address of the first fake page (aligned far beyond the largest PGD).
    pub const BASE: u64 = 0x8000_0000;

    pub fn new(pages: usize) -> Self {
        Self::build(pages, None)
    }

    pub fn with_observer(pages: usize, observer: Arc<dyn MemObserver>) -> Self {
        Self::build(pages, Some(observer))
    }

    fn build(pages: usize, observer: Option<Arc<dyn MemObserver>>) -> Self {
        let pages = (0..pages)
            .map(|_| Box::new([const { AtomicU64::new(0) }; 512]))
            .collect();
        let n = Vec::len(&pages);
        Self {
            pages,
            state: spin::Mutex::new(FakeState {
                used: vec![false; n],
                blocks: BTreeMap::new(),
                outstanding_pages: 0,
                alloc_calls: 0,
                fail_from_call: None,
                errors: Vec::new(),
                hint: 0,
            }),
            observer,
        }
    }

    /// Makes the `n`-th allocation call from now (1 = the next one) and every later one fail.
    pub fn fail_from_call(&self, n: usize) {
        let mut s = self.state.lock();
        s.fail_from_call = Some(s.alloc_calls + n);
    }

    /// Ends failure injection.
    pub fn stop_failing(&self) {
        self.state.lock().fail_from_call = None;
    }

    /// Pages currently allocated.
    pub fn outstanding_pages(&self) -> usize {
        self.state.lock().outstanding_pages
    }

    /// Allocation calls so far (failed ones included).
    pub fn alloc_calls(&self) -> usize {
        self.state.lock().alloc_calls
    }

    /// Misuse seen so far: double frees, frees of unallocated blocks, wrong orders.
    pub fn errors(&self) -> Vec<String> {
        self.state.lock().errors.clone()
    }

    /// `Ok` when nothing is allocated and no misuse was seen.
    pub fn check_clean(&self) -> Result<(), String> {
        let s = self.state.lock();
        if !s.errors.is_empty() {
            return Err(format!("allocator misuse: {:?}", s.errors));
        }
        if s.outstanding_pages != 0 {
            return Err(format!(
                "{} pages leaked in blocks {:?}",
                s.outstanding_pages, s.blocks
            ));
        }
        Ok(())
    }

    fn index(&self, pa: PhysAddr) -> Option<usize> {
        let off = pa.as_u64().checked_sub(Self::BASE)?;
        if off % PAGE_SIZE != 0 {
            return None;
        }
        let i = (off / PAGE_SIZE) as usize;
        (i < self.pages.len()).then_some(i)
    }

    /// The fake page at `pa`. Panics on an address that is not fake memory: only the stage-2
    /// code's own bugs can produce one, and this is a test double.
    pub fn page(&self, pa: PhysAddr) -> &TablePage {
        match self.index(pa) {
            Some(i) => &self.pages[i],
            None => panic!("FakePhys: {pa:?} is not a fake page"),
        }
    }

    /// Stores one descriptor, as the stage-2 code does through [`TableMemory::store`] (seen by
    /// the observer). Tests use it directly to play a buggy writer.
    pub fn write_entry(&self, table: PhysAddr, index: usize, value: u64) {
        let old = self.page(table)[index].swap(value, Ordering::AcqRel);
        if let Some(o) = &self.observer {
            o.stored(table, index, old, value);
        }
    }

    fn fill(&self, pa: PhysAddr, pages: usize, value: u64) {
        for p in 0..pages as u64 {
            for e in self.page(pa + p * PAGE_SIZE).iter() {
                e.store(value, Ordering::Relaxed);
            }
        }
        if let Some(o) = &self.observer {
            o.filled(pa, pages, value);
        }
    }
}

impl FrameAllocator for FakePhys {
    fn alloc_frames(&self, order: u32) -> Option<PhysAddr> {
        let n = 1usize << order;
        let pa = {
            let mut s = self.state.lock();
            s.alloc_calls += 1;
            if s.fail_from_call.is_some_and(|f| s.alloc_calls >= f) {
                return None;
            }
            let total = s.used.len();
            let start = s.hint.next_multiple_of(n);
            let mut found = None;
            let mut tried = 0;
            let mut i = start;
            while tried < total {
                if i + n > total {
                    i = 0;
                }
                if s.used[i..i + n].iter().all(|u| !u) {
                    found = Some(i);
                    break;
                }
                i += n;
                tried += n;
            }
            let i = found?;
            s.used[i..i + n].iter_mut().for_each(|u| *u = true);
            s.blocks.insert(i, order);
            s.outstanding_pages += n;
            s.hint = i + n;
            PhysAddr::new(Self::BASE + i as u64 * PAGE_SIZE)
        };
        self.fill(pa, n, POISON);
        if let Some(o) = &self.observer {
            o.allocated(pa, order);
        }
        Some(pa)
    }

    fn free_frames(&self, pa: PhysAddr, order: u32) {
        if let Some(o) = &self.observer {
            o.freed(pa, order);
        }
        let mut s = self.state.lock();
        let Some(i) = self.index(pa) else {
            s.errors.push(format!("free of {pa:?}, not fake memory"));
            return;
        };
        match s.blocks.get(&i).copied() {
            None => s
                .errors
                .push(format!("free of {pa:?} (order {order}), not allocated")),
            Some(o) if o != order => s.errors.push(format!(
                "free of {pa:?} with order {order}, allocated with order {o}"
            )),
            Some(_) => {
                s.blocks.remove(&i);
                let n = 1usize << order;
                s.used[i..i + n].iter_mut().for_each(|u| *u = false);
                s.outstanding_pages -= n;
            }
        }
    }
}

/// Every method is safe to call with any address (see [`FakePhys::page`]); they are `unsafe`
/// only because the trait declares them so.
#[allow(unsafe_code)]
impl TableMemory for FakePhys {
    unsafe fn table(&self, pa: PhysAddr) -> &TablePage {
        self.page(pa)
    }

    unsafe fn store(&self, table: PhysAddr, index: usize, value: u64) {
        self.write_entry(table, index, value);
    }

    unsafe fn zero(&self, pa: PhysAddr, pages: usize) {
        self.fill(pa, pages, 0);
    }
}

/// A TLB that does nothing.
#[derive(Clone, Copy, Default, Debug)]
pub struct NoopTlb;

impl Stage2Tlb for NoopTlb {
    fn dsb_ishst(&self) {}
    fn dsb_ish(&self) {}
    fn isb(&self) {}
    fn tlbi_ipas2e1is(&self, _vmid: Vmid, _ipa: Ipa, _level_hint: Option<u8>) {}
    fn tlbi_vmalle1is(&self, _vmid: Vmid) {}
    fn tlbi_vmalls12e1is(&self, _vmid: Vmid) {}
    fn dsb_nsh(&self) {}
    fn tlbi_ipas2e1(&self, _vmid: Vmid, _ipa: Ipa, _level_hint: Option<u8>) {}
    fn tlbi_vmalle1(&self, _vmid: Vmid) {}
    fn icache_inval_pou(&self, _pa: PhysAddr, _size: u64) {}
}

/// A TLB that counts what it is asked to do (thread safe).
#[derive(Default, Debug)]
pub struct CountingTlb {
    pub dsb_ishst: AtomicU64,
    pub dsb_ish: AtomicU64,
    pub isb: AtomicU64,
    pub tlbi_ipa: AtomicU64,
    pub tlbi_vmalle1: AtomicU64,
    pub tlbi_vmalls12: AtomicU64,
    pub dsb_nsh: AtomicU64,
    /// Non-broadcast (this PE only) `TLBI IPAS2E1` and `TLBI VMALLE1`.
    pub tlbi_local: AtomicU64,
    /// Instruction-cache invalidations of ranges made executable.
    pub icache_inval: AtomicU64,
}

impl CountingTlb {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
    /// Total TLBIs of any kind.
    pub fn tlbis(&self) -> u64 {
        self.tlbi_ipa.load(Ordering::Relaxed)
            + self.tlbi_vmalle1.load(Ordering::Relaxed)
            + self.tlbi_vmalls12.load(Ordering::Relaxed)
    }
}

impl Stage2Tlb for CountingTlb {
    fn dsb_ishst(&self) {
        Self::bump(&self.dsb_ishst)
    }
    fn dsb_ish(&self) {
        Self::bump(&self.dsb_ish)
    }
    fn isb(&self) {
        Self::bump(&self.isb)
    }
    fn tlbi_ipas2e1is(&self, _vmid: Vmid, _ipa: Ipa, _level_hint: Option<u8>) {
        Self::bump(&self.tlbi_ipa)
    }
    fn tlbi_vmalle1is(&self, _vmid: Vmid) {
        Self::bump(&self.tlbi_vmalle1)
    }
    fn tlbi_vmalls12e1is(&self, _vmid: Vmid) {
        Self::bump(&self.tlbi_vmalls12)
    }
    fn dsb_nsh(&self) {
        Self::bump(&self.dsb_nsh)
    }
    fn tlbi_ipas2e1(&self, _vmid: Vmid, _ipa: Ipa, _level_hint: Option<u8>) {
        Self::bump(&self.tlbi_local)
    }
    fn tlbi_vmalle1(&self, _vmid: Vmid) {
        Self::bump(&self.tlbi_local)
    }
    fn icache_inval_pou(&self, _pa: PhysAddr, _size: u64) {
        Self::bump(&self.icache_inval)
    }
}
