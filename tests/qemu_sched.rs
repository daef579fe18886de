//! vCPUs sharing physical CPUs (issue 12), on QEMU virt with Debian Linux guests: eight
//! single-vCPU VMs on four CPUs, a 4-vCPU VM on two CPUs under an SMP workload, and the
//! fairness of a shared CPU (weights 256/256 and 256/768; an idle VM beside a busy one).
//!
//! The guests run the standard guest initramfs (qemu/build-guest-initramfs.sh) with the test's
//! script appended as `/guest-script` in a second cpio archive where one is needed.
mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const LINUX_CHECKSUM: &str = "90433fcbd9e16297e6a7c1dacb1056394743194776e52f78ebf0a44b80b6b14f";

fn toml(memory: &str, cpus: usize, extra: &str) -> String {
    format!(
        "kernel = \"Image\"\ninitrd = \"initramfs.cpio.gz\"\n\
         bootargs = \"console=ttyAMA0 earlycon guest.test=1\"\n\
         memory = \"{memory}\"\ncpus = {cpus}\n{extra}"
    )
}

fn assert_clean_end(r: &Run, vms: &[&str]) {
    r.assert_status(0);
    for vm in vms {
        r.assert_contains(&format!("kestrel: vm {vm}: powered off"));
    }
    r.assert_contains("kestrel: all VMs ended; page accounting back to its starting figure");
    r.assert_lacks("UNEXPECTED EXCEPTION");
    r.assert_lacks("PANIC");
}

fn assert_in_stream(r: &Run, vm: &str, needle: &str) {
    assert!(
        vm_stream(&r.log, vm).contains(needle),
        "VM {vm} did not print {needle:?}; serial log {} ends:\n{}",
        r.log_path.display(),
        r.tail(40)
    );
}

/// Eight single-vCPU Linux VMs of 128 MiB on a 4-CPU machine (two per CPU): all reach
/// userland, print the checksum and power off, and every page comes back.
#[test]
fn eight_linux_vms_share_four_cpus() {
    if !qemu_available() {
        return;
    }
    let dir = scratch("sched-eight");
    let rd = dir.join("ramdisk.cpio");
    {
        let _g = lock_builds();
        let st = Command::new(repo().join("qemu/build-default-ramdisk.sh"))
            .args(["--test", "--vms", "8", "--cpus", "1", "--memory", "128M"])
            .arg(&rd)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run qemu/build-default-ramdisk.sh");
        assert!(st.success(), "building the eight-VM ramdisk failed");
    }
    let r = run(
        "sched-eight",
        &[
            "--cpus",
            "4",
            "--mem",
            "2G",
            "--ramdisk",
            rd.to_str().unwrap(),
        ],
        600,
    );
    let names: Vec<String> = std::iter::once("linux".to_string())
        .chain((2..=8).map(|i| format!("linux{i}")))
        .collect();
    let names: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
    assert_clean_end(&r, &names);
    let mut per_cpu = [0usize; 4];
    for vm in &names {
        assert_in_stream(&r, vm, "GUEST: userland reached");
        assert_in_stream(&r, vm, &format!("GUEST: checksum={LINUX_CHECKSUM}"));
        assert_in_stream(&r, vm, "GUEST: powering off");
        let p = vm_pcpus(&r.log, vm).unwrap_or_else(|| panic!("no pCPUs line for {vm}"));
        assert_eq!(p.len(), 1, "{vm}: {p:?}");
        per_cpu[p[0]] += 1;
    }
    assert_eq!(per_cpu, [2, 2, 2, 2], "two VMs on each CPU");
    eprintln!("sched-eight: {:.1}s", r.elapsed.as_secs_f64());
}

/// The SMP workload: parallel hashing, a fork/exec storm, pipes and short sleeps, then the
/// kernel's warnings about stalls counted in dmesg.
const SMP_SCRIPT: &str = r#"
for i in 1 2 3 4; do (seq 1 300000 | sha256sum > /tmp/h$i) & done
n=0; while [ $n -lt 300 ]; do /bin/true; n=$((n + 1)); done
dd if=/dev/zero bs=64k count=256 2>/dev/null | cat | cat | sha256sum > /tmp/pipe
n=0; while [ $n -lt 20 ]; do sleep 0.02; n=$((n + 1)); done
wait
echo "SMPTEST: hashes $(cat /tmp/h1 /tmp/h2 /tmp/h3 /tmp/h4 | sort -u | wc -l) distinct"
echo "SMPTEST: pipe $(cut -c1-16 /tmp/pipe)"
echo "SMPTEST: warnings $(dmesg | grep -ciE 'rcu.*stall|soft lockup|hung task|blocked for more than')"
"#;

