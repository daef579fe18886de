//! The VM registry and the VMs' lifecycle: reads the ramdisk into VMs at boot and starts them,
//! stops a VM (every vCPU asked to leave its CPU), ends it when its last vCPU has left (the
//! counters line, the `Drop` that frees everything, a restart for `on_reset = "restart"`), and
//! powers the machine off when no VM is left.
//!
//! Above the per-CPU slots (`percpu`): starting a VM posts its boot vCPU to a CPU's mailbox,
//! stopping one kicks its CPUs; `percpu` calls back into [`end_vm`] through the hook installed
//! at boot when a stopping VM's last vCPU has left.
use crate::guest::config::{CpuSharing, MachineResources, OnReset, Placed, admit_alongside};
use crate::guest::ramdisk;
use crate::mm::PAGES;
use crate::platform::Platform;
use crate::runtime::machine::{self, MachineView, power_off};
use crate::runtime::percpu::{self, StartRequest};
use crate::runtime::vm::{StopKind, Vm, VmImages};
use crate::runtime::{console, passthrough};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicUsize, Ordering};
use log::{error, info, warn};
use spin::Mutex;

/// Largest decompressed ramdisk (and kernel) accepted.
const RAMDISK_LIMIT: usize = 1 << 30;

/// VMs by id.
static VMS: Mutex<Vec<Option<Arc<Vm>>>> = Mutex::new(Vec::new());
/// Every VM of the ramdisk that parsed (running or not, `autostart = false` ones included),
/// for the console's `start`; with its console, once it has one.
static CATALOG: Mutex<Vec<(Arc<VmImages>, Option<usize>)>> = Mutex::new(Vec::new());
/// The platform, for admission at run time (`start`).
static PLATFORM: spin::Once<&'static Platform> = spin::Once::new();
static VMS_ALIVE: crate::lifecycle::LiveVms = crate::lifecycle::LiveVms::new();
/// Page-allocator figure once the hypervisor is set up, before any VM: the "starting figure"
/// that the accounting must return to when every VM is gone.
static PAGES_AT_REST: AtomicUsize = AtomicUsize::new(0);

/// The VM with id `id`, if it runs.
pub fn by_id(id: usize) -> Option<Arc<Vm>> {
    VMS.lock().get(id).cloned().flatten()
}

/// The running VM whose console is console `i` of the multiplexer.
pub fn by_console(i: usize) -> Option<Arc<Vm>> {
    VMS.lock()
        .iter()
        .flatten()
        .find(|v| v.console == i)
        .cloned()
}

/// Every running VM.
pub fn all() -> Vec<Arc<Vm>> {
    VMS.lock().iter().flatten().cloned().collect()
}

