//! Navigation of a checked devicetree: nodes with their chain of ancestors, typed property
//! readers, `reg` decoding with `ranges` translation to CPU physical addresses, and GIC
//! interrupt specifiers.
//!
//! Only a blob that passed [`super::blob::check`] reaches this module, and only the `fdt` crate
//! functions that cannot panic on such a blob are used: `find_node("/")`, `children()`,
//! `all_nodes()` (its fixed stack of 64 parents is deeper than the check's
//! [`super::blob::MAX_DEPTH`]; it also expects UTF-8 names and no FDT_NOP among properties, both
//! checked or removed), `properties()`/`property()`, `memory_reservations()`. Property values are decoded here
//! rather than with the crate's `reg()`/`interrupts()`/`cell_sizes()`, which assume small cell
//! counts, unwrap, or know nothing of parent buses.
#![forbid(unsafe_code)]

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use fdt::Fdt;
use fdt::node::FdtNode;

use super::PlatformError;

pub(super) type Node<'b, 'a> = FdtNode<'b, 'a>;

/// Devicetree Specification v0.4 §2.3.5: when absent, `#address-cells` is 2 and `#size-cells` 1.
const DEFAULT_ADDRESS_CELLS: u32 = 2;
const DEFAULT_SIZE_CELLS: u32 = 1;

/// The root node. A checked blob always has one.
pub(super) fn root<'b, 'a>(fdt: &'b Fdt<'a>) -> Result<Node<'b, 'a>, PlatformError> {
    fdt.find_node("/")
        .ok_or(PlatformError::Malformed("no root node"))
}

/// Depth-first walk over every node; `visit` gets the chain root..=node. Stops early when
/// `visit` returns false. Depth is bounded by the blob check.
pub(super) fn walk<'b, 'a>(
    fdt: &'b Fdt<'a>,
    visit: &mut dyn FnMut(&[Node<'b, 'a>]) -> bool,
) -> Result<(), PlatformError> {
    fn go<'b, 'a>(
        chain: &mut Vec<Node<'b, 'a>>,
        visit: &mut dyn FnMut(&[Node<'b, 'a>]) -> bool,
    ) -> bool {
        if !visit(chain) {
            return false;
        }
        let Some(&node) = chain.last() else {
            return true;
        };
        for child in node.children() {
            chain.push(child);
            let more = go(chain, visit);
            chain.pop();
            if !more {
                return false;
            }
        }
        true
    }
    let mut chain = alloc::vec![root(fdt)?];
    go(&mut chain, visit);
    Ok(())
}

/// The chain root..=node of the node at an absolute path such as `/soc/serial@7e215040`.
/// A path component without a unit address matches a node whose name before the `@` is equal
/// (Devicetree Specification v0.4 §2.2.3), the first such node winning.
pub(super) fn lookup<'b, 'a>(fdt: &'b Fdt<'a>, path: &str) -> Option<Vec<Node<'b, 'a>>> {
    let rest = path.strip_prefix('/')?;
    let mut chain = alloc::vec![root(fdt).ok()?];
    for part in rest.split('/').filter(|p| !p.is_empty()) {
        let parent = *chain.last()?;
        let child = parent.children().find(|c| {
            if part.contains('@') {
                c.name == part
            } else {
                c.name.split('@').next() == Some(part)
            }
        })?;
        chain.push(child);
    }
    Some(chain)
}

/// Resolves a `stdout-path`-style reference: an absolute path or an alias from `/aliases`,
/// with any `:options` suffix removed (Devicetree Specification v0.4 §3.6).
pub(super) fn resolve_path<'b, 'a>(fdt: &'b Fdt<'a>, reference: &str) -> Option<Vec<Node<'b, 'a>>> {
    let reference = reference.split(':').next().unwrap_or(reference);
    if reference.starts_with('/') {
        return lookup(fdt, reference);
    }
    // An alias may itself be followed by a path ("serial0/child"); only plain aliases occur in
    // stdout-path in practice, but handle the general form.
    let (alias, tail) = match reference.find('/') {
        Some(i) => (&reference[..i], &reference[i..]),
        None => (reference, ""),
    };
    let aliases = lookup(fdt, "/aliases")?;
    let target = prop_str(*aliases.last()?, alias)?;
    let mut full = String::from(target);
    full.push_str(tail);
    lookup(fdt, &full)
}

