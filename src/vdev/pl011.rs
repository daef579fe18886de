//! An emulated Arm PrimeCell PL011 UART (Arm DDI 0183G, "PrimeCell UART (PL011) Technical
//! Reference Manual", r1p5), enough for Linux's `amba-pl011` driver and `earlycon=pl011`.
//!
//! Transmission is instantaneous: a byte written to UARTDR becomes an
//! [`Effect::ConsoleByte`] at once, so the transmit FIFO is always empty (FR.TXFE = 1,
//! FR.TXFF = 0, FR.BUSY = 0). Received bytes come from the hypervisor through
//! [`Pl011::push_rx`] into a receive FIFO of 16 entries (1 with LCR_H.FEN = 0).
//!
//! Interrupts are modelled as levels, the way QEMU's `hw/char/pl011.c` effectively behaves for
//! Linux:
//! - TXRIS is set while the transmitter is enabled (CR.UARTEN and CR.TXE): the TX FIFO is
//!   always at or below any IFLS trigger level. Linux's driver writes until FR.TXFF or until
//!   half a FIFO is written, then unmasks TXIM and waits for the TX interrupt; with TXRIS always
//!   set while enabled, that interrupt always comes, and the driver masks TXIM again once its
//!   buffer is empty. (On real hardware TXRIS follows a *transition* through the trigger level;
//!   with a FIFO that drains instantly the only safe model is the level.) A write to ICR.TXIC
//!   therefore has no lasting effect while the transmitter is enabled.
//! - RXRIS is set while the receive FIFO holds data (QEMU uses a trigger level of 1 for the same
//!   reason: Linux only reads the FIFO on an interrupt). RTRIS is never set.
//! - OERIS latches when a byte arrives at a full FIFO and is cleared through ICR.OEIC.
//! - The interrupt line (UARTINTR) is MIS != 0, reported as [`Effect::IrqLine`] for the
//!   level-sensitive SPI given at construction whenever it changes.
//!
//! Not modelled: baud rate timing, break, parity/framing errors, modem status lines (FR.CTS,
//! DSR, DCD, RI read 0, as in QEMU), IrDA, DMA (DMACR is stored only).
#![forbid(unsafe_code)]

use spin::Mutex;
use tock_registers::LocalRegisterCopy;
use tock_registers::register_bitfields;

use super::{AccessCtx, AccessWidth, Effect, Effects, MmioDevice, MmioError};

