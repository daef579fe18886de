//! The physical GIC as the hypervisor drives it: distributor and redistributors (GICv3) or
//! distributor and CPU interface (GICv2) for the interrupts EL2 takes, and the virtualization
//! control interface (ICH_* system registers / GICH MMIO) through which list registers inject
//! virtual interrupts.
//!
//! Written here rather than with the `arm-gic` crate because the hypervisor needs what that
//! crate does not offer: redistributors found by affinity across several regions, split
//! priority drop / deactivation (EOImode = 1, so a hardware-linked virtual interrupt can be
//! deactivated by the guest), GICv2's GICH block, and SPI routing to a chosen physical CPU.
//!
//! Register offsets: GIC architecture specification IHI 0069H (GICv3) and IHI 0048B (GICv2).
use super::boot::MAX_CPUS;
use super::cpu;
use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use spin::Once;

/// The SGI the hypervisor uses to kick another physical CPU (new virtual interrupts to pick up,
/// or a request to stop).
pub const SGI_KICK: u32 = 1;
/// PPIs: the GIC maintenance interrupt and the EL1 virtual timer.
pub const PPI_MAINTENANCE: u32 = 25;
pub const PPI_VTIMER: u32 = 27;
/// The EL1 (non-secure) physical timer, which guests also program directly.
pub const PPI_PTIMER: u32 = 30;
/// The PMU overflow interrupt (PMUv3, PPI 7 as on QEMU virt), forwarded to the guest.
pub const PPI_PMU: u32 = 23;
pub const INTID_SPURIOUS: u32 = 1023;
/// Priority the hypervisor gives every interrupt it enables.
const PRIORITY: u8 = 0xa0;

// Distributor (both versions).
const GICD_CTLR: usize = 0x0000;
const GICD_TYPER: usize = 0x0004;
const GICD_IGROUPR: usize = 0x0080;
const GICD_ISENABLER: usize = 0x0100;
const GICD_ICENABLER: usize = 0x0180;
const GICD_ICPENDR: usize = 0x0280;
const GICD_ISACTIVER: usize = 0x0300;
const GICD_ICACTIVER: usize = 0x0380;
const GICD_IPRIORITYR: usize = 0x0400;
const GICD_ITARGETSR: usize = 0x0800;
const GICD_ICFGR: usize = 0x0c00;
const GICD_SGIR: usize = 0x0f00;
const GICD_IROUTER: usize = 0x6000;
const GICD_CTLR_RWP: u32 = 1 << 31;

// Redistributor (GICv3): RD_base and SGI_base frames.
const GICR_TYPER: usize = 0x0008;
const GICR_WAKER: usize = 0x0014;
const GICR_SGI: usize = 0x1_0000;
const GICR_TYPER_LAST: u64 = 1 << 4;
const GICR_TYPER_VLPIS: u64 = 1 << 1;
const GICR_WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
const GICR_WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;

// GICv2 CPU interface and virtual interface control.
const GICC_CTLR: usize = 0x0000;
const GICC_PMR: usize = 0x0004;
const GICC_BPR: usize = 0x0008;
const GICC_IAR: usize = 0x000c;
const GICC_EOIR: usize = 0x0010;
const GICC_DIR: usize = 0x1000;
const GICC_CTLR_ENABLE: u32 = 1 << 0;
const GICC_CTLR_EOIMODE_NS: u32 = 1 << 9;
const GICH_HCR: usize = 0x000;
const GICH_VTR: usize = 0x004;
const GICH_VMCR: usize = 0x008;
const GICH_MISR: usize = 0x010;
const GICH_ELRSR0: usize = 0x030;
const GICH_LR0: usize = 0x100;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum GicVersion {
    V2,
    V3,
}

/// Where the GIC's register frames are (from the DTB).
#[derive(Clone, Debug, Default)]
pub struct GicFrames {
    pub gicd: u64,
    /// GICv3: the redistributor regions (base, size).
    pub gicr: alloc::vec::Vec<(u64, u64)>,
    /// GICv2: CPU interface and virtual interface control.
    pub gicc: u64,
    pub gich: u64,
}

struct Gic {
    version: GicVersion,
    frames: GicFrames,
    spi_limit: u32,
    lrs: usize,
}

static GIC: Once<Gic> = Once::new();
/// The exit path's view of `GIC` (version and frame addresses), as plain loads: written once in
/// `init_distributor` before any CPU takes an interrupt or runs a guest.
static IS_V3: AtomicBool = AtomicBool::new(false);
static GICC_BASE: AtomicUsize = AtomicUsize::new(0);
static GICH_BASE: AtomicUsize = AtomicUsize::new(0);
static GICD_BASE: AtomicUsize = AtomicUsize::new(0);
/// Per physical CPU (GICv3): the ICC_SGI1R_EL1 value that targets it, INTID field 0.
static SGI1R_TARGET: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

