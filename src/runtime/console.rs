//! The shared console at run time: guest output through the multiplexer (each line prefixed
//! with its VM's name), the hypervisor's own log lines kept off half-written guest lines, and
//! keyboard input routed to the focused VM.
use crate::arch::aarch64::console;
use crate::console_mux::{ConsoleMux, Input, Source};
use spin::Mutex;

static MUX: Mutex<ConsoleMux> = Mutex::new(ConsoleMux::new());

/// Registers a VM's console; returns its console index.
pub fn add_vm(name: &str) -> usize {
    MUX.lock().add_vm(name)
}

/// Bytes a VM wrote to its console.
pub fn vm_output(vm: usize, bytes: &[u8]) {
    let mut m = MUX.lock();
    let mut buf = [0u8; 96];
    let mut n = 0;
    m.write(Source::Vm(vm), bytes, &mut |b| {
        for &c in b {
            if n == buf.len() {
                console::write_bytes(&buf[..n]);
                n = 0;
            }
            buf[n] = c;
            n += 1;
        }
    });
    console::write_bytes(&buf[..n]);
}

/// Ends a guest's half-written line before the hypervisor logs (called by the log backend).
pub fn before_hypervisor_line() {
    if let Some(mut m) = MUX.try_lock() {
        m.interrupt(&mut |b| console::write_bytes(b));
    }
}

/// One keyboard byte: where it goes.
pub fn input(b: u8) -> Input {
    MUX.lock().input(b)
}

/// The VM console the keyboard goes to.
pub fn focus() -> usize {
    MUX.lock().focus()
}
