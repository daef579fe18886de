//! The VM manager: reads the ramdisk into VMs at boot, starts and stops vCPUs on their
//! physical CPUs, and ends or restarts VMs.
//!
//! Each physical CPU has a slot: the vCPU it runs (touched only by that CPU) and a mailbox for
//! requests to start one (PSCI CPU_ON, a VM start). A CPU without a vCPU sits in the idle loop
//! with interrupts masked, waking on the kick SGI. A vCPU that stops (CPU_OFF, its VM stopping)
//! drops its stack and returns to the idle loop. A VM ends when its last running vCPU stops:
//! the VM leaves the registry and its `Drop` frees everything it held.
use crate::arch::aarch64::boot::MAX_CPUS;
use crate::arch::aarch64::gic::{self, HwListRegisters};
use crate::arch::aarch64::{cpu, vcpu_hw};
use crate::guest::config::{HostOwned, MachineResources, OnReset, admit};
use crate::guest::ramdisk;
use crate::mm::PAGES;
use crate::mm::stage2::{MemCache, PaRange};
use crate::platform::Platform;
use crate::runtime::boot;
use crate::runtime::vm::{MachineView, StopKind, Vm, VmImages};
use crate::vcpu::{GuestRegs, pstate};
use crate::vgic::{VcpuMask, VgicCpu};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use log::{error, info, warn};
use spin::{Mutex, Once};

/// Largest decompressed ramdisk (and kernel) accepted.
const RAMDISK_LIMIT: usize = 1 << 30;

/// A vCPU as its physical CPU runs it.
pub struct Vcpu {
    pub vm: Arc<Vm>,
    pub index: usize,
    pub memcache: MemCache,
    pub vgic: VgicCpu,
    pub lrs: HwListRegisters,
}

/// Whether the EL1 timers (and the PMU overflow interrupt) are forwarded with the list
/// registers' HW bit (GICv3), or held active and deactivated by the vGIC after the guest's EOI
/// (GICv2; both through `Vgic::map_phys_ppi`). QEMU's GICv2 model does not re-evaluate the physical interrupt when a
/// hardware-linked virtual interrupt is deactivated, so a timer that fired again meanwhile is
/// lost and an idle guest sleeps forever; the held scheme costs one maintenance exit per timer
/// interrupt and works on every GICv2.
pub fn vtimer_hw_linked() -> bool {
    MACHINE.get().is_some_and(|m| m.gic_v3)
}

/// A request to start vCPU `vcpu` of `vm` on a physical CPU.
pub struct StartRequest {
    pub vm: Arc<Vm>,
    pub vcpu: usize,
    pub entry: u64,
    pub x0: u64,
}

struct CpuSlot {
    vcpu: UnsafeCell<Option<Vcpu>>,
    mailbox: Mutex<Option<StartRequest>>,
}

// SAFETY: `vcpu` is only ever accessed by the physical CPU that owns the slot (see
// `this_vcpu`); the mailbox is behind a lock.
unsafe impl Sync for CpuSlot {}

static SLOTS: [CpuSlot; MAX_CPUS] = [const {
    CpuSlot {
        vcpu: UnsafeCell::new(None),
        mailbox: Mutex::new(None),
    }
}; MAX_CPUS];

/// VMs by id.
static VMS: Mutex<Vec<Option<Arc<Vm>>>> = Mutex::new(Vec::new());
static VMS_ALIVE: crate::lifecycle::LiveVms = crate::lifecycle::LiveVms::new();
static PANICKING: AtomicBool = AtomicBool::new(false);
static MACHINE: Once<MachineView> = Once::new();
/// Page-allocator figure once the hypervisor is set up, before any VM: the "starting figure"
/// that the accounting must return to when every VM is gone.
static PAGES_AT_REST: AtomicUsize = AtomicUsize::new(0);

/// The vCPU running on this physical CPU.
#[allow(clippy::mut_from_ref)]
pub fn this_vcpu() -> Option<&'static mut Vcpu> {
    let slot = &SLOTS[cpu::current_index()];
    // SAFETY: only this physical CPU accesses its slot's vCPU, and never re-entrantly: the
    // exit handler runs with interrupts masked and does not nest.
    unsafe { (*slot.vcpu.get()).as_mut() }
}

