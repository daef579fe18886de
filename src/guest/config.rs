//! The VM configuration file, `vm.toml`, and the check that a set of VMs fits the machine.
//!
//! [`parse`] turns the text of one `vm.toml` into a validated [`VmConfig`]; every problem is a
//! [`ConfigError`] naming the key (docs/ramdisk.md lists every key, its default and its rules).
//! Parsing uses the `toml` crate's serde deserializer with `deny_unknown_fields`, so a
//! misspelt key is an error rather than silently ignored.
//!
//! [`admit`] is the cross-VM check: given every parsed VM and the machine's free resources, it
//! accepts or refuses each VM with a reason (physical CPUs pinned twice, not enough CPUs or
//! memory, a passthrough device given twice, a duplicate name), so one bad VM is refused and
//! the others still start. [`admit_alongside`] does the same beside VMs that already run (the
//! console's `start`) and, with [`CpuSharing::Shared`], lets vCPUs share physical CPUs
//! (placed by [`crate::sched::placement`]); [`admit`] keeps CPUs exclusive until the runtime
//! schedules vCPUs.
#![forbid(unsafe_code)]

use alloc::borrow::ToOwned;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use serde::Deserialize;
use toml_parser::lexer::TokenKind;

use super::layout::guest_map::EMULATED_DEVICE_WINDOW as EMULATED;
use crate::addr::{Ipa, PAGE_SIZE, PhysAddr};

/// How errors name the emulated devices' window (`layout::guest_map`).
pub const EMULATED_DEVICES: &str = "emulated devices (0x8000000..0xa000000)";
/// How errors name the virtio-mmio window (`layout::guest_map::VIRTIO_MMIO`).
pub const VIRTIO_MMIO_SLOTS: &str = "virtio-mmio slots (0xa000000..0xa004000)";

/// Granularity of guest RAM size and base: one 4 KiB page, as for KVM. Stage 2 still maps
/// with 1 GiB and 2 MiB blocks wherever the IPA and PA alignment and the region's bounds allow,
/// and with 4 KiB pages at unaligned edges.
pub const MEMORY_ALIGN: u64 = PAGE_SIZE;
/// Smallest guest RAM accepted.
pub const MIN_MEMORY: u64 = 32 << 20;
/// Guest RAM when `memory` is not given.
pub const DEFAULT_MEMORY: u64 = 512 << 20;
/// Most vCPUs a VM may have (vCPU sets are 64-bit masks, see `vdev::Effect::KickVcpus`).
pub const MAX_VCPUS: usize = 64;
/// Guest RAM base when `ram_base` is not given (as on QEMU virt).
pub const DEFAULT_RAM_BASE: u64 = 0x4000_0000;
/// Every guest IPA must be below this: 40 bits, the smallest PARange of the CPUs we run on
/// (Cortex-A53; the Cortex-A72 of the Raspberry Pi 4 has 44).
pub const MAX_IPA: u64 = 1 << 40;
pub const DEFAULT_BOOTARGS: &str = "console=ttyAMA0 earlycon";
/// Number of virtual SPIs when `spis` is not given.
pub const DEFAULT_SPIS: u32 = 64;
/// GICD_TYPER.ITLinesNumber counts INTIDs in blocks of 32 (GIC architecture specification,
/// GICD_TYPER): the SPI count is a multiple of 32, and INTIDs stop at 1019.
pub const SPI_GRANULE: u32 = 32;
pub const MAX_SPIS: u32 = 960;
/// Longest VM name.
pub const MAX_NAME_LEN: usize = 32;
/// Highest physical CPU index `physical_cpus` may name (the machine check is in [`admit`]).
const MAX_PHYSICAL_CPU: i64 = 1023;
/// A VM's share of a contended physical CPU when `weight` is not given
/// ([`crate::sched`]: a vCPU of weight 512 gets twice the CPU of one of weight 256).
pub const DEFAULT_WEIGHT: u32 = crate::sched::DEFAULT_WEIGHT;
pub const MAX_WEIGHT: u32 = 65535;
/// Time slice of a vCPU on a shared physical CPU when `timeslice_us` is not given: 4 ms, the
/// tick period of a 250 Hz guest kernel (Debian's). Two busy vCPUs sharing a CPU each wait at
/// most one guest tick for it; a switch (a few microseconds) costs well under 1% of a slice.
pub const DEFAULT_TIMESLICE_US: u32 = 4000;
/// Shortest slice: below 100 us the switches themselves would take a noticeable share.
pub const MIN_TIMESLICE_US: u32 = 100;
/// Longest slice: beyond 100 ms the other vCPUs of the CPU would wait too long to answer.
pub const MAX_TIMESLICE_US: u32 = 100_000;
/// Deepest nesting of brackets (arrays, inline tables, table headers) [`parse`] accepts. The
/// `toml` crate allows 80 levels, but it builds its document recursively: in an optimized
/// build 79 nested arrays overflowed a 64 KiB stack (the hypervisor's boot stack size) on
/// x86_64, 32 did not (docs/fuzzing.md). A vm.toml needs 3 (`devices = [{ interrupts = [1] }]`).
pub const MAX_NESTING: usize = 8;

/// What to do when the guest asks for a reset (PSCI SYSTEM_RESET).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum OnReset {
    /// Reload the images and start the VM again.
    Restart,
    /// Stop the VM.
    Stop,
}

/// The guest's console device.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Console {
    /// An emulated PL011.
    Pl011,
    /// No console device.
    None,
}

/// A physical device region given to the VM (passthrough).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DeviceConfig {
    pub name: String,
    /// Host physical base of the device's registers (4 KiB aligned).
    pub base: PhysAddr,
    /// Size in bytes (a multiple of 4 KiB).
    pub size: u64,
    /// Where the guest sees it (4 KiB aligned); defaults to `base`.
    pub ipa: Ipa,
    /// SPI numbers (INTID - 32), each below the VM's `spis`.
    pub interrupts: Vec<u32>,
    /// `compatible` strings for a node describing the device in the generated guest DTB;
    /// empty: no node (the guest learns of the device some other way, e.g. its own `dtb`).
    pub compatible: Vec<String>,
}

