//! Boot: from the stub's call into Rust to a machine with the platform read from the DTB, every
//! CPU online, the page allocator and the final EL2 map in place; then the VMs.
use crate::addr::{PhysAddr, Range};
use crate::arch::aarch64::{
    boot as stub, console, cpu, early_uart, exception, gic, heap, mmu, psci_fw,
};
use crate::mm::PAGES;
use crate::mm::frame::FrameAllocator;
use crate::platform::early_console::{self, EarlyConsole};
use crate::platform::{
    BootParams, Conduit, EnableMethod, GicVersion, Platform, PlatformError, ReservedKind,
};
use crate::runtime::machine::{self, power_off, say};
use core::sync::atomic::Ordering;
use log::{error, info, warn};
use spin::Once;

/// What the DTB says about the machine.
pub static PLATFORM: Once<Platform> = Once::new();
/// Largest DTB accepted (the early map covers 2 MiB from its start).
const MAX_DTB: usize = 2 << 20;
/// Initial heap taken from RAM at boot.
const HEAP_INITIAL: u64 = 16 << 20;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

// SAFETY: these symbols are defined in boot/*.S (or the linker script) with exactly these
// signatures; each call site states why its use is sound.
unsafe extern "C" {
    static kestrel_vectors: u8;
}

fn set_vectors() {
    use aarch64_cpu::registers::{VBAR_EL2, Writeable};
    VBAR_EL2.set(core::ptr::addr_of!(kestrel_vectors) as u64);
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
}

/// Entered from entry.S on the boot CPU with the MMU off, on CPU 0's stack, the early exception
/// vectors installed (at EL2).
#[unsafe(no_mangle)]
extern "C" fn kestrel_primary_early(dtb: u64, load_base: u64, el_info: u64) -> ! {
    // Before anything can go wrong: a UART guessed from where the loader put us, for the early
    // exception vectors and a refused boot (replaced by the DTB's console once it is read).
    early_uart::set(early_console::by_load_address(load_base));
    let el = el_info & 0xf;
    if el != 2 && el != 3 {
        wrong_el();
    }
    let img = stub::image_layout();
    // SAFETY: first thing on the boot CPU, MMU off, nothing else running.
    unsafe { mmu::early_enable(img.start, img.end, dtb) };
    cpu::init_this_cpu(0);
    heap::init_early();
    primary_main(dtb, load_base, el_info)
}

/// Entered at EL1 (no EL2 for us): say so on the guessed UARTs and stop. Runs with the MMU off:
/// only the early UART's raw, lock-free writes.
fn wrong_el() -> ! {
    early_uart::write(b"kestrel: entered at EL1, not EL2: a hypervisor cannot run here; halted\n");
    cpu::halt()
}

/// The DTB blob, with its header's size checked before the slice is made.
fn dtb_blob(dtb: u64) -> Result<&'static [u8], &'static str> {
    if dtb == 0 || !dtb.is_multiple_of(8) {
        return Err("no DTB pointer in x0 (or a misaligned one)");
    }
    // SAFETY: the early map covers the 2 MiB from `dtb`; reading the 8-byte header is in range.
    let head = unsafe { core::slice::from_raw_parts(dtb as *const u8, 8) };
    if head[..4] != [0xd0, 0x0d, 0xfe, 0xed] {
        return Err("the blob at x0 is not a DTB (bad magic)");
    }
    let size = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
    if !(40..=MAX_DTB).contains(&size) {
        return Err("DTB totalsize is implausible (over 2 MiB or under a header)");
    }
    // SAFETY: `size` bytes from `dtb` lie within the early-mapped 2 MiB window and the loader
    // handed the blob to us; nothing writes to it.
    Ok(unsafe { core::slice::from_raw_parts(dtb as *const u8, size) })
}

/// Stops the boot with a message: powers off if the DTB named a PSCI conduit, else halts.
fn fatal(why: core::fmt::Arguments) -> ! {
    say(
        format_args!("kestrel: cannot boot: {why}"),
        log::Level::Error,
    );
    power_off()
}

/// Points the console (and the early UART) at `u` and installs the real exception vectors,
/// which print through the console, in place of the early ones.
fn console_on(u: &crate::platform::Uart) {
    let kind = match u.kind {
        crate::platform::UartKind::Pl011 => console::UartKind::Pl011,
        crate::platform::UartKind::Bcm2835Aux => console::UartKind::MiniUart,
    };
    console::init(kind, u.base.as_u64(), u.clock_hz);
    early_uart::set(&[early_console::EarlyUart {
        kind: u.kind,
        base: u.base,
    }]);
    set_vectors();
}

