//! The hypervisor console's command prompt: `Ctrl-A :` opens a one-line prompt (see
//! [`crate::console_mux::ConsoleMux::key`]); the line typed there is a command for the
//! hypervisor.
//!
//! This module owns the pieces that need no hardware: the line editor ([`LineEditor`]:
//! printable characters, backspace, Ctrl-U, Ctrl-W, Enter, Ctrl-C / Escape to abandon), the
//! command parser ([`parse`]), checking a command against the VMs of the ramdisk
//! ([`resolve`]) and the text of the answers ([`CommandError`]'s one-line messages,
//! [`list_lines`], [`HELP`]). The runtime carries the command out (start, stop or reset a VM)
//! and prints the answer as hypervisor log lines.
//!
//! Commands: `list`, `start NAME`, `stop NAME`, `reset NAME`, `help`. Words are separated by
//! spaces; command words are case-insensitive, VM names are not.
#![forbid(unsafe_code)]

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

/// What the prompt shows before the line.
pub const PROMPT: &[u8] = b"kestrel> ";
/// Longest line the editor takes (longer input rings the bell).
pub const MAX_LINE: usize = 80;

const BELL: u8 = 0x07;
const BACKSPACE: u8 = 0x08;
const DELETE: u8 = 0x7f;
const CTRL_C: u8 = 0x03;
const CTRL_U: u8 = 0x15;
const CTRL_W: u8 = 0x17;
pub const ESC: u8 = 0x1b;

/// The answer to `help`, one line per command.
pub const HELP: &[&str] = &[
    "list          each VM: state, vCPUs and their physical CPUs, memory, exits, stolen time",
    "start NAME    start VM NAME of the ramdisk (autostart = false ones too)",
    "stop NAME     power VM NAME off (as PSCI SYSTEM_OFF)",
    "reset NAME    reset VM NAME (as PSCI SYSTEM_RESET)",
    "help          this list (Ctrl-C or Escape leaves the prompt)",
];

/// A parsed command.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Command {
    List,
    Start(String),
    Stop(String),
    Reset(String),
    Help,
}

/// Why a command cannot be carried out; `Display` gives the one-line answer.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum CommandError {
    /// The first word is no command.
    Unknown(String),
    /// `start`, `stop` or `reset` without a VM name.
    MissingName(&'static str),
    /// Words after the command's last argument.
    TooManyWords(&'static str),
    /// No VM of that name in the ramdisk.
    NoSuchVm { name: String, known: Vec<String> },
    /// `start` of a VM that runs.
    AlreadyRunning(String),
    /// `stop` or `reset` of a VM that does not run.
    NotRunning(String),
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Unknown(w) => write!(
                f,
                "unknown command `{w}` (commands: list, start NAME, stop NAME, reset NAME, help)"
            ),
            CommandError::MissingName(verb) => write!(f, "usage: {verb} NAME"),
            CommandError::TooManyWords(usage) => write!(f, "too many words; usage: {usage}"),
            CommandError::NoSuchVm { name, known } if known.is_empty() => {
                write!(f, "no VM named `{name}` (the ramdisk has none)")
            }
            CommandError::NoSuchVm { name, known } => {
                write!(f, "no VM named `{name}` (VMs: {})", known.join(", "))
            }
            CommandError::AlreadyRunning(name) => write!(f, "vm {name} is already running"),
            CommandError::NotRunning(name) => {
                write!(f, "vm {name} is not running (`start {name}` starts it)")
            }
        }
    }
}

/// Parses a command line; `Ok(None)` for a blank line.
pub fn parse(line: &str) -> Result<Option<Command>, CommandError> {
    let mut words = line.split_ascii_whitespace();
    let Some(verb) = words.next() else {
        return Ok(None);
    };
    let arg = words.next();
    let extra = words.next().is_some();
    let no_args = |cmd: Command, usage: &'static str| {
        if arg.is_some() {
            Err(CommandError::TooManyWords(usage))
        } else {
            Ok(Some(cmd))
        }
    };
    let named = |verb: &'static str, usage: &'static str, make: fn(String) -> Command| match arg {
        None => Err(CommandError::MissingName(verb)),
        Some(_) if extra => Err(CommandError::TooManyWords(usage)),
        Some(name) => Ok(Some(make(name.to_string()))),
    };
    match verb.to_ascii_lowercase().as_str() {
        "list" | "ls" => no_args(Command::List, "list"),
        "help" | "?" => no_args(Command::Help, "help"),
        "start" => named("start", "start NAME", Command::Start),
        "stop" => named("stop", "stop NAME", Command::Stop),
        "reset" => named("reset", "reset NAME", Command::Reset),
        _ => Err(CommandError::Unknown(verb.to_string())),
    }
}

