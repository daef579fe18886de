//! Tests against real and hand-written DTBs (tests/fixtures/platform/README.md says where each
//! comes from). Expected values are read off `dtc -I dtb -O dts` of the same files.

use super::*;
use alloc::vec;
use proptest::prelude::*;

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/platform/",
            $name
        ))
    };
}

const VIRT_V3_4CPU_1G: &[u8] = fixture!("virt-gicv3-4cpu-1g.dtb");
const VIRT_V3_4CPU_1G_UNPACKED: &[u8] = fixture!("virt-gicv3-4cpu-1g-unpacked.dtb");
const VIRT_V3_4CPU_3G: &[u8] = fixture!("virt-gicv3-4cpu-3g.dtb");
const VIRT_V3_1CPU_512M: &[u8] = fixture!("virt-gicv3-1cpu-512m.dtb");
const VIRT_V3_SECURE: &[u8] = fixture!("virt-gicv3-4cpu-1g-secure.dtb");
const VIRT_V3_INITRD: &[u8] = fixture!("virt-gicv3-2cpu-1g-initrd.dtb");
const VIRT_V2_4CPU_1G: &[u8] = fixture!("virt-gicv2-4cpu-1g.dtb");
const VIRT_V2_4CPU_3G: &[u8] = fixture!("virt-gicv2-4cpu-3g.dtb");
const VIRT_V2_1CPU_512M: &[u8] = fixture!("virt-gicv2-1cpu-512m.dtb");
const VIRT_V2_SECURE: &[u8] = fixture!("virt-gicv2-4cpu-1g-secure.dtb");
const RPI4_UPSTREAM: &[u8] = fixture!("bcm2711-rpi-4-b.dtb");
const RASPI4B: &[u8] = fixture!("raspi4b.dtb");
const SYNTHETIC: &[u8] = fixture!("synthetic.dtb");
const NO_STDOUT_PATH: &[u8] = fixture!("no-stdout-path.dtb");
const NO_MEMORY: &[u8] = fixture!("no-memory.dtb");
const NO_UART: &[u8] = fixture!("no-uart.dtb");
const NO_GIC: &[u8] = fixture!("no-gic.dtb");
const INITRD_OUTSIDE_RAM: &[u8] = fixture!("initrd-outside-ram.dtb");
const OVERLAPPING_MEMORY: &[u8] = fixture!("overlapping-memory.dtb");

const MIB: u64 = 1 << 20;

fn r(start: u64, size: u64) -> Range<PhysAddr> {
    Range::new(PhysAddr::new(start), size)
}

/// QEMU virt with `-kernel`: DTB at the start of RAM, the image 2 MiB in.
fn qemu_params() -> BootParams {
    BootParams {
        dtb_base: PhysAddr::new(0x4000_0000),
        image: r(0x4020_0000, 2 * MIB),
        max_cpus: 8,
    }
}

fn totalsize(blob: &[u8]) -> u64 {
    u64::from(u32::from_be_bytes([blob[4], blob[5], blob[6], blob[7]]))
}

fn parse(blob: &[u8]) -> Platform {
    match Platform::parse(blob, &qemu_params()) {
        Ok(p) => p,
        Err(e) => panic!("fixture refused: {e}"),
    }
}

fn psci_cpus(n: u64) -> Vec<Cpu> {
    (0..n)
        .map(|mpidr| Cpu {
            mpidr,
            enable_method: EnableMethod::Psci,
        })
        .collect()
}

const QEMU_TIMER: TimerIrqs = TimerIrqs {
    secure_phys: 29,
    nonsecure_phys: 30,
    virt: 27,
    hyp_phys: 26,
    hyp_virt: None,
};

fn qemu_pl011() -> Uart {
    Uart {
        kind: UartKind::Pl011,
        base: PhysAddr::new(0x900_0000),
        size: 0x1000,
        intid: Some(33),
        path: "/pl011@9000000".into(),
        clock_hz: Some(24_000_000),
    }
}

fn qemu_gicv3() -> Gic {
    Gic {
        version: GicVersion::V3,
        gicd: r(0x800_0000, 0x1_0000),
        gicr: vec![r(0x80a_0000, 0xf6_0000)],
        gicc: None,
        gich: None,
        gicv: None,
        its: Some(r(0x808_0000, 0x2_0000)),
        maintenance_intid: Some(25),
    }
}

fn qemu_gicv2() -> Gic {
    Gic {
        version: GicVersion::V2,
        gicd: r(0x800_0000, 0x1_0000),
        gicr: vec![],
        gicc: Some(r(0x801_0000, 0x1_0000)),
        gich: Some(r(0x803_0000, 0x1_0000)),
        gicv: Some(r(0x804_0000, 0x1_0000)),
        its: None,
        maintenance_intid: Some(25),
    }
}

