use super::*;
use crate::addr::Ipa;
use crate::virtio::blk::*;
use crate::virtio::mem::GuestMemory;
use crate::virtio::queue::QueueLayout;

const Q: u64 = RAM + 0x1_0000;
const HDR: u64 = RAM + 0x2_0000;
const BUF: u64 = RAM + 0x3_0000;
const STATUS: u64 = RAM + 0x2_1000;

fn layout() -> QueueLayout {
    FakeDriverQueue::<FakeRam>::layout_at(Q, 16)
}

struct Rig<S: BlockStore + 'static> {
    phys: Arc<FakePhys>,
    m: Arc<FakeRam>,
    irq: Arc<RecordingIrq>,
    t: VirtioMmio<BlkDevice<Arc<FakeRam>, S>>,
}

fn rig<S: BlockStore + 'static>(store: S, read_only: bool) -> Rig<S> {
    let phys = arena(1);
    let m = vm(&phys, 0);
    let (irq, s) = signals();
    let t = VirtioMmio::new(
        BlkDevice::new(m.clone(), store, read_only, b"kestrel-disk-0", s.clone()),
        s,
    );
    FakeDriverQueue::new(&*m, layout());
    assert_eq!(linux_init(&t, LINUX_BLK, &[Some(layout())]), 0xf);
    Rig { phys, m, irq, t }
}

fn image(sectors: usize) -> Vec<u8> {
    (0..sectors * 512)
        .map(|i| (i / 512) as u8 ^ (i as u8))
        .collect()
}

/// Submits one request laid out the way Linux does: header, data, status in three
/// descriptors (data omitted when `data_len` is 0). Returns (status byte, used len).
fn request<S: BlockStore>(
    r: &Rig<S>,
    kind: u32,
    sector: u64,
    data_len: u32,
    data_writable: bool,
) -> (u8, u32) {
    let mut drv = FakeDriverQueue::new_running(&*r.m, layout());
    let _ = drv.take_used();
    let mut hdr = [0u8; 16];
    hdr[..4].copy_from_slice(&kind.to_le_bytes());
    hdr[8..].copy_from_slice(&sector.to_le_bytes());
    r.m.write(Ipa::new(HDR), &hdr).unwrap();
    r.m.write(Ipa::new(STATUS), &[0xee]).unwrap();
    let mut n = 0;
    drv.set_desc(0, HDR, 16, F_NEXT, 1);
    if data_len > 0 {
        drv.set_desc(
            1,
            BUF,
            data_len,
            F_NEXT | if data_writable { F_WRITE } else { 0 },
            2,
        );
        n = 1;
    }
    drv.set_desc(n + 1, STATUS, 1, F_WRITE, 0);
    if n == 0 {
        drv.set_desc(0, HDR, 16, F_NEXT, 1);
    }
    drv.publish(0);
    wr(&r.t, reg::QUEUE_NOTIFY, 0);
    let used = drv.take_used();
    assert_eq!(used.len(), 1, "one request, one used element");
    let mut st = [0u8];
    r.m.read(Ipa::new(STATUS), &mut st).unwrap();
    (st[0], used[0].1)
}

#[test]
fn reads_serve_the_image_bytes() {
    let img = image(64);
    let r = rig(ReadOnlyDisk::new(img.clone()), true);
    assert_eq!(request(&r, 0, 3, 1024, true), (S_OK, 1025));
    let mut got = vec![0u8; 1024];
    r.m.read(Ipa::new(BUF), &mut got).unwrap();
    assert_eq!(got, img[3 * 512..5 * 512]);
    assert!(r.irq.level(), "used-buffer interrupt");
    assert_eq!(rd(&r.t, reg::INTERRUPT_STATUS), INT_USED_BUFFER);
    assert_guards_intact(&r.phys, 1);
}

