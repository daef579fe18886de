//! A page the hypervisor owns and one VM may read: mapped into the VM's stage 2 as
//! `RegionKind::HypervisorData` (read-only, Normal Write-Back, execute-never), written by the
//! hypervisor through EL2's identity map. Today: the VM's stolen-time records
//! ([`crate::pv_time`]).
//!
//! The page comes from the page allocator zeroed and goes back to it when dropped; its owner
//! (the VM) drops it only after its stage 2 is destroyed, so no guest can still read it.
use crate::addr::{PAGE_SIZE, PhysAddr};
use crate::mm::PAGES;
use crate::mm::frame::FrameAllocator;
use core::sync::atomic::{AtomicU64, Ordering};

pub struct SharedPage {
    pa: PhysAddr,
}

impl SharedPage {
    /// A zeroed page; `None` when the page allocator has none.
    pub fn new() -> Option<Self> {
        let pa = PAGES.alloc_frames(0)?;
        // SAFETY: a page just taken from the page allocator: identity-mapped normal memory
        // that nothing else references.
        unsafe { super::stage2_hw::zero_phys(pa, PAGE_SIZE) };
        Some(Self { pa })
    }

    pub fn pa(&self) -> PhysAddr {
        self.pa
    }
}

impl crate::pv_time::RecordPage for SharedPage {
    /// One `STLR` of the whole value: single-copy atomic for an aligned doubleword (Arm ARM
    /// B2.2.1), so the guest's 64-bit load sees the old value or the new, and ordered after
    /// every earlier store of this CPU. Offsets outside the page or unaligned are ignored.
    fn store_u64(&self, offset: usize, value: u64) {
        if !offset.is_multiple_of(8) || offset as u64 + 8 > PAGE_SIZE {
            return;
        }
        let p = (self.pa.as_u64() + offset as u64) as *mut u64;
        // SAFETY: `p` is 8-aligned and inside the page this value owns (checked above), which
        // EL2 identity-maps as normal memory; the guest only reads it (its stage 2 mapping is
        // read-only), and no Rust reference points into it other than this atomic.
        let a = unsafe { AtomicU64::from_ptr(p) };
        a.store(value.to_le(), Ordering::Release);
    }
}

impl Drop for SharedPage {
    fn drop(&mut self) {
        PAGES.free_frames(self.pa, 0);
    }
}
