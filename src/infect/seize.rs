//! Seizing a whole process with PTRACE_SEIZE + PTRACE_INTERRUPT, and
//! letting it go again exactly as it was.
//!
//! SEIZE (unlike ATTACH) sends no SIGSTOP, so the target cannot tell it was
//! stopped, and a task that was already stopped by SIGSTOP/SIGTSTP/SIGTTIN/
//! SIGTTOU reports a PTRACE_EVENT_STOP carrying that signal instead of being
//! woken. Threads can appear while crest seizes (a running thread calls
//! clone), so /proc/PID/task is re-read until a pass finds nothing new; a
//! thread that exits meanwhile (ESRCH, or an exit reported by wait) is
//! dropped.
//!
//! Release: PTRACE_DETACH with no signal. For a process in a group stop the
//! kernel re-arms the stop when the tracer goes (`__ptrace_unlink` sets
//! JOBCTL_STOP_PENDING while SIGNAL_STOP_STOPPED is in effect), so the task
//! stays in state T and its parent gets no new wait event (KERNEL.md). A
//! thread in PTRACE_LISTEN cannot be detached (ESRCH): it is interrupted
//! and waited for first. Dropping a [`Seized`] releases it, so every error
//! path leaves the target running (or stopped) as before.

use std::cell::Cell;
use std::marker::PhantomData;
use std::os::fd::AsFd;

use super::stop::{Stop, is_stop_signal, wait_stop};
use super::target::{check_target, is_parent_of, refuse};
use crate::error::{Error, Result};
use crate::sys::process::{self, SIGKILL};
use crate::sys::ptrace::{self as pt, PTRACE_O_SUSPEND_SECCOMP};
use crate::sys::{Errno, Pid};
use crate::{debug, info, warn};

/// How many passes over /proc/PID/task before crest gives up on a process
/// that keeps creating threads faster than they can be seized.
const MAX_PASSES: usize = 64;
/// How many signals a thread may receive while crest waits for its
/// INTERRUPT stop before crest gives up (each one is followed by a new
/// INTERRUPT, so more than a few means the kernel is not stopping it).
const MAX_SIGNALS_WHILE_SEIZING: usize = 1000;

/// What to do with the target when crest lets it go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Detach: the target continues (or stays stopped) as before.
    Resume,
    /// SIGKILL the target (after a dump, CRIU's default).
    Kill,
}

/// A process whose every thread crest has seized and stopped.
///
/// Not `Send`: ptrace requests are only accepted from the tracing thread.
#[derive(Debug)]
pub struct Seized {
    pid: Pid,
    threads: Vec<Pid>,
    stop_signal: Cell<Option<i32>>,
    released: bool,
    _tracer_thread: PhantomData<*const ()>,
}

impl Seized {
    /// The process id (thread group id).
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The seized threads, the leader (tid == pid) first.
    pub fn threads(&self) -> &[Pid] {
        &self.threads
    }

    /// The signal that stopped the process before crest came (SIGSTOP,
    /// SIGTSTP, SIGTTIN or SIGTTOU), or None if it was running.
    pub fn stop_signal(&self) -> Option<i32> {
        self.stop_signal.get()
    }

    /// Records a group stop that began while crest held the process.
    pub(crate) fn note_stop(&self, sig: i32) {
        if self.stop_signal.get().is_none() {
            info!("pid {}: stopped by signal {sig} while seized", self.pid);
            self.stop_signal.set(Some(sig));
        }
    }

    /// Lets the process go: detached as it was, or killed.
    pub fn release(mut self, mode: Release) -> Result<()> {
        self.released = true;
        match mode {
            Release::Resume => self.detach_all(),
            Release::Kill => self.kill_all(),
        }
    }

    fn detach_all(&self) -> Result<()> {
        let stopped = self.stop_signal().is_some();
        let mut switches = Vec::new();
        if stopped {
            switches = self.threads.iter().map(|&t| self.switches(t)).collect();
        }
        let mut first = None;
        for &tid in &self.threads {
            if let Err(e) = detach(tid) {
                warn!("pid {}: {e}", self.pid);
                first.get_or_insert(e);
            }
        }
        if stopped {
            self.wait_stopped(&switches);
        }
        info!(
            "pid {}: released {} thread(s)",
            self.pid,
            self.threads.len()
        );
        first.map_or(Ok(()), Err)
    }

