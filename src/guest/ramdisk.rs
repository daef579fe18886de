//! The hypervisor's ramdisk: from its bytes (a cpio newc archive, possibly gzip-compressed) to
//! the list of VMs ready to start.
//!
//! Archive layout (docs/ramdisk.md): one folder per VM at the top level, holding `vm.toml`
//! and the files it names by paths relative to the folder:
//!
//! ```text
//! linux/vm.toml      kernel = "Image"  initrd = "initramfs.cpio.gz"  memory = "512M" ...
//! linux/Image
//! linux/initramfs.cpio.gz
//! web/vm.toml
//! web/boot/Image
//! ```
//!
//! Use in two steps, so that file slices can borrow the (possibly inflated) archive:
//!
//! ```ignore
//! let archive = ramdisk::unpack(initrd_bytes, limit)?;      // Cow: borrowed unless gzip
//! for vm in ramdisk::parse_vms(&archive, kernel_limit)? {   // one entry per folder
//!     match vm.spec { Ok(spec) => ..., Err(e) => log!("{}: {}", vm.dir, e) }
//! }
//! ```
//!
//! Errors of the whole archive (bad gzip, bad cpio anywhere, truncation) are one
//! [`RamdiskError`]: nothing of a damaged archive is trusted. Errors of one VM (no `vm.toml`,
//! a bad config, a missing file, a kernel that is not an arm64 Image, a layout that does not
//! fit) are reported in that VM's [`VmEntry`] and do not stop the others.
#![forbid(unsafe_code)]

use alloc::borrow::Cow;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use super::config::{self, ConfigError, VmConfig};
use super::cpio::{self, CpioError, Entry, EntryKind};
use super::gzip::{self, GzipError};
use super::image::{self, ImageError, ImageInfo};
use super::layout::{self, GuestLayout, LayoutError};

/// Name of the configuration file in each VM folder.
pub const CONFIG_FILE: &str = "vm.toml";
/// The FDT header magic (Devicetree Specification, 5.2 "Header"), big endian.
const FDT_MAGIC: u32 = 0xd00d_feed;

/// Why the whole ramdisk is unusable.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum RamdiskError {
    Gzip(GzipError),
    Cpio(CpioError),
}

impl fmt::Display for RamdiskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RamdiskError::Gzip(e) => write!(f, "ramdisk: {e}"),
            RamdiskError::Cpio(e) => write!(f, "ramdisk: {e}"),
        }
    }
}

/// A file role in `vm.toml`, for errors.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FileKey {
    Config,
    Kernel,
    Initrd,
    Dtb,
    /// `disks[i].file`.
    Disk(usize),
}

impl FileKey {
    pub const fn name(self) -> &'static str {
        match self {
            FileKey::Config => "vm.toml",
            FileKey::Kernel => "kernel",
            FileKey::Initrd => "initrd",
            FileKey::Dtb => "dtb",
            FileKey::Disk(_) => "disks.file",
        }
    }
}

/// Why one VM cannot be started.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum VmError {
    /// The folder has no `vm.toml`.
    MissingConfig,
    Config(ConfigError),
    /// `vm.toml` names a file the folder does not have.
    MissingFile {
        key: FileKey,
        path: String,
    },
    /// The named path is a directory, a symlink or a device, not a regular file.
    NotAFile {
        key: FileKey,
        path: String,
        kind: EntryKind,
    },
    /// The kernel is compressed (gzip, or EFI zboot with gzip) and does not inflate.
    KernelInflate(GzipError),
    /// The kernel is not a bootable arm64 Image.
    Kernel(ImageError),
    /// The `dtb` file is not a flattened device tree of at most 2 MiB.
    BadDtb {
        size: usize,
    },
    /// Kernel, DTB and initrd do not fit in the VM's RAM.
    Layout(LayoutError),
}