/// Boot CPU, after platform set-up: builds the VMs of the ramdisk and starts them (the caller
/// then joins the other CPUs in the idle loop); powers the machine off when none runs.
pub fn run(platform: &'static Platform) {
    crate::arch::aarch64::console::set_line_hook(console::hypervisor_line);
    percpu::set_vm_left_hook(end_vm);
    let pa_range = {
        use aarch64_cpu::registers::{ID_AA64MMFR0_EL1, Readable};
        crate::mm::stage2::PaRange::from_id_field(ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange))
            .unwrap_or(crate::mm::stage2::PaRange::Bits40)
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
    machine::set_view(MachineView {
        smccc,
        fwb,
        gic_v3: platform.gic.version == crate::platform::GicVersion::V3,
        gicv: platform.gic.gicv.map(|r| r.start),
        pa_range,
        vmid16,
    });
    machine::set_pmu_forwarded(platform.pmu_intid == Some(crate::arch::aarch64::gic::PPI_PMU));
    if let Some(intid) = platform.console.intid {
        crate::arch::aarch64::console::enable_rx_interrupt();
        crate::arch::aarch64::gic::enable_spi(intid, 0, false);
        machine::set_console_irq(intid);
    }
    let Some(rd) = platform.initrd else {
        info!("kestrel: no ramdisk (initrd) given: no VMs to run");
        power_off();
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
            power_off();
        }
    };
    let entries = match ramdisk::parse_vms(archive, RAMDISK_LIMIT) {
        Ok(e) => e,
        Err(e) => {
            error!("kestrel: ramdisk refused: {e}");
            power_off();
        }
    };
    PLATFORM.call_once(|| platform);
    let mut specs = Vec::new();
    for e in entries {
        match e.spec {
            Ok(s) if s.config.autostart => specs.push(s),
            Ok(s) => {
                info!(
                    "kestrel: vm {}: autostart = false, not started",
                    s.config.name
                );
                CATALOG.lock().push((Arc::new(images_of(s)), None));
            }
            Err(err) => error!("kestrel: vm {}: refused: {err}", e.dir),
        }
    }
    let cfgs: Vec<&crate::guest::config::VmConfig> = specs.iter().map(|s| &s.config).collect();
    let free = PAGES.stats().free_pages() * crate::addr::PAGE_SIZE;
    let host_owned = passthrough::host_owned_ranges(platform);
    // vCPUs share physical CPUs: pinned as configured, the others on the least loaded CPUs.
    let verdicts = admit_alongside(
        &[],
        &cfgs,
        &MachineResources {
            cpus: machine::cpus_online(),
            free_memory: free,
            host_owned: &host_owned,
        },
        CpuSharing::Shared,
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
                let images = Arc::new(images_of(spec));
                let console = console::add_vm(&name);
                CATALOG.lock().push((images.clone(), Some(console)));
                if let Err(e) = create_and_start(images, physical_cpus, console) {
                    error!("kestrel: vm {name}: not started: {e}");
                }
            }
        }
    }
    if VMS_ALIVE.count() == 0 {
        info!("kestrel: no VM is running");
        power_off();
    }
}

fn images_of(spec: ramdisk::VmSpec<'static>) -> VmImages {
    VmImages {
        config: spec.config,
        kernel: spec.kernel,
        initrd: spec.initrd,
        dtb: spec.dtb,
        layout: spec.layout,
        kernel_info: spec.kernel_info,
        disk_copies: crate::runtime::virtio::DiskCopies::new(spec.disks.len()),
        disks: spec.disks,
    }
}

/// Carries out a command typed at the console's `Ctrl-A :` prompt; answers as hypervisor
/// log lines.
pub fn console_command(cmd: &crate::console_cmd::Command) {
    use crate::console_cmd::{self, Resolved, VmEntry};
    let catalog: Vec<(Arc<VmImages>, Option<usize>)> = CATALOG.lock().clone();
    let running = all();
    let by_name = |name: &str| running.iter().find(|v| v.name == name).cloned();
    let entries: Vec<VmEntry> = catalog
        .iter()
        .map(|(im, _)| VmEntry {
            name: &im.config.name,
            running: by_name(&im.config.name).is_some(),
        })
        .collect();
    let resolved = match console_cmd::resolve(cmd, &entries) {
        Ok(r) => r,
        Err(e) => {
            info!("kestrel: {e}");
            return;
        }
    };
    match resolved {
        Resolved::Help => {
            for l in console_cmd::HELP {
                info!("kestrel: {l}");
            }
        }
        Resolved::List => {
            let summaries: Vec<console_cmd::VmSummary> = catalog
                .iter()
                .map(|(im, _)| {
                    let vm = by_name(&im.config.name);
                    console_cmd::VmSummary {
                        name: im.config.name.clone(),
                        vcpus: vm
                            .as_ref()
                            .map(|v| v.pcpus.iter().map(|&p| Some(p)).collect()),
                        memory: im.config.memory,
                        exits: vm.as_ref().map_or(0, |v| v.exit_count()),
                        steal_ns: vm.as_ref().map_or(0, |v| {
                            v.pcpus
                                .iter()
                                .enumerate()
                                .map(|(i, &p)| {
                                    let queued = percpu::steal_ticks(v.id, i, p);
                                    v.pv_time.stolen.total_ns(i, queued)
                                })
                                .sum()
                        }),
                    }
                })
                .collect();
            for l in console_cmd::list_lines(&summaries) {
                info!("kestrel: {l}");
            }
        }
        Resolved::Stop(i) | Resolved::Reset(i) => {
            if let Some(vm) = by_name(&catalog[i].0.config.name) {
                let (kind, what) = if matches!(resolved, Resolved::Stop(_)) {
                    (StopKind::PowerOff, "stop")
                } else {
                    (StopKind::Reset, "reset")
                };
                info!("kestrel: vm {}: {what} asked from the console", vm.name);
                stop_vm(&vm, kind, usize::MAX);
            }
        }
        Resolved::Start(i) => {
            let (images, console) = catalog[i].clone();
            start_from_console(images, console, &running);
        }
    }
}

