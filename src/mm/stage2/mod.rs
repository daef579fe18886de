//! Stage-2 translation: the tables that map a VM's intermediate physical addresses (IPAs) to
//! host physical addresses, and everything that changes them.
//!
//! # What this module owns, and what it may not touch
//!
//! It owns the *logic*: geometry (start level, concatenated root, VTCR_EL2/VTTBR_EL2 values),
//! descriptor encodings, the one table walker, map / unmap / permission changes / split / merge
//! / dirty logging / translate, the per-vCPU memory cache, the VMID allocator, the mapping-size
//! decision and the stage-2 fault handler. It executes no instruction with side effects:
//! table memory is reached through [`TableMemory`], TLB maintenance and barriers through
//! [`Stage2Tlb`], pages come from a [`crate::mm::frame::FrameAllocator`]. The arch layer
//! implements those with the EL2 identity map and real `TLBI`/`DSB`/`ISB`, writes VTCR_EL2 and
//! VTTBR_EL2, and decodes ESR_EL2/HPFAR_EL2/FAR_EL2 into a [`Stage2Fault`]. Host tests use the
//! fakes in [`testing`] and a recording TLB model that checks break-before-make.
//!
//! # Layout
//!
//! - [`geometry`]: IPA size (32..=48, clamped to PARange), start level and number of
//!   concatenated root pages (1..=16, Arm ARM D8.2.6), PGD order, [`Vtcr`], [`vttbr`].
//! - [`desc`]: block/page/table descriptor layouts (`register_bitfields!`), attributes
//!   (Normal WB / Device-nGnRE, S2AP, XN, AF, FEAT_S2FWB variant), and [`desc::classify`],
//!   which says whether a descriptor change needs break-before-make.
//! - [`walk`]: the depth-first walker with table-pre / leaf / table-post visitors.
//! - [`table`]: [`Stage2Table`] and its operations; `Writer::set_entry`, the only function that
//!   overwrites a valid entry.
//! - [`memcache`]: [`MemCache`], the per-vCPU page cache.
//! - [`dirty`]: [`DirtyLog`] and dirty-logging start / fault / harvest / stop.
//! - [`fault`]: [`GuestMemoryMap`], [`decide_mapping`], [`Stage2Table::handle_fault`].
//! - [`locked`]: [`LockedStage2`], the per-VM lock with the top-up-and-retry fault path.
//! - [`vmid`], [`stats`], [`hw`] (the two traits), [`icache`] (the CTR_EL0 decision),
//!   [`testing`] (host fakes).
//!
//! # Allocation: allocate before you mutate
//!
//! The PGD (2^n pages, one allocation aligned to its size) is allocated when the table is
//! created and freed, with the same order, when it is destroyed. Every other table page comes
//! from a [`MemCache`] and goes back to one: operations never call the allocator. Every
//! operation that may need pages first walks the range counting exactly how many it will take
//! and fails with [`Stage2Error::CacheEmpty`] *before changing anything* if the cache holds
//! fewer; the committing walk then cannot run out, so there is never a half-built mapping.
//! Table pages freed by unmap or merge are zeroed and pushed onto the caller's cache
//! ([`MemCache::trim`] returns extras to the allocator outside the lock); destroy returns
//! everything to the allocator. Each table descriptor keeps the number of non-zero entries of
//! the table it points to in its IGNORED bits 11..=2, so a table that became empty is found in
//! the table-post visit and freed.
//!
//! # Break-before-make
//!
//! All stores into live tables go through `Writer::set_entry` (in `table.rs`, where the
//! sequence is spelled out). Invalid-to-valid stores and permission *relaxations* are plain
//! stores (a PE that keeps the old, stricter entry takes a permission fault, and every
//! permission fault ends with `TLBI IPAS2E1` + `TLBI VMALLE1` on the faulting PE: see
//! [`Stage2Table::handle_fault`]); permission restrictions are stores followed by
//! invalidation; any other change of a
//! valid entry is break-before-make: invalid entry, `DSB ISHST`, `TLBI IPAS2E1IS` (level hint),
//! `DSB ISH`, `TLBI VMALLE1IS`, `DSB ISH`, `ISB`, new entry; when the old entry was a table
//! with anything below it, `TLBI VMALLS12E1IS` for the VMID replaces the two TLBIs, and the
//! unhooked subtree is freed only after that invalidation completed. Invalidations of
//! entries that are only removed or restricted (unmap, write-protect) are batched to the end of
//! the operation (up to 16 IPAs, else one VMALLS12E1IS), and always completed before a table
//! page is freed or a valid entry is made. Every operation ends with `DSB ISHST` so that new
//! entries are visible to the table walkers before the lock is released.
//!
//! # Concurrency
//!
//! - One [`Stage2Table`] per VM, inside a [`LockedStage2`]: a `spin::Mutex` (the per-VM table
//!   lock) held for every change and every fault decision. Walks, counts and commits happen
//!   under it, so software never sees a half-updated table.
//! - Each vCPU owns a [`MemCache`]. The fault path tops it up to the worst case of one fault
//!   (one table per level below the start level, [`Stage2Geometry::fault_cache_pages`])
//!   *before* taking the lock, so the page allocator is never called with the table lock held;
//!   under the lock the map path only pops from the cache. If the cache still runs short
//!   (a block split for dirty logging after another vCPU used the pages, a large map), the
//!   operation fails with `CacheEmpty { needed }` without changing anything; the fault path
//!   drops the lock, tops up to `needed` and retries ([`LockedStage2::handle_fault`],
//!   [`LockedStage2::with_retry`]). Running out of memory is `NoMemory`, never a panic.
//! - vCPUs of one VM faulting on the same region serialise on the lock. The first maps; the
//!   others find that the table already allows their access and return
//!   [`FaultOutcome::AlreadyMapped`] without changing anything, so there is no double mapping
//!   and no lost page. The fault handler decides from the table as it is under the lock, not
//!   from the fault kind that was reported before the lock was taken.
//! - The hardware walkers of running vCPUs see each descriptor change atomically (64-bit
//!   stores); during a break a vCPU may take a translation fault on an entry being replaced:
//!   it then waits for the lock and finds the new entry (`AlreadyMapped`).
//! - The [`GuestMemoryMap`] is read by faults and not locked here: keep it immutable while
//!   vCPUs run, or guard it (the dirty-log flags change only with the map held exclusively).
//! - VMIDs come from a [`VmidAllocator`] (guarded by the caller); destroy invalidates the
//!   whole VMID before the VMID is freed, so a reused VMID finds no stale entries.
//!
//! # Cache maintenance
//!
//! Every leaf that makes guest RAM executable (a new leaf, a new output address, execute
//! added) is preceded by [`Stage2Tlb::icache_inval_pou`] over its output range, as KVM does
//! when it installs an executable leaf; what that costs on a CPU is decided from CTR_EL0 by
//! [`icache::CacheType`] (nothing with DIC). The data side is not done here: without
//! FEAT_S2FWB the guest may run with caches off, so guest pages must be cleaned to the point
//! of coherency before they are first mapped (KVM's `clean_dcache_guest_page`), and with it
//! to the PoU unless CTR_EL0.IDC; the arch layer does that where it writes guest memory
//! (`Vm::prepare`, the image loader).
//!
//! # `unsafe`
//!
//! Every file but two forbids it. [`hw`] declares [`TableMemory::table`] `unsafe` (it turns a
//! physical address into a reference) and holds the module's three accessors that call it;
//! [`testing`] implements it for fake memory. See `hw.rs` for the invariant they rely on.
#![deny(unsafe_code)]

