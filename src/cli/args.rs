//! A small hand-rolled parser for CRIU-style command lines.
//!
//! Options may stand before or after the command, long options take their
//! value as `--opt VALUE` or `--opt=VALUE`, short ones as `-o VALUE` or
//! `-oVALUE`, and `-v` is special as in CRIU: `-v` raises the level by one,
//! `-vvv` by three, `-v4` sets it. Which options a command accepts is in the
//! table below, so an option given to the wrong command is an error, not
//! silently ignored.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::error::{Error, Result};

/// One option the parser knows.
pub struct OptSpec {
    /// The long name, without `--`.
    pub long: &'static str,
    /// The short letter, if any.
    pub short: Option<char>,
    /// The name of its value, or `None` for a flag.
    pub value: Option<&'static str>,
    /// The commands that accept it; empty means every command (a global option).
    pub commands: &'static [&'static str],
    /// One line for `--help`.
    pub help: &'static str,
}

/// Every option crest knows.
pub const OPTIONS: &[OptSpec] = &[
    OptSpec {
        long: "help",
        short: Some('h'),
        value: None,
        commands: &[],
        help: "show help and exit",
    },
    OptSpec {
        long: "version",
        short: Some('V'),
        value: None,
        commands: &[],
        help: "show the version and exit",
    },
    OptSpec {
        long: "verbosity",
        short: Some('v'),
        value: None,
        commands: &[],
        help: "-v raises the log level by one, -vN sets it (0 none .. 4 debug; default 2)",
    },
    OptSpec {
        long: "log-file",
        short: Some('o'),
        value: Some("FILE"),
        commands: &[],
        help: "write the log to FILE (inside the images directory when -D is given)",
    },
    OptSpec {
        long: "all",
        short: None,
        value: None,
        commands: &["check"],
        help: "probe every feature, optional ones too",
    },
    OptSpec {
        long: "feature",
        short: None,
        value: Some("NAME"),
        commands: &["check"],
        help: "probe only NAME (may be repeated)",
    },
    OptSpec {
        long: "json",
        short: None,
        value: None,
        commands: &["check", "show"],
        help: "print one JSON object instead of text",
    },
    OptSpec {
        long: "tree",
        short: Some('t'),
        value: Some("PID"),
        commands: &["dump", "pre-dump"],
        help: "dump the process PID with all its threads",
    },
    OptSpec {
        long: "images-dir",
        short: Some('D'),
        value: Some("DIR"),
        commands: &["dump", "restore", "pre-dump", "page-server"],
        help: "the image directory (dump creates it 0700 if missing)",
    },
    OptSpec {
        long: "leave-running",
        short: Some('R'),
        value: None,
        commands: &["dump"],
        help: "resume the process after the dump instead of killing it",
    },
    OptSpec {
        long: "restore-detached",
        short: Some('d'),
        value: None,
        commands: &["restore"],
        help: "exit once the process runs instead of waiting for it",
    },
    OptSpec {
        long: "pidfile",
        short: None,
        value: Some("FILE"),
        commands: &["restore"],
        help: "write the restored process's pid to FILE",
    },
    OptSpec {
        long: "shell-job",
        short: Some('j'),
        value: None,
        commands: &["dump", "restore"],
        help: "the process belongs to a shell session: use crest's terminal",
    },
    OptSpec {
        long: "external",
        short: None,
        value: Some("RES"),
        commands: &["dump"],
        help: "unix[INO]: the socket with inode INO, outside the tree, may be a peer",
    },
    OptSpec {
        long: "ghost-limit",
        short: None,
        value: Some("SIZE"),
        commands: &["dump"],
        help: "store deleted files still open or mapped up to SIZE bytes each (K, M, G suffixes; default 1M)",
    },
    OptSpec {
        long: "file-locks",
        short: None,
        value: None,
        commands: &["dump", "restore"],
        help: "dump the file locks (flock, POSIX, OFD) processes hold and re-take them at restore",
    },
    OptSpec {
        long: "page-server",
        short: None,
        value: None,
        commands: &["dump", "pre-dump"],
        help: "send the page files to `crest page-server` at --address:--port",
    },
    OptSpec {
        long: "address",
        short: None,
        value: Some("ADDR"),
        commands: &["dump", "pre-dump", "page-server"],
        help: "the page server's address (default 0.0.0.0 to listen, 127.0.0.1 to connect)",
    },
    OptSpec {
        long: "port",
        short: None,
        value: Some("PORT"),
        commands: &["dump", "pre-dump", "page-server"],
        help: "the page server's TCP port",
    },
    OptSpec {
        long: "workload",
        short: None,
        value: Some("DIR"),
        commands: &["selftest"],
        help: "internal: run as the self-test's workload in DIR (crest starts it itself)",
    },
    OptSpec {
        long: "prev-images-dir",
        short: None,
        value: Some("REL"),
        commands: &["dump", "pre-dump"],
        help: "the previous (pre-)dump, relative to -D DIR: store only pages written since",
    },
    OptSpec {
        long: "track-mem",
        short: None,
        value: None,
        commands: &["dump", "pre-dump"],
        help: "track written pages (implied by pre-dump; dump needs it to use a parent)",
    },
];