fn set_this_vcpu(v: Option<Vcpu>) {
    let slot = &SLOTS[cpu::current_index()];
    // SAFETY: as in `this_vcpu`; no reference from `this_vcpu` is live here (the caller is the
    // idle loop or the park path, which dropped theirs).
    unsafe { *slot.vcpu.get() = v };
}

/// Boot CPU, after platform set-up: builds the VMs of the ramdisk and starts them.
pub fn run(platform: &'static Platform) -> ! {
    crate::arch::aarch64::console::set_line_hook(crate::runtime::console::hypervisor_line);
    let pa_range = {
        use aarch64_cpu::registers::{ID_AA64MMFR0_EL1, Readable};
        PaRange::from_id_field(ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange))
            .unwrap_or(PaRange::Bits40)
    };
    let vmid16 = {
        use aarch64_cpu::registers::{ID_AA64MMFR1_EL1, Readable};
        ID_AA64MMFR1_EL1.read(ID_AA64MMFR1_EL1::VMIDBits) == 2
    };
    let fwb = {
        use aarch64_cpu::registers::{ID_AA64MMFR2_EL1, Readable};
        ID_AA64MMFR2_EL1.read(ID_AA64MMFR2_EL1::FWB) == 1
    };
    info!(
        "kestrel: caches: {}",
        crate::arch::aarch64::cache::cache_type()
    );
    let smccc = crate::arch::aarch64::mitigation::host_cpu().smccc_config();
    info!(
        "kestrel: SMCCC workarounds for guests: 1 {:?}, 2 {:?}, 3 {:?}",
        smccc.workaround_1, smccc.workaround_2, smccc.workaround_3
    );
    MACHINE.call_once(|| MachineView {
        smccc,
        fwb,
        gic_v3: platform.gic.version == crate::platform::GicVersion::V3,
        gicv: platform.gic.gicv.map(|r| r.start),
        pa_range,
        vmid16,
    });
    PMU_FORWARDED.store(platform.pmu_intid == Some(gic::PPI_PMU), Ordering::Relaxed);
    if let Some(intid) = platform.console.intid {
        crate::arch::aarch64::console::enable_rx_interrupt();
        gic::enable_spi(intid, 0, false);
        CONSOLE_IRQ.store(intid as usize, Ordering::Relaxed);
    }
    let Some(rd) = platform.initrd else {
        info!("kestrel: no ramdisk (initrd) given: no VMs to run");
        boot::power_off();
    };
    // SAFETY: the initrd range comes from the DTB, lies in RAM (checked by the platform parser),
    // is reserved from the page allocator and mapped by the EL2 map; nothing writes to it.
    let data: &'static [u8] =
        unsafe { core::slice::from_raw_parts(rd.start.as_u64() as *const u8, rd.size as usize) };
    let archive: &'static [u8] = match ramdisk::unpack(data, RAMDISK_LIMIT) {
        Ok(alloc::borrow::Cow::Borrowed(b)) => b,
        Ok(alloc::borrow::Cow::Owned(v)) => crate::runtime::vm::leak_bytes(v),
        Err(e) => {
            error!("kestrel: ramdisk refused: {e}");
            boot::power_off();
        }
    };
    let entries = match ramdisk::parse_vms(archive, RAMDISK_LIMIT) {
        Ok(e) => e,
        Err(e) => {
            error!("kestrel: ramdisk refused: {e}");
            boot::power_off();
        }
    };
    let mut specs = Vec::new();
    for e in entries {
        match e.spec {
            Ok(s) if s.config.autostart => specs.push(s),
            Ok(s) => info!(
                "kestrel: vm {}: autostart = false, not started",
                s.config.name
            ),
            Err(err) => error!("kestrel: vm {}: refused: {err}", e.dir),
        }
    }
    let cfgs: Vec<&crate::guest::config::VmConfig> = specs.iter().map(|s| &s.config).collect();
    let free = PAGES.stats().free_pages() * crate::addr::PAGE_SIZE;
    let host_owned = host_owned_ranges(platform);
    let verdicts = admit(
        &cfgs,
        &MachineResources {
            cpus: boot::cpus_online(),
            free_memory: free,
            host_owned: &host_owned,
        },
    );
    PAGES_AT_REST.store(PAGES.stats().used_pages as usize, Ordering::Relaxed);
    info!("kestrel: pages at rest: {} used", PAGES.stats().used_pages);
    for (spec, verdict) in specs.into_iter().zip(verdicts) {
        let name = spec.config.name.clone();
        match verdict {
            crate::guest::config::Admission::Refuse(r) => {
                error!("kestrel: vm {name}: refused: {r}");
            }
            crate::guest::config::Admission::Accept { physical_cpus } => {
                let images = Arc::new(VmImages {
                    config: spec.config,
                    kernel: spec.kernel,
                    initrd: spec.initrd,
                    dtb: spec.dtb,
                    layout: spec.layout,
                    kernel_info: spec.kernel_info,
                    disk_copies: crate::runtime::virtio::DiskCopies::new(spec.disks.len()),
                    disks: spec.disks,
                });
                let console = crate::runtime::console::add_vm(&name);
                if let Err(e) = create_and_start(images, physical_cpus, console) {
                    error!("kestrel: vm {name}: not started: {e}");
                }
            }
        }
    }
    if VMS_ALIVE.count() == 0 {
        info!("kestrel: no VM is running");
        boot::power_off();
    }
    idle()
}