/// A 4-vCPU VM on 2 physical CPUs (two vCPUs per CPU) boots and runs the SMP workload with
/// no RCU stall, soft lockup or hung-task warning.
#[test]
fn four_vcpus_on_two_cpus_run_an_smp_workload_without_stalls() {
    if !qemu_available() {
        return;
    }
    let dir = scratch("sched-smp");
    let vm = linux_vm_with_script(&dir, "smp", &toml("256M", 4, ""), Some(SMP_SCRIPT));
    let rd = dir.join("ramdisk.cpio");
    mkramdisk(&rd, &[&vm]);
    let r = run(
        "sched-smp",
        &[
            "--cpus",
            "2",
            "--mem",
            "1G",
            "--ramdisk",
            rd.to_str().unwrap(),
        ],
        600,
    );
    assert_clean_end(&r, &["smp"]);
    assert_in_stream(&r, "smp", "GUEST: nproc=4");
    assert_eq!(vm_pcpus(&r.log, "smp"), Some(vec![0, 1, 0, 1]));
    // Four identical hashes: one distinct line.
    assert_in_stream(&r, "smp", "SMPTEST: hashes 1 distinct");
    // sha256 of 16 MiB of zeros.
    assert_in_stream(&r, "smp", "SMPTEST: pipe 080acf35a507ac98");
    assert_in_stream(&r, "smp", "SMPTEST: warnings 0");
    assert_in_stream(&r, "smp", "GUEST: script exit=0");
    eprintln!("sched-smp: {:.1}s", r.elapsed.as_secs_f64());
}

/// CPU-bound work: a counter loop whose count is printed for every second of guest time
/// (`/proc/uptime`), for `FAIR_SECONDS` seconds; with `idle` in its name the VM sleeps instead.
/// With each count, and before and after the loop, it prints its `steal` (/proc/stat, in
/// USER_HZ = 1/100 s) and uptime (1/100 s); first the kernel's PV-time line.
const FAIR_SCRIPT: &str = r#"
echo "PV: $(dmesg | grep -m1 'stolen time')"
steal() { read _ _ _ _ _ _ _ _ st _ < /proc/stat; read u _ < /proc/uptime; echo "STEAL: $st ${u%.*}${u#*.}"; }
steal
read up _ < /proc/uptime; cur=${up%.*}; stop=$((cur + 14)); n=0
while [ $cur -lt $stop ]; do
    i=0; while [ $i -lt 50 ]; do i=$((i + 1)); done
    n=$((n + 1))
    read up _ < /proc/uptime; c=${up%.*}
    if [ $c != $cur ]; then echo "FAIR: $n"; steal; n=0; cur=$c; fi
done
steal
"#;
const IDLE_SCRIPT: &str = "sleep 20\n";

/// The per-second counts of VM `vm`, without the first 3 and the last 3 (start-up, and the
/// other VM possibly already done).
fn rates(r: &Run, vm: &str) -> Vec<u64> {
    let v: Vec<u64> = vm_stream(&r.log, vm)
        .split("FAIR: ")
        .skip(1)
        .filter_map(|s| {
            s.chars()
                .take_while(|c| c.is_ascii_digit())
                .collect::<String>()
                .parse()
                .ok()
        })
        .collect();
    assert!(
        v.len() >= 10,
        "VM {vm} reported {} seconds: {v:?}; log ends:\n{}",
        v.len(),
        r.tail(30)
    );
    v[3..v.len() - 3].to_vec()
}

fn mean(v: &[u64]) -> f64 {
    v.iter().sum::<u64>() as f64 / v.len() as f64
}

/// VM `vm`'s `STEAL:` samples, (steal, uptime) in 1/100 s, after checking that the guest
/// took up PV time (DEN0057A) at boot.
fn steal_samples(r: &Run, vm: &str) -> Vec<(u64, u64)> {
    let stream = vm_stream(&r.log, vm);
    assert!(
        stream.contains("arm-pv: using stolen time PV"),
        "VM {vm}: Linux did not take up PV time; log ends:\n{}",
        r.tail(30)
    );
    // The stream has no line breaks: each figure is its leading digits.
    let number = |x: &str| -> Option<u64> {
        x.chars()
            .take_while(|c| c.is_ascii_digit())
            .collect::<String>()
            .parse()
            .ok()
    };
    let v: Vec<(u64, u64)> = stream
        .split("STEAL: ")
        .skip(1)
        .filter_map(|t| {
            let mut w = t.split_whitespace();
            Some((number(w.next()?)?, number(w.next()?)?))
        })
        .collect();
    assert!(v.len() >= 10, "VM {vm}: {} STEAL samples: {v:?}", v.len());
    v
}

