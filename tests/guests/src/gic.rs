//! A minimal GICv3 set-up for one PPI (the virtual timer): distributor enable, this CPU's
//! redistributor woken and the PPI enabled in Group 1, and the CPU interface through the ICC_*
//! system registers. References: Arm IHI 0069 (GICv3/v4 architecture specification), chapter
//! 12 (register descriptions) and 4.7 (power management: GICR_WAKER).
use core::arch::asm;

use crate::mmio;

/// GICD_CTLR and its fields (IHI0069 12.9.4). In a single security state (DS = 1, what a VM and
/// QEMU without `secure=on` show): EnableGrp0 [0], EnableGrp1 [1], ARE [4]. Seen from Non-secure
/// with DS = 0: EnableGrp1 [0], EnableGrp1A [1], ARE_NS [4]. Setting all three works in both.
pub const GICD_CTLR: u64 = 0x0000;
pub const GICD_CTLR_ENABLE_G0_OR_G1NS: u32 = 1 << 0;
pub const GICD_CTLR_ENABLE_G1: u32 = 1 << 1;
pub const GICD_CTLR_ARE: u32 = 1 << 4;
/// Register Write Pending [31].
pub const GICD_CTLR_RWP: u32 = 1 << 31;
/// GICD_TYPER (IHI0069 12.9.38).
pub const GICD_TYPER: u64 = 0x0004;

/// RD_base frame registers (IHI0069 12.11).
pub const GICR_TYPER: u64 = 0x0008;
/// GICR_TYPER.Last [4]: the last redistributor of its region; VLPIS [1]: GICv4 VLPI frames
/// (then each redistributor has four 64 KiB frames instead of two).
pub const GICR_TYPER_LAST: u64 = 1 << 4;
pub const GICR_TYPER_VLPIS: u64 = 1 << 1;
/// GICR_WAKER: ProcessorSleep [1], ChildrenAsleep [2] (IHI0069 12.11.40).
pub const GICR_WAKER: u64 = 0x0014;
pub const GICR_WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
pub const GICR_WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;
/// The SGI_base frame follows RD_base.
pub const GICR_SGI_BASE: u64 = 0x1_0000;
/// SGI_base registers (IHI0069 12.12): one bit / byte per INTID 0..31.
pub const GICR_IGROUPR0: u64 = 0x0080;
pub const GICR_ISENABLER0: u64 = 0x0100;
pub const GICR_ICENABLER0: u64 = 0x0180;
pub const GICR_IPRIORITYR: u64 = 0x0400;

/// INTIDs 1020-1023 are special (IHI0069 2.2.1); 1023 = spurious.
pub const INTID_SPURIOUS: u32 = 1023;

const POLL_LIMIT: u32 = 1_000_000;

/// The affinity of this CPU, MPIDR_EL1 Aff3 [39:32], Aff2 [23:16], Aff1 [15:8], Aff0 [7:0]
/// (Arm ARM D24.2.117), other bits cleared.
pub fn mpidr() -> u64 {
    let v: u64;
    // SAFETY: reading MPIDR_EL1 has no side effects.
    unsafe { asm!("mrs {}, mpidr_el1", out(reg) v, options(nomem, nostack)) };
    v & 0xff_00ff_ffff
}

/// MPIDR affinity -> GICR_TYPER.Affinity_Value [63:32] layout (Aff3.Aff2.Aff1.Aff0).
pub fn gicr_affinity(mpidr: u64) -> u64 {
    ((mpidr >> 32) & 0xff) << 24 | (mpidr & 0xff_ffff)
}

/// The RD_base of the redistributor whose GICR_TYPER affinity matches `mpidr`, searching the
/// region `[gicr, gicr + size)` (stops at GICR_TYPER.Last).
pub fn find_redistributor(gicr: u64, size: u64, mpidr: u64) -> Option<u64> {
    let want = gicr_affinity(mpidr);
    let mut rd = gicr;
    while rd + 0x2_0000 <= gicr.saturating_add(size.max(0x2_0000)) {
        // SAFETY: rd lies inside the redistributor region the DTB describes; GICR_TYPER is a
        // 64-bit read-only register (IHI0069 12.11.37 allows 64-bit access).
        let typer = unsafe { mmio::read64(rd + GICR_TYPER) };
        if typer >> 32 == want {
            return Some(rd);
        }
        if typer & GICR_TYPER_LAST != 0 {
            return None;
        }
        rd += if typer & GICR_TYPER_VLPIS != 0 {
            0x4_0000
        } else {
            0x2_0000
        };
    }
    None
}

/// Enables the distributor (affinity routing, both groups) and waits for RWP.
pub fn enable_distributor(gicd: u64) -> Result<(), &'static str> {
    // SAFETY: GICD_CTLR of this guest's distributor; enabling groups and ARE is what a kernel
    // does at boot.
    unsafe {
        let v = mmio::read32(gicd + GICD_CTLR);
        mmio::write32(
            gicd + GICD_CTLR,
            v | GICD_CTLR_ARE | GICD_CTLR_ENABLE_G1 | GICD_CTLR_ENABLE_G0_OR_G1NS,
        );
    }
    for _ in 0..POLL_LIMIT {
        // SAFETY: as above; a read has no side effects.
        if unsafe { mmio::read32(gicd + GICD_CTLR) } & GICD_CTLR_RWP == 0 {
            return Ok(());
        }
    }
    Err("GICD_CTLR.RWP stuck")
}

