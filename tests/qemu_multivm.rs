//! Several VMs at once under the hypervisor on QEMU virt: two Linux VMs side by side; the
//! hostile test guest beside the checksum guest (isolation); ramdisks with bad VMs and broken
//! archives (refusals, never a crash); and VM reset (PSCI SYSTEM_RESET with `on_reset`).
mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const LINUX_CHECKSUM: &str = "90433fcbd9e16297e6a7c1dacb1056394743194776e52f78ebf0a44b80b6b14f";

/// The Linux guest's checks, on VM `vm`'s output (immune to the console mux's line splits).
fn assert_linux_reached_userland(r: &Run, vm: &str, nproc: usize) {
    let s = vm_stream(&r.log, vm);
    for needle in [
        "GUEST: userland reached".to_string(),
        format!("GUEST: nproc={nproc}GUEST: memtotal_kb="),
        format!("GUEST: checksum={LINUX_CHECKSUM}"),
        "GUEST: powering off".to_string(),
    ] {
        assert!(
            s.contains(&needle),
            "VM {vm} did not print {needle:?}; serial log {} ends:\n{}",
            r.log_path.display(),
            r.tail(40)
        );
    }
}

fn assert_clean_end(r: &Run, vms: &[&str]) {
    r.assert_status(0);
    for vm in vms {
        r.assert_contains(&format!("kestrel: vm {vm}: powered off"));
        assert!(
            counters(&r.log, vm).is_some(),
            "no counters line for VM {vm}"
        );
    }
    r.assert_contains("kestrel: all VMs ended; page accounting back to its starting figure");
    r.assert_contains("kestrel: power off");
    r.assert_lacks("UNEXPECTED EXCEPTION");
    r.assert_lacks("PANIC");
}

fn assert_disjoint(r: &Run, a: &[usize], b: &[usize]) {
    assert!(
        a.iter().all(|c| !b.contains(c)),
        "VMs share physical CPUs: {a:?} and {b:?}; log ends:\n{}",
        r.tail(30)
    );
}

/// Two VMs from `qemu/build-default-ramdisk.sh --vms 2 --cpus 2`, 512 MiB each, on a 4-CPU,
/// 4 GiB GICv3 machine: both reach userland with 2 CPUs, both power off, every page comes back,
/// and they ran on disjoint physical CPUs.
#[test]
fn two_linux_vms_with_2_vcpus_each_run_on_disjoint_cpus() {
    if !qemu_available() {
        return;
    }
    let dir = scratch("two-linux");
    let rd = dir.join("ramdisk.cpio");
    {
        let _g = lock_builds();
        let st = Command::new(repo().join("qemu/build-default-ramdisk.sh"))
            .args(["--test", "--vms", "2", "--cpus", "2", "--memory", "512M"])
            .arg(&rd)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run qemu/build-default-ramdisk.sh");
        assert!(st.success(), "building the two-VM ramdisk failed");
    }
    let r = run(
        "two-linux",
        &[
            "--gic",
            "3",
            "--cpus",
            "4",
            "--mem",
            "4G",
            "--ramdisk",
            rd.to_str().unwrap(),
        ],
        420,
    );
    assert_clean_end(&r, &["linux", "linux2"]);
    assert_linux_reached_userland(&r, "linux", 2);
    assert_linux_reached_userland(&r, "linux2", 2);
    r.assert_lacks("injecting");
    let a = vm_pcpus(&r.log, "linux").expect("pCPUs of linux");
    let b = vm_pcpus(&r.log, "linux2").expect("pCPUs of linux2");
    assert_eq!((a.len(), b.len()), (2, 2), "pCPUs {a:?} {b:?}");
    assert_disjoint(&r, &a, &b);
    eprintln!(
        "two-linux: {:.1}s; pCPUs {a:?} and {b:?}",
        r.elapsed.as_secs_f64()
    );
    for vm in ["linux", "linux2"] {
        eprintln!(
            "  {vm} counters: {}",
            r.line_after(&format!("kestrel: vm {vm}: counters: "))
                .unwrap_or_default()
        );
    }
}

/// A VM folder for the Linux guest: `vm.toml` is `toml`, `Image` links to the cached Debian
/// kernel and `initramfs.cpio.gz` is the busybox guest initramfs.
fn linux_vm(dir: &Path, folder: &str, toml: &str) -> PathBuf {
    let kernel = cache_dir().join("Image-cloud");
    if !kernel.exists() {
        let st = Command::new(repo().join("qemu/guest-material.sh"))
            .status()
            .expect("run qemu/guest-material.sh");
        assert!(st.success(), "qemu/guest-material.sh failed");
    }
    let initramfs = dir.join("initramfs.cpio.gz");
    if !initramfs.exists() {
        let _g = lock_builds();
        let st = Command::new(repo().join("qemu/build-guest-initramfs.sh"))
            .arg(&initramfs)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run qemu/build-guest-initramfs.sh");
        assert!(st.success(), "qemu/build-guest-initramfs.sh failed");
    }
    let vm = dir.join(folder);
    std::fs::create_dir_all(&vm).expect("create VM folder");
    std::fs::write(vm.join("vm.toml"), toml).expect("write vm.toml");
    let _ = std::fs::remove_file(vm.join("Image"));
    let _ = std::fs::remove_file(vm.join("initramfs.cpio.gz"));
    std::os::unix::fs::symlink(&kernel, vm.join("Image")).expect("link Image");
    std::os::unix::fs::symlink(&initramfs, vm.join("initramfs.cpio.gz")).expect("link initramfs");
    vm
}

