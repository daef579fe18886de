//! The Raspberry Pi 4 SD-card image (`qemu/mksdimage.sh`): an MBR with one FAT32 partition at
//! 4 MiB holding the GPU firmware, the DTB, config.txt and the hypervisor with its ramdisk. The
//! image is read back with sfdisk and mtools, as a Pi's boot ROM and firmware would see it.
//!
//! Needs sfdisk, mtools and Debian's raspi-firmware package (fetched by qemu/rpi-firmware.sh).
//! When they cannot be had, the test fails under `CI=true` and is skipped (saying why) otherwise.
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn unavailable(why: &str) -> bool {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why} (CI=true: run qemu/setup.sh)");
    }
    eprintln!("SKIP: {why}");
    false
}

/// sfdisk, mtools and the Raspberry Pi firmware are there (or could be fetched).
fn prerequisites() -> bool {
    for tool in ["sfdisk", "mformat", "mcopy", "mdir", "mtype", "dtc"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !found {
            return unavailable(&format!("{tool} is not installed"));
        }
    }
    let fw = Command::new(repo().join("qemu/rpi-firmware.sh")).output();
    match fw {
        Ok(o) if o.status.success() => true,
        Ok(o) => unavailable(&format!(
            "the raspi-firmware package cannot be obtained: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => unavailable(&format!("qemu/rpi-firmware.sh cannot run: {e}")),
    }
}

fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("rpi4")
        .join(name);
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

/// A stand-in for kestrel.bin: an arm64 Image header (Documentation/arch/arm64/booting.rst)
/// with image_size 0x30000 in front of 8 KiB of data.
fn dummy_kernel(dir: &Path) -> (PathBuf, Vec<u8>) {
    let mut k = vec![0u8; 8192];
    k[0..4].copy_from_slice(&0x1400_0010u32.to_le_bytes()); // b +0x40
    k[16..24].copy_from_slice(&0x30000u64.to_le_bytes()); // image_size
    k[24..32].copy_from_slice(&0xau64.to_le_bytes()); // flags
    k[56..60].copy_from_slice(b"ARM\x64");
    for (i, b) in k.iter_mut().enumerate().skip(64) {
        *b = (i * 7 % 251) as u8;
    }
    let p = dir.join("kestrel.bin");
    fs::write(&p, &k).unwrap();
    (p, k)
}

fn run(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

struct SdImage {
    path: PathBuf,
    /// Byte offset of the FAT partition.
    fat_offset: u64,
}

impl SdImage {
    fn build(dir: &Path, args: &[&str]) -> SdImage {
        let path = dir.join("sd.img");
        run(Command::new(repo().join("qemu/mksdimage.sh"))
            .arg(&path)
            .args(args));
        // The partition table, as `sfdisk -d` dumps it.
        let dump = run(Command::new("sfdisk").arg("-d").arg(&path));
        assert!(dump.contains("label: dos"), "not an MBR:\n{dump}");
        let parts: Vec<&str> = dump.lines().filter(|l| l.contains("start=")).collect();
        assert_eq!(parts.len(), 1, "one partition expected:\n{dump}");
        let field = |name: &str| -> u64 {
            let f = parts[0]
                .split(',')
                .find_map(|f| {
                    f.split_once(':')
                        .map_or(f, |(_, r)| r)
                        .trim()
                        .strip_prefix(name)
                })
                .unwrap_or_else(|| panic!("no {name} in {}", parts[0]));
            f.trim_start_matches('=').trim().parse().unwrap()
        };
        let start = field("start");
        let size = field("size");
        assert_eq!(start, 8192, "partition must start at 4 MiB");
        assert!(
            size * 512 >= 64 << 20,
            "partition of {size} sectors too small for FAT32"
        );
        assert!(
            parts[0].contains("type=c"),
            "partition type must be 0x0c (FAT32 LBA): {}",
            parts[0]
        );
        let img = SdImage {
            path,
            fat_offset: start * 512,
        };
        let info = run(Command::new("minfo").arg("-i").arg(img.spec()).arg("::"));
        assert!(
            info.contains("disk type=\"FAT32"),
            "the boot partition is not FAT32:\n{info}"
        );
        assert!(
            info.contains("hidden sectors: 8192"),
            "BPB hidden sectors:\n{info}"
        );
        img
    }

    fn spec(&self) -> String {
        format!("{}@@{}", self.path.display(), self.fat_offset)
    }

    /// Every file on the FAT partition, as `mdir -/ -b` lists them ("::/config.txt").
    fn files(&self) -> BTreeSet<String> {
        run(Command::new("mdir").args(["-i", &self.spec(), "-/", "-b", "::"]))
            .lines()
            .filter(|l| !l.ends_with('/'))
            .map(|l| l.trim_start_matches("::/").to_string())
            .collect()
    }

    fn read(&self, name: &str, dir: &Path) -> Vec<u8> {
        let out = dir.join(format!("readback-{}", name.replace('/', "_")));
        run(Command::new("mcopy")
            .args(["-n", "-i", &self.spec()])
            .arg(format!("::/{name}"))
            .arg(&out));
        fs::read(&out).unwrap()
    }

    fn config(&self) -> String {
        run(Command::new("mtype").args(["-i", &self.spec(), "::/config.txt"]))
    }
}

const FIRMWARE: &[&str] = &[
    "start4.elf",
    "fixup4.dat",
    "start4cd.elf",
    "fixup4cd.dat",
    "start4db.elf",
    "fixup4db.dat",
    "start4x.elf",
    "fixup4x.dat",
    "LICENCE.raspi-firmware",
];

fn expected(extra: &[&str]) -> BTreeSet<String> {
    FIRMWARE
        .iter()
        .chain(&[
            "bcm2711-rpi-4-b.dtb",
            "bcm2711-rpi-400.dtb",
            "bcm2711-rpi-cm4-io.dtb",
            "config.txt",
            "cmdline.txt",
            "kernel8.img",
        ])
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
}

/// The settings that are in force: not comments, not blank.
fn active_lines(config: &str) -> Vec<String> {
    config
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

#[test]
fn mini_uart_image_has_firmware_kernel_ramdisk_and_config() {
    if !prerequisites() {
        return;
    }
    let dir = scratch("mini");
    let (kernel, kernel_bytes) = dummy_kernel(&dir);
    let ramdisk: Vec<u8> = (0..3000u32).map(|i| (i % 253) as u8).collect();
    fs::write(dir.join("ramdisk"), &ramdisk).unwrap();
    let img = SdImage::build(
        &dir,
        &[
            "--kernel",
            kernel.to_str().unwrap(),
            "--ramdisk",
            dir.join("ramdisk").to_str().unwrap(),
        ],
    );

    assert_eq!(img.files(), expected(&["initramfs"]));

    let cfg = active_lines(&img.config());
    for want in [
        "arm_64bit=1",
        "enable_uart=1",
        "kernel=kernel8.img",
        "initramfs initramfs followkernel",
        "kernel_address=0x200000",
        "enable_gic=1",
        "[cm4]",
        "device_tree=bcm2711-rpi-cm4-io.dtb",
    ] {
        assert!(
            cfg.iter().any(|l| l == want),
            "config.txt lacks {want:?}: {cfg:?}"
        );
    }
    assert!(
        !cfg.iter().any(|l| l.starts_with("dtoverlay")),
        "the mini UART image must not swap UARTs: {cfg:?}"
    );
    // The firmware's messages go to UART0, which drives Bluetooth when the mini UART is the
    // console: not asked for here.
    assert!(
        !cfg.iter().any(|l| l.starts_with("uart_2ndstage")),
        "uart_2ndstage with the mini UART console: {cfg:?}"
    );
    assert!(
        !cfg.iter().any(|l| l.starts_with("armstub")),
        "the firmware's built-in armstub must be kept: {cfg:?}"
    );

    // kernel8.img is the image padded to its header's image_size, so `followkernel` puts the
    // ramdisk after the hypervisor's .bss and stacks.
    let k8 = img.read("kernel8.img", &dir);
    assert_eq!(k8.len(), 0x30000);
    assert_eq!(&k8[..kernel_bytes.len()], &kernel_bytes[..]);
    assert!(k8[kernel_bytes.len()..].iter().all(|&b| b == 0));
    assert_eq!(img.read("initramfs", &dir), ramdisk);
    assert_eq!(img.read("cmdline.txt", &dir), b"loglevel=info\n");

    for name in [
        "bcm2711-rpi-4-b.dtb",
        "bcm2711-rpi-400.dtb",
        "bcm2711-rpi-cm4-io.dtb",
    ] {
        let dtb = img.read(name, &dir);
        assert_eq!(&dtb[..4], &[0xd0, 0x0d, 0xfe, 0xed], "{name}: DTB magic");
    }
    let start4 = img.read("start4.elf", &dir);
    assert_eq!(&start4[..4], b"\x7fELF", "start4.elf is the firmware ELF");
}

#[test]
fn pl011_image_adds_the_disable_bt_overlay() {
    if !prerequisites() {
        return;
    }
    let dir = scratch("pl011");
    let (kernel, _) = dummy_kernel(&dir);
    fs::write(dir.join("ramdisk"), b"rd").unwrap();
    let img = SdImage::build(
        &dir,
        &[
            "--kernel",
            kernel.to_str().unwrap(),
            "--ramdisk",
            dir.join("ramdisk").to_str().unwrap(),
            "--uart",
            "pl011",
        ],
    );
    assert_eq!(
        img.files(),
        expected(&["initramfs", "overlays/disable-bt.dtbo"])
    );
    let cfg = active_lines(&img.config());
    for want in [
        "dtoverlay=disable-bt",
        "gpio=14-15=a0",
        "enable_uart=1",
        "uart_2ndstage=1",
    ] {
        assert!(
            cfg.iter().any(|l| l == want),
            "config.txt lacks {want:?}: {cfg:?}"
        );
    }
    let dtbo = img.read("overlays/disable-bt.dtbo", &dir);
    assert_eq!(&dtbo[..4], &[0xd0, 0x0d, 0xfe, 0xed], "overlay magic");
}

#[test]
fn image_without_ramdisk_has_no_initramfs_line() {
    if !prerequisites() {
        return;
    }
    let dir = scratch("no-ramdisk");
    let (kernel, _) = dummy_kernel(&dir);
    let img = SdImage::build(&dir, &["--kernel", kernel.to_str().unwrap()]);
    assert_eq!(img.files(), expected(&[]));
    let cfg = active_lines(&img.config());
    assert!(
        !cfg.iter().any(|l| l.starts_with("initramfs")),
        "no ramdisk, yet config.txt loads one: {cfg:?}"
    );
    assert!(cfg.iter().any(|l| l == "kernel=kernel8.img"));
}
