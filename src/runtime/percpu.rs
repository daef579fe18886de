//! Each physical CPU's slot: the vCPU loaded on it, the vCPUs placed on it that wait (switched
//! out, or not yet started), its run queue, its mailbox of vCPU start requests, and the kick
//! that makes it look at new interrupt state or a request. Starting, switching and stopping
//! (parking) vCPUs on this CPU live here too.
//!
//! Below the VM registry: this module knows VMs (a vCPU holds its `Vm`) but not the list of
//! them. When the last vCPU of a stopping VM leaves its CPU, it says so through the one hook
//! the registry installs ([`set_vm_left_hook`]); a CPU with nothing to run continues in the
//! idle loop (`runtime::idle`, reached through the `kestrel_idle` entry on a fresh stack).
//!
//! Sharing (docs/scheduling.md): a CPU's run queue ([`crate::sched::RunQueue`]) decides; this
//! module carries its decisions out ([`attend`]). A CPU with one vCPU placed on it keeps the
//! dedicated fast path: WFI/WFE untrapped, no hypervisor timer, kicks are a bare SGI, and the
//! exit path's only extra work is one load of the CPU's attention flag.
use crate::arch::aarch64::boot::MAX_CPUS;
use crate::arch::aarch64::gic::{self, HwListRegisters};
use crate::arch::aarch64::vcpu_context::{self, SavedCpu};
use crate::arch::aarch64::{cpu, vcpu_hw};
use crate::mm::PAGES;
use crate::mm::stage2::MemCache;
use crate::runtime::machine;
use crate::runtime::vm::Vm;
use crate::sched::{Action, Decision, RunQueue, Tunables, VcpuId, VcpuParams};
use crate::vcpu::{GuestRegs, pstate};
use crate::vgic::{VcpuMask, VgicCpu};
use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
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
    /// What the exit being handled asks of the scheduler (a trapped WFI or WFE; set with
    /// [`Vcpu::ask`]).
    pub request: Option<SchedRequest>,
    /// Its CPU's attention flag (vCPUs do not move): the one load the dedicated exit path
    /// pays for sharing ([`Vcpu::needs_attention`]).
    attention: &'static AtomicBool,
    /// Its registers while it is switched out.
    saved: Option<Box<SavedVcpu>>,
}

impl Vcpu {
    /// Whether its CPU must call [`attend`] before it resumes a guest.
    #[inline(always)]
    pub fn needs_attention(&self) -> bool {
        self.attention.load(Ordering::Relaxed)
    }

    /// The exit being handled asks the scheduler for `r` (carried out by [`attend`]).
    pub fn ask(&mut self, r: SchedRequest) {
        self.request = Some(r);
        self.attention.store(true, Ordering::Relaxed);
    }

    fn id(&self) -> VcpuId {
        VcpuId {
            vm: self.vm.id,
            vcpu: self.index,
        }
    }
}

struct SavedVcpu {
    frame: GuestRegs,
    cpu: SavedCpu,
}

/// What a trapped instruction asks of the scheduler.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SchedRequest {
    /// WFI, PSCI CPU_SUSPEND: wait for an interrupt; WFIT also until `timeout` (a virtual
    /// counter value; CNTVOFF_EL2 is 0, so a physical one too).
    Block { timeout: Option<u64> },
    /// WFE: let another vCPU run.
    Yield,
}

/// A request to start vCPU `vcpu` of `vm` on a physical CPU.
pub struct StartRequest {
    pub vm: Arc<Vm>,
    pub vcpu: usize,
    pub entry: u64,
    pub x0: u64,
}

/// A vCPU placed on a CPU but not loaded there. Moved, not boxed: a switch allocates nothing.
#[allow(clippy::large_enum_variant)]
enum Waiting {
    /// Not started yet (runs from its entry point when first picked).
    Fresh(StartRequest),
    /// Switched out.
    Saved(Vcpu),
}

impl Waiting {
    fn id(&self) -> VcpuId {
        match self {
            Waiting::Fresh(r) => VcpuId {
                vm: r.vm.id,
                vcpu: r.vcpu,
            },
            Waiting::Saved(v) => v.id(),
        }
    }
    fn vm(&self) -> &Arc<Vm> {
        match self {
            Waiting::Fresh(r) => &r.vm,
            Waiting::Saved(v) => &v.vm,
        }
    }
}

