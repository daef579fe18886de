use super::*;
use crate::virtio::blk::{BlkDevice, ReadOnlyDisk};
use crate::virtio::queue::QueueLayout;

type Blk = BlkDevice<Arc<FakeRam>, ReadOnlyDisk<Vec<u8>>>;

fn blk(m: &Arc<FakeRam>) -> (Arc<RecordingIrq>, VirtioMmio<Blk>) {
    let (irq, s) = signals();
    let dev = BlkDevice::new(
        m.clone(),
        ReadOnlyDisk::new(vec![7u8; 4096]),
        true,
        b"disk0",
        s.clone(),
    );
    (irq, VirtioMmio::new(dev, s))
}

fn q0() -> QueueLayout {
    FakeDriverQueue::<FakeRam>::layout_at(RAM + 0x1_0000, 16)
}

#[test]
fn identifies_itself_as_a_modern_virtio_mmio_device() {
    let phys = arena(1);
    let m = vm(&phys, 0);
    let (_irq, t) = blk(&m);
    assert_eq!(rd(&t, reg::MAGIC_VALUE), 0x7472_6976);
    assert_eq!(rd(&t, reg::VERSION), 2);
    assert_eq!(rd(&t, reg::DEVICE_ID), 2);
    assert_eq!(rd(&t, reg::STATUS), 0);
    assert_eq!(rd(&t, reg::SHM_LEN_LOW), u32::MAX);
    assert_eq!(t.size(), 0x200);
    // Page 1 of the offer holds VERSION_1 (bit 32).
    wr(&t, reg::DEVICE_FEATURES_SEL, 1);
    assert_eq!(rd(&t, reg::DEVICE_FEATURES) & 1, 1);
    wr(&t, reg::DEVICE_FEATURES_SEL, 2);
    assert_eq!(rd(&t, reg::DEVICE_FEATURES), 0);
    wr(&t, reg::QUEUE_SEL, 0);
    assert_eq!(rd(&t, reg::QUEUE_NUM_MAX), 256);
    wr(&t, reg::QUEUE_SEL, 1);
    assert_eq!(rd(&t, reg::QUEUE_NUM_MAX), 0, "no queue 1");
}

#[test]
fn linux_sequence_brings_the_device_up() {
    let phys = arena(1);
    let m = vm(&phys, 0);
    let (_irq, t) = blk(&m);
    FakeDriverQueue::new(&*m, q0());
    let st = linux_init(&t, LINUX_BLK, &[Some(q0())]);
    assert_eq!(st, 0xf);
    assert_eq!(t.negotiated_features() & features::BLK_RO, features::BLK_RO);
    assert_eq!(t.signals().bad.total(), 0);
}

#[test]
fn features_outside_the_offer_or_without_version_1_are_refused() {
    let phys = arena(1);
    let m = vm(&phys, 0);
    let (_irq, t) = blk(&m);
    // Legacy driver: no VERSION_1.
    let st = linux_init(&t, LINUX_BLK & !features::VERSION_1, &[Some(q0())]);
    assert_eq!(st & 8, 0, "FEATURES_OK not set");
    assert_eq!(t.signals().bad.count(BadInput::FeaturesRefused), 1);
    // A bit never offered (VIRTIO_F_RING_PACKED, bit 34).
    wr(&t, reg::STATUS, 0);
    wr(&t, reg::STATUS, 3);
    wr(&t, reg::DRIVER_FEATURES_SEL, 1);
    wr(&t, reg::DRIVER_FEATURES, 1 | 4);
    wr(&t, reg::STATUS, 0xb);
    assert_eq!(rd(&t, reg::STATUS), 3);
    // DRIVER_OK without FEATURES_OK is refused too.
    wr(&t, reg::STATUS, 7);
    assert_eq!(rd(&t, reg::STATUS), 3);
    assert_eq!(t.signals().bad.count(BadInput::OutOfOrder), 1);
}

#[test]
fn status_bits_cannot_be_cleared_except_by_reset() {
    let phys = arena(1);
    let m = vm(&phys, 0);
    let (_irq, t) = blk(&m);
    wr(&t, reg::STATUS, 3);
    wr(&t, reg::STATUS, 1);
    assert_eq!(rd(&t, reg::STATUS), 3);
    assert_eq!(t.signals().bad.count(BadInput::StatusCleared), 1);
    // The driver cannot set DEVICE_NEEDS_RESET itself.
    wr(&t, reg::STATUS, 3 | 64);
    assert_eq!(rd(&t, reg::STATUS), 3);
    wr(&t, reg::STATUS, 0);
    assert_eq!(rd(&t, reg::STATUS), 0);
}

