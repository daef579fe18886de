use super::*;
use crate::addr::Ipa;
use crate::virtio::mem::GuestMemory;
use crate::virtio::net::NetDevice;
use crate::virtio::queue::QueueLayout;
use crate::virtio::switch::*;

const RXQ: u64 = RAM + 0x1_0000;
pub(super) const TXQ: u64 = RAM + 0x2_0000;
pub(super) const TXBUF: u64 = RAM + 0x3_0000;
/// RX buffers: 16 of RX_BUF bytes from here.
const RXBUF: u64 = RAM + 0x4_0000;
pub(super) const QSIZE: u16 = 16;

pub(super) type Dev = NetDevice<Arc<FakeRam>>;

pub(super) struct Vm {
    pub(super) m: Arc<FakeRam>,
    pub(super) irq: Arc<RecordingIrq>,
    pub(super) t: Arc<VirtioMmio<Dev>>,
    rx_posted: u16,
}

pub(super) fn rx_layout() -> QueueLayout {
    FakeDriverQueue::<FakeRam>::layout_at(RXQ, QSIZE)
}
pub(super) fn tx_layout() -> QueueLayout {
    FakeDriverQueue::<FakeRam>::layout_at(TXQ, QSIZE)
}

pub(super) fn mac(n: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, n]
}

pub(super) fn new_vm(
    phys: &Arc<FakePhys>,
    n: usize,
    sw: &Arc<Switch<Arc<FakeRam>>>,
    want: u64,
) -> Vm {
    new_vm_with(phys, n, sw, want, None, None)
}

fn new_vm_mtu(
    phys: &Arc<FakePhys>,
    n: usize,
    sw: &Arc<Switch<Arc<FakeRam>>>,
    want: u64,
    mtu: Option<u16>,
) -> Vm {
    new_vm_with(phys, n, sw, want, mtu, None)
}

/// A VM with one port on `sw`; with `handoff`, its transmit queue goes to that poller.
pub(super) fn new_vm_with(
    phys: &Arc<FakePhys>,
    n: usize,
    sw: &Arc<Switch<Arc<FakeRam>>>,
    want: u64,
    mtu: Option<u16>,
    handoff: Option<&'static dyn crate::virtio::poll::Handoff>,
) -> Vm {
    let m = vm(phys, n);
    let (irq, s) = signals();
    let port = sw.attach(mac(n as u8 + 1), m.clone(), s.clone()).unwrap();
    let mut dev = NetDevice::new(m.clone(), sw.clone(), port, s.clone(), mtu);
    if let Some(h) = handoff {
        dev = dev.with_handoff(h);
    }
    let t = Arc::new(VirtioMmio::new(dev, s));
    FakeDriverQueue::new(&*m, rx_layout());
    FakeDriverQueue::new(&*m, tx_layout());
    assert_eq!(
        linux_init(&t, want, &[Some(rx_layout()), Some(tx_layout())]),
        0xf
    );
    Vm {
        m,
        irq,
        t,
        rx_posted: 0,
    }
}

fn rx_addr(i: u32) -> u64 {
    RXBUF + u64::from(i) * 0x1000
}

