//! The state the virtual GIC keeps for one interrupt, and the rules that turn it into
//! list-register content and back.
//!
//! Pending state has three sources, as in the GIC specification (IHI 0069H and IHI
//! 0048B, "Interrupt handling state machine"): a latch (an edge, a write to GICD_ISPENDR, a hardware injection), the input line
//! of a level-sensitive interrupt, and, while the interrupt sits in a list register, the LR's
//! own pending bit. For a GICv2 SGI the latch is one bit per source CPU.
//!
//! While an interrupt is *resident* (held by a vCPU's list register), the LR owns its pending
//! and active state: the guest changes it in hardware without exiting. The model keeps the
//! last state it saw (`lr_pending`, `active`) and the owner folds the LR back in on its exit
//! path. MMIO writes that clear pending or set/clear active on a resident interrupt are
//! recorded as requests (`req`) and applied by the owner when it next folds, so the LR does
//! not overwrite them.
#![forbid(unsafe_code)]

use super::lr::{LrState, LrValue};

/// `owner` when no list register holds the interrupt.
pub(crate) const NO_OWNER: u8 = u8::MAX;

/// MMIO requests for a resident interrupt, applied by the owner's next fold.
pub(crate) const REQ_CLR_PEND: u8 = 1 << 0;
pub(crate) const REQ_SET_ACT: u8 = 1 << 1;
pub(crate) const REQ_CLR_ACT: u8 = 1 << 2;

/// What the physical interrupt of a passthrough SPI must do after a guest write to its
/// pending or active state (`Irq::phys_req`; see [`super::PhysSpiChange`]).
pub(crate) const PHYS_CLR_PEND: u8 = 1 << 0;
pub(crate) const PHYS_SET_ACT: u8 = 1 << 1;
pub(crate) const PHYS_CLR_ACT: u8 = 1 << 2;

/// Priority bits implemented by the distributor: 5 (32 levels). The unimplemented low bits
/// are RAZ/WI (IHI 0069H and IHI 0048B, "Interrupt prioritization"); 5 bits is also what
/// GICH_LR.Priority holds.
pub(crate) const PRIORITY_MASK: u8 = 0xf8;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Irq {
    pub enabled: bool,
    /// Latched pending state (edge, ISPENDR, injection). GICv2 SGIs: `sources != 0`.
    pub latch: bool,
    /// Input level of a level-sensitive interrupt (ignored for HW-mapped interrupts, whose
    /// level lives at the physical distributor).
    pub line: bool,
    /// Active state (while resident: as the LR last showed it).
    pub active: bool,
    pub group1: bool,
    /// Edge-triggered (GICD_ICFGR Int_config[1] == 1).
    pub edge: bool,
    /// Linked to physical interrupt `pintid` (list register HW == 1).
    pub hw: bool,
    /// A private interrupt driven by physical PPI `pintid` of the vCPU's own CPU, which the
    /// hypervisor takes at EL2 and leaves active (the EL1 timers): `line` follows it (see
    /// [`Irq::level_line`]). With `hw` the guest's deactivation also deactivates the physical
    /// one; without, the hypervisor does once the guest is done with it.
    pub phys: bool,
    /// With `phys`: the physical interrupt is active (taken, not yet deactivated).
    pub phys_active: bool,
    /// While resident: the LR's pending bit as last seen or written.
    pub lr_pending: bool,
    pub priority: u8,
    /// vCPU whose list register holds the interrupt, or [`NO_OWNER`].
    pub owner: u8,
    /// Pending MMIO requests for the owner (`REQ_*`).
    pub req: u8,
    /// Passthrough SPIs: changes of the physical interrupt's state the runtime has yet to
    /// make (`PHYS_*`), set by guest writes to GICD_I[SC]PENDR / GICD_I[SC]ACTIVER.
    pub phys_req: u8,
    /// GICv2 SGIs: pending source CPUs (GICD_SPENDSGIR), bit n = CPU n.
    pub sources: u8,
    /// GICv2 SGIs: source CPU of the instance in the LR (or of the active instance).
    pub src: u8,
    pub pintid: u16,
}

impl Irq {
    /// Reset state: disabled, Group 0, priority 0, inactive (the register reset values
    /// in IHI 0069H chapter 12 and IHI 0048B chapter 4). SGIs are edge-triggered; PPIs and SPIs reset level-sensitive.
    pub const fn reset(intid: u32) -> Self {
        Irq {
            enabled: false,
            latch: false,
            line: false,
            active: false,
            group1: false,
            edge: intid < 16,
            hw: false,
            phys: false,
            phys_active: false,
            lr_pending: false,
            priority: 0,
            owner: NO_OWNER,
            req: 0,
            phys_req: 0,
            sources: 0,
            src: 0,
            pintid: 0,
        }
    }

