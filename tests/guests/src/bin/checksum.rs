//! The victim guest: fills its free RAM with a deterministic pattern, then re-reads all of it
//! `checksum.rounds=N` times (default 20) and checks nothing changed it.
//!
//! Output:
//! ```text
//! CHECKSUM: ram <base> size <size> dtb <addr>
//! CHECKSUM: filling <bytes> bytes in <k> ranges
//! CHECKSUM: range <start> <end>            (one per range)
//! CHECKSUM: initial <hex>
//! CHECKSUM: read-back differs from what was written (expected <hex>)   (only if so)
//! CHECKSUM: round <i> <hex>                (i = 1..=N)
//! CHECKSUM: mismatch at <addr> got <v> want <w>   (only after a changed round, up to 8)
//! CHECKSUM: stable <hex> | CHECKSUM: CHANGED
//! ```
//! then PSCI SYSTEM_OFF. `checksum.pause_ms=M` (default 0) waits M ms between rounds, so a run
//! can be stretched over the hostile guest's lifetime; `checksum.limit=BYTES` caps the filled
//! size (default: all free RAM). `checksum.selftest=K` makes the guest itself flip one word
//! before round K, to show that the checker catches a change (the run then ends `CHANGED`).
#![no_std]
#![no_main]

use kestrel_test_guests::dt::{self, Ranges};
use kestrel_test_guests::{memory, println, system_off, timer};

/// The word stored at `addr`: splitmix64's finaliser of the address (so every word differs and
/// a word copied from elsewhere is detected).
fn pattern(addr: u64) -> u64 {
    let mut z = addr.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Order-dependent mix of the words: h = (rotl(h, 5) ^ w) * 0x100000001b3 (the FNV-1a 64
/// prime), starting from the FNV offset basis.
const H0: u64 = 0xcbf2_9ce4_8422_2325;
fn mix(h: u64, w: u64) -> u64 {
    (h.rotate_left(5) ^ w).wrapping_mul(0x0000_0100_0000_01b3)
}

/// Writes the pattern; returns the checksum the memory should now have.
fn fill(ranges: &Ranges) -> u64 {
    let mut h = H0;
    for (a, b) in ranges.iter() {
        let mut p = a;
        while p < b {
            let w = pattern(p);
            // SAFETY: [a, b) is free RAM of this guest (dt::free_ram: RAM minus this image,
            // the DTB, the initrd and reserved memory), 8-byte aligned (page-aligned ranges).
            unsafe { core::ptr::write_volatile(p as *mut u64, w) };
            h = mix(h, w);
            p += 8;
        }
    }
    h
}

fn checksum(ranges: &Ranges) -> u64 {
    let mut h = H0;
    for (a, b) in ranges.iter() {
        let mut p = a;
        while p < b {
            // SAFETY: as in `fill`.
            h = mix(h, unsafe { core::ptr::read_volatile(p as *const u64) });
            p += 8;
        }
    }
    h
}

fn report_mismatches(ranges: &Ranges) {
    let mut shown = 0;
    let mut total: u64 = 0;
    for (a, b) in ranges.iter() {
        let mut p = a;
        while p < b {
            // SAFETY: as in `fill`.
            let v = unsafe { core::ptr::read_volatile(p as *const u64) };
            if v != pattern(p) {
                total += 1;
                if shown < 8 {
                    println!(
                        "CHECKSUM: mismatch at {p:#x} got {v:#x} want {:#x}",
                        pattern(p)
                    );
                    shown += 1;
                }
            }
            p += 8;
        }
    }
    println!("CHECKSUM: {total} words differ from the pattern");
}

#[unsafe(no_mangle)]
fn guest_main(dtb: usize) -> ! {
    let [(base, size), ..] = memory(dtb);
    println!("CHECKSUM: ram {base:#x} size {size:#x} dtb {dtb:#x}");
    let rounds = dt::bootarg_u64(dtb, "checksum.rounds", 20);
    let pause_ms = dt::bootarg_u64(dtb, "checksum.pause_ms", 0);
    let limit = dt::bootarg_u64(dtb, "checksum.limit", u64::MAX);
    let selftest = dt::bootarg_u64(dtb, "checksum.selftest", 0);

    let free = dt::free_ram(dtb);
    let mut ranges = Ranges::new();
    let mut left = limit & !7;
    for (a, b) in free.iter() {
        let take = (b - a).min(left);
        ranges.push(a, a + take);
        left -= take;
    }
    println!(
        "CHECKSUM: filling {} bytes in {} ranges",
        ranges.total(),
        ranges.n
    );
    for (a, b) in ranges.iter() {
        println!("CHECKSUM: range {a:#x} {b:#x}");
    }
    if ranges.total() == 0 {
        println!("CHECKSUM: CHANGED (no free RAM to fill)");
        system_off()
    }
    let expected = fill(&ranges);
    let first = checksum(&ranges);
    println!("CHECKSUM: initial {first:#018x}");
    let mut changed = false;
    if first != expected {
        println!("CHECKSUM: read-back differs from what was written (expected {expected:#018x})");
        changed = true;
        report_mismatches(&ranges);
    }
    for i in 1..=rounds {
        if pause_ms > 0 {
            timer::delay_ms(pause_ms);
        }
        if i == selftest {
            let (a, b) = ranges.r[ranges.n - 1];
            let p = (a + (b - a) / 2) & !7;
            println!("CHECKSUM: selftest: flipping bit 0 at {p:#x}");
            // SAFETY: p lies inside a filled range (as in `fill`).
            unsafe { core::ptr::write_volatile(p as *mut u64, pattern(p) ^ 1) };
        }
        let h = checksum(&ranges);
        println!("CHECKSUM: round {i} {h:#018x}");
        if h != first && !changed {
            changed = true;
            report_mismatches(&ranges);
        }
    }
    if changed {
        println!("CHECKSUM: CHANGED");
    } else {
        println!("CHECKSUM: stable {first:#018x}");
    }
    system_off()
}
