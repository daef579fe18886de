//! The machine description: what the hypervisor learns from the devicetree blob (DTB) it is
//! handed in x0 at boot, checked and turned into a [`Platform`] value.
//!
//! This module owns the reading of the *host* DTB only (the guest's DTB is `crate::guest`'s
//! business). It reads memory, reserved ranges, the console UART, the GIC, the architected
//! timer's interrupts, the CPUs and their enable method, PSCI, and the hypervisor's own command
//! line; it computes the free RAM the page allocator may use ([`Platform::free_ram`]). It never
//! touches the hardware it describes.
//!
//! A DTB is input from outside: [`Platform::parse`] returns a [`PlatformError`] for anything it
//! cannot use and never panics. The blob is first checked structurally ([`blob`]) so that the
//! `fdt` crate, which trusts its input, is only handed blobs it can walk safely.
//!
//! Device addresses are translated to CPU physical addresses through the `ranges` of every
//! parent bus (the Raspberry Pi 4's `/soc` maps bus address 0x7e000000 to 0xfe000000).
#![forbid(unsafe_code)]

mod blob;
pub mod early_console;
pub mod mini_uart;
pub mod spin_table;
mod tree;

#[cfg(test)]
mod tests;

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use fdt::Fdt;

use crate::addr::{PAGE_SIZE, PhysAddr, Range};

pub use blob::Malformed;

/// Why a DTB cannot be used. Each variant is fatal at boot; the caller prints it on whatever
/// early console it has and stops.
#[derive(Clone, PartialEq, Debug)]
pub enum PlatformError {
    /// The `fdt` crate refused the blob (bad magic, or shorter than its `totalsize`).
    Fdt(fdt::FdtError),
    /// The blob's structure is broken (offsets outside the blob, bad tokens, ...).
    Malformed(Malformed),
    /// A property has the wrong size or an unusable value.
    BadProperty {
        node: String,
        property: &'static str,
    },
    /// A device's `reg` cannot be translated to a CPU physical address through its parents'
    /// `ranges`.
    Untranslatable { node: String },
    /// No enabled `device_type = "memory"` node with a non-empty range.
    NoMemory,
    /// Two memory ranges overlap.
    OverlappingMemory {
        a: Range<PhysAddr>,
        b: Range<PhysAddr>,
    },
    /// Neither `/chosen/stdout-path` nor any enabled node names a UART we can drive.
    NoUart,
    /// No enabled GICv2 or GICv3 node.
    NoGic,
    /// A GIC node lacks the registers the hypervisor needs (e.g. a GICv2 without GICH/GICV).
    GicIncomplete(&'static str),
    /// No `arm,armv8-timer` node with at least four interrupts.
    NoTimer,
    /// No CPU node under `/cpus`.
    NoCpus,
    /// More CPUs than the hypervisor was built for.
    TooManyCpus { found: usize, max: usize },
    /// Two CPU nodes have the same MPIDR.
    DuplicateMpidr(u64),
    /// `/psci` has no usable `method`.
    BadPsciMethod,
    /// The initrd from `/chosen` overlaps the hypervisor image.
    InitrdOverlapsImage,
    /// The initrd from `/chosen` is not inside one RAM range.
    InitrdOutsideRam,
}

impl From<fdt::FdtError> for PlatformError {
    fn from(e: fdt::FdtError) -> Self {
        PlatformError::Fdt(e)
    }
}

impl fmt::Display for PlatformError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlatformError::Fdt(e) => write!(f, "invalid DTB: {e}"),
            PlatformError::Malformed(m) => write!(f, "malformed DTB: {m}"),
            PlatformError::BadProperty { node, property } => {
                write!(f, "DTB node {node}: bad property {property}")
            }
            PlatformError::Untranslatable { node } => {
                write!(
                    f,
                    "DTB node {node}: address not translatable through ranges"
                )
            }
            PlatformError::NoMemory => write!(f, "DTB describes no memory"),
            PlatformError::OverlappingMemory { a, b } => write!(
                f,
                "memory ranges overlap: {}+{:#x} and {}+{:#x}",
                a.start, a.size, b.start, b.size
            ),
            PlatformError::NoUart => write!(f, "no usable UART (pl011 or bcm2835 mini UART)"),
            PlatformError::NoGic => write!(f, "no GICv2/GICv3 interrupt controller"),
            PlatformError::GicIncomplete(what) => write!(f, "GIC node incomplete: {what}"),
            PlatformError::NoTimer => write!(f, "no arm,armv8-timer node"),
            PlatformError::NoCpus => write!(f, "no CPU nodes"),
            PlatformError::TooManyCpus { found, max } => {
                write!(f, "{found} CPUs, more than the supported {max}")
            }
            PlatformError::DuplicateMpidr(m) => write!(f, "two CPUs with MPIDR {m:#x}"),
            PlatformError::BadPsciMethod => write!(f, "/psci method is neither smc nor hvc"),
            PlatformError::InitrdOverlapsImage => write!(f, "initrd overlaps the hypervisor image"),
            PlatformError::InitrdOutsideRam => write!(f, "initrd lies outside RAM"),
        }
    }
}

