//! Physical interrupts that are not the loaded vCPU's own: keyboard input on the console, and a
//! passthrough device's interrupt for a VM that does not run on this CPU right now. Shared by
//! the exit path (`exit::irq`, for what is not the running guest's) and the idle loop.
use crate::runtime::{control, machine, passthrough, percpu, vms};

/// What became of a physical interrupt handled here.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Handled {
    /// Done with: the caller deactivates it.
    Done,
    /// Forwarded to a VM with the HW link: left active for the guest to deactivate.
    LeftActive,
    /// Not one of ours.
    Unknown,
}

/// Handles physical interrupt `intid` on behalf of the hypervisor or of a VM not loaded here.
pub fn host_interrupt(intid: u32) -> Handled {
    if intid == crate::arch::aarch64::gic::PPI_HYP_TIMER {
        percpu::hyp_timer_fired();
        return Handled::Done;
    }
    if intid as usize == machine::console_irq() {
        control::console_input();
        return Handled::Done;
    }
    if let Some(owner) = passthrough::owner(intid) {
        // A passthrough interrupt whose VM does not run here right now: pend it in the VM's
        // GIC and leave it active; the vCPU that takes it deactivates it.
        if let Some(vm) = vms::by_id(owner)
            && let Ok(mask) = vm.vgic.set_spi_level(intid, true)
        {
            percpu::kick(&vm, mask, usize::MAX);
            return Handled::LeftActive;
        }
        return Handled::Done;
    }
    Handled::Unknown
}
