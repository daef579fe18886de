//! The BCM2835/BCM2711 auxiliary "mini UART" (UART1): the Raspberry Pi 4's console on GPIO 14/15
//! unless the PL011 is swapped in with `dtoverlay=disable-bt`.
//!
//! Register block: BCM2711 ARM Peripherals §2.2 "Mini UART" (same layout as BCM2835 ARM
//! Peripherals §2.2). Eleven 32-bit registers at a 4-byte stride from AUX_MU_IO_REG, bus address
//! 0x7e215040, which is the DTB node's `reg` (`serial@7e215040`, CPU physical 0xfe215040 through
//! `/soc` `ranges`). Offsets here are relative to that base. AUX_IRQ and AUX_ENABLES sit below it
//! (0x7e215000/4) and belong to the whole auxiliary block; the firmware enables the mini UART there
//! when `config.txt` says `enable_uart=1`, so this driver never touches them.
//!
//! The driver is generic over [`Regs32`], so the arch layer gives it volatile MMIO and the host
//! tests give it [`model::MiniUartModel`], a register-level model of the hardware (8-byte TX and RX
//! FIFOs, LSR/STAT/IIR derived from them, DLAB, FIFO clears).
#![forbid(unsafe_code)]

use core::fmt;

use tock_registers::LocalRegisterCopy;
use tock_registers::fields::FieldValue;
use tock_registers::register_bitfields;

/// 32-bit register access at a byte offset from the mini UART base. The arch layer implements it
/// with volatile loads and stores on the device-mapped block; offsets are multiples of 4 below
/// [`BLOCK_SIZE`].
pub trait Regs32 {
    fn read(&self, off: usize) -> u32;
    fn write(&self, off: usize, v: u32);
}

impl<T: Regs32 + ?Sized> Regs32 for &T {
    fn read(&self, off: usize) -> u32 {
        (**self).read(off)
    }
    fn write(&self, off: usize, v: u32) {
        (**self).write(off, v)
    }
}

/// Register offsets from AUX_MU_IO_REG (BCM2711 ARM Peripherals §2.2.2, "Register View"; the
/// document lists them from the AUX base 0x7e215000, i.e. 0x40 more).
pub mod off {
    /// AUX_MU_IO_REG: TX write / RX read; with LCR.DLAB, the baud rate's low byte.
    pub const IO: usize = 0x00;
    /// AUX_MU_IER_REG: interrupt enables; with LCR.DLAB, the baud rate's high byte.
    pub const IER: usize = 0x04;
    /// AUX_MU_IIR_REG: interrupt identification (read), FIFO clear (write).
    pub const IIR: usize = 0x08;
    /// AUX_MU_LCR_REG: line control.
    pub const LCR: usize = 0x0c;
    /// AUX_MU_MCR_REG: modem control.
    pub const MCR: usize = 0x10;
    /// AUX_MU_LSR_REG: line status.
    pub const LSR: usize = 0x14;
    /// AUX_MU_MSR_REG: modem status.
    pub const MSR: usize = 0x18;
    /// AUX_MU_SCRATCH: one byte of scratch storage.
    pub const SCRATCH: usize = 0x1c;
    /// AUX_MU_CNTL_REG: extra control (receiver/transmitter enable, flow control).
    pub const CNTL: usize = 0x20;
    /// AUX_MU_STAT_REG: extra status (FIFO levels).
    pub const STAT: usize = 0x24;
    /// AUX_MU_BAUD_REG: 16-bit baud rate counter.
    pub const BAUD: usize = 0x28;
}

/// Bytes of the register block the driver uses (the DTB's `reg` size is 0x40).
pub const BLOCK_SIZE: usize = 0x2c;
/// Depth of each FIFO (BCM2711 ARM Peripherals §2.2: "8 Symbols deep FIFOs for receive and
/// transmit").
pub const FIFO_DEPTH: usize = 8;

