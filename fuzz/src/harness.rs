//! The fuzz harnesses: one function per cargo-fuzz target, taking the raw fuzz input.
//!
//! Each function feeds the input to one of kestrel's parsers or device models and checks
//! what it can about the result (values inside the input, lengths within the limits, state
//! reported consistently); any panic, including a failed check, is a finding. They return a
//! short description of the outcome ("Ok", "Err(TruncatedName)", ...) so that the regression
//! tests in `tests/fuzz_regressions.rs`, which include this file, can assert what each saved
//! crash input now produces.
//!
//! This file is compiled twice: as the library of the `kestrel-fuzz` package (fuzz/Cargo.toml)
//! and as a module of the main package's `tests/fuzz_regressions.rs`. It may use only `std`,
//! `kestrel` and kestrel's own dependency `fdt` (to read generated DTBs back).
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use kestrel::addr::{PhysAddr, Range};
use kestrel::guest::config::{self, Admission, MachineResources};
use kestrel::guest::fdt::{self as guest_fdt, GicSpec, GuestDtbSpec};
use kestrel::guest::layout::guest_map;
use kestrel::guest::{cpio, gzip, image, ramdisk};
use kestrel::platform::{BootParams, Platform};
use kestrel::trap::esr::{self, Esr, ExceptionClass, MmioDecodeError};
use kestrel::vdev::gicv2_dist::Gicv2Distributor;
use kestrel::vdev::gicv3_dist::Gicv3Distributor;
use kestrel::vdev::gicv3_redist::Gicv3Redistributors;
use kestrel::vdev::pl011::{FIFO_DEPTH, Pl011};
use kestrel::vdev::{AccessCtx, AccessWidth, Effect, Effects, MmioDevice};
use kestrel::vgic::{ListRegisters, LrFormat, LrState, SgiRegister, Vgic};
use kestrel::virtio::blk::{BlkDevice, CopiedDisk};
use kestrel::virtio::mem::GuestMemory;
use kestrel::virtio::net::NetDevice;
use kestrel::virtio::queue::QueueLayout;
use kestrel::virtio::switch::Switch;
use kestrel::virtio::testing::{FakePhys, FakeRam, POISON, RecordingIrq, fake_ram};
use kestrel::virtio::transport::{VirtioMmio, reg};
use kestrel::virtio::{DeviceSignals, VirtioDevice, features as vf};

/// Output limit for the gzip and ramdisk harnesses (the hypervisor's limits are larger; a
/// smaller one keeps each run fast and still exercises the limit checks).
pub const INFLATE_LIMIT: usize = 1 << 20;
/// The second, tiny limit the gzip harness checks the first result against.
pub const SMALL_LIMIT: usize = 512;

/// The name of a `Result`'s variant and, for an error, the error's variant: "Ok",
/// "Err(TruncatedName)". Enough for a regression test to pin an outcome down.
fn outcome<T, E: std::fmt::Debug>(r: &Result<T, E>) -> String {
    match r {
        Ok(_) => "Ok".to_owned(),
        Err(e) => {
            let dbg = format!("{e:?}");
            let name: String = dbg
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            format!("Err({name})")
        }
    }
}

/// True when `inner` lies within `outer` (both slices of the same input).
fn within(outer: &[u8], inner: &[u8]) -> bool {
    let o = outer.as_ptr_range();
    let i = inner.as_ptr_range();
    inner.is_empty() || (o.start <= i.start && i.end <= o.end)
}

/// Reads the fuzz input as a stream of small integers; past the end every read gives 0.
pub struct Bytes<'a> {
    data: &'a [u8],
}

