//! The distributor state of one VM (kept behind the VM's lock in [`super::Vgic`]) and the
//! register-level semantics shared by the GICv3 distributor, the GICv3 redistributors and the
//! GICv2 distributor. The MMIO devices in `src/vdev/` only decode offsets and widths and call
//! in here.
//!
//! Every mutating operation returns a [`VcpuMask`] of the vCPUs that have something new to
//! pick up (an interrupt became deliverable to them, or an interrupt resident in their list
//! registers changed); [`super::Vgic`] raises their flush flags and hands the mask to the
//! caller as the vCPUs to kick.
#![forbid(unsafe_code)]

use alloc::vec;
use alloc::vec::Vec;
use core::cell::Cell;

use super::irq::{
    Irq, NO_OWNER, PHYS_CLR_ACT, PHYS_CLR_PEND, PHYS_SET_ACT, PRIORITY_MASK, REQ_CLR_ACT,
    REQ_CLR_PEND, REQ_SET_ACT,
};
use super::sgi::{Affinity, Sgi1r, SgiRegister, SgiTargets, Sgir};
use super::{GicVersion, VcpuMask};

/// Bits of GICD_IROUTER<n> that are stored: Aff0-2 [23:0], IRM [31], Aff3 [39:32]
/// (IHI 0069H, GICD_IROUTER<n>); everything else is RES0.
pub(crate) const IROUTER_MASK: u64 = Affinity::MASK | IROUTER_IRM;
/// GICD_IROUTER<n>.Interrupt_Routing_Mode [31]: 1 = any one participating PE (1 of N).
pub(crate) const IROUTER_IRM: u64 = 1 << 31;

/// The one-bit-per-interrupt register arrays.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum BitReg {
    Group,
    SetEnable,
    ClearEnable,
    SetPending,
    ClearPending,
    SetActive,
    ClearActive,
}

impl BitReg {
    /// The register array at a distributor / SGI_base offset within 0x080..0x400, and the
    /// index n of the register in it (IHI 0069H, the distributor and SGI_base register maps;
    /// IHI 0048B, the distributor register map).
    pub(crate) fn at(offset: u64) -> Option<(BitReg, u32)> {
        let reg = match offset & !0x7f {
            0x080 => BitReg::Group,
            0x100 => BitReg::SetEnable,
            0x180 => BitReg::ClearEnable,
            0x200 => BitReg::SetPending,
            0x280 => BitReg::ClearPending,
            0x300 => BitReg::SetActive,
            0x380 => BitReg::ClearActive,
            _ => return None,
        };
        Some((reg, ((offset & 0x7f) / 4) as u32))
    }
}

pub(crate) struct Dist {
    pub version: GicVersion,
    pub nr_vcpus: usize,
    /// GICD_CTLR.EnableGrp0 / EnableGrp1.
    pub grp0: bool,
    pub grp1: bool,
    /// SGIs and PPIs, one bank per vCPU.
    privates: Vec<[Irq; 32]>,
    spis: Vec<Irq>,
    /// GICv3: GICD_IROUTER value (masked); GICv2: GICD_ITARGETSR byte.
    route: Vec<u64>,
    /// GICv3 with IRM == 0: the vCPU whose affinity matches, or [`NO_OWNER`].
    route_vcpu: Vec<u8>,
    /// GICv3: each vCPU's affinity in MPIDR / IROUTER layout.
    pub aff: Vec<u64>,
    /// GICv3: vCPUs whose redistributor has GICR_WAKER.ProcessorSleep == 1.
    pub asleep: VcpuMask,
    /// vCPUs that run (started and not stopped): a 1-of-N SPI goes to one of them when it can.
    pub online: VcpuMask,
    /// Per vCPU, one bit per INTID that may want a list register there: set by every
    /// [`Dist::notify`] that names the vCPU, cleared by the flush that finds the interrupt
    /// placed or not wanting one. The flush looks only at these bits, so a timer interrupt does
    /// not cost a scan of every interrupt of the VM.
    hints: Vec<Hints>,
    /// vCPUs whose next flush must look at every interrupt (after register writes, whose
    /// effects on deliverability are not tracked bit by bit).
    rescan: Cell<VcpuMask>,
    /// A GICD_ICFGR write changed the trigger mode of a HW-linked SPI, for the device to
    /// report (`Effect::HwTriggerChanged`).
    hw_trigger_changed: bool,
    /// Words of 32 INTIDs holding an SPI with a `phys_req` (bit n = INTIDs 32n..32n+31).
    phys_req_words: u32,
}

