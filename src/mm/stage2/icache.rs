//! Instruction-cache coherence for guest memory, decided from CTR_EL0.
//!
//! Before guest RAM becomes executable at stage 2, instruction fetches from it must see what
//! the hypervisor last wrote there (zeroes from scrubbing, a loaded image) and not lines a
//! previous owner of the page left in an instruction cache. The architecture asks for two
//! steps (Arm ARM D7.5, cache maintenance for instruction/data coherence): clean the data
//! cache to the point of unification, then invalidate the instruction cache to the PoU.
//! CTR_EL0 says which steps a CPU needs:
//!
//! - IDC = 1: data-to-instruction coherence needs no D-cache clean to the PoU;
//! - DIC = 1: it needs no I-cache invalidation;
//! - L1Ip: PIPT instruction caches can be invalidated by address (the hypervisor's identity
//!   map reaches the same physical lines as the guest's mappings); VIPT and the others are
//!   indexed by virtual address, so an invalidation through the hypervisor's address may miss
//!   the lines a guest VA filled: invalidate them all (`IC IALLUIS`), as Linux assumes for
//!   VIPT (`icache_is_aliasing`).
//!
//! KVM does the I-cache step when it installs an executable stage-2 leaf
//! (`invalidate_icache_guest_page`, skipped with DIC); so does the stage-2 table here, through
//! [`super::Stage2Tlb::icache_inval_pou`], whose EL2 implementation asks [`CacheType`]. The
//! D-cache step happens where the hypervisor writes guest memory (`Vm::prepare`).
#![forbid(unsafe_code)]

use core::fmt;

use tock_registers::LocalRegisterCopy;
use tock_registers::register_bitfields;

register_bitfields! {u64,
    /// CTR_EL0, Cache Type Register (Arm ARM D24.2 "CTR_EL0"); the fields used here.
    pub CTR_EL0 [
        /// [29] DIC: I-cache invalidation to the PoU is not required for data-to-instruction
        /// coherence.
        DIC OFFSET(29) NUMBITS(1) [],
        /// [28] IDC: D-cache clean to the PoU is not required for data-to-instruction
        /// coherence.
        IDC OFFSET(28) NUMBITS(1) [],
        /// [19:16] DminLine: log2 of the smallest data cache line, in words.
        DMINLINE OFFSET(16) NUMBITS(4) [],
        /// [15:14] L1Ip: level-1 instruction cache indexing and tagging policy.
        L1IP OFFSET(14) NUMBITS(2) [
            Vpipt = 0b00,
            Aivivt = 0b01,
            Vipt = 0b10,
            Pipt = 0b11
        ],
        /// [3:0] IminLine: log2 of the smallest instruction cache line, in words.
        IMINLINE OFFSET(0) NUMBITS(4) []
    ]
}

/// Above this size an invalidation by address costs more than invalidating everything
/// (`IC IVAU` per 64-byte line: 1024 instructions for 64 KiB; a 2 MiB block would take
/// 32768).
pub const BY_LINE_MAX: u64 = 64 << 10;

/// What to do to the instruction caches before a range becomes executable.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum IcacheSync {
    /// Nothing (CTR_EL0.DIC = 1).
    None,
    /// `IC IALLUIS`, `DSB ISH`.
    All,
    /// `IC IVAU` for every `line` bytes of the range, `DSB ISH`.
    ByLine { line: u64 },
}

/// A decoded CTR_EL0.
#[derive(Clone, Copy)]
pub struct CacheType(LocalRegisterCopy<u64, CTR_EL0::Register>);

impl CacheType {
    pub fn new(ctr_el0: u64) -> Self {
        Self(LocalRegisterCopy::new(ctr_el0))
    }

    pub fn raw(self) -> u64 {
        self.0.get()
    }

    /// True when data-to-instruction coherence needs no I-cache invalidation (DIC).
    pub fn dic(self) -> bool {
        self.0.is_set(CTR_EL0::DIC)
    }

    /// True when data-to-instruction coherence needs no D-cache clean to the PoU (IDC).
    pub fn idc(self) -> bool {
        self.0.is_set(CTR_EL0::IDC)
    }

    /// The smallest instruction cache line in bytes.
    pub fn icache_line(self) -> u64 {
        4 << self.0.read(CTR_EL0::IMINLINE)
    }

    /// The smallest data cache line in bytes.
    pub fn dcache_line(self) -> u64 {
        4 << self.0.read(CTR_EL0::DMINLINE)
    }

    /// True for a physically indexed, physically tagged L1 instruction cache.
    pub fn icache_pipt(self) -> bool {
        self.0.matches_all(CTR_EL0::L1IP::Pipt)
    }