impl<'a> Bytes<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Bytes { data }
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }
    fn le(&mut self, n: usize) -> u64 {
        (0..n).fold(0, |acc, i| acc | (u64::from(self.u8()) << (8 * i)))
    }
    pub fn u16(&mut self) -> u16 {
        self.le(2) as u16
    }
    pub fn u32(&mut self) -> u32 {
        self.le(4) as u32
    }
    pub fn u64(&mut self) -> u64 {
        self.le(8)
    }
    pub fn width(&mut self) -> AccessWidth {
        match self.u8() & 3 {
            0 => AccessWidth::Byte,
            1 => AccessWidth::Half,
            2 => AccessWidth::Word,
            _ => AccessWidth::Double,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// guest::cpio

/// `cpio::entries` over the input, then `cpio::validate`.
pub fn cpio(data: &[u8]) -> String {
    let mut last_offset = None;
    let mut count = 0usize;
    let mut result = Ok(());
    for e in cpio::entries(data) {
        match e {
            Ok(e) => {
                count += 1;
                // Each header is at least 110 bytes past the previous one: the reader makes
                // progress and cannot yield more entries than fit.
                assert!(count <= data.len() / cpio::HEADER_LEN);
                if let Some(prev) = last_offset {
                    assert!(e.offset >= prev + cpio::HEADER_LEN, "no progress at {prev}");
                }
                last_offset = Some(e.offset);
                assert!(e.offset + cpio::HEADER_LEN <= data.len());
                assert!(within(data, e.name) && within(data, e.data));
                assert!(!e.name.contains(&0));
                assert_ne!(e.name, cpio::TRAILER);
                let _ = (e.kind(), e.name_str(), e.permissions());
            }
            Err(err) => {
                let _ = err.to_string();
                result = Err(err);
            }
        }
    }
    let validated = cpio::validate(data);
    assert_eq!(validated, result, "validate disagrees with the iterator");
    outcome(&result)
}

// ---------------------------------------------------------------------------------------------
// guest::gzip

/// `gzip::parse_header` and `gzip::decompress` with two limits, which must agree.
pub fn gzip(data: &[u8]) -> String {
    if let Ok(h) = gzip::parse_header(data) {
        assert!(h.len <= data.len());
        for field in [h.extra, h.name, h.comment].into_iter().flatten() {
            assert!(within(data, field));
        }
    }
    let big = gzip::decompress(data, INFLATE_LIMIT);
    let small = gzip::decompress(data, SMALL_LIMIT);
    if let Err(e) = &big {
        let _ = e.to_string();
    }
    match &big {
        Ok(out) => {
            assert!(out.len() <= INFLATE_LIMIT);
            // The same input with a smaller limit: the same bytes when they fit, otherwise
            // "too large" and nothing else.
            if out.len() <= SMALL_LIMIT {
                assert_eq!(small.as_ref(), Ok(out), "small limit changed the result");
            } else {
                assert_eq!(
                    small,
                    Err(gzip::GzipError::OutputTooLarge { limit: SMALL_LIMIT })
                );
            }
            // Incremental CRC-32 equals the one-shot CRC-32.
            let mut c = gzip::Crc32::new();
            let (a, b) = out.split_at(out.len() / 2);
            c.update(a);
            c.update(b);
            assert_eq!(c.finish(), gzip::crc32(out));
        }
        Err(gzip::GzipError::OutputTooLarge { .. }) => {
            assert!(small.is_err());
        }
        Err(_) => {
            // An input that fails inside the limit fails the same way under a smaller one,
            // unless the smaller limit was hit first.
            assert!(
                small == big
                    || small == Err(gzip::GzipError::OutputTooLarge { limit: SMALL_LIMIT }),
                "big {big:?} small {small:?}"
            );
        }
    }
    outcome(&big)
}

// ---------------------------------------------------------------------------------------------
// guest::config

/// `config::parse` of the input as a `vm.toml`, then `config::admit` of the result.
pub fn config(data: &[u8]) -> String {
    let r = config::parse(data, "fuzzvm");
    match &r {
        Ok(c) => {
            assert!(
                c.memory >= config::MIN_MEMORY && c.memory.is_multiple_of(config::MEMORY_ALIGN)
            );
            assert!((1..=config::MAX_VCPUS).contains(&c.cpus));
            assert!(c.ram_base.as_u64() + c.memory <= config::MAX_IPA);
            assert!(c.spis >= 32 && c.spis <= config::MAX_SPIS && c.spis.is_multiple_of(32));
            for p in [Some(&c.kernel), c.initrd.as_ref(), c.dtb.as_ref()]
                .into_iter()
                .flatten()
            {
                assert!(!p.is_empty() && !p.starts_with('/'));
                assert!(p.split('/').all(|s| !s.is_empty() && s != "." && s != ".."));
            }
            if let Some(pins) = &c.physical_cpus {
                assert_eq!(pins.len(), c.cpus);
            }
            for d in &c.devices {
                assert!(d.size > 0 && d.ipa.as_u64() + d.size <= config::MAX_IPA);
                assert!(d.interrupts.iter().all(|&i| i < c.spis));
            }
            // QEMU virt's RAM, GIC distributor and console.
            let host_owned = [
                config::HostOwned {
                    base: 0x4000_0000,
                    size: 4 << 30,
                    what: "RAM",
                },
                config::HostOwned {
                    base: 0x0800_0000,
                    size: 0x1_0000,
                    what: "GIC distributor",
                },
                config::HostOwned {
                    base: 0x0900_0000,
                    size: 0x1000,
                    what: "console UART",
                },
            ];
            let machine = MachineResources {
                cpus: 4,
                free_memory: 4 << 30,
                host_owned: &host_owned,
            };
            let other = c.clone();
            let verdicts = config::admit(&[c, &other], &machine);
            assert_eq!(verdicts.len(), 2);
            for v in &verdicts {
                match v {
                    Admission::Accept { physical_cpus } => {
                        assert_eq!(physical_cpus.len(), c.cpus);
                        // Nothing the hypervisor owns is ever given to a VM.
                        for d in &c.devices {
                            let (b, e) = (d.base.as_u64(), d.base.as_u64().saturating_add(d.size));
                            assert!(
                                host_owned
                                    .iter()
                                    .all(|h| e <= h.base || h.base.saturating_add(h.size) <= b)
                            );
                        }
                        assert!(physical_cpus.iter().all(|&p| p < machine.cpus));
                    }
                    Admission::Refuse(why) => {
                        let _ = why.to_string();
                    }
                }
            }
            // Two VMs of the same name: the second is always refused.
            assert!(matches!(verdicts[1], Admission::Refuse(_)));
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    outcome(&r)
}

// ---------------------------------------------------------------------------------------------
// guest::ramdisk (the whole pipeline)

/// `ramdisk::unpack` then `ramdisk::parse_vms`, and the guest DTB of every VM that loads.
pub fn ramdisk(data: &[u8]) -> String {
    let archive = match ramdisk::unpack(data, INFLATE_LIMIT) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.to_string();
            return outcome(&Err::<(), _>(e));
        }
    };
    assert!(archive.len() <= INFLATE_LIMIT.max(data.len()));
    let vms = match ramdisk::parse_vms(&archive, INFLATE_LIMIT) {
        Ok(v) => v,
        Err(e) => {
            let _ = e.to_string();
            return outcome(&Err::<(), _>(e));
        }
    };
    let mut summary = Vec::new();
    let mut dirs = HashSet::new();
    for vm in &vms {
        assert!(dirs.insert(vm.dir), "folder {} listed twice", vm.dir);
        assert!(!vm.dir.is_empty() && !vm.dir.contains('/'));
        match &vm.spec {
            Ok(spec) => {
                assert!(spec.kernel.len() <= INFLATE_LIMIT.max(archive.len()));
                let l = &spec.layout;
                let ram = (l.ram.start.as_u64(), l.ram.start.as_u64() + l.ram.size);
                assert!(ram.0 <= l.kernel_entry.as_u64() && l.kernel_end.as_u64() <= ram.1);
                assert!(ram.0 <= l.dtb.as_u64() && l.dtb.as_u64() < ram.1);
                if let Some(i) = l.initrd {
                    assert!(ram.0 <= i.start.as_u64() && i.start.as_u64() + i.size <= ram.1);
                }
                guest_dtb(spec);
                summary.push("Ok".to_owned());
            }
            Err(e) => {
                let _ = e.to_string();
                summary.push(outcome(&Err::<(), _>(e)));
            }
        }
    }
    format!("Ok[{}]", summary.join(","))
}

/// Builds the guest DTB of a VM that loaded, for GICv3 and (up to 8 vCPUs) GICv2, and
/// checks the `fdt` crate reads it back.
fn guest_dtb(spec: &ramdisk::VmSpec<'_>) {
    let mpidrs: Vec<u64> = (0..spec.config.cpus)
        .map(guest_fdt::default_vcpu_mpidr)
        .collect();
    let redists = [guest_map::gicv3_redistributors(spec.config.cpus)];
    let gics = [
        GicSpec::V3 {
            distributor: guest_map::GICD,
            redistributors: &redists,
            maintenance_ppi: Some(guest_fdt::GIC_MAINTENANCE_PPI),
        },
        GicSpec::V2 {
            distributor: guest_map::GICD,
            cpu_interface: guest_map::GICC,
            maintenance_ppi: None,
        },
    ];
    for gic in gics {
        let dtb_spec = GuestDtbSpec::for_vm(&spec.config, &spec.layout, &mpidrs, gic);
        match guest_fdt::build(&dtb_spec) {
            Ok(blob) => {
                assert!(blob.len() <= guest_fdt::MAX_DTB_SIZE);
                let fdt = fdt::Fdt::new(&blob).expect("generated DTB does not parse");
                assert_eq!(fdt.cpus().count(), spec.config.cpus);
            }
            Err(guest_fdt::FdtError::TooManyCpusForGicV2 { cpus }) => {
                assert!(matches!(gic, GicSpec::V2 { .. }) && cpus > 8);
            }
            Err(e) => panic!("guest DTB for a valid VM: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// guest::image

/// `image::parse` and `image::zboot_payload` of the input as a kernel file.
pub fn image(data: &[u8]) -> String {
    if let Some((_, payload)) = image::zboot_payload(data) {
        assert!(within(data, payload));
    }
    let r = image::parse(data);
    match &r {
        Ok(info) => {
            assert_eq!(info.file_size, data.len() as u64);
            assert!(info.image_size >= info.file_size);
            assert!(info.text_offset < 2 << 20 && info.text_offset.is_multiple_of(4096));
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    outcome(&r)
}

// ---------------------------------------------------------------------------------------------
// platform

/// What QEMU virt hands the hypervisor: DTB at the bottom of RAM, image 2 MiB above.
pub const PLATFORM_PARAMS: BootParams = BootParams {
    dtb_base: PhysAddr::new(0x4000_0000),
    image: Range {
        start: PhysAddr::new(0x4020_0000),
        size: 2 << 20,
    },
    max_cpus: 8,
};

/// `Platform::parse` of the input as the host DTB, then `free_ram`.
pub fn platform(data: &[u8]) -> String {
    let r = Platform::parse(data, &PLATFORM_PARAMS);
    match &r {
        Ok(p) => {
            assert!(!p.memory.is_empty());
            assert!(!p.cpus.is_empty() && p.cpus.len() <= PLATFORM_PARAMS.max_cpus);
            for w in p.memory.windows(2) {
                assert!(
                    w[0].end().as_u64() <= w[1].start.as_u64(),
                    "memory unsorted"
                );
            }
            // RAM as one set: adjacent memory ranges (two nodes, or two `reg` entries, that
            // meet) are one run, and a free range may cross where they meet.
            let mut ram: Vec<(u64, u64)> = Vec::new();
            for m in &p.memory {
                match ram.last_mut() {
                    Some(last) if last.1 == m.start.as_u64() => last.1 = m.end().as_u64(),
                    _ => ram.push((m.start.as_u64(), m.end().as_u64())),
                }
            }
            let free = p.free_ram();
            for (i, f) in free.iter().enumerate() {
                assert!(
                    f.size > 0
                        && f.start.as_u64().is_multiple_of(4096)
                        && f.size.is_multiple_of(4096)
                );
                assert!(
                    ram.iter()
                        .any(|&(s, e)| s <= f.start.as_u64() && f.end().as_u64() <= e),
                    "free range {i} outside RAM"
                );
                for r in &p.reserved {
                    let overlap = r.range.start.as_u64() < f.end().as_u64()
                        && f.start.as_u64() < r.range.end().as_u64();
                    assert!(r.range.size == 0 || !overlap, "free range {i} hits {r:?}");
                }
                if let Some(next) = free.get(i + 1) {
                    assert!(f.end().as_u64() < next.start.as_u64(), "free unmerged");
                }
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    outcome(&r)
}

// ---------------------------------------------------------------------------------------------
// trap::esr

/// Every ESR decoder on ESR_EL2 = the first 8 bytes, `fault_ipa` on the next 16, and the
/// MMIO load/store helpers on the next 8.
pub fn esr(data: &[u8]) -> String {
    let mut b = Bytes::new(data);
    let raw = b.u64();
    let (hpfar, far, rt) = (b.u64(), b.u64(), b.u64());
    let e = Esr(raw);
    let class = e.class();
    assert_eq!(class.ec(), ((raw >> 26) & 0x3f) as u8);
    assert_eq!(ExceptionClass::from_ec(class.ec()), class);
    let _ = (class.name(), class.to_string(), e.il32());
    assert_eq!(e.iss(), (raw & 0x1ff_ffff) as u32);

    let dabt = e.data_abort();
    assert_eq!(
        dabt.is_some(),
        matches!(
            class,
            ExceptionClass::DataAbortLower | ExceptionClass::DataAbortSame
        )
    );
    // Where the IPA comes from: HPFAR for every translation fault, never for a permission
    // fault off a stage-1 walk.
    let ipa_source = |status: esr::FaultStatus, s1ptw: bool| {
        let src = status.ipa_source(s1ptw);
        match status {
            esr::FaultStatus::Translation { .. } => assert_eq!(src, esr::IpaSource::Hpfar),
            esr::FaultStatus::Permission { .. } if !s1ptw => {
                assert_eq!(src, esr::IpaSource::TranslateFar)
            }
            _ => {}
        }
    };
    if let Some(d) = dabt {
        let _ = d.status.level();
        ipa_source(d.status, d.s1ptw);
    }
    if let Some(i) = e.instruction_abort() {
        let _ = i.status.level();
        ipa_source(i.status, i.s1ptw);
    }
    if let Some(s) = e.sysreg() {
        assert!(s.rt <= 31);
        let _ = (s.reg.name(), s.reg.to_string());
    }
    if let Some(w) = e.wfx() {
        assert!(w.timeout_reg.is_none_or(|r| r <= 31));
    }
    let _ = e.hvc_smc_imm();

    let mmio = e.mmio_access();
    match mmio {
        Ok(a) => {
            assert_eq!(class, ExceptionClass::DataAbortLower);
            let d = dabt.expect("MMIO access without a data abort");
            assert_eq!(d.access, Some(a));
            assert!(!d.s1ptw && !d.cache_maintenance);
            assert!(a.reg <= 31);
            let stored = a.store_value(rt);
            assert!(stored <= a.width.mask());
            assert!(a.reg != 31 || stored == 0);
            match a.load_result(rt) {
                None => assert_eq!(a.reg, 31),
                Some(v) => {
                    if !a.sixty_four {
                        assert!(v <= u64::from(u32::MAX));
                    }
                    if !a.sign_extend {
                        assert_eq!(
                            v,
                            rt & a.width.mask() & if a.sixty_four { !0 } else { 0xffff_ffff }
                        );
                    }
                }
            }
        }
        Err(MmioDecodeError::NotDataAbort) => {
            assert_ne!(class, ExceptionClass::DataAbortLower);
        }
        Err(_) => {}
    }

    let ipa = esr::fault_ipa(hpfar, far);
    assert_eq!(ipa.as_u64() & 0xfff, far & 0xfff);
    assert_eq!(ipa.as_u64() >> 12, (hpfar >> 4) & ((1 << 44) - 1));
    // The same 8 bytes as a PAR_EL1 after an AT S1E1R: an IPA exactly when F = 0.
    match esr::fault_ipa_from_par(hpfar, far) {
        Some(ipa) => {
            assert_eq!(hpfar & 1, 0);
            assert_eq!(ipa.as_u64() & 0xfff, far & 0xfff);
            assert_eq!(ipa.as_u64() & !0xfff, hpfar & 0x000f_ffff_ffff_f000);
        }
        None => assert_eq!(hpfar & 1, 1),
    }
    format!("{}/{}", class.ec(), outcome(&mmio))
}

// ---------------------------------------------------------------------------------------------
// vdev::pl011

/// Collects effects; checks the PL011's interrupt line reports.
fn check_effects(fx: &Effects, intid: u32, line: &mut bool) {
    for f in fx.iter() {
        match f {
            Effect::IrqLine { intid: i, level } => {
                assert_eq!(i, intid);
                assert_ne!(level, *line, "line reported twice at the same level");
                *line = level;
            }
            Effect::ConsoleByte(_) => {}
            Effect::KickVcpus(_) => panic!("a PL011 does not kick vCPUs"),
            Effect::HwTriggerChanged | Effect::HwStateChanged => {
                panic!("a PL011 has no HW-linked interrupt")
            }
        }
    }
}

/// A PL011 driven by a sequence of operations decoded from the input: MMIO reads and writes
/// (offset, width, value), bytes received, `rx_space` / `irq_level` queries.
pub fn pl011(data: &[u8]) -> String {
    const INTID: u32 = 33;
    const CTX: AccessCtx = AccessCtx { vcpu: 0 };
    let mut b = Bytes::new(data);
    let uart = if b.u8() & 1 == 0 {
        Pl011::new(INTID)
    } else {
        Pl011::with_firmware_setup(INTID)
    };
    assert_eq!(uart.intid(), INTID);
    // The level last reported through effects; it must always match `irq_level`.
    let mut line = false;
    let (mut ok, mut refused) = (0u32, 0u32);
    while !b.is_empty() {
        let mut fx = Effects::new();
        match b.u8() % 4 {
            0 => {
                let offset = u64::from(b.u16() % 0x1010);
                let width = b.width();
                match uart.read(CTX, offset, width, &mut fx) {
                    Ok(v) => {
                        assert!(v <= width.mask());
                        ok += 1;
                    }
                    Err(_) => refused += 1,
                }
            }
            1 => {
                let offset = u64::from(b.u16() % 0x1010);
                let width = b.width();
                let value = b.u32();
                match uart.write(CTX, offset, width, u64::from(value), &mut fx) {
                    Ok(()) => ok += 1,
                    Err(_) => refused += 1,
                }
            }
            2 => {
                let space = uart.rx_space();
                assert!(space <= FIFO_DEPTH);
                let taken = uart.push_rx(b.u8(), &mut fx);
                assert_eq!(taken, space > 0, "push_rx vs rx_space {space}");
            }
            _ => {
                assert!(uart.rx_space() <= FIFO_DEPTH);
            }
        }
        check_effects(&fx, INTID, &mut line);
        assert_eq!(
            uart.irq_level(),
            line,
            "irq_level differs from the reported line"
        );
    }
    format!("ok {ok} refused {refused}")
}

// ---------------------------------------------------------------------------------------------
// vgic + vdev::gicv3_dist / gicv3_redist / gicv2_dist

/// A virtual CPU interface in memory: list registers, ELRSR / EISR by the architecture's
/// rules (IHI 0069H ICH_ELRSR_EL2 / ICH_EISR_EL2), and the guest's acknowledge / deactivate.
struct FakeLrs {
    fmt: LrFormat,
    regs: Vec<u64>,
    uie: bool,
}

impl FakeLrs {
    fn lr(&self, i: usize) -> kestrel::vgic::LrValue {
        self.fmt.decode(self.regs[i])
    }
    fn set_state(&mut self, i: usize, state: LrState) {
        let mut v = self.lr(i);
        v.state = state;
        self.regs[i] = self.fmt.encode(&v);
    }
    /// The guest acknowledges the highest-priority pending interrupt: Pending -> Active.
    fn ack(&mut self) {
        let best = (0..self.regs.len())
            .filter(|&i| self.lr(i).state == LrState::Pending)
            .min_by_key(|&i| (self.lr(i).priority, i));
        if let Some(i) = best {
            self.set_state(i, LrState::Active);
        }
    }
    /// The guest deactivates the `pick`-th active LR: Active -> Invalid, PendingActive ->
    /// Pending.
    fn eoi(&mut self, pick: usize) {
        let active: Vec<usize> = (0..self.regs.len())
            .filter(|&i| self.lr(i).state.active())
            .collect();
        if active.is_empty() {
            return;
        }
        let i = active[pick % active.len()];
        let next = if self.lr(i).state.pending() {
            LrState::Pending
        } else {
            LrState::Invalid
        };
        self.set_state(i, next);
    }
    /// ICH_MISR_EL2.EOI or .U would be set.
    fn maintenance(&self) -> bool {
        let valid = (0..self.regs.len())
            .filter(|&i| self.lr(i).state != LrState::Invalid)
            .count();
        self.eoi_mask() != 0 || (self.uie && valid <= 1)
    }
}

impl ListRegisters for FakeLrs {
    fn format(&self) -> LrFormat {
        self.fmt
    }
    fn count(&self) -> usize {
        self.regs.len()
    }
    fn read(&self, i: usize) -> u64 {
        self.regs[i]
    }
    fn write(&mut self, i: usize, value: u64) {
        self.regs[i] = value;
    }
    fn empty_mask(&self) -> u64 {
        (0..self.regs.len())
            .filter(|&i| {
                let v = self.lr(i);
                v.state == LrState::Invalid && (v.hw || !v.eoi_maintenance)
            })
            .fold(0, |m, i| m | 1 << i)
    }
    fn eoi_mask(&self) -> u64 {
        (0..self.regs.len())
            .filter(|&i| {
                let v = self.lr(i);
                v.state == LrState::Invalid && !v.hw && v.eoi_maintenance
            })
            .fold(0, |m, i| m | 1 << i)
    }
    fn set_underflow_irq(&mut self, on: bool) {
        self.uie = on;
    }
    fn deactivate(&mut self, _pintid: u32) {}
    fn line_level(&self, _pintid: u32) -> bool {
        false
    }
}

/// One vCPU: its LR bookkeeping, its fake CPU interface, and whether it is in the guest
/// (between `flush_to_lrs` and the next exit) or in the hypervisor.
struct VcpuSim {
    cpu: kestrel::vgic::VgicCpu,
    lrs: FakeLrs,
    in_guest: bool,
    /// Started (CPU_ON) and not stopped (CPU_OFF): a vCPU that is off runs nothing.
    online: bool,
}

/// Drives a virtual GIC with a sequence of operations decoded from the input: MMIO reads and
/// writes of the distributor (and for GICv3 the redistributors) from any vCPU, interrupt
/// inputs (PPIs, SPI lines and edges, SGIs, HW links), and the exit path of each vCPU
/// (sync, flush, maintenance, reset) with a guest that acknowledges and deactivates
/// interrupts in between. `v3` picks the GIC version.
pub fn vgic(data: &[u8], v3: bool) -> String {
    let mut b = Bytes::new(data);
    let cfg = b.u8();
    let nr_spis = u32::from(b.u8() % 33) * 32;
    let nr_lrs = usize::from(b.u8() % if v3 { 16 } else { 64 }) + 1;
    let (vgic, fmt) = if v3 {
        let n = usize::from(cfg % 8) + 1;
        // Two clusters of up to four CPUs, as on a big.LITTLE machine.
        let mpidrs: Vec<u64> = (0..n as u64).map(|i| ((i / 4) << 8) | (i % 4)).collect();
        (Vgic::new_v3(&mpidrs, nr_spis), LrFormat::V3)
    } else {
        (
            Vgic::new_v2(usize::from(cfg % 8) + 1, nr_spis),
            LrFormat::V2,
        )
    };
    let vgic = match vgic {
        Ok(v) => Arc::new(v),
        Err(e) => return outcome(&Err::<(), _>(e)),
    };
    let n = vgic.nr_vcpus();
    let all: u64 = if n == 64 { !0 } else { (1 << n) - 1 };
    let nr_irqs = vgic.nr_irqs();
    let dist: Box<dyn MmioDevice> = if v3 {
        Box::new(Gicv3Distributor::new(vgic.clone()))
    } else {
        Box::new(Gicv2Distributor::new(vgic.clone()))
    };
    let redist = v3.then(|| Gicv3Redistributors::new(vgic.clone()));
    let mut vcpus: Vec<VcpuSim> = (0..n)
        .map(|i| VcpuSim {
            cpu: vgic.new_cpu(i).expect("new_cpu of an existing vCPU"),
            lrs: FakeLrs {
                fmt,
                regs: vec![0; nr_lrs],
                uie: false,
            },
            in_guest: false,
            online: true,
        })
        .collect();
    // Every vCPU starts as the runtime starts one (percpu: new_cpu, then reset_cpu).
    for s in vcpus.iter_mut() {
        vgic.reset_cpu(&mut s.cpu, &mut s.lrs);
    }
    let mut ops = 0u32;
    // SPIs linked to a physical interrupt (map_hw_spi succeeded, unmap_hw not since), with
    // their physical INTID.
    let mut hw_spis: BTreeMap<u32, u32> = BTreeMap::new();

    while !b.is_empty() {
        ops += 1;
        let op = b.u8();
        let v = usize::from(b.u8()) % n;
        let kind = op % 13;
        // A vCPU that is off (PSCI CPU_OFF) accesses nothing, sends no SGI and takes no exit;
        // its operations decode as usual and do nothing.
        let off = !vcpus[v].online;
        let kick = match kind {
            // MMIO from vCPU v: only while it is in the hypervisor (take the exit first).
            0 | 1 => {
                if vcpus[v].in_guest {
                    exit(&vgic, &mut vcpus[v]);
                }
                let use_redist = redist.is_some() && b.u8() & 1 == 1;
                let dev: &dyn MmioDevice = match (&redist, use_redist) {
                    (Some(r), true) => r,
                    _ => dist.as_ref(),
                };
                let offset = u64::from(b.u32()) % (dev.size() + 0x100);
                let width = b.width();
                let ctx = AccessCtx { vcpu: v };
                let mut fx = Effects::new();
                let value = if kind == 0 { 0 } else { b.u64() };
                if off {
                    continue_checks(&vcpus, nr_irqs, v3);
                    continue;
                }
                let trigger_before: Vec<bool> = hw_spis
                    .keys()
                    .map(|&i| vgic.edge_triggered(i).unwrap_or(false))
                    .collect();
                if kind == 0 {
                    if let Ok(x) = dev.read(ctx, offset, width, &mut fx) {
                        assert!(x <= width.mask(), "read {x:#x} wider than {width:?}");
                    }
                } else {
                    let _ = dev.write(ctx, offset, width, value, &mut fx);
                }
                // HwTriggerChanged exactly when the access changed the trigger mode of an SPI
                // linked to a physical one (the runtime then reconfigures the physical SPI).
                let trigger_changed = hw_spis
                    .keys()
                    .zip(&trigger_before)
                    .any(|(&i, &before)| vgic.edge_triggered(i).unwrap_or(false) != before);
                let reported = fx.iter().any(|f| f == Effect::HwTriggerChanged);
                assert_eq!(
                    reported, trigger_changed,
                    "HwTriggerChanged reported {reported}, a HW-linked SPI's trigger changed \
                     {trigger_changed} (hw SPIs {hw_spis:?})"
                );
                let access = Access {
                    write: kind == 1,
                    dist: !use_redist,
                    offset,
                    width,
                    value,
                };
                check_phys_requests(&vgic, dist.as_ref(), &fx, &hw_spis, access);
                fx.iter()
                    .map(|f| match f {
                        Effect::KickVcpus(m) => m,
                        Effect::HwTriggerChanged | Effect::HwStateChanged => 0,
                        other => panic!("GIC effect {other:?}"),
                    })
                    .fold(0, |a, m| a | m)
            }
            2 => vgic.inject_ppi(v, u32::from(b.u8() % 40)).unwrap_or(0),
            3 => {
                let level = b.u8() & 1 == 1;
                vgic.set_spi_level(u32::from(b.u16()) % (nr_irqs + 8), level)
                    .unwrap_or(0)
            }
            4 => vgic
                .raise_edge(u32::from(b.u16()) % (nr_irqs + 8))
                .unwrap_or(0),
            5 => {
                let reg = match b.u8() % 3 {
                    0 => SgiRegister::Sgi0r,
                    1 => SgiRegister::Sgi1r,
                    _ => SgiRegister::Asgi1r,
                };
                let value = b.u64();
                if off {
                    0
                } else {
                    vgic.send_sgi_v3(v, value, reg).unwrap_or(0)
                }
            }
            6 => {
                let intid = u32::from(b.u16()) % (nr_irqs + 8);
                let pintid = u32::from(b.u16()) % 1100;
                match b.u8() % 3 {
                    0 => {
                        let _ = vgic.map_hw_ppi(v, intid, pintid);
                    }
                    // Distinct physical INTIDs, as the runtime links them (each SPI to its own).
                    1 if hw_spis.iter().any(|(&i, &p)| p == pintid && i != intid) => {}
                    1 => {
                        if vgic.map_hw_spi(intid, pintid).is_ok() {
                            hw_spis.insert(intid, pintid);
                        }
                    }
                    _ => {
                        if vgic.unmap_hw(v, intid).is_ok() {
                            hw_spis.remove(&intid);
                        }
                    }
                }
                0
            }
            7 | 8 | 11 if off => 0,
            9 | 10 if off => {
                if kind == 10 {
                    b.u8();
                }
                0
            }
            7 => {
                let s = &mut vcpus[v];
                let k = vgic.flush_to_lrs(&mut s.cpu, &mut s.lrs);
                s.in_guest = true;
                k
            }
            8 => {
                if vcpus[v].in_guest {
                    exit(&vgic, &mut vcpus[v])
                } else {
                    0
                }
            }
            9 | 10 => {
                let s = &mut vcpus[v];
                if !s.in_guest {
                    vgic.flush_to_lrs(&mut s.cpu, &mut s.lrs);
                    s.in_guest = true;
                }
                if kind == 9 {
                    s.lrs.ack();
                } else {
                    s.lrs.eoi(usize::from(b.u8()));
                }
                0
            }
            11 => {
                // The maintenance interrupt fires while the vCPU runs and is taken at EL2.
                let s = &mut vcpus[v];
                if s.in_guest && s.lrs.maintenance() {
                    vgic.handle_maintenance(&mut s.cpu, &mut s.lrs)
                } else {
                    0
                }
            }
            // The higher multiples of 12 stop a running vCPU (PSCI CPU_OFF: it takes the exit,
            // then `vcpu_off`) or start a stopped one (CPU_ON: a new `VgicCpu`, `reset_cpu`).
            _ if op / 13 % 2 == 1 || off => {
                let s = &mut vcpus[v];
                if s.online {
                    if s.in_guest {
                        s.in_guest = false;
                        vgic.sync_from_lrs(&mut s.cpu, &mut s.lrs);
                    }
                    let k = vgic.vcpu_off(&mut s.cpu, &mut s.lrs);
                    s.online = false;
                    assert_eq!(k & (1 << v), 0, "vcpu_off kicks the vCPU that stops");
                    k
                } else {
                    s.cpu = vgic.new_cpu(v).expect("new_cpu of an existing vCPU");
                    s.online = true;
                    vgic.reset_cpu(&mut s.cpu, &mut s.lrs)
                }
            }
            _ => {
                let s = &mut vcpus[v];
                vgic.reset_cpu(&mut s.cpu, &mut s.lrs);
                s.in_guest = false;
                0
            }
        };
        assert_eq!(
            kick & !all,
            0,
            "kick {kick:#x} names a vCPU that does not exist"
        );
        continue_checks(&vcpus, nr_irqs, v3);
    }
    drain_and_check_nothing_lost(&vgic, &mut vcpus, nr_irqs);
    let st = vgic.stats();
    format!("ops {ops} injections {}", st.injections)
}

/// The end of a run: every SPI line is lowered and the running vCPUs take exits, take and
/// complete everything their LRs offer, until a round changes nothing. Then no running vCPU may
/// have an interrupt it could take that no LR holds (it would never be delivered: lost), and
/// a vCPU that is off holds nothing.
fn drain_and_check_nothing_lost(vgic: &Vgic, vcpus: &mut [VcpuSim], nr_irqs: u32) {
    for intid in 32..nr_irqs {
        let _ = vgic.set_spi_level(intid, false);
    }
    // Each round completes at least one interrupt while any is left; a bound for safety.
    for _ in 0..(2 * nr_irqs as usize + 16) {
        let mut busy = false;
        for s in vcpus.iter_mut().filter(|s| s.online) {
            if s.in_guest {
                s.in_guest = false;
                vgic.sync_from_lrs(&mut s.cpu, &mut s.lrs);
            }
            vgic.flush_to_lrs(&mut s.cpu, &mut s.lrs);
            s.in_guest = true;
            if (0..s.lrs.regs.len()).any(|i| s.lrs.lr(i).state != LrState::Invalid) {
                busy = true;
            }
            for _ in 0..s.lrs.regs.len() {
                s.lrs.ack();
            }
            for _ in 0..s.lrs.regs.len() {
                s.lrs.eoi(0);
            }
            if s.lrs.maintenance() {
                vgic.handle_maintenance(&mut s.cpu, &mut s.lrs);
            }
        }
        if !busy {
            break;
        }
    }
    for (n, s) in vcpus.iter_mut().enumerate() {
        if s.online {
            s.in_guest = false;
            vgic.sync_from_lrs(&mut s.cpu, &mut s.lrs);
            vgic.flush_to_lrs(&mut s.cpu, &mut s.lrs);
            assert_eq!(
                vgic.deliverable_pending(n),
                None,
                "vCPU {n} runs and could take this interrupt, but no LR holds it: lost \
                 ({})",
                vgic.debug_summary(n)
            );
        }
    }
    continue_checks(
        vcpus,
        nr_irqs,
        vgic.version() == kestrel::vgic::GicVersion::V3,
    );
}

/// The checks after every operation: [`check_lrs`], and a vCPU that is off holds nothing.
fn continue_checks(vcpus: &[VcpuSim], nr_irqs: u32, v3: bool) {
    check_lrs(vcpus, nr_irqs, v3);
    for (n, s) in vcpus.iter().enumerate().filter(|(_, s)| !s.online) {
        assert!(
            s.regs_empty() && s.cpu.used_lrs() == 0 && !s.lrs.uie && s.cpu.held_physical() == 0,
            "vCPU {n} is off but holds LRs {:x?} (uie {})",
            s.lrs.regs,
            s.lrs.uie
        );
    }
}

impl VcpuSim {
    fn regs_empty(&self) -> bool {
        (0..self.lrs.regs.len()).all(|i| self.lrs.lr(i).state == LrState::Invalid)
    }
}

/// After a distributor or redistributor access: `Effect::HwStateChanged` is reported exactly
/// when a word write to GICD_I[SC]PENDR / GICD_I[SC]ACTIVER (the same offsets in GICv2 and
/// GICv3; the redistributors hold no SPI) set a bit of a HW-linked SPI, and the changes it left
/// are exactly those the register asks of those SPIs' physical interrupts
/// (`vgic::PhysSpiChange`): set pending or set active -> activate; clear active ->
/// deactivate; clear pending -> clear pending, and deactivate unless the SPI stays active.
fn check_phys_requests(
    vgic: &Vgic,
    dist: &dyn MmioDevice,
    fx: &Effects,
    hw_spis: &BTreeMap<u32, u32>,
    a: Access,
) {
    let Access {
        write,
        dist: to_dist,
        offset,
        width,
        value,
    } = a;
    let mut got: BTreeMap<u32, kestrel::vgic::PhysSpiChange> = BTreeMap::new();
    vgic.take_phys_requests(|p, c| {
        assert!(got.insert(p, c).is_none(), "two changes of physical {p}");
    });
    let reported = fx.iter().any(|f| f == Effect::HwStateChanged);
    assert_eq!(
        reported,
        !got.is_empty(),
        "HwStateChanged reported {reported}, changes {got:?}"
    );
    let reg = (offset & !0x7f, offset & 0x7f);
    let expect: BTreeMap<u32, kestrel::vgic::PhysSpiChange> = if write
        && to_dist
        && width == AccessWidth::Word
        && matches!(reg.0, 0x200 | 0x280 | 0x300 | 0x380)
        && offset % 4 == 0
    {
        let first = (reg.1 / 4 * 32) as u32;
        // Active as GICD_ISACTIVER reads it after the write.
        let active_now = dist
            .read(
                AccessCtx { vcpu: 0 },
                0x300 + reg.1,
                AccessWidth::Word,
                &mut Effects::new(),
            )
            .unwrap_or(0);
        hw_spis
            .iter()
            .filter(|&(&i, _)| i >= first && i < first + 32 && value >> (i - first) & 1 == 1)
            .map(|(&i, &p)| {
                let active = match reg.0 {
                    0x200 | 0x300 => Some(true),
                    0x380 => Some(false),
                    _ if active_now >> (i - first) & 1 == 1 => None,
                    _ => Some(false),
                };
                (
                    p,
                    kestrel::vgic::PhysSpiChange {
                        clear_pending: reg.0 == 0x280,
                        active,
                    },
                )
            })
            .collect()
    } else {
        BTreeMap::new()
    };
    assert_eq!(
        got,
        expect,
        "write {write} to {} at {offset:#x} {width:?} {value:#x} (hw SPIs {hw_spis:?})",
        if to_dist { "GICD" } else { "GICR" }
    );
}

/// One MMIO access of the vGIC harness.
#[derive(Clone, Copy)]
struct Access {
    write: bool,
    /// To the distributor (else a redistributor).
    dist: bool,
    offset: u64,
    width: AccessWidth,
    value: u64,
}

/// vCPU `s` takes an exit: `sync_from_lrs`.
fn exit(vgic: &Vgic, s: &mut VcpuSim) -> u64 {
    s.in_guest = false;
    vgic.sync_from_lrs(&mut s.cpu, &mut s.lrs)
}

/// What every vCPU's list registers hold: existing INTIDs, each (INTID, source) in at most
/// one LR of a vCPU, each SPI in the LRs of at most one vCPU.
fn check_lrs(vcpus: &[VcpuSim], nr_irqs: u32, v3: bool) {
    let mut spi_owner: HashMap<u32, usize> = HashMap::new();
    for (n, s) in vcpus.iter().enumerate() {
        let mut seen = HashSet::new();
        for i in 0..s.lrs.regs.len() {
            let lr = s.lrs.lr(i);
            if lr.state == LrState::Invalid {
                continue;
            }
            assert!(
                lr.intid < nr_irqs,
                "vCPU {n} LR {i} holds INTID {}",
                lr.intid
            );
            let source = if v3 { 0 } else { lr.source_cpu };
            assert!(
                seen.insert((lr.intid, source)),
                "vCPU {n}: INTID {} in two LRs",
                lr.intid
            );
            if lr.intid >= 32
                && let Some(other) = spi_owner.insert(lr.intid, n)
            {
                assert_eq!(
                    other, n,
                    "SPI {} in the LRs of vCPUs {other} and {n}",
                    lr.intid
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// virtio: the virtio-mmio transport, virtqueues, virtio-blk and virtio-net with the switch

const VQ_RAM: u64 = 0x4000_0000;
const VQ_RAM_SIZE: u64 = 256 << 10;
const VQ_PHYS: u64 = 0x8000_0000;
const VQ_GUARD: u64 = 0x1000;
const VQ_SIZE: u16 = 16;
/// The disk's data budget per notification: small, so that the fuzzer's small requests meet
/// it (the default, 8 MiB, is more than its RAM).
const VQ_BLK_BUDGET: u64 = 2048;

fn vq_pa(vm: usize) -> u64 {
    VQ_PHYS + VQ_GUARD + vm as u64 * (VQ_RAM_SIZE + VQ_GUARD)
}

/// The fixed queue layouts the structured start-up uses: (VM, layout) for blk q0, net A rx,
/// net A tx, net B rx, net B tx.
fn vq_layouts() -> [(usize, QueueLayout); 5] {
    let at = |base: u64| {
        let n = u64::from(VQ_SIZE);
        let avail = VQ_RAM + base + 16 * n;
        QueueLayout {
            size: VQ_SIZE,
            desc: kestrel::addr::Ipa::new(VQ_RAM + base),
            avail: kestrel::addr::Ipa::new(avail),
            used: kestrel::addr::Ipa::new((avail + 6 + 2 * n + 3) & !3),
        }
    };
    [
        (0, at(0x1000)),
        (0, at(0x2000)),
        (0, at(0x3000)),
        (1, at(0x2000)),
        (1, at(0x3000)),
    ]
}

fn vq_write<D: VirtioDevice>(t: &VirtioMmio<D>, off: u64, v: u32) {
    let _ = t.write(
        AccessCtx { vcpu: 0 },
        off,
        AccessWidth::Word,
        u64::from(v),
        &mut Effects::new(),
    );
}

fn vq_read<D: VirtioDevice>(t: &VirtioMmio<D>, off: u64) -> u32 {
    t.read(
        AccessCtx { vcpu: 0 },
        off,
        AccessWidth::Word,
        &mut Effects::new(),
    )
    .unwrap_or(0) as u32
}

/// Linux's virtio_mmio start-up: reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK, queues
/// (zeroed, as Linux allocates them), DRIVER_OK.
fn vq_init<D: VirtioDevice>(t: &VirtioMmio<D>, mem: &FakeRam, want: u64, queues: &[QueueLayout]) {
    for q in queues {
        let n = usize::from(q.size);
        let _ = mem.write(q.desc, &vec![0; 16 * n]);
        let _ = mem.write(q.avail, &vec![0; 6 + 2 * n]);
        let _ = mem.write(q.used, &vec![0; 6 + 8 * n]);
    }
    vq_write(t, reg::STATUS, 0);
    vq_write(t, reg::STATUS, 3);
    let mut offer = 0u64;
    for sel in [1u32, 0] {
        vq_write(t, reg::DEVICE_FEATURES_SEL, sel);
        offer |= u64::from(vq_read(t, reg::DEVICE_FEATURES)) << (32 * sel);
    }
    let f = want & offer;
    vq_write(t, reg::DRIVER_FEATURES_SEL, 1);
    vq_write(t, reg::DRIVER_FEATURES, (f >> 32) as u32);
    vq_write(t, reg::DRIVER_FEATURES_SEL, 0);
    vq_write(t, reg::DRIVER_FEATURES, f as u32);
    vq_write(t, reg::STATUS, 0xb);
    for (i, q) in queues.iter().enumerate() {
        vq_write(t, reg::QUEUE_SEL, i as u32);
        vq_write(t, reg::QUEUE_NUM, u32::from(q.size));
        for (lo, v) in [
            (reg::QUEUE_DESC_LOW, q.desc.as_u64()),
            (reg::QUEUE_DRIVER_LOW, q.avail.as_u64()),
            (reg::QUEUE_DEVICE_LOW, q.used.as_u64()),
        ] {
            vq_write(t, lo, v as u32);
            vq_write(t, lo + 4, (v >> 32) as u32);
        }
        vq_write(t, reg::QUEUE_READY, 1);
    }
    vq_write(t, reg::STATUS, 0xf);
}

/// Checks what must hold after any operation: the interrupt line is high exactly while
/// InterruptStatus has a bit set, and DRIVER_OK never stands without FEATURES_OK.
fn vq_check<D: VirtioDevice>(t: &VirtioMmio<D>, irq: &RecordingIrq) {
    let st = vq_read(t, reg::INTERRUPT_STATUS);
    assert_eq!(
        irq.level(),
        st != 0,
        "line level vs InterruptStatus {st:#x}"
    );
    assert!(st & !3 == 0, "InterruptStatus {st:#x}");
    let status = t.status();
    assert!(
        status & 4 == 0 || status & 8 != 0,
        "DRIVER_OK without FEATURES_OK: {status:#x}"
    );
}

/// One VM with a virtio-blk disk and a network port, another with a port on the same switch,
/// driven by a guest that writes anything anywhere in its RAM and any register: the devices
/// never touch memory outside the VMs' RAM (the fake memory panics on any access outside
/// its arena, and the guard pages between the VMs must keep their poison), never panic,
/// keep their interrupt lines consistent, and the disk moves less than its data budget plus
/// one request per notification or deferred pass (which runs after each operation, as the
/// runtime's next exit would).
pub fn virtio(data: &[u8]) -> String {
    let mut b = Bytes::new(data);
    let mode = b.u8();
    let phys = FakePhys::new(
        PhysAddr::new(VQ_PHYS),
        (VQ_GUARD + 2 * (VQ_RAM_SIZE + VQ_GUARD)) as usize,
    );
    // VM A's RAM in two IPA-adjacent regions whose physical halves are swapped, so ranges
    // that cross the region boundary are exercised.
    let half = VQ_RAM_SIZE / 2;
    let mem_a: Arc<FakeRam> = fake_ram(
        &phys,
        &[
            (VQ_RAM, half, vq_pa(0) + half),
            (VQ_RAM + half, half, vq_pa(0)),
        ],
    );
    let mem_b: Arc<FakeRam> = fake_ram(&phys, &[(VQ_RAM, VQ_RAM_SIZE, vq_pa(1))]);
    let mems = [mem_a.clone(), mem_b.clone()];
    let sig = || {
        let irq = RecordingIrq::new();
        (irq.clone(), Arc::new(DeviceSignals::new(irq)))
    };
    let image: Vec<u8> = (0..64 * 512).map(|i| (i * 13) as u8).collect();
    let (blk_irq, blk_sig) = sig();
    let blk = VirtioMmio::new(
        BlkDevice::new(
            mem_a.clone(),
            CopiedDisk::new(&image),
            mode & 2 != 0,
            b"fuzz",
            blk_sig.clone(),
        )
        .with_data_budget(VQ_BLK_BUDGET),
        blk_sig,
    );
    let blk_bytes = |blk: &VirtioMmio<BlkDevice<Arc<FakeRam>, CopiedDisk>>| {
        let st = blk.device().stats();
        st.bytes_read.load(std::sync::atomic::Ordering::Relaxed)
            + st.bytes_written.load(std::sync::atomic::Ordering::Relaxed)
    };
    // No request moves more than the whole disk.
    let pass_limit = VQ_BLK_BUDGET + image.len() as u64;
    let sw = Arc::new(Switch::new("lan0"));
    let mut nets = Vec::new();
    let mut net_irqs = Vec::new();
    for (i, m) in mems.iter().enumerate() {
        let (irq, s) = sig();
        let port = sw
            .attach([2, 0, 0, 0, 0, i as u8 + 1], m.clone(), s.clone())
            .expect("two ports");
        nets.push(VirtioMmio::new(
            NetDevice::new(m.clone(), sw.clone(), port, s.clone(), Some(1500)),
            s,
        ));
        net_irqs.push(irq);
    }
    let layouts = vq_layouts();
    if mode & 1 != 0 {
        let blk_want =
            vf::VERSION_1 | vf::INDIRECT_DESC | vf::EVENT_IDX | vf::BLK_FLUSH | vf::BLK_RO;
        let net_want = (vf::VERSION_1
            | vf::INDIRECT_DESC
            | vf::EVENT_IDX
            | vf::NET_MAC
            | vf::NET_MRG_RXBUF
            | vf::NET_CSUM
            | vf::NET_GUEST_CSUM
            | vf::NET_HOST_TSO4
            | vf::NET_GUEST_TSO4
            | vf::NET_MTU)
            & if mode & 4 != 0 {
                !vf::EVENT_IDX
            } else {
                u64::MAX
            };
        vq_init(&blk, &mem_a, blk_want, &[layouts[0].1]);
        vq_init(&nets[0], &mem_a, net_want, &[layouts[1].1, layouts[2].1]);
        vq_init(
            &nets[1],
            &mem_b,
            net_want
                & if mode & 8 != 0 {
                    !vf::NET_GUEST_TSO4
                } else {
                    u64::MAX
                },
            &[layouts[3].1, layouts[4].1],
        );
    }
    let ctx = AccessCtx { vcpu: 0 };
    let mut ops = 0u32;
    while !b.is_empty() && ops < 2000 {
        ops += 1;
        let moved_before = blk_bytes(&blk);
        let tag = b.u8() % 7;
        let dev = b.u8() % 3;
        let mmio: &dyn MmioDevice = match dev {
            0 => &blk,
            1 => &nets[0],
            _ => &nets[1],
        };
        match tag {
            0 => {
                let off = u64::from(b.u16() % 0x210);
                let w = b.width();
                let v = b.u32();
                let _ = mmio.write(ctx, off, w, u64::from(v), &mut Effects::new());
            }
            1 => {
                let off = u64::from(b.u16() % 0x210);
                let w = b.width();
                if let Ok(v) = mmio.read(ctx, off, w, &mut Effects::new()) {
                    assert!(v <= w.mask());
                }
            }
            2 => {
                let vm = usize::from(dev % 2);
                let off = u64::from(b.u16()) * 4 % VQ_RAM_SIZE;
                let n = usize::from(b.u8() % 32);
                let bytes: Vec<u8> = (0..n).map(|_| b.u8()).collect();
                let _ = mems[vm].write(kestrel::addr::Ipa::new(VQ_RAM + off), &bytes);
            }
            3 => {
                // A descriptor of one of the queues, mostly pointing into RAM.
                let (vm, l) = layouts[usize::from(b.u8()) % layouts.len()];
                let i = u64::from(b.u8() % VQ_SIZE as u8);
                let raw = b.u8();
                let addr = if raw & 1 == 0 {
                    VQ_RAM + u64::from(b.u32()) % VQ_RAM_SIZE
                } else {
                    b.u64()
                };
                let len = if raw & 2 == 0 {
                    b.u32() % 0x3000
                } else {
                    b.u32()
                };
                let flags = if raw & 4 == 0 { b.u16() & 7 } else { b.u16() };
                let next = b.u16() % (VQ_SIZE + 4);
                let mut d = [0u8; 16];
                d[..8].copy_from_slice(&addr.to_le_bytes());
                d[8..12].copy_from_slice(&len.to_le_bytes());
                d[12..14].copy_from_slice(&flags.to_le_bytes());
                d[14..].copy_from_slice(&next.to_le_bytes());
                let _ = mems[vm].write(l.desc + 16 * i, &d);
            }
            4 => {
                // Make a chain available and notify, as a driver does.
                let (vm, l) = layouts[usize::from(b.u8()) % layouts.len()];
                let head = b.u16() % (VQ_SIZE + 2);
                let m = &mems[vm];
                if let Ok(idx) = m.read_u16(l.avail + 2) {
                    let _ = m.write_u16(l.avail + 4 + 2 * u64::from(idx % VQ_SIZE), head);
                    let _ = m.write_u16(l.avail + 2, idx.wrapping_add(1));
                }
                let q = match layouts.iter().position(|x| x.1 == l && x.0 == vm) {
                    Some(0) => (&blk as &dyn MmioDevice, 0),
                    Some(1) => (&nets[0] as &dyn MmioDevice, 0),
                    Some(2) => (&nets[0] as &dyn MmioDevice, 1),
                    Some(3) => (&nets[1] as &dyn MmioDevice, 0),
                    _ => (&nets[1] as &dyn MmioDevice, 1),
                };
                let _ = q.0.write(
                    ctx,
                    reg::QUEUE_NOTIFY,
                    AccessWidth::Word,
                    q.1,
                    &mut Effects::new(),
                );
            }
            5 => {
                let q = u64::from(b.u8() % 3);
                let _ = mmio.write(
                    ctx,
                    reg::QUEUE_NOTIFY,
                    AccessWidth::Word,
                    q,
                    &mut Effects::new(),
                );
            }
            _ => {
                let (vm, l) = layouts[usize::from(b.u8()) % layouts.len()];
                let _ = mems[vm].write_u16(l.avail + 2, b.u16());
            }
        }
        let moved = blk_bytes(&blk) - moved_before;
        assert!(moved < pass_limit, "{moved} bytes in one notification");
        if blk.has_deferred() {
            let before = blk_bytes(&blk);
            blk.run_deferred();
            let moved = blk_bytes(&blk) - before;
            assert!(moved < pass_limit, "{moved} bytes in one deferred pass");
        }
        vq_check(&blk, &blk_irq);
        vq_check(&nets[0], &net_irqs[0]);
        vq_check(&nets[1], &net_irqs[1]);
    }
    // Nothing outside the two VMs' RAM was written.
    let snap = phys.snapshot();
    for g in 0..3u64 {
        let start = (g * (VQ_RAM_SIZE + VQ_GUARD)) as usize;
        assert!(
            snap[start..start + VQ_GUARD as usize]
                .iter()
                .all(|&x| x == POISON),
            "guard page {g} written"
        );
    }
    let p = |i: usize| nets[i].device().port().counters().snapshot();
    let blk_stats = blk.device().stats();
    format!(
        "ops {ops} blk status {:#x} rd/wr {}/{} net {:#x}/{:#x} frames {}/{} bad {}",
        blk.status(),
        blk_stats.reads.load(std::sync::atomic::Ordering::Relaxed),
        blk_stats.writes.load(std::sync::atomic::Ordering::Relaxed),
        nets[0].status(),
        nets[1].status(),
        p(0).tx_frames,
        p(1).rx_frames,
        blk.signals().bad.total() + nets[0].signals().bad.total() + nets[1].signals().bad.total()
    )
}