struct CpuSlot {
    vcpu: UnsafeCell<Option<Vcpu>>,
    waiting: UnsafeCell<Vec<Waiting>>,
    mailbox: Mutex<Vec<StartRequest>>,
    queue: Mutex<Option<RunQueue>>,
    /// Kicks must go through the run queue: more than one vCPU is placed here, or the one
    /// placed here is blocked. Clear: the dedicated path (a kick is an SGI).
    scheduled: AtomicBool,
    /// The CPU must call [`attend`] before it resumes a guest: a start request, a stopping VM,
    /// a wake-up that changes its decision, its hypervisor timer.
    attention: AtomicBool,
    /// A state dump was asked for (`request_dump`).
    dump: AtomicBool,
}

// SAFETY: `vcpu` and `waiting` are only ever accessed by the physical CPU that owns the slot
// (see `this_vcpu`); the mailbox and queue are behind locks, the flags are atomic.
unsafe impl Sync for CpuSlot {}

static SLOTS: [CpuSlot; MAX_CPUS] = [const {
    CpuSlot {
        vcpu: UnsafeCell::new(None),
        waiting: UnsafeCell::new(Vec::new()),
        mailbox: Mutex::new(Vec::new()),
        queue: Mutex::new(None),
        scheduled: AtomicBool::new(false),
        attention: AtomicBool::new(false),
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

fn take_this_vcpu() -> Option<Vcpu> {
    let slot = &SLOTS[cpu::current_index()];
    // SAFETY: as in `this_vcpu`; callers hold no reference from `this_vcpu` across this call.
    unsafe { (*slot.vcpu.get()).take() }
}

fn set_this_vcpu(v: Option<Vcpu>) {
    let slot = &SLOTS[cpu::current_index()];
    // SAFETY: as in `this_vcpu`; no reference from `this_vcpu` is live here.
    unsafe { *slot.vcpu.get() = v };
}

#[allow(clippy::mut_from_ref)]
fn this_waiting() -> &'static mut Vec<Waiting> {
    let slot = &SLOTS[cpu::current_index()];
    // SAFETY: only this physical CPU touches its slot's waiting list, from code that does not
    // nest (exit handler, idle loop) and holds no other reference to it.
    unsafe { &mut *slot.waiting.get() }
}

/// The hypervisor timer fired on this CPU: off until the next decision arms it again.
pub fn hyp_timer_fired() {
    cpu::set_hyp_timer(None);
    SLOTS[cpu::current_index()]
        .attention
        .store(true, Ordering::Relaxed);
}

/// Whether this CPU runs more than one vCPU (WFI traps, CPU_SUSPEND blocks).
pub fn this_cpu_shared() -> bool {
    SLOTS[cpu::current_index()]
        .scheduled
        .load(Ordering::Relaxed)
}

/// Hands a start request to physical CPU `pcpu` and wakes it.
pub fn post_start(pcpu: usize, req: StartRequest) {
    if let Some(slot) = SLOTS.get(pcpu) {
        slot.mailbox.lock().push(req);
        slot.attention.store(true, Ordering::SeqCst);
        if pcpu == cpu::current_index() {
            return;
        }
        gic::send_sgi(pcpu, gic::SGI_KICK);
    }
}

/// Kicks the physical CPUs of the vCPUs in `mask` (other than vCPU `me` of the same VM) so they
/// pick up new interrupt state or a stop request.
#[inline]
pub fn kick(vm: &Vm, mask: VcpuMask, me: usize) {
    let m = crate::vgic::others(mask, me);
    if m != 0 {
        kick_vcpus(vm.id, &vm.pcpus, m);
    }
}

/// Kicks vCPUs `m` of VM `vm_id`, whose vCPU i is placed on physical CPU `pcpus[i]`: an
/// interrupt became pending for them. On a dedicated CPU that is an SGI (its vCPU flushes its
/// list registers at the exit it causes); on a shared one the vCPU is woken in the run queue
/// first, and the CPU is kicked only if it must decide again or runs that vCPU.
///
/// The dedicated case is on the path of every IPI, so it is a leaf that keeps nothing across
/// a call: at the first vCPU on a shared CPU the rest of the work goes to [`kick_from_shared`].
/// (With the run queue's handling in the same function, its register saves and set-up cost
/// the GICv3 IPI sender 44 instructions, qemu/kvm-unit-tests.sh micro-bench ipi 1,461 ->
/// 1,507; inlined into the exit handler instead, every other exit paid 10.)
#[inline(never)]
pub fn kick_vcpus(vm_id: usize, pcpus: &[usize], mut m: VcpuMask) {
    // Orders the interrupt state the caller made pending before the reads of `scheduled`
    // (a CPU sets it before any of its vCPUs can block; see `attend`).
    core::sync::atomic::fence(Ordering::SeqCst);
    while m != 0 {
        let v = m.trailing_zeros() as usize;
        let Some((&p, slot)) = pcpus.get(v).and_then(|p| Some((p, SLOTS.get(*p)?))) else {
            m &= m - 1;
            continue;
        };
        if slot.scheduled.load(Ordering::SeqCst) {
            return kick_from_shared(vm_id, pcpus, m);
        }
        m &= m - 1;
        if p != cpu::current_index() {
            gic::send_sgi(p, gic::SGI_KICK);
        }
    }
}

/// [`kick_vcpus`] from the first vCPU of `m` that is on a shared CPU on (the fence is done).
#[cold]
#[inline(never)]
fn kick_from_shared(vm_id: usize, pcpus: &[usize], mut m: VcpuMask) {
    let here = cpu::current_index();
    while m != 0 {
        let v = m.trailing_zeros() as usize;
        m &= m - 1;
        let Some((&p, slot)) = pcpus.get(v).and_then(|p| Some((p, SLOTS.get(*p)?))) else {
            continue;
        };
        if !slot.scheduled.load(Ordering::SeqCst) {
            if p != here {
                gic::send_sgi(p, gic::SGI_KICK);
            }
            continue;
        }
        let id = VcpuId { vm: vm_id, vcpu: v };
        let (action, running) = match slot.queue.lock().as_mut() {
            Some(q) => (
                q.wake(id, cpu::counter()).unwrap_or(Action::None),
                q.current() == Some(id),
            ),
            None => (Action::None, false),
        };
        if action == Action::Reschedule {
            slot.attention.store(true, Ordering::SeqCst);
        }
        if (action == Action::Reschedule || running) && p != here {
            gic::send_sgi(p, gic::SGI_KICK);
        }
    }
}

/// Run-queue wait (stolen time) of vCPU `vcpu` of VM `vm_id`, placed on CPU `pcpu`, in ticks.
pub fn steal_ticks(vm_id: usize, vcpu: usize, pcpu: usize) -> u64 {
    let Some(slot) = SLOTS.get(pcpu) else {
        return 0;
    };
    let id = VcpuId { vm: vm_id, vcpu };
    slot.queue
        .lock()
        .as_ref()
        .and_then(|q| q.stats(id, cpu::counter()))
        .map_or(0, |s| s.steal)
}

/// A VM is stopping: every CPU it has a vCPU on takes them off (a loaded one at its next exit,
/// a waiting one when the CPU attends).
pub fn kick_to_stop(vm: &Vm) {
    let here = cpu::current_index();
    let mut done = 0u64;
    for &p in &vm.pcpus {
        let Some(slot) = SLOTS.get(p) else { continue };
        if p < 64 && done & (1 << p) != 0 {
            continue;
        }
        done |= 1u64.checked_shl(p as u32).unwrap_or(0);
        slot.attention.store(true, Ordering::SeqCst);
        if p != here {
            gic::send_sgi(p, gic::SGI_KICK);
        }
    }
}

fn queue_of_this_cpu() -> spin::MutexGuard<'static, Option<RunQueue>> {
    let mut q = SLOTS[cpu::current_index()].queue.lock();
    if q.is_none() {
        *q = Some(RunQueue::new(Tunables::for_counter(cpu::counter_freq())));
    }
    q
}

/// Carries out what this CPU was asked: start requests from its mailbox join its run queue,
/// waiting vCPUs of stopping VMs leave it, `request` (the loaded vCPU's trapped WFI/WFE) is
/// put to the queue, and the queue's decision is carried out: the vCPU to run is loaded into
/// `frame` (this CPU's guest frame), the hypervisor timer armed, WFI/WFE traps set. Returns
/// whether a vCPU is loaded; when none is, the caller goes to the idle loop.
pub fn attend(frame: &mut GuestRegs, request: Option<SchedRequest>) -> bool {
    let slot = &SLOTS[cpu::current_index()];
    slot.attention.store(false, Ordering::SeqCst);
    let now = cpu::counter();
    let requests: Vec<StartRequest> = core::mem::take(&mut *slot.mailbox.lock());
    for req in requests {
        if req.vm.stop_requested() {
            continue;
        }
        let id = VcpuId {
            vm: req.vm.id,
            vcpu: req.vcpu,
        };
        let cfg = &req.vm.images.config;
        let params = VcpuParams::from_config(cfg.weight, cfg.timeslice_us, cpu::counter_freq());
        let added = queue_of_this_cpu().as_mut().map(|q| q.add(id, params, now));
        match added {
            Some(Ok(_)) => this_waiting().push(Waiting::Fresh(req)),
            _ => error!(
                "kestrel: vm {}: vCPU {} is already placed on cpu{}",
                req.vm.name,
                req.vcpu,
                cpu::current_index()
            ),
        }
    }
    leave_stopping_vms(now);
    let mut kicks: Option<(Arc<Vm>, VcpuMask, usize)> = None;
    let decision = {
        let mut guard = queue_of_this_cpu();
        let Some(q) = guard.as_mut() else {
            return false;
        };
        let now = cpu::counter();
        match (request, this_vcpu()) {
            (Some(SchedRequest::Block { timeout }), Some(v)) => {
                // Under the queue's lock: an interrupt made pending after this check is
                // followed by the waker's `wake` (kick_vcpus), which waits for the lock.
                let k = v.vm.vgic.flush_to_lrs(&mut v.vgic, &mut v.lrs);
                kicks = Some((v.vm.clone(), k, v.index));
                let pending = (0..gic::lr_count().min(gic::SAVED_LRS))
                    .any(|i| gic::lr_pending(gic::read_lr(i)));
                if pending {
                    q.schedule(now)
                } else {
                    let deadline = match (vcpu_context::live_timer_deadline(), timeout) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    q.block(deadline, now).unwrap_or_else(|_| q.schedule(now))
                }
            }
            (Some(SchedRequest::Yield), Some(_)) => {
                q.yield_now(now).unwrap_or_else(|_| q.schedule(now))
            }
            _ => q.schedule(now),
        }
    };
    if let Some((vm, k, me)) = kicks {
        kick(&vm, k, me);
    }
    carry_out(frame, decision)
}

/// Takes every waiting vCPU of a stopping VM off this CPU.
fn leave_stopping_vms(now: u64) {
    let waiting = this_waiting();
    let mut i = 0;
    while i < waiting.len() {
        if !waiting[i].vm().stop_requested() {
            i += 1;
            continue;
        }
        let w = waiting.swap_remove(i);
        let id = w.id();
        if let Some(q) = queue_of_this_cpu().as_mut() {
            let _ = q.remove(id, now);
        }
        if let Waiting::Saved(v) = w {
            retire_saved(v);
        }
    }
}

/// Loads or switches to the vCPU `d` names; see [`attend`].
fn carry_out(frame: &mut GuestRegs, d: Decision) -> bool {
    let slot = &SLOTS[cpu::current_index()];
    let loaded = this_vcpu().map(|v| v.id());
    if loaded != d.run {
        if let Some(mut v) = take_this_vcpu() {
            switch_out(&mut v, frame);
            this_waiting().push(Waiting::Saved(v));
        }
        if let Some(id) = d.run {
            let waiting = this_waiting();
            let started = match waiting.iter().position(|w| w.id() == id) {
                Some(i) => match waiting.swap_remove(i) {
                    Waiting::Fresh(req) => start_here(req, frame),
                    Waiting::Saved(v) => {
                        switch_in(v, frame);
                        true
                    }
                },
                None => false,
            };
            if !started {
                // Its VM is stopping (or it is not here): off the queue, decide again.
                if let Some(q) = queue_of_this_cpu().as_mut() {
                    let _ = q.remove(id, cpu::counter());
                }
                slot.attention.store(true, Ordering::SeqCst);
            }
        }
        if this_vcpu().is_none() {
            gic::disable_virtual_interface();
        }
    }
    if this_vcpu().is_some() {
        vcpu_hw::set_wfx_traps(d.shared);
    }
    cpu::set_hyp_timer(d.timer);
    let scheduled = d.shared || (d.run.is_none() && !this_waiting().is_empty());
    slot.scheduled.store(scheduled, Ordering::SeqCst);
    this_vcpu().is_some()
}

/// Saves the loaded vCPU's state (registers from `frame`, the EL1 state, its vGIC interface).
fn switch_out(v: &mut Vcpu, frame: &GuestRegs) {
    let k = v.vm.vgic.sync_from_lrs(&mut v.vgic, &mut v.lrs);
    kick(&v.vm.clone(), k, v.index);
    let mut s = v.saved.take().unwrap_or_else(|| {
        Box::new(SavedVcpu {
            frame: GuestRegs::default(),
            cpu: SavedCpu::default(),
        })
    });
    s.frame = *frame;
    vcpu_context::save(&mut s.cpu);
    v.saved = Some(s);
}

/// Loads a vCPU saved by [`switch_out`] on this CPU.
fn switch_in(v: Vcpu, frame: &mut GuestRegs) {
    let mpidr = v.vm.mpidrs.get(v.index).copied().unwrap_or(0);
    vcpu_hw::configure_el2(v.vm.vttbr, v.vm.vtcr, mpidr, v.vm.fwb);
    if let Some(s) = v.saved.as_ref() {
        vcpu_context::restore(&s.cpu);
        *frame = s.frame;
    }
    let vm = v.vm.clone();
    let idx = v.index;
    publish_stolen_time(&vm, idx);
    set_this_vcpu(Some(v));
    if let Some(v) = this_vcpu() {
        let k = vm.vgic.flush_to_lrs(&mut v.vgic, &mut v.lrs);
        kick(&vm, k, idx);
    }
}

/// vCPU `idx` of `vm` is about to run on this CPU: its stolen-time record gets what its run
/// queue counted (`pv_time`). Only on a start or switch, never on the dedicated exit path.
fn publish_stolen_time(vm: &Vm, idx: usize) {
    let id = VcpuId {
        vm: vm.id,
        vcpu: idx,
    };
    let queued = queue_of_this_cpu()
        .as_ref()
        .and_then(|q| q.stats(id, cpu::counter()))
        .map_or(0, |s| s.steal);
    vm.pv_time.publish(idx, queued);
}

/// Starts a vCPU on this physical CPU: the EL1 state reset, the guest frame at its entry.
/// False when it cannot start (its VM is stopping).
fn start_here(req: StartRequest, frame: &mut GuestRegs) -> bool {
    let vm = req.vm;
    {
        let mut run = vm.run.lock();
        if run.stopping.is_some() {
            return false;
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
        return false;
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
    *frame = GuestRegs {
        pc: req.entry,
        pstate: pstate::RESET,
        ..Default::default()
    };
    frame.x[0] = req.x0;
    publish_stolen_time(&vm, idx);
    let vm2 = vm.clone();
    set_this_vcpu(Some(Vcpu {
        vm,
        index: idx,
        memcache: MemCache::new(),
        vgic,
        lrs,
        request: None,
        attention: &SLOTS[cpu::current_index()].attention,
        saved: None,
    }));
    if let Some(v) = this_vcpu() {
        let kick_mask = vm2.vgic.flush_to_lrs(&mut v.vgic, &mut v.lrs);
        kick(&vm2, kick_mask, idx);
    }
    true
}

/// The idle loop's side of [`attend`]: carries out what this CPU was asked and enters the
/// guest if a vCPU is loaded; returns when none is.
pub fn attend_idle() {
    let frame = vcpu_hw::this_cpu_frame();
    if attend(frame, None) {
        vcpu_hw::enter_guest(vcpu_hw::this_cpu_frame())
    }
}

/// Stops the vCPU running on this CPU and returns the CPU to the idle loop (which runs the
/// next vCPU placed here, if any). If it was the VM's last running vCPU and the VM is
/// stopping, the VM ends here (through the registry's hook).
pub fn park() -> ! {
    let cur = take_this_vcpu();
    if let Some(mut v) = cur {
        if let Some(q) = queue_of_this_cpu().as_mut()
            && let Ok((_, stats)) = q.remove(v.id(), cpu::counter())
        {
            // CPU_ON places it anew with a fresh count: its record goes on from here.
            v.vm.pv_time.stolen.left_queue(v.index, stats.steal);
        }
        // Hand back what the LRs hold while they are still readable: pending state to the
        // model (SPIs to their other targets), the physical interrupts the guest will now
        // never deactivate deactivated.
        let others = v.vm.vgic.vcpu_off(&mut v.vgic, &mut v.lrs);
        kick(&v.vm, others, v.index);
        vcpu_hw::quiesce_guest();
        gic::disable_virtual_interface();
        retire(v);
    } else {
        vcpu_hw::quiesce_guest();
        gic::disable_virtual_interface();
    }
    SLOTS[cpu::current_index()]
        .attention
        .store(true, Ordering::SeqCst);
    vcpu_hw::idle_on_fresh_stack()
}

/// A switched-out vCPU of a stopping VM leaves: what its saved list registers hold goes back
/// to the VM's vGIC as for a loaded one (`Vgic::vcpu_off`), its held physical interrupts are
/// deactivated (those of this CPU were already taken off the hardware when it was saved).
fn retire_saved(mut v: Vcpu) {
    if let Some(mut s) = v.saved.take() {
        let count = gic::lr_count().min(gic::SAVED_LRS);
        let mut lrs = SavedListRegisters {
            s: &mut s.cpu.vgic,
            count,
        };
        let others = v.vm.vgic.vcpu_off(&mut v.vgic, &mut lrs);
        kick(&v.vm, others, v.index);
    }
    retire(v);
}

/// The last of a vCPU that leaves its CPU for good: its page cache drained, the VM's count of
/// running vCPUs lowered, the VM ended if that was the last and it is stopping.
fn retire(mut v: Vcpu) {
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

/// The list registers of a switched-out vCPU, as saved: for handing their content back to
/// the vGIC model when the vCPU stops without being loaded again.
struct SavedListRegisters<'a> {
    s: &'a mut gic::VirtualInterface,
    count: usize,
}

impl crate::vgic::ListRegisters for SavedListRegisters<'_> {
    fn format(&self) -> crate::vgic::LrFormat {
        if machine::vtimer_hw_linked() {
            crate::vgic::LrFormat::V3
        } else {
            crate::vgic::LrFormat::V2
        }
    }
    fn count(&self) -> usize {
        self.count
    }
    fn read(&self, i: usize) -> u64 {
        self.s.lrs.get(i).copied().unwrap_or(0)
    }
    fn write(&mut self, i: usize, value: u64) {
        if let Some(l) = self.s.lrs.get_mut(i) {
            *l = value;
        }
    }
    fn empty_mask(&self) -> u64 {
        let mut m = 0;
        for i in 0..self.count {
            let lr = self.s.lrs[i];
            let state = if machine::vtimer_hw_linked() {
                lr >> 62
            } else {
                (lr >> 28) & 3
            };
            if state == 0 {
                m |= 1 << i;
            }
        }
        m
    }
    fn eoi_mask(&self) -> u64 {
        0
    }
    fn set_underflow_irq(&mut self, on: bool) {
        if on {
            self.s.hcr |= 2;
        } else {
            self.s.hcr &= !2;
        }
    }
    fn deactivate(&mut self, pintid: u32) {
        // This CPU's private interrupts of the vCPU were made inactive when it was saved.
        if pintid >= 32 {
            gic::clear_active_spi(pintid);
        }
    }
    fn line_level(&self, _pintid: u32) -> bool {
        // Its timers were switched off when it was saved.
        false
    }
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
