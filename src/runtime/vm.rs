//! A VM at run time: its memory, stage-2 table, virtual GIC and devices, PSCI state and
//! counters. Built from a ramdisk entry; torn down when the last reference goes (its `Drop`
//! invalidates the VMID, frees every table page, scrubs and frees the RAM).
use crate::addr::{Ipa, PAGE_SIZE, PhysAddr, Range, SZ_2M};
use crate::arch::aarch64::stage2_hw::{self, HwTlb, HypTableMemory};
use crate::guest::config::{Console, VmConfig};
use crate::guest::fdt::{GicSpec, GuestDtbSpec};
use crate::guest::layout::{GuestLayout, IpaRange, guest_map};
use crate::mm::PAGES;
use crate::mm::frame::FrameAllocator;
use crate::mm::stage2::{
    DirtyLog, GuestMemoryMap, LockedStage2, MemCache, MemRegion, Stage2Error, Stage2Geometry,
    Stage2Stats, Stage2Table, Vmid, VmidAllocator, VmidBits,
};
use crate::psci::Psci;
use crate::ratelimit::{RateLimit, Verdict};
use crate::runtime::machine::{self, MachineView};
use crate::runtime::passthrough;
use crate::vdev::MmioDevice;
use crate::vdev::gicv2_dist::Gicv2Distributor;
use crate::vdev::gicv3_dist::Gicv3Distributor;
use crate::vdev::gicv3_redist::Gicv3Redistributors;
use crate::vdev::pl011::Pl011;
use crate::vgic::Vgic;
use alloc::borrow::Cow;
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::mem::ManuallyDrop;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use spin::Mutex;

pub type S2 = LockedStage2<HypTableMemory, HwTlb>;

/// The largest block guest RAM is allocated in (1 GiB: the largest stage-2 block).
const RAM_MAX_ORDER: u32 = 18;

static VMIDS: Mutex<Option<VmidAllocator>> = Mutex::new(None);

/// The images a VM starts from (kept for resets).
pub struct VmImages {
    pub config: VmConfig,
    pub kernel: Cow<'static, [u8]>,
    pub initrd: Option<&'static [u8]>,
    pub dtb: Option<&'static [u8]>,
    /// The layout at `config.ram_base`; a VM with identity RAM plans its own (`Vm::layout`).
    pub layout: GuestLayout,
    pub kernel_info: crate::guest::image::ImageInfo,
    /// The images of `config.disks`, in order, in the ramdisk.
    pub disks: Vec<&'static [u8]>,
    /// The writable disks' private copies, kept across guest resets.
    pub disk_copies: crate::runtime::virtio::DiskCopies,
}

/// Why a VM could not be built.
#[derive(Debug)]
pub enum VmBuildError {
    NoMemory {
        bytes: u64,
    },
    Stage2(Stage2Error),
    Vgic(crate::vgic::VgicError),
    /// A passthrough interrupt is already given to another VM.
    InterruptTaken(u32),
    Dtb(crate::guest::fdt::FdtError),
    DtbTooLarge,
    VmidsExhausted,
    /// A virtio device could not be created.
    Virtio(crate::runtime::virtio::VirtioBuildError),
    /// Identity RAM: no free contiguous run of this size outside the guest's device ranges.
    NoIdentityRam {
        bytes: u64,
    },
    Layout(crate::guest::layout::LayoutError),
}

impl fmt::Display for VmBuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoMemory { bytes } => write!(f, "no {} MiB of free RAM", bytes >> 20),
            Self::Stage2(e) => write!(f, "stage-2 table: {e:?}"),
            Self::Vgic(e) => write!(f, "virtual GIC: {e:?}"),
            Self::InterruptTaken(i) => write!(f, "interrupt {i} is already given to another VM"),
            Self::Dtb(e) => write!(f, "guest DTB: {e:?}"),
            Self::DtbTooLarge => write!(f, "guest DTB larger than its 2 MiB slot"),
            Self::VmidsExhausted => write!(f, "no free VMID"),
            Self::Virtio(e) => write!(f, "{e}"),
            Self::NoIdentityRam { bytes } => write!(
                f,
                "identity_ram: no free contiguous {} MiB (in one naturally aligned block of the \
                 next power of two) clear of the guest's device addresses",
                bytes >> 20
            ),
            Self::Layout(e) => write!(f, "{e}"),
        }
    }
}

/// Exit counters of one VM (all vCPUs).
#[derive(Default)]
pub struct ExitStats {
    pub hvc: AtomicU64,
    pub smc: AtomicU64,
    pub data_abort_ram: AtomicU64,
    pub mmio: AtomicU64,
    pub instr_abort: AtomicU64,
    pub sysreg: AtomicU64,
    pub irq: AtomicU64,
    pub undef: AtomicU64,
    pub aborts_injected: AtomicU64,
}

