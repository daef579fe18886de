use super::*;
use crate::addr::Ipa;
use crate::guest::cpio::tests::{push_entry, push_linked_entry, push_trailer};
use crate::guest::gzip::tests::compress;
use alloc::vec;

const DIR: u32 = 0o040_755;
const FILE: u32 = 0o100_644;
const LIMIT: usize = 64 << 20;

/// A minimal valid kernel: the Debian cloud kernel's real header plus a little text.
fn kernel() -> Vec<u8> {
    let mut k = include_bytes!("../../../tests/fixtures/guest/image-cloud-header.bin").to_vec();
    k.extend_from_slice(b"kernel text");
    k
}

struct Archive(Vec<u8>);

impl Archive {
    fn new() -> Self {
        let mut a = Vec::new();
        push_entry(&mut a, ".", DIR, &[]);
        Archive(a)
    }
    fn dir(mut self, name: &str) -> Self {
        push_entry(&mut self.0, name, DIR, &[]);
        self
    }
    fn file(mut self, name: &str, data: &[u8]) -> Self {
        push_entry(&mut self.0, name, FILE, data);
        self
    }
    fn entry(mut self, name: &str, mode: u32, data: &[u8]) -> Self {
        push_entry(&mut self.0, name, mode, data);
        self
    }
    fn finish(mut self) -> Vec<u8> {
        push_trailer(&mut self.0);
        self.0
    }
}

fn good_vm(a: Archive, dir: &str) -> Archive {
    a.dir(dir)
        .file(
            &alloc::format!("{dir}/vm.toml"),
            b"kernel = \"Image\"\nmemory = \"64M\"\ninitrd = \"initrd\"\n",
        )
        .file(&alloc::format!("{dir}/Image"), &kernel())
        .file(&alloc::format!("{dir}/initrd"), b"initrd bytes")
}

fn spec<'a, 'b>(vms: &'b [VmEntry<'a>], dir: &str) -> &'b VmSpec<'a> {
    let e = vms
        .iter()
        .find(|v| v.dir == dir)
        .unwrap_or_else(|| panic!("no VM {dir}"));
    e.spec
        .as_ref()
        .unwrap_or_else(|err| panic!("{dir}: {err:?}"))
}