static CONSOLE_IRQ: AtomicUsize = AtomicUsize::new(usize::MAX);
/// The host's PMU interrupt is PPI 23 (`gic::PPI_PMU`), which the vCPU on each CPU is given.
static PMU_FORWARDED: AtomicBool = AtomicBool::new(false);

/// Whether guests get the PMU overflow interrupt (PPI 23, forwarded by `exit::irq`): the
/// platform's PMU node names that PPI. Elsewhere (one SPI per CPU, as on the Pi 4) guests
/// count but do not sample.
pub fn pmu_forwarded() -> bool {
    PMU_FORWARDED.load(Ordering::Relaxed)
}

/// The console UART's interrupt (keyboard input), if it has one.
pub fn console_irq() -> usize {
    CONSOLE_IRQ.load(Ordering::Relaxed)
}

fn create_and_start(
    images: Arc<VmImages>,
    pcpus: Vec<usize>,
    console: usize,
) -> Result<(), crate::runtime::vm::VmBuildError> {
    let Some(m) = MACHINE.get() else {
        return Ok(());
    };
    let id = {
        let mut vms = VMS.lock();
        match vms.iter().position(|v| v.is_none()) {
            Some(i) => i,
            None => {
                vms.push(None);
                vms.len() - 1
            }
        }
    };
    let vm = Arc::new(Vm::build(id, images, pcpus, console, m)?);
    let entry = vm.layout.kernel_entry.as_u64();
    let dtb = vm.layout.dtb.as_u64();
    claim_passthrough(&vm)?;
    info!(
        "kestrel: vm {} (id {id}): {} vCPUs on pCPUs {:?}, {} MiB at {:#x}, entry {entry:#x}",
        vm.name,
        vm.mpidrs.len(),
        vm.pcpus,
        vm.images.config.memory >> 20,
        vm.layout.ram.start.as_u64()
    );
    for r in vm.memmap.regions() {
        info!(
            "kestrel: vm {}: {} IPA {:#x}..{:#x} at PA {:#x}..{:#x}",
            vm.name,
            match r.kind {
                crate::mm::stage2::RegionKind::Ram => "RAM",
                crate::mm::stage2::RegionKind::Device => "device",
            },
            r.ipa.as_u64(),
            r.ipa.as_u64() + r.size,
            r.pa.as_u64(),
            r.pa.as_u64() + r.size
        );
    }
    VMS.lock()[id] = Some(vm.clone());
    VMS_ALIVE.started();
    let pcpu = vm.pcpus[0];
    post_start(
        pcpu,
        StartRequest {
            vm,
            vcpu: 0,
            entry,
            x0: dtb,
        },
    );
    Ok(())
}