/// INTIDs 0..1024 in 64-bit words.
pub(crate) const HINT_WORDS: usize = 16;

/// One vCPU's hints: a bit per INTID, and a bit per non-zero word so that a flush looks at
/// the few words that matter.
#[derive(Default)]
struct Hints {
    words: [Cell<u64>; HINT_WORDS],
    summary: Cell<u16>,
}

impl Dist {
    pub fn new(version: GicVersion, mpidrs: &[u64], nr_irqs: u32) -> Self {
        let nr_vcpus = mpidrs.len();
        let nr_spis = (nr_irqs - 32) as usize;
        let privates = (0..nr_vcpus)
            .map(|_| core::array::from_fn(|i| Irq::reset(i as u32)))
            .collect();
        let mut d = Dist {
            version,
            nr_vcpus,
            grp0: false,
            grp1: false,
            privates,
            spis: (0..nr_spis).map(|i| Irq::reset(32 + i as u32)).collect(),
            route: vec![0; nr_spis],
            route_vcpu: vec![NO_OWNER; nr_spis],
            aff: mpidrs.iter().map(|m| m & Affinity::MASK).collect(),
            // Hardware redistributors reset with ProcessorSleep == 1 (IHI 0069H, GICR_WAKER)
            // and firmware wakes them; a VM has no firmware, so they start awake, as under KVM.
            asleep: 0,
            online: 0,
            hints: (0..nr_vcpus).map(|_| Hints::default()).collect(),
            rescan: Cell::new(all_mask(nr_vcpus)),
            hw_trigger_changed: false,
            phys_req_words: 0,
        };
        for spi in 0..nr_spis {
            d.route_vcpu[spi] = d.match_affinity(0);
        }
        d
    }

    pub fn spi_count(&self) -> usize {
        self.spis.len()
    }

    pub fn all(&self) -> VcpuMask {
        all_mask(self.nr_vcpus)
    }

    fn v2_sgi(&self, intid: u32) -> bool {
        self.version == GicVersion::V2 && intid < 16
    }

    pub fn irq(&self, bank: usize, intid: u32) -> Option<&Irq> {
        if intid < 32 {
            self.privates.get(bank).map(|b| &b[intid as usize])
        } else {
            self.spis.get((intid - 32) as usize)
        }
    }

    pub fn irq_mut(&mut self, bank: usize, intid: u32) -> Option<&mut Irq> {
        if intid < 32 {
            self.privates.get_mut(bank).map(|b| &mut b[intid as usize])
        } else {
            self.spis.get_mut((intid - 32) as usize)
        }
    }

    fn group_enabled(&self, irq: &Irq) -> bool {
        if irq.group1 { self.grp1 } else { self.grp0 }
    }

    /// Whether the distributor may forward this interrupt to `vcpu` now.
    pub fn deliverable(&self, irq: &Irq, vcpu: usize) -> bool {
        irq.enabled && self.group_enabled(irq) && self.asleep & bit(vcpu) == 0
    }

    fn match_affinity(&self, route: u64) -> u8 {
        let want = route & Affinity::MASK;
        self.aff
            .iter()
            .position(|&a| a == want)
            .map_or(NO_OWNER, |v| v as u8)
    }

    /// vCPUs an SPI may be delivered to (before the sleep check).
    pub fn spi_targets(&self, spi: usize) -> VcpuMask {
        match self.version {
            GicVersion::V3 if self.route[spi] & IROUTER_IRM != 0 => self.all(),
            GicVersion::V3 => match self.route_vcpu[spi] {
                NO_OWNER => 0,
                v => bit(usize::from(v)),
            },
            // "In a uniprocessor implementation, all interrupts target the one processor"
            // (IHI 0048B, GICD_ITARGETSRn); a guest reading CPUNumber 0 may never set them.
            GicVersion::V2 if self.nr_vcpus == 1 => 1,
            GicVersion::V2 => self.route[spi] & self.all(),
        }
    }

