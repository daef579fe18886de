//! Console input: keys reach the focused VM's UART, whenever they were typed. Each test boots
//! the `consolein` test guest (tests/guests, docs/test-guests.md), which reads one line from
//! its emulated PL011.
mod common;
use common::*;

/// Boots `consolein` alone on `machine` (`virt` with 2 CPUs, 1 GiB and GIC version `gic`, or
/// `raspi4b`, whose console is the mini UART) and puts `input` on the console before QEMU has
/// even started the hypervisor.
fn consolein_with_early_input(test: &str, machine: &str, gic: u32, input: &[u8]) -> Option<Run> {
    if !qemu_available() {
        return None;
    }
    let dir = scratch(test);
    let vm = copy_guest_vm("consolein", &dir, "consolein");
    edit_vm_toml(&vm, &[("bootargs", "\"consolein.wait_ms=20000\"")]);
    let rd = dir.join("ramdisk.cpio");
    mkramdisk(&rd, &[&vm]);
    let gic = gic.to_string();
    let mut args = vec!["--machine", machine, "--ramdisk", rd.to_str().unwrap()];
    if machine == "virt" {
        args.extend_from_slice(&["--cpus", "2", "--gic", &gic, "--mem", "1G"]);
    }
    let mut q = start_interactive(test, &args, 60);
    q.type_now(input);
    Some(q.finish())
}

/// Input waiting on the physical UART before the hypervisor programmed it: QEMU's PL011
/// empties its receive FIFO when the hypervisor turns the FIFO on but keeps the receive
/// interrupt raised. Before the fix the console interrupt then fired forever on the CPU that
/// takes it, with nothing to read: the guest never ran (no line at all, run.sh timed out).
/// Now the handler clears the stale status, and the byte that was in the FIFO is kept too.
/// raspi4b's mini UART (whose interrupt follows its FIFO) must deliver the same line.
#[test]
fn input_typed_before_the_hypervisor_started_neither_stalls_it_nor_is_lost() {
    for (machine, gic) in [("virt", 3), ("virt", 2), ("raspi4b", 2)] {
        let test = format!("console-early-{machine}-v{gic}");
        let Some(r) = consolein_with_early_input(&test, machine, gic, b"early line\n") else {
            return;
        };
        r.assert_status(0);
        r.assert_contains("[consolein] CONSOLEIN: ready");
        r.assert_contains("[consolein] CONSOLEIN: line 'early line'");
    }
}
