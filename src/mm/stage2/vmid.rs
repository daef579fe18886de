//! VMIDs: the tag that keeps one VM's stage-2 TLB entries apart from another's.
//!
//! A VMID is handed out when a VM is created and returned when it is destroyed; it is never
//! given to a second VM while the first still holds it. VMID 0 is reserved (it is what
//! VTTBR_EL2 holds while no guest runs). The stage-2 table invalidates the whole VMID
//! (TLBI VMALLS12E1IS) when it is destroyed, so a freed VMID carries no stale entries into its
//! next VM.
#![forbid(unsafe_code)]

use alloc::vec;
use alloc::vec::Vec;

use super::Stage2Error;

/// A virtual machine identifier (VTTBR_EL2.VMID).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Vmid(u16);

impl Vmid {
    /// A VMID value for code that does not go through an allocator (tests, benchmarks).
    pub const fn new(raw: u16) -> Self {
        Self(raw)
    }
    pub const fn as_u16(self) -> u16 {
        self.0
    }
}

/// VMID width: ID_AA64MMFR1_EL1.VMIDBits (Arm ARM D19.2.65) says whether 16-bit VMIDs exist;
/// using them also needs VTCR_EL2.VS = 1.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum VmidBits {
    Bits8,
    Bits16,
}

impl VmidBits {
    /// Decodes ID_AA64MMFR1_EL1.VMIDBits (bits `[7:4]`, already extracted): 0b0010 means 16 bits,
    /// anything else 8.
    pub const fn from_id_field(field: u64) -> Self {
        if field == 0b0010 {
            Self::Bits16
        } else {
            Self::Bits8
        }
    }
    /// Number of VMID values (256 or 65536).
    pub const fn count(self) -> usize {
        match self {
            Self::Bits8 => 1 << 8,
            Self::Bits16 => 1 << 16,
        }
    }
}

/// Hands out VMIDs 1..count, round-robin so that a just-freed VMID is reused last.
pub struct VmidAllocator {
    bits: VmidBits,
    used: Vec<u64>,
    next: usize,
    in_use: usize,
}

impl VmidAllocator {
    pub fn new(bits: VmidBits) -> Self {
        let mut used = vec![0u64; bits.count() / 64];
        used[0] = 1; // VMID 0 is reserved.
        Self {
            bits,
            used,
            next: 1,
            in_use: 0,
        }
    }

    pub fn bits(&self) -> VmidBits {
        self.bits
    }

    /// VMIDs currently held by VMs.
    pub fn in_use(&self) -> usize {
        self.in_use
    }

    fn is_used(&self, v: usize) -> bool {
        self.used[v / 64] & (1 << (v % 64)) != 0
    }

    /// A VMID no live VM holds; `VmidExhausted` when all are taken.
    pub fn alloc(&mut self) -> Result<Vmid, Stage2Error> {
        let count = self.bits.count();
        for step in 0..count {
            let v = (self.next + step) % count;
            if !self.is_used(v) {
                self.used[v / 64] |= 1 << (v % 64);
                self.next = (v + 1) % count;
                self.in_use += 1;
                return Ok(Vmid(v as u16));
            }
        }
        Err(Stage2Error::VmidExhausted)
    }

    /// Returns a VMID. Freeing one that is not allocated (or VMID 0) is an error and changes
    /// nothing.
    pub fn free(&mut self, vmid: Vmid) -> Result<(), Stage2Error> {
        let v = vmid.0 as usize;
        if v == 0 || v >= self.bits.count() || !self.is_used(v) {
            return Err(Stage2Error::VmidNotAllocated(vmid.0));
        }
        self.used[v / 64] &= !(1 << (v % 64));
        self.in_use -= 1;
        Ok(())
    }
}
