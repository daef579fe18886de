//! virtio under the hypervisor on QEMU virt with Debian Linux guests (issue 11): two VMs on one
//! switch ping each other and move 64 MiB over TCP in both directions at once while a third VM
//! on another switch sees none of it; a VM boots from an ext4 root file system on a writable
//! virtio disk, writes to it, resets (PSCI SYSTEM_RESET) and finds its writes again, and a
//! read-only disk refuses writes.
//!
//! The guests run the standard guest initramfs (qemu/build-guest-initramfs.sh: it loads the
//! kernel's virtio modules, sets eth0's address from `guest.ip=`, and switches to `root=`),
//! with the test's script appended as `/guest-script` in a second cpio archive.
mod common;
use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// `qemu/mkdisk.sh [--busybox] SRC OUT`.
fn mkdisk(src: &Path, out: &Path, busybox: bool) {
    let mut cmd = Command::new(repo().join("qemu/mkdisk.sh"));
    if busybox {
        cmd.arg("--busybox");
    }
    let st = cmd
        .arg(src)
        .arg(out)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run qemu/mkdisk.sh");
    assert!(st.success(), "qemu/mkdisk.sh {} failed", out.display());
}

/// The values of counter group `key` (e.g. `net0(txf/txB/...)`) of VM `vm`'s last counters
/// line (a VM that restarted has one per run).
fn group(log: &str, vm: &str, key: &str) -> Vec<u64> {
    let last = log
        .rfind(&format!("kestrel: vm {vm}: counters: "))
        .map_or("", |i| &log[i..]);
    let c = counters(last, vm).unwrap_or_else(|| panic!("no counters line for VM {vm}"));
    c.iter()
        .find(|(k, _)| k.starts_with(key))
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("VM {vm}'s counters have no {key}: {c:?}"))
}

fn assert_clean_end(r: &Run, vms: &[&str]) {
    for vm in vms {
        r.assert_contains(&format!("kestrel: vm {vm}: powered off"));
    }
    r.assert_contains("kestrel: all VMs ended; page accounting back to its starting figure");
    r.assert_lacks("UNEXPECTED EXCEPTION");
    r.assert_lacks("PANIC");
    r.assert_lacks("virtio slot");
}

/// The script of the two VMs on lan0: a 64 MiB random file, its SHA-256, a listener that
/// hashes what it receives, `ping -c 20` of the peer, then the file to the peer's listener
/// (both VMs send at the same time); then a ping of the VM on the other switch, which must go
/// unanswered. Data moves through busybox nc's `-e` (dd writes the socket in 64 KiB writes,
/// sha256sum reads it), not nc's own 1 KiB copy loop, so the transfer costs the network path
/// rather than a million small system calls under TCG.
const PEER_SCRIPT: &str = r#"
arg() { for w in $(cat /proc/cmdline); do case $w in "$1="*) echo "${w#*=}"; return 0 ;; esac; done; return 1; }
peer=$(arg net.peer)
other=$(arg net.other)
dd if=/dev/urandom of=/tmp/data bs=1M count=64 2>/dev/null
sum=$(sha256sum /tmp/data)
echo "NETTEST: tx sha256=${sum%% *}"
nc -l -p 5000 -e sh -c 'sha256sum > /tmp/rx' &
listener=$!
n=0
until ping -c 1 -W 1 "$peer" >/dev/null 2>&1; do
    n=$((n + 1))
    [ $n -lt 120 ] || break
done
echo "NETTEST: peer $peer answered after $n unanswered pings"
ping -c 20 -i 0.2 "$peer" | sed 's/^/NETTEST: ping: /'
t0=$(cut -d' ' -f1 /proc/uptime)
n=0
until nc "$peer" 5000 -e dd if=/tmp/data bs=64k 2>/dev/null; do
    n=$((n + 1))
    [ $n -lt 150 ] || break
    sleep 0.2
done
t1=$(cut -d' ' -f1 /proc/uptime)
wait $listener
t2=$(cut -d' ' -f1 /proc/uptime)
sum=$(cat /tmp/rx)
echo "NETTEST: rx sha256=${sum%% *}"
echo "NETTEST: sent in $t0..$t1 after $n refused connects, received by $t2"
s=/sys/class/net/eth0/statistics
echo "NETTEST: eth0 rx_length_errors=$(cat $s/rx_length_errors) rx_dropped=$(cat $s/rx_dropped)"
awk '/^Tcp:/ { if (!h) { for (i = 1; i <= NF; i++) n[$i] = i; h = 1 } else print "NETTEST: tcp retransmitted=" $n["RetransSegs"] " of " $n["OutSegs"] }' /proc/net/snmp
got=$(ping -c 2 -W 1 "$other" | sed -n 's/.* \([0-9]*\) packets received.*/\1/p')
echo "NETTEST: other switch $other answered=$got"
echo "NETTEST: neighbour $other: $(ip neigh show "$other")"
"#;

