//! The per-vCPU half of the virtual GIC: which list registers hold which interrupts, and the
//! exit-path algorithm that keeps them in step with the distributor model.
//!
//! On every exit the lead calls [`Vgic::sync_from_lrs`] (early) and [`Vgic::flush_to_lrs`]
//! (last, before returning to the guest):
//!
//! - *sync* folds what the guest did to the LRs back into the model: an LR that became empty
//!   means the interrupt was acknowledged and deactivated (a level-sensitive interrupt whose
//!   line is still high is pending again); an LR still holding state has its pending/active
//!   bits copied back. With no LR in use it returns without touching the LRs or the lock.
//! - *flush* first checks the vCPU's "something to flush" flag (raised by whoever made an
//!   interrupt deliverable to this vCPU or changed one resident in its LRs); with the flag
//!   clear it costs one atomic load. Otherwise it reconciles the resident LRs with the model
//!   (retract what was disabled or cleared, merge new pending state), then fills free LRs
//!   with the highest-priority candidates, evicting a pending-only LR of strictly lower
//!   priority when none is free. When candidates remain, it enables the underflow
//!   maintenance interrupt (UIE) so the lead hears when the LRs drain, and keeps the flag
//!   raised.
//!
//! The model is the one in [`super::irq`]; the KVM vgic (`arch/arm64/kvm/vgic/vgic.c`, fold
//! and flush of the LR state) and Bao's vGIC (LR spilling) were read for the approach.
#![forbid(unsafe_code)]

use core::sync::atomic::Ordering;

use super::dist::{Dist, bit};
use super::irq::{Irq, NO_OWNER};
use super::lr::{ListRegisters, LrState, LrValue};
use super::{MAX_LRS, VcpuMask, Vgic};

/// What one vCPU's list registers hold. Owned by the vCPU (kept in its per-CPU context) and
/// only touched on its own physical CPU, so it needs no lock.
#[derive(Debug)]
pub struct VgicCpu {
    vcpu: usize,
    /// LRs that hold an interrupt, bit n = LR n.
    used: u64,
    /// Last known content of each LR (what we wrote, with the state updated by `sync`).
    lrs: [LrValue; MAX_LRS],
    /// Private interrupts (bit n = INTID n) driven by a physical PPI that is active: taken by
    /// the hypervisor and not yet deactivated (see `Irq::phys`). While any is, every exit
    /// samples its line and gives the physical interrupt back once the guest is done with it.
    held: u32,
    /// Whether UIE is currently set.
    uie: bool,
    /// `sync_from_lrs` ran since the last `flush_to_lrs`.
    synced: bool,
    /// Scratch space of `flush_to_lrs` (kept here so that a flush does not clear it).
    best: TopK,
    /// LRs that the last fold filled again with the interrupt that had just left them (see
    /// `rearm`): counted as injections, and not reconciled again by a flush under the same
    /// lock.
    rearmed: u64,
}

impl VgicCpu {
    pub(crate) fn new(vcpu: usize) -> Self {
        VgicCpu {
            vcpu,
            used: 0,
            lrs: [LrValue::default(); MAX_LRS],
            held: 0,
            uie: false,
            synced: false,
            best: TopK::new(),
            rearmed: 0,
        }
    }
    pub fn vcpu(&self) -> usize {
        self.vcpu
    }
    /// LRs currently holding an interrupt (bit n = LR n).
    pub fn used_lrs(&self) -> u64 {
        self.used
    }
    /// Whether the underflow maintenance interrupt is enabled.
    pub fn underflow_enabled(&self) -> bool {
        self.uie
    }
    /// Private interrupts whose physical PPI is held active (bit n = INTID n).
    pub fn held_physical(&self) -> u32 {
        self.held
    }
}

/// Sort key of a candidate: active first, then priority, then INTID (lower is better).
fn key(irq: &Irq, intid: u32) -> u32 {
    (u32::from(!irq.active) << 18) | (u32::from(irq.priority) << 10) | (intid & 0x3ff)
}

/// The part of the key that decides whether one interrupt may displace another.
fn rank(key: u32) -> u32 {
    key >> 10
}

/// Most interrupts one flush places: more than any GIC implementation we know of has LRs
/// (GIC-400 and QEMU: 4; GICv3 at most 16); with more LRs, the rest follow on the underflow
/// maintenance interrupt. Keeps the candidate array small (it is built on every busy flush).
const MAX_PLACED: usize = 16;

