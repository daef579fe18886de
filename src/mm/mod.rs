//! Memory management: physical pages, stage-2 translation and the attributes of the
//! hypervisor's own (EL2 stage-1) map.
pub mod el2_map;
pub mod frame;
pub mod page_alloc;
pub mod stage2;

/// Every free page of RAM: the one physical page allocator of the running hypervisor (filled
/// at boot from the DTB's memory, used by the heap, guest RAM and stage-2 tables).
pub static PAGES: page_alloc::PageAllocator = page_alloc::PageAllocator::new();