/// What the command line asked for.
#[derive(Debug, Default)]
pub struct Args {
    /// The command (`check`, `show`, `help`...), if one was given.
    pub command: Option<String>,
    /// Arguments that are not options, after the command.
    pub positional: Vec<String>,
    /// `--help` / `-h`.
    pub help: bool,
    /// `--version` / `-V`.
    pub version: bool,
    /// The log level, if `-v` was given.
    pub verbosity: Option<u8>,
    /// `-o FILE`.
    pub log_file: Option<PathBuf>,
    /// `--all`.
    pub all: bool,
    /// `--json`.
    pub json: bool,
    /// `--feature NAME`, in order.
    pub features: Vec<String>,
    /// `-t PID` / `--tree PID`, as given.
    pub tree: Option<String>,
    /// `-D DIR` / `--images-dir DIR`.
    pub images_dir: Option<PathBuf>,
    /// `-R` / `--leave-running`.
    pub leave_running: bool,
    /// `-d` / `--restore-detached`.
    pub detach: bool,
    /// `--pidfile FILE`.
    pub pidfile: Option<PathBuf>,
    /// `-j` / `--shell-job`.
    pub shell_job: bool,
    /// `--external RES`, in order (`unix[INO]`).
    pub external: Vec<String>,
    /// `--file-locks`.
    pub file_locks: bool,
    /// `--ghost-limit SIZE`, in bytes.
    pub ghost_limit: Option<u64>,
    /// `--workload DIR` (internal, `selftest` re-executing itself).
    pub workload: Option<PathBuf>,
    /// `--prev-images-dir REL`.
    pub prev_images_dir: Option<String>,
    /// `--track-mem`.
    pub track_mem: bool,
    /// `--page-server`: send the page files to a page server.
    pub page_server: bool,
    /// `--address`: the page server's address.
    pub address: Option<String>,
    /// `--port`: the page server's port.
    pub port: Option<String>,
    /// The whole command line, as given (the inventory records it).
    pub argv: Vec<String>,
    /// The long names of the options given, short or long.
    used: Vec<&'static str>,
}

/// Parses `argv` (without the program name).
pub fn parse(argv: &[OsString]) -> Result<Args> {
    let mut args = Args {
        argv: argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        ..Args::default()
    };
    let mut it = argv.iter().map(|a| a.to_string_lossy().into_owned());
    let mut only_positional = false;
    while let Some(arg) = it.next() {
        if only_positional || arg == "-" || !arg.starts_with('-') {
            if args.command.is_none() {
                args.command = Some(arg);
            } else {
                args.positional.push(arg);
            }
        } else if arg == "--" {
            only_positional = true;
        } else if let Some(body) = arg.strip_prefix("--") {
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            let spec = OPTIONS
                .iter()
                .find(|o| o.long == name)
                .ok_or_else(|| Error::Usage(format!("unknown option --{name}")))?;
            let value = take_value(spec, inline, &mut it)?;
            apply(&mut args, spec, value)?;
        } else {
            parse_short(&mut args, &arg[1..], &mut it)?;
        }
    }
    check_commands(&args)?;
    Ok(args)
}