/// `start NAME`: admission beside the running VMs (memory, devices, CPUs shared), then the
/// VM is built and started as at boot.
fn start_from_console(images: Arc<VmImages>, console: Option<usize>, running: &[Arc<Vm>]) {
    let name = images.config.name.clone();
    let Some(platform) = PLATFORM.get() else {
        return;
    };
    let placed: Vec<Placed> = running
        .iter()
        .map(|v| Placed {
            config: &v.images.config,
            physical_cpus: &v.pcpus,
        })
        .collect();
    let host_owned = passthrough::host_owned_ranges(platform);
    let verdict = admit_alongside(
        &placed,
        &[&images.config],
        &MachineResources {
            cpus: machine::cpus_online(),
            free_memory: PAGES.stats().free_pages() * crate::addr::PAGE_SIZE,
            host_owned: &host_owned,
        },
        CpuSharing::Shared,
    );
    match verdict.into_iter().next() {
        Some(crate::guest::config::Admission::Accept { physical_cpus }) => {
            let console = console.unwrap_or_else(|| {
                let c = console::add_vm(&name);
                if let Some(e) = CATALOG
                    .lock()
                    .iter_mut()
                    .find(|(im, _)| im.config.name == name)
                {
                    e.1 = Some(c);
                }
                c
            });
            info!("kestrel: vm {name}: starting (asked from the console)");
            if let Err(e) = create_and_start(images, physical_cpus, console) {
                error!("kestrel: vm {name}: not started: {e}");
            }
        }
        Some(crate::guest::config::Admission::Refuse(r)) => {
            error!("kestrel: vm {name}: refused: {r}");
        }
        None => {}
    }
}

fn create_and_start(
    images: Arc<VmImages>,
    pcpus: Vec<usize>,
    console: usize,
) -> Result<(), crate::runtime::vm::VmBuildError> {
    let Some(m) = machine::view() else {
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
    vm.claim_passthrough()?;
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
                crate::mm::stage2::RegionKind::HypervisorData => "stolen-time records",
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
    percpu::post_start(
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

/// Asks every vCPU of `vm` to stop (`kind` says why); the caller then parks its own vCPU, if
/// it is one of them (`me`: its index, or `usize::MAX`).
pub fn stop_vm(vm: &Vm, kind: StopKind, me: usize) {
    let _ = me;
    vm.request_stop(kind);
    percpu::kick_to_stop(vm);
}

/// A stopping VM's last vCPU has left its CPU: the VM ends (and restarts, if it was reset and
/// asks for that); the machine powers off when it was the last.
fn end_vm(vm: Arc<Vm>) {
    let kind = vm.stopping().unwrap_or(StopKind::PowerOff);
    let name = vm.name.clone();
    let images = vm.images.clone();
    let pcpus = vm.pcpus.clone();
    let console = vm.console;
    console::vm_ended(console);
    let dropped = vm.guest_warnings_dropped();
    if dropped > 0 {
        warn!("kestrel: vm {name}: {dropped} warnings about this guest suppressed");
    }
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
        power_off();
    }
}
