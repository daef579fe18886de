//! Sharing one physical console between the hypervisor and several VMs.
//!
//! Output: every line a VM writes is prefixed with its name (`[linux] `). The VM that has the
//! keyboard (the focus) is shown byte by byte as it writes, so prompts and echo appear at once;
//! the other VMs are shown a whole line at a time (kept back until their newline, or until
//! [`PENDING_MAX`] bytes, or until the focus moves to them), so two guests printing at once do
//! not shred each other's lines (a guest's UART output arrives one byte per trap). When a
//! source interrupts a half-written line, the line is ended first, so output from different
//! sources never runs together on one line.
//!
//! Input: keyboard bytes go to one VM at a time (the focus). The escape character Ctrl-A
//! followed by `1`..`9` moves the focus to VM 1..9, `n` to the next VM, and a second Ctrl-A sends
//! a literal Ctrl-A to the focused VM, `d` asks the hypervisor to dump its state, `l` starts or
//! stops dirty logging of the focused VM and `h` prints this help; anything else after Ctrl-A
//! is dropped.
#![forbid(unsafe_code)]

use alloc::string::String;
use alloc::vec::Vec;

pub const ESCAPE: u8 = 0x01;

/// Most bytes of an unfinished line kept back for a VM without the focus.
pub const PENDING_MAX: usize = 256;

/// Who is writing: the hypervisor's own log, or VM `n` (an index into the mux's VM list).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Source {
    Hypervisor,
    Vm(usize),
}

/// What a keyboard byte turned into.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Input {
    /// Deliver this byte to VM n.
    ToVm(usize, u8),
    /// The focus moved to VM n.
    Focus(usize),
    /// A command for the hypervisor itself: Ctrl-A `d` (dump state), `l` (dirty logging on/off
    /// for the focused VM) or `h` (help).
    Command(u8),
    /// Swallowed (part of an escape sequence, or no VM to send it to).
    None,
}

pub struct ConsoleMux {
    names: Vec<String>,
    /// Per VM: the unfinished line kept back while it does not have the focus.
    pending: Vec<Vec<u8>>,
    /// Source that wrote the last byte, and whether it left a line open.
    owner: Option<Source>,
    mid_line: bool,
    focus: usize,
    escape: bool,
}

impl ConsoleMux {
    pub const fn new() -> Self {
        Self {
            names: Vec::new(),
            pending: Vec::new(),
            owner: None,
            mid_line: false,
            focus: 0,
            escape: false,
        }
    }

    /// Registers a VM by name; returns its index.
    pub fn add_vm(&mut self, name: &str) -> usize {
        self.names.push(String::from(name));
        self.pending.push(Vec::new());
        self.names.len() - 1
    }

    pub fn vm_count(&self) -> usize {
        self.names.len()
    }

    pub fn focus(&self) -> usize {
        self.focus
    }

    /// Output from `src`: calls `out` with the bytes to send to the physical console.
    pub fn write(&mut self, src: Source, bytes: &[u8], out: &mut dyn FnMut(&[u8])) {
        match src {
            Source::Vm(i) if i != self.focus && i < self.pending.len() => {
                for &b in bytes {
                    if b == b'\r' {
                        continue;
                    }
                    self.pending[i].push(b);
                    if b == b'\n' || self.pending[i].len() >= PENDING_MAX {
                        self.flush_vm(i, out);
                    }
                }
            }
            _ => self.stream(src, bytes, out),
        }
    }

    /// Shows what VM `i` has kept back (an unfinished line), e.g. when it gets the focus or
    /// ends.
    pub fn flush_vm(&mut self, i: usize, out: &mut dyn FnMut(&[u8])) {
        if let Some(p) = self.pending.get_mut(i) {
            let bytes = core::mem::take(p);
            self.stream(Source::Vm(i), &bytes, out);
            if let Some(p) = self.pending.get_mut(i) {
                // Keep the allocation for the next line.
                *p = bytes;
                p.clear();
            }
        }
    }