impl ExitStats {
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// An emulated device and where the guest sees it.
pub struct DeviceSlot {
    pub range: Range<Ipa>,
    pub dev: Arc<dyn MmioDevice>,
}

/// What [`Vm::toggle_dirty_log`] did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DirtyLogChange {
    Started,
    /// `by_devices`: how many of the pages the VM's virtio devices wrote (past stage 2).
    Stopped {
        dirty_pages: usize,
        by_devices: usize,
    },
}

/// How a VM's run ends.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum StopKind {
    PowerOff,
    Reset,
    Crashed,
}

/// Which vCPUs run, and whether the VM is stopping.
#[derive(Default)]
pub struct RunState {
    pub running: usize,
    pub stopping: Option<StopKind>,
}

pub struct Vm {
    pub id: usize,
    pub name: String,
    pub images: Arc<VmImages>,
    /// Physical CPU of each vCPU.
    pub pcpus: Vec<usize>,
    pub mpidrs: Vec<u64>,
    pub vttbr: u64,
    pub vtcr: u64,
    /// HCR_EL2.FWB is set while this VM runs (its stage-2 descriptors use the FWB encodings).
    pub fwb: bool,
    s2: ManuallyDrop<S2>,
    pub memmap: GuestMemoryMap,
    /// Where RAM (`layout.ram`: the configured base, or the PA of identity RAM), kernel, DTB
    /// and initrd are in this VM.
    pub layout: GuestLayout,
    ram_blocks: Vec<(PhysAddr, u32)>,
    pub devices: Vec<DeviceSlot>,
    pub vgic: Arc<Vgic>,
    pub pl011: Option<Arc<Pl011>>,
    pub psci: Psci,
    /// The stolen-time records (PV time, offered to every VM: see `pv_time`'s module comment).
    pub pv_time: PvTime,
    /// Physical SPIs (INTIDs) of passthrough devices, forwarded to this VM.
    pub passthrough: Vec<u32>,
    geometry: Stage2Geometry,
    /// Which 2 MiB chunks of guest RAM are prepared (shared with the virtio devices' RAM
    /// handle, which prepares a chunk before a device touches it).
    pub ram: Arc<RamChunks>,
    /// The VM's virtio devices (`[[disks]]`, `[[net]]`).
    pub virtio: crate::runtime::virtio::VirtioDevices,
    pub run: Mutex<RunState>,
    pub stats: ExitStats,
    pub console: usize,
    /// Keyboard input waiting for room in the emulated UART's receive FIFO.
    console_in: Mutex<VecDeque<u8>>,
    console_in_pending: AtomicBool,
    stop_requested: AtomicBool,
    /// Budget of the warnings this VM's guest causes ([`Vm::guest_warning`]).
    guest_warnings: Mutex<RateLimit>,
}

/// A VM's stolen-time records: what they say, and the page the guest reads them from
/// (mapped at `pv_time::REGION`). Dropped after the VM's stage 2 is destroyed (a field of
/// [`Vm`], whose `Drop` destroys it first).
pub struct PvTime {
    pub stolen: crate::pv_time::StolenTime,
    pub page: crate::arch::aarch64::shared_page::SharedPage,
}

impl PvTime {
    /// vCPU `vcpu` is about to run, having waited `queued` counter ticks in its run queue.
    pub fn publish(&self, vcpu: usize, queued: u64) {
        self.stolen.publish(&self.page, vcpu, queued);
    }
}

/// Most keyboard input buffered for one VM; beyond it, input is dropped.
const CONSOLE_IN_MAX: usize = 4096;

/// Warnings a guest causes: at most this many per [`GUEST_WARNING_WINDOW_S`] seconds per VM
/// (the kernel's `printk_ratelimited` defaults).
const GUEST_WARNING_BURST: u32 = 10;
const GUEST_WARNING_WINDOW_S: u64 = 5;

impl Vm {
    /// Warnings about this guest dropped since the last one printed (said when the VM ends).
    pub fn guest_warnings_dropped(&self) -> u64 {
        self.guest_warnings.lock().take_dropped()
    }

    /// Prints `message` (a warning the guest caused, e.g. by an access to nothing) unless this
    /// VM has used its budget ([`crate::ratelimit`]); says how many were dropped before it.
    pub fn guest_warning(&self, message: fmt::Arguments<'_>) {
        let now = crate::arch::aarch64::cpu::counter();
        let window = GUEST_WARNING_WINDOW_S * crate::arch::aarch64::cpu::counter_freq();
        let verdict = self.guest_warnings.lock().check(now, window);
        match verdict {
            Verdict::Drop => {}
            Verdict::Print { dropped: 0 } => log::warn!("{message}"),
            Verdict::Print { dropped } => {
                log::warn!(
                    "kestrel: vm {}: {dropped} warnings about this guest suppressed",
                    self.name
                );
                log::warn!("{message}");
            }
        }
    }

