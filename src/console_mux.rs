//! Sharing one physical console between the hypervisor and several VMs.
//!
//! Output: each VM's console bytes go out as they come, but every line a VM starts is prefixed
//! with its name (`[linux] `), and when another source interrupts a half-written line, the line
//! is ended first, so output from different VMs never runs together on one line.
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
            owner: None,
            mid_line: false,
            focus: 0,
            escape: false,
        }
    }

    /// Registers a VM by name; returns its index.
    pub fn add_vm(&mut self, name: &str) -> usize {
        self.names.push(String::from(name));
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
