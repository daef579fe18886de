//! Emulated GICv3 distributor (GICD, 64 KiB), as the GIC architecture specification IHI 0069H
//! chapter 12 "Distributor registers" describes it, in this configuration:
//!
//! - one Security state: GICD_CTLR.DS == 1 (RAO/WI), affinity routing always on:
//!   GICD_CTLR.ARE == 1 (RAO/WI); so GICD_IGRPMODR, GICD_NSACR, GICD_ITARGETSR, GICD_SGIR,
//!   GICD_CPENDSGIR / GICD_SPENDSGIR and the INTID 0-31 parts of the interrupt arrays are
//!   RAZ/WI here (those live in the redistributors);
//! - no LPIs, no message-based SPIs, no extended SPI range, 1 of N routing supported;
//! - GICD_PIDR2.ArchRev == 3, which Linux checks at 0xFFE8.
//!
//! The register semantics are in [`crate::vgic`]; this file decodes offsets and widths.
#![forbid(unsafe_code)]

use alloc::sync::Arc;

use tock_registers::LocalRegisterCopy;

use super::{AccessCtx, AccessWidth, Effect, Effects, MmioDevice, MmioError};
use crate::vgic::Vgic;
use crate::vgic::regs::{
    self, GICD_CTLR_V3, GICD_TYPER, Widths, Window, check, read_arrays, write_arrays,
};

/// Size of the GICD frame.
pub const GICD_V3_SIZE: u64 = 0x1_0000;

const CTLR: u64 = 0x0000;
const TYPER: u64 = 0x0004;
const IIDR: u64 = 0x0008;
const IROUTER: u64 = 0x6000;
const IROUTER_END: u64 = 0x8000;
const ID_BLOCK: u64 = 0xffd0;

pub struct Gicv3Distributor {
    vgic: Arc<Vgic>,
}

impl Gicv3Distributor {
    pub fn new(vgic: Arc<Vgic>) -> Self {
        Gicv3Distributor { vgic }
    }

    fn window(&self) -> Window {
        Window {
            bank: 0,
            lo: 32,
            hi: self.vgic.nr_irqs(),
        }
    }

    fn typer(&self) -> u32 {
        let lines = self.vgic.nr_irqs().div_ceil(32) - 1;
        let mut r = LocalRegisterCopy::<u32, GICD_TYPER::Register>::new(0);
        r.modify(
            GICD_TYPER::ITLINESNUMBER.val(lines)
                // 10 INTID bits: INTIDs up to 1023, no LPIs.
                + GICD_TYPER::IDBITS.val(9)
                + GICD_TYPER::A3V::SET
                + GICD_TYPER::RSS::SET,
        );
        r.get()
    }
}

fn kick(fx: &mut Effects, mask: u64) {
    if mask != 0 {
        fx.push(Effect::KickVcpus(mask));
    }
}

impl MmioDevice for Gicv3Distributor {
    fn size(&self) -> u64 {
        GICD_V3_SIZE
    }

    fn read(
        &self,
        _ctx: AccessCtx,
        offset: u64,
        width: AccessWidth,
        _fx: &mut Effects,
    ) -> Result<u64, MmioError> {
        if offset >= GICD_V3_SIZE {
            return Err(MmioError::OutOfRange);
        }
        let w = self.window();
        self.vgic
            .with_dist(|d| {
                // Match on the word holding the access so that a narrow access inside a word
                // register is checked against that register's widths.
                let r = match offset & !3 {
                    CTLR => check(offset, width, Widths::Word).map(|()| {
                        let mut r = LocalRegisterCopy::<u32, GICD_CTLR_V3::Register>::new(0);
                        r.modify(
                            GICD_CTLR_V3::ENABLE_GRP0.val(u32::from(d.grp0))
                                + GICD_CTLR_V3::ENABLE_GRP1.val(u32::from(d.grp1))
                                + GICD_CTLR_V3::ARE::SET
                                + GICD_CTLR_V3::DS::SET,
                        );
                        u64::from(r.get())
                    }),
                    TYPER => check(offset, width, Widths::Word).map(|()| u64::from(self.typer())),
                    IIDR => check(offset, width, Widths::Word).map(|()| u64::from(regs::iidr())),
                    IROUTER..IROUTER_END => check(offset, width, Widths::WordOrDouble).map(|()| {
                        let intid = ((offset - IROUTER) / 8) as u32;
                        regs::read_u64_part(d.read_irouter(intid), offset, width)
                    }),
                    ID_BLOCK..GICD_V3_SIZE => check(offset, width, Widths::Word)
                        .map(|()| u64::from(regs::id_register(offset - ID_BLOCK, 3))),
                    _ => read_arrays(d, w, offset, width)
                        .unwrap_or_else(|| check(offset, width, Widths::Any).map(|()| 0)),
                };
                (r, 0)
            })
            .0
    }