fn parse_short(args: &mut Args, body: &str, it: &mut impl Iterator<Item = String>) -> Result<()> {
    for (i, c) in body.char_indices() {
        if c == 'v' {
            return apply_verbosity(args, &body[i..]);
        }
        let spec = OPTIONS
            .iter()
            .find(|o| o.short == Some(c))
            .ok_or_else(|| Error::Usage(format!("unknown option -{c}")))?;
        if spec.value.is_some() {
            let rest = &body[i + c.len_utf8()..];
            let inline = (!rest.is_empty()).then(|| rest.to_string());
            let value = take_value(spec, inline, it)?;
            return apply(args, spec, value);
        }
        apply(args, spec, None)?;
    }
    Ok(())
}

/// `-v`, `-vvv` or `-vN`, as CRIU takes them.
fn apply_verbosity(args: &mut Args, text: &str) -> Result<()> {
    let rest = &text[1..];
    let level = if rest.chars().all(|c| c == 'v') {
        args.verbosity.unwrap_or(crate::log::LEVEL_WARN) + 1 + rest.len() as u8
    } else {
        rest.parse::<u8>().map_err(|_| {
            Error::Usage(format!(
                "bad verbosity -{text}: use -v, -vv or -vN with N from 0 to 4"
            ))
        })?
    };
    args.verbosity = Some(level.min(crate::log::LEVEL_DEBUG));
    Ok(())
}

fn take_value(
    spec: &OptSpec,
    inline: Option<String>,
    it: &mut impl Iterator<Item = String>,
) -> Result<Option<String>> {
    match (spec.value, inline) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(Error::Usage(format!(
            "option --{} takes no value",
            spec.long
        ))),
        (Some(_), Some(v)) => Ok(Some(v)),
        (Some(name), None) => it
            .next()
            .map(Some)
            .ok_or_else(|| Error::Usage(format!("option --{} needs a value {name}", spec.long))),
    }
}

fn apply(args: &mut Args, spec: &OptSpec, value: Option<String>) -> Result<()> {
    let value = value.unwrap_or_default();
    args.used.push(spec.long);
    match spec.long {
        "help" => args.help = true,
        "version" => args.version = true,
        "verbosity" => return apply_verbosity(args, "v"),
        "log-file" => args.log_file = Some(PathBuf::from(value)),
        "all" => args.all = true,
        "json" => args.json = true,
        "feature" => args.features.push(value),
        "tree" => args.tree = Some(value),
        "images-dir" => args.images_dir = Some(PathBuf::from(value)),
        "leave-running" => args.leave_running = true,
        "restore-detached" => args.detach = true,
        "pidfile" => args.pidfile = Some(PathBuf::from(value)),
        "shell-job" => args.shell_job = true,
        "external" => args.external.push(value),
        "workload" => args.workload = Some(PathBuf::from(value)),
        "ghost-limit" => args.ghost_limit = Some(parse_size(&value)?),
        "file-locks" => args.file_locks = true,
        "prev-images-dir" => args.prev_images_dir = Some(value),
        "track-mem" => args.track_mem = true,
        "page-server" => args.page_server = true,
        "address" => args.address = Some(value),
        "port" => args.port = Some(value),
        other => return Err(Error::Usage(format!("option --{other} is not handled"))),
    }
    Ok(())
}

/// A size as CRIU takes it: bytes, or a number with a K, M or G suffix.
fn parse_size(text: &str) -> Result<u64> {
    let (digits, shift) = match text.as_bytes().last() {
        Some(b'K' | b'k') => (&text[..text.len() - 1], 10),
        Some(b'M' | b'm') => (&text[..text.len() - 1], 20),
        Some(b'G' | b'g') => (&text[..text.len() - 1], 30),
        _ => (text, 0),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| {
            Error::Usage(format!(
                "bad size `{text}`: give bytes or a number with K, M or G (e.g. 16M)"
            ))
        })
}