/// A virtio-net device (`[[net]]`): a port of the switch called `switch`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct NetConfig {
    /// The switch (L2 segment) name: VMs with the same name share it.
    pub switch: String,
    /// The port's MAC address: as given, or derived from the VM name and the port's index
    /// ([`default_mac`]).
    pub mac: [u8; 6],
    /// The MTU offered to the guest (VIRTIO_NET_F_MTU), if given.
    pub mtu: Option<u16>,
}

/// A virtio-blk device (`[[disks]]`).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DiskConfig {
    /// The disk image, relative to the VM folder (normalized).
    pub file: String,
    pub readonly: bool,
}

/// Most virtio devices (`[[net]]` plus `[[disks]]`) of one VM: QEMU virt's virtio-mmio slots.
pub const MAX_VIRTIO_DEVICES: usize = crate::virtio::MMIO_SLOTS;
/// The MTU range `[[net]].mtu` accepts (Linux's minimum for IPv4, the largest a 16-bit field
/// and an IP packet allow).
pub const MIN_MTU: i64 = 68;
pub const MAX_MTU: i64 = 65535;

/// The MAC of port `index` of VM `name` when `mac` is not given: locally administered
/// unicast `02:6b:` + 24 bits of the FNV-1a hash of the name + the index. Distinct for the
/// ports of one VM; two VMs whose names hash alike would clash, which the switch refuses
/// (give one of them a `mac`).
pub fn default_mac(name: &str, index: usize) -> [u8; 6] {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    let [_, a, b, c] = h.to_be_bytes();
    [0x02, 0x6b, a, b, c, index as u8]
}

/// Parses `aa:bb:cc:dd:ee:ff` (or with `-`): six hexadecimal bytes.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = text.split([':', '-']);
    for b in out.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// A validated VM configuration.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct VmConfig {
    pub name: String,
    /// Paths relative to the VM folder, normalized (no ".", "..", or empty components).
    pub kernel: String,
    pub initrd: Option<String>,
    pub dtb: Option<String>,
    pub bootargs: String,
    /// Guest RAM in bytes.
    pub memory: u64,
    pub cpus: usize,
    /// Physical CPU of vCPU i, if pinned explicitly (length = `cpus`; a CPU may repeat and
    /// may be used by other VMs).
    pub physical_cpus: Option<Vec<usize>>,
    /// Share of a contended physical CPU (1..=65535), the same for each of its vCPUs.
    pub weight: u32,
    /// Longest run of one of its vCPUs on a shared physical CPU before the others are
    /// considered (microseconds).
    pub timeslice_us: u32,
    /// Guest-physical base of RAM. With `identity_ram` it is only a placeholder (the default)
    /// until the VM is built and its RAM placed.
    pub ram_base: Ipa,
    /// Guest RAM mapped at IPA = PA (one contiguous range wherever the allocator finds it), so
    /// a passed-through DMA-capable device sees the addresses the guest programs.
    pub identity_ram: bool,
    pub devices: Vec<DeviceConfig>,
    pub console: Console,
    pub autostart: bool,
    pub on_reset: OnReset,
    pub spis: u32,
    /// virtio-net devices, in order (virtio-mmio slots after the disks').
    pub net: Vec<NetConfig>,
    /// virtio-blk devices, in order (virtio-mmio slots from 0).
    pub disks: Vec<DiskConfig>,
}

/// What is wrong with a path key.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PathProblem {
    Empty,
    Absolute,
    /// A ".." component: files must stay inside the VM folder.
    ParentComponent,
    /// An empty component ("a//b") or a NUL byte.
    Malformed,
}

/// What is wrong with a size.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SizeProblem {
    /// Not `<digits>[K|M|G|T][iB|B]` or an integer.
    Syntax,
    Negative,
    Overflow,
    /// Not a multiple of the required granule (bytes).
    NotMultiple(u64),
    /// Below the minimum (bytes).
    TooSmall(u64),
}

