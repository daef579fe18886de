//! The virtual GIC (GICv3 and GICv2) as pure logic: the per-VM interrupt state, the inputs
//! the hypervisor feeds it (device lines, PPIs, SGIs, hardware-linked interrupts) and the
//! list-register algorithm that hands interrupts to the hardware virtual CPU interface.
//!
//! # What this module owns
//!
//! - [`Vgic`]: one per VM. The distributor state (per-interrupt enable / pending / active /
//!   priority / group / trigger / routing, plus which vCPU's list register holds it) sits
//!   behind one `spin::Mutex`. Per-vCPU "something to flush" flags sit outside the lock.
//! - [`VgicCpu`]: one per vCPU, owned by the vCPU (no lock): which interrupt each of its list
//!   registers holds.
//! - [`lr`]: [`LrValue`], the GICv3 `ICH_LR<n>_EL2` and GICv2 `GICH_LR<n>` encodings, and the
//!   [`ListRegisters`] trait the arch layer implements.
//! - The register semantics of the emulated distributors and redistributors (used by
//!   `src/vdev/gicv3_dist.rs`, `gicv3_redist.rs` and `gicv2_dist.rs`, which only decode
//!   offsets and widths).
//!
//! It never touches hardware: list registers and the maintenance-interrupt enable are reached
//! through [`ListRegisters`]; kicking another vCPU is the caller's job (every input returns the
//! [`VcpuMask`] of vCPUs to kick).
//!
//! # Exit-path contract (per vCPU, on its own physical CPU)
//!
//! 1. Early in a trap: [`Vgic::sync_from_lrs`] (no-op without LRs in use or a physical PPI
//!    held). A physical interrupt may skip it: [`Vgic::phys_fired`] and the final flush fold
//!    first when needed.
//! 2. Handle the exit; inputs ([`Vgic::phys_fired`], [`Vgic::inject_ppi`],
//!    [`Vgic::set_spi_level`], [`Vgic::send_sgi_v3`], MMIO) return vCPUs to kick; kick the
//!    others, not yourself ([`others`]).
//! 3. Last, before `eret`: [`Vgic::flush_to_lrs`] (one atomic load when nothing is in flight).
//! 4. On the maintenance interrupt: [`Vgic::handle_maintenance`], before the physical
//!    interrupt is deactivated.
//! 5. A vCPU that stops: [`Vgic::vcpu_off`] while its LRs are still readable; one that starts:
//!    [`Vgic::reset_cpu`].
//!
//! Design notes and limits: `docs/vgic.md`.
#![forbid(unsafe_code)]

mod cpu;
pub(crate) mod dist;
mod irq;
pub mod lr;
pub(crate) mod regs;
pub mod sgi;

#[cfg(test)]
pub(crate) mod fake;
#[cfg(test)]
mod tests;

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub use cpu::VgicCpu;

/// What the physical interrupt linked to a passthrough SPI must do after the guest wrote the
/// virtual one's pending or active state (GICD_I[SC]PENDR, GICD_I[SC]ACTIVER), so that the
/// guest's view keeps matching the line, as KVM does (`vgic_hw_irq_cpending`,
/// `vgic_hw_irq_change_active` in arch/arm64/kvm/vgic/vgic-mmio.c).
///
/// The physical interrupt of a passthrough SPI is active from the moment EL2 takes it until
/// the guest deactivates the virtual one through its HW-linked list register (IHI 0069H
/// ICH_LR<n>_EL2.HW; IHI 0048B GICH_LR<n>.HW), which deactivates the physical one too. So:
/// - ISPENDR: the virtual one becomes pending and will sit in an LR with HW = 1 whose
///   deactivation deactivates `pINTID`: the physical one is made active to match (and is not
///   taken again meanwhile: the injected interrupt stands for the device's).
/// - ICPENDR: the physical pending state is cleared (an edge latched there is dropped with
///   the virtual one) and, unless the virtual one stays active, the physical one is
///   deactivated: it would otherwise stay active for good (no LR will ever deactivate it) and
///   never fire again. A level device that still asserts its line makes it pending again at
///   once, so the guest sees it pending again when the hypervisor has taken it.
/// - ISACTIVER / ICACTIVER: the physical active state follows the virtual one; after a
///   deactivation by ICACTIVER nothing else would ever deactivate the physical one.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PhysSpiChange {
    /// Clear the physical interrupt's pending state (GICD_ICPENDR).
    pub clear_pending: bool,
    /// Set (`Some(true)`, GICD_ISACTIVER) or clear (`Some(false)`, GICD_ICACTIVER) its active
    /// state. Applied after `clear_pending`.
    pub active: Option<bool>,
}
pub use lr::{
    ListRegisters, LrFormat, LrState, LrValue, decode_v2, decode_v3, encode_v2, encode_v3,
};
pub use sgi::{Affinity, SgiRegister};