fn error<'b>(vms: &'b [VmEntry<'_>], dir: &str) -> &'b VmError {
    let e = vms
        .iter()
        .find(|v| v.dir == dir)
        .unwrap_or_else(|| panic!("no VM {dir}"));
    e.spec
        .as_ref()
        .err()
        .unwrap_or_else(|| panic!("{dir} loaded"))
}

#[test]
fn loads_a_vm_with_its_files_borrowed_from_the_archive() {
    let a = good_vm(Archive::new(), "linux").finish();
    let vms = parse_vms(&a, LIMIT).unwrap();
    assert_eq!(vms.len(), 1);
    let s = spec(&vms, "linux");
    assert_eq!(s.config.name, "linux");
    assert_eq!(s.config.memory, 64 << 20);
    assert_eq!(&s.kernel[..], &kernel()[..]);
    assert!(matches!(s.kernel, Cow::Borrowed(_)));
    assert_eq!(s.kernel_info.image_size, 0x1ab_0000);
    assert_eq!(s.initrd, Some(&b"initrd bytes"[..]));
    assert_eq!(s.dtb, None);
    assert_eq!(s.layout.kernel_entry, Ipa::new(0x4000_0000));
    assert_eq!(s.layout.initrd.unwrap().size, 12);
    let base = a.as_ptr() as usize;
    let p = s.initrd.unwrap().as_ptr() as usize;
    assert!(p > base && p < base + a.len(), "initrd borrows the archive");
}

#[test]
fn a_broken_vm_does_not_stop_the_good_one() {
    let a = good_vm(Archive::new(), "good")
        .dir("broken")
        .file("broken/vm.toml", b"kernel = \"Image\"\nmemroy = \"64M\"\n")
        .file("broken/Image", &kernel())
        .finish();
    let vms = parse_vms(&a, LIMIT).unwrap();
    assert_eq!(
        vms.iter().map(|v| v.dir).collect::<Vec<_>>(),
        ["broken", "good"]
    );
    assert_eq!(
        error(&vms, "broken"),
        &VmError::Config(ConfigError::UnknownKey {
            key: "memroy".into(),
            line: 2
        })
    );
    assert_eq!(spec(&vms, "good").config.name, "good");
}

#[test]
fn reports_per_vm_file_problems() {
    let a = good_vm(Archive::new(), "ok")
        .dir("noconf")
        .file("noconf/Image", &kernel())
        .dir("nokernel")
        .file("nokernel/vm.toml", b"kernel = \"boot/Image\"")
        .dir("notimage")
        .file("notimage/vm.toml", b"kernel = \"Image\"")
        .file("notimage/Image", &[0u8; 100])
        .dir("noinitrd")
        .file("noinitrd/vm.toml", b"kernel = \"Image\"\ninitrd = \"rd\"")
        .file("noinitrd/Image", &kernel())
        .dir("kdir")
        .file("kdir/vm.toml", b"kernel = \"Image\"")
        .dir("kdir/Image")
        .dir("klink")
        .file("klink/vm.toml", b"kernel = \"Image\"")
        .file("klink/real", &kernel())
        .entry("klink/Image", 0o120_777, b"real")
        .finish();
    let vms = parse_vms(&a, LIMIT).unwrap();
    assert_eq!(vms.len(), 7);
    assert_eq!(error(&vms, "noconf"), &VmError::MissingConfig);
    assert_eq!(
        error(&vms, "nokernel"),
        &VmError::MissingFile {
            key: FileKey::Kernel,
            path: "boot/Image".into()
        }
    );
    assert_eq!(
        error(&vms, "notimage"),
        &VmError::Kernel(ImageError::BadMagic { found: 0 })
    );
    assert_eq!(
        error(&vms, "noinitrd"),
        &VmError::MissingFile {
            key: FileKey::Initrd,
            path: "rd".into()
        }
    );
    assert_eq!(
        error(&vms, "kdir"),
        &VmError::NotAFile {
            key: FileKey::Kernel,
            path: "Image".into(),
            kind: EntryKind::Directory
        }
    );
    assert_eq!(
        error(&vms, "klink"),
        &VmError::NotAFile {
            key: FileKey::Kernel,
            path: "Image".into(),
            kind: EntryKind::Symlink
        }
    );
    assert!(vms.iter().find(|v| v.dir == "ok").unwrap().spec.is_ok());
}

#[test]
fn reports_a_vm_whose_files_do_not_fit_its_memory() {
    let big = vec![0u8; 6 << 20];
    let a = Archive::new()
        .dir("small")
        .file(
            "small/vm.toml",
            b"kernel = \"Image\"\nmemory = \"32M\"\ninitrd = \"rd\"",
        )
        .file("small/Image", &kernel())
        .file("small/rd", &big)
        .finish();
    let vms = parse_vms(&a, LIMIT).unwrap();
    assert_eq!(
        error(&vms, "small"),
        &VmError::Layout(LayoutError::InitrdDoesNotFit {
            size: 6 << 20,
            available: 2 << 20
        })
    );
}

#[test]
fn accepts_names_with_dot_slash_prefixes_and_nested_paths() {
    let a = Archive::new()
        .dir("./vm")
        .dir("./vm/boot")
        .file(
            "./vm/vm.toml",
            b"kernel = \"./boot/Image\"\ndtb = \"boot/guest.dtb\"",
        )
        .file("./vm/boot/Image", &kernel())
        .file("./vm/boot/guest.dtb", &minimal_dtb())
        .file("README", b"top-level files are ignored")
        .finish();
    let vms = parse_vms(&a, LIMIT).unwrap();
    assert_eq!(vms.len(), 1);
    let s = spec(&vms, "vm");
    assert_eq!(s.config.kernel, "boot/Image");
    assert_eq!(s.dtb, Some(&minimal_dtb()[..]));
}

fn minimal_dtb() -> Vec<u8> {
    let mut d = vec![0u8; 64];
    d[0..4].copy_from_slice(&0xd00d_feedu32.to_be_bytes());
    d[4..8].copy_from_slice(&64u32.to_be_bytes());
    d
}

#[test]
fn rejects_a_dtb_file_that_is_not_a_device_tree() {
    let a = Archive::new()
        .dir("vm")
        .file("vm/vm.toml", b"kernel = \"Image\"\ndtb = \"x.dtb\"")
        .file("vm/Image", &kernel())
        .file("vm/x.dtb", b"not a dtb")
        .finish();
    let vms = parse_vms(&a, LIMIT).unwrap();
    assert_eq!(error(&vms, "vm"), &VmError::BadDtb { size: 9 });
}

#[test]
fn ignores_dot_dot_folders() {
    let a = Archive::new()
        .file("../evil/vm.toml", b"kernel = \"Image\"")
        .file("../evil/Image", &kernel())
        .finish();
    assert_eq!(parse_vms(&a, LIMIT).unwrap(), vec![]);
}

#[test]
fn inflates_a_gzip_kernel_and_owns_it() {
    let a = Archive::new()
        .dir("vm")
        .file("vm/vm.toml", b"kernel = \"Image.gz\"")
        .file("vm/Image.gz", &compress(&kernel()))
        .finish();
    let vms = parse_vms(&a, LIMIT).unwrap();
    let s = spec(&vms, "vm");
    assert!(matches!(s.kernel, Cow::Owned(_)));
    assert_eq!(&s.kernel[..], &kernel()[..]);
    // Over the limit: a per-VM error.
    let vms = parse_vms(&a, 10).unwrap();
    assert_eq!(
        error(&vms, "vm"),
        &VmError::KernelInflate(GzipError::OutputTooLarge { limit: 10 })
    );
}

#[test]
fn extracts_the_gzip_payload_of_an_efi_zboot_kernel() {
    let payload = compress(&kernel());
    let mut z = vec![0u8; 64];
    z[0..4].copy_from_slice(b"MZ\0\0");
    z[4..8].copy_from_slice(b"zimg");
    z[8..12].copy_from_slice(&64u32.to_le_bytes());
    z[12..16].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    z[24..29].copy_from_slice(b"gzip\0");
    z.extend_from_slice(&payload);
    z.extend_from_slice(&[0u8; 12]);
    let a = Archive::new()
        .dir("vm")
        .file("vm/vm.toml", b"kernel = \"vmlinuz.efi\"")
        .file("vm/vmlinuz.efi", &z)
        .finish();
    let vms = parse_vms(&a, LIMIT).unwrap();
    assert_eq!(&spec(&vms, "vm").kernel[..], &kernel()[..]);
    // zstd zboot: rejected with the zboot message.
    z[24..29].copy_from_slice(b"zstd\0");
    let a = Archive::new()
        .dir("vm")
        .file("vm/vm.toml", b"kernel = \"vmlinuz.efi\"")
        .file("vm/vmlinuz.efi", &z)
        .finish();
    let vms = parse_vms(&a, LIMIT).unwrap();
    assert_eq!(
        error(&vms, "vm"),
        &VmError::Kernel(ImageError::EfiZboot {
            compression: *b"zstd\0\0\0\0"
        })
    );
}

#[test]
fn resolves_hard_linked_files() {
    let mut a = Vec::new();
    push_entry(&mut a, "vm", DIR, &[]);
    push_entry(
        &mut a,
        "vm/vm.toml",
        FILE,
        b"kernel = \"Image\"\ninitrd = \"rd\"",
    );
    push_linked_entry(&mut a, "vm/rd", 77, 2, &[]);
    push_linked_entry(&mut a, "vm/rd-copy", 77, 2, b"shared data");
    push_entry(&mut a, "vm/Image", FILE, &kernel());
    push_trailer(&mut a);
    let vms = parse_vms(&a, LIMIT).unwrap();
    assert_eq!(spec(&vms, "vm").initrd, Some(&b"shared data"[..]));
}

#[test]
fn unpacks_a_gzip_archive_and_borrows_a_plain_one() {
    let a = good_vm(Archive::new(), "linux").finish();
    assert!(matches!(unpack(&a, LIMIT).unwrap(), Cow::Borrowed(_)));
    let gz = compress(&a);
    let unpacked = unpack(&gz, LIMIT).unwrap();
    assert!(matches!(unpacked, Cow::Owned(_)));
    let vms = parse_vms(&unpacked, LIMIT).unwrap();
    assert_eq!(spec(&vms, "linux").initrd, Some(&b"initrd bytes"[..]));
}

#[test]
fn reports_a_damaged_archive_as_one_error() {
    let a = good_vm(Archive::new(), "linux").finish();
    // Truncated just before the trailer, and inside the kernel's data.
    let trailer = a.windows(10).position(|w| w == b"TRAILER!!!").unwrap() - cpio::HEADER_LEN;
    assert_eq!(
        parse_vms(&a[..trailer], LIMIT),
        Err(RamdiskError::Cpio(CpioError::MissingTrailer {
            offset: trailer
        }))
    );
    let kernel_at = a.windows(8).position(|w| w == b"ARMd@\0\0\0").unwrap();
    assert!(matches!(
        parse_vms(&a[..kernel_at], LIMIT),
        Err(RamdiskError::Cpio(CpioError::TruncatedData { .. }))
    ));
    assert_eq!(
        parse_vms(b"garbage garbage garbage", LIMIT),
        Err(RamdiskError::Cpio(CpioError::TruncatedHeader { offset: 0 }))
    );
    assert_eq!(
        parse_vms(&[0x55; 200], LIMIT),
        Err(RamdiskError::Cpio(CpioError::BadMagic { offset: 0 }))
    );
    let mut gz = compress(&a);
    let at = gz.len() - 8;
    gz[at] ^= 1;
    assert!(matches!(
        unpack(&gz, LIMIT),
        Err(RamdiskError::Gzip(GzipError::CrcMismatch { .. }))
    ));
    assert!(matches!(
        unpack(&gz[..gz.len() / 2], LIMIT),
        Err(RamdiskError::Gzip(GzipError::TruncatedData { .. }))
    ));
}

#[test]
fn an_empty_archive_has_no_vms() {
    let a = Archive::new().finish();
    assert_eq!(parse_vms(&a, LIMIT).unwrap(), vec![]);
}

/// `ramdisk-fixture.cpio.gz` was built by `qemu/mkramdisk.sh --gzip` from
/// tests/fixtures/guest/vms/{good,broken} (see tests/fixtures/guest/README.md).
#[test]
fn reads_a_ramdisk_built_by_mkramdisk() {
    let gz = include_bytes!("../../../tests/fixtures/guest/ramdisk-fixture.cpio.gz");
    let archive = unpack(gz, LIMIT).unwrap();
    let vms = parse_vms(&archive, LIMIT).unwrap();
    assert_eq!(
        vms.iter().map(|v| v.dir).collect::<Vec<_>>(),
        ["broken", "good"]
    );
    assert!(matches!(
        error(&vms, "broken"),
        VmError::Config(ConfigError::UnknownKey { key, .. }) if key == "memroy"
    ));
    let s = spec(&vms, "good");
    assert_eq!(s.config.name, "good");
    assert_eq!(s.config.cpus, 2);
    assert_eq!(s.config.memory, 64 << 20);
    assert_eq!(
        &s.kernel[..],
        include_bytes!("../../../tests/fixtures/guest/vms/good/Image")
    );
    assert_eq!(
        s.initrd,
        Some(&include_bytes!("../../../tests/fixtures/guest/vms/good/initrd.img")[..])
    );
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
            if let Ok(a) = unpack(&data, 1 << 20) {
                let _ = parse_vms(&a, 1 << 20);
            }
        }

        #[test]
        fn never_panics_on_generated_archives(
            files in proptest::collection::vec(
                (
                    prop_oneof![Just("vm/vm.toml"), Just("vm/Image"), Just("vm/rd"), Just("./x/vm.toml"), Just("vm"), Just("x/../y")],
                    proptest::collection::vec(any::<u8>(), 0..80),
                    prop_oneof![Just(FILE), Just(DIR), Just(0o120_777u32)],
                ),
                0..8,
            )
        ) {
            let mut a = Archive::new();
            for (name, data, mode) in &files {
                a = a.entry(name, *mode, data);
            }
            let a = a.finish();
            let vms = parse_vms(&a, 1 << 20).unwrap();
            // Folder names come out sorted and unique.
            prop_assert!(vms.windows(2).all(|w| w[0].dir < w[1].dir));
        }
    }
}

#[test]
fn borrows_each_disk_image_and_refuses_a_vm_whose_image_is_missing() {
    let toml =
        b"kernel = \"Image\"\nmemory = \"64M\"\n[[disks]]\nfile = \"root.ext4\"\nreadonly = true\n";
    let data = Archive::new()
        .dir("vm")
        .file("vm/vm.toml", toml)
        .file("vm/Image", &kernel())
        .file("vm/root.ext4", &[0x5a; 1024])
        .dir("bad")
        .file("bad/vm.toml", toml)
        .file("bad/Image", &kernel())
        .finish();
    let vms = parse_vms(&data, LIMIT).unwrap();
    let s = spec(&vms, "vm");
    assert_eq!(s.disks.len(), 1);
    assert_eq!(s.disks[0], &[0x5a; 1024][..]);
    let range = data.as_ptr_range();
    assert!(range.contains(&s.disks[0].as_ptr()), "borrowed, not copied");
    assert_eq!(
        error(&vms, "bad"),
        &VmError::MissingFile {
            key: FileKey::Disk(0),
            path: "root.ext4".into()
        }
    );
}