/// Hands a start request to physical CPU `pcpu` and wakes it.
pub fn post_start(pcpu: usize, req: StartRequest) {
    if let Some(slot) = SLOTS.get(pcpu) {
        *slot.mailbox.lock() = Some(req);
        if pcpu == cpu::current_index() {
            return;
        }
        gic::send_sgi(pcpu, gic::SGI_KICK);
    }
}

/// Kicks the physical CPUs of the vCPUs in `mask` (other than this one) so they pick up new
/// interrupt state or a stop request.
#[inline]
pub fn kick(vm: &Vm, mask: VcpuMask, me: usize) {
    let m = crate::vgic::others(mask, me);
    if m != 0 {
        kick_others(vm, m);
    }
}

fn kick_others(vm: &Vm, mut m: VcpuMask) {
    while m != 0 {
        let v = m.trailing_zeros() as usize;
        m &= m - 1;
        if let Some(&p) = vm.pcpus.get(v) {
            gic::send_sgi(p, gic::SGI_KICK);
        }
    }
}

/// The idle loop of a physical CPU with no vCPU (on a fresh stack).
#[unsafe(no_mangle)]
pub extern "C" fn kestrel_idle() -> ! {
    idle()
}

pub fn secondary_idle() -> ! {
    idle()
}

fn idle() -> ! {
    let me = cpu::current_index();
    loop {
        if PANICKING.load(Ordering::Relaxed) {
            cpu::halt();
        }
        let req = SLOTS[me].mailbox.lock().take();
        if let Some(req) = req {
            start_vcpu(req);
        }
        aarch64_cpu::asm::wfi();
        while let Some(a) = gic::ack() {
            gic::priority_drop(a);
            if a.intid as usize == CONSOLE_IRQ.load(Ordering::Relaxed) {
                console_input();
            } else if let Some(owner) = passthrough_owner(a.intid) {
                // A passthrough interrupt whose VM does not run here right now: pend it in the
                // VM's GIC and leave it active; the vCPU that takes it deactivates it.
                let vm = VMS.lock().get(owner).cloned().flatten();
                if let Some(vm) = vm
                    && let Ok(mask) = vm.vgic.set_spi_level(a.intid, true)
                {
                    kick(&vm, mask, usize::MAX);
                    continue;
                }
            }
            gic::deactivate(a);
        }
        dump_if_asked(None);
    }
}

/// Starts a vCPU on this physical CPU; returns only if the VM is stopping.
fn start_vcpu(req: StartRequest) {
    let vm = req.vm;
    {
        let mut run = vm.run.lock();
        if run.stopping.is_some() {
            return;
        }
        run.running += 1;
    }
    let idx = req.vcpu;
    let mpidr = vm.mpidrs.get(idx).copied().unwrap_or(0);
    vcpu_hw::reset_el1();
    vcpu_hw::configure_el2(vm.vttbr, vm.vtcr, mpidr, vm.fwb);
    vcpu_hw::reset_fp_state();
    if let Some(m) = MACHINE.get() {
        crate::arch::aarch64::mitigation::prepare_cpu(&m.smccc);
    }
    // A VMID may have been used before: drop whatever this CPU's TLB holds for it.
    // SAFETY: TLB invalidation for the VMID just loaded; no memory effect.
    unsafe { core::arch::asm!("tlbi vmalls12e1", "dsb nsh", "isb", options(nostack)) };
    let mut lrs = HwListRegisters::new();
    let Ok(mut vgic) = vm.vgic.new_cpu(idx) else {
        error!("kestrel: vm {}: vCPU {idx} has no vGIC state", vm.name);
        vm.run.lock().running -= 1;
        return;
    };
    let others = vm.vgic.reset_cpu(&mut vgic, &mut lrs);
    kick(&vm, others, idx);
    for ppi in [gic::PPI_VTIMER, gic::PPI_PTIMER, gic::PPI_PMU] {
        if ppi == gic::PPI_PMU && !pmu_forwarded() {
            continue;
        }
        let _ = vm.vgic.map_phys_ppi(idx, ppi, ppi, vtimer_hw_linked());
    }
    let frame = vcpu_hw::this_cpu_frame();
    *frame = GuestRegs {
        pc: req.entry,
        pstate: pstate::RESET,
        ..Default::default()
    };
    frame.x[0] = req.x0;
    let vm2 = vm.clone();
    set_this_vcpu(Some(Vcpu {
        vm,
        index: idx,
        memcache: MemCache::new(),
        vgic,
        lrs,
    }));
    if let Some(v) = this_vcpu() {
        let kick_mask = vm2.vgic.flush_to_lrs(&mut v.vgic, &mut v.lrs);
        kick(&vm2, kick_mask, idx);
    }
    drop(vm2);
    vcpu_hw::enter_guest(frame)
}

