//! The global heap for `alloc`: starts on a static region inside the image (usable under the
//! early map) and grows with a block of RAM from the page allocator once the final map is up.
use buddy_system_allocator::LockedHeap;

const EARLY_HEAP_SIZE: usize = 1 << 20;

#[repr(C, align(4096))]
struct EarlyHeap([u8; EARLY_HEAP_SIZE]);

static mut EARLY_HEAP: EarlyHeap = EarlyHeap([0; EARLY_HEAP_SIZE]);

#[global_allocator]
static HEAP: LockedHeap<32> = LockedHeap::empty();

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

/// Bytes allocated and total bytes in the heap.
pub fn usage() -> (usize, usize) {
    let h = HEAP.lock();
    (h.stats_alloc_actual(), h.stats_total_bytes())
}
