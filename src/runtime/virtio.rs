//! A VM's virtio devices at run time (docs/virtio.md, "Wiring it in"): built with the VM from
//! its `[[disks]]` and `[[net]]` entries, placed in QEMU virt's virtio-mmio slots, answering
//! on the ordinary MMIO exit path, raising their interrupts through the VM's vGIC, and torn
//! down before the VM's RAM is freed.
//!
//! The device logic is `crate::virtio` (pure, host-tested); this file supplies what it asks
//! of the machine: the VM's RAM as a [`GuestMemory`] ([`VmRam`]: prepares a chunk the guest
//! never touched before a device reads or writes it), an interrupt line ([`SpiLine`]: the
//! vGIC's SPI input plus the kick of the vCPU that must see it, on whatever physical CPU), the
//! one set of switches, and disk stores (a read-only disk is the ramdisk's bytes; a writable
//! one a private copy in page-allocator blocks that outlives guest resets: [`DiskCopies`]).
//!
//! No new work on the exit path of a VM without virtio: a QueueNotify is an MMIO write to a
//! [`VirtioSlot`], which processes the queue there. Work left when a queue's budget ran out
//! is finished at the VM's next interrupt exit ([`VirtioDevices::run_deferred`]), which the
//! CPU brings about at once with the kick SGI to itself ([`exit_soon`]): one budget per
//! exit, the CPU's pending interrupts taken in between.
//!
//! Network transmit queues go to the poller when a CPU without a vCPU exists
//! (`crate::virtio::poll`): the idle loop of such a CPU calls [`poll_idle`], the notification
//! only wakes that CPU with the kick SGI, and every VM's CPUs are reserved when it is built
//! ([`VirtioDevices::build`]) so they never poll.
use crate::addr::{Ipa, PhysAddr, Range};
use crate::arch::aarch64::cpu;
use crate::arch::aarch64::gic;
use crate::arch::aarch64::guest_phys::{HypPhys, PagedDisk};
use crate::runtime::vm::{DeviceSlot, RamChunks, VmImages};
use crate::vdev::{AccessCtx, AccessWidth, Effects, MmioDevice, MmioError};
use crate::vgic::Vgic;
use crate::virtio::blk::{BlkDevice, BlockStore, ReadOnlyDisk};
use crate::virtio::mem::{GuestMemory, MemError, ram_piece};
use crate::virtio::net::NetDevice;
use crate::virtio::poll::{PollState, Polled, Poller, Wake};
use crate::virtio::switch::{AttachError, Switches};
use crate::virtio::transport::VirtioMmio;
use crate::virtio::{DeviceSignals, IrqSink, MmioSlot, SlotDevice, VirtioDevice, assign_slots};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};
use log::warn;
use spin::Mutex;

/// One VM's RAM as its devices see it. Holds the VM's chunk table, not the VM (no reference
/// cycle through the devices, and a port's handle never keeps a dead VM's RAM).
pub struct VmRam {
    chunks: Arc<RamChunks>,
}

pub type Ram = Arc<VmRam>;

impl GuestMemory for VmRam {
    type Phys = HypPhys;

    fn phys(&self) -> &HypPhys {
        &HypPhys
    }

    fn piece(&self, ipa: Ipa, len: u64, write: bool) -> Result<(PhysAddr, u64), MemError> {
        let (pa, n) = ram_piece(self.chunks.regions(), ipa, len)?;
        // Reads too: a buffer in a chunk the guest never touched must not show the previous
        // owner's bytes, and a received frame must not be wiped by the guest's first fault.
        self.chunks.prepare(ipa, n);
        if write {
            // Device writes bypass stage 2: a running dirty log must see them.
            self.chunks.hyp_dirty().mark(ipa, n);
        }
        Ok((pa, n))
    }
}

/// The SPI input of a device's interrupt in its VM's vGIC. Raising it may happen on another
/// VM's CPU (a frame switched to this VM): the vCPUs the vGIC names are kicked on their
/// physical CPUs, except this one, which flushes its own vGIC state before it resumes a guest.
pub struct SpiLine {
    vgic: Arc<Vgic>,
    intid: u32,
    vm_id: usize,
    pcpus: Vec<usize>,
}