register_bitfields! [u32,
    /// UARTRSR/UARTECR, receive status / error clear (DDI0183G §3.3.2).
    RSR [
        OE OFFSET(3) NUMBITS(1) [],
        BE OFFSET(2) NUMBITS(1) [],
        PE OFFSET(1) NUMBITS(1) [],
        FE OFFSET(0) NUMBITS(1) []
    ],
    /// UARTFR, flag register (§3.3.3).
    FR [
        RI OFFSET(8) NUMBITS(1) [],
        TXFE OFFSET(7) NUMBITS(1) [],
        RXFF OFFSET(6) NUMBITS(1) [],
        TXFF OFFSET(5) NUMBITS(1) [],
        RXFE OFFSET(4) NUMBITS(1) [],
        BUSY OFFSET(3) NUMBITS(1) [],
        DCD OFFSET(2) NUMBITS(1) [],
        DSR OFFSET(1) NUMBITS(1) [],
        CTS OFFSET(0) NUMBITS(1) []
    ],
    /// UARTLCR_H, line control (§3.3.7).
    LCR_H [
        SPS OFFSET(7) NUMBITS(1) [],
        WLEN OFFSET(5) NUMBITS(2) [
            Bits5 = 0,
            Bits6 = 1,
            Bits7 = 2,
            Bits8 = 3
        ],
        FEN OFFSET(4) NUMBITS(1) [],
        STP2 OFFSET(3) NUMBITS(1) [],
        EPS OFFSET(2) NUMBITS(1) [],
        PEN OFFSET(1) NUMBITS(1) [],
        BRK OFFSET(0) NUMBITS(1) []
    ],
    /// UARTCR, control register (§3.3.8); bits [6:3] are reserved.
    CR [
        CTSEN OFFSET(15) NUMBITS(1) [],
        RTSEN OFFSET(14) NUMBITS(1) [],
        OUT2 OFFSET(13) NUMBITS(1) [],
        OUT1 OFFSET(12) NUMBITS(1) [],
        RTS OFFSET(11) NUMBITS(1) [],
        DTR OFFSET(10) NUMBITS(1) [],
        RXE OFFSET(9) NUMBITS(1) [],
        TXE OFFSET(8) NUMBITS(1) [],
        LBE OFFSET(7) NUMBITS(1) [],
        SIRLP OFFSET(2) NUMBITS(1) [],
        SIREN OFFSET(1) NUMBITS(1) [],
        UARTEN OFFSET(0) NUMBITS(1) []
    ],
    /// UARTIFLS, interrupt FIFO level select (§3.3.9).
    IFLS [
        RXIFLSEL OFFSET(3) NUMBITS(3) [],
        TXIFLSEL OFFSET(0) NUMBITS(3) []
    ],
    /// The interrupt bits shared by UARTIMSC, UARTRIS, UARTMIS and UARTICR (§3.3.10-§3.3.13).
    INT [
        OE OFFSET(10) NUMBITS(1) [],
        BE OFFSET(9) NUMBITS(1) [],
        PE OFFSET(8) NUMBITS(1) [],
        FE OFFSET(7) NUMBITS(1) [],
        RT OFFSET(6) NUMBITS(1) [],
        TX OFFSET(5) NUMBITS(1) [],
        RX OFFSET(4) NUMBITS(1) [],
        DSRM OFFSET(3) NUMBITS(1) [],
        DCDM OFFSET(2) NUMBITS(1) [],
        CTSM OFFSET(1) NUMBITS(1) [],
        RIM OFFSET(0) NUMBITS(1) []
    ]
];

/// Register offsets (DDI0183G §3.2, Table 3-1 "UART register summary").
pub mod reg {
    pub const DR: u64 = 0x000;
    pub const RSR_ECR: u64 = 0x004;
    pub const FR: u64 = 0x018;
    pub const ILPR: u64 = 0x020;
    pub const IBRD: u64 = 0x024;
    pub const FBRD: u64 = 0x028;
    pub const LCR_H: u64 = 0x02c;
    pub const CR: u64 = 0x030;
    pub const IFLS: u64 = 0x034;
    pub const IMSC: u64 = 0x038;
    pub const RIS: u64 = 0x03c;
    pub const MIS: u64 = 0x040;
    pub const ICR: u64 = 0x044;
    pub const DMACR: u64 = 0x048;
    /// UARTPeriphID0..3 at 0xfe0..0xfec, UARTPCellID0..3 at 0xff0..0xffc (§3.3.15-16).
    pub const PERIPH_ID0: u64 = 0xfe0;
}

/// Size of the register block.
pub const PL011_SIZE: u64 = 0x1000;
/// Receive FIFO depth with FIFOs enabled (16 for the revision the IDs below announce; Linux
/// sizes its FIFO from the PeriphID revision).
pub const FIFO_DEPTH: usize = 16;
/// UARTPeriphID0..3 and UARTPCellID0..3 of an Arm PL011 as QEMU presents it: part 0x011,
/// designer 0x41 (Arm), revision 1; PrimeCell ID 0xb105f00d. Linux's AMBA bus reads these to
/// match `amba-pl011` (id 0x00041011, mask 0x000fffff).
pub const ID_REGISTERS: [u8; 8] = [0x11, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1];

/// Writable bits of each stored register.
const IBRD_MASK: u32 = 0xffff;
const FBRD_MASK: u32 = 0x3f;
const LCR_H_MASK: u32 = 0xff;
const CR_MASK: u32 = 0xff87;
const IFLS_MASK: u32 = 0x3f;
const INT_MASK: u32 = 0x7ff;
const DMACR_MASK: u32 = 0x7;
const ILPR_MASK: u32 = 0xff;