/// The share of guest time VMs `a` and `b` were told was stolen (`steal` over uptime) while
/// both ran their loops.
fn steal_shares(r: &Run, a: &str, b: &str) -> (f64, f64) {
    let (sa, sb) = (steal_samples(r, a), steal_samples(r, b));
    let lo = sa[0].1.max(sb[0].1);
    let hi = sa[sa.len() - 1].1.min(sb[sb.len() - 1].1);
    let share = |v: &[(u64, u64)], vm: &str| {
        let first = v
            .iter()
            .find(|s| s.1 >= lo)
            .expect("a sample in the window");
        let last = v
            .iter()
            .rev()
            .find(|s| s.1 <= hi)
            .expect("a sample in the window");
        assert!(
            last.1 >= first.1 + 800,
            "VM {vm}: both loops overlap only {}..{} cs",
            first.1,
            last.1
        );
        (last.0 - first.0) as f64 / (last.1 - first.1) as f64
    };
    (share(&sa, a), share(&sb, b))
}

/// Runs VMs `(name, weight, script)` all pinned to physical CPU 0 of a 1-CPU machine.
fn fair_run(name: &str, vms: &[(&str, u32, &str)]) -> Run {
    let dir = scratch(name);
    let folders: Vec<PathBuf> = vms
        .iter()
        .map(|(vm, w, script)| {
            linux_vm_with_script(
                &dir,
                vm,
                &toml("128M", 1, &format!("weight = {w}\nphysical_cpus = [0]\n")),
                Some(script),
            )
        })
        .collect();
    let refs: Vec<&Path> = folders.iter().map(|p| p.as_path()).collect();
    let rd = dir.join("ramdisk.cpio");
    mkramdisk(&rd, &refs);
    let r = run(
        name,
        &[
            "--cpus",
            "1",
            "--mem",
            "1G",
            "--icount",
            "--ramdisk",
            rd.to_str().unwrap(),
        ],
        600,
    );
    let names: Vec<&str> = vms.iter().map(|v| v.0).collect();
    assert_clean_end(&r, &names);
    r
}

/// Two CPU-bound VMs on one physical CPU get CPU in the ratio of their weights within 10%:
/// 256/256, then 256/768.
#[test]
fn a_shared_cpu_is_divided_by_weight() {
    if !qemu_available() {
        return;
    }
    for (name, wa, wb) in [
        ("sched-fair-equal", 256, 256),
        ("sched-fair-1to3", 256, 768),
    ] {
        let r = fair_run(name, &[("a", wa, FAIR_SCRIPT), ("b", wb, FAIR_SCRIPT)]);
        let (a, b) = (rates(&r, "a"), rates(&r, "b"));
        let ratio = mean(&b) / mean(&a);
        let want = f64::from(wb) / f64::from(wa);
        eprintln!("{name}: a {a:?} b {b:?}: b/a {ratio:.3}, weights {want:.3}");
        assert!(
            (ratio / want - 1.0).abs() <= 0.10,
            "{name}: work ratio {ratio:.3}, weights {want:.3}; a {a:?} b {b:?}"
        );
        // Stolen time (PV_TIME): while both loop, each guest is told it waited for the
        // other's share of the CPU.
        let (sa, sb) = steal_shares(&r, "a", "b");
        for (vm, share, other, own) in [("a", sa, wb, wa), ("b", sb, wa, wb)] {
            let want = f64::from(other) / f64::from(own + other);
            eprintln!("{name}: {vm}: steal {share:.3} of its time, expected {want:.3}");
            assert!(
                (share - want).abs() <= 0.08,
                "{name}: VM {vm} was told {share:.3} of its time was stolen, expected {want:.3}"
            );
        }
    }
}