#[inline]
fn v3() -> bool {
    IS_V3.load(Ordering::Relaxed)
}
#[inline]
fn gicc() -> usize {
    GICC_BASE.load(Ordering::Relaxed)
}
#[inline]
fn gich() -> usize {
    GICH_BASE.load(Ordering::Relaxed)
}
/// Per physical CPU: its redistributor's RD_base (GICv3).
static RD_BASE: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];
/// Per physical CPU: its GICv2 CPU interface bit, as ITARGETSR reports it.
static V2_CPU_MASK: [AtomicU8; MAX_CPUS] = [const { AtomicU8::new(0) }; MAX_CPUS];

fn rd32(a: usize) -> u32 {
    // SAFETY: `a` lies in a GIC register frame from the DTB, mapped device-nGnRE by the EL2 map;
    // 32-bit accesses are what these registers support.
    unsafe { core::ptr::read_volatile(a as *const u32) }
}
fn wr32(a: usize, v: u32) {
    // SAFETY: as in rd32.
    unsafe { core::ptr::write_volatile(a as *mut u32, v) }
}
fn rd64(a: usize) -> u64 {
    // SAFETY: as in rd32, for the 64-bit registers (GICR_TYPER, GICD_IROUTER).
    unsafe { core::ptr::read_volatile(a as *const u64) }
}
fn wr64(a: usize, v: u64) {
    // SAFETY: as in rd64.
    unsafe { core::ptr::write_volatile(a as *mut u64, v) }
}
fn wr8(a: usize, v: u8) {
    // SAFETY: as in rd32; IPRIORITYR and ITARGETSR are byte-accessible.
    unsafe { core::ptr::write_volatile(a as *mut u8, v) }
}

macro_rules! sysreg_write {
    ($reg:literal, $v:expr) => {
        // SAFETY: a GIC CPU-interface system register at EL2; the write has no memory effect.
        unsafe { asm!(concat!("msr ", $reg, ", {}"), in(reg) ($v as u64), options(nostack, preserves_flags)) }
    };
}
macro_rules! sysreg_read {
    ($reg:literal) => {{
        let v: u64;
        // SAFETY: a GIC CPU-interface system register read at EL2.
        unsafe { asm!(concat!("mrs {}, ", $reg), out(reg) v, options(nostack, preserves_flags)) };
        v
    }};
}

fn gic() -> &'static Gic {
    GIC.get().expect("GIC used before init")
}

pub fn version() -> Option<GicVersion> {
    GIC.get().map(|g| g.version)
}

fn dist_wait_rwp(gicd: usize) {
    while rd32(gicd + GICD_CTLR) & GICD_CTLR_RWP != 0 {
        core::hint::spin_loop();
    }
}

/// Sets up the distributor: every SPI group 1, disabled, default priority; then enables it.
/// Called once, on the boot CPU.
pub fn init_distributor(version: GicVersion, frames: GicFrames) {
    let gicd = frames.gicd as usize;
    let lines = ((rd32(gicd + GICD_TYPER) & 0x1f) + 1) * 32;
    let spi_limit = lines.min(1020);
    wr32(gicd + GICD_CTLR, 0);
    if version == GicVersion::V3 {
        dist_wait_rwp(gicd);
    }
    // Group: GICv3 uses Group 1 (non-secure) throughout. GICv2 uses Group 0 throughout: without
    // the Security Extensions that is what GICC_CTLR bit 0 (EnableGrp0) and bit 9 (EOImodeS)
    // govern; with them, non-secure accesses to IGROUPR are ignored and bits 0 and 9 of the
    // non-secure GICC_CTLR are EnableGrp1 and EOImodeNS, so the same values work in both.
    let group = if version == GicVersion::V3 {
        u32::MAX
    } else {
        0
    };
    for i in (32..spi_limit).step_by(32) {
        let n = (i / 32) as usize * 4;
        wr32(gicd + GICD_ICENABLER + n, u32::MAX);
        wr32(gicd + GICD_ICPENDR + n, u32::MAX);
        wr32(gicd + GICD_ICACTIVER + n, u32::MAX);
        wr32(gicd + GICD_IGROUPR + n, group);
    }
    for i in 32..spi_limit as usize {
        wr8(gicd + GICD_IPRIORITYR + i, PRIORITY);
    }
    let lrs = match version {
        GicVersion::V3 => {
            dist_wait_rwp(gicd);
            // EnableGrp1NS | EnableGrp1A | ARE_NS, as Linux writes it (meaningful in both the
            // single- and the two-security-state views).
            wr32(gicd + GICD_CTLR, (1 << 0) | (1 << 1) | (1 << 4));
            dist_wait_rwp(gicd);
            0
        }
        GicVersion::V2 => {
            wr32(gicd + GICD_CTLR, 1);
            (rd32(frames.gich as usize + GICH_VTR) & 0x3f) as usize + 1
        }
    };
    IS_V3.store(version == GicVersion::V3, Ordering::Relaxed);
    GICC_BASE.store(frames.gicc as usize, Ordering::Relaxed);
    GICH_BASE.store(frames.gich as usize, Ordering::Relaxed);
    GICD_BASE.store(frames.gicd as usize, Ordering::Relaxed);
    GIC.call_once(|| Gic {
        version,
        frames,
        spi_limit,
        lrs,
    });
}

