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
//!
//! The command prompt: with [`ConsoleMux::key`] (which the runtime is to call instead of
//! [`ConsoleMux::input`]), Ctrl-A `:` opens a one-line prompt for hypervisor commands
//! ([`crate::console_cmd`]); every key then edits the line until Enter hands the parsed
//! command back, or Ctrl-C / Escape abandons it (an escape sequence that follows the Escape at
//! once, such as an arrow key's, is swallowed). While the prompt is open every VM's output is
//! shown a whole line at a time, and the prompt is drawn again below each line.
#![forbid(unsafe_code)]

use alloc::string::String;
use alloc::vec::Vec;

use crate::console_cmd::{self, Command, CommandError, Edit, LineEditor};

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

/// What a keyboard byte turned into, with the command prompt ([`ConsoleMux::key`]).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Key {
    /// As [`ConsoleMux::input`] would have answered (`Input::None` for keys the prompt took).
    Input(Input),
    /// A command line was entered: carry it out.
    Command(Command),
    /// A command line was entered that is no command: print this one-line answer.
    Rejected(CommandError),
}

/// Where the mux is in swallowing the escape sequence that may follow the Escape key which
/// closed the prompt (ECMA-48: CSI `ESC [` parameters/intermediates then a final byte
/// 0x40..=0x7e; SS3 `ESC O` then one byte).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum AfterEscape {
    No,
    /// The prompt was just closed by Escape.
    Escape,
    /// Inside `ESC [`.
    Csi,
    /// After `ESC O`.
    Ss3,
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
    /// The command prompt, while it is open.
    prompt: Option<LineEditor>,
    after_escape: AfterEscape,
    /// The prompt was closed by a carriage return: a line feed right after it is part of the
    /// same Enter key.
    drop_line_feed: bool,
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
            prompt: None,
            after_escape: AfterEscape::No,
            drop_line_feed: false,
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
        let line_at_a_time = |i: usize, m: &Self| i != m.focus || m.prompt.is_some();
        match src {
            Source::Vm(i) if line_at_a_time(i, self) && i < self.pending.len() => {
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
        self.redraw_prompt(out);
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
        self.redraw_prompt(out);
    }

    /// Whether the command prompt is open.
    pub fn prompt_open(&self) -> bool {
        self.prompt.is_some()
    }

    /// The hypervisor has written a line of its own (after [`ConsoleMux::interrupt`]): shows
    /// the command prompt again below it, if it is open.
    pub fn hypervisor_line_done(&mut self, out: &mut dyn FnMut(&[u8])) {
        self.redraw_prompt(out);
    }

    /// Draws the open prompt and its line on a fresh line.
    fn redraw_prompt(&mut self, out: &mut dyn FnMut(&[u8])) {
        if let Some(p) = &self.prompt
            && !self.mid_line
        {
            p.redraw(out);
            // The prompt owns the line: any source that writes next ends it first.
            self.mid_line = true;
            self.owner = None;
        }
    }

    fn open_prompt(&mut self, out: &mut dyn FnMut(&[u8])) {
        if self.mid_line {
            out(b"\n");
            self.mid_line = false;
        }
        self.prompt = Some(LineEditor::new());
        self.redraw_prompt(out);
    }

    /// The prompt closed (its editor ended the line): the focused VM streams again.
    fn close_prompt(&mut self, out: &mut dyn FnMut(&[u8])) {
        self.prompt = None;
        self.mid_line = false;
        self.owner = None;
        let focus = self.focus;
        self.flush_vm(focus, out);
    }

    /// Interprets one keyboard byte, with the command prompt: Ctrl-A `:` opens it, and while
    /// it is open every byte edits its line (echoed through `out`).
    pub fn key(&mut self, b: u8, out: &mut dyn FnMut(&[u8])) -> Key {
        match (self.after_escape, b) {
            (AfterEscape::No, _) => {}
            (AfterEscape::Escape, b'[') => {
                self.after_escape = AfterEscape::Csi;
                return Key::Input(Input::None);
            }
            (AfterEscape::Escape, b'O') => {
                self.after_escape = AfterEscape::Ss3;
                return Key::Input(Input::None);
            }
            (AfterEscape::Csi, 0x20..=0x3f) => return Key::Input(Input::None),
            (AfterEscape::Csi, 0x40..=0x7e) | (AfterEscape::Ss3, _) => {
                self.after_escape = AfterEscape::No;
                return Key::Input(Input::None);
            }
            // Not an escape sequence after all: the byte counts.
            _ => self.after_escape = AfterEscape::No,
        }
        if core::mem::take(&mut self.drop_line_feed) && b == b'\n' {
            return Key::Input(Input::None);
        }
        if let Some(editor) = &mut self.prompt {
            return match editor.key(b, out) {
                Edit::Continue => Key::Input(Input::None),
                Edit::Submit(line) => {
                    self.close_prompt(out);
                    self.drop_line_feed = b == b'\r';
                    match console_cmd::parse(&line) {
                        Ok(Some(cmd)) => Key::Command(cmd),
                        Ok(None) => Key::Input(Input::None),
                        Err(e) => Key::Rejected(e),
                    }
                }
                Edit::Cancel => {
                    self.close_prompt(out);
                    if b == console_cmd::ESC {
                        self.after_escape = AfterEscape::Escape;
                    }
                    Key::Input(Input::None)
                }
            };
        }
        if self.escape && b == b':' {
            self.escape = false;
            self.open_prompt(out);
            return Key::Input(Input::None);
        }
        Key::Input(self.input(b))
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

    /// Feeds `keys` to `key`, returning the answers other than `Input(None)` and the screen.
    fn keys(m: &mut ConsoleMux, keys: &[u8]) -> (Vec<Key>, String) {
        let mut screen = Vec::new();
        let answers = keys
            .iter()
            .map(|&b| m.key(b, &mut |s| screen.extend_from_slice(s)))
            .filter(|k| *k != Key::Input(Input::None))
            .collect();
        (answers, String::from_utf8(screen).unwrap())
    }

    #[test]
    fn ctrl_a_colon_opens_the_prompt_and_enter_hands_back_the_command() {
        let mut m = two_vms();
        let (answers, screen) = keys(&mut m, b"\x01:stop b\r");
        assert_eq!(answers, [Key::Command(Command::Stop("b".into()))]);
        assert_eq!(screen, "kestrel> stop b\n");
        assert!(!m.prompt_open());
        // Keys go to the focused VM again; the line feed of a CR LF Enter is dropped.
        let (answers, _) = keys(&mut m, b"\nx");
        assert_eq!(answers, [Key::Input(Input::ToVm(0, b'x'))]);
        let (answers, _) = keys(&mut m, b"\n");
        assert_eq!(answers, [Key::Input(Input::ToVm(0, b'\n'))]);
    }

    #[test]
    fn the_prompt_works_without_vms_and_answers_bad_lines() {
        let mut m = ConsoleMux::new();
        let (answers, _) = keys(&mut m, b"\x01:start web\r\x01:bogus 1\r\x01:\r");
        assert_eq!(
            answers,
            [
                Key::Command(Command::Start("web".into())),
                Key::Rejected(CommandError::Unknown("bogus".into())),
            ]
        );
    }

    #[test]
    fn nothing_typed_at_the_prompt_reaches_a_vm() {
        let mut m = two_vms();
        let (answers, _) = keys(&mut m, b"\x01:\x01n1l\x7f\x03");
        assert_eq!(answers, []);
        assert_eq!(
            m.focus(),
            0,
            "Ctrl-A n inside the prompt does not move the focus"
        );
        let (answers, _) = keys(&mut m, b"\x01:help\n");
        assert_eq!(answers, [Key::Command(Command::Help)]);
    }

    #[test]
    fn escape_abandons_the_prompt_and_an_arrow_key_sequence_is_swallowed() {
        let mut m = two_vms();
        let (answers, screen) = keys(&mut m, b"\x01:sto\x1b[A\x1b[1;5Cq");
        // The first ESC closes the prompt and "[A" is its arrow key; the second ESC (no
        // prompt open) goes to the VM with the rest of its sequence.
        let to_vm: Vec<Key> = b"\x1b[1;5Cq"
            .iter()
            .map(|&b| Key::Input(Input::ToVm(0, b)))
            .collect();
        assert_eq!(answers, to_vm);
        assert_eq!(screen, "kestrel> sto\n");
        let (answers, _) = keys(&mut m, b"\x01:\x1bOBz");
        assert_eq!(answers, [Key::Input(Input::ToVm(0, b'z'))]);
        // A plain Escape followed by another key: that key counts.
        let (answers, _) = keys(&mut m, b"\x01:\x1bq");
        assert_eq!(answers, [Key::Input(Input::ToVm(0, b'q'))]);
    }

    #[test]
    fn guest_lines_appear_above_the_prompt_which_is_drawn_again() {
        let mut m = two_vms();
        let mut screen = Vec::new();
        m.write(Source::Vm(0), b"~ # ", &mut |b| screen.extend_from_slice(b));
        for &b in b"\x01:st" {
            m.key(b, &mut |s| screen.extend_from_slice(s));
        }
        // The focused VM is kept back a line at a time too while the prompt is open.
        m.write(Source::Vm(0), b"ab", &mut |b| screen.extend_from_slice(b));
        m.write(Source::Vm(1), b"hello\n", &mut |b| {
            screen.extend_from_slice(b)
        });
        m.interrupt(&mut |b| screen.extend_from_slice(b));
        screen.extend_from_slice(b"log line\n");
        m.hypervisor_line_done(&mut |b| screen.extend_from_slice(b));
        m.key(b'\x03', &mut |s| screen.extend_from_slice(s));
        assert_eq!(
            String::from_utf8(screen).unwrap(),
            "[a] ~ # \nkestrel> st\n[b] hello\nkestrel> st\nlog line\nkestrel> st^C\n[a] ab"
        );
    }

    #[test]
    fn input_keeps_its_meaning_without_the_prompt() {
        let mut m = two_vms();
        assert_eq!(m.input(ESCAPE), Input::None);
        assert_eq!(m.input(b':'), Input::None, "dropped, as before");
        assert!(!m.prompt_open());
        assert_eq!(m.input(b'x'), Input::ToVm(0, b'x'));
    }
}