/// The VM on the other switch: pings lan0's addresses (no answer), then leaves a shell.
const OTHER_SCRIPT: &str = r#"
for a in 10.0.0.1 10.0.0.2; do
    got=$(ping -c 2 -W 1 "$a" | sed -n 's/.* \([0-9]*\) packets received.*/\1/p')
    echo "NETTEST: lan0 $a answered=$got"
done
echo "NETTEST: other ready"
"#;

fn net_vm_toml(ip: &str, switch: &str, extra: &str) -> String {
    format!(
        "kernel = \"Image\"\ninitrd = \"initramfs.cpio.gz\"\nmemory = \"512M\"\ncpus = 1\n\
         bootargs = \"console=ttyAMA0 guest.ip={ip}/24 {extra}\"\n\n[[net]]\nswitch = \"{switch}\"\n"
    )
}

/// A `NETTEST: <what><value>` line of VM `vm` (the console mux may split lines: matched on
/// the VM's rebuilt lines).
fn nettest(log: &str, vm: &str, what: &str) -> Option<String> {
    vm_lines(log, vm, &["NETTEST: ", "GUEST: ", "[ "])
        .into_iter()
        .find_map(|l| {
            l.strip_prefix(&format!("NETTEST: {what}"))
                .map(|v| v.trim().to_string())
        })
}

/// Two VMs on switch lan0 (10.0.0.1 and 10.0.0.2): `ping -c 20` both ways at once (round-trip
/// times printed), then 64 MiB over TCP in both directions at once, the SHA-256 of what each
/// received equal to what the other sent. A third VM on switch lan1 (10.0.0.3) gets no ARP
/// answer from them nor they from it, and its port counts no frame received. The per-port
/// counters show up in the Ctrl-A d dump and in each VM's counters line.
#[test]
fn two_vms_on_lan0_ping_and_move_64_mib_each_way_while_a_vm_on_lan1_sees_nothing() {
    if !qemu_available() {
        return;
    }
    let dir = scratch("virtio-net");
    let a = linux_vm_with_script(
        &dir,
        "neta",
        &net_vm_toml(
            "10.0.0.1",
            "lan0",
            "guest.test=1 net.peer=10.0.0.2 net.other=10.0.0.3",
        ),
        Some(PEER_SCRIPT),
    );
    let b = linux_vm_with_script(
        &dir,
        "netb",
        &net_vm_toml(
            "10.0.0.2",
            "lan0",
            "guest.test=1 net.peer=10.0.0.1 net.other=10.0.0.3",
        ),
        Some(PEER_SCRIPT),
    );
    let c = linux_vm_with_script(
        &dir,
        "netc",
        &net_vm_toml("10.0.0.3", "lan1", ""),
        Some(OTHER_SCRIPT),
    );
    let rd = dir.join("ramdisk.cpio");
    mkramdisk(&rd, &[&a, &b, &c]);
    let mut q = start_interactive(
        "virtio-net",
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
        600,
    );
    let done = q.wait_for(Duration::from_secs(560), |l| {
        l.contains("kestrel: vm neta: powered off")
            && l.contains("kestrel: vm netb: powered off")
            && vm_stream(l, "netc").contains("NETTEST: other ready")
    });
    // The dump while netc still runs: its port's counters.
    q.type_slowly(b"\x01d");
    let dumped = q.wait_for(Duration::from_secs(20), |l| {
        l.lines()
            .any(|l| l.contains("kestrel: dump: vm netc") && l.contains("net0("))
    });
    q.type_slowly(b"\x013");
    q.type_slowly(b"poweroff -f\n");
    let r = q.finish();
    assert!(
        done,
        "the VMs did not finish their work; serial log {} ends:\n{}",
        r.log_path.display(),
        r.tail(60)
    );
    assert!(dumped, "no dump line with netc's port counters");
    assert_clean_end(&r, &["neta", "netb", "netc"]);

    for (vm, peer) in [("neta", "netb"), ("netb", "neta")] {
        let ping = vm_lines(&r.log, vm, &["NETTEST: ", "GUEST: ", "[ "])
            .into_iter()
            .filter(|l| l.starts_with("NETTEST: ping: "))
            .collect::<Vec<_>>();
        assert!(
            ping.iter()
                .any(|l| l.contains("20 packets transmitted, 20 packets received")),
            "{vm}'s ping of {peer} lost packets: {ping:#?}"
        );
        for l in ping
            .iter()
            .filter(|l| l.contains("round-trip") || l.contains("seq=0 "))
        {
            eprintln!("{vm}: {l}");
        }
        let tx = nettest(&r.log, peer, "tx sha256=").expect("the peer's tx line");
        let rx = nettest(&r.log, vm, "rx sha256=").expect("the rx line");
        assert_eq!(tx.len(), 64, "tx sha256 {tx:?}");
        assert_eq!(rx, tx, "{vm} received other bytes than {peer} sent");
        eprintln!(
            "{vm}: {}",
            nettest(&r.log, vm, "sent in ").unwrap_or_default()
        );
        // The guest driver found every frame well-formed (a frame in mergeable buffers whose
        // buffers it cannot all see is dropped as a length error).
        assert_eq!(
            nettest(&r.log, vm, "eth0 ").as_deref(),
            Some("rx_length_errors=0 rx_dropped=0"),
            "{vm}'s driver dropped frames"
        );
        eprintln!("{vm}: {}", nettest(&r.log, vm, "tcp ").unwrap_or_default());
        assert_eq!(
            nettest(&r.log, vm, "other switch 10.0.0.3 answered=").as_deref(),
            Some("0"),
            "{vm} reached the VM on lan1"
        );
    }
    for a in ["10.0.0.1", "10.0.0.2"] {
        assert_eq!(
            nettest(&r.log, "netc", &format!("lan0 {a} answered=")).as_deref(),
            Some("0"),
            "netc (lan1) reached {a} on lan0"
        );
    }
    // Per port: frames sent/bytes/received/bytes/rx drops/tx drops/offload drops/notifies/irqs.
    let na = group(&r.log, "neta", "net0(");
    let nb = group(&r.log, "netb", "net0(");
    let nc = group(&r.log, "netc", "net0(");
    eprintln!("counters: neta {na:?} netb {nb:?} netc {nc:?}");
    assert_eq!(nc[2], 0, "netc's port received frames from another switch");
    assert!(
        na[3] >= 64 << 20 && nb[3] >= 64 << 20,
        "64 MiB received each way"
    );
    assert_eq!((na[5], nb[5]), (0, 0), "frames refused by the switch");
    eprintln!("virtio-net: {:.1}s", r.elapsed.as_secs_f64());
}

