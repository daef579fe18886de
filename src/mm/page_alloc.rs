//! The physical page allocator: every free page of RAM, handed out as size-aligned blocks of
//! `2^order` pages by a buddy allocator (`buddy_system_allocator::FrameAllocator`, working on
//! page frame numbers, so its block alignment is physical alignment). Size-aligned blocks are
//! what the stage-2 PGD needs (up to 16 contiguous pages aligned to 64 KiB) and what lets guest
//! RAM be mapped with 2 MiB and 1 GiB blocks.
//!
//! Accounting is kept here (pages in use, by order) so that "back to the starting figure" can be
//! checked after a VM ends.
#![forbid(unsafe_code)]

use crate::addr::{PAGE_SHIFT, PAGE_SIZE, PhysAddr};
use crate::mm::frame::FrameAllocator;
use buddy_system_allocator::FrameAllocator as Buddy;
use spin::Mutex;

/// Largest block: 2^30 pages (4 TiB), far above any RAM we run on.
const ORDERS: usize = 31;
pub const MAX_ORDER: u32 = ORDERS as u32 - 1;

struct Inner {
    buddy: Buddy<ORDERS>,
    total_pages: u64,
    used_pages: u64,
}

pub struct PageAllocator {
    inner: Mutex<Inner>,
}

/// A snapshot of the allocator's figures.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PageStats {
    pub total_pages: u64,
    pub used_pages: u64,
}

impl PageStats {
    pub fn free_pages(&self) -> u64 {
        self.total_pages - self.used_pages
    }
}

impl PageAllocator {
    pub const fn new() -> Self {
        Self {
            inner: Mutex::new(Inner {
                buddy: Buddy::new(),
                total_pages: 0,
                used_pages: 0,
            }),
        }
    }

    /// Adds the pages wholly inside `[start, end)` to the allocator.
    pub fn add_range(&self, start: PhysAddr, end: PhysAddr) {
        let Some(s) = start.checked_align_up(PAGE_SIZE) else {
            return;
        };
        let e = end.align_down(PAGE_SIZE);
        if s >= e {
            return;
        }
        let (fs, fe) = (
            (s.as_u64() >> PAGE_SHIFT) as usize,
            (e.as_u64() >> PAGE_SHIFT) as usize,
        );
        let mut g = self.inner.lock();
        g.buddy.add_frame(fs, fe);
        g.total_pages += (fe - fs) as u64;
    }

    pub fn stats(&self) -> PageStats {
        let g = self.inner.lock();
        PageStats {
            total_pages: g.total_pages,
            used_pages: g.used_pages,
        }
    }

    /// Allocates the largest blocks (at most `max_order`) that together cover `bytes`, for guest
    /// RAM that need not be one contiguous block. All-or-nothing: on failure every block taken so
    /// far is returned. Each block is `(pa, order)`.
    pub fn alloc_cover(
        &self,
        bytes: u64,
        max_order: u32,
        out: &mut alloc::vec::Vec<(PhysAddr, u32)>,
    ) -> bool {
        let mut left = bytes.div_ceil(PAGE_SIZE);
        let start_len = out.len();
        while left > 0 {
            let mut order = (63 - left.leading_zeros()).min(max_order);
            let pa = loop {
                if let Some(pa) = self.alloc_frames(order) {
                    break Some(pa);
                }
                if order == 0 {
                    break None;
                }
                order -= 1;
            };
            match pa {
                Some(pa) => {
                    out.push((pa, order));
                    left -= 1u64 << order;
                }
                None => {
                    for (pa, order) in out.drain(start_len..) {
                        self.free_frames(pa, order);
                    }
                    return false;
                }
            }
        }
        true
    }
}

impl Default for PageAllocator {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameAllocator for PageAllocator {
    fn alloc_frames(&self, order: u32) -> Option<PhysAddr> {
        if order > MAX_ORDER {
            return None;
        }
        let mut g = self.inner.lock();
        let frame = g.buddy.alloc(1usize << order)?;
        g.used_pages += 1u64 << order;
        Some(PhysAddr::new((frame as u64) << PAGE_SHIFT))
    }

