//! QEMU virt's virtio-mmio window as empty transports: 32 slots of 0x200 bytes from
//! 0x0a00_0000, each a virtio-mmio device (VIRTIO 1.2 §4.2.2, "MMIO Device Register Layout")
//! with no device behind it: MagicValue "virt" (0x74726976), Version 2, DeviceID 0 ("no
//! device", §4.2.2.1: the driver must then stop), VendorID "QEMU" (0x554d4551), every other
//! register reading 0 and every write ignored. That is what QEMU's `virtio-mmio` transport
//! answers with no backend, so a guest built for QEMU virt (Linux, kvm-unit-tests'
//! `micro-bench`, which reads 0x0a00_0008 as its "MMIO exit" target) finds the transports it
//! expects and ignores them.
//!
//! The guest DTB describes each present slot as QEMU does (`virtio,mmio`, its 512 bytes, SPI
//! 16 + slot edge-rising, `dma-coherent`); a slot that a passthrough device's IPA range covers
//! is left to that device, and a slot whose SPI the VM's GIC does not have is left out.
//! Later (issue 11) kestrel's own virtio devices take slots here.
#![forbid(unsafe_code)]

use super::{AccessCtx, AccessWidth, Effects, MmioDevice, MmioError};

/// The window: 32 slots of 0x200 bytes, slot `i` at `BASE + i * SLOT_SIZE` with SPI
/// `FIRST_SPI + i` (QEMU `hw/arm/virt.c`: VIRT_MMIO, NUM_VIRTIO_TRANSPORTS, irqmap).
pub const BASE: u64 = 0x0a00_0000;
pub const SLOTS: usize = 32;
pub const SLOT_SIZE: u64 = 0x200;
pub const FIRST_SPI: u32 = 16;
pub const WINDOW_SIZE: u64 = SLOTS as u64 * SLOT_SIZE;

/// MagicValue: "virt" in little-endian ASCII.
pub const MAGIC: u32 = 0x7472_6976;
/// Version 2: the non-legacy ("modern") interface.
pub const VERSION: u32 = 2;
/// VendorID: "QEMU" in little-endian ASCII.
pub const VENDOR_QEMU: u32 = 0x554d_4551;

/// Register offsets within a slot (VIRTIO 1.2 §4.2.2).
const MAGIC_VALUE: u64 = 0x000;
const VERSION_REG: u64 = 0x004;
const DEVICE_ID: u64 = 0x008;
const VENDOR_ID: u64 = 0x00c;

/// Which slots are present: every slot whose range no `occupied` IPA range (base, size) meets
/// and whose SPI is below `spis` (the VM's GIC has SPIs 0..spis). Bit `i` = slot `i`.
pub fn present_slots(occupied: impl Iterator<Item = (u64, u64)> + Clone, spis: u32) -> u32 {
    (0..SLOTS)
        .filter(|&i| {
            let (start, end) = (
                BASE + i as u64 * SLOT_SIZE,
                BASE + (i as u64 + 1) * SLOT_SIZE,
            );
            FIRST_SPI + (i as u32) < spis
                && occupied
                    .clone()
                    .all(|(b, s)| b.saturating_add(s) <= start || b >= end)
        })
        .fold(0, |m, i| m | 1 << i)
}

/// The empty transports of one VM (the whole window; absent slots refuse accesses).
pub struct VirtioMmioSlots {
    present: u32,
}

impl VirtioMmioSlots {
    pub fn new(present: u32) -> Self {
        VirtioMmioSlots { present }
    }

    fn slot_offset(&self, offset: u64) -> Result<u64, MmioError> {
        let slot = offset / SLOT_SIZE;
        if offset >= WINDOW_SIZE || self.present & (1 << slot) == 0 {
            return Err(MmioError::OutOfRange);
        }
        Ok(offset % SLOT_SIZE)
    }
}

impl MmioDevice for VirtioMmioSlots {
    fn size(&self) -> u64 {
        WINDOW_SIZE
    }

    fn read(
        &self,
        _ctx: AccessCtx,
        offset: u64,
        width: AccessWidth,
        _fx: &mut Effects,
    ) -> Result<u64, MmioError> {
        let reg = self.slot_offset(offset)?;
        // The control registers are 32-bit (§4.2.2: the driver uses 32-bit accesses only);
        // another width reads 0, as QEMU answers it.
        if width != AccessWidth::Word {
            return Ok(0);
        }
        Ok(u64::from(match reg {
            MAGIC_VALUE => MAGIC,
            VERSION_REG => VERSION,
            DEVICE_ID => 0,
            VENDOR_ID => VENDOR_QEMU,
            _ => 0,
        }))
    }

