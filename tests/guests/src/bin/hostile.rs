//! The hostile guest: tries, one by one, everything a VM must not be able to do to the
//! hypervisor or to other VMs, and reports what it got back. Every fault is caught by its own
//! EL1 vectors (`exception::probe`), so it keeps going.
//!
//! Output: one line per attempt, then the total, then PSCI SYSTEM_OFF:
//! ```text
//! HOSTILE: <action>: <outcome>
//! HOSTILE: done <n> actions
//! ```
//! `<outcome>` is what the guest saw: `ok`, `ok value=0x...` (a load or MRS that worked),
//! `ret=<v> (<PSCI error name>)` (an SMCCC call; `x0=`/`x1=..x3=` follow when the callee set
//! more than W0), `abort esr=0x... far=0x... (<fault status>)`, `iabort ...`, `undef esr=...`,
//! `pc-alignment ...`, `serror esr=...`, `fp-trap ...`, `exception ec=0x.. esr=...`, optionally
//! `elr=insn+N` when ELR_EL1 did not point at the probed instruction; or `skipped (<why>)`.
//! Context lines start with `HOSTILE-INFO: `; the console flood prints 64-byte lines starting
//! with `FLOOD `.
//!
//! Command line (`/chosen/bootargs`):
//! - `hostile.hv=A[,B...]`: host physical addresses of the hypervisor to poke (as IPAs);
//! - `hostile.peer=A[,B...]`: host physical addresses of another VM's RAM;
//! - `hostile.flood=BYTES` (default 204800), `hostile.spin_ms=MS` (default 2000);
//! - `hostile.go_key=1`: wait (up to 120 s) for one byte of console input before the first
//!   attack, so a test can start the attacks once the peer is ready (`HOSTILE-INFO: go`).
#![no_std]
#![no_main]

use core::arch::asm;
use core::fmt::{self, Display};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kestrel_test_guests::dt::{self, Gic};
use kestrel_test_guests::exception::{
    self, ExcAt, Outcome, Width, probe_exec, probe_read, probe_write,
};
use kestrel_test_guests::psci::{self, Conduit};
use kestrel_test_guests::smp::{self, SecondaryBoot, Stack};
use kestrel_test_guests::virtio::{self as vio, Dev, Ring};
use kestrel_test_guests::{
    gic, image_end, image_start, memory, println, probe_insn, putc, system_off, timer, uart_base,
};

/// What writes store where they should not be able to.
const POISON: u64 = 0xdead_beef_cafe_f00d;

// QEMU-virt-like guest map (docs/ramdisk.md "Guest memory layout").
const GICD: u64 = 0x0800_0000;
const GICC_V2: u64 = 0x0801_0000;
/// Where QEMU virt puts the host's GICv2 virtual interface control (GICH) and virtual CPU
/// interface (GICV), and the GICv3 ITS: not part of a guest's map.
const HOST_GICH: u64 = 0x0803_0000;
const HOST_GICV: u64 = 0x0804_0000;
const GIC_ITS: u64 = 0x0808_0000;
const GICR: u64 = 0x080a_0000;
const GICR_STRIDE: u64 = 0x2_0000;
/// The last redistributor frame that fits below the PL011 at 0x0900_0000.
const GICR_LAST_INDEX: u64 = (0x0900_0000 - GICR) / GICR_STRIDE - 1;

// PL011 registers (PL011 TRM 3.2).
const UARTFR: u64 = 0x18;
const UARTIMSC: u64 = 0x38;
const UART_PERIPHID0: u64 = 0xfe0;
const UART_CELLID3: u64 = 0xffc;

// GICD registers (IHI0069 12.9).
const GICD_TYPER: u64 = 0x4;
const GICD_ISENABLER: u64 = 0x100;
const GICD_ITARGETSR: u64 = 0x800;
const GICD_SGIR: u64 = 0xf00;
const GICD_IROUTER: u64 = 0x6000;
const GICD_PIDR2: u64 = 0xffe8;
const GICR_WAKER: u64 = 0x14;
const GICR_TYPER: u64 = 0x8;
const GICR_SGI_ISENABLER0: u64 = 0x1_0100;

struct Hostile {
    n: u32,
}

impl Hostile {
    fn line(&mut self, action: fmt::Arguments<'_>, outcome: &dyn Display) {
        self.n += 1;
        println!("HOSTILE: {action}: {outcome}");
    }

    fn read(&mut self, what: &str, addr: u64, w: Width) -> Outcome {
        let o = probe_read(addr, w);
        self.line(
            format_args!("read{} {what} {addr:#x}", w.bits()),
            &Loaded(o),
        );
        o
    }

    fn write(&mut self, what: &str, addr: u64, w: Width, v: u64) -> Outcome {
        let o = probe_write(addr, w, v);
        self.line(
            format_args!("write{} {what} {addr:#x} = {v:#x}", w.bits()),
            &Stored(o),
        );
        o
    }

    /// A 64-bit read and a 64-bit write of [`POISON`].
    fn rw(&mut self, what: &str, addr: u64) {
        self.read(what, addr, Width::B64);
        self.write(what, addr, Width::B64, POISON);
    }

    fn insn(&mut self, action: fmt::Arguments<'_>, o: Outcome, show_value: bool) -> Outcome {
        if show_value {
            self.line(action, &Loaded(o));
        } else {
            self.line(action, &Stored(o));
        }
        o
    }

    fn call(&mut self, what: &str, c: Conduit, f: u64, a: [u64; 3]) -> psci::CallOutcome {
        let o = psci::probe_call(c, f, a[0], a[1], a[2]);
        self.line(
            format_args!(
                "{c} {what} fid={f:#x} args={:#x},{:#x},{:#x}",
                a[0], a[1], a[2]
            ),
            &o,
        );
        o
    }

    fn skip(&mut self, action: fmt::Arguments<'_>, why: &str) {
        self.line(action, &format_args!("skipped ({why})"));
    }
}

/// `ok value=0x...` or the exception.
struct Loaded(Outcome);
impl Display for Loaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0.exc {
            None => write!(f, "ok value={:#x}", self.0.value),
            Some(e) => write!(f, "{}", ExcAt(e, self.0.insn)),
        }
    }
}

/// `ok` or the exception.
struct Stored(Outcome);
impl Display for Stored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0.exc {
            None => f.write_str("ok"),
            Some(e) => write!(f, "{}", ExcAt(e, self.0.insn)),
        }
    }
}

struct Env {
    ram_base: u64,
    ram_end: u64,
    own_mpidr: u64,
    mpidrs: [u64; 64],
    ncpus: usize,
    gic: Option<Gic>,
}

