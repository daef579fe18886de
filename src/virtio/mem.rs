//! Guest RAM as the virtio devices see it: every byte a device reads or writes goes through
//! [`GuestMemory`], by IPA, and every IPA range is checked against the VM's RAM before a single
//! byte moves. A descriptor that points outside RAM is an [`MemError`] value, never an access.
//!
//! Two layers, so that the bounds logic is tested here and the runtime's part is tiny:
//! - [`PhysMemory`]: raw host-physical access (copy in, copy out, copy between two places,
//!   16-bit single-copy-atomic loads and stores for ring indices). The runtime implements it
//!   over EL2's identity map; it trusts its arguments, which only come from the layer below.
//! - [`GuestMemory`]: one VM's RAM. Its one required method, [`GuestMemory::piece`], names
//!   the physically contiguous piece of RAM at an IPA; everything else (whole-range checks,
//!   reads and writes that cross region boundaries, copies between two VMs) is provided on
//!   top of it. [`GuestRam`] implements it over a list of RAM regions; the runtime wraps it
//!   to prepare (scrub) 2 MiB chunks the guest never touched and to mark dirty pages
//!   (docs/virtio.md).
//!
//! A range that crosses from one RAM region into the next works when the regions are
//! adjacent in IPA space (the VM's RAM is several buddy blocks); a gap is `NotRam`, and in
//! that case nothing is read or written (ranges are checked whole before copying).
#![forbid(unsafe_code)]

use alloc::vec::Vec;

use crate::addr::{Ipa, PhysAddr};
use crate::mm::stage2::{GuestMemoryMap, HypDirty, MemRegion, RegionKind};

/// Why a guest-memory access was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MemError {
    /// `ipa` (inside the requested range) is not RAM of this VM.
    NotRam { ipa: Ipa },
    /// `ipa + len` wraps around the address space.
    Overflow { ipa: Ipa, len: u64 },
    /// A 16-bit ring index at an odd address (rings are checked aligned at enable, so this is
    /// a bug or a driver moving a ring under the device).
    Unaligned { ipa: Ipa },
}

/// Raw access to host-physical RAM. Callers pass only ranges that [`GuestMemory::piece`]
/// returned, so an implementation does no checking of its own.
///
/// The guest runs concurrently on other CPUs: an implementation must copy with raw or
/// volatile accesses (never through Rust references to guest memory) and `load_u16` /
/// `store_u16` must be single-copy atomic (an aligned `ldrh`/`strh`). Ordering between these
/// accesses is the caller's business (the virtqueue code issues the fences VIRTIO 1.2 §2.7.13
/// asks for).
pub trait PhysMemory: Send + Sync {
    fn read(&self, pa: PhysAddr, buf: &mut [u8]);
    fn write(&self, pa: PhysAddr, data: &[u8]);
    /// Copies `len` bytes from `src` to `dst` (two different VMs' RAM: never overlapping).
    fn copy(&self, dst: PhysAddr, src: PhysAddr, len: usize);
    /// Loads a little-endian u16 from a 2-byte aligned address.
    fn load_u16(&self, pa: PhysAddr) -> u16;
    /// Stores a little-endian u16 to a 2-byte aligned address.
    fn store_u16(&self, pa: PhysAddr, value: u16);
}

/// The RAM of one VM, by IPA.
pub trait GuestMemory: Send + Sync {
    type Phys: PhysMemory;

    fn phys(&self) -> &Self::Phys;

    /// The physically contiguous piece of RAM that starts at `ipa`: its physical address and
    /// length, `1..=len` bytes (`len` > 0). `write` says the device is about to write it (the
    /// implementation marks the pages in its dirty log while one runs: `HypDirty::mark`).
    /// `NotRam` when `ipa` is not RAM of this VM.
    fn piece(&self, ipa: Ipa, len: u64, write: bool) -> Result<(PhysAddr, u64), MemError>;

    /// Checks that all of `[ipa, ipa + len)` is RAM.
    fn check(&self, ipa: Ipa, len: u64, write: bool) -> Result<(), MemError> {
        for_each_piece(self, ipa, len, write, |_, _, _| ())
    }