/// The example folders guests/linux and guests/linux2 as they are (only `guest.test=1` added so
/// that the guests power off): linux2 pins its 2 vCPUs to physical CPUs 2 and 3 and is placed
/// first; linux (1 vCPU) takes the lowest free CPU.
#[test]
fn example_folders_linux_and_linux2_run_side_by_side_with_pinning() {
    if !qemu_available() {
        return;
    }
    let dir = scratch("examples-linux-linux2");
    let mut dirs = Vec::new();
    for name in ["linux", "linux2"] {
        let t = std::fs::read_to_string(repo().join(format!("guests/{name}/vm.toml")))
            .expect("read example vm.toml");
        let t = set_toml_key(&t, "bootargs", "\"console=ttyAMA0 earlycon guest.test=1\"");
        dirs.push(linux_vm(&dir, name, &t));
    }
    let rd = dir.join("ramdisk.cpio");
    mkramdisk(&rd, &[&dirs[0], &dirs[1]]);
    let r = run(
        "examples-linux-linux2",
        &[
            "--cpus",
            "4",
            "--mem",
            "2G",
            "--ramdisk",
            rd.to_str().unwrap(),
        ],
        420,
    );
    assert_clean_end(&r, &["linux", "linux2"]);
    assert_linux_reached_userland(&r, "linux", 1);
    assert_linux_reached_userland(&r, "linux2", 2);
    assert_eq!(
        vm_pcpus(&r.log, "linux2"),
        Some(vec![2, 3]),
        "linux2 is pinned"
    );
    assert_eq!(
        vm_pcpus(&r.log, "linux"),
        Some(vec![0]),
        "linux takes the lowest free CPU"
    );
    // 256 MiB for linux2: MemTotal must fit it.
    let s = vm_stream(&r.log, "linux2");
    let kb: u64 = s
        .split_once("GUEST: memtotal_kb=")
        .map(|(_, t)| {
            t.chars()
                .take_while(|c| c.is_ascii_digit())
                .collect::<String>()
        })
        .and_then(|d| d.parse().ok())
        .expect("linux2 memtotal");
    assert!(
        (200 * 1024..=256 * 1024).contains(&kb),
        "linux2 MemTotal {kb} kB does not fit 256 MiB"
    );
    eprintln!("examples-linux-linux2: {:.1}s", r.elapsed.as_secs_f64());
}

// ---------------------------------------------------------------------------------------------
// The hostile guest beside the checksum guest.

/// The checksum guest's word at `addr` (tests/guests/src/bin/checksum.rs: splitmix64's
/// finaliser of the address).
fn checksum_pattern(addr: u64) -> u64 {
    let mut z = addr.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Where in the log VM `vm`'s output first contains `needle` (a byte offset of the fragment
/// that completes it), so that events of two VMs can be ordered despite split lines.
fn first_pos(log: &str, vm: &str, needle: &str) -> Option<usize> {
    let prefix = format!("[{vm}] ");
    let mut stream = String::new();
    let mut off = 0;
    for l in log.split_inclusive('\n') {
        if let Some(f) = l.strip_prefix(&prefix) {
            stream.push_str(f.trim_end_matches(['\n', '\r']));
            if stream.contains(needle) {
                return Some(off);
            }
        }
        off += l.len();
    }
    None
}

/// Appends `text` to `dir/vm.toml` (tables such as `[[net]]` go after the keys).
fn append_toml(dir: &Path, text: &str) {
    let p = dir.join("vm.toml");
    let mut t = std::fs::read_to_string(&p).expect("read vm.toml");
    t.push_str(text);
    std::fs::write(&p, t).expect("write vm.toml");
}

/// What the hostile guest's virtio attacks must get (substrings of the outcome; `DATA` is
/// the first word of the disk image). `None` for an action the test does not know.
fn virtio_expectation(action: &str) -> Option<&'static [&'static str]> {
    const DROPPED: &[&str] = &["len=0 st=0xff", "dev-status=0xf "];
    const REFUSED_SETUP: &[&str] = &["ready=0", "dev-status=0x4b"];
    let table: &[(&str, &[&str])] = &[
        ("virtio blk init", &["dev-status=0xf"]),
        ("virtio blk read sector 0", &["st=0x0", "len=513", "DATA"]),
        ("virtio blk read into IPA 0", DROPPED),
        ("virtio blk write from hypervisor PA", DROPPED),
        ("virtio blk read into peer VM PA", DROPPED),
        (
            "virtio blk sector 1 after the refused writes",
            &["st=0x0", "unchanged"],
        ),
        ("virtio blk looping chain", DROPPED),
        ("virtio blk zero-length data buffer", DROPPED),
        ("virtio blk buffer wrapping the address space", DROPPED),
        ("virtio blk chain into an unset descriptor", DROPPED),
        ("virtio blk indirect table that loops", DROPPED),
        ("virtio blk indirect table outside RAM", DROPPED),
        (
            "virtio blk write past the end of the disk",
            &["len=1 st=0x1"],
        ),
        ("virtio blk unknown request type", &["len=1 st=0x2"]),
        ("virtio blk read of a partial sector", &["len=1 st=0x1"]),
        ("virtio blk notify of queue 7", &["dev-status=0xf"]),
        ("virtio blk config write after DRIVER_OK", &["unchanged"]),
        ("virtio blk Status (8-bit)", &["abort "]),
        ("virtio blk config (64-bit)", &["abort "]),
        ("virtio blk status write clearing bits", &["dev-status=0xf"]),
        (
            "virtio blk reset between request and notify",
            &["completed=0 ", "dev-status=0x0"],
        ),
        (
            "virtio blk avail.idx jump of 1000",
            &["used=0 ", "dev-status=0x4f", "isr=0x2"],
        ),
        (
            "virtio blk request after the queue broke",
            &["used=0 ", "dev-status=0x4f"],
        ),
        (
            "virtio blk reset and read sector 0 again",
            &["used=1 ", "st=0x0", "start-status=0xf", "same=true"],
        ),
        ("virtio blk queue size 3", REFUSED_SETUP),
        ("virtio blk misaligned descriptor table", REFUSED_SETUP),
        ("virtio blk rings outside RAM", REFUSED_SETUP),
        ("virtio blk features outside the offer", &["dev-status=0x3"]),
        (
            "virtio blk DRIVER_OK without FEATURES_OK",
            &["dev-status=0x3"],
        ),
        (
            "virtio blk 85 requests in one notification",
            &["used=85 ", "st=0x0"],
        ),
        ("virtio net init", &["dev-status=0xb/0xf"]),
        (
            "virtio net broadcast frame",
            &["used=1 ", "dev-status=0xf "],
        ),
        (
            "virtio net notify of the receive queue",
            &["dev-status=0xf"],
        ),
        ("virtio net frame from peer VM PA", &["dev-status=0xf "]),
        ("virtio net runt frame", &["dev-status=0xf "]),
        (
            "virtio net checksum offload not negotiated",
            &["dev-status=0xf "],
        ),
        (
            "virtio net device-writable transmit buffer",
            &["dev-status=0xf"],
        ),
    ];
    table
        .iter()
        .find(|(p, _)| action.starts_with(p))
        .map(|(_, n)| *n)
}

