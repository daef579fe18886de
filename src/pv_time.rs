//! Paravirtualized time for Arm (Arm DEN0057A): the stolen-time part, so a guest knows how
//! long its vCPUs waited for a physical CPU (Linux shows it as `steal` in `/proc/stat` and
//! takes it out of its tasks' run time).
//!
//! This module owns the guest-visible parts: the two SMCCC calls and their answers, the
//! layout of the per-vCPU stolen-time record and where the records live in the guest's
//! address space. It holds no state and writes no memory: the runtime maps the records' page
//! into the VM and stores each vCPU's stolen time there before the vCPU runs
//! (docs/scheduling.md); [`crate::psci`] routes the calls here.
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

    /// The SMCCC dispatch with PV time hooked in, exactly as `psci::Psci::call` is to do it
    /// (docs/scheduling.md): PV-time IDs go to [`call`], ARCH_FEATURES(PV_TIME_FEATURES)
    /// answers [`ARCH_FEATURES_ANSWER`], everything else is PSCI's.
    fn hooked(p: &Psci, caller: usize, vcpus: usize, x: [u64; 4]) -> [u64; 4] {
        let fid = FunctionId::from_x0(x[0]).without_hints();
        if owns(fid) {
            return call(fid, x[1], caller, vcpus);
        }
        if fid == SMCCC_ARCH_FEATURES && x[1] as u32 == PV_TIME_FEATURES {
            return [i64::from(ARCH_FEATURES_ANSWER) as u64, 0, 0, 0];
        }
        p.call(caller, x, |_| true).caller_regs().unwrap()
    }

    /// Linux's probe (`has_pv_steal_clock`, `stolen_time_cpu_online`) against our answers:
    /// every step it checks passes, each vCPU maps its own record, and the record it then
    /// checks reads revision 0 and attributes 0.
    #[test]
    fn linux_finds_stolen_time_through_the_hooked_dispatch() {
        let mpidrs = [0, 1, 2];
        let p = Psci::new(&mpidrs, 0, SmcccConfig::default());
        let c = |caller: usize, x: [u64; 4]| hooked(&p, caller, mpidrs.len(), x);
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
        // Without the hook, PSCI answers the same probe NOT_SUPPORTED (what phase 1 leaves).
        assert_eq!(
            p.call(0, arch, |_| true).caller_regs().unwrap()[0],
            u64::MAX
        );
    }
}
