//! What the virtio devices need from the machine (docs/virtio.md): raw access to host-physical
//! RAM through EL2's identity map ([`HypPhys`], the `virtio::mem::PhysMemory` of every VM's
//! RAM handle), and writable disk copies kept in page-allocator blocks ([`PagedDisk`]), so
//! that a disk's pages go back to the allocator when its VM ends (heap pages never do).
//!
//! The callers are the virtio logic, which checks every guest address against the VM's RAM
//! before asking for it here (`virtio::mem::GuestMemory`): nothing in this file checks
//! addresses.
use crate::addr::{PAGE_SIZE, PhysAddr};
use crate::mm::PAGES;
use crate::mm::frame::FrameAllocator;
use crate::virtio::blk::BlockStore;
use crate::virtio::mem::PhysMemory;
use alloc::vec::Vec;

// SAFETY: defined in boot/vectors.S with this signature (see stage2_hw).
unsafe extern "C" {
    fn kestrel_copy_bulk(dst: *mut u8, src: *const u8, len: usize);
}

/// Copies `len` bytes from `src` to `dst`: 64-byte multiples with the bulk copier (16-byte
/// loads and stores), the rest a byte at a time with volatile accesses.
///
/// # Safety
/// Both ranges must be identity-mapped normal memory, valid for `len` bytes and not
/// overlapping. Either may be guest RAM that a guest changes meanwhile: the accesses are
/// assembly or volatile, never through Rust references.
unsafe fn copy_raw(dst: *mut u8, src: *const u8, len: usize) {
    let bulk = len & !63;
    // SAFETY: delegated to the caller; the bulk copier moves exactly `bulk` bytes.
    unsafe {
        kestrel_copy_bulk(dst, src, bulk);
        for i in bulk..len {
            dst.add(i).write_volatile(src.add(i).read_volatile());
        }
    }
}

/// Host-physical RAM through EL2's identity map (every RAM page is mapped read-write, normal
/// write-back memory). Guest RAM is mapped write-back for the guest too (stage 2 forces it with
/// FEAT_S2FWB; virtio rings are `dma-coherent` in the guest's DTB), so no cache maintenance is
/// needed between the two views.
#[derive(Clone, Copy, Default)]
pub struct HypPhys;

impl PhysMemory for HypPhys {
    fn read(&self, pa: PhysAddr, buf: &mut [u8]) {
        // SAFETY: `pa..pa + len` is guest RAM checked by `GuestMemory` (identity-mapped); `buf`
        // is hypervisor memory, distinct from guest RAM.
        unsafe { copy_raw(buf.as_mut_ptr(), pa.as_u64() as *const u8, buf.len()) }
    }
    fn write(&self, pa: PhysAddr, data: &[u8]) {
        // SAFETY: as in `read`, the other way round.
        unsafe { copy_raw(pa.as_u64() as *mut u8, data.as_ptr(), data.len()) }
    }
    fn copy(&self, dst: PhysAddr, src: PhysAddr, len: usize) {
        // SAFETY: two checked pieces of guest RAM of two VMs (or distinct buffers of one),
        // never overlapping (the switch copies from a sender's TX buffers into a receiver's
        // RX buffers).
        unsafe { copy_raw(dst.as_u64() as *mut u8, src.as_u64() as *const u8, len) }
    }
    fn load_u16(&self, pa: PhysAddr) -> u16 {
        // SAFETY: a checked, 2-byte aligned address in guest RAM: an aligned `ldrh`, single-copy
        // atomic (Arm ARM B2.2.1).
        u16::from_le(unsafe { (pa.as_u64() as *const u16).read_volatile() })
    }
    fn store_u16(&self, pa: PhysAddr, value: u16) {
        // SAFETY: as in `load_u16`, an aligned `strh`.
        unsafe { (pa.as_u64() as *mut u16).write_volatile(value.to_le()) }
    }
}

/// A writable disk: a private copy of an image in 2 MiB page-allocator blocks, scrubbed and
/// returned to the allocator when dropped.
pub struct PagedDisk {
    blocks: Vec<PhysAddr>,
    len: u64,
}

const BLOCK_ORDER: u32 = 9;
const BLOCK: u64 = PAGE_SIZE << BLOCK_ORDER;

impl PagedDisk {
    /// A copy of `image`; `None` when the allocator has not enough free blocks (nothing is
    /// kept then).
    pub fn new(image: &[u8]) -> Option<Self> {
        let mut disk = Self {
            blocks: Vec::new(),
            len: image.len() as u64,
        };
        for piece in image.chunks(BLOCK as usize) {
            // On failure `disk` is dropped, which returns the blocks taken so far.
            let pa = PAGES.alloc_frames(BLOCK_ORDER)?;
            disk.blocks.push(pa);
            // SAFETY: a block just taken from the page allocator for this disk alone
            // (identity-mapped RAM nothing else uses); `piece` is the ramdisk, elsewhere.
            unsafe { super::stage2_hw::copy_to_phys(pa, piece) };
        }
        Some(disk)
    }

    /// Where the bytes from `offset` are, and how many of them (at most `max`, within one
    /// block and the disk): a dangling pointer and 0 past the end.
    fn span(&self, offset: u64, max: u64) -> (*mut u8, usize) {
        let left = self.len.saturating_sub(offset);
        let (i, at) = ((offset / BLOCK) as usize, offset % BLOCK);
        match self.blocks.get(i) {
            Some(base) => (
                (base.as_u64() + at) as *mut u8,
                max.min(BLOCK - at).min(left) as usize,
            ),
            None => (core::ptr::NonNull::dangling().as_ptr(), 0),
        }
    }
}

impl BlockStore for PagedDisk {
    fn len(&self) -> u64 {
        self.len
    }
    fn writable(&self) -> bool {
        true
    }
    fn read_piece(&self, offset: u64, max: u64) -> &[u8] {
        let (p, n) = self.span(offset, max);
        // SAFETY: `p..p + n` lies in a block this disk owns (allocated for it alone,
        // identity-mapped RAM), borrowed for as long as `self`; nothing else writes it.
        unsafe { core::slice::from_raw_parts(p, n) }
    }
    fn write_piece(&mut self, offset: u64, max: u64) -> Option<&mut [u8]> {
        let (p, n) = self.span(offset, max);
        // SAFETY: as in `read_piece`; `&mut self` makes the borrow exclusive.
        Some(unsafe { core::slice::from_raw_parts_mut(p, n) })
    }
}

impl Drop for PagedDisk {
    fn drop(&mut self) {
        for &pa in &self.blocks {
            // SAFETY: a block of this disk, which is being dropped: no device and no slice
            // borrowed from it is left (`read_piece`/`write_piece` borrow `self`).
            unsafe { super::stage2_hw::zero_phys(pa, BLOCK) };
            PAGES.free_frames(pa, BLOCK_ORDER);
        }
    }
}