/// Why a `vm.toml` is rejected. `key` names the offending key (`devices[1].base` for a field
/// of the second device); `line` is 1-based.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ConfigError {
    NotUtf8,
    /// A TOML syntax error, or a value of the wrong type (`key` is the key on that line).
    Toml {
        key: Option<String>,
        line: usize,
        column: usize,
        message: String,
    },
    /// A key this version does not know (misspelt?).
    UnknownKey {
        key: String,
        line: usize,
    },
    MissingKernel,
    /// A string that ends up in the device tree holds a NUL character (`\u0000`).
    NulInString {
        key: &'static str,
    },
    /// A required key of a table (a device's `name`, `base` or `size`) is missing.
    MissingKey {
        key: String,
        line: usize,
    },
    /// `name` (or the folder name it defaults to) is empty, too long, does not start with a
    /// letter or digit, or has other characters than `A-Z a-z 0-9 - _ .`.
    BadName {
        value: String,
    },
    BadPath {
        key: String,
        path: String,
        problem: PathProblem,
    },
    BadSize {
        key: String,
        value: String,
        problem: SizeProblem,
    },
    OutOfRange {
        key: String,
        value: i64,
        min: i64,
        max: i64,
    },
    Unaligned {
        key: String,
        value: u64,
        align: u64,
    },
    /// A string key with a value outside its allowed set.
    BadChoice {
        key: &'static str,
        value: String,
        allowed: &'static [&'static str],
    },
    /// `physical_cpus` does not list exactly `cpus` entries.
    PhysicalCpusLength {
        cpus: usize,
        listed: usize,
    },
    /// `spis` is not a multiple of 32.
    SpisNotMultipleOf32 {
        spis: u32,
    },
    /// An IPA range ends past `MAX_IPA` (or overflows).
    OutsideIpaSpace {
        key: String,
    },
    /// Two keys that cannot be given together.
    Exclusive {
        keys: [&'static str; 2],
    },
    /// Two guest-physical ranges overlap (a device and RAM, or two devices).
    Overlap {
        key: String,
        with: String,
    },
    /// A `compatible` string that is empty or holds a NUL.
    BadCompatible {
        key: String,
    },
    /// A string key whose value does not have the required form.
    BadValue {
        key: String,
        value: String,
        expected: &'static str,
    },
    /// More `[[net]]` and `[[disks]]` entries than virtio-mmio slots.
    TooManyVirtioDevices {
        count: usize,
    },
    /// `spis` is too small for the SPI of the last virtio-mmio slot in use.
    SpisTooFewForVirtio {
        spis: u32,
        needed: u32,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::NotUtf8 => write!(f, "vm.toml is not UTF-8"),
            ConfigError::Toml {
                key: Some(key),
                line,
                column,
                message,
            } => {
                write!(f, "vm.toml:{line}:{column}: `{key}`: {message}")
            }
            ConfigError::Toml {
                key: None,
                line,
                column,
                message,
            } => {
                write!(f, "vm.toml:{line}:{column}: {message}")
            }
            ConfigError::UnknownKey { key, line } => {
                write!(
                    f,
                    "vm.toml:{line}: unknown key `{key}` (see docs/ramdisk.md)"
                )
            }
            ConfigError::MissingKernel => write!(f, "vm.toml: `kernel` is required"),
            ConfigError::NulInString { key } => {
                write!(f, "vm.toml: `{key}` contains a NUL character")
            }
            ConfigError::MissingKey { key, line } => {
                write!(f, "vm.toml:{line}: `{key}` is required in this table")
            }
            ConfigError::BadName { value } => write!(
                f,
                "vm.toml: name `{value}` must be 1-{MAX_NAME_LEN} characters of A-Z a-z 0-9 - _ . \
                 starting with a letter or digit"
            ),
            ConfigError::BadPath { key, path, problem } => {
                let why = match problem {
                    PathProblem::Empty => "is empty",
                    PathProblem::Absolute => "must be relative to the VM folder",
                    PathProblem::ParentComponent => "must not contain `..`",
                    PathProblem::Malformed => "has an empty component or a NUL byte",
                };
                write!(f, "vm.toml: `{key}` path `{path}` {why}")
            }
            ConfigError::BadSize {
                key,
                value,
                problem,
            } => {
                write!(f, "vm.toml: `{key}` = {value}: ")?;
                match problem {
                    SizeProblem::Syntax => {
                        write!(f, "not a size (write bytes or e.g. \"512M\", \"1G\")")
                    }
                    SizeProblem::Negative => write!(f, "negative"),
                    SizeProblem::Overflow => write!(f, "too large"),
                    SizeProblem::NotMultiple(g) => write!(f, "not a multiple of {g:#x} bytes"),
                    SizeProblem::TooSmall(m) => write!(f, "below the minimum of {m:#x} bytes"),
                }
            }
            ConfigError::OutOfRange {
                key,
                value,
                min,
                max,
            } => {
                write!(f, "vm.toml: `{key}` = {value} is outside {min}..={max}")
            }
            ConfigError::Unaligned { key, value, align } => {
                write!(f, "vm.toml: `{key}` = {value:#x} is not {align:#x}-aligned")
            }
            ConfigError::BadChoice {
                key,
                value,
                allowed,
            } => {
                write!(
                    f,
                    "vm.toml: `{key}` = \"{value}\", expected one of {allowed:?}"
                )
            }
            ConfigError::PhysicalCpusLength { cpus, listed } => write!(
                f,
                "vm.toml: `physical_cpus` lists {listed} CPUs, `cpus` is {cpus}"
            ),
            ConfigError::SpisNotMultipleOf32 { spis } => {
                write!(f, "vm.toml: `spis` = {spis} is not a multiple of 32")
            }
            ConfigError::Exclusive { keys: [a, b] } => {
                write!(f, "vm.toml: `{a}` and `{b}` cannot be given together")
            }
            ConfigError::OutsideIpaSpace { key } => {
                write!(
                    f,
                    "vm.toml: `{key}` ends beyond the {MAX_IPA:#x} guest address space"
                )
            }
            ConfigError::Overlap { key, with } => {
                write!(f, "vm.toml: `{key}` overlaps `{with}`")
            }
            ConfigError::BadCompatible { key } => {
                write!(f, "vm.toml: `{key}` holds an empty string or a NUL")
            }
            ConfigError::BadValue {
                key,
                value,
                expected,
            } => write!(f, "vm.toml: `{key}` = \"{value}\" is not {expected}"),
            ConfigError::TooManyVirtioDevices { count } => write!(
                f,
                "vm.toml: {count} `[[net]]` and `[[disks]]` entries, at most \
                 {MAX_VIRTIO_DEVICES} (virtio-mmio slots)"
            ),
            ConfigError::SpisTooFewForVirtio { spis, needed } => write!(
                f,
                "vm.toml: `spis` = {spis} is too few for the virtio devices (their last SPI \
                 needs at least {needed})"
            ),
        }
    }
}

/// A size as written: a string with a unit or an integer of bytes.
#[derive(Clone, Debug)]
enum SizeValue {
    Text(String),
    Bytes(i64),
}