register_bitfields! [u32,
    /// AUX_MU_IER_REG. Bit 0 enables the receive interrupt, bit 1 the transmit interrupt (the
    /// BCM2835 document swaps their descriptions; the BCM2835 datasheet errata and the BCM2711
    /// document give this order, which is also the 16550's). The errata adds that bits [3:2]
    /// must be set for interrupts to be raised; Linux's 8250 driver sets bit 2 anyway.
    pub IER [
        /// [0] Receive interrupt: raised while the RX FIFO holds at least one byte.
        RX_INT OFFSET(0) NUMBITS(1) [],
        /// [1] Transmit interrupt: raised while the TX FIFO is empty.
        TX_INT OFFSET(1) NUMBITS(1) [],
        /// [3:2] Must be 0b11 for interrupts to reach the interrupt controller (errata).
        INT_GATE OFFSET(2) NUMBITS(2) []
    ],
    /// AUX_MU_IIR_REG as read.
    pub IIR [
        /// [0] Clear while an interrupt is pending.
        NOT_PENDING OFFSET(0) NUMBITS(1) [],
        /// [2:1] Which interrupt.
        ID OFFSET(1) NUMBITS(2) [
            None = 0,
            TxEmpty = 1,
            RxReady = 2
        ],
        /// [7:6] FIFO enables: always read as 0b11.
        FIFOS OFFSET(6) NUMBITS(2) []
    ],
    /// AUX_MU_IIR_REG as written.
    pub IIR_W [
        /// [1] Clear the receive FIFO.
        CLEAR_RX OFFSET(1) NUMBITS(1) [],
        /// [2] Clear the transmit FIFO.
        CLEAR_TX OFFSET(2) NUMBITS(1) []
    ],
    /// AUX_MU_LCR_REG.
    pub LCR [
        /// [1:0] Data size: 0b00 7 bits, 0b11 8 bits (the errata: bit 1 is needed for 8 bits).
        DATA_SIZE OFFSET(0) NUMBITS(2) [
            SevenBit = 0,
            EightBit = 3
        ],
        /// [6] Pull TX low (break).
        BREAK OFFSET(6) NUMBITS(1) [],
        /// [7] DLAB: IO and IER give access to the baud rate register.
        DLAB OFFSET(7) NUMBITS(1) []
    ],
    /// AUX_MU_MCR_REG.
    pub MCR [
        /// [1] RTS: 1 drives the RTS line low.
        RTS OFFSET(1) NUMBITS(1) []
    ],
    /// AUX_MU_LSR_REG.
    pub LSR [
        /// [0] The RX FIFO holds at least one byte.
        DATA_READY OFFSET(0) NUMBITS(1) [],
        /// [1] A byte was lost because the RX FIFO was full; cleared by reading LSR.
        RX_OVERRUN OFFSET(1) NUMBITS(1) [],
        /// [5] The TX FIFO can accept at least one byte.
        TX_EMPTY OFFSET(5) NUMBITS(1) [],
        /// [6] The TX FIFO is empty and the transmitter has finished the last bit.
        TX_IDLE OFFSET(6) NUMBITS(1) []
    ],
    /// AUX_MU_CNTL_REG.
    pub CNTL [
        /// [0] Receiver enable.
        RX_ENABLE OFFSET(0) NUMBITS(1) [],
        /// [1] Transmitter enable.
        TX_ENABLE OFFSET(1) NUMBITS(1) [],
        /// [2] Receive auto flow control (RTS).
        RX_AUTOFLOW OFFSET(2) NUMBITS(1) [],
        /// [3] Transmit auto flow control (CTS).
        TX_AUTOFLOW OFFSET(3) NUMBITS(1) []
    ],
    /// AUX_MU_STAT_REG.
    pub STAT [
        /// [0] The RX FIFO holds at least one symbol.
        SYMBOL_AVAILABLE OFFSET(0) NUMBITS(1) [],
        /// [1] The TX FIFO can accept at least one symbol.
        SPACE_AVAILABLE OFFSET(1) NUMBITS(1) [],
        /// [2] The receiver is idle.
        RX_IDLE OFFSET(2) NUMBITS(1) [],
        /// [3] The transmitter is idle.
        TX_IDLE OFFSET(3) NUMBITS(1) [],
        /// [4] Receiver overrun (as LSR bit 1).
        RX_OVERRUN OFFSET(4) NUMBITS(1) [],
        /// [5] The TX FIFO is full.
        TX_FULL OFFSET(5) NUMBITS(1) [],
        /// [8] The TX FIFO is empty.
        TX_EMPTY OFFSET(8) NUMBITS(1) [],
        /// [9] TX FIFO empty and transmitter idle.
        TX_DONE OFFSET(9) NUMBITS(1) [],
        /// [19:16] Bytes in the RX FIFO (0-8).
        RX_LEVEL OFFSET(16) NUMBITS(4) [],
        /// [27:24] Bytes in the TX FIFO (0-8).
        TX_LEVEL OFFSET(24) NUMBITS(4) []
    ],
    /// AUX_MU_BAUD_REG.
    pub BAUD [
        /// [15:0] baudrate = system_clock / (8 * (RATE + 1)).
        RATE OFFSET(0) NUMBITS(16) []
    ]
];

/// Why a line configuration cannot be set.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MiniUartError {
    /// Zero clock or baud rate.
    Zero,
    /// The rate is not reachable with a 16-bit divisor from this clock (or is more than 2% off).
    Unreachable { clock_hz: u32, baud: u32 },
}

impl fmt::Display for MiniUartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MiniUartError::Zero => write!(f, "mini UART clock or baud rate is zero"),
            MiniUartError::Unreachable { clock_hz, baud } => {
                write!(f, "{baud} baud unreachable from a {clock_hz} Hz core clock")
            }
        }
    }
}