/// What kind of answer an action must get, by what it tries.
fn required_outcome(action: &str) -> Option<&'static [&'static str]> {
    const ABORT: &[&str] = &["abort "];
    const EXEC: &[&str] = &["iabort ", "pc-alignment "];
    const UNDEF: &[&str] = &["undef "];
    const ERROR: &[&str] = &["ret=-"];
    let is_access = ["read", "write", "ldp", "stp", "ldr", "ldxr"]
        .iter()
        .any(|p| action.starts_with(p));
    let outside = [
        "below RAM",
        "above RAM",
        "IPA 0",
        "device window",
        "high IPA",
        "IPA space",
        "beyond",
        "top of the 64-bit",
        "hypervisor PA",
        "peer VM PA",
        "foreign GICR",
        "host GICH",
        "host GICV",
        "GIC ITS",
        "QEMU ",
        "unmapped",
        "unaligned",
    ];
    // QEMU virt's virtio-mmio window is the guest's own: empty emulated transports
    // (vdev::virtio_mmio_slots) answering MagicValue "virt", never the host's devices.
    if is_access && action.contains("QEMU virtio-mmio") {
        return Some(&["ok value=0x74726976"]);
    }
    if is_access && outside.iter().any(|w| action.contains(w)) {
        return Some(ABORT);
    }
    if action.starts_with("exec ") {
        return Some(EXEC);
    }
    if ["_el2", "alle2", "s12e1", "vmalls12e1is"]
        .iter()
        .any(|w| action.contains(w))
    {
        return Some(UNDEF);
    }
    if [
        "CPU_ON foreign",
        "CPU_ON_32",
        "CPU_ON self",
        "CPU_ON running",
        "AFFINITY_INFO foreign",
        "AFFINITY_INFO_32",
        "unknown PSCI",
        "fid all-ones",
        "fid 0x7fffffff",
        "reserved owner",
        "yielding call",
        "SiP service",
        "OEM service",
        "trusted OS",
        "MIGRATE foreign",
    ]
    .iter()
    .any(|w| action.contains(w))
        || (action.contains("CPU_ON own secondary") && action.contains("entry="))
    {
        return Some(ERROR);
    }
    None
}

const OUTCOMES: &[&str] = &[
    "ok",
    "ret=",
    "abort esr=",
    "iabort esr=",
    "undef esr=",
    "pc-alignment esr=",
    "serror esr=",
    "fp-trap esr=",
    "exception ec=",
    "skipped (",
];

