//! Drives a passed-through virtio-rng device (virtio-mmio, legacy interface) by DMA: finds it
//! among the transports at `virtio.base=A` (`virtio.count=N` transports 0x200 apart, default
//! 8), gives it one 64-byte buffer in a one-entry virtqueue in this guest's RAM and polls the
//! used ring. The device writes into guest RAM at the addresses the guest programmed, which
//! are IPAs: it only works when the VM's RAM is mapped IPA = PA (`identity_ram = true`).
//!
//! Output:
//! ```text
//! VIRTIO: ram <base> size <size>
//! VIRTIO: rng at <addr> (version <v>)        or  VIRTIO: no rng device
//! VIRTIO: got <n> bytes, <k> non-zero: <first 16 bytes in hex>
//! VIRTIO: timeout                           (the device never answered)
//! VIRTIO: done
//! ```
//! then PSCI SYSTEM_OFF.
#![no_std]
#![no_main]

use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};
use core::sync::atomic::{Ordering, fence};

use kestrel_test_guests::mmio::{read32, write32};
use kestrel_test_guests::{dt, memory, println, system_off, timer};

/// virtio-mmio register offsets (virtio 1.2 section 4.2.4, legacy interface).
mod reg {
    pub const MAGIC: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const GUEST_FEATURES: u64 = 0x020;
    pub const GUEST_PAGE_SIZE: u64 = 0x028;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_ALIGN: u64 = 0x03c;
    pub const QUEUE_PFN: u64 = 0x040;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const STATUS: u64 = 0x070;
}
const MAGIC_VIRT: u32 = 0x7472_6976;
const DEVICE_RNG: u32 = 4;
const STATUS_ACK: u32 = 1;
const STATUS_DRIVER: u32 = 2;
const STATUS_DRIVER_OK: u32 = 4;
const DESC_F_WRITE: u16 = 2;
const QUEUE_SIZE: u16 = 1;
const PAGE: u64 = 4096;
const BUF_LEN: usize = 64;

/// The legacy virtqueue (virtio 1.2 section 2.7, legacy layout): descriptor table and
/// available ring in the first page, used ring at the next page boundary.
#[repr(C, align(4096))]
struct Queue {
    desc_addr: u64,
    desc_len: u32,
    desc_flags: u16,
    desc_next: u16,
    avail_flags: u16,
    avail_idx: u16,
    avail_ring: [u16; 1],
    _pad: [u8; 4096 - 22],
    used_flags: u16,
    used_idx: u16,
    used_id: u32,
    used_len: u32,
    _tail: [u8; 4096 - 12],
}

static mut QUEUE: Queue = Queue {
    desc_addr: 0,
    desc_len: 0,
    desc_flags: 0,
    desc_next: 0,
    avail_flags: 0,
    avail_idx: 0,
    avail_ring: [0],
    _pad: [0; 4096 - 22],
    used_flags: 0,
    used_idx: 0,
    used_id: 0,
    used_len: 0,
    _tail: [0; 4096 - 12],
};
static mut BUF: [u8; BUF_LEN] = [0; BUF_LEN];

fn find(base: u64, count: u64) -> Option<(u64, u32)> {
    (0..count).map(|i| base + i * 0x200).find_map(|t| {
        // SAFETY: `t` is inside the device page the VM was given (bootargs of the test).
        let (magic, id, version) = unsafe {
            (
                read32(t + reg::MAGIC),
                read32(t + reg::DEVICE_ID),
                read32(t + reg::VERSION),
            )
        };
        (magic == MAGIC_VIRT && id == DEVICE_RNG).then_some((t, version))
    })
}

#[unsafe(no_mangle)]
fn guest_main(dtb: usize) -> ! {
    let [(ram, size), ..] = memory(dtb);
    println!("VIRTIO: ram {ram:#x} size {size:#x}");
    let base = dt::bootarg_u64(dtb, "virtio.base", 0x0a00_3000);
    let count = dt::bootarg_u64(dtb, "virtio.count", 8);
    let Some((dev, version)) = find(base, count) else {
        println!("VIRTIO: no rng device");
        println!("VIRTIO: done");
        system_off()
    };
    println!("VIRTIO: rng at {dev:#x} (version {version})");
    let q = addr_of_mut!(QUEUE);
    let buf = addr_of!(BUF) as u64;
    // SAFETY: `dev` is the device's register block (found above); QUEUE and BUF are this
    // guest's own statics, handed to the device and otherwise only touched here, volatile.
    unsafe {
        write32(dev + reg::STATUS, 0);
        write32(dev + reg::STATUS, STATUS_ACK | STATUS_DRIVER);
        write32(dev + reg::GUEST_FEATURES, 0);
        write32(dev + reg::GUEST_PAGE_SIZE, PAGE as u32);
        write32(dev + reg::QUEUE_SEL, 0);
        if read32(dev + reg::QUEUE_NUM_MAX) < u32::from(QUEUE_SIZE) {
            println!("VIRTIO: queue 0 unavailable");
            system_off()
        }
        write32(dev + reg::QUEUE_NUM, u32::from(QUEUE_SIZE));
        write32(dev + reg::QUEUE_ALIGN, PAGE as u32);
        write32(dev + reg::QUEUE_PFN, (q as u64 / PAGE) as u32);
        write32(
            dev + reg::STATUS,
            STATUS_ACK | STATUS_DRIVER | STATUS_DRIVER_OK,
        );
        write_volatile(addr_of_mut!((*q).desc_addr), buf);
        write_volatile(addr_of_mut!((*q).desc_len), BUF_LEN as u32);
        write_volatile(addr_of_mut!((*q).desc_flags), DESC_F_WRITE);
        write_volatile(addr_of_mut!((*q).avail_ring[0]), 0);
        fence(Ordering::SeqCst);
        write_volatile(addr_of_mut!((*q).avail_idx), 1);
        fence(Ordering::SeqCst);
        write32(dev + reg::QUEUE_NOTIFY, 0);
    }
    let deadline = timer::cntvct() + timer::cntfrq() * 2;
    // SAFETY: as above.
    while unsafe { read_volatile(addr_of!((*q).used_idx)) } == 0 {
        if timer::cntvct() > deadline {
            println!("VIRTIO: timeout");
            println!("VIRTIO: done");
            system_off()
        }
        core::hint::spin_loop();
    }
    fence(Ordering::SeqCst);
    // SAFETY: as above; the device has finished with the buffer (used_idx moved).
    let (len, bytes) = unsafe {
        (
            read_volatile(addr_of!((*q).used_len)),
            read_volatile(addr_of!(BUF)),
        )
    };
    let n = (len as usize).min(BUF_LEN);
    let nonzero = bytes[..n].iter().filter(|&&b| b != 0).count();
    print_bytes(n, nonzero, &bytes[..n.min(16)]);
    println!("VIRTIO: done");
    system_off()
}

fn print_bytes(n: usize, nonzero: usize, head: &[u8]) {
    let mut hex = [0u8; 32];
    for (i, b) in head.iter().enumerate() {
        const D: &[u8; 16] = b"0123456789abcdef";
        hex[2 * i] = D[usize::from(b >> 4)];
        hex[2 * i + 1] = D[usize::from(b & 15)];
    }
    let s = core::str::from_utf8(&hex[..2 * head.len()]).unwrap_or("");
    println!("VIRTIO: got {n} bytes, {nonzero} non-zero: {s}");
}
