//! Per-CPU identity: each physical CPU's index (0 = the boot CPU) lives in a per-CPU block whose
//! address is kept in TPIDR_EL2.
use super::boot::MAX_CPUS;
use aarch64_cpu::registers::{MPIDR_EL1, Readable, TPIDR_EL2, Writeable};
use core::sync::atomic::{AtomicU64, Ordering};

/// What every physical CPU knows about itself.
#[repr(C)]
pub struct PerCpu {
    pub index: usize,
    pub mpidr: AtomicU64,
    /// Opaque pointer for the runtime (the vCPU this CPU runs), 0 when idle.
    pub current: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const PERCPU_INIT: PerCpu = PerCpu {
    index: 0,
    mpidr: AtomicU64::new(0),
    current: AtomicU64::new(0),
};

static PERCPU: [PerCpu; MAX_CPUS] = {
    let mut a = [PERCPU_INIT; MAX_CPUS];
    let mut i = 0;
    while i < MAX_CPUS {
        a[i].index = i;
        i += 1;
    }
    a
};

/// Binds this physical CPU to per-CPU block `index` (called once per CPU at boot).
pub fn init_this_cpu(index: usize) {
    let pc = &PERCPU[index];
    pc.mpidr
        .store(MPIDR_EL1.get() & 0xff_00ff_ffff, Ordering::Relaxed);
    TPIDR_EL2.set(pc as *const PerCpu as u64);
}

/// This CPU's per-CPU block (CPU 0's before `init_this_cpu` ran).
pub fn this_cpu() -> &'static PerCpu {
    let p = TPIDR_EL2.get();
    if p == 0 {
        return &PERCPU[0];
    }
    // SAFETY: TPIDR_EL2 is only ever set by init_this_cpu to the address of an element of the
    // static PERCPU array, which lives for the whole program.
    unsafe { &*(p as *const PerCpu) }
}

/// `yield`: a hint that this CPU spins waiting for others (a polling loop). No effect on
/// hardware beyond the hint; under QEMU's round-robin TCG (`-icount`) it hands the turn to
/// the next CPU, so a polling CPU does not eat the time slice of the vCPUs it waits for.
#[inline]
pub fn yield_hint() {
    // SAFETY: a hint instruction: no memory access, no register or flag change.
    unsafe { core::arch::asm!("yield", options(nomem, nostack, preserves_flags)) };
}

pub fn current_index() -> usize {
    this_cpu().index
}

pub fn percpu(index: usize) -> Option<&'static PerCpu> {
    PERCPU.get(index)
}

/// MPIDR_EL1 affinity bits (Aff3..Aff0) of this CPU.
pub fn mpidr_affinity() -> u64 {
    MPIDR_EL1.get() & 0xff_00ff_ffff
}

/// Stops this CPU for good: interrupts masked, waiting forever.
pub fn halt() -> ! {
    loop {
        aarch64_cpu::asm::wfi();
    }
}

/// The system counter and its frequency (CNTPCT_EL0, CNTFRQ_EL0).
pub fn counter() -> u64 {
    use aarch64_cpu::registers::CNTPCT_EL0;
    CNTPCT_EL0.get()
}

pub fn counter_freq() -> u64 {
    use aarch64_cpu::registers::CNTFRQ_EL0;
    CNTFRQ_EL0.get()
}

/// Arms this CPU's EL2 physical timer (CNTHP, PPI 26) to fire when the physical counter
/// reaches `at`, or switches it off (`None`). Arm ARM D11.2: CNTHP_CVAL_EL2, CNTHP_CTL_EL2
/// (ENABLE [0], IMASK [1]).
pub fn set_hyp_timer(at: Option<u64>) {
    use aarch64_cpu::registers::{CNTHP_CTL_EL2, Writeable};
    match at {
        Some(t) => {
            // SAFETY: CNTHP_CVAL_EL2 (S3_4_C14_C2_2) only sets when the EL2 timer fires.
            unsafe {
                core::arch::asm!("msr s3_4_c14_c2_2, {}", in(reg) t, options(nomem, nostack))
            };
            CNTHP_CTL_EL2.write(CNTHP_CTL_EL2::ENABLE::SET);
        }
        None => CNTHP_CTL_EL2.set(0),
    }
}