/// Refuses options that the chosen command does not take.
fn check_commands(args: &Args) -> Result<()> {
    let Some(command) = args.command.as_deref() else {
        return Ok(());
    };
    for &name in &args.used {
        if let Some(spec) = OPTIONS.iter().find(|o| o.long == name) {
            if !spec.commands.is_empty() && !spec.commands.contains(&command) && command != "help" {
                return Err(Error::Usage(format!(
                    "option --{name} does not apply to `{command}`"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(words: &[&str]) -> Result<Args> {
        let v: Vec<OsString> = words.iter().map(OsString::from).collect();
        parse(&v)
    }

    #[test]
    fn options_before_and_after_the_command() {
        let a = p(&[
            "-v4",
            "check",
            "--feature",
            "uffd",
            "--feature=timens",
            "--json",
        ])
        .unwrap();
        assert_eq!(a.command.as_deref(), Some("check"));
        assert_eq!(a.verbosity, Some(4));
        assert_eq!(a.features, ["uffd", "timens"]);
        assert!(a.json);
    }

    #[test]
    fn verbosity_counts_like_criu() {
        assert_eq!(p(&["-v"]).unwrap().verbosity, Some(3));
        assert_eq!(p(&["-vv"]).unwrap().verbosity, Some(4));
        assert_eq!(p(&["-v0"]).unwrap().verbosity, Some(0));
        assert_eq!(p(&["-vvvvvv"]).unwrap().verbosity, Some(4));
        assert!(p(&["-vx"]).is_err());
    }

    #[test]
    fn short_value_inline_or_separate() {
        assert_eq!(
            p(&["-olog.txt"]).unwrap().log_file,
            Some(PathBuf::from("log.txt"))
        );
        assert_eq!(p(&["-o", "x"]).unwrap().log_file, Some(PathBuf::from("x")));
        assert!(p(&["-o"]).is_err());
    }

    #[test]
    fn unknown_and_misplaced_options_are_usage_errors() {
        assert!(matches!(p(&["--nope"]), Err(Error::Usage(_))));
        assert!(matches!(p(&["-Q"]), Err(Error::Usage(_))));
        assert!(matches!(p(&["show", "--all"]), Err(Error::Usage(_))));
        assert!(matches!(p(&["check", "--help=1"]), Err(Error::Usage(_))));
        assert!(matches!(p(&["check", "-t", "1"]), Err(Error::Usage(_))));
    }

    #[test]
    fn ghost_limit_takes_criu_sizes() {
        let g = |v: &str| p(&["dump", "--ghost-limit", v]).map(|a| a.ghost_limit);
        assert_eq!(g("4096").unwrap(), Some(4096));
        assert_eq!(g("16M").unwrap(), Some(16 << 20));
        assert_eq!(g("2k").unwrap(), Some(2048));
        assert_eq!(g("1G").unwrap(), Some(1 << 30));
        assert!(matches!(g("x"), Err(Error::Usage(_))));
        assert!(matches!(g("M"), Err(Error::Usage(_))));
        assert!(matches!(g("99999999999999G"), Err(Error::Usage(_))));
        assert!(matches!(
            p(&["restore", "--ghost-limit", "1"]),
            Err(Error::Usage(_))
        ));
    }

    #[test]
    fn dump_options_short_and_long() {
        let a = p(&["dump", "-t", "42", "-D/tmp/x", "-R"]).unwrap();
        assert_eq!(a.tree.as_deref(), Some("42"));
        assert_eq!(a.images_dir, Some(PathBuf::from("/tmp/x")));
        assert!(a.leave_running);
        let b = p(&["dump", "--tree=7", "--images-dir", "d", "--leave-running"]).unwrap();
        assert_eq!(b.tree.as_deref(), Some("7"));
        assert!(b.leave_running);
        assert_eq!(b.argv.len(), 5);
    }
}
