//! Virtio devices emulated in the hypervisor: the virtio-mmio transport (VIRTIO 1.2 §4.2,
//! modern only), split virtqueues (§2.7), virtio-net with a learning L2 switch between VMs
//! (§5.1) and virtio-blk over the ramdisk's disk images (§5.2). docs/virtio.md is the design
//! note: how the runtime wires these in, the locking, and what teardown releases.
//!
//! All of it is pure logic (`#![forbid(unsafe_code)]`, no hardware access): guest RAM is
//! reached only through [`mem::GuestMemory`] (by IPA, bounds-checked), a device's interrupt
//! line only through [`IrqSink`], so every piece runs on the host against a fake guest memory
//! ([`testing`]).
//!
//! - [`mem`]: the guest-memory traits and [`mem::GuestRam`].
//! - [`queue`]: virtqueues: descriptor chains, indirect tables, used ring, event index.
//! - [`transport`]: [`transport::VirtioMmio`], the 512-byte register window behind
//!   [`crate::vdev::MmioDevice`] (features, status, queue set-up, notify, interrupt, config).
//! - [`blk`]: the block device and its backing stores.
//! - [`net`] and [`switch`]: the network device (one switch port) and the switch.
//! - [`poll`]: transmit queues drained by a poller CPU, off the sender's exit path.
//!
//! Register and feature values come from the `virtio-spec` crate (rust-osdev) so they are not
//! hand-copied from the specification. Its `mmio` module is not used: it describes the
//! register block as volatile pointers for a driver, while a device emulator needs the
//! offsets as values to decode a trapped access (see [`transport`]).
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use spin::Mutex;

use crate::addr::Ipa;

pub mod blk;
pub mod mem;
pub mod net;
pub mod poll;
pub mod queue;
pub mod switch;
pub mod testing;
pub mod transport;

#[cfg(test)]
mod tests;

/// Feature bits (VIRTIO 1.2 §6 and the device sections) as `u64` masks.
pub mod features {
    const fn bit(f: u128) -> u64 {
        f as u64
    }
    use virtio_spec::F;
    use virtio_spec::blk::F as B;
    use virtio_spec::net::F as N;

    pub const INDIRECT_DESC: u64 = bit(F::INDIRECT_DESC.bits().to_ne());
    pub const EVENT_IDX: u64 = bit(F::EVENT_IDX.bits().to_ne());
    pub const VERSION_1: u64 = bit(F::VERSION_1.bits().to_ne());

    pub const NET_CSUM: u64 = bit(N::CSUM.bits().to_ne());
    pub const NET_GUEST_CSUM: u64 = bit(N::GUEST_CSUM.bits().to_ne());
    pub const NET_MTU: u64 = bit(N::MTU.bits().to_ne());
    pub const NET_MAC: u64 = bit(N::MAC.bits().to_ne());
    pub const NET_GUEST_TSO4: u64 = bit(N::GUEST_TSO4.bits().to_ne());
    pub const NET_GUEST_TSO6: u64 = bit(N::GUEST_TSO6.bits().to_ne());
    pub const NET_GUEST_ECN: u64 = bit(N::GUEST_ECN.bits().to_ne());
    pub const NET_GUEST_UFO: u64 = bit(N::GUEST_UFO.bits().to_ne());
    pub const NET_HOST_TSO4: u64 = bit(N::HOST_TSO4.bits().to_ne());
    pub const NET_HOST_TSO6: u64 = bit(N::HOST_TSO6.bits().to_ne());
    pub const NET_HOST_ECN: u64 = bit(N::HOST_ECN.bits().to_ne());
    pub const NET_HOST_UFO: u64 = bit(N::HOST_UFO.bits().to_ne());
    pub const NET_MRG_RXBUF: u64 = bit(N::MRG_RXBUF.bits().to_ne());
    pub const NET_STATUS: u64 = bit(N::STATUS.bits().to_ne());

    pub const BLK_SIZE_MAX: u64 = bit(B::SIZE_MAX.bits().to_ne());
    pub const BLK_SEG_MAX: u64 = bit(B::SEG_MAX.bits().to_ne());
    pub const BLK_RO: u64 = bit(B::RO.bits().to_ne());
    pub const BLK_BLK_SIZE: u64 = bit(B::BLK_SIZE.bits().to_ne());
    pub const BLK_FLUSH: u64 = bit(B::FLUSH.bits().to_ne());
}