impl Vm {
    /// Posts `count` RX buffers of `len` bytes, one descriptor each.
    pub(super) fn post_rx(&mut self, count: u16, len: u32) {
        let mut d = FakeDriverQueue::new_running(&*self.m, rx_layout());
        for _ in 0..count {
            let i = self.rx_posted % QSIZE;
            d.set_desc(i, rx_addr(u32::from(i)), len, F_WRITE, 0);
            d.publish(i);
            self.rx_posted += 1;
        }
    }
    /// Sends `frame` with header `hdr`: the header in one descriptor, the frame in two.
    fn send(&self, hdr: NetHdr, frame: &[u8]) {
        let mut d = FakeDriverQueue::new_running(&*self.m, tx_layout());
        let _ = d.take_used();
        self.m.write(Ipa::new(TXBUF), &hdr.to_bytes()).unwrap();
        self.m.write(Ipa::new(TXBUF + 0x100), frame).unwrap();
        let half = (frame.len() / 2) as u32;
        d.set_desc(0, TXBUF, 12, F_NEXT, 1);
        d.set_desc(1, TXBUF + 0x100, half, F_NEXT, 2);
        d.set_desc(
            2,
            TXBUF + 0x100 + u64::from(half),
            frame.len() as u32 - half,
            0,
            0,
        );
        d.publish(0);
        wr(&self.t, reg::QUEUE_NOTIFY, 1);
        assert_eq!(
            d.take_used(),
            vec![(0, 0)],
            "the TX chain always comes back"
        );
    }
    /// Received frames: (header, frame bytes), from the used RX ring.
    pub(super) fn received(&self) -> Vec<(NetHdr, Vec<u8>)> {
        let mut d = FakeDriverQueue::new_running(&*self.m, rx_layout());
        let used = d.take_used();
        let mut out = Vec::new();
        let mut i = 0;
        while i < used.len() {
            let (id, len) = used[i];
            let addr = rx_addr(id);
            let mut first = vec![0u8; len as usize];
            self.m.read(Ipa::new(addr), &mut first).unwrap();
            let mut h = [0u8; 12];
            h.copy_from_slice(&first[..12]);
            let hdr = NetHdr::parse(&h);
            let mut frame = first[12..].to_vec();
            for _ in 1..hdr.num_buffers.max(1) {
                i += 1;
                let (id, len) = used[i];
                let addr = rx_addr(id);
                let mut more = vec![0u8; len as usize];
                self.m.read(Ipa::new(addr), &mut more).unwrap();
                frame.extend_from_slice(&more);
            }
            out.push((hdr, frame));
            i += 1;
        }
        out
    }
    pub(super) fn counters(&self) -> PortCountersSnapshot {
        self.t.device().port().counters().snapshot()
    }
}

pub(super) fn frame(dst: [u8; 6], src: [u8; 6], payload_len: usize) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend((0..payload_len).map(|i| (i * 7) as u8));
    f
}

pub(super) const BCAST: [u8; 6] = [0xff; 6];

#[test]
fn broadcast_reaches_every_other_port_of_the_switch_only() {
    let phys = arena(3);
    let lan0 = Arc::new(Switch::new("lan0"));
    let lan1 = Arc::new(Switch::new("lan1"));
    let mut a = new_vm(&phys, 0, &lan0, LINUX_NET);
    let mut b = new_vm(&phys, 1, &lan0, LINUX_NET);
    let mut c = new_vm(&phys, 2, &lan1, LINUX_NET);
    for v in [&mut a, &mut b, &mut c] {
        v.post_rx(4, 2048);
    }
    let f = frame(BCAST, mac(1), 100);
    a.send(NetHdr::default(), &f);
    let got = b.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, f);
    assert_eq!(got[0].0.num_buffers, 1);
    assert!(b.irq.level(), "B's RX interrupt");
    assert!(a.received().is_empty(), "never back to the sender");
    assert!(c.received().is_empty(), "another switch sees nothing");
    assert_eq!(c.counters(), PortCountersSnapshot::default());
    assert_eq!(a.counters().tx_frames, 1);
    assert_eq!(a.counters().tx_bytes, f.len() as u64);
    assert_eq!(b.counters().rx_frames, 1);
    assert_guards_intact(&phys, 3);
}

#[test]
fn unicast_goes_to_the_learned_port_only() {
    let phys = arena(3);
    let lan0 = Arc::new(Switch::new("lan0"));
    let mut a = new_vm(&phys, 0, &lan0, LINUX_NET);
    let mut b = new_vm(&phys, 1, &lan0, LINUX_NET);
    let mut c = new_vm(&phys, 2, &lan0, LINUX_NET);
    for v in [&mut a, &mut b, &mut c] {
        v.post_rx(8, 2048);
    }
    // A MAC behind B that is not B's own (a bridge or container in B): unknown at first,
    // flooded to B and C.
    let behind_b = [0x06, 0, 0, 0, 0, 2];
    a.send(NetHdr::default(), &frame(behind_b, mac(1), 60));
    assert_eq!(b.received().len(), 1);
    assert_eq!(c.received().len(), 1);
    // B answers from it: A's MAC is known (a port's own), only A gets it; the MAC is learned.
    b.send(NetHdr::default(), &frame(mac(1), behind_b, 60));
    assert_eq!(a.received().len(), 1);
    assert_eq!(c.received().len(), 1, "C saw nothing new");
    // Now A to it is unicast to B only.
    a.send(NetHdr::default(), &frame(behind_b, mac(1), 60));
    assert_eq!(b.received().len(), 2);
    assert_eq!(c.received().len(), 1);
    // A port's configured MAC is known before the port ever sent.
    a.send(NetHdr::default(), &frame(mac(3), mac(1), 60));
    assert_eq!(c.received().len(), 2);
    assert_eq!(b.received().len(), 2);
}