/// The AUX_MU_BAUD_REG value for `baud` from the VPU core clock `clock_hz` (baudrate =
/// clock / (8 * (reg + 1)), BCM2711 ARM Peripherals §2.2.1), rounded to the nearest rate.
/// 115200 baud from the 500 MHz Pi 4 core clock is 542; from 250 MHz, 270.
pub fn baud_divisor(clock_hz: u32, baud: u32) -> Result<u16, MiniUartError> {
    if clock_hz == 0 || baud == 0 {
        return Err(MiniUartError::Zero);
    }
    let unreachable = MiniUartError::Unreachable { clock_hz, baud };
    let eight_baud = 8 * u64::from(baud);
    let n = (u64::from(clock_hz) + eight_baud / 2) / eight_baud;
    if n == 0 || n > 0x1_0000 {
        return Err(unreachable);
    }
    let actual = baud_rate(clock_hz, (n - 1) as u16);
    // More than 2% off is not a usable serial line.
    if u64::from(actual.abs_diff(baud)) * 50 > u64::from(baud) {
        return Err(unreachable);
    }
    Ok((n - 1) as u16)
}

/// The baud rate a divisor gives from `clock_hz`.
pub fn baud_rate(clock_hz: u32, divisor: u16) -> u32 {
    (u64::from(clock_hz) / (8 * (u64::from(divisor) + 1))) as u32
}

/// LSR polls before [`MiniUart::putc`] gives a byte up: far longer than a byte takes at any
/// usable rate (87 µs at 115200 baud; each poll is a device read), so only a UART that never
/// transmits gets there, such as one the firmware left off (no `enable_uart=1`: AUX_ENABLES
/// clear, every register reads 0). The hypervisor must run on without its console rather than
/// hang on its first line.
pub const PUTC_POLLS: u32 = 1_000_000;

/// The mini UART driver.
pub struct MiniUart<R: Regs32> {
    regs: R,
    /// Set when a byte was given up: later bytes get one poll each until the UART takes one.
    stuck: core::cell::Cell<bool>,
}

impl<R: Regs32> MiniUart<R> {
    /// Wraps a register block. Touches nothing: the firmware (`enable_uart=1`) leaves the UART
    /// running at 115200 8N1, which the hypervisor keeps.
    pub const fn new(regs: R) -> Self {
        MiniUart {
            regs,
            stuck: core::cell::Cell::new(false),
        }
    }

    pub fn regs(&self) -> &R {
        &self.regs
    }

    /// Programs the line from scratch: 8 data bits, no flow control, interrupts off, both FIFOs
    /// cleared, baud rate from the core clock, then receiver and transmitter on. Only needed when
    /// the firmware did not set the UART up (AUX_ENABLES must already have the mini UART on).
    pub fn init(&self, clock_hz: u32, baud: u32) -> Result<(), MiniUartError> {
        let divisor = baud_divisor(clock_hz, baud)?;
        self.regs.write(off::CNTL, 0);
        self.regs.write(off::IER, 0);
        self.regs.write(off::LCR, LCR::DATA_SIZE::EightBit.value);
        self.regs.write(off::MCR, 0);
        self.regs.write(
            off::IIR,
            (IIR_W::CLEAR_RX::SET + IIR_W::CLEAR_TX::SET).value,
        );
        self.regs
            .write(off::BAUD, BAUD::RATE.val(u32::from(divisor)).value);
        self.regs.write(
            off::CNTL,
            (CNTL::RX_ENABLE::SET + CNTL::TX_ENABLE::SET).value,
        );
        Ok(())
    }

    fn lsr(&self) -> LocalRegisterCopy<u32, LSR::Register> {
        LocalRegisterCopy::new(self.regs.read(off::LSR))
    }

    /// Queues one byte if the TX FIFO has room; false when it is full.
    pub fn try_putc(&self, b: u8) -> bool {
        if !self.lsr().is_set(LSR::TX_EMPTY) {
            return false;
        }
        self.regs.write(off::IO, u32::from(b));
        true
    }

    /// Sends one byte, waiting while the TX FIFO is full (LSR bit 5 clear), at most
    /// [`PUTC_POLLS`] polls; after a byte was given up, one poll per byte until the UART takes
    /// one again. Returns whether the byte was queued.
    pub fn putc(&self, b: u8) -> bool {
        let polls = if self.stuck.get() { 1 } else { PUTC_POLLS };
        for _ in 0..polls {
            if self.try_putc(b) {
                self.stuck.set(false);
                return true;
            }
            core::hint::spin_loop();
        }
        self.stuck.set(true);
        false
    }