    /// The I-cache maintenance that makes `size` bytes of memory safe to execute.
    pub fn icache_sync(self, size: u64) -> IcacheSync {
        if self.dic() {
            IcacheSync::None
        } else if self.icache_pipt() && size <= BY_LINE_MAX {
            IcacheSync::ByLine {
                line: self.icache_line(),
            }
        } else {
            IcacheSync::All
        }
    }
}

impl fmt::Debug for CacheType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheType({:#x})", self.raw())
    }
}

impl fmt::Display for CacheType {
    /// One line for the boot log: CTR_EL0 and what it means for guest code.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let policy = match self.0.read_as_enum(CTR_EL0::L1IP) {
            Some(CTR_EL0::L1IP::Value::Pipt) => "PIPT",
            Some(CTR_EL0::L1IP::Value::Vipt) => "VIPT",
            Some(CTR_EL0::L1IP::Value::Aivivt) => "AIVIVT",
            _ => "VPIPT",
        };
        write!(
            f,
            "CTR_EL0 {:#x} (DIC={} IDC={} L1Ip={policy} I-line {} D-line {}): ",
            self.raw(),
            self.dic() as u8,
            self.idc() as u8,
            self.icache_line(),
            self.dcache_line()
        )?;
        match (self.dic(), self.idc()) {
            (true, true) => write!(f, "guest code needs no cache maintenance"),
            (true, false) => write!(f, "D-cache clean to PoU before guest code, no I-cache"),
            (false, _) => write!(
                f,
                "{}I-cache invalidation ({}) before guest code",
                if self.idc() {
                    ""
                } else {
                    "D-cache clean to PoU, "
                },
                if self.icache_pipt() {
                    "by line up to 64 KiB, else all"
                } else {
                    "all"
                }
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_icache_step_follows_dic_and_the_l1_policy() {
        // Cortex-A72 (Raspberry Pi 4): CTR_EL0 = 0x8444c004: PIPT, 64-byte lines, DIC = IDC = 0.
        let a72 = CacheType::new(0x8444_c004);
        assert!(!a72.dic() && !a72.idc() && a72.icache_pipt());
        assert_eq!(a72.icache_line(), 64);
        assert_eq!(a72.dcache_line(), 64);
        assert_eq!(a72.icache_sync(4096), IcacheSync::ByLine { line: 64 });
        assert_eq!(
            a72.icache_sync(BY_LINE_MAX),
            IcacheSync::ByLine { line: 64 }
        );
        assert_eq!(a72.icache_sync(2 << 20), IcacheSync::All);
        // A VIPT I-cache (0b10 in [15:14]) always needs all.
        let vipt = CacheType::new(0x8444_8004);
        assert!(!vipt.icache_pipt());
        assert_eq!(vipt.icache_sync(4096), IcacheSync::All);
        // AIVIVT and VPIPT: all.
        assert_eq!(
            CacheType::new(0x8444_4004).icache_sync(4096),
            IcacheSync::All
        );
        assert_eq!(
            CacheType::new(0x8444_0004).icache_sync(4096),
            IcacheSync::All
        );
        // DIC = IDC = 1: nothing, whatever the size.
        let n1 = CacheType::new(0xb444_c004);
        assert!(n1.dic() && n1.idc());
        assert_eq!(n1.icache_sync(4096), IcacheSync::None);
        assert_eq!(n1.icache_sync(1 << 30), IcacheSync::None);
        // DIC alone suffices for the I-cache step; IDC alone does not.
        assert_eq!(
            CacheType::new(0x8444_c004 | 1 << 29).icache_sync(4096),
            IcacheSync::None
        );
        assert_eq!(
            CacheType::new(0x8444_c004 | 1 << 28).icache_sync(4096),
            IcacheSync::ByLine { line: 64 }
        );
        // 32-byte I-lines (IminLine = 3).
        assert_eq!(
            CacheType::new(0x8444_c003).icache_sync(4096),
            IcacheSync::ByLine { line: 32 }
        );
    }

    #[test]
    fn the_boot_line_says_what_guest_code_needs() {
        assert_eq!(
            alloc::format!("{}", CacheType::new(0xb444_c004)),
            "CTR_EL0 0xb444c004 (DIC=1 IDC=1 L1Ip=PIPT I-line 64 D-line 64): guest code needs \
             no cache maintenance"
        );
        assert_eq!(
            alloc::format!("{}", CacheType::new(0x8444_c004)),
            "CTR_EL0 0x8444c004 (DIC=0 IDC=0 L1Ip=PIPT I-line 64 D-line 64): D-cache clean to \
             PoU, I-cache invalidation (by line up to 64 KiB, else all) before guest code"
        );
    }
}
