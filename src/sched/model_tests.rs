//! Model-based property tests: random sequences of operations on the run queues of several
//! CPUs, driven as the runtime is to drive them (decisions carried out at once, a
//! `Reschedule` answered by a `schedule` on that CPU, timers firing exactly when armed), and
//! checked after every step against a plain model of where each vCPU is and what it has had.
//!
//! Invariants checked after every step and every timer expiry:
//! - each vCPU is in exactly one place: off (in no queue) or in the queue of its CPU, in the
//!   state the model says; the running vCPU of a CPU is the one its decision runs;
//! - a CPU never idles while one of its vCPUs is runnable;
//! - a yield hands the CPU to another runnable vCPU if there is one;
//! - a woken vCPU more than `wakeup_granularity` of vruntime behind the running one has
//!   preempted it;
//! - the CPU's timer fires no later than the earliest deadline of its blocked vCPUs, and
//!   always in the future; a deadline that has passed has woken its vCPU;
//! - shared (WFI trapped) exactly when more than one vCPU is placed on the CPU;
//! - latency: a queued vCPU whose vruntime is strictly the lowest of its CPU runs within the
//!   longest time slice of that CPU;
//! - no starvation (moderate weights): a runnable vCPU waits at most
//!   (n - 1) * ((U + wake_credit) * w_max / 256 + s_max), U = s_max * 256 / w_min (the proof
//!   is in the comment of `starvation_bound`);
//! - run time, stolen time and wake-up counts equal the model's, to the tick.
use super::*;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use proptest::prelude::*;

const FREQ: u64 = 1_000_000_000;
const CPUS: usize = 3;
const VCPUS: usize = 6;
const MODERATE_WEIGHTS: [u32; 4] = [64, 256, 768, 1024];
const EXTREME_WEIGHTS: [u32; 4] = [1, 256, 4096, 65535];
const SLICES_US: [u64; 4] = [500, 1000, 4000, 10_000];

fn vcpu_id(n: usize) -> VcpuId {
    VcpuId {
        vm: n / 2,
        vcpu: n % 2,
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// Place vCPU `vcpu` on `cpu` (VM start, CPU_ON).
    Add {
        vcpu: usize,
        cpu: usize,
        weight: usize,
        slice: usize,
    },
    /// CPU_OFF, VM end.
    Remove { vcpu: usize },
    /// The running vCPU of `cpu` executes WFI, its timer `deadline_us` from now (negative:
    /// already passed).
    Block {
        cpu: usize,
        deadline_us: Option<i32>,
    },
    /// An interrupt for `vcpu`, signalled by a CPU whose counter read was `late_us` ago.
    Wake { vcpu: usize, late_us: u16 },
    /// The running vCPU of `cpu` executes WFE.
    Yield { cpu: usize },
    /// An exit or a kick for another reason: the CPU asks again.
    Kick { cpu: usize },
    /// Time passes.
    Advance { us: u32 },
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..VCPUS, 0..CPUS, 0..4usize, 0..4usize)
            .prop_map(|(vcpu, cpu, weight, slice)| Op::Add { vcpu, cpu, weight, slice }),
        1 => (0..VCPUS).prop_map(|vcpu| Op::Remove { vcpu }),
        3 => (0..CPUS, proptest::option::of(-200i32..30_000))
            .prop_map(|(cpu, deadline_us)| Op::Block { cpu, deadline_us }),
        3 => (0..VCPUS, prop_oneof![Just(0u16), 0u16..500])
            .prop_map(|(vcpu, late_us)| Op::Wake { vcpu, late_us }),
        1 => (0..CPUS).prop_map(|cpu| Op::Yield { cpu }),
        1 => (0..CPUS).prop_map(|cpu| Op::Kick { cpu }),
        4 => (1u32..20_000).prop_map(|us| Op::Advance { us }),
    ]
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum MState {
    Runnable {
        since: Ticks,
    },
    Running,
    Blocked {
        deadline: Option<Ticks>,
        since: Ticks,
    },
}

#[derive(Clone, Copy, Debug)]
struct MVcpu {
    cpu: usize,
    state: MState,
    params: VcpuParams,
    stats: VcpuStats,
}

struct Harness {
    weights: [u32; 4],
    moderate: bool,
    rqs: Vec<RunQueue>,
    applied: Vec<Decision>,
    /// Latest time each queue was given (it never goes back).
    clock: Vec<Ticks>,
    model: BTreeMap<usize, MVcpu>,
    now: Ticks,
    /// Per CPU: the queued vCPU with strictly the lowest vruntime, and since when.
    lowest: Vec<Option<(usize, Ticks)>>,
    tunables: Tunables,
}