/// The root file system's /sbin/init: on the first boot writes a token (from the command line)
/// and the hash of 8 MiB of fresh random bytes to the disk, syncs and resets the VM (`reboot -f`:
/// PSCI SYSTEM_RESET); after the reset reads them back, then tries the read-only disk vdb:
/// mounting it read-write must fail or fall back to read-only, a write must be refused, and
/// its payload must read back intact.
const DISK_INIT: &str = r#"#!/bin/sh
export PATH=/bin
arg() { for w in $(cat /proc/cmdline); do case $w in "$1="*) echo "${w#*=}"; return 0 ;; esac; done; return 1; }
echo "DISKTEST: root $(awk '$2 == "/" { print $1, $3, substr($4, 1, 2) }' /proc/mounts)"
if [ ! -f /persist ]; then
    dd if=/dev/urandom of=/big bs=1M count=8 2>/dev/null
    sum=$(sha256sum /big)
    echo "$(arg disk.token) ${sum%% *}" > /persist
    sync
    echo "DISKTEST: first boot wrote $(cat /persist)"
    reboot -f
fi
echo "DISKTEST: after reset persist=$(cat /persist)"
sum=$(sha256sum /big)
echo "DISKTEST: after reset big=${sum%% *}"
mkdir -p /mnt
if mount -o rw /dev/vdb /mnt 2>/tmp/err; then
    echo "DISKTEST: ro disk mount -o rw gave $(awk '$2 == "/mnt" { print substr($4, 1, 2) }' /proc/mounts) ($(cat /tmp/err))"
else
    echo "DISKTEST: ro disk mount -o rw failed ($(cat /tmp/err))"
    mount -o ro /dev/vdb /mnt
fi
if echo x 2>/tmp/err > /mnt/newfile; then
    echo "DISKTEST: ro disk write succeeded"
else
    echo "DISKTEST: ro disk write refused ($(cat /tmp/err))"
fi
if dd if=/dev/zero of=/dev/vdb bs=512 count=1 2>/tmp/err; then
    echo "DISKTEST: ro disk raw write succeeded"
else
    echo "DISKTEST: ro disk raw write refused ($(cat /tmp/err))"
fi
sum=$(sha256sum /mnt/payload)
echo "DISKTEST: ro payload=${sum%% *}"
umount /mnt
echo "DISKTEST: done"
poweroff -f
"#;