fn primary_main(dtb: u64, load_base: u64, el_info: u64) -> ! {
    let img = stub::image_layout();
    let params = BootParams {
        dtb_base: PhysAddr::new(dtb),
        image: Range::new(PhysAddr::new(img.start), img.end - img.start),
        max_cpus: stub::MAX_CPUS,
    };
    let blob = dtb_blob(dtb);
    console::init_logger(log::LevelFilter::Info);
    let parsed = blob
        .map_err(PlatformError::Malformed)
        .and_then(|blob| Platform::parse(blob, &params));
    let platform = match parsed {
        Ok(p) => PLATFORM.call_once(|| p),
        Err(e) => {
            // A refused DTB: its reason goes to the DTB's own console when the DTB names one
            // (found as Platform::parse finds it, through `ranges`), else stays on the early
            // UARTs' board guess.
            if let Ok(b) = blob {
                match early_console::from_dtb(b, load_base) {
                    EarlyConsole::Dtb(u) => console_on(&u),
                    EarlyConsole::Guess { uarts, .. } => early_uart::set(uarts),
                }
            }
            early_psci_from_blob(blob.ok());
            fatal(format_args!("{e}"))
        }
    };
    console_on(&platform.console);
    log::set_max_level(platform.options.loglevel.unwrap_or(log::LevelFilter::Info));
    info!(
        "kestrel {VERSION} booting at EL2{} on {}",
        if el_info & 0x100 != 0 {
            " (dropped from EL3)"
        } else {
            ""
        },
        platform.model
    );
    psci_fw::set_conduit(platform.psci.as_ref().map(|p| match p.method {
        Conduit::Smc => psci_fw::Conduit::Smc,
        Conduit::Hvc => psci_fw::Conduit::Hvc,
    }));
    let total: u64 = platform.memory.iter().map(|m| m.size).sum();
    info!(
        "kestrel: platform: {} MiB RAM in {} ranges, {} CPUs, GICv{}, console {}@{:#x}, psci {}",
        total >> 20,
        platform.memory.len(),
        platform.cpus.len(),
        match platform.gic.version {
            GicVersion::V2 => 2,
            GicVersion::V3 => 3,
        },
        match platform.console.kind {
            crate::platform::UartKind::Pl011 => "pl011",
            crate::platform::UartKind::Bcm2835Aux => "mini-uart",
        },
        platform.console.base.as_u64(),
        match platform.psci.as_ref().map(|p| p.method) {
            Some(Conduit::Smc) => "smc",
            Some(Conduit::Hvc) => "hvc",
            None => "none",
        }
    );
    for m in &platform.memory {
        info!(
            "kestrel:   ram {:#012x}..{:#012x}",
            m.start.as_u64(),
            m.end().as_u64()
        );
    }
    for r in &platform.reserved {
        info!(
            "kestrel:   reserved {:#012x}..{:#012x} {:?}",
            r.range.start.as_u64(),
            r.range.end().as_u64(),
            r.kind
        );
    }

    build_final_map(platform, &img);
    for r in platform.free_ram() {
        // SAFETY: `free_ram` is RAM that build_final_map just mapped read-write at its physical
        // address, outside the image, the DTB, the initrd and every reservation; each range is
        // handed over once.
        unsafe { PAGES.add_range(r.start, r.end()) };
    }
    grow_heap();
    init_gic(platform);
    start_secondaries(platform);
    let s = PAGES.stats();
    info!(
        "kestrel: pages: {} free, {} used",
        s.free_pages(),
        s.used_pages
    );
    crate::runtime::vms::run(platform);
    // Input typed before the VMs existed (kept when the UART was programmed) goes to the
    // focused VM now rather than with the next key.
    crate::runtime::control::console_input();
    crate::runtime::idle::enter()
}

/// When the platform parser refused the DTB, still try to learn the PSCI conduit so that the
/// refusal can end in a power-off rather than a halt. Only SMC: an HVC would come back to us.
fn early_psci_from_blob(blob: Option<&[u8]>) {
    if blob.and_then(crate::platform::psci_conduit_hint) == Some(Conduit::Smc) {
        psci_fw::set_conduit(Some(psci_fw::Conduit::Smc));
    }
}