impl Harness {
    fn new(moderate: bool) -> Self {
        let tunables = Tunables::for_counter(FREQ);
        let mut rqs: Vec<RunQueue> = (0..CPUS).map(|_| RunQueue::new(tunables)).collect();
        let applied = rqs.iter_mut().map(|q| q.schedule(0)).collect();
        Harness {
            weights: if moderate {
                MODERATE_WEIGHTS
            } else {
                EXTREME_WEIGHTS
            },
            moderate,
            rqs,
            applied,
            clock: alloc::vec![0; CPUS],
            model: BTreeMap::new(),
            now: 0,
            lowest: alloc::vec![None; CPUS],
            tunables,
        }
    }

    fn on_cpu(&self, cpu: usize) -> impl Iterator<Item = (usize, &MVcpu)> {
        self.model
            .iter()
            .filter(move |(_, m)| m.cpu == cpu)
            .map(|(&n, m)| (n, m))
    }

    /// Time passes up to `to` with nothing happening: the model's run and steal grow.
    fn accrue(&mut self, to: Ticks) {
        let dt = to - self.now;
        for m in self.model.values_mut() {
            match m.state {
                MState::Running => m.stats.run_time += dt,
                MState::Runnable { .. } => m.stats.steal += dt,
                MState::Blocked { .. } => {}
            }
        }
        self.now = to;
    }

    /// The vCPUs of `cpu` whose deadline has passed at `t` become runnable (what `schedule`
    /// does first).
    fn expire(&mut self, cpu: usize, t: Ticks) {
        for m in self.model.values_mut().filter(|m| m.cpu == cpu) {
            if let MState::Blocked {
                deadline: Some(d),
                since,
            } = m.state
                && d <= t
            {
                let from = d.max(since);
                m.state = MState::Runnable { since: from };
                m.stats.wakeups += 1;
                m.stats.steal += t - from.min(t);
            }
        }
    }

    /// The CPU carries out decision `d`, taken at `t`.
    fn apply(&mut self, cpu: usize, d: Decision, t: Ticks) {
        assert_eq!(
            d.prev, self.applied[cpu].run,
            "cpu{cpu}: prev must be what the CPU had loaded"
        );
        for m in self.model.values_mut().filter(|m| m.cpu == cpu) {
            if m.state == MState::Running {
                m.state = MState::Runnable { since: t };
            }
        }
        if let Some(r) = d.run {
            let n = (0..VCPUS).find(|&n| vcpu_id(n) == r).unwrap();
            let m = self.model.get_mut(&n).expect("runs a vCPU that is off");
            assert_eq!(m.cpu, cpu, "runs a vCPU of another CPU");
            assert!(
                matches!(m.state, MState::Runnable { .. }),
                "runs {r:?} which is {:?}",
                m.state
            );
            m.state = MState::Running;
            if d.prev != d.run {
                m.stats.switches_in += 1;
            }
        }
        if let Some(timer) = d.timer {
            assert!(timer > t, "cpu{cpu}: timer {timer} not after {t}: {d:?}");
        }
        self.applied[cpu] = d;
    }

    fn schedule(&mut self, cpu: usize) {
        let t = self.now;
        self.clock[cpu] = self.clock[cpu].max(t);
        let d = self.rqs[cpu].schedule(t);
        self.expire(cpu, t);
        self.apply(cpu, d, t);
    }

    fn follow(&mut self, cpu: usize, a: Action) {
        if a == Action::Reschedule {
            self.schedule(cpu);
        }
    }

