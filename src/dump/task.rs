//! Per-process settings read from outside: the process record
//! (`/proc/PID/stat` and `/proc/PID/task`), task-misc (`/proc/PID/status`,
//! `comm`, `personality`, the `cwd` and `root` links), credentials (status),
//! resource limits (prlimit64 with no new value, which only reads, or
//! `/proc/PID/limits` where prlimit64 is not allowed), POSIX
//! timers (`/proc/PID/timers`), per-thread signal masks (each thread's
//! status) and oom_score_adj.
//!
//! Not visible from outside, so left for the parasite step: dumpable,
//! pdeath_signal, child_subreaper, securebits, sigactions, itimers, the time
//! left on each POSIX timer, and the siginfo of pending signals (only their
//! masks are here). A seccomp filter is refused: restore could not put it
//! back, and a process silently losing its sandbox is worse than no dump.

use super::mm::readlink;
use super::{parsed, read_proc};
use crate::error::{Errno, Error, Result};
use crate::image::creds::Creds;
use crate::image::pstree::{Process, TaskState};
use crate::image::rlimits::{Rlimit, Rlimits};
use crate::image::task::TaskMisc;
use crate::image::timers::PosixTimer;
use crate::proc::{limits, stat, status, timers};
use crate::sys::rlimit::{RLIM_NLIMITS, prlimit64_get};

/// What /proc tells about one thread.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThreadInfo {
    /// The thread id.
    pub tid: u32,
    /// Its name (`/proc/PID/task/TID/comm`).
    pub comm: Vec<u8>,
    /// SigBlk: its blocked mask.
    pub blocked: u64,
    /// SigPnd: signals pending for this thread only.
    pub pending: u64,
}

/// The process record of `pid`: its tree identity, state and threads.
///
/// A stopped task (`T`) is recorded as stopped by SIGSTOP: /proc does not
/// say which signal stopped it; PTRACE_SEIZE reports it, and the seize step
/// corrects the record.
pub fn collect_pstree(pid: u32) -> Result<Process> {
    let text = read_proc(pid, "stat")?;
    let st = parsed(pid, "stat", stat::parse(&text))?;
    let state = match st.state {
        b'Z' | b'X' => TaskState::Zombie {
            exit_code: st.exit_code,
        },
        b'T' => TaskState::Stopped {
            signal: libc::SIGSTOP as u32,
        },
        _ => TaskState::Running,
    };
    let threads = match state {
        TaskState::Zombie { .. } => Vec::new(),
        _ => list_threads(pid)?,
    };
    let id = |v: i32| u32::try_from(v).unwrap_or(0);
    Ok(Process {
        pid,
        ppid: id(st.ppid),
        pgid: id(st.pgrp),
        sid: id(st.session),
        state,
        threads,
    })
}

/// The thread ids of `pid`, the leader first.
fn list_threads(pid: u32) -> Result<Vec<u32>> {
    let dir = format!("/proc/{pid}/task");
    let entries =
        std::fs::read_dir(&dir).map_err(|e| super::gone_or(pid, Error::io("list", &dir, e)))?;
    let mut tids: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_by_key(|&t| (t != pid, t));
    Ok(tids)
}

/// `/proc/PID/status`, parsed.
pub fn status(pid: u32) -> Result<status::Status> {
    let text = read_proc(pid, "status")?;
    parsed(pid, "status", status::parse(&text))
}

/// Refuses a process under seccomp (strict or filter).
pub fn refuse_seccomp(pid: u32, st: &status::Status) -> Result<()> {
    match st.seccomp {
        0 => Ok(()),
        mode => Err(Error::Unsupported(format!(
            "pid {pid} runs under seccomp (mode {mode}), which crest cannot dump yet: restore could not re-install the filter"
        ))),
    }
}