/// Stops the vCPU running on this CPU and returns the CPU to the idle loop. If it was the VM's
/// last running vCPU and the VM is stopping, the VM ends here.
pub fn park() -> ! {
    let cur = {
        let slot = &SLOTS[cpu::current_index()];
        // SAFETY: as in `this_vcpu`; the exit handler holds no reference across this call.
        unsafe { (*slot.vcpu.get()).take() }
    };
    let mut cur = cur;
    if let Some(v) = cur.as_mut() {
        // Hand back what the LRs hold while they are still readable: pending state to the
        // model (SPIs to their other targets), the physical interrupts the guest will now
        // never deactivate deactivated.
        let others = v.vm.vgic.vcpu_off(&mut v.vgic, &mut v.lrs);
        kick(&v.vm, others, v.index);
    }
    vcpu_hw::quiesce_guest();
    gic::disable_virtual_interface();
    if let Some(mut v) = cur {
        v.memcache
            .drain(&PAGES, &crate::arch::aarch64::stage2_hw::HypTableMemory);
        let vm = v.vm.clone();
        drop(v);
        let last = {
            let mut run = vm.run.lock();
            run.running -= 1;
            run.running == 0 && run.stopping.is_some()
        };
        if last {
            end_vm(vm);
        }
    }
    vcpu_hw::idle_on_fresh_stack()
}

/// Asks every vCPU of `vm` to stop (`kind` says why); the caller then parks its own vCPU.
pub fn stop_vm(vm: &Vm, kind: StopKind, me: usize) {
    vm.request_stop(kind);
    kick(vm, u64::MAX >> (64 - vm.pcpus.len().min(64)), me);
}

fn end_vm(vm: Arc<Vm>) {
    let kind = vm.stopping().unwrap_or(StopKind::PowerOff);
    let name = vm.name.clone();
    let images = vm.images.clone();
    let pcpus = vm.pcpus.clone();
    let console = vm.console;
    crate::runtime::console::vm_ended(console);
    info!("kestrel: vm {name}: counters: {}", vm.counters_line());
    let id = vm.id;
    VMS.lock()[id] = None;
    // Drop the last reference: frees the stage-2 tables, the VMID, scrubs and frees the RAM.
    drop(vm);
    let restart = kind == StopKind::Reset && images.config.on_reset == OnReset::Restart;
    if !restart {
        // Writable disks' copies last until the VM ends for good.
        images.disk_copies.release();
    }
    let used = PAGES.stats().used_pages;
    info!(
        "kestrel: vm {name}: {} (pages used {used}, at rest {})",
        match kind {
            StopKind::PowerOff => "powered off",
            StopKind::Reset => "reset",
            StopKind::Crashed => "stopped after a crash",
        },
        PAGES_AT_REST.load(Ordering::Relaxed)
    );
    if restart {
        info!("kestrel: vm {name}: restarting");
        // On success the new VM is counted before this one's end is: the machine stays on.
        if let Err(e) = create_and_start(images, pcpus, console) {
            error!("kestrel: vm {name}: restart failed: {e}");
        }
    }
    if VMS_ALIVE.ended() {
        let used = PAGES.stats().used_pages;
        let at_rest = PAGES_AT_REST.load(Ordering::Relaxed) as u64;
        if used == at_rest {
            info!(
                "kestrel: all VMs ended; page accounting back to its starting figure ({used} used)"
            );
        } else {
            warn!("kestrel: all VMs ended; pages used {used}, expected {at_rest}");
        }
        boot::power_off();
    }
}