    /// One received byte, if the RX FIFO holds any (LSR bit 0).
    pub fn getc(&self) -> Option<u8> {
        if self.has_input() {
            Some((self.regs.read(off::IO) & 0xff) as u8)
        } else {
            None
        }
    }

    /// True while the RX FIFO holds a byte (LSR bit 0).
    pub fn has_input(&self) -> bool {
        self.lsr().is_set(LSR::DATA_READY)
    }

    /// Waits until every queued byte has left the transmitter (LSR bit 6).
    pub fn flush(&self) {
        while !self.lsr().is_set(LSR::TX_IDLE) {
            core::hint::spin_loop();
        }
    }

    fn set_ier(&self, field: FieldValue<u32, IER::Register>, on: bool) {
        let mut ier = LocalRegisterCopy::<u32, IER::Register>::new(self.regs.read(off::IER));
        if on {
            ier.modify(field + IER::INT_GATE.val(0b11));
        } else {
            ier.set(ier.get() & !field.mask());
            if !ier.is_set(IER::RX_INT) && !ier.is_set(IER::TX_INT) {
                ier.modify(IER::INT_GATE.val(0));
            }
        }
        self.regs.write(off::IER, ier.get());
    }

    /// Enables or disables the receive interrupt (AUX interrupt, GIC SPI 93 on the Pi 4).
    /// LCR.DLAB must be clear (it is after [`init`](Self::init) and after the firmware).
    pub fn set_rx_interrupt(&self, on: bool) {
        self.set_ier(IER::RX_INT::SET, on);
    }

    /// Enables or disables the transmit-FIFO-empty interrupt.
    pub fn set_tx_interrupt(&self, on: bool) {
        self.set_ier(IER::TX_INT::SET, on);
    }

    /// The pending interrupt, from AUX_MU_IIR_REG.
    pub fn pending_interrupt(&self) -> Option<Interrupt> {
        let iir = LocalRegisterCopy::<u32, IIR::Register>::new(self.regs.read(off::IIR));
        if iir.is_set(IIR::NOT_PENDING) {
            return None;
        }
        match iir.read_as_enum(IIR::ID) {
            Some(IIR::ID::Value::RxReady) => Some(Interrupt::RxReady),
            Some(IIR::ID::Value::TxEmpty) => Some(Interrupt::TxEmpty),
            _ => None,
        }
    }

    /// True once a received byte was lost because the RX FIFO was full (reading LSR clears it).
    pub fn take_overrun(&self) -> bool {
        self.lsr().is_set(LSR::RX_OVERRUN)
    }
}

/// An interrupt the mini UART reports in IIR.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Interrupt {
    RxReady,
    TxEmpty,
}

impl<R: Regs32> fmt::Write for MiniUart<R> {
    /// Writes the bytes as they are (the console turns `\n` into `\r\n`).
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            self.putc(b);
        }
        Ok(())
    }
}

/// A register-level model of the mini UART for host tests (and for anyone testing code that
/// drives one). It behaves as BCM2711 ARM Peripherals §2.2 describes: writes to IO queue into an
/// 8-byte TX FIFO (a byte written to a full FIFO is lost), the "wire" takes bytes out of it
/// ([`MiniUartModel::shift_out`], or automatically on LSR reads with `auto_drain`), bytes from
/// the wire ([`MiniUartModel::receive`]) fill an 8-byte RX FIFO (overrun sets LSR bit 1), and
/// LSR, STAT and IIR are derived from the FIFOs, CNTL and IER. It also records every access
/// that a correct driver never makes.
pub mod model {
    use super::*;
    use alloc::collections::VecDeque;
    use alloc::vec::Vec;
    use core::cell::RefCell;

    #[derive(Default, Debug)]
    struct State {
        tx: VecDeque<u8>,
        rx: VecDeque<u8>,
        /// Bytes that reached the wire, in order.
        sent: Vec<u8>,
        /// Bytes written while the TX FIFO was full.
        dropped: usize,
        overrun: bool,
        ier: u32,
        lcr: u32,
        mcr: u32,
        scratch: u32,
        cntl: u32,
        baud: u32,
        lsr_reads: usize,
        /// Bad accesses: misaligned or out-of-block offsets, writes to read-only registers.
        faults: Vec<(usize, &'static str)>,
        log: Vec<Access>,
    }

    /// One register access, as recorded by the model.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub enum Access {
        Read(usize, u32),
        Write(usize, u32),
    }

    /// The model. Starts as the firmware leaves the UART: 8-bit, transmitter and receiver on,
    /// 115200 baud from a 500 MHz core clock (divisor 542), empty FIFOs.
    pub struct MiniUartModel {
        state: RefCell<State>,
        /// Shift one byte out of the TX FIFO on every LSR read (a transmitter that keeps up with
        /// a polling driver). Off: bytes leave only through [`Self::shift_out`].
        pub auto_drain: bool,
    }