/// A VM of the ramdisk, as [`resolve`] sees it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct VmEntry<'a> {
    pub name: &'a str,
    pub running: bool,
}

/// A command checked against the VMs: the index is into the slice given to [`resolve`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Resolved {
    List,
    Help,
    Start(usize),
    Stop(usize),
    Reset(usize),
}

/// Checks `cmd` against the ramdisk's VMs: the name must exist, `start` needs a VM that does
/// not run, `stop` and `reset` one that does.
pub fn resolve(cmd: &Command, vms: &[VmEntry]) -> Result<Resolved, CommandError> {
    let find = |name: &str| {
        vms.iter()
            .position(|v| v.name == name)
            .ok_or_else(|| CommandError::NoSuchVm {
                name: name.to_string(),
                known: vms.iter().map(|v| v.name.to_string()).collect(),
            })
    };
    match cmd {
        Command::List => Ok(Resolved::List),
        Command::Help => Ok(Resolved::Help),
        Command::Start(name) => {
            let i = find(name)?;
            if vms[i].running {
                return Err(CommandError::AlreadyRunning(name.clone()));
            }
            Ok(Resolved::Start(i))
        }
        Command::Stop(name) | Command::Reset(name) => {
            let i = find(name)?;
            if !vms[i].running {
                return Err(CommandError::NotRunning(name.clone()));
            }
            Ok(if matches!(cmd, Command::Stop(_)) {
                Resolved::Stop(i)
            } else {
                Resolved::Reset(i)
            })
        }
    }
}

/// What `list` shows of one VM.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct VmSummary {
    pub name: String,
    /// `None`: not running; else vCPU i's physical CPU (`None` for a vCPU that is off).
    pub vcpus: Option<Vec<Option<usize>>>,
    /// Guest RAM in bytes.
    pub memory: u64,
    /// Exits since the VM started.
    pub exits: u64,
    /// Stolen time summed over its vCPUs, in nanoseconds.
    pub steal_ns: u64,
}

/// The lines `list` prints: a header, then one line per VM, e.g.
/// `linux   running  2 vCPUs [0, 1]   512 MiB  exits 1234  steal 0.004 s`.
pub fn list_lines(vms: &[VmSummary]) -> Vec<String> {
    let width = vms.iter().map(|v| v.name.len()).max().unwrap_or(0).max(4);
    let mut out = Vec::with_capacity(vms.len() + 1);
    out.push(format!(
        "{:width$}  {:7}  {:18}  {:>9}  {}",
        "name", "state", "vCPUs on pCPUs", "memory", "exits, stolen time"
    ));
    for v in vms {
        let memory = format!("{} MiB", v.memory >> 20);
        match &v.vcpus {
            None => out.push(format!(
                "{:width$}  {:7}  {:18}  {memory:>9}",
                v.name, "stopped", "-"
            )),
            Some(cpus) => {
                let placed: Vec<String> = cpus
                    .iter()
                    .map(|c| c.map_or_else(|| "off".to_string(), |c| c.to_string()))
                    .collect();
                let vcpus = format!("{} [{}]", cpus.len(), placed.join(", "));
                out.push(format!(
                    "{:width$}  {:7}  {vcpus:18}  {memory:>9}  exits {}  steal {}.{:03} s",
                    v.name,
                    "running",
                    v.exits,
                    v.steal_ns / 1_000_000_000,
                    v.steal_ns / 1_000_000 % 1000
                ));
            }
        }
    }
    out
}

/// What a key did to the line being edited.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Edit {
    /// Keep editing.
    Continue,
    /// Enter: the line.
    Submit(String),
    /// Ctrl-C or Escape: the line is abandoned.
    Cancel,
}

/// The line being typed at the prompt (ASCII only).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct LineEditor {
    line: String,
}

impl LineEditor {
    pub fn new() -> Self {
        Self::default()
    }

    /// The line so far.
    pub fn line(&self) -> &str {
        &self.line
    }

