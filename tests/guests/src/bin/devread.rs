//! Reads a passed-through device: the 32-bit word at each IPA of `devread.ipa=A[,B...]`,
//! `devread.n=N` times (default 3) with `devread.gap_ms=M` milliseconds between rounds
//! (default 2), then tries each IPA of `devread.denied=A[,B...]` (addresses the VM was not
//! given), which must fault. Then PSCI SYSTEM_OFF.
//!
//! Output:
//! ```text
//! DEVREAD: <ipa> round <i> = <value>            (or `... fault esr=<esr>`)
//! DEVREAD: denied <ipa> fault esr=<esr>          (or `denied <ipa> READ <value>`: a failure)
//! DEVREAD: done
//! ```
#![no_std]
#![no_main]

use kestrel_test_guests::exception::{Width, probe_read};
use kestrel_test_guests::{dt, println, system_off, timer};

#[unsafe(no_mangle)]
fn guest_main(dtb: usize) -> ! {
    let (ipas, n) = dt::bootarg_list(dtb, "devread.ipa");
    let rounds = dt::bootarg_u64(dtb, "devread.n", 3);
    let gap_ms = dt::bootarg_u64(dtb, "devread.gap_ms", 2);
    for round in 0..rounds {
        if round > 0 {
            timer::delay_ms(gap_ms);
        }
        for &ipa in &ipas[..n] {
            let o = probe_read(ipa, Width::B32);
            match o.exc {
                None => println!("DEVREAD: {ipa:#x} round {round} = {:#010x}", o.value),
                Some(e) => println!("DEVREAD: {ipa:#x} round {round} fault esr={:#x}", e.esr),
            }
        }
    }
    let (denied, m) = dt::bootarg_list(dtb, "devread.denied");
    for &ipa in &denied[..m] {
        let o = probe_read(ipa, Width::B32);
        match o.exc {
            Some(e) => println!("DEVREAD: denied {ipa:#x} fault esr={:#x}", e.esr),
            None => println!("DEVREAD: denied {ipa:#x} READ {:#010x}", o.value),
        }
    }
    println!("DEVREAD: done");
    system_off()
}
