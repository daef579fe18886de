//! Which CPU-vulnerability workarounds kestrel offers its guests through the SMCCC
//! (SMCCC_ARCH_WORKAROUND_1/2/3, Arm DEN 0028 §7.5-7.7), decided from the host CPU as KVM
//! decides it (`arch/arm64/kvm/hypercalls.c` answering from `arch/arm64/kernel/proton-pack.c`'s
//! view of the host).
//!
//! For each vulnerability the host CPU is unaffected (the guest is told "not required"),
//! affected with a mitigation kestrel can carry out when the guest asks for it (told
//! "required and implemented": SUCCESS), or affected with none (NOT_SUPPORTED, and Linux
//! reports itself vulnerable, which it then is):
//!
//! - Spectre v2 (WORKAROUND_1): unaffected with ID_AA64PFR0_EL1.CSV2 != 0 or on the CPUs Linux
//!   lists as safe; otherwise mitigated only by the firmware's own WORKAROUND_1, to which the
//!   guest's call is forwarded.
//! - Spectre v4 (WORKAROUND_2): unaffected on the safe list; with SSBS the guest mitigates
//!   itself (SSBS is offered to it), so, as KVM answers, NOT_SUPPORTED; otherwise, when the
//!   firmware has a dynamic mitigation, kestrel turns it on for good on every physical CPU that
//!   runs a vCPU and tells the guest it is not required (KVM's "permanent mitigation").
//! - Spectre-BHB (WORKAROUND_3): unaffected with CSV2 >= 3 (FEAT_CSV2_3) or when not on any
//!   list; otherwise, when the guest calls, kestrel clears the branch history itself: nothing
//!   more than the trap with ECBHB, the CLRBHB instruction where there is one, the branch loop
//!   of Linux's `spectre_bhb_loop_affected` list (k taken branches for the CPU), or the
//!   firmware's WORKAROUND_3 for the CPUs that need it (Cortex-A73/A75).
//!
//! DEN0028's answers to SMCCC_ARCH_FEATURES, as Linux reads them: 0 (SUCCESS) = required on
//! this PE and implemented; 1 = not required on this PE (Linux's
//! `SMCCC_ARCH_WORKAROUND_RET_UNAFFECTED`); -2 (NOT_REQUIRED) = for WORKAROUND_2, not required
//! on this PE; -1 (NOT_SUPPORTED) = not implemented.
#![forbid(unsafe_code)]

use crate::psci::{SmcccConfig, Workaround};

/// What a mitigation does when the guest calls for it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mitigation {
    /// Make the same call (this function ID, no arguments) to the firmware.
    Firmware(u32),
    /// Run `k` taken branches, then DSB and ISB (Linux's BHB loop).
    BhbLoop(u8),
    /// Execute CLRBHB (FEAT_CLRBHB).
    ClearBhb,
    /// Nothing: taking the exception to EL2 already cleared the branch history (ECBHB).
    ExceptionEntry,
}

/// The host CPU as the decision needs it: MIDR_EL1, the ID register fields, and what the
/// firmware answered to SMCCC_ARCH_FEATURES for each workaround (`None`: no firmware, or one
/// older than SMCCC 1.1).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct HostCpu {
    pub midr: u64,
    pub id_aa64pfr0: u64,
    pub id_aa64pfr1: u64,
    pub id_aa64isar2: u64,
    pub id_aa64mmfr1: u64,
    pub firmware: [Option<i32>; 3],
}

/// (implementer, part number): a CPU model of every variant and revision (Linux's
/// `MIDR_ALL_VERSIONS`).
type Model = (u8, u16);