    /// Whether `intid` (in `vcpu`'s bank for SGIs/PPIs) is routed to `vcpu`.
    pub fn targets_vcpu(&self, intid: u32, vcpu: usize) -> bool {
        intid < 32 || self.spi_targets((intid - 32) as usize) & bit(vcpu) != 0
    }

    /// Who must look at this interrupt after a change: its owner when a list register holds
    /// it, else one target vCPU when it has become deliverable or active there.
    pub fn notify(&self, bank: usize, intid: u32) -> VcpuMask {
        // At most one vCPU (the owner, or one target).
        let m = self.notify_targets(bank, intid);
        if m != 0 {
            self.set_hint(m.trailing_zeros() as usize, intid);
        }
        m
    }

    pub fn set_hint(&self, vcpu: usize, intid: u32) {
        let w = intid as usize / 64;
        if let Some(h) = self.hints.get(vcpu)
            && let Some(word) = h.words.get(w)
        {
            word.set(word.get() | 1 << (intid % 64));
            h.summary.set(h.summary.get() | 1 << w);
        }
    }

    pub fn clear_hint(&self, vcpu: usize, intid: u32) {
        let w = intid as usize / 64;
        if let Some(h) = self.hints.get(vcpu)
            && let Some(word) = h.words.get(w)
        {
            let left = word.get() & !(1 << (intid % 64));
            word.set(left);
            if left == 0 {
                h.summary.set(h.summary.get() & !(1 << w));
            }
        }
    }

    /// The hint word `w` of `vcpu` (INTIDs 64w..64w+63).
    pub fn hint_word(&self, vcpu: usize, w: usize) -> u64 {
        self.hints
            .get(vcpu)
            .and_then(|h| h.words.get(w))
            .map_or(0, Cell::get)
    }

    /// The hint words of `vcpu` that are not zero (bit w = word w).
    pub fn hint_summary(&self, vcpu: usize) -> u16 {
        self.hints.get(vcpu).map_or(0, |h| h.summary.get())
    }

    /// Asks the next flush of the vCPUs in `mask` to look at every interrupt.
    pub fn request_rescan(&self, mask: VcpuMask) {
        self.rescan.set(self.rescan.get() | mask);
    }

    /// Whether `vcpu`'s next flush must look at every interrupt (the request stays).
    pub fn rescan_requested(&self, vcpu: usize) -> bool {
        self.rescan.get() & bit(vcpu) != 0
    }

    /// Whether `vcpu`'s flush must look at every interrupt; clears the request.
    pub fn take_rescan(&self, vcpu: usize) -> bool {
        let r = self.rescan.get();
        self.rescan.set(r & !bit(vcpu));
        r & bit(vcpu) != 0
    }

    fn notify_targets(&self, bank: usize, intid: u32) -> VcpuMask {
        let Some(irq) = self.irq(bank, intid) else {
            return 0;
        };
        if irq.resident() {
            return bit(usize::from(irq.owner));
        }
        let wants_lr = irq.active || (irq.pending_outside() && irq.enabled);
        if !wants_lr || !(irq.active || self.group_enabled(irq)) {
            return 0;
        }
        let targets = if intid < 32 {
            bit(bank)
        } else {
            self.spi_targets((intid - 32) as usize)
        } & !self.asleep;
        // One target is enough: whichever target flushes first takes the interrupt. Prefer one
        // that runs; when none does, the first to start looks at everything anyway.
        let running = targets & self.online;
        let pick = if running != 0 { running } else { targets };
        pick & pick.wrapping_neg()
    }