    /// A thread's `voluntary_ctxt_switches` and State, None once it is gone.
    fn sched_state(&self, tid: Pid) -> Option<(u64, u8)> {
        let text = crate::proc::read(&format!("{}/task/{tid}", self.pid), "status").ok()?;
        let state = crate::proc::status::parse(&text).ok()?.state;
        let key = b"\nvoluntary_ctxt_switches:";
        let at = memchr::memmem::find(&text, key)? + key.len();
        let digits = text[at..].iter().skip_while(|c| c.is_ascii_whitespace());
        let n = digits
            .take_while(|c| c.is_ascii_digit())
            .fold(0u64, |n, &c| n * 10 + u64::from(c - b'0'));
        Some((n, state))
    }

    fn switches(&self, tid: Pid) -> u64 {
        self.sched_state(tid).map_or(0, |s| s.0)
    }

    /// After DETACH the kernel wakes a group-stopped thread so that it
    /// re-enters the stop by itself: it is briefly R, and may still read T
    /// before it has even woken. Wait (1 s at most) until every thread has
    /// been scheduled (a voluntary context switch more than before the
    /// detach) and shows T, so callers see the final state.
    fn wait_stopped(&self, before: &[u64]) {
        let start = std::time::Instant::now();
        let limit = std::time::Duration::from_secs(1);
        for (&tid, &n0) in self.threads.iter().zip(before) {
            while start.elapsed() < limit {
                match self.sched_state(tid) {
                    Some((n, b'T')) if n > n0 => break,
                    None => break,
                    _ => std::thread::sleep(std::time::Duration::from_millis(1)),
                }
            }
        }
        if start.elapsed() >= limit {
            warn!("pid {}: not back in its stop 1 s after release", self.pid);
        }
    }

    fn kill_all(&self) -> Result<()> {
        let crest_is_parent = is_parent_of(self.pid);
        let pidfd = process::pidfd_open(self.pid).ok();
        process::kill(self.pid, SIGKILL)
            .map_err(|e| Error::sys("kill", format!("killing pid {}", self.pid), e))?;
        // A big process's exit is mostly freeing its memory: crest frees it
        // too, on its own CPU, so the wait below is shorter. Best effort:
        // the process frees whatever crest does not.
        if let Some(fd) = pidfd {
            let _ = process::process_mrelease(fd.as_fd());
        }
        // A traced thread's end is reported to the tracer first; non-leader
        // threads are reaped by that wait. The leader is handed on to its
        // real parent by the same wait, unless crest is that parent, in
        // which case it stays for crest's own caller to reap.
        // The leader's end is reported only once every other thread has
        // been reaped, so the leader (first in `threads`) is waited for last.
        for &tid in self.threads.iter().rev() {
            if tid != self.pid || !crest_is_parent {
                let _ = wait_stop(tid);
            }
        }
        info!("pid {}: killed", self.pid);
        Ok(())
    }
}

impl Drop for Seized {
    fn drop(&mut self) {
        if !self.released {
            self.released = true;
            if let Err(e) = self.detach_all() {
                warn!("pid {}: releasing after an error: {e}", self.pid);
            }
        }
    }
}

/// PTRACE_DETACH one thread; a thread that is running (a failed command left
/// it so) or listening is interrupted and waited for first.
fn detach(tid: Pid) -> Result<()> {
    match pt::ptrace_detach(tid) {
        Ok(()) => return Ok(()),
        Err(Errno::ESRCH) => {}
        Err(e) => {
            return Err(Error::sys(
                "PTRACE_DETACH",
                format!("releasing thread {tid}"),
                e,
            ));
        }
    }
    if pt::ptrace_interrupt(tid).is_err() {
        debug!("thread {tid}: gone before detach");
        return Ok(());
    }
    // A signal-delivery stop may come before the interrupt's: its signal
    // goes with the thread rather than being lost.
    let sig = match wait_stop(tid)? {
        s if s.is_end() => return Ok(()),
        Stop::Signal(sig) => sig,
        _ => 0,
    };
    pt::ptrace_detach_signal(tid, sig)
        .map_err(|e| Error::sys("PTRACE_DETACH", format!("releasing thread {tid}"), e))
}

fn list_tasks(pid: Pid) -> Result<Vec<Pid>> {
    let path = format!("/proc/{pid}/task");
    let dir = std::fs::read_dir(&path).map_err(|e| Error::io("list", &path, e))?;
    let mut tids: Vec<Pid> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    // The leader first: it is the thread the parasite runs in.
    tids.sort_by_key(|&t| (t != pid, t));
    Ok(tids)
}