/// A device ID (§5) as the DeviceID register holds it.
pub fn device_id(id: virtio_spec::Id) -> u32 {
    u32::from(u8::from(id))
}

// ---- Placement: QEMU virt's virtio-mmio slots ----

/// QEMU virt's virtio-mmio transports: 32 windows of 0x200 bytes from 0x0a00_0000, slot `n`
/// on SPI 16 + n (INTID 48 + n) (`hw/arm/virt.c`, `VIRT_MMIO`, `NUM_VIRTIO_TRANSPORTS`).
pub const MMIO_BASE: Ipa = Ipa::new(0x0a00_0000);
pub const MMIO_STRIDE: u64 = 0x200;
pub const MMIO_SLOTS: usize = 32;
pub const MMIO_FIRST_SPI: u32 = 16;

/// One virtio-mmio slot: its register window and its interrupt.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MmioSlot {
    pub index: usize,
    pub base: Ipa,
    /// SPI number (INTID - 32).
    pub spi: u32,
}

impl MmioSlot {
    pub const fn new(index: usize) -> Self {
        Self {
            index,
            base: Ipa::new(MMIO_BASE.as_u64() + index as u64 * MMIO_STRIDE),
            spi: MMIO_FIRST_SPI + index as u32,
        }
    }
    pub const fn intid(&self) -> u32 {
        32 + self.spi
    }
}

/// What a slot holds, by its index in `vm.toml`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SlotDevice {
    /// `disks[i]`
    Disk(usize),
    /// `net[i]`
    Net(usize),
}

/// The slots of a VM's virtio devices: disks first, then network ports, each in `vm.toml`
/// order, from slot 0 up (the first disk at 0x0a00_0000, SPI 16). Linux probes the DTB's
/// virtio nodes in address order, so the first disk becomes `/dev/vda`. At most
/// [`MMIO_SLOTS`] devices (`config::parse` refuses more).
pub fn assign_slots(disks: usize, nets: usize) -> impl Iterator<Item = (MmioSlot, SlotDevice)> {
    (0..disks)
        .map(SlotDevice::Disk)
        .chain((0..nets).map(SlotDevice::Net))
        .take(MMIO_SLOTS)
        .enumerate()
        .map(|(i, d)| (MmioSlot::new(i), d))
}

// ---- Interrupts ----

/// The input line of a device's SPI in its VM's virtual GIC. The runtime implements it with
/// `Vgic::set_spi_level` and kicks the vCPUs that returns (which may run on other physical
/// CPUs); tests record the levels.
pub trait IrqSink: Send + Sync {
    fn set_level(&self, level: bool);
}

/// `InterruptStatus` bits (§4.2.2).
pub const INT_USED_BUFFER: u32 = 1;
pub const INT_CONFIG_CHANGE: u32 = 2;

/// A device's interrupt: the `InterruptStatus` register and the line it drives, high while
/// any bit is set (as QEMU's virtio-mmio does). The line is driven with the lock held, so
/// line changes reach the GIC in the order the status changed, whichever CPUs raise (a
/// switch delivering from another VM) and acknowledge (the guest's handler); nothing is left
/// high with no bit set, and no bit is left set with the line low.
pub struct Interrupt {
    status: Mutex<u32>,
    sink: alloc::sync::Arc<dyn IrqSink>,
    raised: AtomicU64,
}

impl Interrupt {
    pub fn new(sink: alloc::sync::Arc<dyn IrqSink>) -> Self {
        Self {
            status: Mutex::new(0),
            sink,
            raised: AtomicU64::new(0),
        }
    }
    pub fn status(&self) -> u32 {
        *self.status.lock()
    }
    /// Sets `bits` in `InterruptStatus` (and raises the line if it was low).
    pub fn raise(&self, bits: u32) {
        let mut s = self.status.lock();
        if *s == 0 && bits != 0 {
            self.sink.set_level(true);
        }
        *s |= bits;
        self.raised.fetch_add(1, Ordering::Relaxed);
    }
    /// `InterruptACK`: clears `bits` (and lowers the line when none is left).
    pub fn ack(&self, bits: u32) {
        let mut s = self.status.lock();
        let was = *s;
        *s &= !bits;
        if was != 0 && *s == 0 {
            self.sink.set_level(false);
        }
    }
    /// Device reset: no bit set, line low.
    pub fn reset(&self) {
        self.ack(u32::MAX);
    }
    /// How many times `raise` was called (for the counters line).
    pub fn raised(&self) -> u64 {
        self.raised.load(Ordering::Relaxed)
    }
}