/// Reset values (§3.3, register descriptions): CR has TXE and RXE set, IFLS selects half-full
/// for both FIFOs.
const CR_RESET: u32 = 0x0300;
const IFLS_RESET: u32 = 0x12;

struct State {
    rx: [u8; FIFO_DEPTH],
    rx_head: usize,
    rx_len: usize,
    rsr: u32,
    ilpr: u32,
    ibrd: u32,
    fbrd: u32,
    lcr_h: u32,
    cr: u32,
    ifls: u32,
    imsc: u32,
    dmacr: u32,
    /// Latched raw interrupt bits (only OE here); RX and TX are derived levels.
    latched: u32,
    /// The last level reported for the interrupt line.
    line: bool,
}

impl State {
    fn cr(&self) -> LocalRegisterCopy<u32, CR::Register> {
        LocalRegisterCopy::new(self.cr)
    }

    fn fifo_depth(&self) -> usize {
        let lcr: LocalRegisterCopy<u32, LCR_H::Register> = LocalRegisterCopy::new(self.lcr_h);
        if lcr.is_set(LCR_H::FEN) {
            FIFO_DEPTH
        } else {
            1
        }
    }

    fn tx_enabled(&self) -> bool {
        let cr = self.cr();
        cr.is_set(CR::UARTEN) && cr.is_set(CR::TXE)
    }

    fn rx_enabled(&self) -> bool {
        let cr = self.cr();
        cr.is_set(CR::UARTEN) && cr.is_set(CR::RXE)
    }

    fn ris(&self) -> u32 {
        let mut ris = self.latched;
        if self.rx_len > 0 {
            ris |= INT::RX::SET.value;
        }
        if self.tx_enabled() {
            ris |= INT::TX::SET.value;
        }
        ris
    }

    fn mis(&self) -> u32 {
        self.ris() & self.imsc
    }

    fn fr(&self) -> u32 {
        let mut fr = FR::TXFE::SET.value;
        if self.rx_len == 0 {
            fr |= FR::RXFE::SET.value;
        }
        if self.rx_len >= self.fifo_depth() {
            fr |= FR::RXFF::SET.value;
        }
        fr
    }

    /// Adds a received byte; on a full FIFO sets the overrun status and interrupt and drops it.
    fn receive(&mut self, byte: u8) -> bool {
        if self.rx_len >= self.fifo_depth() {
            self.rsr |= RSR::OE::SET.value;
            self.latched |= INT::OE::SET.value;
            return false;
        }
        let slot = (self.rx_head + self.rx_len) % FIFO_DEPTH;
        self.rx[slot] = byte;
        self.rx_len += 1;
        true
    }

    fn pop(&mut self) -> u8 {
        if self.rx_len == 0 {
            return 0;
        }
        let b = self.rx[self.rx_head];
        self.rx_head = (self.rx_head + 1) % FIFO_DEPTH;
        self.rx_len -= 1;
        b
    }

    fn flush_rx(&mut self) {
        self.rx_head = 0;
        self.rx_len = 0;
    }

    /// Reports the interrupt line if MIS went from zero to non-zero or back.
    fn update_line(&mut self, intid: u32, fx: &mut Effects) {
        let level = self.mis() != 0;
        if level != self.line {
            self.line = level;
            let pushed = fx.push(Effect::IrqLine { intid, level });
            debug_assert!(pushed, "effects list full");
        }
    }

    fn read32(&mut self, reg_offset: u64) -> u32 {
        match reg_offset {
            reg::DR => u32::from(self.pop()),
            reg::RSR_ECR => self.rsr,
            reg::FR => self.fr(),
            reg::ILPR => self.ilpr,
            reg::IBRD => self.ibrd,
            reg::FBRD => self.fbrd,
            reg::LCR_H => self.lcr_h,
            reg::CR => self.cr,
            reg::IFLS => self.ifls,
            reg::IMSC => self.imsc,
            reg::RIS => self.ris(),
            reg::MIS => self.mis(),
            reg::DMACR => self.dmacr,
            o if (reg::PERIPH_ID0..PL011_SIZE).contains(&o) => ID_REGISTERS
                .get(((o - reg::PERIPH_ID0) / 4) as usize)
                .map_or(0, |&b| u32::from(b)),
            // ICR is write-only; reserved locations read as zero.
            _ => 0,
        }
    }

