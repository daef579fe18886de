//! Paravirtualized time for Arm (Arm DEN0057A): the stolen-time part, so a guest knows how
//! long its vCPUs waited for a physical CPU (Linux shows it as `steal` in `/proc/stat` and
//! takes it out of its tasks' run time).
//!
//! This module owns the guest-visible parts: the two SMCCC calls and their answers, the
//! layout of the per-vCPU stolen-time record, where the records live in the guest's address
//! space, and what each record says ([`StolenTime`]: a vCPU's run-queue wait, kept across
//! CPU_OFF/CPU_ON so it never goes back). It writes no memory itself: the runtime gives it the
//! VM's record page as a [`RecordPage`] (one page outside guest RAM, mapped read-only into the
//! VM) and calls [`StolenTime::publish`] whenever a vCPU is about to run (switched in, or
//! started); [`crate::psci`] routes the calls here.
//!
//! # Offered to every VM
//! Whether a vCPU shares its CPU can change while the guest runs (a VM `start`ed from the
//! console onto its CPU), and Linux probes PV time once, at boot. So every VM is offered it; a
//! vCPU alone on its CPU never waits in a run queue and its record reads 0 (Linux then
//! accounts no steal), and its exit path does not change (records are written on switch-in
//! and start only, never on the dedicated path). KVM, too, offers it to every VM.
//!
//! # Updates (DEN0057A §3.2: one 64-bit little-endian value, read single-copy atomically)
//! There is no sequence count in this ABI: the hypervisor stores the whole `stolen_time` with
//! one aligned 64-bit store, so a guest load sees the old or the new value, never a mix. The
//! value only grows: Linux takes differences of successive readings (`steal_account_process_time`),
//! so a value that went back would count as an enormous steal.
//!
//! # Discovery (what Linux does, `arch/arm64/kernel/paravirt.c`)
//! 1. SMCCC 1.1 must be present: PSCI_FEATURES(SMCCC_VERSION) succeeds and SMCCC_VERSION
//!    answers at least 1.1 (both already true of [`crate::psci`]).
//! 2. `SMCCC_ARCH_FEATURES(PV_TIME_FEATURES)` must answer SUCCESS (0).
//! 3. `PV_TIME_FEATURES(PV_TIME_ST)` must answer SUCCESS.
//! 4. On each CPU coming online: `PV_TIME_ST` answers the IPA of that vCPU's record, which
//!    the guest maps write-back cacheable (`memremap(.., MEMREMAP_WB)`) and refuses unless
//!    revision and attributes read 0; from then on it reads `stolen_time` with one 64-bit
//!    load.
//!
//! # Where the records are
//! In [`REGION`], 64 KiB at IPA 0x090a_0000: the address QEMU's `virt` machine gives its
//! PV-time region, inside the window of emulated devices that guest RAM and passthrough
//! devices must avoid (`guest::layout::guest_map`). Record `i` (vCPU `i`) is at
//! `REGION + 64 * i`; 64 vCPUs (the most a VM has) fill the first 4 KiB page, the only one
//! mapped, read-only (the guest never writes the records; a write is a stage-2 fault the
//! runtime answers with an abort). Why not a reserved, no-map page of guest RAM, as DEN0057A
//! suggests: a guest that brings its own device tree (`dtb` in vm.toml) would not know the
//! page is reserved and would use it as RAM, and an `identity_ram` VM's RAM is placed only
//! when it is built. Outside RAM nothing has to be described or kept back: Linux never reads
//! the address from the device tree (it asks PV_TIME_ST) and `memremap` maps memory outside
//! its RAM just as well. The whole 64 KiB are kept for it so that a guest with 64 KiB pages
//! maps a page holding nothing else (the advice in KVM's `Documentation/virt/kvm/arm/
//! pvtime.rst`).
#![forbid(unsafe_code)]

use crate::addr::{Ipa, PAGE_SIZE};
use crate::guest::layout::IpaRange;
use crate::sched::ticks_to_ns;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

/// `PV_TIME_FEATURES` (DEN0057A §3.3, SMC64/HVC64 only): is the PV-time call in W1
/// implemented?
pub const PV_TIME_FEATURES: u32 = 0xc500_0020;
/// `PV_TIME_ST` (DEN0057A §3.4, SMC64/HVC64 only): the IPA of the caller's stolen-time record.
pub const PV_TIME_ST: u32 = 0xc500_0021;

/// SMCCC return codes (DEN0028 §7.1), as the 64-bit values the calls return in X0.
const SUCCESS: u64 = 0;
const NOT_SUPPORTED: u64 = -1i64 as u64;

