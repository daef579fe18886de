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
    /// Steps over the trapped 32-bit instruction.
    pub fn skip_instruction(&mut self) {
        self.pc = self.pc.wrapping_add(4);
    }
}

/// PSTATE values (Arm ARM C5.2.19 SPSR_EL2, AArch64 state).
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
}

/// The EL1 registers exception injection needs. While the vCPU runs these are the live
/// hardware registers.
pub trait El1Access {
    fn vbar_el1(&self) -> u64;
    fn set_elr_el1(&mut self, v: u64);
    fn set_spsr_el1(&mut self, v: u64);
    fn set_esr_el1(&mut self, v: u64);
    fn set_far_el1(&mut self, v: u64);
}

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
    /// The guest was executing in AArch32 state, which this hypervisor does not run.
    Aarch32Guest,
}

/// Delivers an exception to the guest's EL1 as the hardware would have: saves pc and PSTATE in
/// ELR_EL1/SPSR_EL1, writes the syndrome and fault address, and continues at VBAR_EL1 plus the
/// vector offset for where the guest was (current EL with SP0 or SPx, or a lower EL), in EL1h
/// with D, A, I and F masked.
pub fn inject_exception(
    regs: &mut GuestRegs,
    el1: &mut dyn El1Access,
    kind: VectorKind,
    esr: u64,
    far: Option<u64>,
) -> Result<(), InjectError> {
    if regs.pstate & pstate::NRW != 0 {
        return Err(InjectError::Aarch32Guest);
    }
    let group = match regs.pstate & pstate::MODE_MASK {
        pstate::EL1T => 0x000,
        pstate::EL1H => 0x200,
        _ => 0x400, // from EL0 (AArch64): lower EL group
    };
    el1.set_elr_el1(regs.pc);
    el1.set_spsr_el1(regs.pstate);
    el1.set_esr_el1(esr);
    if let Some(f) = far {
        el1.set_far_el1(f);
    }
    regs.pc = el1.vbar_el1().wrapping_add(group + kind as u64);
    regs.pstate = pstate::EL1H | pstate::DAIF;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct FakeEl1 {
        vbar: u64,
        elr: u64,
        spsr: u64,
        esr: u64,
        far: u64,
    }

    impl El1Access for FakeEl1 {
        fn vbar_el1(&self) -> u64 {
            self.vbar
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
    }

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
    fn aarch32_guests_are_refused() {
        let mut el1 = FakeEl1::default();
        let mut r = regs(pstate::NRW | 0x13);
        assert_eq!(
            inject_exception(&mut r, &mut el1, VectorKind::Synchronous, 0, None),
            Err(InjectError::Aarch32Guest)
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
