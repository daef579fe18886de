//! The hypervisor binary. On the bare-metal target this is the EL2 image (the entry points live
//! in the library: `kestrel::runtime::boot`); on the host it is an empty stub so that
//! `cargo test` can build the whole package.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
use kestrel as _;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("kestrel is a bare-metal image: build it with `cargo hv` or run qemu/run.sh");
}