/// Sets up this CPU's redistributor (GICv3) and CPU interface, with the kick SGI, the
/// maintenance interrupt and the virtual timer enabled. Every CPU calls it once.
pub fn init_cpu() -> Result<(), &'static str> {
    // The hypervisor timer's interrupt is enabled below: its control is UNKNOWN at reset.
    {
        use aarch64_cpu::registers::{CNTHP_CTL_EL2, Writeable};
        CNTHP_CTL_EL2.set(0);
    }
    let g = gic();
    let me = cpu::current_index();
    match g.version {
        GicVersion::V3 => {
            let rd = find_redistributor(&g.frames.gicr, cpu::mpidr_affinity())
                .ok_or("no GICv3 redistributor matches this CPU's MPIDR")?;
            RD_BASE[me].store(rd, Ordering::Relaxed);
            SGI1R_TARGET[me].store(
                crate::vgic::sgi::Sgi1r::encode_one(cpu::mpidr_affinity(), 0),
                Ordering::Relaxed,
            );
            let w = rd32(rd + GICR_WAKER) & !GICR_WAKER_PROCESSOR_SLEEP;
            wr32(rd + GICR_WAKER, w);
            while rd32(rd + GICR_WAKER) & GICR_WAKER_CHILDREN_ASLEEP != 0 {
                core::hint::spin_loop();
            }
            let sgi = rd + GICR_SGI;
            wr32(sgi + GICD_ICENABLER, u32::MAX);
            wr32(sgi + GICD_ICACTIVER, u32::MAX);
            wr32(sgi + GICD_IGROUPR, u32::MAX);
            for i in 0..32 {
                wr8(sgi + GICD_IPRIORITYR + i, PRIORITY);
            }
            // ICC_SRE_EL2: SRE | DFB | DIB | Enable (EL1 may use its system registers).
            sysreg_write!("icc_sre_el2", 0xfu64);
            aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
            sysreg_write!("icc_pmr_el1", 0xffu64);
            sysreg_write!("icc_bpr1_el1", 0u64);
            sysreg_write!("icc_ctlr_el1", 1u64 << 1); // EOImode: drop priority only
            sysreg_write!("icc_igrpen1_el1", 1u64);
            wr32(
                sgi + GICD_ISENABLER,
                (1 << SGI_KICK)
                    | (1 << PPI_HYP_TIMER)
                    | (1 << PPI_MAINTENANCE)
                    | (1 << PPI_VTIMER)
                    | (1 << PPI_PTIMER)
                    | (1 << PPI_PMU),
            );
        }
        GicVersion::V2 => {
            let gicd = g.frames.gicd as usize;
            let gicc = g.frames.gicc as usize;
            V2_CPU_MASK[me].store(rd32(gicd + GICD_ITARGETSR) as u8, Ordering::Relaxed);
            wr32(gicd + GICD_ICENABLER, u32::MAX);
            wr32(gicd + GICD_ICACTIVER, u32::MAX);
            wr32(gicd + GICD_IGROUPR, 0);
            for i in 0..32 {
                wr8(gicd + GICD_IPRIORITYR + i, PRIORITY);
            }
            wr32(gicc + GICC_PMR, 0xff);
            wr32(gicc + GICC_BPR, 0);
            wr32(gicc + GICC_CTLR, GICC_CTLR_ENABLE | GICC_CTLR_EOIMODE_NS);
            wr32(
                gicd + GICD_ISENABLER,
                (1 << SGI_KICK)
                    | (1 << PPI_HYP_TIMER)
                    | (1 << PPI_MAINTENANCE)
                    | (1 << PPI_VTIMER)
                    | (1 << PPI_PTIMER)
                    | (1 << PPI_PMU),
            );
            // With the Security Extensions, Secure (Group 0) interrupts are RAZ/WI to us (GICv2
            // 4.3.1): the enable did not stick unless the firmware made them Group 1 from EL3.
            if rd32(gicd + GICD_ISENABLER) & (1 << SGI_KICK) == 0 {
                return Err(
                    "its SGIs and PPIs cannot be enabled from EL2: they are Secure \
                            (Group 0), and only the firmware at EL3 can make them Non-secure \
                            (Raspberry Pi 4: enable_gic=1 and no armstub= line in config.txt)",
                );
            }
        }
    }
    Ok(())
}

