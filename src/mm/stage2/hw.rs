//! The two traits through which the stage-2 logic reaches hardware: table memory and TLB and
//! cache maintenance. The arch layer implements them with the EL2 identity map and real `TLBI`/
//! `IC`/`DSB`/`ISB` instructions; host tests implement them with fakes (see [`super::testing`]).
//!
//! [`TableMemory::table`] turns a physical address into a reference, so it is an `unsafe fn`.
//! The rest of the stage-2 module reaches table memory only through [`load_entry`],
//! [`store_entry`] and [`zero_pages`] below, the one place that calls it, under the module's
//! invariant: *the stage-2 code names only table pages it owns* — the PGD it allocated in
//! `Stage2Table::new`, pages that went through a [`super::MemCache`] (allocated by its
//! `topup`, or freed table pages it was given back), and addresses it read from descriptors it
//! wrote itself. Nothing outside `mm::stage2` can pass an address to these functions.
#![deny(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering};

use super::geometry::ENTRIES_PER_TABLE;
use super::vmid::Vmid;
use crate::addr::{Ipa, PAGE_SIZE, PhysAddr};

/// One translation table page seen as 512 descriptors.
pub type TablePage = [AtomicU64; ENTRIES_PER_TABLE];

/// Access to the memory that holds translation tables.
///
/// At EL2 this is the identity map (`HvVirtAddr::from_phys`); descriptors are `AtomicU64`, so
/// updates are atomic stores through a shared reference. The frame allocator a table is
/// created with must hand out pages this memory reaches (the EL2 page allocator with the
/// identity map; [`super::testing::FakePhys`], which is both, in host tests).
#[allow(unsafe_code)]
pub trait TableMemory {
    /// The descriptors of the table page at `pa`.
    ///
    /// # Safety
    ///
    /// `pa` must be a page-aligned page of translation-table memory that the caller owns: the
    /// PGD of a stage-2 table or a page obtained from the frame allocator for its tables,
    /// not freed, and used for nothing but those 512 descriptors while the returned reference
    /// is alive. (Implementations may turn any address into a reference; at EL2, one that
    /// is not such a page would alias hypervisor or guest memory.)
    unsafe fn table(&self, pa: PhysAddr) -> &TablePage;

    /// Stores one descriptor. The stage-2 code calls this for every descriptor write, with
    /// release ordering so that a table's contents are visible before the descriptor that
    /// points to it (`smp_store_release` in Linux's `stage2_make_pte`). Override only to
    /// observe writes (tests).
    ///
    /// # Safety
    ///
    /// As for [`TableMemory::table`], for the page `table`; `index` < 512.
    unsafe fn store(&self, table: PhysAddr, index: usize, value: u64) {
        // SAFETY: the caller upholds `table`'s contract for this page.
        let page = unsafe { self.table(table) };
        page[index].store(value, Ordering::Release);
    }

    /// Zeroes `pages` pages from `pa`.
    ///
    /// # Safety
    ///
    /// As for [`TableMemory::table`], for each of the `pages` pages.
    unsafe fn zero(&self, pa: PhysAddr, pages: usize) {
        for p in 0..pages as u64 {
            // SAFETY: the caller upholds `table`'s contract for every page of the range.
            for e in unsafe { self.table(pa + p * PAGE_SIZE) }.iter() {
                e.store(0, Ordering::Relaxed);
            }
        }
    }
}

#[allow(unsafe_code)]
impl<T: TableMemory + ?Sized> TableMemory for &T {
    unsafe fn table(&self, pa: PhysAddr) -> &TablePage {
        // SAFETY: forwarded; the caller upholds the contract.
        unsafe { (**self).table(pa) }
    }
    unsafe fn store(&self, table: PhysAddr, index: usize, value: u64) {
        // SAFETY: forwarded; the caller upholds the contract.
        unsafe { (**self).store(table, index, value) }
    }
    unsafe fn zero(&self, pa: PhysAddr, pages: usize) {
        // SAFETY: forwarded; the caller upholds the contract.
        unsafe { (**self).zero(pa, pages) }
    }
}

/// Reads descriptor `index` of the stage-2 table page `table` (acquire).
#[allow(unsafe_code)]
pub(super) fn load_entry<M: TableMemory + ?Sized>(mem: &M, table: PhysAddr, index: usize) -> u64 {
    // SAFETY: module invariant (top of this file): `table` is a table page this stage-2 code
    // owns.
    let page = unsafe { mem.table(table) };
    page[index].load(Ordering::Acquire)
}

/// Stores descriptor `index` of the stage-2 table page `table` (release).
#[allow(unsafe_code)]
pub(super) fn store_entry<M: TableMemory + ?Sized>(
    mem: &M,
    table: PhysAddr,
    index: usize,
    value: u64,
) {
    // SAFETY: module invariant (top of this file): `table` is a table page this stage-2 code
    // owns.
    unsafe { mem.store(table, index, value) }
}

