//! Exit-cost microbenchmarks, timed inside the guest with CNTVCT_EL0.
//!
//! Each measurement runs a tight assembly loop of `bench.n=N` iterations (default 10000) and a
//! baseline loop that is the same loop without the measured instruction; the difference over N
//! is the cost of one operation:
//! - `hvc`: `hvc #0` with x0 = PSCI_VERSION (0x84000000), an SMCCC round trip;
//! - `gicd`: a 32-bit load of GICD_TYPER (distributor + 0x4), an emulated register read;
//! - `uart`: a 32-bit load of the console PL011's UARTFR (+ 0x18);
//! - `timer`: `bench.timer_n=M` times (default 1000): CNTV_CVAL = now + ~10 us, WFI until the
//!   virtual timer interrupt (INTID 27) is taken at EL1 and EOI'd; the cost is the time from
//!   the programmed deadline to the handler's first CNTVCT read (no baseline). GICv3 only (the
//!   guest uses the ICC_* system registers); with a GICv2 it prints a `skipped` line.
//!
//!
//! `bench.mode=` picks what runs (default `all`, the above); the others are for two VMs sharing
//! one physical CPU (qemu/bench.sh --shared):
//! - `slices`: spins reading CNTVCT for `bench.window_ms` (default 200) of counter time, after
//!   20 ms of warm-up and before 50 more (so a neighbour doing the same overlaps the window):
//!   a step of more than 1 us is a gap (another vCPU ran), the rest is its own run time. Beside
//!   one VM doing the same with equal weight, a gap is the other's slice plus two switches, so
//!   one switch costs `(window - 2 * run) / (2 * gaps)`; printed as `switch`, with the parts.
//!   (WFE does not trap under QEMU's TCG, so a WFE hand-over cannot be measured there.)
//! - `timer`: the timer wake-up only;
//! - `spin`: a busy loop until `bench.until_ms` of counter time, then power off;
//! - `sleep`: WFI until its virtual timer fires at `bench.until_ms`, then power off.
//!
//! Output (x, y with two decimals; `y = x * 1e9 / CNTFRQ`; under QEMU `-icount shift=0` one
//! virtual nanosecond is one instruction, so `ns_per_op` counts instructions):
//! ```text
//! BENCH: cntfrq=<hz> n=<N> gic=v3|v2|none
//! BENCH: baseline ticks_per_op=<x> ns_per_op=<y> n=<N>     (the empty loop: subs + b.ne)
//! BENCH: hvc ticks_per_op=<x> ns_per_op=<y> n=<N>
//! BENCH: gicd ticks_per_op=<x> ns_per_op=<y> n=<N>
//! BENCH: uart ticks_per_op=<x> ns_per_op=<y> n=<N>
//! BENCH: timer ticks_per_op=<x> ns_per_op=<y> n=<M> min_ticks=<a> max_ticks=<b> delta_ticks=<d>
//! BENCH: timer skipped (<reason>)
//! BENCH: done
//! ```
#![no_std]
#![no_main]

use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kestrel_test_guests::dt::{self, Gic};
use kestrel_test_guests::{Ratio, exception, gic, println, system_off, timer, uart_base};

const PL011_UARTFR: u64 = 0x18;

fn report(name: &str, ticks: i128, n: u64, freq: u64) {
    let n = n as i128;
    println!(
        "BENCH: {name} ticks_per_op={} ns_per_op={} n={n}",
        Ratio { num: ticks, den: n },
        Ratio {
            num: ticks * 1_000_000_000,
            den: n * freq as i128
        }
    );
}

/// Times `f(n)` in counter ticks.
fn timed(n: u64, f: impl FnOnce(u64)) -> i128 {
    let t0 = timer::cntvct();
    f(n);
    let t1 = timer::cntvct();
    t1.wrapping_sub(t0) as i128
}

fn loop_empty(n: u64) {
    // SAFETY: a counted loop on a register.
    unsafe {
        asm!("2:", "subs {n}, {n}, #1", "b.ne 2b", n = inout(reg) n => _,
             options(nomem, nostack))
    };
}

fn loop_hvc(n: u64) {
    // SAFETY: PSCI_VERSION calls; x0-x17 declared clobbered (SMCCC 1.0 allows the callee to
    // change x4-x17), memory untouched.
    unsafe {
        asm!("2:", "mov x0, #0x84000000", "hvc #0", "subs {n}, {n}, #1", "b.ne 2b",
             n = inout(reg) n => _,
             out("x0") _, out("x1") _, out("x2") _, out("x3") _, out("x4") _, out("x5") _,
             out("x6") _, out("x7") _, out("x8") _, out("x9") _, out("x10") _, out("x11") _,
             out("x12") _, out("x13") _, out("x14") _, out("x15") _, out("x16") _,
             out("x17") _, options(nostack))
    };
}

