//! Touches guest RAM across 4 KiB, 2 MiB and 1 GiB boundaries (so that stage-2 faults map
//! pages, blocks and, where alignment allows, 1 GiB blocks), writes a pattern that depends on
//! the address, reads every value back and reports, then powers off.
#![no_std]
#![no_main]

use kestrel_test_guests::{image_end, memory, println, system_off};

fn pattern(a: u64) -> u64 {
    a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5a5a_5a5a_0000_0000
}

#[unsafe(no_mangle)]
fn guest_main(dtb: usize) -> ! {
    let [(base, size), ..] = memory(dtb);
    println!("MEMTEST: ram {base:#x} size {size:#x}");
    let start = (image_end() + 0xfff) & !0xfff;
    let end = base + size;
    let mut addrs = [0u64; 64];
    let mut n = 0;
    for step in [1u64 << 12, 2 << 20, 1 << 30] {
        // the last word before and the first word after each boundary in range
        let mut b = (start + step) & !(step - 1);
        let mut taken = 0;
        while b + 8 <= end && taken < 6 && n + 2 <= addrs.len() {
            if b - 8 >= start {
                addrs[n] = b - 8;
                n += 1;
            }
            addrs[n] = b;
            n += 1;
            taken += 1;
            b += step * 3;
        }
    }
    addrs[n] = end - 8;
    n += 1;
    for &a in &addrs[..n] {
        // SAFETY: `a` lies in this guest's RAM, above its image and stack and below the DTB
        // region the test configuration keeps clear.
        unsafe { core::ptr::write_volatile(a as *mut u64, pattern(a)) };
    }
    let mut bad = 0;
    for &a in &addrs[..n] {
        // SAFETY: as above.
        let v = unsafe { core::ptr::read_volatile(a as *const u64) };
        if v != pattern(a) {
            println!("MEMTEST: mismatch at {a:#x}: {v:#x}");
            bad += 1;
        }
    }
    if bad == 0 {
        println!("MEMTEST: ok {n} addresses");
    } else {
        println!("MEMTEST: FAILED {bad} of {n}");
    }
    system_off()
}
