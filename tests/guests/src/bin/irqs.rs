//! Interrupt delivery under pressure (GICv3, through the ICC_* system registers), two steps:
//!
//! - `flood`: `irqs.rounds=N` times (default 50), 16 SGIs (INTIDs 0-15) raised to itself at
//!   once with IRQs masked, then unmasked: every one must be taken exactly once. More pending
//!   interrupts than the 4 list registers QEMU has: the hypervisor must refill them as the
//!   guest drains them (the underflow maintenance interrupt).
//! - `cpuoff` (2+ CPUs): the secondary, IRQs masked, powers itself off (PSCI CPU_OFF) while SGI 2
//!   and SPI 40, both sent to it, wait in its list registers. SPI 40, then rerouted to the boot
//!   CPU, must reach it; after CPU_ON the secondary must take the SGI that was pending, and a new
//!   one.
//!
//! `irqs.only=flood|cpuoff` runs one step. Output (then `IRQS: done` and SYSTEM_OFF):
//! ```text
//! IRQS: flood ok rounds=<N> sgis=<16N>
//! IRQS: flood FAIL round=<r> got=<bitmask> count=<c>
//! IRQS: cpuoff spi-rerouted ok | FAIL ...
//! IRQS: cpuoff pending-sgi ok | FAIL ...
//! IRQS: cpuoff new-sgi ok | FAIL ...
//! IRQS: skipped (<why>)
//! ```
#![no_std]
#![no_main]

use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kestrel_test_guests::dt::{self, Gic};
use kestrel_test_guests::psci::{self, Conduit::Hvc};
use kestrel_test_guests::smp::{self, SecondaryBoot, Stack};
use kestrel_test_guests::{exception, gic, mmio, println, system_off, timer};

/// Distributor registers for SPIs (IHI 0069, 12.9): one bit / byte / doubleword per INTID.
const GICD_IGROUPR: u64 = 0x0080;
const GICD_ISENABLER: u64 = 0x0100;
const GICD_ISPENDR: u64 = 0x0200;
const GICD_IPRIORITYR: u64 = 0x0400;
const GICD_IROUTER: u64 = 0x6000;

const SPI: u32 = 40;
const SGI_OFF: u32 = 2;

/// Interrupts taken by the boot CPU (bit n = INTID n) and how many, and the same for the
/// secondary. Each is written by one CPU only (loads and stores: no exclusives on Device
/// memory, see `smp`).
static TAKEN: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
static COUNT: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

static GICR: AtomicU64 = AtomicU64::new(0);
static GICR_SIZE: AtomicU64 = AtomicU64::new(0);
static SECONDARY_READY: AtomicBool = AtomicBool::new(false);
static SECONDARY_GO_OFF: AtomicBool = AtomicBool::new(false);
static SECONDARY_BOOT: SecondaryBoot = SecondaryBoot::new();
static SECONDARY_STACK: Stack<16384> = Stack::new();

fn me() -> usize {
    usize::from(gic::mpidr() & 0xff != 0)
}

