//! The one table walker. Every operation (map, unmap, permission changes, split, merge, dirty
//! logging, translate, destroy accounting) is a [`Visitor`] over [`walk`], as in Linux's
//! `kvm_pgtable_walk` (arch/arm64/kvm/hyp/pgtable.c).
//!
//! The walk is depth first over the entries that intersect `[start, end)`. For each entry:
//! - a table entry gets `table_pre`, then (unless the visitor said [`Flow::Skip`]) its child
//!   table is walked, then `table_post`;
//! - any other entry (invalid, block, page) gets `leaf`.
//!
//! After `table_pre` or `leaf` the entry is read again: if the visitor has just installed a
//! table there (map over an invalid entry, split of a block), the walk descends into it at once.
//! The concatenated root is walked as `root_pages` consecutive level-`start` tables.
#![forbid(unsafe_code)]

use super::Stage2Error;
use super::desc::{is_table, table_addr};
use super::geometry::{ENTRIES_PER_TABLE, Stage2Geometry, level_shift, level_size};
use super::hw::{TableMemory, load_entry};
use crate::addr::{Ipa, PAGE_SIZE, PhysAddr};

/// What the walker does after a visit.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Flow {
    /// Go on (descend into the entry if it is, or has just become, a table).
    Continue,
    /// Do not descend into this entry; go on with the next one.
    Skip,
    /// End the walk now.
    Stop,
}

/// The slot of a table descriptor: the parent of a non-root table.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Parent {
    pub table: PhysAddr,
    pub index: usize,
    pub level: u8,
}

/// One visited entry.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    /// The table page holding the entry and its index there.
    pub table: PhysAddr,
    pub index: usize,
    pub level: u8,
    /// First IPA the entry translates.
    pub base: u64,
    /// The descriptor as read just before the callback.
    pub desc: u64,
    /// The descriptor pointing at `table`; `None` for the root pages.
    pub parent: Option<Parent>,
    /// The part of the walked range inside this entry: `[start, end)`.
    pub start: u64,
    pub end: u64,
}

impl Entry {
    /// Size of IPA space the entry covers.
    pub fn size(&self) -> u64 {
        level_size(self.level)
    }
    /// True when the walked range covers the whole entry.
    pub fn fully_covered(&self) -> bool {
        self.start == self.base && self.end == self.base + self.size()
    }
}

/// Callbacks of one operation. Errors end the walk and are returned by [`walk`].
pub trait Visitor<M: TableMemory + ?Sized> {
    fn table_pre(&mut self, _mem: &M, _e: &Entry) -> Result<Flow, Stage2Error> {
        Ok(Flow::Continue)
    }
    fn leaf(&mut self, _mem: &M, _e: &Entry) -> Result<Flow, Stage2Error> {
        Ok(Flow::Continue)
    }
    fn table_post(&mut self, _mem: &M, _e: &Entry) -> Result<Flow, Stage2Error> {
        Ok(Flow::Continue)
    }
}

/// Reads descriptor `index` of the table page `table`.
pub(super) fn load<M: TableMemory + ?Sized>(mem: &M, table: PhysAddr, index: usize) -> u64 {
    load_entry(mem, table, index)
}

/// Walks `[start, end)` (page aligned, inside the IPA space) of the table rooted at `root`.
pub(super) fn walk<M, V>(
    mem: &M,
    geo: &Stage2Geometry,
    root: PhysAddr,
    start: Ipa,
    end: Ipa,
    v: &mut V,
) -> Result<(), Stage2Error>
where
    M: TableMemory + ?Sized,
    V: Visitor<M>,
{
    let (start, end) = (start.as_u64(), end.as_u64());
    if start >= end {
        return Ok(());
    }
    if end > geo.ipa_limit() {
        return Err(Stage2Error::OutOfRange);
    }
    let span = geo.root_page_span();
    let first = (start / span) as usize;
    let last = ((end - 1) / span) as usize;
    for page in first..=last {
        let base = page as u64 * span;
        let table = root + page as u64 * PAGE_SIZE;
        let s = start.max(base);
        let e = end.min(base + span);
        if walk_table(mem, table, geo.start_level(), base, None, s, e, v)? == Flow::Stop {
            break;
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn walk_table<M, V>(
    mem: &M,
    table: PhysAddr,
    level: u8,
    table_base: u64,
    parent: Option<Parent>,
    start: u64,
    end: u64,
    v: &mut V,
) -> Result<Flow, Stage2Error>
where
    M: TableMemory + ?Sized,
    V: Visitor<M>,
{
    let shift = level_shift(level);
    let size = level_size(level);
    let mut index = ((start - table_base) >> shift) as usize;
    let mut addr = start;
    while addr < end {
        debug_assert!(index < ENTRIES_PER_TABLE);
        let base = table_base + ((index as u64) << shift);
        let piece_end = end.min(base + size);
        let mut e = Entry {
            table,
            index,
            level,
            base,
            desc: load(mem, table, index),
            parent,
            start: addr,
            end: piece_end,
        };
        let flow = if is_table(e.desc, level) {
            v.table_pre(mem, &e)?
        } else {
            v.leaf(mem, &e)?
        };
        if flow == Flow::Stop {
            return Ok(Flow::Stop);
        }
        e.desc = load(mem, table, index);
        if flow == Flow::Continue && is_table(e.desc, level) {
            let here = Some(Parent {
                table,
                index,
                level,
            });
            let child = table_addr(e.desc);
            if walk_table(mem, child, level + 1, base, here, addr, piece_end, v)? == Flow::Stop {
                return Ok(Flow::Stop);
            }
            e.desc = load(mem, table, index);
            if v.table_post(mem, &e)? == Flow::Stop {
                return Ok(Flow::Stop);
            }
        }
        addr = piece_end;
        index += 1;
    }
    Ok(Flow::Continue)
}