/// The best `cap` candidates, sorted by key.
#[derive(Debug)]
struct TopK {
    keys: [u32; MAX_PLACED],
    len: usize,
    cap: usize,
}

impl TopK {
    const fn new() -> Self {
        TopK {
            keys: [0; MAX_PLACED],
            len: 0,
            cap: 0,
        }
    }
    /// Empties it for up to `cap` candidates (the keys beyond `len` are never read).
    fn reset(&mut self, cap: usize) {
        self.len = 0;
        self.cap = cap.min(MAX_PLACED);
    }
    fn insert(&mut self, key: u32) {
        if self.cap == 0 || (self.len == self.cap && key >= self.keys[self.len - 1]) {
            return;
        }
        let mut i = if self.len < self.cap {
            self.len += 1;
            self.len - 1
        } else {
            self.cap - 1
        };
        while i > 0 && self.keys[i - 1] > key {
            self.keys[i] = self.keys[i - 1];
            i -= 1;
        }
        self.keys[i] = key;
    }
    fn get(&self, i: usize) -> Option<u32> {
        self.keys[..self.len].get(i).copied()
    }
}

fn bits(mut m: u64) -> impl Iterator<Item = usize> {
    core::iter::from_fn(move || {
        if m == 0 {
            None
        } else {
            let i = m.trailing_zeros() as usize;
            m &= m - 1;
            Some(i)
        }
    })
}

impl Vgic {
    /// Creates the LR bookkeeping for `vcpu`; the lead keeps it in the vCPU's context and
    /// passes it to the exit-path calls.
    pub fn new_cpu(&self, vcpu: usize) -> Result<VgicCpu, super::VgicError> {
        if vcpu >= self.nr_vcpus {
            return Err(super::VgicError::BadVcpu);
        }
        Ok(VgicCpu::new(vcpu))
    }

    /// Exit path, early: folds the list registers back into the model. Without any LR in
    /// use it touches neither the LRs nor the lock. Returns other vCPUs to kick (rarely
    /// non-zero: an SPI that left this vCPU's LR still pending but now routed elsewhere).
    #[inline(always)]
    pub fn sync_from_lrs<L: ListRegisters + ?Sized>(
        &self,
        cpu: &mut VgicCpu,
        lrs: &mut L,
    ) -> VcpuMask {
        cpu.synced = true;
        if cpu.used == 0 && cpu.held == 0 {
            return 0;
        }
        self.sync_busy(cpu, lrs)
    }

    fn sync_busy<L: ListRegisters + ?Sized>(&self, cpu: &mut VgicCpu, lrs: &mut L) -> VcpuMask {
        let mut d = self.lock();
        let kick = fold_lrs(&mut d, cpu, lrs);
        drop(d);
        self.count_rearmed(cpu);
        self.raise(kick);
        kick & !bit(cpu.vcpu)
    }

    fn count_rearmed(&self, cpu: &mut VgicCpu) {
        if cpu.rearmed != 0 {
            self.stats
                .injections
                .fetch_add(u64::from(cpu.rearmed.count_ones()), Ordering::Relaxed);
            cpu.rearmed = 0;
        }
    }

    /// Physical PPI behind private interrupt `intid` of this vCPU fired (the hypervisor took it
    /// at EL2 on this vCPU's CPU and left it active): its line is high. For interrupts set up
    /// with [`Vgic::map_phys_ppi`]; the vGIC deactivates the physical interrupt through
    /// [`ListRegisters::deactivate`] once the guest is done with it or its line was sampled
    /// low before the guest took it. Folds the LRs first if this exit has not (an LR the guest
    /// emptied must not be mistaken for the new activation). Returns the vCPUs to kick.
    pub fn phys_fired<L: ListRegisters + ?Sized>(
        &self,
        cpu: &mut VgicCpu,
        lrs: &mut L,
        intid: u32,
    ) -> Result<VcpuMask, super::VgicError> {
        if !(16..32).contains(&intid) {
            return Err(super::VgicError::BadIntid);
        }
        let mut kick = 0;
        if !cpu.synced {
            kick |= self.sync_from_lrs(cpu, lrs);
        }
        let (phys, k) = self.with_dist_hinted(|d| match d.phys_fired(cpu.vcpu, intid) {
            Some(k) => (true, k),
            None => (false, 0),
        });
        if !phys {
            return Err(super::VgicError::BadIntid);
        }
        cpu.held |= 1 << intid;
        Ok(kick | k)
    }

