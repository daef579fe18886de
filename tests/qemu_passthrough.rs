//! Device passthrough: QEMU virt's PL031 real-time clock given to a Linux VM (guests/
//! rtc-passthrough/vm.toml). The guest finds it in its generated DTB at the configured IPA,
//! its driver reads the host device's registers through stage 2 (device memory) and registers
//! rtc0; its interrupt is forwarded hardware-linked.
mod common;
use common::*;
use std::process::Command;

#[test]
fn a_passthrough_pl031_rtc_is_driven_by_the_guest() {
    if !qemu_available() {
        return;
    }
    let dir = repo().join("target/qemu-tests/vm-rtc");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::copy(
        repo().join("guests/rtc-passthrough/vm.toml"),
        dir.join("vm.toml"),
    )
    .expect("copy vm.toml");
    std::fs::copy(cache_dir().join("Image-cloud"), dir.join("Image"))
        .expect("copy the Debian kernel (run qemu/setup.sh)");
    let st = Command::new(repo().join("qemu/build-guest-initramfs.sh"))
        .arg(dir.join("initramfs.cpio.gz"))
        .status()
        .expect("build-guest-initramfs.sh");
    assert!(st.success());
    let rd = repo().join("target/qemu-tests/rtc.cpio");
    let st = Command::new(repo().join("qemu/mkramdisk.sh"))
        .arg(&rd)
        .arg(&dir)
        .status()
        .expect("mkramdisk");
    assert!(st.success());
    let rd = rd.to_string_lossy().into_owned();
    let r = run(
        "passthrough-rtc",
        &["--cpus", "2", "--mem", "2G", "--ramdisk", &rd],
        240,
    );
    r.assert_status(0);
    r.assert_contains("[rtc] ");
    r.assert_contains("rtc-pl031 c000000.rtc: registered as rtc0");
    r.assert_contains("[rtc] GUEST: userland reached");
    r.assert_contains("page accounting back to its starting figure");
}