/// The hostile guest (2 vCPUs) beside the checksum guest (1 vCPU) on a 4-CPU, 1 GiB machine.
/// A first boot without a ramdisk gives the hypervisor image's PA range (`reserved ... Image`);
/// the hostile guest gets addresses in it as `hostile.hv=` and, as `hostile.peer=`, the base of
/// every 64 MiB block of host RAM: the checksum VM's 64 MiB of RAM is one buddy block, 64 MiB
/// aligned, so one of them is its RAM (at its IPA 0x4000_0000, which the checksum guest fills
/// first). While both run, the QEMU monitor finds which one holds the checksum guest's pattern,
/// proving the attack aimed at the peer. Every hostile action must get an outcome, attacks an
/// abort / UNDEF / error code, the checksum must stay stable across the hostile guest's whole
/// run, and the hypervisor must end both VMs and power off.
#[test]
fn hostile_guest_cannot_touch_the_checksum_guest_or_the_hypervisor() {
    if !qemu_available() {
        return;
    }
    let machine = ["--cpus", "4", "--mem", "1G"];
    let learn = run("hostile-learn", &machine, 60);
    learn.assert_status(0);
    let (img_start, img_end) = reserved_range(&learn.log, "Image")
        .unwrap_or_else(|| panic!("no `reserved ... Image` line:\n{}", learn.tail(20)));
    let ram = learn
        .line_after("kestrel:   ram ")
        .and_then(|s| {
            let (a, b) = s.split_once("..")?;
            Some((hex_prefix(a)?, hex_prefix(b)?))
        })
        .expect("host RAM range");
    let hv = [
        img_start,
        img_start + 0x1000,
        (img_start + (img_end - img_start) / 2) & !7,
        img_end - 8,
    ];
    let block = 64u64 << 20;
    let peers: Vec<u64> = (ram.0..ram.1).step_by(block as usize).take(16).collect();
    assert_eq!(peers.len(), 16, "1 GiB of host RAM is 16 blocks of 64 MiB");
    let list = |v: &[u64]| {
        v.iter()
            .map(|a| format!("{a:#x}"))
            .collect::<Vec<_>>()
            .join(",")
    };

    let dir = scratch("hostile-checksum");
    // Folder order decides creation order: the hostile VM is built first, so it is VM console
    // 1, where keyboard input goes. It waits for a key (`hostile.go_key=1`), typed once the
    // checksum guest has filled its RAM: the attacks meet the pattern in place. (Started
    // together, the hostile guest reached the peer first in one fresh-clone CI run of 14.)
    let h = copy_guest_vm("hostile", &dir, "a-hostile");
    edit_vm_toml(
        &h,
        &[(
            "bootargs",
            &format!(
                "\"console=ttyAMA0 hostile.go_key=1 hostile.hv={} hostile.peer={}\"",
                list(&hv),
                list(&peers)
            ),
        )],
    );
    // Its virtio devices: a writable disk (slot 0) and a port on a switch the checksum VM is on
    // too (slot 1).
    let disk = noise(1 << 20, 0xd15c);
    std::fs::write(h.join("disk.img"), &disk).expect("write disk.img");
    append_toml(
        &h,
        "\n[[disks]]\nfile = \"disk.img\"\n\n[[net]]\nswitch = \"hostile-lan\"\n",
    );
    let c = copy_guest_vm("checksum", &dir, "b-checksum");
    edit_vm_toml(
        &c,
        &[(
            "bootargs",
            "\"checksum.rounds=60 checksum.pause_ms=500 checksum.limit=0x10000\"",
        )],
    );
    append_toml(&c, "\n[[net]]\nswitch = \"hostile-lan\"\n");
    let rd = dir.join("ramdisk.cpio");
    mkramdisk(&rd, &[&h, &c]);
    let mon = dir.join("monitor.sock");
    let monitor_arg = format!("unix:{},server,nowait", mon.display());
    let mut args: Vec<&str> = machine.to_vec();
    args.extend([
        "--ramdisk",
        rd.to_str().unwrap(),
        "--",
        "-monitor",
        &monitor_arg,
    ]);
    let mut q = start_interactive("hostile-checksum", &args, 180);

    // Find the checksum VM's RAM among the peer addresses while it runs.
    let filled = q.wait_for(Duration::from_secs(90), |l| {
        vm_stream(l, "checksum").contains("CHECKSUM: initial")
    });
    q.type_now(b"g");
    let mut found = Vec::new();
    if filled && let Some(mut m) = Monitor::connect(&mon) {
        let want = checksum_pattern(0x4000_0000);
        for &pa in &peers {
            if m.read_phys_u64(pa) == Some(want) {
                found.push(pa);
            }
        }
    }
    let r = q.finish();
    assert!(
        filled,
        "the checksum guest never filled its RAM:\n{}",
        r.tail(30)
    );
    assert_eq!(
        found.len(),
        1,
        "exactly one 64 MiB block of host RAM must hold the checksum guest's first word: {found:x?}"
    );
    eprintln!(
        "hostile-checksum: {:.1}s; hypervisor image {img_start:#x}..{img_end:#x}; checksum VM RAM at PA {:#x}",
        r.elapsed.as_secs_f64(),
        found[0]
    );

    assert_clean_end(&r, &["hostile", "checksum"]);
    // The checksum guest: stable over all its rounds, nothing changed.
    let cs = vm_stream(&r.log, "checksum");
    assert!(
        cs.contains("CHECKSUM: stable"),
        "no CHECKSUM: stable:\n{}",
        r.tail(30)
    );
    for bad in [
        "CHECKSUM: CHANGED",
        "read-back differs",
        "CHECKSUM: mismatch",
    ] {
        assert!(!cs.contains(bad), "checksum guest printed {bad:?}");
    }

    // The hostile guest: every action has an outcome and the count matches.
    let lines = vm_lines(
        &r.log,
        "hostile",
        &["HOSTILE: ", "HOSTILE-INFO: ", "FLOOD "],
    );
    let actions: Vec<(String, String)> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("HOSTILE: "))
        .filter(|l| !l.starts_with("done "))
        .map(|l| match l.split_once(": ") {
            Some((a, o)) => (a.to_string(), o.to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect();
    let done: usize = lines
        .iter()
        .find_map(|l| l.strip_prefix("HOSTILE: done "))
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no `HOSTILE: done`; log ends:\n{}", r.tail(30)));
    assert_eq!(done, actions.len(), "HOSTILE: done count vs action lines");
    // kestrel's warnings about what the guest did are rate-limited (src/ratelimit.rs: 10 per
    // 5 s per VM): the attacks inject a hundred or more aborts and UNDEFs within seconds, which
    // used to print a line each, holding the console from every other VM. Before: one each.
    let injected = actions
        .iter()
        .filter(|(_, o)| {
            o.starts_with("abort") || o.starts_with("iabort") || o.starts_with("undef")
        })
        .count();
    let warned = r
        .log
        .lines()
        .filter(|l| l.contains("WARN  kestrel: vm hostile: ") && l.contains("injecting"))
        .count();
    assert!(
        injected >= 100 && warned < injected / 2,
        "{warned} warnings for {injected} injected exceptions"
    );
    assert!(
        r.log
            .lines()
            .any(|l| l.contains("vm hostile: ")
                && l.contains("warnings about this guest suppressed")),
        "no suppressed-warnings line"
    );
    let mut wrong = Vec::new();
    for (a, o) in &actions {
        if !OUTCOMES.iter().any(|p| o.starts_with(p)) {
            wrong.push(format!("{a}: no outcome ({o:?})"));
        } else if let Some(need) = required_outcome(a)
            && !need.iter().any(|p| o.starts_with(p))
        {
            wrong.push(format!("{a}: {o} (wanted {need:?})"));
        }
    }
    // The virtio attacks: what each must have got (docs/virtio.md, "Bad input").
    let first_word = u64::from_le_bytes(disk[..8].try_into().unwrap());
    for (a, o) in &actions {
        if !a.starts_with("virtio ") {
            continue;
        }
        let need = virtio_expectation(a)
            .unwrap_or_else(|| panic!("no expectation for virtio action {a:?}"));
        let data = format!("data={first_word:#x}");
        let need: Vec<&str> = need
            .iter()
            .map(|&n| if n == "DATA" { data.as_str() } else { n })
            .collect();
        if let Some(miss) = need.iter().find(|n| !o.contains(**n)) {
            wrong.push(format!("{a}: {o} (wanted {miss:?})"));
        }
    }
    assert!(
        actions
            .iter()
            .filter(|(a, _)| a.starts_with("virtio "))
            .count()
            >= 60,
        "the virtio attacks did not all run"
    );
    assert!(
        wrong.is_empty(),
        "hostile actions with a wrong outcome:\n{}",
        wrong.join("\n")
    );
    // Each kind of bad input logged once per device, and counted.
    for kind in [
        "virtio slot 0: malformed descriptor chain",
        "virtio slot 0: virtqueue broken",
        "virtio slot 0: queue enabled with a bad size or rings",
        "virtio slot 0: feature set refused",
        "virtio slot 0: initialization steps out of order",
        "virtio slot 0: notification for a queue that is not running",
        "virtio slot 0: write to the read-only device configuration",
        "virtio slot 0: status write clearing bits",
        "virtio slot 0: register access of a width",
        "virtio slot 1: malformed request or frame",
        "virtio slot 1: notification for a queue that is not running",
    ] {
        assert_eq!(
            r.count(&format!("vm hostile: {kind}")),
            1,
            "{kind:?} must be logged exactly once"
        );
    }
    let port = |vm: &str| -> Vec<u64> {
        let c = counters(&r.log, vm).expect("counters");
        c.iter()
            .find(|(k, _)| k.starts_with("net0("))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no net0 counters for {vm}: {c:?}"))
    };
    let (hp, cp) = (port("hostile"), port("checksum"));
    let peers_tried = peers.iter().filter(|&&p| p < 0x1_0000_0000).count() as u64;
    // txf/txB/rxf/rxB/rxdrop/txdrop/offdrop/notify/irq
    assert_eq!(
        hp[0], 1,
        "the hostile port sent exactly its one good frame: {hp:?}"
    );
    assert_eq!(hp[5], peers_tried + 3, "frames the switch refused: {hp:?}");
    assert_eq!(
        (cp[2], cp[4]),
        (0, 1),
        "the checksum VM's port (no driver): {cp:?}"
    );
    // Every address of the hypervisor and of the peer was tried, read and write.
    for &pa in hv.iter().chain(&peers) {
        let at = format!("PA {pa:#x}");
        for op in ["read64", "write64"] {
            assert!(
                actions.iter().any(|(a, _)| a.starts_with(op)
                    && (a.ends_with(&at) || a.contains(&format!("{at} ")))),
                "no {op} of {pa:#x} among the hostile actions"
            );
        }
    }
    // The attack on the peer happened while the checksum guest's pattern was in place, and the
    // checksum guest kept checking after the hostile guest was done.
    let initial = first_pos(&r.log, "checksum", "CHECKSUM: initial").expect("initial");
    let attack = first_pos(
        &r.log,
        "hostile",
        &format!("write64 peer VM PA {:#x}", found[0]),
    )
    .expect("write to the peer");
    let done_at = first_pos(&r.log, "hostile", "HOSTILE: done").expect("done");
    let stable = first_pos(&r.log, "checksum", "CHECKSUM: stable").expect("stable");
    assert!(
        initial < attack,
        "the peer was attacked before the checksum guest filled its RAM"
    );
    assert!(
        done_at < stable,
        "the checksum guest ended before the hostile guest was done"
    );
    eprintln!(
        "hostile: {} actions; counters: {}",
        actions.len(),
        r.line_after("kestrel: vm hostile: counters: ")
            .unwrap_or_default()
    );

    // The table for docs/hostile.md.
    let mut md = String::from("| # | action | what the guest got back |\n|---|---|---|\n");
    for (i, (a, o)) in actions.iter().enumerate() {
        md.push_str(&format!(
            "| {} | `{}` | `{}` |\n",
            i + 1,
            a.replace('|', "\\|"),
            o.replace('|', "\\|")
        ));
    }
    std::fs::write(dir.join("hostile-table.md"), md).expect("write the table");
}

// ---------------------------------------------------------------------------------------------
// Bad input.

/// A ramdisk with one good VM (the checksum guest, a few rounds over 64 KiB) and a folder for
/// every kind of mistake: each bad VM is refused with a message naming the problem, the good
/// one runs and powers off, and the refused ones take nothing (page accounting).
#[test]
fn bad_vms_are_refused_with_a_reason_and_the_good_one_runs() {
    if !qemu_available() {
        return;
    }
    let img = std::fs::read(test_guests().join("checksum.img")).expect("checksum.img");
    let good = "kernel = \"checksum.img\"\nmemory = \"64M\"\ncpus = 1\n\
                bootargs = \"checksum.rounds=2 checksum.limit=0x10000\"\n";
    let with = |extra: &str| format!("{good}{extra}\n");
    // (folder, vm.toml, files, expected words in its refusal)
    #[allow(clippy::type_complexity)]
    let bad: Vec<(&str, String, Vec<(&str, Vec<u8>)>, Vec<&str>)> = vec![
        (
            "unknown-key",
            with("memroy = \"64M\""),
            vec![("checksum.img", img.clone())],
            vec!["unknown key", "memroy"],
        ),
        (
            "not-an-image",
            "kernel = \"Image\"\nmemory = \"64M\"\n".into(),
            vec![("Image", noise(256 * 1024, 7))],
            vec!["not an arm64 Image"],
        ),
        (
            "too-much-memory",
            good.replace("\"64M\"", "\"64G\""),
            vec![("checksum.img", img.clone())],
            vec!["needs 0x1000000000 bytes of RAM"],
        ),
        (
            // More vCPUs than physical CPUs is fine now (they share CPUs); more than a VM
            // may have is not.
            "too-many-cpus",
            good.replace("cpus = 1", "cpus = 65"),
            vec![("checksum.img", img.clone())],
            vec!["`cpus` = 65 is outside 1..=64"],
        ),
        (
            "pinned-to-cpu-9",
            with("physical_cpus = [9]"),
            vec![("checksum.img", img.clone())],
            vec!["physical CPU 9 does not exist"],
        ),
        (
            "missing-kernel",
            "kernel = \"Image\"\nmemory = \"64M\"\n".into(),
            vec![],
            vec!["`kernel`", "Image", "not in the folder"],
        ),
        (
            "no-config",
            String::new(),
            vec![("checksum.img", img.clone())],
            vec!["no vm.toml"],
        ),
        (
            "dotdot-path",
            "kernel = \"../good/checksum.img\"\nmemory = \"64M\"\n".into(),
            vec![],
            vec!["kernel", ".."],
        ),
        (
            "odd-memory",
            good.replace("\"64M\"", "67108865"),
            vec![("checksum.img", img.clone())],
            vec!["`memory`", "not a multiple of 0x1000"],
        ),
        (
            "gic-passthrough",
            with(
                "[[devices]]\nname = \"gicd\"\nbase = 0x08000000\nsize = \"4K\"\nipa = 0x0c000000",
            ),
            vec![("checksum.img", img.clone())],
            vec!["device gicd", "GIC distributor"],
        ),
        (
            "ram-passthrough",
            with("[[devices]]\nname = \"ram\"\nbase = 0x40000000\nsize = \"2M\"\nipa = 0x0c000000"),
            vec![("checksum.img", img.clone())],
            vec!["device ram", "RAM"],
        ),
        (
            "zz-same-name",
            with("name = \"good\""),
            vec![("checksum.img", img.clone())],
            vec!["same name"],
        ),
    ];
    let mut cpio = Cpio::new()
        .dir("good")
        .file("good/vm.toml", good.as_bytes())
        .file("good/checksum.img", &img);
    for (folder, toml, files, _) in &bad {
        cpio = cpio.dir(folder);
        if !toml.is_empty() {
            cpio = cpio.file(&format!("{folder}/vm.toml"), toml.as_bytes());
        }
        for (f, data) in files {
            cpio = cpio.file(&format!("{folder}/{f}"), data);
        }
    }
    let dir = scratch("bad-vms");
    let rd = dir.join("ramdisk.cpio");
    std::fs::write(&rd, cpio.finish()).expect("write ramdisk");
    let r = run(
        "bad-vms",
        &[
            "--cpus",
            "4",
            "--mem",
            "1G",
            "--ramdisk",
            rd.to_str().unwrap(),
        ],
        120,
    );
    assert_clean_end(&r, &["good"]);
    assert!(
        vm_stream(&r.log, "good").contains("CHECKSUM: stable"),
        "the good VM did not finish:\n{}",
        r.tail(30)
    );
    let refusals: Vec<&str> = r
        .log
        .lines()
        .filter(|l| l.contains(": refused: "))
        .collect();
    for l in &refusals {
        eprintln!("{l}");
    }
    for (folder, _, _, words) in &bad {
        let name = if *folder == "zz-same-name" {
            "good"
        } else {
            folder
        };
        assert!(
            refusals
                .iter()
                .any(|l| l.contains(&format!("kestrel: vm {name}: refused: "))
                    && words.iter().all(|w| l.contains(w))),
            "no refusal of {folder} naming {words:?}; refusals:\n{}",
            refusals.join("\n")
        );
    }
    assert_eq!(refusals.len(), bad.len(), "one refusal per bad VM");
    assert_eq!(
        r.count("kestrel: vm good (id "),
        1,
        "only the good VM starts"
    );
    eprintln!("bad-vms: {:.1}s", r.elapsed.as_secs_f64());
}

/// Whole-ramdisk failures: the hypervisor says why and powers off cleanly (no VM, no crash).
#[test]
fn broken_ramdisks_are_refused_and_the_machine_powers_off() {
    if !qemu_available() {
        return;
    }
    let img = std::fs::read(test_guests().join("checksum.img")).expect("checksum.img");
    let good = Cpio::new()
        .dir("vm")
        .file(
            "vm/vm.toml",
            b"kernel = \"checksum.img\"\nmemory = \"64M\"\n",
        )
        .file("vm/checksum.img", &img)
        .finish();
    let dir = scratch("broken-ramdisks");
    let gz = |data: &[u8]| -> Vec<u8> {
        let p = dir.join("tmp.cpio");
        std::fs::write(&p, data).expect("write");
        let out = Command::new("gzip")
            .args(["-9", "-n", "-c"])
            .arg(&p)
            .output()
            .expect("run gzip");
        assert!(out.status.success());
        out.stdout
    };
    let mut corrupt_gz = gz(&good);
    let mid = corrupt_gz.len() / 2;
    for b in &mut corrupt_gz[mid..mid + 16] {
        *b ^= 0x5a;
    }
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated-cpio",
            good[..good.len() / 2].to_vec(),
            "ramdisk: cpio: ",
        ),
        ("garbage", noise(64 * 1024, 42), "cpio: no newc magic"),
        ("corrupt-gzip", corrupt_gz, "ramdisk: gzip: "),
        (
            "no-trailer",
            good[..good.len() - 124].to_vec(),
            "ramdisk: cpio: ",
        ),
    ];
    for (name, data, want) in cases {
        let rd = dir.join(format!("{name}.img"));
        std::fs::write(&rd, &data).expect("write ramdisk");
        let r = run(
            &format!("broken-{name}"),
            &[
                "--cpus",
                "2",
                "--mem",
                "512M",
                "--ramdisk",
                rd.to_str().unwrap(),
            ],
            60,
        );
        r.assert_status(0);
        let line = r
            .line_after("kestrel: ramdisk refused: ")
            .unwrap_or_else(|| {
                panic!(
                    "{name}: no `ramdisk refused` line; log ends:\n{}",
                    r.tail(20)
                )
            });
        assert!(
            line.contains(want),
            "{name}: refusal {line:?} does not say {want:?}"
        );
        r.assert_contains("kestrel: power off");
        r.assert_lacks("kestrel: vm ");
        r.assert_lacks("PANIC");
        eprintln!(
            "{name}: {:.1}s: ramdisk refused: {line}",
            r.elapsed.as_secs_f64()
        );
    }
    // An archive without any VM folder: nothing to run, a clean power off.
    let rd = dir.join("empty.cpio");
    std::fs::write(&rd, Cpio::new().file("README", b"no VMs here").finish()).expect("write");
    let r = run(
        "broken-no-vms",
        &[
            "--cpus",
            "2",
            "--mem",
            "512M",
            "--ramdisk",
            rd.to_str().unwrap(),
        ],
        60,
    );
    r.assert_status(0);
    r.assert_contains("kestrel: no VM is running");
    r.assert_contains("kestrel: power off");
}

