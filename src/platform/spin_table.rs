//! Starting secondary CPUs through a spin table, as the Raspberry Pi 4 firmware leaves them.
//!
//! The protocol (Linux Documentation/arch/arm64/booting.rst §5, "enable-method = spin-table"):
//! each secondary CPU waits in a `wfe` loop, with its MMU and caches off, reading the 64-bit
//! little-endian word at its `cpu-release-addr`; while the word is zero it keeps waiting. The boot
//! CPU writes the entry point there, cleans the word to the point of coherency (the waiting CPU
//! reads memory, not the boot CPU's cache), issues a DSB so the clean completes, then SEV to wake
//! it. The Pi's stock armstub8 (and QEMU's `raspi4b` stub at 0x300) then branches to the entry
//! with x0 = x1 = x2 = x3 = 0, at EL2: unlike PSCI CPU_ON, no context value reaches the CPU.
//!
//! So the released CPU must find out who it is by itself. This module plans a *handoff table*
//! that the boot CPU fills before any release: one 16-byte slot per CPU index holding the CPU's
//! MPIDR affinity and its context value ([`HANDOFF_SLOT_SIZE`], [`HANDOFF_EMPTY`]). The
//! spin-table entry stub reads MPIDR_EL1, keeps the affinity fields ([`mpidr_affinity`]), finds its
//! slot and continues as a PSCI-started CPU would with x0 = the slot's context.
//! [`index_for_mpidr`] is the same search in Rust.
//!
//! Nothing here touches memory or caches: [`plan`] returns the operations as data
//! ([`ReleaseOp`]) for the arch layer to execute in order.
#![forbid(unsafe_code)]

use alloc::vec::Vec;
use core::fmt;

use tock_registers::LocalRegisterCopy;
use tock_registers::register_bitfields;

use super::{Cpu, EnableMethod, Reserved};
use crate::addr::{PhysAddr, Range};

register_bitfields! [u64,
    /// MPIDR_EL1, Multiprocessor Affinity Register (Arm ARM D23.2 "MPIDR_EL1"). Bit 31 is RES1;
    /// U and MT describe the system, not the CPU, and are not part of its identity.
    MPIDR [
        /// [7:0] Affinity level 0.
        AFF0 OFFSET(0) NUMBITS(8) [],
        /// [15:8] Affinity level 1.
        AFF1 OFFSET(8) NUMBITS(8) [],
        /// [23:16] Affinity level 2.
        AFF2 OFFSET(16) NUMBITS(8) [],
        /// [24] Multithreading: the lowest affinity level is threads.
        MT OFFSET(24) NUMBITS(1) [],
        /// [30] Uniprocessor system.
        U OFFSET(30) NUMBITS(1) [],
        /// [39:32] Affinity level 3.
        AFF3 OFFSET(32) NUMBITS(8) []
    ]
];

/// Bytes per handoff slot: the MPIDR affinity at +0, the context value at +8.
pub const HANDOFF_SLOT_SIZE: u64 = 16;
/// The affinity word of an unused slot. No MPIDR affinity can equal it (bits [31:24] and
/// [63:40] of an affinity are zero), so an unexpected CPU never matches an empty slot.
pub const HANDOFF_EMPTY: u64 = u64::MAX;

/// The affinity fields of an MPIDR_EL1 value (Aff3 in [39:32], Aff2..Aff0 in [23:0]), the form
/// DTB `/cpus` `reg` values and [`Cpu::mpidr`] use.
pub fn mpidr_affinity(mpidr: u64) -> u64 {
    let r = LocalRegisterCopy::<u64, MPIDR::Register>::new(mpidr);
    (MPIDR::AFF3.val(r.read(MPIDR::AFF3))
        + MPIDR::AFF2.val(r.read(MPIDR::AFF2))
        + MPIDR::AFF1.val(r.read(MPIDR::AFF1))
        + MPIDR::AFF0.val(r.read(MPIDR::AFF0)))
    .value
}

/// The CPU index (position in `cpus`, DTB order) of the CPU whose MPIDR_EL1 reads `mpidr`.
/// The raw register value is accepted: RES1 bit 31 and the U and MT bits are ignored.
pub fn index_for_mpidr(cpus: &[Cpu], mpidr: u64) -> Option<usize> {
    let aff = mpidr_affinity(mpidr);
    cpus.iter().position(|c| mpidr_affinity(c.mpidr) == aff)
}

