//! The exit path: what happens when a guest traps to EL2. Called from vectors.S with the
//! guest's registers saved in `frame`; returning resumes the guest from `frame`.
//!
//! Fast paths first: an HVC (SMCCC/PSCI), a stage-2 fault on RAM, an access to an emulated
//! device, a physical interrupt for the vCPU. Anything the hypervisor does not handle becomes an
//! exception injected into the guest with a log line; the hypervisor carries on.
use crate::addr::Ipa;
use crate::arch::aarch64::gic;
use crate::arch::aarch64::id_space;
use crate::arch::aarch64::vcpu_hw::{self, LiveEl1};
use crate::arch::aarch64::{cpu, exception, stage2_hw};
use crate::mm::PAGES;
use crate::mm::stage2::AccessKind;
use crate::mm::stage2::{FaultKind, FaultOutcome, Stage2Error, Stage2Fault};
use crate::psci::PsciAction;
use crate::runtime::irq::{self, Handled};
use crate::runtime::percpu::{self, SchedRequest, Vcpu};
use crate::runtime::vm::{ExitStats, StopKind};
use crate::runtime::{effects, machine, passthrough, vms};
use crate::trap::esr::{self, Esr, ExceptionClass, FaultStatus, InjectedAbort, IpaSource, WfxKind};
use crate::trap::idregs;
use crate::vcpu::{GuestRegs, VectorKind, inject_exception, pstate};
use crate::vdev::{AccessCtx, Effects};
use aarch64_cpu::registers::{ESR_EL2, FAR_EL2, HPFAR_EL2, Readable};
use log::{error, info, warn};

const KIND_SYNC: u64 = 0;
const KIND_IRQ: u64 = 1;
const KIND_FIQ: u64 = 2;

/// Handles one exit of the vCPU running on this CPU.
pub fn handle(frame: &mut GuestRegs, kind: u64) {
    let Some(v) = percpu::this_vcpu() else {
        exception::report(frame, kind, ESR_EL2.get(), FAR_EL2.get());
        error!(
            "kestrel: exit from a guest on cpu{} with no vCPU",
            cpu::current_index()
        );
        cpu::halt();
    };
    // A trap may read or change interrupt state (emulated GIC registers, SGIs): fold the list
    // registers first so that it meets an up-to-date model (this also samples the guest's
    // timer lines while a timer interrupt is in flight). A physical interrupt needs no early
    // fold: the inputs it feeds fold first when they must, and the final flush folds too,
    // under the one lock.
    if kind == KIND_SYNC {
        let k = v.vm.vgic.sync_from_lrs(&mut v.vgic, &mut v.lrs);
        percpu::kick(&v.vm, k, v.index);
    }
    let mut maintenance_left_active = None;
    match kind {
        KIND_SYNC => sync(v, frame),
        KIND_IRQ | KIND_FIQ => {
            maintenance_left_active = irq(v);
            // Virtio work a queue's budget left: finished at the VM's next interrupt exit,
            // which `runtime::virtio` brings about at once with a kick SGI to this CPU.
            if v.vm.virtio.has_deferred() {
                v.vm.virtio.run_deferred();
            }
            percpu::dump_if_asked(Some(frame));
        }
        _ => {
            exception::report(frame, kind, ESR_EL2.get(), FAR_EL2.get());
            error!(
                "kestrel: vm {}: SError from the guest; stopping it",
                v.vm.name
            );
            stop_this_vm(v, StopKind::Crashed);
        }
    }
    if machine::panicking() {
        cpu::halt();
    }
    if v.vm.stop_requested() {
        percpu::park();
    }
    let k = v.vm.vgic.flush_to_lrs(&mut v.vgic, &mut v.lrs);
    percpu::kick(&v.vm, k, v.index);
    if let Some(a) = maintenance_left_active {
        // Still asserted after this exit's refill: taken again right after `eret`, a fresh
        // exit that checks for a stop request, rather than a loop here that never ends.
        gic::deactivate(a);
    }
    // Sharing: a trapped WFI/WFE, a start request, a wake-up or the hypervisor timer. A
    // dedicated CPU pays the load of its attention flag.
    if v.needs_attention() {
        let request = v.request.take();
        if !percpu::attend(frame, request) {
            crate::arch::aarch64::vcpu_hw::idle_on_fresh_stack();
        }
    }
}

