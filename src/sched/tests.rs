//! Scenario tests of one run queue: simulated guests (CPU hogs, sleepers, periodic wakers)
//! driven by the decisions, with the timer firing exactly when asked.
use super::*;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

/// A 1 GHz counter: one tick is one nanosecond.
const FREQ: u64 = 1_000_000_000;
const fn us(x: u64) -> Ticks {
    x * 1_000
}
const fn ms(x: u64) -> Ticks {
    x * 1_000_000
}
const SECOND: Ticks = ms(1000);

fn id(n: usize) -> VcpuId {
    VcpuId { vm: n, vcpu: 0 }
}

fn params(weight: u32, slice: Ticks) -> VcpuParams {
    VcpuParams { weight, slice }
}

fn rq() -> RunQueue {
    RunQueue::new(Tunables::for_counter(FREQ))
}

/// What a simulated guest does when it has the CPU.
#[derive(Clone, Copy, Debug)]
enum Guest {
    /// Always busy.
    Hog,
    /// Every `period` it wakes (its timer), computes for `burst`, and waits (WFI) again.
    Periodic { period: Ticks, burst: Ticks },
}

/// One CPU running simulated guests.
struct Sim {
    rq: RunQueue,
    now: Ticks,
    d: Decision,
    guests: BTreeMap<VcpuId, Guest>,
    /// Work a periodic guest has left in its current burst.
    left: BTreeMap<VcpuId, Ticks>,
    /// Scheduler calls made because the timer fired.
    timer_events: usize,
}

impl Sim {
    fn new(vcpus: &[(Guest, VcpuParams)]) -> Self {
        let mut rq = rq();
        let mut guests = BTreeMap::new();
        let mut left = BTreeMap::new();
        for (n, &(g, p)) in vcpus.iter().enumerate() {
            let _ = rq.add(id(n), p, 0).unwrap();
            guests.insert(id(n), g);
            if let Guest::Periodic { burst, .. } = g {
                left.insert(id(n), burst);
            }
        }
        let d = rq.schedule(0);
        Sim {
            rq,
            now: 0,
            d,
            guests,
            left,
            timer_events: 0,
        }
    }

    /// Runs until `end`.
    fn run_until(&mut self, end: Ticks) {
        while self.now < end {
            let blocks_at = self.d.run.and_then(|r| match self.guests[&r] {
                Guest::Hog => None,
                Guest::Periodic { .. } => Some(self.now + self.left[&r]),
            });
            let t = [self.d.timer, blocks_at, Some(end)]
                .into_iter()
                .flatten()
                .min()
                .unwrap();
            assert!(
                t >= self.now,
                "timer in the past: {:?} at {}",
                self.d,
                self.now
            );
            if let Some(r) = self.d.run
                && let Some(l) = self.left.get_mut(&r)
            {
                *l -= t - self.now;
            }
            self.now = t;
            if t == end {
                break;
            }
            if blocks_at == Some(t) {
                let r = self.d.run.unwrap();
                let Guest::Periodic { period, burst } = self.guests[&r] else {
                    unreachable!()
                };
                self.left.insert(r, burst);
                let next = (t / period + 1) * period;
                self.d = self.rq.block(Some(next), t).unwrap();
            } else {
                self.timer_events += 1;
                self.d = self.rq.timer_expired(t);
            }
        }
    }

    fn stats(&self, n: usize) -> VcpuStats {
        self.rq.stats(id(n), self.now).unwrap()
    }
}

fn hogs(list: &[(u32, Ticks)]) -> Sim {
    let v: Vec<(Guest, VcpuParams)> = list
        .iter()
        .map(|&(w, s)| (Guest::Hog, params(w, s)))
        .collect();
    Sim::new(&v)
}

/// |got / want - 1| in percent.
fn off_percent(got: Ticks, want: f64) -> f64 {
    ((got as f64 / want) - 1.0).abs() * 100.0
}

