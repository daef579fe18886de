//! The run queue of one physical CPU (see the module comment of [`crate::sched`] for the
//! policy).
//!
//! Contract with the runtime (docs/scheduling.md):
//! - Every method runs with the queue's lock held; `now` is the system counter read by the
//!   caller. Calls from different CPUs may pass slightly older times than the last one seen:
//!   the queue never lets its clock go back.
//! - [`RunQueue::schedule`], [`RunQueue::block`] and [`RunQueue::yield_now`] are called by
//!   the CPU that owns the queue and return the [`Decision`] that CPU carries out: the vCPU to
//!   load (or none: idle), the absolute time its CNTHP timer must fire (or none: timer off),
//!   and whether WFI/WFE trap. A timer expiry is just a `schedule` at the time it fired.
//! - [`RunQueue::add`], [`RunQueue::wake`] and [`RunQueue::remove`] may come from any CPU and
//!   return an [`Action`]: `Reschedule` means the owner must call `schedule` soon (another CPU
//!   kicks it with the kick SGI), because the decision it carries out no longer fits: a vCPU
//!   must be loaded or unloaded, the CPU changes between shared and alone, or its timer must
//!   fire earlier than the one armed.
//! - A vCPU blocks only after its own CPU has checked, with this queue's lock held, that it
//!   has no interrupt pending; whoever makes an interrupt pending for it calls `wake` after
//!   that, so no wake-up is lost between the check and the block.
use alloc::vec::Vec;

use super::{DEFAULT_WEIGHT, Ticks, Tunables, VcpuId, VcpuParams};

/// Where a vCPU of this queue is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum VcpuState {
    /// Waiting for the CPU.
    Runnable,
    /// The vCPU the CPU runs.
    Running,
    /// Waiting for an interrupt (WFI, CPU_SUSPEND), until `deadline` at the latest.
    Blocked { deadline: Option<Ticks> },
}

/// What a vCPU has had from its CPU, in ticks.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct VcpuStats {
    /// Time it ran.
    pub run_time: Ticks,
    /// Time it was runnable but another vCPU ran (or the CPU had not yet switched to it).
    pub steal: Ticks,
    /// Times it was woken from blocked (by an interrupt or its deadline).
    pub wakeups: u64,
    /// Times the CPU switched to it from another vCPU or from idle.
    pub switches_in: u64,
}

/// What the CPU that owns a queue must do after a change made on it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[must_use]
pub enum Action {
    /// Its current decision still holds.
    None,
    /// It must call [`RunQueue::schedule`] (from another CPU: kick it).
    Reschedule,
}

/// What a CPU does next.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Decision {
    /// The vCPU the CPU had loaded before this decision (it may since have blocked or been
    /// removed): its context is saved if `run` differs.
    pub prev: Option<VcpuId>,
    /// The vCPU to run; `None`: the CPU idles (WFI at EL2) until its timer or a kick.
    pub run: Option<VcpuId>,
    /// When the CPU's hypervisor timer (CNTHP_CVAL_EL2) must fire; `None`: timer off.
    pub timer: Option<Ticks>,
    /// More than one vCPU is placed on this CPU: WFI and WFE must trap (HCR_EL2.TWI/TWE).
    /// `false` is the dedicated fast path: WFI untrapped, and no timer while its vCPU runs.
    pub shared: bool,
}

impl Decision {
    /// The CPU must switch contexts (save `prev`, load `run`).
    pub fn switched(&self) -> bool {
        self.prev != self.run
    }
    /// WFI/WFE must trap to EL2.
    pub fn trap_wfx(&self) -> bool {
        self.shared
    }
}

/// A request that does not fit the queue's state.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SchedError {
    /// `add` of a vCPU already in this queue.
    AlreadyQueued(VcpuId),
    /// The vCPU is not in this queue.
    NotHere(VcpuId),
    /// `block` or `yield_now` while no vCPU runs.
    NothingRunning,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum EntryState {
    Queued,
    Running,
    Blocked(Option<Ticks>),
}