fn stop_this_vm(v: &Vcpu, kind: StopKind) -> ! {
    vms::stop_vm(&v.vm, kind, v.index);
    percpu::park()
}

/// Exception classes of the hot exits (Arm ARM D19.2.46, ESR_EL2.EC), matched on the raw
/// field before the full decode.
const EC_HVC64: u64 = 0x16;
const EC_SMC64: u64 = 0x17;
const EC_SYSREG: u64 = 0x18;
const EC_DABT_LOWER: u64 = 0x24;

fn sync(v: &mut Vcpu, frame: &mut GuestRegs) {
    let raw = ESR_EL2.get();
    let esr = Esr(raw);
    match raw >> 26 {
        EC_HVC64 => {
            ExitStats::bump(&v.vm.stats.hvc);
            smccc(v, frame, raw);
        }
        EC_SMC64 => {
            ExitStats::bump(&v.vm.stats.smc);
            frame.skip_instruction(true); // SMC64: always a 32-bit instruction
            smccc(v, frame, raw);
        }
        EC_DABT_LOWER => data_abort(v, frame, esr),
        // The GICv3 SGI registers (IPIs).
        EC_SYSREG => sysreg(v, frame, esr),
        _ => sync_other(v, frame, esr),
    }
}

fn sync_other(v: &mut Vcpu, frame: &mut GuestRegs, esr: Esr) {
    match esr.class() {
        ExceptionClass::InstructionAbortLower => instruction_abort(v, frame, esr),
        ExceptionClass::SysReg => sysreg(v, frame, esr),
        // Trapped only on a shared CPU (HCR_EL2.TWI/TWE): the instruction has not executed.
        ExceptionClass::Wfx => {
            frame.skip_instruction(esr.il32());
            // Virtio work a budget left (the guest may be waiting for it): done here, and the
            // WFx completes at once (a WFI may end without an interrupt; the guest checks
            // and waits again) rather than blocking until the guest's next timer interrupt.
            if v.vm.virtio.has_deferred() {
                v.vm.virtio.run_deferred();
                return;
            }
            let wfx = esr.wfx();
            v.ask(match wfx.map(|w| w.kind) {
                Some(WfxKind::Wfe | WfxKind::Wfet) => SchedRequest::Yield,
                // WFIT: until the counter reaches the value of its register, at the latest.
                Some(WfxKind::Wfit) => SchedRequest::Block {
                    timeout: wfx.and_then(|w| w.timeout_reg).map(|r| frame.reg(r)),
                },
                _ => SchedRequest::Block { timeout: None },
            });
        }
        // Only EL0 can be AArch32 (HCR_EL2.RW = 1), where HVC and SMC are UNDEFINED and SVC
        // goes to EL1 (HCR_EL2.TGE = 0): the hardware never reports these to EL2. Should it,
        // the guest gets what its EL0 program would have got for HVC/SMC.
        ExceptionClass::Hvc32 | ExceptionClass::Smc32 | ExceptionClass::Svc32 => {
            undef(v, frame, "AArch32 HVC/SMC/SVC trap", esr)
        }
        _ => undef(v, frame, "unhandled trap", esr),
    }
}

/// An SMCCC call (HVC, or a trapped SMC whose PC has already been stepped over). SMCCC calls
/// use immediate 0 (DEN0028 §2.5); other immediates get NOT_SUPPORTED, as KVM answers them.
fn smccc(v: &mut Vcpu, frame: &mut GuestRegs, esr: u64) {
    if esr & 0xffff != 0 {
        frame.x[0] = u64::MAX;
        return;
    }
    let vm = &v.vm;
    let args = [frame.x[0], frame.x[1], frame.x[2], frame.x[3]];
    match vm.psci.call(v.index, args, |entry| vm.is_ram(entry)) {
        PsciAction::Return(r) => frame.x[..4].copy_from_slice(&r),
        other => psci_action(v, frame, other),
    }
}