fn sha256_hex(data: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().expect("stdin").write_all(data)?;
            c.wait_with_output()
        })
        .expect("run sha256sum");
    String::from_utf8_lossy(&out.stdout)[..64].to_string()
}

/// A VM whose root file system is an ext4 image on /dev/vda (built here with `mkfs.ext4 -d`
/// from a busybox tree, no root needed): it boots from it (`root=/dev/vda rw`), writes, syncs,
/// resets through PSCI SYSTEM_RESET, and reads its writes back after the restart (a writable
/// disk's copy lasts as long as the VM). A second, read-only disk (/dev/vdb) mounted
/// read-write is refused cleanly: no write reaches it, its data reads back intact. The VM also
/// has a network port: its restart joins the switch again with the same MAC, which works only
/// if the reset took the old port off the switch.
#[test]
fn ext4_root_on_vda_keeps_its_writes_across_system_reset_and_a_readonly_disk_refuses_writes() {
    if !qemu_available() {
        return;
    }
    let dir = scratch("virtio-blk");
    let root_src = dir.join("root-src");
    std::fs::create_dir_all(root_src.join("sbin")).expect("mkdir");
    std::fs::write(root_src.join("sbin/init"), DISK_INIT).expect("write init");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            root_src.join("sbin/init"),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod init");
    }
    let data_src = dir.join("data-src");
    std::fs::create_dir_all(&data_src).expect("mkdir");
    let payload = noise(3 << 20, 0x5eed);
    std::fs::write(data_src.join("payload"), &payload).expect("write payload");
    let token = format!("tok{}", std::process::id());
    let vm = linux_vm_with_script(
        &dir,
        "disk",
        &format!(
            "kernel = \"Image\"\ninitrd = \"initramfs.cpio.gz\"\nmemory = \"256M\"\ncpus = 1\n\
             bootargs = \"console=ttyAMA0 root=/dev/vda rw disk.token={token}\"\n\n\
             [[disks]]\nfile = \"root.ext4\"\n\n[[disks]]\nfile = \"data.ext4\"\nreadonly = true\n\n\
             [[net]]\nswitch = \"solo\"\n"
        ),
        None,
    );
    mkdisk(&root_src, &vm.join("root.ext4"), true);
    mkdisk(&data_src, &vm.join("data.ext4"), false);
    let rd = dir.join("ramdisk.cpio");
    mkramdisk(&rd, &[&vm]);
    let r = run(
        "virtio-blk",
        &[
            "--gic",
            "3",
            "--cpus",
            "2",
            "--mem",
            "2G",
            "--ramdisk",
            rd.to_str().unwrap(),
        ],
        300,
    );
    r.assert_status(0);
    assert_clean_end(&r, &["disk"]);
    let line = |what: &str| {
        vm_lines(&r.log, "disk", &["DISKTEST: ", "GUEST: ", "[ "])
            .into_iter()
            .find_map(|l| {
                l.strip_prefix(&format!("DISKTEST: {what}"))
                    .map(|v| v.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no DISKTEST line {what:?}; log ends:\n{}", r.tail(40)))
    };
    assert!(
        line("root ").starts_with("/dev/vda ext4 rw"),
        "root: {}",
        line("root ")
    );
    let wrote = line("first boot wrote ");
    let (tok, big) = wrote.split_once(' ').expect("token and hash");
    assert_eq!(tok, token);
    r.assert_contains("kestrel: vm disk: restarting");
    assert_eq!(r.count("kestrel: vm disk: restarting"), 1);
    assert_eq!(
        line("after reset persist="),
        wrote,
        "the write did not survive the reset"
    );
    assert_eq!(
        line("after reset big="),
        big,
        "8 MiB file changed across the reset"
    );
    let m = line("ro disk mount -o rw ");
    assert!(
        m.starts_with("failed") || m.starts_with("gave ro"),
        "read-only disk mounted read-write: {m}"
    );
    assert!(
        line("ro disk write ").starts_with("refused"),
        "{}",
        line("ro disk write ")
    );
    assert!(line("ro disk raw write ").starts_with("refused"));
    assert_eq!(line("ro payload="), sha256_hex(&payload));
    line("done");
    let d0 = group(&r.log, "disk", "disk0(");
    let d1 = group(&r.log, "disk", "disk1(");
    eprintln!("counters (rd/wr/flush/rdB/wrB/err/notify/irq): vda {d0:?} vdb {d1:?}");
    assert_eq!(d1[1], 0, "a write reached the read-only disk");
    eprintln!("virtio-blk: {:.1}s", r.elapsed.as_secs_f64());
}
