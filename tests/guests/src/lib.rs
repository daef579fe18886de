//! A tiny runtime for bare-metal test guests.
//!
//! Each binary in `src/bin/` is a raw arm64 `Image` (the header below, see the kernel's
//! `Documentation/arch/arm64/booting.rst`) that a VM boots as its kernel: entered at EL1h with
//! the MMU and caches off, DAIF masked and x0 = the DTB's address. The runtime
//!
//! - applies its own `R_AARCH64_RELATIVE` relocations (the image is linked at 0 and runs
//!   wherever it is loaded), clears BSS, sets up a 64 KiB stack and VBAR_EL1 ([`exception`]);
//! - finds the console PL011 from `/chosen/stdout-path` ([`println!`]);
//! - offers what the guests need: probing accesses that may abort ([`exception::probe`]),
//!   SMCCC/PSCI calls over HVC and SMC ([`psci`]), the generic timer ([`timer`]), a minimal
//!   GICv3 set-up ([`gic`]), DTB look-ups and bootargs ([`dt`]), and starting a secondary vCPU
//!   ([`smp`]).
//!
//! The MMU stays off on purpose: every access then reaches stage 2 (the hypervisor) with the
//! guest-physical address the program names, which is what the hostile guest needs. With the
//! MMU off every data access is Device-nGnRnE (Arm ARM D8.2.10 "Behavior of the PE when stage 1
//! address translation is disabled"), so unaligned accesses fault and RAM is uncached.
//!
//! The guests are single-threaded apart from [`smp`]'s secondary entry, which must not print.
#![no_std]

use core::arch::{asm, global_asm};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicUsize, Ordering};

pub mod dt;
pub mod el0;
pub mod exception;
pub mod gic;
pub mod mmio;
pub mod psci;
pub mod smp;
pub mod timer;
pub mod virtio;

global_asm!(
    r#"
    .section .text.head, "ax"
    .global _start
_start:
    b       1f
    .long   0
    .quad   0                   /* text_offset */
    .quad   __image_size
    .quad   0xa                 /* LE, 4 KiB, anywhere */
    .quad   0, 0, 0
    .ascii  "ARM\x64"
    .long   0
1:  mov     x19, x0
    adr     x20, _start
    adrp    x1, __rela_start
    add     x1, x1, :lo12:__rela_start
    adrp    x2, __rela_end
    add     x2, x2, :lo12:__rela_end
2:  cmp     x1, x2
    b.hs    3f
    ldp     x3, x4, [x1], #16
    ldr     x5, [x1], #8
    cmp     w4, #1027
    b.ne    2b
    add     x5, x5, x20
    str     x5, [x20, x3]
    b       2b
3:  adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
4:  cmp     x1, x2
    b.hs    5f
    str     xzr, [x1], #8
    b       4b
5:  adrp    x1, __stack_top
    add     x1, x1, :lo12:__stack_top
    mov     sp, x1
    adrp    x1, guest_vectors
    add     x1, x1, :lo12:guest_vectors
    msr     vbar_el1, x1
    isb
    mov     x0, x19
    bl      guest_entry
6:  wfi
    b       6b
"#
);

unsafe extern "Rust" {
    fn guest_main(dtb: usize) -> !;
}

#[unsafe(no_mangle)]
extern "C" fn guest_entry(dtb: usize) -> ! {
    DTB.store(dtb, Ordering::Relaxed);
    if let Some(f) = dt::fdt(dtb)
        && f.find_node("/chosen").is_some()
        && let Some(r) = f
            .chosen()
            .stdout()
            .and_then(|n| n.reg())
            .and_then(|mut r| r.next())
    {
        UART.store(r.starting_address as usize, Ordering::Relaxed);
    }
    // SAFETY: provided by the binary; called once, on the boot CPU.
    unsafe { guest_main(dtb) }
}

static UART: AtomicUsize = AtomicUsize::new(0x0900_0000);
static DTB: AtomicUsize = AtomicUsize::new(0);

/// The DTB address the program was entered with.
pub fn dtb() -> usize {
    DTB.load(Ordering::Relaxed)
}