/// The PSCI/SMCCC actions beyond writing return values, out of line so that the common
/// calls (PSCI_VERSION, AFFINITY_INFO, ...) keep a small exit path.
#[inline(never)]
fn psci_action(v: &mut Vcpu, frame: &mut GuestRegs, action: PsciAction) {
    if let Some(r) = action.caller_regs() {
        frame.x[..4].copy_from_slice(&r);
    }
    let vm = &v.vm;
    match action {
        PsciAction::Return(_) => {}
        // A shared CPU runs another vCPU meanwhile; a dedicated one returns at once (allowed:
        // DEN0022 5.4.2, a "standby" that ends immediately).
        PsciAction::Suspend if percpu::this_cpu_shared() => {
            v.ask(SchedRequest::Block { timeout: None });
        }
        PsciAction::Suspend => {}
        PsciAction::Mitigate(m) => crate::arch::aarch64::mitigation::carry_out(m),
        PsciAction::StartVcpu {
            target,
            entry,
            context_id,
        } => {
            if let Some(&pcpu) = vm.pcpus.get(target) {
                let req = percpu::StartRequest {
                    vm: vm.clone(),
                    vcpu: target,
                    entry,
                    x0: context_id,
                };
                percpu::post_start(pcpu, req);
            }
        }
        PsciAction::StopVcpu => percpu::park(),
        PsciAction::LastVcpuOff => {
            info!(
                "kestrel: vm {}: its last running vCPU called CPU_OFF; powering the VM off",
                vm.name
            );
            stop_this_vm(v, StopKind::PowerOff)
        }
        PsciAction::SystemOff => stop_this_vm(v, StopKind::PowerOff),
        PsciAction::SystemReset => stop_this_vm(v, StopKind::Reset),
    }
}

fn fault_kind(s: FaultStatus) -> Option<(FaultKind, u8)> {
    match s {
        FaultStatus::Translation { level } => Some((FaultKind::Translation, level.max(0) as u8)),
        FaultStatus::AccessFlag { level } => Some((FaultKind::AccessFlag, level.max(0) as u8)),
        FaultStatus::Permission { level } => Some((FaultKind::Permission, level.max(0) as u8)),
        _ => None,
    }
}

/// The IPA of a stage-2 abort (see [`FaultStatus::ipa_source`]).
enum AbortIpa {
    At(Ipa),
    /// HPFAR_EL2 is UNKNOWN for this fault and FAR_EL2 no longer translates (the guest changed
    /// its stage-1 tables since the fault, or the `AT` itself faulted): let the guest retry the
    /// access, which faults again with a fresh syndrome.
    Retry,
    /// Not a stage-2 translation fault (an External abort, ...), or FAR_EL2 is not valid.
    Unknown,
}

/// Reads the faulting IPA from HPFAR_EL2 where the architecture writes it, else translates
/// FAR_EL2 with `AT S1E1R` (KVM's `__get_fault_info`). The translation and the rest are out of
/// line: MMIO exits are translation faults and take the first branch.
#[inline(always)]
fn abort_ipa(status: FaultStatus, s1ptw: bool, far_not_valid: bool, far: u64) -> AbortIpa {
    match status.ipa_source(s1ptw) {
        IpaSource::Hpfar => AbortIpa::At(esr::fault_ipa(HPFAR_EL2.get(), far)),
        IpaSource::TranslateFar if !far_not_valid => ipa_by_translation(far),
        IpaSource::TranslateFar | IpaSource::None => AbortIpa::Unknown,
    }
}

#[inline(never)]
fn ipa_by_translation(far: u64) -> AbortIpa {
    match esr::fault_ipa_from_par(stage2_hw::translate_guest_va(far), far) {
        Some(ipa) => AbortIpa::At(ipa),
        None => AbortIpa::Retry,
    }
}

/// A data abort that is not a stage-2 translation fault (an External abort, ...): the guest
/// gets an abort.
#[cold]
#[inline(never)]
fn data_abort_without_ipa(
    v: &mut Vcpu,
    frame: &mut GuestRegs,
    status: FaultStatus,
    write: bool,
    far: u64,
) {
    v.vm.guest_warning(format_args!(
        "kestrel: vm {}: data abort {status:?} at VA {far:#x} (pc {:#x}); injecting an abort",
        v.vm.name, frame.pc
    ));
    inject_abort(v, frame, InjectedAbort::Data { write }, far);
}

