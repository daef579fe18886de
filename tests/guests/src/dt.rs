//! Look-ups in the DTB the guest was entered with: bootargs, CPUs, the GIC, and which RAM is
//! free for a program to use.
use fdt::Fdt;

/// The DTB at `dtb`, if it has the FDT magic.
pub fn fdt(dtb: usize) -> Option<Fdt<'static>> {
    if dtb == 0 || !dtb.is_multiple_of(4) {
        return None;
    }
    // SAFETY: the address comes from x0 at entry (arm64 boot protocol: a DTB in RAM the guest
    // may read); `from_ptr` reads the header, checks the magic and uses `totalsize`.
    unsafe { Fdt::from_ptr(dtb as *const u8) }.ok()
}

/// The DTB's `totalsize` (0 when there is none).
pub fn dtb_size(dtb: usize) -> u64 {
    fdt(dtb).map_or(0, |f| f.total_size() as u64)
}

/// `/chosen/bootargs`, or "".
pub fn bootargs(dtb: usize) -> &'static str {
    fdt(dtb)
        .filter(|f| f.find_node("/chosen").is_some())
        .and_then(|f| f.chosen().bootargs())
        .unwrap_or("")
}

/// The value of `key=value` on the kernel command line (the last occurrence wins); `Some("")`
/// for a bare `key`.
pub fn bootarg(dtb: usize, key: &str) -> Option<&'static str> {
    let mut found = None;
    for tok in bootargs(dtb).split_ascii_whitespace() {
        match tok.split_once('=') {
            Some((k, v)) if k == key => found = Some(v),
            None if tok == key => found = Some(""),
            _ => {}
        }
    }
    found
}

/// Parses `0x...` (hex) or decimal, with optional `_` separators and an optional binary suffix
/// `K`, `M` or `G`.
pub fn parse_u64(s: &str) -> Option<u64> {
    let s = s.trim();
    let (digits, mult) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 1u64 << 10),
        b'M' | b'm' => (&s[..s.len() - 1], 1 << 20),
        b'G' | b'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let (digits, radix) = match digits.strip_prefix("0x").or(digits.strip_prefix("0X")) {
        Some(h) if mult == 1 || !h.is_empty() => (h, 16),
        _ => (digits, 10),
    };
    let mut v: u64 = 0;
    let mut any = false;
    for c in digits.chars() {
        if c == '_' {
            continue;
        }
        let d = c.to_digit(radix)? as u64;
        v = v.checked_mul(radix as u64)?.checked_add(d)?;
        any = true;
    }
    if !any {
        return None;
    }
    v.checked_mul(mult)
}

/// A number from the command line, or `default`.
pub fn bootarg_u64(dtb: usize, key: &str, default: u64) -> u64 {
    bootarg(dtb, key).and_then(parse_u64).unwrap_or(default)
}

/// Up to 16 values parsed from a comma-separated `key=a,b,c` bootarg (every occurrence of the
/// key counts); unparsable items are skipped.
pub fn bootarg_list(dtb: usize, key: &str) -> ([u64; 16], usize) {
    let mut out = [0u64; 16];
    let mut n = 0;
    for tok in bootargs(dtb).split_ascii_whitespace() {
        let Some((k, v)) = tok.split_once('=') else {
            continue;
        };
        if k != key {
            continue;
        }
        for x in v.split(',').filter_map(parse_u64) {
            if n < out.len() {
                out[n] = x;
                n += 1;
            }
        }
    }
    (out, n)
}

/// The MPIDR affinity values (`reg`) of the `/cpus/cpu@...` nodes, up to 64.
pub fn cpu_mpidrs(dtb: usize) -> ([u64; 64], usize) {
    let mut out = [0u64; 64];
    let mut n = 0;
    let Some(f) = fdt(dtb) else {
        return (out, 0);
    };
    let Some(cpus) = f.find_node("/cpus") else {
        return (out, 0);
    };
    let cells = cpus
        .property("#address-cells")
        .and_then(|p| p.as_usize())
        .unwrap_or(1);
    for c in cpus.children() {
        if c.name.split('@').next() != Some("cpu") {
            continue;
        }
        let Some(reg) = c.property("reg") else {
            continue;
        };
        let v = reg.value;
        let id = match (cells, v.len()) {
            (1, 4..) => u32::from_be_bytes([v[0], v[1], v[2], v[3]]) as u64,
            (2, 8..) => u64::from_be_bytes([v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]]),
            _ => continue,
        };
        if n < out.len() {
            out[n] = id;
            n += 1;
        }
    }
    (out, n)
}