/// One step of a release, executed in order by the arch layer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ReleaseOp {
    /// Store `value` as a 64-bit little-endian word at `addr` (8-byte aligned), with a single
    /// 64-bit store so a waiting CPU never sees half of it.
    Write64 { addr: PhysAddr, value: u64 },
    /// Clean the data cache lines covering `[range.start, range.end())` to the point of
    /// coherency (DC CVAC per line; Arm ARM D7.5.9 "Data cache maintenance instructions").
    CleanToPoc { range: Range<PhysAddr> },
    /// DSB SY: the preceding stores and cleans are complete before anything after it.
    DsbSy,
    /// SEV: wake every CPU waiting in WFE (Arm ARM D1.6.1 "Wait for Event").
    Sev,
}

/// Where the boot CPU publishes the (MPIDR affinity, context) pairs: `slots` slots of
/// [`HANDOFF_SLOT_SIZE`] bytes from `base`. The slot for CPU index `i` is at
/// `base + i * HANDOFF_SLOT_SIZE`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Handoff {
    pub base: PhysAddr,
    pub slots: usize,
}

impl Handoff {
    /// The address of slot `index`; `None` when it does not exist or would overflow.
    pub fn slot(&self, index: usize) -> Option<PhysAddr> {
        if index >= self.slots {
            return None;
        }
        self.base
            .checked_add((index as u64).checked_mul(HANDOFF_SLOT_SIZE)?)
    }

    fn bytes(&self) -> Option<u64> {
        (self.slots as u64).checked_mul(HANDOFF_SLOT_SIZE)
    }
}

/// What the plan needs to know about memory to check release addresses.
#[derive(Clone, Copy, Debug)]
pub struct MemoryView<'a> {
    /// RAM ranges ([`super::Platform::memory`]).
    pub memory: &'a [Range<PhysAddr>],
    /// Reserved ranges ([`super::Platform::reserved`]); a release address may lie in one even
    /// outside RAM (the Pi's spin table sits in the `/memreserve/` of page 0).
    pub reserved: &'a [Reserved],
    /// The hypervisor image: a release address inside it would be overwritten by the image.
    pub image: Range<PhysAddr>,
}

/// Why a CPU cannot be released, or why no plan can be made.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum SpinTableError {
    /// The entry point is zero (a waiting CPU takes zero as "keep waiting") or not 4-byte
    /// aligned (not an instruction address).
    BadEntry(PhysAddr),
    /// The handoff table is not 8-byte aligned, empty, or wraps around the address space.
    BadHandoff(Handoff),
    /// The handoff table overlaps a release address: filling it would release a CPU early.
    HandoffCoversRelease { cpu: usize, addr: PhysAddr },
    /// The CPU's index has no handoff slot.
    NoHandoffSlot { cpu: usize, slots: usize },
    /// `cpu-release-addr` is not 8-byte aligned.
    Misaligned { cpu: usize, addr: PhysAddr },
    /// `cpu-release-addr` is neither in RAM nor in a reserved range.
    OutsideMemory { cpu: usize, addr: PhysAddr },
    /// `cpu-release-addr` lies inside the hypervisor image.
    InsideImage { cpu: usize, addr: PhysAddr },
}

impl fmt::Display for SpinTableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpinTableError::BadEntry(e) => write!(f, "spin-table entry {e} is zero or misaligned"),
            SpinTableError::BadHandoff(h) => {
                write!(f, "handoff table {}x{} unusable", h.base, h.slots)
            }
            SpinTableError::HandoffCoversRelease { cpu, addr } => {
                write!(
                    f,
                    "cpu {cpu}: release address {addr} inside the handoff table"
                )
            }
            SpinTableError::NoHandoffSlot { cpu, slots } => {
                write!(f, "cpu {cpu}: no handoff slot (only {slots})")
            }
            SpinTableError::Misaligned { cpu, addr } => {
                write!(f, "cpu {cpu}: release address {addr} not 8-byte aligned")
            }
            SpinTableError::OutsideMemory { cpu, addr } => {
                write!(f, "cpu {cpu}: release address {addr} outside RAM")
            }
            SpinTableError::InsideImage { cpu, addr } => {
                write!(
                    f,
                    "cpu {cpu}: release address {addr} inside the hypervisor image"
                )
            }
        }
    }
}