fn find_redistributor(regions: &[(u64, u64)], affinity: u64) -> Option<usize> {
    let aff32 = ((affinity >> 8) & 0xff00_0000) | (affinity & 0x00ff_ffff);
    for &(base, size) in regions {
        let mut rd = base as usize;
        let end = (base + size) as usize;
        while rd + 0x2_0000 <= end {
            let typer = rd64(rd + GICR_TYPER);
            if typer >> 32 == aff32 {
                return Some(rd);
            }
            if typer & GICR_TYPER_LAST != 0 {
                break;
            }
            rd += if typer & GICR_TYPER_VLPIS != 0 {
                0x4_0000
            } else {
                0x2_0000
            };
        }
    }
    None
}

/// An acknowledged interrupt: its INTID, and the raw IAR value that EOI and deactivation must
/// be given back (GICv2 SGIs carry the source CPU in IAR[12:10]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Acked {
    pub intid: u32,
    raw: u32,
}

/// Acknowledges the highest-priority pending interrupt; `None` when none is pending.
#[inline]
pub fn ack() -> Option<Acked> {
    let (raw, intid) = if v3() {
        let r = sysreg_read!("icc_iar1_el1") as u32 & 0xff_ffff;
        (r, r)
    } else {
        let r = rd32(gicc() + GICC_IAR) & 0x1fff;
        (r, r & 0x3ff)
    };
    (intid < INTID_SPURIOUS).then_some(Acked { intid, raw })
}

/// Drops the running priority (EOImode 1: the interrupt stays active until `deactivate`, or
/// until the guest deactivates the hardware-linked virtual interrupt).
#[inline]
pub fn priority_drop(a: Acked) {
    if v3() {
        sysreg_write!("icc_eoir1_el1", a.raw)
    } else {
        wr32(gicc() + GICC_EOIR, a.raw)
    }
}

#[inline]
pub fn deactivate(a: Acked) {
    if v3() {
        sysreg_write!("icc_dir_el1", a.raw)
    } else {
        wr32(gicc() + GICC_DIR, a.raw)
    }
}

/// Deactivates PPI `intid` of this CPU, taken earlier and left active (a PPI's IAR value is its
/// INTID: only GICv2 SGIs carry a source CPU).
#[inline]
pub fn deactivate_ppi(intid: u32) {
    deactivate(Acked { intid, raw: intid })
}

/// Sends SGI `sgi` to physical CPU `target`.
pub fn send_sgi(target: usize, sgi: u32) {
    if v3() {
        // TargetList bit Aff0 % 16 in range Aff0 / 16 (Sgi1r::encode_one, set up by the
        // target CPU in `init_cpu`).
        let Some(t) = SGI1R_TARGET.get(target) else {
            return;
        };
        let v = t.load(Ordering::Relaxed) | (u64::from(sgi) & 0xf) << 24;
        aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::ISHST);
        sysreg_write!("icc_sgi1r_el1", v);
        aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
    } else {
        let Some(mask) = V2_CPU_MASK.get(target) else {
            return;
        };
        let m = mask.load(Ordering::Relaxed) as u32;
        aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::ISHST);
        wr32(
            GICD_BASE.load(Ordering::Relaxed) + GICD_SGIR,
            (m << 16) | (sgi & 0xf),
        );
    }
}

/// Routes SPI `intid` to physical CPU `target`, sets its trigger and enables it.
pub fn enable_spi(intid: u32, target: usize, edge: bool) {
    let g = gic();
    if intid < 32 || intid >= g.spi_limit {
        return;
    }
    let gicd = g.frames.gicd as usize;
    let cfg = gicd + GICD_ICFGR + (intid as usize / 16) * 4;
    let shift = (intid % 16) * 2 + 1;
    let v = rd32(cfg);
    wr32(
        cfg,
        if edge {
            v | (1 << shift)
        } else {
            v & !(1 << shift)
        },
    );
    match g.version {
        GicVersion::V3 => {
            let mpidr = cpu::percpu(target)
                .map(|p| p.mpidr.load(Ordering::Relaxed))
                .unwrap_or(0);
            wr64(
                gicd + GICD_IROUTER + intid as usize * 8,
                mpidr & 0xff_00ff_ffff,
            );
        }
        GicVersion::V2 => {
            let m = V2_CPU_MASK
                .get(target)
                .map(|m| m.load(Ordering::Relaxed))
                .unwrap_or(1);
            wr8(gicd + GICD_ITARGETSR + intid as usize, m);
        }
    }
    wr32(
        gicd + GICD_ISENABLER + (intid as usize / 32) * 4,
        1 << (intid % 32),
    );
}

