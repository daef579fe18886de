//! The virtual L2 switch: one per `switch` name in the VMs' `[[net]]` entries, one port per
//! virtio-net device on it.
//!
//! Learning bridge: the source MAC of every frame a port sends is learned for that port; a
//! unicast frame to a learned MAC goes to that port only, broadcast, multicast and unknown
//! unicast frames go to every other port. Each port's configured MAC (`vm.toml`) is a static
//! entry: a frame another port sends with it as source is dropped and counted in that
//! sender's `tx_drops` (port security: no VM takes another's address over), and it stays when
//! the learned entries are forgotten ([`MAX_LEARNED`]), so a VM that invents source MACs can
//! make unknown unicast flood, never divert another port's traffic. A receiver that
//! negotiated `MTU` gets no frame without GSO longer than its MTU plus the Ethernet header
//! ([`max_rx_frame_len`], VIRTIO 1.2 §5.1.4.1): dropped, counted in its `rx_drops`.
//!
//! A frame is copied once, from the sender's TX buffers straight into each receiver's RX
//! buffers ([`super::queue::copy_streams`]): no VM's memory is ever shared with or mapped
//! into another, and the switch keeps no frame. A receiver with no free RX buffer (or
//! buffers too small) drops the frame and counts it; the sender is never held up by a slow
//! receiver.
//!
//! # Offloads
//! A sender may hand over partially checksummed frames (`CSUM`) and 64 KiB TCP segments
//! (`HOST_TSO4/6`) only if the receivers take them as they are (`GUEST_CSUM`,
//! `GUEST_TSO4/6`). The offer a port gets when its driver resets is what every other port of
//! the switch accepts: a port that has negotiated counts with what it negotiated, a port that
//! has not yet counts as accepting everything the device offers (every port is this same
//! device, and Linux accepts them all). A port that negotiates later with less is still
//! served exactly: a partial checksum is completed in software on the way to a receiver
//! without `GUEST_CSUM`, and a TCP segment that receiver cannot take is dropped and counted
//! as an offload drop (software segmentation is not implemented); every port reset after
//! that gets the smaller offer.
//!
//! # Locking (see docs/virtio.md)
//! A port's RX side (its receive queue and the handle on its VM's RAM) is behind the port's
//! own lock; the sender's TX side behind the sending device's. A transmitting CPU holds its
//! TX lock and, one at a time, each receiver's RX lock while copying into that receiver. No
//! code holding an RX lock takes any other lock of the switch, so two VMs sending to each
//! other at once cannot deadlock. Interrupts are raised after the locks are released.
//! [`Switch::detach`] takes the port's RX lock and drops the RAM handle: once it returns, no
//! copy into that VM is in progress or can start, and its RAM may be freed.
#![forbid(unsafe_code)]

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use spin::{Mutex, RwLock};

use super::mem::GuestMemory;
use super::queue::{Buffers, Queue, QueueError, copy_streams};
use super::{BadInput, DeviceSignals, INT_USED_BUFFER, features as f};

/// Most ports on one switch (port sets are 64-bit masks).
pub const MAX_PORTS: usize = 64;
/// Most MACs the switch learns; when full it forgets the learned ones and learns again
/// (bounded memory whatever source addresses a guest invents; unknown MACs are flooded
/// meanwhile). The ports' configured MACs are kept apart and never forgotten.
pub const MAX_LEARNED: usize = 1024;
/// `struct virtio_net_hdr` with `num_buffers` (always this size with VIRTIO_F_VERSION_1,
/// §5.1.6).
pub const NET_HDR_LEN: u64 = 12;
/// Ethernet header (destination, source, EtherType).
pub const ETH_HLEN: u64 = 14;
/// An 802.1Q / 802.1ad VLAN tag.
pub const VLAN_HLEN: u64 = 4;
/// The largest frame (without the virtio header): a 65535-byte IP packet, its Ethernet
/// header and one VLAN tag.
pub const MAX_FRAME_LEN: u64 = 65535 + ETH_HLEN + VLAN_HLEN;

/// A set of ports, bit n = port n.
pub type PortMask = u64;

