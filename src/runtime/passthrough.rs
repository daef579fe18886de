//! Physical interrupts and ranges handed to VMs (passthrough devices): which VM owns each
//! forwarded SPI, claiming them when a VM starts and giving them back when it ends, and what no
//! VM may ever be given (the host's RAM, GIC frames and console).
//!
//! Knows VMs only by id and by the list of their passthrough INTIDs, so it sits below the VM:
//! `vm.rs` gives its interrupts back from its `Drop`.
use crate::arch::aarch64::gic;
use crate::guest::config::HostOwned;
use crate::platform::Platform;
use crate::vgic::PhysSpiChange;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicUsize, Ordering};

/// Owner (VM id + 1) of each physical interrupt forwarded to a VM; 0 when none.
static OWNER: [AtomicUsize; 1024] = [const { AtomicUsize::new(0) }; 1024];

/// What no VM may be given as a passthrough device: all RAM, every GIC frame, the console.
pub fn host_owned_ranges(platform: &Platform) -> Vec<HostOwned> {
    let mut out: Vec<HostOwned> = platform
        .memory
        .iter()
        .map(|r| HostOwned {
            base: r.start.as_u64(),
            size: r.size,
            what: "RAM",
        })
        .collect();
    let g = &platform.gic;
    let mut frame = |r: &crate::addr::Range<crate::addr::PhysAddr>, what| {
        out.push(HostOwned {
            base: r.start.as_u64(),
            size: r.size,
            what,
        })
    };
    frame(&g.gicd, "GIC distributor");
    for r in &g.gicr {
        frame(r, "GIC redistributors");
    }
    let optional = [
        (g.gicc, "GIC CPU interface"),
        (g.gich, "GIC virtual interface control"),
        (g.gicv, "GIC virtual CPU interface"),
        (g.its, "GIC ITS"),
    ];
    for (r, what) in optional {
        if let Some(r) = r {
            frame(&r, what);
        }
    }
    frame(
        &crate::addr::Range::new(platform.console.base.align_down(0x1000), 0x1000),
        "console UART",
    );
    out
}

/// Takes `intids` for VM `vm_id` and routes them to physical CPU `pcpu`, each with the trigger
/// mode `edge` says; on a clash nothing is taken and the INTID another VM holds is returned.
pub fn claim(
    vm_id: usize,
    intids: &[u32],
    pcpu: usize,
    edge: impl Fn(u32) -> bool,
) -> Result<(), u32> {
    for (n, &intid) in intids.iter().enumerate() {
        let Some(slot) = OWNER.get(intid as usize) else {
            continue;
        };
        if slot
            .compare_exchange(0, vm_id + 1, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            for &i in &intids[..n] {
                if let Some(s) = OWNER.get(i as usize) {
                    s.store(0, Ordering::Release);
                }
            }
            return Err(intid);
        }
    }
    for &intid in intids {
        gic::enable_spi(intid, pcpu, edge(intid));
    }
    Ok(())
}

/// Configures each of VM `vm_id`'s passthrough interrupts with the trigger mode the guest gave
/// its virtual SPI (GICD_ICFGR; `edge` reads it): an edge-triggered device configured
/// level-sensitive loses the edges that come and go before the CPU takes them.
pub fn match_triggers(vm_id: usize, intids: &[u32], edge: impl Fn(u32) -> Option<bool>) {
    for &intid in intids {
        if owner(intid) == Some(vm_id)
            && let Some(e) = edge(intid)
        {
            gic::set_spi_trigger(intid, e);
        }
    }
}

/// Makes the physical state of passthrough interrupt `pintid` follow what VM `vm_id`'s guest
/// wrote to the virtual one (see `vgic::PhysSpiChange`). Only an interrupt the VM owns.
pub fn set_phys_state(vm_id: usize, pintid: u32, change: PhysSpiChange) {
    if owner(pintid) != Some(vm_id) {
        return;
    }
    if change.clear_pending {
        gic::clear_pending_spi(pintid);
    }
    match change.active {
        Some(true) => gic::set_active_spi(pintid),
        Some(false) => gic::clear_active_spi(pintid),
        None => {}
    }
}

/// Gives VM `vm_id`'s passthrough interrupts back (at VM end): disabled, inactive, unowned.
pub fn release(vm_id: usize, intids: &[u32]) {
    for &intid in intids {
        if let Some(slot) = OWNER.get(intid as usize)
            && slot.load(Ordering::Acquire) == vm_id + 1
        {
            gic::disable_spi(intid);
            gic::clear_active_spi(intid);
            slot.store(0, Ordering::Release);
        }
    }
}

/// The VM id a physical interrupt is forwarded to.
#[inline]
pub fn owner(intid: u32) -> Option<usize> {
    let v = OWNER.get(intid as usize)?.load(Ordering::Relaxed);
    v.checked_sub(1)
}
