//! The poller (`virtio::poll`): transmit queues handed over on a notification, drained with
//! notifications suppressed, completions batched against the driver's `used_event`, and
//! notifications armed again with the re-check.
use super::net::*;
use super::*;
use crate::addr::{Ipa, PhysAddr};
use crate::virtio::mem::GuestMemory;
use crate::virtio::poll::{Handoff, IDLE_PASSES, Poller};
use crate::virtio::queue::need_event;
use crate::virtio::switch::{NetHdr, Switch};
use core::sync::atomic::{AtomicBool, Ordering};

type TestPoller = Poller<RecordingWake>;

fn poller() -> &'static TestPoller {
    alloc::boxed::Box::leak(alloc::boxed::Box::new(Poller::new(RecordingWake::new())))
}

/// Guest-physical address `ipa` of fake VM 0 as a host-physical one.
fn pa0(ipa: Ipa) -> PhysAddr {
    PhysAddr::new(vm_pa(0) + (ipa.as_u64() - RAM))
}

fn used_idx_pa() -> PhysAddr {
    pa0(tx_layout().used + 2)
}

fn avail_event_pa() -> PhysAddr {
    pa0(tx_layout().used + 4 + 8 * u64::from(QSIZE))
}

/// The driver queues one frame in one descriptor (header + frame) and publishes it; true
/// when it would notify (EVENT_IDX, as Linux's `virtqueue_kick_prepare`).
fn queue_frame<M: GuestMemory>(d: &mut FakeDriverQueue<'_, M>, m: &M, f: &[u8]) -> bool {
    let slot = d.avail_idx() % QSIZE;
    let at = TXBUF + u64::from(slot) * 0x800;
    m.write(Ipa::new(at), &NetHdr::default().to_bytes())
        .unwrap();
    m.write(Ipa::new(at + 12), f).unwrap();
    d.set_desc(slot, at, 12 + f.len() as u32, 0, 0);
    let old = d.avail_idx();
    d.publish(slot);
    d.would_notify(old, true)
}

fn notify(v: &Vm) {
    wr(&v.t, reg::QUEUE_NOTIFY, 1);
}

/// A poller whose role CPU 2 holds, a sender A handing its queue to it and a receiver B.
fn setup() -> (&'static TestPoller, Arc<FakePhys>, Vm, Vm) {
    let p = poller();
    assert!(!p.poll_idle(2), "nothing to poll yet");
    assert_eq!(
        p.cpu(),
        Some(2),
        "the first eligible idle CPU takes the role"
    );
    let phys = arena(2);
    let lan0 = Arc::new(Switch::new("lan0"));
    let h: &'static dyn Handoff = p;
    let a = new_vm_with(&phys, 0, &lan0, LINUX_NET, None, Some(h));
    let mut b = new_vm(&phys, 1, &lan0, LINUX_NET);
    b.post_rx(QSIZE, 2048);
    p.register(a.t.clone());
    p.register(b.t.clone());
    // DRIVER_OK looked at the queues once (handed over, found empty).
    let _ = p.waker().take();
    (p, phys, a, b)
}

#[test]
fn a_notified_queue_is_drained_by_the_poller_with_notifications_suppressed() {
    let (p, phys, a, b) = setup();
    let f = frame(mac(2), mac(1), 60);
    let mut d = FakeDriverQueue::new_running(&*a.m, tx_layout());
    assert!(
        queue_frame(&mut d, &*a.m, &f),
        "the first frame is notified"
    );
    phys.watch_u16(used_idx_pa());
    notify(&a);
    assert_eq!(p.waker().take(), vec![2], "the poller's CPU is woken");
    assert_eq!(d.used_idx(), 0, "nothing is sent on the exit");
    assert!(b.received().is_empty());
    for _ in 0..3 {
        assert!(
            !queue_frame(&mut d, &*a.m, &f),
            "no notification while the poller has the queue"
        );
    }
    assert!(p.poll_idle(2), "still polling");
    assert_eq!(b.received().len(), 4, "the frames are sent at once");
    assert_eq!(
        d.used_idx(),
        0,
        "their chains are held while the burst may go on"
    );
    assert!(p.poll_idle(2));
    assert_eq!(
        phys.watched_stores(),
        vec![4],
        "a pass with no new chain returns the four with one used-index store"
    );
    assert_eq!(d.take_used(), vec![(0, 0), (1, 0), (2, 0), (3, 0)]);
    for i in 2..IDLE_PASSES {
        assert!(p.poll_idle(2), "empty pass {i}: still polling");
        assert_eq!(d.avail_event(), 0, "notifications still suppressed");
    }
    assert!(!p.poll_idle(2), "armed after {IDLE_PASSES} empty passes");
    assert_eq!(d.avail_event(), 4, "avail_event at the next chain");
    assert!(queue_frame(&mut d, &*a.m, &f), "the next frame is notified");
    notify(&a);
    assert_eq!(p.waker().take(), vec![2]);
    assert!(p.poll_idle(2));
    assert_eq!(b.received().len(), 5, "received so far");
    assert!(p.poll_idle(2));
    assert_eq!(d.used_idx(), 5);
    assert_eq!(a.t.stats().notifies.load(Ordering::Relaxed), 2);
    assert_eq!(a.counters().tx_frames, 5);
    assert_guards_intact(&phys, 2);
}

