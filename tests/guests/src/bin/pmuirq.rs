//! The PMU and its overflow interrupt: the guest DTB must describe an `arm,armv8-pmuv3` with
//! its PPI, and an overflow of the cycle counter must reach the guest as that interrupt (INTID
//! 23) through its GIC (GICv3 or GICv2), once per overflow.
//!
//! The cycle counter (32-bit overflow, PMCR_EL0.LC = 0) starts at 0xffff_0000 with its overflow
//! interrupt enabled; the guest waits (IRQs unmasked, 1 s at most) for the interrupt, whose
//! handler acknowledges it, reads and clears the overflow flag (PMOVSCLR_EL0) and ends it; then
//! waits 100 ms more: no second interrupt may come (the next overflow is 2^32 cycles away).
//!
//! Output:
//! ```text
//! PMUIRQ: dtb pmu <compatible> interrupts <c0> <c1> <c2>     (or `dtb pmu none`)
//! PMUIRQ: gic v3|v2
//! PMUIRQ: irqs <n> intid <first intid> pmovs <PMOVSSET at the first interrupt> wait_us <us>
//! PMUIRQ: done
//! ```
#![no_std]
#![no_main]

use core::arch::asm;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use kestrel_test_guests::dt::{self, Gic};
use kestrel_test_guests::{exception, gic, mmio, println, system_off, timer};

const PMU_INTID: u32 = 23;

/// GICv2 registers (IHI 0048B): distributor GICD_CTLR 0x000, ISENABLER0 0x100, IPRIORITYR
/// 0x400; CPU interface GICC_CTLR 0x000, PMR 0x004, IAR 0x00c, EOIR 0x010.
const GICD_ISENABLER0: u64 = 0x100;
const GICD_IPRIORITYR: u64 = 0x400;
const GICC_PMR: u64 = 0x004;
const GICC_IAR: u64 = 0x00c;
const GICC_EOIR: u64 = 0x010;

static GICC: AtomicU64 = AtomicU64::new(0);
static IRQS: AtomicUsize = AtomicUsize::new(0);
static FIRST: AtomicU32 = AtomicU32::new(0);
static PMOVS: AtomicU64 = AtomicU64::new(0);

fn ack() -> u32 {
    match GICC.load(Ordering::Relaxed) {
        0 => gic::ack(),
        // SAFETY: GICC_IAR of this guest's GICv2 CPU interface.
        c => (unsafe { mmio::read32(c + GICC_IAR) }) & 0x3ff,
    }
}

fn eoi(intid: u32) {
    match GICC.load(Ordering::Relaxed) {
        0 => gic::eoi(intid),
        // SAFETY: GICC_EOIR of this guest's GICv2 CPU interface.
        c => unsafe { mmio::write32(c + GICC_EOIR, intid) },
    }
}

fn on_irq() {
    let intid = ack();
    if intid >= 1020 {
        return;
    }
    let n = IRQS.load(Ordering::Relaxed);
    if n == 0 {
        FIRST.store(intid, Ordering::Relaxed);
        let ovs: u64;
        // SAFETY: PMU registers of this guest: read the overflow flags, clear the cycle
        // counter's (PMOVSCLR_EL0 bit 31), which lowers the interrupt line.
        unsafe {
            asm!("mrs {v}, pmovsset_el0", "msr pmovsclr_el0, {c}", "isb",
                v = out(reg) ovs, c = in(reg) 1u64 << 31, options(nomem, nostack))
        };
        PMOVS.store(ovs, Ordering::Relaxed);
    }
    IRQS.store(n + 1, Ordering::Relaxed);
    eoi(intid);
}