const QEMU_PSCI: Psci = Psci {
    method: Conduit::Smc,
    v0_2_or_later: true,
    cpu_suspend: Some(0xc400_0001),
    cpu_off: Some(0x8400_0002),
    cpu_on: Some(0xc400_0003),
    migrate: Some(0xc400_0005),
};

#[test]
fn qemu_virt_gicv3_is_read_exactly() {
    let p = parse(VIRT_V3_4CPU_1G);
    let expected = Platform {
        model: "linux,dummy-virt".into(),
        compatible: vec!["linux,dummy-virt".into()],
        memory: vec![r(0x4000_0000, 0x4000_0000)],
        reserved: vec![
            Reserved {
                range: r(0x4000_0000, totalsize(VIRT_V3_4CPU_1G)),
                kind: ReservedKind::Dtb,
            },
            Reserved {
                range: r(0x4020_0000, 2 * MIB),
                kind: ReservedKind::Image,
            },
        ],
        console: qemu_pl011(),
        gic: qemu_gicv3(),
        timer: QEMU_TIMER,
        pmu_intid: Some(23),
        cpus: psci_cpus(4),
        boot_cpuid: 0,
        psci: Some(QEMU_PSCI),
        bootargs: String::new(),
        options: HvOptions { loglevel: None },
        initrd: None,
        dtb: r(0x4000_0000, totalsize(VIRT_V3_4CPU_1G)),
    };
    assert_eq!(p, expected);
}

#[test]
fn qemu_virt_gicv2_lists_the_four_frames_in_order() {
    let p = parse(VIRT_V2_4CPU_1G);
    assert_eq!(p.gic, qemu_gicv2());
    // GICv2 QEMU sets the CPU mask in the timer flags (0xf04); the INTIDs do not change.
    assert_eq!(p.timer, QEMU_TIMER);
    assert_eq!(p.cpus, psci_cpus(4));
    assert_eq!(p.console, qemu_pl011());
    assert_eq!(p.psci, Some(QEMU_PSCI));
    // The PMU's PPI 7 with a CPU mask (0xf04) is still INTID 23.
    assert_eq!(p.pmu_intid, Some(23));
}

#[test]
fn memory_size_and_cpu_count_follow_the_qemu_command_line() {
    let cases: [(&[u8], u64, u64, GicVersion); 5] = [
        (VIRT_V3_4CPU_3G, 0xc000_0000, 4, GicVersion::V3),
        (VIRT_V3_1CPU_512M, 0x2000_0000, 1, GicVersion::V3),
        (VIRT_V2_4CPU_3G, 0xc000_0000, 4, GicVersion::V2),
        (VIRT_V2_1CPU_512M, 0x2000_0000, 1, GicVersion::V2),
        (VIRT_V3_INITRD, 0x4000_0000, 2, GicVersion::V3),
    ];
    for (blob, mem, ncpus, version) in cases {
        let p = parse(blob);
        assert_eq!(p.memory, vec![r(0x4000_0000, mem)]);
        if ncpus == 1 {
            // QEMU gives a lone CPU no enable-method.
            assert_eq!(
                p.cpus,
                vec![Cpu {
                    mpidr: 0,
                    enable_method: EnableMethod::None
                }]
            );
        } else {
            assert_eq!(p.cpus, psci_cpus(ncpus));
        }
        assert_eq!(p.gic.version, version);
    }
}

#[test]
fn secure_virt_has_no_psci_and_skips_disabled_secure_ram_and_uart() {
    for blob in [VIRT_V3_SECURE, VIRT_V2_SECURE] {
        let p = parse(blob);
        assert_eq!(p.psci, None);
        // secram@e000000 is device_type "memory" but status "disabled".
        assert_eq!(p.memory, vec![r(0x4000_0000, 0x4000_0000)]);
        assert_eq!(p.console, qemu_pl011());
        assert_eq!(p.cpus, psci_cpus(4));
    }
}

#[test]
fn qemu_initrd_and_bootargs_come_from_chosen() {
    let p = parse(VIRT_V3_INITRD);
    assert_eq!(p.initrd, Some(r(0x4800_0000, 1_000_000)));
    assert_eq!(p.bootargs, "console=ttyAMA0 loglevel=debug");
    assert_eq!(p.options.loglevel, Some(log::LevelFilter::Debug));
    assert!(p.reserved.contains(&Reserved {
        range: r(0x4800_0000, 1_000_000),
        kind: ReservedKind::Initrd
    }));
}

