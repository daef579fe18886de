//! Emulated GICv3 redistributors: one device covering the contiguous region of every vCPU's
//! redistributor, so the lead maps a single range. Each vCPU has a 128 KiB frame pair
//! (IHI 0069H, "The GIC Redistributor register map"): RD_base (64 KiB: control, type,
//! wake) followed by SGI_base (64 KiB: the SGI and PPI interrupt arrays). vCPU n's frames start
//! at `n * 0x20000`; any vCPU may access any frame (Linux walks them reading GICR_TYPER until
//! it finds its own affinity or the Last bit).
//!
//! No LPIs: GICR_CTLR.EnableLPIs, GICR_PROPBASER, GICR_PENDBASER, GICR_SETLPIR... are RAZ/WI.
//! GICR_WAKER implements the ProcessorSleep / ChildrenAsleep handshake: ChildrenAsleep follows
//! ProcessorSleep at once; while ProcessorSleep == 1 no interrupt is forwarded to the vCPU.
//! Redistributors come out of reset awake (ProcessorSleep == 0), as under KVM: guests such as
//! kvm-unit-tests or Zephyr expect firmware to have woken them.
#![forbid(unsafe_code)]

use alloc::sync::Arc;

use tock_registers::LocalRegisterCopy;

use super::{AccessCtx, AccessWidth, Effect, Effects, MmioDevice, MmioError};
use crate::vgic::Affinity;
use crate::vgic::Vgic;
use crate::vgic::dist::bit;
use crate::vgic::regs::{
    self, GICR_TYPER, GICR_WAKER, Widths, Window, check, read_arrays, write_arrays,
};

/// Size of one vCPU's RD_base + SGI_base frames.
pub const GICR_FRAME_STRIDE: u64 = 0x2_0000;
const SGI_BASE: u64 = 0x1_0000;

const CTLR: u64 = 0x0000;
const IIDR: u64 = 0x0004;
const TYPER: u64 = 0x0008;
const TYPER_HI: u64 = 0x000c;
const WAKER: u64 = 0x0014;
const ID_BLOCK: u64 = 0xffd0;

pub struct Gicv3Redistributors {
    vgic: Arc<Vgic>,
}

impl Gicv3Redistributors {
    pub fn new(vgic: Arc<Vgic>) -> Self {
        Gicv3Redistributors { vgic }
    }

    /// GICR_TYPER of vCPU `n`'s redistributor.
    fn typer(&self, n: usize) -> u64 {
        let aff = Affinity::from_mpidr(self.vgic.mpidr(n).unwrap_or(0));
        let last = n + 1 == self.vgic.nr_vcpus();
        let mut r = LocalRegisterCopy::<u64, GICR_TYPER::Register>::new(0);
        r.modify(
            GICR_TYPER::AFFINITY.val(u64::from(aff.gicr_value()))
                + GICR_TYPER::PROCESSOR_NUMBER.val(n as u64)
                + GICR_TYPER::LAST.val(u64::from(last)),
        );
        r.get()
    }

    /// Splits an offset into (vCPU frame, offset in the frame).
    fn frame(&self, offset: u64) -> Result<(usize, u64), MmioError> {
        if offset >= self.size() {
            return Err(MmioError::OutOfRange);
        }
        Ok((
            (offset / GICR_FRAME_STRIDE) as usize,
            offset % GICR_FRAME_STRIDE,
        ))
    }
}

impl MmioDevice for Gicv3Redistributors {
    fn size(&self) -> u64 {
        self.vgic.nr_vcpus() as u64 * GICR_FRAME_STRIDE
    }