/// A gzip ramdisk whose last four bytes are not a small ISIZE (text after the member, or a
/// corrupted ISIZE) must be refused like any other broken archive. (It once made the hypervisor
/// allocate the trailer's size up front and panic on a 512 MiB machine; the size hint is now
/// capped and every allocation of the output checked.)
#[test]
fn gzip_ramdisk_with_a_bogus_size_trailer_is_refused_without_a_panic() {
    if !qemu_available() {
        return;
    }
    let img = std::fs::read(test_guests().join("checksum.img")).expect("checksum.img");
    let good = Cpio::new()
        .dir("vm")
        .file(
            "vm/vm.toml",
            b"kernel = \"checksum.img\"\nmemory = \"64M\"\n",
        )
        .file("vm/checksum.img", &img)
        .finish();
    let dir = scratch("gzip-size-hint");
    let p = dir.join("ramdisk.cpio");
    std::fs::write(&p, &good).expect("write");
    let out = Command::new("gzip")
        .args(["-9", "-n", "-c"])
        .arg(&p)
        .output()
        .expect("run gzip");
    assert!(out.status.success());
    let mut trailing = out.stdout.clone();
    trailing.extend_from_slice(b"junk after the gzip member");
    let mut bad_isize = out.stdout.clone();
    let n = bad_isize.len();
    bad_isize[n - 4..].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
    for (name, data) in [("trailing-text", trailing), ("bad-isize", bad_isize)] {
        let rd = dir.join(format!("{name}.img"));
        std::fs::write(&rd, &data).expect("write ramdisk");
        let r = run(
            &format!("gzip-size-hint-{name}"),
            &[
                "--cpus",
                "2",
                "--mem",
                "512M",
                "--ramdisk",
                rd.to_str().unwrap(),
            ],
            60,
        );
        r.assert_lacks("PANIC");
        r.assert_status(0);
        r.assert_contains("kestrel: ramdisk refused: ramdisk: gzip: ");
        r.assert_contains("kestrel: power off");
    }
}

