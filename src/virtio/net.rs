//! virtio-net (VIRTIO 1.2 §5.1): one receive and one transmit queue, a port of a
//! [`Switch`].
//!
//! Features offered: `MAC`, `STATUS` (link always up), `MRG_RXBUF`, `GUEST_CSUM`,
//! `GUEST_TSO4/6`, `MTU` when `vm.toml` gives one, the transmit offloads `CSUM` and
//! `HOST_TSO4/6` when the switch's other ports accept them ([`Switch::tx_offload_offer`]),
//! and the ring features `INDIRECT_DESC` and `EVENT_IDX`. No control queue, one queue pair.
//!
//! The transmit path runs on the sending vCPU's exit (QueueNotify of queue 1): each frame is
//! checked, learned from and copied into the receivers' buffers by [`Switch::forward`];
//! their interrupts are raised once the locks are dropped. When a poller CPU exists
//! ([`super::poll`]), the notification only hands the queue over: the poller drains it in
//! passes ([`NetDevice::poll_tx`]) with the driver's notifications suppressed, returns the
//! chains in batches and arms notifications again when the queue stays empty. The receive queue needs no
//! notification: the device takes RX buffers when a frame arrives, and asks the driver not
//! to notify it of new ones ([`Queue::suppress_notifications`]).
#![forbid(unsafe_code)]

use alloc::sync::Arc;

use spin::Mutex;

use alloc::vec::Vec;

use super::mem::GuestMemory;
use super::poll::{Handoff, IDLE_PASSES, PollState};
use super::queue::{Buffers, Chain, Queue, QueueError, QueueLayout};
use super::switch::{Port, RX_OFFLOADS, Switch};
use super::{
    BadInput, DeviceError, DeviceSignals, INT_USED_BUFFER, QueueLayouts, VirtioDevice, device_id,
    features as f,
};

/// Queue indexes (§5.1.2).
pub const RX_QUEUE: u16 = 0;
pub const TX_QUEUE: u16 = 1;
/// Queue size offered (QueueNumMax), which Linux takes as its ring size. 1024 (QEMU's
/// largest `rx_queue_size`): a 64 KiB TCP segment fills 16 or more mergeable receive buffers,
/// so 256 held only a handful of segments and a burst from another VM overran them (dropped
/// frames, TCP retransmissions: 7 in the 64 MiB benchmark, none with 1024).
pub const QUEUE_SIZE: u16 = 1024;
/// `VIRTIO_NET_S_LINK_UP`.
const S_LINK_UP: u16 = virtio_spec::net::S::LINK_UP.bits().to_ne();
/// Bytes of `virtio_net_config` exposed: mac, status, max_virtqueue_pairs, mtu.
const CONFIG_LEN: usize = 12;

struct TxSide {
    queue: Option<Queue>,
    features: u64,
    readable: Buffers,
    writable: Buffers,
    /// Handed over to the poller: notifications suppressed, the poller drains the queue.
    polled: bool,
    /// Passes in a row that found the polled queue empty.
    idle_passes: u32,
    /// Chains the poller has sent and not yet returned (see [`NetDevice::poll_tx`]).
    held: Vec<(u16, u32)>,
}

/// A virtio-net device: one port of a switch, in the VM whose RAM is `M`.
pub struct NetDevice<M> {
    mem: M,
    switch: Arc<Switch<M>>,
    port: Arc<Port<M>>,
    signals: Arc<DeviceSignals>,
    tx: Mutex<TxSide>,
    mtu: Option<u16>,
    /// Where transmit queues are handed over (None: always on the exit).
    handoff: Option<&'static dyn Handoff>,
}

impl<M: GuestMemory + Clone> NetDevice<M> {
    /// A device on `port` of `switch` (from [`Switch::attach`], with the same `signals`).
    pub fn new(
        mem: M,
        switch: Arc<Switch<M>>,
        port: Arc<Port<M>>,
        signals: Arc<DeviceSignals>,
        mtu: Option<u16>,
    ) -> Self {
        Self {
            mem,
            switch,
            port,
            signals,
            tx: Mutex::new(TxSide {
                queue: None,
                features: 0,
                readable: Buffers::new(),
                writable: Buffers::new(),
                polled: false,
                idle_passes: 0,
                held: Vec::new(),
            }),
            mtu,
            handoff: None,
        }
    }

