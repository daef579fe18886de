//! The generic timer's virtual counter and virtual timer (Arm ARM D12 "The Generic Timer in
//! AArch64 state"): CNTVCT_EL0, CNTFRQ_EL0, CNTV_CTL_EL0, CNTV_CVAL_EL0. The virtual timer's
//! interrupt is PPI 11, INTID 27 (Arm BSA / the DTB's `/timer` node, second entry).
use core::arch::asm;

/// INTID of the EL1 virtual timer interrupt.
pub const VTIMER_INTID: u32 = 27;

/// CNTV_CTL_EL0 fields (Arm ARM D24.10.16): ENABLE [0], IMASK [1], ISTATUS [2].
pub const CTL_ENABLE: u64 = 1 << 0;
pub const CTL_IMASK: u64 = 1 << 1;
pub const CTL_ISTATUS: u64 = 1 << 2;

/// The counter frequency in Hz.
pub fn cntfrq() -> u64 {
    let v: u64;
    // SAFETY: reading CNTFRQ_EL0 has no side effects.
    unsafe { asm!("mrs {}, cntfrq_el0", out(reg) v, options(nomem, nostack)) };
    v
}

/// The virtual count, read after an ISB so it is not taken early (Arm ARM D12.2.2).
pub fn cntvct() -> u64 {
    let v: u64;
    // SAFETY: reading CNTVCT_EL0 has no side effects.
    unsafe { asm!("isb", "mrs {}, cntvct_el0", out(reg) v, options(nomem, nostack)) };
    v
}

pub fn set_cntv_cval(v: u64) {
    // SAFETY: programs this CPU's virtual timer compare value; no memory effects.
    unsafe { asm!("msr cntv_cval_el0, {}", "isb", in(reg) v, options(nomem, nostack)) };
}

pub fn set_cntv_ctl(v: u64) {
    // SAFETY: enables/masks this CPU's virtual timer; no memory effects.
    unsafe { asm!("msr cntv_ctl_el0, {}", "isb", in(reg) v, options(nomem, nostack)) };
}

pub fn cntv_ctl() -> u64 {
    let v: u64;
    // SAFETY: reading CNTV_CTL_EL0 has no side effects.
    unsafe { asm!("mrs {}, cntv_ctl_el0", out(reg) v, options(nomem, nostack)) };
    v
}

/// `ticks` of a `freq` Hz counter in nanoseconds.
pub fn ticks_to_ns(ticks: u64, freq: u64) -> u64 {
    if freq == 0 {
        return 0;
    }
    (ticks as u128 * 1_000_000_000 / freq as u128) as u64
}

/// Busy-waits `ms` milliseconds of virtual-counter time.
pub fn delay_ms(ms: u64) {
    let f = cntfrq();
    let end = cntvct().saturating_add(f.saturating_mul(ms) / 1000);
    while cntvct() < end {
        core::hint::spin_loop();
    }
}
