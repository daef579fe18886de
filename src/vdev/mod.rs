//! Emulated devices. Each device is one file behind [`MmioDevice`]: it sees an offset into its
//! own register block, an access width and the accessing vCPU, and it answers with a value and
//! a list of [`Effect`]s for the caller to carry out ("send this byte to the console", "set the
//! level of virtual interrupt 33"). No device touches real hardware, so each one's register
//! semantics are tested on the host from tables of cases.
#![forbid(unsafe_code)]

/// Width of a guest load or store, from ESR_EL2.ISS.SAS.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AccessWidth {
    Byte = 1,
    Half = 2,
    Word = 4,
    Double = 8,
}

impl AccessWidth {
    pub const fn bytes(self) -> u64 {
        self as u64
    }
    /// A mask of the low `bytes()` bytes.
    pub const fn mask(self) -> u64 {
        match self {
            AccessWidth::Double => u64::MAX,
            w => (1u64 << (w.bytes() * 8)) - 1,
        }
    }
}

/// Who is accessing: the vCPU index within its VM.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct AccessCtx {
    pub vcpu: usize,
}

/// Something a device asks the hypervisor to do on its behalf.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Effect {
    /// Write this byte to the VM's console output.
    ConsoleByte(u8),
    /// Drive the level of a level-sensitive virtual interrupt line (an SPI) of this VM.
    IrqLine { intid: u32, level: bool },
    /// These vCPUs (bit n = vCPU n) have new interrupt state to pick up: kick them.
    KickVcpus(u64),
    /// The guest changed the trigger mode (GICD_ICFGR) of a virtual SPI linked to a physical
    /// one (passthrough): configure the physical interrupts to match (`Vgic::edge_triggered`).
    HwTriggerChanged,
    /// The guest wrote the pending or active state of a virtual SPI linked to a physical one:
    /// make the physical interrupts' state follow (`Vgic::take_phys_requests`).
    HwStateChanged,
}

/// A small fixed-capacity list of effects (no allocation on the exit path).
#[derive(Default, Debug)]
pub struct Effects {
    items: [Option<Effect>; Self::CAPACITY],
    len: usize,
}

impl Effects {
    pub const CAPACITY: usize = 8;

    pub fn new() -> Self {
        Self::default()
    }
    /// Adds an effect. `KickVcpus` effects are merged into one. Returns false when full.
    pub fn push(&mut self, e: Effect) -> bool {
        if let Effect::KickVcpus(mask) = e {
            for item in self.items[..self.len].iter_mut() {
                if let Some(Effect::KickVcpus(m)) = item {
                    *m |= mask;
                    return true;
                }
            }
        }
        if self.len == Self::CAPACITY {
            return false;
        }
        self.items[self.len] = Some(e);
        self.len += 1;
        true
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn iter(&self) -> impl Iterator<Item = Effect> + '_ {
        self.items[..self.len].iter().flatten().copied()
    }
}

/// Why an access was refused; the caller injects a synchronous external abort into the guest.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MmioError {
    /// The width is not allowed for this register.
    BadWidth,
    /// The offset is outside the device's register block.
    OutOfRange,
}

/// An emulated memory-mapped device.
///
/// Devices shared by the vCPUs of one VM (the distributor) take `&self` and lock inside;
/// registers that are read-as-zero / write-ignored by the architecture answer `Ok(0)`.
pub trait MmioDevice: Send + Sync {
    /// Size in bytes of the register block (its guest-physical base is the VM's business).
    fn size(&self) -> u64;
    fn read(
        &self,
        ctx: AccessCtx,
        offset: u64,
        width: AccessWidth,
        fx: &mut Effects,
    ) -> Result<u64, MmioError>;
    fn write(
        &self,
        ctx: AccessCtx,
        offset: u64,
        width: AccessWidth,
        value: u64,
        fx: &mut Effects,
    ) -> Result<(), MmioError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kicks_merge_and_capacity_holds() {
        let mut fx = Effects::new();
        assert!(fx.push(Effect::KickVcpus(0b01)));
        assert!(fx.push(Effect::ConsoleByte(b'a')));
        assert!(fx.push(Effect::KickVcpus(0b10)));
        assert_eq!(fx.len(), 2);
        assert_eq!(fx.iter().next(), Some(Effect::KickVcpus(0b11)));
        for _ in 0..Effects::CAPACITY - 2 {
            assert!(fx.push(Effect::ConsoleByte(b'x')));
        }
        assert!(!fx.push(Effect::ConsoleByte(b'y')));
    }

    #[test]
    fn width_masks() {
        assert_eq!(AccessWidth::Byte.mask(), 0xff);
        assert_eq!(AccessWidth::Word.mask(), 0xffff_ffff);
        assert_eq!(AccessWidth::Double.mask(), u64::MAX);
    }
}

pub mod gicv2_dist;
pub mod gicv3_dist;
pub mod gicv3_redist;
pub mod pl011;
pub mod virtio_mmio_slots;