// virtio_net_hdr flags and GSO types (§5.1.6).
pub const HDR_F_NEEDS_CSUM: u8 = virtio_spec::net::HdrF::NEEDS_CSUM.bits();
pub const GSO_NONE: u8 = virtio_spec::net::HdrGso::None as u8;
pub const GSO_TCPV4: u8 = virtio_spec::net::HdrGso::Tcpv4 as u8;
pub const GSO_TCPV6: u8 = virtio_spec::net::HdrGso::Tcpv6 as u8;
/// The ECN flag of `gso_type`.
pub const GSO_ECN: u8 = virtio_spec::net::HdrGso::Ecn as u8;

/// The longest frame without GSO a receiver that negotiated `mtu` may be given (VIRTIO 1.2
/// §5.1.4.1: "mtu (plus low level ethernet header length)"): the MTU and the Ethernet header,
/// plus the VLAN tag if the frame has one (`tagged`). Linux's virtio_net sizes its receive
/// buffers for `mtu + ETH_HLEN + VLAN_HLEN` whatever the frame, so it takes both.
pub fn max_rx_frame_len(mtu: u16, tagged: bool) -> u64 {
    u64::from(mtu) + ETH_HLEN + if tagged { VLAN_HLEN } else { 0 }
}

/// Whether the EtherType after the MAC addresses is a VLAN tag's (802.1Q or 802.1ad).
fn is_vlan_tpid(ethertype: u16) -> bool {
    matches!(ethertype, 0x8100 | 0x88a8)
}

/// The receive offloads a port can accept (the features that matter to senders).
pub const RX_OFFLOADS: u64 = f::NET_GUEST_CSUM | f::NET_GUEST_TSO4 | f::NET_GUEST_TSO6;

/// Why a port cannot join a switch.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AttachError {
    Full,
    /// Another port of the switch has this MAC.
    DuplicateMac([u8; 6]),
}

/// Per-port counters (for the VM's counters line and the Ctrl-A d dump).
#[derive(Default, Debug)]
pub struct PortCounters {
    pub tx_frames: AtomicU64,
    pub tx_bytes: AtomicU64,
    /// Frames the port sent that the switch refused (malformed, bad offload request).
    pub tx_drops: AtomicU64,
    pub rx_frames: AtomicU64,
    pub rx_bytes: AtomicU64,
    /// Frames for this port dropped: no free RX buffer, buffers too small, port not running.
    pub rx_drops: AtomicU64,
    /// Frames for this port dropped because they need an offload its driver declined.
    pub offload_drops: AtomicU64,
}

/// A snapshot of [`PortCounters`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct PortCountersSnapshot {
    pub tx_frames: u64,
    pub tx_bytes: u64,
    pub tx_drops: u64,
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub rx_drops: u64,
    pub offload_drops: u64,
}

impl PortCounters {
    pub fn snapshot(&self) -> PortCountersSnapshot {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PortCountersSnapshot {
            tx_frames: l(&self.tx_frames),
            tx_bytes: l(&self.tx_bytes),
            tx_drops: l(&self.tx_drops),
            rx_frames: l(&self.rx_frames),
            rx_bytes: l(&self.rx_bytes),
            rx_drops: l(&self.rx_drops),
            offload_drops: l(&self.offload_drops),
        }
    }
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// The receive side of a port.
pub(super) struct RxSide<M> {
    /// The port's VM's RAM; `None` once detached.
    pub(super) mem: Option<M>,
    /// The receive queue while the driver runs.
    pub(super) queue: Option<Queue>,
    /// Negotiated features.
    pub(super) features: u64,
    /// The MTU the driver negotiated (`MTU` feature), which frames to it must respect.
    pub(super) mtu: Option<u16>,
    bufs: Buffers,
    scratch_r: Buffers,
    scratch_w: Buffers,
    chains: Vec<(u16, u64)>,
    /// The used-ring entries of one frame, published together.
    used: Vec<(u16, u32)>,
}

/// One port of a switch.
pub struct Port<M> {
    id: usize,
    mac: [u8; 6],
    pub(super) rx: Mutex<RxSide<M>>,
    pub(super) signals: Arc<DeviceSignals>,
    counters: PortCounters,
    /// The receive offloads the port's driver accepted; all of [`RX_OFFLOADS`] until it has
    /// negotiated.
    pub(super) rx_offloads: AtomicU64,
}

impl<M> Port<M> {
    pub fn id(&self) -> usize {
        self.id
    }
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }
    pub fn counters(&self) -> &PortCounters {
        &self.counters
    }
}

/// A frame's virtio-net header, as sent.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct NetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
    pub num_buffers: u16,
}