    /// Shows the prompt and the line so far.
    pub fn redraw(&self, out: &mut dyn FnMut(&[u8])) {
        out(PROMPT);
        out(self.line.as_bytes());
    }

    /// Takes one key, echoing what changes on the screen through `out`.
    pub fn key(&mut self, b: u8, out: &mut dyn FnMut(&[u8])) -> Edit {
        match b {
            b'\r' | b'\n' => {
                out(b"\n");
                Edit::Submit(core::mem::take(&mut self.line))
            }
            CTRL_C => {
                out(b"^C\n");
                self.line.clear();
                Edit::Cancel
            }
            ESC => {
                out(b"\n");
                self.line.clear();
                Edit::Cancel
            }
            BACKSPACE | DELETE => {
                if self.line.pop().is_some() {
                    out(b"\x08 \x08");
                } else {
                    out(&[BELL]);
                }
                Edit::Continue
            }
            CTRL_U => {
                self.erase(self.line.len(), out);
                Edit::Continue
            }
            CTRL_W => {
                let kept = self.line.trim_end_matches(' ');
                let word_start = kept.rfind(' ').map_or(0, |i| i + 1);
                self.erase(self.line.len() - word_start, out);
                Edit::Continue
            }
            0x20..=0x7e if self.line.len() < MAX_LINE => {
                self.line.push(char::from(b));
                out(&[b]);
                Edit::Continue
            }
            _ => {
                out(&[BELL]);
                Edit::Continue
            }
        }
    }