impl IrqSink for SpiLine {
    fn set_level(&self, level: bool) {
        let Ok(mask) = self.vgic.set_spi_level(self.intid, level) else {
            return;
        };
        // A vCPU on a shared CPU may be blocked in WFI (or switched out): it is woken in its
        // run queue first (`percpu::kick_vcpus`); a dedicated CPU gets the SGI as before.
        if mask != 0 {
            crate::runtime::percpu::kick_vcpus(self.vm_id, &self.pcpus, mask);
        }
    }
}

/// Every switch, by name (`[[net]].switch`).
static SWITCHES: Switches<Ram> = Switches::new();

/// Wakes the poller's CPU from WFI with the kick SGI.
pub struct SgiWake;

impl Wake for SgiWake {
    fn wake(&self, cpu: usize) {
        gic::send_sgi(cpu, gic::SGI_KICK);
    }
}

/// The poller role and the network ports it drains.
static POLLER: Poller<SgiWake> = Poller::new(SgiWake);

/// The idle loop's hook, on a CPU with no vCPU: one poller pass if this CPU holds (or can
/// take) the role. True while transmit queues are polled: the caller must not sleep in WFI
/// (it goes round its loop, acknowledging interrupts, and calls this again); this CPU has
/// already yielded. False: nothing is polled, sleep until an interrupt (a notification's
/// kick SGI among them).
pub fn poll_idle(cpu: usize) -> bool {
    let polling = POLLER.poll_idle(cpu);
    if polling {
        cpu::yield_hint();
    }
    polling
}

/// A disk's store: the ramdisk's bytes in place, or a private copy.
pub enum DiskStore {
    ReadOnly(ReadOnlyDisk<&'static [u8]>),
    Copy(KeptDisk),
}

impl BlockStore for DiskStore {
    fn len(&self) -> u64 {
        match self {
            Self::ReadOnly(d) => d.len(),
            Self::Copy(d) => d.disk.as_ref().map_or(0, |d| d.len()),
        }
    }
    fn writable(&self) -> bool {
        matches!(self, Self::Copy(_))
    }
    fn read_piece(&self, offset: u64, max: u64) -> &[u8] {
        match self {
            Self::ReadOnly(d) => d.read_piece(offset, max),
            Self::Copy(d) => d.disk.as_ref().map_or(&[], |d| d.read_piece(offset, max)),
        }
    }
    fn write_piece(&mut self, offset: u64, max: u64) -> Option<&mut [u8]> {
        match self {
            Self::ReadOnly(_) => None,
            Self::Copy(d) => d.disk.as_mut().and_then(|d| d.write_piece(offset, max)),
        }
    }
}

/// The writable disks' copies of one VM, kept with its images across guest resets (so writes
/// survive SYSTEM_RESET) and freed when the VM ends for good ([`DiskCopies::release`]).
#[derive(Default)]
pub struct DiskCopies {
    slots: Vec<Arc<Mutex<Option<PagedDisk>>>>,
}

impl DiskCopies {
    pub fn new(disks: usize) -> Self {
        Self {
            slots: (0..disks).map(|_| Arc::new(Mutex::new(None))).collect(),
        }
    }
    /// Frees every copy (the VM ended and will not restart).
    pub fn release(&self) {
        for s in &self.slots {
            drop(s.lock().take());
        }
    }
}

/// A copy lent to a running device; given back to its [`DiskCopies`] slot when the device is
/// dropped (at the VM's end, before a restart builds the next device).
pub struct KeptDisk {
    disk: Option<PagedDisk>,
    home: Arc<Mutex<Option<PagedDisk>>>,
}

impl Drop for KeptDisk {
    fn drop(&mut self) {
        *self.home.lock() = self.disk.take();
    }
}

pub type Blk = VirtioMmio<BlkDevice<Ram, DiskStore>>;
pub type Net = VirtioMmio<NetDevice<Ram>>;

/// Why a VM's virtio devices could not be built.
#[derive(Debug)]
pub enum VirtioBuildError {
    NoMemoryForDisk {
        disk: usize,
        bytes: u64,
    },
    Attach {
        port: usize,
        switch: String,
        error: AttachError,
    },
}

impl fmt::Display for VirtioBuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoMemoryForDisk { disk, bytes } => write!(
                f,
                "disks[{disk}]: no {} MiB of free RAM for the writable copy",
                bytes.div_ceil(1 << 20)
            ),
            Self::Attach {
                port,
                switch,
                error: AttachError::DuplicateMac(m),
            } => write!(
                f,
                "net[{port}]: switch {switch} already has a port with MAC \
                 {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} (give this one a `mac`)",
                m[0], m[1], m[2], m[3], m[4], m[5]
            ),
            Self::Attach {
                port,
                switch,
                error: AttachError::Full,
            } => write!(f, "net[{port}]: switch {switch} has no free port"),
        }
    }
}

