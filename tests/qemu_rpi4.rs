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

/// Passthrough on the Pi 4: the BCM2711 system timer (host 0xfe003000, modelled by QEMU) given
/// to a bare-metal VM at IPA 0x0c000000 (an offset mapping). The guest reads the timer's
/// free-running 1 MHz counter (CLO, +4) through stage 2 and must see it advance between
/// rounds; the page after the device and the device's host address used as an IPA must both
/// fault (external abort injected), and the hypervisor carries on to its final line.
#[test]
fn raspi4b_passes_the_system_timer_through_to_a_vm() {
    if !qemu_available() {
        return;
    }
    let dir = scratch("rpi4-passthrough");
    let vm = copy_guest_vm("devread", &dir, "devread");
    let toml = std::fs::read_to_string(vm.join("vm.toml")).expect("read vm.toml");
    let toml = set_toml_key(
        &toml,
        "bootargs",
        "\"devread.ipa=0x0c000004 devread.n=3 devread.gap_ms=5 \
         devread.denied=0x0c001004,0xfe003004\"",
    );
    std::fs::write(
        vm.join("vm.toml"),
        format!(
            "{toml}\n[[devices]]\nname = \"systimer\"\nbase = 0xfe003000\nsize = \"4K\"\n\
             ipa = 0x0c000000\n"
        ),
    )
    .expect("write vm.toml");
    let rd = dir.join("ramdisk.cpio");
    mkramdisk(&rd, &[&vm]);
    let r = run(
        "rpi4-passthrough",
        &["--machine", "raspi4b", "--ramdisk", rd.to_str().unwrap()],
        90,
    );
    r.assert_status(0);
    r.assert_contains("[devread] DEVREAD: done");
    let clo: Vec<u64> = (0..3)
        .map(|i| {
            r.line_after(&format!("DEVREAD: 0xc000004 round {i} = "))
                .and_then(|v| u64::from_str_radix(v.trim().trim_start_matches("0x"), 16).ok())
                .unwrap_or_else(|| panic!("no value for round {i}; log ends:\n{}", r.tail(30)))
        })
        .collect();
    assert!(
        clo.windows(2).all(|w| w[1] > w[0]),
        "the passed-through 1 MHz counter must advance between rounds 5 ms apart: {clo:?}"
    );
    for ipa in ["0xc001004", "0xfe003004"] {
        r.assert_contains(&format!("[devread] DEVREAD: denied {ipa} fault esr="));
    }
    r.assert_lacks(" READ 0x");
    r.assert_contains("kestrel: vm devread: powered off");
    r.assert_contains("page accounting back to its starting figure");
    r.assert_contains("kestrel: halted, power can be removed");
    eprintln!(
        "rpi4-passthrough: {:.1}s, CLO {clo:?}",
        r.elapsed.as_secs_f64()
    );
}

/// A DTB kestrel refuses (the Debian Pi 4 DTB with a `/psci` node whose method is neither smc
/// nor hvc) must still produce its reason on the Pi's console, the mini UART at 0xfe215040 (the
/// DTB's bus address 0x7e215040 translated through /soc `ranges`), not silence.
#[test]
fn raspi4b_prints_why_it_refuses_a_dtb() {
    if !qemu_available() {
        return;
    }
    let dtb = repo().join("tests/fixtures/platform/bcm2711-rpi-4-b-bad-psci.dtb");
    let r = run(
        "rpi4-refused-dtb",
        &["--machine", "raspi4b", "--dtb", dtb.to_str().unwrap()],
        60,
    );
    r.assert_status(0);
    r.assert_contains("cpu0 ERROR kestrel: cannot boot: /psci method is neither smc nor hvc");
    r.assert_contains("kestrel: halted, power can be removed");
    r.assert_lacks("booting at EL2");
}

/// The SD image also carries the Pi 400's and the CM4's mainline DTBs (qemu/mksdimage.sh): the
/// same SoC with other boards around it. Under QEMU's raspi4b (a Pi 4 B underneath), kestrel
/// finds the same platform through each of them.
#[test]
fn raspi4b_boots_with_the_pi_400_and_cm4_device_trees() {
    if !qemu_available() {
        return;
    }
    for (file, model) in [
        ("bcm2711-rpi-400.dtb", "Raspberry Pi 400"),
        (
            "bcm2711-rpi-cm4-io.dtb",
            "Raspberry Pi Compute Module 4 IO Board",
        ),
    ] {
        let dtb = cache_dir().join(file);
        if !dtb.exists() {
            let st = Command::new(repo().join("qemu/guest-material.sh"))
                .status()
                .expect("run qemu/guest-material.sh");
            assert!(st.success(), "qemu/guest-material.sh failed");
        }
        let r = run(
            &format!("rpi4-{file}"),
            &["--machine", "raspi4b", "--dtb", dtb.to_str().unwrap()],
            60,
        );
        r.assert_status(0);
        r.assert_contains(&format!("booting at EL2 on {model}"));
        r.assert_contains("GICv2, console mini-uart@0xfe215040, psci none");
        r.assert_contains("kestrel: cpus online: 4");
        r.assert_contains("kestrel: halted, power can be removed");
    }
}
