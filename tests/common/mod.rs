//! Shared helpers for the QEMU integration tests: build the image once, boot it through
//! `qemu/run.sh` with a timeout, and on failure print the tail of the serial log.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// True when QEMU >= 9 is installed. Under `CI=true` a missing QEMU fails the test instead of
/// skipping it (the set-up step installs it).
pub fn qemu_available() -> bool {
    let ok = Command::new("qemu-system-aarch64")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("qemu-system-aarch64 is missing under CI=true; run qemu/setup.sh");
        }
        eprintln!("SKIP: qemu-system-aarch64 not installed (run qemu/setup.sh)");
    }
    ok
}

/// Builds target/kestrel.bin once per test binary, in its own target directory so it does not
/// wait on the lock of the `cargo test` that runs us.
pub fn build_image() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let st = Command::new(repo().join("qemu/build.sh"))
            .status()
            .expect("run qemu/build.sh");
        assert!(st.success(), "qemu/build.sh failed");
    });
}

pub struct Run {
    pub status: i32,
    pub log: String,
    pub elapsed: Duration,
    pub log_path: PathBuf,
}

impl Run {
    /// The last `n` lines of the serial log, for failure messages.
    pub fn tail(&self, n: usize) -> String {
        let lines: Vec<&str> = self.log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    pub fn assert_contains(&self, needle: &str) {
        assert!(
            self.log.contains(needle),
            "expected {needle:?} in the serial log ({}); last lines:\n{}",
            self.log_path.display(),
            self.tail(40)
        );
    }

    pub fn assert_lacks(&self, needle: &str) {
        assert!(
            !self.log.contains(needle),
            "unexpected {needle:?} in the serial log ({}); last lines:\n{}",
            self.log_path.display(),
            self.tail(40)
        );
    }

    pub fn assert_status(&self, want: i32) {
        assert_eq!(
            self.status,
            want,
            "qemu/run.sh exit status; serial log {} ends with:\n{}",
            self.log_path.display(),
            self.tail(40)
        );
    }

    /// The first line containing `prefix`, with everything up to and including it cut off.
    pub fn line_after(&self, prefix: &str) -> Option<String> {
        self.log.lines().find_map(|l| {
            l.split_once(prefix)
                .map(|(_, rest)| rest.trim().to_string())
        })
    }

    pub fn count(&self, needle: &str) -> usize {
        self.log.matches(needle).count()
    }
}

/// Boots `qemu/run.sh ARGS --timeout T --no-build [-- QEMU ARGS]` and collects the serial log.
pub fn run(name: &str, args: &[&str], timeout_s: u64) -> Run {
    build_image();
    let dir = repo().join("target/qemu-tests");
    std::fs::create_dir_all(&dir).expect("create target/qemu-tests");
    let log_path = dir.join(format!("{name}.log"));
    let t = timeout_s.to_string();
    let start = Instant::now();
    // run.sh's own options go before a `--` (after it come QEMU's).
    let split = args.iter().position(|&a| a == "--").unwrap_or(args.len());
    let (ours, qemu) = args.split_at(split);
    let out = Command::new(repo().join("qemu/run.sh"))
        .args(ours)
        .args(["--timeout", &t, "--no-build", "--log"])
        .arg(&log_path)
        .args(qemu)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run qemu/run.sh");
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    Run {
        status: out.status.code().unwrap_or(-1),
        log,
        elapsed: start.elapsed(),
        log_path,
    }
}

pub fn cache_dir() -> PathBuf {
    std::env::var_os("HV_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(&std::env::var("HOME").unwrap_or_default()).join(".cache/hv-aarch64")
        })
}

// ---------------------------------------------------------------------------------------------
// Helpers for the multi-VM, test-guest and bad-input tests.

