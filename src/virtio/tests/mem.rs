use super::*;
use crate::addr::{Ipa, PhysAddr};
use crate::virtio::mem::{GuestMemory, MemError, copy_between};

/// RAM made of two IPA-adjacent regions whose physical pages are far apart, then a gap.
fn split_ram(phys: &Arc<FakePhys>) -> Arc<FakeRam> {
    fake_ram(
        phys,
        &[
            (RAM, 0x1000, vm_pa(0) + 0x8000),
            (RAM + 0x1000, 0x1000, vm_pa(0)),
            // A gap of one page, then more RAM.
            (RAM + 0x3000, 0x1000, vm_pa(0) + 0x4000),
        ],
    )
}

#[test]
fn a_range_across_adjacent_regions_reads_and_writes_both_pieces() {
    let phys = arena(1);
    let m = split_ram(&phys);
    let data: Vec<u8> = (0..32u8).collect();
    m.write(Ipa::new(RAM + 0x1000 - 16), &data).unwrap();
    let snap = phys.snapshot();
    let at = |pa: u64| (pa - PHYS) as usize;
    assert_eq!(
        &snap[at(vm_pa(0) + 0x9000 - 16)..at(vm_pa(0) + 0x9000)],
        &data[..16]
    );
    assert_eq!(&snap[at(vm_pa(0))..at(vm_pa(0) + 16)], &data[16..]);
    let mut back = [0u8; 32];
    m.read(Ipa::new(RAM + 0x1000 - 16), &mut back).unwrap();
    assert_eq!(&back[..], &data[..]);
}

#[test]
fn a_range_over_a_gap_is_refused_and_writes_nothing() {
    let phys = arena(1);
    let m = split_ram(&phys);
    let before = phys.snapshot();
    let err = m.write(Ipa::new(RAM + 0x2000 - 8), &[1u8; 16]).unwrap_err();
    assert_eq!(
        err,
        MemError::NotRam {
            ipa: Ipa::new(RAM + 0x2000)
        }
    );
    assert_eq!(phys.snapshot(), before, "nothing of a refused write lands");
    let mut buf = [0u8; 16];
    assert!(m.read(Ipa::new(RAM + 0x2ff8), &mut buf).is_err());
    assert!(m.check(Ipa::new(RAM + 0x3000), 0x1000, true).is_ok());
    assert!(m.check(Ipa::new(RAM + 0x3000), 0x1001, true).is_err());
    assert!(m.check(Ipa::new(RAM - 1), 1, false).is_err());
}

#[test]
fn wrapping_ranges_and_odd_ring_indices_are_errors() {
    let phys = arena(1);
    let m = vm(&phys, 0);
    assert!(matches!(
        m.check(Ipa::new(u64::MAX - 3), 8, false),
        Err(MemError::Overflow { .. })
    ));
    assert_eq!(
        m.read_u16(Ipa::new(RAM + 1)),
        Err(MemError::Unaligned {
            ipa: Ipa::new(RAM + 1)
        })
    );
    assert!(m.read_u16(Ipa::new(RAM + RAM_SIZE)).is_err());
    m.write_u16(Ipa::new(RAM + 2), 0xbeef).unwrap();
    assert_eq!(m.read_u16(Ipa::new(RAM + 2)), Ok(0xbeef));
}

#[test]
fn copy_between_two_vms_moves_bytes_physically_and_checks_both_sides() {
    let phys = arena(2);
    let a = vm(&phys, 0);
    let b = vm(&phys, 1);
    let data: Vec<u8> = (0..200u8).collect();
    a.write(Ipa::new(RAM + 0x100), &data).unwrap();
    copy_between(&*b, Ipa::new(RAM + 0x5000), &*a, Ipa::new(RAM + 0x100), 200).unwrap();
    let mut got = vec![0u8; 200];
    b.read(Ipa::new(RAM + 0x5000), &mut got).unwrap();
    assert_eq!(got, data);
    // A destination past the end of B's RAM: refused before a byte moves.
    let before = phys.snapshot();
    assert!(copy_between(&*b, Ipa::new(RAM + RAM_SIZE - 100), &*a, Ipa::new(RAM), 200).is_err());
    assert_eq!(phys.snapshot(), before);
    assert_guards_intact(&phys, 2);
}

#[test]
fn from_map_takes_ram_regions_only() {
    use crate::mm::stage2::{GuestMemoryMap, MemRegion};
    let phys = arena(1);
    let mut map = GuestMemoryMap::new();
    map.add(MemRegion::ram(
        Ipa::new(RAM),
        RAM_SIZE,
        PhysAddr::new(vm_pa(0)),
    ))
    .unwrap();
    map.add(MemRegion::device(
        Ipa::new(0x0900_0000),
        0x1000,
        PhysAddr::new(PHYS),
    ))
    .unwrap();
    let m = crate::virtio::mem::GuestRam::from_map(&map, phys.clone());
    assert_eq!(m.regions().len(), 1);
    assert!(m.check(Ipa::new(0x0900_0000), 4, false).is_err());
    assert!(m.check(Ipa::new(RAM), RAM_SIZE, true).is_ok());
}