    /// Reads `buf.len()` bytes at `ipa`. Nothing is read unless the whole range is RAM.
    fn read(&self, ipa: Ipa, buf: &mut [u8]) -> Result<(), MemError> {
        self.check(ipa, buf.len() as u64, false)?;
        for_each_piece(self, ipa, buf.len() as u64, false, |pa, at, n| {
            self.phys().read(pa, &mut buf[at..at + n]);
        })
    }

    /// Writes `data` at `ipa`. Nothing is written unless the whole range is RAM.
    fn write(&self, ipa: Ipa, data: &[u8]) -> Result<(), MemError> {
        self.check(ipa, data.len() as u64, true)?;
        for_each_piece(self, ipa, data.len() as u64, true, |pa, at, n| {
            self.phys().write(pa, &data[at..at + n]);
        })
    }

    /// A ring index: a single-copy-atomic little-endian u16 at a 2-byte aligned IPA.
    fn read_u16(&self, ipa: Ipa) -> Result<u16, MemError> {
        if !ipa.is_aligned(2) {
            return Err(MemError::Unaligned { ipa });
        }
        let (pa, _) = self.piece(ipa, 2, false)?;
        Ok(self.phys().load_u16(pa))
    }

    fn write_u16(&self, ipa: Ipa, value: u16) -> Result<(), MemError> {
        if !ipa.is_aligned(2) {
            return Err(MemError::Unaligned { ipa });
        }
        let (pa, _) = self.piece(ipa, 2, true)?;
        self.phys().store_u16(pa, value);
        Ok(())
    }

    /// `N` bytes at `ipa`.
    fn read_array<const N: usize>(&self, ipa: Ipa) -> Result<[u8; N], MemError> {
        let mut b = [0u8; N];
        self.read(ipa, &mut b)?;
        Ok(b)
    }
}

/// Calls `f(pa, offset, n)` for each physically contiguous piece of `[ipa, ipa + len)` in IPA
/// order (`offset` counts from `ipa`). Stops with an error at the first IPA that is not RAM
/// (pieces before it have been visited: use [`GuestMemory::check`] first when that matters).
pub fn for_each_piece<M: GuestMemory + ?Sized>(
    mem: &M,
    ipa: Ipa,
    len: u64,
    write: bool,
    mut f: impl FnMut(PhysAddr, usize, usize),
) -> Result<(), MemError> {
    if ipa.checked_add(len).is_none() {
        return Err(MemError::Overflow { ipa, len });
    }
    let mut done = 0u64;
    while done < len {
        let (pa, n) = mem.piece(ipa + done, len - done, write)?;
        debug_assert!(n > 0 && n <= len - done);
        let n = n.min(len - done);
        f(pa, done as usize, n as usize);
        done += n;
    }
    Ok(())
}

/// Copies `len` bytes from `src_ipa` in `src`'s RAM to `dst_ipa` in `dst`'s RAM (two VMs, or
/// one): one copy, physical piece to physical piece, no bounce buffer. Nothing is copied
/// unless both ranges are wholly RAM.
pub fn copy_between<D, S>(
    dst: &D,
    dst_ipa: Ipa,
    src: &S,
    src_ipa: Ipa,
    len: u64,
) -> Result<(), MemError>
where
    D: GuestMemory + ?Sized,
    S: GuestMemory<Phys = D::Phys> + ?Sized,
{
    src.check(src_ipa, len, false)?;
    dst.check(dst_ipa, len, true)?;
    let mut done = 0u64;
    while done < len {
        let (spa, sn) = src.piece(src_ipa + done, len - done, false)?;
        let (dpa, dn) = dst.piece(dst_ipa + done, len - done, true)?;
        let n = sn.min(dn).min(len - done);
        dst.phys().copy(dpa, spa, n as usize);
        done += n;
    }
    Ok(())
}

/// One region of guest RAM: `[ipa, ipa + size)` backed by `[pa, pa + size)`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RamRegion {
    pub ipa: Ipa,
    pub size: u64,
    pub pa: PhysAddr,
}