/// Builds the bare-metal test guests (tests/guests/build.sh) once per test binary into
/// target/qemu-tests/guest-images; returns that folder (it holds `<name>.img` and `vm-<name>/`).
pub fn test_guests() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = repo().join("target/qemu-tests/guest-images");
            let st = Command::new(repo().join("tests/guests/build.sh"))
                .arg(&out)
                .stdout(std::process::Stdio::null())
                .status()
                .expect("run tests/guests/build.sh");
            assert!(st.success(), "tests/guests/build.sh failed");
            out
        })
        .clone()
}

/// A fresh scratch folder target/qemu-tests/<name> (emptied first).
pub fn scratch(name: &str) -> PathBuf {
    let d = repo().join("target/qemu-tests").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create scratch folder");
    d
}

/// Copies the ready VM folder `vm-<guest>` of the test guests to `dest/<folder>` and returns it.
pub fn copy_guest_vm(guest: &str, dest: &Path, folder: &str) -> PathBuf {
    let src = test_guests().join(format!("vm-{guest}"));
    let dst = dest.join(folder);
    std::fs::create_dir_all(&dst).expect("create VM folder");
    for e in std::fs::read_dir(&src).expect("read VM folder").flatten() {
        std::fs::copy(e.path(), dst.join(e.file_name())).expect("copy VM file");
    }
    dst
}

/// Sets top-level key `key` of a vm.toml to the TOML literal `value` (replacing the line that
/// sets it, or appending one before any table).
pub fn set_toml_key(toml: &str, key: &str, value: &str) -> String {
    let mut out = Vec::new();
    let mut done = false;
    for l in toml.lines() {
        let is_key = l
            .split_once('=')
            .is_some_and(|(k, _)| k.trim() == key && !l.trim_start().starts_with('#'));
        if is_key && !done {
            out.push(format!("{key} = {value}"));
            done = true;
        } else {
            out.push(l.to_string());
        }
    }
    if !done {
        let at = out
            .iter()
            .position(|l| l.trim_start().starts_with('['))
            .unwrap_or(out.len());
        out.insert(at, format!("{key} = {value}"));
    }
    out.join("\n") + "\n"
}

/// Rewrites keys of `dir/vm.toml` (each value a TOML literal, e.g. `"\"64M\""` or `"2"`).
pub fn edit_vm_toml(dir: &Path, keys: &[(&str, &str)]) {
    let p = dir.join("vm.toml");
    let mut t = std::fs::read_to_string(&p).expect("read vm.toml");
    for (k, v) in keys {
        t = set_toml_key(&t, k, v);
    }
    std::fs::write(&p, t).expect("write vm.toml");
}

/// `qemu/mkramdisk.sh OUT DIRS...`; panics if it fails.
pub fn mkramdisk(out: &Path, dirs: &[&Path]) {
    let st = Command::new(repo().join("qemu/mkramdisk.sh"))
        .arg(out)
        .args(dirs)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run qemu/mkramdisk.sh");
    assert!(st.success(), "qemu/mkramdisk.sh {} failed", out.display());
}

/// A newc ("070701") cpio archive written by hand, so that tests can build archives that
/// `mkramdisk.sh` would refuse (bad configs, missing files). Directories are implied by paths.
#[derive(Default)]
pub struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    pub fn new() -> Self {
        Self::default()
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.ino += 1;
        let namesize = name.len() + 1;
        let hdr = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            namesize,
            0
        );
        self.out.extend_from_slice(hdr.as_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
        self.out.extend_from_slice(data);
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    pub fn dir(mut self, name: &str) -> Self {
        self.entry(name, 0o040755, &[]);
        self
    }

    pub fn file(mut self, name: &str, data: &[u8]) -> Self {
        self.entry(name, 0o100644, data);
        self
    }

    /// The archive with its `TRAILER!!!` entry.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.out
    }
}

/// Deterministic pseudo-random bytes (a 64-bit LCG), for garbage inputs.
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 56) as u8
        })
        .collect()
}

/// The output of VM `vm` in a log, with the console mux's line splits undone: every fragment
/// `[vm] text` is appended without its newline. When several VMs print at once the mux ends a
/// half-written line before another source writes, so a VM line can arrive in pieces; matching a
/// needle against this stream is immune to that (line boundaries are lost, so match text that
/// does not span lines).
pub fn vm_stream(log: &str, vm: &str) -> String {
    let prefix = format!("[{vm}] ");
    log.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .collect::<Vec<_>>()
        .concat()
}

