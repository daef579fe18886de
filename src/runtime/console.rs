//! The shared console at run time: guest output through the multiplexer (each line prefixed
//! with its VM's name), the hypervisor's own log lines kept off half-written guest lines, and
//! keyboard input routed to the focused VM.
use crate::arch::aarch64::console;
use crate::console_mux::{ConsoleMux, Input, Key, Source};
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

/// Writes one hypervisor log line (`write_line`) with the multiplexer held: a guest's
/// half-written line is ended first and no guest byte can land inside the line (another CPU's
/// `vm_output` waits). Called by the log backend for every line. If the multiplexer cannot be
/// had within about a millisecond (a log call made while this CPU holds it, or a stuck CPU),
/// the line is written anyway: losing tidiness beats losing the line or deadlocking.
pub fn hypervisor_line(write_line: &mut dyn FnMut()) {
    const SPINS: usize = 1 << 20;
    for _ in 0..SPINS {
        if let Some(mut m) = MUX.try_lock() {
            m.interrupt(&mut |b| console::write_bytes(b));
            write_line();
            // An open `Ctrl-A :` prompt is drawn again below the line.
            m.hypervisor_line_done(&mut |b| console::write_bytes(b));
            return;
        }
        core::hint::spin_loop();
    }
    write_line();
}

/// One keyboard byte: where it goes, or the command line it completed at the `Ctrl-A :`
/// prompt (echoed by the prompt's line editor). A VM that gets the focus shows what it kept
/// back.
pub fn key(b: u8) -> Key {
    let mut m = MUX.lock();
    let r = m.key(b, &mut |s| console::write_bytes(s));
    if let Key::Input(Input::Focus(n)) = r {
        m.flush_vm(n, &mut |b| console::write_bytes(b));
    }
    r
}

/// A VM's console will not be written again (the VM ended): show what it kept back.
pub fn vm_ended(vm: usize) {
    MUX.lock().flush_vm(vm, &mut |b| console::write_bytes(b));
}

/// The VM console the keyboard goes to.
pub fn focus() -> usize {
    MUX.lock().focus()
}