impl Env {
    fn in_ram(&self, a: u64) -> bool {
        (self.ram_base..self.ram_end).contains(&a)
    }
    fn owns_mpidr(&self, m: u64) -> bool {
        self.mpidrs[..self.ncpus].contains(&m)
    }
}

fn memory_outside(h: &mut Hostile, env: &Env) {
    let (b, e) = (env.ram_base, env.ram_end);
    if b >= 8 {
        h.rw("just below RAM", b - 8);
    }
    if b >= 0x1000 {
        h.rw("a page below RAM", b - 0x1000);
    }
    h.rw("just above RAM", e);
    h.rw("a page above RAM", e + 0x1000);
    h.rw("2 MiB above RAM", e + (2 << 20));
    h.rw("1 GiB above RAM", e + (1 << 30));
    h.rw("IPA 0", 0);
    h.rw("IPA 0x1000", 0x1000);
    h.rw("above the device window", 0x0a00_0000 + 0x20_0000);
    h.rw("high IPA", 0xff_0000_0000);
    h.rw("top of 40-bit IPA space", 0xff_ffff_fff8);
    h.rw("beyond 40-bit IPA", 1 << 40);
    h.rw("beyond 44-bit PA", 1 << 44);
    h.rw("beyond 48-bit PA", 1 << 48);
    h.rw("beyond 52-bit PA", 1 << 52);
    h.rw("top of the 64-bit space", 0xffff_ffff_ffff_f000);
}

fn host_addresses(h: &mut Hostile, env: &Env, dtb: usize) {
    for (key, what) in [
        ("hostile.hv", "hypervisor PA"),
        ("hostile.peer", "peer VM PA"),
    ] {
        let (list, n) = dt::bootarg_list(dtb, key);
        if n == 0 {
            println!("HOSTILE-INFO: no {key}= on the command line");
        }
        for &a in &list[..n] {
            let a = a & !7;
            h.read(what, a, Width::B64);
            if env.in_ram(a) {
                h.skip(
                    format_args!("write64 {what} {a:#x} = {POISON:#x}"),
                    "inside this guest's own RAM",
                );
            } else {
                h.write(what, a, Width::B64, POISON);
            }
            let o = probe_insn!(write "dc civac, {a}", a);
            h.insn(format_args!("dc civac {what} {a:#x}"), o, false);
            let o = probe_insn!(write "dc ivac, {a}", a);
            h.insn(format_args!("dc ivac {what} {a:#x}"), o, false);
        }
    }
}

fn gic_regions(h: &mut Hostile, env: &Env) {
    // The distributor, at odd widths and offsets.
    h.read("GICD_CTLR", GICD, Width::B32);
    h.read("GICD_CTLR", GICD, Width::B64);
    h.read("GICD_CTLR", GICD, Width::B16);
    h.read("GICD_TYPER", GICD + GICD_TYPER, Width::B8);
    h.write("GICD_TYPER", GICD + GICD_TYPER, Width::B8, 0xff);
    h.write("GICD_TYPER", GICD + GICD_TYPER, Width::B32, 0xffff_ffff);
    h.read("GICD unaligned", GICD + 2, Width::B32);
    h.write("GICD_CTLR", GICD, Width::B64, 0);
    h.read("GICD_PIDR2", GICD + GICD_PIDR2, Width::B32);
    h.write("GICD_PIDR2", GICD + GICD_PIDR2, Width::B32, 0);
    h.read("GICD reserved", GICD + 0xc000, Width::B32);
    h.write("GICD reserved", GICD + 0xfffc, Width::B32, 0xffff_ffff);
    h.write(
        "GICD_ISENABLER31 (SPIs 992-1023)",
        GICD + GICD_ISENABLER + 31 * 4,
        Width::B32,
        0xffff_ffff,
    );
    h.write(
        "GICD_IROUTER1019",
        GICD + GICD_IROUTER + 8 * 1019,
        Width::B64,
        0xff_00ff_ffff,
    );
    h.write(
        "GICD_IROUTER32 to a foreign affinity",
        GICD + GICD_IROUTER + 8 * 32,
        Width::B64,
        0xff_00ff_ffff,
    );
    h.write(
        "GICD_ITARGETSR32 to all CPUs",
        GICD + GICD_ITARGETSR + 32,
        Width::B8,
        0xff,
    );
    h.write(
        "GICD_SGIR all-but-self SGI 15",
        GICD + GICD_SGIR,
        Width::B32,
        0x0100_000f,
    );
    h.write(
        "GICD_SGIR reserved filter",
        GICD + GICD_SGIR,
        Width::B32,
        0x03ff_000f,
    );
    h.read(
        "beyond the GICD 64 KiB",
        GICD + 0x1_0000 + 0x8000,
        Width::B32,
    );
    // Redistributor frames of vCPUs this VM does not have.
    let n = env.ncpus as u64;
    h.read("own GICR_TYPER", GICR + GICR_TYPER, Width::B64);
    for idx in [n, n + 1, GICR_LAST_INDEX] {
        let rd = GICR + idx * GICR_STRIDE;
        h.read("foreign GICR_TYPER", rd + GICR_TYPER, Width::B64);
        h.write("foreign GICR_WAKER", rd + GICR_WAKER, Width::B32, 0);
        h.write(
            "foreign GICR_ISENABLER0",
            rd + GICR_SGI_ISENABLER0,
            Width::B32,
            0xffff_ffff,
        );
    }
    // The GICv2 CPU interface (a GICv3 VM has nothing there), the host's GICH/GICV, the ITS.
    h.read("GICC_CTLR", GICC_V2, Width::B32);
    h.read("host GICH", HOST_GICH, Width::B32);
    h.write("host GICH_HCR", HOST_GICH, Width::B32, 1);
    h.read("host GICV", HOST_GICV, Width::B32);
    h.read("GIC ITS", GIC_ITS, Width::B32);
    h.write("GIC ITS GITS_CTLR", GIC_ITS, Width::B32, 1);
}