/// What the caller knows that the DTB does not say.
#[derive(Clone, Copy, Debug)]
pub struct BootParams {
    /// Physical address the DTB was loaded at (x0 at entry).
    pub dtb_base: PhysAddr,
    /// Physical range of the hypervisor image (text, data, bss, boot stacks).
    pub image: Range<PhysAddr>,
    /// The most CPUs the hypervisor supports.
    pub max_cpus: usize,
}

/// Why a range of RAM is not free.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ReservedKind {
    /// A `/memreserve/` entry of the blob header.
    MemReserve,
    /// A child of `/reserved-memory` with a `reg`; `no_map` when it must not even be mapped
    /// (Linux Documentation/devicetree/bindings/reserved-memory/reserved-memory.yaml).
    ReservedMemory { no_map: bool },
    /// The DTB itself (`dtb_base` + the header's `totalsize`).
    Dtb,
    /// The hypervisor image.
    Image,
    /// The initial ramdisk named in `/chosen`.
    Initrd,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Reserved {
    pub range: Range<PhysAddr>,
    pub kind: ReservedKind,
}

/// The UART models the hypervisor can drive as its console.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum UartKind {
    /// Arm PrimeCell PL011 ("arm,pl011").
    Pl011,
    /// The BCM2835 auxiliary "mini UART" ("brcm,bcm2835-aux-uart"), a 16550-like register set
    /// with 32-bit registers (BCM2835 ARM Peripherals, §2.2).
    Bcm2835Aux,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Uart {
    pub kind: UartKind,
    /// CPU physical address of the registers (after `ranges` translation).
    pub base: PhysAddr,
    pub size: u64,
    /// The UART's interrupt as a GIC INTID, when it has one the parser understands.
    pub intid: Option<u32>,
    /// Path of the node, for messages.
    pub path: String,
    /// A PL011's reference clock (UARTCLK) in Hz, from which the console's 115200 baud is
    /// divided: the `clock-frequency` of a `fixed-clock` that the node's first `clocks` entry
    /// names, else [`RPI4_PL011_CLOCK_HZ`] on a BCM2711 (whose UART clock comes from a clock
    /// controller the parser does not model). `None` otherwise, and for the mini UART, whose
    /// divisor the firmware sets from the VPU core clock (see [`mini_uart`]).
    pub clock_hz: Option<u32>,
}

/// The Raspberry Pi 4 PL011's UARTCLK: the firmware sets the UART clock to 48 MHz
/// (`init_uart_clock`, the default of current firmware), whatever the core clock does.
pub const RPI4_PL011_CLOCK_HZ: u32 = 48_000_000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum GicVersion {
    V2,
    V3,
}

/// The GIC's register frames and the maintenance interrupt, all CPU physical.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Gic {
    pub version: GicVersion,
    /// Distributor.
    pub gicd: Range<PhysAddr>,
    /// GICv3 redistributor regions (`#redistributor-regions`, default 1); empty for GICv2.
    pub gicr: Vec<Range<PhysAddr>>,
    /// CPU interface (GICv2; a GICv3 with legacy support may list it too).
    pub gicc: Option<Range<PhysAddr>>,
    /// Virtual interface control (hypervisor) frame.
    pub gich: Option<Range<PhysAddr>>,
    /// Virtual CPU interface frame.
    pub gicv: Option<Range<PhysAddr>>,
    /// GICv3 ITS ("arm,gic-v3-its" child), if any.
    pub its: Option<Range<PhysAddr>>,
    /// The virtual interface maintenance interrupt (a PPI, usually INTID 25).
    pub maintenance_intid: Option<u32>,
}

/// The architected timer's interrupts as INTIDs, in the order of the "arm,armv8-timer"
/// binding: secure physical, non-secure physical, virtual, hypervisor physical, and the
/// hypervisor virtual timer when listed (FEAT_VHE).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TimerIrqs {
    pub secure_phys: u32,
    pub nonsecure_phys: u32,
    pub virt: u32,
    pub hyp_phys: u32,
    pub hyp_virt: Option<u32>,
}