    /// The VM's IPA size in bits (what its ID_AA64MMFR0_EL1.PARange says).
    pub fn ipa_bits(&self) -> u8 {
        self.geometry.ipa_bits()
    }

    /// Builds a VM: allocates and scrubs its RAM, creates its stage-2 table, virtual GIC and
    /// devices, and loads kernel, initrd and DTB. Nothing is left allocated on failure.
    pub fn build(
        id: usize,
        images: Arc<VmImages>,
        pcpus: Vec<usize>,
        console: usize,
        m: &MachineView,
    ) -> Result<Vm, VmBuildError> {
        let cfg = &images.config;
        let ncpu = cfg.cpus;
        let mpidrs: Vec<u64> = (0..ncpu)
            .map(crate::guest::fdt::default_vcpu_mpidr)
            .collect();

        // Guest RAM: the largest size-aligned blocks that cover it (scrubbed before use), or
        // for identity RAM one contiguous run whose IPA is its PA.
        let mut blocks = Vec::new();
        let identity = if cfg.identity_ram {
            Some(alloc_identity_ram(cfg, &mut blocks)?)
        } else {
            if !PAGES.alloc_cover(cfg.memory, RAM_MAX_ORDER, &mut blocks) {
                return Err(VmBuildError::NoMemory { bytes: cfg.memory });
            }
            // Largest first, so the big (1 GiB-capable) blocks sit at the aligned start of RAM.
            blocks.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            None
        };
        let mut guard = RamGuard(Some(blocks));
        let (ram_base, layout) = match identity {
            Some(base) => {
                let base = Ipa::new(base.as_u64());
                let initrd = images.initrd.map_or(0, |i| i.len() as u64);
                let layout =
                    crate::guest::layout::plan(base, cfg.memory, &images.kernel_info, initrd)
                        .map_err(VmBuildError::Layout)?;
                (base, layout)
            }
            None => (cfg.ram_base, images.layout),
        };
        let mut memmap = GuestMemoryMap::new();
        let mut ipa = ram_base;
        for &(pa, order) in guard.blocks() {
            let size = PAGE_SIZE << order;
            memmap
                .add(MemRegion::ram(ipa, size, pa))
                .map_err(VmBuildError::Stage2)?;
            ipa = ipa + size;
        }
        if let (false, Some(gicv)) = (m.gic_v3, m.gicv) {
            let r = MemRegion::device(guest_map::GICC.start, 0x2000, gicv);
            memmap.add(r).map_err(VmBuildError::Stage2)?;
        }
        for d in &cfg.devices {
            memmap
                .add(MemRegion::device(d.ipa, d.size, d.base))
                .map_err(VmBuildError::Stage2)?;
        }
        let pv_time = PvTime {
            stolen: crate::pv_time::StolenTime::new(
                ncpu,
                crate::arch::aarch64::cpu::counter_freq(),
            ),
            page: crate::arch::aarch64::shared_page::SharedPage::new()
                .ok_or(VmBuildError::NoMemory { bytes: PAGE_SIZE })?,
        };
        memmap
            .add(MemRegion::hypervisor_data(
                crate::pv_time::REGION.start,
                crate::pv_time::MAPPED_SIZE,
                pv_time.page.pa(),
            ))
            .map_err(VmBuildError::Stage2)?;

        // Stage 2.
        let ipa_top = ram_base.as_u64() + cfg.memory;
        let bits = (64 - (ipa_top.max(1 << 32) - 1).leading_zeros()).max(40) as u8;
        let geo = Stage2Geometry::new(bits, m.pa_range).map_err(VmBuildError::Stage2)?;
        let vmid_bits = if m.vmid16 {
            VmidBits::Bits16
        } else {
            VmidBits::Bits8
        };
        let vmid = {
            let mut g = VMIDS.lock();
            let a = g.get_or_insert_with(|| VmidAllocator::new(vmid_bits));
            a.alloc().map_err(|_| VmBuildError::VmidsExhausted)?
        };
        let vtcr = geo.vtcr(vmid_bits).value();
        let geometry = geo;
        let table = match Stage2Table::new(geo, vmid, m.fwb, HypTableMemory, HwTlb, &PAGES) {
            Ok(t) => t,
            Err(e) => {
                free_vmid(vmid);
                return Err(VmBuildError::Stage2(e));
            }
        };
        let vttbr = table.vttbr();
        let s2 = LockedStage2::new(table);

        // Interrupt controller and devices.
        let spis = cfg.spis;
        let vgic = if m.gic_v3 {
            Vgic::new_v3(&mpidrs, spis)
        } else {
            Vgic::new_v2(ncpu, spis)
        };
        let vgic = match vgic {
            Ok(v) => Arc::new(v),
            Err(e) => {
                free_vmid(s2.destroy(&PAGES));
                return Err(VmBuildError::Vgic(e));
            }
        };
        // Passthrough interrupts: the virtual SPI is linked to the physical one with the same
        // INTID (HW bit), so the guest's deactivation reaches the device's interrupt.
        let passthrough: Vec<u32> = cfg
            .devices
            .iter()
            .flat_map(|d| d.interrupts.iter().map(|s| s + 32))
            .collect();
        for &intid in &passthrough {
            if let Err(e) = vgic.map_hw_spi(intid, intid) {
                free_vmid(s2.destroy(&PAGES));
                return Err(VmBuildError::Vgic(e));
            }
        }
        let mut devices = Vec::new();
        if m.gic_v3 {
            devices.push(DeviceSlot {
                range: Range::new(guest_map::GICD.start, guest_map::GICD.size),
                dev: Arc::new(Gicv3Distributor::new(vgic.clone())),
            });
            let r = guest_map::gicv3_redistributors(ncpu);
            devices.push(DeviceSlot {
                range: Range::new(r.start, r.size),
                dev: Arc::new(Gicv3Redistributors::new(vgic.clone())),
            });
        } else {
            devices.push(DeviceSlot {
                range: Range::new(guest_map::GICD.start, 0x1000),
                dev: Arc::new(Gicv2Distributor::new(vgic.clone())),
            });
        }
        let ram = Arc::new(RamChunks::new(layout.ram.start, cfg.memory, &memmap, m.fwb));
        // Last of what can fail before the VM exists: on failure the devices are dropped here
        // (network ports leave their switches), before `guard` frees the RAM.
        let virtio =
            match crate::runtime::virtio::VirtioDevices::build(&images, &vgic, id, &pcpus, &ram) {
                Ok(v) => v,
                Err(e) => {
                    free_vmid(s2.destroy(&PAGES));
                    return Err(VmBuildError::Virtio(e));
                }
            };
        let pl011 = match cfg.console {
            Console::Pl011 => {
                let p = Arc::new(Pl011::with_firmware_setup(32 + guest_map::UART_SPI));
                devices.push(DeviceSlot {
                    range: Range::new(guest_map::UART.start, guest_map::UART.size),
                    dev: p.clone(),
                });
                Some(p)
            }
            Console::None => None,
        };
        // The VM's virtio devices, ahead of the empty transports' window (a slot that holds a
        // device is that device).
        devices.extend(virtio.device_slots());
        // Last: the empty transports are rarely touched, the devices above on every exit.
        let empty_slots = crate::vdev::virtio_mmio_slots::present_slots(
            cfg.devices.iter().map(|d| (d.ipa.as_u64(), d.size)),
            cfg.spis,
        );
        if empty_slots != 0 {
            devices.push(DeviceSlot {
                range: Range::new(guest_map::VIRTIO_MMIO.start, guest_map::VIRTIO_MMIO.size),
                dev: Arc::new(crate::vdev::virtio_mmio_slots::VirtioMmioSlots::new(
                    empty_slots,
                )),
            });
        }

        let vm = Vm {
            id,
            name: cfg.name.clone(),
            psci: Psci::new(
                &mpidrs,
                0,
                crate::psci::SmcccConfig {
                    pv_time: true,
                    ..m.smccc
                },
            ),
            pv_time,
            images: images.clone(),
            pcpus,
            mpidrs,
            vttbr,
            vtcr,
            fwb: m.fwb,
            s2: ManuallyDrop::new(s2),
            memmap,
            layout,
            ram_blocks: guard.0.take().unwrap_or_default(),
            devices,
            vgic,
            pl011,
            passthrough,
            geometry,
            ram,
            virtio,
            run: Mutex::new(RunState::default()),
            stats: ExitStats::default(),
            console,
            console_in: Mutex::new(VecDeque::new()),
            console_in_pending: AtomicBool::new(false),
            stop_requested: AtomicBool::new(false),
            guest_warnings: Mutex::new(RateLimit::new(GUEST_WARNING_BURST)),
        };
        vm.load()?;
        Ok(vm)
    }