/// The node whose `phandle` (or legacy `linux,phandle`) is `phandle`. One linear pass over the
/// structure block (`all_nodes()`), where a [`walk`] would re-scan every subtree once per
/// level: phandles are looked up for every interrupt parent and clock at boot.
pub(super) fn by_phandle<'b, 'a>(fdt: &'b Fdt<'a>, phandle: u32) -> Option<Node<'b, 'a>> {
    fdt.all_nodes().find(|&node| {
        prop_u32_opt(node, "phandle").or_else(|| prop_u32_opt(node, "linux,phandle"))
            == Some(phandle)
    })
}

pub(super) fn prop<'a>(node: Node<'_, 'a>, name: &str) -> Option<&'a [u8]> {
    node.property(name).map(|p| p.value)
}

pub(super) fn has_prop(node: Node<'_, '_>, name: &str) -> bool {
    node.property(name).is_some()
}

fn be32_at(bytes: &[u8], i: usize) -> Option<u32> {
    let b = bytes.get(i * 4..i * 4 + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// A one-cell property, `None` when absent or not exactly 4 bytes.
pub(super) fn prop_u32_opt(node: Node<'_, '_>, name: &str) -> Option<u32> {
    let v = prop(node, name)?;
    if v.len() != 4 {
        return None;
    }
    be32_at(v, 0)
}

/// A one-cell property: `Ok(None)` when absent, an error when present with another length.
pub(super) fn prop_u32(
    node: Node<'_, '_>,
    name: &'static str,
) -> Result<Option<u32>, PlatformError> {
    match prop(node, name) {
        None => Ok(None),
        Some(v) if v.len() == 4 => Ok(be32_at(v, 0)),
        Some(_) => Err(bad(node, name)),
    }
}

/// A property holding one address of one or two cells (4 or 8 bytes), as used by
/// `linux,initrd-start`/`-end` and `cpu-release-addr`.
pub(super) fn prop_u32_or_u64(
    node: Node<'_, '_>,
    name: &'static str,
) -> Result<Option<u64>, PlatformError> {
    match prop(node, name) {
        None => Ok(None),
        Some(v) if v.len() == 4 || v.len() == 8 => Ok(cells(v, v.len() / 4)),
        Some(_) => Err(bad(node, name)),
    }
}

/// A string property without its terminating NUL; `None` when absent or not UTF-8.
pub(super) fn prop_str<'a>(node: Node<'_, 'a>, name: &str) -> Option<&'a str> {
    let v = prop(node, name)?;
    let v = v.strip_suffix(&[0]).unwrap_or(v);
    core::str::from_utf8(v).ok()
}

/// The strings of a string-list property such as `compatible` (§2.3.1).
pub(super) fn prop_strings<'a>(node: Node<'_, 'a>, name: &str) -> impl Iterator<Item = &'a str> {
    prop(node, name)
        .unwrap_or(&[])
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .filter_map(|s| core::str::from_utf8(s).ok())
}

pub(super) fn is_compatible(node: Node<'_, '_>, any_of: &[&str]) -> bool {
    prop_strings(node, "compatible").any(|c| any_of.contains(&c))
}

/// `status` absent, "okay" or "ok" (Devicetree Specification v0.4 §2.3.4).
pub(super) fn is_enabled(node: Node<'_, '_>) -> bool {
    matches!(prop_str(node, "status"), None | Some("okay") | Some("ok"))
}

pub(super) fn bad(node: Node<'_, '_>, property: &'static str) -> PlatformError {
    PlatformError::BadProperty {
        node: node.name.to_string(),
        property,
    }
}

/// A big-endian number of `n` cells (n <= 2) from the start of `bytes`.
fn cells(bytes: &[u8], n: usize) -> Option<u64> {
    match n {
        0 => Some(0),
        1 => be32_at(bytes, 0).map(u64::from),
        2 => Some((u64::from(be32_at(bytes, 0)?) << 32) | u64::from(be32_at(bytes, 1)?)),
        _ => None,
    }
}

/// `#address-cells` and `#size-cells` that `node` gives its children.
fn child_cells(node: Node<'_, '_>) -> Result<(usize, usize), PlatformError> {
    let a = prop_u32(node, "#address-cells")?.unwrap_or(DEFAULT_ADDRESS_CELLS) as usize;
    let s = prop_u32(node, "#size-cells")?.unwrap_or(DEFAULT_SIZE_CELLS) as usize;
    Ok((a, s))
}

/// The `reg` entries of the last node of `chain`, translated to CPU physical addresses through
/// the `ranges` of every ancestor bus. Empty when the node has no `reg`. Addresses wider than
/// two cells (PCI) are refused.
pub(super) fn reg(chain: &[Node<'_, '_>]) -> Result<Vec<(u64, u64)>, PlatformError> {
    let (Some(&node), Some(parent_index)) = (chain.last(), chain.len().checked_sub(2)) else {
        return Ok(Vec::new());
    };
    let Some(value) = prop(node, "reg") else {
        return Ok(Vec::new());
    };
    let (ac, sc) = child_cells(chain[parent_index])?;
    if ac == 0 || ac > 2 || sc > 2 {
        return Err(bad(node, "reg"));
    }
    let entry = (ac + sc) * 4;
    if !value.len().is_multiple_of(entry) {
        return Err(bad(node, "reg"));
    }
    let mut out = Vec::new();
    for e in value.chunks_exact(entry) {
        let addr = cells(e, ac).ok_or_else(|| bad(node, "reg"))?;
        let size = cells(&e[ac * 4..], sc).ok_or_else(|| bad(node, "reg"))?;
        out.push((translate(&chain[..chain.len() - 1], addr, node)?, size));
    }
    Ok(out)
}

/// The first address of the `reg` of the last node of `chain`, untranslated: for nodes whose
/// `reg` is an identifier rather than a memory address, such as CPU nodes (MPIDR) under `/cpus`
/// (which has `#size-cells = <0>` and no `ranges`).
pub(super) fn reg_first_address(chain: &[Node<'_, '_>]) -> Result<Option<u64>, PlatformError> {
    let (Some(&node), Some(parent_index)) = (chain.last(), chain.len().checked_sub(2)) else {
        return Ok(None);
    };
    let Some(value) = prop(node, "reg") else {
        return Ok(None);
    };
    let (ac, _) = child_cells(chain[parent_index])?;
    if ac == 0 || ac > 2 || value.len() < ac * 4 {
        return Err(bad(node, "reg"));
    }
    Ok(cells(value, ac))
}

/// Translates `addr`, an address in the child address space of the last node of `buses`, up to
/// the root (Devicetree Specification v0.4 §2.3.8 `ranges`): an empty `ranges` is the identity,
/// an absent one means the bus is not memory mapped, and otherwise the (child address, parent
/// address, length) triple containing `addr` maps it.
fn translate(
    buses: &[Node<'_, '_>],
    mut addr: u64,
    for_node: Node<'_, '_>,
) -> Result<u64, PlatformError> {
    let untranslatable = || PlatformError::Untranslatable {
        node: for_node.name.to_string(),
    };
    // buses[0] is the root, whose child addresses are CPU physical addresses.
    for i in (1..buses.len()).rev() {
        let bus = buses[i];
        let Some(ranges) = prop(bus, "ranges") else {
            return Err(untranslatable());
        };
        if ranges.is_empty() {
            continue;
        }
        let (child_ac, sc) = child_cells(bus)?;
        let (parent_ac, _) = child_cells(buses[i - 1])?;
        if child_ac == 0 || child_ac > 2 || parent_ac == 0 || parent_ac > 2 || sc > 2 {
            return Err(untranslatable());
        }
        let entry = (child_ac + parent_ac + sc) * 4;
        if !ranges.len().is_multiple_of(entry) {
            return Err(bad(bus, "ranges"));
        }
        let mut mapped = None;
        for e in ranges.chunks_exact(entry) {
            let child = cells(e, child_ac).ok_or_else(untranslatable)?;
            let parent = cells(&e[child_ac * 4..], parent_ac).ok_or_else(untranslatable)?;
            let len = cells(&e[(child_ac + parent_ac) * 4..], sc).ok_or_else(untranslatable)?;
            if addr >= child && addr - child < len {
                mapped = Some(
                    parent
                        .checked_add(addr - child)
                        .ok_or_else(untranslatable)?,
                );
                break;
            }
        }
        addr = mapped.ok_or_else(untranslatable)?;
    }
    Ok(addr)
}

/// The interrupt parent of the last node of `chain`: the phandle in its own or its nearest
/// ancestor's `interrupt-parent` (Devicetree Specification v0.4 §2.4.1).
fn interrupt_parent<'b, 'a>(
    fdt: &'b Fdt<'a>,
    chain: &[Node<'b, 'a>],
) -> Result<Option<Node<'b, 'a>>, PlatformError> {
    for &n in chain.iter().rev() {
        if let Some(ph) = prop_u32(n, "interrupt-parent")? {
            return Ok(by_phandle(fdt, ph));
        }
    }
    Ok(None)
}

/// GIC interrupt types in the first cell of a 3-cell specifier (Linux
/// Documentation/devicetree/bindings/interrupt-controller/arm,gic.yaml and arm,gic-v3.yaml).
const GIC_SPI: u32 = 0;
const GIC_PPI: u32 = 1;
const GIC_ESPI: u32 = 2;
const GIC_EPPI: u32 = 3;

/// Converts a GIC interrupt specifier (type, number) to an INTID: SPI n -> 32 + n,
/// PPI n -> 16 + n, extended SPI n -> 4096 + n, extended PPI n -> 1056 + n (GIC architecture
/// specification IHI 0069, §2.2 "INTIDs").
pub(super) fn gic_intid(kind: u32, number: u32) -> Option<u32> {
    match kind {
        GIC_SPI if number < 988 => Some(32 + number),
        GIC_PPI if number < 16 => Some(16 + number),
        GIC_ESPI if number < 1024 => Some(4096 + number),
        GIC_EPPI if number < 64 => Some(1056 + number),
        _ => None,
    }
}

/// The INTIDs of the `interrupts` property of the last node of `chain`, which must be wired to
/// a GIC (3-cell specifiers: type, number, flags). Empty when there is no `interrupts`.
pub(super) fn gic_interrupts<'b, 'a>(
    fdt: &'b Fdt<'a>,
    chain: &[Node<'b, 'a>],
) -> Result<Vec<u32>, PlatformError> {
    let Some(&node) = chain.last() else {
        return Ok(Vec::new());
    };
    let Some(value) = prop(node, "interrupts") else {
        return Ok(Vec::new());
    };
    let parent = interrupt_parent(fdt, chain)?.ok_or_else(|| bad(node, "interrupt-parent"))?;
    if prop_u32(parent, "#interrupt-cells")? != Some(3) || !has_prop(parent, "interrupt-controller")
    {
        return Err(bad(node, "interrupts"));
    }
    if !value.len().is_multiple_of(12) {
        return Err(bad(node, "interrupts"));
    }
    value
        .chunks_exact(12)
        .map(|spec| {
            let kind = be32_at(spec, 0).unwrap_or(u32::MAX);
            let number = be32_at(spec, 1).unwrap_or(u32::MAX);
            gic_intid(kind, number).ok_or_else(|| bad(node, "interrupts"))
        })
        .collect()
}