/// The guest-physical window of the stolen-time records (the same as QEMU virt's).
pub const REGION: IpaRange = IpaRange {
    start: Ipa::new(0x090a_0000),
    size: 0x1_0000,
};
/// Bytes between records: a record is 16 bytes (DEN0057A table 3-1), KVM requires its IPA to
/// be 64-byte aligned; one record per 64 bytes keeps two vCPUs' records off one cache line.
pub const RECORD_STRIDE: u64 = 64;
/// Bytes of [`REGION`] mapped into the VM: one page, 64 records.
pub const MAPPED_SIZE: u64 = PAGE_SIZE;
/// Offset of `stolen_time` in a record: the runtime stores it there with one aligned 64-bit
/// store, so the guest's single 64-bit load never sees half an update.
pub const STOLEN_TIME_OFFSET: u64 = 8;
/// Bytes of a record the guest reads (revision, attributes, stolen time).
pub const RECORD_SIZE: usize = 16;

// The mapped page lies in the region and holds a record for every vCPU a VM may have.
const _: () = assert!(
    MAPPED_SIZE <= REGION.size
        && RECORD_STRIDE * crate::guest::config::MAX_VCPUS as u64 <= MAPPED_SIZE
);

/// The IPA of vCPU `vcpu`'s record, if it has one (the first [`MAPPED_SIZE`] bytes hold 64).
pub fn record_ipa(vcpu: usize) -> Option<Ipa> {
    let offset = (vcpu as u64).checked_mul(RECORD_STRIDE)?;
    (offset < MAPPED_SIZE).then(|| REGION.start + offset)
}

/// Offset of vCPU `vcpu`'s record in the mapped page.
pub fn record_offset(vcpu: usize) -> Option<usize> {
    record_ipa(vcpu).map(|ipa| (ipa.as_u64() - REGION.start.as_u64()) as usize)
}

/// A stolen-time record as the guest reads it (DEN0057A table 3-1; little-endian):
/// revision (u32, 0 for version 1.0), attributes (u32, 0), stolen time (u64, nanoseconds the
/// vCPU was involuntarily not running).
pub fn record(stolen_ns: u64) -> [u8; RECORD_SIZE] {
    let mut r = [0u8; RECORD_SIZE];
    // [0..4] revision = 0, [4..8] attributes = 0.
    r[STOLEN_TIME_OFFSET as usize..].copy_from_slice(&stolen_ns.to_le_bytes());
    r
}

/// The VM's page of stolen-time records, as the runtime writes it.
pub trait RecordPage {
    /// Stores `value` little-endian at byte `offset` (8-aligned, inside the page) with one
    /// single-copy-atomic 64-bit store, ordered after every earlier store of this CPU.
    fn store_u64(&self, offset: usize, value: u64);
}

/// What each vCPU's record of one VM says. The run queue counts a vCPU's wait (steal) for the
/// time it is placed on its CPU; CPU_OFF takes it off that queue and CPU_ON places it anew
/// with a fresh count, so the waits of its earlier placements are kept here.
pub struct StolenTime {
    /// Per vCPU: run-queue wait of its earlier placements, in counter ticks.
    earlier: Vec<AtomicU64>,
    counter_freq: u64,
}

impl StolenTime {
    pub fn new(vcpus: usize, counter_freq: u64) -> Self {
        Self {
            earlier: (0..vcpus).map(|_| AtomicU64::new(0)).collect(),
            counter_freq,
        }
    }

    /// The stolen time (ns) of vCPU `vcpu`, which has waited `queued` ticks in its current
    /// placement.
    pub fn total_ns(&self, vcpu: usize, queued: u64) -> u64 {
        let earlier = self
            .earlier
            .get(vcpu)
            .map_or(0, |e| e.load(Ordering::Relaxed));
        ticks_to_ns(earlier.saturating_add(queued), self.counter_freq)
    }

    /// vCPU `vcpu` is about to run, having waited `queued` ticks in its current placement:
    /// its record gets its stolen time. Called only by the CPU the vCPU is placed on.
    pub fn publish(&self, page: &impl RecordPage, vcpu: usize, queued: u64) {
        if vcpu >= self.earlier.len() {
            return;
        }
        if let Some(o) = record_offset(vcpu) {
            page.store_u64(o + STOLEN_TIME_OFFSET as usize, self.total_ns(vcpu, queued));
        }
    }