/// Reads pending console input and hands it to the focused VM's emulated UART.
pub fn console_input() {
    while let Some(b) = crate::arch::aarch64::console::read_byte() {
        match crate::runtime::console::input(b) {
            crate::console_mux::Input::ToVm(i, byte) => {
                let vm = VMS
                    .lock()
                    .iter()
                    .flatten()
                    .find(|v| v.console == i)
                    .cloned();
                if let Some(vm) = vm {
                    let mut fx = crate::vdev::Effects::new();
                    vm.console_input(&[byte], &mut fx);
                    crate::runtime::exit::apply_effects(&vm, usize::MAX, &fx);
                }
            }
            crate::console_mux::Input::Focus(i) => {
                info!("kestrel: console input now goes to VM console {}", i + 1);
            }
            crate::console_mux::Input::Command(b'd') => request_dump(),
            crate::console_mux::Input::Command(b'l') => toggle_dirty_log(),
            crate::console_mux::Input::Command(_) => info!(
                "kestrel: console keys: Ctrl-A 1..9 focus VM n, Ctrl-A n next VM, Ctrl-A Ctrl-A \
                 literal Ctrl-A, Ctrl-A d dump hypervisor state, Ctrl-A l start/stop dirty logging of the focused \
                 VM, Ctrl-A h this help"
            ),
            crate::console_mux::Input::None => {}
        }
    }
}

/// After a panic: stop every other CPU.
pub fn stop_all_cpus() {
    PANICKING.store(true, Ordering::SeqCst);
    let me = cpu::current_index();
    if gic::version().is_some() {
        for i in 0..boot::cpus_online() {
            if i != me {
                gic::send_sgi(i, gic::SGI_KICK);
            }
        }
    }
}

pub fn panicking() -> bool {
    PANICKING.load(Ordering::Relaxed)
}

static DUMP: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// Prints every VM's summary and asks every CPU to print its vCPU's state.
pub fn request_dump() {
    let vms: Vec<Arc<Vm>> = VMS.lock().iter().flatten().cloned().collect();
    for vm in &vms {
        let run = vm.run.lock();
        info!(
            "kestrel: dump: vm {} running={} stopping={:?}; {}",
            vm.name,
            run.running,
            run.stopping,
            vm.counters_line()
        );
    }
    let me = cpu::current_index();
    for (i, flag) in DUMP.iter().enumerate().take(boot::cpus_online()) {
        flag.store(true, Ordering::SeqCst);
        if i != me {
            gic::send_sgi(i, gic::SGI_KICK);
        }
    }
}

/// Prints this CPU's vCPU state if a dump was asked for (`frame`: the guest registers when
/// called from the exit path).
#[inline]
pub fn dump_if_asked(frame: Option<&GuestRegs>) {
    let me = cpu::current_index();
    if DUMP[me].load(Ordering::Relaxed) {
        dump(me, frame);
    }
}

#[inline(never)]
fn dump(me: usize, frame: Option<&GuestRegs>) {
    if !DUMP[me].swap(false, Ordering::SeqCst) {
        return;
    }
    let Some(v) = this_vcpu() else {
        info!("kestrel: dump: cpu{me}: idle");
        return;
    };
    let mut lrs = alloc::string::String::new();
    for i in 0..gic::lr_count() {
        use core::fmt::Write;
        let _ = write!(lrs, " {:#x}", gic::read_lr(i));
    }
    info!(
        "kestrel: dump: cpu{me}: vm {} vcpu {} pc {:#x} pstate {:#x}; LRs{lrs}; empty {:#x} eoi {:#x} \
         misr {:#x}; vgic {}",
        v.vm.name,
        v.index,
        frame.map(|f| f.pc).unwrap_or(0),
        frame.map(|f| f.pstate).unwrap_or(0),
        gic::empty_lrs(),
        gic::eoi_lrs(),
        gic::read_misr(),
        v.vm.vgic.debug_summary(v.index)
    );
}

/// Owner (VM id + 1) of each physical interrupt forwarded to a VM; 0 when none.
static PASSTHROUGH: [AtomicUsize; 1024] = [const { AtomicUsize::new(0) }; 1024];

