//! SMCCC and PSCI for guests: function identifier decoding (SMC Calling Convention, Arm DEN 0028)
//! and PSCI 1.1 (Arm DEN 0022) as a per-VM state machine of vCPU power states.
//!
//! This module owns the *decisions*: given the calling vCPU and its x0..x3, [`Psci::call`]
//! returns a [`PsciAction`] the exit handler carries out (write return values, start another
//! vCPU, stop this one, power off or reset the VM). It never touches a vCPU context, a physical
//! CPU or the firmware. The power states are atomics, so the vCPUs of one VM may call in
//! concurrently without a lock: two racing CPU_ONs for one target give exactly one SUCCESS.
//!
//! CPU_ON is synchronous as the guest sees it (DEN0022 §5.6: ON_PENDING belongs to
//! implementations whose CPU_ON is asynchronous): once a CPU_ON has succeeded, the start is
//! committed (the target's physical CPU picks it up from its mailbox and cannot refuse it), so
//! the target is ON at once: a concurrent CPU_ON gets ALREADY_ON and AFFINITY_INFO reports ON,
//! as KVM answers (arch/arm64/kvm/psci.c) and as Linux and kvm-unit-tests expect. ON_PENDING is
//! never reported.
//!
//! A VM whose last ON vCPU calls CPU_OFF has nothing left that could run or start another
//! vCPU: [`PsciAction::LastVcpuOff`] tells the caller to power the VM off, as SYSTEM_OFF would.
//!
//! The conduit does not matter here: a guest HVC and a trapped guest SMC (HCR_EL2.TSC) land in
//! the same [`Psci::call`]. (An SMC trap is taken *before* the instruction completes, so for it
//! the caller also advances ELR_EL2 by 4; an HVC returns to the next instruction by itself.)
//!
//! Function IDs and return codes come from the `smccc` crate.
#![forbid(unsafe_code)]

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use smccc::arch::{
    SMCCC_ARCH_FEATURES, SMCCC_ARCH_SOC_ID, SMCCC_ARCH_WORKAROUND_1, SMCCC_ARCH_WORKAROUND_2,
    SMCCC_ARCH_WORKAROUND_3, SMCCC_VERSION,
};
use smccc::psci::{self, error as perr};
use tock_registers::LocalRegisterCopy;

pub use crate::mitigations::Mitigation;
use tock_registers::register_bitfields;

register_bitfields! [u32,
    /// SMCCC Function Identifier, passed in W0 (DEN0028 §2.5 "Function Identifier").
    pub FUNCTION_ID [
        /// [31] 1 = Fast Call, 0 = Yielding Call.
        FAST OFFSET(31) NUMBITS(1) [],
        /// [30] 1 = SMC64/HVC64 calling convention, 0 = SMC32/HVC32.
        SMC64 OFFSET(30) NUMBITS(1) [],
        /// [29:24] Owning Entity Number.
        OWNER OFFSET(24) NUMBITS(6) [],
        /// [16] SVE live state hint (SMCCC v1.3): the caller holds no live SVE state. Callees
        /// ignore it when decoding.
        SVE_HINT OFFSET(16) NUMBITS(1) [],
        /// [15:0] Function Number.
        NUMBER OFFSET(0) NUMBITS(16) []
    ]
];

/// PSCI version implemented: 1.1 (DEN0022 §5.1.1: major in [30:16], minor in [15:0]).
pub const PSCI_VERSION_1_1: u32 = 0x0001_0001;
/// SMCCC version implemented: 1.1 (DEN0028 §7.2: same layout).
pub const SMCCC_VERSION_1_1: u32 = 0x0001_0001;
/// MIGRATE_INFO_TYPE: "Trusted OS is either not present or does not require migration"
/// (DEN0022 §5.7.3).
pub const MIGRATE_INFO_TYPE_NOT_PRESENT: u64 = 2;
/// PSCI_FEATURES for CPU_SUSPEND: bit 1 = the power_state parameter uses the extended StateID
/// format, bit 0 = OS-initiated mode supported (DEN0022 §5.15.2). The same answer KVM gives.
pub const CPU_SUSPEND_FEATURES: u64 = 1 << 1;
/// SMCCC_ARCH_FEATURES answer for ARCH_WORKAROUND_1/3 on a PE that does not need it (the
/// value Linux's `SMCCC_ARCH_WORKAROUND_RET_UNAFFECTED` names; DEN0028 §7.5.2).
pub const ARCH_WORKAROUND_RET_UNAFFECTED: i32 = 1;

/// The Affinity fields of MPIDR_EL1 (Arm ARM D24.2.117: Aff3 [39:32], Aff2 [23:16],
/// Aff1 [15:8], Aff0 [7:0]); a PSCI target_cpu must have every other bit zero.
pub const MPIDR_AFFINITY_MASK: u64 = 0xff_00ff_ffff;

/// Owning entities of SMCCC calls (DEN0028 §6.2, table "Allocation of values").
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Owner {
    /// 0: Arm Architecture Calls (SMCCC_VERSION, ARCH_FEATURES, workarounds).
    Arch,
    /// 1: CPU Service Calls.
    Cpu,
    /// 2: SiP Service Calls.
    Sip,
    /// 3: OEM Service Calls.
    Oem,
    /// 4: Standard Secure Service Calls (PSCI, SDEI, TRNG, ...).
    StandardSecure,
    /// 5: Standard Hypervisor Service Calls.
    StandardHypervisor,
    /// 6: Vendor Specific Hypervisor Service Calls.
    VendorHypervisor,
    /// 7: Vendor Specific EL3 Monitor Calls.
    VendorEl3,
    /// 48-49: Trusted Application Calls.
    TrustedApp(u8),
    /// 50-63: Trusted OS Calls.
    TrustedOs(u8),
    /// 8-47: reserved.
    Reserved(u8),
}