pub mod desc;
pub mod dirty;
pub mod fault;
pub mod geometry;
pub mod hw;
pub mod icache;
pub mod locked;
pub mod memcache;
pub mod stats;
pub mod table;
pub mod testing;
pub mod vmid;
pub mod walk;

#[cfg(test)]
mod tests;

pub use desc::{LeafAttrs, MemType, S2Perms};
pub use dirty::{DirtyLog, HypDirty};
pub use fault::{
    AccessKind, FaultOutcome, GuestMemoryMap, MappingDecision, MemRegion, RegionKind, Stage2Fault,
    decide_mapping,
};
pub use geometry::{PaRange, Stage2Geometry, Vtcr, vttbr};
pub use hw::{Stage2Tlb, TableMemory, TablePage};
pub use locked::LockedStage2;
pub use memcache::MemCache;
pub use stats::{FaultKind, Stage2Stats};
pub use table::{Leaf, Stage2Table, Translation};
pub use vmid::{Vmid, VmidAllocator, VmidBits};

/// Errors of the stage-2 code. Each has a decided outcome for the caller (documented per
/// variant); none is a panic.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Stage2Error {
    /// A requested IPA size outside 32..=48 bits.
    InvalidIpaSize(u8),
    /// An ID_AA64MMFR0_EL1.PARange value the architecture does not define.
    UnsupportedPaRange(u64),
    /// An address or size that is not a multiple of 4 KiB, or a zero size.
    Misaligned,
    /// An IPA range beyond the table's input size, or a PA beyond the output size.
    OutOfRange,
    /// The frame allocator had no free block (PGD allocation or cache top-up).
    NoMemory,
    /// The per-vCPU memory cache holds fewer pages than the operation needs (`needed` in
    /// total). Nothing was changed: drop the lock, top the cache up to `needed` and retry.
    CacheEmpty { needed: usize },
    /// Every VMID is held by a live VM.
    VmidExhausted,
    /// A VMID returned that was not allocated.
    VmidNotAllocated(u16),
    /// A memory region that is empty, unaligned, wraps, or is a dirty-logged device.
    InvalidRegion,
    /// A memory region overlapping one already in the map.
    RegionOverlap,
    /// No region starts at the given IPA.
    NoSuchRegion,
    /// Dirty logging is already running on this table.
    DirtyLogActive,
    /// No dirty log is running.
    DirtyLogInactive,
    /// The top-up-and-retry loop gave up (the table kept changing under it).
    RetriesExhausted,
}
