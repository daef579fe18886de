//! kestrel entered the way the Raspberry Pi 4 firmware enters it, on a GIC with the Security
//! Extensions (which QEMU's raspi4b model lacks): QEMU virt with secure=on and a GICv2, every
//! CPU starting at EL3 in our own armstub (tests/firmware/armstub.S), which configures the GIC's
//! interrupt groups from the Secure side, sets the counter, parks CPUs 1-3 in a spin table and
//! enters kestrel at EL2 with x0 = the DTB (tests/firmware/virt-spin-table.dts: spin-table CPUs,
//! no PSCI). `qemu/run.sh --armstub` sets it up. With no PSCI, kestrel's last line is "halted,
//! power can be removed", on which run.sh ends QEMU.
mod common;
use common::*;
use std::process::Command;

#[test]
fn firmware_entry_runs_a_linux_guest_with_two_vcpus() {
    if !qemu_available() {
        return;
    }
    let rd = repo().join("target/qemu-tests/armstub-linux.cpio");
    std::fs::create_dir_all(repo().join("target/qemu-tests")).expect("mkdir");
    let st = Command::new(repo().join("qemu/build-default-ramdisk.sh"))
        .args(["--test", "--cpus", "2", "--memory", "256M"])
        .arg(&rd)
        .status()
        .expect("run qemu/build-default-ramdisk.sh");
    assert!(st.success());
    let rd = rd.to_string_lossy().into_owned();
    let r = run(
        "armstub-linux",
        &["--armstub", "--mem", "1G", "--ramdisk", &rd],
        120,
    );
    r.assert_status(0);
    // Entered at EL2 by the stub (not dropped from EL3 by kestrel itself), the platform as the
    // DTB describes it, the three secondaries released from the stub's spin table.
    r.assert_contains("kestrel 0.1.0 booting at EL2 on QEMU virt, Raspberry Pi 4-style");
    r.assert_lacks("dropped from EL3");
    r.assert_contains("4 CPUs, GICv2, console pl011@0x9000000, psci none");
    r.assert_contains("reserved 0x0040100000..0x0040101000 MemReserve");
    r.assert_contains("kestrel: cpus online: 4");
    r.assert_contains("[linux] GUEST: userland reached");
    r.assert_contains("[linux] GUEST: nproc=2");
    r.assert_contains(
        "[linux] GUEST: checksum=90433fcbd9e16297e6a7c1dacb1056394743194776e52f78ebf0a44b80b6b14f",
    );
    r.assert_contains("kestrel: vm linux: powered off");
    r.assert_contains("page accounting back to its starting figure");
    r.assert_contains("kestrel: halted, power can be removed");
    r.assert_lacks("UNEXPECTED EXCEPTION");
    eprintln!("armstub-linux: {:.1}s", r.elapsed.as_secs_f64());
}

/// A firmware that leaves every interrupt Secure (Group 0), as a Pi 4 firmware with
/// `enable_gic=0` or an armstub without GIC support does: EL2 cannot enable or receive any of
/// them, and kestrel says so instead of running guests that never get an interrupt.
#[test]
fn firmware_that_leaves_the_gic_secure_is_diagnosed() {
    if !qemu_available() {
        return;
    }
    let r = run("armstub-no-gic", &["--armstub", "--armstub-no-gic"], 60);
    r.assert_status(0);
    r.assert_contains("kestrel: cannot boot: GIC set-up on the boot CPU: its SGIs and PPIs");
    r.assert_contains("Secure (Group 0)");
    r.assert_contains("kestrel: halted, power can be removed");
    r.assert_lacks("cpus online");
}

/// The firmware hands over a DTB address where there is no memory: the first read of the DTB
/// faults, before kestrel has a console. The early exception vectors report the syndrome on the
/// UART guessed from the load address (QEMU virt's PL011).
#[test]
fn an_exception_before_the_console_is_reported_with_its_syndrome() {
    if !qemu_available() {
        return;
    }
    // 0x0c000000: QEMU virt's platform bus, empty here: reads are external aborts.
    let r = run(
        "armstub-bad-x0",
        &["--armstub", "--cpus", "1", "--x0", "0x0c000000"],
        60,
    );
    r.assert_status(1);
    r.assert_contains("kestrel: UNEXPECTED EXCEPTION before the console was up: synchronous");
    r.assert_contains("EC 0x25 (data abort (same EL))");
    r.assert_contains("FAR 0xc00000");
    r.assert_contains("this CPU is halted");
}

/// The firmware hands over no DTB at all (x0 = 0): kestrel cannot learn its console from it,
/// so the refusal goes to the UART guessed from the load address (QEMU virt's PL011 for an
/// image loaded above 1 GiB), without timestamps, and the machine halts.
#[test]
fn without_a_dtb_the_reason_goes_to_the_guessed_console() {
    if !qemu_available() {
        return;
    }
    let r = run(
        "armstub-no-dtb",
        &["--armstub", "--cpus", "1", "--x0", "0"],
        60,
    );
    r.assert_status(0);
    r.assert_contains("kestrel: cannot boot: malformed DTB: no DTB pointer in x0");
    r.assert_contains("kestrel: halted, power can be removed");
}