#[test]
fn a_receiver_without_buffers_drops_and_the_sender_carries_on() {
    let phys = arena(2);
    let lan0 = Arc::new(Switch::new("lan0"));
    let a = new_vm(&phys, 0, &lan0, LINUX_NET);
    let mut b = new_vm(&phys, 1, &lan0, LINUX_NET);
    for _ in 0..3 {
        a.send(NetHdr::default(), &frame(BCAST, mac(1), 60));
    }
    assert_eq!(b.counters().rx_drops, 3);
    assert_eq!(a.counters().tx_frames, 3);
    b.post_rx(1, 2048);
    a.send(NetHdr::default(), &frame(BCAST, mac(1), 60));
    assert_eq!(b.received().len(), 1);
}

#[test]
fn mergeable_buffers_carry_a_large_segment_in_several_chains() {
    let phys = arena(2);
    let lan0 = Arc::new(Switch::new("lan0"));
    let a = new_vm(&phys, 0, &lan0, LINUX_NET);
    let mut b = new_vm(&phys, 1, &lan0, LINUX_NET);
    b.post_rx(8, 1500);
    // A 9000-byte TCP segment with a partial checksum, sent with TSO.
    let f = frame(BCAST, mac(1), 9000 - 14);
    let hdr = NetHdr {
        flags: HDR_F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
        num_buffers: 0,
    };
    a.send(hdr, &f);
    let got = b.received();
    assert_eq!(got.len(), 1);
    let (h, data) = &got[0];
    assert_eq!(data, &f);
    assert_eq!(h.num_buffers, 7, "9012 bytes in 1500-byte buffers");
    assert_eq!((h.gso_type, h.gso_size, h.hdr_len), (GSO_TCPV4, 1448, 54));
    assert_eq!(
        (h.flags, h.csum_start, h.csum_offset),
        (HDR_F_NEEDS_CSUM, 34, 16)
    );
}

/// A frame in several mergeable buffers is published with one store of the used index: a
/// driver that looks at the used ring while the device works never sees the first buffer
/// (which announces `num_buffers`) without the others (Linux drops such a frame: "rx error:
/// N buffers out of M missing").
#[test]
fn a_frame_in_mergeable_buffers_moves_the_used_index_once() {
    let phys = arena(2);
    let lan0 = Arc::new(Switch::new("lan0"));
    let a = new_vm(&phys, 0, &lan0, LINUX_NET);
    let mut b = new_vm(&phys, 1, &lan0, LINUX_NET);
    b.post_rx(8, 1500);
    let (used_idx_pa, _) = b.m.piece(rx_layout().used + 2, 2, false).unwrap();
    phys.watch_u16(used_idx_pa);
    let hdr = NetHdr {
        flags: HDR_F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
        num_buffers: 0,
    };
    a.send(hdr, &frame(BCAST, mac(1), 6000));
    assert_eq!(
        phys.watched_stores(),
        [5],
        "6026 bytes in 1500-byte buffers, one store"
    );
    assert_eq!(b.received()[0].0.num_buffers, 5);
}

#[test]
fn without_mergeable_buffers_a_frame_must_fit_one_chain() {
    let phys = arena(2);
    let lan0 = Arc::new(Switch::new("lan0"));
    let a = new_vm(&phys, 0, &lan0, LINUX_NET);
    let mut b = new_vm(&phys, 1, &lan0, LINUX_NET & !features::NET_MRG_RXBUF);
    b.post_rx(4, 1000);
    a.send(NetHdr::default(), &frame(BCAST, mac(1), 1400));
    assert_eq!(b.counters().rx_drops, 1);
    // The buffer was not consumed: a small frame still gets it.
    a.send(NetHdr::default(), &frame(BCAST, mac(1), 100));
    let got = b.received();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].0.num_buffers, 1,
        "num_buffers is 1 without MRG_RXBUF"
    );
}