#[test]
fn driver_features_after_features_ok_are_ignored() {
    let phys = arena(1);
    let m = vm(&phys, 0);
    let (_irq, t) = blk(&m);
    FakeDriverQueue::new(&*m, q0());
    linux_init(&t, LINUX_BLK, &[Some(q0())]);
    let before = t.negotiated_features();
    wr(&t, reg::DRIVER_FEATURES_SEL, 0);
    wr(&t, reg::DRIVER_FEATURES, 0);
    assert_eq!(t.negotiated_features(), before);
    assert_eq!(t.signals().bad.count(BadInput::FeaturesAfterNegotiation), 1);
}

#[test]
fn a_bad_queue_stays_disabled_and_the_device_needs_reset() {
    let phys = arena(1);
    let m = vm(&phys, 0);
    for (what, layout) in [
        ("size 3", QueueLayout { size: 3, ..q0() }),
        (
            "misaligned used ring",
            QueueLayout {
                used: q0().used + 2,
                ..q0()
            },
        ),
        (
            "ring outside RAM",
            QueueLayout {
                desc: crate::addr::Ipa::new(0x1000),
                ..q0()
            },
        ),
    ] {
        let (_irq, t) = blk(&m);
        let st = linux_init(&t, LINUX_BLK, &[Some(layout)]);
        wr(&t, reg::QUEUE_SEL, 0);
        assert_eq!(rd(&t, reg::QUEUE_READY), 0, "{what}");
        assert_ne!(st & 64, 0, "{what}: DEVICE_NEEDS_RESET");
        assert_eq!(t.signals().bad.count(BadInput::QueueInvalid), 1, "{what}");
        // A reset clears it.
        wr(&t, reg::STATUS, 0);
        assert_eq!(rd(&t, reg::STATUS), 0);
    }
}

#[test]
fn queue_registers_of_an_enabled_queue_do_not_move() {
    let phys = arena(1);
    let m = vm(&phys, 0);
    let (_irq, t) = blk(&m);
    FakeDriverQueue::new(&*m, q0());
    wr(&t, reg::STATUS, 3);
    wr(&t, reg::DRIVER_FEATURES_SEL, 1);
    wr(&t, reg::DRIVER_FEATURES, 1);
    wr(&t, reg::STATUS, 0xb);
    let l = q0();
    wr(&t, reg::QUEUE_SEL, 0);
    wr(&t, reg::QUEUE_NUM, 16);
    wr(&t, reg::QUEUE_DESC_LOW, l.desc.as_u64() as u32);
    wr(&t, reg::QUEUE_DRIVER_LOW, l.avail.as_u64() as u32);
    wr(&t, reg::QUEUE_DEVICE_LOW, l.used.as_u64() as u32);
    wr(&t, reg::QUEUE_READY, 1);
    assert_eq!(rd(&t, reg::QUEUE_READY), 1);
    wr(&t, reg::QUEUE_DESC_LOW, 0x1000);
    assert_eq!(t.signals().bad.count(BadInput::QueueBusy), 1);
    wr(&t, reg::STATUS, 0xf);
    assert_eq!(
        rd(&t, reg::STATUS),
        0xf,
        "the queue still works: its rings did not move"
    );
    // Disabling a running queue needs RING_RESET.
    wr(&t, reg::QUEUE_READY, 0);
    assert_eq!(rd(&t, reg::QUEUE_READY), 1);
}

#[test]
fn notifications_for_queues_that_are_not_running_are_dropped() {
    let phys = arena(1);
    let m = vm(&phys, 0);
    let (_irq, t) = blk(&m);
    wr(&t, reg::QUEUE_NOTIFY, 0);
    FakeDriverQueue::new(&*m, q0());
    linux_init(&t, LINUX_BLK, &[Some(q0())]);
    wr(&t, reg::QUEUE_NOTIFY, 1);
    wr(&t, reg::QUEUE_NOTIFY, 0xffff_ffff);
    assert_eq!(t.signals().bad.count(BadInput::NotifyIgnored), 3);
    wr(&t, reg::QUEUE_NOTIFY, 0);
    assert_eq!(t.signals().bad.count(BadInput::NotifyIgnored), 3);
}

