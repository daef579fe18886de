//! Host tests of the stage-2 code. Fakes live in [`super::testing`] (allocator and table
//! memory) and in `recorder.rs` (a TLB model that checks break-before-make).
mod bbm;
mod concurrency;
mod desc;
mod fault;
mod geometry;
mod model;
mod ops;
mod recorder;
mod split_merge;
mod vcpu_tlb;

use std::sync::Arc;

use super::geometry::{PaRange, Stage2Geometry};
use super::table::{Leaf, Stage2Table};
use super::testing::FakePhys;
use super::vmid::Vmid;
use crate::addr::Ipa;
use recorder::Recorder;

pub const K4: u64 = 4 << 10;
pub const M2: u64 = 2 << 20;
pub const G1: u64 = 1 << 30;

pub type RecTable<'a> = Stage2Table<&'a FakePhys, &'a Recorder>;

pub fn geo(ipa_bits: u8) -> Stage2Geometry {
    Stage2Geometry::new(ipa_bits, PaRange::Bits48).unwrap()
}

/// Fake memory observed by a recording TLB.
pub fn recorded(pages: usize) -> (Arc<Recorder>, FakePhys) {
    let rec = Arc::new(Recorder::new(false));
    let phys = FakePhys::with_observer(pages, rec.clone());
    (rec, phys)
}

/// A table on recorded fake memory, attached to the recorder.
pub fn rec_table<'a>(phys: &'a FakePhys, rec: &'a Recorder, ipa_bits: u8) -> RecTable<'a> {
    let g = geo(ipa_bits);
    let t = Stage2Table::new(g, Vmid::new(1), false, phys, rec, phys).unwrap();
    rec.attach(g, t.root(), t.vmid());
    t
}

/// All leaves of a table, in IPA order.
pub fn leaves<M: super::TableMemory, T: super::Stage2Tlb>(t: &Stage2Table<M, T>) -> Vec<Leaf> {
    let mut out = Vec::new();
    t.for_each_leaf(Ipa::new(0), t.geometry().ipa_limit(), &mut |l| out.push(l))
        .unwrap();
    out
}