    fn read(
        &self,
        _ctx: AccessCtx,
        offset: u64,
        width: AccessWidth,
        _fx: &mut Effects,
    ) -> Result<u64, MmioError> {
        let (n, off) = self.frame(offset)?;
        if off >= SGI_BASE {
            let w = Window {
                bank: n,
                lo: 0,
                hi: 32,
            };
            let off = off - SGI_BASE;
            return self
                .vgic
                .with_dist(|d| {
                    let r = read_arrays(d, w, off, width)
                        .unwrap_or_else(|| check(off, width, Widths::Any).map(|()| 0));
                    (r, 0)
                })
                .0;
        }
        // Match on the word holding the access (see gicv3_dist.rs).
        match off & !3 {
            // No LPIs, writes never pending: EnableLPIs, RWP, UWP all 0.
            CTLR => check(off, width, Widths::Word).map(|()| 0),
            IIDR => check(off, width, Widths::Word).map(|()| u64::from(regs::iidr())),
            TYPER | TYPER_HI => check(off, width, Widths::WordOrDouble)
                .map(|()| regs::read_u64_part(self.typer(n), off, width)),
            WAKER => check(off, width, Widths::Word).map(|()| {
                let asleep = self.vgic.with_dist(|d| (d.asleep & bit(n) != 0, 0)).0;
                let mut r = LocalRegisterCopy::<u32, GICR_WAKER::Register>::new(0);
                r.modify(
                    GICR_WAKER::PROCESSOR_SLEEP.val(u32::from(asleep))
                        + GICR_WAKER::CHILDREN_ASLEEP.val(u32::from(asleep)),
                );
                u64::from(r.get())
            }),
            ID_BLOCK..SGI_BASE => check(off, width, Widths::Word)
                .map(|()| u64::from(regs::id_register(off - ID_BLOCK, 3))),
            _ => check(off, width, Widths::Any).map(|()| 0),
        }
    }

