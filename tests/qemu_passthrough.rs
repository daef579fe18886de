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

/// A DMA-capable device in a VM with identity RAM: QEMU virt's virtio-rng on the last
/// virtio-mmio transport (page 0x0a003000, 1:1) given to the `virtiorng` test guest, whose RAM
/// is mapped IPA = PA (`identity_ram = true`). The guest programs its virtqueue and buffer
/// with its own addresses; the device writes random bytes there by DMA, which only lands in
/// the guest's buffer because IPA = PA. The RAM line must show the identity mapping.
#[test]
fn a_dma_device_works_in_a_vm_with_identity_ram() {
    if !qemu_available() {
        return;
    }
    let dir = scratch("identity-dma");
    let vm = copy_guest_vm("virtiorng", &dir, "virtiorng");
    let toml = std::fs::read_to_string(vm.join("vm.toml")).expect("read vm.toml");
    let toml = set_toml_key(
        &toml,
        "bootargs",
        "\"virtio.base=0x0a003000 virtio.count=8\"",
    );
    let toml = set_toml_key(&toml, "identity_ram", "true");
    std::fs::write(
        vm.join("vm.toml"),
        format!(
            "{toml}\n[[devices]]\nname = \"virtio-mmio\"\nbase = 0x0a003000\nsize = \"4K\"\n\
             ipa = 0x0a003000\ninterrupts = [47]\n"
        ),
    )
    .expect("write vm.toml");
    let rd = dir.join("ramdisk.cpio");
    mkramdisk(&rd, &[&vm]);
    let r = run(
        "identity-dma",
        &[
            "--cpus",
            "2",
            "--mem",
            "1G",
            "--ramdisk",
            rd.to_str().unwrap(),
            "--",
            "-global",
            "virtio-mmio.force-legacy=true",
            "-device",
            "virtio-rng-device",
        ],
        60,
    );
    r.assert_status(0);
    // IPA = PA for the VM's RAM, and the guest sees its RAM there.
    let ram = r
        .line_after("kestrel: vm virtiorng: RAM IPA ")
        .unwrap_or_else(|| panic!("no RAM line; log ends:\n{}", r.tail(30)));
    let (ipa, pa) = ram
        .split_once(" at PA ")
        .unwrap_or_else(|| panic!("RAM line: {ram}"));
    assert_eq!(ipa, pa, "identity RAM: {ram}");
    let guest_ram = r.line_after("VIRTIO: ram ").unwrap_or_default();
    assert!(
        ipa.starts_with(guest_ram.split_whitespace().next().unwrap_or("?")),
        "the guest's RAM base ({guest_ram}) must be the PA ({ram})"
    );
    r.assert_contains("[virtiorng] VIRTIO: rng at 0xa003e00");
    let got = r
        .line_after("VIRTIO: got ")
        .unwrap_or_else(|| panic!("the device did not answer; log ends:\n{}", r.tail(30)));
    let nonzero: usize = got
        .split_whitespace()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        got.starts_with("64 bytes") && nonzero >= 32,
        "64 random bytes expected by DMA into the guest's buffer: {got}"
    );
    r.assert_lacks("VIRTIO: timeout");
    r.assert_contains("kestrel: vm virtiorng: powered off");
    r.assert_contains("page accounting back to its starting figure");
    eprintln!("identity-dma: {ram}; {got}");
}