fn data_abort(v: &mut Vcpu, frame: &mut GuestRegs, esr: Esr) {
    let Some(da) = esr.data_abort() else {
        return undef(v, frame, "bad data abort", esr);
    };
    // FAR_EL2 is read once: the `AT` below may take an exception that overwrites it.
    let far = FAR_EL2.get();
    let ipa = match abort_ipa(da.status, da.s1ptw, da.far_not_valid, far) {
        AbortIpa::At(ipa) => ipa,
        AbortIpa::Retry => return,
        AbortIpa::Unknown => {
            return data_abort_without_ipa(v, frame, da.status, da.write, far);
        }
    };
    if let Some((kind, level)) = fault_kind(da.status)
        && v.vm.memmap.lookup(ipa).is_some()
    {
        let access = AccessKind::of_abort(false, da.write, da.s1ptw, kind);
        ExitStats::bump(&v.vm.stats.data_abort_ram);
        v.vm.prepare_for_fault(ipa);
        let fault = Stage2Fault {
            ipa,
            kind,
            level,
            access,
        };
        match stage2_fault(v, &fault) {
            Some(FaultOutcome::NotInRegion) | Some(FaultOutcome::AccessDenied) => {}
            Some(_) => return,
            None => return,
        }
    }
    if let Some((dev, offset)) = v.vm.device_at(ipa) {
        ExitStats::bump(&v.vm.stats.mmio);
        let Some(a) = da.access else {
            v.vm.guest_warning(format_args!(
                "kestrel: vm {}: device access at {ipa:?} without a syndrome (ISV=0, pc {:#x}); \
                 injecting an abort",
                v.vm.name, frame.pc
            ));
            return inject_abort(v, frame, InjectedAbort::Data { write: da.write }, far);
        };
        let ctx = AccessCtx { vcpu: v.index };
        let mut fx = Effects::new();
        let r = if a.write {
            let val = a.store_value(frame.reg(a.reg)) & a.width.mask();
            dev.dev
                .write(ctx, offset, a.width, val, &mut fx)
                .map(|_| ())
        } else {
            dev.dev.read(ctx, offset, a.width, &mut fx).map(|d| {
                if let Some(val) = a.load_result(d) {
                    frame.set_reg(a.reg, val);
                }
            })
        };
        match r {
            Ok(()) => {
                // 2 bytes for a 16-bit Thumb load/store of a 32-bit program at EL0.
                frame.skip_instruction(esr.il32());
                v.vm.feed_console(&mut fx);
                effects::apply(&v.vm, v.index, &fx);
            }
            Err(e) => {
                v.vm.guest_warning(format_args!(
                    "kestrel: vm {}: {} of {} bytes at {ipa:?} refused ({e:?}); injecting an abort",
                    v.vm.name,
                    if a.write { "write" } else { "read" },
                    a.width.bytes()
                ));
                inject_abort(v, frame, InjectedAbort::Data { write: a.write }, far);
            }
        }
        return;
    }
    v.vm.guest_warning(format_args!(
        "kestrel: vm {}: {} at {ipa:?} (pc {:#x}) hits no memory or device; injecting an abort",
        v.vm.name,
        if da.write { "write" } else { "read" },
        frame.pc
    ));
    inject_abort(v, frame, InjectedAbort::Data { write: da.write }, far);
}