/// A VM blocked in WFI (sleeping) beside a busy one costs the busy one under 2% of its work.
#[test]
fn an_idle_vm_beside_a_busy_one_costs_it_under_2_percent() {
    if !qemu_available() {
        return;
    }
    let alone = fair_run("sched-busy-alone", &[("busy", 256, FAIR_SCRIPT)]);
    // Alone on its CPU (the dedicated path): PV time is offered and reads 0 steal.
    let s = steal_samples(&alone, "busy");
    assert!(
        s.iter().all(|x| x.0 == 0),
        "steal on a dedicated CPU: {s:?}"
    );
    let beside = fair_run(
        "sched-busy-beside-idle",
        &[("busy", 256, FAIR_SCRIPT), ("idle", 256, IDLE_SCRIPT)],
    );
    let (a, b) = (mean(&rates(&alone, "busy")), mean(&rates(&beside, "busy")));
    let cost = 1.0 - b / a;
    eprintln!(
        "busy alone {a:.1}/s, beside an idle VM {b:.1}/s: cost {:.2}%",
        cost * 100.0
    );
    assert!(
        cost < 0.02,
        "an idle VM costs the busy one {:.2}%",
        cost * 100.0
    );
}

/// `Ctrl-A :` commands on the console while VM `keep` runs: `start` of an `autostart = false`
/// VM, `reset` (it restarts: `on_reset = "restart"`) and `stop` of it, `list`, an unknown
/// command and an unknown name; `keep` ticks on throughout, and `stop keep` ends the machine.
#[test]
fn console_commands_start_reset_and_stop_a_vm_while_another_runs() {
    use std::time::Duration;
    if !qemu_available() {
        return;
    }
    let dir = scratch("sched-console");
    let keep = linux_vm_with_script(
        &dir,
        "keep",
        &toml("128M", 1, ""),
        Some("n=0; while [ $n -lt 900 ]; do echo \"KEEP: $n\"; sleep 1; n=$((n + 1)); done\n"),
    );
    let extra = linux_vm_with_script(
        &dir,
        "extra",
        &toml("128M", 1, "autostart = false\non_reset = \"restart\"\n"),
        Some("echo \"EXTRA: up\"; sleep 900\n"),
    );
    let rd = dir.join("ramdisk.cpio");
    mkramdisk(&rd, &[&keep, &extra]);
    let rd = rd.to_string_lossy().into_owned();
    let mut q = start_interactive(
        "sched-console",
        &["--cpus", "2", "--mem", "1G", "--ramdisk", &rd],
        400,
    );
    let keep_ticks = |l: &str| l.matches("[keep] KEEP: ").count();
    let step = |q: &mut Started, keys: &[u8], what: &str, pred: &dyn Fn(&str) -> bool| {
        q.type_slowly(keys);
        assert!(
            q.wait_for(Duration::from_secs(120), pred),
            "{what}; log ends:\n{}",
            q.log()
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        );
    };
    assert!(
        q.wait_for(Duration::from_secs(150), |l| l.contains("[keep] KEEP: 1")),
        "keep did not start ticking:\n{}",
        q.log()
    );
    q.log()
        .contains("kestrel: vm extra: autostart = false, not started")
        .then_some(())
        .expect("extra was started at boot");
    step(&mut q, b"\x01:frob\r", "unknown command answered", &|l| {
        l.contains("unknown command `frob`")
    });
    step(
        &mut q,
        b"\x01:start nosuch\r",
        "unknown name answered",
        &|l| l.contains("no VM named `nosuch`"),
    );
    step(&mut q, b"\x01:start extra\r", "extra started", &|l| {
        l.contains("[extra] EXTRA: up")
    });
    step(&mut q, b"\x01:list\r", "list shows both running", &|l| {
        l.lines()
            .filter(|x| x.contains("kestrel: ") && x.contains("running"))
            .count()
            >= 2
    });
    step(&mut q, b"\x01:reset extra\r", "extra restarted", &|l| {
        l.matches("[extra] EXTRA: up").count() == 2
    });
    let before = keep_ticks(&q.log());
    step(&mut q, b"\x01:stop extra\r", "extra stopped", &|l| {
        l.contains("kestrel: vm extra: powered off")
    });
    step(&mut q, b"", "keep ticks on", &|l| {
        keep_ticks(l) >= before + 3
    });
    step(&mut q, b"\x01:start extra\r", "extra started again", &|l| {
        l.matches("[extra] EXTRA: up").count() == 3
    });
    q.type_slowly(b"\x01:stop extra\r");
    std::thread::sleep(Duration::from_secs(3));
    q.type_slowly(b"\x01:stop keep\r");
    let r = q.finish();
    r.assert_status(0);
    r.assert_contains("kestrel: vm extra: reset");
    r.assert_contains("kestrel: vm keep: powered off");
    r.assert_contains("kestrel: all VMs ended; page accounting back to its starting figure");
    r.assert_lacks("PANIC");
    r.assert_lacks("UNEXPECTED EXCEPTION");
}