/// The piece of `regions` (sorted by IPA, non-overlapping) at `ipa`, at most `len` bytes.
pub fn ram_piece(regions: &[RamRegion], ipa: Ipa, len: u64) -> Result<(PhysAddr, u64), MemError> {
    let at = regions.partition_point(|r| r.ipa <= ipa);
    let r = at
        .checked_sub(1)
        .and_then(|i| regions.get(i))
        .filter(|r| ipa - r.ipa < r.size)
        .ok_or(MemError::NotRam { ipa })?;
    let off = ipa - r.ipa;
    Ok((r.pa + off, (r.size - off).min(len)))
}

/// [`GuestMemory`] over a fixed list of RAM regions and a [`PhysMemory`]: the bounds logic the
/// runtime's implementation wraps, and the memory of the host tests and fuzzers.
pub struct GuestRam<P> {
    regions: Vec<RamRegion>,
    phys: P,
    dirty: HypDirty,
}

impl<P: PhysMemory> GuestRam<P> {
    /// `regions` in any order; they must not overlap (the VM's memory map guarantees it).
    pub fn new(mut regions: Vec<RamRegion>, phys: P) -> Self {
        regions.retain(|r| r.size > 0);
        regions.sort_by_key(|r| r.ipa);
        let base = regions.first().map_or(Ipa::new(0), |r| r.ipa);
        let end = regions.last().map_or(base, |r| r.ipa + r.size);
        Self {
            dirty: HypDirty::new(base, end - base),
            regions,
            phys,
        }
    }

    /// The RAM regions of a VM's memory map (passed-through device ranges are never guest
    /// memory for a device).
    pub fn from_map(map: &GuestMemoryMap, phys: P) -> Self {
        let regions = map
            .regions()
            .iter()
            .filter(|r: &&MemRegion| r.kind == RegionKind::Ram)
            .map(|r| RamRegion {
                ipa: r.ipa,
                size: r.size,
                pa: r.pa,
            })
            .collect();
        Self::new(regions, phys)
    }

    pub fn regions(&self) -> &[RamRegion] {
        &self.regions
    }

    /// The pages written through this memory while a log runs.
    pub fn dirty(&self) -> &HypDirty {
        &self.dirty
    }
}

impl<P: PhysMemory> GuestMemory for GuestRam<P> {
    type Phys = P;

    fn phys(&self) -> &P {
        &self.phys
    }

    fn piece(&self, ipa: Ipa, len: u64, write: bool) -> Result<(PhysAddr, u64), MemError> {
        let (pa, n) = ram_piece(&self.regions, ipa, len)?;
        if write {
            self.dirty.mark(ipa, n);
        }
        Ok((pa, n))
    }
}

impl<M: GuestMemory + ?Sized> GuestMemory for &M {
    type Phys = M::Phys;
    fn phys(&self) -> &M::Phys {
        (**self).phys()
    }
    fn piece(&self, ipa: Ipa, len: u64, write: bool) -> Result<(PhysAddr, u64), MemError> {
        (**self).piece(ipa, len, write)
    }
}

impl<M: GuestMemory + ?Sized> GuestMemory for alloc::sync::Arc<M> {
    type Phys = M::Phys;
    fn phys(&self) -> &M::Phys {
        (**self).phys()
    }
    fn piece(&self, ipa: Ipa, len: u64, write: bool) -> Result<(PhysAddr, u64), MemError> {
        (**self).piece(ipa, len, write)
    }
}

impl<P: PhysMemory + ?Sized> PhysMemory for alloc::sync::Arc<P> {
    fn read(&self, pa: PhysAddr, buf: &mut [u8]) {
        (**self).read(pa, buf)
    }
    fn write(&self, pa: PhysAddr, data: &[u8]) {
        (**self).write(pa, data)
    }
    fn copy(&self, dst: PhysAddr, src: PhysAddr, len: usize) {
        (**self).copy(dst, src, len)
    }
    fn load_u16(&self, pa: PhysAddr) -> u16 {
        (**self).load_u16(pa)
    }
    fn store_u16(&self, pa: PhysAddr, value: u16) {
        (**self).store_u16(pa, value)
    }
}
