//! The guest-abort side of stage 2: the VM's memory map (which IPA ranges are RAM or
//! passed-through devices, and where they live physically), the mapping-size decision, and the
//! handler for an already-decoded stage-2 fault (the arch layer decodes ESR_EL2, HPFAR_EL2 and
//! FAR_EL2 into a [`Stage2Fault`]).
#![forbid(unsafe_code)]

use alloc::vec::Vec;

use super::Stage2Error;
use super::desc::{LeafAttrs, MemType, S2Perms, af_set, is_valid, leaf_perms, with_af, with_perms};
use super::geometry::{LAST_LEVEL, Stage2Geometry, level_size};
use super::hw::{Stage2Tlb, TableMemory};
use super::memcache::MemCache;
use super::stats::FaultKind;
use super::table::{CommitVisitor, Ctx, Inval, Stage2Table, Writer};
use super::walk::{Entry, Flow};
use crate::addr::{Ipa, PAGE_SIZE, PhysAddr, Range};

/// What backs a region of guest IPA space.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RegionKind {
    /// Guest RAM: Normal Write-Back memory, executable, subject to dirty logging.
    Ram,
    /// A passed-through device: Device-nGnRE, execute-never, never dirty-logged.
    Device,
    /// Memory the hypervisor owns and lets the guest read (the stolen-time records,
    /// [`crate::pv_time`]): Normal Write-Back, read-only, execute-never, never dirty-logged;
    /// not guest RAM (no device DMA into it, no CPU_ON entry point in it).
    HypervisorData,
}

/// One region of the VM's memory map: `[ipa, ipa + size)` maps linearly onto
/// `[pa, pa + size)`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MemRegion {
    pub ipa: Ipa,
    pub size: u64,
    pub pa: PhysAddr,
    pub kind: RegionKind,
    pub writable: bool,
    /// Dirty logging is on: RAM faults map 4 KiB pages, write-protected unless the fault was a
    /// write (ignored for devices).
    pub dirty_log: bool,
}

impl MemRegion {
    /// Writable RAM.
    pub const fn ram(ipa: Ipa, size: u64, pa: PhysAddr) -> Self {
        Self {
            ipa,
            size,
            pa,
            kind: RegionKind::Ram,
            writable: true,
            dirty_log: false,
        }
    }
    /// A read/write device range.
    pub const fn device(ipa: Ipa, size: u64, pa: PhysAddr) -> Self {
        Self {
            ipa,
            size,
            pa,
            kind: RegionKind::Device,
            writable: true,
            dirty_log: false,
        }
    }
    /// Hypervisor memory the guest may read, never write or execute.
    pub const fn hypervisor_data(ipa: Ipa, size: u64, pa: PhysAddr) -> Self {
        Self {
            ipa,
            size,
            pa,
            kind: RegionKind::HypervisorData,
            writable: false,
            dirty_log: false,
        }
    }
    pub const fn range(&self) -> Range<Ipa> {
        Range::new(self.ipa, self.size)
    }
    /// The PA backing `ipa` (which must be inside the region).
    pub fn pa_of(&self, ipa: Ipa) -> PhysAddr {
        self.pa + (ipa - self.ipa)
    }
    /// True when the region permits the access at all (stage 2 can be made to allow it).
    pub fn allows(&self, access: AccessKind) -> bool {
        match access {
            AccessKind::Read => true,
            AccessKind::Write => self.writable,
            AccessKind::Exec => self.kind == RegionKind::Ram,
        }
    }
    /// True when faults in this region map 4 KiB pages for dirty logging.
    pub fn logs_dirty(&self) -> bool {
        self.kind == RegionKind::Ram && self.dirty_log
    }
}

/// The VM's memory map: sorted, non-overlapping regions, looked up by IPA. Filled by the VM
/// code at creation (from its configuration); read by the fault path.
#[derive(Clone, Debug, Default)]
pub struct GuestMemoryMap {
    regions: Vec<MemRegion>,
}

impl GuestMemoryMap {
    pub const fn new() -> Self {
        Self {
            regions: Vec::new(),
        }
    }

