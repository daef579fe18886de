//! Host test doubles for the virtio code, public so that the fuzz harness can use them too:
//! a fake host-physical memory (one arena that several fake VMs' RAM lives in, so a test can
//! check that nothing outside a VM's RAM changed), an interrupt line that records its
//! levels, and a fake driver that lays out split virtqueues in a VM's RAM. Nothing at EL2
//! uses this module.
#![forbid(unsafe_code)]

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use spin::Mutex;

use super::IrqSink;
use super::mem::{GuestMemory, GuestRam, PhysMemory, RamRegion};
use super::queue::QueueLayout;
use crate::addr::{Ipa, PhysAddr};

/// The byte a fresh arena holds: a test that finds it where a device should have written
/// sees the write missing; one that finds anything else outside RAM sees a stray write.
pub const POISON: u8 = 0xa5;

/// Host-physical memory `[base, base + size)` as a byte vector. Any access outside it
/// panics: the guest-memory layer must never produce such an address.
pub struct FakePhys {
    base: PhysAddr,
    bytes: Mutex<Vec<u8>>,
    accesses: AtomicU64,
    /// A 16-bit location whose stores are recorded ([`FakePhys::watch_u16`]).
    watched: Mutex<Option<(PhysAddr, Vec<u16>)>>,
    /// Runs once after the next 16-bit store at a location ([`FakePhys::after_store_u16`]).
    hook: Mutex<Option<StoreHook>>,
}

type StoreHook = (PhysAddr, alloc::boxed::Box<dyn FnOnce() + Send>);

impl FakePhys {
    pub fn new(base: PhysAddr, size: usize) -> Arc<Self> {
        Arc::new(Self {
            base,
            bytes: Mutex::new(vec![POISON; size]),
            accesses: AtomicU64::new(0),
            watched: Mutex::new(None),
            hook: Mutex::new(None),
        })
    }
    fn index(&self, pa: PhysAddr, len: usize) -> usize {
        let size = self.bytes.lock().len();
        let off = pa.as_u64().checked_sub(self.base.as_u64());
        match off {
            Some(o) if (o as usize).checked_add(len).is_some_and(|e| e <= size) => o as usize,
            _ => panic!("physical access {pa:?}+{len:#x} outside the fake memory"),
        }
    }
    /// A copy of all bytes.
    pub fn snapshot(&self) -> Vec<u8> {
        self.bytes.lock().clone()
    }
    pub fn base(&self) -> PhysAddr {
        self.base
    }
    /// Records from now on every value `store_u16` writes at `pa` (e.g. a used ring's index,
    /// to see what a driver polling it could observe).
    pub fn watch_u16(&self, pa: PhysAddr) {
        *self.watched.lock() = Some((pa, Vec::new()));
    }
    /// The values stored at the watched location since [`FakePhys::watch_u16`].
    pub fn watched_stores(&self) -> Vec<u16> {
        self.watched
            .lock()
            .as_ref()
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }
    /// Runs `f` once, right after the next `store_u16` at `pa` (to interleave a driver's
    /// step between two of the device's, e.g. between arming a notification and re-checking).
    pub fn after_store_u16(&self, pa: PhysAddr, f: impl FnOnce() + Send + 'static) {
        *self.hook.lock() = Some((pa, alloc::boxed::Box::new(f)));
    }
    /// Number of accesses made (reads, writes, copies, index loads and stores).
    pub fn accesses(&self) -> u64 {
        self.accesses.load(Ordering::Relaxed)
    }
}