fn irq() {
    let intid = gic::ack();
    if intid == gic::INTID_SPURIOUS {
        return;
    }
    let c = me();
    if intid < 64 {
        TAKEN[c].store(
            TAKEN[c].load(Ordering::Relaxed) | 1 << intid,
            Ordering::Relaxed,
        );
    }
    COUNT[c].store(COUNT[c].load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    gic::eoi(intid);
}

/// ICC_SGI1R_EL1 value naming the one PE `mpidr` (TargetList bit Aff0 % 16, range Aff0 / 16).
fn sgi1r(intid: u32, mpidr: u64) -> u64 {
    let aff0 = mpidr & 0xff;
    (1 << (aff0 % 16))
        | ((mpidr >> 8) & 0xff) << 16
        | u64::from(intid & 0xf) << 24
        | ((mpidr >> 16) & 0xff) << 32
        | (aff0 / 16) << 44
        | ((mpidr >> 32) & 0xff) << 48
}

fn send_sgi(intid: u32, mpidr: u64) {
    // SAFETY: sending an SGI changes only GIC state.
    unsafe {
        asm!("msr icc_sgi1r_el1, {}", "isb", in(reg) sgi1r(intid, mpidr), options(nomem, nostack))
    };
}

fn irqs_on() {
    // SAFETY: unmasks IRQs; the handler is installed.
    unsafe { asm!("msr daifclr, #2", "isb", options(nomem, nostack)) };
}

fn irqs_off() {
    // SAFETY: masks IRQs.
    unsafe { asm!("msr daifset, #2", "isb", options(nomem, nostack)) };
}

/// Waits with IRQs unmasked until `done()` or `ms` milliseconds passed; true when done.
fn wait_irqs(ms: u64, done: impl Fn() -> bool) -> bool {
    let give_up = timer::cntvct() + timer::cntfrq() * ms / 1000;
    irqs_on();
    let mut ok = done();
    while !ok && timer::cntvct() < give_up {
        core::hint::spin_loop();
        ok = done();
    }
    irqs_off();
    ok || done()
}

/// Waits (IRQs as they are) until `done()` or `ms` milliseconds passed.
fn wait(ms: u64, done: impl Fn() -> bool) -> bool {
    let give_up = timer::cntvct() + timer::cntfrq() * ms / 1000;
    while !done() {
        if timer::cntvct() > give_up {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

fn flood(rounds: u64) {
    let self_mpidr = gic::mpidr();
    for round in 0..rounds {
        TAKEN[0].store(0, Ordering::Relaxed);
        COUNT[0].store(0, Ordering::Relaxed);
        for intid in 0..16 {
            send_sgi(intid, self_mpidr);
        }
        let all = wait_irqs(1000, || TAKEN[0].load(Ordering::Relaxed) == 0xffff);
        // Give a duplicate a chance to show up.
        let _ = wait_irqs(2, || false);
        let (got, count) = (
            TAKEN[0].load(Ordering::Relaxed),
            COUNT[0].load(Ordering::Relaxed),
        );
        if !all || count != 16 {
            println!("IRQS: flood FAIL round={round} got={got:#x} count={count}");
            return;
        }
    }
    println!("IRQS: flood ok rounds={rounds} sgis={}", rounds * 16);
}

extern "C" fn secondary_first(_: u64) -> ! {
    // Entered with every exception masked (PSCI CPU_ON); IRQs stay masked until CPU_OFF.
    if let Some(rd) = gic::find_redistributor(
        GICR.load(Ordering::Relaxed),
        GICR_SIZE.load(Ordering::Relaxed),
        gic::mpidr(),
    ) {
        let _ = gic::wake_redistributor(rd);
        gic::enable_private_irq(rd, SGI_OFF, 0x80);
    }
    let _ = gic::init_cpu_interface();
    SECONDARY_READY.store(true, Ordering::Release);
    while !SECONDARY_GO_OFF.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    psci::cpu_off(Hvc);
    loop {
        core::hint::spin_loop();
    }
}

extern "C" fn secondary_again(_: u64) -> ! {
    // A fresh CPU interface; the redistributor kept its configuration (SGI 2 enabled).
    let _ = gic::init_cpu_interface();
    irqs_on();
    loop {
        // SAFETY: waits for an interrupt, which the handler takes.
        unsafe { asm!("wfi", options(nomem, nostack)) };
    }
}

/// SPI `intid`: Group 1, priority 0x80, routed to `mpidr`, enabled.
fn spi_setup(gicd: u64, intid: u32, mpidr: u64) {
    let word = u64::from(intid / 32) * 4;
    let bit = 1u32 << (intid % 32);
    let prio = gicd + GICD_IPRIORITYR + u64::from(intid & !3);
    let shift = (intid & 3) * 8;
    // SAFETY: this guest's distributor; architected 32/64-bit accesses (IHI 0069, 12.9).
    unsafe {
        let g = mmio::read32(gicd + GICD_IGROUPR + word);
        mmio::write32(gicd + GICD_IGROUPR + word, g | bit);
        let p = mmio::read32(prio);
        mmio::write32(prio, (p & !(0xff << shift)) | 0x80 << shift);
        mmio::write64(
            gicd + GICD_IROUTER + 8 * u64::from(intid),
            mpidr & 0xff_00ff_ffff,
        );
        mmio::write32(gicd + GICD_ISENABLER + word, bit);
    }
}

fn route(gicd: u64, intid: u32, mpidr: u64) {
    // SAFETY: as in `spi_setup`.
    unsafe {
        mmio::write64(
            gicd + GICD_IROUTER + 8 * u64::from(intid),
            mpidr & 0xff_00ff_ffff,
        )
    };
}

fn cpuoff(gicd: u64, boot_mpidr: u64, sec: u64) {
    let r = smp::start_secondary(
        Hvc,
        sec,
        &SECONDARY_BOOT,
        SECONDARY_STACK.top(),
        secondary_first,
        0,
    );
    if r != psci::SUCCESS || !wait(1000, || SECONDARY_READY.load(Ordering::Acquire)) {
        println!("IRQS: cpuoff FAIL secondary {sec:#x} did not come up (CPU_ON {r})");
        return;
    }
    // Both wait in the secondary's list registers: it has IRQs masked.
    spi_setup(gicd, SPI, sec);
    send_sgi(SGI_OFF, sec);
    // SAFETY: ISPENDR of this guest's distributor.
    unsafe {
        mmio::write32(
            gicd + GICD_ISPENDR + u64::from(SPI / 32) * 4,
            1 << (SPI % 32),
        )
    };
    timer::delay_ms(20);
    SECONDARY_GO_OFF.store(true, Ordering::Release);
    let off = wait(1000, || psci::affinity_info(Hvc, sec, 0) == psci::AFF_OFF);
    if !off {
        println!("IRQS: cpuoff FAIL secondary did not power off");
        return;
    }
    route(gicd, SPI, boot_mpidr);
    if wait_irqs(1000, || TAKEN[0].load(Ordering::Relaxed) & 1 << SPI != 0) {
        println!("IRQS: cpuoff spi-rerouted ok");
    } else {
        println!("IRQS: cpuoff spi-rerouted FAIL: SPI {SPI} never reached the boot CPU");
    }
    let r = smp::start_secondary(
        Hvc,
        sec,
        &SECONDARY_BOOT,
        SECONDARY_STACK.top(),
        secondary_again,
        0,
    );
    if r != psci::SUCCESS {
        println!("IRQS: cpuoff FAIL CPU_ON again: {r}");
        return;
    }
    if wait(1000, || {
        TAKEN[1].load(Ordering::Relaxed) & 1 << SGI_OFF != 0
    }) {
        println!("IRQS: cpuoff pending-sgi ok");
    } else {
        println!("IRQS: cpuoff pending-sgi FAIL: SGI {SGI_OFF} pending at CPU_OFF never taken");
    }
    let before = COUNT[1].load(Ordering::Relaxed);
    send_sgi(SGI_OFF, sec);
    if wait(1000, || COUNT[1].load(Ordering::Relaxed) > before) {
        println!("IRQS: cpuoff new-sgi ok");
    } else {
        println!("IRQS: cpuoff new-sgi FAIL: a new SGI {SGI_OFF} never taken");
    }
}

#[unsafe(no_mangle)]
fn guest_main(dtb: usize) -> ! {
    let only = dt::bootarg(dtb, "irqs.only").unwrap_or("");
    let rounds = dt::bootarg_u64(dtb, "irqs.rounds", 50).max(1);
    let Some(Gic::V3 {
        gicd,
        gicr,
        gicr_size,
    }) = dt::gic(dtb)
    else {
        println!("IRQS: skipped (needs a GICv3)");
        println!("IRQS: done");
        system_off()
    };
    GICR.store(gicr, Ordering::Relaxed);
    GICR_SIZE.store(gicr_size, Ordering::Relaxed);
    let boot_mpidr = gic::mpidr();
    let set_up = gic::enable_distributor(gicd).and_then(|()| {
        let rd = gic::find_redistributor(gicr, gicr_size, boot_mpidr).ok_or("no redistributor")?;
        gic::wake_redistributor(rd)?;
        for intid in 0..16 {
            gic::enable_private_irq(rd, intid, 0x80);
        }
        gic::init_cpu_interface()
    });
    if let Err(e) = set_up {
        println!("IRQS: skipped (GIC set-up failed: {e})");
        println!("IRQS: done");
        system_off()
    }
    exception::set_irq_handler(irq);
    if only.is_empty() || only == "flood" {
        flood(rounds);
    }
    if only.is_empty() || only == "cpuoff" {
        let (mpidrs, n) = dt::cpu_mpidrs(dtb);
        match mpidrs[..n]
            .iter()
            .find(|&&m| m & 0xff_00ff_ffff != boot_mpidr)
        {
            Some(&sec) => cpuoff(gicd, boot_mpidr, sec & 0xff_00ff_ffff),
            None => println!("IRQS: cpuoff skipped (one CPU)"),
        }
    }
    println!("IRQS: done");
    system_off()
}
