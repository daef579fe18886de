//! Printing with nothing set up: before the console exists, from the early exception vectors
//! (MMU on or off), and for a boot that stops before it has a console. Raw polled writes to
//! the UARTs of `platform::early_console` (a guess may name two), with no lock and no atomic
//! read-modify-write (exclusives need the MMU on), only aligned 32-bit device accesses, and a
//! bounded wait per byte: a UART that nobody enabled is dropped rather than hanging the report.
use crate::platform::UartKind;
use crate::platform::early_console::EarlyUart;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

/// Up to two UARTs: the base address with the kind in bits [1:0] (1 PL011, 2 mini UART),
/// 0 for none. Plain loads and stores only.
static TARGETS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

const KIND_PL011: u64 = 1;
const KIND_MINI: u64 = 2;
/// Polls of the TX status before a UART is given up (a byte takes ~87 µs at 115200 baud; each
/// poll is a device read of at least tens of nanoseconds).
const POLLS: u32 = 1_000_000;

// PL011 (Arm PrimeCell UART PL011 TRM, 3.2): UARTDR and UARTFR.TXFF.
const PL011_DR: u64 = 0x00;
const PL011_FR: u64 = 0x18;
const PL011_FR_TXFF: u32 = 1 << 5;
// Mini UART (BCM2711 ARM Peripherals 2.2.2, offsets from AUX_MU_IO_REG): AUX_MU_IO and
// AUX_MU_LSR bit 5, "transmitter empty" (can accept at least one byte).
const MINI_IO: u64 = 0x00;
const MINI_LSR: u64 = 0x14;
const MINI_LSR_TX_EMPTY: u32 = 1 << 5;

/// Makes `uarts` (at most two are used) the early console.
pub fn set(uarts: &[EarlyUart]) {
    for (i, slot) in TARGETS.iter().enumerate() {
        let v = uarts.get(i).map_or(0, |u| {
            u.base.as_u64()
                | match u.kind {
                    UartKind::Pl011 => KIND_PL011,
                    UartKind::Bcm2835Aux => KIND_MINI,
                }
        });
        slot.store(v, Ordering::Relaxed);
    }
}

/// True when there is an early UART to print on.
pub fn is_set() -> bool {
    TARGETS.iter().any(|t| t.load(Ordering::Relaxed) != 0)
}

fn rd32(a: u64) -> u32 {
    // SAFETY: `a` is a status register of a UART `set` was given (a device the DTB or the
    // board guess names, identity-mapped as device memory by the early map, or reached with the
    // MMU off); reading it has no side effect.
    unsafe { core::ptr::read_volatile(a as *const u32) }
}

fn wr32(a: u64, v: u32) {
    // SAFETY: as in `rd32`; a write to the data register transmits one byte.
    unsafe { core::ptr::write_volatile(a as *mut u32, v) }
}

fn putc(b: u8) {
    for slot in &TARGETS {
        let t = slot.load(Ordering::Relaxed);
        let base = t & !3;
        let kind = t & 3;
        let (status, data) = match kind {
            KIND_PL011 => (PL011_FR, PL011_DR),
            KIND_MINI => (MINI_LSR, MINI_IO),
            _ => continue,
        };
        let ready = |s: u32| {
            if kind == KIND_PL011 {
                s & PL011_FR_TXFF == 0
            } else {
                s & MINI_LSR_TX_EMPTY != 0
            }
        };
        let mut polls = 0;
        while !ready(rd32(base + status)) {
            polls += 1;
            if polls == POLLS {
                break;
            }
            core::hint::spin_loop();
        }
        if polls == POLLS {
            // Never ready: not a working UART. Drop it for the rest of the report.
            slot.store(0, Ordering::Relaxed);
        } else {
            wr32(base + data, u32::from(b));
        }
    }
}

/// Bytes to every early UART, `\n` as `\r\n`.
pub fn write(bytes: &[u8]) {
    for &b in bytes {
        if b == b'\n' {
            putc(b'\r');
        }
        putc(b);
    }
}

/// `0x` and the hex digits of `v` without leading zeros, with no formatting machinery (usable
/// before relocation).
pub fn write_hex(v: u64) {
    write(b"0x");
    let digits = (16 - v.leading_zeros() / 4).max(1);
    for i in (0..digits).rev() {
        let d = ((v >> (i * 4)) & 0xf) as u8;
        putc(if d < 10 { b'0' + d } else { b'a' + d - 10 });
    }
}

/// `core::fmt` onto the early UARTs (after relocation only: formatting goes through vtables).
pub struct Writer;

impl fmt::Write for Writer {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write(s.as_bytes());
        Ok(())
    }
}
