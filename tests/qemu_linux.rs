//! Debian arm64 Linux as a guest under the hypervisor on QEMU virt: GICv3 and GICv2, 1 and 4
//! vCPUs, 2 GiB and 4 GiB of host memory. The guest's /init prints nproc, MemTotal and a
//! checksum of data it generates, then powers off; the VM end must return every page.
mod common;
use common::*;
use std::process::Command;

/// How the guest is configured: vCPUs, guest memory in MiB, gzip-compressed ramdisk or not.
#[derive(Clone, Copy)]
struct Guest {
    cpus: usize,
    memory_mib: u64,
    gzip: bool,
    /// Debian's generic arm64 kernel instead of the cloud one.
    generic_kernel: bool,
}

impl Guest {
    const fn plain(cpus: usize) -> Self {
        Guest {
            cpus,
            memory_mib: 512,
            gzip: false,
            generic_kernel: false,
        }
    }
}

/// The default ramdisk for `g` with the test flag (the guest powers off by itself). Built
/// under a lock: tests running in parallel share the file.
fn ramdisk(g: Guest) -> String {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let ext = if g.gzip { "cpio.gz" } else { "cpio" };
    let flavour = if g.generic_kernel { "generic" } else { "cloud" };
    let out = repo().join(format!(
        "target/qemu-tests/linux-{flavour}-{}cpu-{}M.{ext}",
        g.cpus, g.memory_mib
    ));
    let mut cmd = Command::new(repo().join("qemu/build-default-ramdisk.sh"));
    cmd.args(["--test", "--cpus", &g.cpus.to_string()])
        .args(["--memory", &format!("{}M", g.memory_mib)]);
    if g.gzip {
        cmd.arg("--gzip");
    }
    if g.generic_kernel {
        cmd.arg("--kernel").arg(cache_dir().join("Image-generic"));
    }
    let st = cmd
        .arg(&out)
        .status()
        .expect("run qemu/build-default-ramdisk.sh");
    assert!(st.success(), "building the ramdisk failed");
    out.to_string_lossy().into_owned()
}

const CHECKSUM: &str = "90433fcbd9e16297e6a7c1dacb1056394743194776e52f78ebf0a44b80b6b14f";

fn boot_linux(gic: &str, vcpus: usize, mem: &str) {
    boot(gic, Guest::plain(vcpus), mem);
}

fn boot(gic: &str, g: Guest, mem: &str) {
    if !qemu_available() {
        return;
    }
    let vcpus = g.cpus;
    std::fs::create_dir_all(repo().join("target/qemu-tests")).expect("mkdir");
    let rd = ramdisk(g);
    let name = format!(
        "linux-gic{gic}-{vcpus}cpu-{mem}-{}M{}{}",
        g.memory_mib,
        if g.gzip { "-gz" } else { "" },
        if g.generic_kernel { "-generic" } else { "" }
    );
    let r = run(
        &name,
        &["--gic", gic, "--cpus", "4", "--mem", mem, "--ramdisk", &rd],
        300,
    );
    r.assert_status(0);
    r.assert_contains("[linux] GUEST: userland reached");
    r.assert_contains(&format!("[linux] GUEST: nproc={vcpus}"));
    r.assert_contains(&format!("[linux] GUEST: checksum={CHECKSUM}"));
    let kb: u64 = r
        .line_after("GUEST: memtotal_kb=")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no memtotal line; log ends:\n{}", r.tail(30)));
    // The kernel reports the configured memory minus its own image and reservations.
    let configured = g.memory_mib * 1024;
    assert!(
        (configured * 3 / 4..=configured).contains(&kb),
        "MemTotal {kb} kB does not fit {} MiB",
        g.memory_mib
    );
    r.assert_contains("kestrel: vm linux: powered off");
    r.assert_contains("page accounting back to its starting figure");
    r.assert_lacks("UNEXPECTED EXCEPTION");
    r.assert_lacks("PANIC");
    eprintln!("{name}: {:.1}s", r.elapsed.as_secs_f64());
}

#[test]
fn linux_gicv3_1_vcpu_2g() {
    boot_linux("3", 1, "2G");
}

#[test]
fn linux_gicv3_4_vcpus_2g() {
    boot_linux("3", 4, "2G");
}

#[test]
fn linux_gicv3_1_vcpu_4g() {
    boot_linux("3", 1, "4G");
}

#[test]
fn linux_gicv3_4_vcpus_4g() {
    boot_linux("3", 4, "4G");
}

#[test]
fn linux_gicv2_1_vcpu_2g() {
    boot_linux("2", 1, "2G");
}

#[test]
fn linux_gicv2_4_vcpus_2g() {
    boot_linux("2", 4, "2G");
}

#[test]
fn linux_gicv2_1_vcpu_4g() {
    boot_linux("2", 1, "4G");
}

#[test]
fn linux_gicv2_4_vcpus_4g() {
    boot_linux("2", 4, "4G");
}

/// Debian's generic arm64 kernel (the cloud one elsewhere) on GICv2 with 3 vCPUs, from a
/// gzip-compressed ramdisk (the hypervisor inflates ~45 MiB at boot, growing its heap from the
/// page allocator), with guest memory that is not a multiple of 2 MiB (333 MiB: its last 1 MiB
/// can only be mapped with 4 KiB pages).
#[test]
fn linux_generic_kernel_gzip_ramdisk_333m_3_vcpus_gicv2() {
    boot(
        "2",
        Guest {
            cpus: 3,
            memory_mib: 333,
            gzip: true,
            generic_kernel: true,
        },
        "2G",
    );
}