fn build_final_map(platform: &Platform, img: &stub::ImageLayout) {
    let mut fmap = mmu::FinalMap::new();
    let no_map: alloc::vec::Vec<Range<PhysAddr>> = platform
        .reserved
        .iter()
        .filter(|r| r.kind == ReservedKind::ReservedMemory { no_map: true })
        .map(|r| r.range)
        .collect();
    let image = Range::new(PhysAddr::new(img.start), img.end - img.start);
    let mut holes = no_map.clone();
    holes.push(image);
    let mut ok = true;
    for r in crate::platform::free_ranges(&platform.memory, &holes) {
        ok &= fmap
            .map(r.start.as_u64(), r.end().as_u64(), mmu::MapKind::Ram)
            .is_ok();
    }
    ok &= fmap
        .map(img.start, img.text_end, mmu::MapKind::Text)
        .is_ok();
    ok &= fmap
        .map(img.text_end, img.rodata_end, mmu::MapKind::ReadOnly)
        .is_ok();
    ok &= fmap.map(img.rodata_end, img.end, mmu::MapKind::Ram).is_ok();
    let mut device = |r: &Range<PhysAddr>| {
        fmap.map(r.start.as_u64(), r.end().as_u64(), mmu::MapKind::Device)
            .is_ok()
    };
    let con = Range::new(platform.console.base.align_down(0x1000), 0x1000);
    ok &= device(&con);
    ok &= device(&platform.gic.gicd);
    for r in &platform.gic.gicr {
        ok &= device(r);
    }
    for r in [&platform.gic.gicc, &platform.gic.gich]
        .into_iter()
        .flatten()
    {
        ok &= device(r);
    }
    if !ok {
        fatal(format_args!("building the EL2 map failed"));
    }
    let (mair, tcr, ttbr, sctlr) = fmap.activate();
    // The map lives as long as the hypervisor.
    core::mem::forget(fmap);
    let hcr = aarch64_cpu::registers::HCR_EL2::RW::EL1IsAarch64.value;
    stub::publish_secondary_boot(mair, tcr, ttbr, sctlr, hcr);
}

fn grow_heap() {
    let order = (HEAP_INITIAL / crate::addr::PAGE_SIZE).trailing_zeros();
    match PAGES.alloc_frames(order) {
        Some(pa) => {
            // SAFETY: the block was just allocated for the heap alone and is mapped RAM.
            unsafe { heap::add_region(pa.as_u64() as usize, HEAP_INITIAL as usize) };
        }
        None => warn!("kestrel: no {} MiB block for the heap", HEAP_INITIAL >> 20),
    }
    heap::enable_growth();
}

fn init_gic(platform: &Platform) {
    let g = &platform.gic;
    let frames = gic::GicFrames {
        gicd: g.gicd.start.as_u64(),
        gicr: g.gicr.iter().map(|r| (r.start.as_u64(), r.size)).collect(),
        gicc: g.gicc.map(|r| r.start.as_u64()).unwrap_or(0),
        gich: g.gich.map(|r| r.start.as_u64()).unwrap_or(0),
    };
    let version = match g.version {
        GicVersion::V2 => gic::GicVersion::V2,
        GicVersion::V3 => gic::GicVersion::V3,
    };
    gic::init_distributor(version, frames);
    if let Err(e) = gic::init_cpu() {
        fatal(format_args!("GIC set-up on the boot CPU: {e}"));
    }
}

fn start_secondaries(platform: &Platform) {
    let me = cpu::mpidr_affinity();
    machine::set_cpus_online(1);
    // Index of each CPU of the DTB's list: the boot CPU is 0, the others follow in DTB order.
    let mut index_of = alloc::vec![0usize; platform.cpus.len()];
    let mut next = 0;
    for (pos, c) in platform.cpus.iter().enumerate() {
        if c.mpidr != me {
            next += 1;
            index_of[pos] = next;
            if let Some(pc) = cpu::percpu(next) {
                pc.mpidr.store(c.mpidr, Ordering::Relaxed);
            }
        }
    }
    let mut expected = 1;
    for (pos, c) in platform.cpus.iter().enumerate() {
        let index = index_of[pos];
        if c.mpidr == me || c.enable_method != EnableMethod::Psci {
            continue;
        }
        match psci_fw::cpu_on(c.mpidr, stub::secondary_entry_pa(), index as u64) {
            Some(0) => expected += 1,
            r => error!(
                "kestrel: CPU_ON cpu{index} (mpidr {:#x}) failed: {r:?}",
                c.mpidr
            ),
        }
    }
    expected += release_spin_table(platform, me, &index_of);
    for (pos, c) in platform.cpus.iter().enumerate() {
        if !matches!(
            c.enable_method,
            EnableMethod::Psci | EnableMethod::SpinTable { .. }
        ) && c.mpidr != me
        {
            warn!(
                "kestrel: cpu{} (mpidr {:#x}): enable method {:?} not supported",
                index_of[pos], c.mpidr, c.enable_method
            );
        }
    }
    let t0 = cpu::counter();
    let limit = cpu::counter_freq().max(1) * 10;
    while machine::cpus_online() < expected {
        if cpu::counter() - t0 > limit {
            error!(
                "kestrel: only {} of {expected} CPUs came online",
                machine::cpus_online()
            );
            break;
        }
        core::hint::spin_loop();
    }
    info!("kestrel: cpus online: {}", machine::cpus_online());
}

