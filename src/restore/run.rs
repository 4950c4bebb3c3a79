//! `crest restore -D DIR`: the whole restore, in the order that keeps it
//! all-or-nothing. Everything that can be checked is checked before the
//! task exists (images, pid free, files, vdso layout, the plan); from the
//! moment the task exists a guard kills it on any failure, so a failed
//! restore leaves no process behind.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::child::{self, ChildSetup};
use super::finish::{self, Restorer};
use super::{files, images, pids, plan};
use crate::blob::plan::{DONE_FAILED, DONE_OK, DONE_PENDING, PlanResults};
use crate::dump::run::fault_point;
use crate::error::{Error, Result};
use crate::image::pstree::TaskState;
use crate::sys::Pid;
use crate::sys::process::{__WALL, SIGKILL, WNOHANG, kill, wait4};

/// What `crest restore` was asked to do.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The image directory.
    pub dir: PathBuf,
    /// -d: return once the process runs instead of waiting for it.
    pub detach: bool,
    /// --pidfile: where to write the restored pid.
    pub pidfile: Option<PathBuf>,
    /// -j: the process may use crest's terminal.
    pub shell_job: bool,
}

/// The steps after which `CREST_FAULT` makes a restore fail (tests of the
/// all-or-nothing guarantee): crest's own steps, then `restorer-NAME` for
/// each step of the restorer blob (in the leader, `restorer-creds` also in
/// the other threads).
pub const FAULT_STEPS: &[&str] = &["restore-plan", "restore-files", "restore-takeover"];

/// The restorer's steps by number (plan.rs STEP_*), as CREST_FAULT names
/// them after `restorer-`.
pub const RESTORER_STEPS: [&str; 18] = [
    "start",
    "park",
    "map",
    "fill",
    "protect",
    "place",
    "mm",
    "sigactions",
    "itimers",
    "timers",
    "rlimits",
    "misc",
    "close",
    "clone",
    "thread",
    "signals",
    "creds",
    "shmem",
];

/// The restorer step CREST_FAULT names, if any.
fn restorer_fault() -> u32 {
    let want = std::env::var("CREST_FAULT").unwrap_or_default();
    let name = want.strip_prefix("restorer-").unwrap_or("");
    RESTORER_STEPS
        .iter()
        .position(|s| *s == name)
        .map_or(crate::blob::plan::NO_FAULT, |i| i as u32)
}

/// How long the restorer may take before crest gives up on it.
const RESTORER_TIMEOUT: Duration = Duration::from_secs(120);
/// Bytes of the area where the new task leaves an error message.
const MSG_LEN: usize = 1024;

/// Kills the task it holds unless disarmed: the all-or-nothing guarantee.
/// Every thread id is reaped: threads crest traces are its to wait for,
/// and the leader's end is reported only after theirs.
struct Created {
    pid: Pid,
    tids: Vec<Pid>,
    armed: bool,
}

impl Drop for Created {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let _ = kill(self.pid, SIGKILL);
        for &tid in self.tids.iter().rev() {
            let _ = wait4(tid, __WALL);
        }
    }
}

/// Restores the image in `opts.dir`; returns crest's exit status.
pub fn run(opts: &RestoreOptions) -> Result<i32> {
    let t0 = Instant::now();
    let img = images::load(&opts.dir)?;
    let pid = img.process.pid as Pid;
    pids::check_free(&img.process.threads)?;
    let files = files::plan_files(&img.files, &img.task.misc, opts.shell_job)?;
    let ns_last_pid = pid_by_ns_last_pid()?;
    let mut built = plan::build(
        &img,
        files.first_free_fd(),
        restorer_fault(),
        ns_last_pid.as_ref(),
    )?;
    fault_point(pid, "restore-plan")?;
    let msg = built.layout.alloc(MSG_LEN, 16)?;
    let code = built.layout.alloc(16, 16)?;
    crate::debug!("pid {pid}: {}", plan::describe(&built));
    let keep = built.fds.numbers();
    let child = match &ns_last_pid {
        None => create_task(pid)?,
        Some(f) => create_task_by_ns_last_pid(pid, f)?,
    };
    if child == 0 {
        child::main(&ChildSetup {
            process: &img.process,
            files: &files,
            keep: &keep,
            layout: &built.layout,
            plan: built.plan,
            msg,
            msg_len: MSG_LEN,
        });
    }
    let mut guard = Created {
        pid,
        tids: img.process.threads.iter().map(|&t| t as Pid).collect(),
        armed: true,
    };
    wait_restorer(&built, pid, msg)?;
    crate::debug!("pid {pid}: restorer done after {:?}", t0.elapsed());
    let stopped = match img.process.state {
        TaskState::Stopped { signal } => Some(signal),
        _ => None,
    };
    let r = Restorer {
        layout: &built.layout,
        code,
    };
    finish::take_over(&img.task.threads, &r, stopped, || {
        fault_point(pid, "restore-takeover")
    })?;
    guard.armed = false;
    crate::info!("pid {pid}: restored in {:?}", t0.elapsed());
    if let Some(path) = &opts.pidfile {
        std::fs::write(path, format!("{pid}\n")).map_err(|e| Error::io("write", path, e))?;
    }
    if opts.detach {
        return Ok(0);
    }
    wait_exit(pid)
}

