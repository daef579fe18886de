//! The architectural state of a vCPU that the exit path works on, and exception injection.
//!
//! [`GuestRegs`] is the register frame the exception vectors save (x0-x30, pc, pstate). The
//! EL1 system registers stay live in hardware while a vCPU runs (one vCPU per physical CPU),
//! so injection reaches them through the small [`El1Access`] trait: the arch layer implements
//! it with `mrs`/`msr`, tests with a plain struct.
#![forbid(unsafe_code)]

/// The guest register frame saved by `boot/vectors.S` (layout shared with the assembly).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct GuestRegs {
    pub x: [u64; 31],
    /// ELR_EL2: where the guest resumes.
    pub pc: u64,
    /// SPSR_EL2: the guest's PSTATE.
    pub pstate: u64,
}

impl GuestRegs {
    /// Register `n` as an instruction operand: 31 is XZR (reads 0, writes are dropped).
    pub fn reg(&self, n: u8) -> u64 {
        self.x.get(n as usize).copied().unwrap_or(0)
    }
    pub fn set_reg(&mut self, n: u8, v: u64) {
        if let Some(r) = self.x.get_mut(n as usize) {
            *r = v;
        }
    }

    /// Whether the guest was executing in AArch32 state (EL0 of an AArch64 guest running a
    /// 32-bit program: EL1 is always AArch64, HCR_EL2.RW = 1).
    pub fn is_aarch32(&self) -> bool {
        self.pstate & pstate::NRW != 0
    }

    /// Steps over the trapped instruction, as completing it would have: the PC advances by 4,
    /// or by 2 for a 16-bit T32 instruction (`il32` = ESR_EL2.IL = 0); in T32 state inside an
    /// IT block the IT state advances too (Arm ARM `AArch32.ITAdvance()`: the next instruction
    /// takes the next condition, and the block ends after its last one), as KVM's
    /// `kvm_skip_instr32` does.
    pub fn skip_instruction(&mut self, il32: bool) {
        if !self.is_aarch32() {
            // A64 instructions are all 32 bits (IL = 1).
            self.pc = self.pc.wrapping_add(4);
            return;
        }
        let len = if il32 { 4 } else { 2 };
        self.pc = self.pc.wrapping_add(len) & 0xffff_ffff;
        let it = pstate::aarch32_itstate(self.pstate);
        if self.pstate & pstate::AARCH32_T != 0 && it != 0 {
            let next = if it & 0b111 == 0 {
                0
            } else {
                (it & 0b1110_0000) | ((it << 1) & 0b1_1111)
            };
            self.pstate = pstate::with_aarch32_itstate(self.pstate, next);
        }
    }
}

/// PSTATE values (Arm ARM C5.2.19 SPSR_EL2, AArch64 state; D1.4 for the AArch32 format that
/// SPSR_ELx uses when the exception came from AArch32).
pub mod pstate {
    pub const MODE_MASK: u64 = 0b1111;
    pub const EL0T: u64 = 0b0000;
    pub const EL1T: u64 = 0b0100;
    pub const EL1H: u64 = 0b0101;
    /// Register width bit: set means the exception came from AArch32.
    pub const NRW: u64 = 1 << 4;
    pub const F: u64 = 1 << 6;
    pub const I: u64 = 1 << 7;
    pub const A: u64 = 1 << 8;
    pub const D: u64 = 1 << 9;
    pub const DAIF: u64 = D | A | I | F;
    /// What a vCPU starts with (boot protocol: EL1h, all exceptions masked).
    pub const RESET: u64 = EL1H | DAIF;
    /// N, Z, C, V [31:28], the same in both formats.
    pub const NZCV: u64 = 0xf << 28;
    /// AArch64 format: SSBS [12], PAN [22], UAO [23], DIT [24].
    pub const SSBS: u64 = 1 << 12;
    pub const PAN: u64 = 1 << 22;
    pub const DIT: u64 = 1 << 24;
    /// AArch32 format: M[4:0] [4:0] (User mode is 0b10000), T [5], IT[7:2] [15:10],
    /// DIT [21], PAN [22], IT[1:0] [26:25].
    pub const AARCH32_MODE_MASK: u64 = 0b1_1111;
    pub const AARCH32_USR: u64 = 0b1_0000;
    pub const AARCH32_T: u64 = 1 << 5;
    pub const AARCH32_DIT: u64 = 1 << 21;
    pub const AARCH32_PAN: u64 = 1 << 22;
    const IT_LOW: u64 = 0b11 << 25;
    const IT_HIGH: u64 = 0b11_1111 << 10;