/// A decoded SMCCC Function Identifier.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FunctionId(pub u32);

impl FunctionId {
    /// The identifier in W0 (the upper half of X0 is ignored, DEN0028 §2.5).
    pub fn from_x0(x0: u64) -> Self {
        FunctionId(x0 as u32)
    }
    fn reg(self) -> LocalRegisterCopy<u32, FUNCTION_ID::Register> {
        LocalRegisterCopy::new(self.0)
    }
    pub fn is_fast(self) -> bool {
        self.reg().is_set(FUNCTION_ID::FAST)
    }
    /// SMC64/HVC64 convention (arguments and results are X registers).
    pub fn is_64(self) -> bool {
        self.reg().is_set(FUNCTION_ID::SMC64)
    }
    pub fn owner(self) -> Owner {
        match self.reg().read(FUNCTION_ID::OWNER) as u8 {
            0 => Owner::Arch,
            1 => Owner::Cpu,
            2 => Owner::Sip,
            3 => Owner::Oem,
            4 => Owner::StandardSecure,
            5 => Owner::StandardHypervisor,
            6 => Owner::VendorHypervisor,
            7 => Owner::VendorEl3,
            n @ 48..=49 => Owner::TrustedApp(n),
            n @ 50..=63 => Owner::TrustedOs(n),
            n => Owner::Reserved(n),
        }
    }
    pub fn number(self) -> u16 {
        self.reg().read(FUNCTION_ID::NUMBER) as u16
    }
    /// The identifier with the SVE hint bit cleared, for matching.
    pub fn without_hints(self) -> u32 {
        let mut r = self.reg();
        r.modify(FUNCTION_ID::SVE_HINT::CLEAR);
        r.get()
    }
}

/// A vCPU's power state as PSCI sees it; the discriminants are AFFINITY_INFO's return values
/// (DEN0022 §5.8.2). There is no ON_PENDING (2): CPU_ON is synchronous (see the module
/// comment).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum PowerState {
    On = 0,
    Off = 1,
}

impl PowerState {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => PowerState::On,
            _ => PowerState::Off,
        }
    }
}

/// What the guest is told about a CPU vulnerability workaround firmware call (decided from the
/// host CPU by [`crate::mitigations`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Workaround {
    /// SMCCC_ARCH_FEATURES answers NOT_SUPPORTED (-1): no mitigation is available (Linux then
    /// reports the CPU as vulnerable or relies on its own mitigations, e.g. SSBS); a call
    /// returns NOT_SUPPORTED.
    #[default]
    NotSupported,
    /// The PE is not affected: ARCH_FEATURES answers "not required" (1 for WORKAROUND_1/3,
    /// NOT_REQUIRED (-2) for WORKAROUND_2, as KVM does), and a call is a no-op returning 0.
    NotRequired,
    /// WORKAROUND_2 only: the hypervisor keeps the firmware's mitigation on for good on every
    /// physical CPU that runs a vCPU; the guest is told NOT_REQUIRED (-2), as KVM tells it.
    PermanentlyMitigated,
    /// WORKAROUND_1/3: the PE is affected and the call is implemented: ARCH_FEATURES answers
    /// SUCCESS (0), and a call carries out the mitigation ([`PsciAction::Mitigate`]).
    Mitigated(Mitigation),
}

/// Per-VM SMCCC choices.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct SmcccConfig {
    /// CVE-2017-5715 (Spectre v2) branch predictor invalidation.
    pub workaround_1: Workaround,
    /// CVE-2018-3639 (Spectre v4) speculative store bypass.
    pub workaround_2: Workaround,
    /// CVE-2022-23960 (Spectre-BHB).
    pub workaround_3: Workaround,
    /// Paravirtualized stolen time (Arm DEN0057A, [`crate::pv_time`]) is offered: the VM's
    /// record page is mapped at [`crate::pv_time::REGION`].
    pub pv_time: bool,
}

/// What the exit handler must do after a call.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PsciAction {
    /// Write these values to x0..x3 of the caller and resume it.
    Return([u64; 4]),
    /// CPU_ON succeeded: write SUCCESS (0) to the caller's x0..x3 and resume it; start vCPU
    /// `target` (already ON) at `entry` with x0 = `context_id`, MMU and caches off, EL1h with
    /// DAIF masked (DEN0022 §6.4).
    StartVcpu {
        target: usize,
        entry: u64,
        context_id: u64,
    },
    /// CPU_OFF: the caller is now OFF; stop running it (it may later be the target of a
    /// CPU_ON, whose StartVcpu the owner of its physical CPU must pick up).
    StopVcpu,
    /// CPU_OFF of the VM's last ON vCPU: no vCPU is left to run or to CPU_ON another, so the
    /// VM is powered off as by SYSTEM_OFF. Does not return to the caller.
    LastVcpuOff,
    /// CPU_SUSPEND: wait until the caller has an interrupt pending (or return at once; a
    /// standby state may end on any wake-up event), then write SUCCESS (0) to x0..x3.
    Suspend,
    /// SYSTEM_OFF: power the VM off. Does not return to the caller.
    SystemOff,
    /// SYSTEM_RESET: reset the VM. Does not return to the caller.
    SystemReset,
    /// SMCCC_ARCH_WORKAROUND_1/3 on an affected PE: carry out the mitigation, then write 0
    /// to the caller's x0..x3 and resume it.
    Mitigate(Mitigation),
}

