//! Volatile device-register accessors.

/// # Safety
/// `addr` must be a readable device register (or RAM) of this guest, 4-byte aligned.
pub unsafe fn read32(addr: u64) -> u32 {
    // SAFETY: per the contract.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

/// # Safety
/// `addr` must be a writable device register of this guest, 4-byte aligned, and writing
/// `v` must be harmless to the program.
pub unsafe fn write32(addr: u64, v: u32) {
    // SAFETY: per the contract.
    unsafe { core::ptr::write_volatile(addr as *mut u32, v) }
}

/// # Safety
/// As [`read32`], 8-byte aligned, and the device must accept 64-bit accesses there.
pub unsafe fn read64(addr: u64) -> u64 {
    // SAFETY: per the contract.
    unsafe { core::ptr::read_volatile(addr as *const u64) }
}

/// # Safety
/// As [`write32`], 8-byte aligned, and the device must accept 64-bit accesses there.
pub unsafe fn write64(addr: u64, v: u64) {
    // SAFETY: per the contract.
    unsafe { core::ptr::write_volatile(addr as *mut u64, v) }
}

/// # Safety
/// As [`write32`], for a byte-accessible register.
pub unsafe fn write8(addr: u64, v: u8) {
    // SAFETY: per the contract.
    unsafe { core::ptr::write_volatile(addr as *mut u8, v) }
}