fn setup_gic(dtb: usize) -> Result<&'static str, &'static str> {
    match dt::gic(dtb).ok_or("no GIC in the DTB")? {
        Gic::V3 {
            gicd,
            gicr,
            gicr_size,
        } => {
            gic::enable_distributor(gicd)?;
            let rd =
                gic::find_redistributor(gicr, gicr_size, gic::mpidr()).ok_or("no redistributor")?;
            gic::wake_redistributor(rd)?;
            gic::enable_private_irq(rd, PMU_INTID, 0xa0);
            gic::init_cpu_interface()?;
            Ok("v3")
        }
        Gic::V2 { gicd, gicc } => {
            GICC.store(gicc, Ordering::Relaxed);
            // SAFETY: this guest's GICv2 distributor and CPU interface: enable the
            // distributor, PPI 23 (banked ISENABLER0) at priority 0xa0, the CPU interface with
            // the priority mask open.
            unsafe {
                mmio::write32(gicd, 1);
                let p = gicd + GICD_IPRIORITYR + u64::from(PMU_INTID & !3);
                let shift = (PMU_INTID & 3) * 8;
                let v = mmio::read32(p);
                mmio::write32(p, (v & !(0xff << shift)) | (0xa0 << shift));
                mmio::write32(gicd + GICD_ISENABLER0, 1 << PMU_INTID);
                mmio::write32(gicc + GICC_PMR, 0xff);
                mmio::write32(gicc, 1);
            }
            Ok("v2")
        }
    }
}

fn describe_pmu(dtb: usize) {
    let Some(f) = dt::fdt(dtb) else {
        return println!("PMUIRQ: dtb pmu none (no DTB)");
    };
    let Some(n) = f.find_node("/pmu") else {
        return println!("PMUIRQ: dtb pmu none");
    };
    let compat = n.compatible().and_then(|c| c.all().next()).unwrap_or("?");
    let cells: [u32; 3] = n
        .property("interrupts")
        .filter(|p| p.value.len() >= 12)
        .map(|p| {
            let c = |i: usize| {
                u32::from_be_bytes(p.value[i * 4..i * 4 + 4].try_into().unwrap_or([0; 4]))
            };
            [c(0), c(1), c(2)]
        })
        .unwrap_or([0; 3]);
    println!(
        "PMUIRQ: dtb pmu {compat} interrupts {} {} {:#x}",
        cells[0], cells[1], cells[2]
    );
}

fn wait_ms(ms: u64, mut done: impl FnMut() -> bool) -> u64 {
    let start = timer::cntvct();
    let end = start + timer::cntfrq() * ms / 1000;
    while timer::cntvct() < end && !done() {
        core::hint::spin_loop();
    }
    timer::ticks_to_ns(timer::cntvct() - start, timer::cntfrq()) / 1000
}

#[unsafe(no_mangle)]
fn guest_main(dtb: usize) -> ! {
    describe_pmu(dtb);
    match setup_gic(dtb) {
        Ok(v) => println!("PMUIRQ: gic {v}"),
        Err(e) => {
            println!("PMUIRQ: GIC set-up failed: {e}");
            system_off()
        }
    }
    exception::set_irq_handler(on_irq);
    // SAFETY: this guest's PMU: cycle counter filter 0 (count at EL0 and EL1), counter value
    // just below its 32-bit overflow, overflow interrupt and counter enabled, PMCR_EL0.E = 1
    // with LC = 0; then IRQs unmasked.
    unsafe {
        asm!(
            "msr pmccfiltr_el0, xzr",
            "msr pmccntr_el0, {start}",
            "msr pmintenset_el1, {bit}",
            "msr pmcntenset_el0, {bit}",
            "msr pmcr_el0, {e}",
            "isb",
            "msr daifclr, #2",
            start = in(reg) 0xffff_0000u64,
            bit = in(reg) 1u64 << 31,
            e = in(reg) 1u64,
            options(nomem, nostack)
        )
    };
    let us = wait_ms(1000, || IRQS.load(Ordering::Relaxed) > 0);
    wait_ms(100, || false);
    // SAFETY: masks IRQs again and stops the counter.
    unsafe {
        asm!(
            "msr daifset, #2",
            "msr pmcr_el0, xzr",
            "isb",
            options(nomem, nostack)
        )
    };
    println!(
        "PMUIRQ: irqs {} intid {} pmovs {:#x} wait_us {us}",
        IRQS.load(Ordering::Relaxed),
        FIRST.load(Ordering::Relaxed),
        PMOVS.load(Ordering::Relaxed)
    );
    println!("PMUIRQ: done");
    system_off()
}