impl<'de> Deserialize<'de> for SizeValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = SizeValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size: an integer of bytes or a string such as \"512M\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<SizeValue, E> {
                Ok(SizeValue::Bytes(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<SizeValue, E> {
                Ok(SizeValue::Bytes(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SizeValue, E> {
                Ok(SizeValue::Text(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `vm.toml` as written; [`parse`] validates it into [`VmConfig`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    name: Option<String>,
    kernel: Option<String>,
    initrd: Option<String>,
    dtb: Option<String>,
    bootargs: Option<String>,
    memory: Option<SizeValue>,
    cpus: Option<i64>,
    physical_cpus: Option<Vec<i64>>,
    weight: Option<i64>,
    timeslice_us: Option<i64>,
    ram_base: Option<i64>,
    identity_ram: Option<bool>,
    devices: Option<Vec<RawDevice>>,
    console: Option<String>,
    autostart: Option<bool>,
    on_reset: Option<String>,
    spis: Option<i64>,
    net: Option<Vec<RawNet>>,
    disks: Option<Vec<RawDisk>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNet {
    switch: String,
    mac: Option<String>,
    mtu: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDisk {
    file: String,
    readonly: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    name: String,
    base: i64,
    size: SizeValue,
    ipa: Option<i64>,
    interrupts: Option<Vec<i64>>,
    compatible: Option<Vec<String>>,
}

/// Parses a size: an integer of bytes, or `<digits>` followed by an optional binary unit
/// `K`, `M`, `G` or `T` (either case, optionally followed by `B` or `iB`).
fn parse_size(key: &str, v: &SizeValue) -> Result<u64, ConfigError> {
    let err = |problem| ConfigError::BadSize {
        key: key.to_owned(),
        value: match v {
            SizeValue::Text(s) => alloc::format!("\"{s}\""),
            SizeValue::Bytes(b) => alloc::format!("{b}"),
        },
        problem,
    };
    let text = match v {
        SizeValue::Bytes(b) => return u64::try_from(*b).map_err(|_| err(SizeProblem::Negative)),
        SizeValue::Text(s) => s.trim(),
    };
    if text.starts_with('-') {
        return Err(err(SizeProblem::Negative));
    }
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(err(SizeProblem::Syntax));
    }
    let unit = unit.trim_start();
    let (letter, rest) = match unit.chars().next() {
        None => (None, ""),
        Some(c) => (Some(c.to_ascii_uppercase()), &unit[c.len_utf8()..]),
    };
    let shift = match letter {
        None => 0,
        Some('B') if rest.is_empty() => 0,
        Some('K') => 10,
        Some('M') => 20,
        Some('G') => 30,
        Some('T') => 40,
        _ => return Err(err(SizeProblem::Syntax)),
    };
    if letter.is_some_and(|l| l != 'B') && !matches!(rest, "" | "B" | "b" | "iB" | "ib" | "IB") {
        return Err(err(SizeProblem::Syntax));
    }
    let n: u64 = digits.parse().map_err(|_| err(SizeProblem::Overflow))?;
    n.checked_mul(1u64 << shift)
        .ok_or(err(SizeProblem::Overflow))
}

fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Normalizes a path relative to the VM folder: drops "." components; rejects absolute
/// paths, "..", empty components and NUL bytes.
pub fn normalize_path(key: &str, path: &str) -> Result<String, ConfigError> {
    let err = |problem| ConfigError::BadPath {
        key: key.to_owned(),
        path: path.to_owned(),
        problem,
    };
    if path.is_empty() {
        return Err(err(PathProblem::Empty));
    }
    if path.starts_with('/') {
        return Err(err(PathProblem::Absolute));
    }
    if path.contains('\0') {
        return Err(err(PathProblem::Malformed));
    }
    let mut out = String::new();
    for comp in path.split('/') {
        match comp {
            "." => {}
            ".." => return Err(err(PathProblem::ParentComponent)),
            "" => return Err(err(PathProblem::Malformed)),
            c => {
                if !out.is_empty() {
                    out.push('/');
                }
                out.push_str(c);
            }
        }
    }
    if out.is_empty() {
        return Err(err(PathProblem::Empty));
    }
    Ok(out)
}

fn in_range(key: &str, value: i64, min: i64, max: i64) -> Result<i64, ConfigError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::OutOfRange {
            key: key.to_owned(),
            value,
            min,
            max,
        })
    }
}

fn choice<T: Copy>(
    key: &'static str,
    value: Option<String>,
    table: &[(&'static str, T)],
    allowed: &'static [&'static str],
) -> Result<Option<T>, ConfigError> {
    let Some(value) = value else { return Ok(None) };
    table
        .iter()
        .find(|(s, _)| *s == value)
        .map(|&(_, t)| Some(t))
        .ok_or(ConfigError::BadChoice {
            key,
            value,
            allowed,
        })
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = text.as_bytes().get(..at).unwrap_or_default();
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    (line, at - line_start + 1)
}

/// The key assigned on the line holding byte `at`, if the line reads `key = ...`.
fn key_on_line(text: &str, at: usize) -> Option<String> {
    let at = at.min(text.len());
    let start = text.as_bytes()[..at]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let line = text[start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    bare.then(|| key.to_owned())
}

/// Turns a `toml` error into a [`ConfigError`]: unknown keys become `UnknownKey`.
fn toml_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let at = e.span().map_or(0, |s| s.start);
    let (line, column) = line_col(text, at);
    let message = e.message();
    // serde's `deny_unknown_fields` message: "unknown field `x`, expected one of ...".
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((key, _)) = rest.split_once('`')
    {
        return ConfigError::UnknownKey {
            key: key.to_owned(),
            line,
        };
    }
    if let Some(rest) = message.strip_prefix("missing field `")
        && let Some((key, _)) = rest.split_once('`')
    {
        return ConfigError::MissingKey {
            key: key.to_owned(),
            line,
        };
    }
    ConfigError::Toml {
        key: e.span().and_then(|s| key_on_line(text, s.start)),
        line,
        column,
        message: message.trim_end().to_owned(),
    }
}

/// The offset of the first bracket nested deeper than [`MAX_NESTING`], if any. Counts over
/// the tokens of the lexer `toml` itself uses, so brackets inside strings and comments do not
/// count, and pops only on a matching closer: it never counts less nesting than the parser
/// builds, whatever error recovery the parser does.
fn too_deep(text: &str) -> Option<usize> {
    // open[i]: whether the i-th open bracket is a `[` (else a `{`).
    let mut open = [false; MAX_NESTING];
    let mut depth = 0;
    for token in toml_parser::Source::new(text).lex() {
        let kind = token.kind();
        match kind {
            TokenKind::LeftSquareBracket | TokenKind::LeftCurlyBracket => {
                let Some(slot) = open.get_mut(depth) else {
                    return Some(token.span().start());
                };
                *slot = kind == TokenKind::LeftSquareBracket;
                depth += 1;
            }
            TokenKind::RightSquareBracket | TokenKind::RightCurlyBracket => {
                let square = kind == TokenKind::RightSquareBracket;
                if depth > 0 && open[depth - 1] == square {
                    depth -= 1;
                }
            }
            _ => {}
        }
    }
    None
}

/// Whether the ranges `(start, size)` `a` and `b` share a byte.
pub fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.0.saturating_add(b.1) && b.0 < a.0.saturating_add(a.1)
}

/// Parses and validates the text of a `vm.toml`. `folder` is the VM's folder name, the
/// default `name`.
pub fn parse(text: &[u8], folder: &str) -> Result<VmConfig, ConfigError> {
    let text = core::str::from_utf8(text).map_err(|_| ConfigError::NotUtf8)?;
    if let Some(at) = too_deep(text) {
        let (line, column) = line_col(text, at);
        return Err(ConfigError::Toml {
            key: key_on_line(text, at),
            line,
            column,
            message: alloc::format!("nested deeper than {MAX_NESTING} levels"),
        });
    }
    let raw: RawConfig = toml::from_str(text).map_err(|e| toml_error(text, &e))?;

    let name = raw.name.unwrap_or_else(|| folder.to_owned());
    if !valid_name(&name) {
        return Err(ConfigError::BadName { value: name });
    }
    let kernel = normalize_path("kernel", &raw.kernel.ok_or(ConfigError::MissingKernel)?)?;
    let initrd = raw
        .initrd
        .map(|p| normalize_path("initrd", &p))
        .transpose()?;
    let dtb = raw.dtb.map(|p| normalize_path("dtb", &p)).transpose()?;
    let bootargs = raw.bootargs.unwrap_or_else(|| DEFAULT_BOOTARGS.to_owned());
    if bootargs.contains('\0') {
        return Err(ConfigError::NulInString { key: "bootargs" });
    }

    let memory = match &raw.memory {
        Some(v) => parse_size("memory", v)?,
        None => DEFAULT_MEMORY,
    };
    let bad_memory = |problem| ConfigError::BadSize {
        key: "memory".to_owned(),
        value: alloc::format!("{memory:#x}"),
        problem,
    };
    if memory < MIN_MEMORY {
        return Err(bad_memory(SizeProblem::TooSmall(MIN_MEMORY)));
    }
    if !memory.is_multiple_of(MEMORY_ALIGN) {
        return Err(bad_memory(SizeProblem::NotMultiple(MEMORY_ALIGN)));
    }

    let cpus = in_range("cpus", raw.cpus.unwrap_or(1), 1, MAX_VCPUS as i64)? as usize;
    let physical_cpus = match raw.physical_cpus {
        None => None,
        Some(list) => {
            if list.len() != cpus {
                return Err(ConfigError::PhysicalCpusLength {
                    cpus,
                    listed: list.len(),
                });
            }
            let mut out: Vec<usize> = Vec::with_capacity(list.len());
            for (i, &c) in list.iter().enumerate() {
                let key = alloc::format!("physical_cpus[{i}]");
                out.push(in_range(&key, c, 0, MAX_PHYSICAL_CPU)? as usize);
            }
            Some(out)
        }
    };
    let weight = in_range(
        "weight",
        raw.weight.unwrap_or(i64::from(DEFAULT_WEIGHT)),
        1,
        i64::from(MAX_WEIGHT),
    )? as u32;
    let timeslice_us = in_range(
        "timeslice_us",
        raw.timeslice_us.unwrap_or(i64::from(DEFAULT_TIMESLICE_US)),
        i64::from(MIN_TIMESLICE_US),
        i64::from(MAX_TIMESLICE_US),
    )? as u32;

    let identity_ram = raw.identity_ram.unwrap_or(false);
    if identity_ram && raw.ram_base.is_some() {
        return Err(ConfigError::Exclusive {
            keys: ["ram_base", "identity_ram"],
        });
    }
    let ram_base = raw.ram_base.unwrap_or(DEFAULT_RAM_BASE as i64);
    let ram_base = in_range("ram_base", ram_base, 0, MAX_IPA as i64)? as u64;
    if !ram_base.is_multiple_of(MEMORY_ALIGN) {
        return Err(ConfigError::Unaligned {
            key: "ram_base".to_owned(),
            value: ram_base,
            align: MEMORY_ALIGN,
        });
    }
    if ram_base.checked_add(memory).is_none_or(|end| end > MAX_IPA) {
        return Err(ConfigError::OutsideIpaSpace {
            key: "memory".to_owned(),
        });
    }
    let emulated = (EMULATED.start.as_u64(), EMULATED.size);
    if overlaps((ram_base, memory), emulated) {
        return Err(ConfigError::Overlap {
            key: "memory".to_owned(),
            with: EMULATED_DEVICES.to_owned(),
        });
    }
    let virtio = super::layout::guest_map::VIRTIO_MMIO;
    if overlaps((ram_base, memory), (virtio.start.as_u64(), virtio.size)) {
        return Err(ConfigError::Overlap {
            key: "memory".to_owned(),
            with: VIRTIO_MMIO_SLOTS.to_owned(),
        });
    }

    let spis = in_range(
        "spis",
        raw.spis.unwrap_or(i64::from(DEFAULT_SPIS)),
        i64::from(SPI_GRANULE),
        i64::from(MAX_SPIS),
    )? as u32;
    if !spis.is_multiple_of(SPI_GRANULE) {
        return Err(ConfigError::SpisNotMultipleOf32 { spis });
    }

    let console = choice(
        "console",
        raw.console,
        &[("pl011", Console::Pl011), ("none", Console::None)],
        &["pl011", "none"],
    )?
    .unwrap_or(Console::Pl011);
    let on_reset = choice(
        "on_reset",
        raw.on_reset,
        &[("restart", OnReset::Restart), ("stop", OnReset::Stop)],
        &["restart", "stop"],
    )?
    .unwrap_or(OnReset::Restart);

    let mut devices: Vec<DeviceConfig> = Vec::new();
    for (i, d) in raw.devices.unwrap_or_default().into_iter().enumerate() {
        let key = |field: &str| alloc::format!("devices[{i}].{field}");
        if d.name.is_empty() {
            return Err(ConfigError::BadName { value: d.name });
        }
        let base = in_range(&key("base"), d.base, 0, i64::MAX)? as u64;
        if !base.is_multiple_of(PAGE_SIZE) {
            return Err(ConfigError::Unaligned {
                key: key("base"),
                value: base,
                align: PAGE_SIZE,
            });
        }
        let size = parse_size(&key("size"), &d.size)?;
        if size == 0 || !size.is_multiple_of(PAGE_SIZE) {
            return Err(ConfigError::BadSize {
                key: key("size"),
                value: alloc::format!("{size:#x}"),
                problem: if size == 0 {
                    SizeProblem::TooSmall(PAGE_SIZE)
                } else {
                    SizeProblem::NotMultiple(PAGE_SIZE)
                },
            });
        }
        if base.checked_add(size).is_none() {
            return Err(ConfigError::BadSize {
                key: key("size"),
                value: alloc::format!("{size:#x}"),
                problem: SizeProblem::Overflow,
            });
        }
        let ipa = match d.ipa {
            Some(v) => in_range(&key("ipa"), v, 0, i64::MAX)? as u64,
            None => base,
        };
        if !ipa.is_multiple_of(PAGE_SIZE) {
            return Err(ConfigError::Unaligned {
                key: key("ipa"),
                value: ipa,
                align: PAGE_SIZE,
            });
        }
        if ipa.checked_add(size).is_none_or(|end| end > MAX_IPA) {
            return Err(ConfigError::OutsideIpaSpace { key: key("ipa") });
        }
        if overlaps((ipa, size), emulated) {
            return Err(ConfigError::Overlap {
                key: key("ipa"),
                with: EMULATED_DEVICES.to_owned(),
            });
        }
        // With identity RAM the guest's RAM lies wherever its pages are; the VM is built only
        // where that does not meet a device's IPA range (runtime::vm).
        if !identity_ram && overlaps((ipa, size), (ram_base, memory)) {
            return Err(ConfigError::Overlap {
                key: key("ipa"),
                with: "memory".to_owned(),
            });
        }
        for (j, other) in devices.iter().enumerate() {
            let with = |field: &str| alloc::format!("devices[{j}].{field}");
            if overlaps((ipa, size), (other.ipa.as_u64(), other.size)) {
                return Err(ConfigError::Overlap {
                    key: key("ipa"),
                    with: with("ipa"),
                });
            }
            if overlaps((base, size), (other.base.as_u64(), other.size)) {
                return Err(ConfigError::Overlap {
                    key: key("base"),
                    with: with("base"),
                });
            }
        }
        let mut interrupts = Vec::new();
        for (k, &spi) in d.interrupts.unwrap_or_default().iter().enumerate() {
            let spi_key = alloc::format!("devices[{i}].interrupts[{k}]");
            interrupts.push(in_range(&spi_key, spi, 0, i64::from(spis) - 1)? as u32);
        }
        let compatible = d.compatible.unwrap_or_default();
        if compatible.iter().any(|c| c.is_empty() || c.contains('\0')) {
            return Err(ConfigError::BadCompatible {
                key: key("compatible"),
            });
        }
        devices.push(DeviceConfig {
            name: d.name,
            base: PhysAddr::new(base),
            size,
            ipa: Ipa::new(ipa),
            interrupts,
            compatible,
        });
    }

    let (net, disks) = parse_virtio(&name, raw.net, raw.disks, spis, &devices)?;

    Ok(VmConfig {
        name,
        kernel,
        initrd,
        dtb,
        bootargs,
        memory,
        cpus,
        physical_cpus,
        weight,
        timeslice_us,
        ram_base: Ipa::new(ram_base),
        identity_ram,
        devices,
        console,
        autostart: raw.autostart.unwrap_or(true),
        on_reset,
        spis,
        net,
        disks,
    })
}

/// Validates `[[net]]` and `[[disks]]`, and their virtio-mmio slots (`virtio::assign_slots`)
/// against `spis` and the passthrough devices' interrupts and IPAs.
fn parse_virtio(
    name: &str,
    raw_net: Option<Vec<RawNet>>,
    raw_disks: Option<Vec<RawDisk>>,
    spis: u32,
    devices: &[DeviceConfig],
) -> Result<(Vec<NetConfig>, Vec<DiskConfig>), ConfigError> {
    let mut disks = Vec::new();
    for (i, d) in raw_disks.unwrap_or_default().into_iter().enumerate() {
        disks.push(DiskConfig {
            file: normalize_path(&alloc::format!("disks[{i}].file"), &d.file)?,
            readonly: d.readonly.unwrap_or(false),
        });
    }
    let mut net = Vec::new();
    for (i, n) in raw_net.unwrap_or_default().into_iter().enumerate() {
        let key = |field: &str| alloc::format!("net[{i}].{field}");
        if !valid_name(&n.switch) {
            return Err(ConfigError::BadValue {
                key: key("switch"),
                value: n.switch,
                expected: "1-32 characters of A-Z a-z 0-9 - _ . starting with a letter or digit",
            });
        }
        let mac = match &n.mac {
            None => default_mac(name, i),
            Some(text) => match parse_mac(text) {
                Some(m) if m[0] & 1 == 0 && m != [0; 6] => m,
                _ => {
                    return Err(ConfigError::BadValue {
                        key: key("mac"),
                        value: text.clone(),
                        expected: "a unicast MAC address such as \"52:54:00:12:34:56\"",
                    });
                }
            },
        };
        if net.iter().any(|o: &NetConfig| o.mac == mac) {
            return Err(ConfigError::BadValue {
                key: key("mac"),
                value: alloc::format!("{mac:02x?}"),
                expected: "different from the VM's other ports",
            });
        }
        let mtu = match n.mtu {
            Some(v) => Some(in_range(&key("mtu"), v, MIN_MTU, MAX_MTU)? as u16),
            None => None,
        };
        net.push(NetConfig {
            switch: n.switch,
            mac,
            mtu,
        });
    }
    let count = net.len() + disks.len();
    if count > MAX_VIRTIO_DEVICES {
        return Err(ConfigError::TooManyVirtioDevices { count });
    }
    for (slot, what) in crate::virtio::assign_slots(disks.len(), net.len()) {
        let what = match what {
            crate::virtio::SlotDevice::Disk(i) => alloc::format!("disks[{i}]"),
            crate::virtio::SlotDevice::Net(i) => alloc::format!("net[{i}]"),
        };
        if slot.spi >= spis {
            return Err(ConfigError::SpisTooFewForVirtio {
                spis,
                needed: (slot.spi + 1).next_multiple_of(SPI_GRANULE),
            });
        }
        for (j, d) in devices.iter().enumerate() {
            if let Some(k) = d.interrupts.iter().position(|&s| s == slot.spi) {
                return Err(ConfigError::Overlap {
                    key: alloc::format!("devices[{j}].interrupts[{k}]"),
                    with: alloc::format!("{what} (virtio-mmio SPI {})", slot.spi),
                });
            }
            let window = (slot.base.as_u64(), crate::virtio::MMIO_STRIDE);
            if overlaps((d.ipa.as_u64(), d.size), window) {
                return Err(ConfigError::Overlap {
                    key: alloc::format!("devices[{j}].ipa"),
                    with: alloc::format!("{what} (virtio-mmio {:#x})", slot.base.as_u64()),
                });
            }
        }
    }
    Ok((net, disks))
}

/// The machine's resources left for VMs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MachineResources<'a> {
    /// Physical CPUs that may run vCPUs are `0..cpus`.
    pub cpus: usize,
    /// Bytes of RAM free for guest memory.
    pub free_memory: u64,
    /// Physical ranges no VM may be given as a passthrough device.
    pub host_owned: &'a [HostOwned],
}

/// A physical range the hypervisor keeps for itself: all RAM (its own memory and every VM's),
/// the interrupt controller (always emulated for guests), its console UART. A `[[devices]]`
/// entry overlapping one would break isolation, so the VM is refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct HostOwned {
    pub base: u64,
    pub size: u64,
    /// What it is, for the refusal message ("RAM", "GIC distributor", ...).
    pub what: &'static str,
}

/// Why a VM is refused by [`admit`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Refusal {
    /// An earlier VM has the same name.
    DuplicateName,
    /// `physical_cpus` names a CPU the machine does not have.
    CpuOutOfRange {
        cpu: usize,
        machine_cpus: usize,
    },
    /// `physical_cpus` names a CPU an accepted VM already uses (CPUs not shared).
    CpuTaken {
        cpu: usize,
        by: String,
    },
    /// `physical_cpus` names a CPU twice (CPUs not shared).
    CpuListedTwice {
        cpu: usize,
    },
    /// Not enough unpinned CPUs are left (CPUs not shared), or the machine has none.
    NotEnoughCpus {
        wanted: usize,
        free: usize,
    },
    NotEnoughMemory {
        wanted: u64,
        free: u64,
    },
    /// A passthrough device's host range overlaps one an accepted VM already has.
    DeviceTaken {
        device: String,
        by: String,
    },
    /// A passthrough device's host range overlaps what the hypervisor keeps for itself.
    DeviceHostOwned {
        device: String,
        what: &'static str,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::DuplicateName => write!(f, "another VM has the same name"),
            Refusal::CpuOutOfRange { cpu, machine_cpus } => {
                write!(
                    f,
                    "physical CPU {cpu} does not exist (the machine has {machine_cpus})"
                )
            }
            Refusal::CpuTaken { cpu, by } => write!(f, "physical CPU {cpu} is used by VM {by}"),
            Refusal::CpuListedTwice { cpu } => write!(
                f,
                "`physical_cpus` lists CPU {cpu} twice, and physical CPUs are not shared"
            ),
            Refusal::NotEnoughCpus { wanted, free } => {
                write!(f, "needs {wanted} physical CPUs, {free} are free")
            }
            Refusal::NotEnoughMemory { wanted, free } => {
                write!(f, "needs {wanted:#x} bytes of RAM, {free:#x} are free")
            }
            Refusal::DeviceTaken { device, by } => {
                write!(f, "device {device} is already given to VM {by}")
            }
            Refusal::DeviceHostOwned { device, what } => write!(
                f,
                "device {device} overlaps the hypervisor's {what}, which no VM may be given"
            ),
        }
    }
}

/// The verdict on one VM.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Admission {
    /// Start it; vCPU i runs on `physical_cpus[i]`.
    Accept {
        physical_cpus: Vec<usize>,
    },
    Refuse(Refusal),
}

/// How [`admit_alongside`] hands out physical CPUs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CpuSharing {
    /// A physical CPU runs at most one vCPU: pinned CPUs must be free and distinct, unpinned
    /// VMs get the lowest free CPUs. The rule of the runtime until it schedules vCPUs.
    Exclusive,
    /// vCPUs share physical CPUs: `physical_cpus` is taken as given, unpinned vCPUs go to
    /// the least loaded CPUs ([`crate::sched::placement`]).
    Shared,
}

