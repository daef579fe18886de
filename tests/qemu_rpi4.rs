//! The Raspberry Pi 4 port under QEMU's raspi4b model: the hypervisor starts as the firmware
//! would start kernel8.img (EL2, x0 = DTB), finds the Pi 4's memory, GIC-400 and mini UART in the
//! DTB, releases the three secondaries from the spin table, and runs a Debian Linux guest with 2
//! vCPUs. raspi4b has no PSCI: the hypervisor's final line makes qemu/run.sh end QEMU.
mod common;
use common::*;
use std::process::Command;

#[test]
fn raspi4b_boots_with_all_four_cores_and_the_pi_platform() {
    if !qemu_available() {
        return;
    }
    let r = run("rpi4-boot", &["--machine", "raspi4b"], 90);
    r.assert_status(0);
    r.assert_contains("booting at EL2 on Raspberry Pi 4 Model B");
    r.assert_contains("GICv2, console mini-uart@0xfe215040, psci none");
    r.assert_contains("kestrel: cpus online: 4");
    r.assert_contains("kestrel: halted, power can be removed");
}

#[test]
fn raspi4b_runs_a_linux_guest_with_two_vcpus() {
    if !qemu_available() {
        return;
    }
    let rd = repo().join("target/qemu-tests/rpi4-linux.cpio");
    std::fs::create_dir_all(repo().join("target/qemu-tests")).expect("mkdir");
    let st = Command::new(repo().join("qemu/build-default-ramdisk.sh"))
        .args(["--test", "--cpus", "2", "--memory", "256M"])
        .arg(&rd)
        .status()
        .expect("run qemu/build-default-ramdisk.sh");
    assert!(st.success());
    let rd = rd.to_string_lossy().into_owned();
    let r = run(
        "rpi4-linux",
        &["--machine", "raspi4b", "--ramdisk", &rd],
        420,
    );
    r.assert_status(0);
    r.assert_contains("[linux] GUEST: userland reached");
    r.assert_contains("[linux] GUEST: nproc=2");
    r.assert_contains(
        "[linux] GUEST: checksum=90433fcbd9e16297e6a7c1dacb1056394743194776e52f78ebf0a44b80b6b14f",
    );
    let kb: u64 = r
        .line_after("GUEST: memtotal_kb=")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!(
        (200 * 1024..=256 * 1024).contains(&kb),
        "MemTotal {kb} kB for a 256 MiB guest"
    );
    r.assert_contains("page accounting back to its starting figure");
    r.assert_contains("kestrel: halted, power can be removed");
    eprintln!("rpi4-linux: {:.1}s", r.elapsed.as_secs_f64());
}