    /// Exit path, last step before returning to the guest: brings the list registers up to
    /// date with the model. Costs one atomic load when nothing is in flight for this vCPU.
    /// Runs [`Vgic::sync_from_lrs`] first if it was not called on this exit. Returns other
    /// vCPUs to kick (rarely non-zero).
    #[inline(always)]
    pub fn flush_to_lrs<L: ListRegisters + ?Sized>(
        &self,
        cpu: &mut VgicCpu,
        lrs: &mut L,
    ) -> VcpuMask {
        let fold = !cpu.synced && (cpu.used != 0 || cpu.held != 0);
        cpu.synced = false;
        let flagged = self
            .work
            .get(cpu.vcpu)
            .is_some_and(|f| f.0.load(Ordering::Acquire));
        if fold || flagged {
            self.flush_busy(cpu, lrs, fold)
        } else {
            0
        }
    }

    fn flush_busy<L: ListRegisters + ?Sized>(
        &self,
        cpu: &mut VgicCpu,
        lrs: &mut L,
        fold: bool,
    ) -> VcpuMask {
        let v = cpu.vcpu;
        let Some(flag) = self.work.get(v) else {
            return 0;
        };
        let mut d = self.lock();
        let mut kick = 0;
        // LRs filled under this lock: nothing can have changed for them since.
        let mut fresh = 0;
        if fold {
            // Not synced on this exit: fold under the same lock.
            kick = fold_lrs(&mut d, cpu, lrs);
            cpu.synced = false;
            fresh = cpu.rearmed;
        }
        if !flag.0.load(Ordering::Acquire) && kick & bit(v) == 0 {
            drop(d);
            self.count_rearmed(cpu);
            self.raise(kick);
            return kick;
        }
        flag.0.store(false, Ordering::Release);
        kick &= !bit(v);

        if cpu.used & !fresh == 0
            && cpu.held == 0
            && d.hint_summary(v) == 0
            && !d.rescan_requested(v)
        {
            // Nothing resident to look at and nothing hinted (the fold may have done it all).
            drop(d);
            self.count_rearmed(cpu);
            if cpu.uie {
                lrs.set_underflow_irq(false);
                cpu.uie = false;
            }
            self.raise(kick);
            return kick;
        }

        let fmt = lrs.format();
        let n = lrs.count().min(MAX_LRS);

        // 1. Reconcile the LRs that already hold an interrupt.
        for i in bits(cpu.used & !fresh) {
            let cur = cpu.lrs[i];
            let want = reconcile(&mut d, v, &cur);
            match want {
                Some(val) if val != cur => {
                    lrs.write(i, fmt.encode(&val));
                    cpu.lrs[i] = val;
                }
                Some(_) => {}
                None => {
                    lrs.write(i, 0);
                    cpu.lrs[i] = LrValue::default();
                    cpu.used &= !(1 << i);
                    kick |= d.notify(v, cur.intid);
                }
            }
        }

        if cpu.held != 0 {
            kick |= settle_physical(&mut d, cpu, lrs, false);
        }

        // 2. Candidates: not in any LR, and active or deliverable-pending, for this vCPU. Only
        //    the interrupts hinted for this vCPU are looked at (every interrupt after register
        //    writes); a hint that turns out stale is dropped. While free LRs last, a hinted
        //    candidate goes straight into one (the order matters only once they run out: then
        //    the rest are ranked, and may displace what was placed here).
        cpu.best.reset(n);
        let all_lrs = if n >= 64 { u64::MAX } else { (1u64 << n) - 1 };
        let mut total = 0usize;
        let mut placed = 0usize;
        let wants = |intid: u32, irq: &Irq, d: &Dist| {
            !irq.resident()
                && (irq.active || (irq.pending_outside() && d.deliverable(irq, v)))
                && d.targets_vcpu(intid, v)
        };
        if d.take_rescan(v) {
            let mut consider = |intid: u32, irq: &Irq, d: &Dist| {
                if wants(intid, irq, d) {
                    d.set_hint(v, intid);
                    total += 1;
                    cpu.best.insert(key(irq, intid));
                } else {
                    d.clear_hint(v, intid);
                }
            };
            if let Some(bank) = d.privates(v) {
                for (intid, irq) in bank.iter().enumerate() {
                    consider(intid as u32, irq, &d);
                }
            }
            for (intid, irq) in d.spis() {
                consider(intid, irq, &d);
            }
        } else {
            let mut words = d.hint_summary(v);
            while words != 0 {
                let w = words.trailing_zeros() as usize;
                words &= words - 1;
                let mut m = d.hint_word(v, w);
                while m != 0 {
                    let intid = (w * 64) as u32 + m.trailing_zeros();
                    m &= m - 1;
                    match d.irq(v, intid) {
                        Some(irq) if wants(intid, irq, &d) => {
                            total += 1;
                            let free = all_lrs & !cpu.used;
                            if free == 0 || cpu.best.len != 0 {
                                cpu.best.insert(key(irq, intid));
                            } else {
                                let deliverable = d.deliverable(irq, v);
                                let slot = free.trailing_zeros() as usize;
                                if place(&mut d, cpu, lrs, intid, deliverable, slot) {
                                    placed += 1;
                                }
                            }
                        }
                        _ => d.clear_hint(v, intid),
                    }
                }
            }
        }

        // 3. Place the ranked ones: free LRs first, then displace a pending-only LR of lower
        //    priority.
        let mut next = 0;
        while let Some(k) = cpu.best.get(next) {
            next += 1;
            let intid = k & 0x3ff;
            let free = all_lrs & !cpu.used;
            let slot = if free != 0 {
                free.trailing_zeros() as usize
            } else {
                match victim(cpu, k) {
                    Some(i) => {
                        let old = cpu.lrs[i].intid;
                        cpu.used &= !(1 << i);
                        cpu.lrs[i] = LrValue::default();
                        // The evicted interrupt now waits outside like the others; an SPI
                        // rerouted while it sat here is its new target's to take.
                        kick |= d.evict(v, old, false);
                        if d.targets_vcpu(old, v) {
                            d.set_hint(v, old);
                            total += 1;
                        }
                        i
                    }
                    None => break,
                }
            };
            let deliverable = d.irq(v, intid).is_some_and(|irq| d.deliverable(irq, v));
            if place(&mut d, cpu, lrs, intid, deliverable, slot) {
                placed += 1;
            }
        }
        drop(d);

        self.count_rearmed(cpu);
        if placed != 0 {
            self.stats
                .injections
                .fetch_add(placed as u64, Ordering::Relaxed);
        }
        let overflow = total > placed;
        if overflow {
            self.stats.lr_overflows.fetch_add(1, Ordering::Relaxed);
            // Try again on the next exit; UIE makes sure there is one when the LRs drain.
            flag.0.store(true, Ordering::Release);
        }
        if overflow != cpu.uie {
            lrs.set_underflow_irq(overflow);
            cpu.uie = overflow;
        }
        self.raise(kick & !bit(v));
        kick & !bit(v)
    }

