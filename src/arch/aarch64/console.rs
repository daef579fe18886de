//! The physical console: a PL011 (through the `arm-pl011-uart` crate) or the BCM2835 mini UART,
//! whichever the DTB names, and the `log` backend that prefixes every line with a timestamp
//! from the system counter and the CPU number.
use super::cpu;
use crate::platform::mini_uart::{MiniUart, Regs32};
use arm_pl011_uart::{Interrupts, PL011Registers, Uart, UniqueMmioPointer};
use core::fmt::{self, Write};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};
use spin::Mutex;

/// Which kind of UART the console is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum UartKind {
    Pl011,
    /// BCM2835 auxiliary mini UART (8250-like, 32-bit register stride).
    MiniUart,
}

enum PhysUart {
    None,
    Pl011(Uart<'static>),
    Mini(MiniUart<MiniUartMmio>),
}

/// The mini UART's registers as MMIO (the driver logic is `platform::mini_uart`, tested on
/// the host against a register model).
struct MiniUartMmio(usize);

impl Regs32 for MiniUartMmio {
    fn read(&self, off: usize) -> u32 {
        // SAFETY: `self.0` is the mini UART register block from the DTB, device-mapped;
        // its registers are 32 bits wide at 4-byte strides.
        unsafe { core::ptr::read_volatile((self.0 + off) as *const u32) }
    }
    fn write(&self, off: usize, v: u32) {
        // SAFETY: as in `read`.
        unsafe { core::ptr::write_volatile((self.0 + off) as *mut u32, v) }
    }
}

impl PhysUart {
    fn putc(&mut self, b: u8) {
        match self {
            PhysUart::None => {}
            PhysUart::Pl011(u) => {
                while u.is_tx_fifo_full() {
                    core::hint::spin_loop();
                }
                u.write_word(b);
            }
            PhysUart::Mini(m) => {
                let _ = m.putc(b);
            }
        }
    }
    /// One received byte; bytes received with an error are dropped (each read of UARTDR
    /// takes one), so an error never ends the reading early.
    fn getc(&mut self) -> Option<u8> {
        match self {
            PhysUart::None => None,
            PhysUart::Pl011(u) => loop {
                match u.read_word() {
                    Ok(b) => break b,
                    Err(_) => continue,
                }
            },
            PhysUart::Mini(m) => m.getc(),
        }
    }