#[test]
fn a_vcpu_alone_runs_with_no_tick_and_wfi_untrapped() {
    let mut q = rq();
    assert_eq!(q.add(id(0), params(256, ms(4)), 10), Ok(Action::Reschedule));
    let d = q.schedule(10);
    assert_eq!(
        d,
        Decision {
            prev: None,
            run: Some(id(0)),
            timer: None,
            shared: false
        }
    );
    assert!(!d.trap_wfx() && d.switched());
    // Time passes with no scheduler call at all; a spurious schedule changes nothing.
    let d = q.schedule(SECOND);
    assert_eq!((d.run, d.timer, d.switched()), (Some(id(0)), None, false));
    assert_eq!(q.stats(id(0), SECOND).unwrap().run_time, SECOND - 10);
    // A second vCPU makes the CPU shared: the owner must switch to trapping WFI.
    assert_eq!(
        q.add(id(1), params(256, ms(4)), SECOND),
        Ok(Action::Reschedule)
    );
    let d = q.schedule(SECOND);
    assert!(d.shared && d.trap_wfx() && q.is_shared());
    assert!(d.timer.is_some(), "a slice timer once another vCPU waits");
    // Back to one: alone again.
    let (a, _) = q.remove(id(1), SECOND + 5).unwrap();
    assert_eq!(a, Action::Reschedule);
    let d = q.schedule(SECOND + 5);
    assert_eq!((d.shared, d.timer), (false, None));
}

#[test]
fn two_hogs_share_the_cpu_in_the_ratio_of_their_weights() {
    for (wa, wb) in [(256, 256), (256, 768), (768, 256), (100, 400)] {
        for slice in [ms(1), ms(4), ms(10)] {
            let mut sim = hogs(&[(wa, slice), (wb, slice)]);
            sim.run_until(SECOND);
            let (a, b) = (sim.stats(0).run_time, sim.stats(1).run_time);
            assert_eq!(a + b, SECOND, "no time lost");
            let total = f64::from(wa + wb);
            let want_a = SECOND as f64 * f64::from(wa) / total;
            let want_b = SECOND as f64 * f64::from(wb) / total;
            let ratio = (a as f64 / b as f64) / (f64::from(wa) / f64::from(wb));
            assert!(
                off_percent(a, want_a) <= 10.0 && off_percent(b, want_b) <= 10.0,
                "weights {wa}/{wb}, slice {slice}: {a} / {b}"
            );
            assert!((ratio - 1.0).abs() <= 0.10, "ratio off by {ratio}");
        }
    }
}

#[test]
fn hogs_with_different_slices_still_share_by_weight() {
    let mut sim = hogs(&[(256, ms(1)), (768, ms(10)), (256, ms(4))]);
    sim.run_until(SECOND);
    let want = [0.2, 0.6, 0.2];
    for (n, w) in want.iter().enumerate() {
        let got = sim.stats(n).run_time;
        assert!(
            off_percent(got, SECOND as f64 * w) <= 10.0,
            "vCPU {n}: {got}"
        );
    }
}

#[test]
fn stolen_time_is_the_time_runnable_but_not_running() {
    let mut sim = hogs(&[(256, ms(4)), (768, ms(4))]);
    sim.run_until(SECOND);
    for n in 0..2 {
        let s = sim.stats(n);
        assert_eq!(s.run_time + s.steal, SECOND, "vCPU {n}: {s:?}");
    }
    assert_eq!(sim.stats(0).steal, sim.stats(1).run_time);
}