/// The lines VM `vm` printed, rebuilt from its stream (see [`vm_stream`]) by starting a new line
/// at every occurrence of one of the tokens in `starts` (e.g. `"HOSTILE: "`, `"FLOOD "`). For
/// guests whose every line starts with such a token and whose text never repeats one: exact
/// even when the console mux split lines anywhere, including inside a token. Text before the
/// first token is dropped.
pub fn vm_lines(log: &str, vm: &str, starts: &[&str]) -> Vec<String> {
    let s = vm_stream(log, vm);
    let mut cuts: Vec<usize> = starts
        .iter()
        .flat_map(|t| s.match_indices(t).map(|(i, _)| i))
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    cuts.iter()
        .enumerate()
        .map(|(k, &i)| {
            let end = cuts.get(k + 1).copied().unwrap_or(s.len());
            s[i..end].to_string()
        })
        .collect()
}

/// The counters the hypervisor prints when VM `vm` ends (`kestrel: vm <vm>: counters: ...`),
/// as `name -> values`: `hvc=3` gives `"hvc" -> [3]`, `installed(4K/2M/1G)=0/2/1` gives
/// `"installed(4K/2M/1G)" -> [0, 2, 1]`. None if there is no such line.
pub fn counters(log: &str, vm: &str) -> Option<std::collections::BTreeMap<String, Vec<u64>>> {
    let line = log
        .lines()
        .find_map(|l| l.split_once(&format!("kestrel: vm {vm}: counters: ")))?
        .1;
    let mut m = std::collections::BTreeMap::new();
    for tok in line.split(|c: char| c.is_whitespace() || c == ';') {
        let Some((k, v)) = tok.split_once('=') else {
            continue;
        };
        let vals: Option<Vec<u64>> = v.split('/').map(|x| x.parse().ok()).collect();
        if let Some(vals) = vals {
            m.insert(k.to_string(), vals);
        }
    }
    Some(m)
}

/// The physical CPUs of VM `vm` from `kestrel: vm <vm> (id N): k vCPUs on pCPUs [a, b], ...`.
pub fn vm_pcpus(log: &str, vm: &str) -> Option<Vec<usize>> {
    let rest = log
        .lines()
        .find_map(|l| l.split_once(&format!("kestrel: vm {vm} (id ")))?
        .1;
    let list = rest.split_once("on pCPUs [")?.1.split_once(']')?.0;
    list.split(',').map(|x| x.trim().parse().ok()).collect()
}

/// A `0x...` number at the start of `s`.
pub fn hex_prefix(s: &str) -> Option<u64> {
    let s = s.trim_start().strip_prefix("0x")?;
    let end = s.find(|c: char| !c.is_ascii_hexdigit()).unwrap_or(s.len());
    u64::from_str_radix(&s[..end], 16).ok()
}

/// The hypervisor's `reserved <start>..<end> <what>` line (e.g. `Image`), as a range.
pub fn reserved_range(log: &str, what: &str) -> Option<(u64, u64)> {
    log.lines().find_map(|l| {
        let rest = l.split_once("kestrel:   reserved ")?.1;
        let (range, name) = rest.split_once(' ')?;
        if name.trim() != what {
            return None;
        }
        let (a, b) = range.split_once("..")?;
        Some((hex_prefix(a)?, hex_prefix(b)?))
    })
}

/// A boot through `qemu/run.sh` left running in the background, for tests that talk to QEMU
/// while the hypervisor runs (e.g. over a monitor socket).
pub struct Started {
    child: Option<std::process::Child>,
    pub log_path: PathBuf,
    start: Instant,
    /// The serial console's input (only for runs started with [`start_interactive`]).
    input: Option<std::process::ChildStdin>,
}

