//! Structural check of a flattened devicetree blob before the `fdt` crate walks it.
//!
//! The `fdt` crate (0.1.5) trusts its input: a property running past the structure block, a name
//! offset outside the strings block, an unterminated node name, or FDT_NOP tokens in some places
//! make it index out of bounds or hit an `assert!`. A DTB comes from firmware, so this module
//! checks everything the crate relies on, and the parser only ever hands the crate a blob that
//! passed [`check`]. FDT_NOP tokens (legal anywhere between tokens, left behind by libfdt's
//! `fdt_nop_property`/`fdt_nop_node`) are removed by [`without_nops`] into a copy instead.
//!
//! Layout reference: Devicetree Specification v0.4, chapter 5 "Flattened Devicetree (DTB)
//! Format": a 40-byte big-endian header (§5.2), the memory reservation block of (address, size)
//! u64 pairs ended by (0, 0) (§5.3), the structure block of 32-bit tokens (§5.4) and the strings
//! block of NUL-terminated property names (§5.5).
#![forbid(unsafe_code)]

use alloc::vec::Vec;

/// Devicetree Specification v0.4 §5.2: `magic` is 0xd00dfeed.
pub(super) const FDT_MAGIC: u32 = 0xd00d_feed;
/// Size of the v17 header (ten 32-bit fields).
const HEADER_SIZE: usize = 40;
/// The highest `last_comp_version` understood (§5.2: v17 is backwards compatible with v16).
const MAX_LAST_COMP_VERSION: u32 = 17;
/// Nodes nested deeper than this are refused (the `fdt` crate keeps parents in a 64-entry array;
/// real trees are under 10 deep).
pub(super) const MAX_DEPTH: usize = 32;

/// Structure block tokens (§5.4.1).
const FDT_BEGIN_NODE: u32 = 0x1;
const FDT_END_NODE: u32 = 0x2;
const FDT_PROP: u32 = 0x3;
const FDT_NOP: u32 = 0x4;
const FDT_END: u32 = 0x9;

/// What is wrong with a blob, for [`super::PlatformError::Malformed`].
pub type Malformed = &'static str;

/// The header fields the checks need (§5.2), all big-endian u32 in the blob.
#[derive(Clone, Copy, Debug)]
pub(super) struct Header {
    pub totalsize: u32,
    pub off_dt_struct: u32,
    pub off_dt_strings: u32,
    pub off_mem_rsvmap: u32,
    pub boot_cpuid_phys: u32,
    pub size_dt_strings: u32,
    pub size_dt_struct: u32,
}