/// A device in its slot, as the VM's MMIO device list holds it: the transport, plus what the
/// runtime does around an access (log bad input once per kind, note left-over work).
pub struct VirtioSlot<D: VirtioDevice> {
    pub mmio: VirtioMmio<D>,
    pub slot: MmioSlot,
    vm_name: Arc<str>,
    /// Shared by the VM's devices: some queue has work its budget left.
    deferred: Arc<AtomicBool>,
}

/// Makes the vCPU on this CPU exit as soon as it resumes: the kick SGI to this CPU, taken at
/// the guest's first instruction (physical interrupts go to EL2). That exit runs
/// [`VirtioDevices::run_deferred`], so work a budget left is done one budget per exit, with
/// this CPU's pending interrupts (timer, kicks, a stop request) taken between budgets.
fn exit_soon() {
    gic::send_sgi(cpu::current_index(), gic::SGI_KICK);
}

impl<D: VirtioDevice> VirtioSlot<D> {
    /// Logs new bad input and notes left-over work; true when this device has some.
    fn after_access(&self) -> bool {
        for kind in self.mmio.signals().bad.take_unlogged() {
            warn!(
                "kestrel: vm {}: virtio slot {}: {}",
                self.vm_name,
                self.slot.index,
                kind.describe()
            );
        }
        let deferred = self.mmio.has_deferred();
        if deferred {
            self.deferred.store(true, Ordering::Release);
        }
        deferred
    }
}

impl<D: VirtioDevice> Polled for VirtioSlot<D> {
    fn poll(&self, budget: usize) -> PollState {
        let s = self.mmio.poll(budget);
        self.after_access();
        s
    }
    fn stop_polling(&self) {
        self.mmio.stop_polling();
        self.after_access();
    }
}

impl<D: VirtioDevice> MmioDevice for VirtioSlot<D> {
    fn size(&self) -> u64 {
        self.mmio.size()
    }
    fn read(
        &self,
        ctx: AccessCtx,
        offset: u64,
        width: AccessWidth,
        fx: &mut Effects,
    ) -> Result<u64, MmioError> {
        let r = self.mmio.read(ctx, offset, width, fx);
        self.after_access();
        r
    }
    fn write(
        &self,
        ctx: AccessCtx,
        offset: u64,
        width: AccessWidth,
        value: u64,
        fx: &mut Effects,
    ) -> Result<(), MmioError> {
        let r = self.mmio.write(ctx, offset, width, value, fx);
        // On the vCPU's own CPU (an MMIO exit): left-over work continues at the next exit.
        if self.after_access() {
            exit_soon();
        }
        r
    }
}

/// The virtio devices of one VM.
pub struct VirtioDevices {
    pub disks: Vec<Arc<VirtioSlot<BlkDevice<Ram, DiskStore>>>>,
    pub nets: Vec<Arc<VirtioSlot<NetDevice<Ram>>>>,
    deferred: Arc<AtomicBool>,
    torn_down: AtomicBool,
    /// The VM's physical CPUs, reserved from polling while the VM exists.
    pcpus: Vec<usize>,
}