    /// Takes the interrupt out of the list register of `vcpu` that holds it (evicted for a
    /// more urgent one, or the vCPU is reset): its pending state returns to the model and
    /// whoever may take it now is hinted, which for an SPI rerouted meanwhile is another vCPU.
    /// Returns those vCPUs. With `drop_active`, the LR's active state is discarded too (the
    /// vCPU that acknowledged it is gone).
    pub fn evict(&mut self, vcpu: usize, intid: u32, drop_active: bool) -> VcpuMask {
        let v2 = self.v2_sgi(intid);
        let Some(irq) = self.irq_mut(vcpu, intid) else {
            return 0;
        };
        irq.evict(v2);
        if drop_active {
            irq.active = false;
            irq.req = 0;
        }
        self.notify(vcpu, intid)
    }

    fn notify_owner(irq: &Irq) -> VcpuMask {
        if irq.resident() {
            bit(usize::from(irq.owner))
        } else {
            0
        }
    }

    // ----- one-bit-per-interrupt registers -------------------------------------------------

    /// Reads the 32 bits of `reg` starting at INTID `first` (bank = vCPU for INTIDs < 32).
    pub fn read_bits(&self, bank: usize, reg: BitReg, first: u32) -> u32 {
        let mut value = 0;
        for i in 0..32 {
            let Some(irq) = self.irq(bank, first + i) else {
                continue;
            };
            let on = match reg {
                BitReg::Group => irq.group1,
                BitReg::SetEnable | BitReg::ClearEnable => irq.enabled,
                BitReg::SetPending | BitReg::ClearPending => {
                    if self.v2_sgi(first + i) {
                        irq.sources != 0 || (irq.resident() && irq.lr_pending)
                    } else {
                        irq.pending_view()
                    }
                }
                BitReg::SetActive | BitReg::ClearActive => irq.active_view(),
            };
            value |= u32::from(on) << i;
        }
        value
    }

    /// Writes `value` to the 32 bits of `reg` starting at INTID `first`.
    pub fn write_bits(&mut self, bank: usize, reg: BitReg, first: u32, value: u32) -> VcpuMask {
        let mut kick = 0;
        for i in 0..32 {
            let intid = first + i;
            let set = value & (1 << i) != 0;
            if reg != BitReg::Group && !set {
                continue;
            }
            // GICv2: the SGI bits of GICD_ISPENDR0 / GICD_ICPENDR0 are WI; pending SGIs are
            // set and cleared per source through GICD_SPENDSGIR / GICD_CPENDSGIR
            // (IHI 0048B, GICD_ISPENDRn and GICD_ICPENDRn).
            if self.v2_sgi(intid) && matches!(reg, BitReg::SetPending | BitReg::ClearPending) {
                continue;
            }
            let Some(irq) = self.irq_mut(bank, intid) else {
                continue;
            };
            // A passthrough SPI: the physical interrupt follows (see `PhysSpiChange`).
            let passthrough = intid >= 32 && irq.hw && !irq.phys;
            match reg {
                BitReg::Group => {
                    irq.group1 = set;
                    kick |= self.notify(bank, intid);
                }
                BitReg::SetEnable => {
                    irq.enabled = true;
                    kick |= self.notify(bank, intid);
                }
                BitReg::ClearEnable => {
                    irq.enabled = false;
                    // A pending interrupt waiting in an LR is taken back by its owner.
                    kick |= Self::notify_owner(irq);
                }
                BitReg::SetPending => {
                    irq.latch = true;
                    if passthrough {
                        irq.phys_req = (irq.phys_req & !PHYS_CLR_ACT) | PHYS_SET_ACT;
                    }
                    kick |= self.notify(bank, intid);
                }
                BitReg::ClearPending => {
                    irq.latch = false;
                    if irq.resident() {
                        irq.req |= REQ_CLR_PEND;
                    }
                    if passthrough {
                        irq.phys_req |= PHYS_CLR_PEND;
                        if !irq.active_view() {
                            irq.phys_req = (irq.phys_req & !PHYS_SET_ACT) | PHYS_CLR_ACT;
                        }
                    }
                    kick |= Self::notify_owner(irq);
                }
                BitReg::SetActive => {
                    if irq.resident() {
                        irq.req = (irq.req & !REQ_CLR_ACT) | REQ_SET_ACT;
                    } else {
                        irq.active = true;
                    }
                    if passthrough {
                        irq.phys_req = (irq.phys_req & !PHYS_CLR_ACT) | PHYS_SET_ACT;
                    }
                    kick |= self.notify(bank, intid);
                }
                BitReg::ClearActive => {
                    if irq.resident() {
                        irq.req = (irq.req & !REQ_SET_ACT) | REQ_CLR_ACT;
                    } else {
                        irq.active = false;
                    }
                    if passthrough {
                        irq.phys_req = (irq.phys_req & !PHYS_SET_ACT) | PHYS_CLR_ACT;
                    }
                    kick |= Self::notify_owner(irq);
                }
            }
            let pending_or_active =
                !matches!(reg, BitReg::Group | BitReg::SetEnable | BitReg::ClearEnable);
            if passthrough && pending_or_active {
                self.phys_req_words |= 1 << (intid / 32);
            }
        }
        kick
    }