impl fmt::Display for VmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmError::MissingConfig => write!(f, "no {CONFIG_FILE} in the folder"),
            VmError::Config(e) => write!(f, "{e}"),
            VmError::MissingFile { key, path } => {
                write!(
                    f,
                    "`{}` names {path}, which is not in the folder",
                    key.name()
                )
            }
            VmError::NotAFile { key, path, kind } => {
                write!(
                    f,
                    "`{}`: {path} is not a regular file ({kind:?})",
                    key.name()
                )
            }
            VmError::KernelInflate(e) => write!(f, "kernel: {e}"),
            VmError::Kernel(e) => write!(f, "{e}"),
            VmError::BadDtb { size } => {
                write!(
                    f,
                    "dtb: not a flattened device tree of at most 2 MiB ({size} bytes)"
                )
            }
            VmError::Layout(e) => write!(f, "{e}"),
        }
    }
}

/// A VM ready to start: its configuration, its files and where they go.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct VmSpec<'a> {
    pub config: VmConfig,
    /// The kernel `Image`: borrowed from the archive, or owned if it was decompressed.
    pub kernel: Cow<'a, [u8]>,
    pub kernel_info: ImageInfo,
    pub initrd: Option<&'a [u8]>,
    /// A DTB supplied with the VM, to use instead of the generated one.
    pub dtb: Option<&'a [u8]>,
    /// Placement of kernel, DTB and initrd in the VM's RAM.
    pub layout: GuestLayout,
    /// The disk images of `config.disks`, in order, borrowed from the archive (a read-only
    /// disk is served from these bytes in place).
    pub disks: Vec<&'a [u8]>,
}

/// One VM folder of the archive and what became of it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct VmEntry<'a> {
    /// The folder name.
    pub dir: &'a str,
    pub spec: Result<VmSpec<'a>, VmError>,
}

/// The archive's bytes: `data` itself, or its inflated contents (at most `limit` bytes) if it
/// is gzip-compressed.
pub fn unpack(data: &[u8], limit: usize) -> Result<Cow<'_, [u8]>, RamdiskError> {
    if gzip::is_gzip(data) {
        gzip::decompress(data, limit)
            .map(Cow::Owned)
            .map_err(RamdiskError::Gzip)
    } else {
        Ok(Cow::Borrowed(data))
    }
}

/// A member's path without leading "./" (as `find . | cpio -o` writes it); `None` for the
/// archive root itself, non-UTF-8 names and names with empty, "." or ".." components.
fn normalized_name<'a>(e: &Entry<'a>) -> Option<&'a str> {
    let mut name = e.name_str()?;
    while let Some(rest) = name.strip_prefix("./") {
        name = rest;
    }
    if name
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return None;
    }
    Some(name)
}

/// The archive's members by normalized path (a later duplicate wins, as when the kernel
/// unpacks an initramfs).
struct Members<'a> {
    by_path: BTreeMap<&'a str, Entry<'a>>,
    all: Vec<Entry<'a>>,
}

impl<'a> Members<'a> {
    /// The regular file at `dir/path`.
    fn file(&self, dir: &str, path: &str, key: FileKey) -> Result<&'a [u8], VmError> {
        let full = alloc::format!("{dir}/{path}");
        let e = self
            .by_path
            .get(full.as_str())
            .ok_or_else(|| VmError::MissingFile {
                key,
                path: path.into(),
            })?;
        if e.kind() != EntryKind::File {
            return Err(VmError::NotAFile {
                key,
                path: path.into(),
                kind: e.kind(),
            });
        }
        // newc stores a hard-linked file's data with the last of its links only.
        if e.data.is_empty() && e.nlink > 1 {
            let linked = self.all.iter().find(|o| {
                o.ino == e.ino
                    && (o.dev_major, o.dev_minor) == (e.dev_major, e.dev_minor)
                    && o.kind() == EntryKind::File
                    && !o.data.is_empty()
            });
            if let Some(o) = linked {
                return Ok(o.data);
            }
        }
        Ok(e.data)
    }
}