impl NetHdr {
    pub fn parse(b: &[u8; 12]) -> Self {
        let u = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Self {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
            num_buffers: u(10),
        }
    }
    pub fn to_bytes(self) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b[10..12].copy_from_slice(&self.num_buffers.to_le_bytes());
        b
    }
    fn needs_csum(&self) -> bool {
        self.flags & HDR_F_NEEDS_CSUM != 0
    }
}

/// Checks a sent frame's header against what the sender negotiated (§5.1.6.2.1) and the
/// frame's length. `mtu` is the negotiated MTU, if any.
pub fn check_tx_header(hdr: &NetHdr, frame_len: u64, features: u64, mtu: Option<u16>) -> bool {
    if !(ETH_HLEN..=MAX_FRAME_LEN).contains(&frame_len) {
        return false;
    }
    // NEEDS_CSUM is the only flag a driver may send.
    if hdr.flags & !HDR_F_NEEDS_CSUM != 0 {
        return false;
    }
    if hdr.needs_csum() {
        let end = u64::from(hdr.csum_start) + u64::from(hdr.csum_offset) + 2;
        if features & f::NET_CSUM == 0 || end > frame_len {
            return false;
        }
    }
    match hdr.gso_type {
        GSO_NONE => mtu.is_none_or(|m| frame_len <= u64::from(m) + ETH_HLEN + 4),
        GSO_TCPV4 | GSO_TCPV6 => {
            let needed = if hdr.gso_type == GSO_TCPV4 {
                f::NET_HOST_TSO4
            } else {
                f::NET_HOST_TSO6
            };
            features & needed != 0 && hdr.needs_csum() && hdr.gso_size != 0
        }
        // UDP fragmentation, USO and ECN are not offered.
        _ => false,
    }
}

/// The Internet checksum (RFC 1071) of `data`, continuing `sum`; `data` of odd length only
/// at the very end.
fn csum_add(mut sum: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u64::from(u16::from_be_bytes([*last, 0]));
    }
    sum
}

fn csum_fold(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// MAC → port: the ports' configured MACs (static) and the learned ones.
#[derive(Default)]
struct MacTable {
    ports: BTreeMap<[u8; 6], usize>,
    map: BTreeMap<[u8; 6], usize>,
}

impl MacTable {
    /// Learns `mac` as behind `port`; false (nothing learned) when it is another port's
    /// configured MAC.
    fn learn(&mut self, mac: [u8; 6], port: usize) -> bool {
        if let Some(&owner) = self.ports.get(&mac) {
            return owner == port;
        }
        if self.map.get(&mac) == Some(&port) {
            return true;
        }
        if self.map.len() >= MAX_LEARNED && !self.map.contains_key(&mac) {
            self.map.clear();
        }
        self.map.insert(mac, port);
        true
    }
    fn lookup(&self, mac: &[u8; 6]) -> Option<usize> {
        self.ports.get(mac).or_else(|| self.map.get(mac)).copied()
    }
    fn add_port(&mut self, mac: [u8; 6], port: usize) {
        // Learned on another port before this one came: the owner wins.
        self.map.remove(&mac);
        self.ports.insert(mac, port);
    }
    fn forget_port(&mut self, port: usize) {
        self.ports.retain(|_, p| *p != port);
        self.map.retain(|_, p| *p != port);
    }
}

fn is_unicast(mac: &[u8]) -> bool {
    mac.first().is_some_and(|b| b & 1 == 0)
}

/// What a sender's TX processing left to do: raise the RX interrupts of these ports.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct TxReport {
    pub raise: PortMask,
    /// Frames forwarded (to at least the switch: flooding to nobody counts too).
    pub frames: u64,
}

/// A learning switch.
pub struct Switch<M> {
    name: String,
    ports: RwLock<Vec<Option<Arc<Port<M>>>>>,
    macs: Mutex<MacTable>,
}