/// task-misc: personality, umask, comm, cwd, root, THP setting.
pub fn collect_misc(pid: u32, st: &status::Status) -> Result<TaskMisc> {
    let pers = read_proc(pid, "personality")?;
    let personality = crate::proc::hex(pers.trim_ascii())
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| Error::Proc {
            path: format!("/proc/{pid}/personality"),
            line: 1,
            problem: "not a hexadecimal number".into(),
        })?;
    let mut comm = read_proc(pid, "comm")?;
    if comm.last() == Some(&b'\n') {
        comm.pop();
    }
    Ok(TaskMisc {
        personality,
        umask: st.umask.unwrap_or(0o022),
        comm,
        cwd: readlink(pid, &format!("/proc/{pid}/cwd"))?,
        root: readlink(pid, &format!("/proc/{pid}/root"))?,
        dumpable: 0,
        thp_disable: st.thp_enabled == Some(false),
        pdeath_signal: 0,
        child_subreaper: false,
    })
}

/// Credentials from status (securebits are the parasite's: PR_GET_SECUREBITS).
pub fn collect_creds(st: &status::Status) -> Creds {
    Creds {
        uids: st.uids,
        gids: st.gids,
        groups: st.groups.clone(),
        cap_inheritable: st.cap_inheritable,
        cap_permitted: st.cap_permitted,
        cap_effective: st.cap_effective,
        cap_bounding: st.cap_bounding,
        cap_ambient: st.cap_ambient,
        securebits: 0,
        no_new_privs: st.no_new_privs,
    }
}

/// Every RLIMIT_* of `pid`, indexed by resource number: from prlimit64, or
/// from /proc/PID/limits when the kernel refuses prlimit64 (EPERM: the
/// target has other ids and crest lacks CAP_SYS_RESOURCE).
pub fn collect_rlimits(pid: u32) -> Result<Rlimits> {
    let mut limits = Vec::with_capacity(RLIM_NLIMITS as usize);
    for r in 0..RLIM_NLIMITS {
        match prlimit64_get(pid as i32, r) {
            Ok((cur, max)) => limits.push(Rlimit { cur, max }),
            Err(Errno::EPERM) => return rlimits_from_proc(pid),
            Err(errno) => {
                let context = format!("reading limit {r} of pid {pid}");
                return Err(super::gone_or(pid, Error::sys("prlimit64", context, errno)));
            }
        }
    }
    Ok(Rlimits { limits })
}

fn rlimits_from_proc(pid: u32) -> Result<Rlimits> {
    let text = read_proc(pid, "limits")?;
    let pairs = parsed(pid, "limits", limits::parse(&text))?;
    let limits = pairs
        .into_iter()
        .map(|(cur, max)| Rlimit { cur, max })
        .collect();
    Ok(Rlimits { limits })
}

/// The POSIX timers of `pid`: ids, clocks and sigevents; their times and
/// overruns stay 0 until the parasite asks timer_gettime.
pub fn collect_posix_timers(pid: u32) -> Result<Vec<PosixTimer>> {
    let text = read_proc(pid, "timers")?;
    let list = parsed(pid, "timers", timers::parse(&text))?;
    Ok(list
        .into_iter()
        .map(|t| PosixTimer {
            id: t.id,
            clock_id: t.clock_id,
            sigev_notify: t.notify,
            sigev_signo: t.signo,
            sigev_value: t.sigev_value,
            notify_tid: t.notify_pid,
            ..PosixTimer::default()
        })
        .collect())
}

/// Names and signal masks of each thread (a thread gone meanwhile is skipped).
pub fn collect_threads(pid: u32, tids: &[u32]) -> Result<Vec<ThreadInfo>> {
    let mut out = Vec::with_capacity(tids.len());
    for &tid in tids {
        let (Ok(text), Ok(mut comm)) = (
            read_proc(pid, &format!("task/{tid}/status")),
            read_proc(pid, &format!("task/{tid}/comm")),
        ) else {
            continue;
        };
        let st = parsed(pid, &format!("task/{tid}/status"), status::parse(&text))?;
        if comm.last() == Some(&b'\n') {
            comm.pop();
        }
        out.push(ThreadInfo {
            tid,
            comm,
            blocked: st.sig_blocked,
            pending: st.sig_pending,
        });
    }
    Ok(out)
}

/// `/proc/PID/oom_score_adj`.
pub fn collect_oom_score_adj(pid: u32) -> Result<i32> {
    let text = read_proc(pid, "oom_score_adj")?;
    std::str::from_utf8(text.trim_ascii())
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Proc {
            path: format!("/proc/{pid}/oom_score_adj"),
            line: 1,
            problem: "not a number".into(),
        })
}
