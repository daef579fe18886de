//! Transmit off the sender's exit path: a poller on a physical CPU that runs no vCPU drains
//! the transmit queues of the network ports, as vhost-net's worker does (docs/virtio.md,
//! "The poller").
//!
//! A QueueNotify for a transmit queue, when a poller exists, only hands the queue over
//! ([`Handoff`]): the device marks it polled and the poller's CPU is woken (the runtime's kick
//! SGI). The exit returns at once. With `VIRTIO_F_EVENT_IDX` the driver then stops notifying
//! by itself: `avail_event` stays where the device last armed it, which the driver has passed
//! (§2.7.10); without it the device sets `VIRTQ_USED_F_NO_NOTIFY`. The poller takes the
//! queue's chains in passes of a bounded budget, returns them with one used-index store per
//! pass and decides once per pass whether the driver asked for an interrupt (`used_event`),
//! so a driver that moves `used_event` ahead (Linux's `virtqueue_enable_cb_delayed`, 3/4 of
//! the outstanding buffers) gets few interrupts and never misses one it asked for. After
//! [`IDLE_PASSES`] passes that found nothing, the device arms notifications again and
//! re-checks the available index (the race of §2.7.10: a chain made available between the
//! two is either seen by the re-check or notified by the driver); when every queue is armed
//! the poller's CPU sleeps until the next notification.
//!
//! [`Poller`] is the role: which CPU polls (at most one), which CPUs may not (they run vCPUs:
//! [`Poller::reserve`] takes the role from such a CPU), and the registered devices. A CPU's idle loop calls
//! [`Poller::poll_idle`]; the first eligible CPU takes the role, others stand by and one of
//! them is woken when the role is given up. With no eligible CPU (every CPU runs a vCPU) no
//! queue is ever handed over and notifications are processed on the exit as before.
//!
//! Locking: the role is one atomic (`cpu`). A device decides to hand over with its queue lock
//! held and reads the role there (SeqCst); whoever ends a CPU's role clears it first
//! (compare-and-swap), then takes each device's queue lock and re-arms a polled queue. So a queue marked
//! polled is either seen by that sweep or was marked after it, when the device already saw the
//! role empty (or a new poller, which polls it). The registry's lock is held for a whole pass
//! and is taken before any device lock, never under one.
#![forbid(unsafe_code)]

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use spin::Mutex;

/// No CPU holds the role.
pub const NO_CPU: usize = usize::MAX;
/// CPUs the role knows about (bit masks); a CPU beyond this never polls.
pub const MAX_POLL_CPUS: usize = 64;
/// Passes in a row that find a polled queue empty before its notifications are armed again.
/// A pass over idle queues costs a few hundred instructions; on hardware the poller spins
/// (with `yield`) for about this many passes after the last frame, under TCG each pass is one
/// round-robin turn, so the window follows the guests' own pace.
pub const IDLE_PASSES: u32 = 32;
/// Chains one device takes per pass (then the next device gets its turn).
pub const PASS_BUDGET: usize = 64;

/// What a pass over one device found.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PollState {
    /// Not polled: notifications are armed (or the device is not running).
    Armed,
    /// Still polled; `work` is the chains taken in this pass.
    Polling { work: usize },
}

impl PollState {
    pub fn is_polling(self) -> bool {
        matches!(self, PollState::Polling { .. })
    }
}

/// A device whose queues a poller can drain.
pub trait Polled: Send + Sync {
    /// One pass over the device's polled queues, at most `budget` chains each.
    fn poll(&self, budget: usize) -> PollState;
    /// The poller gives up its role: arm notifications of every polled queue again (with the
    /// re-check), finishing what the re-check finds on this CPU.
    fn stop_polling(&self);
}

/// The device's side of the role: asked with the queue's lock held on a notification.
pub trait Handoff: Send + Sync {
    /// The CPU that polls now, if any.
    fn poller_cpu(&self) -> Option<usize>;
    /// Wakes the poller's CPU (it may sleep in WFI).
    fn wake(&self, cpu: usize);
}

/// How the runtime wakes a CPU (the kick SGI).
pub trait Wake: Send + Sync {
    fn wake(&self, cpu: usize);
}

/// The poller role and its devices (one for the machine).
pub struct Poller<W> {
    cpu: AtomicUsize,
    /// vCPUs placed per physical CPU by the VMs that exist: such a CPU never polls.
    reserved: [AtomicU32; MAX_POLL_CPUS],
    /// Eligible CPUs that found the role taken (one is woken when it is given up).
    standby: AtomicU64,
    devices: Mutex<Vec<Arc<dyn Polled>>>,
    waker: W,
}

