//! Memory management: physical pages and stage-2 translation.
pub mod frame;
pub mod page_alloc;
pub mod stage2;