    /// Adds a region. Fails with `InvalidRegion` when it is empty, not 4 KiB aligned (IPA, PA,
    /// size), wraps, or is a dirty-logged device, or is writable hypervisor data; with `RegionOverlap` when it overlaps one
    /// already present.
    pub fn add(&mut self, r: MemRegion) -> Result<(), Stage2Error> {
        if r.size == 0
            || !r.ipa.is_aligned(PAGE_SIZE)
            || !r.pa.is_aligned(PAGE_SIZE)
            || !r.size.is_multiple_of(PAGE_SIZE)
            || r.ipa.checked_add(r.size).is_none()
            || r.pa.checked_add(r.size).is_none()
            || (r.kind != RegionKind::Ram && r.dirty_log)
            || (r.kind == RegionKind::HypervisorData && r.writable)
        {
            return Err(Stage2Error::InvalidRegion);
        }
        let at = self.regions.partition_point(|x| x.ipa < r.ipa);
        let overlaps = |x: &MemRegion| x.range().overlaps(&r.range());
        if self.regions.get(at).is_some_and(overlaps)
            || at > 0 && self.regions.get(at - 1).is_some_and(overlaps)
        {
            return Err(Stage2Error::RegionOverlap);
        }
        self.regions.insert(at, r);
        Ok(())
    }

    /// Removes the region starting at `ipa`.
    pub fn remove(&mut self, ipa: Ipa) -> Option<MemRegion> {
        let i = self.regions.iter().position(|r| r.ipa == ipa)?;
        Some(self.regions.remove(i))
    }

    /// The region containing `ipa`.
    pub fn lookup(&self, ipa: Ipa) -> Option<&MemRegion> {
        let at = self.regions.partition_point(|x| x.ipa <= ipa);
        let r = self.regions.get(at.checked_sub(1)?)?;
        r.range().contains(ipa).then_some(r)
    }

    /// Turns dirty logging on or off for the RAM region starting at `ipa`.
    pub fn set_dirty_log(&mut self, ipa: Ipa, on: bool) -> Result<(), Stage2Error> {
        let r = self
            .regions
            .iter_mut()
            .find(|r| r.ipa == ipa)
            .ok_or(Stage2Error::NoSuchRegion)?;
        if r.kind != RegionKind::Ram {
            return Err(Stage2Error::InvalidRegion);
        }
        r.dirty_log = on;
        Ok(())
    }

    pub fn regions(&self) -> &[MemRegion] {
        &self.regions
    }
}

/// The mapping a fault should install.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MappingDecision {
    pub ipa: Ipa,
    pub pa: PhysAddr,
    pub size: u64,
    pub level: u8,
}

/// The largest of 1 GiB, 2 MiB and 4 KiB such that the block around `ipa` lies wholly inside
/// `region` and its IPA and PA have the same offset within that size (so one block descriptor
/// can map it), as Linux's `fault_supports_stage2_huge_mapping` decides. Dirty-logged RAM always
/// gets 4 KiB; devices get blocks too. 1 GiB blocks need a start level of 1 or lower.
/// `ipa` must be inside `region`.
pub fn decide_mapping(ipa: Ipa, region: &MemRegion, geo: &Stage2Geometry) -> MappingDecision {
    debug_assert!(region.range().contains(ipa));
    let first = if region.logs_dirty() {
        LAST_LEVEL
    } else {
        geo.start_level().max(1)
    };
    for level in first..LAST_LEVEL {
        let size = level_size(level);
        let base = ipa.align_down(size);
        if region.range().contains_range(base, size) && region.pa_of(base).is_aligned(size) {
            return MappingDecision {
                ipa: base,
                pa: region.pa_of(base),
                size,
                level,
            };
        }
    }
    let base = ipa.align_down(PAGE_SIZE);
    MappingDecision {
        ipa: base,
        pa: region.pa_of(base),
        size: PAGE_SIZE,
        level: LAST_LEVEL,
    }
}

/// The access that faulted (ESR_EL2.ISS.WnR for data aborts; instruction aborts are Exec).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AccessKind {
    Read,
    Write,
    Exec,
}