use dist::{Dist, bit};

/// vCPUs as a bitmap, bit n = vCPU n of the VM.
pub type VcpuMask = u64;

/// The vCPUs of `mask` other than `me`; `me` may be out of range (`usize::MAX` when the caller
/// is no vCPU of this VM, such as the idle loop), which excludes nobody.
pub const fn others(mask: VcpuMask, me: usize) -> VcpuMask {
    mask & !bit(me)
}

/// Most vCPUs a GICv3 VM can have here (one bit each in [`VcpuMask`]).
pub const MAX_VCPUS_V3: usize = 64;
/// GICv2 has eight CPU interfaces (IHI 0048B).
pub const MAX_VCPUS_V2: usize = 8;
/// SPIs use INTIDs 32..=1019 (IHI 0069H, "INTIDs").
pub const MAX_SPIS: u32 = 988;
/// Most list registers handled: GICv2 allows 64 (GICH_VTR.ListRegs), GICv3 16.
pub const MAX_LRS: usize = 64;
/// The PPI of the EL1 virtual timer (Arm BSA / Server Base System Architecture: INTID 27).
pub const VTIMER_PPI: u32 = 27;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum GicVersion {
    V2,
    V3,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum VgicError {
    /// No vCPUs, or more than the version supports ([`MAX_VCPUS_V3`], [`MAX_VCPUS_V2`]).
    BadVcpuCount,
    /// More than [`MAX_SPIS`] SPIs.
    TooManySpis,
    /// Two vCPUs have the same MPIDR affinity: SGIs and routing could not tell them apart.
    DuplicateMpidr,
    /// vCPU index out of range.
    BadVcpu,
    /// INTID of the wrong kind for the call (a PPI expected, an SPI expected, an SGI can not
    /// be HW-mapped...) or not implemented in this VM.
    BadIntid,
}

/// Counters for statistics (monotonic, relaxed).
#[derive(Default, Debug)]
pub struct VgicStats {
    /// Interrupts placed into a list register.
    pub injections: AtomicU64,
    /// Flushes that found more candidates than list registers.
    pub lr_overflows: AtomicU64,
    /// Maintenance interrupts handled.
    pub maintenance_irqs: AtomicU64,
}

/// A snapshot of [`VgicStats`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct VgicStatsSnapshot {
    pub injections: u64,
    pub lr_overflows: u64,
    pub maintenance_irqs: u64,
}

/// A per-vCPU flag on its own cache line: raised by anyone who gives the vCPU something to
/// flush, cleared by the vCPU's flush.
#[repr(align(64))]
#[derive(Default, Debug)]
struct WorkFlag(AtomicBool);

/// The virtual GIC of one VM.
pub struct Vgic {
    version: GicVersion,
    nr_vcpus: usize,
    nr_irqs: u32,
    mpidrs: Vec<u64>,
    dist: spin::Mutex<Dist>,
    work: Vec<WorkFlag>,
    stats: VgicStats,
    #[cfg(test)]
    locks: AtomicU64,
}

impl core::fmt::Debug for Vgic {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Vgic")
            .field("version", &self.version)
            .field("nr_vcpus", &self.nr_vcpus)
            .field("nr_irqs", &self.nr_irqs)
            .finish_non_exhaustive()
    }
}

/// Number of INTIDs (SGIs + PPIs + SPIs) for `nr_spis` SPIs: SPIs come in blocks of 32
/// (GICD_TYPER.ITLinesNumber), capped at INTID 1019.
fn nr_irqs_for(nr_spis: u32) -> Result<u32, VgicError> {
    if nr_spis > MAX_SPIS {
        return Err(VgicError::TooManySpis);
    }
    Ok((32 + nr_spis.div_ceil(32) * 32).min(1020))
}

impl Vgic {
    /// A GICv3 VM whose vCPU n has MPIDR_EL1 value `mpidrs[n]` (only the affinity fields
    /// matter), with `nr_spis` SPIs (INTIDs 32..; rounded up to a multiple of 32).
    pub fn new_v3(mpidrs: &[u64], nr_spis: u32) -> Result<Self, VgicError> {
        if mpidrs.is_empty() || mpidrs.len() > MAX_VCPUS_V3 {
            return Err(VgicError::BadVcpuCount);
        }
        for (i, a) in mpidrs.iter().enumerate() {
            if mpidrs[..i].iter().any(|b| (a ^ b) & Affinity::MASK == 0) {
                return Err(VgicError::DuplicateMpidr);
            }
        }
        Self::build(GicVersion::V3, mpidrs.to_vec(), nr_spis)
    }