fn instruction_abort(v: &mut Vcpu, frame: &mut GuestRegs, esr: Esr) {
    ExitStats::bump(&v.vm.stats.instr_abort);
    let Some(ia) = esr.instruction_abort() else {
        return undef(v, frame, "bad instruction abort", esr);
    };
    let far = FAR_EL2.get();
    let ipa = match abort_ipa(ia.status, ia.s1ptw, ia.far_not_valid, far) {
        AbortIpa::At(ipa) => Some(ipa),
        AbortIpa::Retry => return,
        AbortIpa::Unknown => None,
    };
    if let Some(ipa) = ipa
        && let Some((kind, level)) = fault_kind(ia.status)
    {
        v.vm.prepare_for_fault(ipa);
        let fault = Stage2Fault {
            ipa,
            kind,
            level,
            access: AccessKind::of_abort(true, false, ia.s1ptw, kind),
        };
        match stage2_fault(v, &fault) {
            Some(FaultOutcome::NotInRegion) | Some(FaultOutcome::AccessDenied) => {}
            _ => return,
        }
    }
    v.vm.guest_warning(format_args!(
        "kestrel: vm {}: instruction fetch at {ipa:?} (pc {:#x}) from no executable memory; \
         injecting an abort",
        v.vm.name, frame.pc
    ));
    inject_abort(v, frame, InjectedAbort::Instruction, far);
}

/// Runs the stage-2 fault path. `None` when the VM was stopped (out of memory).
fn stage2_fault(v: &mut Vcpu, fault: &Stage2Fault) -> Option<FaultOutcome> {
    let vm = &v.vm;
    match vm
        .s2()
        .handle_fault(&mut v.memcache, &PAGES, &vm.memmap, fault)
    {
        Ok(o) => Some(o),
        Err(Stage2Error::NoMemory) | Err(Stage2Error::RetriesExhausted) => {
            error!(
                "kestrel: vm {}: out of memory for stage-2 tables at {:?}; stopping the VM",
                vm.name, fault.ipa
            );
            stop_this_vm(v, StopKind::Crashed)
        }
        Err(e) => {
            error!(
                "kestrel: vm {}: stage-2 fault at {:?} failed: {e:?}",
                vm.name, fault.ipa
            );
            Some(FaultOutcome::NotInRegion)
        }
    }
}

fn sysreg(v: &mut Vcpu, frame: &mut GuestRegs, esr: Esr) {
    ExitStats::bump(&v.vm.stats.sysreg);
    // IPIs first, without the full decode.
    if let Some((reg, rt)) = crate::vgic::SgiRegister::from_msr_esr(esr.0) {
        let value = frame.reg(rt);
        match v.vm.vgic.send_sgi_v3(v.index, value, reg) {
            Ok(mask) => percpu::kick(&v.vm, mask, v.index),
            Err(e) => v.vm.guest_warning(format_args!(
                "kestrel: vm {}: SGI write {value:#x} refused: {e:?}",
                v.vm.name
            )),
        }
        frame.skip_instruction(esr.il32());
        return;
    }
    let Some(acc) = esr.sysreg() else {
        return undef(v, frame, "bad system register trap", esr);
    };
    if acc.read
        && let Some(i) = idregs::index(acc.reg)
    {
        // HCR_EL2.TID3: the ID registers, sanitised to what kestrel offers.
        let caps = idregs::GuestCaps {
            ipa_bits: v.vm.ipa_bits(),
            sve: vcpu_hw::guest_sve_usable(),
        };
        frame.set_reg(acc.rt, idregs::sanitise_one(i, id_space::read(i), caps));
        frame.skip_instruction(esr.il32());
        return;
    }
    undef(v, frame, "trapped system register", esr)
}

/// Injects an UNDEFINED exception with a log line.
fn undef(v: &mut Vcpu, frame: &mut GuestRegs, why: &str, esr: Esr) {
    ExitStats::bump(&v.vm.stats.undef);
    let reg = esr.sysreg().map(|a| a.reg);
    v.vm.guest_warning(format_args!(
        "kestrel: vm {}: {why} (EC {:#x} {}{}, ESR {:#x}) at pc {:#x}; injecting UNDEF",
        v.vm.name,
        esr.class().ec(),
        esr.class().name(),
        match reg {
            Some(r) => alloc::format!(" {r}"),
            None => alloc::string::String::new(),
        },
        esr.0,
        frame.pc
    ));
    deliver(v, frame, esr::esr_el1_undefined(), None);
}