/// Inflates a gzip kernel (`Image.gz`) or the gzip payload of an EFI zboot image.
fn kernel_bytes(raw: &[u8], limit: usize) -> Result<Cow<'_, [u8]>, VmError> {
    if gzip::is_gzip(raw) {
        return gzip::decompress(raw, limit)
            .map(Cow::Owned)
            .map_err(VmError::KernelInflate);
    }
    if let Some((compression, payload)) = image::zboot_payload(raw)
        && compression.starts_with(b"gzip\0")
    {
        return gzip::decompress(payload, limit)
            .map(Cow::Owned)
            .map_err(VmError::KernelInflate);
    }
    Ok(Cow::Borrowed(raw))
}

fn valid_dtb(dtb: &[u8]) -> bool {
    let be32 = |at: usize| {
        dtb.get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    be32(0) == Some(FDT_MAGIC)
        && be32(4).is_some_and(|total| (total as usize) <= dtb.len())
        && dtb.len() <= super::fdt::MAX_DTB_SIZE
}

fn load_vm<'a>(
    members: &Members<'a>,
    dir: &'a str,
    kernel_limit: usize,
) -> Result<VmSpec<'a>, VmError> {
    let text = match members.file(dir, CONFIG_FILE, FileKey::Config) {
        Err(VmError::MissingFile { .. }) => return Err(VmError::MissingConfig),
        other => other?,
    };
    let config = config::parse(text, dir).map_err(VmError::Config)?;
    let kernel = kernel_bytes(
        members.file(dir, &config.kernel, FileKey::Kernel)?,
        kernel_limit,
    )?;
    let kernel_info = image::parse(&kernel).map_err(VmError::Kernel)?;
    let initrd = match &config.initrd {
        Some(p) => Some(members.file(dir, p, FileKey::Initrd)?),
        None => None,
    };
    let dtb = match &config.dtb {
        Some(p) => {
            let d = members.file(dir, p, FileKey::Dtb)?;
            if !valid_dtb(d) {
                return Err(VmError::BadDtb { size: d.len() });
            }
            Some(d)
        }
        None => None,
    };
    let disks = config
        .disks
        .iter()
        .enumerate()
        .map(|(i, d)| members.file(dir, &d.file, FileKey::Disk(i)))
        .collect::<Result<Vec<_>, _>>()?;
    let initrd_size = initrd.map_or(0, |i| i.len() as u64);
    let layout = layout::plan(config.ram_base, config.memory, &kernel_info, initrd_size)
        .map_err(VmError::Layout)?;
    Ok(VmSpec {
        config,
        kernel,
        kernel_info,
        initrd,
        dtb,
        layout,
        disks,
    })
}

/// Reads the VM folders of an (already unpacked) archive. Folders come out sorted by name;
/// members outside any folder are ignored. A kernel that is gzip-compressed (or an EFI zboot
/// image with a gzip payload) is inflated to at most `kernel_limit` bytes.
pub fn parse_vms(archive: &[u8], kernel_limit: usize) -> Result<Vec<VmEntry<'_>>, RamdiskError> {
    let all: Vec<Entry<'_>> = cpio::entries(archive)
        .collect::<Result<_, _>>()
        .map_err(RamdiskError::Cpio)?;
    let mut by_path = BTreeMap::new();
    let mut dirs = BTreeSet::new();
    for e in &all {
        let Some(name) = normalized_name(e) else {
            continue;
        };
        match name.split_once('/') {
            Some((dir, _)) => {
                dirs.insert(dir);
            }
            None if e.kind() == EntryKind::Directory => {
                dirs.insert(name);
            }
            None => {}
        }
        by_path.insert(name, *e);
    }
    let members = Members { by_path, all };
    Ok(dirs
        .into_iter()
        .map(|dir| VmEntry {
            dir,
            spec: load_vm(&members, dir, kernel_limit),
        })
        .collect())
}

#[cfg(test)]
mod tests;
