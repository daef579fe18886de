//! The device tree a guest boots with, generated with `vm-fdt` from a [`GuestDtbSpec`].
//!
//! The tree follows what QEMU's `virt` machine gives a Linux guest (same node names and
//! compatibles, so a kernel that boots on QEMU virt finds what it expects), restricted to what
//! the hypervisor provides: RAM, the vCPUs (enable-method PSCI over HVC), the (virtual) GIC,
//! the architected timer, the PMU, an emulated PL011 and `/chosen`. Bindings used (Linux
//! `Documentation/devicetree/bindings/`): `arm/cpus.yaml`, `arm/psci.yaml`,
//! `interrupt-controller/arm,gic-v3.yaml`, `interrupt-controller/arm,gic.yaml`,
//! `timer/arm,arch_timer.yaml`, `perf/arm,pmu.yaml`, `serial/pl011.yaml`,
//! `clock/fixed-clock.yaml`.
//!
//! Passthrough device nodes are not generated here (a VM may later carry a DTB fragment).
#![forbid(unsafe_code)]

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use vm_fdt::FdtWriter;

use super::config::{Console, DeviceConfig, VmConfig};
use super::layout::{GuestLayout, IpaRange, guest_map};
use crate::addr::Ipa;
use crate::vdev::virtio_mmio_slots;

/// Largest DTB the arm64 boot protocol accepts (booting.rst section 2).
pub const MAX_DTB_SIZE: usize = 2 << 20;

/// GIC interrupt specifier, first cell (bindings/interrupt-controller/arm,gic.yaml).
const GIC_SPI: u32 = 0;
const GIC_PPI: u32 = 1;
/// Third cell, bits [3:0]: trigger type; 4 = level-sensitive, active high; 1 = rising edge.
const IRQ_TYPE_LEVEL_HIGH: u32 = 4;
const IRQ_TYPE_EDGE_RISING: u32 = 1;
/// Third cell, bits [15:8]: for PPIs on GICv2 only, the mask of CPUs the PPI is wired to.
const GICV2_PPI_CPU_MASK_SHIFT: u32 = 8;
/// GICv2 targets at most 8 CPUs (GICv2 architecture specification, GICD_ITARGETSR).
pub const GICV2_MAX_CPUS: usize = 8;

/// Architected timer PPIs, as numbers relative to PPI 0 = INTID 16 (arm,arch_timer.yaml
/// order: secure physical, non-secure physical, virtual, hypervisor physical). These are the
/// INTIDs 29, 30, 27 and 26 the Arm Server Base System Architecture recommends.
pub const TIMER_PPIS: [u32; 4] = [13, 14, 11, 10];
/// The GIC maintenance interrupt as QEMU virt describes it: PPI 9 (INTID 25).
pub const GIC_MAINTENANCE_PPI: u32 = 9;
/// The PMU overflow interrupt as QEMU virt and the Arm BSA have it: PPI 7 (INTID 23).
pub const PMU_PPI: u32 = 7;
/// The PL011's reference clock on QEMU virt, 24 MHz.
pub const UART_CLOCK_HZ: u32 = 24_000_000;

/// MPIDR_EL1 affinity fields: Aff3 [39:32], Aff2 [23:16], Aff1 [15:8], Aff0 [7:0]
/// (Arm ARM D23.2 "MPIDR_EL1"); a cpu node's `reg` holds exactly these (arm/cpus.yaml).
const MPIDR_AFFINITY_MASK: u64 = 0xff_00ff_ffff;
const MPIDR_AFF3_MASK: u64 = 0xff_0000_0000;

const PHANDLE_GIC: u32 = 1;
const PHANDLE_CLOCK: u32 = 2;

/// The interrupt controller the guest sees and where its registers are.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum GicSpec<'a> {
    /// GICv3: distributor and one or more redistributor regions (128 KiB per vCPU).
    V3 {
        distributor: IpaRange,
        redistributors: &'a [IpaRange],
        /// PPI number of the maintenance interrupt to describe, if any.
        maintenance_ppi: Option<u32>,
    },
    /// GICv2: distributor and CPU interface.
    V2 {
        distributor: IpaRange,
        cpu_interface: IpaRange,
        maintenance_ppi: Option<u32>,
    },
}

/// The guest's PMUv3.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct GuestPmu {
    /// The PPI (relative to INTID 16) of its overflow interrupt, or `None` when the host's
    /// PMU interrupt is not a PPI the vCPU can be given (the node then has no `interrupts`:
    /// counting works, sampling does not, as Linux's arm_pmu driver reports it).
    pub ppi: Option<u32>,
}

/// The emulated PL011.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct UartSpec {
    pub base: Ipa,
    pub size: u64,
    /// SPI number (INTID - 32).
    pub spi: u32,
}

/// Everything the guest DTB describes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct GuestDtbSpec<'a> {
    /// RAM ranges; one `/memory@...` node each.
    pub memory: &'a [IpaRange],
    /// MPIDR_EL1 value of each vCPU, vCPU 0 first; only the affinity bits are used.
    pub vcpu_mpidrs: &'a [u64],
    pub gic: GicSpec<'a>,
    /// `None` for a VM without a console.
    pub uart: Option<UartSpec>,
    pub bootargs: &'a str,
    pub initrd: Option<IpaRange>,
    /// Bytes for `/chosen/rng-seed` (seeds the guest's RNG early), if any.
    pub rng_seed: Option<&'a [u8]>,
    /// Passthrough devices; those with `compatible` strings get a node (reg at their IPA,
    /// their SPIs level-high, and the APB clock when they are AMBA primecells).
    pub devices: &'a [DeviceConfig],
    /// A `/pmu` node (`arm,armv8-pmuv3`) when the vCPUs have a PMUv3; `None` otherwise.
    pub pmu: Option<GuestPmu>,
    /// The empty virtio-mmio transports (bit `i`: slot `i` of
    /// `vdev::virtio_mmio_slots`), each described as QEMU virt does.
    pub virtio_mmio_slots: u32,
}

