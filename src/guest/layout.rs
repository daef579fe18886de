//! Where the kernel, the DTB and the initrd go in a guest's RAM, following the arm64 boot
//! protocol (Linux `Documentation/arch/arm64/booting.rst`):
//!
//! - Kernel (section 4): "The Image must be placed text_offset bytes from a 2MB aligned base
//!   address anywhere in usable system RAM", with `image_size` bytes free from its start.
//!   Kernels before v4.6 (and any kernel without flags bit 3) cannot use memory below the
//!   image, so the base is the lowest 2 MiB boundary in RAM in every case.
//! - DTB (section 2): "placed on an 8-byte boundary and must not exceed 2 megabytes in size";
//!   since it is mapped with blocks of up to 2 MiB it should not share a 2 MiB block with
//!   anything needing other attributes; kernels before v4.2 also want it "within the 512 MB
//!   region starting at text_offset bytes below the kernel Image". The DTB gets a whole
//!   2 MiB aligned 2 MiB slot: it is 8-byte aligned, cannot cross a 2 MiB boundary, and may be
//!   as large as the protocol allows, so the layout does not depend on the DTB's final size
//!   (the DTB itself names the initrd's addresses, so it is generated after the layout).
//! - Initrd (section 4): "it must reside entirely within a 1 GB aligned physical memory
//!   window of up to 32 GB in size that fully covers the kernel Image as well".
//!
//! The plan for a kernel whose header gives `image_size`: kernel at the bottom of RAM, the
//! DTB slot at the next 2 MiB boundary after `image_size`, the initrd (page aligned) right
//! after the DTB slot. For a legacy kernel (`image_size` 0, footprint unknown) booting.rst
//! asks to keep as much memory as possible free right after the image, so the initrd goes to
//! the top of RAM and the DTB slot to the highest 2 MiB block below it that is still within
//! 512 MiB of the kernel base.
#![forbid(unsafe_code)]

use core::fmt;

use super::image::ImageInfo;
use crate::addr::{Ipa, PAGE_SIZE, SZ_1G, SZ_2M};

/// The guest-physical addresses of the emulated devices, as on QEMU's `virt` machine (so a
/// guest kernel finds what it would find there). Guest RAM and passthrough devices must stay
/// out of [`EMULATED_DEVICE_WINDOW`], and guest RAM out of [`VIRTIO_MMIO`] (`config::parse`
/// checks; a passthrough device there takes the virtio-mmio slots it covers).
pub mod guest_map {
    use super::IpaRange;
    use crate::addr::Ipa;

    /// Everything below is inside this window: 0x0800_0000..0x0a00_0000.
    pub const EMULATED_DEVICE_WINDOW: IpaRange = IpaRange {
        start: Ipa::new(0x0800_0000),
        size: 0x0200_0000,
    };
    /// GIC distributor (v2 and v3), 64 KiB.
    pub const GICD: IpaRange = IpaRange {
        start: Ipa::new(0x0800_0000),
        size: 0x1_0000,
    };
    /// GICv2 CPU interface, 64 KiB.
    pub const GICC: IpaRange = IpaRange {
        start: Ipa::new(0x0801_0000),
        size: 0x1_0000,
    };
    /// GICv3 redistributors: one 128 KiB frame (RD_base + SGI_base) per vCPU from here.
    pub const GICR_BASE: Ipa = Ipa::new(0x080a_0000);
    pub const GICR_STRIDE: u64 = 0x2_0000;
    /// The emulated PL011 and its SPI (INTID 33).
    pub const UART: IpaRange = IpaRange {
        start: Ipa::new(0x0900_0000),
        size: 0x1000,
    };
    pub const UART_SPI: u32 = 1;
    /// QEMU virt's virtio-mmio window: 32 transports of 0x200 bytes, SPIs 16..=47
    /// (`vdev::virtio_mmio_slots`).
    pub const VIRTIO_MMIO: IpaRange = IpaRange {
        start: Ipa::new(crate::vdev::virtio_mmio_slots::BASE),
        size: crate::vdev::virtio_mmio_slots::WINDOW_SIZE,
    };

