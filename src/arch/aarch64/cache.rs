//! Data-cache maintenance by virtual address (Arm ARM D7.5: DC CVAC / IVAC / CIVAC).
use core::arch::asm;

fn dcache_line_size() -> u64 {
    let ctr: u64;
    // SAFETY: reading CTR_EL0 has no side effects.
    unsafe { asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack, preserves_flags)) };
    4 << ((ctr >> 16) & 0xf)
}

macro_rules! dc_range {
    ($name:ident, $op:literal, $what:literal) => {
        #[doc = concat!("DC ", $what, " over `[start, start + len)`, then DSB SY.")]
        pub fn $name(start: u64, len: u64) {
                        let line = dcache_line_size();
            let mut a = start & !(line - 1);
            let end = start.saturating_add(len);
            // Whole groups of eight lines first (large ranges: guest memory), eight operations
            // per loop iteration.
            while a.is_multiple_of(8 * line) && end - a >= 8 * line {
                // SAFETY: as below, for the eight lines from `a`.
                unsafe {
                    asm!(
                        concat!("dc ", $op, ", {a}"), "add {t}, {a}, {l}",
                        concat!("dc ", $op, ", {t}"), "add {t}, {t}, {l}",
                        concat!("dc ", $op, ", {t}"), "add {t}, {t}, {l}",
                        concat!("dc ", $op, ", {t}"), "add {t}, {t}, {l}",
                        concat!("dc ", $op, ", {t}"), "add {t}, {t}, {l}",
                        concat!("dc ", $op, ", {t}"), "add {t}, {t}, {l}",
                        concat!("dc ", $op, ", {t}"), "add {t}, {t}, {l}",
                        concat!("dc ", $op, ", {t}"),
                        a = in(reg) a, l = in(reg) line, t = out(reg) _,
                        options(nostack, preserves_flags)
                    )
                };
                a += 8 * line;
            }
            while a < end {
                // SAFETY: cache maintenance by VA on an address the caller owns; it changes no
                // memory contents visible to the program (clean) or discards lines the caller
                // has declared stale (invalidate).
                unsafe { asm!(concat!("dc ", $op, ", {}"), in(reg) a, options(nostack, preserves_flags)) };
                a += line;
            }
            // SAFETY: a barrier has no memory-safety effect.
            unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
        }
    };
}
dc_range!(clean_dcache_range, "cvac", "CVAC (clean to PoC)");
dc_range!(invalidate_dcache_range, "ivac", "IVAC (invalidate to PoC)");
dc_range!(
    clean_invalidate_dcache_range,
    "civac",
    "CIVAC (clean and invalidate to PoC)"
);