#[test]
fn a_write_to_a_read_only_disk_is_an_io_error_and_changes_nothing() {
    let img = image(8);
    let r = rig(ReadOnlyDisk::new(img.clone()), true);
    r.m.write(Ipa::new(BUF), &[0x55; 512]).unwrap();
    assert_eq!(request(&r, 1, 0, 512, false), (S_IOERR, 1));
    // Same for a writable store offered read-only.
    let r = rig(CopiedDisk::new(&img), true);
    r.m.write(Ipa::new(BUF), &[0x55; 512]).unwrap();
    assert_eq!(request(&r, 1, 0, 512, false), (S_IOERR, 1));
    assert_eq!(request(&r, 0, 0, 512, true), (S_OK, 513));
    let mut got = vec![0u8; 512];
    r.m.read(Ipa::new(BUF), &mut got).unwrap();
    assert_eq!(got, img[..512]);
    assert_eq!(
        r.t.negotiated_features() & features::BLK_RO,
        features::BLK_RO
    );
}

#[test]
fn writes_land_in_the_copy_and_survive_a_device_reset() {
    let img = image(16);
    let r = rig(CopiedDisk::new(&img), false);
    assert_eq!(r.t.negotiated_features() & features::BLK_RO, 0);
    r.m.write(Ipa::new(BUF), &[0x5a; 1024]).unwrap();
    assert_eq!(request(&r, 1, 7, 1024, false), (S_OK, 1));
    assert_eq!(request(&r, 4, 0, 0, false), (S_OK, 1), "flush");
    // The guest reboots: reset and bring the device up again.
    FakeDriverQueue::new(&*r.m, layout());
    assert_eq!(linux_init(&r.t, LINUX_BLK, &[Some(layout())]), 0xf);
    r.m.write(Ipa::new(BUF), &[0u8; 2048]).unwrap();
    assert_eq!(request(&r, 0, 6, 2048, true), (S_OK, 2049));
    let mut got = vec![0u8; 2048];
    r.m.read(Ipa::new(BUF), &mut got).unwrap();
    assert_eq!(&got[..512], &img[6 * 512..7 * 512]);
    assert!(got[512..1536].iter().all(|&b| b == 0x5a));
    assert_eq!(&got[1536..], &img[9 * 512..10 * 512]);
}

#[test]
fn out_of_range_and_partial_sectors_are_io_errors() {
    let r = rig(CopiedDisk::new(&image(8)), false);
    assert_eq!(
        request(&r, 0, 8, 512, true),
        (S_IOERR, 1),
        "one past the end"
    );
    assert_eq!(
        request(&r, 0, 7, 1024, true),
        (S_IOERR, 1),
        "straddles the end"
    );
    assert_eq!(
        request(&r, 0, u64::MAX / 256, 512, true),
        (S_IOERR, 1),
        "sector overflow"
    );
    assert_eq!(
        request(&r, 0, 0, 100, true),
        (S_IOERR, 1),
        "not whole sectors"
    );
    assert_eq!(request(&r, 1, 8, 512, false), (S_IOERR, 1));
    assert_eq!(request(&r, 0, 7, 512, true), (S_OK, 513), "the last sector");
    assert_eq!(
        r.t.device()
            .stats()
            .errors
            .load(core::sync::atomic::Ordering::Relaxed),
        5
    );
}

#[test]
fn unknown_types_are_unsupported_and_get_id_answers_the_serial() {
    let r = rig(ReadOnlyDisk::new(image(8)), true);
    assert_eq!(request(&r, 99, 0, 0, false), (S_UNSUPP, 1));
    assert_eq!(request(&r, 8, 0, 20, true), (S_OK, 21));
    let mut id = [0u8; 20];
    r.m.read(Ipa::new(BUF), &mut id).unwrap();
    assert_eq!(&id[..14], b"kestrel-disk-0");
    assert!(id[14..].iter().all(|&b| b == 0));
}

#[test]
fn data_in_the_wrong_direction_is_an_io_error() {
    let r = rig(CopiedDisk::new(&image(8)), false);
    // A read whose data buffer is device-readable.
    assert_eq!(request(&r, 0, 0, 512, false), (S_IOERR, 1));
    // A write whose data buffer is device-writable (so it sits before the status).
    assert_eq!(request(&r, 1, 0, 512, true), (S_IOERR, 1));
}