impl<M: GuestMemory> Switch<M> {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            ports: RwLock::new(Vec::new()),
            macs: Mutex::new(MacTable::default()),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds a port for a device whose VM's RAM is `mem`. The port receives nothing until its
    /// driver runs (the device activates its RX side).
    pub fn attach(
        &self,
        mac: [u8; 6],
        mem: M,
        signals: Arc<DeviceSignals>,
    ) -> Result<Arc<Port<M>>, AttachError> {
        let mut ports = self.ports.write();
        if ports.iter().flatten().any(|p| p.mac == mac) {
            return Err(AttachError::DuplicateMac(mac));
        }
        let id = match ports.iter().position(Option::is_none) {
            Some(i) => i,
            None if ports.len() < MAX_PORTS => {
                ports.push(None);
                ports.len() - 1
            }
            None => return Err(AttachError::Full),
        };
        let port = Arc::new(Port {
            id,
            mac,
            rx: Mutex::new(RxSide {
                mem: Some(mem),
                queue: None,
                features: 0,
                mtu: None,
                bufs: Buffers::new(),
                scratch_r: Buffers::new(),
                scratch_w: Buffers::new(),
                chains: Vec::new(),
                used: Vec::new(),
            }),
            signals,
            counters: PortCounters::default(),
            rx_offloads: AtomicU64::new(RX_OFFLOADS),
        });
        ports[id] = Some(port.clone());
        self.macs.lock().add_port(mac, id);
        Ok(port)
    }

    /// Removes a port. When this returns no copy into the port's VM is in progress or can
    /// start (its RAM handle is dropped under the RX lock), so the VM's RAM may be freed.
    pub fn detach(&self, port: &Port<M>) {
        {
            let mut ports = self.ports.write();
            if let Some(slot) = ports.get_mut(port.id)
                && slot.as_ref().is_some_and(|p| core::ptr::eq(&**p, port))
            {
                *slot = None;
            }
        }
        {
            let mut rx = port.rx.lock();
            rx.queue = None;
            rx.mem = None;
        }
        self.macs.lock().forget_port(port.id);
    }

    /// The ports attached now.
    pub fn ports(&self) -> Vec<Arc<Port<M>>> {
        self.ports.read().iter().flatten().cloned().collect()
    }

    /// The transmit offloads to offer `port`: those every other port accepts (see the module
    /// comment), as `CSUM` / `HOST_TSO4` / `HOST_TSO6` feature bits.
    pub fn tx_offload_offer(&self, port: usize) -> u64 {
        let mut rx = RX_OFFLOADS;
        for p in self.ports.read().iter().flatten() {
            if p.id != port {
                rx &= p.rx_offloads.load(Ordering::Relaxed);
            }
        }
        let mut tx = 0;
        if rx & f::NET_GUEST_CSUM != 0 {
            tx |= f::NET_CSUM;
            if rx & f::NET_GUEST_TSO4 != 0 {
                tx |= f::NET_HOST_TSO4;
            }
            if rx & f::NET_GUEST_TSO6 != 0 {
                tx |= f::NET_HOST_TSO6;
            }
        }
        tx
    }

    /// Raises the used-buffer interrupt of each port in `mask` (after a transmit).
    pub fn raise(&self, mask: PortMask) {
        if mask == 0 {
            return;
        }
        for p in self.ports.read().iter().flatten() {
            if mask & (1 << p.id) != 0 {
                p.signals.irq.raise(INT_USED_BUFFER);
            }
        }
    }

    /// Forwards the frame in the sender's TX chain (`frame`: its device-readable buffers,
    /// virtio header included) from port `from`, whose driver negotiated `tx_features` and
    /// `mtu`. Returns the ports whose RX interrupt must be raised.
    pub fn forward(
        &self,
        from: &Port<M>,
        src_mem: &M,
        frame: &Buffers,
        tx_features: u64,
        mtu: Option<u16>,
    ) -> PortMask {
        let drop_bad = || {
            bump(&from.counters.tx_drops, 1);
            from.signals.bad.record(BadInput::BadRequest);
            0
        };
        let Some(frame_len) = frame.len().checked_sub(NET_HDR_LEN) else {
            return drop_bad();
        };
        let mut head = [0u8; (NET_HDR_LEN + ETH_HLEN) as usize];
        if !frame.read(src_mem, 0, &mut head).unwrap_or(false) {
            return drop_bad();
        }
        let mut hb = [0u8; 12];
        hb.copy_from_slice(&head[..12]);
        let hdr = NetHdr::parse(&hb);
        if !check_tx_header(&hdr, frame_len, tx_features, mtu) {
            return drop_bad();
        }
        let mut dst = [0u8; 6];
        let mut src = [0u8; 6];
        dst.copy_from_slice(&head[12..18]);
        src.copy_from_slice(&head[18..24]);
        let tagged = is_vlan_tpid(u16::from_be_bytes([head[24], head[25]]));

        let target = {
            let mut macs = self.macs.lock();
            if is_unicast(&src) && !macs.learn(src, from.id) {
                drop(macs);
                // Another port's MAC as source (port security).
                return drop_bad();
            }
            if is_unicast(&dst) {
                macs.lookup(&dst)
            } else {
                None
            }
        };
        bump(&from.counters.tx_frames, 1);
        bump(&from.counters.tx_bytes, frame_len);
        // The receivers, collected so that no switch-wide lock is held while copying.
        let mut targets: [Option<Arc<Port<M>>>; MAX_PORTS] = [const { None }; MAX_PORTS];
        {
            let ports = self.ports.read();
            match target {
                // Learned on the sender's own port: the destination is behind the sender.
                Some(t) if t == from.id => {}
                Some(t) => {
                    if let Some(Some(p)) = ports.get(t) {
                        targets[0] = Some(p.clone());
                    }
                }
                None => {
                    for (slot, p) in targets
                        .iter_mut()
                        .zip(ports.iter().flatten().filter(|p| p.id != from.id))
                    {
                        *slot = Some(p.clone());
                    }
                }
            }
        }
        let mut raise = 0;
        for p in targets.iter().flatten() {
            if p.deliver(src_mem, frame, &hdr, frame_len, tagged) {
                raise |= 1 << p.id;
            }
        }
        raise
    }
}

