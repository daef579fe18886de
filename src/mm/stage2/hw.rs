//! The two traits through which the stage-2 logic reaches hardware: table memory and TLB
//! maintenance. The arch layer implements them with the EL2 identity map and real `TLBI`/`DSB`/
//! `ISB` instructions; host tests implement them with fakes (see [`super::testing`]).
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering};

use super::geometry::ENTRIES_PER_TABLE;
use super::vmid::Vmid;
use crate::addr::{Ipa, PAGE_SIZE, PhysAddr};

/// One translation table page seen as 512 descriptors.
pub type TablePage = [AtomicU64; ENTRIES_PER_TABLE];

/// Access to the memory that holds translation tables.
///
/// Contract: `table(pa)` may be called for any page obtained from the frame allocator that
/// backs the stage-2 tables (the PGD and every page that went through a [`super::MemCache`]).
/// At EL2 this is the identity map (`HvVirtAddr::from_phys`); descriptors are `AtomicU64`, so
/// updates need no `unsafe` beyond the one cast in the arch layer.
pub trait TableMemory {
    /// The descriptors of the table page at `pa` (page aligned).
    fn table(&self, pa: PhysAddr) -> &TablePage;

    /// Stores one descriptor. The stage-2 code calls this for every descriptor write, with
    /// release ordering so that a table's contents are visible before the descriptor that
    /// points to it (`smp_store_release` in Linux's `stage2_make_pte`). Override only to
    /// observe writes (tests).
    fn store(&self, table: PhysAddr, index: usize, value: u64) {
        self.table(table)[index].store(value, Ordering::Release);
    }

    /// Zeroes `pages` pages from `pa`.
    fn zero(&self, pa: PhysAddr, pages: usize) {
        for p in 0..pages as u64 {
            for e in self.table(pa + p * PAGE_SIZE).iter() {
                e.store(0, Ordering::Relaxed);
            }
        }
    }
}

impl<T: TableMemory + ?Sized> TableMemory for &T {
    fn table(&self, pa: PhysAddr) -> &TablePage {
        (**self).table(pa)
    }
    fn store(&self, table: PhysAddr, index: usize, value: u64) {
        (**self).store(table, index, value)
    }
    fn zero(&self, pa: PhysAddr, pages: usize) {
        (**self).zero(pa, pages)
    }
}

/// TLB maintenance and barriers for stage 2, all Inner Shareable (broadcast to every CPU).
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
}