    /// Removes the last `n` characters from the line and the screen.
    fn erase(&mut self, n: usize, out: &mut dyn FnMut(&[u8])) {
        for _ in 0..n {
            self.line.pop();
            out(b"\x08 \x08");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn type_keys(keys: &[u8]) -> (Vec<Edit>, String) {
        let mut ed = LineEditor::new();
        let mut screen = Vec::new();
        let edits = keys
            .iter()
            .map(|&b| ed.key(b, &mut |s| screen.extend_from_slice(s)))
            .filter(|e| *e != Edit::Continue)
            .collect();
        (edits, String::from_utf8(screen).unwrap())
    }

    #[test]
    fn enter_submits_the_typed_line_and_echoes_it() {
        let (edits, screen) = type_keys(b"start linux\r");
        assert_eq!(edits, [Edit::Submit("start linux".to_string())]);
        assert_eq!(screen, "start linux\n");
    }

    #[test]
    fn backspace_and_delete_erase_one_character_and_ring_on_an_empty_line() {
        let (edits, screen) = type_keys(b"lisx\x7fz\x08t\n");
        assert_eq!(edits, [Edit::Submit("list".to_string())]);
        assert_eq!(screen, "lisx\x08 \x08z\x08 \x08t\n");
        let (_, screen) = type_keys(b"\x7f");
        assert_eq!(screen, "\x07");
    }

    #[test]
    fn ctrl_u_erases_the_line_and_ctrl_w_the_last_word() {
        let (edits, _) = type_keys(b"stop web\x15list\r");
        assert_eq!(edits, [Edit::Submit("list".to_string())]);
        let (edits, screen) = type_keys(b"stop web  \x17linux\r");
        assert_eq!(edits, [Edit::Submit("stop linux".to_string())]);
        assert!(screen.contains(&"\x08 \x08".repeat(5)), "{screen:?}");
        let (edits, _) = type_keys(b"one\x17\x17two\r");
        assert_eq!(edits, [Edit::Submit("two".to_string())]);
    }

    #[test]
    fn ctrl_c_and_escape_abandon_the_line() {
        let (edits, screen) = type_keys(b"stop linux\x03");
        assert_eq!(edits, [Edit::Cancel]);
        assert!(screen.ends_with("^C\n"));
        let (edits, _) = type_keys(b"reset\x1b");
        assert_eq!(edits, [Edit::Cancel]);
    }

    #[test]
    fn control_characters_and_overlong_lines_ring_the_bell() {
        let mut keys = vec![b'a'; MAX_LINE + 3];
        keys.extend_from_slice(b"\t\x01\xc3\r");
        let (edits, screen) = type_keys(&keys);
        assert_eq!(edits, [Edit::Submit("a".repeat(MAX_LINE))]);
        assert_eq!(screen.matches('\x07').count(), 6);
    }

    #[test]
    fn parses_every_command() {
        assert_eq!(parse("list"), Ok(Some(Command::List)));
        assert_eq!(parse("  LIST  "), Ok(Some(Command::List)));
        assert_eq!(parse("help"), Ok(Some(Command::Help)));
        assert_eq!(parse("?"), Ok(Some(Command::Help)));
        assert_eq!(
            parse("start linux2"),
            Ok(Some(Command::Start("linux2".to_string())))
        );
        assert_eq!(
            parse("stop  Web-1"),
            Ok(Some(Command::Stop("Web-1".to_string())))
        );
        assert_eq!(
            parse("Reset web"),
            Ok(Some(Command::Reset("web".to_string())))
        );
        assert_eq!(parse(""), Ok(None));
        assert_eq!(parse("   "), Ok(None));
    }

    #[test]
    fn bad_commands_get_a_one_line_answer() {
        for (line, err, text) in [
            (
                "boot linux",
                CommandError::Unknown("boot".to_string()),
                "unknown command `boot` (commands: list, start NAME, stop NAME, reset NAME, help)",
            ),
            (
                "start",
                CommandError::MissingName("start"),
                "usage: start NAME",
            ),
            (
                "stop",
                CommandError::MissingName("stop"),
                "usage: stop NAME",
            ),
            (
                "reset a b",
                CommandError::TooManyWords("reset NAME"),
                "too many words; usage: reset NAME",
            ),
            (
                "list all",
                CommandError::TooManyWords("list"),
                "too many words; usage: list",
            ),
        ] {
            assert_eq!(parse(line), Err(err.clone()), "{line}");
            assert_eq!(err.to_string(), text);
            assert!(!text.contains('\n'));
        }
    }

    const VMS: &[VmEntry] = &[
        VmEntry {
            name: "linux",
            running: true,
        },
        VmEntry {
            name: "spare",
            running: false,
        },
    ];

    fn run(line: &str) -> Result<Resolved, CommandError> {
        resolve(&parse(line)?.unwrap(), VMS)
    }

    #[test]
    fn commands_are_checked_against_the_vms() {
        assert_eq!(run("start spare"), Ok(Resolved::Start(1)));
        assert_eq!(run("stop linux"), Ok(Resolved::Stop(0)));
        assert_eq!(run("reset linux"), Ok(Resolved::Reset(0)));
        assert_eq!(run("list"), Ok(Resolved::List));
        assert_eq!(run("help"), Ok(Resolved::Help));
        let e = run("start linux").unwrap_err();
        assert_eq!(e.to_string(), "vm linux is already running");
        let e = run("stop spare").unwrap_err();
        assert_eq!(
            e.to_string(),
            "vm spare is not running (`start spare` starts it)"
        );
        assert_eq!(
            run("reset spare"),
            Err(CommandError::NotRunning("spare".to_string()))
        );
        let e = run("stop Linux").unwrap_err();
        assert_eq!(e.to_string(), "no VM named `Linux` (VMs: linux, spare)");
        let e = resolve(&Command::Start("x".to_string()), &[]).unwrap_err();
        assert_eq!(e.to_string(), "no VM named `x` (the ramdisk has none)");
    }

    #[test]
    fn list_shows_one_line_per_vm_with_its_figures() {
        let lines = list_lines(&[
            VmSummary {
                name: "linux".to_string(),
                vcpus: Some(vec![Some(0), None, Some(1)]),
                memory: 512 << 20,
                exits: 1234,
                steal_ns: 4_250_000_000,
            },
            VmSummary {
                name: "spare-vm".to_string(),
                vcpus: None,
                memory: 128 << 20,
                exits: 0,
                steal_ns: 0,
            },
        ]);
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("name "), "{:?}", lines[0]);
        assert!(
            lines[1].starts_with("linux     running  3 [0, off, 1]")
                && lines[1].contains("512 MiB")
                && lines[1].ends_with("exits 1234  steal 4.250 s"),
            "{:?}",
            lines[1]
        );
        assert!(
            lines[2].starts_with("spare-vm  stopped") && lines[2].contains("128 MiB"),
            "{:?}",
            lines[2]
        );
        assert_eq!(list_lines(&[]).len(), 1);
    }

    #[test]
    fn help_names_every_command() {
        for cmd in ["list", "start NAME", "stop NAME", "reset NAME", "help"] {
            assert!(HELP.iter().any(|l| l.starts_with(cmd)), "{cmd}");
        }
    }
}
