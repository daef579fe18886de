//! The global heap for `alloc`: starts on a static region inside the image (usable under the
//! early map) and, once the page allocator exists, grows from it: an initial block at boot and
//! further blocks on demand (the rescue hook), each logged, since pages the heap takes are not
//! returned.
use crate::addr::PAGE_SIZE;
use crate::mm::frame::FrameAllocator;
use buddy_system_allocator::{Heap, LockedHeapWithRescue};
use core::alloc::Layout;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const EARLY_HEAP_SIZE: usize = 1 << 20;

#[repr(C, align(4096))]
struct EarlyHeap([u8; EARLY_HEAP_SIZE]);

static mut EARLY_HEAP: EarlyHeap = EarlyHeap([0; EARLY_HEAP_SIZE]);

#[global_allocator]
static HEAP: LockedHeapWithRescue<32> = LockedHeapWithRescue::new(rescue);

static GROW_ENABLED: AtomicBool = AtomicBool::new(false);
static GROWN_PAGES: AtomicU64 = AtomicU64::new(0);

/// Gives the heap its static early region.
pub fn init_early() {
    let start = core::ptr::addr_of_mut!(EARLY_HEAP) as usize;
    // SAFETY: EARLY_HEAP is used by nothing else, lives forever and is handed over exactly once.
    unsafe { HEAP.lock().init(start, EARLY_HEAP_SIZE) };
}

/// Adds `[start, start + size)` of RAM to the heap.
///
/// # Safety
/// The range must be mapped RAM that nothing else uses, now or later.
pub unsafe fn add_region(start: usize, size: usize) {
    // SAFETY: delegated to the caller.
    unsafe { HEAP.lock().add_to_heap(start, start + size) };
}

/// Called by the heap when an allocation does not fit: takes enough pages from the page
/// allocator for it (at least 2 MiB) and adds them. The buddy heap serves a request from a
/// free block of its size class (the size rounded up to a power of two, at least the
/// alignment); a page block of exactly that size is aligned to its size, so it is one such
/// block and the retried allocation succeeds without taking more.
fn rescue(heap: &mut Heap<32>, layout: &Layout) {
    if !GROW_ENABLED.load(Ordering::Relaxed) {
        return;
    }
    let class = layout.size().next_power_of_two().max(layout.align()) as u64;
    let need = class.max(2 << 20);
    let order = (need.div_ceil(PAGE_SIZE))
        .next_power_of_two()
        .trailing_zeros();
    if let Some(pa) = crate::mm::PAGES.alloc_frames(order) {
        GROWN_PAGES.fetch_add(1 << order, Ordering::Relaxed);
        let start = pa.as_u64() as usize;
        let size = (PAGE_SIZE as usize) << order;
        // SAFETY: the block was just allocated for the heap alone and is identity-mapped RAM.
        unsafe { heap.add_to_heap(start, start + size) };
    }
}

/// Lets the heap grow from the page allocator (once it has pages).
pub fn enable_growth() {
    GROW_ENABLED.store(true, Ordering::Relaxed);
}

/// Pages the heap has taken from the page allocator.
pub fn grown_pages() -> u64 {
    GROWN_PAGES.load(Ordering::Relaxed)
}
