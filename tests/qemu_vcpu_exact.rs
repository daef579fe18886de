//! The vCPU is exact (issue 10): PSCI power states, exceptions injected from any guest state,
//! and nothing of one VM visible to the next on the same physical CPU. Each test boots one of
//! the bare-metal test guests (tests/guests, docs/test-guests.md) under the hypervisor.
mod common;
use common::*;

/// Boots the test guest `guest` alone (with `keys` set in its vm.toml) on a `cpus`-CPU, 1 GiB
/// QEMU virt machine with GIC version `gic`.
fn boot_guest(test: &str, guest: &str, keys: &[(&str, &str)], cpus: u32, gic: u32) -> Option<Run> {
    if !qemu_available() {
        return None;
    }
    let dir = scratch(test);
    let vm = copy_guest_vm(guest, &dir, guest);
    edit_vm_toml(&vm, keys);
    let rd = dir.join("ramdisk.cpio");
    mkramdisk(&rd, &[&vm]);
    let (cpus, gic) = (cpus.to_string(), gic.to_string());
    Some(run(
        test,
        &[
            "--cpus",
            &cpus,
            "--gic",
            &gic,
            "--mem",
            "1G",
            "--ramdisk",
            rd.to_str().unwrap(),
        ],
        90,
    ))
}

/// Defect 3: a VM whose vCPUs all call CPU_OFF (never SYSTEM_OFF) is powered off like one that
/// calls SYSTEM_OFF: its memory is returned and, being the only VM, the machine powers off.
/// Before the fix the VM stayed a zombie and the run timed out.
#[test]
fn cpu_off_of_the_last_vcpu_powers_the_vm_off() {
    let Some(r) = boot_guest("cpuoff-last", "cpuoff", &[("cpus", "2")], 2, 3) else {
        return;
    };
    r.assert_status(0);
    r.assert_contains("[cpuoff] CPUOFF: secondary 0x1 on, then off");
    r.assert_contains("[cpuoff] CPUOFF: boot vCPU calls CPU_OFF");
    r.assert_lacks("CPUOFF: CPU_OFF returned");
    r.assert_contains(
        "kestrel: vm cpuoff: its last running vCPU called CPU_OFF; powering the VM off",
    );
    r.assert_contains("kestrel: vm cpuoff: powered off");
    r.assert_contains("page accounting back to its starting figure");
    r.assert_contains("kestrel: power off");
}