/// Sets the trigger mode of SPI `intid` (GICD_ICFGR Int_config[1]: 1 = edge), disabling it
/// around the change (changing the configuration of an enabled interrupt is UNPREDICTABLE,
/// IHI 0069H and IHI 0048B, GICD_ICFGR<n>).
pub fn set_spi_trigger(intid: u32, edge: bool) {
    let g = gic();
    if intid < 32 || intid >= g.spi_limit {
        return;
    }
    let gicd = g.frames.gicd as usize;
    let cfg = gicd + GICD_ICFGR + (intid as usize / 16) * 4;
    let bit = 1 << ((intid % 16) * 2 + 1);
    let old = rd32(cfg);
    if (old & bit != 0) == edge {
        return;
    }
    let en_word = (intid as usize / 32) * 4;
    let en_bit = 1 << (intid % 32);
    let enabled = rd32(gicd + GICD_ISENABLER + en_word) & en_bit != 0;
    if enabled {
        wr32(gicd + GICD_ICENABLER + en_word, en_bit);
        if g.version == GicVersion::V3 {
            dist_wait_rwp(gicd);
        }
    }
    wr32(cfg, if edge { old | bit } else { old & !bit });
    if enabled {
        wr32(gicd + GICD_ISENABLER + en_word, en_bit);
    }
}

/// Disables interrupt `intid` at the GIC: an SPI at the distributor, an SGI/PPI at this CPU's
/// redistributor (GICv3) or banked distributor register (GICv2).
pub fn disable(intid: u32) {
    if intid >= 32 {
        return disable_spi(intid);
    }
    match gic().version {
        GicVersion::V3 => {
            let rd = RD_BASE[cpu::current_index()].load(Ordering::Relaxed);
            if rd != 0 {
                wr32(rd + GICR_SGI + GICD_ICENABLER, 1 << intid);
            }
        }
        GicVersion::V2 => wr32(gic().frames.gicd as usize + GICD_ICENABLER, 1 << intid),
    }
}

pub fn disable_spi(intid: u32) {
    let g = gic();
    if intid < 32 || intid >= g.spi_limit {
        return;
    }
    wr32(
        g.frames.gicd as usize + GICD_ICENABLER + (intid as usize / 32) * 4,
        1 << (intid % 32),
    );
}

// ---- Virtualization control interface ----

/// Number of list registers.
pub fn lr_count() -> usize {
    match gic().version {
        GicVersion::V3 => (sysreg_read!("ich_vtr_el2") & 0x1f) as usize + 1,
        GicVersion::V2 => gic().lrs,
    }
}

macro_rules! ich_lr {
    (read $i:expr) => {
        match $i {
            0 => sysreg_read!("ich_lr0_el2"),
            1 => sysreg_read!("ich_lr1_el2"),
            2 => sysreg_read!("ich_lr2_el2"),
            3 => sysreg_read!("ich_lr3_el2"),
            4 => sysreg_read!("ich_lr4_el2"),
            5 => sysreg_read!("ich_lr5_el2"),
            6 => sysreg_read!("ich_lr6_el2"),
            7 => sysreg_read!("ich_lr7_el2"),
            8 => sysreg_read!("ich_lr8_el2"),
            9 => sysreg_read!("ich_lr9_el2"),
            10 => sysreg_read!("ich_lr10_el2"),
            11 => sysreg_read!("ich_lr11_el2"),
            12 => sysreg_read!("ich_lr12_el2"),
            13 => sysreg_read!("ich_lr13_el2"),
            14 => sysreg_read!("ich_lr14_el2"),
            _ => sysreg_read!("ich_lr15_el2"),
        }
    };
    (write $i:expr, $v:expr) => {
        match $i {
            0 => sysreg_write!("ich_lr0_el2", $v),
            1 => sysreg_write!("ich_lr1_el2", $v),
            2 => sysreg_write!("ich_lr2_el2", $v),
            3 => sysreg_write!("ich_lr3_el2", $v),
            4 => sysreg_write!("ich_lr4_el2", $v),
            5 => sysreg_write!("ich_lr5_el2", $v),
            6 => sysreg_write!("ich_lr6_el2", $v),
            7 => sysreg_write!("ich_lr7_el2", $v),
            8 => sysreg_write!("ich_lr8_el2", $v),
            9 => sysreg_write!("ich_lr9_el2", $v),
            10 => sysreg_write!("ich_lr10_el2", $v),
            11 => sysreg_write!("ich_lr11_el2", $v),
            12 => sysreg_write!("ich_lr12_el2", $v),
            13 => sysreg_write!("ich_lr13_el2", $v),
            14 => sysreg_write!("ich_lr14_el2", $v),
            _ => sysreg_write!("ich_lr15_el2", $v),
        }
    };
}