    /// The lead took the maintenance interrupt (ICH_MISR_EL2 / GICH_MISR non-zero) on this
    /// vCPU's CPU: folds and refills the LRs, which clears the condition (EOI status, UIE).
    pub fn handle_maintenance<L: ListRegisters + ?Sized>(
        &self,
        cpu: &mut VgicCpu,
        lrs: &mut L,
    ) -> VcpuMask {
        self.stats.maintenance_irqs.fetch_add(1, Ordering::Relaxed);
        if let Some(flag) = self.work.get(cpu.vcpu) {
            flag.0.store(true, Ordering::Release);
        }
        let kick = self.sync_from_lrs(cpu, lrs);
        kick | self.flush_to_lrs(cpu, lrs)
    }

    /// The vCPU is reset (PSCI CPU_ON after CPU_OFF, system reset): every LR is cleared, the
    /// pending state they held returns to the model (an SPI to whichever target may take it
    /// now), their active state is dropped, UIE off. Returns the other vCPUs to kick.
    pub fn reset_cpu<L: ListRegisters + ?Sized>(&self, cpu: &mut VgicCpu, lrs: &mut L) -> VcpuMask {
        // Fold first so that what the guest already acknowledged is not pended again.
        let mut kick = self.sync_from_lrs(cpu, lrs);
        let mut d = self.lock();
        for i in bits(cpu.used) {
            kick |= d.evict(cpu.vcpu, cpu.lrs[i].intid, true);
        }
        d.request_rescan(bit(cpu.vcpu));
        d.online |= bit(cpu.vcpu);
        drop(d);
        self.raise(kick);
        for i in 0..lrs.count().min(MAX_LRS) {
            lrs.write(i, 0);
        }
        lrs.set_underflow_irq(false);
        *cpu = VgicCpu::new(cpu.vcpu);
        if let Some(flag) = self.work.get(cpu.vcpu) {
            flag.0.store(true, Ordering::Release);
        }
        kick & !bit(cpu.vcpu)
    }

