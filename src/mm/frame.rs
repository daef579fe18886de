//! The contract between code that needs physical pages (stage-2 tables, the per-vCPU memory
//! cache, guest RAM) and whatever hands them out: the buddy page allocator at EL2
//! ([`crate::mm::page_alloc`]) or a leak-checking fake in host tests.
#![forbid(unsafe_code)]

use crate::addr::PhysAddr;

/// Hands out blocks of `2^order` contiguous 4 KiB pages, aligned to their own size.
///
/// Every block is returned with `free_frames` and the *same* order it was allocated with;
/// implementations may check this and must never hand out a block twice.
pub trait FrameAllocator {
    /// Allocates `2^order` pages aligned to `2^order` pages. Contents are unspecified.
    /// `None` when no such block is free.
    fn alloc_frames(&self, order: u32) -> Option<PhysAddr>;
    /// Returns a block obtained from `alloc_frames(order)`.
    fn free_frames(&self, pa: PhysAddr, order: u32);
}

impl<T: FrameAllocator + ?Sized> FrameAllocator for &T {
    fn alloc_frames(&self, order: u32) -> Option<PhysAddr> {
        (**self).alloc_frames(order)
    }
    fn free_frames(&self, pa: PhysAddr, order: u32) {
        (**self).free_frames(pa, order)
    }
}