#[test]
fn headers_and_data_split_across_descriptors_any_way_work() {
    let img = image(8);
    let r = rig(ReadOnlyDisk::new(img.clone()), true);
    let mut drv = FakeDriverQueue::new(&*r.m, layout());
    let mut hdr = [0u8; 16];
    hdr[8] = 2; // sector 2
    r.m.write(Ipa::new(HDR), &hdr).unwrap();
    // Header in two pieces; data and status in one writable buffer.
    drv.set_desc(0, HDR, 5, F_NEXT, 1);
    drv.set_desc(1, HDR + 5, 11, F_NEXT, 2);
    drv.set_desc(2, BUF, 513, F_WRITE, 0);
    drv.publish(0);
    wr(&r.t, reg::QUEUE_NOTIFY, 0);
    assert_eq!(drv.take_used(), vec![(0, 513)]);
    let mut got = vec![0u8; 513];
    r.m.read(Ipa::new(BUF), &mut got).unwrap();
    assert_eq!(&got[..512], &img[1024..1536]);
    assert_eq!(got[512], S_OK);
}

#[test]
fn malformed_requests_are_dropped_or_failed_and_nothing_leaks() {
    let r = rig(ReadOnlyDisk::new(image(8)), true);
    let mut drv = FakeDriverQueue::new(&*r.m, layout());
    // No writable byte at all: returned with length 0.
    drv.set_desc(0, HDR, 16, 0, 0);
    drv.publish(0);
    // A short header: IOERR in the status byte.
    drv.set_desc(1, HDR, 8, F_NEXT, 2);
    drv.set_desc(2, STATUS, 1, F_WRITE, 0);
    drv.publish(1);
    // A descriptor outside RAM: dropped.
    drv.set_desc(3, 0x1000, 16, F_NEXT, 4);
    drv.set_desc(4, STATUS, 1, F_WRITE, 0);
    drv.publish(3);
    wr(&r.t, reg::QUEUE_NOTIFY, 0);
    assert_eq!(drv.take_used(), vec![(0, 0), (1, 1), (3, 0)]);
    let mut st = [0u8];
    r.m.read(Ipa::new(STATUS), &mut st).unwrap();
    assert_eq!(st[0], S_IOERR);
    assert_eq!(r.t.signals().bad.count(BadInput::BadChain), 1);
    assert_eq!(r.t.signals().bad.count(BadInput::BadRequest), 2);
    assert_eq!(rd(&r.t, reg::STATUS), 0xf, "the device carries on");
    assert_guards_intact(&r.phys, 1);
}

#[test]
fn requests_made_available_before_driver_ok_are_served_at_driver_ok() {
    let phys = arena(1);
    let m = vm(&phys, 0);
    let (_irq, s) = signals();
    let t = VirtioMmio::new(
        BlkDevice::new(
            m.clone(),
            ReadOnlyDisk::new(image(8)),
            true,
            b"x",
            s.clone(),
        ),
        s,
    );
    let mut drv = FakeDriverQueue::new(&*m, layout());
    let mut hdr = [0u8; 16];
    hdr[0] = 4; // flush
    m.write(Ipa::new(HDR), &hdr).unwrap();
    drv.set_desc(0, HDR, 16, F_NEXT, 1);
    drv.set_desc(1, STATUS, 1, F_WRITE, 0);
    drv.publish(0);
    // Notified before DRIVER_OK: dropped...
    wr(&t, reg::QUEUE_NOTIFY, 0);
    assert_eq!(drv.used_idx(), 0);
    // ...and picked up when the driver sets DRIVER_OK (linux_init resets, so do it by hand).
    wr(&t, reg::STATUS, 3);
    wr(&t, reg::DRIVER_FEATURES_SEL, 1);
    wr(&t, reg::DRIVER_FEATURES, 1);
    wr(&t, reg::STATUS, 0xb);
    let l = layout();
    wr(&t, reg::QUEUE_NUM, 16);
    wr(&t, reg::QUEUE_DESC_LOW, l.desc.as_u64() as u32);
    wr(&t, reg::QUEUE_DRIVER_LOW, l.avail.as_u64() as u32);
    wr(&t, reg::QUEUE_DEVICE_LOW, l.used.as_u64() as u32);
    wr(&t, reg::QUEUE_READY, 1);
    wr(&t, reg::STATUS, 0xf);
    assert_eq!(drv.take_used(), vec![(0, 1)]);
}

