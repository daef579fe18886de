//! Prints what the guest reads from the AArch64 ID registers (the hypervisor traps these reads,
//! HCR_EL2.TID3, and answers with sanitised values) and the feature fields a test checks.
//!
//! Output:
//! ```text
//! IDREGS: pfr0 <hex> pfr1 <hex> dfr0 <hex> isar0 <hex> isar1 <hex> isar2 <hex> mmfr0 <hex> mmfr1 <hex> mmfr2 <hex> mmfr3 <hex> zfr0 <hex> smfr0 <hex>
//! IDREGS: el2 <n> sve <n> ras <n> amu <n> mte <n> sme <n> nmi <n> gcs <n> lo <n> mops <n> pmu <n> parange <n>
//! IDREGS: ras-regs erridr <ok|undef> errselr <ok|undef>
//! IDREGS: done
//! ```
#![no_std]
#![no_main]

use kestrel_test_guests::{println, probe_insn, system_off};

macro_rules! id {
    ($enc:literal) => {{
        let o = probe_insn!(read concat!("mrs {v}, ", $enc));
        if let Some(e) = o.exc {
            println!("IDREGS: {} faulted: {e}", $enc);
        }
        o.value
    }};
}

fn f(v: u64, shift: u32) -> u64 {
    (v >> shift) & 0xf
}

#[unsafe(no_mangle)]
fn guest_main(_dtb: usize) -> ! {
    let pfr0 = id!("s3_0_c0_c4_0");
    let pfr1 = id!("s3_0_c0_c4_1");
    let zfr0 = id!("s3_0_c0_c4_4");
    let smfr0 = id!("s3_0_c0_c4_5");
    let dfr0 = id!("s3_0_c0_c5_0");
    let isar0 = id!("s3_0_c0_c6_0");
    let isar1 = id!("s3_0_c0_c6_1");
    let isar2 = id!("s3_0_c0_c6_2");
    let mmfr0 = id!("s3_0_c0_c7_0");
    let mmfr1 = id!("s3_0_c0_c7_1");
    let mmfr2 = id!("s3_0_c0_c7_2");
    let mmfr3 = id!("s3_0_c0_c7_3");
    println!(
        "IDREGS: pfr0 {pfr0:#x} pfr1 {pfr1:#x} dfr0 {dfr0:#x} isar0 {isar0:#x} isar1 {isar1:#x} isar2 {isar2:#x} mmfr0 {mmfr0:#x} mmfr1 {mmfr1:#x} mmfr2 {mmfr2:#x} mmfr3 {mmfr3:#x} zfr0 {zfr0:#x} smfr0 {smfr0:#x}"
    );
    println!(
        "IDREGS: el2 {} sve {} ras {} amu {} mte {} sme {} nmi {} gcs {} lo {} mops {} pmu {} parange {}",
        f(pfr0, 8),
        f(pfr0, 32),
        f(pfr0, 28),
        f(pfr0, 44),
        f(pfr1, 8),
        f(pfr1, 24),
        f(pfr1, 36),
        f(pfr1, 44),
        f(mmfr1, 16),
        f(isar2, 16),
        f(dfr0, 8),
        f(mmfr0, 0)
    );
    // The RAS error-record registers (FEAT_RAS, hidden above): without HCR_EL2.TERR a guest
    // would select and rewrite the host's error records (ERRSELR_EL1, ERXCTLR_EL1).
    let erridr = probe_insn!(read "mrs {v}, s3_0_c5_c3_0");
    let errselr = probe_insn!(write "msr s3_0_c5_c3_1, {a}", 0);
    let word = |e: bool| if e { "undef" } else { "ok" };
    println!(
        "IDREGS: ras-regs erridr {} errselr {}",
        word(erridr.exc.is_some()),
        word(errselr.exc.is_some())
    );
    println!("IDREGS: done");
    system_off()
}