/// How a secondary CPU is started (Linux Documentation/arch/arm64/booting.rst §5).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum EnableMethod {
    /// PSCI CPU_ON.
    Psci,
    /// Spin table: write the entry point to `release_addr`, then `sev`.
    SpinTable { release_addr: PhysAddr },
    /// No enable-method (typically the boot CPU).
    None,
    /// A method the hypervisor does not implement.
    Other(String),
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Cpu {
    /// The affinity fields of MPIDR_EL1 from `reg` (Aff3 in [39:32], Aff2..Aff0 in [23:0]).
    pub mpidr: u64,
    pub enable_method: EnableMethod,
}

/// How PSCI calls reach the firmware (SMC Calling Convention conduit).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Conduit {
    Smc,
    Hvc,
}

/// The firmware's PSCI, from `/psci` (Linux Documentation/devicetree/bindings/arm/psci.yaml).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Psci {
    pub method: Conduit,
    /// True when the node is compatible with "arm,psci-0.2" or later, i.e. PSCI_VERSION and the
    /// standard function IDs can be used; false for a 0.1-only node.
    pub v0_2_or_later: bool,
    /// Function IDs a PSCI 0.1 node lists (`cpu_suspend`, `cpu_off`, `cpu_on`, `migrate`).
    pub cpu_suspend: Option<u32>,
    pub cpu_off: Option<u32>,
    pub cpu_on: Option<u32>,
    pub migrate: Option<u32>,
}

/// Options for the hypervisor itself, from `/chosen/bootargs`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct HvOptions {
    /// `loglevel=error|warn|info|debug|trace|off`; the last valid one wins, unknown values are
    /// ignored.
    pub loglevel: Option<log::LevelFilter>,
}

impl HvOptions {
    /// Parses a kernel-style command line (whitespace-separated `key=value` words).
    pub fn parse(bootargs: &str) -> Self {
        let mut opts = HvOptions::default();
        for word in bootargs.split_ascii_whitespace() {
            if let Some(v) = word.strip_prefix("loglevel=") {
                let level = match v {
                    "off" => Some(log::LevelFilter::Off),
                    "error" => Some(log::LevelFilter::Error),
                    "warn" => Some(log::LevelFilter::Warn),
                    "info" => Some(log::LevelFilter::Info),
                    "debug" => Some(log::LevelFilter::Debug),
                    "trace" => Some(log::LevelFilter::Trace),
                    _ => None,
                };
                if level.is_some() {
                    opts.loglevel = level;
                }
            }
        }
        opts
    }
}

/// Everything the hypervisor takes from the host DTB.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Platform {
    /// `/model`, or the first root `compatible` string when there is no model.
    pub model: String,
    /// The root `compatible` list.
    pub compatible: Vec<String>,
    /// RAM, sorted by address, non-overlapping, non-empty ranges.
    pub memory: Vec<Range<PhysAddr>>,
    /// Everything inside or outside RAM that must not be handed out, sorted by address.
    pub reserved: Vec<Reserved>,
    pub console: Uart,
    pub gic: Gic,
    pub timer: TimerIrqs,
    /// The PMU's overflow interrupt when the DTB's `arm,armv8-pmuv3` node gives one PPI (as
    /// on QEMU virt: INTID 23); `None` without a PMU node, or for a PMU wired to one SPI per
    /// CPU (the Raspberry Pi 4), which a guest's vCPU cannot be given as its own.
    pub pmu_intid: Option<u32>,
    /// CPUs in DTB order.
    pub cpus: Vec<Cpu>,
    /// The header's `boot_cpuid_phys`.
    pub boot_cpuid: u32,
    pub psci: Option<Psci>,
    /// `/chosen/bootargs` (empty when absent).
    pub bootargs: String,
    pub options: HvOptions,
    pub initrd: Option<Range<PhysAddr>>,
    /// Where the DTB itself lies (`dtb_base`, header `totalsize`).
    pub dtb: Range<PhysAddr>,
}