/// Starts `qemu/run.sh ARGS --timeout T --no-build --log ...` without waiting for it.
pub fn start(name: &str, args: &[&str], timeout_s: u64) -> Started {
    use std::os::unix::process::CommandExt;
    build_image();
    let dir = repo().join("target/qemu-tests");
    std::fs::create_dir_all(&dir).expect("create target/qemu-tests");
    let log_path = dir.join(format!("{name}.log"));
    let _ = std::fs::remove_file(&log_path);
    let t = timeout_s.to_string();
    // Its own process group, so that `stop` can end run.sh, QEMU and tee together.
    let child = Command::new(repo().join("qemu/run.sh"))
        .process_group(0)
        .args(["--timeout", &t, "--no-build", "--log"])
        .arg(&log_path)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(
            std::fs::File::create(log_path.with_extension("stderr"))
                .map(std::process::Stdio::from)
                .unwrap_or_else(|_| std::process::Stdio::null()),
        )
        .spawn()
        .expect("start qemu/run.sh");
    Started {
        child: Some(child),
        log_path,
        start: Instant::now(),
        input: None,
    }
}

/// As [`start`], with the serial console's input connected to [`Started::type_slowly`].
pub fn start_interactive(name: &str, args: &[&str], timeout_s: u64) -> Started {
    use std::os::unix::process::CommandExt;
    build_image();
    let dir = repo().join("target/qemu-tests");
    std::fs::create_dir_all(&dir).expect("create target/qemu-tests");
    let log_path = dir.join(format!("{name}.log"));
    let _ = std::fs::remove_file(&log_path);
    let t = timeout_s.to_string();
    let mut child = Command::new(repo().join("qemu/run.sh"))
        .process_group(0)
        .args(["--timeout", &t, "--no-build", "--log"])
        .arg(&log_path)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start qemu/run.sh");
    let input = child.stdin.take();
    Started {
        child: Some(child),
        log_path,
        start: Instant::now(),
        input,
    }
}