/// Raw list register `i` (ICH_LR<i>_EL2, or GICH_LR<i> zero-extended).
#[inline]
pub fn read_lr(i: usize) -> u64 {
    if v3() {
        ich_lr!(read i)
    } else {
        rd32(gich() + GICH_LR0 + i * 4) as u64
    }
}

#[inline]
pub fn write_lr(i: usize, v: u64) {
    if v3() {
        ich_lr!(write i, v)
    } else {
        wr32(gich() + GICH_LR0 + i * 4, v as u32)
    }
}

/// Bit i set when list register i holds no interrupt (ICH_ELRSR_EL2 / GICH_ELRSR0).
#[inline]
pub fn empty_lrs() -> u64 {
    if v3() {
        sysreg_read!("ich_elrsr_el2")
    } else {
        rd32(gich() + GICH_ELRSR0) as u64
    }
}

/// ICH_HCR_EL2 / GICH_HCR (En, UIE, ... in the same bit positions in both versions).
#[inline]
pub fn write_hcr(v: u64) {
    if v3() {
        sysreg_write!("ich_hcr_el2", v)
    } else {
        wr32(gich() + GICH_HCR, v as u32)
    }
}

#[inline]
pub fn read_misr() -> u64 {
    match gic().version {
        GicVersion::V3 => sysreg_read!("ich_misr_el2"),
        GicVersion::V2 => rd32(gic().frames.gich as usize + GICH_MISR) as u64,
    }
}

/// ICH_VMCR_EL2 / GICH_VMCR: the guest's view of its CPU interface control.
pub fn write_vmcr(v: u64) {
    match gic().version {
        GicVersion::V3 => sysreg_write!("ich_vmcr_el2", v),
        GicVersion::V2 => wr32(gic().frames.gich as usize + GICH_VMCR, v as u32),
    }
}

/// Clears the active-priority registers and every list register (a vCPU starting afresh).
pub fn reset_virtual_interface() {
    for i in 0..lr_count() {
        write_lr(i, 0);
    }
    match gic().version {
        GicVersion::V3 => {
            sysreg_write!("ich_ap1r0_el2", 0u64);
            sysreg_write!("ich_ap0r0_el2", 0u64);
        }
        GicVersion::V2 => wr32(gic().frames.gich as usize + 0xf0, 0),
    }
    write_vmcr(0);
}

/// ICH_EISR_EL2 / GICH_EISR0: list registers with an outstanding EOI maintenance interrupt.
#[inline]
pub fn eoi_lrs() -> u64 {
    if v3() {
        sysreg_read!("ich_eisr_el2")
    } else {
        rd32(gich() + 0x020) as u64
    }
}

/// The virtual interface's enable bit (ICH_HCR_EL2.En / GICH_HCR.En) and underflow enable.
const HCR_EN: u64 = 1 << 0;
const HCR_UIE: u64 = 1 << 1;

/// This CPU's list registers, as the vGIC's exit-path algorithm sees them.
pub struct HwListRegisters {
    count: usize,
    hcr: u64,
}

impl HwListRegisters {
    /// Enables the virtual CPU interface on this CPU with every list register cleared.
    pub fn new() -> Self {
        reset_virtual_interface();
        write_hcr(HCR_EN);
        Self {
            count: lr_count(),
            hcr: HCR_EN,
        }
    }
}

impl Default for HwListRegisters {
    fn default() -> Self {
        Self::new()
    }
}