    /// ITSTATE (IT[7:0]) of an AArch32-format PSTATE.
    pub fn aarch32_itstate(p: u64) -> u8 {
        (((p >> 25) & 0b11) | (((p >> 10) & 0b11_1111) << 2)) as u8
    }

    /// `p` with its ITSTATE replaced by `it`.
    pub fn with_aarch32_itstate(p: u64, it: u8) -> u64 {
        let it = u64::from(it);
        (p & !(IT_LOW | IT_HIGH)) | ((it & 0b11) << 25) | ((it >> 2) << 10)
    }
}

/// The EL1 registers exception injection needs. While the vCPU runs these are the live
/// hardware registers.
pub trait El1Access {
    fn vbar_el1(&self) -> u64;
    fn sctlr_el1(&self) -> u64;
    fn set_elr_el1(&mut self, v: u64);
    fn set_spsr_el1(&mut self, v: u64);
    fn set_esr_el1(&mut self, v: u64);
    fn set_far_el1(&mut self, v: u64);
    /// The PE features that change what an exception entry does to PSTATE.
    fn features(&self) -> PeFeatures;
}

/// PE features that exception entry depends on (from the ID registers).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct PeFeatures {
    /// FEAT_PAN (ID_AA64MMFR1_EL1.PAN != 0).
    pub pan: bool,
    /// FEAT_SSBS (ID_AA64PFR1_EL1.SSBS != 0).
    pub ssbs: bool,
}

/// SCTLR_EL1.SPAN [23]: 0 = PSTATE.PAN is set on taking an exception to EL1.
const SCTLR_SPAN: u64 = 1 << 23;
/// SCTLR_EL1.DSSBS [44]: the value of PSTATE.SSBS on taking an exception to EL1.
const SCTLR_DSSBS: u64 = 1 << 44;

/// The kind of exception, which selects the vector within a group (Arm ARM D1.10.2).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum VectorKind {
    Synchronous = 0x000,
    Irq = 0x080,
    Fiq = 0x100,
    SError = 0x180,
}

/// Errors when a synchronous exception cannot be delivered the way the architecture says.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum InjectError {
    /// The guest was in an AArch32 mode other than User: impossible with an AArch64 EL1
    /// (HCR_EL2.RW = 1), so the saved state is corrupt.
    Aarch32Privileged,
}

