//! What the running hypervisor knows about its machine once it has booted: the features VMs are
//! built for ([`MachineView`]), which physical interrupts are forwarded how, how many CPUs came
//! online, whether a panic is stopping everything, and powering the machine off.
//!
//! The bottom of the runtime: it depends on nothing else in `runtime`, and everything above may
//! read it. Written once at boot (before any VM runs), read everywhere after.
use crate::addr::PhysAddr;
use crate::arch::aarch64::{cpu, psci_fw};
use crate::mm::stage2::PaRange;
use crate::psci::SmcccConfig;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use spin::Once;

/// What a VM needs from the machine to be built.
pub struct MachineView {
    pub gic_v3: bool,
    /// Physical address of the GICv2 virtual CPU interface (GICV), to map at the guest's GICC.
    pub gicv: Option<PhysAddr>,
    pub pa_range: PaRange,
    pub vmid16: bool,
    /// FEAT_S2FWB: stage 2 can force write-back cacheability (HCR_EL2.FWB), so guest memory
    /// needs no cache cleaning when it is handed over.
    pub fwb: bool,
    /// The CPU-vulnerability workarounds guests are offered (`mitigations`).
    pub smccc: SmcccConfig,
}

static MACHINE: Once<MachineView> = Once::new();
static CPUS_ONLINE: AtomicUsize = AtomicUsize::new(0);
static PANICKING: AtomicBool = AtomicBool::new(false);
static CONSOLE_IRQ: AtomicUsize = AtomicUsize::new(usize::MAX);
/// The host's PMU interrupt is PPI 23 (`gic::PPI_PMU`), which the vCPU on each CPU is given.
static PMU_FORWARDED: AtomicBool = AtomicBool::new(false);

/// Records what VMs are built for (once, at boot).
pub fn set_view(view: MachineView) -> &'static MachineView {
    MACHINE.call_once(|| view)
}

/// What VMs are built for; `None` before boot got that far.
pub fn view() -> Option<&'static MachineView> {
    MACHINE.get()
}

/// Whether the EL1 timers (and the PMU overflow interrupt) are forwarded with the list
/// registers' HW bit (GICv3), or held active and deactivated by the vGIC after the guest's EOI
/// (GICv2; both through `Vgic::map_phys_ppi`). QEMU's GICv2 model does not re-evaluate the
/// physical interrupt when a hardware-linked virtual interrupt is deactivated, so a timer that
/// fired again meanwhile is lost and an idle guest sleeps forever; the held scheme costs one
/// maintenance exit per timer interrupt and works on every GICv2.
pub fn vtimer_hw_linked() -> bool {
    MACHINE.get().is_some_and(|m| m.gic_v3)
}

pub fn set_pmu_forwarded(on: bool) {
    PMU_FORWARDED.store(on, Ordering::Relaxed);
}

/// Whether guests get the PMU overflow interrupt (PPI 23, forwarded by `exit::irq`): the
/// platform's PMU node names that PPI. Elsewhere (one SPI per CPU, as on the Pi 4) guests
/// count but do not sample.
pub fn pmu_forwarded() -> bool {
    PMU_FORWARDED.load(Ordering::Relaxed)
}

pub fn set_console_irq(intid: u32) {
    CONSOLE_IRQ.store(intid as usize, Ordering::Relaxed);
}

/// The console UART's interrupt (keyboard input), if it has one (`usize::MAX` otherwise).
pub fn console_irq() -> usize {
    CONSOLE_IRQ.load(Ordering::Relaxed)
}

/// Physical CPUs started (set during boot, while the secondaries come up).
pub fn cpus_online() -> usize {
    CPUS_ONLINE.load(Ordering::SeqCst)
}

/// Boot: the boot CPU is online.
pub fn set_cpus_online(n: usize) {
    CPUS_ONLINE.store(n, Ordering::SeqCst);
}

/// Boot: a secondary CPU came online.
pub fn cpu_came_online() {
    CPUS_ONLINE.fetch_add(1, Ordering::SeqCst);
}

/// After a panic: every CPU stops at its next chance (see `percpu::stop_all_cpus`).
pub fn set_panicking() {
    PANICKING.store(true, Ordering::SeqCst);
}

pub fn panicking() -> bool {
    PANICKING.load(Ordering::Relaxed)
}

/// Prints one line on the console (or the early UARTs before it is up).
pub fn say(args: core::fmt::Arguments, level: log::Level) {
    use crate::arch::aarch64::{console, early_uart};
    if console::is_ready() {
        log::log!(level, "{args}");
    } else {
        let _ = core::fmt::Write::write_fmt(&mut early_uart::Writer, format_args!("{args}\n"));
    }
}

/// Powers the machine off through PSCI, or halts with the line scripts wait for where nothing
/// can power off.
pub fn power_off() -> ! {
    say(format_args!("kestrel: power off"), log::Level::Info);
    let _ = psci_fw::system_off();
    say(
        format_args!("kestrel: halted, power can be removed"),
        log::Level::Info,
    );
    cpu::halt()
}
