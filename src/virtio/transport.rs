//! The virtio-mmio transport (VIRTIO 1.2 §4.2), modern interface only (`Version` 2): one
//! 512-byte register window per device, behind [`MmioDevice`].
//!
//! It owns the driver-visible register state and the device status machine (§2.1, §3.1.1):
//! feature negotiation over the two 32-bit pages of DeviceFeatures / DriverFeatures, the
//! ACKNOWLEDGE → DRIVER → FEATURES_OK → DRIVER_OK sequence, reset on a write of 0, the
//! queue set-up registers (validated when the driver sets QueueReady), QueueNotify,
//! InterruptStatus / InterruptACK, ConfigGeneration and the device-specific configuration
//! space from 0x100. The device type behind it is a [`VirtioDevice`].
//!
//! Bad input never touches memory outside the VM and never stops the hypervisor: it is
//! counted in the device's [`super::BadInputLog`] (the runtime logs the first of each kind)
//! and either ignored, refused (FEATURES_OK not set, a queue left disabled) or answered with
//! `DEVICE_NEEDS_RESET` and a configuration-change interrupt, as §2.1.2 describes. Accesses
//! of a width §4.2.2.2 forbids get [`MmioError::BadWidth`] (an external abort).
//!
//! Register offsets are written out here (they are not exported as values by `virtio-spec`,
//! whose `mmio` module is a driver's volatile view of the block, see [`super`]); status and
//! feature bits come from `virtio-spec`.
#![forbid(unsafe_code)]

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use spin::Mutex;
use virtio_spec::DeviceStatus;

use super::poll::PollState;
use super::queue::QueueLayout;
use super::{BadInput, DeviceSignals, INT_CONFIG_CHANGE, VirtioDevice, features};
use crate::addr::Ipa;
use crate::vdev::{AccessCtx, AccessWidth, Effects, MmioDevice, MmioError};

/// Register offsets (§4.2.2, table 4.1).
pub mod reg {
    pub const MAGIC_VALUE: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const SHM_SEL: u64 = 0x0ac;
    pub const SHM_LEN_LOW: u64 = 0x0b0;
    pub const SHM_LEN_HIGH: u64 = 0x0b4;
    pub const SHM_BASE_LOW: u64 = 0x0b8;
    pub const SHM_BASE_HIGH: u64 = 0x0bc;
    pub const QUEUE_RESET: u64 = 0x0c0;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

/// "virt" in little-endian (§4.2.2 MagicValue).
pub const MAGIC: u32 = 0x7472_6976;
/// The modern (non-legacy) virtio-mmio interface.
pub const VERSION: u32 = 2;
/// VendorID: "kest" in little-endian (drivers do not interpret it).
pub const VENDOR_ID: u32 = 0x7473_656b;
/// Size of the register window (QEMU virt's slot stride).
pub const WINDOW_SIZE: u64 = 0x200;

const ACKNOWLEDGE: u8 = DeviceStatus::ACKNOWLEDGE.bits();
const DRIVER: u8 = DeviceStatus::DRIVER.bits();
const FEATURES_OK: u8 = DeviceStatus::FEATURES_OK.bits();
const DRIVER_OK: u8 = DeviceStatus::DRIVER_OK.bits();
const NEEDS_RESET: u8 = DeviceStatus::DEVICE_NEEDS_RESET.bits();
const FAILED: u8 = DeviceStatus::FAILED.bits();
/// The status bits a driver may set (SUSPEND needs VIRTIO_F_SUSPEND, not offered).
const DRIVER_BITS: u8 = ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK | FAILED;

#[derive(Clone, Copy, Debug)]
struct QueueRegs {
    layout: QueueLayout,
    ready: bool,
}

struct Regs {
    status: u8,
    /// The offer for this driver session (taken at reset).
    offered: u64,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    queues: Vec<QueueRegs>,
    config_generation: u32,
}

/// Transport counters (for the VM's counters line).
#[derive(Default)]
pub struct TransportStats {
    /// QueueNotify writes (each is one guest exit).
    pub notifies: AtomicU64,
    pub resets: AtomicU64,
    /// Notifications whose work budget ran out (the rest was deferred).
    pub deferred: AtomicU64,
    /// InterruptStatus reads and InterruptACK writes (each one guest exit: with the
    /// interrupt's own exit, what one used-buffer interrupt costs).
    pub status_reads: AtomicU64,
    pub acks: AtomicU64,
}

/// A virtio device behind the virtio-mmio register window.
pub struct VirtioMmio<D> {
    device: D,
    signals: Arc<DeviceSignals>,
    regs: Mutex<Regs>,
    stats: TransportStats,
    /// Queues (bit n = queue n) with chains left when their budget ran out.
    deferred: AtomicU64,
}

fn set_half(v: &mut u64, high: bool, value: u32) {
    if high {
        *v = (*v & 0xffff_ffff) | (u64::from(value) << 32);
    } else {
        *v = (*v & !0xffff_ffff) | u64::from(value);
    }
}

impl<D: VirtioDevice> VirtioMmio<D> {
    /// `signals` must be the ones `device` raises its interrupt and records bad input with.
    pub fn new(device: D, signals: Arc<DeviceSignals>) -> Self {
        let regs = Regs {
            status: 0,
            offered: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            queues: Vec::new(),
            config_generation: 0,
        };
        let t = Self {
            device,
            signals,
            regs: Mutex::new(regs),
            stats: TransportStats::default(),
            deferred: AtomicU64::new(0),
        };
        t.reset_locked(&mut t.regs.lock());
        t.stats.resets.store(0, Ordering::Relaxed);
        t
    }