impl crate::vgic::ListRegisters for HwListRegisters {
    fn format(&self) -> crate::vgic::LrFormat {
        if v3() {
            crate::vgic::LrFormat::V3
        } else {
            crate::vgic::LrFormat::V2
        }
    }
    fn count(&self) -> usize {
        self.count
    }
    fn read(&self, i: usize) -> u64 {
        read_lr(i)
    }
    fn write(&mut self, i: usize, value: u64) {
        write_lr(i, value)
    }
    fn empty_mask(&self) -> u64 {
        empty_lrs() & ((1u64 << self.count) - 1)
    }
    fn eoi_mask(&self) -> u64 {
        eoi_lrs()
    }
    fn set_underflow_irq(&mut self, on: bool) {
        let v = if on {
            self.hcr | HCR_UIE
        } else {
            self.hcr & !HCR_UIE
        };
        if v != self.hcr {
            self.hcr = v;
            write_hcr(v);
        }
    }
    fn deactivate(&mut self, pintid: u32) {
        if pintid < 32 {
            deactivate_ppi(pintid);
        } else {
            // Possibly taken on another CPU (a passthrough SPI is routed to the VM's first):
            // clear it at the distributor.
            clear_active_spi(pintid);
        }
    }
    fn line_level(&self, pintid: u32) -> bool {
        use aarch64_cpu::registers::{CNTP_CTL_EL0, CNTV_CTL_EL0, Readable};
        // The timer output (Arm ARM D11.2.4): condition met, enabled and not masked.
        match pintid {
            PPI_VTIMER => {
                let c = CNTV_CTL_EL0.extract();
                c.is_set(CNTV_CTL_EL0::ENABLE)
                    && c.is_set(CNTV_CTL_EL0::ISTATUS)
                    && !c.is_set(CNTV_CTL_EL0::IMASK)
            }
            PPI_PTIMER => {
                let c = CNTP_CTL_EL0.extract();
                c.is_set(CNTP_CTL_EL0::ENABLE)
                    && c.is_set(CNTP_CTL_EL0::ISTATUS)
                    && !c.is_set(CNTP_CTL_EL0::IMASK)
            }
            // No way to sample: assume still high (the physical GIC re-signals on completion).
            _ => true,
        }
    }
}

/// Switches the virtual CPU interface off on this CPU (no vCPU runs here any more).
pub fn disable_virtual_interface() {
    reset_virtual_interface();
    write_hcr(0);
}

/// Clears the active state of SGI/PPI `intid` on this CPU (through the redistributor or the
/// banked distributor register), whether or not it was active.
pub fn clear_active_private(intid: u32) {
    if intid >= 32 {
        return;
    }
    match gic().version {
        GicVersion::V3 => {
            let rd = RD_BASE[cpu::current_index()].load(Ordering::Relaxed);
            if rd != 0 {
                wr32(rd + GICR_SGI + GICD_ICACTIVER, 1 << intid);
            }
        }
        GicVersion::V2 => wr32(gic().frames.gicd as usize + GICD_ICACTIVER, 1 << intid),
    }
}

/// Clears the active state of SPI `intid` (a passthrough interrupt its VM left active).
pub fn clear_active_spi(intid: u32) {
    spi_write(GICD_ICACTIVER, intid);
}

/// Sets physical SPI `intid` active (GICD_ISACTIVER), as if taken but not deactivated.
pub fn set_active_spi(intid: u32) {
    spi_write(GICD_ISACTIVER, intid);
}

/// Clears physical SPI `intid`'s pending state (GICD_ICPENDR; a level-sensitive one whose
/// line is still asserted stays pending).
pub fn clear_pending_spi(intid: u32) {
    spi_write(GICD_ICPENDR, intid);
}

/// Writes SPI `intid`'s bit of the set/clear register array at `reg` in the distributor
/// (same layout in GICv2 and GICv3). Not an SPI of this GIC: nothing.
fn spi_write(reg: usize, intid: u32) {
    let g = gic();
    if intid < 32 || intid >= g.spi_limit {
        return;
    }
    let gicd = g.frames.gicd as usize;
    wr32(gicd + reg + (intid as usize / 32) * 4, 1 << (intid % 32));
}

/// PPI of the EL2 physical timer (CNTHP), the scheduler's time-slice and wake-up timer on a
/// shared CPU (the DT's hypervisor-timer interrupt on QEMU virt and the Raspberry Pi 4).
pub const PPI_HYP_TIMER: u32 = 26;

/// Most list registers a saved virtual interface holds (GICv3 has at most 16; a GICv2 with
/// more than 16 is not known to exist, and the extra ones are left unused by `lr_count`).
pub const SAVED_LRS: usize = 16;

/// A vCPU's virtual CPU interface while another vCPU uses this CPU's (GIC v3 Arm IHI 0069
/// 12.4: ICH_LR<n>_EL2, ICH_AP0R<n>/ICH_AP1R<n>_EL2, ICH_VMCR_EL2, ICH_HCR_EL2; GICv2 Arm IHI
/// 0048 5.3: GICH_LR<n>, GICH_APR, GICH_VMCR, GICH_HCR). Active interrupts cannot leave the
/// list registers without losing their active priority, so the raw registers move with the vCPU.
#[derive(Clone, Copy, Default, Debug)]
pub struct VirtualInterface {
    pub lrs: [u64; SAVED_LRS],
    /// GICv3: AP0R0..3 then AP1R0..3 (those ICH_VTR_EL2.PREbits implements); GICv2: [0] = APR.
    pub aprs: [u64; 8],
    pub vmcr: u64,
    pub hcr: u64,
}