fn uart_region(h: &mut Hostile) {
    let u = uart_base();
    h.read("UARTFR", u + UARTFR, Width::B32);
    h.read("UARTFR", u + UARTFR, Width::B8);
    h.read("UARTDR", u, Width::B64);
    h.write("UARTFR (read-only)", u + UARTFR, Width::B32, 0xffff_ffff);
    h.write("UART reserved", u + 0x100, Width::B32, 0xffff_ffff);
    h.write("UART PeriphID0", u + UART_PERIPHID0, Width::B32, 0);
    h.read("UART CellID3", u + UART_CELLID3, Width::B32);
    h.write("UARTIMSC all", u + UARTIMSC, Width::B32, 0x7ff);
    h.write("UARTIMSC none", u + UARTIMSC, Width::B32, 0);
    h.read("beyond the UART page", u + 0x1000, Width::B32);
    h.write("UART unaligned", u + 1, Width::B32, 0);
    // Other devices of QEMU virt, absent from a VM's map.
    h.read("QEMU RTC", 0x0901_0000, Width::B32);
    h.read("QEMU fw_cfg", 0x0902_0000, Width::B64);
    h.read("QEMU GPIO", 0x0903_0000, Width::B32);
    h.read("QEMU secure UART", 0x0904_0000 + UARTFR, Width::B32);
    // Slot 31 of QEMU virt's virtio-mmio window (the VM's own devices, if any, are in the
    // first slots: see `virtio_attacks`).
    h.read("QEMU virtio-mmio slot 31", 0x0a00_3e00, Width::B32);
    h.read("QEMU PCIe MMIO", 0x1000_0000, Width::B32);
    h.read("QEMU PCIe ECAM", 0x3f00_0000, Width::B32);
}

/// Accesses whose data-abort syndrome has no instruction information (ISV = 0; Arm ARM
/// D24.2.40: pairs, writeback, SIMD&FP, exclusives), cache maintenance on devices and
/// unmapped IPAs (ISS.CM = 1), DC ZVA.
fn awkward_accesses(h: &mut Hostile, env: &Env) {
    let unmapped = env.ram_end + (2 << 20);
    let mut insn = 0u64;
    let ((a, b), exc) = exception::probe(|| {
        let (mut a, mut b) = (0u64, 0u64);
        // SAFETY: a probe (see exception::probe_insn!): a pair load from the distributor.
        unsafe {
            asm!("adr {pc}, 2f", "2:", "ldp {a}, {b}, [{p}]", "nop", pc = out(reg) insn,
                 a = inout(reg) a, b = inout(reg) b, p = in(reg) GICD, options(nostack))
        };
        (a, b)
    });
    let o = Outcome {
        value: a,
        exc,
        insn,
    };
    match exc {
        None => h.line(
            format_args!("ldp GICD {GICD:#x}"),
            &format_args!("ok value={a:#x},{b:#x}"),
        ),
        Some(_) => h.line(format_args!("ldp GICD {GICD:#x}"), &Stored(o)),
    }
    let p = GICD + 0x180;
    let o = probe_insn!(write "stp xzr, xzr, [{a}]", p);
    h.insn(format_args!("stp GICD_ICENABLER {p:#x}"), o, false);
    let mut insn = 0u64;
    let ((v, after), exc) = exception::probe(|| {
        let (mut v, mut p) = (0u64, GICD + GICD_TYPER);
        // SAFETY: a probe: a post-indexed load (base writeback) from the distributor.
        unsafe {
            asm!("adr {pc}, 2f", "2:", "ldr {v:w}, [{p}], #4", "nop", pc = out(reg) insn,
                 v = inout(reg) v, p = inout(reg) p, options(nostack))
        };
        (v, p)
    });
    let o = Outcome {
        value: v,
        exc,
        insn,
    };
    let a = GICD + GICD_TYPER;
    match exc {
        None => h.line(
            format_args!("ldr post-index GICD_TYPER {a:#x}"),
            &format_args!("ok value={v:#x} base_after={after:#x}"),
        ),
        Some(_) => h.line(format_args!("ldr post-index GICD_TYPER {a:#x}"), &Stored(o)),
    }
    let fr = uart_base() + UARTFR;
    let o = probe_insn!(load "ldxr {v}, [{a}]", fr);
    h.insn(format_args!("ldxr UARTFR {fr:#x}"), o, true);
    let o = probe_insn!(load "ldxr {v}, [{a}]", unmapped);
    h.insn(format_args!("ldxr unmapped {unmapped:#x}"), o, true);
    // A SIMD&FP load: enable FP at EL1 first (CPACR_EL1.FPEN [21:20] = 0b11, Arm ARM
    // D24.2.30). This program is built soft-float, so q0 holds nothing of its own.
    let o = probe_insn!(read "mrs {v}, cpacr_el1");
    if o.ok() {
        let cpacr = o.value | 3 << 20;
        let w = probe_insn!(write "msr cpacr_el1, {a}", cpacr);
        // SAFETY: an ISB after changing CPACR_EL1.
        unsafe { asm!("isb", options(nomem, nostack)) };
        if w.ok() {
            let mut insn = 0u64;
            let ((), exc) = exception::probe(|| {
                // SAFETY: a probe: `ldr q0, [x1]` (encoded by hand: the soft-float target does
                // not assemble FP instructions) from the distributor; q0 is unused otherwise.
                unsafe {
                    asm!("adr {pc}, 2f", "2:", ".inst 0x3dc00020", "nop", pc = out(reg) insn,
                         in("x1") GICD, options(nostack))
                };
            });
            let o = Outcome {
                value: 0,
                exc,
                insn,
            };
            h.insn(format_args!("ldr q0 (SIMD) GICD {GICD:#x}"), o, false);
        }
    }
    let o = probe_insn!(write "dc civac, {a}", GICD);
    h.insn(format_args!("dc civac GICD {GICD:#x}"), o, false);
    let o = probe_insn!(write "dc civac, {a}", unmapped);
    h.insn(format_args!("dc civac unmapped {unmapped:#x}"), o, false);
    let o = probe_insn!(write "dc ivac, {a}", unmapped);
    h.insn(format_args!("dc ivac unmapped {unmapped:#x}"), o, false);
    let o = probe_insn!(write "dc zva, {a}", GICD);
    h.insn(format_args!("dc zva GICD {GICD:#x}"), o, false);
    let o = probe_insn!(write "dc cisw, {a}", 0);
    h.insn(format_args!("dc cisw set/way 0"), o, false);
}