    /// The GICv3 redistributor region for `vcpus` vCPUs (at most 64 fit the window).
    pub const fn gicv3_redistributors(vcpus: usize) -> IpaRange {
        IpaRange {
            start: GICR_BASE,
            size: GICR_STRIDE * vcpus as u64,
        }
    }
}

/// Largest DTB the boot protocol allows, and the size of the slot reserved for it.
pub const DTB_SLOT_SIZE: u64 = SZ_2M;
/// Pre-4.2 kernels want the DTB within this many bytes of the kernel's 2 MiB base.
const DTB_WINDOW: u64 = 512 << 20;
/// The initrd and the kernel must share a 1 GiB aligned window of at most this size.
const INITRD_WINDOW: u64 = 32 * SZ_1G;

/// A range of guest-physical addresses.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct IpaRange {
    pub start: Ipa,
    pub size: u64,
}

impl IpaRange {
    /// One past the last byte. Ranges built by this module never overflow.
    pub fn end(&self) -> Ipa {
        self.start + self.size
    }
}

/// The placement of everything the loader copies into guest RAM, and the boot registers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct GuestLayout {
    pub ram: IpaRange,
    /// The 2 MiB aligned base the kernel's `text_offset` is counted from.
    pub kernel_base: Ipa,
    /// Where the first byte of the `Image` file goes; also the entry point (PC of vCPU 0).
    pub kernel_entry: Ipa,
    /// `kernel_entry + image_size`: memory the kernel owns from the start (file + BSS).
    pub kernel_end: Ipa,
    /// The DTB's address (x0 of vCPU 0); the slot is `DTB_SLOT_SIZE` bytes.
    pub dtb: Ipa,
    pub initrd: Option<IpaRange>,
}

/// Why the pieces do not fit.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum LayoutError {
    /// RAM base + size overflows the address space, or RAM is empty.
    BadRam { base: Ipa, size: u64 },
    /// The kernel's footprint does not fit in RAM (`need_end` is past `ram_end`).
    KernelDoesNotFit { need_end: u64, ram_end: u64 },
    /// No 2 MiB slot for the DTB is left in RAM (or within 512 MiB of the kernel base).
    DtbDoesNotFit,
    /// The initrd does not fit in the RAM left after the kernel and the DTB.
    InitrdDoesNotFit { size: u64, available: u64 },
    /// The initrd and the kernel do not share a 1 GiB aligned window of at most 32 GiB.
    InitrdOutsideWindow,
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutError::BadRam { base, size } => {
                write!(f, "layout: invalid RAM range {base:#x} + {size:#x}")
            }
            LayoutError::KernelDoesNotFit { need_end, ram_end } => write!(
                f,
                "layout: the kernel needs memory up to {need_end:#x}, RAM ends at {ram_end:#x}"
            ),
            LayoutError::DtbDoesNotFit => {
                write!(f, "layout: no 2 MiB slot left for the DTB after the kernel")
            }
            LayoutError::InitrdDoesNotFit { size, available } => write!(
                f,
                "layout: the initrd needs {size:#x} bytes, only {available:#x} are left in RAM"
            ),
            LayoutError::InitrdOutsideWindow => write!(
                f,
                "layout: the initrd and the kernel do not fit in one 1 GiB aligned window of \
                 32 GiB"
            ),
        }
    }
}

fn align_up(v: u64, align: u64) -> Option<u64> {
    Some(v.checked_add(align - 1)? & !(align - 1))
}

fn align_down(v: u64, align: u64) -> u64 {
    v & !(align - 1)
}

