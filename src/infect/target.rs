//! Which processes crest may seize, decided from /proc before the first
//! ptrace request: a clear refusal is better than an EPERM or a deadlock.
//!
//! Refused: a pid with no /proc entry, a thread id instead of a process
//! id, a kernel thread (PF_KTHREAD in stat's flags),
//! a zombie (nothing left to dump; its parent must reap it), a process
//! that already has a tracer (ptrace allows one; the message names it),
//! and crest itself or any of its ancestors (stopping them would stop
//! crest, or the shell waiting for it).

use super::target_error;
use crate::error::{Error, Result};
use crate::sys::Pid;
use crate::sys::process;

fn read_status(pid: Pid) -> Result<crate::proc::status::Status> {
    let text = crate::proc::read(&pid.to_string(), "status")?;
    crate::proc::status::parse(&text).map_err(|e| e.in_file(&format!("/proc/{pid}/status")))
}

fn comm(pid: Pid) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_else(|_| "?".into())
}

pub(crate) fn refuse(pid: Pid, why: String) -> Error {
    target_error(pid, format!("cannot be seized: {why}"))
}

/// Refuses targets crest must not or cannot trace.
pub(crate) fn check_target(pid: Pid) -> Result<()> {
    if pid <= 0 {
        return Err(refuse(pid, "not a valid pid".into()));
    }
    let text = std::fs::read(format!("/proc/{pid}/status")).map_err(|_| {
        refuse(
            pid,
            "no such process (no /proc entry); check the pid with ps".into(),
        )
    })?;
    let st =
        crate::proc::status::parse(&text).map_err(|e| e.in_file(&format!("/proc/{pid}/status")))?;
    if st.tgid != pid {
        return Err(refuse(
            pid,
            format!("it is a thread of pid {}; give the process id", st.tgid),
        ));
    }
    if matches!(st.state, b'Z' | b'X') && st.threads > 1 {
        return Err(refuse(
            pid,
            "its main thread exited while other threads run, which crest does not support yet"
                .into(),
        ));
    }
    if matches!(st.state, b'Z' | b'X') {
        return Err(refuse(
            pid,
            "it is a zombie (exited, not yet reaped by its parent)".into(),
        ));
    }
    if is_kernel_thread(pid) {
        return Err(refuse(pid, "it is a kernel thread".into()));
    }
    if st.tracer_pid != 0 {
        let (t, name) = (st.tracer_pid, comm(st.tracer_pid));
        return Err(refuse(
            pid,
            format!("it is already traced by pid {t} ({name}); detach that debugger first"),
        ));
    }
    check_not_ancestor(pid)
}

/// From stat's task flags: the `Kthread:` status line exists only from
/// Linux 6.5, and empty maps also describe a process half way through its
/// exit (a child exiting during a tree seize was once refused as a kernel
/// thread).
fn is_kernel_thread(pid: Pid) -> bool {
    std::fs::read(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|text| crate::proc::stat::parse(&text).ok())
        .is_some_and(|st| st.is_kernel_thread())
}

fn check_not_ancestor(pid: Pid) -> Result<()> {
    let mut p = process::getpid();
    for _ in 0..4096 {
        if p == pid {
            let what = if p == process::getpid() {
                "crest itself"
            } else {
                "an ancestor of crest"
            };
            return Err(refuse(pid, format!("it is {what}, which would deadlock")));
        }
        match read_status(p) {
            Ok(s) if s.ppid > 0 => p = s.ppid,
            _ => break,
        }
    }
    Ok(())
}

/// Whether crest is the real parent of `pid`.
pub(crate) fn is_parent_of(pid: Pid) -> bool {
    read_status(pid).is_ok_and(|s| s.ppid == process::getpid())
}