impl PsciAction {
    /// The caller's x0..x3 once the action is done, or `None` when the caller does not resume.
    pub fn caller_regs(&self) -> Option<[u64; 4]> {
        match *self {
            PsciAction::Return(r) => Some(r),
            PsciAction::StartVcpu { .. } | PsciAction::Suspend | PsciAction::Mitigate(_) => {
                Some([0; 4])
            }
            PsciAction::StopVcpu
            | PsciAction::LastVcpuOff
            | PsciAction::SystemOff
            | PsciAction::SystemReset => None,
        }
    }
}

fn ret(code: i32) -> PsciAction {
    // A signed 32-bit result sign-extended into X0 (DEN0028 §2.6: W0 for SMC32 results).
    PsciAction::Return([i64::from(code) as u64, 0, 0, 0])
}

fn ret_value(v: u64) -> PsciAction {
    PsciAction::Return([v, 0, 0, 0])
}

struct VcpuPower {
    mpidr: u64,
    state: AtomicU8,
}

/// The PSCI view of one VM: each vCPU's MPIDR and power state.
pub struct Psci {
    vcpus: Vec<VcpuPower>,
    /// How many vCPUs are ON. A successful CPU_ON raises it before it returns (its caller is
    /// ON and counted meanwhile), CPU_OFF lowers it: the CPU_OFF that takes it to 0 is the
    /// VM's last, and exactly one CPU_OFF can.
    on_count: AtomicUsize,
    config: SmcccConfig,
}

/// The PSCI functions this implementation supports (PSCI_FEATURES answers SUCCESS for them).
const SUPPORTED: &[u32] = &[
    psci::PSCI_VERSION,
    psci::PSCI_CPU_SUSPEND_32,
    psci::PSCI_CPU_SUSPEND_64,
    psci::PSCI_CPU_OFF,
    psci::PSCI_CPU_ON_32,
    psci::PSCI_CPU_ON_64,
    psci::PSCI_AFFINITY_INFO_32,
    psci::PSCI_AFFINITY_INFO_64,
    psci::PSCI_MIGRATE_INFO_TYPE,
    psci::PSCI_SYSTEM_OFF,
    psci::PSCI_SYSTEM_RESET,
    psci::PSCI_FEATURES,
    SMCCC_VERSION,
];

impl Psci {
    /// A VM whose vCPU `i` has MPIDR `mpidrs[i]` (affinity fields only), with vCPU `boot` ON
    /// and every other vCPU OFF.
    pub fn new(mpidrs: &[u64], boot: usize, config: SmcccConfig) -> Self {
        let vcpus = mpidrs
            .iter()
            .enumerate()
            .map(|(i, &m)| VcpuPower {
                mpidr: m & MPIDR_AFFINITY_MASK,
                state: AtomicU8::new(if i == boot {
                    PowerState::On
                } else {
                    PowerState::Off
                } as u8),
            })
            .collect();
        let on_count = AtomicUsize::new(usize::from(boot < mpidrs.len()));
        Psci {
            vcpus,
            on_count,
            config,
        }
    }

    /// Back to the power-on state after SYSTEM_RESET: vCPU `boot` ON, all others OFF.
    pub fn reset(&self, boot: usize) {
        for (i, v) in self.vcpus.iter().enumerate() {
            let s = if i == boot {
                PowerState::On
            } else {
                PowerState::Off
            };
            v.state.store(s as u8, Ordering::Release);
        }
        self.on_count
            .store(usize::from(boot < self.vcpus.len()), Ordering::Release);
    }

    pub fn state(&self, vcpu: usize) -> Option<PowerState> {
        self.vcpus
            .get(vcpu)
            .map(|v| PowerState::from_u8(v.state.load(Ordering::Acquire)))
    }

    /// The vCPU index with this MPIDR (affinity fields; other bits must be zero).
    pub fn vcpu_by_mpidr(&self, mpidr: u64) -> Option<usize> {
        if mpidr & !MPIDR_AFFINITY_MASK != 0 {
            return None;
        }
        self.vcpus.iter().position(|v| v.mpidr == mpidr)
    }