// ---- Bad input from the guest ----

/// A kind of bad input from a guest driver. Each is counted; the runtime logs the first of
/// each kind per device ([`BadInputLog::take_unlogged`]) so a hostile guest cannot flood the
/// console.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum BadInput {
    /// A register access of a width or alignment §4.2.2.2 does not allow (the access gets an
    /// external abort).
    RegisterWidth,
    /// A status write that clears bits other than by writing 0 (ignored).
    StatusCleared,
    /// DriverFeatures written after FEATURES_OK (ignored).
    FeaturesAfterNegotiation,
    /// The driver's features are not a subset of the offer, lack VERSION_1, or break a
    /// dependency of the device type: FEATURES_OK is not set.
    FeaturesRefused,
    /// DRIVER_OK without FEATURES_OK, or a queue enabled after DRIVER_OK.
    OutOfOrder,
    /// A queue register written while the queue is enabled (ignored).
    QueueBusy,
    /// A queue enabled with a bad size, misaligned rings or rings outside RAM: the queue
    /// stays disabled and the device needs a reset.
    QueueInvalid,
    /// QueueNotify for a queue that does not exist or is not enabled, or before DRIVER_OK
    /// (dropped).
    NotifyIgnored,
    /// A write to the device configuration space, which is read-only for these devices.
    ConfigWrite,
    /// A queue broke while running (`avail.idx` jump, head out of range): the device needs a
    /// reset.
    QueueBroken,
    /// A malformed descriptor chain (dropped, returned with length 0).
    BadChain,
    /// A request or frame the device refuses (bad header, bad size, bad offload request,
    /// another switch port's MAC as source).
    BadRequest,
}

impl BadInput {
    pub const COUNT: usize = 12;
    pub const ALL: [BadInput; Self::COUNT] = [
        BadInput::RegisterWidth,
        BadInput::StatusCleared,
        BadInput::FeaturesAfterNegotiation,
        BadInput::FeaturesRefused,
        BadInput::OutOfOrder,
        BadInput::QueueBusy,
        BadInput::QueueInvalid,
        BadInput::NotifyIgnored,
        BadInput::ConfigWrite,
        BadInput::QueueBroken,
        BadInput::BadChain,
        BadInput::BadRequest,
    ];
    pub fn describe(self) -> &'static str {
        match self {
            BadInput::RegisterWidth => "register access of a width the transport does not allow",
            BadInput::StatusCleared => "status write clearing bits (ignored)",
            BadInput::FeaturesAfterNegotiation => "DriverFeatures written after FEATURES_OK",
            BadInput::FeaturesRefused => "feature set refused (FEATURES_OK not set)",
            BadInput::OutOfOrder => "initialization steps out of order",
            BadInput::QueueBusy => "queue register written while the queue is enabled",
            BadInput::QueueInvalid => "queue enabled with a bad size or rings (device needs reset)",
            BadInput::NotifyIgnored => "notification for a queue that is not running",
            BadInput::ConfigWrite => "write to the read-only device configuration",
            BadInput::QueueBroken => {
                "virtqueue broken: avail.idx jump or bad head (device needs reset)"
            }
            BadInput::BadChain => "malformed descriptor chain (request dropped)",
            BadInput::BadRequest => "malformed request or frame (refused)",
        }
    }
}

/// Counts of [`BadInput`] per kind, and which kinds still have to be logged.
#[derive(Default)]
pub struct BadInputLog {
    counts: [AtomicU32; BadInput::COUNT],
    unlogged: AtomicU32,
    logged: AtomicU32,
}