    /// A write of `value` to the bytes of the register at `reg_offset` selected by `mask`.
    fn write32(&mut self, reg_offset: u64, value: u32, mask: u32, fx: &mut Effects) {
        let merge = |old: u32, keep: u32| ((old & !mask) | (value & mask)) & keep;
        match reg_offset {
            // Only a write that covers the data byte transmits.
            reg::DR if mask & 0xff != 0 => {
                let byte = value as u8;
                if self.cr().is_set(CR::LBE) {
                    // Loopback: the byte goes to our own receiver instead of the line.
                    if self.rx_enabled() {
                        self.receive(byte);
                    }
                } else {
                    // Sent even when the transmitter is disabled, as QEMU does: early
                    // consoles write before anything enables the UART.
                    let pushed = fx.push(Effect::ConsoleByte(byte));
                    debug_assert!(pushed, "effects list full");
                }
            }
            reg::RSR_ECR => self.rsr = 0,
            reg::ILPR => self.ilpr = merge(self.ilpr, ILPR_MASK),
            reg::IBRD => self.ibrd = merge(self.ibrd, IBRD_MASK),
            reg::FBRD => self.fbrd = merge(self.fbrd, FBRD_MASK),
            reg::LCR_H => {
                let new = merge(self.lcr_h, LCR_H_MASK);
                if (new ^ self.lcr_h) & LCR_H::FEN::SET.value != 0 {
                    // Changing FEN empties the FIFOs (as QEMU does).
                    self.flush_rx();
                }
                self.lcr_h = new;
            }
            reg::CR => self.cr = merge(self.cr, CR_MASK),
            reg::IFLS => self.ifls = merge(self.ifls, IFLS_MASK),
            reg::IMSC => self.imsc = merge(self.imsc, INT_MASK),
            reg::ICR => self.latched &= !(value & mask),
            reg::DMACR => self.dmacr = merge(self.dmacr, DMACR_MASK),
            // FR, RIS, MIS, the ID registers and reserved locations ignore writes.
            _ => {}
        }
    }
}

/// The emulated PL011 of one VM.
pub struct Pl011 {
    intid: u32,
    state: Mutex<State>,
}

impl Pl011 {
    /// A PL011 in its reset state whose interrupt is the level-sensitive SPI `intid`.
    pub fn new(intid: u32) -> Self {
        Pl011 {
            intid,
            state: Mutex::new(State {
                rx: [0; FIFO_DEPTH],
                rx_head: 0,
                rx_len: 0,
                rsr: 0,
                ilpr: 0,
                ibrd: 0,
                fbrd: 0,
                lcr_h: 0,
                cr: CR_RESET,
                ifls: IFLS_RESET,
                imsc: 0,
                dmacr: 0,
                latched: 0,
                line: false,
            }),
        }
    }

    /// A PL011 as boot firmware leaves a console: enabled, 8N1 with FIFOs, 115200 baud from a
    /// 24 MHz UARTCLK (IBRD 13, FBRD 1). Linux's `pl011_console_get_options` divides by the
    /// baud rate divisor when CR.UARTEN is set, so an enabled UART must have one.
    pub fn with_firmware_setup(intid: u32) -> Self {
        let uart = Self::new(intid);
        {
            let mut s = uart.state.lock();
            s.ibrd = 13;
            s.fbrd = 1;
            s.lcr_h = (LCR_H::WLEN::Bits8 + LCR_H::FEN::SET).value;
            s.cr = (CR::UARTEN::SET + CR::TXE::SET + CR::RXE::SET).value;
        }
        uart
    }

