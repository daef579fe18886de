//! Stage-2 translation: the tables that map a VM's intermediate physical addresses (IPAs) to
//! host physical addresses.
//!
//! (Design essay: see the end of this staged commit; filled in as the module grows.)
#![forbid(unsafe_code)]

pub mod desc;
pub mod geometry;
pub mod hw;
pub mod stats;
pub mod vmid;

#[cfg(test)]
mod tests;

pub use desc::{LeafAttrs, MemType, S2Perms};
pub use geometry::{PaRange, Stage2Geometry, Vtcr, vttbr};
pub use hw::{Stage2Tlb, TableMemory, TablePage};
pub use stats::{FaultKind, Stage2Stats};
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
}