#[test]
fn a_partial_checksum_is_completed_for_a_receiver_without_guest_csum() {
    let phys = arena(2);
    let lan0 = Arc::new(Switch::new("lan0"));
    let a = new_vm(&phys, 0, &lan0, LINUX_NET);
    let plain = LINUX_NET
        & !(features::NET_GUEST_CSUM | features::NET_GUEST_TSO4 | features::NET_GUEST_TSO6);
    let mut b = new_vm(&phys, 1, &lan0, plain);
    b.post_rx(4, 2048);
    let mut f = frame(BCAST, mac(1), 200);
    // The checksum field (at 34 + 16) holds the pseudo-header sum, as Linux leaves it.
    f[50] = 0x12;
    f[51] = 0x34;
    let hdr = NetHdr {
        flags: HDR_F_NEEDS_CSUM,
        csum_start: 34,
        csum_offset: 16,
        ..NetHdr::default()
    };
    a.send(hdr, &f);
    let got = b.received();
    assert_eq!(got.len(), 1);
    let (h, data) = &got[0];
    assert_eq!(h.flags, 0);
    // The final checksum verifies: the ones'-complement sum of the pseudo-header (0x1234
    // here) and the received segment is 0xffff.
    let mut sum: u32 = 0x1234;
    for c in data[34..].chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    assert_eq!(sum, 0xffff);
    assert_eq!(&data[..34], &f[..34]);
    assert_eq!(&data[52..], &f[52..]);
}

#[test]
fn a_segment_for_a_receiver_without_tso_is_an_offload_drop() {
    let phys = arena(2);
    let lan0 = Arc::new(Switch::new("lan0"));
    let a = new_vm(&phys, 0, &lan0, LINUX_NET);
    let mut b = new_vm(&phys, 1, &lan0, LINUX_NET & !features::NET_GUEST_TSO4);
    b.post_rx(8, 4096);
    let hdr = NetHdr {
        flags: HDR_F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
        num_buffers: 0,
    };
    a.send(hdr, &frame(BCAST, mac(1), 3000));
    assert_eq!(b.counters().offload_drops, 1);
    assert!(b.received().is_empty());
}

#[test]
fn the_offload_offer_is_what_every_other_port_accepts() {
    let phys = arena(3);
    let lan0 = Arc::new(Switch::new("lan0"));
    let a = new_vm(&phys, 0, &lan0, LINUX_NET);
    let tx = features::NET_CSUM | features::NET_HOST_TSO4 | features::NET_HOST_TSO6;
    assert_eq!(
        a.t.negotiated_features() & tx,
        tx,
        "alone, A gets every offload"
    );
    // B negotiates without GUEST_TSO4.
    let b = new_vm(&phys, 1, &lan0, LINUX_NET & !features::NET_GUEST_TSO4);
    assert_eq!(b.t.negotiated_features() & tx, tx, "A accepts everything");
    // A's next driver session is offered no TSO4; CSUM and TSO6 stay.
    let a_port = a.t.device().port().id();
    assert_eq!(
        lan0.tx_offload_offer(a_port),
        features::NET_CSUM | features::NET_HOST_TSO6
    );
    FakeDriverQueue::new(&*a.m, rx_layout());
    FakeDriverQueue::new(&*a.m, tx_layout());
    linux_init(&a.t, LINUX_NET, &[Some(rx_layout()), Some(tx_layout())]);
    assert_eq!(
        a.t.negotiated_features() & tx,
        features::NET_CSUM | features::NET_HOST_TSO6
    );
    // A port that has not negotiated counts as accepting everything.
    wr(&b.t, reg::STATUS, 0);
    assert_eq!(lan0.tx_offload_offer(a_port), tx);
}

