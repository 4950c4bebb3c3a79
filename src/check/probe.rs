//! The result of one probe, and how a failed syscall becomes one.
//!
//! A probe returns `Ok(detail)` (what it measured, e.g. "2432 bytes") or a
//! [`Fail`]: `missing` when the kernel answered that it does not have the
//! facility (ENOSYS, EINVAL for an unknown request, ENOTTY for an unknown
//! ioctl...), `error` when the experiment could not be run or gave a wrong
//! answer (EPERM, a timeout, a value that does not match).

use crate::sys::{Errno, SysResult};

/// The verdict on one feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The experiment worked.
    Ok,
    /// The kernel lacks the facility.
    Missing,
    /// The experiment could not be run or misbehaved.
    Error,
}

impl Status {
    /// The word printed in the table and the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Missing => "missing",
            Status::Error => "error",
        }
    }
}

/// Why a probe did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fail {
    /// Missing or Error (never Ok).
    pub status: Status,
    /// One sentence: what was tried and what the kernel said.
    pub reason: String,
}

/// What a probe returns: the measured detail, or why it failed.
pub type ProbeResult = Result<String, Fail>;

impl Fail {
    /// The kernel lacks the facility.
    pub fn missing(reason: String) -> Fail {
        Fail {
            status: Status::Missing,
            reason,
        }
    }

    /// The experiment failed for another reason.
    pub fn error(reason: String) -> Fail {
        Fail {
            status: Status::Error,
            reason,
        }
    }

    /// Classifies a failed call: errnos a kernel gives for a syscall, request,
    /// ioctl or flag it does not know mean missing; the rest are errors.
    pub fn from_errno(call: &str, e: Errno) -> Fail {
        let reason = format!("{call} failed with {}", errno_text(e));
        match e {
            Errno::ENOSYS | Errno::EINVAL | Errno::ENOTTY | Errno::EOPNOTSUPP | Errno::E2BIG => {
                Fail::missing(reason)
            }
            Errno::ENOENT => Fail::missing(reason),
            Errno::EPERM | Errno::EACCES => Fail::error(format!(
                "{reason}; run crest as root (or with the capability named)"
            )),
            _ => Fail::error(reason),
        }
    }

    /// Classifies a failed std I/O call like [`Fail::from_errno`].
    pub fn from_io(call: &str, e: &std::io::Error) -> Fail {
        match e.raw_os_error() {
            Some(n) => Fail::from_errno(call, Errno::new(n)),
            None => Fail::error(format!("{call} failed: {e}")),
        }
    }
}

/// `EPERM (Operation not permitted)`.
pub fn errno_text(e: Errno) -> String {
    match e.name_and_description() {
        Some((name, desc)) => format!("{name} ({desc})"),
        None => format!("errno {}", e.into_raw()),
    }
}

/// Turns a syscall result into a probe result, naming the call.
pub trait SysExt<T> {
    /// Maps the errno with [`Fail::from_errno`].
    fn ctx(self, call: &str) -> Result<T, Fail>;
}

impl<T> SysExt<T> for SysResult<T> {
    fn ctx(self, call: &str) -> Result<T, Fail> {
        self.map_err(|e| Fail::from_errno(call, e))
    }
}

impl<T> SysExt<T> for std::io::Result<T> {
    fn ctx(self, call: &str) -> Result<T, Fail> {
        self.map_err(|e| Fail::from_io(call, &e))
    }
}

/// Fails with `error` unless `cond` holds: for experiments whose syscalls
/// succeeded but whose observed result is wrong.
pub fn expect(cond: bool, what: impl FnOnce() -> String) -> Result<(), Fail> {
    if cond {
        Ok(())
    } else {
        Err(Fail::error(what()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_classification() {
        assert_eq!(Fail::from_errno("x", Errno::ENOSYS).status, Status::Missing);
        assert_eq!(Fail::from_errno("x", Errno::ENOTTY).status, Status::Missing);
        assert_eq!(Fail::from_errno("x", Errno::EPERM).status, Status::Error);
        let f = Fail::from_errno("PTRACE_SEIZE", Errno::EPERM);
        let want = "PTRACE_SEIZE failed with EPERM (Operation not permitted); run crest as root";
        assert!(f.reason.starts_with(want), "{}", f.reason);
    }
}