/// Plans the guest's RAM: `ram_base`/`ram_size` (IPA), the kernel's header information and the
/// initrd size (0 for none).
pub fn plan(
    ram_base: Ipa,
    ram_size: u64,
    kernel: &ImageInfo,
    initrd_size: u64,
) -> Result<GuestLayout, LayoutError> {
    let bad_ram = LayoutError::BadRam {
        base: ram_base,
        size: ram_size,
    };
    let ram_start = ram_base.as_u64();
    let ram_end = ram_start.checked_add(ram_size).ok_or(bad_ram.clone())?;
    if ram_size == 0 {
        return Err(bad_ram);
    }
    // Kernel at the lowest 2 MiB boundary in RAM.
    let overflow = LayoutError::KernelDoesNotFit {
        need_end: u64::MAX,
        ram_end,
    };
    let kernel_base = align_up(ram_start, SZ_2M).ok_or(overflow.clone())?;
    let kernel_entry = kernel_base
        .checked_add(kernel.text_offset)
        .ok_or(overflow.clone())?;
    let kernel_end = kernel_entry
        .checked_add(kernel.image_size)
        .ok_or(overflow)?;
    if kernel_end > ram_end {
        return Err(LayoutError::KernelDoesNotFit {
            need_end: kernel_end,
            ram_end,
        });
    }
    let dtb_limit = ram_end.min(kernel_base.saturating_add(DTB_WINDOW));

    let (dtb, initrd) = if kernel.legacy {
        // Initrd at the top of RAM, DTB slot in the highest free 2 MiB block below it.
        let initrd = if initrd_size > 0 {
            let start = ram_end
                .checked_sub(initrd_size)
                .map(|s| align_down(s, PAGE_SIZE))
                .filter(|&s| s >= kernel_end)
                .ok_or(LayoutError::InitrdDoesNotFit {
                    size: initrd_size,
                    available: ram_end - kernel_end,
                })?;
            Some(IpaRange {
                start: Ipa::new(start),
                size: initrd_size,
            })
        } else {
            None
        };
        let below = initrd.map_or(ram_end, |r| r.start.as_u64()).min(dtb_limit);
        let dtb = below
            .checked_sub(DTB_SLOT_SIZE)
            .map(|s| align_down(s, SZ_2M))
            .filter(|&s| s >= kernel_end)
            .ok_or(LayoutError::DtbDoesNotFit)?;
        (dtb, initrd)
    } else {
        // DTB slot right after the kernel, initrd right after the slot.
        let dtb = align_up(kernel_end, SZ_2M).ok_or(LayoutError::DtbDoesNotFit)?;
        let dtb_end = dtb
            .checked_add(DTB_SLOT_SIZE)
            .ok_or(LayoutError::DtbDoesNotFit)?;
        if dtb_end > dtb_limit {
            return Err(LayoutError::DtbDoesNotFit);
        }
        let initrd = if initrd_size > 0 {
            let available = ram_end - dtb_end;
            if initrd_size > available {
                return Err(LayoutError::InitrdDoesNotFit {
                    size: initrd_size,
                    available,
                });
            }
            Some(IpaRange {
                start: Ipa::new(dtb_end),
                size: initrd_size,
            })
        } else {
            None
        };
        (dtb, initrd)
    };

    if let Some(r) = initrd {
        let lo = align_down(kernel_base.min(r.start.as_u64()), SZ_1G);
        let hi = align_up(kernel_end.max(r.end().as_u64()), SZ_1G)
            .ok_or(LayoutError::InitrdOutsideWindow)?;
        if hi - lo > INITRD_WINDOW {
            return Err(LayoutError::InitrdOutsideWindow);
        }
    }
    Ok(GuestLayout {
        ram: IpaRange {
            start: ram_base,
            size: ram_size,
        },
        kernel_base: Ipa::new(kernel_base),
        kernel_entry: Ipa::new(kernel_entry),
        kernel_end: Ipa::new(kernel_end),
        dtb: Ipa::new(dtb),
        initrd,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::image::PageSize;

    const M: u64 = 1 << 20;
    const BASE: Ipa = Ipa::new(0x4000_0000);

    /// The Debian cloud kernel's header values.
    fn cloud() -> ImageInfo {
        ImageInfo {
            text_offset: 0,
            image_size: 0x1ab_0000,
            file_size: 0x1a0_9e00,
            page_size: PageSize::Size4K,
            place_anywhere: true,
            legacy: false,
        }
    }

    fn legacy(file_size: u64) -> ImageInfo {
        ImageInfo {
            text_offset: 0x8_0000,
            image_size: file_size,
            file_size,
            page_size: PageSize::Unspecified,
            place_anywhere: false,
            legacy: true,
        }
    }

    /// Checks every boot-protocol rule on a layout.
    fn check_rules(l: &GuestLayout) {
        let ram_end = l.ram.end().as_u64();
        assert!(l.kernel_base.is_aligned(SZ_2M));
        assert!(l.kernel_base >= l.ram.start);
        assert!(l.kernel_end.as_u64() <= ram_end);
        assert!(l.dtb.is_aligned(8));
        assert_eq!(
            l.dtb.align_down(SZ_2M),
            (l.dtb + (DTB_SLOT_SIZE - 1)).align_down(SZ_2M)
        );
        assert!(l.dtb >= l.kernel_end);
        assert!(l.dtb.as_u64() + DTB_SLOT_SIZE <= ram_end);
        assert!(l.dtb.as_u64() + DTB_SLOT_SIZE <= l.kernel_base.as_u64() + DTB_WINDOW);
        if let Some(r) = l.initrd {
            assert!(r.start.is_aligned(PAGE_SIZE));
            assert!(r.end().as_u64() <= ram_end);
            assert!(r.start >= l.kernel_end);
            let disjoint_from_dtb =
                r.end() <= l.dtb || r.start.as_u64() >= l.dtb.as_u64() + DTB_SLOT_SIZE;
            assert!(disjoint_from_dtb);
        }
    }

    #[test]
    fn places_the_cloud_kernel_dtb_and_initrd_in_512m() {
        let l = plan(BASE, 512 * M, &cloud(), 10 * M).unwrap();
        assert_eq!(l.kernel_base, BASE);
        assert_eq!(l.kernel_entry, BASE);
        assert_eq!(l.kernel_end, BASE + 0x1ab_0000);
        // 0x1ab0000 rounds up to 28 MiB.
        assert_eq!(l.dtb, BASE + 28 * M);
        assert_eq!(
            l.initrd,
            Some(IpaRange {
                start: BASE + 30 * M,
                size: 10 * M
            })
        );
        check_rules(&l);
    }

    #[test]
    fn adds_text_offset_to_the_2m_base() {
        let mut k = cloud();
        k.text_offset = 0x8_0000;
        let l = plan(BASE, 512 * M, &k, 0).unwrap();
        assert_eq!(l.kernel_entry, BASE + 0x8_0000);
        assert_eq!(l.kernel_end, BASE + 0x8_0000 + 0x1ab_0000);
        assert_eq!(l.initrd, None);
        check_rules(&l);
    }

    #[test]
    fn rounds_an_unaligned_ram_base_up_to_2m() {
        let l = plan(Ipa::new(0x4010_0000), 512 * M, &cloud(), 0).unwrap();
        assert_eq!(l.kernel_base, Ipa::new(0x4020_0000));
        check_rules(&l);
    }

    #[test]
    fn fits_an_odd_33m_ram_exactly() {
        // Kernel to 26.7 MiB, DTB slot 28-30 MiB, 3 MiB left for the initrd.
        let l = plan(BASE, 33 * M, &cloud(), 3 * M).unwrap();
        assert_eq!(l.initrd.unwrap().end(), BASE + 33 * M);
        check_rules(&l);
        assert_eq!(
            plan(BASE, 33 * M, &cloud(), 3 * M + 1),
            Err(LayoutError::InitrdDoesNotFit {
                size: 3 * M + 1,
                available: 3 * M
            })
        );
    }

    #[test]
    fn fits_1536m_with_a_large_initrd() {
        let l = plan(BASE, 1536 * M, &cloud(), 1400 * M).unwrap();
        check_rules(&l);
        assert_eq!(l.initrd.unwrap().start, BASE + 30 * M);
    }

    #[test]
    fn rejects_an_initrd_larger_than_ram() {
        assert_eq!(
            plan(BASE, 512 * M, &cloud(), 600 * M),
            Err(LayoutError::InitrdDoesNotFit {
                size: 600 * M,
                available: 482 * M
            })
        );
    }

    #[test]
    fn rejects_ram_too_small_for_the_kernel_or_the_dtb() {
        assert_eq!(
            plan(BASE, 16 * M, &cloud(), 0),
            Err(LayoutError::KernelDoesNotFit {
                need_end: BASE.as_u64() + 0x1ab_0000,
                ram_end: BASE.as_u64() + 16 * M
            })
        );
        // The kernel fits but the 2 MiB DTB slot at 28 MiB does not.
        assert_eq!(
            plan(BASE, 29 * M, &cloud(), 0),
            Err(LayoutError::DtbDoesNotFit)
        );
        assert_eq!(plan(BASE, 30 * M, &cloud(), 0).unwrap().dtb, BASE + 28 * M);
    }

    #[test]
    fn rejects_an_empty_or_overflowing_ram() {
        assert!(matches!(
            plan(BASE, 0, &cloud(), 0),
            Err(LayoutError::BadRam { .. })
        ));
        assert!(matches!(
            plan(Ipa::new(u64::MAX - M), 2 * M, &cloud(), 0),
            Err(LayoutError::BadRam { .. })
        ));
        let mut k = cloud();
        k.image_size = u64::MAX;
        assert!(matches!(
            plan(BASE, 512 * M, &k, 0),
            Err(LayoutError::KernelDoesNotFit { .. })
        ));
    }

    #[test]
    fn the_emulated_devices_lie_in_their_window() {
        use guest_map::*;
        let w = EMULATED_DEVICE_WINDOW;
        for r in [
            GICD,
            GICC,
            UART,
            gicv3_redistributors(crate::guest::config::MAX_VCPUS),
        ] {
            assert!(r.start >= w.start && r.end() <= w.end(), "{r:?}");
        }
        assert!(gicv3_redistributors(64).end() <= UART.start);
        assert!(GICD.end() <= GICC.start && GICC.end() <= GICR_BASE);
    }

    #[test]
    fn keeps_memory_after_a_legacy_kernel_free() {
        let l = plan(BASE, 256 * M, &legacy(8 * M), 4 * M).unwrap();
        assert_eq!(l.kernel_entry, BASE + 0x8_0000);
        assert_eq!(
            l.initrd,
            Some(IpaRange {
                start: BASE + 252 * M,
                size: 4 * M
            })
        );
        assert_eq!(l.dtb, BASE + 250 * M);
        check_rules(&l);
        // With more than 512 MiB the DTB stays within 512 MiB of the kernel base.
        let l = plan(BASE, 2048 * M, &legacy(8 * M), 4 * M).unwrap();
        assert_eq!(l.dtb, BASE + 510 * M);
        check_rules(&l);
        // No initrd: the DTB goes to the top of RAM.
        let l = plan(BASE, 64 * M, &legacy(8 * M), 0).unwrap();
        assert_eq!(l.dtb, BASE + 62 * M);
        check_rules(&l);
    }

    #[test]
    fn rejects_a_legacy_layout_that_does_not_fit() {
        assert_eq!(
            plan(BASE, 32 * M, &legacy(8 * M), 30 * M),
            Err(LayoutError::InitrdDoesNotFit {
                size: 30 * M,
                available: 32 * M - (8 * M + 0x8_0000)
            })
        );
        assert_eq!(
            plan(BASE, 32 * M, &legacy(8 * M), 22 * M),
            Err(LayoutError::DtbDoesNotFit)
        );
    }

    #[test]
    fn rejects_an_initrd_outside_the_32g_window() {
        // RAM of 40 GiB; an initrd large enough to stretch past 32 GiB from the kernel's window.
        let l = plan(Ipa::new(0x8000_0000), 40 * SZ_1G, &cloud(), 33 * SZ_1G);
        assert_eq!(l, Err(LayoutError::InitrdOutsideWindow));
        assert!(plan(Ipa::new(0x8000_0000), 40 * SZ_1G, &cloud(), 30 * SZ_1G).is_ok());
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn every_accepted_layout_obeys_the_boot_protocol(
                base_mb in 0u64..4096,
                size_mb in 1u64..4096,
                image_kb in 1u64..65536,
                text_offset_pages in 0u64..512,
                initrd_kb in 0u64..(2048 * 1024),
                is_legacy in any::<bool>(),
            ) {
                let k = if is_legacy { legacy(image_kb * 1024) } else {
                    let mut k = cloud();
                    k.image_size = image_kb * 1024;
                    k.text_offset = text_offset_pages * PAGE_SIZE;
                    k
                };
                if let Ok(l) = plan(Ipa::new(base_mb * M), size_mb * M, &k, initrd_kb * 1024) {
                    check_rules(&l);
                    prop_assert_eq!(l.initrd.map_or(0, |r| r.size), initrd_kb * 1024);
                    prop_assert_eq!(l.kernel_end - l.kernel_entry, k.image_size);
                }
            }
        }
    }
}
