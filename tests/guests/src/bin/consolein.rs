//! Reads one line of console input through its PL011: enables the receiver (UARTCR.UARTEN,
//! RXE, TXE with UARTLCR_H.FEN, as a driver's start-up does), then polls UARTFR.RXFE and reads
//! UARTDR until a newline, for at most `consolein.wait_ms=N` milliseconds (default 30000).
//! Then PSCI SYSTEM_OFF.
//!
//! Output:
//! ```text
//! CONSOLEIN: ready
//! CONSOLEIN: line '<the bytes before the newline>'     (or `CONSOLEIN: timeout after '<bytes>'`)
//! ```
#![no_std]
#![no_main]

use kestrel_test_guests::{dt, mmio, println, timer, uart_base};

/// UARTFR, UARTLCR_H, UARTCR (PL011 TRM 3.2).
const FR: u64 = 0x18;
const LCR_H: u64 = 0x2c;
const CR: u64 = 0x30;
const FR_RXFE: u32 = 1 << 4;
const LCR_H_FEN_8BIT: u32 = (1 << 4) | (0b11 << 5);
const CR_UARTEN_TXE_RXE: u32 = 1 | (1 << 8) | (1 << 9);

#[unsafe(no_mangle)]
fn guest_main(dtb: usize) -> ! {
    let wait_ms = dt::bootarg_u64(dtb, "consolein.wait_ms", 30_000);
    let base = uart_base();
    // SAFETY: the console PL011's control registers; programming them has no memory effects.
    unsafe {
        mmio::write32(base + LCR_H, LCR_H_FEN_8BIT);
        mmio::write32(base + CR, CR_UARTEN_TXE_RXE);
    }
    println!("CONSOLEIN: ready");
    let deadline = timer::cntvct() + wait_ms * timer::cntfrq() / 1000;
    let mut line = [0u8; 64];
    let mut n = 0usize;
    loop {
        // SAFETY: reading UARTFR has no side effect.
        let fr = unsafe { mmio::read32(base + FR) };
        if fr & FR_RXFE == 0 {
            // SAFETY: UARTDR; reading it takes one received byte.
            let b = unsafe { mmio::read32(base) } as u8;
            if b == b'\n' || b == b'\r' {
                break;
            }
            if n < line.len() {
                line[n] = b;
                n += 1;
            }
            continue;
        }
        if timer::cntvct() > deadline {
            let got = core::str::from_utf8(&line[..n]).unwrap_or("<not utf-8>");
            println!("CONSOLEIN: timeout after '{got}'");
            kestrel_test_guests::system_off()
        }
    }
    let got = core::str::from_utf8(&line[..n]).unwrap_or("<not utf-8>");
    println!("CONSOLEIN: line '{got}'");
    kestrel_test_guests::system_off()
}