    /// The vCPU stops (PSCI CPU_OFF, or its VM ends) and its CPU leaves the guest: everything
    /// its LRs held goes back to the model (pending state kept, SPIs offered to their other
    /// targets, active state dropped), the physical interrupts it held or had acknowledged
    /// through a HW-linked LR are deactivated (its timers stop with it), and it no longer
    /// takes 1-of-N SPIs until [`Vgic::reset_cpu`]. The LRs are cleared and UIE is off.
    /// Returns the other vCPUs to kick.
    pub fn vcpu_off<L: ListRegisters + ?Sized>(&self, cpu: &mut VgicCpu, lrs: &mut L) -> VcpuMask {
        let v = cpu.vcpu;
        let mut kick = self.sync_from_lrs(cpu, lrs);
        let mut d = self.lock();
        for i in bits(cpu.used) {
            let intid = cpu.lrs[i].intid;
            if let Some(irq) = d.irq(v, intid)
                && irq.hw
                && !irq.phys
                && irq.active
            {
                // Acknowledged by the guest on this vCPU, which will never deactivate it.
                lrs.deactivate(u32::from(irq.pintid));
            }
            kick |= d.evict(v, intid, true);
        }
        for intid in bits(u64::from(cpu.held)) {
            if let Some(irq) = d.irq_mut(v, intid as u32) {
                irq.line = false;
                if irq.phys_active {
                    irq.phys_active = false;
                    lrs.deactivate(u32::from(irq.pintid));
                }
            }
        }
        kick |= d.set_offline(v);
        drop(d);
        self.raise(kick);
        for i in 0..lrs.count().min(MAX_LRS) {
            lrs.write(i, 0);
        }
        lrs.set_underflow_irq(false);
        *cpu = VgicCpu::new(v);
        kick & !bit(v)
    }
}

/// For each private interrupt whose physical PPI this vCPU holds active: with `sample`, reads
/// its line when that can still change what the guest sees (not while the guest has it
/// active) and lowers the model's line when it dropped; then deactivates the physical
/// interrupt once no LR holds the virtual one and nothing is pending. Returns vCPUs to kick
/// (this one, when a pending LR must be taken back by the flush).
fn settle_physical<L: ListRegisters + ?Sized>(
    d: &mut Dist,
    cpu: &mut VgicCpu,
    lrs: &mut L,
    sample: bool,
) -> VcpuMask {
    let v = cpu.vcpu;
    let mut kick = 0;
    for intid in bits(u64::from(cpu.held)) {
        let Some(irq) = d.irq_mut(v, intid as u32) else {
            cpu.held &= !(1 << intid);
            continue;
        };
        if !irq.phys_active {
            cpu.held &= !(1 << intid);
            continue;
        }
        if sample
            && irq.line
            && !(irq.resident() && irq.active)
            && !lrs.line_level(u32::from(irq.pintid))
        {
            // Disabled, masked or reprogrammed before the guest took it: no longer pending.
            irq.line = false;
            if irq.resident() {
                kick |= bit(v);
            }
        }
        if !irq.resident() && !irq.pending_outside() {
            lrs.deactivate(u32::from(irq.pintid));
            irq.phys_active = false;
            cpu.held &= !(1 << intid);
        }
    }
    kick
}