    pub fn intid(&self) -> u32 {
        self.intid
    }

    /// A byte of input for the guest (keyboard input for the focused VM). Returns false when
    /// it was not taken: receiver disabled (CR.UARTEN or CR.RXE clear, or loopback on), or FIFO
    /// full (then the overrun status and interrupt are set, as on hardware).
    pub fn push_rx(&self, byte: u8, fx: &mut Effects) -> bool {
        let mut s = self.state.lock();
        if !s.rx_enabled() || s.cr().is_set(CR::LBE) {
            return false;
        }
        let taken = s.receive(byte);
        s.update_line(self.intid, fx);
        taken
    }

    /// How many more bytes the receive FIFO can take now (0 when the receiver is disabled), so
    /// the caller can hold input back instead of overrunning.
    pub fn rx_space(&self) -> usize {
        let s = self.state.lock();
        if !s.rx_enabled() || s.cr().is_set(CR::LBE) {
            return 0;
        }
        s.fifo_depth().saturating_sub(s.rx_len)
    }

    /// The current level of the interrupt line (MIS != 0).
    pub fn irq_level(&self) -> bool {
        self.state.lock().mis() != 0
    }
}

/// Splits an access into its 32-bit register, the byte lane shift and the lane mask; accesses
/// must stay within one 32-bit register and be at most 32 bits wide.
fn lanes(offset: u64, width: AccessWidth) -> Result<(u64, u32, u32), MmioError> {
    if offset >= PL011_SIZE {
        return Err(MmioError::OutOfRange);
    }
    let within = offset & 3;
    if width == AccessWidth::Double || within + width.bytes() > 4 {
        return Err(MmioError::BadWidth);
    }
    let shift = (within * 8) as u32;
    Ok((offset & !3, shift, (width.mask() as u32) << shift))
}

impl MmioDevice for Pl011 {
    fn size(&self) -> u64 {
        PL011_SIZE
    }

    fn read(
        &self,
        _ctx: AccessCtx,
        offset: u64,
        width: AccessWidth,
        fx: &mut Effects,
    ) -> Result<u64, MmioError> {
        let (reg_offset, shift, mask) = lanes(offset, width)?;
        let mut s = self.state.lock();
        // Only a read that covers DR's data byte pops the FIFO.
        let value = if reg_offset == reg::DR && shift != 0 {
            0
        } else {
            s.read32(reg_offset)
        };
        s.update_line(self.intid, fx);
        Ok(u64::from((value & mask) >> shift))
    }