fn smccc_calls(h: &mut Hostile) {
    use Conduit::*;
    let z = [0u64; 3];
    let junk = [
        0xdead_beef_dead_beef,
        0xffff_ffff_ffff_ffff,
        0x8000_0000_0000_0001,
    ];
    h.call("PSCI_VERSION", Hvc, psci::PSCI_VERSION, z);
    h.call("PSCI_VERSION junk args", Hvc, psci::PSCI_VERSION, junk);
    h.call(
        "PSCI_VERSION junk upper bits",
        Hvc,
        0xffff_ffff_8400_0000,
        z,
    );
    h.call("SMCCC_VERSION", Hvc, psci::SMCCC_VERSION, z);
    h.call(
        "SMCCC_ARCH_FEATURES bogus",
        Hvc,
        psci::SMCCC_ARCH_FEATURES,
        [0xdead_beef, 0, 0],
    );
    h.call(
        "SMCCC_ARCH_FEATURES WORKAROUND_1",
        Hvc,
        psci::SMCCC_ARCH_FEATURES,
        [0x8000_8000, 0, 0],
    );
    h.call(
        "PSCI_FEATURES all-ones",
        Hvc,
        psci::PSCI_FEATURES,
        [u64::MAX, 0, 0],
    );
    h.call(
        "PSCI_FEATURES unknown",
        Hvc,
        psci::PSCI_FEATURES,
        [0x8400_00ff, 0, 0],
    );
    h.call("unknown PSCI fn", Hvc, 0x8400_00ff, junk);
    h.call("unknown PSCI fn 64", Hvc, 0xc400_00ff, junk);
    h.call("standard hypervisor service", Hvc, 0x8500_0000, z);
    h.call("vendor hypervisor service", Hvc, 0x8600_0000, z);
    h.call("vendor hypervisor service 64", Hvc, 0xc600_ff00, junk);
    h.call("SiP service", Hvc, 0x8200_0000, z);
    h.call("OEM service", Hvc, 0x8300_0000, z);
    h.call("trusted OS", Hvc, 0xbf00_ff00, junk);
    h.call("yielding call 0", Hvc, 0x0000_0000, z);
    h.call("yielding call", Hvc, 0x0100_0000, junk);
    h.call("reserved owner", Hvc, 0x8800_0000, z);
    h.call("fid 0x7fffffff", Hvc, 0x7fff_ffff, z);
    h.call("fid all-ones", Hvc, u64::MAX, junk);
    h.call("MIGRATE foreign", Hvc, psci::MIGRATE_64, [0xff_ffff, 0, 0]);
    h.call("MIGRATE_INFO_TYPE", Hvc, psci::MIGRATE_INFO_TYPE, z);
    h.call(
        "NODE_HW_STATE bogus",
        Hvc,
        psci::NODE_HW_STATE_64,
        [0xff_ffff, 7, 0],
    );
    h.call(
        "SYSTEM_SUSPEND odd entry",
        Hvc,
        psci::SYSTEM_SUSPEND_64,
        [1, 0, 0],
    );
    h.call(
        "PSCI_STAT_COUNT bogus",
        Hvc,
        psci::PSCI_STAT_COUNT_64,
        [0xff_ffff, 9, 0],
    );
    h.call("PSCI_VERSION", Smc, psci::PSCI_VERSION, z);
    h.call("SMCCC_VERSION", Smc, psci::SMCCC_VERSION, z);
    h.call("unknown PSCI fn", Smc, 0x8400_00ff, junk);
    h.call("SiP service 64", Smc, 0xc200_0000, z);
    h.call("OEM service", Smc, 0x8300_0000, z);
    h.call("trusted OS", Smc, 0xbf00_ff00, junk);
    h.call("PSCI_VERSION", Smc1, psci::PSCI_VERSION, z);
    h.call("PSCI_VERSION", Hvc1, psci::PSCI_VERSION, z);
    h.call("PSCI_VERSION", HvcFfff, psci::PSCI_VERSION, z);
}

static SECONDARY_BOOT: SecondaryBoot = SecondaryBoot::new();
static SECONDARY_STACK: Stack<16384> = Stack::new();
/// MPIDR | 1 << 63 once a secondary runs our entry.
static SECONDARY_UP: AtomicU64 = AtomicU64::new(0);
static SECONDARY_RELEASE: AtomicBool = AtomicBool::new(false);

extern "C" fn secondary_entry(_arg: u64) -> ! {
    SECONDARY_UP.store(gic::mpidr() | 1 << 63, Ordering::Release);
    while !SECONDARY_RELEASE.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    psci::cpu_off(Conduit::Hvc);
    loop {
        // SAFETY: parks this CPU if CPU_OFF returned.
        unsafe { asm!("wfi", options(nomem, nostack)) };
    }
}

fn wait_until(ms: u64, mut done: impl FnMut() -> bool) -> bool {
    let end = timer::cntvct() + timer::cntfrq() * ms / 1000;
    while timer::cntvct() < end {
        if done() {
            return true;
        }
    }
    done()
}

fn psci_calls(h: &mut Hostile, env: &Env) {
    use Conduit::Hvc;
    let entry = smp::trampoline_address();
    let ctx = &SECONDARY_BOOT as *const SecondaryBoot as u64;
    // Boot data as for a real start, in case a foreign CPU_ON wrongly succeeds: that CPU then
    // powers itself off again at once (SECONDARY_RELEASE is set).
    SECONDARY_BOOT.prepare(SECONDARY_STACK.top(), secondary_entry, 0);
    let outside = env.ram_end + 0x1000;
    let odd = image_start() + 0x1001;
    // CPU_ON for MPIDRs this VM does not own (with a valid entry point).
    for m in [
        0x1,
        0x2,
        0x100,
        0x1_0000,
        0xff_ffff,
        0x1_0000_0000,
        0x8000_0000,
        u64::MAX,
    ] {
        if env.owns_mpidr(m) {
            continue;
        }
        SECONDARY_RELEASE.store(true, Ordering::Release);
        let o = psci::probe_call(Hvc, psci::CPU_ON_64, m, entry, ctx);
        h.line(format_args!("hvc CPU_ON foreign mpidr={m:#x}"), &o);
    }
    let o = psci::probe_call(Hvc, psci::CPU_ON_32, 0xffff_ffff, entry, ctx);
    h.line(format_args!("hvc CPU_ON_32 mpidr=0xffffffff"), &o);
    // CPU_ON for itself (already on), also with bad entry points.
    let own = env.own_mpidr;
    for (what, e) in [
        ("valid", entry),
        ("0", 0),
        ("outside RAM", outside),
        ("odd", odd),
    ] {
        let o = psci::probe_call(Hvc, psci::CPU_ON_64, own, e, ctx);
        h.line(
            format_args!("hvc CPU_ON self mpidr={own:#x} entry={what} {e:#x}"),
            &o,
        );
    }
    // AFFINITY_INFO with bad levels and targets.
    for lvl in [0u64, 1, 2, 3, 4, 0xff, u64::MAX] {
        let o = psci::probe_call(Hvc, psci::AFFINITY_INFO_64, own, lvl, 0);
        h.line(format_args!("hvc AFFINITY_INFO self level={lvl:#x}"), &o);
    }
    let o = psci::probe_call(Hvc, psci::AFFINITY_INFO_64, 0xff_ffff, 0, 0);
    h.line(format_args!("hvc AFFINITY_INFO foreign mpidr=0xffffff"), &o);
    let o = psci::probe_call(Hvc, psci::AFFINITY_INFO_32, 0xffff_ffff, 0xffff_ffff, 0);
    h.line(format_args!("hvc AFFINITY_INFO_32 all-ones"), &o);

    // A spare vCPU of its own: start it properly, then try bad entry points on it.
    let Some(&spare) = env.mpidrs[..env.ncpus].iter().find(|&&m| m != own) else {
        println!("HOSTILE-INFO: one vCPU: no secondary tests (give the VM 2 vCPUs for them)");
        return;
    };
    SECONDARY_UP.store(0, Ordering::Release);
    SECONDARY_RELEASE.store(false, Ordering::Release);
    let r = smp::start_secondary(
        Hvc,
        spare,
        &SECONDARY_BOOT,
        SECONDARY_STACK.top(),
        secondary_entry,
        0,
    );
    h.line(
        format_args!("hvc CPU_ON own secondary mpidr={spare:#x} (legitimate)"),
        &Ret(r),
    );
    if r == psci::SUCCESS {
        let up = wait_until(1000, || SECONDARY_UP.load(Ordering::Acquire) != 0);
        let v = SECONDARY_UP.load(Ordering::Acquire);
        h.line(
            format_args!("wait for secondary {spare:#x}"),
            &format_args!(
                "{}",
                if up {
                    "ok came up"
                } else {
                    "timeout (not running after 1 s)"
                }
            ),
        );
        if up && v & !(1 << 63) != spare {
            println!(
                "HOSTILE-INFO: secondary reports MPIDR {:#x}",
                v & !(1 << 63)
            );
        }
        let o = psci::probe_call(Hvc, psci::CPU_ON_64, spare, entry, ctx);
        h.line(
            format_args!("hvc CPU_ON running secondary mpidr={spare:#x}"),
            &o,
        );
        let o = psci::probe_call(Hvc, psci::AFFINITY_INFO_64, spare, 0, 0);
        h.line(format_args!("hvc AFFINITY_INFO running secondary"), &o);
        SECONDARY_RELEASE.store(true, Ordering::Release);
        let mut last = 0i64;
        let off = wait_until(1000, || {
            last = psci::affinity_info(Hvc, spare, 0);
            last == psci::AFF_OFF
        });
        h.line(
            format_args!("wait for secondary CPU_OFF"),
            &format_args!(
                "{} affinity_info={last}",
                if off { "ok" } else { "timeout" }
            ),
        );
    }
    for (what, e) in [
        ("odd", odd),
        ("misaligned", image_start() + 0x1002),
        ("outside RAM", outside),
        ("0", 0),
        ("beyond PA", 1 << 48),
    ] {
        let o = psci::probe_call(Hvc, psci::CPU_ON_64, spare, e, ctx);
        h.line(
            format_args!("hvc CPU_ON own secondary mpidr={spare:#x} entry={what} {e:#x}"),
            &o,
        );
    }
}