    /// Level-sensitive with its line modelled here: a software line (device models), or the
    /// line of a physical interrupt the hypervisor takes and holds active (`phys`: the timers),
    /// raised when it fires and lowered when sampled low or completed. Other HW-linked
    /// interrupts (passthrough SPIs) keep their level at the physical distributor and are
    /// latched once per injection instead.
    pub const fn level_line(&self) -> bool {
        !self.edge && (!self.hw || self.phys)
    }

    pub const fn resident(&self) -> bool {
        self.owner != NO_OWNER
    }

    /// Pending state that is not (yet) in a list register.
    pub const fn pending_outside(&self) -> bool {
        self.latch || (self.level_line() && self.line)
    }

    /// Pending as GICD_ISPENDR reads it.
    pub const fn pending_view(&self) -> bool {
        self.pending_outside()
            || (self.resident() && self.lr_pending && self.req & REQ_CLR_PEND == 0)
    }

    /// Active as GICD_ISACTIVER reads it.
    pub const fn active_view(&self) -> bool {
        if self.req & REQ_SET_ACT != 0 {
            true
        } else if self.req & REQ_CLR_ACT != 0 {
            false
        } else {
            self.active
        }
    }

    /// Folds the state a list register shows into the model. `before` is the state the LR
    /// held when last written or read, `now` the state it holds now. Returns true when the
    /// interrupt left the LR (state invalid).
    pub fn fold(&mut self, before: LrState, now: LrState) -> bool {
        let mut p = now.pending();
        let mut a = now.active();
        if self.req & REQ_CLR_PEND != 0 {
            p = false;
        }
        if self.req & REQ_CLR_ACT != 0 {
            a = false;
        }
        if self.req & REQ_SET_ACT != 0 {
            a = true;
        }
        self.req = 0;
        // A level-sensitive interrupt's latched pending state (from GICD_ISPENDR) is consumed
        // when the interrupt is acknowledged (IHI 0069H, "Interrupt handling state machine").
        if self.level_line() && before.pending() && !now.pending() {
            self.latch = false;
        }
        self.lr_pending = p;
        self.active = a;
        if !p && !a {
            self.owner = NO_OWNER;
            true
        } else {
            false
        }
    }

    /// Returns pending state taken out of an LR to the model (the LR is about to lose it).
    fn give_back(&mut self, v2_sgi: bool) {
        if v2_sgi {
            self.sources |= 1 << (self.src & 7);
            self.latch = true;
        } else if !self.level_line() {
            self.latch = true;
        }
        // Level-sensitive: the line (and its latch) still hold the pending state.
    }

    /// Moves pending state into the LR being built. `active` tells whether the LR is active:
    /// only edge-triggered, non-HW interrupts may be pending and active at once (a HW
    /// interrupt's next pending state lives at the physical distributor; a level-sensitive one
    /// is re-evaluated at deactivation through the EOI maintenance interrupt).
    fn take_pending(&mut self, v2_sgi: bool, active: bool) -> bool {
        if active && (self.hw || !self.edge) {
            return false;
        }
        if v2_sgi {
            let src = if active {
                self.src & 7
            } else if self.sources != 0 {
                self.sources.trailing_zeros() as u8
            } else {
                return false;
            };
            if self.sources & (1 << src) == 0 {
                return false;
            }
            self.sources &= !(1 << src);
            self.src = src;
            self.latch = self.sources != 0;
            true
        } else if self.level_line() {
            self.line || self.latch
        } else if self.latch {
            self.latch = false;
            true
        } else {
            false
        }
    }

    /// Evicts the interrupt from its LR (the LR is reused for something more urgent or
    /// cleared): its pending state goes back to the model.
    pub fn evict(&mut self, v2_sgi: bool) {
        if self.lr_pending {
            self.give_back(v2_sgi);
        }
        self.lr_pending = false;
        self.owner = NO_OWNER;
    }

