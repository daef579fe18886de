//! The host side of the CPU-vulnerability workarounds guests are offered (`mitigations`):
//! reading what the decision needs from this CPU and its firmware, and carrying out a
//! mitigation when a guest calls SMCCC_ARCH_WORKAROUND_1/3.
use crate::mitigations::{HostCpu, Mitigation, WORKAROUND_1, WORKAROUND_2, WORKAROUND_3};
use crate::psci::{SmcccConfig, Workaround};
use core::arch::asm;

use super::psci_fw;

/// This CPU's MIDR and ID registers, and the firmware's SMCCC_ARCH_FEATURES answers for the
/// three workarounds.
pub fn host_cpu() -> HostCpu {
    let (midr, pfr0, pfr1, isar2, mmfr1): (u64, u64, u64, u64, u64);
    // SAFETY: reading identification registers has no side effect.
    unsafe {
        asm!(
            "mrs {}, midr_el1",
            "mrs {}, id_aa64pfr0_el1",
            "mrs {}, id_aa64pfr1_el1",
            "mrs {}, s3_0_c0_c6_2",
            "mrs {}, id_aa64mmfr1_el1",
            out(reg) midr, out(reg) pfr0, out(reg) pfr1, out(reg) isar2, out(reg) mmfr1,
            options(nomem, nostack)
        )
    };
    HostCpu {
        midr,
        id_aa64pfr0: pfr0,
        id_aa64pfr1: pfr1,
        id_aa64isar2: isar2,
        id_aa64mmfr1: mmfr1,
        firmware: [WORKAROUND_1, WORKAROUND_2, WORKAROUND_3].map(psci_fw::arch_features),
    }
}

/// Carries out `m` for the guest that called for it.
pub fn carry_out(m: Mitigation) {
    match m {
        Mitigation::Firmware(fid) => {
            let _ = psci_fw::call(fid, 0, 0, 0);
        }
        Mitigation::BhbLoop(k) => {
            // SAFETY: k taken branches overwrite the branch history (Linux's
            // `__mitigate_spectre_bhb_loop`); only x9 and the flags change.
            unsafe {
                asm!(
                    "1:",
                    "b 2f",
                    "2:",
                    "subs {k}, {k}, #1",
                    "b.ne 1b",
                    "dsb nsh",
                    "isb",
                    k = inout(reg) u64::from(k.max(1)) => _,
                    options(nostack, nomem)
                )
            };
        }
        Mitigation::ClearBhb => {
            // SAFETY: CLRBHB (HINT #22, FEAT_CLRBHB) clears the branch history; no other effect.
            unsafe { asm!("hint #22", "isb", options(nostack, nomem)) };
        }
        Mitigation::ExceptionEntry => {}
    }
}

/// Before a vCPU runs on this CPU: turns the firmware's WORKAROUND_2 mitigation on for good
/// when the guests are told it is not required (`Workaround::PermanentlyMitigated`).
pub fn prepare_cpu(config: &SmcccConfig) {
    if config.workaround_2 == Workaround::PermanentlyMitigated {
        let _ = psci_fw::call(WORKAROUND_2, 1, 0, 0);
    }
}