impl VirtioDevices {
    /// The devices of `images.config`, in their slots (`virtio::assign_slots`). Each network
    /// port joins its switch here; on failure the ports attached so far leave again.
    pub fn build(
        images: &VmImages,
        vgic: &Arc<Vgic>,
        vm_id: usize,
        pcpus: &[usize],
        chunks: &Arc<RamChunks>,
    ) -> Result<Self, VirtioBuildError> {
        let cfg = &images.config;
        // Before any of the VM's vCPUs can start: its CPUs stop polling (the role is taken
        // from a poller among them and its queues armed again, here).
        POLLER.reserve(pcpus);
        let mut out = VirtioDevices {
            disks: Vec::new(),
            nets: Vec::new(),
            deferred: Arc::new(AtomicBool::new(false)),
            torn_down: AtomicBool::new(false),
            pcpus: pcpus.to_vec(),
        };
        if cfg.disks.is_empty() && cfg.net.is_empty() {
            return Ok(out);
        }
        let ram: Ram = Arc::new(VmRam {
            chunks: chunks.clone(),
        });
        let name: Arc<str> = Arc::from(cfg.name.as_str());
        for (slot, what) in assign_slots(cfg.disks.len(), cfg.net.len()) {
            let signals = Arc::new(DeviceSignals::new(Arc::new(SpiLine {
                vgic: vgic.clone(),
                intid: slot.intid(),
                vm_id,
                pcpus: pcpus.to_vec(),
            })));
            match what {
                SlotDevice::Disk(i) => {
                    let d = &cfg.disks[i];
                    let bytes = images.disks.get(i).copied().unwrap_or(&[]);
                    let store = if d.readonly {
                        DiskStore::ReadOnly(ReadOnlyDisk::new(bytes))
                    } else {
                        let home = images.disk_copies.slots[i].clone();
                        let kept = home.lock().take();
                        let disk = match kept {
                            Some(d) => d,
                            None => {
                                PagedDisk::new(bytes).ok_or(VirtioBuildError::NoMemoryForDisk {
                                    disk: i,
                                    bytes: bytes.len() as u64,
                                })?
                            }
                        };
                        DiskStore::Copy(KeptDisk {
                            disk: Some(disk),
                            home,
                        })
                    };
                    // The serial Linux shows in /sys/block/vdX/serial: the image's file name.
                    let dev = BlkDevice::new(
                        ram.clone(),
                        store,
                        d.readonly,
                        d.file.as_bytes(),
                        signals.clone(),
                    );
                    let mmio = VirtioMmio::new(dev, signals);
                    out.disks.push(Arc::new(out.place(mmio, slot, &name)));
                }
                SlotDevice::Net(i) => {
                    let n = &cfg.net[i];
                    let switch = SWITCHES.get(&n.switch);
                    let port =
                        switch
                            .attach(n.mac, ram.clone(), signals.clone())
                            .map_err(|error| VirtioBuildError::Attach {
                                port: i,
                                switch: n.switch.clone(),
                                error,
                            })?;
                    let dev = NetDevice::new(ram.clone(), switch, port, signals.clone(), n.mtu)
                        .with_handoff(&POLLER);
                    let mmio = VirtioMmio::new(dev, signals);
                    let net = Arc::new(out.place(mmio, slot, &name));
                    POLLER.register(net.clone());
                    out.nets.push(net);
                }
            }
        }
        Ok(out)
    }

    fn place<D: VirtioDevice>(
        &self,
        mmio: VirtioMmio<D>,
        slot: MmioSlot,
        vm_name: &Arc<str>,
    ) -> VirtioSlot<D> {
        VirtioSlot {
            mmio,
            slot,
            vm_name: vm_name.clone(),
            deferred: self.deferred.clone(),
        }
    }