impl AccessKind {
    /// The access a stage-2 abort needs stage 2 to allow, from its syndrome: `instruction`
    /// (an instruction abort), ISS.WnR, ISS.S1PTW and the fault kind.
    ///
    /// A fault on the guest's own stage-1 table walk (S1PTW = 1) is an access to the table,
    /// never an instruction fetch. A *permission* fault there means the walker was writing:
    /// guest RAM is always readable, so only a hardware update of the descriptor's access flag
    /// or dirty state (FEAT_HAFDBS) can be refused. It counts as a write whatever WnR says
    /// (the Arm ARM does not promise WnR for walks), or a dirty-logged table page would stay
    /// write-protected and the walk fault forever. A translation or access-flag fault on the
    /// walk is a read: a write-protected mapping can then still be created (and the next
    /// hardware update takes the permission fault). KVM decides the same
    /// (`kvm_is_write_fault`).
    pub fn of_abort(instruction: bool, wnr: bool, s1ptw: bool, kind: FaultKind) -> Self {
        match (s1ptw, instruction) {
            (true, _) if kind == FaultKind::Permission => Self::Write,
            (true, _) => Self::Read,
            (false, true) => Self::Exec,
            (false, false) if wnr => Self::Write,
            (false, false) => Self::Read,
        }
    }

    fn perms(self) -> S2Perms {
        match self {
            Self::Read => S2Perms::R,
            Self::Write => S2Perms::new(false, true, false),
            Self::Exec => S2Perms::new(false, false, true),
        }
    }
}

/// A decoded stage-2 fault: the IPA (HPFAR_EL2.FIPA plus FAR_EL2`[11:0]`), the fault status
/// class and level (ESR_EL2.ISS.xFSC), and the access.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Stage2Fault {
    pub ipa: Ipa,
    pub kind: FaultKind,
    pub level: u8,
    pub access: AccessKind,
}

/// What the fault handler did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FaultOutcome {
    /// A new leaf maps the IPA; the guest retries the access.
    Mapped { ipa: Ipa, size: u64, level: u8 },
    /// The access is already allowed (another vCPU handled the same fault first): nothing
    /// changed; the guest retries.
    AlreadyMapped,
    /// A permission was added to an existing leaf in place (no BBM).
    PermissionRelaxed { level: u8 },
    /// A dirty-logged page was marked dirty and made writable (after splitting its block).
    DirtyMarked { split: bool },
    /// The access flag of an existing leaf was set.
    AccessFlagSet,
    /// No region backs the IPA: the caller emulates the access (an emulated device) or
    /// injects an external abort.
    NotInRegion,
    /// The region forbids the access (write to read-only, execute from a device): the caller
    /// emulates it or injects an abort.
    AccessDenied,
}

/// Adds permissions (and AF) to the leaf containing the walked page, in place.
struct Relax {
    add: S2Perms,
}

impl<M: TableMemory, T: Stage2Tlb> CommitVisitor<M, T> for Relax {
    fn leaf(&mut self, cx: &mut Ctx<'_, M, T>, e: &Entry) -> Result<Flow, Stage2Error> {
        if is_valid(e.desc) {
            let attrs = cx.fmt.leaf_attrs(e.desc);
            let perms = leaf_perms(e.desc).union(self.add);
            let new = with_af(with_perms(cx.fmt, e.desc, perms, attrs.dirty_wp));
            cx.w.set_entry(e, new, Inval::Now);
        }
        Ok(Flow::Stop)
    }
}