const PL011_COMPATIBLE: &[&str] = &["arm,pl011"];
const FIXED_CLOCK_COMPATIBLE: &[&str] = &["fixed-clock"];
/// Root `compatible` of the BCM2711 boards (Pi 4 Model B, Pi 400, CM4).
const BCM2711_COMPATIBLE: &[&str] = &["brcm,bcm2711"];
const MINI_UART_COMPATIBLE: &[&str] = &["brcm,bcm2835-aux-uart"];
const GICV2_COMPATIBLE: &[&str] = &[
    "arm,gic-400",
    "arm,cortex-a15-gic",
    "arm,cortex-a9-gic",
    "arm,cortex-a7-gic",
];
const GICV3_COMPATIBLE: &[&str] = &["arm,gic-v3"];
const ITS_COMPATIBLE: &[&str] = &["arm,gic-v3-its"];
const TIMER_COMPATIBLE: &[&str] = &["arm,armv8-timer"];
/// PMUv3 nodes: the generic name and the per-core names boards use, often without the generic
/// fallback (Linux's `armv8_pmu_of_device_ids`, drivers/perf/arm_pmuv3.c).
const PMU_COMPATIBLE: &[&str] = &[
    "arm,armv8-pmuv3",
    "arm,cortex-a34-pmu",
    "arm,cortex-a35-pmu",
    "arm,cortex-a53-pmu",
    "arm,cortex-a55-pmu",
    "arm,cortex-a57-pmu",
    "arm,cortex-a65-pmu",
    "arm,cortex-a72-pmu",
    "arm,cortex-a73-pmu",
    "arm,cortex-a75-pmu",
    "arm,cortex-a76-pmu",
    "arm,cortex-a77-pmu",
    "arm,cortex-a78-pmu",
    "arm,cortex-a510-pmu",
    "arm,cortex-a520-pmu",
    "arm,cortex-a710-pmu",
    "arm,cortex-a715-pmu",
    "arm,cortex-a720-pmu",
    "arm,cortex-x1-pmu",
    "arm,cortex-x2-pmu",
    "arm,cortex-x3-pmu",
    "arm,cortex-x4-pmu",
    "arm,neoverse-e1-pmu",
    "arm,neoverse-n1-pmu",
    "arm,neoverse-n2-pmu",
    "arm,neoverse-v1-pmu",
    "arm,neoverse-v2-pmu",
];

impl Platform {
    /// Reads and checks the DTB `blob` (the bytes at `params.dtb_base`; the slice may be longer
    /// than the blob's `totalsize`).
    pub fn parse(blob: &[u8], params: &BootParams) -> Result<Self, PlatformError> {
        Fdt::new(blob)?;
        let header = blob::header(blob).map_err(PlatformError::Malformed)?;
        let walkable = walkable(blob)?;
        let fdt = Fdt::new(&walkable)?;
        let root = tree::root(&fdt)?;

        let compatible: Vec<String> = tree::prop_strings(root, "compatible")
            .map(|s| s.to_string())
            .collect();
        let model = tree::prop_str(root, "model")
            .map(|s| s.to_string())
            .or_else(|| compatible.first().cloned())
            .unwrap_or_default();

        let memory = parse_memory(&fdt)?;
        let chosen = tree::lookup(&fdt, "/chosen").and_then(|c| c.last().copied());
        let bootargs = chosen
            .and_then(|c| tree::prop_str(c, "bootargs"))
            .unwrap_or("")
            .to_string();
        let initrd = match chosen {
            Some(c) => parse_initrd(c)?,
            None => None,
        };
        if let Some(rd) = initrd {
            if rd.overlaps(&params.image) {
                return Err(PlatformError::InitrdOverlapsImage);
            }
            if !memory.iter().any(|m| m.contains_range(rd.start, rd.size)) {
                return Err(PlatformError::InitrdOutsideRam);
            }
        }

        let dtb = Range::new(params.dtb_base, u64::from(header.totalsize));
        let mut reserved = parse_reserved(&fdt, blob, &header)?;
        reserved.push(Reserved {
            range: dtb,
            kind: ReservedKind::Dtb,
        });
        reserved.push(Reserved {
            range: params.image,
            kind: ReservedKind::Image,
        });
        if let Some(rd) = initrd {
            reserved.push(Reserved {
                range: rd,
                kind: ReservedKind::Initrd,
            });
        }
        reserved.retain(|r| r.range.size != 0);
        reserved.sort_by_key(|r| (r.range.start, r.range.size));

        let console = parse_console(&fdt, chosen)?;
        let gic = parse_gic(&fdt)?;
        let timer = parse_timer(&fdt)?;
        let pmu_intid = parse_pmu(&fdt);
        let cpus = parse_cpus(&fdt, params.max_cpus)?;
        let psci = parse_psci(&fdt)?;

        Ok(Platform {
            model,
            compatible,
            memory,
            reserved,
            console,
            gic,
            timer,
            pmu_intid,
            cpus,
            boot_cpuid: header.boot_cpuid_phys,
            psci,
            options: HvOptions::parse(&bootargs),
            bootargs,
            initrd,
            dtb,
        })
    }