#[test]
fn a_chain_published_while_the_poller_arms_is_not_lost() {
    let (p, phys, a, b) = setup();
    let f = frame(mac(2), mac(1), 60);
    let mut d = FakeDriverQueue::new_running(&*a.m, tx_layout());
    assert!(queue_frame(&mut d, &*a.m, &f));
    notify(&a);
    for _ in 0..IDLE_PASSES {
        assert!(p.poll_idle(2));
    }
    assert_eq!(b.received().len(), 1);
    // The driver publishes right after the device stored avail_event, before its re-check.
    // The driver's notification is not relied on (it may have read the old avail_event on a
    // weakly ordered machine without the barriers): the re-check must find the chain.
    let m = a.m.clone();
    let f2 = f.clone();
    let would = Arc::new(AtomicBool::new(false));
    let would2 = would.clone();
    phys.after_store_u16(avail_event_pa(), move || {
        let mut d = FakeDriverQueue::new_running(&*m, tx_layout());
        would2.store(queue_frame(&mut d, &*m, &f2), Ordering::SeqCst);
    });
    assert!(p.poll_idle(2), "the re-check found the chain: still polled");
    assert!(
        would.load(Ordering::SeqCst),
        "a driver that reads the new avail_event notifies too"
    );
    assert!(p.poll_idle(2));
    assert_eq!(
        b.received().len(),
        2,
        "the chain was sent without a notification"
    );
    assert_eq!(a.counters().tx_frames, 2);
    // Its (spurious) notification arrives later: the queue is simply polled still.
    notify(&a);
    assert!(p.poll_idle(2));
    assert_eq!(a.counters().tx_frames, 2);
}

#[test]
fn batched_completions_interrupt_exactly_when_used_event_is_passed() {
    let p = poller();
    p.poll_idle(5);
    let phys = arena(1);
    let lan0 = Arc::new(Switch::new("lan0"));
    let h: &'static dyn Handoff = p;
    let a = new_vm_with(&phys, 0, &lan0, LINUX_NET, None, Some(h));
    p.register(a.t.clone());
    let f = frame(BCAST, mac(1), 60);
    let mut d = FakeDriverQueue::new_running(&*a.m, tx_layout());
    let mut seed = 0x1234_5678u32;
    let mut rnd = |n: u32| {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
        (seed >> 16) % n
    };
    let (mut wanted, mut got) = (0, 0);
    for round in 0..300 {
        let old = d.used_idx();
        let k = 1 + rnd(8) as u16;
        // used_event anywhere from a few behind to past this batch.
        let event = old.wrapping_add(rnd(12) as u16).wrapping_sub(2);
        d.set_used_event(event);
        let mut notified = false;
        for _ in 0..k {
            notified |= queue_frame(&mut d, &*a.m, &f);
        }
        if notified {
            notify(&a);
        }
        let before = a.irq.rises();
        assert!(p.poll_idle(5), "round {round}: polled");
        assert!(p.poll_idle(5), "round {round}: returned");
        assert_eq!(
            d.used_idx(),
            old.wrapping_add(k),
            "round {round}: all returned"
        );
        let want = need_event(event, old.wrapping_add(k), old);
        let raised = a.irq.rises() - before;
        assert_eq!(
            raised,
            usize::from(want),
            "round {round}: used_event {event}, used {old} -> {}",
            old.wrapping_add(k)
        );
        wanted += usize::from(want);
        got += raised;
        let _ = d.take_used();
        wr(&a.t, reg::INTERRUPT_ACK, 1);
    }
    assert!(wanted > 50 && wanted < 250, "both cases covered: {wanted}");
    assert_eq!(got, wanted);
    assert_eq!(
        a.t.stats().notifies.load(Ordering::Relaxed),
        1,
        "one notification for 300 batches"
    );
}

