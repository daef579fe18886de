//! Calls to the platform firmware's PSCI (SMC or HVC conduit, chosen from the DTB), used for
//! starting secondary CPUs and powering the machine off or resetting it.
use core::arch::asm;
use core::sync::atomic::{AtomicU8, Ordering};

pub const PSCI_VERSION: u32 = 0x8400_0000;
pub const PSCI_FEATURES: u32 = 0x8400_000a;
pub const SMCCC_VERSION: u32 = 0x8000_0000;
pub const SMCCC_ARCH_FEATURES: u32 = 0x8000_0001;
pub const CPU_ON_64: u32 = 0xc400_0003;
pub const SYSTEM_OFF: u32 = 0x8400_0008;
pub const SYSTEM_RESET: u32 = 0x8400_0009;

const NONE: u8 = 0;
const SMC: u8 = 1;
const HVC: u8 = 2;
static CONDUIT: AtomicU8 = AtomicU8::new(NONE);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Conduit {
    Smc,
    Hvc,
}

pub fn set_conduit(c: Option<Conduit>) {
    let v = match c {
        Some(Conduit::Smc) => SMC,
        Some(Conduit::Hvc) => HVC,
        None => NONE,
    };
    CONDUIT.store(v, Ordering::Relaxed);
}

pub fn available() -> bool {
    CONDUIT.load(Ordering::Relaxed) != NONE
}

/// Makes an SMCCC call; `None` when the platform has no PSCI.
pub fn call(func: u32, a1: u64, a2: u64, a3: u64) -> Option<i64> {
    let mut x0 = func as u64;
    match CONDUIT.load(Ordering::Relaxed) {
        // SAFETY: an SMCCC call into firmware; per SMCCC 1.1 it preserves x4-x17 and may clobber
        // x0-x3; we declare x0-x3 (and x4-x17 for older firmware) clobbered.
        SMC => unsafe {
            asm!("smc #0", inout("x0") x0, inout("x1") a1 => _, inout("x2") a2 => _,
                 inout("x3") a3 => _, out("x4") _, out("x5") _, out("x6") _, out("x7") _,
                 out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _,
                 out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _,
                 options(nostack))
        },
        // SAFETY: as above, through the HVC conduit.
        HVC => unsafe {
            asm!("hvc #0", inout("x0") x0, inout("x1") a1 => _, inout("x2") a2 => _,
                 inout("x3") a3 => _, out("x4") _, out("x5") _, out("x6") _, out("x7") _,
                 out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _,
                 out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _,
                 options(nostack))
        },
        _ => return None,
    }
    Some(x0 as i64)
}

pub fn cpu_on(mpidr: u64, entry: u64, context: u64) -> Option<i64> {
    call(CPU_ON_64, mpidr, entry, context)
}

pub fn system_off() -> Option<i64> {
    call(SYSTEM_OFF, 0, 0, 0)
}

pub fn system_reset() -> Option<i64> {
    call(SYSTEM_RESET, 0, 0, 0)
}

/// The firmware's SMCCC_ARCH_FEATURES answer for `fid`, or `None` when there is no firmware
/// or it implements less than SMCCC 1.1. Discovered as Linux does it (DEN0028 §7.1): PSCI
/// 1.0 or later, PSCI_FEATURES says SMCCC_VERSION exists, SMCCC_VERSION >= 1.1. An SMCCC call
/// other than PSCI is never made to firmware that did not say it takes one (QEMU's built-in
/// PSCI, for one, would make it UNDEFINED).
pub fn arch_features(fid: u32) -> Option<i32> {
    let version = call(PSCI_VERSION, 0, 0, 0)? as u32;
    if version >> 16 < 1 {
        return None;
    }
    if call(PSCI_FEATURES, u64::from(SMCCC_VERSION), 0, 0)? as i32 != 0 {
        return None;
    }
    let smccc = call(SMCCC_VERSION, 0, 0, 0)? as i32;
    if smccc < 0x1_0001 {
        return None;
    }
    Some(call(SMCCC_ARCH_FEATURES, u64::from(fid), 0, 0)? as i32)
}