    /// RAM the page allocator may hand out: [`Self::memory`] minus every [`Self::reserved`]
    /// range, each piece shrunk to whole pages, sorted, adjacent pieces merged.
    pub fn free_ram(&self) -> Vec<Range<PhysAddr>> {
        let holes: Vec<Range<PhysAddr>> = self.reserved.iter().map(|r| r.range).collect();
        free_ranges(&self.memory, &holes)
    }
}

/// The blob in a form the `fdt` crate can walk safely: checked structurally ([`blob::check`]),
/// with FDT_NOP tokens removed when it has any (QEMU's raspi4b deletes nodes with them).
fn walkable(blob: &[u8]) -> Result<alloc::borrow::Cow<'_, [u8]>, PlatformError> {
    Fdt::new(blob)?;
    if blob::check(blob).map_err(PlatformError::Malformed)? {
        let cleaned = blob::without_nops(blob).map_err(PlatformError::Malformed)?;
        blob::check(&cleaned).map_err(PlatformError::Malformed)?;
        Ok(alloc::borrow::Cow::Owned(cleaned))
    } else {
        Ok(alloc::borrow::Cow::Borrowed(blob))
    }
}

/// `memory` minus `holes`, each resulting piece shrunk inwards to [`PAGE_SIZE`] boundaries,
/// empty pieces dropped, the result sorted and adjacent pieces merged. Inputs need not be
/// sorted or aligned; holes may overlap each other and extend outside memory.
pub fn free_ranges(memory: &[Range<PhysAddr>], holes: &[Range<PhysAddr>]) -> Vec<Range<PhysAddr>> {
    // Work on [start, end) pairs; `end` saturates at the top of the address space.
    let mut holes: Vec<(u64, u64)> = holes
        .iter()
        .filter(|h| h.size != 0)
        .map(|h| (h.start.as_u64(), h.end().as_u64()))
        .collect();
    holes.sort_unstable();
    let mut mem: Vec<(u64, u64)> = memory
        .iter()
        .filter(|m| m.size != 0)
        .map(|m| (m.start.as_u64(), m.end().as_u64()))
        .collect();
    mem.sort_unstable();

    let mut pieces: Vec<(u64, u64)> = Vec::new();
    for (mut start, end) in mem {
        for &(hs, he) in &holes {
            if he <= start || hs >= end {
                continue;
            }
            if hs > start {
                pieces.push((start, hs));
            }
            start = start.max(he);
            if start >= end {
                break;
            }
        }
        if start < end {
            pieces.push((start, end));
        }
    }

    let mut out: Vec<Range<PhysAddr>> = Vec::new();
    for (s, e) in pieces {
        let Some(s) = PhysAddr::new(s).checked_align_up(PAGE_SIZE) else {
            continue;
        };
        let e = PhysAddr::new(e).align_down(PAGE_SIZE);
        if s >= e {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.end() == s => last.size += e - s,
            _ => out.push(Range::new(s, e - s)),
        }
    }
    out
}

fn parse_memory(fdt: &Fdt<'_>) -> Result<Vec<Range<PhysAddr>>, PlatformError> {
    let mut memory = Vec::new();
    let mut err = None;
    tree::walk(fdt, &mut |chain| {
        let Some(&node) = chain.last() else {
            return true;
        };
        if tree::prop_str(node, "device_type") != Some("memory") || !tree::is_enabled(node) {
            return true;
        }
        match tree::reg(chain) {
            Ok(regs) => {
                memory.extend(
                    regs.into_iter()
                        .filter(|&(_, size)| size != 0)
                        .map(|(a, s)| Range::new(PhysAddr::new(a), s)),
                );
                true
            }
            Err(e) => {
                err = Some(e);
                false
            }
        }
    })?;
    if let Some(e) = err {
        return Err(e);
    }
    if memory.is_empty() {
        return Err(PlatformError::NoMemory);
    }
    memory.sort_by_key(|r: &Range<PhysAddr>| r.start);
    for pair in memory.windows(2) {
        if pair[0].overlaps(&pair[1]) || pair[0].start.checked_add(pair[0].size).is_none() {
            return Err(PlatformError::OverlappingMemory {
                a: pair[0],
                b: pair[1],
            });
        }
    }
    Ok(memory)
}

fn parse_initrd(chosen: tree::Node<'_, '_>) -> Result<Option<Range<PhysAddr>>, PlatformError> {
    let start = tree::prop_u32_or_u64(chosen, "linux,initrd-start")?;
    let end = tree::prop_u32_or_u64(chosen, "linux,initrd-end")?;
    match (start, end) {
        (Some(s), Some(e)) if e > s => Ok(Some(Range::new(PhysAddr::new(s), e - s))),
        (Some(s), Some(e)) if e == s => Ok(None),
        (None, None) => Ok(None),
        _ => Err(tree::bad(chosen, "linux,initrd-end")),
    }
}