/// Delivers an exception to the guest's EL1 (always AArch64) as the hardware would have
/// (Arm ARM D1.4 "Exceptions", `AArch64.TakeException`): saves the preferred return address and
/// PSTATE in ELR_EL1/SPSR_EL1 (SPSR in the format of the state the guest was in), writes the
/// syndrome and fault address, and continues at VBAR_EL1 plus the vector offset for where the
/// guest was: current EL with SP_EL0 (0x000) or SP_EL1 (0x200), lower EL in AArch64 (0x400)
/// or in AArch32 (0x600, a 32-bit program at EL0). The new PSTATE is EL1h with D, A, I, F
/// masked; N, Z, C, V and DIT are kept, PAN is set when SCTLR_EL1.SPAN = 0 (FEAT_PAN), SSBS
/// is SCTLR_EL1.DSSBS (FEAT_SSBS), and UAO, SS, IL, BTYPE are 0.
pub fn inject_exception(
    regs: &mut GuestRegs,
    el1: &mut dyn El1Access,
    kind: VectorKind,
    esr: u64,
    far: Option<u64>,
) -> Result<(), InjectError> {
    let old = regs.pstate;
    let (group, dit, pan) = if regs.is_aarch32() {
        if old & pstate::AARCH32_MODE_MASK != pstate::AARCH32_USR {
            return Err(InjectError::Aarch32Privileged);
        }
        (
            0x600,
            old & pstate::AARCH32_DIT != 0,
            old & pstate::AARCH32_PAN != 0,
        )
    } else {
        let group = match old & pstate::MODE_MASK {
            pstate::EL1T => 0x000,
            pstate::EL1H => 0x200,
            _ => 0x400, // from EL0 (AArch64): lower EL group
        };
        (group, old & pstate::DIT != 0, old & pstate::PAN != 0)
    };
    let sctlr = el1.sctlr_el1();
    let features = el1.features();
    let mut new = pstate::EL1H | pstate::DAIF | (old & pstate::NZCV);
    if dit {
        new |= pstate::DIT;
    }
    if pan || (features.pan && sctlr & SCTLR_SPAN == 0) {
        new |= pstate::PAN;
    }
    if features.ssbs && sctlr & SCTLR_DSSBS != 0 {
        new |= pstate::SSBS;
    }
    let elr = if regs.is_aarch32() {
        regs.pc & 0xffff_ffff
    } else {
        regs.pc
    };
    el1.set_elr_el1(elr);
    el1.set_spsr_el1(old);
    el1.set_esr_el1(esr);
    if let Some(f) = far {
        el1.set_far_el1(f);
    }
    regs.pc = el1.vbar_el1().wrapping_add(group + kind as u64);
    regs.pstate = new;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct FakeEl1 {
        vbar: u64,
        sctlr: u64,
        features: PeFeatures,
        elr: u64,
        spsr: u64,
        esr: u64,
        far: u64,
    }

    impl El1Access for FakeEl1 {
        fn vbar_el1(&self) -> u64 {
            self.vbar
        }
        fn sctlr_el1(&self) -> u64 {
            self.sctlr
        }
        fn set_elr_el1(&mut self, v: u64) {
            self.elr = v
        }
        fn set_spsr_el1(&mut self, v: u64) {
            self.spsr = v
        }
        fn set_esr_el1(&mut self, v: u64) {
            self.esr = v
        }
        fn set_far_el1(&mut self, v: u64) {
            self.far = v
        }
        fn features(&self) -> PeFeatures {
            self.features
        }
    }

    /// SCTLR_EL1 with SPAN = 1 (PAN left alone on exception entry).
    const SPAN: u64 = 1 << 23;

    fn regs(pstate: u64) -> GuestRegs {
        GuestRegs {
            pc: 0x4008_1000,
            pstate,
            ..Default::default()
        }
    }

    #[test]
    fn sync_exception_from_el1h_goes_to_the_current_el_spx_vector() {
        let mut el1 = FakeEl1 {
            vbar: 0xffff_8000_1000_0000,
            sctlr: SPAN,
            ..Default::default()
        };
        let mut r = regs(pstate::EL1H | pstate::I);
        let esr = 0x9600_0050;
        inject_exception(
            &mut r,
            &mut el1,
            VectorKind::Synchronous,
            esr,
            Some(0x900_0000),
        )
        .unwrap();
        assert_eq!(r.pc, 0xffff_8000_1000_0200);
        assert_eq!(r.pstate, pstate::EL1H | pstate::DAIF);
        assert_eq!(el1.elr, 0x4008_1000);
        assert_eq!(el1.spsr, pstate::EL1H | pstate::I);
        assert_eq!(el1.esr, 0x9600_0050);
        assert_eq!(el1.far, 0x900_0000);
    }

    #[test]
    fn exceptions_from_el0_and_el1t_use_their_own_vector_groups() {
        let mut el1 = FakeEl1 {
            vbar: 0x1000,
            sctlr: SPAN,
            ..Default::default()
        };
        let mut r = regs(pstate::EL0T);
        inject_exception(&mut r, &mut el1, VectorKind::Synchronous, 0x0200_0000, None).unwrap();
        assert_eq!(r.pc, 0x1400);
        let mut r = regs(pstate::EL1T);
        inject_exception(&mut r, &mut el1, VectorKind::Irq, 0, None).unwrap();
        assert_eq!(r.pc, 0x1080);
    }

    #[test]
    fn an_abort_from_aarch32_el0_goes_to_the_lower_el_aarch32_vector() {
        let mut el1 = FakeEl1 {
            vbar: 0xffff_8000_1000_0000,
            sctlr: SPAN,
            ..Default::default()
        };
        // A Thumb program in User mode, Z and C set, IRQs unmasked.
        let user = pstate::NRW | pstate::AARCH32_T | (0b0110 << 28);
        let mut r = GuestRegs {
            pc: 0x0001_0a32,
            pstate: user,
            ..Default::default()
        };
        let esr = 0x9200_0010; // data abort from a lower EL, IL, external abort
        inject_exception(
            &mut r,
            &mut el1,
            VectorKind::Synchronous,
            esr,
            Some(0x0c00_0000),
        )
        .unwrap();
        assert_eq!(r.pc, 0xffff_8000_1000_0600);
        assert_eq!(r.pstate, pstate::EL1H | pstate::DAIF | (0b0110 << 28));
        assert_eq!(el1.elr, 0x0001_0a32, "ELR_EL1: the faulting instruction");
        assert_eq!(el1.spsr, user, "SPSR_EL1 in AArch32 format, unchanged");
        assert_eq!((el1.esr, el1.far), (esr, 0x0c00_0000));
    }

    #[test]
    fn aarch32_modes_other_than_user_are_refused() {
        let mut el1 = FakeEl1::default();
        let mut r = regs(pstate::NRW | 0x13); // SVC mode: an AArch32 EL1, which cannot exist
        assert_eq!(
            inject_exception(&mut r, &mut el1, VectorKind::Synchronous, 0, None),
            Err(InjectError::Aarch32Privileged)
        );
        assert_eq!(r, regs(pstate::NRW | 0x13));
    }

    #[test]
    fn exception_entry_sets_pan_and_ssbs_from_sctlr_and_keeps_nzcv_and_dit() {
        let features = PeFeatures {
            pan: true,
            ssbs: true,
        };
        // SPAN = 0: PAN is set; DSSBS = 1: SSBS is set; UAO (bit 23) and SS (bit 21) cleared.
        let mut el1 = FakeEl1 {
            sctlr: 1 << 44,
            features,
            ..Default::default()
        };
        let old = pstate::EL0T | pstate::DIT | (1 << 23) | (1 << 21) | (0b1001 << 28);
        let mut r = regs(old);
        inject_exception(&mut r, &mut el1, VectorKind::Synchronous, 0, None).unwrap();
        assert_eq!(
            r.pstate,
            pstate::EL1H | pstate::DAIF | pstate::PAN | pstate::SSBS | pstate::DIT | (0b1001 << 28)
        );
        // SPAN = 1 keeps PAN as it was (clear here); without FEAT_SSBS nothing sets SSBS.
        let mut el1 = FakeEl1 {
            sctlr: SPAN | (1 << 44),
            features: PeFeatures {
                pan: true,
                ssbs: false,
            },
            ..Default::default()
        };
        let mut r = regs(pstate::EL1H | pstate::SSBS);
        inject_exception(&mut r, &mut el1, VectorKind::Synchronous, 0, None).unwrap();
        assert_eq!(r.pstate, pstate::EL1H | pstate::DAIF);
        // From AArch32, DIT and PAN move from their AArch32 bits to their AArch64 ones.
        let mut r =
            regs(pstate::NRW | pstate::AARCH32_USR | pstate::AARCH32_DIT | pstate::AARCH32_PAN);
        inject_exception(&mut r, &mut el1, VectorKind::Synchronous, 0, None).unwrap();
        assert_eq!(
            r.pstate,
            pstate::EL1H | pstate::DAIF | pstate::DIT | pstate::PAN
        );
    }

    #[test]
    fn skipping_an_instruction_follows_its_length() {
        let mut r = regs(pstate::EL1H);
        r.skip_instruction(true);
        assert_eq!(r.pc, 0x4008_1004);
        // A 16-bit Thumb load at EL0 (ESR_EL2.IL = 0), outside an IT block.
        let user_t = pstate::NRW | pstate::AARCH32_USR | pstate::AARCH32_T;
        let mut r = GuestRegs {
            pc: 0x8000,
            pstate: user_t,
            ..Default::default()
        };
        r.skip_instruction(false);
        assert_eq!((r.pc, r.pstate), (0x8002, user_t));
        r.skip_instruction(true);
        assert_eq!((r.pc, r.pstate), (0x8006, user_t));
        // A32 at the top of the 32-bit address space wraps within it.
        let mut r = GuestRegs {
            pc: 0xffff_fffc,
            pstate: pstate::NRW | pstate::AARCH32_USR,
            ..Default::default()
        };
        r.skip_instruction(true);
        assert_eq!(r.pc, 0);
    }

    #[test]
    fn skipping_inside_an_it_block_advances_the_it_state() {
        let user_t = pstate::NRW | pstate::AARCH32_USR | pstate::AARCH32_T;
        // ITE EQ (firstcond 0000, mask 1100): IT = 0b0000_1100 before the first instruction.
        let mut r = GuestRegs {
            pc: 0x8000,
            pstate: pstate::with_aarch32_itstate(user_t, 0b0000_1100),
            ..Default::default()
        };
        assert_eq!(pstate::aarch32_itstate(r.pstate), 0b0000_1100);
        r.skip_instruction(false);
        // The second instruction runs under NE: IT = 0b0001_1000.
        assert_eq!(pstate::aarch32_itstate(r.pstate), 0b0001_1000);
        r.skip_instruction(false);
        // The block is over.
        assert_eq!(r.pstate, user_t);
        assert_eq!(r.pc, 0x8004);
        // The IT bits sit at [26:25] and [15:10] of the AArch32 PSTATE.
        assert_eq!(
            pstate::with_aarch32_itstate(0, 0xff),
            (0b11 << 25) | (0b11_1111 << 10)
        );
    }

    #[test]
    fn xzr_reads_zero_and_ignores_writes() {
        let mut r = GuestRegs::default();
        r.set_reg(31, 5);
        assert_eq!(r.reg(31), 0);
        r.set_reg(3, 7);
        assert_eq!(r.reg(3), 7);
    }
}