#[test]
fn bad_frames_are_dropped_and_counted_on_the_sender() {
    let phys = arena(2);
    let lan0 = Arc::new(Switch::new("lan0"));
    let a = new_vm(
        &phys,
        0,
        &lan0,
        LINUX_NET & !features::NET_CSUM & !features::NET_HOST_TSO4 & !features::NET_HOST_TSO6,
    );
    let mut b = new_vm(&phys, 1, &lan0, LINUX_NET);
    b.post_rx(8, 4096);
    let f = frame(BCAST, mac(1), 100);
    // NEEDS_CSUM without CSUM negotiated; TSO without HOST_TSO4; UDP GSO; a checksum
    // field past the frame; a frame shorter than an Ethernet header.
    a.send(
        NetHdr {
            flags: HDR_F_NEEDS_CSUM,
            csum_start: 14,
            csum_offset: 6,
            ..NetHdr::default()
        },
        &f,
    );
    a.send(
        NetHdr {
            gso_type: GSO_TCPV4,
            gso_size: 1000,
            ..NetHdr::default()
        },
        &f,
    );
    a.send(
        NetHdr {
            gso_type: 3,
            gso_size: 1000,
            ..NetHdr::default()
        },
        &f,
    );
    a.send(
        NetHdr {
            flags: 0x80,
            ..NetHdr::default()
        },
        &f,
    );
    a.send(NetHdr::default(), &f[..10]);
    assert_eq!(a.counters().tx_drops, 5);
    assert_eq!(a.counters().tx_frames, 0);
    assert!(b.received().is_empty());
    assert_eq!(a.t.signals().bad.count(BadInput::BadRequest), 5);
}

#[test]
fn a_detached_port_gets_nothing_and_its_memory_is_not_touched() {
    let phys = arena(2);
    let lan0 = Arc::new(Switch::new("lan0"));
    let a = new_vm(&phys, 0, &lan0, LINUX_NET);
    let mut b = new_vm(&phys, 1, &lan0, LINUX_NET);
    b.post_rx(4, 2048);
    b.t.device().detach();
    assert_eq!(lan0.ports().len(), 1);
    let before = phys.snapshot();
    a.send(NetHdr::default(), &frame(BCAST, mac(1), 60));
    let after = phys.snapshot();
    let b_ram = (vm_pa(1) - PHYS) as usize..(vm_pa(1) - PHYS + RAM_SIZE) as usize;
    assert_eq!(before[b_ram.clone()], after[b_ram], "B's RAM untouched");
    // The MAC can be used by a new port now.
    let (_irq, s) = signals();
    assert!(lan0.attach(mac(2), b.m.clone(), s).is_ok());
}

#[test]
fn attach_refuses_a_duplicate_mac_and_a_full_switch() {
    let phys = arena(1);
    let m = vm(&phys, 0);
    let sw: Switch<Arc<FakeRam>> = Switch::new("lan0");
    for i in 0..MAX_PORTS {
        let (_i, s) = signals();
        sw.attach([2, 0, 0, 0, 1, i as u8], m.clone(), s).unwrap();
    }
    let (_i, s) = signals();
    assert_eq!(
        sw.attach([2, 0, 0, 0, 2, 0], m.clone(), s.clone()).err(),
        Some(AttachError::Full)
    );
    let sw2: Switch<Arc<FakeRam>> = Switch::new("lan1");
    sw2.attach(mac(1), m.clone(), s.clone()).unwrap();
    assert_eq!(
        sw2.attach(mac(1), m.clone(), s).err(),
        Some(AttachError::DuplicateMac(mac(1)))
    );
}

#[test]
fn the_config_space_has_the_mac_and_link_up() {
    let phys = arena(1);
    let lan0 = Arc::new(Switch::new("lan0"));
    let a = new_vm(&phys, 0, &lan0, LINUX_NET);
    let mac_lo = cfg_read(&a.t, 0, AccessWidth::Word).unwrap();
    assert_eq!(mac_lo.to_le_bytes()[..4], mac(1)[..4]);
    assert_eq!(cfg_read(&a.t, 5, AccessWidth::Byte).unwrap(), 1);
    assert_eq!(
        cfg_read(&a.t, 6, AccessWidth::Half).unwrap(),
        1,
        "VIRTIO_NET_S_LINK_UP"
    );
    assert_eq!(
        cfg_read(&a.t, 8, AccessWidth::Half).unwrap(),
        1,
        "one queue pair"
    );
}

