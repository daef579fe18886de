//! Dirty logging on a running Linux guest, driven from the console (Ctrl-A l): starting it
//! write-protects the guest's mapped RAM (stage-2 permission changes with their TLB
//! invalidation), each first write then faults, splits its block and marks its 4 KiB page,
//! and stopping it restores the blocks. The guest writes 8 MiB meanwhile and must see nothing
//! but its own work: the command completes and the VM keeps running until its power-off.
//! A second test checks that pages the hypervisor writes for a VM (its virtio-net device
//! receiving frames) are in the log too, though no stage-2 fault sees them.
mod common;
use common::*;
use std::process::Command;
use std::time::Duration;

#[test]
fn dirty_logging_counts_the_pages_a_running_guest_writes() {
    if !qemu_available() {
        return;
    }
    let rd = repo().join("target/qemu-tests/dirty-log.cpio");
    std::fs::create_dir_all(repo().join("target/qemu-tests")).expect("mkdir");
    let st = Command::new(repo().join("qemu/build-default-ramdisk.sh"))
        .args(["--cpus", "1", "--memory", "256M"])
        .arg(&rd)
        .status()
        .expect("build-default-ramdisk.sh");
    assert!(st.success());
    let rd = rd.to_string_lossy().into_owned();
    let mut q = start_interactive(
        "dirty-log",
        &["--cpus", "2", "--mem", "2G", "--ramdisk", &rd],
        240,
    );
    let ready = q.wait_for(Duration::from_secs(150), |l| {
        l.contains("[linux] GUEST: shell")
    });
    assert!(ready, "no shell:\n{}", q.log());
    std::thread::sleep(Duration::from_secs(2));
    q.type_slowly(b"\x01l");
    assert!(
        q.wait_for(Duration::from_secs(20), |l| l
            .contains("vm linux: dirty logging started")),
        "dirty logging did not start"
    );
    q.type_slowly(b"dd if=/dev/zero of=/x bs=1M count=8 && echo DD-$((40+2))\n");
    assert!(
        q.wait_for(Duration::from_secs(60), |l| l.contains("[linux] DD-42")),
        "the guest's write did not finish under dirty logging"
    );
    q.type_slowly(b"\x01l");
    assert!(
        q.wait_for(Duration::from_secs(20), |l| l
            .contains("vm linux: dirty logging stopped")),
        "dirty logging did not stop"
    );
    q.type_slowly(b"poweroff -f\n");
    let r = q.finish();
    r.assert_status(0);
    let line = r
        .line_after("vm linux: dirty logging stopped: ")
        .unwrap_or_default();
    let pages: usize = line
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    eprintln!("dirty-log: {line}");
    assert!(
        pages >= 2048,
        "8 MiB written but only {pages} pages dirty: {line}"
    );
    assert!(line.contains("dirty="), "stage-2 counters missing: {line}");
    r.assert_contains("kestrel: vm linux: powered off");
    r.assert_contains("page accounting back to its starting figure");
    r.assert_lacks("PANIC");
}

/// Two VMs on one switch; VM linux logs while linux2 pings it: the echo requests the switch
/// copies into linux's receive buffers (and the used ring entries) are written by kestrel, past
/// stage 2, and must be counted (`(N written by its devices)`, part of the page total).
#[test]
fn dirty_logging_counts_the_pages_a_virtio_device_writes_into_the_guest() {
    if !qemu_available() {
        return;
    }
    let rd = repo().join("target/qemu-tests/dirty-log-net.cpio");
    std::fs::create_dir_all(repo().join("target/qemu-tests")).expect("mkdir");
    let st = Command::new(repo().join("qemu/build-default-ramdisk.sh"))
        .args([
            "--cpus", "1", "--memory", "256M", "--vms", "2", "--net", "lan0",
        ])
        .arg(&rd)
        .status()
        .expect("build-default-ramdisk.sh");
    assert!(st.success());
    let rd = rd.to_string_lossy().into_owned();
    let mut q = start_interactive(
        "dirty-log-net",
        &["--cpus", "3", "--mem", "2G", "--ramdisk", &rd],
        300,
    );
    let ready = q.wait_for(Duration::from_secs(200), |l| {
        l.contains("[linux] GUEST: shell") && l.contains("[linux2] GUEST: shell")
    });
    assert!(ready, "no shells:\n{}", q.log());
    std::thread::sleep(Duration::from_secs(2));
    // Focus VM 1 (linux), start its log; then VM 2 pings it.
    q.type_slowly(b"\x011\x01l");
    assert!(
        q.wait_for(Duration::from_secs(20), |l| l
            .contains("vm linux: dirty logging started")),
        "dirty logging did not start:\n{}",
        q.log()
    );
    q.type_slowly(b"\x012");
    q.type_slowly(b"ping -c 20 -i 0.2 10.0.0.1 | grep -c 'bytes from' | sed 's/^/PONGS-/'\n");
    assert!(
        q.wait_for(Duration::from_secs(90), |l| l.contains("[linux2] PONGS-")),
        "the ping did not finish:\n{}",
        q.log()
    );
    q.type_slowly(b"poweroff -f\n");
    q.type_slowly(b"\x011\x01l");
    assert!(
        q.wait_for(Duration::from_secs(20), |l| l
            .contains("vm linux: dirty logging stopped")),
        "dirty logging did not stop"
    );
    q.type_slowly(b"poweroff -f\n");
    let r = q.finish();
    r.assert_status(0);
    let pongs: usize = r
        .line_after("[linux2] PONGS-")
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(pongs >= 10, "only {pongs} of 20 pings answered");
    let line = r
        .line_after("vm linux: dirty logging stopped: ")
        .unwrap_or_default();
    eprintln!("dirty-log-net: {line}");
    let pages: usize = line
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let by_devices: usize = line
        .split_once('(')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    // At least the used ring's page and one receive buffer's; each frame took a buffer.
    assert!(
        by_devices >= 2 && by_devices <= pages,
        "{pongs} echo requests received but {by_devices} device-written pages of {pages}: {line}"
    );
    r.assert_contains("kestrel: vm linux: powered off");
    r.assert_contains("kestrel: vm linux2: powered off");
    r.assert_lacks("PANIC");
}