    /// A GICv2 VM with `nr_vcpus` CPU interfaces (vCPU n is CPU interface n) and `nr_spis`
    /// SPIs.
    pub fn new_v2(nr_vcpus: usize, nr_spis: u32) -> Result<Self, VgicError> {
        if nr_vcpus == 0 || nr_vcpus > MAX_VCPUS_V2 {
            return Err(VgicError::BadVcpuCount);
        }
        // vCPU n's MPIDR as the usual Aff0 = n numbering; only used for GICR-less lookups.
        Self::build(GicVersion::V2, (0..nr_vcpus as u64).collect(), nr_spis)
    }

    fn build(version: GicVersion, mpidrs: Vec<u64>, nr_spis: u32) -> Result<Self, VgicError> {
        let nr_irqs = nr_irqs_for(nr_spis)?;
        let nr_vcpus = mpidrs.len();
        Ok(Vgic {
            version,
            nr_vcpus,
            nr_irqs,
            dist: spin::Mutex::new(Dist::new(version, &mpidrs, nr_irqs)),
            mpidrs,
            work: (0..nr_vcpus).map(|_| WorkFlag::default()).collect(),
            stats: VgicStats::default(),
            #[cfg(test)]
            locks: AtomicU64::new(0),
        })
    }

    pub fn version(&self) -> GicVersion {
        self.version
    }
    pub fn nr_vcpus(&self) -> usize {
        self.nr_vcpus
    }
    /// 32 + number of SPIs (INTIDs below it exist).
    pub fn nr_irqs(&self) -> u32 {
        self.nr_irqs
    }
    /// MPIDR_EL1 of vCPU `vcpu` as given to [`Vgic::new_v3`].
    pub fn mpidr(&self, vcpu: usize) -> Option<u64> {
        self.mpidrs.get(vcpu).copied()
    }

    pub fn stats(&self) -> VgicStatsSnapshot {
        VgicStatsSnapshot {
            injections: self.stats.injections.load(Ordering::Relaxed),
            lr_overflows: self.stats.lr_overflows.load(Ordering::Relaxed),
            maintenance_irqs: self.stats.maintenance_irqs.load(Ordering::Relaxed),
        }
    }