impl<M: TableMemory, T: Stage2Tlb> Stage2Table<M, T> {
    /// Handles one stage-2 fault under the VM's table lock, taking table pages only from
    /// `cache` (topped up by the caller to at least [`Stage2Geometry::fault_cache_pages`]
    /// before the lock was taken). `CacheEmpty { needed }` means nothing was changed: top up
    /// and call again (see [`super::LockedStage2::handle_fault`]).
    ///
    /// The outcome depends on the table as it is now, not on the reported fault kind: a fault
    /// that raced with another vCPU's fix finds the access allowed and returns `AlreadyMapped`.
    ///
    /// A *permission* fault may come from an entry cached in the faulting PE's TLB, and the
    /// architecture lets that entry stay until it is invalidated: relaxing the descriptor (or
    /// finding it already relaxed) is not enough, the guest would retry on the stale entry and
    /// fault again, forever. So whenever a permission fault ends with the access allowed, the
    /// faulting IPA is invalidated on this PE (KVM: `kvm_pgtable_stage2_relax_perms` with
    /// `__kvm_tlb_flush_vmid_ipa_nsh`, also for `-EAGAIN`). Other PEs holding the old entry
    /// fault and invalidate for themselves. Translation and access-flag faults come from
    /// entries no TLB may hold, so they need nothing.
    pub fn handle_fault(
        &mut self,
        cache: &mut MemCache,
        regions: &GuestMemoryMap,
        fault: &Stage2Fault,
    ) -> Result<FaultOutcome, Stage2Error> {
        let r = self.handle_fault_inner(cache, regions, fault);
        if !matches!(r, Err(Stage2Error::CacheEmpty { .. })) {
            self.stats.faults[fault.kind as usize][fault.level.min(LAST_LEVEL) as usize] += 1;
        }
        if fault.kind == FaultKind::Permission
            && matches!(
                r,
                Ok(FaultOutcome::Mapped { .. }
                    | FaultOutcome::AlreadyMapped
                    | FaultOutcome::PermissionRelaxed { .. }
                    | FaultOutcome::DirtyMarked { .. }
                    | FaultOutcome::AccessFlagSet)
            )
        {
            let level = (1..=LAST_LEVEL)
                .contains(&fault.level)
                .then_some(fault.level);
            let mut w = Writer::new(&self.mem, &self.tlb, self.vmid, &mut self.stats);
            w.invalidate_local(fault.ipa.align_down(PAGE_SIZE).as_u64(), level);
        }
        r
    }

    fn handle_fault_inner(
        &mut self,
        cache: &mut MemCache,
        regions: &GuestMemoryMap,
        fault: &Stage2Fault,
    ) -> Result<FaultOutcome, Stage2Error> {
        let ipa = fault.ipa;
        if ipa.as_u64() >= self.geo.ipa_limit() {
            return Ok(FaultOutcome::NotInRegion);
        }
        let Some(region) = regions.lookup(ipa) else {
            return Ok(FaultOutcome::NotInRegion);
        };
        if !region.allows(fault.access) {
            return Ok(FaultOutcome::AccessDenied);
        }
        let logging =
            region.kind == RegionKind::Ram && (region.dirty_log || self.dirty_logging(ipa));
        let write = fault.access == AccessKind::Write;
        let page = ipa.align_down(PAGE_SIZE);

        if let Some((e, desc)) = self.leaf_entry(ipa) {
            let attrs = self.fmt.leaf_attrs(desc);
            let need = fault.access.perms();
            if attrs.perms.contains(need) && af_set(desc) {
                self.stats.spurious_faults += 1;
                return Ok(FaultOutcome::AlreadyMapped);
            }
            if write && attrs.dirty_wp {
                let split = self.dirty_write(cache, ipa, e.level)?;
                self.stats.perm_fault_relaxed += 1;
                return Ok(FaultOutcome::DirtyMarked { split });
            }
            let only_af = attrs.perms.contains(need);
            self.commit(
                page.as_u64(),
                page.as_u64() + PAGE_SIZE,
                &mut Relax { add: need },
            )?;
            return Ok(if only_af {
                FaultOutcome::AccessFlagSet
            } else {
                self.stats.perm_fault_relaxed += 1;
                FaultOutcome::PermissionRelaxed { level: e.level }
            });
        }

        let mut effective = *region;
        effective.dirty_log = logging;
        let d = decide_mapping(ipa, &effective, &self.geo);
        let attrs = match region.kind {
            RegionKind::Ram => LeafAttrs {
                mem: MemType::Normal,
                perms: S2Perms::new(true, region.writable && (!logging || write), true),
                dirty_wp: logging && region.writable && !write,
            },
            RegionKind::Device => LeafAttrs::device(region.writable),
            RegionKind::HypervisorData => LeafAttrs {
                mem: MemType::Normal,
                perms: S2Perms::new(true, false, false),
                dirty_wp: false,
            },
        };
        self.map(cache, d.ipa, d.pa, d.size, attrs)?;
        if logging
            && write
            && let Some(log) = self.dirty.as_mut()
            && log.mark(page)
        {
            self.stats.dirty_marked += 1;
        }
        Ok(FaultOutcome::Mapped {
            ipa: d.ipa,
            size: d.size,
            level: d.level,
        })
    }
}