#[test]
fn a_blocked_vcpu_costs_a_busy_one_nothing() {
    let mut q = rq();
    let _ = q.add(id(0), params(256, ms(4)), 0).unwrap();
    let _ = q.add(id(1), params(256, ms(4)), 0).unwrap();
    let d = q.schedule(0);
    assert_eq!(d.run, Some(id(0)));
    // vCPU 0 waits for an interrupt with no timer armed; vCPU 1 computes.
    let d = q.block(None, us(50)).unwrap();
    assert_eq!((d.run, d.timer, d.shared), (Some(id(1)), None, true));
    // No tick at all while it is blocked: the hog runs untouched.
    assert_eq!(q.schedule(SECOND).run, Some(id(1)));
    let s = q.stats(id(1), SECOND).unwrap();
    assert_eq!(s.run_time, SECOND - us(50));
    assert_eq!(s.switches_in, 1);
}

#[test]
fn a_periodic_waker_costs_a_hog_only_its_own_run_time_and_runs_at_once() {
    let periodic = Guest::Periodic {
        period: ms(10),
        burst: us(100),
    };
    let mut sim = Sim::new(&[
        (periodic, params(256, ms(4))),
        (Guest::Hog, params(256, ms(4))),
    ]);
    sim.run_until(SECOND);
    let (waker, hog) = (sim.stats(0), sim.stats(1));
    assert_eq!(hog.run_time + waker.run_time, SECOND, "the CPU never idles");
    assert_eq!(waker.run_time, 100 * us(100));
    assert!(hog.run_time >= SECOND * 98 / 100, "{hog:?}");
    // Each wake-up preempted the hog at its deadline: the waker never waited.
    assert_eq!(waker.steal, 0, "{waker:?}");
    assert_eq!(waker.wakeups, 99);
    // One timer event per wake-up, none for time slices (nobody else waits meanwhile).
    assert_eq!(sim.timer_events, 99);
}

#[test]
fn a_busy_waker_cannot_starve_a_hog() {
    // Wants 90% of the CPU, by waking every millisecond: it gets its fair half, no more.
    let greedy = Guest::Periodic {
        period: ms(1),
        burst: us(900),
    };
    let mut sim = Sim::new(&[
        (Guest::Hog, params(256, ms(4))),
        (greedy, params(256, ms(4))),
    ]);
    sim.run_until(SECOND);
    let (hog, greedy) = (sim.stats(0), sim.stats(1));
    assert_eq!(hog.run_time + greedy.run_time, SECOND);
    assert!(hog.run_time >= SECOND * 45 / 100, "{hog:?} {greedy:?}");
}

#[test]
fn a_vcpu_woken_by_an_interrupt_preempts_a_hog_at_once() {
    // Equal weights, and the heaviest hog possible (it is owed 99.6% of the CPU, so the
    // sleeper must have slept longer in its terms: 10 s instead of 37 ms).
    for (hog_weight, t) in [(256, ms(37) + 123), (65535, 10 * SECOND + 123)] {
        let mut q = rq();
        let _ = q.add(id(0), params(256, ms(4)), 0).unwrap();
        let _ = q.add(id(1), params(hog_weight, ms(100)), 0).unwrap();
        assert_eq!(q.schedule(0).run, Some(id(0)));
        let d = q.block(None, us(10)).unwrap();
        assert_eq!(d.run, Some(id(1)));
        let _ = q.timer_expired(t - 1);
        assert_eq!(q.wake(id(0), t), Ok(Action::Reschedule));
        let d = q.schedule(t);
        assert_eq!(
            (d.prev, d.run),
            (Some(id(1)), Some(id(0))),
            "hog weight {hog_weight}"
        );
        assert_eq!(q.stats(id(0), t).unwrap().steal, 0);
        // The hog is back within the sleeper's slice.
        assert_eq!(d.timer, Some(t + ms(4)));
    }
}

