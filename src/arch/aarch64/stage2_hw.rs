//! The stage-2 logic's two hardware traits at EL2: table pages reached through the identity
//! map, and TLB maintenance with real TLBI / DSB / ISB instructions. Also the `AT S1E1R` that
//! finds the IPA of a stage-2 permission fault, and guest-memory helpers.
use crate::addr::{Ipa, PhysAddr};
use crate::mm::stage2::{Stage2Tlb, TableMemory, TablePage, Vmid};
use aarch64_cpu::registers::{PAR_EL1, Readable, VTTBR_EL2, Writeable};
use core::arch::{asm, global_asm};

// `kestrel_at_s1e1r(va) -> PAR_EL1`: translates a guest virtual address with the guest's live
// EL1&0 stage-1 regime and its stage 2. Faults of the translation land in PAR_EL1 (F = 1), but
// an `AT` may also take a synchronous exception at EL2 itself (an External abort on the
// stage-1 walk, KVM's `__kvm_at`). The hypervisor's exception handler resumes such an
// exception of the instruction at `kestrel_at_s1e1r_insn` at `kestrel_at_s1e1r_fixup`
// ([`at_fixup`]), which returns F = 1. The registers are restored from the exception frame;
// ELR_EL2/SPSR_EL2/ESR_EL2/FAR_EL2 are clobbered, which the exit path allows for (it reads
// the guest's fault registers before and returns to the guest from its own frame).
global_asm!(
    ".section .text.kestrel_at_s1e1r, \"ax\"",
    ".global kestrel_at_s1e1r",
    ".global kestrel_at_s1e1r_insn",
    ".global kestrel_at_s1e1r_fixup",
    "kestrel_at_s1e1r:",
    "kestrel_at_s1e1r_insn:",
    "    at s1e1r, x0",
    "    isb",
    "    mrs x0, par_el1",
    "    ret",
    "kestrel_at_s1e1r_fixup:",
    "    mov x0, #1",
    "    ret",
);

// SAFETY: defined by the global_asm! above with this signature; the labels are code
// addresses that are only compared, never read.
unsafe extern "C" {
    fn kestrel_at_s1e1r(va: u64) -> u64;
    safe static kestrel_at_s1e1r_insn: u8;
    safe static kestrel_at_s1e1r_fixup: u8;
}

/// PAR_EL1 after `AT S1E1R` of the guest virtual address `va` (F = 1 when the translation
/// failed or the `AT` took an exception). The guest's own PAR_EL1 is left as it was. Call only
/// on the exit path, with the vCPU's EL1 state and VTTBR_EL2 live.
pub fn translate_guest_va(va: u64) -> u64 {
    let saved = PAR_EL1.get();
    // SAFETY: an address translation only reads translation tables and writes PAR_EL1,
    // restored below; if it takes an exception, the handler resumes at the fixup
    // (`at_fixup`), which returns like the routine does.
    let par = unsafe { kestrel_at_s1e1r(va) };
    PAR_EL1.set(saved);
    par
}

/// Where a synchronous exception taken at EL2 by the instruction at `pc` resumes, when that
/// instruction is the `AT` of [`translate_guest_va`].
pub fn at_fixup(pc: u64) -> Option<u64> {
    let insn = core::ptr::addr_of!(kestrel_at_s1e1r_insn) as u64;
    (pc == insn).then_some(core::ptr::addr_of!(kestrel_at_s1e1r_fixup) as u64)
}

/// Stage-2 table pages, reached through the EL2 identity map of RAM.
#[derive(Clone, Copy, Default)]
pub struct HypTableMemory;

impl TableMemory for HypTableMemory {
    /// # Safety
    ///
    /// The trait's contract: `pa` is a page-aligned stage-2 table page from the page allocator
    /// that the caller owns.
    unsafe fn table(&self, pa: PhysAddr) -> &TablePage {
        // SAFETY: by the contract `pa` is a page the caller got from the page allocator (a PGD
        // or memory-cache page): page-aligned RAM that EL2 identity-maps read-write and that
        // nothing else uses while the table owns it. A page of AtomicU64 has no invalid bit
        // patterns and every access to it is atomic.
        unsafe { &*(pa.as_u64() as *const TablePage) }
    }
}

/// TLB maintenance. TLBIs by VMID act on the VMID in VTTBR_EL2, so when another VMID is loaded
/// (a teardown finishing on a CPU that ran another VM) the VMID is swapped in around the TLBI,
/// as Linux's `__tlb_switch_to_guest` does.
#[derive(Clone, Copy, Default)]
pub struct HwTlb;

impl HwTlb {
    fn with_vmid(&self, vmid: Vmid, f: impl FnOnce()) {
        let cur = VTTBR_EL2.get();
        let want = (cur & !(0xffff << 48)) | ((vmid.as_u16() as u64) << 48);
        if cur == want {
            f();
        } else {
            VTTBR_EL2.set(want);
            aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
            f();
            aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::ISH);
            VTTBR_EL2.set(cur);
            aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
        }
    }
}