#[test]
fn accesses_of_the_wrong_width_are_refused() {
    let phys = arena(1);
    let m = vm(&phys, 0);
    let (_irq, t) = blk(&m);
    let mut fx = Effects::new();
    assert_eq!(
        t.read(CTX, reg::STATUS, AccessWidth::Byte, &mut fx),
        Err(MmioError::BadWidth)
    );
    assert_eq!(
        t.read(CTX, reg::STATUS + 2, AccessWidth::Word, &mut fx),
        Err(MmioError::BadWidth)
    );
    assert_eq!(
        t.write(CTX, reg::STATUS, AccessWidth::Double, 0, &mut fx),
        Err(MmioError::BadWidth)
    );
    assert_eq!(
        t.read(CTX, 0x200, AccessWidth::Word, &mut fx),
        Err(MmioError::OutOfRange)
    );
    // Configuration space: 8, 16 and 32 bits, aligned.
    assert_eq!(
        cfg_read(&t, 0, AccessWidth::Word),
        Ok(8),
        "capacity low word (4096 / 512)"
    );
    assert_eq!(cfg_read(&t, 4, AccessWidth::Word), Ok(0));
    assert_eq!(cfg_read(&t, 0, AccessWidth::Byte), Ok(8));
    assert_eq!(cfg_read(&t, 20, AccessWidth::Half), Ok(512));
    assert_eq!(cfg_read(&t, 1, AccessWidth::Half), Err(MmioError::BadWidth));
    assert_eq!(
        cfg_read(&t, 0, AccessWidth::Double),
        Err(MmioError::BadWidth)
    );
    assert_eq!(
        cfg_read(&t, 0xfc, AccessWidth::Word),
        Ok(0),
        "past the config reads 0"
    );
    assert_eq!(t.signals().bad.count(BadInput::RegisterWidth), 5);
}

#[test]
fn config_writes_are_ignored_and_counted() {
    let phys = arena(1);
    let m = vm(&phys, 0);
    let (_irq, t) = blk(&m);
    FakeDriverQueue::new(&*m, q0());
    linux_init(&t, LINUX_BLK, &[Some(q0())]);
    t.write(
        CTX,
        reg::CONFIG,
        AccessWidth::Word,
        0xffff,
        &mut Effects::new(),
    )
    .unwrap();
    assert_eq!(cfg_read(&t, 0, AccessWidth::Word), Ok(8));
    assert_eq!(t.signals().bad.count(BadInput::ConfigWrite), 1);
}

#[test]
fn config_change_bumps_the_generation_and_interrupts_a_running_driver() {
    let phys = arena(1);
    let m = vm(&phys, 0);
    let (irq, t) = blk(&m);
    t.config_changed();
    assert_eq!(rd(&t, reg::CONFIG_GENERATION), 1);
    assert!(!irq.level(), "no driver yet");
    FakeDriverQueue::new(&*m, q0());
    linux_init(&t, LINUX_BLK, &[Some(q0())]);
    t.config_changed();
    assert_eq!(rd(&t, reg::CONFIG_GENERATION), 2);
    assert_eq!(rd(&t, reg::INTERRUPT_STATUS), INT_CONFIG_CHANGE);
    assert!(irq.level());
    wr(&t, reg::INTERRUPT_ACK, INT_CONFIG_CHANGE);
    assert_eq!(rd(&t, reg::INTERRUPT_STATUS), 0);
    assert!(!irq.level());
}

#[test]
fn a_broken_queue_sets_needs_reset_with_a_config_interrupt() {
    let phys = arena(1);
    let m = vm(&phys, 0);
    let (irq, t) = blk(&m);
    let mut drv = FakeDriverQueue::new(&*m, q0());
    linux_init(&t, LINUX_BLK, &[Some(q0())]);
    drv.set_avail_idx(100);
    wr(&t, reg::QUEUE_NOTIFY, 0);
    assert_eq!(rd(&t, reg::STATUS) & 64, 64);
    assert_eq!(
        rd(&t, reg::INTERRUPT_STATUS) & INT_CONFIG_CHANGE,
        INT_CONFIG_CHANGE
    );
    assert!(irq.level());
    assert_eq!(t.signals().bad.count(BadInput::QueueBroken), 1);
    // Further notifications are dropped until the driver resets the device.
    wr(&t, reg::QUEUE_NOTIFY, 0);
    assert_eq!(t.signals().bad.count(BadInput::QueueBroken), 1);
    wr(&t, reg::STATUS, 0);
    assert!(!irq.level(), "reset lowers the line");
}
