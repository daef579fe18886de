//! Control of the running hypervisor from its console: keyboard input routed to the focused
//! VM's emulated UART, and the `Ctrl-A` keys for the hypervisor itself (state dump, dirty
//! logging, help).
//!
//! The top of the runtime beside the exit path: it looks VMs up in the registry and carries
//! out what they are asked through the layers below.
use crate::console_mux::{Input, Key};
use crate::runtime::vm::DirtyLogChange;
use crate::runtime::{console, effects, percpu, vms};
use log::{error, info};

/// Reads pending console input and hands it to the focused VM's emulated UART.
pub fn console_input() {
    crate::console_rx::drain(
        &mut crate::arch::aarch64::console::PhysConsoleRx,
        console_key,
    );
}

/// One byte of console input: to the focused VM, or a console key for the hypervisor.
fn console_key(b: u8) {
    let input = match console::key(b) {
        Key::Input(i) => i,
        Key::Command(c) => {
            vms::console_command(&c);
            return;
        }
        Key::Rejected(e) => {
            info!("kestrel: {e}");
            return;
        }
    };
    match input {
        Input::ToVm(i, byte) => {
            if let Some(vm) = vms::by_console(i) {
                let mut fx = crate::vdev::Effects::new();
                vm.console_input(&[byte], &mut fx);
                effects::apply(&vm, usize::MAX, &fx);
            }
        }
        Input::Focus(i) => {
            info!("kestrel: console input now goes to VM console {}", i + 1);
        }
        Input::Command(b'd') => request_dump(),
        Input::Command(b'l') => toggle_dirty_log(),
        Input::Command(_) => info!(
            "kestrel: console keys: Ctrl-A 1..9 focus VM n, Ctrl-A n next VM, Ctrl-A Ctrl-A \
             literal Ctrl-A, Ctrl-A d dump hypervisor state, Ctrl-A l start/stop dirty logging of the focused \
             VM, Ctrl-A : command prompt (list, start, stop, reset, help), Ctrl-A h this help"
        ),
        Input::None => {}
    }
}

/// Prints every VM's summary and asks every CPU to print its vCPU's state.
pub fn request_dump() {
    for vm in vms::all() {
        let run = vm.run.lock();
        info!(
            "kestrel: dump: vm {} running={} stopping={:?}; {}",
            vm.name,
            run.running,
            run.stopping,
            vm.counters_line()
        );
    }
    percpu::ask_all_to_dump();
}

/// Ctrl-A l: starts or stops dirty logging of the VM the keyboard goes to.
fn toggle_dirty_log() {
    let Some(vm) = vms::by_console(console::focus()) else {
        info!("kestrel: no VM to log");
        return;
    };
    match vm.toggle_dirty_log() {
        Ok(DirtyLogChange::Started) => {
            info!("kestrel: vm {}: dirty logging started", vm.name);
        }
        Ok(DirtyLogChange::Stopped {
            dirty_pages,
            by_devices,
        }) => {
            info!(
                "kestrel: vm {}: dirty logging stopped: {dirty_pages} pages dirty \
                 ({by_devices} written by its devices); stage2 {}",
                vm.name,
                vm.s2_stats()
            );
        }
        Err(e) => error!("kestrel: vm {}: dirty logging: {e:?}", vm.name),
    }
}