/// A VM that already runs, and where its vCPUs are.
#[derive(Clone, Copy, Debug)]
pub struct Placed<'a> {
    pub config: &'a VmConfig,
    pub physical_cpus: &'a [usize],
}

/// Decides which VMs fit the machine together, with physical CPUs not shared; the result is
/// parallel to `vms`. See [`admit_alongside`].
pub fn admit(vms: &[&VmConfig], machine: &MachineResources) -> Vec<Admission> {
    admit_alongside(&[], vms, machine, CpuSharing::Exclusive)
}

/// Decides which of `vms` fit the machine beside the VMs already `running`; the result is
/// parallel to `vms`. `machine.free_memory` is what is free now (the running VMs' memory is
/// already gone); the running VMs' names, devices and vCPUs count as taken. VMs with
/// explicit `physical_cpus` are placed first (in order), then the others (in order). Memory
/// and devices go to VMs in the same order. A refused VM takes nothing.
pub fn admit_alongside(
    running: &[Placed],
    vms: &[&VmConfig],
    machine: &MachineResources,
    sharing: CpuSharing,
) -> Vec<Admission> {
    use crate::sched::placement::{CpuLoad, PlacementError};

    let mut verdicts: Vec<Option<Admission>> = alloc::vec![None; vms.len()];
    // cpu_owner[c] = name of a VM that runs on physical CPU c; load: the weight there.
    let mut cpu_owner: Vec<Option<&str>> = alloc::vec![None; machine.cpus];
    let mut load = CpuLoad::new(machine.cpus);
    for r in running {
        for &c in r.physical_cpus {
            if let Some(o) = cpu_owner.get_mut(c) {
                *o = Some(&r.config.name);
            }
        }
        load.commit(r.physical_cpus, r.config.weight);
    }
    let mut free_memory = machine.free_memory;

    for i in 0..vms.len() {
        if running.iter().any(|r| r.config.name == vms[i].name)
            || vms[..i].iter().any(|o| o.name == vms[i].name)
        {
            verdicts[i] = Some(Admission::Refuse(Refusal::DuplicateName));
        }
    }

    // Checks memory and devices against the running VMs and those accepted so far.
    let fits = |i: usize, free_memory: u64, verdicts: &[Option<Admission>]| {
        let vm = vms[i];
        if vm.memory > free_memory {
            return Err(Refusal::NotEnoughMemory {
                wanted: vm.memory,
                free: free_memory,
            });
        }
        let accepted = vms
            .iter()
            .enumerate()
            .filter(|&(j, _)| matches!(verdicts[j], Some(Admission::Accept { .. })))
            .map(|(_, o)| *o)
            .chain(running.iter().map(|r| r.config));
        let taken: Vec<&VmConfig> = accepted.collect();
        for d in &vm.devices {
            let range = (d.base.as_u64(), d.size);
            if let Some(h) = machine
                .host_owned
                .iter()
                .find(|h| overlaps(range, (h.base, h.size)))
            {
                return Err(Refusal::DeviceHostOwned {
                    device: d.name.clone(),
                    what: h.what,
                });
            }
            if let Some(other) = taken.iter().find(|o| {
                o.devices
                    .iter()
                    .any(|od| overlaps(range, (od.base.as_u64(), od.size)))
            }) {
                return Err(Refusal::DeviceTaken {
                    device: d.name.clone(),
                    by: other.name.clone(),
                });
            }
        }
        Ok(())
    };

    for pinned_pass in [true, false] {
        for i in 0..vms.len() {
            if verdicts[i].is_some() || vms[i].physical_cpus.is_some() != pinned_pass {
                continue;
            }
            let vm = vms[i];
            let placement = match sharing {
                CpuSharing::Shared => load
                    .plan(vm.cpus, vm.weight, vm.physical_cpus.as_deref())
                    .map_err(|e| match e {
                        PlacementError::CpuOutOfRange { cpu, machine_cpus } => {
                            Refusal::CpuOutOfRange { cpu, machine_cpus }
                        }
                        PlacementError::NoCpus => Refusal::NotEnoughCpus {
                            wanted: vm.cpus,
                            free: 0,
                        },
                    }),
                CpuSharing::Exclusive => exclusive_cpus(vm, &cpu_owner, machine.cpus),
            };
            let verdict = placement.and_then(|cpus| {
                fits(i, free_memory, &verdicts)?;
                Ok(cpus)
            });
            verdicts[i] = Some(match verdict {
                Ok(cpus) => {
                    for &c in &cpus {
                        if let Some(o) = cpu_owner.get_mut(c) {
                            *o = Some(&vm.name);
                        }
                    }
                    load.commit(&cpus, vm.weight);
                    free_memory -= vm.memory;
                    Admission::Accept {
                        physical_cpus: cpus,
                    }
                }
                Err(r) => Admission::Refuse(r),
            });
        }
    }
    verdicts
        .into_iter()
        .map(|v| v.unwrap_or(Admission::Refuse(Refusal::DuplicateName)))
        .collect()
}