/// Folds the LRs of `cpu` into the model (the lock held): what `sync_from_lrs` does. Returns
/// the vCPUs with something new, this one included.
fn fold_lrs<L: ListRegisters + ?Sized>(d: &mut Dist, cpu: &mut VgicCpu, lrs: &mut L) -> VcpuMask {
    cpu.synced = true;
    let mut kick = 0;
    let (elrsr, eisr) = if cpu.used != 0 {
        (lrs.empty_mask(), lrs.eoi_mask())
    } else {
        (0, 0)
    };
    for i in bits(cpu.used) {
        let before = cpu.lrs[i].state;
        let emptied = (elrsr | eisr) & (1 << i) != 0;
        let now = if emptied {
            LrState::Invalid
        } else {
            lrs.format().decode(lrs.read(i)).state
        };
        cpu.lrs[i].state = now;
        let intid = cpu.lrs[i].intid;
        let (left, again) = match d.irq_mut(cpu.vcpu, intid) {
            Some(irq) => {
                if emptied && irq.hw && irq.phys {
                    // The guest's deactivation deactivated the physical interrupt.
                    irq.phys_active = false;
                }
                let left = irq.fold(before, now);
                if left && irq.phys {
                    // Done with: if the physical line is still high it fires again.
                    irq.line = false;
                }
                (left, irq.pending_outside() || irq.active)
            }
            None => {
                debug_assert!(false, "LR {i} holds unknown INTID {intid}");
                (true, false)
            }
        };
        if left {
            // (cpu.lrs[i] is read only while bit i of `used` is set.)
            cpu.used &= !(1 << i);
            if elrsr & (1 << i) == 0 {
                // Clears ICH_EISR_EL2 / GICH_EISR, and with it the maintenance interrupt.
                lrs.write(i, 0);
            }
            if intid >= 32 {
                // It may go to another target now.
                kick |= d.notify(cpu.vcpu, intid);
            } else if again {
                // Pending again (a new SGI, a level line still high): straight back into the
                // LR it just left when it may be delivered (pending only, so a more urgent
                // interrupt can still displace it), else this vCPU's flush looks at it.
                if !rearm(d, cpu, lrs, i, intid) {
                    d.set_hint(cpu.vcpu, intid);
                    kick |= bit(cpu.vcpu);
                }
            }
        }
    }
    if cpu.held != 0 {
        kick |= settle_physical(d, cpu, lrs, true);
    }
    kick
}

/// Puts `intid` into LR `slot` of `cpu` (free, or just emptied); false when it turns out to
/// need none. `deliverable`: whether the distributor may forward it to this vCPU now.
#[inline(always)]
fn place<L: ListRegisters + ?Sized>(
    d: &mut Dist,
    cpu: &mut VgicCpu,
    lrs: &mut L,
    intid: u32,
    deliverable: bool,
    slot: usize,
) -> bool {
    let v = cpu.vcpu;
    let v2 = d.is_v2_sgi(intid);
    let Some(irq) = d.irq_mut(v, intid) else {
        return false;
    };
    let Some(val) = irq.desired_lr(intid, v2, deliverable) else {
        return false;
    };
    irq.owner = v as u8;
    d.clear_hint(v, intid);
    lrs.write(slot, lrs.format().encode(&val));
    cpu.lrs[slot] = val;
    cpu.used |= 1 << slot;
    true
}

/// Puts private interrupt `intid`, which just left LR `i` and is pending again, back into it
/// if the distributor may forward it now; records it in `cpu.rearmed`. False when it was not.
fn rearm<L: ListRegisters + ?Sized>(
    d: &mut Dist,
    cpu: &mut VgicCpu,
    lrs: &mut L,
    i: usize,
    intid: u32,
) -> bool {
    let v = cpu.vcpu;
    let deliverable = d.irq(v, intid).is_some_and(|irq| d.deliverable(irq, v));
    if !deliverable || !place(d, cpu, lrs, intid, true, i) {
        return false;
    }
    cpu.rearmed |= 1 << i;
    true
}

/// What LR `cur` (held by `vcpu`) should contain now; `None` releases it.
fn reconcile(d: &mut Dist, vcpu: usize, cur: &LrValue) -> Option<LrValue> {
    let intid = cur.intid;
    let v2 = d.is_v2_sgi(intid);
    let deliverable = d
        .irq(vcpu, intid)
        .is_some_and(|irq| d.deliverable(irq, vcpu));
    let irq = d.irq_mut(vcpu, intid)?;
    // Apply MMIO requests made since the last fold (the LR state is current: the guest has
    // not run since `sync`).
    if irq.fold(cur.state, cur.state) {
        return None;
    }
    let want = irq.desired_lr(intid, v2, deliverable);
    if want.is_none() {
        irq.owner = NO_OWNER;
        irq.lr_pending = false;
    }
    want
}

/// A resident LR that candidate `k` may displace: pending only (never active) and of strictly
/// lower rank (its LR priority is numerically higher); the lowest-ranked such LR.
fn victim(cpu: &VgicCpu, k: u32) -> Option<usize> {
    let mut worst: Option<(u32, usize)> = None;
    for i in bits(cpu.used) {
        let lr = &cpu.lrs[i];
        if lr.state != LrState::Pending {
            continue;
        }
        // Same layout as `rank(key(..))` for a pending, inactive interrupt.
        let r = (1 << 8) | u32::from(lr.priority);
        if r > rank(k) && worst.is_none_or(|(w, _)| r > w) {
            worst = Some((r, i));
        }
    }
    worst.map(|(_, i)| i)
}