    /// The MMIO windows to add to the VM's device list.
    pub fn device_slots(&self) -> impl Iterator<Item = DeviceSlot> + '_ {
        let disks = self.disks.iter().map(|d| DeviceSlot {
            range: Range::new(d.slot.base, d.mmio.size()),
            dev: d.clone(),
        });
        let nets = self.nets.iter().map(|d| DeviceSlot {
            range: Range::new(d.slot.base, d.mmio.size()),
            dev: d.clone(),
        });
        disks.chain(nets)
    }

    /// True when a queue's budget ran out with work left (one load; the exit path's check).
    #[inline]
    pub fn has_deferred(&self) -> bool {
        self.deferred.load(Ordering::Relaxed)
    }

    /// Goes on with queues whose budget ran out (one budget each), on a CPU of this VM; if
    /// work is still left, the next exit comes at once ([`exit_soon`]).
    pub fn run_deferred(&self) {
        self.deferred.store(false, Ordering::Relaxed);
        let mut left = false;
        for d in &self.disks {
            d.mmio.run_deferred();
            left |= d.after_access();
        }
        for d in &self.nets {
            d.mmio.run_deferred();
            left |= d.after_access();
        }
        if left {
            exit_soon();
        }
    }

    /// VM teardown, before its RAM is scrubbed and freed: every device reset (no queue in
    /// use, lines low) and every port off its switch (when this returns no other VM's CPU
    /// copies into this VM's RAM, and none can start). Idempotent.
    pub fn teardown(&self) {
        if self.torn_down.swap(true, Ordering::AcqRel) {
            return;
        }
        for d in &self.nets {
            // No poller pass is inside the device when this returns, and none starts.
            let polled: Arc<dyn Polled> = d.clone();
            POLLER.unregister(&polled);
        }
        for d in &self.disks {
            d.mmio.reset();
        }
        for d in &self.nets {
            d.mmio.reset();
            d.mmio.device().detach();
        }
        POLLER.unreserve(&self.pcpus);
    }

    /// The devices' figures for the VM's counters line: per disk
    /// `diskN(rd/wr/flush/rdB/wrB/err/notify/irq/isr/ack)=...`, per port
    /// `netN(txf/txB/rxf/rxB/rxdrop/txdrop/offdrop/notify/irq/isr/ack)=...`, and `virtio-bad=N` when
    /// a driver misbehaved. Empty for a VM without virtio devices.
    pub fn counters(&self) -> String {
        let mut s = String::new();
        let g = |c: &core::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let mut bad = 0;
        for (i, d) in self.disks.iter().enumerate() {
            let st = d.mmio.device().stats();
            let _ = write!(
                s,
                " disk{i}(rd/wr/flush/rdB/wrB/err/notify/irq/isr/ack)={}/{}/{}/{}/{}/{}/{}/{}/{}/{}",
                g(&st.reads),
                g(&st.writes),
                g(&st.flushes),
                g(&st.bytes_read),
                g(&st.bytes_written),
                g(&st.errors),
                g(&d.mmio.stats().notifies),
                d.mmio.signals().irq.raised(),
                g(&d.mmio.stats().status_reads),
                g(&d.mmio.stats().acks)
            );
            bad += d.mmio.signals().bad.total();
        }
        for (i, d) in self.nets.iter().enumerate() {
            let c = d.mmio.device().port().counters().snapshot();
            let _ = write!(
                s,
                " net{i}(txf/txB/rxf/rxB/rxdrop/txdrop/offdrop/notify/irq/isr/ack)={}/{}/{}/{}/{}/{}/{}/{}/{}/{}/{}",
                c.tx_frames,
                c.tx_bytes,
                c.rx_frames,
                c.rx_bytes,
                c.rx_drops,
                c.tx_drops,
                c.offload_drops,
                g(&d.mmio.stats().notifies),
                d.mmio.signals().irq.raised(),
                g(&d.mmio.stats().status_reads),
                g(&d.mmio.stats().acks)
            );
            bad += d.mmio.signals().bad.total();
        }
        if bad != 0 {
            let _ = write!(s, " virtio-bad={bad}");
        }
        s
    }
}

impl Drop for VirtioDevices {
    fn drop(&mut self) {
        self.teardown();
    }
}