    /// Writes kernel, initrd and the guest DTB into the (scrubbed) RAM.
    fn load(&self) -> Result<(), VmBuildError> {
        let im = &self.images;
        let l = &self.layout;
        self.prepare(l.kernel_base, l.kernel_end - l.kernel_base);
        self.prepare(l.dtb, crate::guest::layout::DTB_SLOT_SIZE);
        if let Some(rd) = l.initrd {
            self.prepare(rd.start, rd.size);
        }
        self.write(l.kernel_entry, &im.kernel);
        if let (Some(rd), Some(bytes)) = (l.initrd, im.initrd) {
            self.write(rd.start, bytes);
        }
        let dtb: Cow<[u8]> = match im.dtb {
            Some(d) => Cow::Borrowed(d),
            None => {
                let redists: Vec<IpaRange> =
                    alloc::vec![guest_map::gicv3_redistributors(self.mpidrs.len())];
                let gic = if self.vgic.version() == crate::vgic::GicVersion::V3 {
                    GicSpec::V3 {
                        distributor: guest_map::GICD,
                        redistributors: &redists,
                        maintenance_ppi: Some(9),
                    }
                } else {
                    GicSpec::V2 {
                        distributor: IpaRange {
                            start: guest_map::GICD.start,
                            size: 0x1000,
                        },
                        cpu_interface: IpaRange {
                            start: guest_map::GICC.start,
                            size: 0x2000,
                        },
                        maintenance_ppi: Some(9),
                    }
                };
                let mut spec = GuestDtbSpec::for_vm(&im.config, l, &self.mpidrs, gic);
                spec.pmu = crate::arch::aarch64::vcpu_hw::has_pmuv3().then_some(
                    crate::guest::fdt::GuestPmu {
                        ppi: machine::pmu_forwarded().then_some(crate::guest::fdt::PMU_PPI),
                    },
                );
                Cow::Owned(crate::guest::fdt::build(&spec).map_err(VmBuildError::Dtb)?)
            }
        };
        if dtb.len() as u64 > crate::guest::layout::DTB_SLOT_SIZE {
            return Err(VmBuildError::DtbTooLarge);
        }
        self.write(l.dtb, &dtb);
        // The guest starts with its MMU and caches off: what was written must be in memory.
        self.sync_range(l.kernel_entry, im.kernel.len() as u64);
        self.sync_range(l.dtb, dtb.len() as u64);
        if let (Some(rd), Some(bytes)) = (l.initrd, im.initrd) {
            self.sync_range(rd.start, bytes.len() as u64);
        }
        Ok(())
    }