#[test]
fn free_ram_of_qemu_virt_excludes_dtb_image_and_initrd() {
    let p = parse(VIRT_V3_INITRD);
    let dtb_end = (0x4000_0000 + totalsize(VIRT_V3_INITRD)).next_multiple_of(PAGE_SIZE);
    assert_eq!(
        p.free_ram(),
        vec![
            r(dtb_end, 0x4020_0000 - dtb_end),
            r(0x4040_0000, 0x4800_0000 - 0x4040_0000),
            // initrd end 0x480f4240 rounds up to 0x480f5000.
            r(0x480f_5000, 0x8000_0000 - 0x480f_5000),
        ]
    );
}

#[test]
fn unpacked_qemu_blob_reserves_its_whole_megabyte() {
    let p = parse(VIRT_V3_4CPU_1G_UNPACKED);
    assert_eq!(p.dtb, r(0x4000_0000, MIB));
    assert_eq!(
        p.free_ram(),
        vec![
            r(0x4010_0000, MIB),
            r(0x4040_0000, 0x8000_0000 - 0x4040_0000)
        ]
    );
    // Apart from the blob size it is the same machine as the packed copy.
    let packed = parse(VIRT_V3_4CPU_1G);
    assert_eq!(
        (p.gic, p.console, p.cpus),
        (packed.gic, packed.console, packed.cpus)
    );
}

#[test]
fn upstream_pi4_dtb_has_no_memory_until_firmware_fills_it() {
    let params = BootParams {
        dtb_base: PhysAddr::new(0x100_0000),
        image: r(0x20_0000, 2 * MIB),
        max_cpus: 4,
    };
    assert_eq!(
        Platform::parse(RPI4_UPSTREAM, &params),
        Err(PlatformError::NoMemory)
    );
}

#[test]
fn raspi4b_console_and_gic_are_translated_through_soc_ranges() {
    let params = BootParams {
        dtb_base: PhysAddr::new(0x100_0000),
        image: r(0x20_0000, 2 * MIB),
        max_cpus: 4,
    };
    let p = Platform::parse(RASPI4B, &params).unwrap();
    assert_eq!(p.model, "Raspberry Pi 4 Model B");
    // The BCM2711 wires each core's PMU to its own SPI (16..=19): not a PPI a guest can own.
    assert_eq!(p.pmu_intid, None);
    assert_eq!(
        p.compatible,
        vec![String::from("raspberrypi,4-model-b"), "brcm,bcm2711".into()]
    );
    assert_eq!(p.memory, vec![r(0, 0x3c00_0000)]);
    // stdout-path = "serial1:115200n8" -> /soc/serial@7e215040, bus address 0x7e215040 ->
    // CPU address 0xfe215040 through /soc ranges <0x7e000000 0x0 0xfe000000 0x1800000>.
    assert_eq!(
        p.console,
        Uart {
            kind: UartKind::Bcm2835Aux,
            base: PhysAddr::new(0xfe21_5040),
            size: 0x40,
            intid: Some(32 + 0x5d),
            path: "/soc/serial@7e215040".into(),
            clock_hz: None,
        }
    );
    // The GIC-400 sits at bus address 0x40041000 -> 0xff841000 via <0x40000000 0x0 0xff800000>.
    assert_eq!(
        p.gic,
        Gic {
            version: GicVersion::V2,
            gicd: r(0xff84_1000, 0x1000),
            gicr: vec![],
            gicc: Some(r(0xff84_2000, 0x2000)),
            gich: Some(r(0xff84_4000, 0x2000)),
            gicv: Some(r(0xff84_6000, 0x2000)),
            its: None,
            maintenance_intid: Some(25),
        }
    );
    assert_eq!(p.timer, QEMU_TIMER);
    let spin = |mpidr, addr| Cpu {
        mpidr,
        enable_method: EnableMethod::SpinTable {
            release_addr: PhysAddr::new(addr),
        },
    };
    assert_eq!(
        p.cpus,
        vec![spin(0, 0xd8), spin(1, 0xe0), spin(2, 0xe8), spin(3, 0xf0)]
    );
    assert_eq!(p.psci, None);
    assert_eq!(p.bootargs, "console=ttyS1,115200 loglevel=info");
    assert_eq!(p.options.loglevel, Some(log::LevelFilter::Info));
    // /memreserve/ 0x0 0x1000 (the spin tables); the disabled nvram and the size-only CMA pool
    // in /reserved-memory reserve nothing.
    assert_eq!(
        p.reserved,
        vec![
            Reserved {
                range: r(0, 0x1000),
                kind: ReservedKind::MemReserve
            },
            Reserved {
                range: r(0x20_0000, 2 * MIB),
                kind: ReservedKind::Image
            },
            Reserved {
                range: r(0x100_0000, totalsize(RASPI4B)),
                kind: ReservedKind::Dtb
            },
        ]
    );
    let dtb_end = (0x100_0000 + totalsize(RASPI4B)).next_multiple_of(PAGE_SIZE);
    assert_eq!(
        p.free_ram(),
        vec![
            r(0x1000, 0x20_0000 - 0x1000),
            r(0x40_0000, 0x100_0000 - 0x40_0000),
            r(dtb_end, 0x3c00_0000 - dtb_end)
        ]
    );
}

