//! Dirty logging on a running Linux guest, driven from the console (Ctrl-A l): starting it
//! write-protects the guest's mapped RAM (stage-2 permission changes with their TLB
//! invalidation), each first write then faults, splits its block and marks its 4 KiB page,
//! and stopping it restores the blocks. The guest writes 8 MiB meanwhile and must see nothing
//! but its own work: the command completes and the VM keeps running until its power-off.
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