impl PhysMemory for FakePhys {
    fn read(&self, pa: PhysAddr, buf: &mut [u8]) {
        let i = self.index(pa, buf.len());
        self.accesses.fetch_add(1, Ordering::Relaxed);
        buf.copy_from_slice(&self.bytes.lock()[i..i + buf.len()]);
    }
    fn write(&self, pa: PhysAddr, data: &[u8]) {
        let i = self.index(pa, data.len());
        self.accesses.fetch_add(1, Ordering::Relaxed);
        self.bytes.lock()[i..i + data.len()].copy_from_slice(data);
    }
    fn copy(&self, dst: PhysAddr, src: PhysAddr, len: usize) {
        let d = self.index(dst, len);
        let s = self.index(src, len);
        self.accesses.fetch_add(1, Ordering::Relaxed);
        self.bytes.lock().copy_within(s..s + len, d);
    }
    fn load_u16(&self, pa: PhysAddr) -> u16 {
        assert!(pa.is_aligned(2), "unaligned index load at {pa:?}");
        let mut b = [0u8; 2];
        self.read(pa, &mut b);
        u16::from_le_bytes(b)
    }
    fn store_u16(&self, pa: PhysAddr, value: u16) {
        assert!(pa.is_aligned(2), "unaligned index store at {pa:?}");
        if let Some((at, values)) = self.watched.lock().as_mut()
            && *at == pa
        {
            values.push(value);
        }
        self.write(pa, &value.to_le_bytes());
        let hook = {
            let mut h = self.hook.lock();
            if h.as_ref().is_some_and(|(at, _)| *at == pa) {
                h.take()
            } else {
                None
            }
        };
        if let Some((_, f)) = hook {
            f();
        }
    }
}

/// Records the CPUs a poller wakes.
#[derive(Default)]
pub struct RecordingWake {
    woken: Mutex<Vec<usize>>,
}

impl RecordingWake {
    pub const fn new() -> Self {
        Self {
            woken: Mutex::new(Vec::new()),
        }
    }
    /// The CPUs woken since the last call.
    pub fn take(&self) -> Vec<usize> {
        core::mem::take(&mut *self.woken.lock())
    }
}

impl super::poll::Wake for RecordingWake {
    fn wake(&self, cpu: usize) {
        self.woken.lock().push(cpu);
    }
}

/// A VM's RAM in the fake memory.
pub type FakeRam = GuestRam<Arc<FakePhys>>;

/// A fake VM whose RAM is `regions`: (IPA, size, PA) each.
pub fn fake_ram(phys: &Arc<FakePhys>, regions: &[(u64, u64, u64)]) -> Arc<FakeRam> {
    Arc::new(GuestRam::new(
        regions
            .iter()
            .map(|&(ipa, size, pa)| RamRegion {
                ipa: Ipa::new(ipa),
                size,
                pa: PhysAddr::new(pa),
            })
            .collect(),
        phys.clone(),
    ))
}

/// An interrupt line that records every level it is driven to.
#[derive(Default)]
pub struct RecordingIrq {
    level: AtomicBool,
    changes: Mutex<Vec<bool>>,
}

impl RecordingIrq {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    pub fn level(&self) -> bool {
        self.level.load(Ordering::Relaxed)
    }
    pub fn changes(&self) -> Vec<bool> {
        self.changes.lock().clone()
    }
    /// Number of times the line went high.
    pub fn rises(&self) -> usize {
        self.changes.lock().iter().filter(|&&l| l).count()
    }
}

impl IrqSink for RecordingIrq {
    fn set_level(&self, level: bool) {
        self.level.store(level, Ordering::Relaxed);
        self.changes.lock().push(level);
    }
}

pub const F_NEXT: u16 = 1;
pub const F_WRITE: u16 = 2;
pub const F_INDIRECT: u16 = 4;

/// The driver's side of one split virtqueue in a VM's RAM: writes descriptors and
/// available-ring entries, reads the used ring, as a guest driver would.
pub struct FakeDriverQueue<'m, M: GuestMemory> {
    mem: &'m M,
    pub layout: QueueLayout,
    avail_idx: u16,
    used_seen: u16,
}

