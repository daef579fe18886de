//! Foundation tests under QEMU virt: the hypervisor boots at EL2, finds memory, CPUs and the GIC
//! in the DTB, brings every CPU online and powers the machine off.
mod common;
use common::*;

fn boot(name: &str, args: &[&str]) -> Option<Run> {
    if !qemu_available() {
        return None;
    }
    let r = run(name, args, 60);
    r.assert_status(0);
    Some(r)
}

#[test]
fn banner_says_el2_and_power_off_is_clean() {
    let Some(r) = boot("banner", &["--cpus", "1", "--mem", "512M"]) else {
        return;
    };
    r.assert_contains("booting at EL2 on linux,dummy-virt");
    r.assert_contains("kestrel: power off");
    r.assert_lacks("UNEXPECTED EXCEPTION");
}

#[test]
fn memory_found_equals_qemu_memory_size() {
    for (mem, mib) in [("512M", 512), ("1G", 1024), ("3G", 3072)] {
        let Some(r) = boot(&format!("mem-{mem}"), &["--cpus", "1", "--mem", mem]) else {
            return;
        };
        r.assert_contains(&format!("platform: {mib} MiB RAM"));
    }
}

#[test]
fn every_cpu_comes_online() {
    for n in [1, 2, 4] {
        let Some(r) = boot(&format!("cpus-{n}"), &["--cpus", &n.to_string()]) else {
            return;
        };
        r.assert_contains(&format!("kestrel: cpus online: {n}"));
    }
}

#[test]
fn gic_version_is_read_from_the_dtb() {
    for v in ["2", "3"] {
        let Some(r) = boot(&format!("gic-{v}"), &["--gic", v, "--cpus", "2"]) else {
            return;
        };
        r.assert_contains(&format!("GICv{v}"));
    }
}

#[test]
fn more_cpus_than_stacks_stop_the_boot_cleanly_with_a_message() {
    let Some(r) = boot("cpus-17", &["--cpus", "17", "--mem", "512M"]) else {
        return;
    };
    r.assert_contains("kestrel: cannot boot: 17 CPUs, more than the supported 16");
    r.assert_contains("kestrel: power off");
    r.assert_lacks("cpus online");
}

#[test]
fn secure_machine_still_boots_at_el2() {
    let Some(r) = boot("secure", &["--secure", "--cpus", "2"]) else {
        return;
    };
    r.assert_contains("booting at EL2");
    r.assert_contains("kestrel: power off");
}

/// A DTB kestrel refuses (QEMU virt's GICv2 without its GICH/GICV frames, as on a board whose
/// GIC lacks the virtualization extensions) stops the boot with the reason on the console.
#[test]
fn a_refused_dtb_prints_its_reason_on_the_console() {
    let dtb = repo().join("tests/fixtures/platform/virt-gicv2-4cpu-1g-no-gich.dtb");
    let Some(r) = boot(
        "refused-dtb",
        &["--gic", "2", "--cpus", "2", "--dtb", dtb.to_str().unwrap()],
    ) else {
        return;
    };
    r.assert_contains(
        "ERROR kestrel: cannot boot: GIC node incomplete: GICv2 without GICH/GICV (no \
         virtualization extensions)",
    );
    r.assert_contains("kestrel: power off");
    r.assert_lacks("booting at EL2");
}