    fn lock(&self) -> spin::MutexGuard<'_, Dist> {
        #[cfg(test)]
        self.locks.fetch_add(1, Ordering::Relaxed);
        self.dist.lock()
    }

    /// Raises the flush flag of every vCPU in `mask`.
    fn raise(&self, mask: VcpuMask) {
        let mut m = mask;
        while m != 0 {
            let v = m.trailing_zeros() as usize;
            m &= m - 1;
            if let Some(f) = self.work.get(v) {
                f.0.store(true, Ordering::Release);
            }
        }
    }

    /// Runs `f` on the distributor state under the lock; raises the flags of the vCPUs `f`
    /// returns and passes them on as the vCPUs to kick. For the MMIO devices and the injection
    /// paths. Every change to one interrupt goes through `Dist::notify`, which leaves a precise
    /// hint for the vCPU that may take it; the few changes that affect every interrupt at once
    /// (group enables, a redistributor's sleep state, HW links) ask the vCPUs concerned to look
    /// at everything on their next flush (`Dist::request_rescan`).
    pub(crate) fn with_dist<R>(&self, f: impl FnOnce(&mut Dist) -> (R, VcpuMask)) -> (R, VcpuMask) {
        let mut d = self.lock();
        let (r, kick) = f(&mut d);
        drop(d);
        self.raise(kick);
        (r, kick)
    }

    fn with_dist_hinted<R>(&self, f: impl FnOnce(&mut Dist) -> (R, VcpuMask)) -> (R, VcpuMask) {
        self.with_dist(f)
    }

    fn check_vcpu(&self, vcpu: usize) -> Result<(), VgicError> {
        if vcpu < self.nr_vcpus {
            Ok(())
        } else {
            Err(VgicError::BadVcpu)
        }
    }

    fn check_spi(&self, intid: u32) -> Result<(), VgicError> {
        if (32..self.nr_irqs).contains(&intid) {
            Ok(())
        } else {
            Err(VgicError::BadIntid)
        }
    }

    /// Whether interrupt `intid` of `vcpu` is still in flight: pending, active, or held by a
    /// list register (as of the vCPU's last `sync_from_lrs`). The hypervisor uses it to learn
    /// that the guest has finished with an interrupt it forwards without the HW link.
    pub fn in_flight(&self, vcpu: usize, intid: u32) -> bool {
        self.with_dist(|d| {
            let busy = d.irq(vcpu, intid).is_some_and(|irq| {
                irq.pending_outside() || irq.active || irq.resident() || irq.lr_pending
            });
            (busy, 0)
        })
        .0
    }

    /// Hands the physical-state changes that guest writes asked of passthrough SPIs to `f`
    /// (physical INTID, change), under the distributor lock so that changes from writes on two
    /// vCPUs reach the physical GIC in the order the writes took effect here. The runtime
    /// calls it on `Effect::HwStateChanged`; `f` only writes the physical distributor.
    pub fn take_phys_requests(&self, f: impl FnMut(u32, PhysSpiChange)) {
        self.with_dist(|d| (d.take_phys_requests(f), 0));
    }

    /// An interrupt that running vCPU `vcpu` could take now and that no list register holds:
    /// pending, enabled, its group enabled, the redistributor awake, an SPI targeting `vcpu`.
    /// `None` for a vCPU that is off. The "nothing is lost" check of the property tests and
    /// the fuzz harness: once the guests have run dry, no vCPU may have one left.
    pub fn deliverable_pending(&self, vcpu: usize) -> Option<u32> {
        self.with_dist(|d| {
            if vcpu >= 64 || d.online & (1 << vcpu) == 0 {
                return (None, 0);
            }
            let found = (0..(32 + d.spi_count() as u32)).find(|&intid| {
                d.irq(vcpu, intid).is_some_and(|irq| {
                    irq.pending_outside()
                        && !irq.resident()
                        && d.deliverable(irq, vcpu)
                        && d.targets_vcpu(intid, vcpu)
                })
            });
            (found, 0)
        })
        .0
    }

    /// A one-line description of the interrupts of `vcpu` that are enabled, pending, active or
    /// in a list register, for the hypervisor's state dump: `intid:flags` with `e` enabled, `p`
    /// pending outside the LRs, `a` active, `l` level (line high), `r` resident in an LR, `h`
    /// hardware-linked; then the distributor's group enables.
    pub fn debug_summary(&self, vcpu: usize) -> alloc::string::String {
        use core::fmt::Write;
        let mut out = alloc::string::String::new();
        let (_, _) = self.with_dist(|d| {
            let _ = write!(out, "grp0={} grp1={}:", d.grp0 as u8, d.grp1 as u8);
            for intid in 0..(32 + d.spi_count() as u32) {
                let Some(irq) = d.irq(vcpu, intid) else {
                    continue;
                };
                if intid >= 32 && !d.targets_vcpu(intid, vcpu) {
                    continue;
                }
                let busy = irq.pending_outside() || irq.active || irq.resident() || irq.line;
                if !busy {
                    continue;
                }
                let _ = write!(out, " {intid}:");
                for (on, c) in [
                    (irq.enabled, 'e'),
                    (irq.pending_outside(), 'p'),
                    (irq.active, 'a'),
                    (irq.line, 'l'),
                    (irq.resident(), 'r'),
                    (irq.hw, 'h'),
                ] {
                    if on {
                        out.push(c);
                    }
                }
            }
            ((), 0)
        });
        out
    }

    /// Makes PPI `intid` (16..=31) of `vcpu` pending (latched: the timer and other PPIs the
    /// hypervisor signals, HW-mapped or not). Returns the vCPUs to kick.
    pub fn inject_ppi(&self, vcpu: usize, intid: u32) -> Result<VcpuMask, VgicError> {
        self.check_vcpu(vcpu)?;
        if !(16..32).contains(&intid) {
            return Err(VgicError::BadIntid);
        }
        Ok(self.with_dist_hinted(|d| ((), d.latch(vcpu, intid))).1)
    }

    /// Drives the input line of SPI `intid`. Level-sensitive: pending while high (or latched);
    /// edge-triggered: a low-to-high change latches it. For a HW-mapped SPI a high level is an
    /// injection and a low one is ignored. Returns the vCPUs to kick.
    pub fn set_spi_level(&self, intid: u32, level: bool) -> Result<VcpuMask, VgicError> {
        self.check_spi(intid)?;
        Ok(self.with_dist_hinted(|d| ((), d.set_line(intid, level))).1)
    }

    /// Latches SPI `intid` pending (an edge, or an injection of a HW-mapped SPI when its
    /// physical interrupt fired). Returns the vCPUs to kick.
    pub fn raise_edge(&self, intid: u32) -> Result<VcpuMask, VgicError> {
        self.check_spi(intid)?;
        Ok(self.with_dist_hinted(|d| ((), d.latch(0, intid))).1)
    }

    /// The guest on `sender` wrote `value` to `ICC_SGI0R_EL1` / `ICC_SGI1R_EL1` /
    /// `ICC_ASGI1R_EL1` (GICv3 only). Returns the vCPUs to kick (may include the sender).
    pub fn send_sgi_v3(
        &self,
        sender: usize,
        value: u64,
        reg: SgiRegister,
    ) -> Result<VcpuMask, VgicError> {
        self.check_vcpu(sender)?;
        if self.version != GicVersion::V3 {
            return Err(VgicError::BadIntid);
        }
        Ok(self
            .with_dist_hinted(|d| ((), d.send_sgi_v3(sender, value, reg)))
            .1)
    }

    /// Links PPI `intid` of `vcpu` to physical interrupt `pintid`: it is then injected with
    /// the list register's HW bit, so the guest's deactivation deactivates `pintid` and no
    /// maintenance interrupt is needed. The lead injects it with [`Vgic::inject_ppi`] when the
    /// physical interrupt fires (after a priority drop without deactivation, EOImode == 1).
    pub fn map_hw_ppi(&self, vcpu: usize, intid: u32, pintid: u32) -> Result<(), VgicError> {
        self.check_vcpu(vcpu)?;
        if !(16..32).contains(&intid) {
            return Err(VgicError::BadIntid);
        }
        self.map_hw(vcpu, intid, Some(pintid))
    }

    /// Drives private interrupt `intid` (16..=31) of `vcpu` from physical PPI `pintid` of the
    /// vCPU's CPU (the EL1 timers): a level-sensitive interrupt whose line is raised by
    /// [`Vgic::phys_fired`] and sampled on exits through [`ListRegisters::line_level`] while
    /// the physical interrupt is held active. With `hw_link` its LR carries the HW bit, so the
    /// guest's deactivation deactivates the physical interrupt (GICv3); without, the vGIC
    /// deactivates it through [`ListRegisters::deactivate`] once the guest is done (GICv2,
    /// with an EOI maintenance interrupt; see docs/design.md, "Timers").
    pub fn map_phys_ppi(
        &self,
        vcpu: usize,
        intid: u32,
        pintid: u32,
        hw_link: bool,
    ) -> Result<(), VgicError> {
        self.check_vcpu(vcpu)?;
        if !(16..32).contains(&intid) || !(16..32).contains(&pintid) {
            return Err(VgicError::BadIntid);
        }
        self.with_dist(|d| (d.set_phys(vcpu, intid, pintid as u16, hw_link), bit(vcpu)));
        Ok(())
    }

    /// Links SPI `intid` to physical interrupt `pintid` (passthrough); injected with
    /// [`Vgic::raise_edge`] or [`Vgic::set_spi_level`]`(intid, true)` when it fires.
    pub fn map_hw_spi(&self, intid: u32, pintid: u32) -> Result<(), VgicError> {
        self.check_spi(intid)?;
        self.map_hw(0, intid, Some(pintid))
    }

    /// Whether SPI `intid` is edge-triggered (GICD_ICFGR as the guest programmed it): what
    /// the physical interrupt of a passthrough SPI must be configured as.
    pub fn edge_triggered(&self, intid: u32) -> Result<bool, VgicError> {
        self.check_spi(intid)?;
        Ok(self
            .with_dist(|d| (d.is_edge(0, intid).unwrap_or(false), 0))
            .0)
    }

    /// Removes a HW link (`vcpu` is ignored for SPIs).
    pub fn unmap_hw(&self, vcpu: usize, intid: u32) -> Result<(), VgicError> {
        self.check_vcpu(vcpu)?;
        if intid < 16 || intid >= self.nr_irqs {
            return Err(VgicError::BadIntid);
        }
        self.map_hw(vcpu, intid, None)
    }

    fn map_hw(&self, bank: usize, intid: u32, pintid: Option<u32>) -> Result<(), VgicError> {
        let p = match pintid {
            // PPIs and SPIs only: SGIs cannot be linked, 1020+ are special INTIDs.
            Some(p) if (16..1020).contains(&p) => Some(p as u16),
            Some(_) => return Err(VgicError::BadIntid),
            None => None,
        };
        if self.with_dist(|d| (d.set_hw(bank, intid, p), 0)).0 {
            Ok(())
        } else {
            Err(VgicError::BadIntid)
        }
    }
}