/// Wakes a redistributor: clear GICR_WAKER.ProcessorSleep, wait for ChildrenAsleep to clear.
pub fn wake_redistributor(rd: u64) -> Result<(), &'static str> {
    // SAFETY: this CPU's redistributor (found by affinity); waking it is the boot sequence of
    // IHI0069 4.7.1.
    unsafe {
        let w = mmio::read32(rd + GICR_WAKER);
        mmio::write32(rd + GICR_WAKER, w & !GICR_WAKER_PROCESSOR_SLEEP);
    }
    for _ in 0..POLL_LIMIT {
        // SAFETY: as above.
        if unsafe { mmio::read32(rd + GICR_WAKER) } & GICR_WAKER_CHILDREN_ASLEEP == 0 {
            return Ok(());
        }
    }
    Err("GICR_WAKER.ChildrenAsleep stuck")
}

/// Puts PPI/SGI `intid` (< 32) in Group 1 with `priority` and enables it.
pub fn enable_private_irq(rd: u64, intid: u32, priority: u8) {
    debug_assert!(intid < 32);
    let sgi = rd + GICR_SGI_BASE;
    let prio_word = sgi + GICR_IPRIORITYR + u64::from(intid & !3);
    let shift = (intid & 3) * 8;
    // SAFETY: this CPU's SGI_base frame; 32-bit accesses to IGROUPR0, IPRIORITYR<n> and
    // ISENABLER0 are architected (IHI0069 12.12).
    unsafe {
        let g = mmio::read32(sgi + GICR_IGROUPR0);
        mmio::write32(sgi + GICR_IGROUPR0, g | 1 << intid);
        let p = mmio::read32(prio_word);
        mmio::write32(
            prio_word,
            (p & !(0xff << shift)) | u32::from(priority) << shift,
        );
        mmio::write32(sgi + GICR_ISENABLER0, 1 << intid);
    }
}

/// The CPU interface: system-register access (ICC_SRE_EL1.SRE [0], IHI0069 12.2.21), priority
/// mask open (ICC_PMR_EL1 = 0xff), binary point 0, EOImode 0 (EOI drops priority and
/// deactivates), Group 1 enabled (ICC_IGRPEN1_EL1.Enable [0]).
pub fn init_cpu_interface() -> Result<(), &'static str> {
    let sre: u64;
    // SAFETY: programs this CPU's GIC CPU interface; no memory effects.
    unsafe {
        asm!(
            "mrs {t}, icc_sre_el1",
            "orr {t}, {t}, #1",
            "msr icc_sre_el1, {t}",
            "isb",
            "mrs {t}, icc_sre_el1",
            t = out(reg) sre,
            options(nomem, nostack),
        )
    };
    if sre & 1 == 0 {
        return Err("ICC_SRE_EL1.SRE reads 0: no system-register GIC interface");
    }
    // SAFETY: as above.
    unsafe {
        asm!(
            "msr icc_pmr_el1, {pmr}",
            "msr icc_bpr1_el1, xzr",
            "mrs {t}, icc_ctlr_el1",
            "bic {t}, {t}, #2",
            "msr icc_ctlr_el1, {t}",
            "msr icc_igrpen1_el1, {one}",
            "isb",
            pmr = in(reg) 0xffu64,
            one = in(reg) 1u64,
            t = out(reg) _,
            options(nomem, nostack),
        )
    };
    Ok(())
}

/// Acknowledges the highest-priority pending Group 1 interrupt (ICC_IAR1_EL1).
pub fn ack() -> u32 {
    let v: u64;
    // SAFETY: acknowledging an interrupt changes only GIC state; no memory effects.
    unsafe { asm!("mrs {}, icc_iar1_el1", out(reg) v, options(nomem, nostack)) };
    (v & 0xff_ffff) as u32
}

/// Ends interrupt `intid` (ICC_EOIR1_EL1; with EOImode 0 this also deactivates it).
pub fn eoi(intid: u32) {
    // SAFETY: as `ack`.
    unsafe { asm!("msr icc_eoir1_el1, {}", "isb", in(reg) intid as u64, options(nomem, nostack)) };
}

/// Everything the virtual-timer PPI needs on the calling CPU: distributor, redistributor (found
/// by MPIDR), INTID 27 in Group 1 at priority 0xa0, CPU interface.
pub fn setup_vtimer_irq(gicd: u64, gicr: u64, gicr_size: u64) -> Result<(), &'static str> {
    enable_distributor(gicd)?;
    let rd = find_redistributor(gicr, gicr_size, mpidr()).ok_or("no redistributor for this CPU")?;
    wake_redistributor(rd)?;
    enable_private_irq(rd, crate::timer::VTIMER_INTID, 0xa0);
    init_cpu_interface()
}