impl<'m, M: GuestMemory> FakeDriverQueue<'m, M> {
    /// Zeroes the three rings at `layout` (which must be RAM).
    pub fn new(mem: &'m M, layout: QueueLayout) -> Self {
        let n = usize::from(layout.size);
        mem.write(layout.desc, &vec![0u8; 16 * n])
            .expect("desc ram");
        mem.write(layout.avail, &vec![0u8; 6 + 2 * n])
            .expect("avail ram");
        mem.write(layout.used, &vec![0u8; 6 + 8 * n])
            .expect("used ram");
        Self {
            mem,
            layout,
            avail_idx: 0,
            used_seen: 0,
        }
    }
    /// A view of a queue that is already set up (rings not cleared): the available index
    /// is read back, and [`Self::take_used`] starts from used index 0.
    pub fn new_running(mem: &'m M, layout: QueueLayout) -> Self {
        let avail_idx = mem.read_u16(layout.avail + 2).expect("avail idx");
        Self {
            mem,
            layout,
            avail_idx,
            used_seen: 0,
        }
    }
    /// A conventional layout at `base`: table, then the available ring, then the used ring
    /// 4-byte aligned.
    pub fn layout_at(base: u64, size: u16) -> QueueLayout {
        let n = u64::from(size);
        let avail = base + 16 * n;
        let used = (avail + 6 + 2 * n + 3) & !3;
        QueueLayout {
            size,
            desc: Ipa::new(base),
            avail: Ipa::new(avail),
            used: Ipa::new(used),
        }
    }
    /// Writes descriptor `i` of the table at `table` (the queue's own by default).
    pub fn set_desc_at(&self, table: Ipa, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&addr.to_le_bytes());
        b[8..12].copy_from_slice(&len.to_le_bytes());
        b[12..14].copy_from_slice(&flags.to_le_bytes());
        b[14..].copy_from_slice(&next.to_le_bytes());
        self.mem
            .write(table + 16 * u64::from(i), &b)
            .expect("descriptor in RAM");
    }
    pub fn set_desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        self.set_desc_at(self.layout.desc, i, addr, len, flags, next);
    }
    /// Puts `head` in the available ring and publishes the new index.
    pub fn publish(&mut self, head: u16) {
        let slot = u64::from(self.avail_idx % self.layout.size);
        self.mem
            .write_u16(self.layout.avail + 4 + 2 * slot, head)
            .expect("avail ring");
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.set_avail_idx(self.avail_idx);
    }
    /// Writes `avail.idx` directly (to model a broken driver).
    pub fn set_avail_idx(&mut self, idx: u16) {
        self.avail_idx = idx;
        self.mem
            .write_u16(self.layout.avail + 2, idx)
            .expect("avail idx");
    }
    pub fn avail_idx(&self) -> u16 {
        self.avail_idx
    }
    pub fn set_avail_flags(&self, flags: u16) {
        self.mem.write_u16(self.layout.avail, flags).expect("flags");
    }
    pub fn set_used_event(&self, v: u16) {
        let at = self.layout.avail + 4 + 2 * u64::from(self.layout.size);
        self.mem.write_u16(at, v).expect("used_event");
    }
    pub fn avail_event(&self) -> u16 {
        let at = self.layout.used + 4 + 8 * u64::from(self.layout.size);
        self.mem.read_u16(at).expect("avail_event")
    }
    pub fn used_flags(&self) -> u16 {
        self.mem.read_u16(self.layout.used).expect("used flags")
    }
    pub fn used_idx(&self) -> u16 {
        self.mem.read_u16(self.layout.used + 2).expect("used idx")
    }
    /// The used elements (id, len) added since the last call.
    pub fn take_used(&mut self) -> Vec<(u32, u32)> {
        let idx = self.used_idx();
        let mut out = Vec::new();
        while self.used_seen != idx {
            let slot = u64::from(self.used_seen % self.layout.size);
            let e: [u8; 8] = self
                .mem
                .read_array(self.layout.used + 4 + 8 * slot)
                .expect("used ring");
            out.push((
                u32::from_le_bytes([e[0], e[1], e[2], e[3]]),
                u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
            ));
            self.used_seen = self.used_seen.wrapping_add(1);
        }
        out
    }
    /// Whether the driver would notify after publishing from `old` to the current index
    /// (Linux's `virtqueue_kick_prepare` with EVENT_IDX, or the NO_NOTIFY flag without).
    pub fn would_notify(&self, old: u16, event_idx: bool) -> bool {
        if event_idx {
            super::queue::need_event(self.avail_event(), self.avail_idx, old)
        } else {
            self.used_flags() & 1 == 0
        }
    }
}