    fn write(
        &self,
        _ctx: AccessCtx,
        offset: u64,
        _width: AccessWidth,
        _value: u64,
        _fx: &mut Effects,
    ) -> Result<(), MmioError> {
        self.slot_offset(offset).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AccessWidth::{Byte, Double, Half, Word};

    const CTX: AccessCtx = AccessCtx { vcpu: 0 };

    fn read(d: &VirtioMmioSlots, offset: u64, w: AccessWidth) -> Result<u64, MmioError> {
        d.read(CTX, offset, w, &mut Effects::new())
    }

    #[test]
    fn every_slot_is_an_empty_transport() {
        let d = VirtioMmioSlots::new(u32::MAX);
        for slot in [0u64, 1, 17, 31] {
            let at = slot * SLOT_SIZE;
            let cases = [
                (0x000, Word, 0x7472_6976), // MagicValue "virt"
                (0x004, Word, 2),           // Version
                (0x008, Word, 0),           // DeviceID: no device
                (0x00c, Word, 0x554d_4551), // VendorID "QEMU"
                (0x010, Word, 0),           // DeviceFeatures
                (0x034, Word, 0),           // QueueNumMax
                (0x070, Word, 0),           // Status
                (0x0fc, Word, 0),           // ConfigGeneration
                (0x100, Word, 0),           // config space
                (0x1fc, Word, 0),
                (0x000, Byte, 0), // other widths read 0, as in QEMU
                (0x000, Half, 0),
                (0x000, Double, 0),
                (0x100, Byte, 0),
            ];
            for (off, w, want) in cases {
                assert_eq!(
                    read(&d, at + off, w),
                    Ok(want),
                    "slot {slot} {off:#x} {w:?}"
                );
            }
        }
    }

    #[test]
    fn writes_are_ignored() {
        let d = VirtioMmioSlots::new(u32::MAX);
        let mut fx = Effects::new();
        for (off, v) in [(0x070, 0xf), (0x000, 0), (0x024, 1), (0x100, 0xdead)] {
            assert_eq!(d.write(CTX, off, Word, v, &mut fx), Ok(()));
        }
        assert!(fx.is_empty());
        assert_eq!(read(&d, 0x070, Word), Ok(0));
        assert_eq!(read(&d, 0x000, Word), Ok(u64::from(MAGIC)));
    }

    #[test]
    fn absent_slots_and_accesses_beyond_the_window_are_refused() {
        let d = VirtioMmioSlots::new(0b101);
        assert_eq!(read(&d, 0, Word), Ok(u64::from(MAGIC)));
        assert_eq!(read(&d, SLOT_SIZE, Word), Err(MmioError::OutOfRange));
        assert_eq!(read(&d, 2 * SLOT_SIZE, Word), Ok(u64::from(MAGIC)));
        assert_eq!(read(&d, WINDOW_SIZE, Word), Err(MmioError::OutOfRange));
        assert_eq!(
            d.write(CTX, SLOT_SIZE + 0x70, Word, 1, &mut Effects::new()),
            Err(MmioError::OutOfRange)
        );
        assert_eq!(d.size(), 0x4000);
    }

    #[test]
    fn slots_covered_by_passthrough_devices_or_without_an_spi_are_absent() {
        assert_eq!(present_slots(core::iter::empty(), 64), u32::MAX);
        // A 4 KiB passthrough page at 0x0a003000 covers slots 24..=31.
        assert_eq!(
            present_slots([(0x0a00_3000, 0x1000)].into_iter(), 64),
            0x00ff_ffff
        );
        // Touching one byte of a slot takes it; a range ending at a slot's start does not.
        assert_eq!(
            present_slots([(0x09ff_f000, 0x1001)].into_iter(), 64),
            !1u32
        );
        assert_eq!(
            present_slots([(0x09ff_f000, 0x1000)].into_iter(), 64),
            u32::MAX
        );
        // 32 SPIs (INTIDs 32..63): slots 0..=15 have SPIs 16..=31.
        assert_eq!(present_slots(core::iter::empty(), 32), 0xffff);
        // A range reaching the top of the address space does not wrap.
        assert_eq!(
            present_slots([(u64::MAX - 0xfff, 0x1000)].into_iter(), 64),
            u32::MAX
        );
    }
}