    pub fn device(&self) -> &D {
        &self.device
    }
    pub fn signals(&self) -> &DeviceSignals {
        &self.signals
    }
    pub fn stats(&self) -> &TransportStats {
        &self.stats
    }
    /// The device status register.
    pub fn status(&self) -> u8 {
        self.regs.lock().status
    }
    /// The features the driver accepted (meaningful once FEATURES_OK is set).
    pub fn negotiated_features(&self) -> u64 {
        self.regs.lock().driver_features
    }

    /// The device's configuration changed (e.g. link status): bump ConfigGeneration and send
    /// a configuration-change notification if the driver is running.
    pub fn config_changed(&self) {
        let mut r = self.regs.lock();
        r.config_generation = r.config_generation.wrapping_add(1);
        if r.status & DRIVER_OK != 0 {
            self.signals.irq.raise(INT_CONFIG_CHANGE);
        }
    }

    /// Resets the device as a driver's write of 0 to Status does; for the runtime at VM
    /// teardown (stops the device using guest memory) and guest reset.
    pub fn reset(&self) {
        self.reset_locked(&mut self.regs.lock());
    }

    fn reset_locked(&self, r: &mut Regs) {
        self.device.reset();
        let max = self.device.queue_max_size();
        r.status = 0;
        r.offered = self.device.offered_features();
        r.device_features_sel = 0;
        r.driver_features_sel = 0;
        r.driver_features = 0;
        r.queue_sel = 0;
        r.queues.clear();
        r.queues.resize(
            usize::from(self.device.num_queues()),
            QueueRegs {
                layout: QueueLayout {
                    size: max,
                    ..QueueLayout::default()
                },
                ready: false,
            },
        );
        self.signals.irq.reset();
        self.stats.resets.fetch_add(1, Ordering::Relaxed);
    }

    /// Sets DEVICE_NEEDS_RESET (§2.1.2): with a configuration-change notification once the
    /// driver has set DRIVER_OK.
    fn needs_reset(&self, r: &mut Regs) {
        if r.status & NEEDS_RESET != 0 {
            return;
        }
        r.status |= NEEDS_RESET;
        if r.status & DRIVER_OK != 0 {
            self.signals.irq.raise(INT_CONFIG_CHANGE);
        }
    }

    fn bad(&self, kind: BadInput) {
        self.signals.bad.record(kind);
    }