    // ----- byte-per-interrupt and two-bits-per-interrupt registers ----------------------------

    pub fn read_priority(&self, bank: usize, intid: u32) -> u8 {
        self.irq(bank, intid).map_or(0, |i| i.priority)
    }

    /// Sets a priority. A resident interrupt keeps its LR priority until it leaves the LR.
    pub fn write_priority(&mut self, bank: usize, intid: u32, value: u8) {
        if let Some(irq) = self.irq_mut(bank, intid) {
            irq.priority = value & PRIORITY_MASK;
        }
    }

    /// GICD_ICFGR<n> / GICR_ICFGR<n>: 16 interrupts from `first`, Int_config[1] at bit 2i+1
    /// (1 = edge); Int_config[0] is RES0 (IHI 0069H GICD_ICFGR<n>, IHI 0048B GICD_ICFGRn).
    pub fn read_config(&self, bank: usize, first: u32) -> u32 {
        let mut value = 0;
        for i in 0..16 {
            if let Some(irq) = self.irq(bank, first + i) {
                value |= u32::from(irq.edge) << (2 * i + 1);
            }
        }
        value
    }

    /// SGIs are always edge-triggered and PPIs level-sensitive, their fields read-only; SPI
    /// fields are programmable. Whether a PPI's trigger is programmable is IMPLEMENTATION
    /// DEFINED (IHI 0069H GICR_ICFGR1, IHI 0048B GICD_ICFGRn); the PPIs kestrel drives are the
    /// timers' and the PMU's level outputs, which an edge setting would lose (the line is high
    /// but nothing latches it), so they stay level whatever the guest writes, as under KVM.
    pub fn write_config(&mut self, bank: usize, first: u32, value: u32) -> VcpuMask {
        let mut kick = 0;
        for i in 0..16 {
            let intid = first + i;
            if intid < 32 {
                continue;
            }
            if let Some(irq) = self.irq_mut(bank, intid) {
                let edge = value & (1 << (2 * i + 1)) != 0;
                // A passthrough SPI's physical trigger follows the guest's (the runtime
                // reconfigures it).
                let hw_changed = irq.hw && irq.edge != edge;
                irq.edge = edge;
                self.hw_trigger_changed |= hw_changed;
                kick |= self.notify(bank, intid);
            }
        }
        kick
    }

    // ----- routing ---------------------------------------------------------------------------

    pub fn read_irouter(&self, intid: u32) -> u64 {
        match intid.checked_sub(32) {
            Some(spi) => self.route.get(spi as usize).copied().unwrap_or(0),
            None => 0,
        }
    }

    pub fn write_irouter(&mut self, intid: u32, value: u64) -> VcpuMask {
        let Some(spi) = intid.checked_sub(32).map(|s| s as usize) else {
            return 0;
        };
        if spi >= self.route.len() {
            return 0;
        }
        let value = value & IROUTER_MASK;
        self.route[spi] = value;
        self.route_vcpu[spi] = self.match_affinity(value);
        self.notify(0, intid)
    }