/// `ret=<r>` and the PSCI error name.
struct Ret(i64);
impl Display for Ret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ret={}", self.0)?;
        if let Some(n) = psci::error_name(self.0) {
            write!(f, " ({n})")?;
        }
        Ok(())
    }
}

fn system_registers(h: &mut Hostile) {
    macro_rules! mrs {
        ($reg:literal) => {
            h.insn(format_args!("mrs {}", $reg), probe_insn!(read concat!("mrs {v}, ", $reg)), true)
        };
    }
    macro_rules! msr {
        ($reg:literal, $val:expr) => {{
            let v: u64 = $val;
            h.insn(
                format_args!("msr {} = {:#x}", $reg, v),
                probe_insn!(write concat!("msr ", $reg, ", {a}"), v),
                false,
            )
        }};
    }
    mrs!("cntp_ctl_el0");
    msr!("cntp_ctl_el0", 0);
    mrs!("cntp_cval_el0");
    mrs!("cntpct_el0");
    let o = mrs!("s3_1_c15_c0_0");
    msr!("s3_1_c15_c0_0", o.value);
    mrs!("s3_1_c15_c2_0");
    mrs!("s3_4_c15_c0_0");
    mrs!("s3_7_c15_c0_0");
    mrs!("s3_0_c0_c7_7");
    msr!(
        "icc_sgi1r_el1",
        0xff << 48 | 0xff << 32 | 15 << 24 | 0xff << 16 | 0xffff
    );
    msr!("icc_sgi1r_el1", 1 << 40 | 15 << 24);
    msr!("icc_sgi1r_el1", u64::MAX);
    mrs!("icc_sre_el1");
    msr!("icc_sre_el1", 0);
    mrs!("icc_sre_el1");
    mrs!("icc_hppir1_el1");
    let o = mrs!("dbgbvr0_el1");
    msr!("dbgbvr0_el1", o.value);
    mrs!("dbgbcr0_el1");
    mrs!("dbgwvr0_el1");
    mrs!("mdscr_el1");
    mrs!("oslsr_el1");
    let o = mrs!("pmcr_el0");
    msr!("pmcr_el0", o.value);
    mrs!("pmccntr_el0");
    mrs!("pmuserenr_el0");
    mrs!("actlr_el1");
    mrs!("hcr_el2");
    mrs!("vttbr_el2");
    mrs!("cntvoff_el2");
    mrs!("esr_el2");
    msr!("vbar_el2", 0);
    msr!("hcr_el2", 0);
    let o = probe_insn!(none "tlbi vmalls12e1is");
    h.insn(format_args!("tlbi vmalls12e1is"), o, false);
    let o = probe_insn!(none "tlbi alle2");
    h.insn(format_args!("tlbi alle2"), o, false);
    let o = probe_insn!(write "at s12e1r, {a}", 0x4000_0000);
    h.insn(format_args!("at s12e1r 0x40000000"), o, false);
}

fn execute(h: &mut Hostile, env: &Env) {
    let targets = [
        ("PL011", uart_base()),
        ("GICD", GICD),
        ("unmapped IPA", env.ram_end + (2 << 20)),
        ("IPA 0", 0),
        ("odd address in own code", image_start() + 0x1001),
        ("beyond 48-bit PA", 1 << 48),
    ];
    for (what, t) in targets {
        // SAFETY: none of the targets is code of this guest: devices, addresses outside its RAM
        // or a misaligned address (PC alignment fault before anything executes).
        let e = unsafe { probe_exec(t) };
        match e {
            Some(e) => h.line(format_args!("exec {what} {t:#x}"), &ExcAt(&e, t)),
            None => h.line(
                format_args!("exec {what} {t:#x}"),
                &"ok returned (executed!)",
            ),
        }
    }
}