    /// Hands transmit queues to `handoff`'s poller when it has one.
    pub fn with_handoff(mut self, handoff: &'static dyn Handoff) -> Self {
        self.handoff = Some(handoff);
        self
    }

    pub fn port(&self) -> &Arc<Port<M>> {
        &self.port
    }
    pub fn switch(&self) -> &Arc<Switch<M>> {
        &self.switch
    }

    /// Leaves the switch (VM teardown): see [`Switch::detach`].
    pub fn detach(&self) {
        self.reset();
        self.switch.detach(&self.port);
    }

    /// Sends what the driver queued, at most `budget` frames. True when frames are left.
    fn transmit(&self, budget: usize) -> Result<bool, QueueError> {
        let mut guard = self.tx.lock();
        let tx = &mut *guard;
        let Some(q) = tx.queue.as_mut() else {
            return Ok(false);
        };
        let mtu = self.mtu_for(tx.features);
        let mut raise = 0u64;
        let mut sent = 0usize;
        let result = (|| {
            loop {
                while let Some(chain) = q.pop(&self.mem)? {
                    raise |= self.send_chain(
                        &chain,
                        &mut tx.readable,
                        &mut tx.writable,
                        tx.features,
                        mtu,
                    );
                    // Nothing is written into a transmit chain (§5.1.6.2).
                    q.add_used(&self.mem, chain.head, 0)?;
                    sent += 1;
                    if sent >= budget {
                        return Ok(q.pending(&self.mem)? != 0);
                    }
                }
                if !q.arm_notification(&self.mem)? {
                    return Ok(false);
                }
            }
        })();
        let own = match &result {
            Ok(_) => q.needs_interrupt(&self.mem).unwrap_or(false),
            Err(_) => false,
        };
        drop(guard);
        // Interrupts after the locks: the receivers', then our own for the finished chains.
        self.switch.raise(raise);
        if own {
            self.signals.irq.raise(INT_USED_BUFFER);
        }
        result
    }

    /// Checks one transmit chain and forwards its frame; the receivers to interrupt.
    fn send_chain(
        &self,
        chain: &Chain,
        readable: &mut Buffers,
        writable: &mut Buffers,
        features: u64,
        mtu: Option<u16>,
    ) -> u64 {
        match chain.split(&self.mem, readable, writable) {
            Ok(()) if writable.is_empty() => self
                .switch
                .forward(&self.port, &self.mem, readable, features, mtu),
            Ok(()) => {
                self.signals.bad.record(BadInput::BadRequest);
                crate::virtio::switch::count_tx_drop(&self.port);
                0
            }
            Err(_) => {
                self.signals.bad.record(BadInput::BadChain);
                crate::virtio::switch::count_tx_drop(&self.port);
                0
            }
        }
    }

    fn mtu_for(&self, features: u64) -> Option<u16> {
        if features & f::NET_MTU != 0 {
            self.mtu
        } else {
            None
        }
    }

    /// A QueueNotify of the transmit queue: true when the queue was handed to the poller
    /// (marked polled, notifications suppressed, the poller woken), false when there is no
    /// poller and the exit must transmit.
    fn hand_over_tx(&self) -> Result<bool, QueueError> {
        let Some(h) = self.handoff else {
            return Ok(false);
        };
        let cpu = {
            let mut tx = self.tx.lock();
            let tx = &mut *tx;
            // Read under the queue lock: a poller giving the role up clears it, then takes
            // this lock to arm the queue again (see `super::poll`).
            let Some(cpu) = h.poller_cpu() else {
                return Ok(false);
            };
            let Some(q) = tx.queue.as_mut() else {
                return Ok(true);
            };
            if !tx.polled {
                q.disable_notifications(&self.mem)?;
                tx.polled = true;
            }
            tx.idle_passes = 0;
            cpu
        };
        h.wake(cpu);
        Ok(true)
    }