    /// Clears the receive-side interrupt status and tells whether input is waiting
    /// ([`crate::console_rx::ConsoleRx::ack`]). The mini UART's receive interrupt follows its
    /// FIFO level alone (BCM2711 ARM Peripherals 2.2.2, AUX_MU_IIR), so there is nothing to clear.
    fn ack_input(&mut self) -> bool {
        match self {
            PhysUart::None => false,
            PhysUart::Pl011(u) => {
                u.clear_interrupts(
                    Interrupts::RXI
                        | Interrupts::RTI
                        | Interrupts::OEI
                        | Interrupts::BEI
                        | Interrupts::PEI
                        | Interrupts::FEI,
                );
                !u.is_rx_fifo_empty()
            }
            PhysUart::Mini(m) => m.has_input(),
        }
    }
}

/// Bytes that were waiting in the PL011's receive FIFO when the hypervisor programmed it (which
/// on QEMU empties the FIFO), handed out by [`read_byte`] before anything the UART holds.
static EARLY_INPUT: Mutex<EarlyInput> = Mutex::new(EarlyInput {
    bytes: [0; EARLY_INPUT_MAX],
    len: 0,
    taken: 0,
});
/// Most bytes kept; more typed ahead of the hypervisor's start are lost.
const EARLY_INPUT_MAX: usize = 256;
/// How many times UARTFR is read for the byte after one just taken before the input is taken
/// to have ended (QEMU's main loop delivers the next byte within a few accesses).
const EARLY_INPUT_WAIT_POLLS: u32 = 20_000;

struct EarlyInput {
    bytes: [u8; EARLY_INPUT_MAX],
    len: usize,
    taken: usize,
}

// SAFETY: the UART is only reached through the CONSOLE mutex.
unsafe impl Send for PhysUart {}

static CONSOLE: Mutex<PhysUart> = Mutex::new(PhysUart::None);
static PANICKING: AtomicBool = AtomicBool::new(false);
static READY: AtomicBool = AtomicBool::new(false);

/// The console's line: 115200 baud, 8 data bits, no parity, 1 stop bit.
pub const BAUD: u32 = 115_200;

/// Points the console at a UART. `base` must be mapped as device memory for as long as the
/// console is used (the early map covers all device space; the final map keeps the console).
///
/// A PL011 whose reference clock is known (`clock_hz`: the DTB's fixed clock, or the Pi 4's
/// 48 MHz) is programmed for 115200 8N1 here, so the console does not depend on what the
/// firmware left in it; without a known clock its divisor is left alone. The mini UART keeps
/// the firmware's divisor, which follows the VPU core clock (`platform::mini_uart`).
pub fn init(kind: UartKind, base: u64, clock_hz: Option<u32>) {
    let uart = match kind {
        UartKind::Pl011 => match NonNull::new(base as *mut PL011Registers) {
            Some(p) => {
                // SAFETY: `base` is the PL011 register block named by the DTB, device-mapped,
                // and only this console driver accesses it.
                let mut u = Uart::new(unsafe { UniqueMmioPointer::new(p) });
                if let Some(hz) = clock_hz {
                    program_pl011(&mut u, base, hz);
                }
                PhysUart::Pl011(u)
            }
            None => PhysUart::None,
        },
        UartKind::MiniUart => PhysUart::Mini(MiniUart::new(MiniUartMmio(base as usize))),
    };
    *CONSOLE.lock() = uart;
    READY.store(true, Ordering::Release);
}

/// 115200 8N1 from a `clock_hz` UARTCLK (the divisor: PL011 TRM 3.3.6, IBRD + FBRD/64 =
/// UARTCLK / (16 x baud)). What the firmware was still sending is let out first (bounded: a
/// PL011 that stays busy is reprogrammed anyway).
fn program_pl011(u: &mut Uart<'static>, base: u64, clock_hz: u32) {
    let mut polls = 0u32;
    while u.is_busy() && polls < 1_000_000 {
        polls += 1;
        core::hint::spin_loop();
    }
    // Keep what was typed before: reprogramming the line (a change of UARTLCR_H.FEN) empties
    // the receive FIFO on QEMU. A FIFO that was off holds one byte, and the next arrives only
    // after that one is read, so after each byte the next is waited for a while: one that
    // arrived after the last look would be lost with the FIFO.
    let mut early = EARLY_INPUT.lock();
    let mut idle_polls = 0u32;
    let mut taken = false;
    while early.len < EARLY_INPUT_MAX {
        match u.read_word() {
            Ok(Some(b)) => {
                let n = early.len;
                early.bytes[n] = b;
                early.len += 1;
                taken = true;
                idle_polls = 0;
            }
            Ok(None) if taken && idle_polls < EARLY_INPUT_WAIT_POLLS => idle_polls += 1,
            Ok(None) => break,
            Err(_) => {}
        }
    }
    drop(early);
    let line = arm_pl011_uart::LineConfig {
        data_bits: arm_pl011_uart::DataBits::Bits8,
        parity: arm_pl011_uart::Parity::None,
        stop_bits: arm_pl011_uart::StopBits::One,
    };
    // Only a clock too slow for 115200 fails; the UART is then left as it was.
    let _ = u.enable(line, BAUD, clock_hz);
    if u.is_rx_fifo_empty() {
        // QEMU's PL011 takes more input from its backend only when UARTDR is read, and the
        // FIFO it just emptied was not read: without this read, input waiting behind it
        // stays there until something else reads UARTDR. An empty FIFO's UARTDR has nothing
        // to lose (PL011 TRM 3.3.1).
        // SAFETY: `base` is the PL011 register block (see `init`); UARTDR at offset 0 is a
        // 32-bit device register, and reading it has no effect beyond the UART.
        let _ = unsafe { core::ptr::read_volatile(base as *const u32) };
    }
}

/// True once `init` has run: log lines and guest output reach a UART.
pub fn is_ready() -> bool {
    READY.load(Ordering::Acquire)
}

struct Locked<'a>(&'a mut PhysUart);