fn parse_reserved(
    fdt: &Fdt<'_>,
    blob: &[u8],
    header: &blob::Header,
) -> Result<Vec<Reserved>, PlatformError> {
    let mut out: Vec<Reserved> = blob::reservations(blob, header)
        .map_err(PlatformError::Malformed)?
        .into_iter()
        .filter(|&(_, size)| size != 0)
        .map(|(a, s)| Reserved {
            range: Range::new(PhysAddr::new(a), s),
            kind: ReservedKind::MemReserve,
        })
        .collect();
    if let Some(chain) = tree::lookup(fdt, "/reserved-memory") {
        let Some(&parent) = chain.last() else {
            return Ok(out);
        };
        for child in parent.children() {
            if !tree::is_enabled(child) {
                continue;
            }
            let mut c = chain.clone();
            c.push(child);
            let no_map = tree::has_prop(child, "no-map");
            for (a, s) in tree::reg(&c)? {
                out.push(Reserved {
                    range: Range::new(PhysAddr::new(a), s),
                    kind: ReservedKind::ReservedMemory { no_map },
                });
            }
        }
    }
    Ok(out)
}

fn node_path(chain: &[tree::Node<'_, '_>]) -> String {
    let mut path = String::new();
    for n in chain.iter().skip(1) {
        path.push('/');
        path.push_str(n.name);
    }
    if path.is_empty() {
        path.push('/');
    }
    path
}

/// The console: the node `/chosen/stdout-path` (or the older `linux,stdout-path`) names when it
/// is an enabled UART we drive, else the first enabled PL011.
fn parse_console(fdt: &Fdt<'_>, chosen: Option<tree::Node<'_, '_>>) -> Result<Uart, PlatformError> {
    let uart_of = |chain: &[tree::Node<'_, '_>]| -> Result<Option<Uart>, PlatformError> {
        let Some(&node) = chain.last() else {
            return Ok(None);
        };
        if !tree::is_enabled(node) {
            return Ok(None);
        }
        let kind = if tree::is_compatible(node, PL011_COMPATIBLE) {
            UartKind::Pl011
        } else if tree::is_compatible(node, MINI_UART_COMPATIBLE) {
            UartKind::Bcm2835Aux
        } else {
            return Ok(None);
        };
        let Some(&(base, size)) = tree::reg(chain)?.first() else {
            return Err(tree::bad(node, "reg"));
        };
        // The interrupt is a convenience (console input); a UART whose interrupt cannot be
        // decoded is still usable by polling.
        let intid = tree::gic_interrupts(fdt, chain)
            .ok()
            .and_then(|v| v.first().copied());
        let clock_hz = match kind {
            UartKind::Pl011 => fixed_clock_hz(fdt, node).or_else(|| {
                tree::root(fdt)
                    .is_ok_and(|root| tree::is_compatible(root, BCM2711_COMPATIBLE))
                    .then_some(RPI4_PL011_CLOCK_HZ)
            }),
            UartKind::Bcm2835Aux => None,
        };
        Ok(Some(Uart {
            kind,
            base: PhysAddr::new(base),
            size,
            intid,
            path: node_path(chain),
            clock_hz,
        }))
    };

    let stdout = chosen
        .and_then(|c| tree::prop_str(c, "stdout-path").or(tree::prop_str(c, "linux,stdout-path")))
        .and_then(|path| tree::resolve_path(fdt, path));
    if let Some(chain) = stdout
        && let Some(uart) = uart_of(&chain)?
    {
        return Ok(uart);
    }
    let mut found = None;
    let mut err = None;
    tree::walk(fdt, &mut |chain| {
        let Some(&node) = chain.last() else {
            return true;
        };
        if !tree::is_compatible(node, PL011_COMPATIBLE) {
            return true;
        }
        match uart_of(chain) {
            Ok(Some(u)) => {
                found = Some(u);
                false
            }
            Ok(None) => true,
            Err(e) => {
                err = Some(e);
                false
            }
        }
    })?;
    if let Some(e) = err {
        return Err(e);
    }
    found.ok_or(PlatformError::NoUart)
}

