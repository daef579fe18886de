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

/// Boots `qemu/run.sh ARGS --timeout T --no-build` and collects the serial log.
pub fn run(name: &str, args: &[&str], timeout_s: u64) -> Run {
    build_image();
    let dir = repo().join("target/qemu-tests");
    std::fs::create_dir_all(&dir).expect("create target/qemu-tests");
    let log_path = dir.join(format!("{name}.log"));
    let t = timeout_s.to_string();
    let start = Instant::now();
    let out = Command::new(repo().join("qemu/run.sh"))
        .args(args)
        .args(["--timeout", &t, "--no-build", "--log"])
        .arg(&log_path)
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