// ---------------------------------------------------------------------------------------------
// Reset.

/// A 64-byte arm64 Image header (Documentation/arch/arm64/booting.rst: branch over the header,
/// text_offset 0, image_size, flags = LE, 4 KiB pages, anywhere; magic "ARM\x64" at 56)
/// followed by `code`.
fn tiny_image(code: &[u32]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0x1400_0010u32.to_le_bytes()); // b #0x40
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&0u64.to_le_bytes()); // text_offset
    v.extend_from_slice(&0x1_0000u64.to_le_bytes()); // image_size
    v.extend_from_slice(&0xau64.to_le_bytes()); // flags: LE, 4 KiB, anywhere
    v.extend_from_slice(&[0u8; 24]); // res2..res4
    v.extend_from_slice(&0x644d_5241u32.to_le_bytes()); // "ARM\x64"
    v.extend_from_slice(&0u32.to_le_bytes());
    for w in code {
        v.extend_from_slice(&w.to_le_bytes());
    }
    v
}

/// Prints "R\n" on the PL011 at 0x0900_0000 and calls PSCI SYSTEM_RESET (0x8400_0009) over HVC.
const RESET_GUEST: &[u32] = &[
    0xd2a1_2001, // mov  x1, #0x09000000
    0x5280_0a42, // mov  w2, #'R'
    0xb900_0022, // str  w2, [x1]
    0x5280_0142, // mov  w2, #'\n'
    0xb900_0022, // str  w2, [x1]
    0x5280_0120, // mov  w0, #0x9
    0x72b0_8000, // movk w0, #0x8400, lsl #16
    0xd400_0002, // hvc  #0
    0x1400_0000, // b    .
];