    /// Scrubs and cleans every not yet prepared 2 MiB chunk of guest RAM that overlaps
    /// `[ipa, ipa + size)`. IPAs outside RAM are ignored.
    pub fn prepare(&self, ipa: Ipa, size: u64) {
        self.ram.prepare(ipa, size);
    }

    /// The first IPA of 2 MiB chunk `i` of guest RAM (the last chunk may be shorter).
    fn chunk(&self, i: usize) -> Ipa {
        self.layout.ram.start + i as u64 * SZ_2M
    }

    /// Calls `f(pa, len)` for each physically contiguous piece of guest RAM in
    /// `[ipa, ipa + len)`, in IPA order; stops at the first IPA that is not RAM. Guest RAM is
    /// a run of buddy blocks of any order (the VM's size need only be a whole number of
    /// pages), so a range may span several blocks.
    fn for_each_ram_piece(&self, ipa: Ipa, len: u64, mut f: impl FnMut(PhysAddr, u64)) {
        let mut done = 0;
        while done < len {
            let at = ipa + done;
            let Some(r) = self
                .memmap
                .lookup(at)
                .filter(|r| r.kind == crate::mm::stage2::RegionKind::Ram)
            else {
                return;
            };
            let n = (r.ipa.as_u64() + r.size - at.as_u64()).min(len - done);
            f(r.pa_of(at), n);
            done += n;
        }
    }

    /// Before the fault path maps the block around `ipa`: prepares the RAM that mapping will
    /// cover (up to 1 GiB when alignment allows a 1 GiB block).
    pub fn prepare_for_fault(&self, ipa: Ipa) {
        if let Some(r) = self.memmap.lookup(ipa)
            && r.kind == crate::mm::stage2::RegionKind::Ram
        {
            let d = crate::mm::stage2::decide_mapping(ipa, r, &self.geometry);
            self.prepare(d.ipa, d.size);
        }
    }

    fn sync_range(&self, ipa: Ipa, len: u64) {
        self.for_each_ram_piece(ipa, len, stage2_hw::sync_guest_memory);
    }

    /// Copies `bytes` into guest RAM at `ipa` (which the layout placed inside RAM).
    fn write(&self, ipa: Ipa, bytes: &[u8]) {
        let mut done = 0usize;
        self.for_each_ram_piece(ipa, bytes.len() as u64, |pa, n| {
            // SAFETY: a piece of this VM's RAM, written while the VM is built (no vCPU runs);
            // `bytes` is the kernel, ramdisk or DTB on the heap, not guest RAM.
            unsafe { stage2_hw::copy_to_phys(pa, &bytes[done..done + n as usize]) };
            done += n as usize;
        });
    }

