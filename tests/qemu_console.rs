//! Console input: keys reach the focused VM's UART, whenever they were typed. Each test boots
//! the `consolein` test guest (tests/guests, docs/test-guests.md), which reads one line from
//! its emulated PL011.
mod common;
use common::*;

/// Boots `consolein` alone on a 2-CPU QEMU virt with GIC version `gic` and puts `input` on the
/// console before QEMU has even started the hypervisor.
fn consolein_with_early_input(test: &str, gic: u32, input: &[u8]) -> Option<Run> {
    if !qemu_available() {
        return None;
    }
    let dir = scratch(test);
    let vm = copy_guest_vm("consolein", &dir, "consolein");
    edit_vm_toml(&vm, &[("bootargs", "\"consolein.wait_ms=20000\"")]);
    let rd = dir.join("ramdisk.cpio");
    mkramdisk(&rd, &[&vm]);
    let gic = gic.to_string();
    let args = [
        "--cpus",
        "2",
        "--gic",
        &gic,
        "--mem",
        "1G",
        "--ramdisk",
        rd.to_str().unwrap(),
    ];
    let mut q = start_interactive(test, &args, 60);
    q.type_now(input);
    Some(q.finish())
}

/// Input waiting on the physical UART before the hypervisor programmed it: QEMU's PL011
/// empties its receive FIFO when the hypervisor turns the FIFO on but keeps the receive
/// interrupt raised. Before the fix the console interrupt then fired forever on the CPU that
/// takes it, with nothing to read: the guest never ran (no line at all, run.sh timed out).
/// Now the handler clears the stale status, and the byte that was in the FIFO is kept too.
#[test]
fn input_typed_before_the_hypervisor_started_neither_stalls_it_nor_is_lost() {
    for gic in [3, 2] {
        let Some(r) =
            consolein_with_early_input(&format!("console-early-v{gic}"), gic, b"early line\n")
        else {
            return;
        };
        r.assert_status(0);
        r.assert_contains("[consolein] CONSOLEIN: ready");
        r.assert_contains("[consolein] CONSOLEIN: line 'early line'");
    }
}
