//! Taking keyboard input from the console UART's receive side in its interrupt handler without
//! ever leaving the interrupt asserted with nothing to read.
//!
//! A PL011's receive interrupt status can stay raised while its FIFO is empty: QEMU's model
//! empties the receive FIFO when `UARTLCR_H.FEN` changes but keeps `UARTRIS.RXRIS` (so input
//! typed before the hypervisor programmed the UART left the interrupt pending for good), and on
//! hardware the receive-timeout and error statuses are latched until written to `UARTICR`
//! (PL011 TRM 3.3.13). A handler that only reads until `UARTFR.RXFE` then returns with the line
//! still high and is entered again at once, forever, with the CPU's interrupts masked. So after
//! the FIFO is empty the handler clears the receive-side status and looks once more (a byte that
//! arrived between the last read and the clear raised no new edge in the status it cleared).
#![forbid(unsafe_code)]

/// The receive side of the console UART.
pub trait ConsoleRx {
    /// One received byte, or `None` when nothing is waiting. Bytes received with an error
    /// (overrun, break, parity, framing) are dropped here, not reported as the end.
    fn read_byte(&mut self) -> Option<u8>;
    /// Clears the receive-side interrupt status (receive, receive timeout, errors) and tells
    /// whether input is waiting now.
    fn ack(&mut self) -> bool;
}

/// Most bytes taken in one interrupt; the rest stays in the UART (whose interrupt stays
/// raised), so a flood of input cannot keep a CPU in the handler.
pub const BYTES_PER_INTERRUPT: usize = 256;

/// Hands every waiting byte (at most [`BYTES_PER_INTERRUPT`]) to `each`, in order, and leaves
/// the UART's receive interrupt low unless input is still waiting. Returns how many bytes were
/// taken.
pub fn drain(rx: &mut impl ConsoleRx, mut each: impl FnMut(u8)) -> usize {
    let mut taken = 0;
    loop {
        while let Some(b) = rx.read_byte() {
            each(b);
            taken += 1;
            if taken == BYTES_PER_INTERRUPT {
                return taken;
            }
        }
        if !rx.ack() {
            return taken;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::VecDeque;
    use alloc::vec::Vec;

    /// QEMU's PL011 receive side (hw/char/pl011.c): the receive status rises when a byte makes
    /// the FIFO reach its trigger level of 1, falls when a read empties it or on UARTICR.RXIC.
    /// `arrivals[i]` are bytes the line delivers just before the i-th register access.
    struct QemuPl011 {
        fifo: VecDeque<u8>,
        rxris: bool,
        accesses: usize,
        arrivals: Vec<(usize, u8)>,
    }

    impl QemuPl011 {
        fn new(fifo: &[u8], rxris: bool) -> Self {
            QemuPl011 {
                fifo: fifo.iter().copied().collect(),
                rxris,
                accesses: 0,
                arrivals: Vec::new(),
            }
        }
        fn line_arrives(&mut self) {
            let now = self.accesses;
            self.accesses += 1;
            let due: Vec<u8> = self
                .arrivals
                .iter()
                .filter(|(at, _)| *at == now)
                .map(|(_, b)| *b)
                .collect();
            for b in due {
                self.fifo.push_back(b);
                if self.fifo.len() == 1 {
                    self.rxris = true;
                }
            }
        }
    }

    impl ConsoleRx for QemuPl011 {
        fn read_byte(&mut self) -> Option<u8> {
            self.line_arrives();
            let b = self.fifo.pop_front()?;
            if self.fifo.is_empty() {
                self.rxris = false;
            }
            Some(b)
        }
        fn ack(&mut self) -> bool {
            self.line_arrives();
            self.rxris = false;
            self.line_arrives();
            !self.fifo.is_empty()
        }
    }

    /// The hang found with `(printf 'echo HI\n'; sleep 60) | qemu/run.sh ...`: the FIFO was
    /// emptied by the hypervisor's UART set-up with the status still raised. Reading until empty
    /// (all the handler did before) left it raised.
    #[test]
    fn a_stale_receive_status_with_an_empty_fifo_is_cleared() {
        let mut u = QemuPl011::new(&[], true);
        let mut got = Vec::new();
        assert_eq!(drain(&mut u, |b| got.push(b)), 0);
        assert!(
            !u.rxris,
            "interrupt left raised: the CPU would take it again forever"
        );
        assert!(got.is_empty());
    }

    #[test]
    fn waiting_bytes_are_taken_in_order_and_the_status_falls() {
        let mut u = QemuPl011::new(b"echo HI\n", true);
        let mut got = Vec::new();
        assert_eq!(drain(&mut u, |b| got.push(b)), 8);
        assert_eq!(got, b"echo HI\n");
        assert!(!u.rxris && u.fifo.is_empty());
    }

    /// A byte that arrives after the last empty read but before the status is cleared: its
    /// rising status is cleared with the stale one, so the handler must look again.
    #[test]
    fn a_byte_arriving_just_before_the_clear_is_not_stranded() {
        let mut u = QemuPl011::new(b"a", true);
        // accesses: 0 read 'a', 1 read (empty), 2 ack before the clear
        u.arrivals.push((2, b'b'));
        let mut got = Vec::new();
        drain(&mut u, |b| got.push(b));
        assert_eq!(got, b"ab");
        assert!(u.fifo.is_empty() && !u.rxris);
    }

    #[test]
    fn a_byte_arriving_after_the_clear_raises_the_status_again_or_is_taken() {
        let mut u = QemuPl011::new(b"a", true);
        // accesses: 0 read 'a', 1 read (empty), 2 ack before the clear, 3 ack after it
        u.arrivals.push((3, b'b'));
        let mut got = Vec::new();
        drain(&mut u, |b| got.push(b));
        assert_eq!(got, b"ab");
        assert!(u.fifo.is_empty() && !u.rxris);
    }

    #[test]
    fn a_flood_is_taken_a_budget_at_a_time_with_the_interrupt_still_raised() {
        let flood: Vec<u8> = (0..BYTES_PER_INTERRUPT + 10).map(|i| i as u8).collect();
        let mut u = QemuPl011::new(&flood, true);
        let mut got = Vec::new();
        assert_eq!(drain(&mut u, |b| got.push(b)), BYTES_PER_INTERRUPT);
        assert!(u.rxris, "the rest must raise the interrupt again");
        assert_eq!(drain(&mut u, |b| got.push(b)), 10);
        assert_eq!(got, flood);
        assert!(!u.rxris);
    }
}
