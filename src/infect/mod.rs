//! Parasite control: seize a process with ptrace, make its threads run
//! system calls, load the parasite blob into it, run commands there, and
//! cure it so nothing crest added remains.
//!
//! The layers, each owning the one below through a borrow so that Rust's
//! drop order is the cure order:
//!
//! ```text
//!   tree::SeizedTree     every process under the root, each a Seized (or a
//!                        zombie); Drop detaches them all, children first
//!   seize::Seized        every thread PTRACE_SEIZE'd and stopped; Drop detaches
//!     └ remote::Remote     one thread's registers (FP/SIMD too), sigmask, a planted
//!         │                `syscall; trap` word saved; Drop puts them back
//!         └ parasite::Parasite  the blob mapped from a memfd, running as a
//!                               daemon in the leader that takes commands
//!                               over a unix socket (per-thread commands in
//!                               "trap mode"); Drop stops it, unmaps it and
//!                               verifies
//! ```
//!
//! All ptrace requests must come from the thread that seized the task (the
//! kernel's tracer is a thread, not a process), so [`seize::Seized`] is
//! neither `Send` nor `Sync`.
//!
//! No `unsafe` here: every kernel call goes through a safe wrapper in
//! `crate::sys` or through `/proc/PID/mem` and memfd file I/O, so the
//! module does not opt out of the crate's `deny(unsafe_code)`. Addresses
//! in the target are plain `u64`, never Rust pointers.

mod fpstate;
pub mod parasite;
pub mod remote;
pub mod seize;
mod stop;
mod target;
pub mod tree;

pub use parasite::{InjectStep, Parasite};
pub use remote::Remote;
pub use seize::{Release, Seized, seize};
pub use stop::{Stop, wait_stop};
pub use tree::{Member, SeizedTree, seize_tree};

use crate::error::Error;
use crate::sys::Pid;

/// An [`Error::Target`] about `pid`.
pub(crate) fn target_error(pid: Pid, problem: impl Into<String>) -> Error {
    Error::Target {
        pid,
        problem: problem.into(),
    }
}