    fn write(
        &self,
        _ctx: AccessCtx,
        offset: u64,
        width: AccessWidth,
        value: u64,
        fx: &mut Effects,
    ) -> Result<(), MmioError> {
        let (n, off) = self.frame(offset)?;
        let (r, mask) = if off >= SGI_BASE {
            let w = Window {
                bank: n,
                lo: 0,
                hi: 32,
            };
            let off = off - SGI_BASE;
            self.vgic.with_dist(|d| {
                let r = write_arrays(d, w, off, width, value)
                    .unwrap_or_else(|| check(off, width, Widths::Any).map(|()| 0));
                let mask = *r.as_ref().unwrap_or(&0);
                (r, mask)
            })
        } else {
            match off & !3 {
                CTLR | IIDR => (check(off, width, Widths::Word).map(|()| 0), 0),
                TYPER | TYPER_HI => (check(off, width, Widths::WordOrDouble).map(|()| 0), 0),
                WAKER => match check(off, width, Widths::Word) {
                    Ok(()) => {
                        let v = LocalRegisterCopy::<u32, GICR_WAKER::Register>::new(value as u32);
                        let sleep = v.is_set(GICR_WAKER::PROCESSOR_SLEEP);
                        let m = self.vgic.with_dist(|d| ((), d.set_sleep(n, sleep))).1;
                        (Ok(m), m)
                    }
                    Err(e) => (Err(e), 0),
                },
                ID_BLOCK..SGI_BASE => (check(off, width, Widths::Word).map(|()| 0), 0),
                _ => (check(off, width, Widths::Any).map(|()| 0), 0),
            }
        };
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
    const W: AccessWidth = AccessWidth::Word;
    const D: AccessWidth = AccessWidth::Double;

    fn dev(n: usize) -> (Arc<Vgic>, Gicv3Redistributors) {
        let mpidrs: alloc::vec::Vec<u64> = (0..n as u64)
            .map(|i| 0x8000_0000 | ((i / 4) << 8) | (i % 4))
            .collect();
        let vgic = Arc::new(Vgic::new_v3(&mpidrs, 32).unwrap());
        (vgic.clone(), Gicv3Redistributors::new(vgic))
    }

    fn rd(d: &Gicv3Redistributors, off: u64, w: AccessWidth) -> Result<u64, MmioError> {
        d.read(AccessCtx { vcpu: 0 }, off, w, &mut Effects::new())
    }

    fn wr(d: &Gicv3Redistributors, off: u64, w: AccessWidth, v: u64) -> VcpuMask {
        let mut fx = Effects::new();
        d.write(AccessCtx { vcpu: 0 }, off, w, v, &mut fx).unwrap();
        fx.iter()
            .map(|e| match e {
                Effect::KickVcpus(m) => m,
                _ => 0,
            })
            .sum()
    }

    fn sgi(n: u64, off: u64) -> u64 {
        n * GICR_FRAME_STRIDE + SGI_BASE + off
    }

    #[test]
    fn region_covers_one_frame_pair_per_vcpu() {
        let (_, d) = dev(6);
        assert_eq!(d.size(), 6 * 0x20000);
        assert_eq!(rd(&d, 6 * 0x20000, W), Err(MmioError::OutOfRange));
        assert_eq!(rd(&d, 6 * 0x20000 - 4, W), Ok(0));
    }

    #[test]
    fn typer_reports_affinity_processor_number_and_last() {
        let (_, d) = dev(6);
        for n in 0..6u64 {
            let aff = ((n / 4) << 8) | (n % 4);
            let last = if n == 5 { 1 << 4 } else { 0 };
            let want = (aff << 32) | (n << 8) | last;
            let base = n * GICR_FRAME_STRIDE;
            assert_eq!(rd(&d, base + TYPER, D), Ok(want), "vCPU {n}");
            assert_eq!(
                rd(&d, base + TYPER, W),
                Ok(want & 0xffff_ffff),
                "vCPU {n} low"
            );
            assert_eq!(rd(&d, base + TYPER_HI, W), Ok(want >> 32), "vCPU {n} high");
        }
    }

    #[test]
    fn linux_style_walk_finds_every_vcpu_and_stops_at_last() {
        let (v, d) = dev(5);
        let mut found = alloc::vec::Vec::new();
        let mut base = 0;
        loop {
            let typer = rd(&d, base + TYPER, D).unwrap();
            found.push(typer >> 32);
            if typer & (1 << 4) != 0 {
                break;
            }
            base += GICR_FRAME_STRIDE;
        }
        let want: alloc::vec::Vec<u64> = (0..5)
            .map(|i| Affinity::from_mpidr(v.mpidr(i).unwrap()).gicr_value() as u64)
            .collect();
        assert_eq!(found, want);
    }

    #[test]
    fn redistributors_come_out_of_reset_awake() {
        // As under KVM: a guest that expects firmware to have woken its redistributor
        // (kvm-unit-tests, Zephyr) gets interrupts without touching GICR_WAKER.
        let (v, d) = dev(2);
        for n in 0..2 {
            assert_eq!(rd(&d, n * GICR_FRAME_STRIDE + WAKER, W), Ok(0), "vCPU {n}");
        }
        v.with_dist(|dd| {
            dd.write_bits(1, crate::vgic::dist::BitReg::SetEnable, 0, 1 << 3);
            ((), dd.set_group_enables(true, true))
        });
        let sgi3_to_vcpu1 = (3 << 24) | 0b10;
        assert_eq!(
            v.send_sgi_v3(0, sgi3_to_vcpu1, crate::vgic::SgiRegister::Sgi1r),
            Ok(0b10),
            "forwarded to the awake redistributor"
        );
    }

    #[test]
    fn waker_handshake() {
        let (_, d) = dev(2);
        let waker = GICR_FRAME_STRIDE + WAKER;
        assert_eq!(
            wr(&d, waker, W, 0b010),
            0b10,
            "sleeping: the vCPU lets go of its LRs"
        );
        assert_eq!(
            rd(&d, waker, W),
            Ok(0b110),
            "ChildrenAsleep follows ProcessorSleep at once"
        );
        assert_eq!(
            rd(&d, WAKER, W),
            Ok(0),
            "vCPU 0's redistributor still awake"
        );
        assert_eq!(wr(&d, waker, W, 0), 0b10, "waking kicks the woken vCPU");
        assert_eq!(rd(&d, waker, W), Ok(0), "ChildrenAsleep follows at once");
        // ChildrenAsleep is read-only.
        wr(&d, waker, W, 0b100);
        assert_eq!(rd(&d, waker, W), Ok(0));
        wr(&d, waker, W, 0b010);
        assert_eq!(rd(&d, waker, W), Ok(0b110));
    }

    #[test]
    fn rd_base_identification_and_lpi_registers() {
        let (_, d) = dev(1);
        assert_eq!(rd(&d, IIDR, W), Ok(0x6b00_043b));
        assert_eq!(rd(&d, 0xffe8, W), Ok(0x30), "GICR_PIDR2.ArchRev == 3");
        for off in [CTLR, 0x0010, 0x0040, 0x0070, 0x0078, 0x00a0, 0x00b0] {
            wr(&d, off, if off >= 0x40 { D } else { W }, u64::MAX);
            assert_eq!(rd(&d, off, W), Ok(0), "{off:#x}");
        }
    }

    #[test]
    fn sgi_base_arrays_are_per_vcpu() {
        let (_, d) = dev(2);
        wr(&d, sgi(1, 0x0100), W, 0x0800_0001); // ISENABLER0 of vCPU 1: SGI 0, PPI 27
        assert_eq!(rd(&d, sgi(1, 0x0100), W), Ok(0x0800_0001));
        assert_eq!(rd(&d, sgi(0, 0x0100), W), Ok(0));
        wr(&d, sgi(1, 0x0180), W, 1);
        assert_eq!(rd(&d, sgi(1, 0x0180), W), Ok(0x0800_0000));
        wr(&d, sgi(0, 0x0080), W, u64::from(u32::MAX)); // IGROUPR0
        assert_eq!(rd(&d, sgi(0, 0x0080), W), Ok(u64::from(u32::MAX)));
        assert_eq!(rd(&d, sgi(1, 0x0080), W), Ok(0));
        // Pending and active, set and clear.
        wr(&d, sgi(0, 0x0200), W, 0b110);
        assert_eq!(rd(&d, sgi(0, 0x0280), W), Ok(0b110));
        wr(&d, sgi(0, 0x0280), W, 0b010);
        assert_eq!(rd(&d, sgi(0, 0x0200), W), Ok(0b100));
        wr(&d, sgi(0, 0x0300), W, 1 << 27);
        assert_eq!(rd(&d, sgi(0, 0x0380), W), Ok(1 << 27));
        wr(&d, sgi(0, 0x0380), W, 1 << 27);
        assert_eq!(rd(&d, sgi(0, 0x0300), W), Ok(0));
        // The next registers of each array (extended PPI range) do not exist.
        for off in [0x0084u64, 0x0104, 0x0204, 0x0420, 0x0c08] {
            wr(&d, sgi(0, off), W, u64::from(u32::MAX));
            assert_eq!(rd(&d, sgi(0, off), W), Ok(0), "{off:#x}");
        }
    }

    #[test]
    fn sgi_base_priorities_bytewise() {
        let (_, d) = dev(1);
        wr(&d, sgi(0, 0x041b), B, 0xa5); // PPI 27
        assert_eq!(rd(&d, sgi(0, 0x0418), W), Ok(0xa000_0000));
        wr(&d, sgi(0, 0x0400), W, 0x8060_4020);
        assert_eq!(rd(&d, sgi(0, 0x0401), B), Ok(0x40));
    }

    #[test]
    fn icfgr0_is_read_only_edge_and_icfgr1_read_only_level() {
        let (_, d) = dev(1);
        assert_eq!(rd(&d, sgi(0, 0x0c00), W), Ok(0xaaaa_aaaa));
        wr(&d, sgi(0, 0x0c00), W, 0);
        assert_eq!(rd(&d, sgi(0, 0x0c00), W), Ok(0xaaaa_aaaa), "SGIs stay edge");
        assert_eq!(rd(&d, sgi(0, 0x0c04), W), Ok(0), "PPIs reset level");
        wr(&d, sgi(0, 0x0c04), W, 0x0080_0000); // PPI 27 edge
        assert_eq!(rd(&d, sgi(0, 0x0c04), W), Ok(0), "PPIs stay level");
    }

    #[test]
    fn icfgr1_of_a_hw_linked_ppi_reports_nothing_now_or_later() {
        // Only passthrough SPIs have a physical trigger the runtime reconfigures; a PPI's
        // change must not leave a HwTriggerChanged behind for the next distributor write.
        let (v, d) = dev(1);
        v.map_hw_ppi(0, 27, 27).unwrap();
        let mut fx = Effects::new();
        d.write(
            AccessCtx { vcpu: 0 },
            sgi(0, 0x0c04),
            W,
            0x0080_0000,
            &mut fx,
        )
        .unwrap();
        assert!(!fx.iter().any(|e| e == Effect::HwTriggerChanged));
        let dist = crate::vdev::gicv3_dist::Gicv3Distributor::new(v.clone());
        let mut fx = Effects::new();
        dist.write(AccessCtx { vcpu: 0 }, 0x0c08, W, 0, &mut fx)
            .unwrap();
        assert!(
            !fx.iter().any(|e| e == Effect::HwTriggerChanged),
            "a distributor write that changed no trigger reported one"
        );
    }

    #[test]
    fn redistributor_widths() {
        let (_, d) = dev(1);
        for &(off, w) in &[
            (CTLR, B),
            (WAKER, D),
            (WAKER, B),
            (TYPER, B),
            (TYPER + 2, AccessWidth::Half),
            (sgi(0, 0x0100), B),
            (sgi(0, 0x0400), D),
            (sgi(0, 0x0c00), B),
        ] {
            assert_eq!(rd(&d, off, w), Err(MmioError::BadWidth), "{off:#x} {w:?}");
        }
    }
}