    impl Default for MiniUartModel {
        fn default() -> Self {
            Self::new()
        }
    }

    impl MiniUartModel {
        pub fn new() -> Self {
            let state = State {
                lcr: LCR::DATA_SIZE::EightBit.value,
                cntl: (CNTL::RX_ENABLE::SET + CNTL::TX_ENABLE::SET).value,
                baud: 542,
                ..State::default()
            };
            MiniUartModel {
                state: RefCell::new(state),
                auto_drain: true,
            }
        }

        /// A model whose transmitter never runs unless told to ([`Self::shift_out`]).
        pub fn stalled() -> Self {
            MiniUartModel {
                auto_drain: false,
                ..Self::new()
            }
        }

        /// A model in reset state: everything zero, receiver and transmitter off.
        pub fn reset() -> Self {
            MiniUartModel {
                state: RefCell::new(State::default()),
                auto_drain: true,
            }
        }

        /// The transmitter sends up to `n` bytes from the TX FIFO onto the wire (only while
        /// CNTL enables it). Returns how many it sent.
        pub fn shift_out(&self, n: usize) -> usize {
            let mut s = self.state.borrow_mut();
            let mut done = 0;
            while done < n && s.cntl & CNTL::TX_ENABLE::SET.value != 0 {
                let Some(b) = s.tx.pop_front() else { break };
                s.sent.push(b);
                done += 1;
            }
            done
        }

        /// Bytes arrive on the wire. With the receiver off they are ignored; beyond 8 waiting
        /// bytes they are lost and the overrun flag is set.
        pub fn receive(&self, bytes: &[u8]) {
            let mut s = self.state.borrow_mut();
            if s.cntl & CNTL::RX_ENABLE::SET.value == 0 {
                return;
            }
            for &b in bytes {
                if s.rx.len() < FIFO_DEPTH {
                    s.rx.push_back(b);
                } else {
                    s.overrun = true;
                }
            }
        }

        /// Everything sent on the wire so far.
        pub fn sent(&self) -> Vec<u8> {
            self.state.borrow().sent.clone()
        }
        pub fn tx_fifo(&self) -> Vec<u8> {
            self.state.borrow().tx.iter().copied().collect()
        }
        pub fn rx_level(&self) -> usize {
            self.state.borrow().rx.len()
        }
        pub fn dropped(&self) -> usize {
            self.state.borrow().dropped
        }
        pub fn baud(&self) -> u32 {
            self.state.borrow().baud
        }
        pub fn lcr(&self) -> u32 {
            self.state.borrow().lcr
        }
        pub fn cntl(&self) -> u32 {
            self.state.borrow().cntl
        }
        pub fn ier(&self) -> u32 {
            self.state.borrow().ier
        }
        /// Accesses a correct driver never makes, with the offset.
        pub fn faults(&self) -> Vec<(usize, &'static str)> {
            self.state.borrow().faults.clone()
        }
        /// Every access so far.
        pub fn log(&self) -> Vec<Access> {
            self.state.borrow().log.clone()
        }
        /// Whether the UART raises its interrupt line now.
        pub fn irq_line(&self) -> bool {
            Self::pending(&self.state.borrow()).is_some()
        }

        fn pending(s: &State) -> Option<IIR::ID::Value> {
            let ier = LocalRegisterCopy::<u32, IER::Register>::new(s.ier);
            let gated = ier.read(IER::INT_GATE) == 0b11;
            if gated && ier.is_set(IER::RX_INT) && !s.rx.is_empty() {
                Some(IIR::ID::Value::RxReady)
            } else if gated && ier.is_set(IER::TX_INT) && s.tx.is_empty() {
                Some(IIR::ID::Value::TxEmpty)
            } else {
                None
            }
        }

        fn dlab(s: &State) -> bool {
            s.lcr & LCR::DLAB::SET.value != 0
        }

        fn lsr(s: &State) -> u32 {
            let mut v = LocalRegisterCopy::<u32, LSR::Register>::new(0);
            if !s.rx.is_empty() {
                v.modify(LSR::DATA_READY::SET);
            }
            if s.overrun {
                v.modify(LSR::RX_OVERRUN::SET);
            }
            if s.tx.len() < FIFO_DEPTH {
                v.modify(LSR::TX_EMPTY::SET);
            }
            if s.tx.is_empty() {
                v.modify(LSR::TX_IDLE::SET);
            }
            v.get()
        }