fn be32(blob: &[u8], at: usize) -> Option<u32> {
    let bytes = blob.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

fn be64(blob: &[u8], at: usize) -> Option<u64> {
    Some((u64::from(be32(blob, at)?) << 32) | u64::from(be32(blob, at.checked_add(4)?)?))
}

/// Reads the header. The caller has already had `fdt::Fdt::new` accept the blob, so the magic is
/// right and `totalsize <= blob.len()`; this re-checks both so it stands alone.
pub(super) fn header(blob: &[u8]) -> Result<Header, Malformed> {
    let field = |i: usize| be32(blob, i * 4).ok_or("blob shorter than the DTB header");
    if field(0)? != FDT_MAGIC {
        return Err("bad magic");
    }
    let h = Header {
        totalsize: field(1)?,
        off_dt_struct: field(2)?,
        off_dt_strings: field(3)?,
        off_mem_rsvmap: field(4)?,
        boot_cpuid_phys: field(7)?,
        size_dt_strings: field(8)?,
        size_dt_struct: field(9)?,
    };
    if field(6)? > MAX_LAST_COMP_VERSION {
        return Err("unsupported DTB version (last_comp_version > 17)");
    }
    if (h.totalsize as usize) < HEADER_SIZE || h.totalsize as usize > blob.len() {
        return Err("totalsize outside the blob");
    }
    Ok(h)
}

/// A byte range of the blob that must lie inside `totalsize`.
fn block(
    h: &Header,
    off: u32,
    size: u32,
    what: Malformed,
) -> Result<core::ops::Range<usize>, Malformed> {
    let start = off as usize;
    let end = start.checked_add(size as usize).ok_or(what)?;
    if start < HEADER_SIZE || end > h.totalsize as usize {
        return Err(what);
    }
    Ok(start..end)
}

/// The memory reservation entries (§5.3), without the (0, 0) terminator.
pub(super) fn reservations(blob: &[u8], h: &Header) -> Result<Vec<(u64, u64)>, Malformed> {
    let off = h.off_mem_rsvmap as usize;
    if !off.is_multiple_of(8) || off < HEADER_SIZE {
        return Err("misaligned memory reservation block");
    }
    let mut out = Vec::new();
    let mut at = off;
    loop {
        if at + 16 > h.totalsize as usize {
            return Err("memory reservation block not terminated");
        }
        let (addr, size) = (
            be64(blob, at).ok_or("truncated reservation")?,
            be64(blob, at + 8).ok_or("truncated reservation")?,
        );
        if addr == 0 && size == 0 {
            return Ok(out);
        }
        out.push((addr, size));
        at += 16;
    }
}

/// Walks the structure block token by token and checks every rule the `fdt` crate relies on:
/// tokens aligned and inside the block, a single root node named "", names NUL-terminated UTF-8,
/// property values inside the block, property name offsets inside the strings block and
/// NUL-terminated UTF-8 there, properties before subnodes, nesting at most [`MAX_DEPTH`], and
/// FDT_END right after the root's FDT_END_NODE. Returns whether FDT_NOP tokens were seen.
pub(super) fn check(blob: &[u8]) -> Result<bool, Malformed> {
    let h = header(blob)?;
    reservations(blob, &h)?;
    if !h.off_dt_struct.is_multiple_of(4) {
        return Err("misaligned structure block");
    }
    let st = block(
        &h,
        h.off_dt_struct,
        h.size_dt_struct,
        "structure block outside the blob",
    )?;
    let strings = block(
        &h,
        h.off_dt_strings,
        h.size_dt_strings,
        "strings block outside the blob",
    )?;
    let (st, strings) = (&blob[st], &blob[strings]);

    let mut at = 0usize;
    let mut depth = 0usize;
    let mut seen_root = false;
    // Per open node: whether a subnode has started (properties must come first, §5.4.2).
    let mut in_children = [false; MAX_DEPTH + 1];
    let mut nops = false;
    loop {
        let token = be32(st, at).ok_or("structure block ends without FDT_END")?;
        at += 4;
        match token {
            FDT_BEGIN_NODE => {
                if depth == 0 && seen_root {
                    return Err("more than one root node");
                }
                if depth >= MAX_DEPTH {
                    return Err("nodes nested too deeply");
                }
                let name_len = st
                    .get(at..)
                    .and_then(|rest| rest.iter().position(|&b| b == 0))
                    .ok_or("unterminated node name")?;
                let name = core::str::from_utf8(&st[at..at + name_len])
                    .map_err(|_| "node name is not UTF-8")?;
                if depth == 0 && !name.is_empty() {
                    return Err("root node has a name");
                }
                if depth > 0 && name.is_empty() {
                    return Err("empty node name");
                }
                at = align4(at + name_len + 1);
                if depth > 0 {
                    in_children[depth] = true;
                }
                seen_root = true;
                depth += 1;
                in_children[depth] = false;
            }
            FDT_END_NODE => {
                if depth == 0 {
                    return Err("FDT_END_NODE without a node");
                }
                depth -= 1;
            }
            FDT_PROP => {
                if depth == 0 {
                    return Err("property outside a node");
                }
                if in_children[depth] {
                    return Err("property after a subnode");
                }
                let len = be32(st, at).ok_or("truncated property")? as usize;
                let nameoff = be32(st, at + 4).ok_or("truncated property")? as usize;
                at += 8;
                let end = at
                    .checked_add(len)
                    .ok_or("property value outside the block")?;
                if end > st.len() {
                    return Err("property value outside the structure block");
                }
                let name_len = strings
                    .get(nameoff..)
                    .and_then(|rest| rest.iter().position(|&b| b == 0))
                    .ok_or("property name offset outside the strings block")?;
                core::str::from_utf8(&strings[nameoff..nameoff + name_len])
                    .map_err(|_| "property name is not UTF-8")?;
                at = align4(end);
            }
            FDT_NOP => nops = true,
            FDT_END => {
                if depth != 0 || !seen_root {
                    return Err("FDT_END inside a node");
                }
                return Ok(nops);
            }
            _ => return Err("unknown structure block token"),
        }
    }
}

const fn align4(x: usize) -> usize {
    (x + 3) & !3
}

/// A copy of a blob that passed [`check`] with every FDT_NOP token removed from the structure
/// block. The copy is laid out header, reservations, structure, strings, and its header is fixed
/// up; its `totalsize` is that of the copy (the caller keeps the original's for reservations).
pub(super) fn without_nops(blob: &[u8]) -> Result<Vec<u8>, Malformed> {
    let h = header(blob)?;
    let rsv = reservations(blob, &h)?;
    let st = &blob[block(&h, h.off_dt_struct, h.size_dt_struct, "structure block")?];
    let strings = &blob[block(&h, h.off_dt_strings, h.size_dt_strings, "strings block")?];

    let mut structure = Vec::with_capacity(st.len());
    let mut at = 0usize;
    loop {
        let token = be32(st, at).ok_or("structure block ends without FDT_END")?;
        let next = match token {
            FDT_BEGIN_NODE => {
                let name_len = st
                    .get(at + 4..)
                    .and_then(|rest| rest.iter().position(|&b| b == 0))
                    .ok_or("unterminated node name")?;
                align4(at + 4 + name_len + 1)
            }
            FDT_PROP => {
                let len = be32(st, at + 4).ok_or("truncated property")? as usize;
                align4(at + 12 + len)
            }
            FDT_END_NODE | FDT_NOP | FDT_END => at + 4,
            _ => return Err("unknown structure block token"),
        };
        let next = next.min(st.len());
        if token != FDT_NOP {
            structure.extend_from_slice(&st[at..next]);
        }
        if token == FDT_END {
            break;
        }
        at = next;
    }

    let off_rsv = HEADER_SIZE;
    let off_struct = off_rsv + (rsv.len() + 1) * 16;
    let off_strings = off_struct + structure.len();
    let total = off_strings + strings.len();
    let mut out = Vec::with_capacity(total);
    let version = be32(blob, 20).ok_or("truncated header")?;
    let last_comp = be32(blob, 24).ok_or("truncated header")?;
    let fields = [
        FDT_MAGIC,
        total as u32,
        off_struct as u32,
        off_strings as u32,
        off_rsv as u32,
        version,
        last_comp,
        h.boot_cpuid_phys,
        strings.len() as u32,
        structure.len() as u32,
    ];
    for f in fields {
        out.extend_from_slice(&f.to_be_bytes());
    }
    for (addr, size) in rsv.iter().copied().chain(core::iter::once((0, 0))) {
        out.extend_from_slice(&addr.to_be_bytes());
        out.extend_from_slice(&size.to_be_bytes());
    }
    out.extend_from_slice(&structure);
    out.extend_from_slice(strings);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny blob built by hand: root { a = <1>; n@1 { }; }, optionally with NOPs sprinkled in.
    fn tiny(with_nops: bool) -> Vec<u8> {
        let mut st = Vec::new();
        let tok = |st: &mut Vec<u8>, t: u32| st.extend_from_slice(&t.to_be_bytes());
        tok(&mut st, FDT_BEGIN_NODE);
        tok(&mut st, 0); // "" padded
        if with_nops {
            tok(&mut st, FDT_NOP);
        }
        tok(&mut st, FDT_PROP);
        tok(&mut st, 4);
        tok(&mut st, 0);
        tok(&mut st, 1);
        if with_nops {
            tok(&mut st, FDT_NOP);
        }
        tok(&mut st, FDT_BEGIN_NODE);
        st.extend_from_slice(b"n@1\0");
        tok(&mut st, FDT_END_NODE);
        if with_nops {
            tok(&mut st, FDT_NOP);
        }
        tok(&mut st, FDT_END_NODE);
        tok(&mut st, FDT_END);
        let strings = b"a\0";
        let off_struct = 40 + 16;
        let total = off_struct + st.len() + strings.len();
        let mut out = Vec::new();
        for f in [
            FDT_MAGIC,
            total as u32,
            off_struct as u32,
            (off_struct + st.len()) as u32,
            40,
            17,
            16,
            0,
            strings.len() as u32,
            st.len() as u32,
        ] {
            out.extend_from_slice(&f.to_be_bytes());
        }
        out.extend_from_slice(&[0; 16]);
        out.extend_from_slice(&st);
        out.extend_from_slice(strings);
        out
    }

    #[test]
    fn hand_built_blob_passes_and_reports_nops() {
        assert_eq!(check(&tiny(false)), Ok(false));
        assert_eq!(check(&tiny(true)), Ok(true));
    }

    #[test]
    fn removing_nops_gives_the_nop_free_blob() {
        let cleaned = without_nops(&tiny(true)).unwrap();
        assert_eq!(check(&cleaned), Ok(false));
        assert_eq!(cleaned, tiny(false));
    }

    #[test]
    fn property_running_past_the_block_is_refused() {
        let mut b = tiny(false);
        // The property's length field sits after BEGIN_NODE, name and PROP: offset 56 + 12.
        b[56 + 12..56 + 16].copy_from_slice(&1000u32.to_be_bytes());
        assert_eq!(check(&b), Err("property value outside the structure block"));
    }

    #[test]
    fn name_offset_outside_strings_is_refused() {
        let mut b = tiny(false);
        b[56 + 16..56 + 20].copy_from_slice(&77u32.to_be_bytes());
        assert_eq!(
            check(&b),
            Err("property name offset outside the strings block")
        );
    }

    #[test]
    fn missing_end_token_is_refused() {
        let mut b = tiny(false);
        let end = b.len() - 2 - 4; // FDT_END sits just before the strings
        b[end..end + 4].copy_from_slice(&FDT_END_NODE.to_be_bytes());
        assert!(check(&b).is_err());
    }

    #[test]
    fn every_truncation_of_the_header_is_refused() {
        let b = tiny(false);
        for len in 0..HEADER_SIZE {
            assert!(header(&b[..len]).is_err(), "length {len}");
        }
        assert_eq!(be64(&[0u8; 7], 0), None);
    }
}
