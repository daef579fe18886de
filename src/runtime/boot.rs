//! Boot: from the stub's call into Rust to a machine with every CPU online, the page allocator
//! and the final EL2 map in place.
use crate::addr::PhysAddr;
use crate::arch::aarch64::{boot as stub, console, cpu, exception, heap, mmu, psci_fw};
use crate::mm::page_alloc::PageAllocator;
use core::sync::atomic::{AtomicUsize, Ordering};
use log::{error, info};

pub static PAGES: PageAllocator = PageAllocator::new();
static CPUS_ONLINE: AtomicUsize = AtomicUsize::new(0);

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

unsafe extern "C" {
    static kestrel_vectors: u8;
}

fn set_vectors() {
    use aarch64_cpu::registers::{VBAR_EL2, Writeable};
    VBAR_EL2.set(core::ptr::addr_of!(kestrel_vectors) as u64);
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
}

/// Entered from entry.S on the boot CPU with the MMU off.
#[unsafe(no_mangle)]
extern "C" fn kestrel_primary_early(dtb: u64, _load_base: u64, el_info: u64) -> ! {
    let el = el_info & 0xf;
    if el != 2 && el != 3 {
        wrong_el(dtb, el);
    }
    let img = stub::image_layout();
    // SAFETY: first thing on the boot CPU, MMU off, nothing else running.
    unsafe { mmu::early_enable(img.start, img.end, dtb) };
    cpu::init_this_cpu(0);
    set_vectors();
    heap::init_early();
    primary_main(dtb, el_info)
}

/// Entered at EL1 (no EL2 for us): say so on the console the DTB names and stop. Runs with the
/// MMU off, so it avoids locks and writes the PL011 data register directly.
fn wrong_el(dtb: u64, el: u64) -> ! {
    // SAFETY: the boot protocol hands us a DTB pointer; fdt checks its header before use.
    let uart = unsafe { fdt::Fdt::from_ptr(dtb as *const u8) }
        .ok()
        .and_then(|f| {
            f.chosen()
                .stdout()
                .and_then(|n| n.reg())
                .and_then(|mut r| r.next())
        })
        .map(|r| r.starting_address as u64)
        .unwrap_or(0x0900_0000);
    let mut msg = [0u8; 96];
    let text = b"kestrel: entered at EL1, not EL2: cannot run a hypervisor here; halting\n";
    msg[..text.len()].copy_from_slice(text);
    let _ = el;
    for &b in &msg[..text.len()] {
        // SAFETY: PL011 UARTDR at `uart` (the DTB's stdout or QEMU virt's UART); a raw store is
        // all a PL011 needs to transmit, and nothing else runs.
        unsafe { core::ptr::write_volatile(uart as *mut u32, b as u32) };
    }
    cpu::halt()
}

