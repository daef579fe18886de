//! EL2 stage-1 translation: an identity map.
//!
//! Two phases. The *early* map is built with the MMU off from four static tables, before the
//! DTB has been read: 1 GiB device-nGnRE blocks for the first 512 GiB, except the GiB(s) holding
//! the image and the DTB, which get a level-2 table whose 2 MiB blocks over the image and the
//! DTB are normal write-back memory. That is enough to parse the DTB, use locks and print.
//! The *final* map (the `aarch64-paging` crate) is built once RAM and devices are known: RAM
//! normal write-back and execute-never, the image's text read-only and executable, its rodata
//! read-only, the devices the hypervisor itself drives (console, GIC) device-nGnRE; nothing else
//! is mapped. The attributes of both are `mm::el2_map`'s.
//!
//! The two maps cover the running code with different block sizes (the final map uses 4 KiB
//! pages where text and data meet), so the switch is done with the MMU off for a few
//! instructions ([`FinalMap::activate`]): replacing live translations by ones of another size
//! without break-before-make may leave both in the TLB, which a Cortex-A72 may report as a TLB
//! conflict abort (Arm ARM D8.16 "TLB maintenance requirements and the TLB conflict abort").
use aarch64_cpu::registers::{ID_AA64MMFR0_EL1, Readable};
use aarch64_paging::idmap::IdMap;
use aarch64_paging::paging::{El2, MemoryRegion};
use core::arch::asm;

pub use crate::mm::el2_map::{MAIR, MapKind};
use crate::mm::el2_map::{attributes, early_block};

/// SCTLR_EL2: M, C, SA, I plus the RES1 bits of the non-VHE layout (Arm ARM D19.2).
pub const SCTLR_MMU_ON: u64 = 0x30c5_0830 | (1 << 0) | (1 << 2) | (1 << 3) | (1 << 12);

const DESC_TABLE: u64 = 0b11;

#[repr(C, align(4096))]
struct Table([u64; 512]);

static mut EARLY_L0: Table = Table([0; 512]);
static mut EARLY_L1: Table = Table([0; 512]);
static mut EARLY_L2: [Table; 2] = [Table([0; 512]), Table([0; 512])];

/// TCR_EL2 (non-VHE layout, Arm ARM D19.2.137): T0SZ, inner/outer write-back walks, inner
/// shareable, 4 KiB granule, PS from ID_AA64MMFR0_EL1.PARange, RES1 bits 23 and 31.
fn tcr(t0sz: u64) -> u64 {
    let ps = ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange).min(5);
    t0sz | (1 << 8) | (1 << 10) | (3 << 12) | (ps << 16) | (1 << 23) | (1 << 31)
}

/// Builds the early identity map and switches the MMU on. Runs with the MMU off: no atomics, no
/// unaligned accesses, nothing outside the image and the DTB.
///
/// # Safety
/// Called once, by the boot CPU, with the MMU off, before anything else touches the tables.
pub unsafe fn early_enable(image_start: u64, image_end: u64, dtb: u64) {
    const GIB: u64 = 1 << 30;
    const MIB2: u64 = 2 << 20;
    // SAFETY: MMU off, single CPU: nothing else references these statics yet.
    let (l0, l1, l2) = unsafe {
        (
            &mut *core::ptr::addr_of_mut!(EARLY_L0),
            &mut *core::ptr::addr_of_mut!(EARLY_L1),
            &mut *core::ptr::addr_of_mut!(EARLY_L2),
        )
    };
    // Same 48-bit VA layout (T0SZ 16, start level 0) as the final map, so that switching
    // tables later changes TTBR0_EL2 only.
    l0.0[0] = (l1 as *const Table as u64) | DESC_TABLE;
    for (i, e) in l1.0.iter_mut().enumerate() {
        *e = early_block(i as u64 * GIB, false);
    }
    let normal = [(image_start, image_end), (dtb, dtb.saturating_add(MIB2))];
    let mut used = [u64::MAX; 2];
    for &(start, end) in &normal {
        let mut a = start & !(MIB2 - 1);
        while a < end {
            let gib = a / GIB;
            if gib < 512 {
                let slot = match used.iter().position(|&g| g == gib) {
                    Some(s) => Some(s),
                    None => used.iter().position(|&g| g == u64::MAX).inspect(|&s| {
                        used[s] = gib;
                        for (j, e) in l2[s].0.iter_mut().enumerate() {
                            *e = early_block(gib * GIB + j as u64 * MIB2, false);
                        }
                        l1.0[gib as usize] = (&l2[s] as *const Table as u64) | DESC_TABLE;
                    }),
                };
                if let Some(s) = slot {
                    l2[s].0[((a % GIB) / MIB2) as usize] = early_block(a, true);
                }
            }
            a += MIB2;
        }
    }
    let ttbr = l0 as *const Table as u64;
    // The image was written (relocations, .bss) with the MMU and caches off: discard any stale
    // lines for it before caching is switched on, so cacheable reads see memory.
    super::cache::invalidate_dcache_range(image_start, image_end - image_start);
    // SAFETY: the tables map the running image identically, so execution continues at the same
    // addresses once translation is on.
    unsafe {
        asm!(
            "msr mair_el2, {mair}",
            "msr tcr_el2, {tcr}",
            "msr ttbr0_el2, {ttbr}",
            "isb",
            "tlbi alle2",
            "ic iallu",
            "dsb nsh",
            "isb",
            "msr sctlr_el2, {sctlr}",
            "isb",
            mair = in(reg) MAIR,
            tcr = in(reg) tcr(16),
            ttbr = in(reg) ttbr,
            sctlr = in(reg) SCTLR_MMU_ON,
            options(nostack),
        );
    }
}

