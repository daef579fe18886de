//! Two `qemu/run.sh` started at once both run `qemu/build.sh`, which converts the ELF into
//! `target/kestrel.bin` when the ELF is newer. Each conversion must land whole and none may
//! fail because of the other: here three builds convert at once, with an objcopy slowed down
//! so that their conversions overlap for certain.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The rustup llvm-objcopy, as qemu/build.sh finds it.
fn real_objcopy() -> Option<PathBuf> {
    let out = Command::new("rustc")
        .args(["--print", "sysroot"])
        .current_dir(repo())
        .output()
        .ok()?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    fs::read_dir(sysroot.join("lib/rustlib"))
        .ok()?
        .filter_map(Result::ok)
        .map(|d| d.path().join("bin/llvm-objcopy"))
        .find(|p| p.is_file())
}

fn leftovers(target: &Path) -> Vec<String> {
    fs::read_dir(target)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("kestrel.bin") && n != "kestrel.bin")
        .collect()
}

#[test]
fn concurrent_builds_each_succeed_and_leave_one_whole_image() {
    let Some(objcopy) = real_objcopy() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "llvm-objcopy missing (rustup component llvm-tools)"
        );
        eprintln!("SKIP: llvm-objcopy missing");
        return;
    };
    let build = repo().join("qemu/build.sh");
    assert!(
        Command::new(&build).status().unwrap().success(),
        "first build"
    );
    let target = repo().join("target");
    let elf = target.join("aarch64-unknown-none-softfloat/release/kestrel");

    // An objcopy that returns a second after writing its output, so every build has written
    // its output before any of them goes on to rename it.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("build-race");
    fs::create_dir_all(&dir).unwrap();
    let slow = dir.join("slow-objcopy");
    fs::write(
        &slow,
        format!(
            "#!/bin/sh\n'{}' \"$@\" || exit\nsleep 1\n",
            objcopy.display()
        ),
    )
    .unwrap();
    let st = Command::new("chmod").arg("+x").arg(&slow).status().unwrap();
    assert!(st.success());
    let reference = dir.join("kestrel.bin");
    let st = Command::new(&objcopy)
        .args(["-O", "binary"])
        .arg(&elf)
        .arg(&reference)
        .status()
        .unwrap();
    assert!(st.success());

    for round in 0..2 {
        // The ELF is newer than the image: every build converts.
        fs::File::options()
            .append(true)
            .open(&elf)
            .unwrap()
            .set_modified(SystemTime::now())
            .unwrap();
        let builds: Vec<_> = (0..3)
            .map(|_| {
                Command::new(&build)
                    .env("KESTREL_OBJCOPY", &slow)
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for b in builds {
            let out = b.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: a concurrent build failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            fs::read(target.join("kestrel.bin")).unwrap() == fs::read(&reference).unwrap(),
            "round {round}: target/kestrel.bin is not the converted ELF"
        );
        assert_eq!(leftovers(&target), Vec::<String>::new(), "round {round}");
    }
}
