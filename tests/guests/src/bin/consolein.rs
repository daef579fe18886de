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

use kestrel_test_guests::{dt, println, timer, wait_for_key};

#[unsafe(no_mangle)]
fn guest_main(dtb: usize) -> ! {
    let wait_ms = dt::bootarg_u64(dtb, "consolein.wait_ms", 30_000);
    let deadline = timer::cntvct() + wait_ms * timer::cntfrq() / 1000;
    // Turns the receiver on (a zero wait reads nothing).
    wait_for_key(0);
    println!("CONSOLEIN: ready");
    let mut line = [0u8; 64];
    let mut n = 0usize;
    loop {
        let left = deadline.saturating_sub(timer::cntvct()) * 1000 / timer::cntfrq();
        let Some(b) = wait_for_key(left) else {
            let got = core::str::from_utf8(&line[..n]).unwrap_or("<not utf-8>");
            println!("CONSOLEIN: timeout after '{got}'");
            kestrel_test_guests::system_off()
        };
        if b == b'\n' || b == b'\r' {
            break;
        }
        if n < line.len() {
            line[n] = b;
            n += 1;
        }
    }
    let got = core::str::from_utf8(&line[..n]).unwrap_or("<not utf-8>");
    println!("CONSOLEIN: line '{got}'");
    kestrel_test_guests::system_off()
}