/// Zeroes `pages` stage-2 table pages from `pa`.
#[allow(unsafe_code)]
pub(super) fn zero_pages<M: TableMemory + ?Sized>(mem: &M, pa: PhysAddr, pages: usize) {
    // SAFETY: module invariant (top of this file): the pages are table pages this stage-2
    // code owns (a freshly allocated PGD, a page entering a memory cache).
    unsafe { mem.zero(pa, pages) }
}

/// TLB maintenance, barriers and instruction-cache maintenance for stage 2; Inner Shareable
/// (broadcast to every CPU) except the three local operations of the permission-fault path.
///
/// The TLBIs that name a VMID must act on that VMID's entries: the EL2 implementation switches
/// VTTBR_EL2 to the VMID around the TLBI when another VM's (or no) VMID is loaded, as Linux's
/// `__tlb_switch_to_guest` does. Calls always come in the orders documented on
/// `Writer::set_entry` (`table.rs`); the implementation adds nothing.
pub trait Stage2Tlb {
    /// `DSB ISHST`: earlier descriptor stores are visible to every table walker.
    fn dsb_ishst(&self);
    /// `DSB ISH`: earlier TLBIs have completed on every CPU.
    fn dsb_ish(&self);
    /// `ISB`.
    fn isb(&self);
    /// `TLBI IPAS2E1IS` for `ipa` (the operand is IPA`[47:12]`), with the level of the leaf
    /// being invalidated as the TTL hint when FEAT_TTL exists (ignore the hint otherwise; `None`
    /// means "any level" and is used when intermediate (walk-cache) entries must go too).
    fn tlbi_ipas2e1is(&self, vmid: Vmid, ipa: Ipa, level_hint: Option<u8>);
    /// `TLBI VMALLE1IS`: all stage-1 (and combined stage-1+2) entries of the VMID.
    fn tlbi_vmalle1is(&self, vmid: Vmid);
    /// `TLBI VMALLS12E1IS`: all stage-1 and stage-2 entries of the VMID, walk caches included.
    fn tlbi_vmalls12e1is(&self, vmid: Vmid);

    /// `DSB NSH`: earlier TLBIs of this PE only (the non-broadcast ones below) have completed.
    fn dsb_nsh(&self);
    /// `TLBI IPAS2E1` (this PE only) for `ipa`, level hint as for
    /// [`Stage2Tlb::tlbi_ipas2e1is`]. Used on the permission-fault path, where the stale entry
    /// is in the faulting PE's TLB.
    fn tlbi_ipas2e1(&self, vmid: Vmid, ipa: Ipa, level_hint: Option<u8>);
    /// `TLBI VMALLE1` (this PE only).
    fn tlbi_vmalle1(&self, vmid: Vmid);

    /// Instruction-cache maintenance to the point of unification for `[pa, pa + size)`, which
    /// is about to become executable to a guest: afterwards no instruction cache holds lines
    /// for it older than the memory (KVM's `invalidate_icache_guest_page`). What a CPU needs
    /// follows from CTR_EL0 ([`super::icache::CacheType::icache_sync`]: nothing with DIC,
    /// `IC IVAU` by line for small ranges on PIPT caches, else `IC IALLUIS`), then `DSB ISH`.
    /// The D-cache side (clean to the PoU unless IDC) is done where the data was written.
    fn icache_inval_pou(&self, pa: PhysAddr, size: u64);
}

impl<T: Stage2Tlb + ?Sized> Stage2Tlb for &T {
    fn dsb_ishst(&self) {
        (**self).dsb_ishst()
    }
    fn dsb_ish(&self) {
        (**self).dsb_ish()
    }
    fn isb(&self) {
        (**self).isb()
    }
    fn tlbi_ipas2e1is(&self, vmid: Vmid, ipa: Ipa, level_hint: Option<u8>) {
        (**self).tlbi_ipas2e1is(vmid, ipa, level_hint)
    }
    fn tlbi_vmalle1is(&self, vmid: Vmid) {
        (**self).tlbi_vmalle1is(vmid)
    }
    fn tlbi_vmalls12e1is(&self, vmid: Vmid) {
        (**self).tlbi_vmalls12e1is(vmid)
    }
    fn dsb_nsh(&self) {
        (**self).dsb_nsh()
    }
    fn tlbi_ipas2e1(&self, vmid: Vmid, ipa: Ipa, level_hint: Option<u8>) {
        (**self).tlbi_ipas2e1(vmid, ipa, level_hint)
    }
    fn tlbi_vmalle1(&self, vmid: Vmid) {
        (**self).tlbi_vmalle1(vmid)
    }
    fn icache_inval_pou(&self, pa: PhysAddr, size: u64) {
        (**self).icache_inval_pou(pa, size)
    }
}