#[test]
fn a_reset_stops_the_device_using_the_queue() {
    let r = rig(ReadOnlyDisk::new(image(8)), true);
    let mut drv = FakeDriverQueue::new(&*r.m, layout());
    wr(&r.t, reg::STATUS, 0);
    drv.set_desc(0, HDR, 16, F_NEXT, 1);
    drv.set_desc(1, STATUS, 1, F_WRITE, 0);
    drv.publish(0);
    let before = r.phys.snapshot();
    wr(&r.t, reg::QUEUE_NOTIFY, 0);
    assert_eq!(
        r.phys.snapshot(),
        before,
        "no access to guest memory after reset"
    );
}

#[test]
fn the_config_space_describes_the_disk() {
    let r = rig(ReadOnlyDisk::new(image(10)), true);
    let c = |off, w| cfg_read(&r.t, off, w).unwrap();
    assert_eq!(c(0, AccessWidth::Word), 10);
    assert_eq!(c(8, AccessWidth::Word), u64::from(SIZE_MAX));
    assert_eq!(c(12, AccessWidth::Word), u64::from(SEG_MAX));
    assert_eq!(c(20, AccessWidth::Word), 512);
    // A disk whose size is not whole sectors hides the partial tail.
    let r = rig(ReadOnlyDisk::new(vec![0u8; 1000]), true);
    assert_eq!(cfg_read(&r.t, 0, AccessWidth::Word).unwrap(), 1);
}

/// Dirty logging: what the device writes into guest RAM (the data of a disk read, the status
/// byte, the used ring) bypasses stage 2, so its memory marks it in the VM's log itself.
#[test]
fn a_running_dirty_log_sees_every_page_the_device_writes() {
    let img = image(64);
    let r = rig(ReadOnlyDisk::new(img.clone()), true);
    // The driver writes through a second view of the same RAM, as a guest's own writes go
    // through stage 2 (its faults mark them): only the device's writes reach this log.
    let guest = vm(&r.phys, 0);
    let submit = |buf: u64, len: u32| {
        let mut drv = FakeDriverQueue::new_running(&*guest, layout());
        let _ = drv.take_used();
        let mut hdr = [0u8; 16];
        hdr[8..].copy_from_slice(&2u64.to_le_bytes()); // VIRTIO_BLK_T_IN, sector 2
        guest.write(Ipa::new(HDR), &hdr).unwrap();
        guest.write(Ipa::new(STATUS), &[0xee]).unwrap();
        drv.set_desc(0, HDR, 16, F_NEXT, 1);
        drv.set_desc(1, buf, len, F_NEXT | F_WRITE, 2);
        drv.set_desc(2, STATUS, 1, F_WRITE, 0);
        drv.publish(0);
        let before = r.phys.snapshot();
        wr(&r.t, reg::QUEUE_NOTIFY, 0);
        assert_eq!(drv.take_used().len(), 1);
        changed_pages(&before, &r.phys.snapshot(), 0)
    };
    // No log running: nothing is marked.
    submit(BUF, 512);
    assert!(!r.m.dirty().is_dirty(Ipa::new(BUF)));

    r.m.dirty().start();
    // Three sectors across a page boundary.
    let written = submit(BUF + 0x1e00, 3 * 512);
    r.m.dirty().stop();
    let q_page = Q & !0xfff;
    for page in [BUF + 0x1000, BUF + 0x2000, STATUS, q_page] {
        assert!(written.contains(&page), "{page:#x} written by the device");
    }
    for page in &written {
        assert!(
            r.m.dirty().is_dirty(Ipa::new(*page)),
            "page {page:#x} written by the device but not in the log"
        );
    }
    let mut got = vec![0u8; 3 * 512];
    r.m.read(Ipa::new(BUF + 0x1e00), &mut got).unwrap();
    assert_eq!(got, img[2 * 512..5 * 512]);
    // Stopped: later writes are not marked, what was marked stays for the merge.
    submit(BUF + 0x8000, 512);
    assert!(!r.m.dirty().is_dirty(Ipa::new(BUF + 0x8000)));
    assert!(r.m.dirty().is_dirty(Ipa::new(STATUS)));
}