    /// Queues keyboard input for the VM's console and moves what fits into its UART.
    pub fn console_input(&self, bytes: &[u8], fx: &mut crate::vdev::Effects) {
        let mut q = self.console_in.lock();
        for &b in bytes {
            if q.len() < CONSOLE_IN_MAX {
                q.push_back(b);
            }
        }
        drop(q);
        self.console_in_pending.store(true, Ordering::Release);
        self.feed_console(fx);
    }

    /// Moves queued keyboard input into the UART's receive FIFO while it has room (called after
    /// the guest touched its UART, which may have made room).
    #[inline]
    pub fn feed_console(&self, fx: &mut crate::vdev::Effects) {
        if !self.console_in_pending.load(Ordering::Acquire) {
            return;
        }
        let Some(p) = &self.pl011 else { return };
        let mut q = self.console_in.lock();
        while p.rx_space() > 0 {
            let Some(b) = q.pop_front() else { break };
            p.push_rx(b, fx);
        }
        if q.is_empty() {
            self.console_in_pending.store(false, Ordering::Release);
        }
    }

    pub fn s2(&self) -> &S2 {
        &self.s2
    }

    pub fn s2_stats(&self) -> Stage2Stats {
        *self.s2.lock().stats()
    }

    /// True when `ipa` lies in this VM's RAM (PSCI CPU_ON entry check).
    pub fn is_ram(&self, ipa: u64) -> bool {
        self.memmap
            .lookup(Ipa::new(ipa))
            .is_some_and(|r| r.kind == crate::mm::stage2::RegionKind::Ram)
    }

    /// The emulated device at `ipa`, and the offset into it.
    #[inline]
    pub fn device_at(&self, ipa: Ipa) -> Option<(&DeviceSlot, u64)> {
        self.devices
            .iter()
            .find(|d| d.range.contains(ipa))
            .map(|d| (d, ipa - d.range.start))
    }

    pub fn stopping(&self) -> Option<StopKind> {
        self.run.lock().stopping
    }

    /// Starts dirty logging over all of the VM's RAM (write-protects what is mapped; from now
    /// on a write fault marks its 4 KiB page dirty and makes it writable), or stops it
    /// (restores write permission, merges pages back into blocks) and reports how many pages
    /// were written meanwhile. Runs on any CPU while the VM's vCPUs keep running: the
    /// stage-2 lock serializes it with their faults.
    pub fn toggle_dirty_log(&self) -> Result<DirtyLogChange, Stage2Error> {
        let mut cache = MemCache::new();
        let base = self.layout.ram.start;
        let size = self.images.config.memory;
        // The pages the virtio devices write bypass stage 2: recorded beside the log (its
        // bitmap allocated before the stage-2 lock) and merged into it when it stops.
        let hyp = self.ram.hyp_dirty();
        hyp.prepare();
        let r = self.s2.with_retry(&mut cache, &PAGES, 0, |t, c| {
            if t.dirty_log().is_some() {
                let mut log = t.stop_dirty_log(c)?;
                hyp.stop();
                hyp.merge_into(&mut log);
                Ok(DirtyLogChange::Stopped {
                    dirty_pages: log.dirty_count(),
                    by_devices: hyp.count(),
                })
            } else {
                // Before write protection: a device write from now on is marked.
                if !hyp.is_active() {
                    hyp.start();
                }
                t.start_dirty_log(DirtyLog::new(base, size)?)?;
                Ok(DirtyLogChange::Started)
            }
        });
        cache.drain(&PAGES, &HypTableMemory);
        r
    }

    /// The exit path's check: has anyone asked this VM to stop? (One atomic load, no lock.)
    #[inline]
    pub fn stop_requested(&self) -> bool {
        self.stop_requested.load(Ordering::Acquire)
    }

    /// Marks the VM as stopping (first reason wins); returns false if it already was.
    pub fn request_stop(&self, kind: StopKind) -> bool {
        let mut run = self.run.lock();
        if run.stopping.is_some() {
            return false;
        }
        run.stopping = Some(kind);
        self.stop_requested.store(true, Ordering::Release);
        true
    }

    /// Takes the VM's passthrough interrupts and routes them to its first vCPU's physical CPU.
    pub fn claim_passthrough(&self) -> Result<(), VmBuildError> {
        let pcpu = self.pcpus.first().copied().unwrap_or(0);
        let edge = |intid| self.vgic.edge_triggered(intid).unwrap_or(false);
        passthrough::claim(self.id, &self.passthrough, pcpu, edge)
            .map_err(VmBuildError::InterruptTaken)
    }

    /// Configures each passthrough interrupt with the trigger mode the guest gave its virtual
    /// SPI (after a GICD_ICFGR write: `Effect::HwTriggerChanged`).
    pub fn match_passthrough_triggers(&self) {
        passthrough::match_triggers(self.id, &self.passthrough, |intid| {
            self.vgic.edge_triggered(intid).ok()
        });
    }