    fn step(&mut self, op: &Op) {
        let now = self.now;
        match *op {
            Op::Add {
                vcpu,
                cpu,
                weight,
                slice,
            } => {
                let params =
                    VcpuParams::from_config(self.weights[weight], SLICES_US[slice] as u32, FREQ);
                if let Some(m) = self.model.get(&vcpu) {
                    let c = m.cpu;
                    assert_eq!(
                        self.rqs[c].add(vcpu_id(vcpu), params, now),
                        Err(SchedError::AlreadyQueued(vcpu_id(vcpu)))
                    );
                    return;
                }
                self.clock[cpu] = self.clock[cpu].max(now);
                let a = self.rqs[cpu].add(vcpu_id(vcpu), params, now).unwrap();
                self.model.insert(
                    vcpu,
                    MVcpu {
                        cpu,
                        state: MState::Runnable { since: now },
                        params,
                        stats: VcpuStats::default(),
                    },
                );
                self.follow(cpu, a);
            }
            Op::Remove { vcpu } => {
                let Some(m) = self.model.remove(&vcpu) else {
                    for q in &mut self.rqs {
                        assert_eq!(
                            q.remove(vcpu_id(vcpu), now),
                            Err(SchedError::NotHere(vcpu_id(vcpu)))
                        );
                    }
                    return;
                };
                self.clock[m.cpu] = self.clock[m.cpu].max(now);
                let (a, stats) = self.rqs[m.cpu].remove(vcpu_id(vcpu), now).unwrap();
                assert_eq!(stats, m.stats, "figures of the removed vCPU {vcpu}");
                self.follow(m.cpu, a);
            }
            Op::Block { cpu, deadline_us } => {
                let deadline = deadline_us.map(|d| now.saturating_add_signed(i64::from(d) * 1000));
                let Some(r) = self.applied[cpu].run else {
                    assert_eq!(
                        self.rqs[cpu].block(deadline, now),
                        Err(SchedError::NothingRunning)
                    );
                    return;
                };
                self.clock[cpu] = self.clock[cpu].max(now);
                let d = self.rqs[cpu].block(deadline, now).unwrap();
                let n = (0..VCPUS).find(|&n| vcpu_id(n) == r).unwrap();
                self.model.get_mut(&n).unwrap().state = MState::Blocked {
                    deadline,
                    since: now,
                };
                self.expire(cpu, now);
                self.apply(cpu, d, now);
            }
            Op::Wake { vcpu, late_us } => {
                let Some(m) = self.model.get(&vcpu).copied() else {
                    for q in &mut self.rqs {
                        assert_eq!(
                            q.wake(vcpu_id(vcpu), now),
                            Err(SchedError::NotHere(vcpu_id(vcpu)))
                        );
                    }
                    return;
                };
                let t = now.saturating_sub(u64::from(late_us) * 1000);
                // The queue sees the later of the waker's time and its own clock.
                let seen = t.max(self.clock[m.cpu]);
                self.clock[m.cpu] = seen;
                let a = self.rqs[m.cpu].wake(vcpu_id(vcpu), t).unwrap();
                if let MState::Blocked { .. } = m.state {
                    let mm = self.model.get_mut(&vcpu).unwrap();
                    mm.state = MState::Runnable { since: seen };
                    mm.stats.wakeups += 1;
                    mm.stats.steal += now - seen;
                } else {
                    assert_eq!(a, Action::None, "waking a vCPU that is not blocked");
                }
                self.follow(m.cpu, a);
                // A woken vCPU more than the granularity behind the running one has taken
                // the CPU at once.
                let q = &self.rqs[m.cpu];
                let was_blocked = matches!(m.state, MState::Blocked { .. });
                if let (true, Some(VcpuState::Runnable), Some(r)) =
                    (was_blocked, q.state(vcpu_id(vcpu)), q.current())
                {
                    let woken = q.vruntime(vcpu_id(vcpu)).unwrap();
                    let running = q.vruntime(r).unwrap();
                    // The queue decided at `seen`; the running vCPU has aged since.
                    let n = (0..VCPUS).find(|&n| vcpu_id(n) == r).unwrap();
                    let w = u64::from(self.model[&n].params.weight.max(1));
                    let aged = (now - seen) * u64::from(DEFAULT_WEIGHT) / w + 1;
                    assert!(
                        woken + self.tunables.wakeup_granularity + aged >= running,
                        "woken vCPU {vcpu} ({woken}) did not preempt {r:?} ({running})"
                    );
                }
            }
            Op::Yield { cpu } => {
                if self.applied[cpu].run.is_none() {
                    assert_eq!(
                        self.rqs[cpu].yield_now(now),
                        Err(SchedError::NothingRunning)
                    );
                    return;
                }
                self.clock[cpu] = self.clock[cpu].max(now);
                let others = self
                    .on_cpu(cpu)
                    .any(|(_, m)| matches!(m.state, MState::Runnable { .. }));
                let d = self.rqs[cpu].yield_now(now).unwrap();
                // The yielder gives the CPU to another runnable vCPU if there is one.
                assert!(!others || d.run != d.prev, "yield kept the CPU: {d:?}");
                self.expire(cpu, now);
                self.apply(cpu, d, now);
            }
            Op::Kick { cpu } => self.schedule(cpu),
            Op::Advance { us } => {
                let target = now + u64::from(us) * 1000;
                loop {
                    let next = (0..CPUS)
                        .filter_map(|c| self.applied[c].timer.map(|t| (t, c)))
                        .min();
                    match next {
                        Some((t, cpu)) if t <= target => {
                            self.accrue(t);
                            self.schedule(cpu);
                            self.check(&alloc::format!("timer of cpu{cpu} at {t}"));
                        }
                        _ => break,
                    }
                }
                self.accrue(target);
            }
        }
    }

