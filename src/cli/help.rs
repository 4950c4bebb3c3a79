//! The texts of `crest --help` and `crest help COMMAND`.
//!
//! Kept in one table so the usage line of an error, the help screen and
//! docs/CLI.md (checked by a test) cannot drift apart.

use super::args::OPTIONS;

/// One command of crest.
pub struct Command {
    /// What the user types.
    pub name: &'static str,
    /// The synopsis.
    pub usage: &'static str,
    /// One line for the command list.
    pub summary: &'static str,
    /// What `help COMMAND` adds below the synopsis.
    pub details: &'static str,
}

/// Every command crest has.
pub const COMMANDS: &[Command] = &[
    Command {
        name: "check",
        usage: "crest check [--all] [--feature NAME]... [--json]",
        summary: "probe whether this kernel can checkpoint and restore",
        details: "Runs a small real experiment for each kernel facility crest relies on and\n\
                  prints its status, what needs it and what brings it. Without --all only\n\
                  required and recommended features are probed. Exit status: 0 when every\n\
                  required feature works, 1 when one does not, 2 for an unknown feature name.",
    },
    Command {
        name: "show",
        usage: "crest show DIR|FILE [--json]",
        summary: "print an image directory or one image file",
        details: "Decodes every record of an image for a person (the process tree, threads,\n\
                  VMAs as a table, fds, page totals) or, with --json, for a program. In a\n\
                  directory the page data is checked against its index and checksums.\n\
                  A damaged image is printed as far as it is sound, then the file, the\n\
                  offset and the damage are named. Exit status: 0 when every file is\n\
                  sound, 1 when one is damaged.",
    },
    Command {
        name: "dump",
        usage: "crest dump -t PID -D DIR [-R|--leave-running] [-j|--shell-job] [--prev-images-dir REL --track-mem] [--page-server --address A --port P] [--external unix[INO]] [--ghost-limit SIZE] [--file-locks]",
        summary: "checkpoint the process tree under PID, every thread, into an image directory",
        details: "Seizes PID, its children, theirs... and every thread with ptrace (a fork\n\
                  during the seize is caught), reads their registers and /proc state, runs a\n\
                  parasite inside each process for what only it can tell (signal actions,\n\
                  timers, memory pages...), removes the parasite and writes the image to DIR,\n\
                  inventory.img last. Zombies are recorded with their exit status. Then the\n\
                  tree is killed, or with -R resumed exactly as before (a stopped process\n\
                  stays stopped). What crest cannot dump yet (sockets, eventfd, SysV shared\n\
                  memory...) is refused before any process is touched; so is a tree whose\n\
                  root does not lead its session, unless -j says it is a job of a shell. On\n\
                  any failure every process is left running as before and DIR has no\n\
                  inventory.img. Exit status: 0 on success, 1 on failure, 2 for a usage\n\
                  error.",
    },
    Command {
        name: "pre-dump",
        usage: "crest pre-dump -t PID -D DIR [--prev-images-dir REL] [--track-mem] [--page-server --address A --port P]",
        summary: "copy the memory of a running tree and track what it writes next",
        details: "Freezes the tree under PID only while its memory pages are gathered, copies\n\
                  them into DIR (with --prev-images-dir, only the pages written since that\n\
                  image; the rest are marked as in the parent) and lets it run on. Written\n\
                  pages are tracked with soft-dirty where the kernel has it, else with a\n\
                  userfaultfd (WP_ASYNC) that a small tracker process keeps between runs;\n\
                  without either every pre-dump is a full copy (with a warning). End with\n\
                  `crest dump ... --prev-images-dir REL --track-mem`; restore that image.\n\
                  On failure the tree runs on untracked. Exit status: 0 on success, 1 on\n\
                  failure, 2 for a usage error.",
    },
    Command {
        name: "restore",
        usage: "crest restore -D DIR [-d|--restore-detached] [--pidfile FILE] [-j|--shell-job]",
        summary: "bring a dumped process back with its pid, threads, memory and state",
        details: "Loads and checks the whole image first (pid free, files unchanged, same\n\
                  kernel vdso layout), then creates the process with its pid, reopens its\n\
                  files, and hands over to the restorer, which rebuilds the address space,\n\
                  signal actions, timers, limits, credentials and threads; crest then loads\n\
                  each thread's registers with ptrace and lets it go. Without -d crest stays\n\
                  the parent, waits and exits with the process's exit status (128+signal if\n\
                  killed); with -d it exits 0 once the process runs. A failed restore kills\n\
                  whatever it created and exits 1.",
    },
    Command {
        name: "page-server",
        usage: "crest page-server -D DIR --port PORT [--address ADDR]",
        summary: "receive the page files of a dump sent with --page-server",
        details: "Listens on ADDR:PORT (default 0.0.0.0), accepts one `crest dump\n\
                  --page-server` and writes the pagemap and pages files it sends into DIR,\n\
                  each under a temporary name until the dump commits, then renamed into\n\
                  place; the rest of the image stays in the dump's own directory. A stream\n\
                  that is malformed, cut short or inconsistent is refused and what it wrote\n\
                  is removed. Exit status: 0 once the dump committed, 1 otherwise.",
    },
    Command {
        name: "selftest",
        usage: "crest selftest",
        summary: "checkpoint and restore a built-in test process on this machine",
        details: "Probes the required kernel features, starts a small multi-threaded process\n\
                  (crest itself) holding a memory pattern, counters, pending signals, timers\n\
                  and an open file, dumps it into a temporary directory, restores it, lets\n\
                  it verify itself and prints what was verified with the dump and restore\n\
                  times and the image size. Everything is removed afterwards. Exit status:\n\
                  0 when the restored process verified itself, 1 otherwise.",
    },
    Command {
        name: "help",
        usage: "crest help [COMMAND]",
        summary: "show help for crest or one command",
        details: "",
    },
];

/// The one-paragraph usage printed after a usage error.
pub fn usage() -> String {
    let mut s = String::from("usage: crest [-v[N]] [-o FILE] COMMAND [OPTIONS]\ncommands:\n");
    for c in COMMANDS {
        s.push_str(&format!("  {:<8} {}\n", c.name, c.summary));
    }
    s.push_str("run `crest help COMMAND` for a command's options\n");
    s
}

/// The full help screen.
pub fn full() -> String {
    let mut s = format!(
        "crest {}: checkpoint/restore for Linux\n\n{}\nglobal options:\n",
        env!("CARGO_PKG_VERSION"),
        usage()
    );
    for o in OPTIONS.iter().filter(|o| o.commands.is_empty()) {
        s.push_str(&option_line(o));
    }
    s
}

/// The help of one command, or `None` if there is no such command.
pub fn command(name: &str) -> Option<String> {
    let c = COMMANDS.iter().find(|c| c.name == name)?;
    let mut s = format!("usage: {}\n\n{}\n", c.usage, c.summary);
    if !c.details.is_empty() {
        s.push_str(&format!("\n{}\n", c.details));
    }
    let own: Vec<_> = OPTIONS
        .iter()
        .filter(|o| o.commands.contains(&name))
        .collect();
    if !own.is_empty() {
        s.push_str("\noptions:\n");
        for o in own {
            s.push_str(&option_line(o));
        }
    }
    Some(s)
}

fn option_line(o: &super::args::OptSpec) -> String {
    let short = o.short.map(|c| format!("-{c}, ")).unwrap_or_default();
    let value = o.value.map(|v| format!(" {v}")).unwrap_or_default();
    format!("  {short}--{}{value}\n      {}\n", o.long, o.help)
}