/// The frequency of the clock a device's first `clocks` entry names, when that is a
/// `fixed-clock` (Linux Documentation/devicetree/bindings/clock/fixed-clock.yaml:
/// `#clock-cells = <0>`, so the entry is the phandle alone) with a one-cell `clock-frequency`.
/// `None` for clock controllers, whose entries carry a specifier the parser does not interpret.
fn fixed_clock_hz(fdt: &Fdt<'_>, node: tree::Node<'_, '_>) -> Option<u32> {
    let phandle = tree::prop(node, "clocks")
        .and_then(|v| v.get(..4))
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))?;
    let clock = tree::by_phandle(fdt, phandle)?;
    if !tree::is_compatible(clock, FIXED_CLOCK_COMPATIBLE) {
        return None;
    }
    tree::prop_u32_opt(clock, "clock-frequency").filter(|&hz| hz != 0)
}

/// The chain of the first enabled node compatible with one of `compatible`.
fn find_compatible<'b, 'a>(
    fdt: &'b Fdt<'a>,
    compatible: &[&str],
) -> Result<Option<Vec<tree::Node<'b, 'a>>>, PlatformError> {
    let mut found = None;
    tree::walk(fdt, &mut |chain| match chain.last() {
        Some(&n) if tree::is_enabled(n) && tree::is_compatible(n, compatible) => {
            found = Some(chain.to_vec());
            false
        }
        _ => true,
    })?;
    Ok(found)
}

fn phys_range((a, s): (u64, u64)) -> Range<PhysAddr> {
    Range::new(PhysAddr::new(a), s)
}

/// The GIC (Linux Documentation/devicetree/bindings/interrupt-controller/arm,gic.yaml and
/// arm,gic-v3.yaml): GICv2 `reg` = GICD, GICC, GICH, GICV; GICv3 `reg` = GICD,
/// `#redistributor-regions` GICR regions, then optional GICC, GICH, GICV.
fn parse_gic(fdt: &Fdt<'_>) -> Result<Gic, PlatformError> {
    let (version, chain) = if let Some(c) = find_compatible(fdt, GICV3_COMPATIBLE)? {
        (GicVersion::V3, c)
    } else if let Some(c) = find_compatible(fdt, GICV2_COMPATIBLE)? {
        (GicVersion::V2, c)
    } else {
        return Err(PlatformError::NoGic);
    };
    let Some(&node) = chain.last() else {
        return Err(PlatformError::NoGic);
    };
    let regs: Vec<Range<PhysAddr>> = tree::reg(&chain)?.into_iter().map(phys_range).collect();
    let maintenance_intid = tree::gic_interrupts(fdt, &chain)?.first().copied();
    let gicd = *regs
        .first()
        .ok_or(PlatformError::GicIncomplete("no GICD region"))?;
    let gic = match version {
        GicVersion::V2 => {
            if regs.len() < 4 {
                return Err(PlatformError::GicIncomplete(
                    "GICv2 without GICH/GICV (no virtualization extensions)",
                ));
            }
            Gic {
                version,
                gicd,
                gicr: Vec::new(),
                gicc: Some(regs[1]),
                gich: Some(regs[2]),
                gicv: Some(regs[3]),
                its: None,
                maintenance_intid,
            }
        }
        GicVersion::V3 => {
            let n = tree::prop_u32(node, "#redistributor-regions")?.unwrap_or(1) as usize;
            if n == 0 || regs.len() < 1 + n {
                return Err(PlatformError::GicIncomplete(
                    "fewer GICR regions than declared",
                ));
            }
            let mut its = None;
            for child in node.children() {
                if tree::is_enabled(child) && tree::is_compatible(child, ITS_COMPATIBLE) {
                    let mut c = chain.clone();
                    c.push(child);
                    its = tree::reg(&c)?.first().copied().map(phys_range);
                    break;
                }
            }
            Gic {
                version,
                gicd,
                gicr: regs[1..1 + n].to_vec(),
                gicc: regs.get(1 + n).copied(),
                gich: regs.get(2 + n).copied(),
                gicv: regs.get(3 + n).copied(),
                its,
                maintenance_intid,
            }
        }
    };
    Ok(gic)
}

fn parse_timer(fdt: &Fdt<'_>) -> Result<TimerIrqs, PlatformError> {
    let chain = find_compatible(fdt, TIMER_COMPATIBLE)?.ok_or(PlatformError::NoTimer)?;
    let irqs = tree::gic_interrupts(fdt, &chain)?;
    match irqs[..] {
        [secure_phys, nonsecure_phys, virt, hyp_phys, ref rest @ ..] => Ok(TimerIrqs {
            secure_phys,
            nonsecure_phys,
            virt,
            hyp_phys,
            hyp_virt: rest.first().copied(),
        }),
        _ => Err(PlatformError::NoTimer),
    }
}