    fn write(
        &self,
        _ctx: AccessCtx,
        offset: u64,
        width: AccessWidth,
        value: u64,
        fx: &mut Effects,
    ) -> Result<(), MmioError> {
        let (reg_offset, shift, mask) = lanes(offset, width)?;
        let value = ((value & width.mask()) as u32) << shift;
        let mut s = self.state.lock();
        s.write32(reg_offset, value, mask, fx);
        s.update_line(self.intid, fx);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AccessWidth::*;
    use alloc::vec::Vec;

    const INTID: u32 = 33;
    const CTX: AccessCtx = AccessCtx { vcpu: 0 };
    const TXIS: u64 = 1 << 5;
    const RXIS: u64 = 1 << 4;
    const OEIS: u64 = 1 << 10;

    fn rd(u: &Pl011, off: u64) -> (u64, Vec<Effect>) {
        let mut fx = Effects::new();
        let v = u.read(CTX, off, Word, &mut fx).unwrap();
        (v, fx.iter().collect())
    }

    fn wr(u: &Pl011, off: u64, v: u64) -> Vec<Effect> {
        let mut fx = Effects::new();
        u.write(CTX, off, Word, v, &mut fx).unwrap();
        fx.iter().collect()
    }

    fn r(u: &Pl011, off: u64) -> u64 {
        rd(u, off).0
    }

    fn push(u: &Pl011, b: u8) -> (bool, Vec<Effect>) {
        let mut fx = Effects::new();
        let ok = u.push_rx(b, &mut fx);
        (ok, fx.iter().collect())
    }

    fn line(level: bool) -> Effect {
        Effect::IrqLine {
            intid: INTID,
            level,
        }
    }

    /// Linux's `pl011_startup` in short: 8N1 with FIFOs, then enable UART, TX and RX.
    fn linux_started() -> Pl011 {
        let u = Pl011::new(INTID);
        wr(&u, reg::LCR_H, 0x70);
        wr(&u, reg::CR, 0x301);
        u
    }

    #[test]
    fn reset_values_of_every_register() {
        let u = Pl011::new(INTID);
        let cases = [
            (reg::DR, 0),
            (reg::RSR_ECR, 0),
            (reg::FR, 0x90), // TXFE | RXFE
            (reg::ILPR, 0),
            (reg::IBRD, 0),
            (reg::FBRD, 0),
            (reg::LCR_H, 0),
            (reg::CR, 0x300),
            (reg::IFLS, 0x12),
            (reg::IMSC, 0),
            (reg::RIS, 0), // UARTEN clear: no TX interrupt
            (reg::MIS, 0),
            (reg::ICR, 0),
            (reg::DMACR, 0),
            (0x008, 0),
            (0x04c, 0),
            (0xfdc, 0),
        ];
        for (off, want) in cases {
            assert_eq!(r(&u, off), want, "offset {off:#x}");
        }
    }

    #[test]
    fn identification_registers_match_an_arm_pl011() {
        let u = Pl011::new(INTID);
        let ids: Vec<u64> = (0..8).map(|i| r(&u, 0xfe0 + 4 * i)).collect();
        assert_eq!(ids, [0x11, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1]);
        // As Linux's amba_read_periphid assembles them.
        let pid = ids[..4]
            .iter()
            .enumerate()
            .fold(0, |a, (i, &b)| a | (b << (8 * i)));
        let cid = ids[4..]
            .iter()
            .enumerate()
            .fold(0, |a, (i, &b)| a | (b << (8 * i)));
        assert_eq!((pid & 0x000f_ffff, cid), (0x0004_1011, 0xb105_f00d));
        // Read-only.
        wr(&u, 0xfe0, 0xff);
        assert_eq!(r(&u, 0xfe0), 0x11);
    }

    #[test]
    fn stored_registers_keep_their_writable_bits() {
        let u = Pl011::new(INTID);
        let cases = [
            (reg::ILPR, 0xffff_ffff, 0xff),
            (reg::IBRD, 0xffff_ffff, 0xffff),
            (reg::FBRD, 0xffff_ffff, 0x3f),
            (reg::IFLS, 0xffff_ffff, 0x3f),
            (reg::IMSC, 0xffff_ffff, 0x7ff),
            (reg::DMACR, 0xffff_ffff, 0x7),
            (reg::LCR_H, 0xffff_ff70, 0x70),
            (reg::CR, 0xffff_ffff, 0xff87),
        ];
        for (off, write, want) in cases {
            wr(&u, off, write);
            assert_eq!(r(&u, off), want, "offset {off:#x}");
        }
        // FR, RIS and MIS ignore writes.
        wr(&u, reg::FR, 0);
        assert_eq!(r(&u, reg::FR) & 0x80, 0x80);
    }

    #[test]
    fn dr_write_sends_a_console_byte_even_when_disabled() {
        let u = Pl011::new(INTID);
        assert_eq!(wr(&u, reg::DR, 0x1_41), vec![Effect::ConsoleByte(b'A')]);
        let u = linux_started();
        let mut fx = Effects::new();
        u.write(CTX, reg::DR, Byte, u64::from(b'z'), &mut fx)
            .unwrap();
        assert_eq!(
            fx.iter().collect::<Vec<_>>(),
            vec![Effect::ConsoleByte(b'z')]
        );
        // Nothing is ever pending: TXFE set, TXFF and BUSY clear.
        assert_eq!(r(&u, reg::FR) & 0xa8, 0x80);
    }

    #[test]
    fn tx_interrupt_is_a_level_while_the_transmitter_is_enabled() {
        let u = linux_started();
        assert_eq!(r(&u, reg::RIS) & TXIS, TXIS);
        // Unmasking TXIM raises the line at once: the driver never waits for a TX interrupt
        // that cannot come.
        assert_eq!(wr(&u, reg::IMSC, TXIS), vec![line(true)]);
        assert_eq!(r(&u, reg::MIS), TXIS);
        // Writing data and ICR.TXIC cannot clear it: the FIFO is still empty.
        assert_eq!(wr(&u, reg::DR, 0x61), vec![Effect::ConsoleByte(b'a')]);
        assert_eq!(wr(&u, reg::ICR, TXIS), vec![]);
        assert_eq!(r(&u, reg::MIS), TXIS);
        // The driver masks TXIM when its buffer is empty: the line drops.
        assert_eq!(wr(&u, reg::IMSC, 0), vec![line(false)]);
        // Disabling the transmitter removes the raw interrupt too.
        wr(&u, reg::IMSC, TXIS);
        assert_eq!(wr(&u, reg::CR, 0x201), vec![line(false)]);
        assert_eq!(r(&u, reg::RIS) & TXIS, 0);
    }

    #[test]
    fn rx_bytes_queue_in_order_and_raise_the_rx_interrupt() {
        let u = linux_started();
        wr(&u, reg::IMSC, RXIS | (1 << 6)); // RXIM | RTIM, as Linux sets them
        assert_eq!(push(&u, b'h'), (true, vec![line(true)]));
        assert_eq!(push(&u, b'i'), (true, vec![]));
        assert_eq!(r(&u, reg::FR) & 0x10, 0); // RXFE clear
        assert_eq!(r(&u, reg::MIS), RXIS);
        assert_eq!(rd(&u, reg::DR), (u64::from(b'h'), vec![]));
        assert_eq!(rd(&u, reg::DR), (u64::from(b'i'), vec![line(false)]));
        assert_eq!(r(&u, reg::FR) & 0x10, 0x10);
        assert_eq!(r(&u, reg::RIS) & RXIS, 0);
        // An empty FIFO reads as zero.
        assert_eq!(r(&u, reg::DR), 0);
    }

    #[test]
    fn rx_fifo_fills_then_overruns() {
        let u = linux_started();
        assert_eq!(u.rx_space(), 16);
        for i in 0..16u8 {
            assert!(push(&u, i).0);
        }
        assert_eq!(u.rx_space(), 0);
        assert_eq!(r(&u, reg::FR) & 0x40, 0x40); // RXFF
        wr(&u, reg::IMSC, OEIS);
        assert_eq!(push(&u, 99), (false, vec![line(true)]));
        assert_eq!(r(&u, reg::RSR_ECR), 0x8); // OE
        assert_eq!(r(&u, reg::RIS) & OEIS, OEIS);
        // The FIFO kept the first 16 bytes.
        let got: Vec<u64> = (0..16).map(|_| r(&u, reg::DR)).collect();
        assert_eq!(got, (0..16).collect::<Vec<u64>>());
        // ECR clears the status, ICR the interrupt.
        wr(&u, reg::RSR_ECR, 0);
        assert_eq!(r(&u, reg::RSR_ECR), 0);
        assert_eq!(wr(&u, reg::ICR, OEIS), vec![line(false)]);
    }

    #[test]
    fn without_fifos_the_receiver_holds_one_byte() {
        let u = Pl011::new(INTID);
        wr(&u, reg::CR, 0x301);
        assert!(push(&u, 1).0);
        assert_eq!(r(&u, reg::FR) & 0x40, 0x40);
        assert!(!push(&u, 2).0);
        assert_eq!(r(&u, reg::DR), 1);
    }

    #[test]
    fn toggling_fen_flushes_the_receive_fifo() {
        let u = linux_started();
        push(&u, 7);
        wr(&u, reg::LCR_H, 0x60);
        assert_eq!(r(&u, reg::FR) & 0x10, 0x10);
    }

    #[test]
    fn disabled_receiver_or_loopback_refuses_input() {
        let u = Pl011::new(INTID); // UARTEN clear at reset
        assert_eq!(push(&u, b'x'), (false, vec![]));
        assert_eq!(u.rx_space(), 0);
        wr(&u, reg::CR, 0x101); // RXE clear
        assert!(!push(&u, b'x').0);
        wr(&u, reg::CR, 0x381); // loopback
        assert!(!push(&u, b'x').0);
    }

    #[test]
    fn loopback_sends_tx_to_our_own_receiver() {
        let u = linux_started();
        wr(&u, reg::CR, 0x381);
        assert_eq!(wr(&u, reg::DR, 0x55), vec![]);
        assert_eq!(r(&u, reg::DR), 0x55);
    }

    #[test]
    fn line_follows_mis_through_mask_changes() {
        let u = linux_started();
        push(&u, b'q');
        // Table of (IMSC written, effects expected).
        let steps: [(u64, Vec<Effect>); 5] = [
            (RXIS, vec![line(true)]),
            (RXIS | TXIS, vec![]),
            (TXIS, vec![]),
            (0, vec![line(false)]),
            (0, vec![]),
        ];
        for (i, (imsc, want)) in steps.into_iter().enumerate() {
            assert_eq!(wr(&u, reg::IMSC, imsc), want, "step {i}");
        }
        assert!(!u.irq_level());
    }

    #[test]
    fn widths_and_offsets() {
        let u = linux_started();
        let mut fx = Effects::new();
        // Byte and halfword reads of a register lane.
        wr(&u, reg::IBRD, 0x1234);
        assert_eq!(u.read(CTX, reg::IBRD + 1, Byte, &mut fx), Ok(0x12));
        assert_eq!(u.read(CTX, reg::IBRD, Half, &mut fx), Ok(0x1234));
        // A byte write to the upper lane merges.
        u.write(CTX, reg::IBRD + 1, Byte, 0xab, &mut fx).unwrap();
        assert_eq!(r(&u, reg::IBRD), 0xab34);
        // 16-bit accesses, as Linux's driver uses for the Arm variant.
        u.write(CTX, reg::CR, Half, 0x301, &mut fx).unwrap();
        assert_eq!(u.read(CTX, reg::CR, Half, &mut fx), Ok(0x301));
        // Refused: 64-bit, crossing a register, beyond the block.
        assert_eq!(
            u.read(CTX, reg::DR, Double, &mut fx),
            Err(MmioError::BadWidth)
        );
        assert_eq!(
            u.read(CTX, reg::FR + 2, Word, &mut fx),
            Err(MmioError::BadWidth)
        );
        assert_eq!(
            u.write(CTX, reg::CR + 3, Half, 0, &mut fx),
            Err(MmioError::BadWidth)
        );
        assert_eq!(
            u.read(CTX, PL011_SIZE, Byte, &mut fx),
            Err(MmioError::OutOfRange)
        );
        assert_eq!(u.size(), 0x1000);
        assert!(fx.is_empty());
    }

    #[test]
    fn reading_the_upper_bytes_of_dr_does_not_pop() {
        let u = linux_started();
        push(&u, b'k');
        let mut fx = Effects::new();
        assert_eq!(u.read(CTX, reg::DR + 1, Byte, &mut fx), Ok(0));
        assert_eq!(r(&u, reg::DR), u64::from(b'k'));
    }

    #[test]
    fn firmware_setup_is_an_enabled_115200_8n1_console() {
        let u = Pl011::with_firmware_setup(INTID);
        let cases = [
            (reg::CR, 0x301),
            (reg::LCR_H, 0x70),
            (reg::IBRD, 13),
            (reg::FBRD, 1),
            (reg::IMSC, 0),
        ];
        for (off, want) in cases {
            assert_eq!(r(&u, off), want, "offset {off:#x}");
        }
        assert_eq!(u.intid(), INTID);
        assert!(!u.irq_level());
        assert!(push(&u, b'a').0);
    }
}