#[derive(Clone, Debug)]
struct Entry {
    id: VcpuId,
    params: VcpuParams,
    state: EntryState,
    /// Virtual run time: run time scaled by `DEFAULT_WEIGHT / weight`.
    vruntime: u64,
    /// Remainder of that division, carried so that no run time is lost to rounding.
    vr_rem: u64,
    /// When it entered its state (queued: the start of its wait, counted as steal).
    since: Ticks,
    stats: VcpuStats,
}

impl Entry {
    fn weight(&self) -> u64 {
        u64::from(self.params.weight.max(1))
    }
    /// Adds `ran` ticks of run time.
    fn charge(&mut self, ran: Ticks) {
        self.stats.run_time = self.stats.run_time.saturating_add(ran);
        let scaled = u128::from(ran) * u128::from(DEFAULT_WEIGHT) + u128::from(self.vr_rem);
        let w = u128::from(self.weight());
        self.vr_rem = (scaled % w) as u64;
        let add = u64::try_from(scaled / w).unwrap_or(u64::MAX);
        self.vruntime = self.vruntime.saturating_add(add);
    }
    fn runnable(&self) -> bool {
        matches!(self.state, EntryState::Queued | EntryState::Running)
    }
}

/// `min_vruntime` above which every `vruntime` of the queue is shifted down (it would take
/// years of run time at weight 1 to get there; shifting keeps every comparison exact).
const RENORMALIZE_ABOVE: u64 = 1 << 62;

/// The vCPUs placed on one physical CPU.
#[derive(Clone, Debug)]
pub struct RunQueue {
    tunables: Tunables,
    entries: Vec<Entry>,
    /// The vCPU that runs (state `Running`), as this queue sees it.
    current: Option<VcpuId>,
    /// The vCPU of the last decision: what the CPU has loaded.
    loaded: Option<VcpuId>,
    /// End of the current vCPU's time slice.
    slice_end: Ticks,
    /// Run time of `current` is charged up to here.
    accounted_at: Ticks,
    min_vruntime: u64,
    /// Latest time seen.
    now: Ticks,
    /// A woken vCPU should preempt the current one.
    preempt: bool,
    /// The timer and mode of the last decision.
    armed: Option<Ticks>,
    shared: bool,
}

impl RunQueue {
    pub fn new(tunables: Tunables) -> Self {
        RunQueue {
            tunables,
            entries: Vec::new(),
            current: None,
            loaded: None,
            slice_end: 0,
            accounted_at: 0,
            min_vruntime: 0,
            now: 0,
            preempt: false,
            armed: None,
            shared: false,
        }
    }

    /// Number of vCPUs placed here (any state).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// More than one vCPU is placed here: WFI/WFE trap and time slices apply.
    pub fn is_shared(&self) -> bool {
        self.entries.len() >= 2
    }

    /// The vCPU this queue runs.
    pub fn current(&self) -> Option<VcpuId> {
        self.current
    }