    /// GICD_ITARGETSR byte. For SGIs and PPIs it reads as the accessing CPU's own bit
    /// (IHI 0048B, GICD_ITARGETSRn).
    pub fn read_itargets(&self, accessor: usize, intid: u32) -> u8 {
        if intid < 32 {
            return if accessor < 8 { 1 << accessor } else { 0 };
        }
        self.route
            .get((intid - 32) as usize)
            .map_or(0, |&r| (r & self.all()) as u8)
    }

    pub fn write_itargets(&mut self, intid: u32, value: u8) -> VcpuMask {
        let Some(spi) = intid.checked_sub(32).map(|s| s as usize) else {
            return 0;
        };
        if spi >= self.route.len() {
            return 0;
        }
        // Bits of CPU interfaces that do not exist are RAZ/WI.
        self.route[spi] = u64::from(value) & self.all();
        self.notify(0, intid)
    }

    // ----- SGIs ------------------------------------------------------------------------------

    /// GICv3 `ICC_SGI*R_EL1` write from `sender`.
    pub fn send_sgi_v3(&mut self, sender: usize, value: u64, reg: SgiRegister) -> VcpuMask {
        let sgi = Sgi1r::decode(value);
        let intid = u32::from(sgi.intid);
        let mut kick = 0;
        for t in 0..self.nr_vcpus {
            let named = match sgi.targets {
                SgiTargets::AllButSelf => t != sender,
                SgiTargets::List { .. } => sgi.names(self.aff[t]),
            };
            if !named {
                continue;
            }
            let irq = &mut self.privates[t][intid as usize];
            if irq.group1 && !reg.raises_group1() {
                continue;
            }
            irq.latch = true;
            // `notify`, for a private interrupt of vCPU t: its owner while an LR holds it,
            // else t when it may take it.
            let who = if irq.resident() {
                usize::from(irq.owner)
            } else if ((irq.enabled && (if irq.group1 { self.grp1 } else { self.grp0 }))
                || irq.active)
                && self.asleep & bit(t) == 0
            {
                t
            } else {
                continue;
            };
            self.set_hint(who, intid);
            kick |= bit(who);
        }
        kick
    }

    /// GICv2 GICD_SGIR write from `sender`.
    pub fn write_sgir(&mut self, sender: usize, value: u32) -> VcpuMask {
        if sender >= 8 {
            return 0;
        }
        let sgir = Sgir::decode(value);
        let targets = sgir.target_mask(sender, self.nr_vcpus);
        let intid = u32::from(sgir.intid);
        let mut kick = 0;
        for t in 0..self.nr_vcpus.min(8) {
            if targets & (1 << t) == 0 {
                continue;
            }
            let irq = &mut self.privates[t][intid as usize];
            irq.sources |= 1 << sender;
            irq.latch = true;
            kick |= self.notify(t, intid);
        }
        kick
    }

    /// GICD_SPENDSGIR byte for SGI `intid` of `bank`: pending sources (IHI 0048B, GICD_SPENDSGIRn).
    pub fn read_sgi_sources(&self, bank: usize, intid: u32) -> u8 {
        match self.irq(bank, intid) {
            Some(irq) if intid < 16 => {
                let in_lr = if irq.resident() && irq.lr_pending && irq.req & REQ_CLR_PEND == 0 {
                    1 << (irq.src & 7)
                } else {
                    0
                };
                irq.sources | in_lr
            }
            _ => 0,
        }
    }

    pub fn set_sgi_sources(&mut self, bank: usize, intid: u32, bits: u8) -> VcpuMask {
        let valid = self.all() as u8;
        match self.irq_mut(bank, intid) {
            Some(irq) if intid < 16 && bits & valid != 0 => {
                irq.sources |= bits & valid;
                irq.latch = true;
                self.notify(bank, intid)
            }
            _ => 0,
        }
    }