/// The slice timer is armed already (two hogs), so only the preemption makes the CPU look
/// again: the wake must say so.
#[test]
fn a_preempting_wake_asks_for_a_reschedule_even_with_the_slice_timer_armed() {
    let mut q = rq();
    for n in 0..3 {
        let _ = q.add(id(n), params(256, ms(10)), 0).unwrap();
    }
    assert_eq!(q.schedule(0).run, Some(id(0)));
    let d = q.block(None, us(1)).unwrap();
    assert_eq!((d.run, d.timer), (Some(id(1)), Some(us(1) + ms(10))));
    let t = ms(9);
    assert_eq!(q.wake(id(0), t), Ok(Action::Reschedule));
    // vCPU 1 is preempted; vCPU 2 (never ran) has the lowest vruntime and runs first.
    let d = q.schedule(t);
    assert_eq!((d.prev, d.run), (Some(id(1)), Some(id(2))));
}

/// The stated latency bound where the woken vCPU does not preempt: it had run recently, so
/// it is less than the wake-up granularity behind the running vCPU; it still has the lowest
/// vruntime and runs when the running vCPU's slice ends.
#[test]
fn a_woken_vcpu_with_the_lowest_vruntime_runs_when_the_running_slice_ends() {
    let mut q = rq();
    let _ = q.add(id(0), params(256, ms(4)), 0).unwrap();
    let _ = q.add(id(1), params(256, ms(4)), 0).unwrap();
    assert_eq!(q.schedule(0).run, Some(id(0)));
    assert_eq!(q.timer_expired(ms(4)).run, Some(id(1)));
    assert_eq!(q.timer_expired(ms(8)).run, Some(id(0)));
    // vCPU 0 waits for an interrupt after 0.1 ms; vCPU 1 runs alone, with no timer.
    let d = q.block(None, ms(8) + us(100)).unwrap();
    assert_eq!((d.run, d.timer), (Some(id(1)), None));
    // 0.4 ms later vCPU 0 is woken: 0.3 ms behind vCPU 1, under the 0.5 ms granularity. The
    // CPU must arm its slice timer: vCPU 1's slice ends at 12.1 ms.
    let t = ms(8) + us(500);
    assert_eq!(q.wake(id(0), t), Ok(Action::Reschedule));
    let d = q.schedule(t);
    assert_eq!((d.run, d.timer), (Some(id(1)), Some(ms(12) + us(100))));
    let d = q.timer_expired(ms(12) + us(100));
    assert_eq!(d.run, Some(id(0)));
    // It waited 4 ms at the start, and from its wake-up to the end of the slice.
    let waited = ms(12) + us(100) - t;
    assert_eq!(q.stats(id(0), ms(13)).unwrap().steal, ms(4) + waited);
    assert!(waited <= ms(4));
}

#[test]
fn a_deadline_wakes_the_vcpu_when_it_passes() {
    let mut q = rq();
    let _ = q.add(id(0), params(256, ms(4)), 0).unwrap();
    let _ = q.add(id(1), params(256, ms(4)), 0).unwrap();
    let _ = q.schedule(0);
    let d = q.block(Some(ms(2) + 7), us(1)).unwrap();
    assert_eq!((d.run, d.timer), (Some(id(1)), Some(ms(2) + 7)));
    // Too early: nothing changes; at the deadline it runs.
    let d = q.timer_expired(ms(2));
    assert_eq!((d.run, d.timer), (Some(id(1)), Some(ms(2) + 7)));
    let d = q.timer_expired(ms(2) + 7);
    assert_eq!(d.run, Some(id(0)));
    assert_eq!(q.state(id(1)), Some(VcpuState::Runnable));
    // A deadline that has passed leaves the vCPU runnable at once.
    let d = q.block(Some(ms(1)), ms(3)).unwrap();
    assert_ne!(
        q.state(id(0)),
        Some(VcpuState::Blocked {
            deadline: Some(ms(1))
        })
    );
    assert!(d.run.is_some());
    // A lone vCPU blocked with a deadline still gets its timer.
    let mut q = rq();
    let _ = q.add(id(0), params(256, ms(4)), 0).unwrap();
    let _ = q.schedule(0);
    let d = q.block(Some(ms(9)), ms(1)).unwrap();
    assert_eq!((d.run, d.timer, d.shared), (None, Some(ms(9)), false));
    assert_eq!(q.timer_expired(ms(9)).run, Some(id(0)));
}

