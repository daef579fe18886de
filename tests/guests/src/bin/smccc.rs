//! Asks about the CPU-vulnerability workarounds through the SMCCC (Arm DEN 0028 §7.5-7.7):
//! SMCCC_VERSION, then SMCCC_ARCH_FEATURES for SMCCC_ARCH_WORKAROUND_1, _2 and _3, then calls
//! each (WORKAROUND_2 with x1 = 1, "enable"), over HVC.
//!
//! Output:
//! ```text
//! SMCCC: version <hex> features wa1 <r> wa2 <r> wa3 <r> calls wa1 <r> wa2 <r> wa3 <r>
//! ```
//! (`<r>` signed decimal: 0 required and implemented, 1 not required on this PE, -1
//! NOT_SUPPORTED, -2 NOT_REQUIRED.)
#![no_std]
#![no_main]

use kestrel_test_guests::psci::{self, Conduit};
use kestrel_test_guests::{println, system_off};

const WA1: u64 = 0x8000_8000;
const WA2: u64 = 0x8000_7fff;
const WA3: u64 = 0x8000_3fff;

fn hvc(f: u64, a1: u64) -> i64 {
    psci::call(Conduit::Hvc, f, a1, 0, 0)[0] as i32 as i64
}

#[unsafe(no_mangle)]
fn guest_main(_dtb: usize) -> ! {
    let version = psci::call(Conduit::Hvc, psci::SMCCC_VERSION, 0, 0, 0)[0];
    let feat = |w: u64| hvc(psci::SMCCC_ARCH_FEATURES, w);
    let (f1, f2, f3) = (feat(WA1), feat(WA2), feat(WA3));
    let (c1, c2, c3) = (hvc(WA1, 0), hvc(WA2, 1), hvc(WA3, 0));
    println!(
        "SMCCC: version {version:#x} features wa1 {f1} wa2 {f2} wa3 {f3} calls wa1 {c1} wa2 {c2} wa3 {c3}"
    );
    system_off()
}