/// What no VM may be given as a passthrough device: all RAM, every GIC frame, the console.
fn host_owned_ranges(platform: &Platform) -> Vec<HostOwned> {
    let mut out: Vec<HostOwned> = platform
        .memory
        .iter()
        .map(|r| HostOwned {
            base: r.start.as_u64(),
            size: r.size,
            what: "RAM",
        })
        .collect();
    let g = &platform.gic;
    let mut frame = |r: &crate::addr::Range<crate::addr::PhysAddr>, what| {
        out.push(HostOwned {
            base: r.start.as_u64(),
            size: r.size,
            what,
        })
    };
    frame(&g.gicd, "GIC distributor");
    for r in &g.gicr {
        frame(r, "GIC redistributors");
    }
    let optional = [
        (g.gicc, "GIC CPU interface"),
        (g.gich, "GIC virtual interface control"),
        (g.gicv, "GIC virtual CPU interface"),
        (g.its, "GIC ITS"),
    ];
    for (r, what) in optional {
        if let Some(r) = r {
            frame(&r, what);
        }
    }
    frame(
        &crate::addr::Range::new(platform.console.base.align_down(0x1000), 0x1000),
        "console UART",
    );
    out
}

/// Takes the VM's passthrough interrupts and routes them to its first vCPU's physical CPU.
fn claim_passthrough(vm: &Vm) -> Result<(), crate::runtime::vm::VmBuildError> {
    for (n, &intid) in vm.passthrough.iter().enumerate() {
        let Some(slot) = PASSTHROUGH.get(intid as usize) else {
            continue;
        };
        if slot
            .compare_exchange(0, vm.id + 1, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            for &i in &vm.passthrough[..n] {
                if let Some(s) = PASSTHROUGH.get(i as usize) {
                    s.store(0, Ordering::Release);
                }
            }
            return Err(crate::runtime::vm::VmBuildError::InterruptTaken(intid));
        }
    }
    for &intid in &vm.passthrough {
        let edge = vm.vgic.edge_triggered(intid).unwrap_or(false);
        gic::enable_spi(intid, vm.pcpus.first().copied().unwrap_or(0), edge);
    }
    Ok(())
}

/// Configures each of the VM's passthrough interrupts with the trigger mode the guest gave
/// its virtual SPI (GICD_ICFGR): an edge-triggered device configured level-sensitive loses the
/// edges that come and go before the CPU takes them.
pub fn match_passthrough_triggers(vm: &Vm) {
    for &intid in &vm.passthrough {
        if passthrough_owner(intid) == Some(vm.id)
            && let Ok(edge) = vm.vgic.edge_triggered(intid)
        {
            gic::set_spi_trigger(intid, edge);
        }
    }
}

/// Gives a VM's passthrough interrupts back (at VM end): disabled, inactive, unowned.
pub fn release_passthrough(vm: &Vm) {
    for &intid in &vm.passthrough {
        if let Some(slot) = PASSTHROUGH.get(intid as usize)
            && slot.load(Ordering::Acquire) == vm.id + 1
        {
            gic::disable_spi(intid);
            gic::clear_active_spi(intid);
            slot.store(0, Ordering::Release);
        }
    }
}

/// The VM id a physical interrupt is forwarded to.
#[inline]
pub fn passthrough_owner(intid: u32) -> Option<usize> {
    let v = PASSTHROUGH.get(intid as usize)?.load(Ordering::Relaxed);
    v.checked_sub(1)
}

/// Ctrl-A l: starts or stops dirty logging of the VM the keyboard goes to.
fn toggle_dirty_log() {
    let focus = crate::runtime::console::focus();
    let vm = VMS
        .lock()
        .iter()
        .flatten()
        .find(|v| v.console == focus)
        .cloned();
    let Some(vm) = vm else {
        info!("kestrel: no VM to log");
        return;
    };
    match vm.toggle_dirty_log() {
        Ok(crate::runtime::vm::DirtyLogChange::Started) => {
            info!("kestrel: vm {}: dirty logging started", vm.name);
        }
        Ok(crate::runtime::vm::DirtyLogChange::Stopped { dirty_pages }) => {
            info!(
                "kestrel: vm {}: dirty logging stopped: {dirty_pages} pages dirty; stage2 {}",
                vm.name,
                vm.s2_stats()
            );
        }
        Err(e) => error!("kestrel: vm {}: dirty logging: {e:?}", vm.name),
    }
}