fn flood(h: &mut Hostile, bytes: u64) {
    let t0 = timer::cntvct();
    let mut sent = 0u64;
    let mut line = 0u64;
    const PAT: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    while sent < bytes {
        // "FLOOD nnnnnn " (13 bytes) + 50 pattern bytes + "\n" = 64 bytes.
        let mut hdr = [b' '; 13];
        hdr[..6].copy_from_slice(b"FLOOD ");
        let mut x = line;
        for i in (6..12).rev() {
            hdr[i] = b'0' + (x % 10) as u8;
            x /= 10;
        }
        for &b in &hdr {
            putc(b);
        }
        for i in 0..50 {
            putc(PAT[(i + line as usize) % PAT.len()]);
        }
        putc(b'\n');
        sent += 64;
        line += 1;
    }
    let t = timer::cntvct() - t0;
    h.line(
        format_args!("console flood {sent} bytes"),
        &format_args!("ok ticks={t} ns={}", timer::ticks_to_ns(t, timer::cntfrq())),
    );
}

fn spin_masked(h: &mut Hostile, ms: u64) {
    let daif: u64;
    // SAFETY: reading DAIF has no side effects.
    unsafe { asm!("mrs {}, daif", out(reg) daif, options(nomem, nostack)) };
    let t0 = timer::cntvct();
    let end = t0 + timer::cntfrq() * ms / 1000;
    let mut iters = 0u64;
    while timer::cntvct() < end {
        iters += 1;
    }
    let t = timer::cntvct() - t0;
    h.line(
        format_args!("spin {ms} ms with DAIF={daif:#x}"),
        &format_args!("ok ticks={t} iterations={iters}"),
    );
}

// ---- virtio ----------------------------------------------------------------------------

/// The outcome of a virtio action: the used ring and what the device wrote, the device status
/// and InterruptStatus (acknowledged).
struct VioOutcome {
    used: u16,
    len: u32,
    st: u8,
    dev_status: u32,
    isr: u32,
}

impl Display for VioOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ok used={} len={} st={:#x} dev-status={:#x} isr={:#x}",
            self.used, self.len, self.st, self.dev_status, self.isr
        )
    }
}

/// A virtio-blk request laid out in the scratch buffers: header at `hdr`, data, status byte
/// at `status` (pre-set to 0xff so that "not written" shows).
struct Blk {
    dev: Dev,
    ring: Ring,
    hdr: u64,
    data: u64,
    status: u64,
    table: u64,
}

const T_IN: u32 = 0;
const T_OUT: u32 = 1;

impl Blk {
    /// Descriptors 0..=2: header, data (`write`: the device writes it), status.
    fn request(&self, kind: u32, sector: u64, data: u64, len: u32, device_writes: bool) {
        vio::put32(self.hdr, kind);
        vio::put32(self.hdr + 4, 0);
        vio::put64(self.hdr + 8, sector);
        vio::fill(self.status, 0xff, 1);
        let w = if device_writes { vio::DESC_WRITE } else { 0 };
        self.ring.set_desc(0, self.hdr, 16, vio::DESC_NEXT, 1);
        self.ring.set_desc(1, data, len, vio::DESC_NEXT | w, 2);
        self.ring.set_desc(2, self.status, 1, vio::DESC_WRITE, 0);
    }
    /// Publishes chain 0, notifies queue 0, and reports.
    fn submit(&mut self) -> VioOutcome {
        self.ring.push(0);
        self.dev.notify(0);
        self.outcome()
    }
    fn outcome(&self) -> VioOutcome {
        let used = self.ring.used_idx();
        let (_, len) = self.ring.used_elem(used.wrapping_sub(1));
        VioOutcome {
            used,
            len: if used == 0 { 0 } else { len },
            st: vio::byte(self.status),
            dev_status: self.dev.status(),
            isr: self.dev.take_interrupt(),
        }
    }
    /// Reset, features, a 16-entry queue at `ring`'s place, DRIVER_OK.
    fn start(&mut self) -> u32 {
        self.dev.negotiate(vio::F_VERSION_1 | vio::F_INDIRECT_DESC);
        self.ring = Ring::new(self.ring.desc, 16);
        self.dev.setup_queue(0, &self.ring, 16);
        self.dev.driver_ok()
    }
    /// Reads `sector` into the data buffer; the first 8 bytes.
    fn read_sector(&mut self, sector: u64) -> (VioOutcome, u64) {
        self.request(T_IN, sector, self.data, 512, true);
        let o = self.submit();
        // SAFETY: the data buffer, 8-byte aligned, in this guest's RAM.
        let v = unsafe { (self.data as *const u64).read_volatile() };
        (o, v)
    }
}