/// Number of ICH_AP0R<n>_EL2 (and AP1R) registers: 1, 2 or 4 for 5, 6 or 7 preemption bits.
fn v3_apr_count() -> usize {
    match (sysreg_read!("ich_vtr_el2") >> 29) & 7 {
        6 => 4,
        5 => 2,
        _ => 1,
    }
}

/// Saves this CPU's virtual interface into `s` and leaves it disabled and empty.
pub fn save_virtual_interface(s: &mut VirtualInterface) {
    let n = lr_count().min(SAVED_LRS);
    for (i, lr) in s.lrs.iter_mut().enumerate().take(n) {
        *lr = read_lr(i);
    }
    match gic().version {
        GicVersion::V3 => {
            let aprs = v3_apr_count();
            s.aprs[0] = sysreg_read!("ich_ap0r0_el2");
            s.aprs[4] = sysreg_read!("ich_ap1r0_el2");
            if aprs > 1 {
                s.aprs[1] = sysreg_read!("ich_ap0r1_el2");
                s.aprs[5] = sysreg_read!("ich_ap1r1_el2");
            }
            if aprs > 2 {
                s.aprs[2] = sysreg_read!("ich_ap0r2_el2");
                s.aprs[3] = sysreg_read!("ich_ap0r3_el2");
                s.aprs[6] = sysreg_read!("ich_ap1r2_el2");
                s.aprs[7] = sysreg_read!("ich_ap1r3_el2");
            }
            s.vmcr = sysreg_read!("ich_vmcr_el2");
            s.hcr = sysreg_read!("ich_hcr_el2");
        }
        GicVersion::V2 => {
            let h = gic().frames.gich as usize;
            s.aprs[0] = rd32(h + 0xf0) as u64;
            s.vmcr = rd32(h + GICH_VMCR) as u64;
            s.hcr = rd32(h + GICH_HCR) as u64;
        }
    }
    write_hcr(0);
    for i in 0..n {
        write_lr(i, 0);
    }
}

/// Loads a virtual interface saved by [`save_virtual_interface`].
pub fn restore_virtual_interface(s: &VirtualInterface) {
    let n = lr_count().min(SAVED_LRS);
    for (i, &lr) in s.lrs.iter().enumerate().take(n) {
        write_lr(i, lr);
    }
    match gic().version {
        GicVersion::V3 => {
            let aprs = v3_apr_count();
            sysreg_write!("ich_ap0r0_el2", s.aprs[0]);
            sysreg_write!("ich_ap1r0_el2", s.aprs[4]);
            if aprs > 1 {
                sysreg_write!("ich_ap0r1_el2", s.aprs[1]);
                sysreg_write!("ich_ap1r1_el2", s.aprs[5]);
            }
            if aprs > 2 {
                sysreg_write!("ich_ap0r2_el2", s.aprs[2]);
                sysreg_write!("ich_ap0r3_el2", s.aprs[3]);
                sysreg_write!("ich_ap1r2_el2", s.aprs[6]);
                sysreg_write!("ich_ap1r3_el2", s.aprs[7]);
            }
        }
        GicVersion::V2 => wr32(gic().frames.gich as usize + 0xf0, s.aprs[0] as u32),
    }
    write_vmcr(s.vmcr);
    write_hcr(s.hcr);
}

/// Whether list register value `lr` holds a pending interrupt (GICv3 ICH_LR State [63:62],
/// GICv2 GICH_LR State [29:28]: bit 0 of the field is "pending").
pub fn lr_pending(lr: u64) -> bool {
    if v3() {
        lr & (1 << 62) != 0
    } else {
        lr & (1 << 28) != 0
    }
}

/// The active bits of this CPU's SGIs and PPIs (GICR_ISACTIVER0 / banked GICD_ISACTIVER0).
pub fn private_active() -> u32 {
    match gic().version {
        GicVersion::V3 => {
            let rd = RD_BASE[cpu::current_index()].load(Ordering::Relaxed);
            if rd == 0 {
                return 0;
            }
            rd32(rd + GICR_SGI + GICD_ISACTIVER)
        }
        GicVersion::V2 => rd32(gic().frames.gicd as usize + GICD_ISACTIVER),
    }
}

/// Makes the private interrupts in `bits` active on this CPU (a vCPU's hardware-linked
/// interrupts coming back with it).
pub fn set_private_active(bits: u32) {
    if bits == 0 {
        return;
    }
    match gic().version {
        GicVersion::V3 => {
            let rd = RD_BASE[cpu::current_index()].load(Ordering::Relaxed);
            if rd != 0 {
                wr32(rd + GICR_SGI + GICD_ISACTIVER, bits);
            }
        }
        GicVersion::V2 => wr32(gic().frames.gicd as usize + GICD_ISACTIVER, bits),
    }
}