/// The outcome of seizing one thread.
enum Seizing {
    /// Stopped by crest's INTERRUPT; with the group-stop signal if the
    /// process was stopped.
    Stopped(Option<i32>),
    /// The thread exited first.
    Gone,
}

/// Seizes every thread of `pid` and waits until each is stopped.
pub fn seize(pid: Pid) -> Result<Seized> {
    check_target(pid)?;
    let mut seized = Seized {
        pid,
        threads: Vec::new(),
        stop_signal: Cell::new(None),
        released: false,
        _tracer_thread: PhantomData,
    };
    let mut options = PTRACE_O_SUSPEND_SECCOMP;
    for _ in 0..MAX_PASSES {
        let new: Vec<Pid> = list_tasks(pid)?
            .into_iter()
            .filter(|t| !seized.threads.contains(t))
            .collect();
        if new.is_empty() {
            if !seized.threads.contains(&pid) {
                return Err(refuse(pid, "it exited while crest was seizing it".into()));
            }
            info!(
                "pid {pid}: seized {} thread(s), stop signal {:?}",
                seized.threads.len(),
                seized.stop_signal()
            );
            return Ok(seized);
        }
        for tid in new {
            match seize_thread(pid, tid, &mut options)? {
                Seizing::Stopped(sig) => {
                    seized.threads.push(tid);
                    if let Some(sig) = sig {
                        seized.stop_signal.set(Some(sig));
                    }
                }
                Seizing::Gone => debug!("pid {pid}: thread {tid} exited while being seized"),
            }
        }
    }
    Err(refuse(
        pid,
        format!("it kept creating threads through {MAX_PASSES} passes"),
    ))
}

fn seize_thread(pid: Pid, tid: Pid, options: &mut u64) -> Result<Seizing> {
    loop {
        match pt::ptrace_seize(tid, *options) {
            Ok(()) => break,
            Err(Errno::ESRCH) => return Ok(Seizing::Gone),
            Err(Errno::EPERM) if *options & PTRACE_O_SUSPEND_SECCOMP != 0 => {
                warn!(
                    "pid {pid}: PTRACE_O_SUSPEND_SECCOMP refused (needs CAP_SYS_ADMIN); a seccomp filter may kill the parasite"
                );
                *options &= !PTRACE_O_SUSPEND_SECCOMP;
            }
            Err(e) => {
                return Err(Error::Sys {
                    call: "PTRACE_SEIZE",
                    context: format!("seizing thread {tid} of pid {pid}"),
                    errno: e,
                    hint: "is another debugger attached? see TracerPid in /proc/PID/status",
                });
            }
        }
    }
    debug!("pid {pid}: seized thread {tid}");
    if let Err(e) = pt::ptrace_interrupt(tid) {
        debug!("pid {pid}: PTRACE_INTERRUPT of thread {tid}: {e:?}");
    }
    wait_seized(pid, tid)
}

/// Waits for the INTERRUPT (or group-) stop of a freshly seized thread.
/// A signal that arrives first is delivered as if crest were not there,
/// and the thread is interrupted again (as CRIU's compel does), so a trap
/// is pending whenever the thread next looks at its signals, whatever
/// became of the first request.
fn wait_seized(pid: Pid, tid: Pid) -> Result<Seizing> {
    // A count, not a time: on a starved machine (qemu's emulation beside
    // other guests) a single wait can outlast any time budget.
    for _ in 0..MAX_SIGNALS_WHILE_SEIZING {
        match wait_stop(tid)? {
            Stop::Event(sig) if is_stop_signal(sig) => return Ok(Seizing::Stopped(Some(sig))),
            Stop::Event(_) => return Ok(Seizing::Stopped(None)),
            Stop::Signal(sig) => {
                debug!("pid {pid}: thread {tid} gets signal {sig} while being seized");
                pt::ptrace_cont(tid, sig).map_err(|e| {
                    Error::sys(
                        "PTRACE_CONT",
                        format!("delivering signal {sig} to thread {tid}"),
                        e,
                    )
                })?;
                if pt::ptrace_interrupt(tid).is_err() {
                    debug!("pid {pid}: thread {tid} gone after signal {sig}");
                }
            }
            Stop::Exited(_) | Stop::Killed(_) => return Ok(Seizing::Gone),
        }
    }
    let _ = detach(tid);
    Err(refuse(
        pid,
        format!("thread {tid} kept receiving signals instead of stopping"),
    ))
}
