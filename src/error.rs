//! The one error type of crest.
//!
//! Every variant carries the context a user needs (pid, path, syscall, errno,
//! image file and offset) and its `Display` reads as one sentence that names the
//! likely cause and, where there is one, the option or action that fixes it.
//! Errors are logged once, at the top, by `cli::main`.

use std::fmt;
use std::path::PathBuf;

pub use syscalls::Errno;

/// Result with crest's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in crest.
#[derive(Debug)]
pub enum Error {
    /// The command line is wrong; the message says what and how to fix it.
    Usage(String),
    /// A system call failed.
    Sys {
        /// The system call (or request, e.g. `PTRACE_SEIZE`) that failed.
        call: &'static str,
        /// What crest was doing, e.g. `seizing pid 4242`.
        context: String,
        /// The kernel's answer.
        errno: Errno,
        /// The likely cause and fix, or empty.
        hint: &'static str,
    },
    /// A file could not be read, written or created.
    Io {
        /// What crest tried: `open`, `read`, `create`...
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The error from the kernel.
        source: std::io::Error,
    },
    /// An image is damaged, truncated, or of an unsupported version.
    Image(crate::image::ImageError),
    /// A /proc file did not read as crest expects.
    Proc {
        /// The file, e.g. `/proc/4242/maps`.
        path: String,
        /// The line, counting from 1 (0 when not tied to a line).
        line: usize,
        /// What was wrong.
        problem: String,
    },
    /// The process holds something crest cannot checkpoint yet; the message
    /// names it (fd number and kind, mapping, pid) and says so.
    Unsupported(String),
    /// The target process cannot be seized or infected, or misbehaved
    /// while crest worked in it (a fault in the parasite, a thread that
    /// died, state that did not come back as saved).
    Target {
        /// The target's pid (or the thread's).
        pid: i32,
        /// What is wrong, and what to do about it where there is a fix.
        problem: String,
    },
}

impl Error {
    /// Shorthand for a failed system call with no hint.
    pub fn sys(call: &'static str, context: impl Into<String>, errno: Errno) -> Self {
        Error::Sys {
            call,
            context: context.into(),
            errno,
            hint: "",
        }
    }

    /// Shorthand for a failed file operation.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// The process exit status this error maps to: 2 for usage, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => 2,
            _ => 1,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(msg) => f.write_str(msg),
            Error::Sys {
                call,
                context,
                errno,
                hint,
            } => {
                let name = errno.name().unwrap_or("E?");
                write!(
                    f,
                    "{context}: {call} failed with {name} ({})",
                    errno.description().unwrap_or("unknown error")
                )?;
                if !hint.is_empty() {
                    write!(f, "; {hint}")?;
                }
                Ok(())
            }
            Error::Io { op, path, source } => {
                write!(f, "cannot {op} {}: {source}", path.display())
            }
            Error::Image(e) => e.fmt(f),
            Error::Proc {
                path,
                line,
                problem,
            } => write!(
                f,
                "cannot parse {path} line {line}: {problem}; this kernel's format is not one crest knows, please report it"
            ),
            Error::Unsupported(msg) => f.write_str(msg),
            Error::Target { pid, problem } => write!(f, "pid {pid}: {problem}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<crate::image::ImageError> for Error {
    fn from(e: crate::image::ImageError) -> Self {
        Error::Image(e)
    }
}
