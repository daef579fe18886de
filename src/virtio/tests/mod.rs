//! Host tests of the virtio logic against fake guest memory (see `super::testing`).
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

use super::testing::*;
use super::transport::{VirtioMmio, reg};
use super::*;
use crate::vdev::{AccessCtx, AccessWidth, Effects, MmioDevice, MmioError};

mod blk;
mod mem;
mod net;
mod poll;
mod queue;
mod transport;

/// Guest RAM of every fake VM: 1 MiB at IPA 0x4000_0000.
pub const RAM: u64 = 0x4000_0000;
pub const RAM_SIZE: u64 = 1 << 20;
/// Host-physical arena: VM n's RAM at PHYS + GUARD + n * (RAM_SIZE + GUARD), with poisoned
/// guard bytes around each.
pub const PHYS: u64 = 0x8000_0000;
pub const GUARD: u64 = 0x1000;

pub fn arena(vms: usize) -> Arc<FakePhys> {
    FakePhys::new(
        crate::addr::PhysAddr::new(PHYS),
        (GUARD + vms as u64 * (RAM_SIZE + GUARD)) as usize,
    )
}

pub fn vm_pa(n: usize) -> u64 {
    PHYS + GUARD + n as u64 * (RAM_SIZE + GUARD)
}

pub fn vm(phys: &Arc<FakePhys>, n: usize) -> Arc<FakeRam> {
    fake_ram(phys, &[(RAM, RAM_SIZE, vm_pa(n))])
}

/// Asserts that every byte of the arena outside the RAM of `vms` VMs still holds POISON.
pub fn assert_guards_intact(phys: &FakePhys, vms: usize) {
    let snap = phys.snapshot();
    for n in 0..=vms {
        let start = (n as u64 * (RAM_SIZE + GUARD)) as usize;
        let end = (start + GUARD as usize).min(snap.len());
        assert!(
            snap[start..end].iter().all(|&b| b == POISON),
            "guard {n} was written"
        );
    }
}

/// The IPAs of the 4 KiB pages of VM `n`'s RAM that differ between two arena snapshots.
pub fn changed_pages(before: &[u8], after: &[u8], n: usize) -> Vec<u64> {
    let start = (vm_pa(n) - PHYS) as usize;
    (0..RAM_SIZE / 0x1000)
        .filter(|&p| {
            let at = start + (p * 0x1000) as usize;
            before[at..at + 0x1000] != after[at..at + 0x1000]
        })
        .map(|p| RAM + p * 0x1000)
        .collect()
}

pub const CTX: AccessCtx = AccessCtx { vcpu: 0 };

pub fn rd<D: VirtioDevice>(t: &VirtioMmio<D>, off: u64) -> u32 {
    t.read(CTX, off, AccessWidth::Word, &mut Effects::new())
        .expect("register read") as u32
}

pub fn wr<D: VirtioDevice>(t: &VirtioMmio<D>, off: u64, v: u32) {
    t.write(
        CTX,
        off,
        AccessWidth::Word,
        u64::from(v),
        &mut Effects::new(),
    )
    .expect("register write");
}

pub fn cfg_read<D: VirtioDevice>(
    t: &VirtioMmio<D>,
    off: u64,
    w: AccessWidth,
) -> Result<u64, MmioError> {
    t.read(CTX, reg::CONFIG + off, w, &mut Effects::new())
}