/// MPIDR_EL1 bit 31 is RES1 (Arm ARM D23.2 "MPIDR_EL1").
const MPIDR_RES1: u64 = 1 << 31;

/// The MPIDR_EL1 a vCPU gets in the scheme KVM uses (Linux `arch/arm64/kvm/sys_regs.c`,
/// `reset_mpidr`): Aff0 = index bits [3:0], Aff1 = bits [11:4], Aff2 = bits [19:12]. At most
/// 16 vCPUs per Aff0 group keeps GICv3 SGIs (16-bit target lists) to one write per group.
pub const fn default_vcpu_mpidr(index: usize) -> u64 {
    let i = index as u64;
    MPIDR_RES1 | (i & 0xf) | (((i >> 4) & 0xff) << 8) | (((i >> 12) & 0xff) << 16)
}

impl<'a> GuestDtbSpec<'a> {
    /// The spec for a VM: its RAM and initrd from `layout`, bootargs and console from
    /// `config` (the PL011 at `guest_map::UART` unless `console = "none"`), no RNG seed.
    pub fn for_vm(
        config: &'a VmConfig,
        layout: &'a GuestLayout,
        vcpu_mpidrs: &'a [u64],
        gic: GicSpec<'a>,
    ) -> Self {
        let uart = match config.console {
            Console::Pl011 => Some(UartSpec {
                base: guest_map::UART.start,
                size: guest_map::UART.size,
                spi: guest_map::UART_SPI,
            }),
            Console::None => None,
        };
        GuestDtbSpec {
            memory: core::slice::from_ref(&layout.ram),
            vcpu_mpidrs,
            gic,
            uart,
            bootargs: &config.bootargs,
            initrd: layout.initrd,
            rng_seed: None,
            devices: &config.devices,
            pmu: None,
            virtio_mmio_slots: crate::vdev::virtio_mmio_slots::present_slots(
                config.devices.iter().map(|d| (d.ipa.as_u64(), d.size)),
                config.spis,
            ),
        }
    }
}

/// Why a DTB cannot be generated.
#[derive(PartialEq, Eq, Debug)]
pub enum FdtError {
    NoMemory,
    NoCpus,
    /// Two vCPUs have the same MPIDR affinity.
    DuplicateMpidr {
        affinity: u64,
    },
    /// GICv2 cannot serve more than 8 vCPUs.
    TooManyCpusForGicV2 {
        cpus: usize,
    },
    /// A GICv3 without redistributor regions.
    NoRedistributors,
    /// bootargs contains a NUL byte.
    BadBootargs,
    /// The blob is larger than the 2 MiB the boot protocol allows.
    TooLarge {
        size: usize,
    },
    /// The FDT writer refused something (a bug in this module).
    Writer(vm_fdt::Error),
}

impl fmt::Display for FdtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FdtError::NoMemory => write!(f, "dtb: no memory range"),
            FdtError::NoCpus => write!(f, "dtb: no vCPU"),
            FdtError::DuplicateMpidr { affinity } => {
                write!(f, "dtb: two vCPUs have MPIDR affinity {affinity:#x}")
            }
            FdtError::TooManyCpusForGicV2 { cpus } => {
                write!(f, "dtb: GICv2 supports at most 8 CPUs, the VM has {cpus}")
            }
            FdtError::NoRedistributors => write!(f, "dtb: GICv3 without redistributor regions"),
            FdtError::BadBootargs => write!(f, "dtb: bootargs contain a NUL byte"),
            FdtError::TooLarge { size } => {
                write!(f, "dtb: {size} bytes exceeds the 2 MiB boot protocol limit")
            }
            FdtError::Writer(e) => write!(f, "dtb: writer error: {e}"),
        }
    }
}

impl From<vm_fdt::Error> for FdtError {
    fn from(e: vm_fdt::Error) -> Self {
        FdtError::Writer(e)
    }
}