#[test]
fn feature_dependencies_are_enforced() {
    let phys = arena(1);
    let lan0 = Arc::new(Switch::new("lan0"));
    let a = new_vm(&phys, 0, &lan0, LINUX_NET);
    // GUEST_TSO4 without GUEST_CSUM.
    let st = linux_init(&a.t, LINUX_NET & !features::NET_GUEST_CSUM, &[None, None]);
    assert_eq!(st & 8, 0);
    // HOST_TSO4 without CSUM.
    let st = linux_init(&a.t, LINUX_NET & !features::NET_CSUM, &[None, None]);
    assert_eq!(st & 8, 0);
}

#[test]
fn frames_over_the_mtu_or_the_maximum_are_dropped() {
    let phys = arena(2);
    let lan0 = Arc::new(Switch::new("lan0"));
    let a = new_vm_mtu(&phys, 0, &lan0, LINUX_NET, Some(1500));
    let mut b = new_vm(&phys, 1, &lan0, LINUX_NET);
    b.post_rx(8, 4096);
    assert_eq!(cfg_read(&a.t, 10, AccessWidth::Half).unwrap(), 1500);
    a.send(NetHdr::default(), &frame(BCAST, mac(1), 1500 + 4));
    a.send(NetHdr::default(), &frame(BCAST, mac(1), 1500 + 5));
    assert_eq!(
        a.counters().tx_frames,
        1,
        "1500 + Ethernet header + VLAN tag is the limit"
    );
    assert_eq!(a.counters().tx_drops, 1);
    // A segment larger than any IP packet, even with TSO.
    let hdr = NetHdr {
        flags: HDR_F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
        num_buffers: 0,
    };
    a.send(hdr, &frame(BCAST, mac(1), MAX_FRAME_LEN as usize - 14));
    assert_eq!(a.counters().tx_frames, 2);
    a.send(hdr, &frame(BCAST, mac(1), MAX_FRAME_LEN as usize - 13));
    assert_eq!(a.counters().tx_drops, 2);
}

/// Dirty logging: a frame the switch copies into the receiver's buffers, and the receiver's
/// used ring, bypass its stage 2; its memory marks them in its log itself.
#[test]
fn a_received_frame_and_the_used_ring_are_in_the_receivers_dirty_log() {
    let phys = arena(2);
    let lan0 = Arc::new(Switch::new("lan0"));
    let a = new_vm(&phys, 0, &lan0, LINUX_NET);
    let mut b = new_vm(&phys, 1, &lan0, LINUX_NET);
    b.post_rx(4, 4096);
    b.m.dirty().start();
    let before = phys.snapshot();
    // A's driver writes only A's RAM: whatever changes in B's RAM, the switch wrote.
    let f = frame(BCAST, mac(1), 3000);
    a.send(NetHdr::default(), &f);
    let changed = changed_pages(&before, &phys.snapshot(), 1);
    assert!(
        changed.contains(&rx_addr(0)),
        "the frame landed in B's first buffer"
    );
    assert!(changed.contains(&(RXQ & !0xfff)), "B's used ring");
    for page in &changed {
        assert!(
            b.m.dirty().is_dirty(Ipa::new(*page)),
            "page {page:#x} of B written by the switch but not in B's log"
        );
    }
    assert!(
        !a.m.dirty().is_dirty(Ipa::new(TXBUF)),
        "A runs no log: nothing marked"
    );
    assert_eq!(b.received().len(), 1);
}