/// Physical CPUs for `vm` when no CPU is shared: its pins if they exist, are distinct and
/// free, else the lowest free CPUs.
fn exclusive_cpus(
    vm: &VmConfig,
    cpu_owner: &[Option<&str>],
    machine_cpus: usize,
) -> Result<Vec<usize>, Refusal> {
    match &vm.physical_cpus {
        Some(list) => {
            for (k, &c) in list.iter().enumerate() {
                match cpu_owner.get(c) {
                    None => {
                        return Err(Refusal::CpuOutOfRange {
                            cpu: c,
                            machine_cpus,
                        });
                    }
                    Some(Some(o)) => {
                        return Err(Refusal::CpuTaken {
                            cpu: c,
                            by: (*o).to_owned(),
                        });
                    }
                    Some(None) if list[..k].contains(&c) => {
                        return Err(Refusal::CpuListedTwice { cpu: c });
                    }
                    Some(None) => {}
                }
            }
            Ok(list.clone())
        }
        None => {
            let free: Vec<usize> = (0..machine_cpus)
                .filter(|&c| cpu_owner[c].is_none())
                .collect();
            if free.len() < vm.cpus {
                Err(Refusal::NotEnoughCpus {
                    wanted: vm.cpus,
                    free: free.len(),
                })
            } else {
                Ok(free[..vm.cpus].to_vec())
            }
        }
    }
}

#[cfg(test)]
mod tests;