fn synthetic_params() -> BootParams {
    BootParams {
        dtb_base: PhysAddr::new(0x9000_0000),
        image: r(0x8020_0000, 4 * MIB),
        max_cpus: 8,
    }
}

#[test]
fn synthetic_board_is_read_exactly() {
    let p = Platform::parse(SYNTHETIC, &synthetic_params()).unwrap();
    let dtb_size = totalsize(SYNTHETIC);
    let expected = Platform {
        model: "kestrel synthetic board".into(),
        compatible: vec!["kestrel,synthetic".into(), "arm,vexpress".into()],
        memory: vec![
            r(0x8000_0000, 0x4000_0000),
            r(0x1_0000_0000, 0x2000_0000),
            r(0x8_8000_0000, 0x8000_0000),
        ],
        reserved: vec![
            Reserved {
                range: r(0x8000_0000, 0x1_0000),
                kind: ReservedKind::MemReserve,
            },
            Reserved {
                range: r(0x8020_0000, 4 * MIB),
                kind: ReservedKind::Image,
            },
            Reserved {
                range: r(0x8100_0000, 0x20_0800),
                kind: ReservedKind::Initrd,
            },
            Reserved {
                range: r(0x9000_0000, dtb_size),
                kind: ReservedKind::Dtb,
            },
            Reserved {
                range: r(0xa000_0000, MIB),
                kind: ReservedKind::ReservedMemory { no_map: false },
            },
            Reserved {
                range: r(0xbfe0_0000, 2 * MIB),
                kind: ReservedKind::ReservedMemory { no_map: true },
            },
        ],
        // serial2 -> /bus@f0000000/sub@100000/uart@2000: 0x2000 -> 0x100000 (sub's ranges)
        // -> 0xf0100000 (bus's ranges).
        console: Uart {
            kind: UartKind::Pl011,
            base: PhysAddr::new(0xf010_0000),
            size: 0x1000,
            intid: Some(37),
            path: "/bus@f0000000/sub@100000/uart@2000".into(),
            clock_hz: None,
        },
        gic: Gic {
            version: GicVersion::V3,
            gicd: r(0x2f00_0000, 0x1_0000),
            gicr: vec![r(0x2f10_0000, 0x10_0000), r(0x2f30_0000, 0x4_0000)],
            gicc: Some(r(0x2c00_0000, 0x2000)),
            gich: Some(r(0x2c01_0000, 0x2000)),
            gicv: Some(r(0x2c02_f000, 0x2000)),
            its: Some(r(0x2f02_0000, 0x2_0000)),
            maintenance_intid: Some(25),
        },
        timer: TimerIrqs {
            hyp_virt: Some(28),
            ..QEMU_TIMER
        },
        pmu_intid: None,
        cpus: vec![
            Cpu {
                mpidr: 0,
                enable_method: EnableMethod::None,
            },
            Cpu {
                mpidr: 0x100,
                enable_method: EnableMethod::Psci,
            },
            Cpu {
                mpidr: 0x1_0000_0000,
                enable_method: EnableMethod::SpinTable {
                    release_addr: PhysAddr::new(0x8000_fff8),
                },
            },
        ],
        boot_cpuid: 0,
        psci: Some(Psci {
            method: Conduit::Hvc,
            v0_2_or_later: false,
            cpu_suspend: Some(0x95c1_ba5e),
            cpu_off: Some(0x95c1_ba5f),
            cpu_on: Some(0x95c1_ba60),
            migrate: Some(0x95c1_ba61),
        }),
        bootargs: "quiet loglevel=bogus loglevel=trace".into(),
        options: HvOptions {
            loglevel: Some(log::LevelFilter::Trace),
        },
        initrd: Some(r(0x8100_0000, 0x20_0800)),
        dtb: r(0x9000_0000, dtb_size),
    };
    assert_eq!(p, expected);
}

