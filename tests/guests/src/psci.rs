//! SMCCC calls (Arm DEN 0028) and the PSCI functions the guests use (Arm DEN 0022).
//!
//! x0 carries the function ID and the result, x1-x3 arguments and further results. The
//! hypervisor implements SMCCC 1.1 (x4-x17 preserved) but the helpers treat x4-x17 as clobbered
//! anyway, so that a buggy or older callee cannot corrupt the program.
use core::arch::asm;
use core::fmt;

use crate::exception::{self, ExcAt, Exception};

/// SMCCC_VERSION (DEN0028 §7.2).
pub const SMCCC_VERSION: u64 = 0x8000_0000;
/// SMCCC_ARCH_FEATURES (DEN0028 §7.3).
pub const SMCCC_ARCH_FEATURES: u64 = 0x8000_0001;
/// PSCI function IDs (DEN0022 §5.1, table "PSCI function IDs"); the 64-bit variants where both
/// exist.
pub const PSCI_VERSION: u64 = 0x8400_0000;
pub const CPU_SUSPEND_64: u64 = 0xc400_0001;
pub const CPU_OFF: u64 = 0x8400_0002;
pub const CPU_ON_32: u64 = 0x8400_0003;
pub const CPU_ON_64: u64 = 0xc400_0003;
pub const AFFINITY_INFO_32: u64 = 0x8400_0004;
pub const AFFINITY_INFO_64: u64 = 0xc400_0004;
pub const MIGRATE_64: u64 = 0xc400_0005;
pub const MIGRATE_INFO_TYPE: u64 = 0x8400_0006;
pub const SYSTEM_OFF: u64 = 0x8400_0008;
pub const SYSTEM_RESET: u64 = 0x8400_0009;
pub const PSCI_FEATURES: u64 = 0x8400_000a;
pub const NODE_HW_STATE_64: u64 = 0xc400_000d;
pub const SYSTEM_SUSPEND_64: u64 = 0xc400_000e;
pub const PSCI_STAT_COUNT_64: u64 = 0xc400_0011;

/// PSCI return codes (DEN0022 §5.2.2).
pub const SUCCESS: i64 = 0;
pub const NOT_SUPPORTED: i64 = -1;
pub const INVALID_PARAMETERS: i64 = -2;
pub const DENIED: i64 = -3;
pub const ALREADY_ON: i64 = -4;
pub const ON_PENDING: i64 = -5;
pub const INTERNAL_FAILURE: i64 = -6;
pub const NOT_PRESENT: i64 = -7;
pub const DISABLED: i64 = -8;
pub const INVALID_ADDRESS: i64 = -9;

/// AFFINITY_INFO results (DEN0022 §5.8.2).
pub const AFF_ON: i64 = 0;
pub const AFF_OFF: i64 = 1;
pub const AFF_ON_PENDING: i64 = 2;

/// The name of a negative PSCI return code.
pub fn error_name(r: i64) -> Option<&'static str> {
    Some(match r {
        NOT_SUPPORTED => "NOT_SUPPORTED",
        INVALID_PARAMETERS => "INVALID_PARAMETERS",
        DENIED => "DENIED",
        ALREADY_ON => "ALREADY_ON",
        ON_PENDING => "ON_PENDING",
        INTERNAL_FAILURE => "INTERNAL_FAILURE",
        NOT_PRESENT => "NOT_PRESENT",
        DISABLED => "DISABLED",
        INVALID_ADDRESS => "INVALID_ADDRESS",
        _ => return None,
    })
}

/// The instruction that makes the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conduit {
    /// `hvc #0`, what the guest DTB's `/psci` `method = "hvc"` names.
    Hvc,
    /// `smc #0` (trapped by the hypervisor with HCR_EL2.TSC; UNDEFINED at EL1 without EL2/EL3).
    Smc,
    /// `hvc #1`: SMCCC calls use immediate 0 (DEN0028 §2.8), other values are not calls.
    Hvc1,
    /// `hvc #0xffff`.
    HvcFfff,
    /// `smc #1`.
    Smc1,
}

impl fmt::Display for Conduit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Conduit::Hvc => "hvc",
            Conduit::Smc => "smc",
            Conduit::Hvc1 => "hvc#1",
            Conduit::HvcFfff => "hvc#0xffff",
            Conduit::Smc1 => "smc#1",
        })
    }
}

macro_rules! smccc_asm {
    ($insn:literal, $pc:ident, $r0:ident, $r1:ident, $r2:ident, $r3:ident) => {
        asm!(
            "adr {pc}, 2f",
            "2:",
            $insn,
            "nop",
            pc = out(reg) $pc,
            inout("x0") $r0, inout("x1") $r1, inout("x2") $r2, inout("x3") $r3,
            out("x4") _, out("x5") _, out("x6") _, out("x7") _, out("x8") _, out("x9") _,
            out("x10") _, out("x11") _, out("x12") _, out("x13") _, out("x14") _,
            out("x15") _, out("x16") _, out("x17") _,
            options(nostack),
        )
    };
}

