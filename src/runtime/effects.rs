//! Carrying out what an emulated device of a VM asked for ([`Effects`]): console output, an
//! interrupt line that changed (and the vCPUs to kick for it), a passthrough trigger mode or
//! pending/active state.
//! Devices only describe effects; this is where they touch the console, the vGIC's users and
//! the physical GIC. Used by the exit path (MMIO) and by console input (the UART's receive
//! interrupt).
use crate::runtime::console;
use crate::runtime::passthrough;
use crate::runtime::percpu;
use crate::runtime::vm::Vm;
use crate::vdev::{Effect, Effects};

/// Carries out `fx` for `vm`; `me` is the calling vCPU of `vm` (not kicked: it flushes its own
/// list registers before it resumes), or `usize::MAX` when the caller is none of its vCPUs.
pub fn apply(vm: &Vm, me: usize, fx: &Effects) {
    for e in fx.iter() {
        match e {
            Effect::ConsoleByte(b) => console::vm_output(vm.console, &[b]),
            Effect::IrqLine { intid, level } => {
                if let Ok(mask) = vm.vgic.set_spi_level(intid, level) {
                    percpu::kick(vm, mask, me);
                }
            }
            Effect::KickVcpus(mask) => percpu::kick(vm, mask, me),
            Effect::HwTriggerChanged => vm.match_passthrough_triggers(),
            Effect::HwStateChanged => hw_state_changed(vm),
        }
    }
}

/// The guest wrote the pending or active state of passthrough SPIs: make their physical
/// interrupts follow (`vgic::PhysSpiChange`). Out of line: rare, and kept off the registers of
/// the common MMIO exit.
#[cold]
#[inline(never)]
fn hw_state_changed(vm: &Vm) {
    vm.vgic
        .take_phys_requests(|pintid, change| passthrough::set_phys_state(vm.id, pintid, change));
}
