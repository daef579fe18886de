//! Cache maintenance by virtual address (Arm ARM D7.5: DC CVAC / CVAU / IVAC / CIVAC, IC IVAU)
//! and this CPU's cache type.
use crate::mm::stage2::icache::{CacheType, IcacheSync};
use core::arch::asm;

/// This CPU's CTR_EL0.
pub fn cache_type() -> CacheType {
    let ctr: u64;
    // SAFETY: reading CTR_EL0 has no side effects.
    unsafe { asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack, preserves_flags)) };
    CacheType::new(ctr)
}

fn dcache_line_size() -> u64 {
    cache_type().dcache_line()
}

/// Makes instruction fetches from `[start, start + len)` see memory as the data side left it
/// at the PoU, as CTR_EL0 requires ([`CacheType::icache_sync`]): nothing with DIC, `IC IVAU`
/// per line on a PIPT I-cache for small ranges, else `IC IALLUIS`; then `DSB ISH`, `ISB`.
pub fn invalidate_icache_range(start: u64, len: u64) {
    match cache_type().icache_sync(len) {
        IcacheSync::None => return,
        // SAFETY: instruction-cache invalidation has no effect on memory.
        IcacheSync::All => unsafe { asm!("ic ialluis", options(nostack, preserves_flags)) },
        IcacheSync::ByLine { line } => {
            let mut a = start & !(line - 1);
            let end = start.saturating_add(len);
            while a < end {
                // SAFETY: invalidating instruction-cache lines has no effect on memory; `a` is
                // an identity-mapped address (IC IVAU may fault on an unmapped one).
                unsafe { asm!("ic ivau, {}", in(reg) a, options(nostack, preserves_flags)) };
                a += line;
            }
        }
    }
    // SAFETY: barriers have no memory-safety effect.
    unsafe { asm!("dsb ish", "isb", options(nostack, preserves_flags)) };
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
dc_range!(clean_dcache_pou_range, "cvau", "CVAU (clean to PoU)");
dc_range!(invalidate_dcache_range, "ivac", "IVAC (invalidate to PoC)");
dc_range!(
    clean_invalidate_dcache_range,
    "civac",
    "CIVAC (clean and invalidate to PoC)"
);