        fn stat(s: &State) -> u32 {
            let flags = [
                (!s.rx.is_empty(), STAT::SYMBOL_AVAILABLE::SET),
                (s.tx.len() < FIFO_DEPTH, STAT::SPACE_AVAILABLE::SET),
                (s.rx.is_empty(), STAT::RX_IDLE::SET),
                (s.tx.is_empty(), STAT::TX_IDLE::SET),
                (s.overrun, STAT::RX_OVERRUN::SET),
                (s.tx.len() >= FIFO_DEPTH, STAT::TX_FULL::SET),
                (s.tx.is_empty(), STAT::TX_EMPTY::SET),
                (s.tx.is_empty(), STAT::TX_DONE::SET),
            ];
            let levels =
                STAT::RX_LEVEL.val(s.rx.len() as u32) + STAT::TX_LEVEL.val(s.tx.len() as u32);
            flags
                .iter()
                .filter(|(on, _)| *on)
                .fold(levels.value, |v, (_, f)| v | f.value)
        }

        fn check(s: &mut State, off: usize) -> bool {
            if !off.is_multiple_of(4) || off >= BLOCK_SIZE {
                s.faults.push((off, "offset outside the register block"));
                return false;
            }
            true
        }
    }

    impl Regs32 for MiniUartModel {
        fn read(&self, off: usize) -> u32 {
            if off == off::LSR && self.auto_drain {
                self.shift_out(1);
            }
            let mut s = self.state.borrow_mut();
            if !Self::check(&mut s, off) {
                return 0;
            }
            let v = match off {
                off::IO if Self::dlab(&s) => s.baud & 0xff,
                off::IO => u32::from(s.rx.pop_front().unwrap_or(0)),
                off::IER if Self::dlab(&s) => (s.baud >> 8) & 0xff,
                off::IER => s.ier,
                off::IIR => {
                    let mut v = LocalRegisterCopy::<u32, IIR::Register>::new(0);
                    v.modify(IIR::FIFOS.val(0b11));
                    match Self::pending(&s) {
                        Some(id) => v.modify(IIR::ID.val(id as u32)),
                        None => v.modify(IIR::NOT_PENDING::SET),
                    }
                    v.get()
                }
                off::LCR => s.lcr,
                off::MCR => s.mcr,
                off::LSR => {
                    s.lsr_reads += 1;
                    let v = Self::lsr(&s);
                    s.overrun = false;
                    v
                }
                off::MSR => 0,
                off::SCRATCH => s.scratch,
                off::CNTL => s.cntl,
                off::STAT => Self::stat(&s),
                off::BAUD => s.baud,
                _ => 0,
            };
            s.log.push(Access::Read(off, v));
            v
        }

