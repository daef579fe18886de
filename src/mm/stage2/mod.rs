//! Stage-2 translation: the tables that map a VM's intermediate physical addresses (IPAs) to
//! host physical addresses.
//!
//! (Design essay: see the end of this staged commit; filled in as the module grows.)
#![forbid(unsafe_code)]

pub mod desc;
pub mod dirty;
pub mod fault;
pub mod geometry;
pub mod hw;
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
pub use dirty::DirtyLog;
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
