//! The physical page allocator: every free page of RAM, handed out as size-aligned blocks of
//! `2^order` pages by a buddy allocator. Size-aligned blocks are what the stage-2 PGD needs (up
//! to 16 contiguous pages aligned to 64 KiB) and what lets guest RAM be mapped with 2 MiB and
//! 1 GiB blocks.
//!
//! The buddy allocator is `buddy_system_allocator::Heap`, whose free lists are intrusive (each
//! free block holds the link to the next one), rather than the crate's `FrameAllocator`, whose
//! free lists are `BTreeSet`s on the global heap: the global heap itself grows from this
//! allocator while it holds its own lock (`arch::aarch64::heap`), so an allocator that needed
//! the heap would deadlock there (seen: a 36 MiB gzip ramdisk hung the boot when a page
//! allocation split a block and the `BTreeSet` wanted a new node), and would invert the lock
//! order against any CPU in the heap's rescue path. This allocator takes no lock but its own
//! and allocates nothing. The price: it writes into the free pages themselves, so the RAM
//! handed to it must be mapped and writable (see [`PageAllocator::add_range`]).
//!
//! Accounting is kept here (pages in use, by order) so that "back to the starting figure" can be
//! checked after a VM ends.

use core::alloc::Layout;
use core::ptr::NonNull;

use crate::addr::{PAGE_SHIFT, PAGE_SIZE, PhysAddr};
use crate::mm::frame::FrameAllocator;
use buddy_system_allocator::Heap;
use spin::Mutex;

/// Largest block: 2^30 pages (4 TiB), far above any RAM we run on.
pub const MAX_ORDER: u32 = 30;
/// The buddy heap's size classes are byte sizes: 2^0 .. 2^(PAGE_SHIFT + MAX_ORDER) bytes.
const CLASSES: usize = PAGE_SHIFT as usize + MAX_ORDER as usize + 1;

struct Inner {
    buddy: Heap<CLASSES>,
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

/// The layout of a block of `2^order` pages: its size is also its alignment.
fn block_layout(order: u32) -> Option<Layout> {
    let bytes = (PAGE_SIZE as usize).checked_shl(order)?;
    Layout::from_size_align(bytes, bytes).ok()
}

impl PageAllocator {
    pub const fn new() -> Self {
        Self {
            inner: Mutex::new(Inner {
                buddy: Heap::new(),
                total_pages: 0,
                used_pages: 0,
            }),
        }
    }

