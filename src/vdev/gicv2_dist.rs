//! Emulated GICv2 distributor (GICD, 4 KiB), as the GICv2 architecture specification
//! IHI 0048B.b chapter 4 describes it for an implementation without the Security
//! Extensions: GICD_CTLR has EnableGrp0 and EnableGrp1, GICD_IGROUPR is read/write,
//! GICD_NSACR is RAZ/WI. The registers for INTIDs 0-31 are banked per CPU interface (the
//! accessing vCPU). GICD_ITARGETSR0-7 read as the accessing CPU's own bit, which Linux uses
//! to learn its CPU interface mask. GICD_SGIR raises SGIs with a source CPU; the per-source
//! pending state shows in GICD_SPENDSGIR / GICD_CPENDSGIR.
#![forbid(unsafe_code)]

use alloc::sync::Arc;

use tock_registers::LocalRegisterCopy;

use super::{AccessCtx, AccessWidth, Effect, Effects, MmioDevice, MmioError};
use crate::vgic::Vgic;
use crate::vgic::regs::{
    self, GICD_CTLR_V2, GICD_TYPER, Widths, Window, check, read_arrays, write_arrays,
};

/// Size of the GICv2 GICD frame.
pub const GICD_V2_SIZE: u64 = 0x1000;

const CTLR: u64 = 0x000;
const TYPER: u64 = 0x004;
const IIDR: u64 = 0x008;
const ITARGETSR: u64 = 0x800;
const ITARGETSR_END: u64 = 0xc00;
const SGIR: u64 = 0xf00;
const CPENDSGIR: u64 = 0xf10;
const SPENDSGIR: u64 = 0xf20;
const SPENDSGIR_END: u64 = 0xf30;
const ID_BLOCK: u64 = 0xfd0;

pub struct Gicv2Distributor {
    vgic: Arc<Vgic>,
}

impl Gicv2Distributor {
    pub fn new(vgic: Arc<Vgic>) -> Self {
        Gicv2Distributor { vgic }
    }

    fn typer(&self) -> u32 {
        let lines = self.vgic.nr_irqs().div_ceil(32) - 1;
        let cpus = self.vgic.nr_vcpus() as u32 - 1;
        let mut r = LocalRegisterCopy::<u32, GICD_TYPER::Register>::new(0);
        r.modify(GICD_TYPER::ITLINESNUMBER.val(lines) + GICD_TYPER::CPUNUMBER.val(cpus));
        r.get()
    }

    fn check_vcpu(&self, ctx: AccessCtx) -> Result<usize, MmioError> {
        // A vCPU index the VM does not have is the lead's bug, not the guest's: refuse.
        if ctx.vcpu < self.vgic.nr_vcpus() {
            Ok(ctx.vcpu)
        } else {
            Err(MmioError::OutOfRange)
        }
    }
}

impl MmioDevice for Gicv2Distributor {
    fn size(&self) -> u64 {
        GICD_V2_SIZE
    }

    fn read(
        &self,
        ctx: AccessCtx,
        offset: u64,
        width: AccessWidth,
        _fx: &mut Effects,
    ) -> Result<u64, MmioError> {
        if offset >= GICD_V2_SIZE {
            return Err(MmioError::OutOfRange);
        }
        let me = self.check_vcpu(ctx)?;
        let w = Window {
            bank: me,
            lo: 0,
            hi: self.vgic.nr_irqs(),
        };
        self.vgic
            .with_dist(|d| {
                // Match on the word holding the access so that a narrow access inside a word
                // register is checked against that register's widths.
                let r = match offset & !3 {
                    CTLR => check(offset, width, Widths::Word).map(|()| {
                        let mut r = LocalRegisterCopy::<u32, GICD_CTLR_V2::Register>::new(0);
                        r.modify(
                            GICD_CTLR_V2::ENABLE_GRP0.val(u32::from(d.grp0))
                                + GICD_CTLR_V2::ENABLE_GRP1.val(u32::from(d.grp1)),
                        );
                        u64::from(r.get())
                    }),
                    TYPER => check(offset, width, Widths::Word).map(|()| u64::from(self.typer())),
                    IIDR => check(offset, width, Widths::Word).map(|()| u64::from(regs::iidr())),
                    ITARGETSR..ITARGETSR_END => {
                        check(offset, width, Widths::ByteOrWord).map(|()| {
                            let first = (offset - ITARGETSR) as u32;
                            (0..width.bytes() as u32)
                                .map(|k| {
                                    let intid = first + k;
                                    let t = if intid < w.hi {
                                        d.read_itargets(me, intid)
                                    } else {
                                        0
                                    };
                                    u64::from(t) << (8 * k)
                                })
                                .sum()
                        })
                    }
                    // GICD_SGIR is write-only.
                    SGIR => check(offset, width, Widths::Word).map(|()| 0),
                    CPENDSGIR..SPENDSGIR_END => {
                        check(offset, width, Widths::ByteOrWord).map(|()| {
                            let first = ((offset - CPENDSGIR) % 0x10) as u32;
                            (0..width.bytes() as u32)
                                .map(|k| u64::from(d.read_sgi_sources(me, first + k)) << (8 * k))
                                .sum()
                        })
                    }
                    ID_BLOCK..GICD_V2_SIZE => check(offset, width, Widths::Word)
                        .map(|()| u64::from(regs::id_register(offset - ID_BLOCK, 2))),
                    _ => read_arrays(d, w, offset, width)
                        .unwrap_or_else(|| check(offset, width, Widths::Any).map(|()| 0)),
                };
                (r, 0)
            })
            .0
    }

