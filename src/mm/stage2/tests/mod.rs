//! Host tests of the stage-2 code. Fakes live in [`super::testing`] (allocator and table
//! memory) and in `recorder.rs` (a TLB model that checks break-before-make).
mod desc;
mod geometry;