#[test]
fn synthetic_free_ram_is_page_aligned_and_skips_every_reservation() {
    let p = Platform::parse(SYNTHETIC, &synthetic_params()).unwrap();
    let dtb_end = (0x9000_0000 + totalsize(SYNTHETIC)).next_multiple_of(PAGE_SIZE);
    assert_eq!(
        p.free_ram(),
        vec![
            r(0x8001_0000, 0x8020_0000 - 0x8001_0000),
            r(0x8060_0000, 0x8100_0000 - 0x8060_0000),
            r(0x8120_1000, 0x9000_0000 - 0x8120_1000),
            r(dtb_end, 0xa000_0000 - dtb_end),
            r(0xa010_0000, 0xbfe0_0000 - 0xa010_0000),
            r(0x1_0000_0000, 0x2000_0000),
            r(0x8_8000_0000, 0x8000_0000),
        ]
    );
}

#[test]
fn without_stdout_path_the_first_enabled_pl011_is_the_console() {
    let params = BootParams {
        dtb_base: PhysAddr::new(0x4000_0000),
        image: r(0x4020_0000, MIB),
        max_cpus: 1,
    };
    let p = Platform::parse(NO_STDOUT_PATH, &params).unwrap();
    assert_eq!(
        p.console,
        Uart {
            kind: UartKind::Pl011,
            base: PhysAddr::new(0x1000_3000),
            size: 0x1000,
            intid: Some(39),
            path: "/soc/uart@3000".into(),
            clock_hz: None,
        }
    );
    assert_eq!(p.gic.gicd, r(0x1004_0000, 0x1000));
    assert_eq!(p.gic.gicv, Some(r(0x1004_6000, 0x2000)));
    assert_eq!(
        p.psci.map(|x| (x.method, x.v0_2_or_later)),
        Some((Conduit::Smc, true))
    );
    assert_eq!(p.bootargs, "");
}

#[test]
fn broken_fixtures_give_their_errors() {
    let params = qemu_params();
    assert_eq!(
        Platform::parse(NO_MEMORY, &params),
        Err(PlatformError::NoMemory)
    );
    assert_eq!(
        Platform::parse(NO_UART, &params),
        Err(PlatformError::NoUart)
    );
    assert_eq!(Platform::parse(NO_GIC, &params), Err(PlatformError::NoGic));
    assert_eq!(
        Platform::parse(INITRD_OUTSIDE_RAM, &params),
        Err(PlatformError::InitrdOutsideRam)
    );
    assert_eq!(
        Platform::parse(OVERLAPPING_MEMORY, &params),
        Err(PlatformError::OverlappingMemory {
            a: r(0x4000_0000, 0x2000_0000),
            b: r(0x5000_0000, 0x2000_0000)
        })
    );
}

#[test]
fn initrd_overlapping_the_image_is_refused() {
    let params = BootParams {
        image: r(0x480f_0000, MIB),
        ..qemu_params()
    };
    assert_eq!(
        Platform::parse(VIRT_V3_INITRD, &params),
        Err(PlatformError::InitrdOverlapsImage)
    );
}

#[test]
fn more_cpus_than_supported_are_refused() {
    let params = BootParams {
        max_cpus: 2,
        ..qemu_params()
    };
    assert_eq!(
        Platform::parse(VIRT_V3_4CPU_1G, &params),
        Err(PlatformError::TooManyCpus { found: 4, max: 2 })
    );
    let params = BootParams {
        max_cpus: 4,
        ..qemu_params()
    };
    assert!(Platform::parse(VIRT_V3_4CPU_1G, &params).is_ok());
}

#[test]
fn truncated_blobs_are_refused_by_the_fdt_crate() {
    for len in [0, 4, 39, 40, 100, VIRT_V3_4CPU_1G.len() - 1] {
        let err = Platform::parse(&VIRT_V3_4CPU_1G[..len], &qemu_params()).unwrap_err();
        assert_eq!(
            err,
            PlatformError::Fdt(fdt::FdtError::BufferTooSmall),
            "length {len}"
        );
    }
    let mut bad_magic = VIRT_V3_4CPU_1G.to_vec();
    bad_magic[0] ^= 0xff;
    assert_eq!(
        Platform::parse(&bad_magic, &qemu_params()),
        Err(PlatformError::Fdt(fdt::FdtError::BadMagic))
    );
}

fn set_header_field(blob: &mut [u8], index: usize, value: u32) {
    blob[index * 4..index * 4 + 4].copy_from_slice(&value.to_be_bytes());
}