    /// The vCPUs placed here.
    pub fn vcpus(&self) -> impl Iterator<Item = VcpuId> + '_ {
        self.entries.iter().map(|e| e.id)
    }

    pub fn state(&self, id: VcpuId) -> Option<VcpuState> {
        self.entry(id).map(|e| match e.state {
            EntryState::Queued => VcpuState::Runnable,
            EntryState::Running => VcpuState::Running,
            EntryState::Blocked(deadline) => VcpuState::Blocked { deadline },
        })
    }

    /// What `id` has had up to `now` (including the run or wait in progress).
    pub fn stats(&self, id: VcpuId, now: Ticks) -> Option<VcpuStats> {
        let now = now.max(self.now);
        let e = self.entry(id)?;
        let mut s = e.stats;
        match e.state {
            EntryState::Queued => s.steal += now - e.since,
            EntryState::Running => s.run_time += now - self.accounted_at,
            EntryState::Blocked(_) => {}
        }
        Some(s)
    }

    /// Places vCPU `id` here, runnable (a VM start, PSCI CPU_ON).
    pub fn add(
        &mut self,
        id: VcpuId,
        params: VcpuParams,
        now: Ticks,
    ) -> Result<Action, SchedError> {
        if self.entry(id).is_some() {
            return Err(SchedError::AlreadyQueued(id));
        }
        let now = self.advance(now);
        self.entries.push(Entry {
            id,
            params,
            state: EntryState::Queued,
            vruntime: self.min_vruntime,
            vr_rem: 0,
            since: now,
            stats: VcpuStats::default(),
        });
        Ok(self.action())
    }

    /// Takes vCPU `id` off this CPU for good (PSCI CPU_OFF, its VM ends); returns what it had.
    pub fn remove(&mut self, id: VcpuId, now: Ticks) -> Result<(Action, VcpuStats), SchedError> {
        let i = self.index(id).ok_or(SchedError::NotHere(id))?;
        let now = self.advance(now);
        let e = self.entries.remove(i);
        let mut stats = e.stats;
        if e.state == EntryState::Queued {
            stats.steal += now - e.since;
        }
        if self.current == Some(id) {
            self.current = None;
        }
        Ok((self.action(), stats))
    }

    /// An interrupt (or event) is pending for vCPU `id`: a blocked vCPU becomes runnable and
    /// may preempt the running one. Waking a runnable or running vCPU changes nothing.
    pub fn wake(&mut self, id: VcpuId, now: Ticks) -> Result<Action, SchedError> {
        let i = self.index(id).ok_or(SchedError::NotHere(id))?;
        let now = self.advance(now);
        if !matches!(self.entries[i].state, EntryState::Blocked(_)) {
            return Ok(Action::None);
        }
        self.make_runnable(i, now);
        Ok(self.action())
    }

    /// The running vCPU waits for an interrupt (trapped WFI, CPU_SUSPEND) until `deadline` at
    /// the latest (its earliest armed EL1 timer, in ticks of the physical counter). Returns what
    /// the CPU does instead.
    pub fn block(&mut self, deadline: Option<Ticks>, now: Ticks) -> Result<Decision, SchedError> {
        let cur = self.current.ok_or(SchedError::NothingRunning)?;
        let now = self.advance(now);
        if let Some(i) = self.index(cur) {
            self.entries[i].state = EntryState::Blocked(deadline);
            self.entries[i].since = now;
        }
        self.current = None;
        Ok(self.schedule(now))
    }

    /// The running vCPU gives the CPU away (trapped WFE): the lowest other runnable vCPU runs,
    /// and the yielder's `vruntime` rises to that one's, so it keeps no lead over it. Alone, it
    /// runs on.
    pub fn yield_now(&mut self, now: Ticks) -> Result<Decision, SchedError> {
        let cur = self.current.ok_or(SchedError::NothingRunning)?;
        let now = self.advance(now);
        let lowest_other = self
            .entries
            .iter()
            .filter(|e| e.state == EntryState::Queued)
            .map(|e| e.vruntime)
            .min();
        if let (Some(v), Some(i)) = (lowest_other, self.index(cur)) {
            let e = &mut self.entries[i];
            e.vruntime = e.vruntime.max(v);
            self.preempt = true;
        }
        Ok(self.schedule(now))
    }

    /// Decides what the CPU runs from `now` on: wakes the blocked vCPUs whose deadline has
    /// passed, ends the running vCPU's time slice if it is over (or if a woken vCPU preempts
    /// it) and picks the runnable vCPU with the lowest `vruntime`. Also the answer to a timer
    /// expiry and to a kick.
    pub fn schedule(&mut self, now: Ticks) -> Decision {
        let now = self.advance(now);
        for i in 0..self.entries.len() {
            if let EntryState::Blocked(Some(d)) = self.entries[i].state
                && d <= now
            {
                // Runnable from its deadline on (or from when it blocked, if that was later).
                let since = d.max(self.entries[i].since);
                self.make_runnable(i, since);
            }
        }
        let prev = self.loaded;
        let must_pick = match self.current {
            None => true,
            Some(_) => self.preempt || now >= self.slice_end,
        };
        if must_pick {
            let put_back = self.current;
            if let Some(i) = put_back.and_then(|c| self.index(c)) {
                self.entries[i].state = EntryState::Queued;
                self.entries[i].since = now;
            }
            // Lowest vruntime; among equals not the vCPU just put back, then the one waiting
            // longest, then the lowest id.
            let pick = self
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.state == EntryState::Queued)
                .min_by_key(|(_, e)| (e.vruntime, Some(e.id) == put_back, e.since, e.id))
                .map(|(i, _)| i);
            self.current = pick.map(|i| {
                let e = &mut self.entries[i];
                e.stats.steal += now - e.since;
                if Some(e.id) != prev {
                    e.stats.switches_in += 1;
                }
                e.state = EntryState::Running;
                e.since = now;
                self.slice_end = now.saturating_add(e.params.slice.max(1));
                e.id
            });
        }
        self.preempt = false;
        self.update_min_vruntime();
        self.loaded = self.current;
        self.armed = self.wanted_timer();
        self.shared = self.is_shared();
        Decision {
            prev,
            run: self.current,
            timer: self.armed,
            shared: self.shared,
        }
    }

    /// A timer expiry at `now`: the same as [`RunQueue::schedule`].
    pub fn timer_expired(&mut self, now: Ticks) -> Decision {
        self.schedule(now)
    }

    fn entry(&self, id: VcpuId) -> Option<&Entry> {
        self.entries.iter().find(|e| e.id == id)
    }

    fn index(&self, id: VcpuId) -> Option<usize> {
        self.entries.iter().position(|e| e.id == id)
    }

    /// Moves the clock to `now` (never back), charges the running vCPU and updates
    /// `min_vruntime`; returns the clock.
    fn advance(&mut self, now: Ticks) -> Ticks {
        let now = now.max(self.now);
        self.now = now;
        if let Some(i) = self.current.and_then(|c| self.index(c)) {
            let ran = now - self.accounted_at;
            self.entries[i].charge(ran);
        }
        self.accounted_at = now;
        self.update_min_vruntime();
        now
    }

    fn update_min_vruntime(&mut self) {
        let lowest = self
            .entries
            .iter()
            .filter(|e| e.runnable())
            .map(|e| e.vruntime)
            .min();
        if let Some(v) = lowest {
            self.min_vruntime = self.min_vruntime.max(v);
        }
        if self.min_vruntime > RENORMALIZE_ABOVE {
            let shift = self.min_vruntime - (1 << 32);
            for e in &mut self.entries {
                e.vruntime = e.vruntime.saturating_sub(shift);
            }
            self.min_vruntime -= shift;
        }
    }

    /// Blocked entry `i` becomes runnable, waiting since `since`; it preempts the current vCPU
    /// if it is more than the wake-up granularity behind it.
    fn make_runnable(&mut self, i: usize, since: Ticks) {
        let floor = self.min_vruntime.saturating_sub(self.tunables.wake_credit);
        let e = &mut self.entries[i];
        e.state = EntryState::Queued;
        e.since = since;
        e.stats.wakeups += 1;
        e.vruntime = e.vruntime.max(floor);
        let woken = e.vruntime;
        if let Some(c) = self.current.and_then(|c| self.entry(c))
            && woken.saturating_add(self.tunables.wakeup_granularity) < c.vruntime
        {
            self.preempt = true;
        }
    }

    /// The timer the current state needs: the end of the running vCPU's slice if another vCPU
    /// waits for the CPU, and the earliest deadline of the blocked vCPUs.
    fn wanted_timer(&self) -> Option<Ticks> {
        let deadline = self
            .entries
            .iter()
            .filter_map(|e| match e.state {
                EntryState::Blocked(d) => d,
                _ => None,
            })
            .min();
        let waiting = self.entries.iter().any(|e| e.state == EntryState::Queued);
        let slice = (self.current.is_some() && waiting).then_some(self.slice_end);
        match (deadline, slice) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the decision the CPU carries out still fits after a change.
    fn action(&self) -> Action {
        let idle_with_work =
            self.current.is_none() && self.entries.iter().any(|e| e.state == EntryState::Queued);
        let earlier_timer = match (self.wanted_timer(), self.armed) {
            (Some(w), Some(a)) => w < a,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if self.preempt
            || idle_with_work
            || self.current != self.loaded
            || self.is_shared() != self.shared
            || earlier_timer
        {
            Action::Reschedule
        } else {
            Action::None
        }
    }

    /// For the model tests: a vCPU's virtual run time.
    #[cfg(test)]
    pub(crate) fn vruntime(&self, id: VcpuId) -> Option<u64> {
        self.entry(id).map(|e| e.vruntime)
    }
}