/// Attacks on the VM's own virtio devices (the test's vm.toml gives the hostile VM a writable
/// disk in slot 0 and a network port in slot 1, on a switch the checksum VM is on too). Every
/// request is built by hand in this guest's RAM; each line says what the device did with it.
/// Expected (docs/virtio.md, "Bad input"): malformed chains and buffers outside RAM are
/// returned unused (len 0, status byte untouched), bad requests get an error status, broken
/// rings set DEVICE_NEEDS_RESET, bad set-up is refused, and the device works again after a
/// reset.
fn virtio_attacks(h: &mut Hostile, env: &Env, dtb: usize) {
    let blk_dev = Dev::slot(0);
    let net = Dev::slot(1);
    let present = |d: &Dev| {
        probe_read(d.base + vio::reg::MAGIC, Width::B32)
            .exc
            .is_none()
            && d.present()
    };
    if !present(&blk_dev) || blk_dev.device_id() != vio::ID_BLK {
        h.skip(
            format_args!("virtio attacks"),
            "no virtio-blk device in slot 0",
        );
        return;
    }
    // Scratch: the upper half of RAM (the image, stack and DTB are at the bottom).
    let scratch = env.ram_base + (env.ram_end - env.ram_base) / 2;
    let mut b = Blk {
        dev: blk_dev,
        ring: Ring::new(scratch, 16),
        hdr: scratch + 0x1_0000,
        data: scratch + 0x2_0000,
        status: scratch + 0x3_0000,
        table: scratch + 0x4_0000,
    };
    let s = b.start();
    h.line(
        format_args!("virtio blk init"),
        &format_args!("ok dev-status={s:#x}"),
    );
    let (o, first) = b.read_sector(0);
    h.line(
        format_args!("virtio blk read sector 0"),
        &format_args!("{o} data={first:#x}"),
    );
    let (_, before) = b.read_sector(1);

    // Buffers outside the VM's RAM: IPA 0, the hypervisor's and the peer's PAs.
    b.request(T_IN, 0, 0, 512, true);
    let o = b.submit();
    h.line(format_args!("virtio blk read into IPA 0"), &o);
    let (hv, nhv) = dt::bootarg_list(dtb, "hostile.hv");
    for &a in &hv[..nhv] {
        b.request(T_OUT, 1, a & !0xfff, 512, false);
        let o = b.submit();
        h.line(
            format_args!("virtio blk write from hypervisor PA {:#x}", a & !0xfff),
            &o,
        );
    }
    let (peer, npeer) = dt::bootarg_list(dtb, "hostile.peer");
    for &a in &peer[..npeer] {
        if env.in_ram(a) {
            continue;
        }
        b.request(T_IN, 0, a, 512, true);
        let o = b.submit();
        h.line(format_args!("virtio blk read into peer VM PA {a:#x}"), &o);
    }
    let (o, after) = b.read_sector(1);
    h.line(
        format_args!("virtio blk sector 1 after the refused writes"),
        &format_args!(
            "{o} {}",
            if after == before {
                "unchanged"
            } else {
                "CHANGED"
            }
        ),
    );

    // Malformed chains.
    b.request(T_IN, 0, b.data, 512, true);
    b.ring
        .set_desc(2, b.status, 1, vio::DESC_WRITE | vio::DESC_NEXT, 0);
    let o = b.submit();
    h.line(format_args!("virtio blk looping chain"), &o);
    b.request(T_IN, 0, b.data, 0, true);
    let o = b.submit();
    h.line(format_args!("virtio blk zero-length data buffer"), &o);
    b.request(T_IN, 0, 0xffff_ffff_ffff_ff00, 512, true);
    let o = b.submit();
    h.line(
        format_args!("virtio blk buffer wrapping the address space"),
        &o,
    );
    b.request(T_IN, 0, b.data, 512, true);
    b.ring
        .set_desc(1, b.data, 512, vio::DESC_NEXT | vio::DESC_WRITE, 7);
    let o = b.submit();
    h.line(
        format_args!("virtio blk chain into an unset descriptor"),
        &o,
    );
    // Indirect tables: one that loops, one outside RAM.
    vio::fill(b.status, 0xff, 1);
    let t = Ring {
        desc: b.table,
        ..b.ring
    };
    t.set_desc(0, b.hdr, 16, vio::DESC_NEXT, 1);
    t.set_desc(1, b.data, 512, vio::DESC_NEXT | vio::DESC_WRITE, 0);
    b.ring.set_desc(0, b.table, 32, vio::DESC_INDIRECT, 0);
    let o = b.submit();
    h.line(format_args!("virtio blk indirect table that loops"), &o);
    b.ring
        .set_desc(0, 0x10_0000_0000, 48, vio::DESC_INDIRECT, 0);
    let o = b.submit();
    h.line(format_args!("virtio blk indirect table outside RAM"), &o);

    // Requests the device refuses with a status.
    b.request(T_OUT, 1 << 40, b.data, 512, false);
    let o = b.submit();
    h.line(
        format_args!("virtio blk write past the end of the disk"),
        &o,
    );
    b.request(0x7777, 0, b.data, 512, true);
    let o = b.submit();
    h.line(format_args!("virtio blk unknown request type"), &o);
    b.request(T_IN, 0, b.data, 100, true);
    let o = b.submit();
    h.line(format_args!("virtio blk read of a partial sector"), &o);

    // Registers.
    b.dev.notify(7);
    h.line(
        format_args!("virtio blk notify of queue 7 (none)"),
        &format_args!("ok dev-status={:#x}", b.dev.status()),
    );
    let cap = b.dev.read(vio::reg::CONFIG);
    b.dev.write(vio::reg::CONFIG, 0x1234);
    h.line(
        format_args!("virtio blk config write after DRIVER_OK"),
        &format_args!(
            "ok capacity {}",
            if b.dev.read(vio::reg::CONFIG) == cap {
                "unchanged"
            } else {
                "CHANGED"
            }
        ),
    );
    h.read(
        "virtio blk Status (8-bit)",
        b.dev.base + vio::reg::STATUS,
        Width::B8,
    );
    h.read(
        "virtio blk config (64-bit)",
        b.dev.base + vio::reg::CONFIG,
        Width::B64,
    );
    b.dev.write(vio::reg::STATUS, vio::status::ACKNOWLEDGE);
    h.line(
        format_args!("virtio blk status write clearing bits"),
        &format_args!("ok dev-status={:#x}", b.dev.status()),
    );

    // A request made available, then the device reset before the notification.
    b.request(T_IN, 0, b.data, 512, true);
    let used_before = b.ring.used_idx();
    b.ring.push(0);
    b.dev.reset();
    b.dev.notify(0);
    let o = b.outcome();
    h.line(
        format_args!("virtio blk reset between request and notify"),
        &format_args!(
            "ok completed={} dev-status={:#x}",
            o.used.wrapping_sub(used_before),
            o.dev_status
        ),
    );

    // avail.idx far ahead: the queue breaks, the device needs a reset.
    b.start();
    b.request(T_IN, 0, b.data, 512, true);
    let i = b.ring.avail_idx;
    b.ring.set_avail_idx(i.wrapping_add(1000));
    b.dev.notify(0);
    let o = b.outcome();
    h.line(format_args!("virtio blk avail.idx jump of 1000"), &o);
    b.request(T_IN, 0, b.data, 512, true);
    let o = b.submit();
    h.line(format_args!("virtio blk request after the queue broke"), &o);
    let s = b.start();
    let (o, v) = b.read_sector(0);
    h.line(
        format_args!("virtio blk reset and read sector 0 again"),
        &format_args!("{o} start-status={s:#x} same={}", v == first),
    );

    // Bad set-up: each refused, and the device usable again after a reset.
    b.dev.negotiate(vio::F_VERSION_1);
    let r = Ring::new(scratch, 16);
    let ready = b.dev.setup_queue(0, &r, 3);
    h.line(
        format_args!("virtio blk queue size 3"),
        &format_args!("ok ready={ready} dev-status={:#x}", b.dev.status()),
    );
    b.dev.negotiate(vio::F_VERSION_1);
    let r2 = Ring {
        desc: scratch + 2,
        ..r
    };
    let ready = b.dev.setup_queue(0, &r2, 16);
    h.line(
        format_args!("virtio blk misaligned descriptor table"),
        &format_args!("ok ready={ready} dev-status={:#x}", b.dev.status()),
    );
    b.dev.negotiate(vio::F_VERSION_1);
    let r3 = Ring {
        desc: 0x1000,
        avail: 0x2000,
        used: 0x3000,
        ..r
    };
    let ready = b.dev.setup_queue(0, &r3, 16);
    h.line(
        format_args!("virtio blk rings outside RAM"),
        &format_args!("ok ready={ready} dev-status={:#x}", b.dev.status()),
    );
    let st = b.dev.negotiate(vio::F_VERSION_1 | 1 << 50);
    h.line(
        format_args!("virtio blk features outside the offer"),
        &format_args!("ok dev-status={st:#x}"),
    );
    b.dev.reset();
    b.dev.write(
        vio::reg::STATUS,
        vio::status::ACKNOWLEDGE | vio::status::DRIVER,
    );
    b.dev.write(
        vio::reg::STATUS,
        vio::status::ACKNOWLEDGE | vio::status::DRIVER | vio::status::DRIVER_OK,
    );
    h.line(
        format_args!("virtio blk DRIVER_OK without FEATURES_OK"),
        &format_args!("ok dev-status={:#x}", b.dev.status()),
    );

    // Many requests in one notification.
    b.dev.negotiate(vio::F_VERSION_1);
    b.ring = Ring::new(scratch, 256);
    b.dev.setup_queue(0, &b.ring, 256);
    b.dev.driver_ok();
    for i in 0..85u16 {
        let d = 3 * i;
        b.ring.set_desc(d, b.hdr, 16, vio::DESC_NEXT, d + 1);
        b.ring
            .set_desc(d + 1, b.data, 512, vio::DESC_NEXT | vio::DESC_WRITE, d + 2);
        b.ring.set_desc(d + 2, b.status, 1, vio::DESC_WRITE, 0);
        b.ring.push(d);
    }
    vio::put32(b.hdr, T_IN);
    vio::put64(b.hdr + 8, 0);
    b.dev.notify(0);
    let o = b.outcome();
    h.line(
        format_args!("virtio blk 85 requests in one notification"),
        &o,
    );
    b.dev.reset();

    virtio_net_attacks(h, env, &net, scratch + 0x10_0000, &peer[..npeer]);
}

