//! Creating the restored tree's tasks with their pids, and the guard that
//! removes them all again when the restore fails.
//!
//! crest creates the root; every task, still running crest's code, creates
//! its own children (so each has its dumped parent) before it hands over to
//! its restorer. A pid comes from clone3's set_tid, or on kernels without it
//! from /proc/sys/kernel/ns_last_pid, which crest keeps locked meanwhile.
//! Zombies are created the same way and exit at once with their status, so
//! their parent finds them as it left them.
//!
//! crest is a child subreaper while it restores: a task whose parent dies in
//! a failed restore is reparented to crest, which reaps it, so nothing is
//! left behind, not even a zombie.

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use super::pids;
use super::plan::NS_LAST_PID;
use crate::error::{Error, Result};
use crate::sys::Pid;
use crate::sys::process::{__WALL, SIGKILL, WNOHANG, kill, prctl, wait4};

/// How long a pid that is free in /proc but still taken is waited for.
const PID_WAIT: Duration = Duration::from_secs(2);
/// How long the guard waits for a killed task to be reaped.
const REAP_WAIT: Duration = Duration::from_secs(5);
const PR_SET_CHILD_SUBREAPER: i32 = 36;

/// How tasks get their pids: clone3 set_tid, or ns_last_pid (locked).
pub enum PidSource {
    /// clone3 with set_tid (Linux 5.5).
    SetTid,
    /// /proc/sys/kernel/ns_last_pid, open and flock'ed.
    NsLastPid(std::fs::File),
}

impl PidSource {
    /// set_tid where the kernel has it (unless CREST_NO_SET_TID=1, for
    /// tests); otherwise ns_last_pid, locked (as CRIU does, so two restores
    /// do not race for it) for as long as the restore runs.
    pub fn choose() -> Result<PidSource> {
        let forced = std::env::var_os("CREST_NO_SET_TID").is_some_and(|v| v == "1");
        if !forced && crate::sys::spawn::kernel_at_least(5, 5) {
            return Ok(PidSource::SetTid);
        }
        crate::warn!("clone3 cannot choose pids here: setting them through {NS_LAST_PID}");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(NS_LAST_PID)
            .map_err(|e| Error::io("open", NS_LAST_PID, e))?;
        crate::sys::spawn::flock_exclusive(&f).map_err(|e| Error::sys("flock", NS_LAST_PID, e))?;
        Ok(PidSource::NsLastPid(f))
    }

    /// The ns_last_pid file, for the restorers' threads.
    pub fn file(&self) -> Option<&std::fs::File> {
        match self {
            PidSource::SetTid => None,
            PidSource::NsLastPid(f) => Some(f),
        }
    }

    /// Creates a child task with `pid`, like fork: 0 in the child.
    pub fn create(&self, pid: Pid) -> Result<Pid> {
        match self {
            PidSource::SetTid => create_with_set_tid(pid),
            PidSource::NsLastPid(f) => create_with_ns_last_pid(pid, f),
        }
    }
}

/// clone3 with the dumped pid. A pid number stays taken for a moment after
/// its process is gone (while a dying child still names it as its session
/// or group), so EEXIST is retried for a short while.
fn create_with_set_tid(pid: Pid) -> Result<Pid> {
    let start = Instant::now();
    loop {
        match crate::sys::spawn::clone3_with_pid(pid) {
            Err(crate::sys::Errno::EEXIST) if start.elapsed() < PID_WAIT => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other.map_err(|e| pid_error(pid, e)),
        }
    }
}

/// Writes `pid - 1` to ns_last_pid and forks: the child gets `pid` unless
/// another task was created in between, which both sides see.
fn create_with_ns_last_pid(pid: Pid, f: &std::fs::File) -> Result<Pid> {
    pids::check_free(&[pid as u32])?;
    f.write_all_at((pid - 1).to_string().as_bytes(), 0)
        .map_err(|e| Error::io("write", NS_LAST_PID, e))?;
    let child = crate::sys::process::fork()
        .map_err(|e| Error::sys("fork", format!("creating pid {pid}"), e))?;
    if child == 0 {
        if crate::sys::process::getpid() != pid {
            crate::sys::process::exit_group(1);
        }
        return Ok(0);
    }
    if child != pid {
        let _ = wait4(child, __WALL);
        return Err(Error::Unsupported(format!(
            "pid {pid} went to another new process while crest set {NS_LAST_PID}; try again"
        )));
    }
    Ok(child)
}

fn pid_error(pid: Pid, e: crate::sys::Errno) -> Error {
    if e == crate::sys::Errno::EEXIST {
        if let Err(taken) = pids::check_free(&[pid as u32]) {
            return taken;
        }
        return Error::Unsupported(match pids::group_user(pid as u32) {
            Some(user) => format!(
                "pid {pid} is still the session or process group id of {user}; stop that process or restore where the pid is free"
            ),
            None => {
                format!("pid {pid} is taken by a process crest cannot see (another pid namespace?)")
            }
        });
    }
    Error::Sys {
        call: "clone3",
        context: format!("creating pid {pid}"),
        errno: e,
        hint: "restore needs root (CAP_SYS_ADMIN) to choose the pid",
    }
}

/// The restored tree's tasks until the restore succeeded: on drop, every
/// one is killed and reaped (traced threads included).
pub struct Created {
    ids: Vec<Pid>,
    armed: bool,
}

impl Created {
    /// Guards the tasks with these ids (every pid and thread id), making
    /// crest the subreaper of the tree meanwhile.
    pub fn new(ids: Vec<Pid>) -> Created {
        let _ = prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        Created { ids, armed: true }
    }

    /// The restore succeeded: the tasks live on.
    pub fn disarm(&mut self) {
        self.armed = false;
        let _ = prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
    }
}

impl Drop for Created {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        for &id in &self.ids {
            let _ = kill(id, SIGKILL);
        }
        // Children of killed tasks reach crest (the subreaper) only once
        // their parent is gone: poll until each id is reaped or gone.
        let start = Instant::now();
        for &id in self.ids.iter().rev() {
            while start.elapsed() < REAP_WAIT {
                match wait4(id, WNOHANG | __WALL) {
                    Ok((got, _)) if got == id => break,
                    _ if !std::path::Path::new(&format!("/proc/{id}")).exists() => break,
                    _ => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        }
        let _ = prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
    }
}