    pub fn clear_sgi_sources(&mut self, bank: usize, intid: u32, bits: u8) -> VcpuMask {
        match self.irq_mut(bank, intid) {
            Some(irq) if intid < 16 => {
                irq.sources &= !bits;
                irq.latch = irq.sources != 0;
                if irq.resident() && irq.lr_pending && bits & (1 << (irq.src & 7)) != 0 {
                    irq.req |= REQ_CLR_PEND;
                }
                Self::notify_owner(irq)
            }
            _ => 0,
        }
    }

    // ----- control ---------------------------------------------------------------------------

    pub fn set_group_enables(&mut self, grp0: bool, grp1: bool) -> VcpuMask {
        if (grp0, grp1) == (self.grp0, self.grp1) {
            return 0;
        }
        self.grp0 = grp0;
        self.grp1 = grp1;
        self.request_rescan(self.all());
        self.all()
    }

    /// GICR_WAKER.ProcessorSleep of `vcpu`'s redistributor.
    pub fn set_sleep(&mut self, vcpu: usize, sleep: bool) -> VcpuMask {
        let was = self.asleep & bit(vcpu) != 0;
        if was == sleep {
            return 0;
        }
        // Waking: pick up what waited. Sleeping: release pending LRs (IHI 0069H, GICR_WAKER)
        // and offer the SPIs hinted to it to their other targets.
        self.request_rescan(bit(vcpu));
        if sleep {
            self.asleep |= bit(vcpu);
            bit(vcpu) | self.reoffer_spis(vcpu)
        } else {
            self.asleep &= !bit(vcpu);
            bit(vcpu)
        }
    }

    // ----- inputs from the hypervisor --------------------------------------------------------

    /// Latches an interrupt pending (edge, PPI injection, HW-mapped physical interrupt).
    pub fn latch(&mut self, bank: usize, intid: u32) -> VcpuMask {
        match self.irq_mut(bank, intid) {
            Some(irq) => {
                irq.latch = true;
                self.notify(bank, intid)
            }
            None => 0,
        }
    }

    /// Drives the input line of an SPI.
    pub fn set_line(&mut self, intid: u32, level: bool) -> VcpuMask {
        let Some(irq) = self.irq_mut(0, intid) else {
            return 0;
        };
        if irq.hw {
            // The level of a HW-mapped interrupt lives at the physical distributor: a rising
            // line is an injection, a falling one changes nothing here.
            if level {
                irq.latch = true;
                return self.notify(0, intid);
            }
            return 0;
        }
        let rising = level && !irq.line;
        irq.line = level;
        if irq.edge && rising {
            irq.latch = true;
        }
        if level {
            self.notify(0, intid)
        } else if irq.resident() && irq.lr_pending && !irq.active && !irq.pending_outside() {
            // Pending in an LR but no longer asserted: let the owner retract it.
            Self::notify_owner(irq)
        } else {
            0
        }
    }

    /// Physical PPI `irq.pintid` behind private interrupt `intid` of `vcpu` fired and was left
    /// active: its line is high.
    /// `None` when `intid` is not driven by a physical interrupt.
    pub fn phys_fired(&mut self, vcpu: usize, intid: u32) -> Option<VcpuMask> {
        match self.irq_mut(vcpu, intid) {
            Some(irq) if irq.phys => {
                irq.line = true;
                irq.phys_active = true;
                Some(self.notify(vcpu, intid))
            }
            _ => None,
        }
    }

    /// Marks private interrupt `intid` of `vcpu` as driven by physical PPI `pintid` (see
    /// `Irq::phys`), linked to it in the LR when `hw_link`.
    pub fn set_phys(&mut self, vcpu: usize, intid: u32, pintid: u16, hw_link: bool) -> bool {
        match self.irq_mut(vcpu, intid) {
            Some(irq) if intid < 32 => {
                irq.phys = true;
                irq.hw = hw_link;
                irq.pintid = pintid;
                self.request_rescan(bit(vcpu));
                true
            }
            _ => false,
        }
    }

    /// The vCPU stops (PSCI CPU_OFF, its VM ends): it no longer takes 1-of-N SPIs, and the SPIs
    /// hinted to it are offered to their other targets. Returns the vCPUs to kick.
    pub fn set_offline(&mut self, vcpu: usize) -> VcpuMask {
        self.online &= !bit(vcpu);
        self.reoffer_spis(vcpu)
    }