impl BadInputLog {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn record(&self, kind: BadInput) {
        let i = kind as usize;
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let bit = 1u32 << i;
        if self.logged.fetch_or(bit, Ordering::Relaxed) & bit == 0 {
            self.unlogged.fetch_or(bit, Ordering::Relaxed);
        }
    }
    pub fn count(&self, kind: BadInput) -> u32 {
        self.counts[kind as usize].load(Ordering::Relaxed)
    }
    pub fn total(&self) -> u64 {
        self.counts
            .iter()
            .map(|c| u64::from(c.load(Ordering::Relaxed)))
            .sum()
    }
    /// The kinds seen for the first time since the last call: the runtime logs each once.
    pub fn take_unlogged(&self) -> impl Iterator<Item = BadInput> {
        let bits = self.unlogged.swap(0, Ordering::Relaxed);
        BadInput::ALL
            .into_iter()
            .filter(move |k| bits & (1 << *k as u32) != 0)
    }
}

/// What the transport and its device share: the interrupt and the bad-input log.
pub struct DeviceSignals {
    pub irq: Interrupt,
    pub bad: BadInputLog,
}

impl DeviceSignals {
    pub fn new(sink: alloc::sync::Arc<dyn IrqSink>) -> Self {
        Self {
            irq: Interrupt::new(sink),
            bad: BadInputLog::new(),
        }
    }
}

// ---- The device side of the transport ----

/// The queues a driver enabled, as handed to [`VirtioDevice::activate`] (index = queue).
pub type QueueLayouts = [Option<queue::QueueLayout>];

/// Why a device cannot go on: the transport sets `DEVICE_NEEDS_RESET`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DeviceError {
    Queue(queue::QueueError),
}

impl From<queue::QueueError> for DeviceError {
    fn from(e: queue::QueueError) -> Self {
        DeviceError::Queue(e)
    }
}

/// A device type behind [`transport::VirtioMmio`]. The transport owns the register state and
/// the status machine; the device owns its queues while running. Calls come with no
/// transport lock held except where noted, so a device takes its own locks.
pub trait VirtioDevice: Send + Sync {
    fn device_id(&self) -> u32;
    /// The features to offer a driver that starts now (the transport takes this snapshot at
    /// each reset, so the offer does not move under a driver while it negotiates).
    fn offered_features(&self) -> u64;
    /// Device-type rules on the driver's choice (dependencies between feature bits); the
    /// transport already checked it is a subset of the offer and has `VERSION_1`.
    fn accept_features(&self, _features: u64) -> bool {
        true
    }
    fn num_queues(&self) -> u16;
    fn queue_max_size(&self) -> u16;
    /// Checks a queue's layout when the driver enables it (with the transport lock held).
    fn validate_queue(&self, layout: &queue::QueueLayout) -> Result<(), queue::QueueError>;
    /// Bytes of device configuration space.
    fn config_len(&self) -> usize;
    /// Reads configuration bytes `[offset, offset + out.len())` (within `config_len`).
    fn read_config(&self, offset: usize, out: &mut [u8]);
    /// DRIVER_OK: start with the negotiated `features` and the enabled queues (with the
    /// transport lock held).
    fn activate(&self, features: u64, queues: &QueueLayouts) -> Result<(), DeviceError>;
    /// Device reset (status 0, or teardown): stop using every queue and forget them. Waits
    /// for a request in progress on another CPU to finish (with the transport lock held).
    fn reset(&self);
    /// QueueNotify for an enabled queue of a running device: process it, with bounded work.
    /// `Ok(true)` when the budget ran out with chains left: the transport marks the queue
    /// deferred and the runtime calls [`transport::VirtioMmio::run_deferred`] later.
    fn notify(&self, queue: u16) -> Result<bool, DeviceError>;
    /// One poller pass over the queues handed over to a poller ([`poll`]); devices that
    /// never hand a queue over keep the default.
    fn poll(&self, _budget: usize) -> Result<poll::PollState, DeviceError> {
        Ok(poll::PollState::Armed)
    }
    /// The poller gives up: arm notifications of the handed-over queues again and finish
    /// what is pending. `Ok(Some(queue))` when that queue's budget ran out with chains left
    /// (deferred, as after [`VirtioDevice::notify`]).
    fn stop_polling(&self) -> Result<Option<u16>, DeviceError> {
        Ok(None)
    }
}