        fn write(&self, off: usize, v: u32) {
            let mut s = self.state.borrow_mut();
            s.log.push(Access::Write(off, v));
            if !Self::check(&mut s, off) {
                return;
            }
            match off {
                off::IO if Self::dlab(&s) => s.baud = (s.baud & 0xff00) | (v & 0xff),
                off::IO => {
                    if s.tx.len() < FIFO_DEPTH {
                        s.tx.push_back((v & 0xff) as u8);
                    } else {
                        s.dropped += 1;
                    }
                }
                off::IER if Self::dlab(&s) => s.baud = (s.baud & 0xff) | ((v & 0xff) << 8),
                off::IER => s.ier = v & 0xf,
                off::IIR => {
                    let w = LocalRegisterCopy::<u32, IIR_W::Register>::new(v);
                    if w.is_set(IIR_W::CLEAR_RX) {
                        s.rx.clear();
                    }
                    if w.is_set(IIR_W::CLEAR_TX) {
                        s.tx.clear();
                    }
                }
                off::LCR => s.lcr = v & 0xff,
                off::MCR => s.mcr = v & 0xff,
                off::SCRATCH => s.scratch = v & 0xff,
                off::CNTL => s.cntl = v & 0xff,
                off::BAUD => s.baud = v & 0xffff,
                _ => s.faults.push((off, "write to a read-only register")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::model::{Access, MiniUartModel};
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;
    use core::fmt::Write;

    #[test]
    fn putc_sends_bytes_in_order() {
        let m = MiniUartModel::new();
        let mut u = MiniUart::new(&m);
        write!(u, "kestrel\r\n").unwrap();
        m.shift_out(FIFO_DEPTH);
        assert_eq!(m.sent(), b"kestrel\r\n");
        assert_eq!(m.dropped(), 0);
        assert!(m.faults().is_empty());
    }

    #[test]
    fn putc_never_writes_into_a_full_fifo() {
        let m = MiniUartModel::stalled();
        let u = MiniUart::new(&m);
        for b in 0..FIFO_DEPTH as u8 {
            assert!(u.try_putc(b));
        }
        assert!(!u.try_putc(0xaa), "a full FIFO must refuse");
        assert_eq!(m.tx_fifo().len(), FIFO_DEPTH);
        m.shift_out(1);
        assert!(u.try_putc(0xaa));
        m.shift_out(FIFO_DEPTH);
        let mut want: Vec<u8> = (0..FIFO_DEPTH as u8).collect();
        want.push(0xaa);
        assert_eq!(m.sent(), want);
        assert_eq!(m.dropped(), 0);
    }

    #[test]
    fn putc_waits_for_lsr_tx_empty_before_writing_io() {
        let m = MiniUartModel::new();
        let u = MiniUart::new(&m);
        for b in 0..20u8 {
            u.putc(b);
        }
        // Every IO write is preceded by an LSR read that reported room.
        let log = m.log();
        for (i, a) in log.iter().enumerate() {
            if let Access::Write(off::IO, _) = a {
                assert!(
                    matches!(log[i - 1], Access::Read(off::LSR, v) if v & (1 << 5) != 0),
                    "IO write at {i} not preceded by LSR TX_EMPTY"
                );
            }
        }
        m.shift_out(FIFO_DEPTH);
        assert_eq!(m.sent(), (0..20u8).collect::<Vec<_>>());
        assert_eq!(m.dropped(), 0);
    }

    /// A mini UART the firmware left off (AUX_ENABLES clear): every register reads 0.
    struct Disabled {
        reads: core::cell::Cell<usize>,
        writes: core::cell::Cell<usize>,
    }

    impl Regs32 for Disabled {
        fn read(&self, _off: usize) -> u32 {
            self.reads.set(self.reads.get() + 1);
            0
        }
        fn write(&self, _off: usize, _v: u32) {
            self.writes.set(self.writes.get() + 1);
        }
    }

    #[test]
    fn putc_gives_up_on_a_disabled_uart_instead_of_hanging() {
        let d = Disabled {
            reads: core::cell::Cell::new(0),
            writes: core::cell::Cell::new(0),
        };
        let u = MiniUart::new(&d);
        assert!(!u.putc(b'k'));
        assert_eq!(d.reads.get(), PUTC_POLLS as usize);
        // Once given up, each further byte costs a single poll.
        for b in b"estrel" {
            assert!(!u.putc(*b));
        }
        assert_eq!(d.reads.get(), PUTC_POLLS as usize + 6);
        assert_eq!(
            d.writes.get(),
            0,
            "nothing written to a UART that never had room"
        );
    }

    #[test]
    fn putc_resumes_when_a_stuck_uart_takes_bytes_again() {
        let m = MiniUartModel::stalled();
        let u = MiniUart::new(&m);
        for b in 0..FIFO_DEPTH as u8 {
            assert!(u.putc(b));
        }
        assert!(!u.putc(0xee), "a FIFO that never drains: given up");
        m.shift_out(FIFO_DEPTH);
        assert!(u.putc(0x42));
        assert!(u.putc(0x43), "back to normal waiting");
        m.shift_out(FIFO_DEPTH);
        let mut want: Vec<u8> = (0..FIFO_DEPTH as u8).collect();
        want.extend([0x42, 0x43]);
        assert_eq!(m.sent(), want);
    }

    #[test]
    fn getc_returns_received_bytes_then_none() {
        let m = MiniUartModel::new();
        let u = MiniUart::new(&m);
        assert_eq!(u.getc(), None);
        m.receive(b"ok");
        assert_eq!(u.getc(), Some(b'o'));
        assert_eq!(u.getc(), Some(b'k'));
        assert_eq!(u.getc(), None);
    }

    #[test]
    fn rx_overrun_keeps_eight_bytes_and_is_reported_once() {
        let m = MiniUartModel::new();
        let u = MiniUart::new(&m);
        m.receive(b"0123456789");
        assert_eq!(m.rx_level(), FIFO_DEPTH);
        assert!(u.take_overrun());
        assert!(!u.take_overrun());
        let got: Vec<u8> = core::iter::from_fn(|| u.getc()).collect();
        assert_eq!(got, b"01234567");
    }

    #[test]
    fn rx_interrupt_follows_ier_and_the_rx_fifo() {
        let m = MiniUartModel::new();
        let u = MiniUart::new(&m);
        m.receive(b"x");
        assert!(!m.irq_line(), "interrupts start disabled");
        assert_eq!(u.pending_interrupt(), None);
        u.set_rx_interrupt(true);
        assert_eq!(m.ier(), 0b1101);
        assert!(m.irq_line());
        assert_eq!(u.pending_interrupt(), Some(Interrupt::RxReady));
        assert_eq!(u.getc(), Some(b'x'));
        assert!(!m.irq_line(), "draining the FIFO drops the line");
        u.set_rx_interrupt(false);
        assert_eq!(m.ier(), 0);
        m.receive(b"y");
        assert!(!m.irq_line());
    }

    #[test]
    fn tx_interrupt_is_independent_of_rx_interrupt() {
        let m = MiniUartModel::stalled();
        let u = MiniUart::new(&m);
        u.set_rx_interrupt(true);
        u.set_tx_interrupt(true);
        assert_eq!(u.pending_interrupt(), Some(Interrupt::TxEmpty));
        u.putc(b'a');
        assert_eq!(u.pending_interrupt(), None);
        u.set_tx_interrupt(false);
        assert_eq!(m.ier(), 0b1101, "RX stays enabled");
        m.shift_out(1);
        assert_eq!(u.pending_interrupt(), None);
    }

    #[test]
    fn init_programs_8n1_and_the_baud_divisor_with_the_uart_off() {
        let m = MiniUartModel::reset();
        let u = MiniUart::new(&m);
        u.init(500_000_000, 115_200).unwrap();
        assert_eq!(m.baud(), 542);
        assert_eq!(m.lcr(), 3);
        assert_eq!(m.cntl(), 3);
        assert_eq!(m.ier(), 0);
        let writes: Vec<(usize, u32)> = m
            .log()
            .into_iter()
            .filter_map(|a| match a {
                Access::Write(o, v) => Some((o, v)),
                Access::Read(..) => None,
            })
            .collect();
        assert_eq!(writes.first(), Some(&(off::CNTL, 0)), "disable first");
        assert_eq!(writes.last(), Some(&(off::CNTL, 3)), "enable last");
        assert!(m.faults().is_empty());
    }

    #[test]
    fn init_clears_both_fifos() {
        let m = MiniUartModel::stalled();
        let u = MiniUart::new(&m);
        u.putc(1);
        m.receive(b"junk");
        u.init(250_000_000, 115_200).unwrap();
        assert!(m.tx_fifo().is_empty());
        assert_eq!(u.getc(), None);
        assert_eq!(m.baud(), 270);
    }

    #[test]
    fn init_rejects_an_unreachable_rate_without_touching_the_uart() {
        let m = MiniUartModel::new();
        let u = MiniUart::new(&m);
        assert_eq!(
            u.init(1_000_000, 115_200),
            Err(MiniUartError::Unreachable {
                clock_hz: 1_000_000,
                baud: 115_200
            })
        );
        assert!(m.log().is_empty());
    }

    #[test]
    fn baud_divisor_matches_the_datasheet_formula() {
        assert_eq!(baud_divisor(250_000_000, 115_200), Ok(270));
        assert_eq!(baud_divisor(500_000_000, 115_200), Ok(542));
        assert_eq!(baud_divisor(500_000_000, 9_600), Ok(6509));
        assert_eq!(baud_rate(250_000_000, 270), 115_313);
        assert_eq!(baud_divisor(0, 115_200), Err(MiniUartError::Zero));
        assert_eq!(baud_divisor(250_000_000, 0), Err(MiniUartError::Zero));
        // 300 baud needs a divisor beyond 16 bits at 500 MHz.
        assert!(baud_divisor(500_000_000, 300).is_err());
    }

    #[test]
    fn flush_returns_once_the_transmitter_is_idle() {
        let m = MiniUartModel::new();
        let u = MiniUart::new(&m);
        for b in b"abc" {
            u.putc(*b);
        }
        u.flush();
        assert!(m.tx_fifo().is_empty());
        assert_eq!(m.sent(), b"abc");
    }

    #[test]
    fn dlab_redirects_io_and_ier_to_the_baud_register_in_the_model() {
        let m = MiniUartModel::new();
        m.write(off::LCR, 0x83);
        m.write(off::IO, 0x1e);
        m.write(off::IER, 0x02);
        m.write(off::LCR, 0x03);
        assert_eq!(m.baud(), 0x021e);
        assert!(m.tx_fifo().is_empty());
        assert_eq!(m.ier(), 0);
    }

    #[test]
    fn stat_reports_fifo_levels() {
        let m = MiniUartModel::stalled();
        let u = MiniUart::new(&m);
        u.putc(1);
        u.putc(2);
        m.receive(b"abc");
        let stat = LocalRegisterCopy::<u32, STAT::Register>::new(m.read(off::STAT));
        assert_eq!(stat.read(STAT::TX_LEVEL), 2);
        assert_eq!(stat.read(STAT::RX_LEVEL), 3);
        assert!(stat.is_set(STAT::SYMBOL_AVAILABLE));
        assert!(stat.is_set(STAT::SPACE_AVAILABLE));
        assert!(!stat.is_set(STAT::TX_EMPTY));
    }

    #[test]
    fn model_records_bad_offsets() {
        let m = MiniUartModel::new();
        m.write(0x2c, 1);
        m.write(off::LSR, 1);
        assert_eq!(m.read(0x06), 0);
        let offs: Vec<usize> = m.faults().iter().map(|f| f.0).collect();
        assert_eq!(offs, vec![0x2c, off::LSR, 0x06]);
    }
}