    /// Offers the SPIs hinted to `vcpu`, which can no longer take them, to their other
    /// targets. Returns those (not `vcpu`).
    fn reoffer_spis(&mut self, vcpu: usize) -> VcpuMask {
        let mut kick = 0;
        let mut words = self.hint_summary(vcpu);
        while words != 0 {
            let w = words.trailing_zeros() as usize;
            words &= words - 1;
            let mut m = self.hint_word(vcpu, w);
            if w == 0 {
                m &= !0xffff_ffff; // private interrupts stay with their vCPU
            }
            while m != 0 {
                let intid = (w * 64) as u32 + m.trailing_zeros();
                m &= m - 1;
                self.clear_hint(vcpu, intid);
                kick |= self.notify(vcpu, intid);
            }
        }
        kick & !bit(vcpu)
    }

    pub fn set_hw(&mut self, bank: usize, intid: u32, pintid: Option<u16>) -> bool {
        match self.irq_mut(bank, intid) {
            Some(irq) => {
                irq.hw = pintid.is_some();
                irq.pintid = pintid.unwrap_or(0);
                // Requests were for the old link (the runtime sets a new one up itself).
                irq.phys_req = 0;
                self.request_rescan(self.all());
                true
            }
            None => false,
        }
    }

    /// Whether the trigger mode of a HW-linked SPI changed since the last call (see
    /// `Effect::HwTriggerChanged`).
    pub fn take_hw_trigger_changed(&mut self) -> bool {
        core::mem::take(&mut self.hw_trigger_changed)
    }

    /// Whether a guest write left physical-state changes of passthrough SPIs to make (see
    /// `Effect::HwStateChanged`).
    pub fn hw_state_changed(&self) -> bool {
        self.phys_req_words != 0
    }

    /// Hands each passthrough SPI's outstanding physical-state change to `f` (physical INTID,
    /// change) and forgets it.
    pub fn take_phys_requests(&mut self, mut f: impl FnMut(u32, super::PhysSpiChange)) {
        let mut words = core::mem::take(&mut self.phys_req_words);
        while words != 0 {
            let w = words.trailing_zeros();
            words &= words - 1;
            for intid in (w * 32).max(32)..(w * 32 + 32) {
                let Some(irq) = self.irq_mut(0, intid) else {
                    continue;
                };
                let req = core::mem::take(&mut irq.phys_req);
                if req == 0 || !irq.hw {
                    continue;
                }
                f(
                    u32::from(irq.pintid),
                    super::PhysSpiChange {
                        clear_pending: req & PHYS_CLR_PEND != 0,
                        active: if req & PHYS_SET_ACT != 0 {
                            Some(true)
                        } else if req & PHYS_CLR_ACT != 0 {
                            Some(false)
                        } else {
                            None
                        },
                    },
                );
            }
        }
    }

    /// Whether `intid` (bank `vcpu` for private ones) is edge-triggered.
    pub fn is_edge(&self, bank: usize, intid: u32) -> Option<bool> {
        self.irq(bank, intid).map(|i| i.edge)
    }

    /// Whether the GICv2 per-source SGI rules apply to `intid`.
    pub fn is_v2_sgi(&self, intid: u32) -> bool {
        self.v2_sgi(intid)
    }

    /// Iterates the SPIs as (intid, irq).
    pub fn spis(&self) -> impl Iterator<Item = (u32, &Irq)> {
        self.spis
            .iter()
            .enumerate()
            .map(|(i, irq)| (32 + i as u32, irq))
    }

    pub fn privates(&self, vcpu: usize) -> Option<&[Irq; 32]> {
        self.privates.get(vcpu)
    }
}

pub(crate) const fn bit(vcpu: usize) -> VcpuMask {
    if vcpu < 64 { 1 << vcpu } else { 0 }
}

pub(crate) const fn all_mask(n: usize) -> VcpuMask {
    if n >= 64 { u64::MAX } else { (1 << n) - 1 }
}