const ARM: u8 = 0x41;
const CORTEX_A35: Model = (ARM, 0xd04);
const CORTEX_A53: Model = (ARM, 0xd03);
const CORTEX_A55: Model = (ARM, 0xd05);
const CORTEX_A57: Model = (ARM, 0xd07);
const CORTEX_A72: Model = (ARM, 0xd08);
const CORTEX_A73: Model = (ARM, 0xd09);
const CORTEX_A75: Model = (ARM, 0xd0a);
const CORTEX_A76: Model = (ARM, 0xd0b);
const NEOVERSE_N1: Model = (ARM, 0xd0c);
const CORTEX_A77: Model = (ARM, 0xd0d);
const NEOVERSE_V1: Model = (ARM, 0xd40);
const CORTEX_A78: Model = (ARM, 0xd41);
const CORTEX_A78AE: Model = (ARM, 0xd42);
const CORTEX_X1: Model = (ARM, 0xd44);
const CORTEX_A710: Model = (ARM, 0xd47);
const CORTEX_X2: Model = (ARM, 0xd48);
const NEOVERSE_N2: Model = (ARM, 0xd49);
const CORTEX_A78C: Model = (ARM, 0xd4b);
const BRAHMA_B53: Model = (0x42, 0x100);
const HISI_TSV110: Model = (0x48, 0xd01);
const KRYO_2XX_SILVER: Model = (0x51, 0x801);
const KRYO_3XX_SILVER: Model = (0x51, 0x803);
const KRYO_4XX_SILVER: Model = (0x51, 0x805);
const AMPERE1: Model = (0xc0, 0xac3);

const SPECTRE_V2_SAFE: &[Model] = &[
    CORTEX_A35,
    CORTEX_A53,
    CORTEX_A55,
    BRAHMA_B53,
    HISI_TSV110,
    KRYO_2XX_SILVER,
    KRYO_3XX_SILVER,
    KRYO_4XX_SILVER,
];
const SPECTRE_V4_SAFE: &[Model] = &[
    CORTEX_A35,
    CORTEX_A53,
    CORTEX_A55,
    BRAHMA_B53,
    KRYO_3XX_SILVER,
    KRYO_4XX_SILVER,
];
/// The BHB loop's branch count per CPU.
const BHB_LOOP: &[(u8, &[Model])] = &[
    (
        32,
        &[
            CORTEX_A78,
            CORTEX_A78AE,
            CORTEX_A78C,
            CORTEX_X1,
            CORTEX_A710,
            CORTEX_X2,
            NEOVERSE_N2,
            NEOVERSE_V1,
        ],
    ),
    (24, &[CORTEX_A76, CORTEX_A77, NEOVERSE_N1]),
    (11, &[AMPERE1]),
    (8, &[CORTEX_A72, CORTEX_A57]),
];
const BHB_FIRMWARE: &[Model] = &[CORTEX_A73, CORTEX_A75];

pub use smccc::arch::{
    SMCCC_ARCH_WORKAROUND_1 as WORKAROUND_1, SMCCC_ARCH_WORKAROUND_2 as WORKAROUND_2,
    SMCCC_ARCH_WORKAROUND_3 as WORKAROUND_3,
};

/// The firmware's SMCCC_ARCH_FEATURES answers that mean "required and implemented" and "not
/// required on this PE".
const FW_SUCCESS: i32 = 0;
const FW_UNAFFECTED: i32 = 1;
const FW_NOT_REQUIRED: i32 = -2;

impl HostCpu {
    fn model(&self) -> Model {
        ((self.midr >> 24) as u8, ((self.midr >> 4) & 0xfff) as u16)
    }

    fn is(&self, list: &[Model]) -> bool {
        list.contains(&self.model())
    }

    fn field(v: u64, shift: u32) -> u64 {
        (v >> shift) & 0xf
    }

    fn csv2(&self) -> u64 {
        Self::field(self.id_aa64pfr0, 56)
    }

    /// Spectre v2: unaffected, forwarded to the firmware, or nothing to offer.
    fn spectre_v2(&self) -> Workaround {
        if self.csv2() != 0 || self.is(SPECTRE_V2_SAFE) {
            return Workaround::NotRequired;
        }
        match self.firmware[0] {
            Some(FW_SUCCESS) => Workaround::Mitigated(Mitigation::Firmware(WORKAROUND_1)),
            Some(FW_UNAFFECTED) => Workaround::NotRequired,
            _ => Workaround::NotSupported,
        }
    }