    /// The bound on one wait of a runnable vCPU on a CPU with moderate weights.
    ///
    /// Every runnable vCPU x has `vruntime <= min_vruntime + U` (it is picked at the lowest,
    /// runs at most its slice; a woken one is placed at most at its own or below; a yielder
    /// rises to another's) and `vruntime >= min_vruntime - wake_credit` (placement). While w
    /// waits, its vruntime is frozen and another vCPU j is only picked while its vruntime is
    /// at most w's, so j runs at most `(U + wake_credit) * w_j / 256` plus one slice.
    fn starvation_bound(&self) -> Ticks {
        let s_max = us_to_ticks(SLICES_US[3], FREQ);
        let w_min = u64::from(MODERATE_WEIGHTS[0]);
        let w_max = u64::from(MODERATE_WEIGHTS[3]);
        let u = s_max * 256 / w_min;
        let per_other = (u + self.tunables.wake_credit) * w_max / 256 + s_max;
        (VCPUS as u64 - 1) * per_other
    }

    fn check(&mut self, after: &str) {
        let now = self.now;
        // Each vCPU in exactly one place, in the model's state.
        for n in 0..VCPUS {
            let id = vcpu_id(n);
            let places: Vec<usize> = (0..CPUS)
                .filter(|&c| self.rqs[c].state(id).is_some())
                .collect();
            match self.model.get(&n) {
                None => assert!(
                    places.is_empty(),
                    "{after}: vCPU {n} is off but in {places:?}"
                ),
                Some(m) => {
                    assert_eq!(places, [m.cpu], "{after}: vCPU {n}");
                    let want = match m.state {
                        MState::Runnable { .. } => VcpuState::Runnable,
                        MState::Running => VcpuState::Running,
                        MState::Blocked { deadline, .. } => VcpuState::Blocked { deadline },
                    };
                    assert_eq!(self.rqs[m.cpu].state(id), Some(want), "{after}: vCPU {n}");
                    let s = self.rqs[m.cpu].stats(id, now).unwrap();
                    assert_eq!(s.run_time, m.stats.run_time, "{after}: run time of {n}");
                    assert_eq!(s.steal, m.stats.steal, "{after}: steal of {n}");
                    assert_eq!(s.wakeups, m.stats.wakeups, "{after}: wake-ups of {n}");
                }
            }
        }
        for cpu in 0..CPUS {
            let d = self.applied[cpu];
            let here: Vec<(usize, MVcpu)> = self.on_cpu(cpu).map(|(n, m)| (n, *m)).collect();
            let running: Vec<usize> = here
                .iter()
                .filter(|(_, m)| m.state == MState::Running)
                .map(|&(n, _)| n)
                .collect();
            assert_eq!(
                d.run,
                running.first().map(|&n| vcpu_id(n)),
                "{after}: cpu{cpu} runs {:?}, model {running:?}",
                d.run
            );
            assert!(running.len() <= 1);
            let queued: Vec<(usize, Ticks)> = here
                .iter()
                .filter_map(|&(n, m)| match m.state {
                    MState::Runnable { since } => Some((n, since)),
                    _ => None,
                })
                .collect();
            assert!(
                d.run.is_some() || queued.is_empty(),
                "{after}: cpu{cpu} idles while {queued:?} are runnable"
            );
            assert_eq!(d.shared, here.len() >= 2, "{after}: cpu{cpu} shared");
            assert_eq!(self.rqs[cpu].is_shared(), here.len() >= 2);
            let earliest = here
                .iter()
                .filter_map(|(_, m)| match m.state {
                    MState::Blocked { deadline, .. } => deadline,
                    _ => None,
                })
                .min();
            if let Some(e) = earliest {
                assert!(e >= now, "{after}: cpu{cpu}: deadline {e} passed at {now}");
                assert!(
                    d.timer.is_some_and(|t| t <= e),
                    "{after}: cpu{cpu}: timer {:?} after deadline {e}",
                    d.timer
                );
            }
            if let (Some(r), false) = (d.run, queued.is_empty()) {
                let m = here.iter().find(|(n, _)| vcpu_id(*n) == r).unwrap().1;
                assert!(
                    d.timer.is_some_and(|t| t <= now + m.params.slice),
                    "{after}: cpu{cpu}: others wait but no slice timer: {d:?}"
                );
            }
            // Latency of the lowest queued vCPU.
            let vr = |n: usize| self.rqs[cpu].vruntime(vcpu_id(n)).unwrap();
            let mut runnable: Vec<(u64, usize)> = here
                .iter()
                .filter(|(_, m)| !matches!(m.state, MState::Blocked { .. }))
                .map(|&(n, _)| (vr(n), n))
                .collect();
            runnable.sort_unstable();
            let lowest = match runnable.as_slice() {
                [(a, n), (b, _), ..] if a < b && running.first() != Some(n) => Some(*n),
                _ => None,
            };
            match (lowest, self.lowest[cpu]) {
                (Some(n), Some((m, _))) if n == m => {}
                (Some(n), _) => self.lowest[cpu] = Some((n, now)),
                (None, _) => self.lowest[cpu] = None,
            }
            if let Some((n, since)) = self.lowest[cpu] {
                let longest = here.iter().map(|(_, m)| m.params.slice).max().unwrap();
                assert!(
                    now - since <= longest,
                    "{after}: cpu{cpu}: vCPU {n} has had the lowest vruntime since {since}, \
                     still waiting at {now}"
                );
            }
            if self.moderate {
                for &(n, since) in &queued {
                    assert!(
                        now - since <= self.starvation_bound(),
                        "{after}: cpu{cpu}: vCPU {n} waits since {since}"
                    );
                }
            }
        }
    }
}

