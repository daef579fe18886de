//! A fake virtual CPU interface for host tests: list registers in memory, ELRSR / EISR
//! computed from them by the architecture's rules, and a tiny "guest" that acknowledges and
//! deactivates interrupts the way the hardware virtual CPU interface would.
#![forbid(unsafe_code)]

use alloc::vec;
use alloc::vec::Vec;

use super::lr::{ListRegisters, LrFormat, LrState, LrValue};

pub(crate) struct FakeLrs {
    pub fmt: LrFormat,
    pub regs: Vec<u64>,
    pub uie: bool,
    /// Every `set_underflow_irq` call, in order.
    pub uie_calls: Vec<bool>,
    pub reads: core::cell::Cell<usize>,
    pub writes: usize,
    /// Physical INTIDs deactivated through HW-linked LRs.
    pub phys_deactivated: Vec<u32>,
    /// Physical INTIDs the vGIC deactivated itself (`ListRegisters::deactivate`).
    pub hyp_deactivated: Vec<u32>,
    /// Levels of the physical PPI lines (bit n = INTID n) that `line_level` reports.
    pub lines: u32,
}

impl FakeLrs {
    pub fn new(fmt: LrFormat, count: usize) -> Self {
        FakeLrs {
            fmt,
            regs: vec![0; count],
            uie: false,
            uie_calls: Vec::new(),
            reads: core::cell::Cell::new(0),
            writes: 0,
            phys_deactivated: Vec::new(),
            hyp_deactivated: Vec::new(),
            lines: 0,
        }
    }

    pub fn lr(&self, i: usize) -> LrValue {
        self.fmt.decode(self.regs[i])
    }

    /// Valid LRs (state != invalid) as (intid, value), in LR order.
    pub fn valid(&self) -> Vec<LrValue> {
        (0..self.regs.len())
            .map(|i| self.lr(i))
            .filter(|v| v.state != LrState::Invalid)
            .collect()
    }

    pub fn valid_intids(&self) -> Vec<u32> {
        self.valid().iter().map(|v| v.intid).collect()
    }

    fn find(&self, intid: u32, pred: impl Fn(LrState) -> bool) -> Option<usize> {
        (0..self.regs.len()).find(|&i| {
            let v = self.lr(i);
            v.intid == intid && pred(v.state)
        })
    }

    fn set_state(&mut self, i: usize, state: LrState) {
        let mut v = self.lr(i);
        v.state = state;
        self.regs[i] = self.fmt.encode(&v);
    }

    /// The guest acknowledges the highest-priority pending interrupt (reads ICC_IAR1 /
    /// GICV_IAR): Pending -> Active. Returns its INTID.
    pub fn ack(&mut self) -> Option<u32> {
        let i = (0..self.regs.len())
            .filter(|&i| self.lr(i).state == LrState::Pending)
            .min_by_key(|&i| (self.lr(i).priority, i))?;
        self.set_state(i, LrState::Active);
        Some(self.lr(i).intid)
    }

    /// The guest deactivates `intid` (EOI with EOImode 0): Active -> Invalid,
    /// PendingActive -> Pending; a HW-linked LR deactivates its physical interrupt.
    pub fn eoi(&mut self, intid: u32) -> bool {
        let Some(i) = self.find(intid, LrState::active) else {
            return false;
        };
        let v = self.lr(i);
        let next = if v.state.pending() {
            LrState::Pending
        } else {
            LrState::Invalid
        };
        self.set_state(i, next);
        if v.hw && next == LrState::Invalid {
            self.phys_deactivated.push(v.pintid);
        }
        true
    }

    /// Acknowledges and deactivates `intid`.
    pub fn handle(&mut self, intid: u32) {
        let got = self.ack();
        assert_eq!(got, Some(intid), "guest expected to take {intid}");
        assert!(self.eoi(intid));
    }

    /// Whether the maintenance interrupt would be asserted (ICH_MISR: EOI or U).
    pub fn maintenance_pending(&self) -> bool {
        let valid = self.valid().len();
        self.eoi_mask() != 0 || (self.uie && valid <= 1)
    }
}

impl ListRegisters for FakeLrs {
    fn format(&self) -> LrFormat {
        self.fmt
    }
    fn count(&self) -> usize {
        self.regs.len()
    }
    fn read(&self, i: usize) -> u64 {
        self.reads.set(self.reads.get() + 1);
        self.regs[i]
    }
    fn write(&mut self, i: usize, value: u64) {
        self.writes += 1;
        self.regs[i] = value;
    }
    /// ICH_ELRSR_EL2: State == 00 and (HW == 1 or EOI == 0).
    fn empty_mask(&self) -> u64 {
        let mut m = 0;
        for i in 0..self.regs.len() {
            let v = self.lr(i);
            if v.state == LrState::Invalid && (v.hw || !v.eoi_maintenance) {
                m |= 1 << i;
            }
        }
        m
    }
    /// ICH_EISR_EL2: State == 00, HW == 0 and EOI == 1.
    fn eoi_mask(&self) -> u64 {
        let mut m = 0;
        for i in 0..self.regs.len() {
            let v = self.lr(i);
            if v.state == LrState::Invalid && !v.hw && v.eoi_maintenance {
                m |= 1 << i;
            }
        }
        m
    }
    fn set_underflow_irq(&mut self, on: bool) {
        self.uie = on;
        self.uie_calls.push(on);
    }
    fn deactivate(&mut self, pintid: u32) {
        self.hyp_deactivated.push(pintid);
    }
    fn line_level(&self, pintid: u32) -> bool {
        pintid < 32 && self.lines & (1 << pintid) != 0
    }
}