    /// Adds the pages wholly inside `[start, end)` to the allocator.
    ///
    /// # Safety
    /// The range must be RAM that is mapped writable at its physical address (the identity map
    /// at EL2, host memory in tests), that nothing else uses from now on, and that does not
    /// overlap a range already added.
    pub unsafe fn add_range(&self, start: PhysAddr, end: PhysAddr) {
        let Some(s) = start.checked_align_up(PAGE_SIZE) else {
            return;
        };
        // Page 0 is never handed out: the free lists end at a null link, so a free block at
        // physical address 0 would cut them short (RAM starts at 0 on the Raspberry Pi 4,
        // where the firmware's spin table lies in that page anyway).
        let s = s.max(PhysAddr::new(PAGE_SIZE));
        let e = end.align_down(PAGE_SIZE);
        if s >= e {
            return;
        }
        let mut g = self.inner.lock();
        // SAFETY: the caller hands the range over (see above); both ends are page aligned, so
        // every block the buddy heap makes of it is a size-aligned run of whole pages.
        unsafe {
            g.buddy
                .add_to_heap(s.as_u64() as usize, e.as_u64() as usize)
        };
        g.total_pages += (e.as_u64() - s.as_u64()) >> PAGE_SHIFT;
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

impl PageAllocator {
    /// Allocates one physically contiguous run of `bytes` (rounded up to pages), for guest RAM
    /// that must be mapped IPA = PA. Takes the smallest size-aligned block that holds it and
    /// gives the tail back at once, so the cost is only transient. On success returns the base
    /// and appends the run, as size-aligned `(pa, order)` pieces that `free_frames` takes back
    /// one by one, to `out`.
    pub fn alloc_contiguous(
        &self,
        bytes: u64,
        out: &mut alloc::vec::Vec<(PhysAddr, u32)>,
    ) -> Option<PhysAddr> {
        let pages = bytes.div_ceil(PAGE_SIZE).max(1);
        let order = pages.next_power_of_two().trailing_zeros();
        let base = self.alloc_frames(order)?;
        let block = 1u64 << order;
        let mut at = 0u64;
        while at < block {
            // The largest piece that is aligned at `at` and stays on one side of `pages`.
            let limit = if at < pages { pages - at } else { block - at };
            let mut o = at.trailing_zeros().min(order);
            while (1u64 << o) > limit {
                o -= 1;
            }
            let pa = base + at * PAGE_SIZE;
            if at < pages {
                out.push((pa, o));
            } else {
                self.free_frames(pa, o);
            }
            at += 1 << o;
        }
        Some(base)
    }
}

impl FrameAllocator for PageAllocator {
    fn alloc_frames(&self, order: u32) -> Option<PhysAddr> {
        if order > MAX_ORDER {
            return None;
        }
        let layout = block_layout(order)?;
        let mut g = self.inner.lock();
        let block = g.buddy.alloc(layout).ok()?;
        g.used_pages += 1u64 << order;
        Some(PhysAddr::new(block.as_ptr() as u64))
    }

    fn free_frames(&self, pa: PhysAddr, order: u32) {
        let (Some(layout), Some(ptr)) = (
            block_layout(order),
            NonNull::new(pa.as_u64() as usize as *mut u8),
        ) else {
            return;
        };
        assert!(
            pa.is_aligned(PAGE_SIZE << order),
            "free of a misaligned block {pa:?} of order {order}"
        );
        let mut g = self.inner.lock();
        // SAFETY: `FrameAllocator` callers return exactly the blocks `alloc_frames` gave them,
        // with the same order (every caller pairs them: stage-2 tables through one path, guest
        // RAM through `Vm`, the heap never frees), so `ptr` and `layout` match an allocation
        // of this heap that is still live.
        unsafe { g.buddy.dealloc(ptr, layout) };
        g.used_pages -= 1u64 << order;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    /// Host memory standing in for RAM: the allocator writes its free lists into the pages, so
    /// they must be real. 4 MiB aligned, so block addresses are predictable.
    struct Ram {
        base: u64,
        layout: std::alloc::Layout,
    }

    const ARENA_ALIGN: usize = 4 << 20;

    impl Ram {
        fn new(pages: u64) -> Self {
            let bytes = (pages * PAGE_SIZE) as usize;
            let layout = std::alloc::Layout::from_size_align(bytes, ARENA_ALIGN).unwrap();
            // SAFETY: the layout has a non-zero size.
            let p = unsafe { std::alloc::alloc_zeroed(layout) };
            assert!(!p.is_null());
            Ram {
                base: p as u64,
                layout,
            }
        }
        fn at(&self, page: u64) -> PhysAddr {
            PhysAddr::new(self.base + page * PAGE_SIZE)
        }
    }

    impl Drop for Ram {
        fn drop(&mut self) {
            // SAFETY: allocated in `new` with this layout.
            unsafe { std::alloc::dealloc(self.base as *mut u8, self.layout) };
        }
    }

    /// An allocator over `[first, end)` pages of `ram`.
    fn over(ram: &Ram, first: u64, end: u64) -> PageAllocator {
        let a = PageAllocator::new();
        // SAFETY: the pages are `ram`'s, used by this allocator alone, and outlive it in
        // every test (declared first, dropped last).
        unsafe { a.add_range(ram.at(first), ram.at(end)) };
        a
    }

    fn allocator(ram: &Ram) -> PageAllocator {
        over(ram, 0, (ram.layout.size() as u64) / PAGE_SIZE)
    }

    #[test]
    fn blocks_are_aligned_to_their_size_for_every_order() {
        let ram = Ram::new(4096);
        let a = allocator(&ram);
        for order in 0..=10 {
            let pa = a.alloc_frames(order).expect("block");
            assert!(pa.is_aligned(PAGE_SIZE << order), "order {order} at {pa:?}");
        }
    }

    #[test]
    fn unaligned_range_start_still_gives_aligned_blocks() {
        let ram = Ram::new(64);
        // Starts 3 pages into a 64 KiB block: a 16-page block must come from further up.
        let a = over(&ram, 3, 64);
        let pa = a.alloc_frames(4).expect("16-page block");
        assert_eq!(pa.as_u64() % (16 * PAGE_SIZE), 0);
        assert!(pa >= ram.at(3));
        assert_eq!(a.stats().total_pages, 61);
    }

    #[test]
    fn partial_pages_at_range_edges_are_not_added() {
        let ram = Ram::new(4);
        let a = PageAllocator::new();
        // SAFETY: as in `over`.
        unsafe { a.add_range(ram.at(0) + 1, ram.at(3) - 1) };
        assert_eq!(a.stats().total_pages, 1);
        assert_eq!(a.alloc_frames(0), Some(ram.at(1)));
        assert_eq!(a.alloc_frames(0), None);
    }

    #[test]
    fn exhaustion_returns_none_and_accounting_is_exact() {
        let ram = Ram::new(16);
        let a = allocator(&ram);
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
        assert_eq!(a.alloc_frames(4), Some(ram.at(0)), "coalesced again");
    }

    #[test]
    fn fragmentation_then_freeing_coalesces_back_into_the_largest_block() {
        let ram = Ram::new(64);
        let a = allocator(&ram);
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
        assert_eq!(big, ram.at(0));
    }

    #[test]
    fn alloc_contiguous_keeps_exactly_the_run_and_frees_the_tail() {
        let ram = Ram::new(1024);
        let a = allocator(&ram);
        let mut out = Vec::new();
        // 300 pages: a 512-page block, pieces 256 + 32 + 8 + 4 kept, the rest freed.
        let base = a.alloc_contiguous(300 * PAGE_SIZE, &mut out).expect("run");
        assert!(base.is_aligned(512 * PAGE_SIZE));
        let orders: Vec<u32> = out.iter().map(|&(_, o)| o).collect();
        assert_eq!(orders, [8, 5, 3, 2]);
        let mut next = base;
        for &(pa, o) in &out {
            assert_eq!(pa, next, "pieces are contiguous");
            assert!(pa.is_aligned(PAGE_SIZE << o));
            next = pa + (PAGE_SIZE << o);
        }
        assert_eq!(next, base + 300 * PAGE_SIZE);
        assert_eq!(a.stats().used_pages, 300);
        // The freed tail is usable again, and freeing the pieces restores the whole arena.
        assert!(a.alloc_frames(7).is_some());
        for (pa, o) in out.drain(..) {
            a.free_frames(pa, o);
        }
        assert_eq!(a.stats().used_pages, 128);
        assert!(a.alloc_contiguous(2000 * PAGE_SIZE, &mut out).is_none());
        assert!(out.is_empty());
    }

    /// A range from physical address 0 (the Pi 4's RAM) leaves page 0 out: a block at 0 would
    /// be a null link in the free lists. Checked on the range's arithmetic only: no page is
    /// touched when the range is empty after the cut.
    #[test]
    fn page_zero_is_never_added() {
        let a = PageAllocator::new();
        // SAFETY: [0, 4 KiB) holds no whole page once page 0 is cut, so nothing is written.
        unsafe { a.add_range(PhysAddr::new(0), PhysAddr::new(PAGE_SIZE)) };
        assert_eq!(a.stats().total_pages, 0);
        assert_eq!(a.alloc_frames(0), None);
    }

    #[test]
    fn oversized_order_is_refused() {
        let ram = Ram::new(16);
        let a = allocator(&ram);
        assert_eq!(a.alloc_frames(MAX_ORDER + 1), None);
        assert_eq!(a.alloc_frames(5), None);
    }

    #[test]
    fn alloc_cover_uses_large_blocks_and_is_all_or_nothing() {
        let ram = Ram::new(1024 + 512);
        let a = allocator(&ram);
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

    /// Nothing in the allocator may use the global heap, which grows from it while holding its
    /// own lock: a type that owns heap memory (the `BTreeSet` free lists of the crate's
    /// `FrameAllocator`) has drop glue, this one must not.
    #[test]
    fn the_allocator_owns_no_heap_memory() {
        fn no_drop_glue<T>() -> bool {
            !core::mem::needs_drop::<T>()
        }
        assert!(
            no_drop_glue::<PageAllocator>(),
            "a PageAllocator must not own heap memory (BTreeSet free lists deadlock the heap's \
             rescue path)"
        );
    }

    /// Random allocations and frees of mixed orders against a model: blocks never overlap, are
    /// size-aligned, the free-page count is exact, and freeing everything coalesces the arena
    /// back into its largest block.
    #[test]
    fn random_alloc_free_never_overlaps_and_coalesces() {
        use proptest::prelude::*;
        let mut runner = proptest::test_runner::TestRunner::default();
        runner
            .run(
                &proptest::collection::vec((0u32..6, any::<bool>(), any::<u16>()), 1..200),
                |ops| {
                    let ram = Ram::new(256);
                    let a = allocator(&ram);
                    let mut live: Vec<(PhysAddr, u32)> = Vec::new();
                    for (order, free, pick) in ops {
                        if free && !live.is_empty() {
                            let (pa, o) = live.swap_remove(pick as usize % live.len());
                            a.free_frames(pa, o);
                        } else if let Some(pa) = a.alloc_frames(order) {
                            prop_assert!(pa.is_aligned(PAGE_SIZE << order));
                            prop_assert!(
                                pa >= ram.at(0) && pa + (PAGE_SIZE << order) <= ram.at(256)
                            );
                            for &(q, o) in &live {
                                let (a0, a1) = (pa.as_u64(), pa.as_u64() + (PAGE_SIZE << order));
                                let (b0, b1) = (q.as_u64(), q.as_u64() + (PAGE_SIZE << o));
                                prop_assert!(a1 <= b0 || b1 <= a0, "overlap");
                            }
                            live.push((pa, order));
                        }
                        let used: u64 = live.iter().map(|&(_, o)| 1u64 << o).sum();
                        prop_assert_eq!(a.stats().used_pages, used);
                    }
                    for (pa, o) in live.drain(..) {
                        a.free_frames(pa, o);
                    }
                    prop_assert_eq!(a.alloc_frames(8), Some(ram.at(0)));
                    Ok(())
                },
            )
            .unwrap();
    }
}