    /// Writes `bytes` of `src` out now, prefixing each new line and ending another source's
    /// open line first.
    fn stream(&mut self, src: Source, bytes: &[u8], out: &mut dyn FnMut(&[u8])) {
        for &b in bytes {
            if b == b'\r' {
                continue;
            }
            if self.mid_line && self.owner != Some(src) {
                out(b"\n");
                self.mid_line = false;
            }
            if !self.mid_line
                && let Source::Vm(i) = src
            {
                out(b"[");
                out(self.names.get(i).map(|s| s.as_bytes()).unwrap_or(b"?"));
                out(b"] ");
            }
            self.owner = Some(src);
            match b {
                b'\n' => {
                    out(b"\n");
                    self.mid_line = false;
                }
                _ => {
                    out(&[b]);
                    self.mid_line = true;
                }
            }
        }
    }

    /// The hypervisor is about to write whole lines of its own: end any open line first.
    pub fn interrupt(&mut self, out: &mut dyn FnMut(&[u8])) {
        if self.mid_line {
            out(b"\n");
        }
        self.mid_line = false;
        self.owner = Some(Source::Hypervisor);
    }

    /// Interprets one keyboard byte.
    pub fn input(&mut self, b: u8) -> Input {
        let n = self.names.len();
        if self.escape && matches!(b, b'd' | b'h' | b'l') {
            self.escape = false;
            return Input::Command(b);
        }
        if n == 0 {
            self.escape = b == ESCAPE;
            return Input::None;
        }
        if self.escape {
            self.escape = false;
            return match b {
                ESCAPE => Input::ToVm(self.focus, ESCAPE),
                b'1'..=b'9' if ((b - b'1') as usize) < n => {
                    self.focus = (b - b'1') as usize;
                    Input::Focus(self.focus)
                }
                b'n' => {
                    self.focus = (self.focus + 1) % n;
                    Input::Focus(self.focus)
                }
                _ => Input::None,
            };
        }
        if b == ESCAPE {
            self.escape = true;
            return Input::None;
        }
        Input::ToVm(self.focus, b)
    }
}

impl Default for ConsoleMux {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(mux: &mut ConsoleMux, writes: &[(Source, &str)]) -> String {
        let mut s = Vec::new();
        for (src, text) in writes {
            mux.write(*src, text.as_bytes(), &mut |b| s.extend_from_slice(b));
        }
        String::from_utf8(s).unwrap()
    }

    fn two_vms() -> ConsoleMux {
        let mut m = ConsoleMux::new();
        m.add_vm("a");
        m.add_vm("b");
        m
    }

    #[test]
    fn every_vm_line_is_prefixed_with_its_name() {
        let mut m = two_vms();
        let out = render(
            &mut m,
            &[(Source::Vm(0), "one\ntwo\n"), (Source::Vm(1), "three\n")],
        );
        assert_eq!(out, "[a] one\n[a] two\n[b] three\n");
    }

    #[test]
    fn an_interrupted_line_is_ended_before_the_next_source_writes() {
        let mut m = two_vms();
        let out = render(
            &mut m,
            &[
                (Source::Vm(0), "prompt # "),
                (Source::Vm(1), "hello\n"),
                (Source::Hypervisor, "log\n"),
                (Source::Vm(0), "ls\n"),
            ],
        );
        assert_eq!(out, "[a] prompt # \n[b] hello\nlog\n[a] ls\n");
    }

    #[test]
    fn a_hypervisor_line_ends_an_open_guest_line_and_the_guest_gets_a_new_prefix() {
        let mut m = two_vms();
        let mut s = Vec::new();
        m.write(Source::Vm(0), b"~ # ", &mut |b| s.extend_from_slice(b));
        m.interrupt(&mut |b| s.extend_from_slice(b));
        s.extend_from_slice(b"log\n");
        m.interrupt(&mut |b| s.extend_from_slice(b));
        m.write(Source::Vm(0), b"ls\n", &mut |b| s.extend_from_slice(b));
        assert_eq!(String::from_utf8(s).unwrap(), "[a] ~ # \nlog\n[a] ls\n");
    }

