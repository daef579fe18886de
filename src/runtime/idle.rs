//! The idle loop of a physical CPU with no vCPU loaded: it waits for an interrupt with
//! interrupts masked at EL2 (WFI), handles what arrived ([`irq::host_interrupt`]) and starts a
//! vCPU when its mailbox has a start request. Entered at boot (every CPU once it is up) and,
//! through `kestrel_idle` on a fresh stack, whenever a CPU's vCPU stops.
use crate::arch::aarch64::{cpu, gic};
use crate::runtime::irq::{self, Handled};
use crate::runtime::{machine, percpu};

/// The idle loop of a physical CPU with no vCPU (on a fresh stack: `vcpu_hw::idle_on_fresh_stack`).
#[unsafe(no_mangle)]
pub extern "C" fn kestrel_idle() -> ! {
    enter()
}

/// A secondary CPU, once it is online.
pub fn secondary_idle() -> ! {
    enter()
}

/// Runs the idle loop on the current stack.
pub fn enter() -> ! {
    loop {
        if machine::panicking() {
            cpu::halt();
        }
        // Runs the next vCPU placed here, if any (and does not come back then).
        percpu::attend_idle();
        if !crate::runtime::virtio::poll_idle(cpu::current_index()) {
            aarch64_cpu::asm::wfi();
        }
        while let Some(a) = gic::ack() {
            gic::priority_drop(a);
            if irq::host_interrupt(a.intid) == Handled::LeftActive {
                continue;
            }
            gic::deactivate(a);
        }
        percpu::dump_if_asked(None);
    }
}