    /// Handles an SMCCC call from vCPU `caller` with arguments `x` = x0..x3. `valid_entry`
    /// says whether an entry point IPA lies in the VM's RAM (CPU_ON's INVALID_ADDRESS check).
    pub fn call(
        &self,
        caller: usize,
        x: [u64; 4],
        valid_entry: impl Fn(u64) -> bool,
    ) -> PsciAction {
        let fid = FunctionId::from_x0(x[0]);
        // SMC32/HVC32 arguments are W registers: the upper halves are ignored (DEN0028 §2.6).
        let arg = |i: usize| {
            if fid.is_64() {
                x[i]
            } else {
                x[i] & 0xffff_ffff
            }
        };
        match fid.without_hints() {
            SMCCC_VERSION => ret_value(u64::from(SMCCC_VERSION_1_1)),
            f @ (SMCCC_ARCH_FEATURES
            | SMCCC_ARCH_WORKAROUND_1
            | SMCCC_ARCH_WORKAROUND_2
            | SMCCC_ARCH_WORKAROUND_3) => self.arch_call(f, arg(1) as u32),
            psci::PSCI_VERSION => ret_value(u64::from(PSCI_VERSION_1_1)),
            psci::PSCI_FEATURES => match arg(1) as u32 {
                psci::PSCI_CPU_SUSPEND_32 | psci::PSCI_CPU_SUSPEND_64 => {
                    ret_value(CPU_SUSPEND_FEATURES)
                }
                f if SUPPORTED.contains(&f) => ret(perr::SUCCESS),
                _ => ret(perr::NOT_SUPPORTED),
            },
            psci::PSCI_CPU_SUSPEND_32 | psci::PSCI_CPU_SUSPEND_64 => PsciAction::Suspend,
            psci::PSCI_CPU_OFF => self.cpu_off(caller),
            psci::PSCI_CPU_ON_32 | psci::PSCI_CPU_ON_64 => {
                self.cpu_on(arg(1), arg(2), arg(3), valid_entry)
            }
            psci::PSCI_AFFINITY_INFO_32 | psci::PSCI_AFFINITY_INFO_64 => {
                self.affinity_info(arg(1), arg(2))
            }
            psci::PSCI_MIGRATE_INFO_TYPE => ret_value(MIGRATE_INFO_TYPE_NOT_PRESENT),
            psci::PSCI_SYSTEM_OFF => PsciAction::SystemOff,
            psci::PSCI_SYSTEM_RESET => PsciAction::SystemReset,
            f @ (crate::pv_time::PV_TIME_FEATURES | crate::pv_time::PV_TIME_ST) => {
                self.pv_time_call(f, x[1], caller)
            }
            // MIGRATE, MIGRATE_INFO_UP_CPU (no Trusted OS), SYSTEM_SUSPEND, SYSTEM_RESET2,
            // CPU_FREEZE, CPU_DEFAULT_SUSPEND, NODE_HW_STATE, stats, MEM_PROTECT, every other
            // owner and every yielding call: "Unknown Function Identifier" (DEN0028 §7.1).
            _ => ret(perr::NOT_SUPPORTED),
        }
    }

    /// SMCCC_ARCH_FEATURES and the workaround calls, kept out of line: the exit path inlines
    /// [`Psci::call`], and these rare calls would otherwise cost every HVC a larger frame.
    #[inline(never)]
    fn arch_call(&self, fid: u32, arg1: u32) -> PsciAction {
        match fid {
            SMCCC_ARCH_FEATURES => ret(self.arch_features(arg1)),
            SMCCC_ARCH_WORKAROUND_1 => self.workaround_call(self.config.workaround_1),
            SMCCC_ARCH_WORKAROUND_2 => self.workaround_call(self.config.workaround_2),
            _ => self.workaround_call(self.config.workaround_3),
        }
    }

    /// PV_TIME_FEATURES and PV_TIME_ST (DEN0057A; SMC64 only, so `x1` is whole), out of line
    /// as [`Psci::arch_call`] is.
    #[inline(never)]
    fn pv_time_call(&self, fid: u32, x1: u64, caller: usize) -> PsciAction {
        if !self.config.pv_time {
            return ret(perr::NOT_SUPPORTED);
        }
        PsciAction::Return(crate::pv_time::call(fid, x1, caller, self.vcpus.len()))
    }

    /// SMCCC_ARCH_FEATURES (DEN0028 §7.3), answered as KVM answers it.
    fn arch_features(&self, queried: u32) -> i32 {
        use smccc::arch::error as aerr;
        match queried {
            SMCCC_ARCH_WORKAROUND_1 | SMCCC_ARCH_WORKAROUND_3 => {
                let w = if queried == SMCCC_ARCH_WORKAROUND_1 {
                    self.config.workaround_1
                } else {
                    self.config.workaround_3
                };
                match w {
                    Workaround::NotRequired => ARCH_WORKAROUND_RET_UNAFFECTED,
                    Workaround::Mitigated(_) => perr::SUCCESS,
                    // WORKAROUND_2's answers do not apply to 1 and 3.
                    Workaround::NotSupported | Workaround::PermanentlyMitigated => {
                        aerr::NOT_SUPPORTED
                    }
                }
            }
            SMCCC_ARCH_WORKAROUND_2 => match self.config.workaround_2 {
                Workaround::NotRequired | Workaround::PermanentlyMitigated => aerr::NOT_REQUIRED,
                // No dynamic (per-call) mitigation is offered.
                Workaround::NotSupported | Workaround::Mitigated(_) => aerr::NOT_SUPPORTED,
            },
            SMCCC_ARCH_SOC_ID => aerr::NOT_SUPPORTED,
            crate::pv_time::PV_TIME_FEATURES if self.config.pv_time => {
                crate::pv_time::ARCH_FEATURES_ANSWER
            }
            _ => aerr::NOT_SUPPORTED,
        }
    }

    fn workaround_call(&self, w: Workaround) -> PsciAction {
        match w {
            Workaround::NotSupported => ret(perr::NOT_SUPPORTED),
            Workaround::NotRequired | Workaround::PermanentlyMitigated => ret(perr::SUCCESS),
            Workaround::Mitigated(m) => PsciAction::Mitigate(m),
        }
    }