/// Makes the call; `pc` gets the address of the call instruction. Registers keep their inputs
/// when the instruction faults (the vector skips it).
fn raw(c: Conduit, f: u64, a1: u64, a2: u64, a3: u64) -> ([u64; 4], u64) {
    let (mut r0, mut r1, mut r2, mut r3) = (f, a1, a2, a3);
    let pc: u64;
    // SAFETY: an SMCCC call: the callee reads x0-x3 and returns results in them; x4-x17 are
    // declared clobbered; memory is not touched by a conforming callee.
    unsafe {
        match c {
            Conduit::Hvc => smccc_asm!("hvc #0", pc, r0, r1, r2, r3),
            Conduit::Smc => smccc_asm!("smc #0", pc, r0, r1, r2, r3),
            Conduit::Hvc1 => smccc_asm!("hvc #1", pc, r0, r1, r2, r3),
            Conduit::HvcFfff => smccc_asm!("hvc #0xffff", pc, r0, r1, r2, r3),
            Conduit::Smc1 => smccc_asm!("smc #1", pc, r0, r1, r2, r3),
        }
    }
    ([r0, r1, r2, r3], pc)
}

/// An SMCCC call: returns x0..x3. Not probed: an exception it raises is fatal (use
/// [`probe_call`] for calls that may be UNDEFINED).
pub fn call(c: Conduit, f: u64, a1: u64, a2: u64, a3: u64) -> [u64; 4] {
    raw(c, f, a1, a2, a3).0
}

/// The result of a probed call.
#[derive(Clone, Copy, Debug)]
pub struct CallOutcome {
    pub fid: u64,
    pub args: [u64; 3],
    pub x: [u64; 4],
    pub exc: Option<Exception>,
    pub insn: u64,
}

impl CallOutcome {
    /// x0 as a signed return value: sign-extended from W0 for SMC32/HVC32 function IDs (bit 30
    /// clear, DEN0028 §2.5: results of 32-bit calls are in W registers).
    pub fn ret(&self) -> i64 {
        ret_value(self.fid, self.x[0])
    }
}

fn ret_value(fid: u64, x0: u64) -> i64 {
    if fid & (1 << 30) != 0 {
        x0 as i64
    } else {
        x0 as u32 as i32 as i64
    }
}

/// `ret=<value> (<NAME>)`, plus `x0=` when the upper half of x0 is not the sign extension of a
/// 32-bit result and `x1=.. x2=.. x3=..` when the callee changed them; or the exception.
impl fmt::Display for CallOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(e) = &self.exc {
            return write!(f, "{}", ExcAt(e, self.insn));
        }
        let r = self.ret();
        if (-64..=64).contains(&r) {
            write!(f, "ret={r}")?;
        } else {
            write!(f, "ret={:#x}", self.x[0])?;
        }
        if let Some(n) = error_name(r) {
            write!(f, " ({n})")?;
        }
        if r as u64 != self.x[0] {
            write!(f, " x0={:#x}", self.x[0])?;
        }
        if self.x[1..] != self.args {
            write!(
                f,
                " x1={:#x} x2={:#x} x3={:#x}",
                self.x[1], self.x[2], self.x[3]
            )?;
        }
        Ok(())
    }
}

/// Makes the call under [`exception::probe`] (an UNDEFINED SMC or HVC is reported, not fatal).
pub fn probe_call(c: Conduit, f: u64, a1: u64, a2: u64, a3: u64) -> CallOutcome {
    let ((x, insn), exc) = exception::probe(|| raw(c, f, a1, a2, a3));
    CallOutcome {
        fid: f,
        args: [a1, a2, a3],
        x,
        exc,
        insn,
    }
}

/// PSCI_VERSION: major in [31:16], minor in [15:0].
pub fn version(c: Conduit) -> u64 {
    call(c, PSCI_VERSION, 0, 0, 0)[0] & 0xffff_ffff
}

/// PSCI_FEATURES for function `fid`: a negative error or the feature flags.
pub fn features(c: Conduit, fid: u32) -> i64 {
    ret_value(PSCI_FEATURES, call(c, PSCI_FEATURES, fid as u64, 0, 0)[0])
}

/// CPU_ON (64-bit): start `target_mpidr` at `entry` (a physical address) with x0 = `context`.
pub fn cpu_on(c: Conduit, target_mpidr: u64, entry: u64, context: u64) -> i64 {
    call(c, CPU_ON_64, target_mpidr, entry, context)[0] as i64
}

/// AFFINITY_INFO (64-bit): 0 ON, 1 OFF, 2 ON_PENDING, or a negative error.
pub fn affinity_info(c: Conduit, target: u64, lowest_level: u64) -> i64 {
    call(c, AFFINITY_INFO_64, target, lowest_level, 0)[0] as i64
}

/// CPU_OFF: powers the calling CPU down; does not return on success.
pub fn cpu_off(c: Conduit) -> i64 {
    ret_value(CPU_OFF, call(c, CPU_OFF, 0, 0, 0)[0])
}