    /// Exits since the VM started (every kind).
    pub fn exit_count(&self) -> u64 {
        let s = &self.stats;
        [
            &s.hvc,
            &s.smc,
            &s.data_abort_ram,
            &s.mmio,
            &s.instr_abort,
            &s.sysreg,
            &s.irq,
            &s.undef,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }

    /// The one-line summary printed when a VM ends.
    pub fn counters_line(&self) -> String {
        let s = &self.stats;
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let st = self.s2_stats();
        let v = self.vgic.stats();
        let mut line = alloc::format!(
            "exits hvc={} smc={} ram-fault={} mmio={} iabt={} sysreg={} irq={} undef={} \
             aborts-injected={}; stage2 {st}; vgic injections={} lr-overflows={} maintenance={}",
            g(&s.hvc),
            g(&s.smc),
            g(&s.data_abort_ram),
            g(&s.mmio),
            g(&s.instr_abort),
            g(&s.sysreg),
            g(&s.irq),
            g(&s.undef),
            g(&s.aborts_injected),
            v.injections,
            v.lr_overflows,
            v.maintenance_irqs,
        );
        let virtio = self.virtio.counters();
        if !virtio.is_empty() {
            line.push_str("; virtio");
            line.push_str(&virtio);
        }
        line
    }
}

/// Guest RAM in 2 MiB chunks from its base: true once a chunk has been scrubbed (and cleaned
/// to the point of coherency) for this VM. A chunk is prepared before stage 2 first maps it,
/// before the loader writes into it, or before a virtio device reads or writes it, so the
/// guest never sees a byte it did not write itself (and a device never reads the previous
/// owner's data, nor has a received frame wiped by a later scrub); only prepared chunks are
/// scrubbed again when the VM ends. Shared by the VM and its devices' RAM handle
/// (`runtime::virtio::VmRam`), which must not own the VM.
pub struct RamChunks {
    base: Ipa,
    regions: Vec<crate::virtio::mem::RamRegion>,
    fwb: bool,
    prepared: Vec<AtomicBool>,
    lock: Mutex<()>,
    /// Pages the hypervisor writes for the guest (its virtio devices) while a dirty log runs.
    hyp_dirty: crate::mm::stage2::HypDirty,
}

impl RamChunks {
    fn new(base: Ipa, size: u64, memmap: &GuestMemoryMap, fwb: bool) -> Self {
        let regions = memmap
            .regions()
            .iter()
            .filter(|r| r.kind == crate::mm::stage2::RegionKind::Ram)
            .map(|r| crate::virtio::mem::RamRegion {
                ipa: r.ipa,
                size: r.size,
                pa: r.pa,
            })
            .collect();
        Self {
            base,
            regions,
            fwb,
            prepared: (0..size.div_ceil(SZ_2M))
                .map(|_| AtomicBool::new(false))
                .collect(),
            lock: Mutex::new(()),
            hyp_dirty: crate::mm::stage2::HypDirty::new(base, size),
        }
    }

    /// The pages of guest RAM the hypervisor wrote while a dirty log runs.
    pub fn hyp_dirty(&self) -> &crate::mm::stage2::HypDirty {
        &self.hyp_dirty
    }

    /// The RAM regions, sorted by IPA.
    pub fn regions(&self) -> &[crate::virtio::mem::RamRegion] {
        &self.regions
    }

    /// Scrubs and cleans every not yet prepared chunk that overlaps `[ipa, ipa + size)`.
    /// IPAs outside RAM are ignored. Cheap when they are all prepared (one load per chunk).
    #[inline]
    pub fn prepare(&self, ipa: Ipa, size: u64) {
        let base = self.base.as_u64();
        let start = ipa.as_u64().saturating_sub(base) / SZ_2M;
        let end = (ipa.as_u64().saturating_add(size))
            .saturating_sub(base)
            .div_ceil(SZ_2M);
        for i in start..end.min(self.prepared.len() as u64) {
            if !self.prepared[i as usize].load(Ordering::Acquire) {
                self.prepare_chunk(i as usize);
            }
        }
    }

    #[cold]
    fn prepare_chunk(&self, i: usize) {
        let flag = &self.prepared[i];
        let _g = self.lock.lock();
        if flag.load(Ordering::Acquire) {
            return;
        }
        let mut at = self.base + i as u64 * SZ_2M;
        let end = at.as_u64() + SZ_2M;
        while at.as_u64() < end {
            let Ok((pa, n)) = crate::virtio::mem::ram_piece(&self.regions, at, end - at.as_u64())
            else {
                break;
            };
            // SAFETY: a piece of this VM's RAM (its own buddy blocks) in a chunk not yet
            // prepared, so not yet mapped at stage 2 (no vCPU can reach it) and not yet handed
            // to a device (`VmRam` prepares before it returns a piece).
            unsafe { stage2_hw::zero_phys(pa, n) };
            // With FEAT_S2FWB stage 2 forces the guest's view of its RAM to write-back
            // cacheable, so no non-cacheable guest access can miss the zeroes in the cache.
            // Without it they go to the PoC, which also serves instruction fetches; with it,
            // instruction fetches still need them at the PoU unless CTR_EL0.IDC (the I-cache
            // side is done when stage 2 makes the memory executable).
            use crate::arch::aarch64::cache;
            if !self.fwb {
                cache::clean_invalidate_dcache_range(pa.as_u64(), n);
            } else if !cache::cache_type().idc() {
                cache::clean_dcache_pou_range(pa.as_u64(), n);
            }
            at = at + n;
        }
        flag.store(true, Ordering::Release);
    }