    /// One poller pass over the transmit queue if it is polled: takes at most `budget`
    /// chains and forwards their frames. The chains sent are returned together once a pass
    /// finds no new chain (the driver paused: it may be waiting for them) or half the ring is
    /// held: one used-index store, one decision whether the driver wants an interrupt (its
    /// `used_event` among them). Returning a burst's chains a pass after the burst lets the
    /// interrupt they may need coincide with the one the receivers' answers raise. After
    /// [`IDLE_PASSES`] empty passes, arms notifications again with the re-check; the queue
    /// stays polled if the re-check finds chains.
    pub fn poll_tx(&self, budget: usize) -> Result<PollState, QueueError> {
        let mut guard = self.tx.lock();
        let tx = &mut *guard;
        if !tx.polled {
            return Ok(PollState::Armed);
        }
        let Some(q) = tx.queue.as_mut() else {
            tx.polled = false;
            tx.held.clear();
            return Ok(PollState::Armed);
        };
        let mtu = self.mtu_for(tx.features);
        let mut raise = 0u64;
        let mut work = 0usize;
        let result = (|| {
            while work < budget {
                let Some(chain) = q.pop(&self.mem)? else {
                    break;
                };
                raise |=
                    self.send_chain(&chain, &mut tx.readable, &mut tx.writable, tx.features, mtu);
                // Nothing is written into a transmit chain (§5.1.6.2).
                tx.held.push((chain.head, 0));
                work += 1;
            }
            if !tx.held.is_empty() && (work == 0 || tx.held.len() >= usize::from(q.size() / 2)) {
                q.add_used_all(&self.mem, &tx.held)?;
                tx.held.clear();
            }
            if work != 0 {
                tx.idle_passes = 0;
            } else {
                tx.idle_passes += 1;
                if tx.idle_passes >= IDLE_PASSES {
                    tx.idle_passes = 0;
                    tx.polled = q.arm_notification(&self.mem)?;
                    if tx.polled {
                        // Chains came in as it armed: keep draining, notifications off.
                        q.disable_notifications(&self.mem)?;
                    }
                }
            }
            q.needs_interrupt(&self.mem)
        })();
        let polled = tx.polled;
        if result.is_err() {
            // A broken queue is not polled again; the transport asks for a reset.
            tx.polled = false;
            tx.held.clear();
        }
        drop(guard);
        self.switch.raise(raise);
        if result? {
            self.signals.irq.raise(INT_USED_BUFFER);
        }
        Ok(if polled {
            PollState::Polling { work }
        } else {
            PollState::Armed
        })
    }

    /// The poller gives up: a polled transmit queue gets its notifications armed again and
    /// what is pending is sent here (as on a notification). True when a budget was left over.
    pub fn stop_polling_tx(&self) -> Result<bool, QueueError> {
        {
            let mut guard = self.tx.lock();
            let tx = &mut *guard;
            if !tx.polled {
                return Ok(false);
            }
            tx.polled = false;
            tx.idle_passes = 0;
            if let Some(q) = tx.queue.as_mut()
                && !tx.held.is_empty()
            {
                q.add_used_all(&self.mem, &tx.held)?;
            }
            tx.held.clear();
        }
        self.transmit(2 * usize::from(QUEUE_SIZE))
    }
}