/// The GIC the DTB describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gic {
    /// `arm,gic-v3`: distributor and the first redistributor region (base, size).
    V3 {
        gicd: u64,
        gicr: u64,
        gicr_size: u64,
    },
    /// `arm,cortex-a15-gic` (or another GICv2 compatible): distributor and CPU interface.
    V2 { gicd: u64, gicc: u64 },
}

/// Finds the interrupt controller node by its `compatible`.
pub fn gic(dtb: usize) -> Option<Gic> {
    let f = fdt(dtb)?;
    if let Some(n) = f.find_compatible(&["arm,gic-v3"]) {
        let mut r = n.reg()?;
        let d = r.next()?;
        let rd = r.next()?;
        return Some(Gic::V3 {
            gicd: d.starting_address as u64,
            gicr: rd.starting_address as u64,
            gicr_size: rd.size.unwrap_or(0) as u64,
        });
    }
    let n = f.find_compatible(&[
        "arm,cortex-a15-gic",
        "arm,gic-400",
        "arm,cortex-a9-gic",
        "arm,cortex-a7-gic",
    ])?;
    let mut r = n.reg()?;
    let d = r.next()?;
    let c = r.next()?;
    Some(Gic::V2 {
        gicd: d.starting_address as u64,
        gicc: c.starting_address as u64,
    })
}

/// A few disjoint `[start, end)` ranges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ranges {
    pub r: [(u64, u64); 16],
    pub n: usize,
}

impl Ranges {
    pub const fn new() -> Self {
        Ranges {
            r: [(0, 0); 16],
            n: 0,
        }
    }
    pub fn push(&mut self, start: u64, end: u64) {
        if start < end && self.n < self.r.len() {
            self.r[self.n] = (start, end);
            self.n += 1;
        }
    }
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.r[..self.n].iter().copied()
    }
    /// Removes `[start, end)` from every range (splitting where needed; drops what does not fit).
    pub fn remove(&mut self, start: u64, end: u64) {
        let old = *self;
        self.n = 0;
        for (a, b) in old.iter() {
            if end <= a || start >= b {
                self.push(a, b);
            } else {
                self.push(a, start.max(a));
                self.push(end.min(b), b);
            }
        }
    }
    pub fn total(&self) -> u64 {
        self.iter().map(|(a, b)| b - a).sum()
    }
}

impl Default for Ranges {
    fn default() -> Self {
        Self::new()
    }
}

/// RAM a program may overwrite: the memory nodes minus this image (with its BSS and stack), the
/// DTB, the initrd and `/memreserve/` entries, each rounded out to 4 KiB.
pub fn free_ram(dtb: usize) -> Ranges {
    let mut out = Ranges::new();
    for (base, size) in crate::memory(dtb) {
        out.push(base, base.saturating_add(size));
    }
    let page_out = |a: u64, b: u64| (a & !0xfff, b.saturating_add(0xfff) & !0xfff);
    let (a, b) = page_out(crate::image_start(), crate::image_end());
    out.remove(a, b);
    let (a, b) = page_out(dtb as u64, dtb as u64 + dtb_size(dtb).max(1));
    out.remove(a, b);
    if let Some(f) = fdt(dtb) {
        if let Some(ch) = f.find_node("/chosen") {
            let get = |name| {
                ch.property(name).and_then(|p| match p.value.len() {
                    4 => Some(
                        u32::from_be_bytes([p.value[0], p.value[1], p.value[2], p.value[3]]) as u64,
                    ),
                    8 => Some(u64::from_be_bytes([
                        p.value[0], p.value[1], p.value[2], p.value[3], p.value[4], p.value[5],
                        p.value[6], p.value[7],
                    ])),
                    _ => None,
                })
            };
            if let (Some(s), Some(e)) = (get("linux,initrd-start"), get("linux,initrd-end")) {
                let (a, b) = page_out(s, e);
                out.remove(a, b);
            }
        }
        for m in f.memory_reservations() {
            let s = m.address() as u64;
            let (a, b) = page_out(s, s.saturating_add(m.size() as u64));
            out.remove(a, b);
        }
    }
    out
}