impl Stage2Tlb for HwTlb {
    fn dsb_ishst(&self) {
        aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::ISHST);
    }
    fn dsb_ish(&self) {
        aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::ISH);
    }
    fn isb(&self) {
        aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
    }
    fn tlbi_ipas2e1is(&self, vmid: Vmid, ipa: Ipa, _level_hint: Option<u8>) {
        // Operand: IPA[51:12] in bits [39:0]; no TTL hint (FEAT_TTL is not assumed).
        let op = (ipa.as_u64() >> 12) & ((1 << 40) - 1);
        // SAFETY: TLB invalidation has no effect on memory contents.
        self.with_vmid(vmid, || unsafe {
            asm!("tlbi ipas2e1is, {}", in(reg) op, options(nostack))
        });
    }
    fn tlbi_vmalle1is(&self, vmid: Vmid) {
        // SAFETY: as above.
        self.with_vmid(vmid, || unsafe { asm!("tlbi vmalle1is", options(nostack)) });
    }
    fn tlbi_vmalls12e1is(&self, vmid: Vmid) {
        // SAFETY: as above.
        self.with_vmid(vmid, || unsafe {
            asm!("tlbi vmalls12e1is", options(nostack))
        });
    }
    fn dsb_nsh(&self) {
        aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::NSH);
    }
    fn tlbi_ipas2e1(&self, vmid: Vmid, ipa: Ipa, _level_hint: Option<u8>) {
        let op = (ipa.as_u64() >> 12) & ((1 << 40) - 1);
        // SAFETY: TLB invalidation has no effect on memory contents.
        self.with_vmid(vmid, || unsafe {
            asm!("tlbi ipas2e1, {}", in(reg) op, options(nostack))
        });
    }
    fn tlbi_vmalle1(&self, vmid: Vmid) {
        // SAFETY: as above.
        self.with_vmid(vmid, || unsafe { asm!("tlbi vmalle1", options(nostack)) });
    }
    fn icache_inval_pou(&self, pa: PhysAddr, size: u64) {
        // Guest RAM is identity-mapped at EL2, so its PA is the VA `IC IVAU` takes.
        super::cache::invalidate_icache_range(pa.as_u64(), size);
    }
}

/// Zeroes `[pa, pa + len)` of RAM (guest memory scrubbing) with DC ZVA where the block size
/// allows, plain stores otherwise.
///
/// # Safety
///
/// `[pa, pa + len)` must be RAM that EL2 identity-maps as normal memory and that the caller
/// owns: guest RAM no vCPU can reach yet (not mapped at stage 2) or any more (its VM's
/// stage 2 destroyed), or a block from the page allocator; never the hypervisor's image,
/// stacks or heap, nor memory any Rust reference points into.
pub unsafe fn zero_phys(pa: PhysAddr, len: u64) {
    let dczid: u64;
    // SAFETY: reading DCZID_EL0 has no side effect.
    unsafe { asm!("mrs {}, dczid_el0", out(reg) dczid, options(nomem, nostack)) };
    let block = 4u64 << (dczid & 0xf);
    let (mut a, end) = (pa.as_u64(), pa.as_u64() + len);
    if dczid & (1 << 4) == 0 && a.is_multiple_of(block * 8) && len.is_multiple_of(block * 8) {
        while a < end {
            // SAFETY: `a` .. `a + 8 * block` lies in `[pa, pa + len)`, RAM the caller owns by
            // the contract (identity-mapped, normal memory); eight zeroing operations per
            // iteration keep the loop overhead small.
            unsafe {
                asm!(
                    "dc zva, {a}", "add {t}, {a}, {b}", "dc zva, {t}", "add {t}, {t}, {b}",
                    "dc zva, {t}", "add {t}, {t}, {b}", "dc zva, {t}", "add {t}, {t}, {b}",
                    "dc zva, {t}", "add {t}, {t}, {b}", "dc zva, {t}", "add {t}, {t}, {b}",
                    "dc zva, {t}", "add {t}, {t}, {b}", "dc zva, {t}",
                    a = in(reg) a, b = in(reg) block, t = out(reg) _, options(nostack)
                )
            };
            a += block * 8;
        }
    } else {
        // SAFETY: as above.
        unsafe { core::ptr::write_bytes(a as *mut u8, 0, len as usize) };
    }
}

// SAFETY: these symbols are defined in boot/*.S (or the linker script) with exactly these
// signatures; each call site states why its use is sound.
unsafe extern "C" {
    fn kestrel_copy_bulk(dst: *mut u8, src: *const u8, len: usize);
}

/// Copies `bytes` into RAM at `pa`: the 64-byte multiple with the bulk copier, the rest with
/// the ordinary one.
///
/// # Safety
///
/// `[pa, pa + bytes.len())` must be RAM that EL2 identity-maps as normal memory and that the
/// caller owns (guest RAM of a VM that is being built, which no vCPU runs yet), and must not
/// overlap `bytes`.
pub unsafe fn copy_to_phys(pa: PhysAddr, bytes: &[u8]) {
    let bulk = bytes.len() & !63;
    let dst = pa.as_u64() as *mut u8;
    // SAFETY: by the contract the caller owns `[pa, pa + len)`, identity-mapped normal memory
    // that does not overlap `bytes` (the ramdisk, the heap). The bulk copier reads
    // and writes exactly `bulk` bytes, a multiple of 64; unaligned 16-byte accesses are fine on
    // normal memory.
    unsafe {
        kestrel_copy_bulk(dst, bytes.as_ptr(), bulk);
        core::ptr::copy_nonoverlapping(bytes.as_ptr().add(bulk), dst.add(bulk), bytes.len() - bulk);
    }
}

/// Makes freshly written guest memory visible to a guest that starts with its MMU and caches
/// off: clean the range to the point of coherency, and invalidate the instruction cache.
pub fn sync_guest_memory(pa: PhysAddr, len: u64) {
    super::cache::clean_dcache_range(pa.as_u64(), len);
    // SAFETY: instruction-cache invalidation has no effect on memory.
    unsafe { asm!("ic ialluis", "dsb ish", "isb", options(nostack)) };
}