/// clone3 with the dumped pid. A pid number stays taken for a moment after
/// its process is gone (while a dying child still names it as its session
/// or group), so EEXIST is retried for a short while.
fn create_task(pid: Pid) -> Result<Pid> {
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

/// None when clone3 can choose pids (set_tid, Linux 5.5); otherwise
/// /proc/sys/kernel/ns_last_pid, opened and locked (flock, as CRIU does, so
/// two restores do not race for it) for as long as the restore runs.
/// CREST_NO_SET_TID=1 forces this path (tests).
fn pid_by_ns_last_pid() -> Result<Option<std::fs::File>> {
    let forced = std::env::var_os("CREST_NO_SET_TID").is_some_and(|v| v == "1");
    if !forced && crate::sys::spawn::kernel_at_least(5, 5) {
        return Ok(None);
    }
    crate::warn!(
        "clone3 cannot choose pids here: setting them through {}",
        plan::NS_LAST_PID
    );
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(plan::NS_LAST_PID)
        .map_err(|e| Error::io("open", plan::NS_LAST_PID, e))?;
    crate::sys::spawn::flock_exclusive(&f)
        .map_err(|e| Error::sys("flock", plan::NS_LAST_PID, e))?;
    Ok(Some(f))
}

/// Creates the task by writing `pid - 1` to ns_last_pid and forking: the
/// child gets `pid` unless another task was created in between, in which
/// case both sides see it and the restore fails cleanly.
fn create_task_by_ns_last_pid(pid: Pid, f: &std::fs::File) -> Result<Pid> {
    use std::os::unix::fs::FileExt;
    pids::check_free(&[pid as u32])?;
    f.write_all_at((pid - 1).to_string().as_bytes(), 0)
        .map_err(|e| Error::io("write", plan::NS_LAST_PID, e))?;
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
            "pid {pid} went to another new process while crest set {}; try again",
            plan::NS_LAST_PID
        )));
    }
    Ok(child)
}

/// How long a pid that is free in /proc but still taken is waited for.
const PID_WAIT: Duration = Duration::from_secs(2);

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

fn results_word(b: &plan::Built, field: usize) -> u32 {
    b.layout.read_u32(b.results + field as u64)
}

/// Waits until the restorer reports; a task that died or a failed step
/// become the error.
fn wait_restorer(b: &plan::Built, pid: Pid, msg: u64) -> Result<()> {
    let done_at = b.results + std::mem::offset_of!(PlanResults, done) as u64;
    let start = Instant::now();
    loop {
        match results_word(b, std::mem::offset_of!(PlanResults, done)) {
            DONE_OK => return Ok(()),
            DONE_FAILED => return Err(step_error(b, pid)),
            DONE_PENDING => {}
            other => {
                return Err(Error::Target {
                    pid,
                    problem: format!("the restorer reported {other}"),
                });
            }
        }
        if let Ok((got, status)) = wait4(pid, WNOHANG | __WALL)
            && got == pid
        {
            return Err(died(b, pid, status, msg));
        }
        if start.elapsed() > RESTORER_TIMEOUT {
            return Err(Error::Target {
                pid,
                problem: "the restorer did not finish in time".into(),
            });
        }
        crate::sys::spawn::futex_wait_shared(
            done_at as usize,
            DONE_PENDING,
            Duration::from_millis(20),
        );
    }
}

/// What the restorer was doing at each step, for errors.
const STEP_NAMES: [&str; 18] = [
    "starting",
    "moving the vdso out of the way",
    "mapping memory",
    "reading pages into memory",
    "setting memory protections",
    "placing the vdso",
    "setting the mm layout (PR_SET_MM_MAP)",
    "restoring signal actions",
    "restoring interval timers",
    "restoring POSIX timers",
    "restoring resource limits",
    "restoring personality, umask and prctl values",
    "closing crest's fds",
    "creating threads",
    "restoring a thread's own state",
    "queueing pending signals",
    "restoring credentials",
    "recreating shared memory",
];

fn step_error(b: &plan::Built, pid: Pid) -> Error {
    let step = results_word(b, std::mem::offset_of!(PlanResults, step)) as usize;
    let err = results_word(b, std::mem::offset_of!(PlanResults, err)) as i32;
    let index = results_word(b, std::mem::offset_of!(PlanResults, index));
    let what = STEP_NAMES.get(step).copied().unwrap_or("an unknown step");
    Error::Target {
        pid,
        problem: format!(
            "the restorer failed {what} (item {index}): {}",
            crate::sys::Errno::new(-err)
        ),
    }
}

fn died(b: &plan::Built, pid: Pid, status: i32, msg: u64) -> Error {
    let mut text = Vec::new();
    for i in 0..MSG_LEN as u64 {
        let byte = b.layout.read_u32((msg + i) & !3).to_le_bytes()[((msg + i) & 3) as usize];
        if byte == 0 {
            break;
        }
        text.push(byte);
    }
    if !text.is_empty() {
        return Error::Target {
            pid,
            problem: String::from_utf8_lossy(&text).into_owned(),
        };
    }
    let step = results_word(b, std::mem::offset_of!(PlanResults, step)) as usize;
    let what = STEP_NAMES.get(step).copied().unwrap_or("an unknown step");
    Error::Target {
        pid,
        problem: format!(
            "the new task died (wait status {status:#x}) while the restorer was {what}"
        ),
    }
}

/// Waits for the restored process like its parent; its exit status, or
/// 128 + the signal that killed it.
fn wait_exit(pid: Pid) -> Result<i32> {
    loop {
        match wait4(pid, 0) {
            Ok((_, status)) if status & 0x7f == 0 => return Ok((status >> 8) & 0xff),
            Ok((_, status)) => return Ok(128 + (status & 0x7f)),
            Err(crate::sys::Errno::EINTR) => continue,
            Err(e) => {
                return Err(Error::sys(
                    "wait4",
                    format!("waiting for restored pid {pid}"),
                    e,
                ));
            }
        }
    }
}