#[test]
fn header_offsets_outside_the_blob_are_malformed() {
    // Fields: 2 off_dt_struct, 3 off_dt_strings, 4 off_mem_rsvmap, 8 size_dt_strings,
    // 9 size_dt_struct. Each would make the fdt crate slice out of bounds.
    for (field, value) in [
        (2, 0xffff_fff0),
        (3, 0x7fff_ffff),
        (4, 0xffff_fff8),
        (8, 0x100_0000),
        (9, 0xffff_0000),
        (6, 18),
    ] {
        let mut b = VIRT_V3_4CPU_1G.to_vec();
        set_header_field(&mut b, field, value);
        assert!(
            matches!(
                Platform::parse(&b, &qemu_params()),
                Err(PlatformError::Malformed(_))
            ),
            "field {field}"
        );
    }
}

/// Replaces the property whose value is exactly `value` (the first one found after the node
/// name `after`) by FDT_NOP tokens, as libfdt's `fdt_nop_property` does.
fn nop_out_property(blob: &mut [u8], after: &[u8], value: &[u8]) {
    let start = blob.windows(after.len()).position(|w| w == after).unwrap();
    let mut at = (start + after.len() + 3) & !3;
    loop {
        let word = |b: &[u8], i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        assert_eq!(word(blob, at), 3, "expected FDT_PROP");
        let len = word(blob, at + 4) as usize;
        let end = (at + 12 + len + 3) & !3;
        if &blob[at + 12..at + 12 + len] == value {
            for w in (at..end).step_by(4) {
                blob[w..w + 4].copy_from_slice(&4u32.to_be_bytes());
            }
            return;
        }
        at = end;
    }
}

#[test]
fn nop_tokens_are_skipped() {
    let mut b = SYNTHETIC.to_vec();
    nop_out_property(&mut b, b"memory@e0000000\0", b"disabled\0");
    let p = Platform::parse(&b, &synthetic_params()).unwrap();
    // Without its status property the node is enabled and its range appears.
    assert_eq!(p.memory[1], r(0xe000_0000, 0x100_0000));
    // The reservation keeps the size of the blob as loaded, not of the NOP-free copy.
    assert_eq!(p.dtb, r(0x9000_0000, totalsize(SYNTHETIC)));
    assert_eq!(p.console.base, PhysAddr::new(0xf010_0000));
}

#[test]
fn bootargs_loglevel_last_valid_value_wins() {
    let cases = [
        ("", None),
        ("loglevel=warn", Some(log::LevelFilter::Warn)),
        ("loglevel=error quiet", Some(log::LevelFilter::Error)),
        (
            "loglevel=info loglevel=nonsense",
            Some(log::LevelFilter::Info),
        ),
        ("loglevel=trace loglevel=off", Some(log::LevelFilter::Off)),
        ("xloglevel=debug", None),
        ("loglevel=DEBUG", None),
    ];
    for (args, level) in cases {
        assert_eq!(HvOptions::parse(args).loglevel, level, "{args:?}");
    }
}

#[test]
fn free_ranges_handles_unsorted_overlapping_and_outside_holes() {
    let mem = [r(0x2000_0000, 0x1000_0000), r(0x1000, 0x10_0000)];
    let holes = [
        r(0x2800_0000, 0x1000),
        r(0x2000_0000 - 0x10, 0x20), // straddles the start of a range
        r(0x2800_0800, 0x2000),      // overlaps the first hole
        r(0x9000_0000, 0x1000),      // outside RAM
        r(0x10_0800, 0x1000),        // straddles the end of a range
    ];
    assert_eq!(
        free_ranges(&mem, &holes),
        vec![
            r(0x1000, 0x10_0000 - 0x1000),
            r(0x2000_1000, 0x0800_0000 - 0x1000),
            r(0x2800_3000, 0x3000_0000 - 0x2800_3000),
        ]
    );
}

#[test]
fn free_ranges_merges_adjacent_memory_and_survives_the_top_of_the_address_space() {
    let mem = [
        r(0x4000_0000, 0x1000_0000),
        r(0x5000_0000, 0x1000_0000),
        r(u64::MAX - 0x2fff, 0x3000),
    ];
    assert_eq!(
        free_ranges(&mem, &[]),
        vec![r(0x4000_0000, 0x2000_0000), r(u64::MAX - 0x2fff, 0x2000)]
    );
}

fn reference_free_pages(
    memory: &[Range<PhysAddr>],
    holes: &[Range<PhysAddr>],
) -> alloc::collections::BTreeSet<u64> {
    let mut pages = alloc::collections::BTreeSet::new();
    for m in memory {
        let mut pa = m.start.as_u64().next_multiple_of(PAGE_SIZE);
        while pa + PAGE_SIZE <= m.start.as_u64() + m.size {
            let page = r(pa, PAGE_SIZE);
            if !holes.iter().any(|h| h.overlaps(&page)) {
                pages.insert(pa);
            }
            pa += PAGE_SIZE;
        }
    }
    pages
}