    fn write(
        &self,
        _ctx: AccessCtx,
        offset: u64,
        width: AccessWidth,
        value: u64,
        fx: &mut Effects,
    ) -> Result<(), MmioError> {
        if offset >= GICD_V3_SIZE {
            return Err(MmioError::OutOfRange);
        }
        let w = self.window();
        let (r, mask) = self.vgic.with_dist(|d| {
            // Match on the word holding the access so that a narrow access inside a word
            // register is checked against that register's widths.
            let r = match offset & !3 {
                CTLR => check(offset, width, Widths::Word).map(|()| {
                    let v = LocalRegisterCopy::<u32, GICD_CTLR_V3::Register>::new(value as u32);
                    d.set_group_enables(
                        v.is_set(GICD_CTLR_V3::ENABLE_GRP0),
                        v.is_set(GICD_CTLR_V3::ENABLE_GRP1),
                    )
                }),
                TYPER | IIDR | ID_BLOCK..GICD_V3_SIZE => {
                    check(offset, width, Widths::Word).map(|()| 0)
                }
                IROUTER..IROUTER_END => check(offset, width, Widths::WordOrDouble).map(|()| {
                    let intid = ((offset - IROUTER) / 8) as u32;
                    if intid < 32 {
                        // GICD_IROUTER0-31 are reserved.
                        return 0;
                    }
                    let old = d.read_irouter(intid);
                    d.write_irouter(intid, regs::write_u64_part(old, offset, width, value))
                }),
                _ => write_arrays(d, w, offset, width, value)
                    .unwrap_or_else(|| check(offset, width, Widths::Any).map(|()| 0)),
            };
            let mask = *r.as_ref().unwrap_or(&0);
            (
                (r, (d.take_hw_trigger_changed(), d.hw_state_changed())),
                mask,
            )
        });
        let (r, (hw_trigger, hw_state)) = r;
        if hw_trigger {
            fx.push(Effect::HwTriggerChanged);
        }
        if hw_state {
            fx.push(Effect::HwStateChanged);
        }
        kick(fx, mask);
        r.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vgic::VcpuMask;

    const B: AccessWidth = AccessWidth::Byte;
    const H: AccessWidth = AccessWidth::Half;
    const W: AccessWidth = AccessWidth::Word;
    const D: AccessWidth = AccessWidth::Double;

    fn mpidr(aff1: u64, aff0: u64) -> u64 {
        0x8000_0000 | (aff1 << 8) | aff0
    }

    /// Four vCPUs at Aff1.Aff0 = 0.0, 0.1, 1.0, 1.1; 96 SPIs (INTIDs 32-127).
    fn dev() -> (Arc<Vgic>, Gicv3Distributor) {
        let mpidrs = [mpidr(0, 0), mpidr(0, 1), mpidr(1, 0), mpidr(1, 1)];
        let vgic = Arc::new(Vgic::new_v3(&mpidrs, 96).unwrap());
        (vgic.clone(), Gicv3Distributor::new(vgic))
    }

    /// Clears GICR_WAKER.ProcessorSleep of every redistributor, as each booting CPU does.
    fn wake_all(v: &Vgic) {
        for c in 0..v.nr_vcpus() {
            v.with_dist(|d| ((), d.set_sleep(c, false)));
        }
    }

    fn rd(d: &Gicv3Distributor, off: u64, w: AccessWidth) -> Result<u64, MmioError> {
        d.read(AccessCtx { vcpu: 0 }, off, w, &mut Effects::new())
    }

    fn wr(d: &Gicv3Distributor, off: u64, w: AccessWidth, v: u64) -> VcpuMask {
        let mut fx = Effects::new();
        d.write(AccessCtx { vcpu: 0 }, off, w, v, &mut fx).unwrap();
        fx.iter()
            .map(|e| match e {
                Effect::KickVcpus(m) => m,
                _ => 0,
            })
            .sum()
    }

    #[test]
    fn identification_and_type_registers_read_as_specified() {
        let (_, d) = dev();
        let cases: &[(u64, u64)] = &[
            // ARE (bit 4) and DS (bit 6) read as one, groups disabled at reset.
            (CTLR, 0x50),
            // ITLinesNumber 3 (INTIDs up to 127), IDbits 9, A3V, RSS; no LPIs, no MBIS,
            // SecurityExtn 0, CPUNumber 0 (ARE cannot be cleared).
            (TYPER, 3 | (9 << 19) | (1 << 24) | (1 << 26)),
            (IIDR, 0x6b00_043b),
            // GICD_PIDR2.ArchRev == 3 at 0xFFE8.
            (0xffe8, 0x30),
            (0xfff0, 0x0d),
            (0xfffc, 0xb1),
            (0xffe0, 0),
            // TYPER2, STATUSR, SETSPI_NSR: RAZ.
            (0x000c, 0),
            (0x0010, 0),
            (0x0040, 0),
        ];
        for &(off, want) in cases {
            assert_eq!(rd(&d, off, W), Ok(want), "offset {off:#x}");
        }
    }

    #[test]
    fn ctlr_keeps_group_enables_and_ignores_are_and_ds_writes() {
        let (v, d) = dev();
        assert_eq!(
            wr(&d, CTLR, W, 0x2),
            0b1111,
            "enabling a group kicks every vCPU"
        );
        assert_eq!(rd(&d, CTLR, W), Ok(0x52));
        wr(&d, CTLR, W, 0x1);
        assert_eq!(rd(&d, CTLR, W), Ok(0x51));
        assert_eq!(wr(&d, CTLR, W, 0x1), 0, "no change, no kick");
        assert_eq!(v.nr_irqs(), 128);
    }

    #[test]
    fn sgi_and_ppi_parts_are_raz_wi_with_affinity_routing() {
        let (_, d) = dev();
        let cases: &[(u64, AccessWidth, u64)] = &[
            (0x0080, W, u64::from(u32::MAX)), // IGROUPR0
            (0x0100, W, u64::from(u32::MAX)), // ISENABLER0
            (0x0200, W, u64::from(u32::MAX)), // ISPENDR0
            (0x0400, W, u64::from(u32::MAX)), // IPRIORITYR0
            (0x041c, B, 0xff),                // IPRIORITYR7 byte
            (0x0800, W, u64::from(u32::MAX)), // ITARGETSR0
            (0x0c00, W, u64::from(u32::MAX)), // ICFGR0
            (0x0c04, W, u64::from(u32::MAX)), // ICFGR1
            (0x0d04, W, u64::from(u32::MAX)), // IGRPMODR1
            (0x0e08, W, u64::from(u32::MAX)), // NSACR2
            (0x0f00, W, u64::from(u32::MAX)), // SGIR
            (0x0f20, B, 0xff),                // SPENDSGIR0
            (0x6000, D, u64::MAX),            // IROUTER0 (reserved)
        ];
        for &(off, w, v) in cases {
            wr(&d, off, w, v);
            assert_eq!(rd(&d, off, w), Ok(0), "offset {off:#x}");
        }
    }

    #[test]
    fn enable_set_and_clear_registers_share_state() {
        let (_, d) = dev();
        wr(&d, 0x0104, W, 0x8000_0005); // ISENABLER1: INTIDs 32, 34, 63
        assert_eq!(rd(&d, 0x0104, W), Ok(0x8000_0005));
        assert_eq!(rd(&d, 0x0184, W), Ok(0x8000_0005));
        wr(&d, 0x0184, W, 0x1); // ICENABLER1: INTID 32
        assert_eq!(rd(&d, 0x0104, W), Ok(0x8000_0004));
        // Writing zeros changes nothing.
        wr(&d, 0x0104, W, 0);
        wr(&d, 0x0184, W, 0);
        assert_eq!(rd(&d, 0x0104, W), Ok(0x8000_0004));
        // INTIDs 128+ do not exist: RAZ/WI.
        wr(&d, 0x0110, W, u64::from(u32::MAX));
        assert_eq!(rd(&d, 0x0110, W), Ok(0));
    }

    #[test]
    fn pending_of_a_disabled_interrupt_is_kept_and_visible() {
        let (v, d) = dev();
        v.raise_edge(40).unwrap();
        assert_eq!(rd(&d, 0x0204, W), Ok(1 << 8), "ISPENDR1 shows INTID 40");
        assert_eq!(rd(&d, 0x0284, W), Ok(1 << 8), "ICPENDR1 reads the same");
        wr(&d, 0x0204, W, 1 << 9); // ISPENDR: INTID 41 too
        assert_eq!(rd(&d, 0x0204, W), Ok(0b11 << 8));
        wr(&d, 0x0284, W, 1 << 8); // ICPENDR: INTID 40
        assert_eq!(rd(&d, 0x0204, W), Ok(1 << 9));
    }

    #[test]
    fn level_line_shows_in_ispendr_and_icpendr_cannot_clear_it() {
        let (v, d) = dev();
        v.set_spi_level(33, true).unwrap();
        assert_eq!(rd(&d, 0x0204, W), Ok(0b10));
        wr(&d, 0x0284, W, 0b10);
        assert_eq!(rd(&d, 0x0204, W), Ok(0b10), "still asserted");
        v.set_spi_level(33, false).unwrap();
        assert_eq!(rd(&d, 0x0204, W), Ok(0));
    }

    #[test]
    fn active_set_and_clear() {
        let (_, d) = dev();
        wr(&d, 0x0304, W, 0xf0); // ISACTIVER1
        assert_eq!(rd(&d, 0x0384, W), Ok(0xf0));
        wr(&d, 0x0384, W, 0x30); // ICACTIVER1
        assert_eq!(rd(&d, 0x0304, W), Ok(0xc0));
    }

    #[test]
    fn group_register_is_read_write() {
        let (_, d) = dev();
        wr(&d, 0x0084, W, 0xdead_beef);
        assert_eq!(rd(&d, 0x0084, W), Ok(0xdead_beef));
        wr(&d, 0x0084, W, 0x1);
        assert_eq!(rd(&d, 0x0084, W), Ok(0x1));
    }

    #[test]
    fn priorities_are_byte_accessible_and_keep_five_bits() {
        let (_, d) = dev();
        wr(&d, 0x0420, W, 0x4433_2211); // INTIDs 32-35
        assert_eq!(rd(&d, 0x0420, W), Ok(0x4030_2010));
        wr(&d, 0x0422, B, 0xff); // INTID 34
        assert_eq!(rd(&d, 0x0420, W), Ok(0x40f8_2010));
        let bytes: alloc::vec::Vec<_> = (0..4).map(|k| rd(&d, 0x0420 + k, B).unwrap()).collect();
        assert_eq!(bytes, [0x10, 0x20, 0xf8, 0x40]);
    }

    #[test]
    fn icfgr_of_spis_is_programmable() {
        let (_, d) = dev();
        assert_eq!(rd(&d, 0x0c08, W), Ok(0), "SPIs reset level-sensitive");
        // Int_config[1] of INTIDs 32 and 47 edge; Int_config[0] bits are RES0.
        wr(&d, 0x0c08, W, 0x8000_0003);
        assert_eq!(rd(&d, 0x0c08, W), Ok(0x8000_0002));
    }

    #[test]
    fn icfgr_of_a_passthrough_spi_asks_for_the_physical_trigger_to_follow() {
        let (v, d) = dev();
        v.map_hw_spi(33, 33).unwrap();
        let write = |value: u64| {
            let mut fx = Effects::new();
            d.write(AccessCtx { vcpu: 0 }, 0x0c08, W, value, &mut fx)
                .unwrap();
            fx.iter().any(|e| e == Effect::HwTriggerChanged)
        };
        assert!(
            !write(0b10),
            "INTID 32 (not passthrough) edge: nothing to do"
        );
        assert!(write(0b1010), "INTID 33 edge");
        assert_eq!(v.edge_triggered(33), Ok(true));
        assert!(!write(0b1010), "unchanged");
        assert!(write(0), "INTID 33 level again");
        assert_eq!(v.edge_triggered(33), Ok(false));
    }

    #[test]
    fn pending_and_active_writes_of_a_passthrough_spi_ask_for_the_physical_state_to_follow() {
        let (v, d) = dev();
        v.map_hw_spi(33, 33).unwrap();
        let write = |offset: u64, value: u64| {
            let mut fx = Effects::new();
            d.write(AccessCtx { vcpu: 0 }, offset, W, value, &mut fx)
                .unwrap();
            fx.iter().any(|e| e == Effect::HwStateChanged)
        };
        // GICD_ISPENDR1, ICPENDR1, ISACTIVER1, ICACTIVER1: INTIDs 32-63.
        for offset in [0x0204, 0x0284, 0x0304, 0x0384] {
            assert!(
                !write(offset, 0b01),
                "{offset:#x}: INTID 32 is not passthrough"
            );
            assert!(write(offset, 0b10), "{offset:#x}: INTID 33");
            let mut n = 0;
            v.take_phys_requests(|p, _| {
                assert_eq!(p, 33);
                n += 1;
            });
            assert_eq!(n, 1, "{offset:#x}");
        }
        assert!(!write(0x0104, 0b10), "GICD_ISENABLER1: nothing physical");
    }

    #[test]
    fn irouter_routes_by_affinity_in_64_or_32_bit_accesses() {
        let (v, d) = dev();
        wake_all(&v);
        wr(&d, CTLR, W, 0x2);
        wr(&d, 0x0084, W, u64::from(u32::MAX)); // Group 1
        wr(&d, 0x0104, W, u64::from(u32::MAX)); // enabled
        let irouter = |intid: u64| IROUTER + 8 * intid;
        // INTID 40 -> Aff1.Aff0 = 1.0 = vCPU 2, with RES0 bits set that must not stick.
        wr(&d, irouter(40), D, 0xffff_ff00_0000_0100 | (1 << 30));
        assert_eq!(rd(&d, irouter(40), D), Ok(0x100));
        assert_eq!(v.raise_edge(40), Ok(0b0100));
        // Upper word alone: Aff3 = 0 keeps vCPU 2; lower word alone: Aff0 = 1 -> vCPU 3.
        wr(&d, irouter(41), W, 0x101);
        wr(&d, irouter(41) + 4, W, 0);
        assert_eq!(rd(&d, irouter(41), W), Ok(0x101));
        assert_eq!(rd(&d, irouter(41) + 4, W), Ok(0));
        assert_eq!(v.raise_edge(41), Ok(0b1000));
        // No vCPU with that affinity: pending, delivered nowhere.
        wr(&d, irouter(42), D, 0x0005_0000);
        assert_eq!(v.raise_edge(42), Ok(0));
    }

    #[test]
    fn irm_routes_to_one_awake_vcpu() {
        let (v, d) = dev();
        wr(&d, CTLR, W, 0x2);
        wr(&d, 0x0084, W, u64::from(u32::MAX));
        wr(&d, 0x0104, W, u64::from(u32::MAX));
        wr(&d, IROUTER + 8 * 50, D, 1 << 31);
        assert_eq!(rd(&d, IROUTER + 8 * 50, D), Ok(1 << 31));
        // Every redistributor asleep (ProcessorSleep == 1): nobody to take it.
        for c in 0..4 {
            v.with_dist(|dd| ((), dd.set_sleep(c, true)));
        }
        assert_eq!(v.raise_edge(50), Ok(0));
        v.with_dist(|dd| ((), dd.set_sleep(1, false)));
        v.with_dist(|dd| ((), dd.set_sleep(3, false)));
        assert_eq!(v.raise_edge(50), Ok(0b0010), "lowest awake vCPU");
    }

    #[test]
    fn wrong_widths_are_refused_and_reserved_space_is_raz_wi() {
        let (_, d) = dev();
        let bad: &[(u64, AccessWidth)] = &[
            (CTLR, B),
            (CTLR, H),
            (CTLR, D),
            (TYPER, B),
            (0x0104, B), // ISENABLER: word only
            (0x0104, D),
            (0x0420, H), // IPRIORITYR: byte or word
            (0x0420, D),
            (0x0c08, B), // ICFGR: word only
            (IROUTER + 8 * 40, B),
            (IROUTER + 8 * 40, H),
            (0xffe8, B),
            (0x0422, W), // misaligned word
            (IROUTER + 8 * 40 + 4, D),
        ];
        for &(off, w) in bad {
            assert_eq!(
                rd(&d, off, w),
                Err(MmioError::BadWidth),
                "read {off:#x} {w:?}"
            );
            let mut fx = Effects::new();
            assert_eq!(
                d.write(AccessCtx { vcpu: 0 }, off, w, 0, &mut fx),
                Err(MmioError::BadWidth),
                "write {off:#x} {w:?}"
            );
        }
        for off in [0x0014u64, 0x1000, 0x5ffc, 0x8000, 0xc000, 0xffcc] {
            wr(&d, off, W, u64::from(u32::MAX));
            assert_eq!(rd(&d, off, W), Ok(0), "reserved {off:#x}");
        }
        assert_eq!(rd(&d, GICD_V3_SIZE, W), Err(MmioError::OutOfRange));
    }
}