    fn write(
        &self,
        ctx: AccessCtx,
        offset: u64,
        width: AccessWidth,
        value: u64,
        fx: &mut Effects,
    ) -> Result<(), MmioError> {
        if offset >= GICD_V2_SIZE {
            return Err(MmioError::OutOfRange);
        }
        let me = self.check_vcpu(ctx)?;
        let w = Window {
            bank: me,
            lo: 0,
            hi: self.vgic.nr_irqs(),
        };
        let (r, mask) = self.vgic.with_dist(|d| {
            // Match on the word holding the access so that a narrow access inside a word
            // register is checked against that register's widths.
            let r = match offset & !3 {
                CTLR => check(offset, width, Widths::Word).map(|()| {
                    let v = LocalRegisterCopy::<u32, GICD_CTLR_V2::Register>::new(value as u32);
                    d.set_group_enables(
                        v.is_set(GICD_CTLR_V2::ENABLE_GRP0),
                        v.is_set(GICD_CTLR_V2::ENABLE_GRP1),
                    )
                }),
                TYPER | IIDR | ID_BLOCK..GICD_V2_SIZE => {
                    check(offset, width, Widths::Word).map(|()| 0)
                }
                ITARGETSR..ITARGETSR_END => check(offset, width, Widths::ByteOrWord).map(|()| {
                    let first = (offset - ITARGETSR) as u32;
                    let mut m = 0;
                    for k in 0..width.bytes() as u32 {
                        // SGI and PPI targets are read-only; write_itargets ignores them.
                        m |= d.write_itargets(first + k, (value >> (8 * k)) as u8);
                    }
                    m
                }),
                SGIR => check(offset, width, Widths::Word).map(|()| d.write_sgir(me, value as u32)),
                CPENDSGIR..SPENDSGIR_END => check(offset, width, Widths::ByteOrWord).map(|()| {
                    let first = ((offset - CPENDSGIR) % 0x10) as u32;
                    let set = offset >= SPENDSGIR;
                    let mut m = 0;
                    for k in 0..width.bytes() as u32 {
                        let bits = (value >> (8 * k)) as u8;
                        m |= if set {
                            d.set_sgi_sources(me, first + k, bits)
                        } else {
                            d.clear_sgi_sources(me, first + k, bits)
                        };
                    }
                    m
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
        if mask != 0 {
            fx.push(Effect::KickVcpus(mask));
        }
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

    fn dev(n: usize) -> (Arc<Vgic>, Gicv2Distributor) {
        let vgic = Arc::new(Vgic::new_v2(n, 64).unwrap());
        (vgic.clone(), Gicv2Distributor::new(vgic))
    }

    fn rd(d: &Gicv2Distributor, cpu: usize, off: u64, w: AccessWidth) -> Result<u64, MmioError> {
        d.read(AccessCtx { vcpu: cpu }, off, w, &mut Effects::new())
    }

    fn wr(d: &Gicv2Distributor, cpu: usize, off: u64, w: AccessWidth, v: u64) -> VcpuMask {
        let mut fx = Effects::new();
        d.write(AccessCtx { vcpu: cpu }, off, w, v, &mut fx)
            .unwrap();
        fx.iter()
            .map(|e| match e {
                Effect::KickVcpus(m) => m,
                _ => 0,
            })
            .sum()
    }

    #[test]
    fn type_and_identification_registers() {
        let (_, d) = dev(4);
        let cases: &[(u64, u64)] = &[
            (CTLR, 0),
            // ITLinesNumber 2 (96 INTIDs), CPUNumber 3, SecurityExtn 0.
            (TYPER, 2 | (3 << 5)),
            (IIDR, 0x6b00_043b),
            (0xfe8, 0x20), // GICD_PIDR2.ArchRev == 2
            (0xff0, 0x0d),
            (0xffc, 0xb1),
        ];
        for &(off, want) in cases {
            assert_eq!(rd(&d, 0, off, W), Ok(want), "{off:#x}");
        }
    }

    #[test]
    fn ctlr_has_two_group_enables() {
        let (_, d) = dev(2);
        assert_eq!(wr(&d, 0, CTLR, W, 1), 0b11);
        assert_eq!(rd(&d, 1, CTLR, W), Ok(1));
        wr(&d, 0, CTLR, W, 0xffff_ffff);
        assert_eq!(rd(&d, 0, CTLR, W), Ok(0b11));
    }

    #[test]
    fn itargetsr_for_sgis_and_ppis_reads_the_accessing_cpu() {
        let (_, d) = dev(4);
        for cpu in 0..4 {
            let me = 1u64 << cpu;
            let word = me * 0x0101_0101;
            for reg in 0..8 {
                assert_eq!(rd(&d, cpu, ITARGETSR + 4 * reg, W), Ok(word), "cpu {cpu}");
            }
            assert_eq!(rd(&d, cpu, ITARGETSR + 27, B), Ok(me));
            wr(&d, cpu, ITARGETSR, W, 0);
            assert_eq!(rd(&d, cpu, ITARGETSR, W), Ok(word), "read-only");
        }
    }

    #[test]
    fn itargetsr_for_spis_is_a_bitmap_of_existing_cpus() {
        let (_, d) = dev(4);
        wr(&d, 0, ITARGETSR + 32, W, 0x0f02_ff01);
        assert_eq!(rd(&d, 0, ITARGETSR + 32, W), Ok(0x0f02_0f01));
        wr(&d, 1, ITARGETSR + 34, B, 0x04);
        assert_eq!(rd(&d, 2, ITARGETSR + 32, W), Ok(0x0f04_0f01));
        // INTIDs beyond the implemented SPIs are RAZ/WI.
        wr(&d, 0, ITARGETSR + 96, W, 0x0101_0101);
        assert_eq!(rd(&d, 0, ITARGETSR + 96, W), Ok(0));
    }

    #[test]
    fn uniprocessor_spis_target_the_one_cpu_whatever_itargetsr_holds() {
        // IHI 0048B 4.3.12: "In a uniprocessor implementation, all interrupts target the one
        // processor". A guest that reads CPUNumber 0 may never write ITARGETSR.
        let (v, d) = dev(1);
        wr(&d, 0, CTLR, W, 1);
        wr(&d, 0, 0x104, W, 1 << 8); // ISENABLER1: SPI 40
        assert_eq!(v.raise_edge(40), Ok(1), "delivered to CPU 0");
        // The stored bits still read back as written (kvm-unit-tests gicv2-mmio-up checks it).
        wr(&d, 0, ITARGETSR + 40, B, 0xff);
        assert_eq!(rd(&d, 0, ITARGETSR + 40, B), Ok(1));
        // With more than one CPU interface, an SPI targeting none goes nowhere.
        let (v, d) = dev(2);
        wr(&d, 0, CTLR, W, 1);
        wr(&d, 0, 0x104, W, 1 << 8);
        assert_eq!(v.raise_edge(40), Ok(0));
    }

    #[test]
    fn banked_registers_follow_the_accessing_cpu() {
        let (_, d) = dev(2);
        wr(&d, 1, 0x100, W, 0x0000_ffff); // ISENABLER0 as Linux writes it for SGIs
        assert_eq!(rd(&d, 1, 0x100, W), Ok(0xffff));
        assert_eq!(rd(&d, 0, 0x100, W), Ok(0));
        wr(&d, 0, 0x41b, B, 0xa0); // PPI 27 priority of CPU 0
        assert_eq!(rd(&d, 0, 0x418, W), Ok(0xa000_0000));
        assert_eq!(rd(&d, 1, 0x418, W), Ok(0));
        assert_eq!(rd(&d, 0, 0xc00, W), Ok(0xaaaa_aaaa), "SGIs edge, read-only");
        wr(&d, 0, 0xc00, W, 0);
        assert_eq!(rd(&d, 0, 0xc00, W), Ok(0xaaaa_aaaa));
    }

    #[test]
    fn spi_arrays_are_shared_by_all_cpus() {
        let (_, d) = dev(2);
        wr(&d, 0, 0x104, W, 0x10);
        assert_eq!(rd(&d, 1, 0x104, W), Ok(0x10));
        wr(&d, 1, 0x204, W, 0x30);
        assert_eq!(rd(&d, 0, 0x204, W), Ok(0x30));
        wr(&d, 0, 0x284, W, 0x10);
        assert_eq!(rd(&d, 1, 0x204, W), Ok(0x20));
        wr(&d, 0, 0x084, W, 0x1);
        assert_eq!(rd(&d, 1, 0x084, W), Ok(0x1));
    }

    #[test]
    fn sgir_raises_sgis_with_their_source_for_each_filter() {
        let cases: &[(usize, u64, [u8; 4])] = &[
            // (sender, GICD_SGIR value, SPENDSGIR byte of SGI 5 seen by CPUs 0-3)
            (0, (0b0110 << 16) | 5, [0, 0b0001, 0b0001, 0]),
            (2, (0b01 << 24) | 5, [0b0100, 0b0100, 0, 0b0100]),
            (3, (0b10 << 24) | (0xff << 16) | 5, [0, 0, 0, 0b1000]),
            (1, (0b11 << 24) | (0xff << 16) | 5, [0; 4]),
        ];
        for &(sender, v, want) in cases {
            let (_, d) = dev(4);
            wr(&d, sender, SGIR, W, v);
            for (cpu, &w) in want.iter().enumerate() {
                assert_eq!(
                    rd(&d, cpu, SPENDSGIR + 5, B),
                    Ok(u64::from(w)),
                    "sender {sender} value {v:#x} cpu {cpu}"
                );
                let pending = rd(&d, cpu, 0x200, W).unwrap() & (1 << 5) != 0;
                assert_eq!(pending, w != 0, "ISPENDR0 of cpu {cpu}");
            }
        }
    }

    #[test]
    fn sgir_kicks_targets_whose_sgi_is_deliverable() {
        let (_, d) = dev(4);
        wr(&d, 0, SGIR, W, (0b0110 << 16) | 5);
        // Disabled SGIs: nobody to kick yet.
        let (_, d2) = dev(4);
        for cpu in 0..4 {
            wr(&d2, cpu, 0x100, W, 0xffff);
        }
        wr(&d2, 0, CTLR, W, 1);
        assert_eq!(wr(&d2, 0, SGIR, W, (0b0110 << 16) | 5), 0b0110);
        assert_eq!(wr(&d, 0, SGIR, W, (0b01 << 24) | 5), 0);
    }

    #[test]
    fn spendsgir_and_cpendsgir_work_per_source() {
        let (_, d) = dev(4);
        wr(&d, 1, SPENDSGIR, W, 0x0000_0900); // SGI 1 pending from CPUs 0 and 3
        assert_eq!(rd(&d, 1, SPENDSGIR, W), Ok(0x0900));
        assert_eq!(rd(&d, 1, CPENDSGIR, W), Ok(0x0900));
        assert_eq!(rd(&d, 0, SPENDSGIR, W), Ok(0), "banked per target CPU");
        wr(&d, 1, CPENDSGIR + 1, B, 0x01);
        assert_eq!(rd(&d, 1, SPENDSGIR + 1, B), Ok(0x08));
        // Source bits of CPUs that do not exist are ignored.
        wr(&d, 1, SPENDSGIR + 2, B, 0xf0);
        assert_eq!(rd(&d, 1, SPENDSGIR + 2, B), Ok(0));
        // GICD_ISPENDR0 / ICPENDR0 SGI bits are WI.
        wr(&d, 1, 0x280, W, 0xffff);
        assert_eq!(rd(&d, 1, SPENDSGIR, W), Ok(0x0800));
        wr(&d, 2, 0x200, W, 0xffff);
        assert_eq!(rd(&d, 2, 0x200, W), Ok(0));
    }

    #[test]
    fn gicv2_widths() {
        let (_, d) = dev(1);
        for &(off, w) in &[
            (CTLR, B),
            (CTLR, D),
            (0x100, B),
            (0x400, H),
            (ITARGETSR + 32, H),
            (ITARGETSR + 32, D),
            (0xc00, B),
            (SGIR, B),
            (SPENDSGIR, H),
            (0xfe8, B),
        ] {
            assert_eq!(
                rd(&d, 0, off, w),
                Err(MmioError::BadWidth),
                "{off:#x} {w:?}"
            );
        }
        assert_eq!(rd(&d, 0, GICD_V2_SIZE, W), Err(MmioError::OutOfRange));
        assert_eq!(rd(&d, 1, CTLR, W), Err(MmioError::OutOfRange), "no vCPU 1");
        // Reserved and implementation-defined space: RAZ/WI.
        for off in [0x00cu64, 0x040, 0xd00, 0xe00, 0xf04, 0xf30, 0xfcc] {
            wr(&d, 0, off, W, u64::from(u32::MAX));
            assert_eq!(rd(&d, 0, off, W), Ok(0), "{off:#x}");
        }
    }
}