/// The `reset (pages used N, at rest M)` figures of every reset of VM `vm`.
fn reset_figures(log: &str, vm: &str) -> Vec<(u64, u64)> {
    log.lines()
        .filter_map(|l| l.split_once(&format!("kestrel: vm {vm}: reset (pages used ")))
        .filter_map(|(_, rest)| {
            let (used, rest) = rest.split_once(", at rest ")?;
            Some((used.parse().ok()?, rest.trim_end_matches(')').parse().ok()?))
        })
        .collect()
}

/// A guest that resets at once, with `on_reset = "restart"` (the default): the VM restarts
/// again and again; each reset returns every page and the next start succeeds. The machine
/// never powers off by itself: the test stops QEMU after 20 restarts.
#[test]
fn reset_with_on_reset_restart_restarts_the_vm_without_leaking_pages() {
    if !qemu_available() {
        return;
    }
    let rd = scratch("reset-restart").join("ramdisk.cpio");
    let cpio = Cpio::new()
        .dir("resetter")
        .file(
            "resetter/vm.toml",
            b"kernel = \"Image\"\nmemory = \"32M\"\n",
        )
        .file("resetter/Image", &tiny_image(RESET_GUEST))
        .finish();
    std::fs::write(&rd, cpio).expect("write ramdisk");
    let mut q = start(
        "reset-restart",
        &[
            "--cpus",
            "2",
            "--mem",
            "512M",
            "--ramdisk",
            rd.to_str().unwrap(),
        ],
        120,
    );
    let enough = q.wait_for(Duration::from_secs(100), |l| {
        l.matches("kestrel: vm resetter: restarting").count() >= 20
    });
    let r = q.stop();
    let restarts = r.count("kestrel: vm resetter: restarting");
    let boots = r.count("[resetter] R");
    let resets = reset_figures(&r.log, "resetter");
    eprintln!(
        "reset-restart: {:.1}s: {} resets, {restarts} restarts, {boots} boots",
        r.elapsed.as_secs_f64(),
        resets.len()
    );
    assert!(enough, "only {restarts} restarts:\n{}", r.tail(30));
    assert!(
        boots >= restarts,
        "every restart runs the guest again: {boots} boots, {restarts} restarts"
    );
    assert!(
        resets.iter().all(|&(used, rest)| used == rest),
        "pages leaked across resets: {resets:?}"
    );
    r.assert_lacks("restart failed");
    r.assert_lacks("not started");
    r.assert_lacks("PANIC");
    r.assert_lacks("powered off");
}

/// Linux `reboot -f` as init (see below) with `on_reset = "restart"`: the VM boots Linux
/// again from the same images after its reset, with every page returned in between. The test
/// stops QEMU once the second boot has reached init.
#[test]
fn linux_reboot_with_on_reset_restart_boots_linux_again() {
    if !qemu_available() {
        return;
    }
    let dir = scratch("linux-reboot-restart");
    let vm = linux_vm(
        &dir,
        "linux",
        "kernel = \"Image\"\ninitrd = \"initramfs.cpio.gz\"\nmemory = \"256M\"\ncpus = 1\n\
         on_reset = \"restart\"\n\
         bootargs = \"console=ttyAMA0 earlycon rdinit=/bin/busybox -- reboot -f\"\n",
    );
    let rd = dir.join("ramdisk.cpio");
    mkramdisk(&rd, &[&vm]);
    let mut q = start(
        "linux-reboot-restart",
        &[
            "--cpus",
            "2",
            "--mem",
            "1G",
            "--ramdisk",
            rd.to_str().unwrap(),
        ],
        300,
    );
    let twice = q.wait_for(Duration::from_secs(280), |l| {
        vm_stream(l, "linux")
            .matches("reboot: Restarting system")
            .count()
            >= 2
    });
    let r = q.stop();
    eprintln!("linux-reboot-restart: {:.1}s", r.elapsed.as_secs_f64());
    assert!(
        twice,
        "Linux did not boot and reset twice; log ends:\n{}",
        r.tail(30)
    );
    let s = vm_stream(&r.log, "linux");
    assert!(s.matches("Booting Linux on physical CPU").count() >= 2);
    assert!(r.count("kestrel: vm linux: restarting") >= 1);
    let resets = reset_figures(&r.log, "linux");
    assert!(
        !resets.is_empty() && resets.iter().all(|&(used, rest)| used == rest),
        "pages leaked across resets: {resets:?}"
    );
    r.assert_lacks("restart failed");
    r.assert_lacks("PANIC");
}

