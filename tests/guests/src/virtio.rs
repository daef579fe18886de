//! A minimal virtio-mmio driver (VIRTIO 1.2 §4.2, modern interface) for test guests that
//! attack or exercise the hypervisor's virtio devices: register access, the initialization
//! sequence of §3.1.1 with the caller's feature choice, and split virtqueues (§2.7) laid out by
//! hand in the guest's RAM, so that a test can put anything it likes in a descriptor or ring.
//!
//! The guest runs with the MMU off: RAM is Device-nGnRnE memory, so every access here is
//! aligned and accesses happen in program order (no barrier needed between filling a ring and
//! the notification). The hypervisor's devices process a queue during the QueueNotify exit, so
//! a request is complete (or refused) when the notifying store returns.
use crate::mmio;

/// QEMU virt's virtio-mmio window: slot n at `MMIO_BASE + n * MMIO_STRIDE`.
pub const MMIO_BASE: u64 = 0x0a00_0000;
pub const MMIO_STRIDE: u64 = 0x200;

/// Register offsets (§4.2.2).
pub mod reg {
    pub const MAGIC: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
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
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

/// Device status bits (§2.1).
pub mod status {
    pub const ACKNOWLEDGE: u32 = 1;
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const NEEDS_RESET: u32 = 0x40;
}

pub const MAGIC: u32 = 0x7472_6976;
pub const F_INDIRECT_DESC: u64 = 1 << 28;
pub const F_EVENT_IDX: u64 = 1 << 29;
pub const F_VERSION_1: u64 = 1 << 32;

/// Descriptor flags (§2.7.5).
pub const DESC_NEXT: u16 = 1;
pub const DESC_WRITE: u16 = 2;
pub const DESC_INDIRECT: u16 = 4;

/// Device IDs (§5).
pub const ID_NET: u32 = 1;
pub const ID_BLK: u32 = 2;

fn w64(a: u64, v: u64) {
    // SAFETY: callers pass 8-byte aligned addresses in the guest's own RAM (rings, buffers).
    unsafe { (a as *mut u64).write_volatile(v) }
}
fn w32(a: u64, v: u32) {
    // SAFETY: as in `w64`, 4-byte aligned.
    unsafe { (a as *mut u32).write_volatile(v) }
}
fn w16(a: u64, v: u16) {
    // SAFETY: as in `w64`, 2-byte aligned.
    unsafe { (a as *mut u16).write_volatile(v) }
}
fn r32(a: u64) -> u32 {
    // SAFETY: as in `w64`, 4-byte aligned.
    unsafe { (a as *const u32).read_volatile() }
}
fn r16(a: u64) -> u16 {
    // SAFETY: as in `w64`, 2-byte aligned.
    unsafe { (a as *const u16).read_volatile() }
}

/// Writes `n` bytes of `v` at `a` (any alignment: byte stores).
pub fn fill(a: u64, v: u8, n: u64) {
    for i in 0..n {
        // SAFETY: the caller's buffer in its own RAM.
        unsafe { ((a + i) as *mut u8).write_volatile(v) }
    }
}

/// The byte at `a` of the guest's RAM.
pub fn byte(a: u64) -> u8 {
    // SAFETY: the caller's buffer in its own RAM.
    unsafe { (a as *const u8).read_volatile() }
}

/// Writes a u64 at an 8-byte aligned address of the guest's RAM.
pub fn put64(a: u64, v: u64) {
    w64(a, v)
}
/// Writes a u32 at a 4-byte aligned address of the guest's RAM.
pub fn put32(a: u64, v: u32) {
    w32(a, v)
}

/// A virtio-mmio transport.
#[derive(Clone, Copy)]
pub struct Dev {
    pub base: u64,
}

impl Dev {
    pub fn slot(n: u64) -> Dev {
        Dev {
            base: MMIO_BASE + n * MMIO_STRIDE,
        }
    }
    pub fn read(&self, off: u64) -> u32 {
        // SAFETY: a 32-bit register of the transport window (the hypervisor answers or
        // aborts; the caller probes when an abort is possible).
        unsafe { mmio::read32(self.base + off) }
    }
    pub fn write(&self, off: u64, v: u32) {
        // SAFETY: as in `read`.
        unsafe { mmio::write32(self.base + off, v) }
    }
    /// True when the slot answers with the magic value and a device ID.
    pub fn present(&self) -> bool {
        self.read(reg::MAGIC) == MAGIC && self.read(reg::VERSION) == 2
    }
    pub fn device_id(&self) -> u32 {
        self.read(reg::DEVICE_ID)
    }
    pub fn status(&self) -> u32 {
        self.read(reg::STATUS)
    }
    pub fn reset(&self) {
        self.write(reg::STATUS, 0);
    }
    pub fn device_features(&self) -> u64 {
        self.write(reg::DEVICE_FEATURES_SEL, 0);
        let lo = self.read(reg::DEVICE_FEATURES) as u64;
        self.write(reg::DEVICE_FEATURES_SEL, 1);
        lo | (self.read(reg::DEVICE_FEATURES) as u64) << 32
    }
    /// Reset, ACKNOWLEDGE, DRIVER, `features` (both halves), FEATURES_OK; returns the status
    /// read back (FEATURES_OK is missing when the device refused the features).
    pub fn negotiate(&self, features: u64) -> u32 {
        self.reset();
        self.write(reg::STATUS, status::ACKNOWLEDGE);
        self.write(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        self.write(reg::DRIVER_FEATURES_SEL, 0);
        self.write(reg::DRIVER_FEATURES, features as u32);
        self.write(reg::DRIVER_FEATURES_SEL, 1);
        self.write(reg::DRIVER_FEATURES, (features >> 32) as u32);
        self.write(
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        self.status()
    }
    /// Programs queue `q` with `ring`'s layout and size `num`, then QueueReady = 1; returns
    /// QueueReady read back.
    pub fn setup_queue(&self, q: u32, ring: &Ring, num: u32) -> u32 {
        self.write(reg::QUEUE_SEL, q);
        self.write(reg::QUEUE_NUM, num);
        self.write(reg::QUEUE_DESC_LOW, ring.desc as u32);
        self.write(reg::QUEUE_DESC_HIGH, (ring.desc >> 32) as u32);
        self.write(reg::QUEUE_DRIVER_LOW, ring.avail as u32);
        self.write(reg::QUEUE_DRIVER_HIGH, (ring.avail >> 32) as u32);
        self.write(reg::QUEUE_DEVICE_LOW, ring.used as u32);
        self.write(reg::QUEUE_DEVICE_HIGH, (ring.used >> 32) as u32);
        self.write(reg::QUEUE_READY, 1);
        self.read(reg::QUEUE_READY)
    }
    pub fn driver_ok(&self) -> u32 {
        let s = self.status();
        self.write(reg::STATUS, s | status::DRIVER_OK);
        self.status()
    }
    pub fn notify(&self, q: u32) {
        self.write(reg::QUEUE_NOTIFY, q);
    }
    /// InterruptStatus, then acknowledges it.
    pub fn take_interrupt(&self) -> u32 {
        let s = self.read(reg::INTERRUPT_STATUS);
        self.write(reg::INTERRUPT_ACK, s);
        s
    }
}

/// A split virtqueue in the guest's RAM: descriptor table, available ring, used ring.
#[derive(Clone, Copy)]
pub struct Ring {
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    pub size: u16,
    /// The next available index the driver publishes.
    pub avail_idx: u16,
}

impl Ring {
    /// A ring of `size` entries at `at` (4 KiB aligned): descriptors, then the available ring,
    /// then the used ring on the next 4 KiB boundary; all zeroed.
    pub fn new(at: u64, size: u16) -> Ring {
        let n = size as u64;
        let avail = at + 16 * n;
        let used = (avail + 6 + 2 * n + 0xfff) & !0xfff;
        let end = used + 6 + 8 * n;
        let mut a = at;
        while a < end {
            w64(a, 0);
            a += 8;
        }
        Ring {
            desc: at,
            avail,
            used,
            size,
            avail_idx: 0,
        }
    }
    /// Bytes the ring takes from `at`.
    pub fn footprint(&self) -> u64 {
        self.used + 6 + 8 * self.size as u64 - self.desc
    }
    pub fn set_desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let d = self.desc + 16 * i as u64;
        w64(d, addr);
        w32(d + 8, len);
        w16(d + 12, flags);
        w16(d + 14, next);
    }
    /// Publishes descriptor chain `head` (ring entry, then the index).
    pub fn push(&mut self, head: u16) {
        let slot = (self.avail_idx % self.size) as u64;
        w16(self.avail + 4 + 2 * slot, head);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        w16(self.avail + 2, self.avail_idx);
    }
    /// Writes the available index as is (for attacks).
    pub fn set_avail_idx(&mut self, idx: u16) {
        self.avail_idx = idx;
        w16(self.avail + 2, idx);
    }
    pub fn used_idx(&self) -> u16 {
        r16(self.used + 2)
    }
    /// The used index once it moved past `before`, or after `ms` milliseconds of counter time
    /// if it did not. A device may complete a request after the notification returns (kestrel's
    /// network transmit queues are drained by a poller on another CPU when one is free), so a
    /// driver that wants the answer waits for it, as any real driver does.
    pub fn wait_used(&self, before: u16, ms: u64) -> u16 {
        let deadline = crate::timer::cntvct() + crate::timer::cntfrq() / 1000 * ms;
        loop {
            let used = self.used_idx();
            if used != before || crate::timer::cntvct() >= deadline {
                return used;
            }
            core::hint::spin_loop();
        }
    }
    /// Used ring entry `i` (mod size): (id, len).
    pub fn used_elem(&self, i: u16) -> (u32, u32) {
        let e = self.used + 4 + 8 * (i % self.size) as u64;
        (r32(e), r32(e + 4))
    }
}