    /// The indexes of the prepared chunks.
    fn prepared_chunks(&self) -> impl Iterator<Item = usize> + '_ {
        self.prepared
            .iter()
            .enumerate()
            .filter(|(_, f)| f.load(Ordering::Acquire))
            .map(|(i, _)| i)
    }
}

/// Places identity RAM: a contiguous run of `cfg.memory` bytes whose addresses, used as IPAs,
/// meet neither the emulated devices nor the VM's passthrough devices and fit the IPA space.
/// Runs that do not qualify are held while the next is tried (so it is a different one), and
/// all given back at the end.
fn alloc_identity_ram(
    cfg: &VmConfig,
    out: &mut Vec<(PhysAddr, u32)>,
) -> Result<PhysAddr, VmBuildError> {
    const TRIES: usize = 8;
    use crate::guest::config::{MAX_IPA, overlaps};
    let clash = |base: u64| {
        let ram = (base, cfg.memory);
        let window = guest_map::EMULATED_DEVICE_WINDOW;
        let virtio = guest_map::VIRTIO_MMIO;
        base + cfg.memory > MAX_IPA
            || overlaps(ram, (window.start.as_u64(), window.size))
            || overlaps(ram, (virtio.start.as_u64(), virtio.size))
            || cfg
                .devices
                .iter()
                .any(|d| overlaps(ram, (d.ipa.as_u64(), d.size)))
    };
    let mut held: Vec<Vec<(PhysAddr, u32)>> = Vec::new();
    let mut found = None;
    for _ in 0..TRIES {
        let mut run = Vec::new();
        let Some(base) = PAGES.alloc_contiguous(cfg.memory, &mut run) else {
            break;
        };
        if clash(base.as_u64()) {
            held.push(run);
        } else {
            out.extend(run);
            found = Some(base);
            break;
        }
    }
    for run in held {
        for (pa, order) in run {
            PAGES.free_frames(pa, order);
        }
    }
    found.ok_or(VmBuildError::NoIdentityRam { bytes: cfg.memory })
}

fn free_vmid(vmid: Vmid) {
    if let Some(a) = VMIDS.lock().as_mut() {
        let _ = a.free(vmid);
    }
}

/// Returns guest RAM blocks to the allocator (scrubbed) unless taken over by the VM.
struct RamGuard(Option<Vec<(PhysAddr, u32)>>);

impl RamGuard {
    fn blocks(&self) -> &[(PhysAddr, u32)] {
        self.0.as_deref().unwrap_or(&[])
    }
}

impl Drop for RamGuard {
    fn drop(&mut self) {
        for (pa, order) in self.0.take().unwrap_or_default() {
            // SAFETY: a block from the page allocator that no VM took over: nothing else
            // refers to it.
            unsafe { stage2_hw::zero_phys(pa, PAGE_SIZE << order) };
            PAGES.free_frames(pa, order);
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        passthrough::release(self.id, &self.passthrough);
        // No other VM's CPU may copy into this RAM once it is freed: ports leave their switches.
        self.virtio.teardown();
        // SAFETY: `s2` is taken exactly once, here, and never used afterwards.
        let s2 = unsafe { ManuallyDrop::take(&mut self.s2) };
        free_vmid(s2.destroy(&PAGES));
        // Scrub what the guest could have written (the prepared blocks), then free it all.
        for i in self.ram.prepared_chunks() {
            self.for_each_ram_piece(self.chunk(i), SZ_2M, |pa, n| {
                // SAFETY: this VM's RAM after its stage 2 was destroyed above (no vCPU can
                // reach it) and its virtio devices were torn down (no device copies into it),
                // before its blocks go back to the allocator.
                unsafe { stage2_hw::zero_phys(pa, n) }
            });
        }
        for (pa, order) in core::mem::take(&mut self.ram_blocks) {
            PAGES.free_frames(pa, order);
        }
    }
}

/// Keeps a boxed value alive for the rest of the run (the unpacked ramdisk).
pub fn leak_bytes(v: Vec<u8>) -> &'static [u8] {
    Box::leak(v.into_boxed_slice())
}