/// The network port: transmit from outside RAM, runts, offloads not negotiated, and notifying
/// a receive queue that was never set up; then one good broadcast frame (to the switch's other
/// port, the checksum VM, which has no driver: a receive drop there).
fn virtio_net_attacks(h: &mut Hostile, env: &Env, net: &Dev, scratch: u64, peer: &[u64]) {
    if !(probe_read(net.base + vio::reg::MAGIC, Width::B32)
        .exc
        .is_none()
        && net.present())
        || net.device_id() != vio::ID_NET
    {
        h.skip(
            format_args!("virtio net attacks"),
            "no virtio-net device in slot 1",
        );
        return;
    }
    let mut tx = Ring::new(scratch, 16);
    let st = net.negotiate(vio::F_VERSION_1);
    net.setup_queue(1, &tx, 16);
    let st2 = net.driver_ok();
    h.line(
        format_args!("virtio net init (transmit queue only)"),
        &format_args!("ok dev-status={st:#x}/{st2:#x}"),
    );
    let frame = scratch + 0x1_0000;
    let send = |tx: &mut Ring, addr: u64, len: u32| -> VioOutcome {
        tx.set_desc(0, addr, len, 0, 0);
        let before = tx.used_idx();
        tx.push(0);
        net.notify(1);
        let used = tx.wait_used(before, 200);
        VioOutcome {
            used,
            len: tx.used_elem(used.wrapping_sub(1)).1,
            st: 0,
            dev_status: net.status(),
            isr: net.take_interrupt(),
        }
    };
    // A broadcast ARP-sized frame after the 12-byte virtio-net header.
    vio::fill(frame, 0, 12 + 60);
    vio::fill(frame + 12, 0xff, 6);
    vio::fill(frame + 18, 0x02, 6);
    vio::fill(frame + 24, 0x08, 1);
    vio::fill(frame + 25, 0x06, 1);
    let o = send(&mut tx, frame, 72);
    h.line(format_args!("virtio net broadcast frame"), &o);
    net.notify(0);
    h.line(
        format_args!("virtio net notify of the receive queue never set up"),
        &format_args!("ok dev-status={:#x}", net.status()),
    );
    for &a in peer.iter().filter(|&&a| !env.in_ram(a)) {
        let o = send(&mut tx, a, 72);
        h.line(format_args!("virtio net frame from peer VM PA {a:#x}"), &o);
    }
    let o = send(&mut tx, frame, 16);
    h.line(format_args!("virtio net runt frame"), &o);
    vio::fill(frame, 1, 1); // NEEDS_CSUM, not negotiated
    let o = send(&mut tx, frame, 72);
    h.line(
        format_args!("virtio net checksum offload not negotiated"),
        &o,
    );
    vio::fill(frame, 0, 1);
    tx.set_desc(0, frame, 72, vio::DESC_WRITE, 0);
    let before = tx.used_idx();
    tx.push(0);
    net.notify(1);
    let used = tx.wait_used(before, 200);
    h.line(
        format_args!("virtio net device-writable transmit buffer"),
        &format_args!("ok used={used} dev-status={:#x}", net.status()),
    );
    net.reset();
}

#[unsafe(no_mangle)]
fn guest_main(dtb: usize) -> ! {
    let [(ram_base, ram_size), ..] = memory(dtb);
    let (mpidrs, ncpus) = dt::cpu_mpidrs(dtb);
    let env = Env {
        ram_base,
        ram_end: ram_base + ram_size,
        own_mpidr: gic::mpidr(),
        mpidrs,
        ncpus,
        gic: dt::gic(dtb),
    };
    let mmfr0 = probe_insn!(read "mrs {v}, id_aa64mmfr0_el1");
    println!(
        "HOSTILE-INFO: ram {ram_base:#x}..{:#x} image {:#x}..{:#x} dtb {dtb:#x} mpidr {:#x} vcpus {ncpus} gic {:?} parange {} bootargs \"{}\"",
        env.ram_end,
        image_start(),
        image_end(),
        env.own_mpidr,
        env.gic,
        mmfr0.value & 0xf,
        dt::bootargs(dtb)
    );
    if dt::bootarg_u64(dtb, "hostile.go_key", 0) == 1 {
        match kestrel_test_guests::wait_for_key(120_000) {
            Some(_) => println!("HOSTILE-INFO: go"),
            None => println!("HOSTILE-INFO: no go key within 120 s; attacking anyway"),
        }
    }
    let mut h = Hostile { n: 0 };
    memory_outside(&mut h, &env);
    host_addresses(&mut h, &env, dtb);
    gic_regions(&mut h, &env);
    uart_region(&mut h);
    awkward_accesses(&mut h, &env);
    smccc_calls(&mut h);
    psci_calls(&mut h, &env);
    system_registers(&mut h);
    execute(&mut h, &env);
    virtio_attacks(&mut h, &env, dtb);
    flood(&mut h, dt::bootarg_u64(dtb, "hostile.flood", 200 * 1024));
    spin_masked(&mut h, dt::bootarg_u64(dtb, "hostile.spin_ms", 2000));
    println!("HOSTILE: done {} actions", h.n);
    system_off()
}
