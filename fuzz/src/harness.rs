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

use std::collections::{HashMap, HashSet};
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
            let free = p.free_ram();
            for (i, f) in free.iter().enumerate() {
                assert!(
                    f.size > 0
                        && f.start.as_u64().is_multiple_of(4096)
                        && f.size.is_multiple_of(4096)
                );
                assert!(
                    p.memory.iter().any(|m| m.start.as_u64() <= f.start.as_u64()
                        && f.end().as_u64() <= m.end().as_u64()),
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
    if let Some(d) = dabt {
        let _ = d.status.level();
    }
    if let Some(i) = e.instruction_abort() {
        let _ = i.status.level();
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
}

/// One vCPU: its LR bookkeeping, its fake CPU interface, and whether it is in the guest
/// (between `flush_to_lrs` and the next exit) or in the hypervisor.
struct VcpuSim {
    cpu: kestrel::vgic::VgicCpu,
    lrs: FakeLrs,
    in_guest: bool,
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
        })
        .collect();
    let mut ops = 0u32;

    while !b.is_empty() {
        ops += 1;
        let op = b.u8();
        let v = usize::from(b.u8()) % n;
        let kind = op % 13;
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
                if kind == 0 {
                    if let Ok(x) = dev.read(ctx, offset, width, &mut fx) {
                        assert!(x <= width.mask(), "read {x:#x} wider than {width:?}");
                    }
                } else {
                    let value = b.u64();
                    let _ = dev.write(ctx, offset, width, value, &mut fx);
                }
                fx.iter()
                    .map(|f| match f {
                        Effect::KickVcpus(m) => m,
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
                vgic.send_sgi_v3(v, b.u64(), reg).unwrap_or(0)
            }
            6 => {
                let intid = u32::from(b.u16()) % (nr_irqs + 8);
                let pintid = u32::from(b.u16()) % 1100;
                let _ = match b.u8() % 3 {
                    0 => vgic.map_hw_ppi(v, intid, pintid),
                    1 => vgic.map_hw_spi(intid, pintid),
                    _ => vgic.unmap_hw(v, intid),
                };
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
        check_lrs(&vcpus, nr_irqs, v3);
    }
    let st = vgic.stats();
    format!("ops {ops} injections {}", st.injections)
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