fn primary_main(dtb: u64, el_info: u64) -> ! {
    // SAFETY: the boot protocol hands us a DTB pointer; fdt validates the header and size.
    let fdt = match unsafe { fdt::Fdt::from_ptr(dtb as *const u8) } {
        Ok(f) => f,
        Err(_) => {
            console::init(console::UartKind::Pl011, 0x0900_0000);
            console::with_console(|w| {
                let _ = writeln!(w, "kestrel: the DTB at {dtb:#x} is invalid; halting");
            });
            cpu::halt()
        }
    };
    let (kind, base) = match find_uart(&fdt) {
        Some(u) => u,
        None => cpu::halt(),
    };
    console::init(kind, base);
    let level = fdt
        .chosen()
        .bootargs()
        .and_then(|b| {
            b.split_whitespace()
                .find_map(|a| a.strip_prefix("loglevel="))
        })
        .and_then(|l| l.parse::<log::LevelFilter>().ok())
        .unwrap_or(log::LevelFilter::Info);
    console::init_logger(level);
    info!(
        "kestrel {VERSION} booting at EL2{} on {}",
        if el_info & 0x100 != 0 {
            " (dropped from EL3)"
        } else {
            ""
        },
        fdt.root().model()
    );

    let img = stub::image_layout();
    let mut fmap = mmu::FinalMap::new();
    let mut total = 0u64;
    for r in fdt.memory().regions() {
        let start = r.starting_address as u64;
        let size = r.size.unwrap_or(0) as u64;
        total += size;
        let _ = fmap.map(start, start + size, mmu::MapKind::Ram);
        // Free RAM = memory minus image minus DTB (interim, before the full platform parser).
        let end = start + size;
        let dtb_end = dtb + fdt.total_size() as u64;
        let mut cuts = [(img.start, img.end), (dtb, dtb_end)];
        cuts.sort();
        let mut cur = start;
        for (cs, ce) in cuts {
            if ce <= cur || cs >= end {
                continue;
            }
            if cs > cur {
                PAGES.add_range(PhysAddr::new(cur), PhysAddr::new(cs));
            }
            cur = cur.max(ce);
        }
        if cur < end {
            PAGES.add_range(PhysAddr::new(cur), PhysAddr::new(end));
        }
    }
    let _ = fmap.map(img.start, img.text_end, mmu::MapKind::Text);
    let _ = fmap.map(img.text_end, img.rodata_end, mmu::MapKind::ReadOnly);
    let _ = fmap.map(base, base + 0x1000, mmu::MapKind::Device);
    let (mair, tcr, ttbr, sctlr) = fmap.activate();
    core::mem::forget(fmap);
    let hcr = aarch64_cpu::registers::HCR_EL2::RW::EL1IsAarch64.value;
    stub::publish_secondary_boot(mair, tcr, ttbr, sctlr, hcr);

    let gic = if fdt.find_compatible(&["arm,gic-v3"]).is_some() {
        "GICv3"
    } else if fdt
        .find_compatible(&["arm,cortex-a15-gic", "arm,gic-400"])
        .is_some()
    {
        "GICv2"
    } else {
        "no GIC"
    };
    info!(
        "kestrel: platform: {} MiB RAM in {} ranges, {} CPUs, {gic}, console {:?}@{base:#x}",
        total >> 20,
        fdt.memory().regions().count(),
        fdt.cpus().count(),
        kind
    );
    let s = PAGES.stats();
    info!(
        "kestrel: pages: {} free, {} used",
        s.free_pages(),
        s.used_pages
    );

    if let Some(psci) = fdt.find_node("/psci") {
        let method = psci.property("method").and_then(|p| p.as_str());
        psci_fw::set_conduit(match method {
            Some("smc") => Some(psci_fw::Conduit::Smc),
            Some("hvc") => Some(psci_fw::Conduit::Hvc),
            _ => None,
        });
    }
    CPUS_ONLINE.store(1, Ordering::SeqCst);
    let mut expected = 1;
    for (i, c) in fdt.cpus().enumerate().skip(1) {
        let mpidr = c.ids().first() as u64;
        if i >= stub::MAX_CPUS {
            error!(
                "kestrel: cpu {i} (mpidr {mpidr:#x}) exceeds the {} stacks; not started",
                stub::MAX_CPUS
            );
            continue;
        }
        match psci_fw::cpu_on(mpidr, stub::secondary_entry_pa(), i as u64) {
            Some(0) => expected += 1,
            r => error!("kestrel: CPU_ON for cpu {i} (mpidr {mpidr:#x}) failed: {r:?}"),
        }
    }
    while CPUS_ONLINE.load(Ordering::SeqCst) < expected {
        core::hint::spin_loop();
    }
    info!(
        "kestrel: cpus online: {}",
        CPUS_ONLINE.load(Ordering::SeqCst)
    );
    info!("kestrel: no VMs to run; powering off");
    power_off()
}

#[unsafe(no_mangle)]
extern "C" fn kestrel_secondary_main(index: usize) -> ! {
    cpu::init_this_cpu(index);
    set_vectors();
    CPUS_ONLINE.fetch_add(1, Ordering::SeqCst);
    loop {
        aarch64_cpu::asm::wfe();
    }
}

pub fn power_off() -> ! {
    info!("kestrel: power off");
    let _ = psci_fw::system_off();
    error!("kestrel: PSCI SYSTEM_OFF unavailable; halted");
    cpu::halt()
}

fn find_uart(fdt: &fdt::Fdt) -> Option<(console::UartKind, u64)> {
    let node = fdt
        .chosen()
        .stdout()
        .or_else(|| fdt.find_compatible(&["arm,pl011"]))?;
    let base = node.reg()?.next()?.starting_address as u64;
    let kind = if node
        .compatible()
        .is_some_and(|c| c.all().any(|s| s == "brcm,bcm2835-aux-uart"))
    {
        console::UartKind::MiniUart
    } else {
        console::UartKind::Pl011
    };
    Some((kind, base))
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    console::set_panicking();
    console::with_console(|w| {
        let _ = console::write_prefix(w);
        let _ = writeln!(w, "PANIC: {}", info.message());
        if let Some(l) = info.location() {
            let _ = writeln!(w, "  at {}:{}:{}", l.file(), l.line(), l.column());
        }
    });
    let _ = exception::TrapFrame::default();
    cpu::halt()
}

/// Entry from vectors.S for an exception from a guest. (No guests yet: report and halt.)
#[unsafe(no_mangle)]
extern "C" fn kestrel_guest_exit(frame: *mut exception::TrapFrame, kind: u64) {
    use aarch64_cpu::registers::{ESR_EL2, FAR_EL2, Readable};
    // SAFETY: vectors.S passes this CPU's guest frame, which it just filled.
    let frame = unsafe { &*frame };
    exception::report(frame, kind, ESR_EL2.get(), FAR_EL2.get());
    cpu::halt()
}