/// Checks one CPU's `cpu-release-addr`.
pub fn validate_release_addr(
    cpu: usize,
    addr: PhysAddr,
    mem: &MemoryView<'_>,
) -> Result<(), SpinTableError> {
    if !addr.is_aligned(8) {
        return Err(SpinTableError::Misaligned { cpu, addr });
    }
    let word = Range::new(addr, 8);
    if mem.image.overlaps(&word) {
        return Err(SpinTableError::InsideImage { cpu, addr });
    }
    let in_ram = mem.memory.iter().any(|m| m.contains_range(addr, 8));
    let in_reserved = mem.reserved.iter().any(|r| r.range.contains_range(addr, 8));
    if !in_ram && !in_reserved {
        return Err(SpinTableError::OutsideMemory { cpu, addr });
    }
    Ok(())
}

/// The release of one secondary CPU.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CpuRelease {
    /// Position in the CPU list (the index the CPU will run as).
    pub index: usize,
    pub mpidr: u64,
    pub release_addr: PhysAddr,
    /// Write the entry to the release address, clean it to PoC, DSB SY, SEV.
    pub ops: Vec<ReleaseOp>,
}

/// Everything the boot CPU does to start its spin-table secondaries.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SpinTablePlan {
    /// Run first, once: fill every handoff slot (CPUs to release get their affinity and
    /// context, all others [`HANDOFF_EMPTY`]), clean the table to PoC, DSB SY.
    pub prepare: Vec<ReleaseOp>,
    /// Then each of these, in order (the caller may wait for each CPU to come online).
    pub releases: Vec<CpuRelease>,
    /// Spin-table CPUs that are not released, and why. CPUs with another enable method are
    /// neither here nor in `releases`.
    pub rejected: Vec<(usize, SpinTableError)>,
}

/// Plans the release of every spin-table CPU in `cpus` except the one whose affinity is
/// `boot_mpidr`'s. A released CPU enters at `entry` and finds `context(index)` in its handoff
/// slot (the runtime passes the index itself, as it does with PSCI CPU_ON).
///
/// Two CPUs may share a release address (one write releases both); since every slot is filled
/// before the first release, each still finds its own context.
pub fn plan(
    cpus: &[Cpu],
    boot_mpidr: u64,
    entry: PhysAddr,
    context: impl Fn(usize) -> u64,
    handoff: Handoff,
    mem: &MemoryView<'_>,
) -> Result<SpinTablePlan, SpinTableError> {
    if entry.as_u64() == 0 || !entry.is_aligned(4) {
        return Err(SpinTableError::BadEntry(entry));
    }
    let table = match handoff.bytes() {
        Some(bytes)
            if bytes != 0
                && handoff.base.is_aligned(8)
                && handoff.base.checked_add(bytes).is_some() =>
        {
            Range::new(handoff.base, bytes)
        }
        _ => return Err(SpinTableError::BadHandoff(handoff)),
    };

    let boot_aff = mpidr_affinity(boot_mpidr);
    let mut releases = Vec::new();
    let mut rejected = Vec::new();
    for (index, cpu) in cpus.iter().enumerate() {
        let EnableMethod::SpinTable { release_addr } = cpu.enable_method else {
            continue;
        };
        if mpidr_affinity(cpu.mpidr) == boot_aff {
            continue;
        }
        let checked = validate_release_addr(index, release_addr, mem).and_then(|()| {
            if table.overlaps(&Range::new(release_addr, 8)) {
                Err(SpinTableError::HandoffCoversRelease {
                    cpu: index,
                    addr: release_addr,
                })
            } else if index >= handoff.slots {
                Err(SpinTableError::NoHandoffSlot {
                    cpu: index,
                    slots: handoff.slots,
                })
            } else {
                Ok(())
            }
        });
        match checked {
            Ok(()) => releases.push(CpuRelease {
                index,
                mpidr: mpidr_affinity(cpu.mpidr),
                release_addr,
                ops: alloc::vec![
                    ReleaseOp::Write64 {
                        addr: release_addr,
                        value: entry.as_u64(),
                    },
                    ReleaseOp::CleanToPoc {
                        range: Range::new(release_addr, 8),
                    },
                    ReleaseOp::DsbSy,
                    ReleaseOp::Sev,
                ],
            }),
            Err(e) => rejected.push((index, e)),
        }
    }

    let mut prepare = Vec::with_capacity(handoff.slots * 2 + 2);
    for slot in 0..handoff.slots {
        let base = table.start + slot as u64 * HANDOFF_SLOT_SIZE;
        let (aff, ctx) = match releases.iter().find(|r| r.index == slot) {
            Some(r) => (r.mpidr, context(slot)),
            None => (HANDOFF_EMPTY, 0),
        };
        prepare.push(ReleaseOp::Write64 {
            addr: base,
            value: aff,
        });
        prepare.push(ReleaseOp::Write64 {
            addr: base + 8,
            value: ctx,
        });
    }
    prepare.push(ReleaseOp::CleanToPoc { range: table });
    prepare.push(ReleaseOp::DsbSy);

    Ok(SpinTablePlan {
        prepare,
        releases,
        rejected,
    })
}