/// A guest that names one large read in every slot of the available ring cannot make one
/// notification (one exit, interrupts masked at EL2) copy all of it: the notification moves
/// at most the data budget plus one request and defers the rest, which the runtime's later
/// passes (`run_deferred`) finish, one budget each; every slot is completed exactly once.
#[test]
fn one_notification_moves_a_bounded_amount_of_data_and_defers_the_rest() {
    const BIG_RAM: u64 = 6 << 20;
    const BIG_BUF: u64 = RAM + (1 << 20);
    const REQ: u32 = 4 << 20;
    const SLOTS: usize = 16;
    let budget = NOTIFY_DATA_BUDGET;
    let phys = FakePhys::new(
        crate::addr::PhysAddr::new(PHYS),
        (GUARD + BIG_RAM + GUARD) as usize,
    );
    let m = fake_ram(&phys, &[(RAM, BIG_RAM, PHYS + GUARD)]);
    let img: Vec<u8> = (0..REQ).map(|i| (i / 512) as u8 ^ (i as u8)).collect();
    let (irq, s) = signals();
    let t = VirtioMmio::new(
        BlkDevice::new(
            m.clone(),
            ReadOnlyDisk::new(img.clone()),
            true,
            b"big",
            s.clone(),
        ),
        s,
    );
    let mut drv = FakeDriverQueue::new(&*m, layout());
    assert_eq!(linux_init(&t, LINUX_BLK, &[Some(layout())]), 0xf);
    m.write(Ipa::new(HDR), &[0u8; 16]).unwrap(); // VIRTIO_BLK_T_IN, sector 0
    drv.set_desc(0, HDR, 16, F_NEXT, 1);
    drv.set_desc(1, BIG_BUF, REQ, F_NEXT | F_WRITE, 2);
    drv.set_desc(2, STATUS, 1, F_WRITE, 0);
    for _ in 0..SLOTS {
        drv.publish(0);
    }
    let bytes = || {
        t.device()
            .stats()
            .bytes_read
            .load(core::sync::atomic::Ordering::Relaxed)
    };

    wr(&t, reg::QUEUE_NOTIFY, 0);
    let per_pass = budget.div_ceil(u64::from(REQ)) as usize;
    let mut done = drv.take_used();
    assert_eq!(
        done.len(),
        per_pass,
        "one notification completes only the budgeted part"
    );
    assert!(bytes() < budget + u64::from(REQ));
    assert!(t.has_deferred(), "the rest is deferred");
    assert!(irq.level(), "the finished part is signalled at once");

    let mut passes = 1;
    while t.has_deferred() {
        let before = bytes();
        t.run_deferred();
        assert!(bytes() - before < budget + u64::from(REQ));
        done.extend(drv.take_used());
        passes += 1;
        assert!(passes <= SLOTS, "deferred passes make progress");
    }
    assert_eq!(passes, SLOTS.div_ceil(per_pass));
    assert_eq!(done, vec![(0, REQ + 1); SLOTS], "each slot completed once");
    assert_eq!(bytes(), SLOTS as u64 * u64::from(REQ));
    let mut got = vec![0u8; REQ as usize];
    m.read(Ipa::new(BIG_BUF), &mut got).unwrap();
    assert!(got == img, "the data read");
    let mut st = [0xeeu8];
    m.read(Ipa::new(STATUS), &mut st).unwrap();
    assert_eq!(st[0], S_OK);
    // Nothing is left to complete twice.
    wr(&t, reg::QUEUE_NOTIFY, 0);
    t.run_deferred();
    assert!(drv.take_used().is_empty());
    assert_eq!(bytes(), SLOTS as u64 * u64::from(REQ));
}