    /// Computes what the list register holding this interrupt should contain, moving pending
    /// state between the model and the LR. `deliverable` says whether the distributor may
    /// forward it now (enabled, group enabled, redistributor awake). Returns `None` when
    /// the interrupt needs no LR (neither pending in it nor active); the caller then
    /// releases the LR or does not take one.
    #[inline(always)]
    pub fn desired_lr(&mut self, intid: u32, v2_sgi: bool, deliverable: bool) -> Option<LrValue> {
        let mut p = self.resident() && self.lr_pending;
        let a = self.active;
        if p && !deliverable {
            // Disabled (or its group disabled) while waiting in the LR: take it back.
            self.give_back(v2_sgi);
            p = false;
        }
        if p && self.level_line() && !self.line && !self.latch {
            // The line dropped before the guest acknowledged it.
            p = false;
        }
        if p {
            // A new edge while already pending merges with the pending state in the LR.
            if v2_sgi {
                self.sources &= !(1 << (self.src & 7));
                self.latch = self.sources != 0;
            } else if !self.level_line() {
                self.latch = false;
            }
        } else if deliverable {
            p = self.take_pending(v2_sgi, a);
        }
        self.lr_pending = p;
        if !p && !a {
            return None;
        }
        let more_sources = v2_sgi && self.sources != 0;
        Some(LrValue {
            intid,
            state: LrState::from_flags(p, a),
            priority: self.priority,
            group1: self.group1,
            hw: self.hw,
            pintid: if self.hw { u32::from(self.pintid) } else { 0 },
            eoi_maintenance: !self.hw && (self.level_line() || more_sources),
            source_cpu: if v2_sgi { self.src & 7 } else { 0 },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge() -> Irq {
        Irq {
            edge: true,
            enabled: true,
            ..Irq::reset(40)
        }
    }

    #[test]
    fn edge_latch_moves_into_the_lr_and_back_on_eviction() {
        let mut i = edge();
        i.latch = true;
        let v = i.desired_lr(40, false, true).unwrap();
        assert_eq!(v.state, LrState::Pending);
        assert!(!i.latch);
        assert!(!v.eoi_maintenance);
        i.owner = 0;
        i.evict(false);
        assert!(i.latch);
        assert!(!i.resident());
    }

    #[test]
    fn level_line_stays_the_source_of_truth() {
        let mut i = Irq {
            enabled: true,
            line: true,
            ..Irq::reset(40)
        };
        let v = i.desired_lr(40, false, true).unwrap();
        assert_eq!(v.state, LrState::Pending);
        assert!(
            v.eoi_maintenance,
            "level interrupts ask for EOI maintenance"
        );
        i.owner = 0;
        // Line drops before the guest acknowledges: the LR loses its pending state.
        i.line = false;
        assert_eq!(i.desired_lr(40, false, true), None);
    }

    #[test]
    fn level_latch_is_consumed_on_acknowledge_only() {
        let mut i = Irq {
            enabled: true,
            latch: true,
            owner: 0,
            lr_pending: true,
            ..Irq::reset(40)
        };
        assert!(!i.fold(LrState::Pending, LrState::Pending));
        assert!(i.latch);
        assert!(!i.fold(LrState::Pending, LrState::Active));
        assert!(!i.latch);
        // A new ISPENDR while active is not consumed by a fold that sees no acknowledge.
        i.latch = true;
        assert!(!i.fold(LrState::Active, LrState::Active));
        assert!(i.latch);
    }

    #[test]
    fn requests_override_the_lr_state_on_fold() {
        let mut i = edge();
        i.owner = 1;
        i.req = REQ_CLR_PEND | REQ_SET_ACT;
        assert!(!i.fold(LrState::Pending, LrState::Pending));
        assert!(i.active && !i.lr_pending && i.req == 0);
        i.req = REQ_CLR_ACT;
        assert!(
            i.fold(LrState::Active, LrState::Active),
            "nothing left: released"
        );
        assert_eq!(i.owner, NO_OWNER);
    }

    #[test]
    fn hw_and_level_never_go_pending_and_active() {
        let mut h = Irq {
            hw: true,
            pintid: 27,
            enabled: true,
            latch: true,
            active: true,
            owner: 0,
            ..Irq::reset(27)
        };
        let v = h.desired_lr(27, false, true).unwrap();
        assert_eq!(v.state, LrState::Active);
        assert!(h.latch, "the latch waits for deactivation");
        assert!(!v.eoi_maintenance && v.hw && v.pintid == 27);

        let mut e = edge();
        e.active = true;
        e.owner = 0;
        e.latch = true;
        assert_eq!(
            e.desired_lr(40, false, true).unwrap().state,
            LrState::PendingActive
        );
    }

    #[test]
    fn v2_sgi_sources_are_delivered_one_at_a_time() {
        let mut s = Irq {
            enabled: true,
            sources: 0b0110,
            latch: true,
            ..Irq::reset(3)
        };
        let v = s.desired_lr(3, true, true).unwrap();
        assert_eq!((v.source_cpu, v.state), (1, LrState::Pending));
        assert!(v.eoi_maintenance, "another source waits");
        assert_eq!(s.sources, 0b0100);
        s.owner = 0;
        // Acknowledged: active from CPU 1; CPU 2's instance cannot join this LR.
        s.fold(LrState::Pending, LrState::Active);
        let v = s.desired_lr(3, true, true).unwrap();
        assert_eq!((v.source_cpu, v.state), (1, LrState::Active));
        // Deactivated: the LR empties and CPU 2's instance comes next.
        assert!(s.fold(LrState::Active, LrState::Invalid));
        let v = s.desired_lr(3, true, true).unwrap();
        assert_eq!((v.source_cpu, v.state), (2, LrState::Pending));
        assert!(!v.eoi_maintenance);
        assert_eq!(s.sources, 0);
        assert!(!s.latch);
    }

    #[test]
    fn undeliverable_pending_is_taken_back_from_the_lr() {
        let mut i = edge();
        i.owner = 0;
        i.lr_pending = true;
        assert_eq!(i.desired_lr(40, false, false), None);
        assert!(i.latch, "pending state is kept in the model");
    }
}