fn run(moderate: bool, ops: &[Op]) {
    let mut h = Harness::new(moderate);
    h.check("start");
    for (i, op) in ops.iter().enumerate() {
        h.step(op);
        h.check(&alloc::format!("step {i} {op:?}"));
    }
}

// The default configuration: 256 cases, or PROPTEST_CASES / PROPTEST_RNG_SEED from the
// environment (a soak run: PROPTEST_CASES=30000 takes about 15 s).
proptest! {
    #[test]
    fn random_operations_keep_every_invariant(
        moderate in any::<bool>(),
        ops in proptest::collection::vec(op_strategy(), 1..120),
    ) {
        run(moderate, &ops);
    }

    /// Always-runnable vCPUs of random moderate weights and slices of 1-10 ms on one CPU get
    /// CPU time in proportion to their weights, within 10%, over one second.
    #[test]
    fn hogs_share_one_cpu_by_weight_within_ten_percent(
        hogs in proptest::collection::vec((128u32..=512, 1u64..=10), 2..4),
    ) {
        let mut q = RunQueue::new(Tunables::for_counter(FREQ));
        for (n, &(w, slice_ms)) in hogs.iter().enumerate() {
            let _ = q.add(vcpu_id(n), VcpuParams { weight: w, slice: slice_ms * 1_000_000 }, 0).unwrap();
        }
        let mut d = q.schedule(0);
        let second = 1_000_000_000;
        while let Some(t) = d.timer.filter(|&t| t < second) {
            d = q.timer_expired(t);
        }
        let total: u32 = hogs.iter().map(|h| h.0).sum();
        for (n, &(w, _)) in hogs.iter().enumerate() {
            let got = q.stats(vcpu_id(n), second).unwrap().run_time as f64;
            let want = second as f64 * f64::from(w) / f64::from(total);
            prop_assert!((got / want - 1.0).abs() <= 0.10, "vCPU {n} weight {w}: {got} of {want}");
        }
    }
}

/// A fixed, busy sequence through every kind of step, so the model and its checks run even
/// if the random cases were made few.
#[test]
fn a_fixed_sequence_keeps_every_invariant() {
    use Op::*;
    let ops = [
        Add {
            vcpu: 0,
            cpu: 0,
            weight: 1,
            slice: 2,
        },
        Add {
            vcpu: 1,
            cpu: 0,
            weight: 2,
            slice: 1,
        },
        Add {
            vcpu: 2,
            cpu: 1,
            weight: 1,
            slice: 3,
        },
        Advance { us: 9_000 },
        Block {
            cpu: 0,
            deadline_us: Some(3_000),
        },
        Add {
            vcpu: 3,
            cpu: 0,
            weight: 0,
            slice: 0,
        },
        Advance { us: 5_000 },
        Wake {
            vcpu: 0,
            late_us: 300,
        },
        Yield { cpu: 0 },
        Block {
            cpu: 1,
            deadline_us: None,
        },
        Wake {
            vcpu: 2,
            late_us: 0,
        },
        Remove { vcpu: 1 },
        Block {
            cpu: 0,
            deadline_us: Some(-100),
        },
        Kick { cpu: 2 },
        Advance { us: 19_999 },
        Remove { vcpu: 3 },
        Block {
            cpu: 0,
            deadline_us: None,
        },
        Advance { us: 1 },
        Wake {
            vcpu: 5,
            late_us: 1,
        },
    ];
    run(true, &ops);
    run(false, &ops);
}
