//! A tiny runtime for bare-metal test guests: an arm64 Image header, self-relocation, a stack,
//! the console UART from the DTB, PSCI calls over HVC, and reporting helpers.
#![no_std]

use core::arch::{asm, global_asm};
use core::fmt::{self, Write};

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
    // SAFETY: the DTB pointer comes from the hypervisor per the arm64 boot protocol.
    if let Ok(f) = unsafe { fdt::Fdt::from_ptr(dtb as *const u8) } {
        if let Some(r) = f.chosen().stdout().and_then(|n| n.reg()).and_then(|mut r| r.next()) {
            // SAFETY: single-threaded at this point.
            unsafe { UART = r.starting_address as usize };
        }
    }
    // SAFETY: provided by the binary.
    unsafe { guest_main(dtb) }
}

static mut UART: usize = 0x0900_0000;

/// Writes to the PL011 data register the DTB names.
pub fn putc(b: u8) {
    // SAFETY: single-vCPU test guests; UART is the emulated PL011's data register.
    unsafe { core::ptr::write_volatile(UART as *mut u32, b as u32) }
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

/// An SMCCC call over HVC: returns x0..x3.
pub fn hvc(f: u64, a1: u64, a2: u64, a3: u64) -> [u64; 4] {
    let (mut r0, mut r1, mut r2, mut r3) = (f, a1, a2, a3);
    // SAFETY: an SMCCC call to the hypervisor; x0-x3 carry arguments and results and SMCCC 1.1
    // preserves the rest.
    unsafe {
        asm!("hvc #0", inout("x0") r0, inout("x1") r1, inout("x2") r2, inout("x3") r3,
             options(nostack))
    };
    [r0, r1, r2, r3]
}

pub fn system_off() -> ! {
    hvc(0x8400_0008, 0, 0, 0);
    loop {
        // SAFETY: waiting for the end.
        unsafe { asm!("wfi") };
    }
}

/// The guest's RAM ranges from the DTB.
pub fn memory(dtb: usize) -> [(u64, u64); 4] {
    let mut out = [(0, 0); 4];
    // SAFETY: as in guest_entry.
    if let Ok(f) = unsafe { fdt::Fdt::from_ptr(dtb as *const u8) } {
        for (i, r) in f.memory().regions().take(4).enumerate() {
            out[i] = (r.starting_address as u64, r.size.unwrap_or(0) as u64);
        }
    }
    out
}

unsafe extern "C" {
    static __image_end: u8;
}

/// Where this program's image (stack included) ends.
pub fn image_end() -> u64 {
    core::ptr::addr_of!(__image_end) as u64
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    println!("GUEST PANIC: {}", info.message());
    system_off()
}