impl<W: Wake> Poller<W> {
    pub const fn new(waker: W) -> Self {
        Self {
            cpu: AtomicUsize::new(NO_CPU),
            reserved: [const { AtomicU32::new(0) }; MAX_POLL_CPUS],
            standby: AtomicU64::new(0),
            devices: Mutex::new(Vec::new()),
            waker,
        }
    }

    pub fn waker(&self) -> &W {
        &self.waker
    }

    /// The CPU holding the role, if any.
    pub fn cpu(&self) -> Option<usize> {
        match self.cpu.load(Ordering::SeqCst) {
            NO_CPU => None,
            c => Some(c),
        }
    }

    fn is_reserved(&self, cpu: usize) -> bool {
        self.reserved
            .get(cpu)
            .is_none_or(|r| r.load(Ordering::SeqCst) != 0)
    }

    /// Adds a device to the ones polled.
    pub fn register(&self, dev: Arc<dyn Polled>) {
        self.devices.lock().push(dev);
    }

    /// Removes a device (by identity). When this returns, no pass is inside it and none will
    /// start; a queue it still had polled must be reset by the caller (teardown does).
    pub fn unregister(&self, dev: &Arc<dyn Polled>) {
        self.devices
            .lock()
            .retain(|d| !core::ptr::addr_eq(Arc::as_ptr(d), Arc::as_ptr(dev)));
    }

    /// CPUs in `cpus` will run vCPUs: none of them polls from now on. If one holds the role,
    /// the role is taken from it here, on the calling CPU: its queues are armed again (after
    /// a pass in progress ends: the registry lock) and a standby CPU is woken. Nothing waits
    /// for the old poller's CPU, which may start a vCPU as soon as it likes; a pass it began
    /// before finding the role gone finds no polled queue but the next poller's (harmless: the
    /// queue lock serializes the two).
    pub fn reserve(&self, cpus: &[usize]) {
        for &c in cpus {
            if let Some(r) = self.reserved.get(c) {
                r.fetch_add(1, Ordering::SeqCst);
            }
            self.standby.fetch_and(!bit(c), Ordering::SeqCst);
        }
        let c = self.cpu.load(Ordering::SeqCst);
        if c != NO_CPU && cpus.contains(&c) {
            self.give_up(c);
        }
    }

    /// The VM that reserved `cpus` is gone.
    pub fn unreserve(&self, cpus: &[usize]) {
        for &c in cpus {
            if let Some(r) = self.reserved.get(c) {
                let _ = r.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
            }
        }
    }

    /// From the idle loop of `cpu`: takes the role if it is free and `cpu` may poll, and
    /// makes one pass over the devices. True while some queue is polled (the caller must not
    /// sleep in WFI, and should yield); false when `cpu` does not poll or every queue is armed.
    pub fn poll_idle(&self, cpu: usize) -> bool {
        let cur = self.cpu.load(Ordering::SeqCst);
        if cur != cpu {
            if self.is_reserved(cpu) {
                return false;
            }
            if cur != NO_CPU
                || self
                    .cpu
                    .compare_exchange(NO_CPU, cpu, Ordering::SeqCst, Ordering::SeqCst)
                    .is_err()
            {
                self.standby.fetch_or(bit(cpu), Ordering::SeqCst);
                return false;
            }
            self.standby.fetch_and(!bit(cpu), Ordering::SeqCst);
        }
        // Re-checked after taking the role: `reserve` reads the role after marking the CPU.
        if self.is_reserved(cpu) {
            self.give_up(cpu);
            return false;
        }
        let mut polling = false;
        for d in self.devices.lock().iter() {
            polling |= d.poll(PASS_BUDGET).is_polling();
        }
        polling
    }

    /// Takes the role from `cpu`: no queue is handed over from now on, every polled queue is
    /// armed again, and a standby CPU is woken to take the role.
    fn give_up(&self, cpu: usize) {
        if self
            .cpu
            .compare_exchange(cpu, NO_CPU, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return;
        }
        for d in self.devices.lock().iter() {
            d.stop_polling();
        }
        let mut standby = self.standby.load(Ordering::SeqCst);
        while standby != 0 {
            let c = standby.trailing_zeros() as usize;
            standby &= standby - 1;
            if !self.is_reserved(c) {
                self.waker.wake(c);
                break;
            }
        }
    }
}

fn bit(cpu: usize) -> u64 {
    if cpu < MAX_POLL_CPUS { 1 << cpu } else { 0 }
}

impl<W: Wake> Handoff for Poller<W> {
    fn poller_cpu(&self) -> Option<usize> {
        self.cpu()
    }
    fn wake(&self, cpu: usize) {
        self.waker.wake(cpu);
    }
}
