//! The console of a boot that has not read the DTB yet, or cannot use it: where the hypervisor
//! prints an early exception, and why it refuses a DTB. A Pi 4 owner whose board stops early
//! must see a reason on the serial line, not silence.
//!
//! Three sources, best first:
//! 1. The DTB's own console, found exactly as [`super::Platform::parse`] finds it
//!    (`/chosen/stdout-path`, else the first enabled PL011; `reg` translated through every
//!    parent bus's `ranges`), even when the rest of the DTB is refused.
//! 2. The board the DTB's root `compatible` names: a BCM2711 (Pi 4 Model B, Pi 400, CM4) has
//!    its mini UART and its PL011 at known CPU addresses (low-peripheral mode, the default).
//! 3. Where the loader put the hypervisor, when no DTB can be read (and before any is read,
//!    with the MMU off and no heap): below 1 GiB it cannot be QEMU virt, whose RAM starts at
//!    1 GiB, and the Pi 4 firmware loads kernel8.img low, so the Pi 4's two UARTs; anywhere else
//!    QEMU virt's PL011.
//!
//! Guesses (2, 3) name both of the Pi 4's UARTs, since either may be wired to GPIO 14/15; both
//! are device registers on that SoC, so writing to the one not in use is harmless.
#![forbid(unsafe_code)]

use fdt::Fdt;

use super::{BCM2711_COMPATIBLE, PlatformError, Uart, UartKind, tree};
use crate::addr::PhysAddr;

/// A UART to print on without the DTB's help.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct EarlyUart {
    pub kind: UartKind,
    /// CPU physical address of the registers.
    pub base: PhysAddr,
}

/// The Raspberry Pi 4's mini UART (UART1): bus address 0x7e215040, CPU address 0xfe215040
/// through `/soc` `ranges` in low-peripheral mode (BCM2711 ARM Peripherals §1.2.4).
pub const RPI4_MINI_UART: EarlyUart = EarlyUart {
    kind: UartKind::Bcm2835Aux,
    base: PhysAddr::new(0xfe21_5040),
};

/// The Raspberry Pi 4's PL011 (UART0): bus address 0x7e201000, CPU address 0xfe201000.
pub const RPI4_PL011: EarlyUart = EarlyUart {
    kind: UartKind::Pl011,
    base: PhysAddr::new(0xfe20_1000),
};

/// QEMU virt's PL011 (hw/arm/virt.c, VIRT_UART).
pub const QEMU_VIRT_PL011: EarlyUart = EarlyUart {
    kind: UartKind::Pl011,
    base: PhysAddr::new(0x0900_0000),
};

const RPI4: &[EarlyUart] = &[RPI4_MINI_UART, RPI4_PL011];
const QEMU_VIRT: &[EarlyUart] = &[QEMU_VIRT_PL011];

/// Lowest RAM address on QEMU virt: an image loaded below it is on another board.
const QEMU_VIRT_RAM_BASE: u64 = 0x4000_0000;

/// Source 3: the UARTs to try, judged from the hypervisor's load address alone. Usable before
/// anything is set up (no heap, no DTB access).
pub fn by_load_address(image_base: u64) -> &'static [EarlyUart] {
    if image_base < QEMU_VIRT_RAM_BASE {
        RPI4
    } else {
        QEMU_VIRT
    }
}

/// Where the early console comes from.
#[derive(Clone, PartialEq, Debug)]
pub enum EarlyConsole {
    /// The DTB names a console the hypervisor can drive (source 1).
    Dtb(Uart),
    /// It does not, for the reason given; these UARTs are a guess (source 2 or 3).
    Guess {
        uarts: &'static [EarlyUart],
        why: PlatformError,
    },
}

/// Sources 1 to 3 for the blob at x0 (`blob` may be longer than its `totalsize`).
pub fn from_dtb(blob: &[u8], image_base: u64) -> EarlyConsole {
    let guess = |why: PlatformError, bcm2711: bool| EarlyConsole::Guess {
        uarts: if bcm2711 {
            RPI4
        } else {
            by_load_address(image_base)
        },
        why,
    };
    let walkable = match super::walkable(blob) {
        Ok(w) => w,
        Err(why) => return guess(why, false),
    };
    let fdt = match Fdt::new(&walkable) {
        Ok(f) => f,
        Err(e) => return guess(e.into(), false),
    };
    let chosen = tree::lookup(&fdt, "/chosen").and_then(|c| c.last().copied());
    match super::parse_console(&fdt, chosen) {
        Ok(uart) => EarlyConsole::Dtb(uart),
        Err(why) => {
            let bcm2711 =
                tree::root(&fdt).is_ok_and(|root| tree::is_compatible(root, BCM2711_COMPATIBLE));
            guess(why, bcm2711)
        }
    }
}