    /// Spectre v4 (speculative store bypass).
    fn spectre_v4(&self) -> Workaround {
        if self.is(SPECTRE_V4_SAFE) {
            return Workaround::NotRequired;
        }
        // ID_AA64PFR1_EL1.SSBS [7:4]: the guest sees it and mitigates itself.
        if Self::field(self.id_aa64pfr1, 4) != 0 {
            return Workaround::NotSupported;
        }
        match self.firmware[1] {
            Some(FW_SUCCESS) => Workaround::PermanentlyMitigated,
            Some(FW_UNAFFECTED) | Some(FW_NOT_REQUIRED) => Workaround::NotRequired,
            _ => Workaround::NotSupported,
        }
    }

    /// Spectre-BHB (branch history injection).
    fn spectre_bhb(&self) -> Workaround {
        if self.csv2() >= 3 {
            return Workaround::NotRequired;
        }
        let clearbhb = Self::field(self.id_aa64isar2, 28) != 0;
        let ecbhb = Self::field(self.id_aa64mmfr1, 60) != 0;
        let loop_k = BHB_LOOP
            .iter()
            .find(|(_, models)| self.is(models))
            .map(|&(k, _)| k);
        let firmware = self.firmware[2] == Some(FW_SUCCESS);
        let affected = clearbhb || loop_k.is_some() || self.is(BHB_FIRMWARE) || firmware;
        if !affected {
            return Workaround::NotRequired;
        }
        // Linux's order of preference (spectre_bhb_enable_mitigation).
        let m = if ecbhb {
            Mitigation::ExceptionEntry
        } else if clearbhb {
            Mitigation::ClearBhb
        } else if let Some(k) = loop_k {
            Mitigation::BhbLoop(k)
        } else if firmware {
            Mitigation::Firmware(WORKAROUND_3)
        } else {
            return Workaround::NotSupported;
        };
        Workaround::Mitigated(m)
    }