/// Releases the CPUs that wait in a spin table (the Raspberry Pi 4's firmware): each finds its
/// index in the handoff table by its MPIDR (the firmware enters with x0 = 0). Returns how many
/// were released.
fn release_spin_table(platform: &Platform, me: u64, index_of: &[usize]) -> usize {
    use crate::platform::spin_table::{self, Handoff, MemoryView, ReleaseOp};
    if !platform
        .cpus
        .iter()
        .any(|c| matches!(c.enable_method, EnableMethod::SpinTable { .. }))
    {
        return 0;
    }
    let img = stub::image_layout();
    let view = MemoryView {
        memory: &platform.memory,
        reserved: &platform.reserved,
        image: Range::new(PhysAddr::new(img.start), img.end - img.start),
    };
    let handoff = Handoff {
        base: PhysAddr::new(stub::spin_handoff_pa()),
        slots: stub::MAX_CPUS,
    };
    let entry = PhysAddr::new(stub::spin_entry_pa());
    let plan = match spin_table::plan(
        &platform.cpus,
        me,
        entry,
        |pos| index_of.get(pos).copied().unwrap_or(0) as u64,
        handoff,
        &view,
    ) {
        Ok(p) => p,
        Err(e) => {
            error!("kestrel: spin-table release impossible: {e:?}");
            return 0;
        }
    };
    for (pos, why) in &plan.rejected {
        error!(
            "kestrel: cpu{} not released: {why:?}",
            index_of.get(*pos).copied().unwrap_or(0)
        );
    }
    let run = |ops: &[ReleaseOp]| {
        for op in ops {
            match *op {
                ReleaseOp::Write64 { addr, value } => stub::write_phys_u64(addr.as_u64(), value),
                ReleaseOp::CleanToPoc { range } => crate::arch::aarch64::cache::clean_dcache_range(
                    range.start.as_u64(),
                    range.size,
                ),
                ReleaseOp::DsbSy => aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::SY),
                ReleaseOp::Sev => aarch64_cpu::asm::sev(),
            }
        }
    };
    run(&plan.prepare);
    for r in &plan.releases {
        run(&r.ops);
    }
    plan.releases.len()
}

#[unsafe(no_mangle)]
extern "C" fn kestrel_secondary_main(index: usize) -> ! {
    cpu::init_this_cpu(index);
    set_vectors();
    if let Err(e) = gic::init_cpu() {
        error!("kestrel: cpu{index}: GIC set-up failed: {e}; parked");
        cpu::halt();
    }
    machine::cpu_came_online();
    crate::runtime::idle::secondary_idle()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    if !console::is_ready() {
        // Before the console exists (the boot CPU, before the DTB is read): the early UART.
        use core::fmt::Write as _;
        let w = &mut early_uart::Writer;
        let _ = writeln!(
            w,
            "kestrel: PANIC before the console was up: {}",
            info.message()
        );
        if let Some(l) = info.location() {
            let _ = writeln!(w, "  at {}:{}:{}", l.file(), l.line(), l.column());
        }
        cpu::halt();
    }
    console::set_panicking();
    console::with_console(|w| {
        let _ = console::write_prefix(w);
        let _ = writeln!(w, "PANIC: {}", info.message());
        if let Some(l) = info.location() {
            let _ = writeln!(w, "  at {}:{}:{}", l.file(), l.line(), l.column());
        }
    });
    crate::runtime::percpu::stop_all_cpus();
    cpu::halt()
}

/// Entry from vectors.S for an exception from a guest.
#[unsafe(no_mangle)]
extern "C" fn kestrel_guest_exit(frame: *mut exception::TrapFrame, kind: u64) {
    // SAFETY: vectors.S passes this CPU's guest frame, which it just filled; nothing else
    // references it while the exit is handled.
    let frame = unsafe { &mut *frame };
    crate::runtime::exit::handle(frame, kind)
}