/// What a handoff table holds for `mpidr` (the raw MPIDR_EL1 value): the context of the first
/// slot whose affinity matches, as the entry stub's search finds it. `table` is the table's
/// contents as 64-bit words (affinity, context, affinity, context, ...).
pub fn handoff_lookup(table: &[u64], mpidr: u64) -> Option<u64> {
    let aff = mpidr_affinity(mpidr);
    table
        .chunks_exact(2)
        .find(|slot| slot[0] == aff)
        .map(|slot| slot[1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::ReservedKind;
    use alloc::collections::BTreeMap;
    use alloc::vec;

    const ENTRY: u64 = 0x20_1000;
    const TABLE: u64 = 0x21_0000;
    const LINE: u64 = 64;

    fn pa(v: u64) -> PhysAddr {
        PhysAddr::new(v)
    }

    fn spin(mpidr: u64, release: u64) -> Cpu {
        Cpu {
            mpidr,
            enable_method: EnableMethod::SpinTable {
                release_addr: pa(release),
            },
        }
    }

    /// The Raspberry Pi 4 as its DTB describes it: four CPUs, release words at 0xd8..0xf0.
    fn pi4_cpus() -> Vec<Cpu> {
        vec![spin(0, 0xd8), spin(1, 0xe0), spin(2, 0xe8), spin(3, 0xf0)]
    }

    struct Mem {
        memory: Vec<Range<PhysAddr>>,
        reserved: Vec<Reserved>,
        image: Range<PhysAddr>,
    }

    impl Mem {
        fn pi4() -> Self {
            Mem {
                memory: vec![Range::new(pa(0), 0x3c00_0000)],
                reserved: vec![Reserved {
                    range: Range::new(pa(0), 0x1000),
                    kind: ReservedKind::MemReserve,
                }],
                image: Range::new(pa(0x20_0000), 0x20_0000),
            }
        }
        fn view(&self) -> MemoryView<'_> {
            MemoryView {
                memory: &self.memory,
                reserved: &self.reserved,
                image: self.image,
            }
        }
    }

    fn handoff(slots: usize) -> Handoff {
        Handoff {
            base: pa(TABLE),
            slots,
        }
    }

    fn pi4_plan() -> SpinTablePlan {
        let mem = Mem::pi4();
        plan(
            &pi4_cpus(),
            0x8000_0000,
            pa(ENTRY),
            |i| i as u64,
            handoff(4),
            &mem.view(),
        )
        .unwrap()
    }

    /// A model of what the secondaries see: the boot CPU writes into its write-back cache; a
    /// waiting CPU (MMU and caches off) reads main memory, which only a clean updates. SEV
    /// wakes the waiters, which then re-read their release word.
    #[derive(Default)]
    struct Machine {
        cache: BTreeMap<u64, u64>,
        memory: BTreeMap<u64, u64>,
        /// Stores and cleans not yet completed by a DSB.
        pending_clean: bool,
        log: Vec<&'static str>,
        woken: Vec<(u64, u64)>,
    }

    impl Machine {
        fn run(&mut self, ops: &[ReleaseOp], waiting: &[(u64, u64)]) {
            for op in ops {
                match *op {
                    ReleaseOp::Write64 { addr, value } => {
                        assert!(addr.is_aligned(8));
                        self.cache.insert(addr.as_u64(), value);
                        self.log.push("write");
                    }
                    ReleaseOp::CleanToPoc { range } => {
                        let start = range.start.align_down(LINE).as_u64();
                        let end = range.end().as_u64();
                        for (&a, &v) in self.cache.range(start..end.next_multiple_of(LINE)) {
                            self.memory.insert(a, v);
                        }
                        self.pending_clean = true;
                        self.log.push("clean");
                    }
                    ReleaseOp::DsbSy => {
                        self.pending_clean = false;
                        self.log.push("dsb");
                    }
                    ReleaseOp::Sev => {
                        assert!(!self.pending_clean, "SEV before the clean completed");
                        self.log.push("sev");
                        for &(mpidr, release) in waiting {
                            let v = self.memory.get(&release).copied().unwrap_or(0);
                            if v != 0 && !self.woken.iter().any(|w| w.0 == mpidr) {
                                self.woken.push((mpidr, v));
                            }
                        }
                    }
                }
            }
        }

        /// The handoff table as a released CPU reads it (from memory).
        fn table(&self, slots: usize) -> Vec<u64> {
            (0..slots as u64 * 2)
                .map(|w| self.memory.get(&(TABLE + w * 8)).copied().unwrap_or(0))
                .collect()
        }
    }

    #[test]
    fn mpidr_affinity_drops_res1_u_and_mt_bits() {
        assert_eq!(mpidr_affinity(0x8000_0003), 3);
        assert_eq!(mpidr_affinity(0xc100_0201), 0x0201);
        assert_eq!(mpidr_affinity(0x0000_00ab_81cd_ef12), 0xab_00cd_ef12);
        assert_eq!(mpidr_affinity(u64::MAX), 0xff_00ff_ffff);
    }

    #[test]
    fn index_for_mpidr_finds_the_dtb_position_from_the_raw_register() {
        let cpus = pi4_cpus();
        assert_eq!(index_for_mpidr(&cpus, 0x8000_0000), Some(0));
        assert_eq!(index_for_mpidr(&cpus, 0x8000_0002), Some(2));
        assert_eq!(index_for_mpidr(&cpus, 0x8100_0003), Some(3));
        assert_eq!(index_for_mpidr(&cpus, 0x8000_0004), None);
        assert_eq!(index_for_mpidr(&cpus, 0x8000_0100), None);
    }

    #[test]
    fn index_for_mpidr_matches_all_affinity_levels() {
        let cpus = vec![spin(0x1_0000_0000, 0xd8), spin(0x100, 0xe0), spin(0, 0xe8)];
        assert_eq!(index_for_mpidr(&cpus, 0x8000_0000), Some(2));
        assert_eq!(index_for_mpidr(&cpus, 0x1_8000_0000), Some(0));
        assert_eq!(index_for_mpidr(&cpus, 0x8000_0100), Some(1));
    }

    #[test]
    fn pi4_release_writes_entry_cleans_dsb_then_sev_per_cpu() {
        let p = pi4_plan();
        assert!(p.rejected.is_empty());
        let got: Vec<(usize, u64)> = p
            .releases
            .iter()
            .map(|r| (r.index, r.release_addr.as_u64()))
            .collect();
        assert_eq!(got, vec![(1, 0xe0), (2, 0xe8), (3, 0xf0)]);
        assert_eq!(
            p.releases[0].ops,
            vec![
                ReleaseOp::Write64 {
                    addr: pa(0xe0),
                    value: ENTRY
                },
                ReleaseOp::CleanToPoc {
                    range: Range::new(pa(0xe0), 8)
                },
                ReleaseOp::DsbSy,
                ReleaseOp::Sev,
            ]
        );
    }

    #[test]
    fn prepare_fills_every_slot_then_cleans_the_table() {
        let p = pi4_plan();
        let w = |addr, value| ReleaseOp::Write64 {
            addr: pa(addr),
            value,
        };
        assert_eq!(
            p.prepare,
            vec![
                w(TABLE, HANDOFF_EMPTY),
                w(TABLE + 8, 0),
                w(TABLE + 16, 1),
                w(TABLE + 24, 1),
                w(TABLE + 32, 2),
                w(TABLE + 40, 2),
                w(TABLE + 48, 3),
                w(TABLE + 56, 3),
                ReleaseOp::CleanToPoc {
                    range: Range::new(pa(TABLE), 64)
                },
                ReleaseOp::DsbSy,
            ]
        );
    }

    #[test]
    fn secondaries_wake_only_after_release_and_find_their_index() {
        let p = pi4_plan();
        let waiting = [
            (0x8000_0001, 0xe0),
            (0x8000_0002, 0xe8),
            (0x8000_0003, 0xf0),
        ];
        let mut m = Machine::default();
        m.run(&p.prepare, &waiting);
        assert!(m.woken.is_empty());
        for (n, r) in p.releases.iter().enumerate() {
            m.run(&r.ops, &waiting);
            assert_eq!(
                m.woken.len(),
                n + 1,
                "release {n} woke the wrong number of CPUs"
            );
        }
        let table = m.table(4);
        for (mpidr, entry) in &m.woken {
            assert_eq!(*entry, ENTRY);
            let ctx = handoff_lookup(&table, *mpidr);
            assert_eq!(ctx, Some(mpidr_affinity(*mpidr)), "cpu {mpidr:#x}");
        }
        // The boot CPU never matches a slot.
        assert_eq!(handoff_lookup(&table, 0x8000_0000), None);
    }

    #[test]
    fn a_release_without_its_clean_would_leave_the_cpu_waiting() {
        let p = pi4_plan();
        let ops: Vec<ReleaseOp> = p.releases[0]
            .ops
            .iter()
            .copied()
            .filter(|o| !matches!(o, ReleaseOp::CleanToPoc { .. }))
            .collect();
        let mut m = Machine::default();
        m.run(&ops, &[(1, 0xe0)]);
        assert!(m.woken.is_empty(), "the model must see only cleaned data");
        m.run(&p.releases[0].ops, &[(1, 0xe0)]);
        assert_eq!(m.woken, vec![(1, ENTRY)]);
    }

    #[test]
    fn shared_release_address_releases_both_with_their_own_context() {
        let cpus = vec![spin(0, 0xd8), spin(1, 0xd8), spin(2, 0xd8)];
        let mem = Mem::pi4();
        let p = plan(
            &cpus,
            0,
            pa(ENTRY),
            |i| 100 + i as u64,
            handoff(4),
            &mem.view(),
        )
        .unwrap();
        let waiting = [(1, 0xd8), (2, 0xd8)];
        let mut m = Machine::default();
        m.run(&p.prepare, &waiting);
        m.run(&p.releases[0].ops, &waiting);
        assert_eq!(m.woken.len(), 2);
        let table = m.table(4);
        assert_eq!(handoff_lookup(&table, 1), Some(101));
        assert_eq!(handoff_lookup(&table, 2), Some(102));
    }

    #[test]
    fn boot_cpu_and_other_enable_methods_are_not_released() {
        let cpus = vec![
            spin(0, 0xd8),
            Cpu {
                mpidr: 1,
                enable_method: EnableMethod::Psci,
            },
            Cpu {
                mpidr: 2,
                enable_method: EnableMethod::None,
            },
            spin(3, 0xf0),
        ];
        let mem = Mem::pi4();
        // The boot CPU is CPU 3 here.
        let p = plan(
            &cpus,
            0x8000_0003,
            pa(ENTRY),
            |i| i as u64,
            handoff(4),
            &mem.view(),
        )
        .unwrap();
        let idx: Vec<usize> = p.releases.iter().map(|r| r.index).collect();
        assert_eq!(idx, vec![0]);
        assert!(p.rejected.is_empty());
    }

    #[test]
    fn release_address_checks_alignment_ram_and_image() {
        let mem = Mem::pi4();
        let v = mem.view();
        assert_eq!(validate_release_addr(1, pa(0xe0), &v), Ok(()));
        assert_eq!(
            validate_release_addr(1, pa(0xe4), &v),
            Err(SpinTableError::Misaligned {
                cpu: 1,
                addr: pa(0xe4)
            })
        );
        assert_eq!(
            validate_release_addr(2, pa(0x20_0100), &v),
            Err(SpinTableError::InsideImage {
                cpu: 2,
                addr: pa(0x20_0100)
            })
        );
        assert_eq!(
            validate_release_addr(3, pa(0x4000_0000), &v),
            Err(SpinTableError::OutsideMemory {
                cpu: 3,
                addr: pa(0x4000_0000)
            })
        );
        // The last word of RAM is fine, a word straddling its end is not.
        assert_eq!(validate_release_addr(3, pa(0x3bff_fff8), &v), Ok(()));
    }

    #[test]
    fn release_address_in_a_reserved_range_outside_ram_is_accepted() {
        let mem = Mem {
            memory: vec![Range::new(pa(0x4000_0000), 0x1000_0000)],
            reserved: vec![Reserved {
                range: Range::new(pa(0x1000), 0x1000),
                kind: ReservedKind::ReservedMemory { no_map: true },
            }],
            image: Range::new(pa(0x4020_0000), 0x20_0000),
        };
        assert_eq!(validate_release_addr(1, pa(0x1ff8), &mem.view()), Ok(()));
        assert!(validate_release_addr(1, pa(0x2000), &mem.view()).is_err());
    }

    #[test]
    fn bad_cpus_are_rejected_and_the_rest_still_released() {
        let cpus = vec![
            spin(0, 0xd8),
            spin(1, 0xe4),
            spin(2, 0x20_0008),
            spin(3, 0xf0),
            spin(4, 0xf8),
        ];
        let mem = Mem::pi4();
        let p = plan(&cpus, 0, pa(ENTRY), |i| i as u64, handoff(4), &mem.view()).unwrap();
        let idx: Vec<usize> = p.releases.iter().map(|r| r.index).collect();
        assert_eq!(idx, vec![3]);
        assert_eq!(
            p.rejected,
            vec![
                (
                    1,
                    SpinTableError::Misaligned {
                        cpu: 1,
                        addr: pa(0xe4)
                    }
                ),
                (
                    2,
                    SpinTableError::InsideImage {
                        cpu: 2,
                        addr: pa(0x20_0008)
                    }
                ),
                (4, SpinTableError::NoHandoffSlot { cpu: 4, slots: 4 }),
            ]
        );
        // Rejected CPUs get an empty slot, so a stray one cannot start.
        let mut m = Machine::default();
        m.run(&p.prepare, &[]);
        let table = m.table(4);
        assert_eq!(handoff_lookup(&table, 1), None);
        assert_eq!(handoff_lookup(&table, 3), Some(3));
    }

    #[test]
    fn zero_or_misaligned_entry_is_refused() {
        let mem = Mem::pi4();
        for e in [0, 0x20_1002] {
            assert_eq!(
                plan(&pi4_cpus(), 0, pa(e), |i| i as u64, handoff(4), &mem.view()),
                Err(SpinTableError::BadEntry(pa(e)))
            );
        }
    }

    #[test]
    fn unusable_handoff_tables_are_refused() {
        let mem = Mem::pi4();
        for h in [
            Handoff {
                base: pa(TABLE + 4),
                slots: 4,
            },
            Handoff {
                base: pa(TABLE),
                slots: 0,
            },
            Handoff {
                base: pa(u64::MAX - 15),
                slots: 2,
            },
            Handoff {
                base: pa(TABLE),
                slots: usize::MAX,
            },
        ] {
            assert_eq!(
                plan(&pi4_cpus(), 0, pa(ENTRY), |i| i as u64, h, &mem.view()),
                Err(SpinTableError::BadHandoff(h))
            );
        }
    }

    #[test]
    fn handoff_table_over_a_release_word_is_rejected() {
        let mem = Mem::pi4();
        let h = Handoff {
            base: pa(0xc0),
            slots: 4,
        };
        let p = plan(&pi4_cpus(), 0, pa(ENTRY), |i| i as u64, h, &mem.view()).unwrap();
        assert!(p.releases.is_empty());
        assert_eq!(p.rejected.len(), 3);
        assert!(matches!(
            p.rejected[0].1,
            SpinTableError::HandoffCoversRelease { cpu: 1, .. }
        ));
    }

    #[test]
    fn handoff_slot_addresses() {
        let h = handoff(4);
        assert_eq!(h.slot(0), Some(pa(TABLE)));
        assert_eq!(h.slot(3), Some(pa(TABLE + 48)));
        assert_eq!(h.slot(4), None);
    }
}