    /// What the guests of this host are offered.
    pub fn smccc_config(&self) -> SmcccConfig {
        SmcccConfig {
            workaround_1: self.spectre_v2(),
            workaround_2: self.spectre_v4(),
            workaround_3: self.spectre_bhb(),
            // Decided per VM (the VM's record page), not by the host CPU.
            pv_time: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QEMU's cortex-a72 (r0p3): CSV2 0, no SSBS, no CLRBHB, no ECBHB.
    const A72: HostCpu = HostCpu {
        midr: 0x410f_d083,
        id_aa64pfr0: 0x0000_0000_0100_2222,
        id_aa64pfr1: 0,
        id_aa64isar2: 0,
        id_aa64mmfr1: 0,
        firmware: [None; 3],
    };

    /// QEMU's `max` (MIDR implementer 0): CSV2 3, CSV3 1, SSBS 2.
    const MAX: HostCpu = HostCpu {
        midr: 0x000f_0510,
        id_aa64pfr0: 0x1301_0011_2011_0022,
        id_aa64pfr1: 0x21,
        id_aa64isar2: 0x0011_0012,
        id_aa64mmfr1: 0x0110_1120_1031_2122,
        firmware: [None; 3],
    };

    fn config(w1: Workaround, w2: Workaround, w3: Workaround) -> SmcccConfig {
        SmcccConfig {
            workaround_1: w1,
            workaround_2: w2,
            workaround_3: w3,
            pv_time: false,
        }
    }

    use Workaround::{Mitigated, NotRequired, NotSupported, PermanentlyMitigated};

    #[test]
    fn cortex_a72_without_firmware_help_gets_the_bhb_loop_only() {
        assert_eq!(
            A72.smccc_config(),
            config(
                NotSupported,
                NotSupported,
                Mitigated(Mitigation::BhbLoop(8))
            )
        );
    }

    #[test]
    fn cortex_a72_with_tf_a_forwards_v2_and_keeps_ssbd_on() {
        // TF-A on a Cortex-A72 answers 0 for WORKAROUND_1 and WORKAROUND_2 (dynamic SSBD),
        // and 1 for WORKAROUND_3 (it leaves the BHB loop to the OS).
        let host = HostCpu {
            firmware: [Some(0), Some(0), Some(1)],
            ..A72
        };
        assert_eq!(
            host.smccc_config(),
            config(
                Mitigated(Mitigation::Firmware(WORKAROUND_1)),
                PermanentlyMitigated,
                Mitigated(Mitigation::BhbLoop(8))
            )
        );
    }

    #[test]
    fn cpu_max_is_unaffected_except_v4_which_ssbs_handles() {
        assert_eq!(
            MAX.smccc_config(),
            config(NotRequired, NotSupported, NotRequired)
        );
    }

    #[test]
    fn safe_listed_cpus_are_not_affected() {
        // Cortex-A53 r0p4: no CSV2, but on every safe list and on no BHB list.
        let a53 = HostCpu {
            midr: 0x410f_d034,
            ..A72
        };
        assert_eq!(
            a53.smccc_config(),
            config(NotRequired, NotRequired, NotRequired)
        );
        // Kryo 2xx silver: safe from v2 only.
        let kryo2 = HostCpu {
            midr: 0x51af_8014,
            ..A72
        };
        assert_eq!(kryo2.smccc_config().workaround_1, NotRequired);
        assert_eq!(kryo2.smccc_config().workaround_2, NotSupported);
    }

    #[test]
    fn bhb_mitigations_follow_linux_order() {
        // Neoverse N1 (k = 24) with CSV2 1: v2 unaffected, BHB by the loop.
        let n1 = HostCpu {
            midr: 0x414f_d0c1,
            id_aa64pfr0: 1 << 56,
            ..A72
        };
        assert_eq!(n1.smccc_config().workaround_1, NotRequired);
        assert_eq!(
            n1.smccc_config().workaround_3,
            Mitigated(Mitigation::BhbLoop(24))
        );
        // The same with ECBHB: the trap itself clears the history.
        let n1_ecbhb = HostCpu {
            id_aa64mmfr1: 1 << 60,
            ..n1
        };
        assert_eq!(
            n1_ecbhb.smccc_config().workaround_3,
            Mitigated(Mitigation::ExceptionEntry)
        );
        // CLRBHB beats the loop.
        let n1_clrbhb = HostCpu {
            id_aa64isar2: 1 << 28,
            ..n1
        };
        assert_eq!(
            n1_clrbhb.smccc_config().workaround_3,
            Mitigated(Mitigation::ClearBhb)
        );
        // Cortex-A73: the firmware's WORKAROUND_3, when it has one.
        let a73 = HostCpu {
            midr: 0x410f_d090,
            ..A72
        };
        assert_eq!(a73.smccc_config().workaround_3, NotSupported);
        let a73_fw = HostCpu {
            firmware: [None, None, Some(0)],
            ..a73
        };
        assert_eq!(
            a73_fw.smccc_config().workaround_3,
            Mitigated(Mitigation::Firmware(WORKAROUND_3))
        );
        // FEAT_CSV2_3 is unaffected whatever the model.
        let a72_csv2_3 = HostCpu {
            id_aa64pfr0: 3 << 56,
            ..A72
        };
        assert_eq!(a72_csv2_3.smccc_config().workaround_3, NotRequired);
    }

    #[test]
    fn firmware_answers_that_mean_unaffected() {
        let host = HostCpu {
            firmware: [Some(1), Some(-2), Some(-1)],
            ..A72
        };
        let c = host.smccc_config();
        assert_eq!((c.workaround_1, c.workaround_2), (NotRequired, NotRequired));
        let host = HostCpu {
            firmware: [Some(-1), Some(1), None],
            ..A72
        };
        let c = host.smccc_config();
        assert_eq!(
            (c.workaround_1, c.workaround_2),
            (NotSupported, NotRequired)
        );
    }
}
