//! Each physical CPU's slot: the vCPU loaded on it, its mailbox of vCPU start requests, and the
//! kick that makes it look at new interrupt state or a request. Starting a vCPU on this CPU and
//! stopping (parking) it live here too.
//!
//! Below the VM registry: this module knows VMs (a vCPU holds its `Vm`) but not the list of
//! them. When the last vCPU of a stopping VM leaves its CPU, it says so through the one hook
//! the registry installs ([`set_vm_left_hook`]); a parked CPU continues in the idle loop
//! (`runtime::idle`, reached through the `kestrel_idle` entry on a fresh stack).
use crate::arch::aarch64::boot::MAX_CPUS;
use crate::arch::aarch64::gic::{self, HwListRegisters};
use crate::arch::aarch64::{cpu, vcpu_hw};
use crate::mm::PAGES;
use crate::mm::stage2::MemCache;
use crate::runtime::machine;
use crate::runtime::vm::Vm;
use crate::vcpu::{GuestRegs, pstate};
use crate::vgic::{VcpuMask, VgicCpu};
use alloc::sync::Arc;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};
use log::{error, info};
use spin::{Mutex, Once};

/// A vCPU as its physical CPU runs it.
pub struct Vcpu {
    pub vm: Arc<Vm>,
    pub index: usize,
    pub memcache: MemCache,
    pub vgic: VgicCpu,
    pub lrs: HwListRegisters,
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
    /// A state dump was asked for (`request_dump`).
    dump: AtomicBool,
}

// SAFETY: `vcpu` is only ever accessed by the physical CPU that owns the slot (see
// `this_vcpu`); the mailbox is behind a lock, `dump` is atomic.
unsafe impl Sync for CpuSlot {}

static SLOTS: [CpuSlot; MAX_CPUS] = [const {
    CpuSlot {
        vcpu: UnsafeCell::new(None),
        mailbox: Mutex::new(None),
        dump: AtomicBool::new(false),
    }
}; MAX_CPUS];

/// Called with a VM whose last vCPU just left its CPU while the VM was stopping: the VM
/// registry ends it (the one upward call of this module).
static VM_LEFT: Once<fn(Arc<Vm>)> = Once::new();

/// Installs what happens when the last vCPU of a stopping VM has left its CPU.
pub fn set_vm_left_hook(f: fn(Arc<Vm>)) {
    VM_LEFT.call_once(|| f);
}

/// The vCPU running on this physical CPU.
#[allow(clippy::mut_from_ref)]
#[inline]
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

/// The start request waiting for this CPU, if any (the idle loop carries it out).
pub fn take_start_request() -> Option<StartRequest> {
    SLOTS[cpu::current_index()].mailbox.lock().take()
}

/// Kicks the physical CPUs of the vCPUs in `mask` (other than vCPU `me` of the same VM) so they
/// pick up new interrupt state or a stop request.
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

/// Starts a vCPU on this physical CPU; returns only if the VM is stopping.
pub fn start_vcpu(req: StartRequest) {
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
    if let Some(m) = machine::view() {
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
        if ppi == gic::PPI_PMU && !machine::pmu_forwarded() {
            continue;
        }
        let _ = vm
            .vgic
            .map_phys_ppi(idx, ppi, ppi, machine::vtimer_hw_linked());
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
/// last running vCPU and the VM is stopping, the VM ends here (through the registry's hook).
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
        if last && let Some(left) = VM_LEFT.get() {
            left(vm);
        }
    }
    vcpu_hw::idle_on_fresh_stack()
}

/// After a panic: stop every other CPU.
pub fn stop_all_cpus() {
    machine::set_panicking();
    let me = cpu::current_index();
    if gic::version().is_some() {
        for i in 0..machine::cpus_online() {
            if i != me {
                gic::send_sgi(i, gic::SGI_KICK);
            }
        }
    }
}

/// Asks every CPU to print its vCPU's state (at its next exit or idle-loop round).
pub fn ask_all_to_dump() {
    let me = cpu::current_index();
    for (i, slot) in SLOTS.iter().enumerate().take(machine::cpus_online()) {
        slot.dump.store(true, Ordering::SeqCst);
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
    if SLOTS[me].dump.load(Ordering::Relaxed) {
        dump(me, frame);
    }
}

#[inline(never)]
fn dump(me: usize, frame: Option<&GuestRegs>) {
    if !SLOTS[me].dump.swap(false, Ordering::SeqCst) {
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