impl Write for Locked<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.0.putc(b'\r');
            }
            self.0.putc(b);
        }
        Ok(())
    }
}

/// Runs `f` with the console locked (a whole line stays together). During a panic the lock is
/// taken by force if another CPU holds it.
pub fn with_console<R>(f: impl FnOnce(&mut dyn Write) -> R) -> R {
    if PANICKING.load(Ordering::Relaxed) {
        // SAFETY: after a panic every other CPU is being stopped; a torn line beats silence.
        unsafe { CONSOLE.force_unlock() };
    }
    let mut g = CONSOLE.lock();
    f(&mut Locked(&mut g))
}

/// Raw bytes to the console (guest output), `\n` becomes `\r\n`.
pub fn write_bytes(bytes: &[u8]) {
    let mut g = CONSOLE.lock();
    for &b in bytes {
        if b == b'\n' {
            g.putc(b'\r');
        }
        g.putc(b);
    }
}

/// One byte of console input, if any is waiting.
pub fn read_byte() -> Option<u8> {
    {
        let mut early = EARLY_INPUT.lock();
        if early.taken < early.len {
            let b = early.bytes[early.taken];
            early.taken += 1;
            return Some(b);
        }
    }
    CONSOLE.lock().getc()
}

/// The console UART's receive side for [`crate::console_rx::drain`] (the console lock is
/// taken per call, so what is done with each byte may log).
pub struct PhysConsoleRx;

impl crate::console_rx::ConsoleRx for PhysConsoleRx {
    fn read_byte(&mut self) -> Option<u8> {
        read_byte()
    }
    fn ack(&mut self) -> bool {
        CONSOLE.lock().ack_input()
    }
}

pub fn set_panicking() {
    PANICKING.store(true, Ordering::Relaxed);
}

/// `print!` to the console without a log prefix.
#[macro_export]
macro_rules! kprint {
    ($($arg:tt)*) => {
        $crate::arch::aarch64::console::with_console(|w| { let _ = write!(w, $($arg)*); })
    };
}

/// Formats the line prefix: `[   12.345678] cpu1 `.
pub fn write_prefix(w: &mut dyn Write) -> fmt::Result {
    let freq = cpu::counter_freq().max(1);
    let t = cpu::counter();
    let secs = t / freq;
    let micros = (t % freq) * 1_000_000 / freq;
    write!(w, "[{secs:5}.{micros:06}] cpu{} ", cpu::current_index())
}

struct Logger;

/// Called before each log line (the runtime ends a guest's half-written line there).
/// Runs the writing of one log line (its argument) the way the console multiplexer needs it.
pub type LineHook = fn(&mut dyn FnMut());

static LINE_HOOK: spin::Once<LineHook> = spin::Once::new();

/// Installs the hook that wraps each log line.
pub fn set_line_hook(f: LineHook) {
    LINE_HOOK.call_once(|| f);
}

static LOGGER: Logger = Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut line = || {
            with_console(|w| {
                let _ = write_prefix(w);
                let lvl = match record.level() {
                    log::Level::Error => "ERROR ",
                    log::Level::Warn => "WARN  ",
                    log::Level::Info => "",
                    log::Level::Debug => "debug ",
                    log::Level::Trace => "trace ",
                };
                let _ = writeln!(w, "{lvl}{}", record.args());
            })
        };
        match LINE_HOOK.get() {
            Some(hook) => hook(&mut line),
            None => line(),
        }
    }

    fn flush(&self) {}
}

/// Installs the `log` backend (idempotent).
pub fn init_logger(level: log::LevelFilter) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// Enables the receive interrupts of the console UART (PL011: RX and RX timeout; mini UART:
/// receive interrupt), so keyboard input raises the UART's SPI.
pub fn enable_rx_interrupt() {
    match &mut *CONSOLE.lock() {
        PhysUart::Pl011(u) => {
            u.set_interrupt_masks(arm_pl011_uart::Interrupts::RXI | arm_pl011_uart::Interrupts::RTI)
        }
        PhysUart::Mini(m) => m.set_rx_interrupt(true),
        PhysUart::None => {}
    }
}
