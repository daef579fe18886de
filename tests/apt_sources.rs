//! qemu/apt-sources.sh on sample apt configurations: the bookworm-backports source is derived
//! from the machine's own Debian source, in one-line and deb822 format, and a machine that has
//! backports already is left alone (except for the file an older qemu/setup.sh wrote with a
//! fixed host). The hosts below are placeholders (`.invalid`, loopback), as a mirror or proxy
//! would be.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh apt configuration root with the given files (paths relative to the root).
fn apt_root(name: &str, files: &[(&str, &str)]) -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("apt-sources")
        .join(name);
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(root.join("sources.list.d")).unwrap();
    for (path, text) in files {
        fs::write(root.join(path), text).unwrap();
    }
    root
}

/// Runs `function args... ROOT` from qemu/apt-sources.sh: (success, stdout, stderr).
fn run(function: &str, args: &[&str], root: &Path) -> (bool, String, String) {
    let script = format!(
        ". '{}'; {function} \"$@\"",
        repo().join("qemu/apt-sources.sh").display()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg("apt-sources")
        .args(args)
        .arg(root)
        .env("SUDO", "")
        .output()
        .expect("bash");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn backports_line(root: &Path) -> Option<String> {
    let (ok, out, _) = run("apt_backports_line", &["bookworm"], root);
    ok.then(|| out.trim_end().to_string())
}

const DEB822_MIRROR: &str = "\
Types: deb
# a comment
URIs: http://apt-mirror.invalid/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://apt-mirror.invalid/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
";

#[test]
fn the_backports_line_reuses_the_machines_own_one_line_source() {
    let root = apt_root(
        "one-line",
        &[(
            "sources.list",
            "# deb http://apt-mirror.invalid/debian bookworm main\n\
             deb-src http://127.0.0.1:3142/debian bookworm main\n\
             deb [ arch=amd64,arm64 signed-by=/etc/apt/keyrings/debian.gpg ] \
             http://127.0.0.1:3142/debian bookworm main non-free-firmware # via a proxy\n\
             deb http://127.0.0.1:3142/debian-security bookworm-security main\n",
        )],
    );
    assert_eq!(
        backports_line(&root).as_deref(),
        Some(
            "deb [arch=amd64,arm64 signed-by=/etc/apt/keyrings/debian.gpg] \
             http://127.0.0.1:3142/debian bookworm-backports main non-free-firmware"
        )
    );
    let (has, _, _) = run("apt_has_suite", &["bookworm-backports"], &root);
    assert!(!has);
}

#[test]
fn the_backports_line_reuses_the_machines_own_deb822_source() {
    let root = apt_root(
        "deb822",
        &[("sources.list.d/debian.sources", DEB822_MIRROR)],
    );
    assert_eq!(
        backports_line(&root).as_deref(),
        Some(
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
             http://apt-mirror.invalid/debian bookworm-backports main contrib"
        )
    );
}

#[test]
fn the_source_carrying_main_is_preferred() {
    // A one-line file for firmware only (read before *.sources) does not decide: QEMU is in
    // main, so the deb822 main source gives the line.
    let root = apt_root(
        "main-preferred",
        &[
            (
                "sources.list.d/bookworm-non-free-firmware.list",
                "deb http://apt-mirror.invalid/debian bookworm non-free-firmware\n",
            ),
            ("sources.list.d/debian.sources", DEB822_MIRROR),
        ],
    );
    assert_eq!(
        backports_line(&root).as_deref(),
        Some(
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
             http://apt-mirror.invalid/debian bookworm-backports main contrib"
        )
    );
    // With only such a source, main is added to its components.
    let root = apt_root(
        "main-added",
        &[(
            "sources.list",
            "deb http://apt-mirror.invalid/debian bookworm non-free-firmware\n",
        )],
    );
    assert_eq!(
        backports_line(&root).as_deref(),
        Some("deb http://apt-mirror.invalid/debian bookworm-backports main non-free-firmware")
    );
}

#[test]
fn deb822_disabled_stanzas_inline_keys_and_continuations_are_understood() {
    let root = apt_root(
        "deb822-odd",
        &[
            (
                "sources.list.d/old.sources",
                "Types: deb\nURIs: http://old-mirror.invalid/debian\nSuites: bookworm\n\
                 Components: main\nEnabled: no\n",
            ),
            (
                "sources.list.d/debian.sources",
                "Types: deb-src deb\n\
                 URIs: http://apt-mirror.invalid/debian http://second.invalid/debian\n\
                 Suites:\n  bookworm\n  bookworm-updates\n\
                 Components: main\n\
                 Architectures: amd64 arm64\n\
                 Signed-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n abcd\n \
                 -----END PGP PUBLIC KEY BLOCK-----\n",
            ),
            // Files apt does not read are not read here either.
            (
                "sources.list.d/disabled.sources.disabled-by-farm",
                "Types: deb\nURIs: http://nope.invalid/debian\nSuites: bookworm\n\
                 Components: main\n",
            ),
        ],
    );
    assert_eq!(
        backports_line(&root).as_deref(),
        Some("deb [arch=amd64,arm64] http://apt-mirror.invalid/debian bookworm-backports main")
    );
}

#[test]
fn without_a_bookworm_source_nothing_is_derived_or_written() {
    let root = apt_root(
        "none",
        &[(
            "sources.list",
            "deb http://apt-mirror.invalid/ubuntu noble main\n",
        )],
    );
    assert_eq!(backports_line(&root), None);
    let (changed, _, err) = run("apt_setup_backports", &["bookworm"], &root);
    assert!(!changed);
    assert!(
        err.contains("no enabled 'deb ... bookworm' apt source"),
        "{err}"
    );
    assert!(!root.join("sources.list.d/bookworm-backports.list").exists());
}

#[test]
fn a_fresh_machine_gets_backports_from_its_own_mirror_once() {
    let root = apt_root("fresh", &[("sources.list.d/debian.sources", DEB822_MIRROR)]);
    let (changed, _, err) = run("apt_setup_backports", &["bookworm"], &root);
    assert!(changed, "{err}");
    let written = fs::read_to_string(root.join("sources.list.d/bookworm-backports.list")).unwrap();
    assert!(written.starts_with("# Written by qemu/setup.sh"));
    assert!(written.ends_with(
        "\ndeb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
         http://apt-mirror.invalid/debian bookworm-backports main contrib\n"
    ));
    let (has, _, _) = run("apt_has_suite", &["bookworm-backports"], &root);
    assert!(has);
    // Idempotent: a second run changes nothing.
    let (changed, _, _) = run("apt_setup_backports", &["bookworm"], &root);
    assert!(!changed);
}

#[test]
fn backports_configured_elsewhere_is_left_alone() {
    let mut with_bp = DEB822_MIRROR.replace(
        "Suites: bookworm bookworm-updates",
        "Suites: bookworm bookworm-updates bookworm-backports",
    );
    with_bp.push('\n');
    let root = apt_root("configured", &[("sources.list.d/debian.sources", &with_bp)]);
    let (changed, _, _) = run("apt_setup_backports", &["bookworm"], &root);
    assert!(!changed);
    assert!(!root.join("sources.list.d/bookworm-backports.list").exists());
}

#[test]
fn the_file_an_old_setup_wrote_with_another_host_is_replaced_and_kept_aside() {
    // What the old qemu/setup.sh wrote, on a machine whose Debian source is a mirror.
    let old = "deb http://fixed-host.invalid/debian bookworm-backports main non-free-firmware\n";
    let root = apt_root(
        "legacy",
        &[
            ("sources.list.d/debian.sources", DEB822_MIRROR),
            ("sources.list.d/bookworm-backports.list", old),
        ],
    );
    let (changed, _, err) = run("apt_setup_backports", &["bookworm"], &root);
    assert!(changed, "{err}");
    assert!(err.contains("fixed-host.invalid"), "{err}");
    let d = root.join("sources.list.d");
    assert_eq!(
        fs::read_to_string(d.join("bookworm-backports.list.replaced-by-kestrel-setup")).unwrap(),
        old
    );
    let now = fs::read_to_string(d.join("bookworm-backports.list")).unwrap();
    assert!(
        now.contains("http://apt-mirror.invalid/debian bookworm-backports"),
        "{now}"
    );
    // The same file pointing at the machine's own host (as on a machine without a mirror)
    // is kept as it is.
    let same = "deb http://apt-mirror.invalid/debian bookworm-backports main non-free-firmware\n";
    let root = apt_root(
        "legacy-same-host",
        &[
            ("sources.list.d/debian.sources", DEB822_MIRROR),
            ("sources.list.d/bookworm-backports.list", same),
        ],
    );
    let (changed, _, _) = run("apt_setup_backports", &["bookworm"], &root);
    assert!(!changed);
    assert_eq!(
        fs::read_to_string(root.join("sources.list.d/bookworm-backports.list")).unwrap(),
        same
    );
}