#[test]
fn wakes_that_change_nothing_ask_for_nothing() {
    let mut q = rq();
    let _ = q.add(id(0), params(256, ms(4)), 0).unwrap();
    let _ = q.add(id(1), params(256, ms(4)), 0).unwrap();
    let d = q.schedule(0);
    assert_eq!(d.timer, Some(ms(4)));
    assert_eq!(q.wake(id(0), 5), Ok(Action::None), "running");
    assert_eq!(q.wake(id(1), 5), Ok(Action::None), "runnable");
    // A blocked vCPU whose wake does not preempt, on a CPU whose slice timer is armed.
    let mut q = rq();
    for n in 0..3 {
        let _ = q.add(id(n), params(256, ms(4)), 0).unwrap();
    }
    let _ = q.schedule(0);
    let _ = q.block(None, 0).unwrap();
    // vCPU 1 runs, 2 waits (timer armed at 1's slice end); 0 wakes right away: its
    // vruntime did not fall behind 1's by more than the granularity.
    assert_eq!(q.wake(id(0), us(100)), Ok(Action::None));
}

#[test]
fn a_new_vcpu_or_a_wake_on_an_idle_cpu_asks_for_a_reschedule() {
    let mut q = rq();
    let d = q.schedule(0);
    assert_eq!((d.run, d.timer), (None, None));
    assert_eq!(q.add(id(3), params(256, ms(4)), 1), Ok(Action::Reschedule));
    assert_eq!(q.schedule(1).run, Some(id(3)));
    let d = q.block(None, 2).unwrap();
    assert_eq!(d.run, None);
    assert_eq!(q.wake(id(3), 3), Ok(Action::Reschedule));
    assert_eq!(q.schedule(3).run, Some(id(3)));
}

#[test]
fn removing_the_running_vcpu_asks_for_a_reschedule_and_reports_its_figures() {
    let mut q = rq();
    let _ = q.add(id(0), params(256, ms(4)), 0).unwrap();
    let _ = q.add(id(1), params(256, ms(4)), 0).unwrap();
    let _ = q.schedule(0);
    let (a, s) = q.remove(id(0), ms(3)).unwrap();
    assert_eq!(a, Action::Reschedule);
    assert_eq!(s.run_time, ms(3));
    let d = q.schedule(ms(3));
    assert_eq!((d.prev, d.run, d.shared), (Some(id(0)), Some(id(1)), false));
    assert_eq!(q.stats(id(1), ms(3)).unwrap().steal, ms(3));
    assert_eq!(q.state(id(0)), None);
    assert_eq!(q.vcpus().collect::<Vec<_>>(), [id(1)]);
    // Removing a waiting vCPU reports its steal so far.
    let _ = q.add(id(2), params(256, ms(4)), ms(3)).unwrap();
    let (_, s) = q.remove(id(2), ms(5)).unwrap();
    assert_eq!((s.run_time, s.steal), (0, ms(2)));
}

#[test]
fn yield_hands_the_cpu_to_the_next_vcpu_and_alone_runs_on() {
    let mut q = rq();
    let _ = q.add(id(0), params(256, ms(4)), 0).unwrap();
    assert_eq!(q.schedule(0).run, Some(id(0)));
    assert_eq!(q.yield_now(us(5)).unwrap().run, Some(id(0)));
    let _ = q.add(id(1), params(256, ms(4)), us(5)).unwrap();
    let _ = q.schedule(us(5));
    let d = q.yield_now(us(6)).unwrap();
    assert_eq!((d.prev, d.run), (Some(id(0)), Some(id(1))));
    // And back: the two spin-yield in turn.
    let d = q.yield_now(us(7)).unwrap();
    assert_eq!(d.run, Some(id(0)));
    // A yielder far ahead in credit (it slept, then preempted) still hands the CPU over.
    let _ = q.block(None, us(8)).unwrap();
    assert_eq!(q.wake(id(0), ms(50)), Ok(Action::Reschedule));
    assert_eq!(q.schedule(ms(50)).run, Some(id(0)));
    let d = q.yield_now(ms(50) + 1).unwrap();
    assert_eq!((d.prev, d.run), (Some(id(0)), Some(id(1))));
}