/// `<addr-hi addr-lo size-hi size-lo>` for #address-cells = #size-cells = 2.
fn reg_cells(ranges: &[IpaRange]) -> Vec<u64> {
    ranges
        .iter()
        .flat_map(|r| [r.start.as_u64(), r.size])
        .collect()
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The fixed 24 MHz APB clock AMBA devices (the PL011, passthrough primecells) refer to.
fn apb_clock(w: &mut FdtWriter) -> Result<(), FdtError> {
    let clock = w.begin_node("apb-pclk")?;
    w.property_string("compatible", "fixed-clock")?;
    w.property_u32("#clock-cells", 0)?;
    w.property_u32("clock-frequency", UART_CLOCK_HZ)?;
    w.property_string("clock-output-names", "clk24mhz")?;
    w.property_phandle(PHANDLE_CLOCK)?;
    w.end_node(clock)?;
    Ok(())
}

/// Generates the guest DTB.
pub fn build(spec: &GuestDtbSpec<'_>) -> Result<Vec<u8>, FdtError> {
    if spec.memory.is_empty() {
        return Err(FdtError::NoMemory);
    }
    if spec.vcpu_mpidrs.is_empty() {
        return Err(FdtError::NoCpus);
    }
    if spec.bootargs.contains('\0') {
        return Err(FdtError::BadBootargs);
    }
    let affinities: Vec<u64> = spec
        .vcpu_mpidrs
        .iter()
        .map(|m| m & MPIDR_AFFINITY_MASK)
        .collect();
    for (i, a) in affinities.iter().enumerate() {
        if affinities[..i].contains(a) {
            return Err(FdtError::DuplicateMpidr { affinity: *a });
        }
    }
    let ncpus = affinities.len();
    // GICv2 PPIs carry a CPU mask; GICv3 ones do not (arm,gic.yaml vs arm,gic-v3.yaml).
    let ppi_flags = match spec.gic {
        GicSpec::V2 { .. } => {
            if ncpus > GICV2_MAX_CPUS {
                return Err(FdtError::TooManyCpusForGicV2 { cpus: ncpus });
            }
            IRQ_TYPE_LEVEL_HIGH | (((1u32 << ncpus) - 1) << GICV2_PPI_CPU_MASK_SHIFT)
        }
        GicSpec::V3 { redistributors, .. } => {
            if redistributors.is_empty() {
                return Err(FdtError::NoRedistributors);
            }
            IRQ_TYPE_LEVEL_HIGH
        }
    };

    let mut w = FdtWriter::new()?;
    let root = w.begin_node("")?;
    w.property_string("compatible", "linux,dummy-virt")?;
    w.property_string("model", "kestrel virtual machine")?;
    w.property_u32("#address-cells", 2)?;
    w.property_u32("#size-cells", 2)?;
    w.property_u32("interrupt-parent", PHANDLE_GIC)?;

    let uart_path = spec.uart.map(|u| format!("/pl011@{:x}", u.base.as_u64()));

    let chosen = w.begin_node("chosen")?;
    w.property_string("bootargs", spec.bootargs)?;
    if let Some(path) = &uart_path {
        w.property_string("stdout-path", path)?;
    }
    if let Some(initrd) = spec.initrd {
        w.property_u64("linux,initrd-start", initrd.start.as_u64())?;
        w.property_u64("linux,initrd-end", initrd.end().as_u64())?;
    }
    if let Some(seed) = spec.rng_seed {
        w.property("rng-seed", seed)?;
    }
    w.end_node(chosen)?;

    if let Some(path) = &uart_path {
        let aliases = w.begin_node("aliases")?;
        w.property_string("serial0", path)?;
        w.end_node(aliases)?;
    }

    for m in spec.memory {
        let node = w.begin_node(&format!("memory@{:x}", m.start.as_u64()))?;
        w.property_string("device_type", "memory")?;
        w.property_array_u64("reg", &reg_cells(core::slice::from_ref(m)))?;
        w.end_node(node)?;
    }

    // arm/cpus.yaml: one address cell when every Aff3 is 0, else two.
    let cpu_cells = if affinities.iter().any(|a| a & MPIDR_AFF3_MASK != 0) {
        2
    } else {
        1
    };
    let cpus = w.begin_node("cpus")?;
    w.property_u32("#address-cells", cpu_cells)?;
    w.property_u32("#size-cells", 0)?;
    for &a in &affinities {
        let cpu = w.begin_node(&format!("cpu@{a:x}"))?;
        w.property_string("device_type", "cpu")?;
        w.property_string("compatible", "arm,armv8")?;
        if cpu_cells == 2 {
            w.property_u64("reg", a)?;
        } else {
            w.property_u32("reg", a as u32)?;
        }
        w.property_string("enable-method", "psci")?;
        w.end_node(cpu)?;
    }
    w.end_node(cpus)?;

    let psci = w.begin_node("psci")?;
    w.property_string_list("compatible", strings(&["arm,psci-1.0", "arm,psci-0.2"]))?;
    w.property_string("method", "hvc")?;
    w.end_node(psci)?;

    let (gic_base, compatible, regs, maintenance, rd_regions) = match spec.gic {
        GicSpec::V3 {
            distributor,
            redistributors,
            maintenance_ppi,
        } => {
            let mut regs = vec![distributor];
            regs.extend_from_slice(redistributors);
            (
                distributor.start,
                "arm,gic-v3",
                regs,
                maintenance_ppi,
                Some(redistributors.len()),
            )
        }
        GicSpec::V2 {
            distributor,
            cpu_interface,
            maintenance_ppi,
        } => (
            distributor.start,
            "arm,cortex-a15-gic",
            vec![distributor, cpu_interface],
            maintenance_ppi,
            None,
        ),
    };
    let gic = w.begin_node(&format!("intc@{:x}", gic_base.as_u64()))?;
    w.property_string("compatible", compatible)?;
    w.property_u32("#interrupt-cells", 3)?;
    w.property_null("interrupt-controller")?;
    // No child nodes (no ITS / v2m): 0 address cells, which interrupt-map parsing expects
    // of an interrupt provider (dtc's interrupt_provider check).
    w.property_u32("#address-cells", 0)?;
    w.property_array_u64("reg", &reg_cells(&regs))?;
    if let Some(n) = rd_regions {
        w.property_u32("#redistributor-regions", n as u32)?;
    }
    if let Some(ppi) = maintenance {
        // QEMU virt writes the maintenance interrupt as level-high without a CPU mask.
        w.property_array_u32("interrupts", &[GIC_PPI, ppi, IRQ_TYPE_LEVEL_HIGH])?;
    }
    w.property_phandle(PHANDLE_GIC)?;
    w.end_node(gic)?;

    let timer = w.begin_node("timer")?;
    w.property_string_list(
        "compatible",
        strings(&["arm,armv8-timer", "arm,armv7-timer"]),
    )?;
    let cells: Vec<u32> = TIMER_PPIS
        .iter()
        .flat_map(|&p| [GIC_PPI, p, ppi_flags])
        .collect();
    w.property_array_u32("interrupts", &cells)?;
    w.property_null("always-on")?;
    w.end_node(timer)?;

    if let Some(pmu) = spec.pmu {
        // As QEMU virt writes it: level-high, with the GICv2 CPU mask like the timer's.
        let node = w.begin_node("pmu")?;
        w.property_string("compatible", "arm,armv8-pmuv3")?;
        if let Some(ppi) = pmu.ppi {
            w.property_array_u32("interrupts", &[GIC_PPI, ppi, ppi_flags])?;
        }
        w.end_node(node)?;
    }

    // QEMU virt's virtio-mmio transports, lowest address first (QEMU writes them in reverse
    // so that they come out in this order): reg, SPI 16 + slot edge-rising, dma-coherent.
    for slot in 0..virtio_mmio_slots::SLOTS {
        if spec.virtio_mmio_slots & (1 << slot) == 0 {
            continue;
        }
        let base = virtio_mmio_slots::BASE + slot as u64 * virtio_mmio_slots::SLOT_SIZE;
        let node = w.begin_node(&format!("virtio_mmio@{base:x}"))?;
        w.property_string("compatible", "virtio,mmio")?;
        w.property_array_u64("reg", &[base, virtio_mmio_slots::SLOT_SIZE])?;
        w.property_array_u32(
            "interrupts",
            &[
                GIC_SPI,
                virtio_mmio_slots::FIRST_SPI + slot as u32,
                IRQ_TYPE_EDGE_RISING,
            ],
        )?;
        w.property_null("dma-coherent")?;
        w.end_node(node)?;
    }

    let described: Vec<&DeviceConfig> = spec
        .devices
        .iter()
        .filter(|d| !d.compatible.is_empty())
        .collect();
    let primecell = described
        .iter()
        .any(|d| d.compatible.iter().any(|c| c == "arm,primecell"));
    if spec.uart.is_none() && primecell {
        apb_clock(&mut w)?;
    }
    for d in &described {
        let name: String = d
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || ",._+-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let node = w.begin_node(&format!("{name}@{:x}", d.ipa.as_u64()))?;
        let compat: Vec<&str> = d.compatible.iter().map(|s| s.as_str()).collect();
        w.property_string_list("compatible", strings(&compat))?;
        w.property_array_u64("reg", &[d.ipa.as_u64(), d.size])?;
        if !d.interrupts.is_empty() {
            let cells: Vec<u32> = d
                .interrupts
                .iter()
                .flat_map(|&s| [GIC_SPI, s, IRQ_TYPE_LEVEL_HIGH])
                .collect();
            w.property_array_u32("interrupts", &cells)?;
        }
        if d.compatible.iter().any(|c| c == "arm,primecell") {
            w.property_u32("clocks", PHANDLE_CLOCK)?;
            w.property_string("clock-names", "apb_pclk")?;
        }
        w.end_node(node)?;
    }

    if let (Some(uart), Some(path)) = (spec.uart, &uart_path) {
        apb_clock(&mut w)?;

        let node = w.begin_node(path.trim_start_matches('/'))?;
        w.property_string_list("compatible", strings(&["arm,pl011", "arm,primecell"]))?;
        w.property_array_u64("reg", &[uart.base.as_u64(), uart.size])?;
        w.property_array_u32("interrupts", &[GIC_SPI, uart.spi, IRQ_TYPE_LEVEL_HIGH])?;
        w.property_array_u32("clocks", &[PHANDLE_CLOCK, PHANDLE_CLOCK])?;
        w.property_string_list("clock-names", strings(&["uartclk", "apb_pclk"]))?;
        w.end_node(node)?;
    }

    w.end_node(root)?;
    let blob = w.finish()?;
    if blob.len() > MAX_DTB_SIZE {
        return Err(FdtError::TooLarge { size: blob.len() });
    }
    Ok(blob)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::fdt::Fdt;
    use ::fdt::node::FdtNode;

    const M: u64 = 1 << 20;

    fn r(start: u64, size: u64) -> IpaRange {
        IpaRange {
            start: Ipa::new(start),
            size,
        }
    }

    const RDIST: [IpaRange; 1] = [IpaRange {
        start: Ipa::new(0x080a_0000),
        size: 0x4_0000,
    }];

    fn spec_v3<'a>(mpidrs: &'a [u64], memory: &'a [IpaRange]) -> GuestDtbSpec<'a> {
        GuestDtbSpec {
            memory,
            vcpu_mpidrs: mpidrs,
            gic: GicSpec::V3 {
                distributor: r(0x0800_0000, 0x1_0000),
                redistributors: &RDIST,
                maintenance_ppi: Some(GIC_MAINTENANCE_PPI),
            },
            uart: Some(UartSpec {
                base: Ipa::new(0x0900_0000),
                size: 0x1000,
                spi: 1,
            }),
            bootargs: "console=ttyAMA0 earlycon",
            initrd: Some(r(0x4000_0000 + 30 * M, 0x12_3456)),
            rng_seed: Some(&[1, 2, 3, 4, 5, 6, 7, 8]),
            devices: &[],
            pmu: Some(GuestPmu { ppi: Some(PMU_PPI) }),
            virtio_mmio_slots: 0b11,
        }
    }

    fn cells_u32(node: FdtNode<'_, '_>, prop: &str) -> Vec<u32> {
        let v = node
            .property(prop)
            .unwrap_or_else(|| panic!("{prop} missing"))
            .value;
        assert_eq!(v.len() % 4, 0, "{prop}");
        v.chunks(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    fn cells_u64(node: FdtNode<'_, '_>, prop: &str) -> Vec<u64> {
        let v = node
            .property(prop)
            .unwrap_or_else(|| panic!("{prop} missing"))
            .value;
        assert_eq!(v.len() % 8, 0, "{prop}");
        v.chunks(8)
            .map(|c| u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect()
    }

    fn string_list<'a>(node: FdtNode<'_, 'a>, prop: &str) -> Vec<&'a str> {
        let v = node
            .property(prop)
            .unwrap_or_else(|| panic!("{prop} missing"))
            .value;
        let v = v.strip_suffix(&[0]).expect("NUL-terminated");
        v.split(|&b| b == 0)
            .map(|s| core::str::from_utf8(s).unwrap())
            .collect()
    }

    #[test]
    fn round_trips_a_gicv3_guest_tree() {
        let memory = [r(0x4000_0000, 512 * M)];
        let blob = build(&spec_v3(&[0x8000_0000, 0x8000_0001], &memory)).unwrap();
        let fdt = Fdt::new(&blob).unwrap();

        let root = fdt.find_node("/").unwrap();
        assert_eq!(string_list(root, "compatible"), ["linux,dummy-virt"]);
        assert_eq!(cells_u32(root, "#address-cells"), [2]);
        assert_eq!(cells_u32(root, "#size-cells"), [2]);
        assert_eq!(cells_u32(root, "interrupt-parent"), [PHANDLE_GIC]);

        let mem = fdt.find_node("/memory@40000000").unwrap();
        assert_eq!(string_list(mem, "device_type"), ["memory"]);
        assert_eq!(cells_u64(mem, "reg"), [0x4000_0000, 512 * M]);
        let regions: Vec<_> = fdt
            .memory()
            .regions()
            .map(|r| (r.starting_address as u64, r.size))
            .collect();
        assert_eq!(regions, [(0x4000_0000, Some(512 * M as usize))]);

        let cpus = fdt.find_node("/cpus").unwrap();
        assert_eq!(cells_u32(cpus, "#address-cells"), [1]);
        assert_eq!(cells_u32(cpus, "#size-cells"), [0]);
        for (i, name) in ["/cpus/cpu@0", "/cpus/cpu@1"].into_iter().enumerate() {
            let cpu = fdt.find_node(name).unwrap();
            assert_eq!(string_list(cpu, "device_type"), ["cpu"]);
            assert_eq!(string_list(cpu, "compatible"), ["arm,armv8"]);
            assert_eq!(
                cells_u32(cpu, "reg"),
                [i as u32],
                "MPIDR bit 31 (RES1) is not in reg"
            );
            assert_eq!(string_list(cpu, "enable-method"), ["psci"]);
        }
        assert_eq!(fdt.cpus().count(), 2);

        let psci = fdt.find_node("/psci").unwrap();
        assert_eq!(
            string_list(psci, "compatible"),
            ["arm,psci-1.0", "arm,psci-0.2"]
        );
        assert_eq!(string_list(psci, "method"), ["hvc"]);

        let gic = fdt.find_node("/intc@8000000").unwrap();
        assert_eq!(string_list(gic, "compatible"), ["arm,gic-v3"]);
        assert_eq!(cells_u32(gic, "#interrupt-cells"), [3]);
        assert_eq!(cells_u32(gic, "#address-cells"), [0]);
        assert_eq!(gic.property("interrupt-controller").unwrap().value, b"");
        assert_eq!(
            cells_u64(gic, "reg"),
            [0x0800_0000, 0x1_0000, 0x080a_0000, 0x4_0000]
        );
        assert_eq!(cells_u32(gic, "#redistributor-regions"), [1]);
        assert_eq!(cells_u32(gic, "interrupts"), [1, 9, 4]);
        assert_eq!(cells_u32(gic, "phandle"), [PHANDLE_GIC]);

        let timer = fdt.find_node("/timer").unwrap();
        assert_eq!(
            string_list(timer, "compatible"),
            ["arm,armv8-timer", "arm,armv7-timer"]
        );
        // As QEMU virt with gic-version=3 writes it.
        assert_eq!(
            cells_u32(timer, "interrupts"),
            [1, 13, 4, 1, 14, 4, 1, 11, 4, 1, 10, 4]
        );
        assert!(timer.property("always-on").is_some());

        // As QEMU virt writes it for a CPU with a PMUv3: PPI 7 (INTID 23), level-high.
        let pmu = fdt.find_node("/pmu").unwrap();
        assert_eq!(string_list(pmu, "compatible"), ["arm,armv8-pmuv3"]);
        assert_eq!(cells_u32(pmu, "interrupts"), [1, 7, 4]);

        let clk = fdt.find_node("/apb-pclk").unwrap();
        assert_eq!(string_list(clk, "compatible"), ["fixed-clock"]);
        assert_eq!(cells_u32(clk, "clock-frequency"), [24_000_000]);
        assert_eq!(cells_u32(clk, "#clock-cells"), [0]);
        assert_eq!(cells_u32(clk, "phandle"), [PHANDLE_CLOCK]);

        let uart = fdt.find_node("/pl011@9000000").unwrap();
        assert_eq!(
            string_list(uart, "compatible"),
            ["arm,pl011", "arm,primecell"]
        );
        assert_eq!(cells_u64(uart, "reg"), [0x0900_0000, 0x1000]);
        assert_eq!(cells_u32(uart, "interrupts"), [0, 1, 4]);
        assert_eq!(cells_u32(uart, "clocks"), [PHANDLE_CLOCK, PHANDLE_CLOCK]);
        assert_eq!(string_list(uart, "clock-names"), ["uartclk", "apb_pclk"]);

        let chosen = fdt.find_node("/chosen").unwrap();
        assert_eq!(fdt.chosen().bootargs(), Some("console=ttyAMA0 earlycon"));
        assert_eq!(string_list(chosen, "stdout-path"), ["/pl011@9000000"]);
        assert_eq!(fdt.chosen().stdout().unwrap().name, "pl011@9000000");
        assert_eq!(
            cells_u64(chosen, "linux,initrd-start"),
            [0x4000_0000 + 30 * M]
        );
        assert_eq!(
            cells_u64(chosen, "linux,initrd-end"),
            [0x4000_0000 + 30 * M + 0x12_3456]
        );
        assert_eq!(
            chosen.property("rng-seed").unwrap().value,
            [1, 2, 3, 4, 5, 6, 7, 8]
        );

        assert_eq!(
            fdt.aliases().unwrap().resolve("serial0"),
            Some("/pl011@9000000")
        );
    }

    #[test]
    fn default_mpidrs_follow_the_kvm_scheme() {
        assert_eq!(default_vcpu_mpidr(0), 0x8000_0000);
        assert_eq!(default_vcpu_mpidr(15), 0x8000_000f);
        assert_eq!(default_vcpu_mpidr(16), 0x8000_0100);
        assert_eq!(default_vcpu_mpidr(63), 0x8000_030f);
        assert_eq!(default_vcpu_mpidr(0x1234), 0x8001_2304);
    }

    /// Two disks and a network port: their slots 0..=2 are among the described transports, in
    /// address order (disks first, so the first disk is the first node Linux probes: vda), each
    /// as QEMU virt writes it.
    #[test]
    fn virtio_devices_slots_are_described_in_slot_order() {
        use crate::guest::{config, image, layout};
        let toml = b"kernel = \"I\"\n[[net]]\nswitch = \"lan0\"\n\
                     [[disks]]\nfile = \"a.img\"\n[[disks]]\nfile = \"b.img\"\n";
        let cfg = config::parse(toml, "vm").unwrap();
        let header = include_bytes!("../../tests/fixtures/guest/image-cloud-header.bin");
        let info = image::parse(header).unwrap();
        let plan = layout::plan(cfg.ram_base, cfg.memory, &info, 4096).unwrap();
        let mpidrs = [default_vcpu_mpidr(0)];
        let rd = [guest_map::gicv3_redistributors(1)];
        let gic = GicSpec::V3 {
            distributor: guest_map::GICD,
            redistributors: &rd,
            maintenance_ppi: None,
        };
        let spec = GuestDtbSpec::for_vm(&cfg, &plan, &mpidrs, gic);
        let used = crate::virtio::assign_slots(2, 1).fold(0u32, |m, (s, _)| m | 1 << s.index);
        assert_eq!(used, 0b111);
        assert_eq!(spec.virtio_mmio_slots & used, used);
        let blob = build(&spec).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        let nodes: Vec<_> = fdt
            .all_nodes()
            .filter(|n| n.name.starts_with("virtio_mmio@"))
            .map(|n| n.name)
            .take(3)
            .collect();
        assert_eq!(
            nodes,
            [
                "virtio_mmio@a000000",
                "virtio_mmio@a000200",
                "virtio_mmio@a000400"
            ]
        );
        for (i, name) in nodes.iter().enumerate() {
            let n = fdt.find_node(&format!("/{name}")).unwrap();
            assert_eq!(string_list(n, "compatible"), ["virtio,mmio"]);
            assert_eq!(cells_u64(n, "reg"), [0x0a00_0000 + 0x200 * i as u64, 0x200]);
            assert_eq!(cells_u32(n, "interrupts"), [0, 16 + i as u32, 1]);
            assert!(n.property("dma-coherent").is_some());
        }
    }

    #[test]
    fn builds_the_tree_of_a_parsed_and_planned_vm() {
        use crate::guest::{config, image, layout};
        let cfg = config::parse(b"kernel = \"Image\"\ncpus = 2\nmemory = \"256M\"", "vm").unwrap();
        let header = include_bytes!("../../tests/fixtures/guest/image-cloud-header.bin");
        let info = image::parse(header).unwrap();
        let plan = layout::plan(cfg.ram_base, cfg.memory, &info, 4096).unwrap();
        let mpidrs: Vec<u64> = (0..cfg.cpus).map(default_vcpu_mpidr).collect();
        let rd = [guest_map::gicv3_redistributors(cfg.cpus)];
        let gic = GicSpec::V3 {
            distributor: guest_map::GICD,
            redistributors: &rd,
            maintenance_ppi: None,
        };
        let blob = build(&GuestDtbSpec::for_vm(&cfg, &plan, &mpidrs, gic)).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        assert_eq!(
            cells_u64(fdt.find_node("/memory@40000000").unwrap(), "reg"),
            [0x4000_0000, 256 * M]
        );
        assert_eq!(fdt.cpus().count(), 2);
        let chosen = fdt.find_node("/chosen").unwrap();
        assert_eq!(
            cells_u64(chosen, "linux,initrd-start"),
            [plan.initrd.unwrap().start.as_u64()]
        );
        assert_eq!(
            cells_u64(chosen, "linux,initrd-end"),
            [plan.initrd.unwrap().end().as_u64()]
        );
        assert_eq!(fdt.chosen().bootargs(), Some("console=ttyAMA0 earlycon"));
        let gic = fdt.find_node("/intc@8000000").unwrap();
        assert_eq!(
            cells_u64(gic, "reg"),
            [0x0800_0000, 0x1_0000, 0x080a_0000, 0x4_0000]
        );
        assert_eq!(
            cells_u32(fdt.find_node("/pl011@9000000").unwrap(), "interrupts"),
            [0, 1, 4]
        );
        // QEMU virt's 32 virtio-mmio transports, as QEMU writes them.
        let virtio: Vec<_> = fdt.find_all_nodes("/virtio_mmio").collect();
        assert_eq!(virtio.len(), 32);
        let last = fdt.find_node("/virtio_mmio@a003e00").unwrap();
        assert_eq!(string_list(last, "compatible"), ["virtio,mmio"]);
        assert_eq!(cells_u64(last, "reg"), [0x0a00_3e00, 0x200]);
        assert_eq!(cells_u32(last, "interrupts"), [0, 47, 1]);
        assert!(last.property("dma-coherent").is_some());
        // A passthrough device on slots 24..=31 (the host's own virtio-mmio page) keeps them;
        // 32 SPIs leave slots 16.. without one.
        let mut pt = config::parse(
            b"kernel = \"I\"\n[[devices]]\nname = \"v\"\nbase = 0x0a003000\nsize = \"4K\"\n",
            "vm",
        )
        .unwrap();
        let blob = build(&GuestDtbSpec::for_vm(&pt, &plan, &mpidrs, gic_v3_default())).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        assert_eq!(fdt.find_all_nodes("/virtio_mmio").count(), 24);
        assert!(fdt.find_node("/virtio_mmio@a002e00").is_some());
        assert!(fdt.find_node("/virtio_mmio@a003000").is_none());
        pt.spis = 32;
        let blob = build(&GuestDtbSpec::for_vm(&pt, &plan, &mpidrs, gic_v3_default())).unwrap();
        assert_eq!(
            Fdt::new(&blob)
                .unwrap()
                .find_all_nodes("/virtio_mmio")
                .count(),
            16
        );
        // console = "none": no UART node.
        let quiet = config::parse(b"kernel = \"I\"\nconsole = \"none\"", "vm").unwrap();
        let blob = build(&GuestDtbSpec::for_vm(
            &quiet,
            &plan,
            &mpidrs,
            gic_v3_default(),
        ))
        .unwrap();
        assert!(
            Fdt::new(&blob)
                .unwrap()
                .find_compatible(&["arm,pl011"])
                .is_none()
        );
    }

    fn gic_v3_default() -> GicSpec<'static> {
        GicSpec::V3 {
            distributor: guest_map::GICD,
            redistributors: &RDIST,
            maintenance_ppi: None,
        }
    }

    #[test]
    fn describes_a_gicv2_with_cpu_masks_on_ppis() {
        let memory = [r(0x4000_0000, 64 * M)];
        let mut spec = spec_v3(&[0, 1], &memory);
        spec.gic = GicSpec::V2 {
            distributor: r(0x0800_0000, 0x1_0000),
            cpu_interface: r(0x0801_0000, 0x1_0000),
            maintenance_ppi: None,
        };
        let blob = build(&spec).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        let gic = fdt.find_node("/intc@8000000").unwrap();
        assert_eq!(string_list(gic, "compatible"), ["arm,cortex-a15-gic"]);
        assert_eq!(
            cells_u64(gic, "reg"),
            [0x0800_0000, 0x1_0000, 0x0801_0000, 0x1_0000]
        );
        assert!(gic.property("interrupts").is_none());
        assert!(gic.property("#redistributor-regions").is_none());
        // QEMU virt with gic-version=2 and 2 CPUs: flags 0x304.
        let timer = fdt.find_node("/timer").unwrap();
        assert_eq!(
            cells_u32(timer, "interrupts"),
            [1, 13, 0x304, 1, 14, 0x304, 1, 11, 0x304, 1, 10, 0x304]
        );
        let pmu = fdt.find_node("/pmu").unwrap();
        assert_eq!(cells_u32(pmu, "interrupts"), [1, 7, 0x304]);
        // A PMU whose interrupt is not a PPI: a node without interrupts.
        spec.pmu = Some(GuestPmu { ppi: None });
        let blob = build(&spec).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        let pmu = fdt.find_node("/pmu").unwrap();
        assert_eq!(string_list(pmu, "compatible"), ["arm,armv8-pmuv3"]);
        assert!(pmu.property("interrupts").is_none());
        // Without a PMUv3 there is no node.
        spec.pmu = None;
        let blob = build(&spec).unwrap();
        assert!(Fdt::new(&blob).unwrap().find_node("/pmu").is_none());
    }

    #[test]
    fn uses_two_address_cells_for_cpus_when_aff3_is_set() {
        let memory = [r(0x4000_0000, 64 * M)];
        let blob = build(&spec_v3(&[0x1_0000_0000, 0x0000_0100], &memory)).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        assert_eq!(
            cells_u32(fdt.find_node("/cpus").unwrap(), "#address-cells"),
            [2]
        );
        assert_eq!(
            cells_u64(fdt.find_node("/cpus/cpu@100000000").unwrap(), "reg"),
            [1 << 32]
        );
        assert_eq!(
            cells_u64(fdt.find_node("/cpus/cpu@100").unwrap(), "reg"),
            [0x100]
        );
    }

    #[test]
    fn passthrough_devices_with_compatible_get_nodes_with_their_spis_and_clock() {
        use crate::addr::PhysAddr;
        let devs = [
            DeviceConfig {
                name: "rtc".into(),
                base: PhysAddr::new(0x0901_0000),
                size: 0x1000,
                ipa: Ipa::new(0x0c00_0000),
                interrupts: vec![2],
                compatible: vec!["arm,pl031".into(), "arm,primecell".into()],
            },
            DeviceConfig {
                name: "hidden".into(),
                base: PhysAddr::new(0x0a00_0000),
                size: 0x1000,
                ipa: Ipa::new(0x0d00_0000),
                interrupts: vec![3],
                compatible: vec![],
            },
        ];
        let memory = [r(0x4000_0000, 512 * M)];
        let mut spec = spec_v3(&[MPIDR_RES1], &memory);
        spec.uart = None;
        spec.devices = &devs;
        let blob = build(&spec).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        let rtc = fdt.find_node("/rtc@c000000").expect("rtc node");
        assert_eq!(
            rtc.compatible().unwrap().all().collect::<Vec<_>>(),
            ["arm,pl031", "arm,primecell"]
        );
        assert_eq!(
            cells_u32(rtc, "interrupts"),
            [GIC_SPI, 2, IRQ_TYPE_LEVEL_HIGH]
        );
        assert_eq!(cells_u32(rtc, "clocks"), [PHANDLE_CLOCK]);
        assert!(
            fdt.find_node("/apb-pclk").is_some(),
            "the primecell needs its clock"
        );
        assert!(
            fdt.find_node("/hidden@d000000").is_none(),
            "no compatible: no node"
        );
    }

    #[test]
    fn omits_uart_stdout_and_initrd_when_absent() {
        let memory = [r(0x4000_0000, 64 * M), r(0x1_0000_0000, 64 * M)];
        let mut spec = spec_v3(&[0], &memory);
        spec.uart = None;
        spec.initrd = None;
        spec.rng_seed = None;
        let blob = build(&spec).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        let chosen = fdt.find_node("/chosen").unwrap();
        assert!(chosen.property("stdout-path").is_none());
        assert!(chosen.property("linux,initrd-start").is_none());
        assert!(fdt.find_node("/aliases").is_none());
        assert!(fdt.find_compatible(&["arm,pl011"]).is_none());
        assert!(fdt.find_node("/apb-pclk").is_none());
        assert_eq!(
            cells_u64(fdt.find_node("/memory@100000000").unwrap(), "reg"),
            [1 << 32, 64 * M]
        );
    }

    #[test]
    fn rejects_invalid_specs() {
        let memory = [r(0x4000_0000, 64 * M)];
        assert_eq!(build(&spec_v3(&[], &memory)), Err(FdtError::NoCpus));
        assert_eq!(build(&spec_v3(&[0], &[])), Err(FdtError::NoMemory));
        assert_eq!(
            build(&spec_v3(&[0x8000_0001, 1], &memory)),
            Err(FdtError::DuplicateMpidr { affinity: 1 })
        );
        let mut s = spec_v3(&[0], &memory);
        s.bootargs = "a\0b";
        assert_eq!(build(&s), Err(FdtError::BadBootargs));
        let mut s = spec_v3(&[0], &memory);
        s.gic = GicSpec::V3 {
            distributor: r(0x0800_0000, 0x1_0000),
            redistributors: &[],
            maintenance_ppi: None,
        };
        assert_eq!(build(&s), Err(FdtError::NoRedistributors));
        let nine: Vec<u64> = (0..9).collect();
        let mut s = spec_v3(&nine, &memory);
        s.gic = GicSpec::V2 {
            distributor: r(0x0800_0000, 0x1_0000),
            cpu_interface: r(0x0801_0000, 0x1_0000),
            maintenance_ppi: None,
        };
        assert_eq!(build(&s), Err(FdtError::TooManyCpusForGicV2 { cpus: 9 }));
    }

    #[test]
    fn rejects_a_blob_over_2m() {
        let memory = [r(0x4000_0000, 64 * M)];
        let huge = "x".repeat(MAX_DTB_SIZE);
        let mut s = spec_v3(&[0], &memory);
        s.bootargs = &huge;
        assert!(matches!(build(&s), Err(FdtError::TooLarge { size }) if size > MAX_DTB_SIZE));
    }

    /// Decompiles the blob with dtc when it is installed (skipped otherwise): dtc checks the
    /// structure and warns about binding-level mistakes (unit addresses, reg sizes, ...).
    #[test]
    fn dtc_decompiles_the_blob_without_warnings() {
        use std::process::Command;
        if Command::new("dtc").arg("--version").output().is_err() {
            std::eprintln!("dtc not installed: skipping");
            return;
        }
        let memory = [r(0x4000_0000, 512 * M)];
        let blob = build(&spec_v3(&[0, 1], &memory)).unwrap();
        let path = std::env::temp_dir().join(format!("kestrel-guest-{}.dtb", std::process::id()));
        std::fs::write(&path, &blob).unwrap();
        let out = Command::new("dtc")
            .args(["-I", "dtb", "-O", "dts"])
            .arg(&path)
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&path);
        let dts = String::from_utf8(out.stdout).unwrap();
        let warnings = String::from_utf8(out.stderr).unwrap();
        assert!(out.status.success(), "{warnings}");
        assert!(warnings.is_empty(), "dtc warnings:\n{warnings}");
        assert!(dts.contains("compatible = \"arm,gic-v3\";"), "{dts}");
        assert!(
            dts.contains("bootargs = \"console=ttyAMA0 earlycon\";"),
            "{dts}"
        );
        assert!(dts.contains("cpu@1 {"), "{dts}");
    }
}