proptest! {
    /// free_ranges agrees page by page with a brute-force model and its output is sorted,
    /// aligned, non-empty and never adjacent.
    #[test]
    fn free_ranges_matches_a_page_by_page_model(
        memory in proptest::collection::vec((0u64..0x40_0000, 1u64..0x8_0000), 1..4),
        holes in proptest::collection::vec((0u64..0x50_0000, 0u64..0x4_0000), 0..8),
    ) {
        // Make memory non-overlapping by spacing ranges 4 MiB apart.
        let memory: Vec<_> = memory.iter().enumerate()
            .map(|(i, &(s, n))| r(s + (i as u64) * 0x80_0000, n)).collect();
        let holes: Vec<_> = holes.iter().map(|&(s, n)| r(s, n)).collect();
        let out = free_ranges(&memory, &holes);
        let mut got = alloc::collections::BTreeSet::new();
        for w in out.windows(2) {
            prop_assert!(w[0].end() < w[1].start);
        }
        for f in &out {
            prop_assert!(f.start.is_aligned(PAGE_SIZE) && f.size % PAGE_SIZE == 0 && f.size > 0);
            let mut pa = f.start.as_u64();
            while pa < f.end().as_u64() {
                got.insert(pa);
                pa += PAGE_SIZE;
            }
        }
        prop_assert_eq!(got, reference_free_pages(&memory, &holes));
    }

    /// Corrupting bytes of real blobs never panics: the parser returns a value or an error.
    #[test]
    fn corrupted_blobs_never_panic(
        which in 0usize..3,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let original: &[u8] = [VIRT_V3_4CPU_1G, RASPI4B, SYNTHETIC][which];
        let mut b = original.to_vec();
        for (at, byte) in &edits {
            let i = at.index(b.len());
            b[i] = *byte;
        }
        let _ = Platform::parse(&b, &synthetic_params());
    }

    /// Truncating a blob and patching `totalsize` to match never panics either.
    #[test]
    fn truncated_blobs_with_matching_totalsize_never_panic(which in 0usize..3, len in 40usize..9000) {
        let original: &[u8] = [VIRT_V3_4CPU_1G, NO_STDOUT_PATH, SYNTHETIC][which];
        let mut b = original[..len.min(original.len())].to_vec();
        let n = b.len() as u32;
        set_header_field(&mut b, 1, n);
        let _ = Platform::parse(&b, &qemu_params());
    }
}

// --- The early console (platform::early_console) and the PL011's clock ---

use super::early_console::{self, EarlyConsole, EarlyUart};

const RPI4_BAD_PSCI: &[u8] = fixture!("bcm2711-rpi-4-b-bad-psci.dtb");
const RPI4_NO_CONSOLE: &[u8] = fixture!("bcm2711-rpi-4-b-no-console.dtb");
const RPI4_PL011: &[u8] = fixture!("bcm2711-rpi-4-b-pl011.dtb");
const VIRT_V2_NO_GICH: &[u8] = fixture!("virt-gicv2-4cpu-1g-no-gich.dtb");

/// The Pi 4 firmware loads kernel8.img at 0x200000 (config.txt kernel_address).
const PI_LOAD: u64 = 0x20_0000;
const VIRT_LOAD: u64 = 0x4020_0000;

fn pi_params() -> BootParams {
    BootParams {
        dtb_base: PhysAddr::new(0x2eff_0000),
        image: r(PI_LOAD, 4 * MIB),
        max_cpus: 8,
    }
}

#[test]
fn a_refused_pi_dtb_still_names_the_mini_uart_at_its_cpu_address() {
    // The refusal itself...
    assert_eq!(
        Platform::parse(RPI4_BAD_PSCI, &pi_params()),
        Err(PlatformError::BadPsciMethod)
    );
    // ...is printed on the DTB's console, translated through /soc ranges (bus 0x7e215040 ->
    // CPU 0xfe215040), and driven as a mini UART, not as a PL011 at the bus address.
    match early_console::from_dtb(RPI4_BAD_PSCI, PI_LOAD) {
        EarlyConsole::Dtb(u) => {
            assert_eq!(u.kind, UartKind::Bcm2835Aux);
            assert_eq!(u.base, PhysAddr::new(0xfe21_5040));
            assert_eq!(u.path, "/soc/serial@7e215040");
        }
        other => panic!("expected the DTB's console, got {other:?}"),
    }
}