/// VIRTIO 1.2 §5.1.4.1: once a receiver negotiated `MTU`, the device passes it no `GSO_NONE`
/// frame longer than the MTU plus the Ethernet header (plus 4 for a VLAN tag); such a frame
/// is dropped and counted at the receiver, whatever the sender negotiated.
#[test]
fn a_receiver_with_an_mtu_gets_no_longer_frame() {
    let phys = arena(3);
    let lan0 = Arc::new(Switch::new("lan0"));
    let a = new_vm(&phys, 0, &lan0, LINUX_NET);
    let mut b = new_vm_mtu(&phys, 1, &lan0, LINUX_NET, Some(1500));
    let mut c = new_vm_mtu(&phys, 2, &lan0, LINUX_NET & !features::NET_MTU, Some(1500));
    assert_ne!(b.t.negotiated_features() & features::NET_MTU, 0);
    b.post_rx(8, 4096);
    c.post_rx(8, 4096);
    // One byte over 1500 + 14 (A, without an MTU, may send it).
    let over = frame(BCAST, mac(1), 1501);
    a.send(NetHdr::default(), &over);
    assert_eq!(a.counters().tx_frames, 1);
    assert!(
        b.received().is_empty(),
        "B gets nothing longer than its MTU"
    );
    assert_eq!(b.counters().rx_drops, 1);
    assert_eq!(c.received().len(), 1, "C did not negotiate MTU");
    // Exactly the limit is delivered.
    let limit = frame(BCAST, mac(1), 1500);
    a.send(NetHdr::default(), &limit);
    assert_eq!(
        b.received(),
        vec![(
            NetHdr {
                num_buffers: 1,
                ..NetHdr::default()
            },
            limit
        )]
    );
    // A VLAN-tagged frame may be 4 bytes longer.
    let tagged = |payload: usize| {
        let mut f = Vec::new();
        f.extend_from_slice(&BCAST);
        f.extend_from_slice(&mac(1));
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x05, 0x08, 0x00]);
        f.extend((0..payload).map(|i| i as u8));
        f
    };
    a.send(NetHdr::default(), &tagged(1501));
    assert_eq!(b.counters().rx_drops, 2);
    a.send(NetHdr::default(), &tagged(1500));
    assert_eq!(b.received().len(), 2);
    // A TCP segment (GSO) is not bound by the MTU.
    let tso = NetHdr {
        flags: HDR_F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
        num_buffers: 0,
    };
    a.send(tso, &frame(BCAST, mac(1), 3000));
    assert_eq!(b.received().len(), 3);
    assert_eq!(b.counters().rx_drops, 2);
    assert_eq!(b.counters().rx_frames, 3);
}

/// A port that sends with another port's configured MAC as its source does not take that
/// MAC over: the frame is dropped and counted (port security), and unicast to the MAC still
/// goes to its owner only.
#[test]
fn a_port_cannot_take_over_another_ports_mac() {
    let phys = arena(3);
    let lan0 = Arc::new(Switch::new("lan0"));
    let mut a = new_vm(&phys, 0, &lan0, LINUX_NET);
    let mut b = new_vm(&phys, 1, &lan0, LINUX_NET);
    let mut c = new_vm(&phys, 2, &lan0, LINUX_NET);
    for v in [&mut a, &mut b, &mut c] {
        v.post_rx(8, 2048);
    }
    c.send(NetHdr::default(), &frame(BCAST, mac(2), 60));
    let to_b = frame(mac(2), mac(1), 60);
    a.send(NetHdr::default(), &to_b);
    let got: Vec<_> = b.received().into_iter().map(|(_, f)| f).collect();
    assert_eq!(got, vec![to_b], "B gets A's frame, nothing from C");
    assert!(c.received().is_empty(), "C gets nothing for B");
    assert!(a.received().is_empty());
    assert_eq!(c.counters().tx_drops, 1);
    assert_eq!(c.counters().tx_frames, 0);
}

/// A port that sends from more invented MACs than the table holds makes the switch forget
/// what it learned, not the ports' own MACs: unicast to a port still goes to it alone.
#[test]
fn flooding_the_mac_table_does_not_make_unicast_flood() {
    let phys = arena(3);
    let lan0 = Arc::new(Switch::new("lan0"));
    let mut a = new_vm(&phys, 0, &lan0, LINUX_NET);
    let mut b = new_vm(&phys, 1, &lan0, LINUX_NET);
    let mut c = new_vm(&phys, 2, &lan0, LINUX_NET);
    // B's MAC is known from a frame it sent.
    b.send(NetHdr::default(), &frame(mac(1), mac(2), 60));
    for i in 0..=MAX_LEARNED as u16 {
        let [hi, lo] = i.to_be_bytes();
        c.send(
            NetHdr::default(),
            &frame(BCAST, [0x06, 0, 0, 1, hi, lo], 60),
        );
    }
    assert_eq!(c.counters().tx_frames, MAX_LEARNED as u64 + 1);
    for v in [&mut a, &mut b, &mut c] {
        v.post_rx(8, 2048);
    }
    let to_b = frame(mac(2), mac(1), 60);
    a.send(NetHdr::default(), &to_b);
    let got: Vec<_> = b.received().into_iter().map(|(_, f)| f).collect();
    assert_eq!(got, vec![to_b]);
    assert!(c.received().is_empty(), "C gets nothing for B");
}