#[test]
fn without_a_poller_cpu_the_exit_transmits_as_before() {
    let p = poller();
    assert_eq!(p.cpu(), None);
    let phys = arena(2);
    let lan0 = Arc::new(Switch::new("lan0"));
    let h: &'static dyn Handoff = p;
    let a = new_vm_with(&phys, 0, &lan0, LINUX_NET, None, Some(h));
    let mut b = new_vm(&phys, 1, &lan0, LINUX_NET);
    b.post_rx(4, 2048);
    let f = frame(mac(2), mac(1), 60);
    let mut d = FakeDriverQueue::new_running(&*a.m, tx_layout());
    assert!(queue_frame(&mut d, &*a.m, &f));
    notify(&a);
    assert_eq!(d.used_idx(), 1, "sent on the exit");
    assert_eq!(d.avail_event(), 1, "and the next chain notifies");
    assert_eq!(b.received().len(), 1);
    assert!(p.waker().take().is_empty());
}

#[test]
fn a_cpu_given_to_a_vcpu_gives_the_role_up_and_its_queues_back() {
    let (p, _phys, a, b) = setup();
    assert!(!p.poll_idle(3), "the role is taken: CPU 3 stands by");
    let f = frame(mac(2), mac(1), 60);
    let mut d = FakeDriverQueue::new_running(&*a.m, tx_layout());
    assert!(queue_frame(&mut d, &*a.m, &f));
    notify(&a);
    let _ = p.waker().take();
    // A VM is built on CPU 2 (the poller): the role goes, the pending frame is sent and
    // notifications are armed; the standby CPU is woken to take the role.
    p.reserve(&[2]);
    assert_eq!(p.cpu(), None);
    assert_eq!(d.used_idx(), 1);
    assert_eq!(d.avail_event(), 1);
    assert_eq!(b.received().len(), 1);
    assert_eq!(p.waker().take(), vec![3]);
    assert!(!p.poll_idle(2), "a reserved CPU never takes the role");
    assert_eq!(p.cpu(), None);
    // Until CPU 3 takes it, notifications are served on the exit.
    assert!(queue_frame(&mut d, &*a.m, &f));
    notify(&a);
    assert_eq!(d.used_idx(), 2);
    assert!(!p.poll_idle(3));
    assert_eq!(p.cpu(), Some(3));
    // The VM ends: CPU 2 may poll again (but the role stays with CPU 3).
    p.unreserve(&[2]);
    assert!(!p.poll_idle(2));
    assert_eq!(p.cpu(), Some(3));
}

#[test]
fn a_reset_or_a_broken_queue_ends_polling() {
    let (p, _phys, a, _b) = setup();
    let f = frame(mac(2), mac(1), 60);
    let mut d = FakeDriverQueue::new_running(&*a.m, tx_layout());
    assert!(queue_frame(&mut d, &*a.m, &f));
    notify(&a);
    wr(&a.t, reg::STATUS, 0);
    assert!(!p.poll_idle(2), "a reset device is not polled");
    assert_eq!(a.counters().tx_frames, 0, "nothing sent after the reset");

    let (p, _phys, a, _b) = setup();
    let mut d = FakeDriverQueue::new_running(&*a.m, tx_layout());
    assert!(queue_frame(&mut d, &*a.m, &f));
    notify(&a);
    d.set_avail_idx(d.avail_idx().wrapping_add(QSIZE + 1));
    assert!(!p.poll_idle(2), "a broken queue is not polled");
    assert_ne!(rd(&a.t, reg::STATUS) & 0x40, 0, "DEVICE_NEEDS_RESET");
}