    /// vCPU `vcpu` left its run queue (CPU_OFF) after waiting `queued` ticks in that
    /// placement: kept, so its record goes on from there when it runs again.
    pub fn left_queue(&self, vcpu: usize, queued: u64) {
        if let Some(e) = self.earlier.get(vcpu) {
            let _ = e.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_add(queued))
            });
        }
    }
}

/// Whether `fid` (the function ID with the SVE hint cleared) is a PV-time call.
pub fn owns(fid: u32) -> bool {
    matches!(fid, PV_TIME_FEATURES | PV_TIME_ST)
}

/// The answer to `SMCCC_ARCH_FEATURES(PV_TIME_FEATURES)` when PV time is offered.
pub const ARCH_FEATURES_ANSWER: i32 = 0;

/// Answers PV-time call `fid` with argument `x1` from vCPU `caller` of a VM of `vcpus` vCPUs:
/// the caller's x0..x3.
pub fn call(fid: u32, x1: u64, caller: usize, vcpus: usize) -> [u64; 4] {
    let x0 = match fid {
        // PV_call_id is a uint32 in W1.
        PV_TIME_FEATURES => match x1 as u32 {
            PV_TIME_FEATURES | PV_TIME_ST => SUCCESS,
            _ => NOT_SUPPORTED,
        },
        PV_TIME_ST => match record_ipa(caller) {
            Some(ipa) if caller < vcpus => ipa.as_u64(),
            _ => NOT_SUPPORTED,
        },
        _ => NOT_SUPPORTED,
    };
    [x0, 0, 0, 0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::config::MAX_VCPUS;
    use crate::guest::layout::guest_map;
    use crate::psci::{FunctionId, Owner, Psci, SmcccConfig};
    use smccc::arch::{SMCCC_ARCH_FEATURES, SMCCC_VERSION};
    use smccc::psci::{PSCI_FEATURES, PSCI_VERSION};

    fn overlaps(a: IpaRange, b: IpaRange) -> bool {
        a.start < b.end() && b.start < a.end()
    }

    #[test]
    fn function_ids_are_fast_64_bit_standard_hypervisor_calls() {
        for (fid, number) in [(PV_TIME_FEATURES, 0x20), (PV_TIME_ST, 0x21)] {
            let f = FunctionId(fid);
            assert!(f.is_fast() && f.is_64(), "{fid:#x}");
            assert_eq!((f.owner(), f.number()), (Owner::StandardHypervisor, number));
            assert!(owns(f.without_hints()));
        }
        // The SMC32 encodings are not PV-time calls (DEN0057A: 64-bit only).
        assert!(!owns(PV_TIME_ST & !(1 << 30)));
        assert!(!owns(0xc500_0022));
    }

    #[test]
    fn features_answers_success_for_the_two_calls_only() {
        let f = |x1: u64| call(PV_TIME_FEATURES, x1, 0, 1)[0];
        assert_eq!(f(u64::from(PV_TIME_ST)), 0);
        assert_eq!(f(u64::from(PV_TIME_FEATURES)), 0);
        assert_eq!(f(0xc500_0022), u64::MAX);
        assert_eq!(f(u64::from(PSCI_VERSION)), u64::MAX);
        // Only W1 counts.
        assert_eq!(f(0xdead_beef_0000_0000 | u64::from(PV_TIME_ST)), 0);
    }

    #[test]
    fn each_vcpu_gets_its_own_aligned_record_in_the_mapped_page() {
        let vcpus = MAX_VCPUS;
        let mut seen = Vec::new();
        for v in 0..vcpus {
            let [x0, x1, x2, x3] = call(PV_TIME_ST, 0, v, vcpus);
            assert_eq!([x1, x2, x3], [0, 0, 0]);
            assert_eq!(x0 % RECORD_STRIDE, 0);
            assert!(x0 >= REGION.start.as_u64());
            assert!(x0 + RECORD_SIZE as u64 <= REGION.start.as_u64() + MAPPED_SIZE);
            assert!(!seen.contains(&x0));
            seen.push(x0);
            assert_eq!(Some(Ipa::new(x0)), record_ipa(v));
            assert_eq!(
                record_offset(v),
                Some((x0 - REGION.start.as_u64()) as usize)
            );
        }
        // A caller beyond the VM's vCPUs (or beyond the page) gets NOT_SUPPORTED.
        assert_eq!(call(PV_TIME_ST, 0, 2, 2)[0], u64::MAX);
        assert_eq!(call(PV_TIME_ST, 0, 64, 100)[0], u64::MAX);
        assert_eq!(record_ipa(usize::MAX), None);
    }

    #[test]
    fn the_region_lies_among_the_emulated_devices_and_clashes_with_none() {
        let w = guest_map::EMULATED_DEVICE_WINDOW;
        assert!(REGION.start >= w.start && REGION.end() <= w.end());
        assert!(REGION.start.is_aligned(0x1_0000) && REGION.size == 0x1_0000);
        for other in [
            guest_map::GICD,
            guest_map::GICC,
            guest_map::gicv3_redistributors(MAX_VCPUS),
            guest_map::UART,
        ] {
            assert!(!overlaps(REGION, other), "{other:?}");
        }
        // QEMU virt's first virtio-mmio slot, where guests expect virtio devices.
        let virtio = IpaRange {
            start: Ipa::new(0x0a00_0000),
            size: 0x200,
        };
        assert!(!overlaps(REGION, virtio));
    }

    #[test]
    fn the_record_is_revision_0_attributes_0_and_little_endian_stolen_time() {
        let r = record(0x0102_0304_0506_0708);
        assert_eq!(r[..8], [0; 8]);
        assert_eq!(r[8..], [8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(
            u64::from_le_bytes(r[STOLEN_TIME_OFFSET as usize..].try_into().unwrap()),
            0x0102_0304_0506_0708
        );
    }

    /// Linux's probe (`has_pv_steal_clock`, `stolen_time_cpu_online`) against `Psci::call`:
    /// every step it checks passes, each vCPU maps its own record, and the record it then
    /// checks reads revision 0 and attributes 0.
    #[test]
    fn linux_finds_stolen_time_through_the_hooked_dispatch() {
        let mpidrs = [0, 1, 2];
        let p = Psci::new(
            &mpidrs,
            0,
            SmcccConfig {
                pv_time: true,
                ..SmcccConfig::default()
            },
        );
        let c = |caller: usize, x: [u64; 4]| p.call(caller, x, |_| true).caller_regs().unwrap();
        // SMCCC 1.1 conduit (drivers/firmware/psci: PSCI >= 1.0, PSCI_FEATURES(SMCCC_VERSION)).
        assert!(c(0, [u64::from(PSCI_VERSION), 0, 0, 0])[0] >= 0x1_0000);
        assert_eq!(
            c(
                0,
                [u64::from(PSCI_FEATURES), u64::from(SMCCC_VERSION), 0, 0]
            )[0],
            0
        );
        assert!(c(0, [u64::from(SMCCC_VERSION), 0, 0, 0])[0] >= 0x1_0001);
        // has_pv_steal_clock.
        let arch = [
            u64::from(SMCCC_ARCH_FEATURES),
            u64::from(PV_TIME_FEATURES),
            0,
            0,
        ];
        assert_eq!(c(0, arch)[0], 0);
        let feat = [u64::from(PV_TIME_FEATURES), u64::from(PV_TIME_ST), 0, 0];
        assert_eq!(c(0, feat)[0], 0);
        // stolen_time_cpu_online on each CPU.
        let page = {
            let mut page = alloc::vec![0u8; MAPPED_SIZE as usize];
            for v in 0..mpidrs.len() {
                let o = record_offset(v).unwrap();
                page[o..o + RECORD_SIZE].copy_from_slice(&record(1000 * v as u64));
            }
            page
        };
        for v in 0..mpidrs.len() {
            let ipa = c(v, [u64::from(PV_TIME_ST), 0, 0, 0])[0];
            assert_ne!(ipa, u64::MAX);
            let o = (ipa - REGION.start.as_u64()) as usize;
            let word = |at: usize| u32::from_le_bytes(page[o + at..o + at + 4].try_into().unwrap());
            assert_eq!((word(0), word(4)), (0, 0), "revision, attributes");
            let stolen = u64::from_le_bytes(page[o + 8..o + 16].try_into().unwrap());
            assert_eq!(stolen, 1000 * v as u64);
        }
        // A caller the VM does not have gets NOT_SUPPORTED.
        assert_eq!(c(3, [u64::from(PV_TIME_ST), 0, 0, 0])[0], u64::MAX);
        // Not offered: every step of the probe answers NOT_SUPPORTED.
        let off = Psci::new(&mpidrs, 0, SmcccConfig::default());
        for x in [arch, feat, [u64::from(PV_TIME_ST), 0, 0, 0]] {
            assert_eq!(off.call(0, x, |_| true).caller_regs().unwrap()[0], u64::MAX);
        }
        // The SMC32 encodings are not PV-time calls even when it is offered.
        let st32 = u64::from(PV_TIME_ST & !(1 << 30));
        assert_eq!(c(0, [st32, 0, 0, 0])[0], u64::MAX);
    }

    /// A record page in memory that logs every store (offset, value).
    struct FakePage {
        bytes: std::sync::Mutex<Vec<u8>>,
        stores: std::sync::Mutex<Vec<(usize, u64)>>,
    }

    impl FakePage {
        fn new() -> Self {
            Self {
                bytes: std::sync::Mutex::new(alloc::vec![0; MAPPED_SIZE as usize]),
                stores: std::sync::Mutex::new(Vec::new()),
            }
        }
        /// vCPU `v`'s record as the guest reads it: (revision, attributes, stolen time).
        fn read(&self, v: usize) -> (u32, u32, u64) {
            let b = self.bytes.lock().unwrap();
            let o = record_offset(v).unwrap();
            let w = |a: usize| u32::from_le_bytes(b[o + a..o + a + 4].try_into().unwrap());
            let t = u64::from_le_bytes(b[o + 8..o + 16].try_into().unwrap());
            (w(0), w(4), t)
        }
    }

    impl RecordPage for FakePage {
        fn store_u64(&self, offset: usize, value: u64) {
            assert_eq!(offset % 8, 0, "unaligned store at {offset}");
            let mut b = self.bytes.lock().unwrap();
            b[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
            self.stores.lock().unwrap().push((offset, value));
        }
    }

    #[test]
    fn publish_stores_only_the_callers_stolen_time_in_one_aligned_store() {
        let page = FakePage::new();
        let st = StolenTime::new(3, 1_000_000);
        st.publish(&page, 1, 2_500);
        assert_eq!(
            *page.stores.lock().unwrap(),
            [(record_offset(1).unwrap() + 8, 2_500_000)]
        );
        assert_eq!(page.read(1), (0, 0, 2_500_000));
        assert_eq!(page.read(0), (0, 0, 0));
        assert_eq!(page.read(2), (0, 0, 0));
        // A vCPU the VM does not have gets nothing written.
        st.publish(&page, 3, 7);
        st.publish(&page, usize::MAX, 7);
        assert_eq!(page.stores.lock().unwrap().len(), 1);
    }

    #[test]
    fn stolen_time_survives_cpu_off_and_on() {
        let page = FakePage::new();
        let st = StolenTime::new(2, 1_000_000_000);
        st.publish(&page, 0, 300);
        // CPU_OFF after 500 ticks of wait in this placement; CPU_ON places it with a fresh
        // count, which starts at 0 again: the record must not go back.
        st.left_queue(0, 500);
        st.publish(&page, 0, 0);
        assert_eq!(page.read(0).2, 500);
        st.publish(&page, 0, 40);
        assert_eq!(page.read(0).2, 540);
        st.left_queue(0, 40);
        st.left_queue(0, u64::MAX);
        st.publish(&page, 0, 1);
        assert_eq!(page.read(0).2, u64::MAX, "saturates, never wraps");
        // The other vCPU's record is untouched.
        assert_eq!(page.read(1), (0, 0, 0));
        st.left_queue(9, 5);
    }

    /// Random runs of placements (waits that grow while placed, CPU_OFF/CPU_ON) for 4 vCPUs
    /// against a model that sums every wait: each record equals the model after each
    /// publish, and never goes back.
    #[test]
    fn records_follow_a_model_of_waits_and_never_go_back() {
        let freq = 62_500_000;
        for seed in 1..=50u64 {
            let mut x = seed;
            let mut rnd = |n: u64| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x % n
            };
            let page = FakePage::new();
            let st = StolenTime::new(4, freq);
            let mut earlier = [0u64; 4];
            let mut placed = [0u64; 4];
            let mut last = [0u64; 4];
            for _ in 0..400 {
                let v = rnd(4) as usize;
                match rnd(3) {
                    0 => {
                        st.left_queue(v, placed[v]);
                        earlier[v] += placed[v];
                        placed[v] = 0;
                    }
                    _ => {
                        placed[v] += rnd(1_000_000);
                        st.publish(&page, v, placed[v]);
                        let got = page.read(v).2;
                        assert_eq!(
                            got,
                            ticks_to_ns(earlier[v] + placed[v], freq),
                            "seed {seed}"
                        );
                        assert!(got >= last[v], "seed {seed}: vCPU {v} went back");
                        last[v] = got;
                    }
                }
            }
        }
    }
}