impl Started {
    /// Types `text` on the console, one byte every 50 ms (as a person would: busybox's line
    /// editor asks the terminal for the cursor position after each prompt and would otherwise
    /// eat keys meant for the command line).
    pub fn type_slowly(&mut self, text: &[u8]) {
        use std::io::Write;
        if let Some(i) = self.input.as_mut() {
            for &b in text {
                let _ = i.write_all(&[b]);
                let _ = i.flush();
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Puts `text` on the console's input at once (the pipe holds it until QEMU's UART takes
    /// it, so text written right after the start is waiting before the hypervisor runs).
    pub fn type_now(&mut self, text: &[u8]) {
        use std::io::Write;
        if let Some(i) = self.input.as_mut() {
            let _ = i.write_all(text);
            let _ = i.flush();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until the log satisfies `pred` (true) or `limit` passes or QEMU ends (false).
    pub fn wait_for(&mut self, limit: Duration, pred: impl Fn(&str) -> bool) -> bool {
        let t = Instant::now();
        while t.elapsed() < limit {
            if pred(&self.log()) {
                return true;
            }
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                return pred(&self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Ends the run now (SIGTERM to run.sh's process group: run.sh, QEMU, tee) and collects
    /// the log; the status is then that of the killed run.sh.
    pub fn stop(mut self) -> Run {
        self.kill();
        self.finish()
    }

    fn kill(&mut self) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args(["-TERM", "--", &format!("-{}", c.id())])
                .status();
        }
    }

    /// Waits for run.sh to end (its own timeout applies) and collects the log.
    pub fn finish(mut self) -> Run {
        let status = self
            .child
            .take()
            .and_then(|mut c| c.wait().ok())
            .map(|s| s.code().unwrap_or(-1))
            .unwrap_or(-1);
        Run {
            status,
            log: self.log(),
            elapsed: self.start.elapsed(),
            log_path: self.log_path.clone(),
        }
    }
}

impl Drop for Started {
    /// A test that panics while QEMU runs does not leave it running.
    fn drop(&mut self) {
        if self.child.is_some() {
            self.kill();
            if let Some(mut c) = self.child.take() {
                let _ = c.wait();
            }
        }
    }
}

/// The QEMU human monitor on a UNIX socket (`-monitor unix:PATH,server,nowait`).
pub struct Monitor {
    sock: std::os::unix::net::UnixStream,
}

impl Monitor {
    /// Connects, retrying for a few seconds while QEMU creates the socket.
    pub fn connect(path: &Path) -> Option<Monitor> {
        for _ in 0..100 {
            if let Ok(sock) = std::os::unix::net::UnixStream::connect(path) {
                let mut m = Monitor { sock };
                m.sock
                    .set_read_timeout(Some(Duration::from_millis(200)))
                    .ok()?;
                m.read_until_prompt();
                return Some(m);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    fn read_until_prompt(&mut self) -> String {
        use std::io::Read;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            match self.sock.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    if out.ends_with(b"(qemu) ") {
                        break;
                    }
                }
                Err(_) => continue,
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Runs one monitor command and returns its output (the echo and prompt included).
    pub fn cmd(&mut self, c: &str) -> String {
        use std::io::Write;
        if self.sock.write_all(format!("{c}\n").as_bytes()).is_err() {
            return String::new();
        }
        self.read_until_prompt()
    }

    /// The 64-bit word at guest (here: host machine) physical address `pa`, via `xp`.
    pub fn read_phys_u64(&mut self, pa: u64) -> Option<u64> {
        let out = self.cmd(&format!("xp /1gx {pa:#x}"));
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{pa:016x}:")))?;
        hex_prefix(line.split_once(':')?.1)
    }
}

/// Serialises the guest builders of one test binary (its tests run in parallel and share
/// their caches).
static BUILD_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn lock_builds() -> std::sync::MutexGuard<'static, ()> {
    BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The Debian cloud kernel (fetched by qemu/guest-material.sh if missing).
pub fn cloud_kernel() -> PathBuf {
    let k = cache_dir().join("Image-cloud");
    if !k.exists() {
        let st = Command::new(repo().join("qemu/guest-material.sh"))
            .status()
            .expect("run qemu/guest-material.sh");
        assert!(st.success(), "qemu/guest-material.sh failed");
    }
    k
}

/// The guest initramfs for the cloud kernel, with its virtio modules, built into `dir`.
pub fn cloud_initramfs(dir: &Path) -> Vec<u8> {
    let out = dir.join("base-initramfs.cpio.gz");
    let _g = lock_builds();
    let st = Command::new(repo().join("qemu/build-guest-initramfs.sh"))
        .arg("--kernel")
        .arg(cloud_kernel())
        .arg(&out)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run qemu/build-guest-initramfs.sh");
    assert!(st.success(), "qemu/build-guest-initramfs.sh failed");
    std::fs::read(&out).expect("read the initramfs")
}

/// A VM folder `dir/name`: `vm.toml` is `toml`, `Image` the cloud kernel, and
/// `initramfs.cpio.gz` the guest initramfs followed by a cpio archive holding `script` as
/// `/guest-script` (Linux unpacks both; /init runs the script).
pub fn linux_vm_with_script(dir: &Path, name: &str, toml: &str, script: Option<&str>) -> PathBuf {
    let vm = dir.join(name);
    std::fs::create_dir_all(&vm).expect("create VM folder");
    std::fs::write(vm.join("vm.toml"), toml).expect("write vm.toml");
    let _ = std::fs::remove_file(vm.join("Image"));
    std::os::unix::fs::symlink(cloud_kernel(), vm.join("Image")).expect("link Image");
    let mut initrd = cloud_initramfs(dir);
    if let Some(s) = script {
        // Linux takes an uncompressed archive after a compressed one only at a 4-byte aligned
        // offset (zeros in between are skipped).
        initrd.resize(initrd.len().next_multiple_of(4), 0);
        initrd.extend(Cpio::new().file("guest-script", s.as_bytes()).finish());
    }
    std::fs::write(vm.join("initramfs.cpio.gz"), initrd).expect("write the initrd");
    vm
}