    fn free_frames(&self, pa: PhysAddr, order: u32) {
        debug_assert!(
            pa.is_aligned(PAGE_SIZE << order),
            "free of a misaligned block"
        );
        let mut g = self.inner.lock();
        g.buddy
            .dealloc((pa.as_u64() >> PAGE_SHIFT) as usize, 1usize << order);
        g.used_pages -= 1u64 << order;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    const BASE: u64 = 0x4000_0000;

    fn allocator(pages: u64) -> PageAllocator {
        let a = PageAllocator::new();
        a.add_range(PhysAddr::new(BASE), PhysAddr::new(BASE + pages * PAGE_SIZE));
        a
    }

    #[test]
    fn blocks_are_aligned_to_their_size_for_every_order() {
        let a = allocator(4096);
        for order in 0..=10 {
            let pa = a.alloc_frames(order).expect("block");
            assert!(pa.is_aligned(PAGE_SIZE << order), "order {order} at {pa:?}");
        }
    }

    #[test]
    fn unaligned_range_start_still_gives_aligned_blocks() {
        let a = PageAllocator::new();
        // Starts 3 pages into a 64 KiB block: a 16-page block must come from further up.
        a.add_range(
            PhysAddr::new(BASE + 3 * PAGE_SIZE),
            PhysAddr::new(BASE + 64 * PAGE_SIZE),
        );
        let pa = a.alloc_frames(4).expect("16-page block");
        assert_eq!(pa.as_u64() % (16 * PAGE_SIZE), 0);
        assert!(pa.as_u64() >= BASE + 3 * PAGE_SIZE);
    }

    #[test]
    fn partial_pages_at_range_edges_are_not_added() {
        let a = PageAllocator::new();
        a.add_range(
            PhysAddr::new(BASE + 1),
            PhysAddr::new(BASE + 3 * PAGE_SIZE - 1),
        );
        assert_eq!(a.stats().total_pages, 1);
    }

    #[test]
    fn exhaustion_returns_none_and_accounting_is_exact() {
        let a = allocator(16);
        let blocks: Vec<_> = (0..4).map(|_| a.alloc_frames(2).expect("block")).collect();
        assert_eq!(a.alloc_frames(0), None);
        assert_eq!(
            a.stats(),
            PageStats {
                total_pages: 16,
                used_pages: 16
            }
        );
        for pa in blocks {
            a.free_frames(pa, 2);
        }
        assert_eq!(a.stats().used_pages, 0);
    }

    #[test]
    fn fragmentation_then_freeing_coalesces_back_into_the_largest_block() {
        let a = allocator(64);
        let singles: Vec<_> = (0..64).map(|_| a.alloc_frames(0).expect("page")).collect();
        assert_eq!(a.alloc_frames(6), None);
        // Free every other page: 32 free pages, but no 2-page block.
        for pa in singles.iter().step_by(2) {
            a.free_frames(*pa, 0);
        }
        assert_eq!(a.alloc_frames(1), None, "no two adjacent free pages yet");
        for pa in singles.iter().skip(1).step_by(2) {
            a.free_frames(*pa, 0);
        }
        let big = a.alloc_frames(6).expect("coalesced 64-page block");
        assert_eq!(big, PhysAddr::new(BASE));
    }

    #[test]
    fn oversized_order_is_refused() {
        let a = allocator(16);
        assert_eq!(a.alloc_frames(MAX_ORDER + 1), None);
        assert_eq!(a.alloc_frames(5), None);
    }

    #[test]
    fn alloc_cover_uses_large_blocks_and_is_all_or_nothing() {
        let a = allocator(1024 + 512);
        let mut out = Vec::new();
        assert!(a.alloc_cover(1536 * PAGE_SIZE, 30, &mut out));
        let orders: Vec<u32> = out.iter().map(|&(_, o)| o).collect();
        assert_eq!(orders, [10, 9]);
        assert_eq!(a.stats().free_pages(), 0);
        for (pa, o) in out.drain(..) {
            a.free_frames(pa, o);
        }
        assert!(!a.alloc_cover(2000 * PAGE_SIZE, 30, &mut out));
        assert!(out.is_empty());
        assert_eq!(
            a.stats().used_pages,
            0,
            "failed cover must return what it took"
        );
    }
}
