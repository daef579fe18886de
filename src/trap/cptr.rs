//! CPTR_EL2, the EL2 trap controls for FP/SIMD, SVE and SME, as the hypervisor sets it while a
//! guest runs (HCR_EL2.E2H = 0 layout, Arm ARM D19.2 "CPTR_EL2, Architectural Feature Trap
//! Register (EL2)").
#![forbid(unsafe_code)]

/// Bits 13, 9 and 7:0: RES1.
const RES1: u64 = (1 << 13) | (1 << 9) | 0xff;
/// TZ, bit 8: trap SVE. RES1 when SVE is not implemented.
const TZ: u64 = 1 << 8;
/// TSM, bit 12: trap SME (RES1 when SME is not implemented). Always set: SME state (ZA, SMCR)
/// is not managed.
const TSM: u64 = 1 << 12;
/// ID_AA64PFR0_EL1.SVE, bits [35:32]: non-zero when SVE is implemented.
const PFR0_SVE_SHIFT: u64 = 32;

/// The CPTR_EL2 value for running a guest, given this CPU's ID_AA64PFR0_EL1: FP/SIMD (TFP, bit
/// 10) and, where implemented, SVE (TZ) are the guest's own, untrapped (the hypervisor never
/// touches those registers on its soft-float target and each physical CPU runs one vCPU); SME
/// trapped. Without SVE, TZ is RES1 and written as 1: a Cortex-A72 has none.
pub fn guest_cptr_el2(id_aa64pfr0: u64) -> u64 {
    let sve = (id_aa64pfr0 >> PFR0_SVE_SHIFT) & 0xf != 0;
    RES1 | TSM | if sve { 0 } else { TZ }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ID_AA64PFR0_EL1 of a Cortex-A72 (r0p3, the Pi 4's): EL0-EL3 AArch64+AArch32, FP and
    /// AdvSIMD, GIC system registers, no SVE.
    const A72_PFR0: u64 = 0x0000_0000_0100_2222;

    #[test]
    fn without_sve_the_sve_trap_bit_is_set_as_res1() {
        let v = guest_cptr_el2(A72_PFR0);
        assert_ne!(v & TZ, 0);
        assert_eq!(v, 0x33ff);
    }

    #[test]
    fn with_sve_the_guest_uses_it_untrapped() {
        let v = guest_cptr_el2(A72_PFR0 | (1 << PFR0_SVE_SHIFT));
        assert_eq!(v & TZ, 0);
        assert_eq!(v, 0x32ff);
    }

    #[test]
    fn fp_simd_is_never_trapped_and_res1_bits_are_set() {
        for pfr0 in [0, A72_PFR0, u64::MAX] {
            let v = guest_cptr_el2(pfr0);
            assert_eq!(v & (1 << 10), 0, "TFP");
            assert_eq!(v & RES1, RES1);
            assert_ne!(v & TSM, 0);
        }
    }
}