fn inject_abort(v: &mut Vcpu, frame: &mut GuestRegs, abort: InjectedAbort, far: u64) {
    ExitStats::bump(&v.vm.stats.aborts_injected);
    let from_el0 = frame.is_aarch32() || frame.pstate & pstate::MODE_MASK == pstate::EL0T;
    deliver(
        v,
        frame,
        esr::esr_el1_external_abort(abort, from_el0),
        Some(far),
    );
}

/// Delivers a synchronous exception to the guest's EL1. A guest whose exception lands on its
/// own vector address again (no usable vector table) is stopped rather than looped forever.
fn deliver(v: &mut Vcpu, frame: &mut GuestRegs, esr: u64, far: Option<u64>) {
    let before = frame.pc;
    let mut el1 = LiveEl1;
    if inject_exception(frame, &mut el1, VectorKind::Synchronous, esr, far).is_err() {
        error!(
            "kestrel: vm {}: exception in a privileged AArch32 mode (pstate {:#x}), which an \
             AArch64 EL1 cannot be in; stopping the VM",
            v.vm.name, frame.pstate
        );
        stop_this_vm(v, StopKind::Crashed);
    }
    if before == frame.pc {
        error!(
            "kestrel: vm {}: exception at its own vector {before:#x} (no working vector table); \
             stopping the VM",
            v.vm.name
        );
        stop_this_vm(v, StopKind::Crashed);
    }
}

/// A physical interrupt while the guest ran. Returns the maintenance interrupt when it was
/// still asserted after being handled once in this exit (the caller deactivates it last).
fn irq(v: &mut Vcpu) -> Option<gic::Acked> {
    ExitStats::bump(&v.vm.stats.irq);
    let mut maintenance_handled = false;
    while let Some(a) = gic::ack() {
        gic::priority_drop(a);
        let intid = a.intid;
        match intid {
            gic::PPI_VTIMER | gic::PPI_PTIMER => {
                // The guest's own EL1 timers: left active. The vGIC deactivates the physical
                // interrupt once the guest is done with it (GICv3: the guest's deactivation of
                // the HW-linked LR does), or when its line drops before the guest took it.
                if let Ok(mask) = v.vm.vgic.phys_fired(&mut v.vgic, &mut v.lrs, intid) {
                    percpu::kick(&v.vm, mask, v.index);
                }
                continue;
            }
            gic::PPI_PMU if machine::pmu_forwarded() => {
                // The PMU overflow interrupt (level, asserted while an enabled counter's
                // overflow flag is set), forwarded like the timers.
                if let Ok(mask) = v.vm.vgic.phys_fired(&mut v.vgic, &mut v.lrs, intid) {
                    percpu::kick(&v.vm, mask, v.index);
                }
                continue;
            }
            gic::PPI_MAINTENANCE if maintenance_handled => {
                // Asserted again within this exit: do not spin on it with interrupts masked.
                return Some(a);
            }
            gic::PPI_MAINTENANCE => {
                // Handled before it is deactivated: the condition (EOI, underflow) holds until
                // the LRs are folded and refilled, and a level interrupt deactivated while
                // still asserted is taken again at once.
                maintenance_handled = true;
                let k = v.vm.vgic.handle_maintenance(&mut v.vgic, &mut v.lrs);
                percpu::kick(&v.vm, k, v.index);
            }
            gic::SGI_KICK => {}
            _ if passthrough::owner(intid) == Some(v.vm.id) => {
                // Hardware-linked: the guest's deactivation deactivates the physical SPI.
                if let Ok(mask) = v.vm.vgic.set_spi_level(intid, true) {
                    percpu::kick(&v.vm, mask, v.index);
                }
                continue;
            }
            _ => match irq::host_interrupt(intid) {
                Handled::Done => {}
                Handled::LeftActive => continue,
                Handled::Unknown => {
                    // Nobody's: disabled, or a level interrupt still asserted (a PMU kestrel
                    // did not recognise, which the guest can overflow) would be taken again
                    // at once, forever, with interrupts masked.
                    gic::disable(intid);
                    warn!(
                        "kestrel: unexpected interrupt {intid} on cpu{}: disabled",
                        cpu::current_index()
                    );
                }
            },
        }
        gic::deactivate(a);
    }
    None
}