/// The final EL2 identity map.
pub struct FinalMap {
    map: IdMap<El2>,
}

#[derive(Debug)]
pub struct MapFailed;

impl FinalMap {
    pub fn new() -> Self {
        Self {
            map: IdMap::new(0, El2),
        }
    }

    /// Maps `[start, end)` (rounded out to pages) with the given kind.
    pub fn map(&mut self, start: u64, end: u64, kind: MapKind) -> Result<(), MapFailed> {
        let s = start & !0xfff;
        let end_page = (end + 0xfff) & !0xfff;
        if s >= end_page {
            return Ok(());
        }
        self.map
            .map_range(
                &MemoryRegion::new(s as usize, end_page as usize),
                attributes(kind),
            )
            .map_err(|err| {
                log::error!("kestrel: EL2 map of {s:#x}..{end_page:#x} failed: {err:?}");
                MapFailed
            })
    }

    /// Switches this CPU from the early tables to these, and returns the register values a
    /// secondary CPU needs (MAIR, TCR, TTBR0, SCTLR).
    ///
    /// With the MMU off in between: the early and the final map translate the running code with
    /// different block sizes, and no break-before-make sequence can replace the mapping of the
    /// code doing it. So, in one `asm!` block that touches no memory: the table writes are made
    /// visible, the MMU goes off (identity map: the next instruction is at the same address), the
    /// new TCR and TTBR0 are loaded, every EL2 TLB entry is invalidated while nothing uses them,
    /// and the MMU comes back on with the final tables. Data caches stay on and coherent; the
    /// only accesses while the MMU is off are instruction fetches from the image.
    pub fn activate(&mut self) -> (u64, u64, u64, u64) {
        let ttbr = self.map.root_address().0 as u64;
        let tcr = tcr(16);
        // SAFETY: both maps are identity maps that agree on everything in use (the image, its
        // stacks, the DTB and the console), so execution and data continue at the same
        // addresses; between MMU off and on nothing but registers is touched, and no early-map
        // TLB entry survives the invalidation.
        unsafe {
            asm!(
                "dsb ish",
                "msr sctlr_el2, {off}",
                "isb",
                "msr tcr_el2, {tcr}",
                "msr ttbr0_el2, {ttbr}",
                "isb",
                "tlbi alle2",
                "dsb ish",
                "isb",
                "msr sctlr_el2, {on}",
                "isb",
                off = in(reg) SCTLR_MMU_ON & !1,
                on = in(reg) SCTLR_MMU_ON,
                tcr = in(reg) tcr,
                ttbr = in(reg) ttbr,
                options(nostack),
            );
        }
        self.map.mark_active();
        (MAIR, tcr, ttbr, SCTLR_MMU_ON)
    }
}

impl Default for FinalMap {
    fn default() -> Self {
        Self::new()
    }
}
