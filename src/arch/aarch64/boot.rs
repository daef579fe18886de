//! The boot stub (`boot/entry.S`) and exception vectors (`boot/vectors.S`), with the constants
//! they share with Rust.
use core::arch::global_asm;

/// Most physical CPUs the hypervisor runs on (one stack each).
pub const MAX_CPUS: usize = 16;
/// Per-CPU stack, guest register frame included.
pub const STACK_SIZE: usize = 64 * 1024;
/// The guest register frame at the top of each stack: x0-x30, pc, pstate (see vectors.S).
pub const FRAME_SIZE: usize = 272;

global_asm!(
    include_str!("../../../boot/entry.S"),
    STACK_SIZE = const STACK_SIZE,
    FRAME_SIZE = const FRAME_SIZE,
    MAX_CPUS = const MAX_CPUS,
);
global_asm!(include_str!("../../../boot/vectors.S"), FRAME_SIZE = const FRAME_SIZE);

#[repr(C, align(4096))]
struct Stacks([u8; STACK_SIZE * MAX_CPUS]);

/// The per-CPU stacks. Only the boot stub refers to them, through `__stacks_start`.
#[used]
#[unsafe(link_section = ".bss.stacks")]
static mut STACKS: Stacks = Stacks([0; STACK_SIZE * MAX_CPUS]);

/// What a secondary CPU loads before it switches its MMU on (entry.S reads it with the MMU
/// off): MAIR_EL2, TCR_EL2, TTBR0_EL2, SCTLR_EL2, HCR_EL2.
#[unsafe(no_mangle)]
static mut kestrel_secondary_boot: [u64; 5] = [0; 5];

// SAFETY: these symbols are defined in boot/*.S (or the linker script) with exactly these
// signatures; each call site states why its use is sound.
unsafe extern "C" {
    static __image_start: u8;
    static __text_end: u8;
    static __rodata_end: u8;
    static __image_end: u8;
    static __stacks_start: u8;
    static __stacks_end: u8;
    fn kestrel_secondary_entry();
    fn kestrel_secondary_spin_entry();
    static kestrel_spin_handoff: u8;
}

/// Physical layout of the loaded image (identity mapped, so these are also its addresses).
#[derive(Clone, Copy, Debug)]
pub struct ImageLayout {
    pub start: u64,
    pub text_end: u64,
    pub rodata_end: u64,
    pub end: u64,
    pub stacks_start: u64,
    pub stacks_end: u64,
}

pub fn image_layout() -> ImageLayout {
    ImageLayout {
        start: core::ptr::addr_of!(__image_start) as u64,
        text_end: core::ptr::addr_of!(__text_end) as u64,
        rodata_end: core::ptr::addr_of!(__rodata_end) as u64,
        end: core::ptr::addr_of!(__image_end) as u64,
        stacks_start: core::ptr::addr_of!(__stacks_start) as u64,
        stacks_end: core::ptr::addr_of!(__stacks_end) as u64,
    }
}

/// The top of physical CPU `index`'s stack (its guest frame sits just below).
pub fn stack_top(index: usize) -> u64 {
    core::ptr::addr_of!(__stacks_start) as u64 + ((index as u64 + 1) * STACK_SIZE as u64)
}

/// Physical address at which a secondary CPU starts (PSCI CPU_ON entry, spin-table release).
pub fn secondary_entry_pa() -> u64 {
    kestrel_secondary_entry as *const () as u64
}

/// Entry of a CPU released from a spin table (it finds its index in the handoff table).
pub fn spin_entry_pa() -> u64 {
    kestrel_secondary_spin_entry as *const () as u64
}

/// The spin-table handoff table (MAX_CPUS slots of affinity, context).
pub fn spin_handoff_pa() -> u64 {
    core::ptr::addr_of!(kestrel_spin_handoff) as u64
}

/// A 64-bit store to physical memory the caller owns or was told to write (a spin-table
/// release word or a handoff slot), in one access.
pub fn write_phys_u64(pa: u64, value: u64) {
    // SAFETY: callers pass 8-byte aligned addresses validated against the platform's RAM and
    // reserved ranges (spin_table::plan), identity-mapped by the EL2 map.
    unsafe { core::ptr::write_volatile(pa as *mut u64, value) }
}

/// Publishes the EL2 MMU configuration for secondary CPUs and cleans it to the point of
/// coherency, where their MMU-off loads find it.
pub fn publish_secondary_boot(mair: u64, tcr: u64, ttbr0: u64, sctlr: u64, hcr: u64) {
    let p = core::ptr::addr_of_mut!(kestrel_secondary_boot);
    // SAFETY: written once by the primary before any secondary CPU is started; secondaries only
    // read it, after the clean below.
    unsafe { p.write_volatile([mair, tcr, ttbr0, sctlr, hcr]) };
    crate::arch::aarch64::cache::clean_dcache_range(p as u64, 40);
}
