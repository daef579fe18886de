//! Device-register accessors.
//!
//! Each access is one plain LDR/STR with a base register and no writeback, written in assembly:
//! `read_volatile` may compile to a pre/post-indexed or pair access, whose data abort carries no
//! instruction syndrome (ESR_EL2.ISS.ISV = 0, Arm ARM D24.2.40), so a hypervisor cannot emulate
//! it.
use core::arch::asm;

/// # Safety
/// `addr` must be a readable device register (or RAM) of this guest, 4-byte aligned.
pub unsafe fn read32(addr: u64) -> u32 {
    let v: u32;
    // SAFETY: per the contract.
    unsafe { asm!("ldr {v:w}, [{a}]", v = out(reg) v, a = in(reg) addr, options(nostack)) };
    v
}

/// # Safety
/// `addr` must be a writable device register of this guest, 4-byte aligned, and writing
/// `v` must be harmless to the program.
pub unsafe fn write32(addr: u64, v: u32) {
    // SAFETY: per the contract.
    unsafe { asm!("str {v:w}, [{a}]", v = in(reg) v, a = in(reg) addr, options(nostack)) };
}

/// # Safety
/// As [`read32`], 8-byte aligned, and the device must accept 64-bit accesses there.
pub unsafe fn read64(addr: u64) -> u64 {
    let v: u64;
    // SAFETY: per the contract.
    unsafe { asm!("ldr {v}, [{a}]", v = out(reg) v, a = in(reg) addr, options(nostack)) };
    v
}

/// # Safety
/// As [`write32`], 8-byte aligned, and the device must accept 64-bit accesses there.
pub unsafe fn write64(addr: u64, v: u64) {
    // SAFETY: per the contract.
    unsafe { asm!("str {v}, [{a}]", v = in(reg) v, a = in(reg) addr, options(nostack)) };
}

/// # Safety
/// As [`write32`], for a byte-accessible register.
pub unsafe fn write8(addr: u64, v: u8) {
    // SAFETY: per the contract.
    unsafe { asm!("strb {v:w}, [{a}]", v = in(reg) v as u32, a = in(reg) addr, options(nostack)) };
}