#[test]
fn the_early_console_is_the_one_the_platform_would_use() {
    for (blob, load) in [
        (VIRT_V3_4CPU_1G, VIRT_LOAD),
        (VIRT_V2_SECURE, VIRT_LOAD),
        (RASPI4B, PI_LOAD),
        (RPI4_PL011, PI_LOAD),
        (SYNTHETIC, VIRT_LOAD),
        (NO_STDOUT_PATH, VIRT_LOAD),
    ] {
        let params = BootParams {
            image: r(load, 2 * MIB),
            ..qemu_params()
        };
        let console = Platform::parse(blob, &params).map(|p| p.console);
        match early_console::from_dtb(blob, load) {
            EarlyConsole::Dtb(u) => assert_eq!(Ok(u), console),
            other => panic!("expected the DTB's console, got {other:?}"),
        }
    }
}

#[test]
fn a_refused_virt_dtb_still_names_its_pl011() {
    assert_eq!(
        Platform::parse(VIRT_V2_NO_GICH, &qemu_params()).map(|_| ()),
        Err(PlatformError::GicIncomplete(
            "GICv2 without GICH/GICV (no virtualization extensions)"
        ))
    );
    assert_eq!(
        early_console::from_dtb(VIRT_V2_NO_GICH, VIRT_LOAD),
        EarlyConsole::Dtb(qemu_pl011())
    );
}

#[test]
fn a_pi_dtb_without_a_console_falls_back_to_both_pi_uarts() {
    // Even with the image loaded where QEMU virt would put it: the root compatible decides.
    match early_console::from_dtb(RPI4_NO_CONSOLE, VIRT_LOAD) {
        EarlyConsole::Guess { uarts, why } => {
            assert_eq!(
                uarts,
                &[early_console::RPI4_MINI_UART, early_console::RPI4_PL011]
            );
            assert_eq!(why, PlatformError::NoUart);
        }
        other => panic!("expected a guess, got {other:?}"),
    }
}

#[test]
fn without_a_readable_dtb_the_load_address_decides() {
    let garbage = [0u8; 64];
    for (load, want) in [
        (
            PI_LOAD,
            &[early_console::RPI4_MINI_UART, early_console::RPI4_PL011][..],
        ),
        (
            0x8_0000,
            &[early_console::RPI4_MINI_UART, early_console::RPI4_PL011][..],
        ),
        (VIRT_LOAD, &[early_console::QEMU_VIRT_PL011][..]),
    ] {
        assert_eq!(early_console::by_load_address(load), want);
        match early_console::from_dtb(&garbage, load) {
            EarlyConsole::Guess { uarts, .. } => assert_eq!(uarts, want),
            other => panic!("expected a guess, got {other:?}"),
        }
        // A non-Pi DTB without a console: the same guess.
        match early_console::from_dtb(NO_UART, load) {
            EarlyConsole::Guess { uarts, why } => {
                assert_eq!(uarts, want);
                assert_eq!(why, PlatformError::NoUart);
            }
            other => panic!("expected a guess, got {other:?}"),
        }
    }
    let pl011 = EarlyUart {
        kind: UartKind::Pl011,
        base: PhysAddr::new(0x0900_0000),
    };
    assert_eq!(early_console::QEMU_VIRT_PL011, pl011);
}

#[test]
fn early_console_survives_every_truncation_and_corruption() {
    for blob in [RASPI4B, RPI4_BAD_PSCI, VIRT_V3_4CPU_1G] {
        for len in (0..blob.len()).step_by(97) {
            let _ = early_console::from_dtb(&blob[..len], PI_LOAD);
        }
        let mut b = blob.to_vec();
        for i in (0..b.len()).step_by(53) {
            b[i] ^= 0x5a;
            let _ = early_console::from_dtb(&b, PI_LOAD);
        }
    }
}

#[test]
fn pl011_clock_comes_from_a_fixed_clock_or_is_the_pi_4s_48_mhz() {
    // QEMU virt: clocks = <&apb_pclk &apb_pclk>, a 24 MHz fixed-clock.
    assert_eq!(parse(VIRT_V3_4CPU_1G).console.clock_hz, Some(24_000_000));
    // The Pi 4 with kestrel's disable-bt overlay: the PL011's clock is the CPRMAN's (a clock
    // controller with a specifier), which the firmware runs at 48 MHz.
    let pi = Platform::parse(RPI4_PL011, &pi_params()).unwrap();
    assert_eq!(pi.console.kind, UartKind::Pl011);
    assert_eq!(pi.console.base, PhysAddr::new(0xfe20_1000));
    assert_eq!(pi.console.clock_hz, Some(RPI4_PL011_CLOCK_HZ));
    // The mini UART's rate comes from the core clock, not from a PL011 clock.
    assert_eq!(parse(RASPI4B).console.clock_hz, None);
    // Another board's PL011 without a fixed clock: unknown, left as the firmware set it.
    assert_eq!(parse(SYNTHETIC).console.clock_hz, None);
}