fn loop_hvc_baseline(n: u64) {
    // SAFETY: a counted loop on registers.
    unsafe {
        asm!("2:", "mov x0, #0x84000000", "subs {n}, {n}, #1", "b.ne 2b",
             n = inout(reg) n => _, out("x0") _, options(nomem, nostack))
    };
}

/// N 32-bit loads of the device register at `addr`.
fn loop_load32(n: u64, addr: u64) {
    // SAFETY: `addr` is a readable register of this guest's GIC distributor or PL011 without
    // read side effects (GICD_TYPER, UARTFR).
    unsafe {
        asm!("2:", "ldr {t:w}, [{a}]", "subs {n}, {n}, #1", "b.ne 2b",
             n = inout(reg) n => _, a = in(reg) addr, t = out(reg) _, options(nostack))
    };
}

static FIRED: AtomicBool = AtomicBool::new(false);
static FIRED_AT: AtomicU64 = AtomicU64::new(0);
static OTHER_IRQS: AtomicU64 = AtomicU64::new(0);

fn timer_irq() {
    let intid = gic::ack();
    if intid == timer::VTIMER_INTID {
        let now = timer::cntvct();
        // Disable the timer so that its (level) interrupt line drops before the EOI.
        timer::set_cntv_ctl(0);
        FIRED_AT.store(now, Ordering::Relaxed);
        FIRED.store(true, Ordering::Release);
    } else if intid != gic::INTID_SPURIOUS {
        OTHER_IRQS.store(OTHER_IRQS.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
    if intid != gic::INTID_SPURIOUS {
        gic::eoi(intid);
    }
}

/// Waits (WFI with IRQs masked, then a short unmasked window so a pending IRQ is taken) until
/// the timer handler ran or `deadline_ticks` passed. WFI wakes on a pending interrupt even
/// while PSTATE.I masks it (Arm ARM D1.6.2 "Wait for Interrupt").
fn wait_fired(give_up: u64) -> bool {
    while !FIRED.load(Ordering::Acquire) {
        if timer::cntvct() > give_up {
            return false;
        }
        // SAFETY: WFI, then IRQs unmasked for one instruction so a pending one is taken by our
        // vector (which calls `timer_irq`), then masked again.
        unsafe {
            asm!(
                "wfi",
                "msr daifclr, #2",
                "isb",
                "msr daifset, #2",
                options(nostack)
            )
        };
    }
    true
}

fn bench_timer(gicd: u64, gicr: u64, gicr_size: u64, n: u64, freq: u64) {
    if let Err(e) = gic::setup_vtimer_irq(gicd, gicr, gicr_size) {
        println!("BENCH: timer skipped (GICv3 set-up failed: {e})");
        return;
    }
    exception::set_irq_handler(timer_irq);
    let delta = (freq / 100_000).max(1);
    let (mut total, mut min, mut max) = (0u128, u64::MAX, 0u64);
    for _ in 0..n {
        FIRED.store(false, Ordering::Release);
        let deadline = timer::cntvct() + delta;
        timer::set_cntv_cval(deadline);
        timer::set_cntv_ctl(timer::CTL_ENABLE);
        // One second of counter time is far beyond any sane wake-up latency.
        if !wait_fired(deadline + freq) {
            timer::set_cntv_ctl(0);
            println!(
                "BENCH: timer skipped (no timer interrupt within 1 s; CNTV_CTL was {:#x})",
                timer::cntv_ctl()
            );
            return;
        }
        let lat = FIRED_AT.load(Ordering::Relaxed).saturating_sub(deadline);
        total += lat as u128;
        min = min.min(lat);
        max = max.max(lat);
    }
    let ni = n as i128;
    println!(
        "BENCH: timer ticks_per_op={} ns_per_op={} n={n} min_ticks={min} max_ticks={max} delta_ticks={delta}",
        Ratio {
            num: total as i128,
            den: ni
        },
        Ratio {
            num: total as i128 * 1_000_000_000,
            den: ni * freq as i128
        }
    );
    let other = OTHER_IRQS.load(Ordering::Relaxed);
    if other != 0 {
        println!("BENCH: note: {other} other interrupts were acknowledged");
    }
}

/// `bench.mode=slices`: own run time and gaps over a window of counter time (see the top).
fn bench_slices(window: u64, freq: u64) {
    let gap = (freq / 1_000_000).max(1);
    let spin_until = |until: u64| while timer::cntvct() < until {};
    spin_until(timer::cntvct() + freq / 50);
    let start = timer::cntvct();
    let end = start + window;
    let (mut prev, mut run, mut gaps) = (start, 0u64, 0u64);
    while prev < end {
        let t = timer::cntvct();
        let d = t - prev;
        if d > gap {
            gaps += 1;
        } else {
            run += d;
        }
        prev = t;
    }
    let w = prev - start;
    spin_until(prev + freq / 20);
    println!("BENCH: slices window_ticks={w} run_ticks={run} gaps={gaps}");
    if gaps > 0 {
        report("switch", w as i128 - 2 * run as i128, 2 * gaps, freq);
    }
}

/// `bench.mode=spin|sleep`: busy, or asleep in WFI, until `until` (counter ticks).
fn occupy(dtb: usize, sleep: bool, until: u64) {
    if !sleep {
        while timer::cntvct() < until {
            core::hint::spin_loop();
        }
        return;
    }
    match dt::gic(dtb) {
        Some(Gic::V3 {
            gicd,
            gicr,
            gicr_size,
        }) if gic::setup_vtimer_irq(gicd, gicr, gicr_size).is_ok() => {
            exception::set_irq_handler(timer_irq);
            FIRED.store(false, Ordering::Release);
            timer::set_cntv_cval(until);
            timer::set_cntv_ctl(timer::CTL_ENABLE);
            let _ = wait_fired(u64::MAX);
            timer::set_cntv_ctl(0);
        }
        _ => println!("BENCH: sleep skipped (GICv3 only)"),
    }
}

#[unsafe(no_mangle)]
fn guest_main(dtb: usize) -> ! {
    let n = dt::bootarg_u64(dtb, "bench.n", 10_000).max(1);
    let timer_n = dt::bootarg_u64(dtb, "bench.timer_n", 1000).max(1);
    let freq = timer::cntfrq();
    let mode = dt::bootarg(dtb, "bench.mode").unwrap_or("all");
    let until = dt::bootarg_u64(dtb, "bench.until_ms", 0).saturating_mul(freq / 1000);
    match mode {
        "slices" => {
            println!("BENCH: cntfrq={freq} mode=slices");
            let window = dt::bootarg_u64(dtb, "bench.window_ms", 200).saturating_mul(freq / 1000);
            bench_slices(window.max(1), freq);
            println!("BENCH: done");
            system_off()
        }
        "spin" | "sleep" => {
            occupy(dtb, mode == "sleep", until);
            println!("BENCH: {mode} done");
            system_off()
        }
        _ => {}
    }
    let g = dt::gic(dtb);
    let gname = match g {
        Some(Gic::V3 { .. }) => "v3",
        Some(Gic::V2 { .. }) => "v2",
        None => "none",
    };
    println!("BENCH: cntfrq={freq} n={n} gic={gname}");
    if mode == "timer" {
        if let Some(Gic::V3 {
            gicd,
            gicr,
            gicr_size,
        }) = g
        {
            bench_timer(gicd, gicr, gicr_size, timer_n, freq);
        } else {
            println!("BENCH: timer skipped (GICv3 only)");
        }
        println!("BENCH: done");
        system_off()
    }

    let empty = timed(n, loop_empty);
    report("baseline", empty, n, freq);

    let hvc = timed(n, loop_hvc) - timed(n, loop_hvc_baseline);
    report("hvc", hvc, n, freq);

    match g {
        Some(Gic::V3 { gicd, .. } | Gic::V2 { gicd, .. }) => {
            let t = timed(n, |n| loop_load32(n, gicd + gic::GICD_TYPER)) - empty;
            report("gicd", t, n, freq);
        }
        None => println!("BENCH: gicd skipped (no GIC in the DTB)"),
    }

    let uart = timed(n, |n| loop_load32(n, uart_base() + PL011_UARTFR)) - empty;
    report("uart", uart, n, freq);

    match g {
        Some(Gic::V3 {
            gicd,
            gicr,
            gicr_size,
        }) => bench_timer(gicd, gicr, gicr_size, timer_n, freq),
        Some(Gic::V2 { .. }) => {
            println!(
                "BENCH: timer skipped (GICv2: this guest drives the GIC through the GICv3 ICC_* registers only)"
            )
        }
        None => println!("BENCH: timer skipped (no GIC in the DTB)"),
    }
    println!("BENCH: done");
    system_off()
}
