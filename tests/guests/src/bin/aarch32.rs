//! A 32-bit program at EL0 (an arm64 Linux may run armhf binaries): what the hypervisor does
//! when such code traps to it. Each case ERETs to a few hand-encoded A32 or T32 instructions in
//! AArch32 User mode ([`el0::run`]) and prints how the run ended.
//!
//! - `abort`: a load from an IPA with nothing behind it must come back as a data abort taken
//!   to EL1 through the "lower EL, AArch32" vector (VBAR_EL1 + 0x600), with ESR_EL1.EC = 0x24,
//!   FAR_EL1 = the address, ELR_EL1 = the load, SPSR_EL1 = the User-mode PSTATE (T set for
//!   Thumb) (Arm ARM D1.x, `AArch64.TakeException`).
//! - `mmio`: a load of the PL011's UARTPeriphID0 (0x11) is emulated and the program continues
//!   at the next instruction, which is 2 bytes on for a 16-bit Thumb load (ESR_EL2.IL = 0):
//!   `svc #0` must follow with r0 = 0x11 (a hypervisor that steps 4 bytes lands on `svc #1`).
//! - `it`: the same Thumb load as the first instruction of an `ITE EQ` block: after it, the IT
//!   state must have advanced, so the `movs r2, #5` that follows runs under NE (not executed,
//!   Z is set) and the `svc #0` after the block is unconditional.
//!
//! Output (one line per case, then `AARCH32: done`; `AARCH32: skipped (...)` when the CPU has no
//! AArch32 at EL0):
//! ```text
//! AARCH32: <case> <a32|t32>: vector <off> ec <ec> esr <esr> far <far> elr <+off> spsr <spsr> r0 <r0> r2 <r2> imm <imm>
//! ```
#![no_std]
#![no_main]

use core::arch::{asm, global_asm};

use kestrel_test_guests::el0::{self, SPSR_A32_USER, SPSR_T32_USER};
use kestrel_test_guests::{println, system_off, uart_base};

global_asm!(
    r#"
    .section .text
    .balign 4
    .global aarch32_a32_load
aarch32_a32_load:
    .word   0xe5910000          /* ldr r0, [r1] */
    .word   0xef000000          /* svc #0 */
    .word   0xef000001          /* svc #1 */
    .global aarch32_t32_load
aarch32_t32_load:
    .hword  0x6808              /* ldr r0, [r1] (16-bit) */
    .hword  0xdf00              /* svc #0 */
    .hword  0xdf01              /* svc #1 */
    .hword  0xdf01              /* svc #1 */
    .global aarch32_t32_it
aarch32_t32_it:
    .hword  0x4280              /* cmp r0, r0: Z = 1 */
    .hword  0xbf0c              /* ite eq */
    .hword  0x6808              /* ldreq r0, [r1] */
    .hword  0x2205              /* movne r2, #5 */
    .hword  0xdf00              /* svc #0 */
    .hword  0xdf01              /* svc #1 */
"#
);

unsafe extern "C" {
    fn aarch32_a32_load();
    fn aarch32_t32_load();
    fn aarch32_t32_it();
}

/// An IPA with no memory and no device behind it in the guest map.
const NOTHING: u64 = 0x0c00_0000;
/// PL011 UARTPeriphID0 (PL011 TRM 3.3.14): reads 0x11.
const PERIPH_ID0: u64 = 0xfe0;

fn case(name: &str, isa: &str, entry: u64, spsr: u64, r1: u64) {
    let mut x = [0u64; 15];
    x[1] = r1;
    // SAFETY: the entry is one of the snippets above, each ending in an SVC.
    let e = unsafe { el0::run(entry, spsr, x) };
    println!(
        "AARCH32: {name} {isa}: vector {:#x} ec {:#x} esr {:#x} far {:#x} elr +{:#x} spsr {:#x} r0 {:#x} r2 {:#x} imm {}",
        e.vector,
        e.ec(),
        e.esr,
        e.far,
        e.elr.wrapping_sub(entry),
        e.spsr,
        e.x[0],
        e.x[2],
        e.esr & 0xffff
    );
}

#[unsafe(no_mangle)]
fn guest_main(_dtb: usize) -> ! {
    let pfr0: u64;
    // SAFETY: reading an ID register has no side effects.
    unsafe { asm!("mrs {}, id_aa64pfr0_el1", out(reg) pfr0, options(nomem, nostack)) };
    if pfr0 & 0xf != 2 {
        println!(
            "AARCH32: skipped (ID_AA64PFR0_EL1.EL0 = {}: no AArch32 at EL0)",
            pfr0 & 0xf
        );
        system_off()
    }
    let a32 = aarch32_a32_load as *const () as u64;
    let t32 = aarch32_t32_load as *const () as u64;
    let it = aarch32_t32_it as *const () as u64;
    let id = uart_base() + PERIPH_ID0;
    case("abort", "a32", a32, SPSR_A32_USER, NOTHING);
    case("abort", "t32", t32, SPSR_T32_USER, NOTHING);
    case("mmio", "a32", a32, SPSR_A32_USER, id);
    case("mmio", "t32", t32, SPSR_T32_USER, id);
    case("it", "t32", it, SPSR_T32_USER, id);
    println!("AARCH32: done");
    system_off()
}