/// The console PL011's base address (from `/chosen/stdout-path`, else 0x0900_0000).
pub fn uart_base() -> u64 {
    UART.load(Ordering::Relaxed) as u64
}

/// Writes one byte to the PL011 data register (UARTDR, offset 0; PL011 TRM 3.3.1). The flag
/// register is not polled: the hypervisor's PL011 and QEMU's never report TXFF.
pub fn putc(b: u8) {
    // SAFETY: UART is the console PL011's data register, a device register that accepts a
    // 32-bit write at any time; writing a byte transmits it.
    unsafe { mmio::write32(uart_base(), b as u32) }
}

/// Turns the console PL011's receiver on (UARTLCR_H.FEN with 8-bit words, UARTCR.UARTEN, TXE,
/// RXE; PL011 TRM 3.3.7, 3.3.8) and waits up to `timeout_ms` of counter time for one byte of
/// input. `None` on timeout.
pub fn wait_for_key(timeout_ms: u64) -> Option<u8> {
    let base = uart_base();
    // SAFETY: the console PL011's line and control registers; programming them has no memory
    // effects.
    unsafe {
        mmio::write32(base + 0x2c, (1 << 4) | (0b11 << 5));
        mmio::write32(base + 0x30, 1 | (1 << 8) | (1 << 9));
    }
    let deadline = timer::cntvct() + timeout_ms * timer::cntfrq() / 1000;
    while timer::cntvct() < deadline {
        // SAFETY: reading UARTFR has no side effect; UARTDR is read only when it holds a byte.
        unsafe {
            if mmio::read32(base + 0x18) & (1 << 4) == 0 {
                return Some(mmio::read32(base) as u8);
            }
        }
    }
    None
}

pub struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            putc(b);
        }
        Ok(())
    }
}

#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{ use core::fmt::Write; let _ = writeln!($crate::Console, $($arg)*); }};
}

#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {{ use core::fmt::Write; let _ = write!($crate::Console, $($arg)*); }};
}

/// An SMCCC call over HVC #0: returns x0..x3. (See [`psci`] for the named calls.)
pub fn hvc(f: u64, a1: u64, a2: u64, a3: u64) -> [u64; 4] {
    psci::call(psci::Conduit::Hvc, f, a1, a2, a3)
}

/// PSCI SYSTEM_OFF over HVC; waits for the end if the call returns.
pub fn system_off() -> ! {
    hvc(psci::SYSTEM_OFF, 0, 0, 0);
    loop {
        // SAFETY: WFI has no memory effects; the VM is being torn down.
        unsafe { asm!("wfi", options(nomem, nostack)) };
    }
}

/// The guest's RAM ranges from the DTB (up to 4; unused entries are (0, 0)).
pub fn memory(dtb: usize) -> [(u64, u64); 4] {
    let mut out = [(0, 0); 4];
    if let Some(f) = dt::fdt(dtb)
        && f.find_node("/memory").is_some()
    {
        for (i, r) in f.memory().regions().take(4).enumerate() {
            out[i] = (r.starting_address as u64, r.size.unwrap_or(0) as u64);
        }
    }
    out
}

unsafe extern "C" {
    static _start: u8;
    static __image_end: u8;
}

/// Where this program's image starts (its load address).
pub fn image_start() -> u64 {
    core::ptr::addr_of!(_start) as u64
}

/// Where this program's image (BSS and stack included) ends.
pub fn image_end() -> u64 {
    core::ptr::addr_of!(__image_end) as u64
}

/// `num / den` printed with two decimals (integer arithmetic: the target has no FPU code).
#[derive(Clone, Copy, Debug)]
pub struct Ratio {
    pub num: i128,
    pub den: i128,
}

impl fmt::Display for Ratio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.den <= 0 {
            return f.write_str("nan");
        }
        let sign = if self.num < 0 { "-" } else { "" };
        let hundredths = (self.num.unsigned_abs() * 100 + self.den as u128 / 2) / self.den as u128;
        write!(f, "{sign}{}.{:02}", hundredths / 100, hundredths % 100)
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    println!("GUEST PANIC: {}", info.message());
    system_off()
}