#[test]
fn misuse_is_an_error_not_a_panic() {
    let mut q = rq();
    assert_eq!(q.block(None, 0), Err(SchedError::NothingRunning));
    assert_eq!(q.yield_now(0), Err(SchedError::NothingRunning));
    assert_eq!(q.wake(id(9), 0), Err(SchedError::NotHere(id(9))));
    assert_eq!(q.remove(id(9), 0), Err(SchedError::NotHere(id(9))));
    let _ = q.add(id(1), params(0, 0), 0).unwrap();
    assert_eq!(
        q.add(id(1), params(256, 1), 0),
        Err(SchedError::AlreadyQueued(id(1)))
    );
    // Weight 0 and slice 0 are taken as 1.
    let d = q.schedule(0);
    assert_eq!(d.run, Some(id(1)));
}

#[test]
fn the_clock_never_goes_back() {
    let mut q = rq();
    let _ = q.add(id(0), params(256, ms(4)), ms(10)).unwrap();
    let _ = q.add(id(1), params(256, ms(4)), ms(10)).unwrap();
    let _ = q.schedule(ms(10));
    let _ = q.block(None, ms(11)).unwrap();
    // Another CPU read the counter a little before this CPU's last call.
    assert_eq!(q.wake(id(0), ms(9)), Ok(Action::Reschedule));
    let d = q.schedule(ms(9));
    assert!(d.timer.is_none_or(|t| t >= ms(11)), "{d:?}");
    let s0 = q.stats(id(0), 0).unwrap();
    let s1 = q.stats(id(1), 0).unwrap();
    assert_eq!(
        s0.run_time + s1.run_time + s0.steal + s1.steal,
        ms(1) + ms(1)
    );
}

#[test]
fn weight_1_hogs_over_centuries_of_ticks_stay_fair() {
    // Slices of 2^50 ticks at weight 1 add 2^58 of vruntime each: min_vruntime passes the
    // renormalization point many times.
    let slice = 1u64 << 50;
    let mut sim = hogs(&[(1, slice), (1, slice), (3, slice)]);
    sim.run_until(50 * slice);
    let runs: Vec<Ticks> = (0..3).map(|n| sim.stats(n).run_time).collect();
    assert_eq!(runs.iter().sum::<u64>(), 50 * slice);
    assert!(
        off_percent(runs[2], 30.0 * slice as f64) <= 10.0,
        "{runs:?}"
    );
    assert!(runs[0].abs_diff(runs[1]) <= slice, "{runs:?}");
}

#[test]
fn unit_conversions_round_and_saturate() {
    assert_eq!(us_to_ticks(4000, 62_500_000), 250_000);
    assert_eq!(
        us_to_ticks(1, 1_000),
        1,
        "a non-zero time is at least a tick"
    );
    assert_eq!(us_to_ticks(0, 1_000), 0);
    assert_eq!(us_to_ticks(u64::MAX, u64::MAX), u64::MAX);
    assert_eq!(ticks_to_ns(62_500_000, 62_500_000), 1_000_000_000);
    assert_eq!(ticks_to_ns(3, 54_000_000), 55);
    assert_eq!(ticks_to_ns(5, 0), 0);
    assert_eq!(ticks_to_ns(u64::MAX, 1), u64::MAX);
    let p = VcpuParams::from_config(512, 4000, 54_000_000);
    assert_eq!((p.weight, p.slice), (512, 216_000));
    let t = Tunables::for_counter(FREQ);
    assert!(t.wake_credit > t.wakeup_granularity);
}