/// What Linux's virtio_mmio does to bring a device up: reset, ACKNOWLEDGE, DRIVER, read the
/// offer, accept `want & offer`, FEATURES_OK (checked), queues, DRIVER_OK. Returns the
/// status read back at the end.
pub fn linux_init<D: VirtioDevice>(
    t: &VirtioMmio<D>,
    want: u64,
    queues: &[Option<super::queue::QueueLayout>],
) -> u8 {
    wr(t, reg::STATUS, 0);
    wr(t, reg::STATUS, 1);
    wr(t, reg::STATUS, 1 | 2);
    wr(t, reg::DEVICE_FEATURES_SEL, 1);
    let mut offer = u64::from(rd(t, reg::DEVICE_FEATURES)) << 32;
    wr(t, reg::DEVICE_FEATURES_SEL, 0);
    offer |= u64::from(rd(t, reg::DEVICE_FEATURES));
    let accept = want & offer;
    wr(t, reg::DRIVER_FEATURES_SEL, 1);
    wr(t, reg::DRIVER_FEATURES, (accept >> 32) as u32);
    wr(t, reg::DRIVER_FEATURES_SEL, 0);
    wr(t, reg::DRIVER_FEATURES, accept as u32);
    wr(t, reg::STATUS, 1 | 2 | 8);
    if rd(t, reg::STATUS) & 8 == 0 {
        return rd(t, reg::STATUS) as u8;
    }
    for (i, q) in queues.iter().enumerate() {
        let Some(q) = q else { continue };
        wr(t, reg::QUEUE_SEL, i as u32);
        assert_eq!(rd(t, reg::QUEUE_READY), 0);
        assert!(rd(t, reg::QUEUE_NUM_MAX) >= u32::from(q.size));
        wr(t, reg::QUEUE_NUM, u32::from(q.size));
        for (lo, v) in [
            (reg::QUEUE_DESC_LOW, q.desc.as_u64()),
            (reg::QUEUE_DRIVER_LOW, q.avail.as_u64()),
            (reg::QUEUE_DEVICE_LOW, q.used.as_u64()),
        ] {
            wr(t, lo, v as u32);
            wr(t, lo + 4, (v >> 32) as u32);
        }
        wr(t, reg::QUEUE_READY, 1);
    }
    wr(t, reg::STATUS, 1 | 2 | 8 | 4);
    rd(t, reg::STATUS) as u8
}

/// The features a Linux 6.1 guest asks of each device type (what its drivers support).
pub const LINUX_NET: u64 = features::VERSION_1
    | features::INDIRECT_DESC
    | features::EVENT_IDX
    | features::NET_CSUM
    | features::NET_GUEST_CSUM
    | features::NET_MTU
    | features::NET_MAC
    | features::NET_GUEST_TSO4
    | features::NET_GUEST_TSO6
    | features::NET_HOST_TSO4
    | features::NET_HOST_TSO6
    | features::NET_MRG_RXBUF
    | features::NET_STATUS;
pub const LINUX_BLK: u64 = features::VERSION_1
    | features::INDIRECT_DESC
    | features::EVENT_IDX
    | features::BLK_SEG_MAX
    | features::BLK_SIZE_MAX
    | features::BLK_RO
    | features::BLK_BLK_SIZE
    | features::BLK_FLUSH;

pub fn signals() -> (Arc<RecordingIrq>, Arc<DeviceSignals>) {
    let irq = RecordingIrq::new();
    let s = Arc::new(DeviceSignals::new(irq.clone()));
    (irq, s)
}

#[test]
fn slots_follow_qemu_virt_disks_first() {
    let got: Vec<_> = assign_slots(2, 1).collect();
    assert_eq!(
        got,
        vec![
            (MmioSlot::new(0), SlotDevice::Disk(0)),
            (MmioSlot::new(1), SlotDevice::Disk(1)),
            (MmioSlot::new(2), SlotDevice::Net(0)),
        ]
    );
    let s = MmioSlot::new(31);
    assert_eq!(s.base, crate::addr::Ipa::new(0x0a00_3e00));
    assert_eq!(s.spi, 47);
    assert_eq!(MmioSlot::new(0).intid(), 48);
    assert_eq!(assign_slots(40, 40).count(), MMIO_SLOTS);
}

#[test]
fn interrupt_line_follows_status_bits() {
    let (irq, s) = signals();
    s.irq.raise(INT_USED_BUFFER);
    s.irq.raise(INT_USED_BUFFER);
    s.irq.raise(INT_CONFIG_CHANGE);
    assert!(irq.level());
    s.irq.ack(INT_USED_BUFFER);
    assert!(irq.level(), "config bit still set");
    s.irq.ack(INT_CONFIG_CHANGE);
    assert!(!irq.level());
    assert_eq!(irq.changes(), vec![true, false]);
    s.irq.ack(INT_USED_BUFFER);
    assert_eq!(irq.changes(), vec![true, false], "no change, no call");
}

#[test]
fn bad_input_is_logged_once_per_kind_and_always_counted() {
    let log = BadInputLog::new();
    log.record(BadInput::BadChain);
    log.record(BadInput::BadChain);
    log.record(BadInput::ConfigWrite);
    let first: Vec<_> = log.take_unlogged().collect();
    assert_eq!(first, vec![BadInput::ConfigWrite, BadInput::BadChain]);
    log.record(BadInput::BadChain);
    assert_eq!(log.take_unlogged().count(), 0);
    assert_eq!(log.count(BadInput::BadChain), 3);
    assert_eq!(log.total(), 4);
}
