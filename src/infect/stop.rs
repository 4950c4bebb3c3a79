//! Waiting for a traced thread with wait4(__WALL) and decoding what the
//! kernel reports: a ptrace event stop (PTRACE_INTERRUPT or a group stop
//! under PTRACE_SEIZE), a signal-delivery stop, or the thread's end.
//!
//! `__WALL` is needed because non-leader threads are "clone children" that
//! a plain wait never reports. Only the given tid is ever waited for, never
//! -1: crest's tests (and later a dump of a tree) have other children whose
//! events must not be consumed here.

use crate::error::{Error, Result};
use crate::sys::process::{__WALL, wait4};
use crate::sys::ptrace::PTRACE_EVENT_STOP;
use crate::sys::{Errno, Pid};

/// What `wait4` reported for one thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// PTRACE_EVENT_STOP: `sig` is SIGTRAP for an INTERRUPT stop, or the
    /// stop signal (SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU) for a group stop.
    Event(i32),
    /// Signal-delivery stop: the thread is about to receive `sig`.
    Signal(i32),
    /// The thread exited with this code.
    Exited(i32),
    /// The thread was killed by this signal.
    Killed(i32),
}

/// `SIGTSTP` (SIGTSTP, SIGTTIN = 21, SIGTTOU are the same numbers on
/// x86_64 and aarch64).
pub(crate) const SIGTSTP: i32 = 20;
/// `SIGTTOU`.
pub(crate) const SIGTTOU: i32 = 22;

/// Whether `sig` is one of the signals that stop a process (a group stop).
pub(crate) fn is_stop_signal(sig: i32) -> bool {
    sig == crate::sys::process::SIGSTOP || (SIGTSTP..=SIGTTOU).contains(&sig)
}

impl Stop {
    /// Decodes a raw wait status.
    pub fn from_status(status: i32) -> Stop {
        let sig = (status >> 8) & 0xff;
        if status & 0xff == 0x7f {
            if (status >> 16) & 0xff == PTRACE_EVENT_STOP {
                Stop::Event(sig)
            } else {
                Stop::Signal(sig)
            }
        } else if status & 0x7f == 0 {
            Stop::Exited(sig)
        } else {
            Stop::Killed(status & 0x7f)
        }
    }

    /// Whether the thread is gone.
    pub fn is_end(&self) -> bool {
        matches!(self, Stop::Exited(_) | Stop::Killed(_))
    }
}

/// Blocks until `tid` reports a stop or its end.
pub fn wait_stop(tid: Pid) -> Result<Stop> {
    loop {
        match wait4(tid, __WALL) {
            Ok((_, status)) => return Ok(Stop::from_status(status)),
            Err(Errno::EINTR) => continue,
            Err(e) => {
                return Err(Error::sys(
                    "wait4",
                    format!("waiting for thread {tid} to stop"),
                    e,
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_wait_statuses() {
        // Values as the kernel builds them (see wait(2) macros).
        assert_eq!(
            Stop::from_status(0x7f | (5 << 8) | (128 << 16)),
            Stop::Event(5)
        );
        assert_eq!(
            Stop::from_status(0x7f | (19 << 8) | (128 << 16)),
            Stop::Event(19)
        );
        assert_eq!(Stop::from_status(0x7f | (11 << 8)), Stop::Signal(11));
        assert_eq!(Stop::from_status(3 << 8), Stop::Exited(3));
        assert_eq!(Stop::from_status(9), Stop::Killed(9));
        assert!(Stop::Killed(9).is_end() && !Stop::Signal(9).is_end());
        assert!(is_stop_signal(19) && is_stop_signal(22) && !is_stop_signal(5));
    }
}
