//! Sharing physical CPUs between vCPUs: one run queue per physical CPU, weighted fair
//! scheduling by virtual run time, and where new vCPUs are placed.
//!
//! This module owns *decisions* only. [`RunQueue`] holds the vCPUs placed on one physical CPU
//! and answers the questions the runtime asks on that CPU: which vCPU runs next, when the
//! CPU's hypervisor timer (CNTHP) must fire, whether WFI/WFE must trap. It never touches a
//! register, a timer or another CPU, holds no global state and reads no clock: time is a plain
//! count of system-counter ticks passed in by the caller. The runtime keeps one `RunQueue` per
//! physical CPU behind that CPU's lock and carries the decisions out (docs/scheduling.md says
//! how). [`placement`] decides which physical CPU each vCPU of a new VM gets.
//!
//! # The policy
//!
//! Weighted fairness by virtual run time, as Linux's CFS does it (and close to what Xen's
//! credit2 achieves with credits): each vCPU has a `vruntime` that grows by its run time
//! scaled by `DEFAULT_WEIGHT / weight`, so a vCPU of weight 768 ages three times slower than
//! one of weight 256 and gets three times the CPU when both are always runnable. The vCPU with
//! the lowest `vruntime` runs, for at most its time slice (`timeslice_us` of its VM); at the
//! end of the slice the lowest is picked again. A CPU's `min_vruntime` follows the lowest
//! runnable `vruntime` and never goes back.
//!
//! - **Blocking** (WFI, PSCI CPU_SUSPEND) takes a vCPU off the CPU with an optional wake
//!   deadline (its armed EL1 timer); a blocked vCPU costs the others nothing.
//! - **Waking** puts a vCPU back with `vruntime = max(own, min_vruntime - wake_credit)`: a
//!   vCPU that slept is slightly ahead of everyone (so it runs promptly), but sleeping never
//!   banks more than `wake_credit` of CPU time (so a waker cannot starve the others). A woken
//!   vCPU preempts the running one when it is more than `wakeup_granularity` behind it.
//! - **Latency bound** (tested in `model_tests`): a queued vCPU whose `vruntime` is strictly
//!   the lowest of its CPU runs no later than the end of the running vCPU's time slice. A vCPU
//!   that slept at least `wake_credit - wakeup_granularity` of virtual time beyond the others
//!   preempts at once. Every runnable vCPU runs within a bound that depends only on the
//!   weights and slices of its CPU (no starvation).
//! - **Yield** (a trapped WFE: the guest spins on a lock) hands the CPU to the next vCPU and
//!   gives up the yielder's lead over it, nothing more.
//! - **Alone on its CPU**: a CPU with one vCPU placed on it has no tick (no timer unless that
//!   vCPU is blocked with a deadline) and WFI/WFE untrapped: today's dedicated fast path.
//! - **Stolen time**: the time a vCPU is runnable but not running, per vCPU, for PV_TIME
//!   ([`crate::pv_time`]).
#![forbid(unsafe_code)]

pub mod placement;
mod runqueue;

pub use runqueue::{Action, Decision, RunQueue, SchedError, VcpuState, VcpuStats};

/// A time or a duration in system-counter ticks (CNTPCT_EL0, CNTFRQ_EL0 ticks per second).
pub type Ticks = u64;

/// The weight of a vCPU whose VM does not say (`weight` in vm.toml): the unit of fairness.
pub const DEFAULT_WEIGHT: u32 = 256;

/// A vCPU, named by the id of its VM and its index in the VM.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct VcpuId {
    pub vm: usize,
    pub vcpu: usize,
}

/// How a vCPU shares its CPU.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct VcpuParams {
    /// Its share of a contended CPU relative to the other vCPUs there (1..=65535; 0 is taken
    /// as 1).
    pub weight: u32,
    /// The longest it runs before the others are considered again (ticks, at least 1).
    pub slice: Ticks,
}

impl VcpuParams {
    /// From a VM's `weight` and `timeslice_us`, for a counter of `freq` Hz.
    pub fn from_config(weight: u32, timeslice_us: u32, freq: u64) -> Self {
        VcpuParams {
            weight,
            slice: us_to_ticks(u64::from(timeslice_us), freq),
        }
    }
}

/// Knobs of a run queue, in ticks.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Tunables {
    /// Most virtual time a waking vCPU is placed behind `min_vruntime`.
    pub wake_credit: Ticks,
    /// A woken vCPU preempts the running one only if it is more than this much virtual time
    /// behind it (avoids switching back and forth between near-equals).
    pub wakeup_granularity: Ticks,
}

/// Wake credit: 2 ms (half the default time slice, as CFS gives sleepers half its latency).
pub const WAKE_CREDIT_US: u64 = 2000;
/// Wake-up granularity: 0.5 ms (CFS uses 1 ms at 6 ms latency; our default slice is 4 ms).
pub const WAKEUP_GRANULARITY_US: u64 = 500;

impl Tunables {
    /// The defaults for a system counter of `freq` Hz.
    pub fn for_counter(freq: u64) -> Self {
        Tunables {
            wake_credit: us_to_ticks(WAKE_CREDIT_US, freq),
            wakeup_granularity: us_to_ticks(WAKEUP_GRANULARITY_US, freq),
        }
    }
}

/// `us` microseconds in ticks of a `freq` Hz counter (at least 1 tick for a non-zero `us`).
pub fn us_to_ticks(us: u64, freq: u64) -> Ticks {
    let t = u128::from(us) * u128::from(freq) / 1_000_000;
    let t = u64::try_from(t).unwrap_or(u64::MAX);
    if us > 0 { t.max(1) } else { 0 }
}

/// `ticks` of a `freq` Hz counter in nanoseconds (0 for a zero frequency).
pub fn ticks_to_ns(ticks: Ticks, freq: u64) -> u64 {
    if freq == 0 {
        return 0;
    }
    u64::try_from(u128::from(ticks) * 1_000_000_000 / u128::from(freq)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;