    /// CPU_OFF (DEN0022 §5.5): the caller powers down and does not return; when it was the
    /// last ON vCPU, the VM with it.
    fn cpu_off(&self, caller: usize) -> PsciAction {
        let Some(v) = self.vcpus.get(caller) else {
            return ret(perr::INTERNAL_FAILURE);
        };
        // A running caller is ON; the exchange keeps the count exact should it not be.
        if v.state.swap(PowerState::Off as u8, Ordering::AcqRel) != PowerState::On as u8 {
            return PsciAction::StopVcpu;
        }
        match self.on_count.fetch_sub(1, Ordering::AcqRel) {
            1 => PsciAction::LastVcpuOff,
            _ => PsciAction::StopVcpu,
        }
    }

    /// CPU_ON (DEN0022 §5.6). Checks in the order TF-A uses: target, entry point, state.
    fn cpu_on(
        &self,
        target_cpu: u64,
        entry: u64,
        context_id: u64,
        valid_entry: impl Fn(u64) -> bool,
    ) -> PsciAction {
        let Some(target) = self.vcpu_by_mpidr(target_cpu) else {
            return ret(perr::INVALID_PARAMETERS);
        };
        // AArch64 instructions are 4-byte aligned; an unaligned entry can only fault.
        if entry & 3 != 0 || !valid_entry(entry) {
            return ret(perr::INVALID_ADDRESS);
        }
        let state = &self.vcpus[target].state;
        match state.compare_exchange(
            PowerState::Off as u8,
            PowerState::On as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => {
                self.on_count.fetch_add(1, Ordering::AcqRel);
                PsciAction::StartVcpu {
                    target,
                    entry,
                    context_id,
                }
            }
            Err(_) => ret(perr::ALREADY_ON),
        }
    }

