//! Turns every vCPU off with PSCI CPU_OFF and never calls SYSTEM_OFF: the VM must end anyway
//! (its last CPU_OFF leaves nothing that could run; KVM and Xen end such a guest too).
//!
//! With 2 or more vCPUs (from the DTB) the boot vCPU starts the second one, which turns itself
//! off; the boot vCPU waits for AFFINITY_INFO to report it OFF, then turns itself off.
//!
//! Output:
//! ```text
//! CPUOFF: vcpus <n>
//! CPUOFF: secondary <mpidr> on, then off      (with 2+ vCPUs)
//! CPUOFF: boot vCPU calls CPU_OFF
//! CPUOFF: CPU_OFF returned <r>                 (a failure: CPU_OFF does not return)
//! ```
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, Ordering};

use kestrel_test_guests::psci::{self, Conduit};
use kestrel_test_guests::smp::{self, SecondaryBoot, Stack};
use kestrel_test_guests::{dt, println, timer};

static BOOT: SecondaryBoot = SecondaryBoot::new();
static STACK: Stack<16384> = Stack::new();
static UP: AtomicBool = AtomicBool::new(false);

extern "C" fn secondary(_arg: u64) -> ! {
    UP.store(true, Ordering::Release);
    psci::cpu_off(Conduit::Hvc);
    loop {
        core::hint::spin_loop();
    }
}

fn wait_ms(ms: u64, mut done: impl FnMut() -> bool) -> bool {
    let end = timer::cntvct() + timer::cntfrq() * ms / 1000;
    while timer::cntvct() < end {
        if done() {
            return true;
        }
    }
    done()
}

#[unsafe(no_mangle)]
fn guest_main(dtb: usize) -> ! {
    let (mpidrs, n) = dt::cpu_mpidrs(dtb);
    println!("CPUOFF: vcpus {n}");
    if n >= 2 {
        let m = mpidrs[1];
        let r = smp::start_secondary(Conduit::Hvc, m, &BOOT, STACK.top(), secondary, 0);
        let up = wait_ms(2000, || UP.load(Ordering::Acquire));
        let off = wait_ms(2000, || {
            psci::affinity_info(Conduit::Hvc, m, 0) == psci::AFF_OFF
        });
        if r == psci::SUCCESS && up && off {
            println!("CPUOFF: secondary {m:#x} on, then off");
        } else {
            println!("CPUOFF: secondary {m:#x} CPU_ON {r}, up {up}, off {off}");
        }
    }
    println!("CPUOFF: boot vCPU calls CPU_OFF");
    let r = psci::cpu_off(Conduit::Hvc);
    println!("CPUOFF: CPU_OFF returned {r}");
    loop {
        core::hint::spin_loop();
    }
}