/// The PMU's interrupt (Linux `perf/arm,pmu.yaml`: one PPI, or one SPI per CPU) when it is
/// a single PPI. The PMU is optional: a node that cannot be read counts as none.
fn parse_pmu(fdt: &Fdt<'_>) -> Option<u32> {
    let chain = find_compatible(fdt, PMU_COMPATIBLE).ok()??;
    match tree::gic_interrupts(fdt, &chain).ok()?[..] {
        [intid] if (16..32).contains(&intid) => Some(intid),
        _ => None,
    }
}

/// CPU nodes: children of `/cpus` with `device_type = "cpu"` (Devicetree Specification v0.4
/// §3.7/§3.8). `reg` holds the MPIDR affinity fields in one or two cells.
fn parse_cpus(fdt: &Fdt<'_>, max: usize) -> Result<Vec<Cpu>, PlatformError> {
    let chain = tree::lookup(fdt, "/cpus").ok_or(PlatformError::NoCpus)?;
    let Some(&cpus_node) = chain.last() else {
        return Err(PlatformError::NoCpus);
    };
    let default_method = tree::prop_str(cpus_node, "enable-method");
    let mut out: Vec<Cpu> = Vec::new();
    for child in cpus_node.children() {
        if tree::prop_str(child, "device_type") != Some("cpu") {
            continue;
        }
        if matches!(tree::prop_str(child, "status"), Some(s) if s.starts_with("fail")) {
            continue;
        }
        let mut c = chain.clone();
        c.push(child);
        // /cpus has #size-cells = 0 and no ranges: read the first cell group of reg directly.
        let mpidr = match tree::reg_first_address(&c)? {
            Some(m) => m,
            None => return Err(tree::bad(child, "reg")),
        };
        let enable_method = match tree::prop_str(child, "enable-method").or(default_method) {
            Some("psci") => EnableMethod::Psci,
            Some("spin-table") => {
                let addr = tree::prop_u32_or_u64(child, "cpu-release-addr")?
                    .ok_or_else(|| tree::bad(child, "cpu-release-addr"))?;
                EnableMethod::SpinTable {
                    release_addr: PhysAddr::new(addr),
                }
            }
            Some(other) => EnableMethod::Other(other.to_string()),
            None => EnableMethod::None,
        };
        if out.iter().any(|c| c.mpidr == mpidr) {
            return Err(PlatformError::DuplicateMpidr(mpidr));
        }
        out.push(Cpu {
            mpidr,
            enable_method,
        });
    }
    if out.is_empty() {
        return Err(PlatformError::NoCpus);
    }
    if out.len() > max {
        return Err(PlatformError::TooManyCpus {
            found: out.len(),
            max,
        });
    }
    Ok(out)
}

/// The conduit a `/psci`-compatible node names, from a blob [`Platform::parse`] may refuse: lets
/// a refused boot still end in SYSTEM_OFF. `None` when the blob or the node is unusable.
pub fn psci_conduit_hint(blob: &[u8]) -> Option<Conduit> {
    let walkable = walkable(blob).ok()?;
    let fdt = Fdt::new(&walkable).ok()?;
    let chain = find_compatible(&fdt, PSCI_COMPATIBLE).ok()??;
    match tree::prop_str(*chain.last()?, "method") {
        Some("smc") => Some(Conduit::Smc),
        Some("hvc") => Some(Conduit::Hvc),
        _ => None,
    }
}

const PSCI_COMPATIBLE: &[&str] = &["arm,psci", "arm,psci-0.2", "arm,psci-1.0"];
const PSCI_0_2_COMPATIBLE: &[&str] = &["arm,psci-0.2", "arm,psci-1.0"];

fn parse_psci(fdt: &Fdt<'_>) -> Result<Option<Psci>, PlatformError> {
    let Some(chain) = find_compatible(fdt, PSCI_COMPATIBLE)? else {
        return Ok(None);
    };
    let Some(&node) = chain.last() else {
        return Ok(None);
    };
    let method = match tree::prop_str(node, "method") {
        Some("smc") => Conduit::Smc,
        Some("hvc") => Conduit::Hvc,
        _ => return Err(PlatformError::BadPsciMethod),
    };
    Ok(Some(Psci {
        method,
        v0_2_or_later: tree::is_compatible(node, PSCI_0_2_COMPATIBLE),
        cpu_suspend: tree::prop_u32(node, "cpu_suspend")?,
        cpu_off: tree::prop_u32(node, "cpu_off")?,
        cpu_on: tree::prop_u32(node, "cpu_on")?,
        migrate: tree::prop_u32(node, "migrate")?,
    }))
}