    /// AFFINITY_INFO (DEN0022 §5.8): only lowest_affinity_level 0 is supported (levels above 0
    /// are optional since PSCI 1.0, and TF-A answers INVALID_PARAMETERS for them too).
    fn affinity_info(&self, target_affinity: u64, lowest_level: u64) -> PsciAction {
        if lowest_level != 0 {
            return ret(perr::INVALID_PARAMETERS);
        }
        match self
            .vcpu_by_mpidr(target_affinity)
            .and_then(|i| self.state(i))
        {
            Some(s) => ret_value(s as u64),
            None => ret(perr::INVALID_PARAMETERS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};
    use std::thread;

    const MPIDRS: [u64; 4] = [0x0, 0x1, 0x100, 0x1_0000_0000];
    const RAM: core::ops::Range<u64> = 0x4000_0000..0x8000_0000;

    fn in_ram(a: u64) -> bool {
        RAM.contains(&a)
    }

    fn vm() -> Psci {
        Psci::new(&MPIDRS, 0, SmcccConfig::default())
    }

    fn code(c: i32) -> PsciAction {
        PsciAction::Return([i64::from(c) as u64, 0, 0, 0])
    }

    fn value(v: u64) -> PsciAction {
        PsciAction::Return([v, 0, 0, 0])
    }

    fn call(p: &Psci, caller: usize, x: [u64; 4]) -> PsciAction {
        p.call(caller, x, in_ram)
    }

    #[test]
    fn function_ids_decode_into_their_fields() {
        let on = FunctionId(psci::PSCI_CPU_ON_64);
        assert!(on.is_fast() && on.is_64());
        assert_eq!((on.owner(), on.number()), (Owner::StandardSecure, 3));
        let v = FunctionId(SMCCC_VERSION);
        assert!(v.is_fast() && !v.is_64());
        assert_eq!((v.owner(), v.number()), (Owner::Arch, 0));
        assert_eq!(FunctionId(0x8200_0001).owner(), Owner::Sip);
        assert_eq!(FunctionId(0x8300_0000).owner(), Owner::Oem);
        assert_eq!(FunctionId(0x8500_0000).owner(), Owner::StandardHypervisor);
        assert_eq!(FunctionId(0xc600_0001).owner(), Owner::VendorHypervisor);
        assert_eq!(FunctionId(0x8700_0000).owner(), Owner::VendorEl3);
        assert_eq!(FunctionId(0xb000_0000).owner(), Owner::TrustedApp(48));
        assert_eq!(FunctionId(0xbf00_0000).owner(), Owner::TrustedOs(63));
        assert_eq!(FunctionId(0x8800_0000).owner(), Owner::Reserved(8));
        assert!(!FunctionId(0x3f00_0000).is_fast());
        // Only W0 counts, and the SVE hint bit is ignored for matching.
        assert_eq!(
            FunctionId::from_x0(0xffff_ffff_8400_0000),
            FunctionId(psci::PSCI_VERSION)
        );
        assert_eq!(
            FunctionId(0xc401_0003).without_hints(),
            psci::PSCI_CPU_ON_64
        );
    }

    #[test]
    fn versions() {
        let p = vm();
        assert_eq!(
            call(&p, 0, [u64::from(psci::PSCI_VERSION), 0, 0, 0]),
            value(0x1_0001)
        );
        assert_eq!(
            call(&p, 0, [u64::from(SMCCC_VERSION), 0, 0, 0]),
            value(0x1_0001)
        );
        // With the SVE hint set and garbage in the upper half of x0.
        assert_eq!(
            call(&p, 0, [0xdead_beef_8401_0000, 0, 0, 0]),
            value(0x1_0001)
        );
    }

    #[test]
    fn psci_features_answers_per_function() {
        let p = vm();
        let features = |f: u32| call(&p, 0, [u64::from(psci::PSCI_FEATURES), u64::from(f), 0, 0]);
        for f in SUPPORTED
            .iter()
            .filter(|&&f| f != psci::PSCI_CPU_SUSPEND_32 && f != psci::PSCI_CPU_SUSPEND_64)
        {
            assert_eq!(features(*f), code(0), "{f:#x}");
        }
        assert_eq!(features(psci::PSCI_CPU_SUSPEND_64), value(2));
        assert_eq!(features(psci::PSCI_CPU_SUSPEND_32), value(2));
        // SMCCC_VERSION discovery (how Linux finds SMCCC 1.1).
        assert_eq!(features(SMCCC_VERSION), code(0));
        for f in [
            psci::PSCI_SYSTEM_SUSPEND_64,
            psci::PSCI_SYSTEM_RESET2_64,
            psci::PSCI_MIGRATE_64,
            psci::PSCI_CPU_FREEZE,
            SMCCC_ARCH_FEATURES,
            0x1234_5678,
        ] {
            assert_eq!(features(f), code(-1), "{f:#x}");
        }
    }

    #[test]
    fn arch_features_follow_the_workaround_config() {
        let q = |p: &Psci, f: u32| call(p, 0, [u64::from(SMCCC_ARCH_FEATURES), u64::from(f), 0, 0]);
        let p = vm();
        for w in [
            SMCCC_ARCH_WORKAROUND_1,
            SMCCC_ARCH_WORKAROUND_2,
            SMCCC_ARCH_WORKAROUND_3,
            SMCCC_ARCH_SOC_ID,
            SMCCC_VERSION,
        ] {
            assert_eq!(q(&p, w), code(-1), "{w:#x}");
        }
        assert_eq!(
            call(&p, 0, [u64::from(SMCCC_ARCH_WORKAROUND_1), 0, 0, 0]),
            code(-1)
        );
        let all = Workaround::NotRequired;
        let p = Psci::new(
            &MPIDRS,
            0,
            SmcccConfig {
                workaround_1: all,
                workaround_2: all,
                workaround_3: all,
                pv_time: false,
            },
        );
        assert_eq!(q(&p, SMCCC_ARCH_WORKAROUND_1), code(1));
        assert_eq!(q(&p, SMCCC_ARCH_WORKAROUND_2), code(-2));
        assert_eq!(q(&p, SMCCC_ARCH_WORKAROUND_3), code(1));
        assert_eq!(
            call(&p, 0, [u64::from(SMCCC_ARCH_WORKAROUND_3), 0, 0, 0]),
            code(0)
        );
    }

    #[test]
    fn mitigated_workarounds_answer_success_and_calls_carry_out_the_mitigation() {
        let q = |p: &Psci, f: u32| call(p, 0, [u64::from(SMCCC_ARCH_FEATURES), u64::from(f), 0, 0]);
        let fw = Mitigation::Firmware(SMCCC_ARCH_WORKAROUND_1);
        let p = Psci::new(
            &MPIDRS,
            0,
            SmcccConfig {
                workaround_1: Workaround::Mitigated(fw),
                workaround_2: Workaround::PermanentlyMitigated,
                workaround_3: Workaround::Mitigated(Mitigation::BhbLoop(8)),
                pv_time: false,
            },
        );
        // DEN0028: 0 = required on this PE and implemented; -2 = WORKAROUND_2 not required.
        assert_eq!(q(&p, SMCCC_ARCH_WORKAROUND_1), code(0));
        assert_eq!(q(&p, SMCCC_ARCH_WORKAROUND_2), code(-2));
        assert_eq!(q(&p, SMCCC_ARCH_WORKAROUND_3), code(0));
        let c = |f: u32, x1: u64| call(&p, 0, [u64::from(f), x1, 0, 0]);
        assert_eq!(c(SMCCC_ARCH_WORKAROUND_1, 0), PsciAction::Mitigate(fw));
        assert_eq!(
            c(SMCCC_ARCH_WORKAROUND_3, 0),
            PsciAction::Mitigate(Mitigation::BhbLoop(8))
        );
        // The mitigation is on for good: the guest's enable/disable changes nothing.
        assert_eq!(c(SMCCC_ARCH_WORKAROUND_2, 0), code(0));
        assert_eq!(c(SMCCC_ARCH_WORKAROUND_2, 1), code(0));
        assert_eq!(PsciAction::Mitigate(fw).caller_regs(), Some([0; 4]));
    }

    #[test]
    fn cpu_on_starts_an_off_vcpu_then_reports_it_on() {
        let p = vm();
        let on = u64::from(psci::PSCI_CPU_ON_64);
        assert_eq!(
            call(&p, 0, [on, 0x100, 0x4008_0000, 0xc0ffee]),
            PsciAction::StartVcpu {
                target: 2,
                entry: 0x4008_0000,
                context_id: 0xc0ffee
            }
        );
        // CPU_ON is synchronous as the guest sees it: the target is ON as soon as the call
        // succeeded, before its physical CPU has picked the start up (as in KVM).
        assert_eq!(p.state(2), Some(PowerState::On));
        assert_eq!(call(&p, 1, [on, 0x100, 0x4008_0000, 0]), code(-4)); // ALREADY_ON
        // Aff3 reaches vCPU 3 with the 64-bit call.
        assert!(matches!(
            call(&p, 0, [on, 0x1_0000_0000, 0x4000_0000, 0]),
            PsciAction::StartVcpu { target: 3, .. }
        ));
    }

    #[test]
    fn cpu_on_errors() {
        let p = vm();
        let on = u64::from(psci::PSCI_CPU_ON_64);
        // Unknown MPIDR, or bits outside the affinity fields.
        assert_eq!(call(&p, 0, [on, 0x2, 0x4000_0000, 0]), code(-2));
        assert_eq!(call(&p, 0, [on, 0x8000_0001, 0x4000_0000, 0]), code(-2));
        // Entry outside RAM or misaligned.
        assert_eq!(call(&p, 0, [on, 0x1, 0x1000, 0]), code(-9));
        assert_eq!(call(&p, 0, [on, 0x1, 0x4000_0002, 0]), code(-9));
        assert_eq!(call(&p, 0, [on, 0x1, 0x8000_0000, 0]), code(-9));
        // The boot vCPU is already on.
        assert_eq!(call(&p, 1, [on, 0x0, 0x4000_0000, 0]), code(-4));
        // None of the errors changed a state.
        assert_eq!(p.state(1), Some(PowerState::Off));
    }

    #[test]
    fn cpu_on_32_ignores_upper_halves() {
        let p = vm();
        let on32 = u64::from(psci::PSCI_CPU_ON_32);
        assert_eq!(
            call(
                &p,
                0,
                [
                    on32,
                    0xffff_ffff_0000_0001,
                    0xaaaa_aaaa_4000_1000,
                    0x5555_5555_0000_0007
                ]
            ),
            PsciAction::StartVcpu {
                target: 1,
                entry: 0x4000_1000,
                context_id: 7
            }
        );
        // Aff3 cannot be expressed in a 32-bit target_cpu: 0x1_0000_0000 becomes MPIDR 0.
        assert_eq!(call(&p, 0, [on32, 0x1_0000_0000, 0x4000_0000, 0]), code(-4));
    }

    #[test]
    fn cpu_off_stops_the_caller_and_allows_a_new_cpu_on() {
        let p = vm();
        let on = u64::from(psci::PSCI_CPU_ON_64);
        assert!(matches!(
            call(&p, 0, [on, 1, 0x4000_0000, 0]),
            PsciAction::StartVcpu { target: 1, .. }
        ));
        assert_eq!(
            call(&p, 1, [u64::from(psci::PSCI_CPU_OFF), 0, 0, 0]),
            PsciAction::StopVcpu
        );
        assert_eq!(p.state(1), Some(PowerState::Off));
        assert!(matches!(
            call(&p, 0, [on, 1, 0x4000_0000, 0]),
            PsciAction::StartVcpu { target: 1, .. }
        ));
    }

    #[test]
    fn affinity_info_reports_states_at_level_zero_only() {
        let p = vm();
        let ai = |t: u64, l: u64| call(&p, 0, [u64::from(psci::PSCI_AFFINITY_INFO_64), t, l, 0]);
        assert_eq!(ai(0, 0), value(0)); // ON
        assert_eq!(ai(1, 0), value(1)); // OFF
        let _ = call(&p, 0, [u64::from(psci::PSCI_CPU_ON_64), 1, 0x4000_0000, 0]);
        assert_eq!(ai(1, 0), value(0)); // ON at once, never ON_PENDING
        assert_eq!(ai(0x1_0000_0000, 0), value(1));
        assert_eq!(ai(0, 1), code(-2));
        assert_eq!(ai(0, 3), code(-2));
        assert_eq!(ai(0x5, 0), code(-2));
        // The 32-bit variant ignores the upper halves.
        let ai32 = call(
            &p,
            0,
            [
                u64::from(psci::PSCI_AFFINITY_INFO_32),
                0xffff_ffff_0000_0100,
                0xffff_ffff_0000_0000,
                0,
            ],
        );
        assert_eq!(ai32, value(1));
    }

    #[test]
    fn system_calls_and_simple_answers() {
        let p = vm();
        let c = |f: u32| call(&p, 0, [u64::from(f), 0, 0, 0]);
        assert_eq!(c(psci::PSCI_SYSTEM_OFF), PsciAction::SystemOff);
        assert_eq!(c(psci::PSCI_SYSTEM_RESET), PsciAction::SystemReset);
        assert_eq!(c(psci::PSCI_MIGRATE_INFO_TYPE), value(2));
        assert_eq!(c(psci::PSCI_CPU_SUSPEND_64), PsciAction::Suspend);
        assert_eq!(c(psci::PSCI_CPU_SUSPEND_32), PsciAction::Suspend);
        for f in [
            psci::PSCI_MIGRATE_32,
            psci::PSCI_MIGRATE_64,
            psci::PSCI_MIGRATE_INFO_UP_CPU_64,
            psci::PSCI_SYSTEM_SUSPEND_64,
            psci::PSCI_SYSTEM_RESET2_64,
            psci::PSCI_CPU_DEFAULT_SUSPEND_64,
            psci::PSCI_MEM_PROTECT,
            0x8200_0000, // SiP
            0xc600_0000, // vendor hypervisor
            0x0400_0000, // yielding call
        ] {
            assert_eq!(c(f), code(-1), "{f:#x}");
        }
        // NOT_SUPPORTED is -1 sign-extended in x0.
        assert_eq!(c(0x8200_0000), PsciAction::Return([u64::MAX, 0, 0, 0]));
    }

    #[test]
    fn caller_registers_per_action() {
        assert_eq!(
            PsciAction::Return([1, 2, 3, 4]).caller_regs(),
            Some([1, 2, 3, 4])
        );
        assert_eq!(
            PsciAction::StartVcpu {
                target: 1,
                entry: 0,
                context_id: 0
            }
            .caller_regs(),
            Some([0; 4])
        );
        assert_eq!(PsciAction::Suspend.caller_regs(), Some([0; 4]));
        assert_eq!(PsciAction::StopVcpu.caller_regs(), None);
        assert_eq!(PsciAction::SystemReset.caller_regs(), None);
    }

    #[test]
    fn reset_returns_to_boot_state() {
        let p = vm();
        let _ = call(&p, 0, [u64::from(psci::PSCI_CPU_ON_64), 1, 0x4000_0000, 0]);
        let _ = call(&p, 0, [u64::from(psci::PSCI_CPU_OFF), 0, 0, 0]);
        p.reset(0);
        assert_eq!(
            (0..4).map(|i| p.state(i)).collect::<Vec<_>>(),
            vec![
                Some(PowerState::On),
                Some(PowerState::Off),
                Some(PowerState::Off),
                Some(PowerState::Off)
            ]
        );
        assert_eq!(p.state(4), None);
    }

    #[test]
    fn racing_cpu_on_gives_exactly_one_success_and_already_on_for_the_others() {
        const THREADS: usize = 4;
        let mpidrs: Vec<u64> = (0..=THREADS as u64).collect();
        let p = Arc::new(Psci::new(&mpidrs, 0, SmcccConfig::default()));
        for round in 0..200u64 {
            // Target the last vCPU; every other vCPU races a CPU_ON for it.
            let target = THREADS;
            p.reset(0);
            let barrier = Arc::new(Barrier::new(THREADS));
            let handles: Vec<_> = (0..THREADS)
                .map(|caller| {
                    let (p, barrier) = (Arc::clone(&p), Arc::clone(&barrier));
                    thread::spawn(move || {
                        barrier.wait();
                        p.call(
                            caller,
                            [
                                u64::from(psci::PSCI_CPU_ON_64),
                                target as u64,
                                0x4000_0000,
                                round,
                            ],
                            in_ram,
                        )
                    })
                })
                .collect();
            let results: Vec<PsciAction> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            let wins = results
                .iter()
                .filter(|r| matches!(r, PsciAction::StartVcpu { target: t, .. } if *t == target))
                .count();
            assert_eq!(wins, 1, "round {round}: {results:?}");
            // The target is committed to start the moment one call succeeded: every other
            // caller is told ALREADY_ON, as KVM and the kvm-unit-tests `psci` test expect.
            assert_eq!(
                results.iter().filter(|r| **r == code(-4)).count(),
                THREADS - 1,
                "round {round}: {results:?}"
            );
            assert_eq!(p.state(target), Some(PowerState::On));
        }
    }

    #[test]
    fn cpu_off_of_the_last_on_vcpu_powers_the_vm_off() {
        let off = [u64::from(psci::PSCI_CPU_OFF), 0, 0, 0];
        let on = u64::from(psci::PSCI_CPU_ON_64);
        // One vCPU on: its CPU_OFF leaves nothing that could ever run again.
        let p = vm();
        assert_eq!(call(&p, 0, off), PsciAction::LastVcpuOff);
        assert_eq!(p.state(0), Some(PowerState::Off));
        // Two on: the first CPU_OFF only stops its caller, the second ends the VM.
        let p = vm();
        assert!(matches!(
            call(&p, 0, [on, 0x100, 0x4000_0000, 0]),
            PsciAction::StartVcpu { target: 2, .. }
        ));
        assert_eq!(call(&p, 0, off), PsciAction::StopVcpu);
        assert_eq!(call(&p, 2, off), PsciAction::LastVcpuOff);
        // A target whose start is still in flight counts as on: its starter may go off.
        let p = vm();
        let _ = call(&p, 0, [on, 1, 0x4000_0000, 0]);
        assert_eq!(call(&p, 0, off), PsciAction::StopVcpu);
        assert_eq!(call(&p, 1, off), PsciAction::LastVcpuOff);
        // After a reset the boot vCPU alone is on again.
        p.reset(0);
        assert_eq!(call(&p, 0, off), PsciAction::LastVcpuOff);
        assert_eq!(PsciAction::LastVcpuOff.caller_regs(), None);
    }

    #[test]
    fn racing_cpu_offs_end_the_vm_exactly_once() {
        const N: usize = 4;
        let mpidrs: Vec<u64> = (0..N as u64).collect();
        for _round in 0..200 {
            let p = Arc::new(Psci::new(&mpidrs, 0, SmcccConfig::default()));
            for t in 1..N {
                let _ = p.call(
                    0,
                    [u64::from(psci::PSCI_CPU_ON_64), t as u64, 0x4000_0000, 0],
                    in_ram,
                );
            }
            let barrier = Arc::new(Barrier::new(N));
            let handles: Vec<_> = (0..N)
                .map(|caller| {
                    let (p, barrier) = (Arc::clone(&p), Arc::clone(&barrier));
                    thread::spawn(move || {
                        barrier.wait();
                        p.call(caller, [u64::from(psci::PSCI_CPU_OFF), 0, 0, 0], in_ram)
                    })
                })
                .collect();
            let results: Vec<PsciAction> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            let last = results
                .iter()
                .filter(|r| **r == PsciAction::LastVcpuOff)
                .count();
            assert_eq!(last, 1, "{results:?}");
        }
    }
}