/// The Debian Linux guest resets itself: the initramfs's /init has no reboot mode, so the kernel
/// runs busybox's `reboot -f` as init (`rdinit=/bin/busybox -- reboot -f`), which ends in PSCI
/// SYSTEM_RESET. With `on_reset = "stop"` the VM ends as reset, is not restarted, every page
/// comes back and the machine powers off.
#[test]
fn linux_reboot_with_on_reset_stop_ends_the_vm() {
    if !qemu_available() {
        return;
    }
    let dir = scratch("linux-reboot-stop");
    let vm = linux_vm(
        &dir,
        "linux",
        "kernel = \"Image\"\ninitrd = \"initramfs.cpio.gz\"\nmemory = \"256M\"\ncpus = 1\n\
         on_reset = \"stop\"\n\
         bootargs = \"console=ttyAMA0 earlycon rdinit=/bin/busybox -- reboot -f\"\n",
    );
    let rd = dir.join("ramdisk.cpio");
    mkramdisk(&rd, &[&vm]);
    let r = run(
        "linux-reboot-stop",
        &[
            "--cpus",
            "2",
            "--mem",
            "1G",
            "--ramdisk",
            rd.to_str().unwrap(),
        ],
        300,
    );
    r.assert_status(0);
    assert!(
        vm_stream(&r.log, "linux").contains("reboot: Restarting system"),
        "the guest kernel did not restart; log ends:\n{}",
        r.tail(30)
    );
    r.assert_contains("kestrel: vm linux: reset (pages used");
    r.assert_lacks("kestrel: vm linux: restarting");
    r.assert_contains("page accounting back to its starting figure");
    r.assert_contains("kestrel: power off");
    eprintln!("linux-reboot-stop: {:.1}s", r.elapsed.as_secs_f64());
}

/// The log helpers undo the console mux's splits (no QEMU needed): a line cut inside its token,
/// a hypervisor line in the middle of a VM line, and an empty continuation.
#[test]
fn vm_lines_rebuilds_lines_split_by_the_console_mux() {
    let log = "[hostile] HOSTILE: read64 a: ok\n\
               [hostile] HOS\n\
               [checksum] CHECKSUM: round 1 0x1\n\
               [hostile] TILE: write64 b = 0x1: ab\n\
               [    1.0] cpu1 WARN  kestrel: vm hostile: write ...\n\
               [hostile] ort esr=0x96000050\n\
               [hostile] FLOOD 000001 0123\n\
               [checksum] CHECKSUM: stable 0x1\n\
               [hostile] \n\
               [hostile] HOSTILE: done 2 actions\n";
    let lines = vm_lines(log, "hostile", &["HOSTILE: ", "HOSTILE-INFO: ", "FLOOD "]);
    assert_eq!(
        lines,
        [
            "HOSTILE: read64 a: ok",
            "HOSTILE: write64 b = 0x1: abort esr=0x96000050",
            "FLOOD 000001 0123",
            "HOSTILE: done 2 actions"
        ]
    );
    assert_eq!(
        first_pos(log, "checksum", "CHECKSUM: stable"),
        log.find("[checksum] CHECKSUM: stable")
    );
    assert!(vm_stream(log, "checksum").contains("CHECKSUM: round 1 0x1CHECKSUM: stable"));
}

// ---------------------------------------------------------------------------------------------
// A crashing VM beside a working one.

/// Prints "C" and jumps to IPA 0x1000, where there is no memory: the instruction abort is
/// injected, but the guest never set VBAR_EL1, so the abort's own vector (0x200) faults again.
const CRASH_GUEST: &[u32] = &[
    0xd2a1_2001, // mov  x1, #0x09000000
    0x5280_0862, // mov  w2, #'C'
    0xb900_0022, // str  w2, [x1]
    0x5280_0142, // mov  w2, #'\n'
    0xb900_0022, // str  w2, [x1]
    0xd282_0000, // mov  x0, #0x1000
    0xd61f_0000, // br   x0
];

/// One VM crashes (its exceptions loop on a vector that faults) while a checksum VM works: the
/// crashed VM is stopped with a message, the checksum VM's result comes out unchanged, it
/// powers off normally, and the machine powers off with every page returned.
#[test]
fn a_crashing_vm_is_stopped_and_the_other_vm_is_undisturbed() {
    if !qemu_available() {
        return;
    }
    let img = std::fs::read(test_guests().join("checksum.img")).expect("checksum.img");
    let cpio = Cpio::new()
        .dir("crasher")
        .file("crasher/vm.toml", b"kernel = \"Image\"\nmemory = \"32M\"\n")
        .file("crasher/Image", &tiny_image(CRASH_GUEST))
        .dir("worker")
        .file(
            "worker/vm.toml",
            b"kernel = \"checksum.img\"\nmemory = \"64M\"\nbootargs = \"checksum.rounds=6\"\n",
        )
        .file("worker/checksum.img", &img)
        .finish();
    let rd = scratch("crash-isolation").join("ramdisk.cpio");
    std::fs::write(&rd, cpio).expect("write ramdisk");
    let r = run(
        "crash-isolation",
        &[
            "--cpus",
            "2",
            "--mem",
            "1G",
            "--ramdisk",
            rd.to_str().unwrap(),
        ],
        120,
    );
    r.assert_status(0);
    r.assert_contains("[crasher] C");
    r.assert_contains("kestrel: vm crasher: stopped after a crash");
    r.assert_contains("no working vector table");
    r.assert_contains("CHECKSUM: stable");
    r.assert_lacks("CHECKSUM: CHANGED");
    r.assert_contains("kestrel: vm worker: powered off");
    r.assert_contains("page accounting back to its starting figure");
    r.assert_lacks("PANIC");
}