impl<M: GuestMemory + Clone> VirtioDevice for NetDevice<M> {
    fn device_id(&self) -> u32 {
        device_id(virtio_spec::Id::Net)
    }
    fn offered_features(&self) -> u64 {
        let mtu = if self.mtu.is_some() { f::NET_MTU } else { 0 };
        f::VERSION_1
            | f::INDIRECT_DESC
            | f::EVENT_IDX
            | f::NET_MAC
            | f::NET_STATUS
            | f::NET_MRG_RXBUF
            | RX_OFFLOADS
            | mtu
            | self.switch.tx_offload_offer(self.port.id())
    }
    /// The feature dependencies of §5.1.3.1.
    fn accept_features(&self, x: u64) -> bool {
        let has = |b: u64| x & b != 0;
        let guest_tso = has(f::NET_GUEST_TSO4) || has(f::NET_GUEST_TSO6);
        let host_tso = has(f::NET_HOST_TSO4) || has(f::NET_HOST_TSO6);
        !(guest_tso && !has(f::NET_GUEST_CSUM)
            || has(f::NET_GUEST_ECN) && !guest_tso
            || has(f::NET_GUEST_UFO) && !has(f::NET_GUEST_CSUM)
            || host_tso && !has(f::NET_CSUM)
            || has(f::NET_HOST_ECN) && !host_tso
            || has(f::NET_HOST_UFO) && !has(f::NET_CSUM))
    }
    fn num_queues(&self) -> u16 {
        2
    }
    fn queue_max_size(&self) -> u16 {
        QUEUE_SIZE
    }
    fn validate_queue(&self, layout: &QueueLayout) -> Result<(), QueueError> {
        Queue::validate(layout, QUEUE_SIZE, &self.mem)
    }
    fn config_len(&self) -> usize {
        CONFIG_LEN
    }
    fn read_config(&self, offset: usize, out: &mut [u8]) {
        let mut c = [0u8; CONFIG_LEN];
        c[0..6].copy_from_slice(&self.port.mac());
        c[6..8].copy_from_slice(&S_LINK_UP.to_le_bytes());
        c[8..10].copy_from_slice(&1u16.to_le_bytes());
        c[10..12].copy_from_slice(&self.mtu.unwrap_or(0).to_le_bytes());
        if let Some(src) = c.get(offset..offset + out.len()) {
            out.copy_from_slice(src);
        }
    }
    fn activate(&self, features: u64, queues: &QueueLayouts) -> Result<(), DeviceError> {
        let event_idx = features & f::EVENT_IDX != 0;
        let indirect = features & f::INDIRECT_DESC != 0;
        let make = |q: u16| -> Result<Option<Queue>, QueueError> {
            match queues.get(usize::from(q)).copied().flatten() {
                Some(l) => Queue::new(l, QUEUE_SIZE, event_idx, indirect, &self.mem).map(Some),
                None => Ok(None),
            }
        };
        let mut rxq = make(RX_QUEUE)?;
        let txq = make(TX_QUEUE)?;
        if let Some(q) = rxq.as_mut() {
            q.suppress_notifications(&self.mem)?;
        }
        {
            let mut tx = self.tx.lock();
            tx.queue = txq;
            tx.features = features;
            tx.polled = false;
            tx.idle_passes = 0;
            tx.held.clear();
        }
        {
            let mut rx = self.port.rx.lock();
            if rx.mem.is_some() {
                rx.queue = rxq;
                rx.features = features;
                rx.mtu = self.mtu_for(features);
            }
        }
        self.port.rx_offloads.store(
            features & RX_OFFLOADS,
            core::sync::atomic::Ordering::Relaxed,
        );
        Ok(())
    }
    fn reset(&self) {
        {
            let mut tx = self.tx.lock();
            tx.queue = None;
            tx.features = 0;
            tx.polled = false;
            tx.idle_passes = 0;
            tx.held.clear();
        }
        {
            let mut rx = self.port.rx.lock();
            rx.queue = None;
            rx.features = 0;
            rx.mtu = None;
        }
        // Until the next driver negotiates, count the port as accepting every offload.
        self.port
            .rx_offloads
            .store(RX_OFFLOADS, core::sync::atomic::Ordering::Relaxed);
    }
    fn notify(&self, queue: u16) -> Result<bool, DeviceError> {
        match queue {
            TX_QUEUE if self.hand_over_tx()? => Ok(false),
            TX_QUEUE => Ok(self.transmit(2 * usize::from(QUEUE_SIZE))?),
            // New receive buffers: they are taken when a frame arrives.
            _ => Ok(false),
        }
    }
    fn poll(&self, budget: usize) -> Result<PollState, DeviceError> {
        Ok(self.poll_tx(budget)?)
    }
    fn stop_polling(&self) -> Result<Option<u16>, DeviceError> {
        Ok(self.stop_polling_tx()?.then_some(TX_QUEUE))
    }
}