impl<M: GuestMemory> Port<M> {
    /// Copies one frame (`tagged`: with a VLAN tag) into this port's RX buffers. True when
    /// the port's driver wants an interrupt for it.
    fn deliver(
        &self,
        src_mem: &M,
        frame: &Buffers,
        hdr: &NetHdr,
        frame_len: u64,
        tagged: bool,
    ) -> bool {
        let mut guard = self.rx.lock();
        let rx = &mut *guard;
        let (Some(mem), Some(q)) = (rx.mem.as_ref(), rx.queue.as_mut()) else {
            bump(&self.counters.rx_drops, 1);
            return false;
        };
        // §5.1.4.1: with MTU negotiated, no frame of gso_type NONE (or ECN) longer than the
        // MTU plus the Ethernet header.
        if hdr.gso_type & !GSO_ECN == GSO_NONE
            && let Some(mtu) = rx.mtu
            && frame_len > max_rx_frame_len(mtu, tagged)
        {
            bump(&self.counters.rx_drops, 1);
            return false;
        }
        let feats = rx.features;
        // The header the receiver gets (§5.1.6.4).
        let mut out = NetHdr::default();
        let mut soft_csum = false;
        if hdr.needs_csum() {
            if feats & f::NET_GUEST_CSUM != 0 {
                out.flags = HDR_F_NEEDS_CSUM;
                out.csum_start = hdr.csum_start;
                out.csum_offset = hdr.csum_offset;
            } else {
                soft_csum = true;
            }
        }
        if hdr.gso_type != GSO_NONE {
            let needed = if hdr.gso_type == GSO_TCPV4 {
                f::NET_GUEST_TSO4
            } else {
                f::NET_GUEST_TSO6
            };
            if feats & needed == 0 {
                bump(&self.counters.offload_drops, 1);
                return false;
            }
            out.gso_type = hdr.gso_type;
            out.gso_size = hdr.gso_size;
            out.hdr_len = hdr.hdr_len;
        }
        let need = NET_HDR_LEN + frame_len;
        let mergeable = feats & f::NET_MRG_RXBUF != 0;

        // Take receive chains until the frame fits (one chain without MRG_RXBUF).
        rx.bufs.clear();
        rx.chains.clear();
        let mut taken: u16 = 0;
        let result: Result<bool, QueueError> = (|| {
            while rx.bufs.len() < need {
                if taken > 0 && !mergeable {
                    return Ok(false);
                }
                let Some(chain) = q.pop(mem)? else {
                    return Ok(false);
                };
                taken += 1;
                if chain
                    .split(mem, &mut rx.scratch_r, &mut rx.scratch_w)
                    .is_err()
                    || !rx.scratch_r.is_empty()
                {
                    // A malformed receive chain: give every chain taken for this frame back
                    // empty and drop the frame.
                    self.signals.bad.record(BadInput::BadChain);
                    rx.chains.push((chain.head, 0));
                    rx.used.clear();
                    rx.used.extend(rx.chains.iter().map(|&(h, _)| (h, 0)));
                    q.add_used_all(mem, &rx.used)?;
                    rx.chains.clear();
                    taken = 0;
                    return Ok(false);
                }
                rx.chains.push((chain.head, rx.scratch_w.len()));
                for &(a, n) in rx.scratch_w.segments() {
                    rx.bufs.push(a, n);
                }
            }
            Ok(true)
        })();
        let fits = match result {
            Ok(v) => v,
            Err(_) => {
                // The receiver's queue is broken: it needs a reset; this frame is lost.
                self.signals.bad.record(BadInput::QueueBroken);
                bump(&self.counters.rx_drops, 1);
                rx.queue = None;
                return false;
            }
        };
        if !fits {
            q.undo_pop(taken);
            bump(&self.counters.rx_drops, 1);
            return false;
        }

        out.num_buffers = rx.chains.len() as u16;
        let copied = rx.bufs.write(mem, 0, &out.to_bytes()).and_then(|_| {
            copy_streams(
                mem,
                &rx.bufs,
                NET_HDR_LEN,
                src_mem,
                frame,
                NET_HDR_LEN,
                frame_len,
            )
        });
        let mut ok = copied == Ok(frame_len);
        if ok && soft_csum {
            ok = Self::complete_csum(mem, &rx.bufs, src_mem, frame, hdr, frame_len);
        }
        if !ok {
            // Both sides were checked RAM when their chains were taken; a copy that fails
            // all the same hands the buffers back empty.
            rx.used.clear();
            rx.used.extend(rx.chains.iter().map(|&(h, _)| (h, 0)));
            let _ = q.add_used_all(mem, &rx.used);
            bump(&self.counters.rx_drops, 1);
            return q.needs_interrupt(mem).unwrap_or(false);
        }
        // All the frame's buffers become visible to the driver at once.
        let mut left = need;
        rx.used.clear();
        for &(h, cap) in rx.chains.iter() {
            let n = left.min(cap);
            left -= n;
            rx.used.push((h, n as u32));
        }
        if q.add_used_all(mem, &rx.used).is_err() {
            self.signals.bad.record(BadInput::QueueBroken);
            return false;
        }
        bump(&self.counters.rx_frames, 1);
        bump(&self.counters.rx_bytes, frame_len);
        let _ = q.suppress_notifications(mem);
        q.needs_interrupt(mem).unwrap_or(false)
    }