    fn read_reg(&self, offset: u64) -> u32 {
        let r = self.regs.lock();
        let q = r.queues.get(r.queue_sel as usize);
        match offset {
            reg::MAGIC_VALUE => MAGIC,
            reg::VERSION => VERSION,
            reg::DEVICE_ID => self.device.device_id(),
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => match r.device_features_sel {
                0 => r.offered as u32,
                1 => (r.offered >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => q.map_or(0, |_| u32::from(self.device.queue_max_size())),
            reg::QUEUE_READY => q.map_or(0, |q| u32::from(q.ready)),
            reg::INTERRUPT_STATUS => {
                self.stats.status_reads.fetch_add(1, Ordering::Relaxed);
                self.signals.irq.status()
            }
            reg::STATUS => u32::from(r.status),
            // No shared memory regions: a length of -1 (§4.2.2, SHMLenLow/High).
            reg::SHM_LEN_LOW | reg::SHM_LEN_HIGH | reg::SHM_BASE_LOW | reg::SHM_BASE_HIGH => {
                u32::MAX
            }
            reg::CONFIG_GENERATION => r.config_generation,
            // Write-only and reserved registers read as zero.
            _ => 0,
        }
    }

    fn write_reg(&self, offset: u64, value: u32) {
        if offset == reg::QUEUE_NOTIFY {
            return self.queue_notify(value);
        }
        let mut r = self.regs.lock();
        let sel = r.queue_sel as usize;
        match offset {
            reg::DEVICE_FEATURES_SEL => r.device_features_sel = value,
            reg::DRIVER_FEATURES_SEL => r.driver_features_sel = value,
            reg::DRIVER_FEATURES => {
                if r.status & FEATURES_OK != 0 {
                    self.bad(BadInput::FeaturesAfterNegotiation);
                } else if r.driver_features_sel < 2 {
                    let high = r.driver_features_sel == 1;
                    set_half(&mut r.driver_features, high, value);
                }
            }
            reg::QUEUE_SEL => r.queue_sel = value,
            reg::QUEUE_NUM
            | reg::QUEUE_DESC_LOW
            | reg::QUEUE_DESC_HIGH
            | reg::QUEUE_DRIVER_LOW
            | reg::QUEUE_DRIVER_HIGH
            | reg::QUEUE_DEVICE_LOW
            | reg::QUEUE_DEVICE_HIGH => {
                let Some(q) = r.queues.get_mut(sel) else {
                    return;
                };
                if q.ready {
                    self.bad(BadInput::QueueBusy);
                    return;
                }
                let l = &mut q.layout;
                let set = |ipa: &mut Ipa, high: bool| {
                    let mut v = ipa.as_u64();
                    set_half(&mut v, high, value);
                    *ipa = Ipa::new(v);
                };
                match offset {
                    // A size that does not fit 16 bits is kept as 0, which enabling refuses.
                    reg::QUEUE_NUM => l.size = u16::try_from(value).unwrap_or(0),
                    reg::QUEUE_DESC_LOW => set(&mut l.desc, false),
                    reg::QUEUE_DESC_HIGH => set(&mut l.desc, true),
                    reg::QUEUE_DRIVER_LOW => set(&mut l.avail, false),
                    reg::QUEUE_DRIVER_HIGH => set(&mut l.avail, true),
                    reg::QUEUE_DEVICE_LOW => set(&mut l.used, false),
                    _ => set(&mut l.used, true),
                }
            }
            reg::QUEUE_READY => self.queue_ready(&mut r, sel, value),
            reg::INTERRUPT_ACK => {
                self.stats.acks.fetch_add(1, Ordering::Relaxed);
                self.signals.irq.ack(value)
            }
            reg::STATUS => {
                if let Some(kick) = self.write_status(&mut r, value) {
                    drop(r);
                    // Chains made available before DRIVER_OK had no notification the device
                    // acted on: look at every enabled queue once now.
                    for q in 0..self.device.num_queues() {
                        if kick & (1 << q.min(63)) != 0 {
                            self.process(q);
                        }
                    }
                }
            }
            // Read-only registers, SHMSel (no regions), QueueReset (VIRTIO_F_RING_RESET is
            // not offered): writes are ignored.
            _ => {}
        }
    }

    fn queue_ready(&self, r: &mut Regs, sel: usize, value: u32) {
        let running = r.status & DRIVER_OK != 0;
        let Some(q) = r.queues.get_mut(sel) else {
            return;
        };
        match (value != 0, q.ready) {
            (true, true) | (false, false) => {}
            (true, false) if running => self.bad(BadInput::OutOfOrder),
            (true, false) => match self.device.validate_queue(&q.layout) {
                Ok(()) => q.ready = true,
                Err(_) => {
                    self.bad(BadInput::QueueInvalid);
                    self.needs_reset(r);
                }
            },
            // Disabling a running queue needs VIRTIO_F_RING_RESET, which is not offered.
            (false, true) if running => self.bad(BadInput::OutOfOrder),
            (false, true) => q.ready = false,
        }
    }

    /// A write to Status. Returns the queues to look at when the device just started.
    fn write_status(&self, r: &mut Regs, value: u32) -> Option<u64> {
        if value == 0 {
            self.reset_locked(r);
            return None;
        }
        let old = r.status & DRIVER_BITS;
        // Status is 8 bits wide (§2.1); a driver cannot set DEVICE_NEEDS_RESET itself.
        let v = (value & 0xff) as u8 & DRIVER_BITS;
        if v & old != old {
            self.bad(BadInput::StatusCleared);
            return None;
        }
        let mut new = v;
        let added = v & !old;
        if added & FEATURES_OK != 0 {
            let f = r.driver_features;
            let ok = f & !r.offered == 0
                && f & features::VERSION_1 != 0
                && self.device.accept_features(f);
            if !ok {
                self.bad(BadInput::FeaturesRefused);
                new &= !FEATURES_OK;
            }
        }
        let mut started = None;
        if added & DRIVER_OK != 0 {
            if new & FEATURES_OK == 0 {
                self.bad(BadInput::OutOfOrder);
                new &= !DRIVER_OK;
            } else {
                let layouts: Vec<Option<QueueLayout>> = r
                    .queues
                    .iter()
                    .map(|q| q.ready.then_some(q.layout))
                    .collect();
                r.status = new | (r.status & NEEDS_RESET);
                match self.device.activate(r.driver_features, &layouts) {
                    Ok(()) => {
                        let mut mask = 0u64;
                        for (i, q) in r.queues.iter().enumerate().take(64) {
                            mask |= u64::from(q.ready) << i;
                        }
                        started = Some(mask);
                    }
                    Err(_) => {
                        self.bad(BadInput::QueueInvalid);
                        self.needs_reset(r);
                    }
                }
                return started;
            }
        }
        r.status = new | (r.status & NEEDS_RESET);
        started
    }

    fn queue_notify(&self, value: u32) {
        self.stats.notifies.fetch_add(1, Ordering::Relaxed);
        let q = {
            let r = self.regs.lock();
            let running = r.status & (DRIVER_OK | NEEDS_RESET) == DRIVER_OK;
            let ready = r.queues.get(value as usize).is_some_and(|q| q.ready);
            if !running || !ready {
                self.bad(BadInput::NotifyIgnored);
                return;
            }
            value as u16
        };
        self.process(q);
    }

    fn process(&self, q: u16) {
        // The device processes the queue with its own locks only, so other vCPUs can read
        // InterruptStatus or configuration meanwhile.
        match self.device.notify(q) {
            Ok(false) => {}
            Ok(true) => self.defer(q),
            Err(_) => self.broken(),
        }
    }

    fn defer(&self, q: u16) {
        self.stats.deferred.fetch_add(1, Ordering::Relaxed);
        self.deferred
            .fetch_or(1 << u64::from(q).min(63), Ordering::Relaxed);
    }

    fn broken(&self) {
        self.bad(BadInput::QueueBroken);
        let mut r = self.regs.lock();
        if r.status & DRIVER_OK != 0 {
            self.needs_reset(&mut r);
        }
    }

    /// One poller pass over the device (see [`super::poll`]); a queue that breaks meanwhile
    /// sets DEVICE_NEEDS_RESET as on a notification.
    pub fn poll(&self, budget: usize) -> PollState {
        match self.device.poll(budget) {
            Ok(s) => s,
            Err(_) => {
                self.broken();
                PollState::Armed
            }
        }
    }

    /// The poller gives up its role: the device arms its notifications again and finishes
    /// what is pending (work left over is deferred as after a notification).
    pub fn stop_polling(&self) {
        match self.device.stop_polling() {
            Ok(None) => {}
            Ok(Some(q)) => self.defer(q),
            Err(_) => self.broken(),
        }
    }

    /// True when a notification left work behind (its budget ran out).
    pub fn has_deferred(&self) -> bool {
        self.deferred.load(Ordering::Relaxed) != 0
    }

    /// Goes on with queues whose budget ran out, one budget each (the runtime calls this
    /// before resuming the guest or from an idle CPU while [`Self::has_deferred`]).
    pub fn run_deferred(&self) {
        let mask = self.deferred.swap(0, Ordering::Relaxed);
        for q in 0..self.device.num_queues().min(64) {
            if mask & (1 << q) == 0 {
                continue;
            }
            let running = {
                let r = self.regs.lock();
                r.status & (DRIVER_OK | NEEDS_RESET) == DRIVER_OK
                    && r.queues.get(usize::from(q)).is_some_and(|x| x.ready)
            };
            if running {
                self.process(q);
            }
        }
    }

    fn read_config(&self, offset: u64, width: AccessWidth) -> u64 {
        let off = (offset - reg::CONFIG) as usize;
        let n = width.bytes() as usize;
        let mut buf = [0u8; 8];
        if off + n <= self.device.config_len() {
            self.device.read_config(off, &mut buf[..n]);
        }
        u64::from_le_bytes(buf)
    }
}

impl<D: VirtioDevice> super::poll::Polled for VirtioMmio<D> {
    fn poll(&self, budget: usize) -> PollState {
        VirtioMmio::poll(self, budget)
    }
    fn stop_polling(&self) {
        VirtioMmio::stop_polling(self);
    }
}

/// §4.2.2.2: control registers only as aligned 32-bit accesses; the configuration space in
/// 8-, 16- or 32-bit aligned accesses (64-bit fields are read as two 32-bit halves).
fn width_ok(offset: u64, width: AccessWidth) -> bool {
    if offset < reg::CONFIG {
        width == AccessWidth::Word && offset.is_multiple_of(4)
    } else {
        width != AccessWidth::Double && offset.is_multiple_of(width.bytes())
    }
}

impl<D: VirtioDevice> MmioDevice for VirtioMmio<D> {
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
        if offset >= WINDOW_SIZE {
            return Err(MmioError::OutOfRange);
        }
        if !width_ok(offset, width) {
            self.bad(BadInput::RegisterWidth);
            return Err(MmioError::BadWidth);
        }
        if offset >= reg::CONFIG {
            return Ok(self.read_config(offset, width));
        }
        Ok(u64::from(self.read_reg(offset)))
    }

    fn write(
        &self,
        _ctx: AccessCtx,
        offset: u64,
        width: AccessWidth,
        value: u64,
        _fx: &mut Effects,
    ) -> Result<(), MmioError> {
        if offset >= WINDOW_SIZE {
            return Err(MmioError::OutOfRange);
        }
        if !width_ok(offset, width) {
            self.bad(BadInput::RegisterWidth);
            return Err(MmioError::BadWidth);
        }
        if offset >= reg::CONFIG {
            // Neither device has a driver-writable configuration field (virtio-blk's
            // `writeback` needs VIRTIO_BLK_F_CONFIG_WCE, not offered).
            self.bad(BadInput::ConfigWrite);
            return Ok(());
        }
        self.write_reg(offset, value as u32);
        Ok(())
    }
}