    /// Two guests printing at once, one byte per trap: the focused one streams, the other's
    /// line comes out whole at its newline, never shredded.
    #[test]
    fn a_background_vm_is_shown_a_whole_line_at_a_time() {
        let mut m = two_vms();
        let mut s = Vec::new();
        for (x, y) in "abc\n".bytes().zip("xyz\n".bytes()) {
            m.write(Source::Vm(0), &[x], &mut |b| s.extend_from_slice(b));
            m.write(Source::Vm(1), &[y], &mut |b| s.extend_from_slice(b));
        }
        assert_eq!(String::from_utf8(s).unwrap(), "[a] abc\n[b] xyz\n");
    }

    /// A background prompt (no newline) waits until the focus moves to its VM; a line longer
    /// than the limit comes out in pieces of `PENDING_MAX` bytes.
    #[test]
    fn a_background_unfinished_line_shows_when_focused_or_too_long() {
        let mut m = two_vms();
        let mut s = Vec::new();
        m.write(Source::Vm(1), b"login: ", &mut |b| s.extend_from_slice(b));
        assert!(s.is_empty(), "kept back");
        assert_eq!(m.input(ESCAPE), Input::None);
        assert_eq!(m.input(b'2'), Input::Focus(1));
        m.flush_vm(1, &mut |b| s.extend_from_slice(b));
        m.write(Source::Vm(1), b"r", &mut |b| s.extend_from_slice(b));
        assert_eq!(String::from_utf8(s.clone()).unwrap(), "[b] login: r");
        s.clear();
        let long = [b'q'; PENDING_MAX + 10];
        m.write(Source::Vm(0), &long, &mut |b| s.extend_from_slice(b));
        let text = String::from_utf8(s).unwrap();
        assert!(
            text.starts_with(&alloc::format!("\n[a] {}", "q".repeat(PENDING_MAX))),
            "{text:?}"
        );
        assert_eq!(m.pending[0].len(), 10);
    }

    #[test]
    fn carriage_returns_from_guests_are_dropped() {
        let mut m = two_vms();
        assert_eq!(
            render(&mut m, &[(Source::Vm(1), "x\r\n\r\ny\n")]),
            "[b] x\n[b] \n[b] y\n"
        );
    }

    #[test]
    fn input_goes_to_the_focused_vm_and_escape_switches_focus() {
        let mut m = two_vms();
        assert_eq!(m.input(b'l'), Input::ToVm(0, b'l'));
        assert_eq!(m.input(ESCAPE), Input::None);
        assert_eq!(m.input(b'2'), Input::Focus(1));
        assert_eq!(m.input(b's'), Input::ToVm(1, b's'));
        assert_eq!(m.input(ESCAPE), Input::None);
        assert_eq!(m.input(b'n'), Input::Focus(0));
        assert_eq!(m.input(ESCAPE), Input::None);
        assert_eq!(m.input(ESCAPE), Input::ToVm(0, ESCAPE));
        assert_eq!(m.input(ESCAPE), Input::None);
        assert_eq!(m.input(b'9'), Input::None, "no VM 9: swallowed");
        assert_eq!(m.focus(), 0);
    }

    #[test]
    fn escape_d_and_h_are_hypervisor_commands_even_without_vms() {
        let mut m = ConsoleMux::new();
        assert_eq!(m.input(ESCAPE), Input::None);
        assert_eq!(m.input(b'd'), Input::Command(b'd'));
        let mut m = two_vms();
        assert_eq!(m.input(ESCAPE), Input::None);
        assert_eq!(m.input(b'h'), Input::Command(b'h'));
        assert_eq!(
            m.input(b'd'),
            Input::ToVm(0, b'd'),
            "without the escape it is a plain key"
        );
    }

    #[test]
    fn input_without_vms_is_dropped() {
        let mut m = ConsoleMux::new();
        assert_eq!(m.input(b'x'), Input::None);
    }
}