    /// Completes a partial checksum (NEEDS_CSUM) for a receiver that did not negotiate
    /// GUEST_CSUM: the ones'-complement sum from `csum_start` to the end of the frame, read
    /// from the sender, stored at `csum_start + csum_offset` in the receiver's copy.
    fn complete_csum(
        dst_mem: &M,
        dst: &Buffers,
        src_mem: &M,
        frame: &Buffers,
        hdr: &NetHdr,
        frame_len: u64,
    ) -> bool {
        let start = u64::from(hdr.csum_start);
        let mut sum = 0u64;
        let mut buf = [0u8; 256];
        let mut at = start;
        while at < frame_len {
            let n = (frame_len - at).min(buf.len() as u64) as usize;
            if !frame
                .read(src_mem, NET_HDR_LEN + at, &mut buf[..n])
                .unwrap_or(false)
            {
                return false;
            }
            sum = csum_add(sum, &buf[..n]);
            at += n as u64;
        }
        let field = NET_HDR_LEN + start + u64::from(hdr.csum_offset);
        dst.write(dst_mem, field, &csum_fold(sum).to_be_bytes())
            .unwrap_or(false)
    }
}

/// The switches of the machine, by name.
pub struct Switches<M> {
    all: Mutex<Vec<Arc<Switch<M>>>>,
}

impl<M: GuestMemory> Default for Switches<M> {
    fn default() -> Self {
        Self {
            all: Mutex::new(Vec::new()),
        }
    }
}

impl<M: GuestMemory> Switches<M> {
    pub const fn new() -> Self {
        Self {
            all: Mutex::new(Vec::new()),
        }
    }
    /// The switch called `name`, created on first use.
    pub fn get(&self, name: &str) -> Arc<Switch<M>> {
        let mut all = self.all.lock();
        if let Some(s) = all.iter().find(|s| s.name == name) {
            return s.clone();
        }
        let s = Arc::new(Switch::new(name));
        all.push(s.clone());
        s
    }
}

/// Counts a frame a port sent that never reached the switch (a malformed chain).
pub(super) fn count_tx_drop<M>(port: &Port<M>) {
    bump(&port.counters.tx_drops, 1);
}
