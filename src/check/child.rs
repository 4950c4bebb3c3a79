//! Probe children: forked helpers that are always killed and reaped.
//!
//! A probe that needs another process forks one with [`Child::fork`]. The
//! child first asks for SIGKILL when crest dies (PR_SET_PDEATHSIG), so an
//! interrupted `crest check` cannot leak it, then runs a short body of raw
//! syscalls (async-signal-safe: crest may be multi-threaded in tests) and
//! exits with the body's code. Dropping a [`Child`] kills and reaps it, so
//! every error path cleans up. Waits poll with WNOHANG against a deadline:
//! under an emulator without ptrace a stop that never comes must not hang
//! the check.
//!
//! [`Tracee`] is a child that finished its setup, reported it through a
//! pipe, and was then seized and interrupted: the state dump starts from.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use crate::sys::process::{
    self, __WALL, PR_SET_PDEATHSIG, SIGKILL, WNOHANG, exit_group, getppid, kill, wait4,
};
use crate::sys::{Errno, Pid, fd, ptrace};

use super::probe::{Fail, SysExt};

/// How long a probe waits for a child to stop, report or exit.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(2);

/// A forked probe child; killed and reaped on drop.
#[derive(Debug)]
pub struct Child {
    pid: Pid,
    reaped: bool,
}

impl Child {
    /// Forks a child that runs `body` and exits with its return value.
    /// `body` must only make raw syscalls: no allocation, no locks, no panics.
    pub fn fork(body: impl FnOnce() -> i32) -> Result<Child, Fail> {
        let parent = process::getpid();
        let pid = process::fork().ctx("fork")?;
        if pid == 0 {
            // The parent may have died before PDEATHSIG was armed: then the
            // child's parent is no longer `parent` and it must not linger.
            if process::prctl(PR_SET_PDEATHSIG, SIGKILL as u64, 0, 0, 0).is_err()
                || getppid() != parent
            {
                exit_group(127);
            }
            exit_group(body());
        }
        Ok(Child { pid, reaped: false })
    }

    /// Takes charge of a child created another way (clone3), so it is
    /// reaped like the others.
    pub fn adopt(pid: Pid) -> Child {
        Child { pid, reaped: false }
    }

    /// The child's pid.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Waits for the next state change (stop or exit) of the child; returns
    /// the raw wait status.
    pub fn wait(&mut self) -> Result<i32, Fail> {
        let status = wait_deadline(self.pid, WAIT_TIMEOUT)?;
        if exited(status) {
            self.reaped = true;
        }
        Ok(status)
    }

    /// Waits for the child to exit; returns its exit code (or 128 + signal).
    pub fn wait_exit(&mut self) -> Result<i32, Fail> {
        loop {
            let status = self.wait()?;
            if status & 0x7f == 0 {
                return Ok((status >> 8) & 0xff);
            }
            if exited(status) {
                return Ok(128 + (status & 0x7f));
            }
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        let _ = kill(self.pid, SIGKILL);
        // A SIGKILLed child exits even from a ptrace stop; skip reports of
        // stops that were queued before the kill landed.
        while let Ok(status) = wait_deadline(self.pid, WAIT_TIMEOUT) {
            if exited(status) {
                break;
            }
        }
    }
}

/// Whether a wait status means the process is gone (exited or killed).
fn exited(status: i32) -> bool {
    status & 0x7f == 0 || ((status & 0x7f) + 1) as i8 >> 1 > 0
}

/// Whether a wait status is a stop; returns (signal, ptrace event).
pub fn stopped(status: i32) -> Option<(i32, i32)> {
    (status & 0xff == 0x7f).then_some(((status >> 8) & 0xff, status >> 16))
}

/// wait4(pid, WNOHANG | __WALL) polled until `timeout`. Stops and exits of
/// a probe child come within microseconds, so the first 200 us only yield the
/// CPU (to the child, on a busy machine); after that naps grow from 20 us to
/// 250 us, which bounds the extra latency while costing no CPU.
fn wait_deadline(pid: Pid, timeout: Duration) -> Result<i32, Fail> {
    let start = Instant::now();
    let mut nap = Duration::from_micros(20);
    loop {
        match wait4(pid, WNOHANG | __WALL) {
            Ok((0, _)) | Err(Errno::EINTR) => {}
            Ok((_, status)) => return Ok(status),
            Err(e) => return Err(Fail::from_errno("wait4", e)),
        }
        let waited = start.elapsed();
        if waited >= timeout {
            return Err(Fail::error(format!(
                "pid {pid} did not change state within {} ms",
                timeout.as_millis()
            )));
        }
        if waited < Duration::from_micros(200) {
            process::sched_yield();
        } else {
            process::nanosleep(nap);
            nap = (nap * 2).min(Duration::from_micros(250));
        }
    }
}

/// A child that ran its setup, then was seized and stopped with
/// PTRACE_INTERRUPT. Killed and reaped on drop.
#[derive(Debug)]
pub struct Tracee {
    child: Child,
    /// The byte the child's setup reported (its own result code).
    pub setup_code: u8,
}

impl Tracee {
    /// Forks a child that runs `setup` (raw syscalls only), reports its code
    /// through a pipe and sleeps; then seizes it with `options` (plus
    /// PTRACE_O_EXITKILL) and interrupts it.
    pub fn start(setup: impl FnOnce() -> u8, options: u64) -> Result<Tracee, Fail> {
        let (rd, wr) = fd::pipe2(fd::O_CLOEXEC).ctx("pipe2")?;
        let child = Child::fork(|| {
            let code = [setup()];
            let _ = fd::write(wr.as_fd(), &code);
            loop {
                process::pause();
            }
        })?;
        drop(wr);
        if !fd::ppoll_readable(rd.as_fd(), WAIT_TIMEOUT).ctx("ppoll")? {
            return Err(Fail::error(
                "the probe child did not report its setup in time".into(),
            ));
        }
        let mut code = [0u8];
        if fd::read(rd.as_fd(), &mut code).ctx("read")? != 1 {
            return Err(Fail::error("the probe child died during its setup".into()));
        }
        let mut t = Tracee {
            child,
            setup_code: code[0],
        };
        let pid = t.pid();
        ptrace::ptrace_seize(pid, options | ptrace::PTRACE_O_EXITKILL).ctx("PTRACE_SEIZE")?;
        ptrace::ptrace_interrupt(pid).ctx("PTRACE_INTERRUPT")?;
        t.expect_event_stop()?;
        Ok(t)
    }

    /// The tracee's pid.
    pub fn pid(&self) -> Pid {
        self.child.pid()
    }

    /// The underlying child.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Waits for a PTRACE_EVENT_STOP; returns its stop signal.
    pub fn expect_event_stop(&mut self) -> Result<i32, Fail> {
        let status = self.child.wait()?;
        match stopped(status) {
            Some((sig, ptrace::PTRACE_EVENT_STOP)) => Ok(sig),
            _ => Err(Fail::error(format!(
                "expected a PTRACE_EVENT_STOP, got wait status {status:#x}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_is_reported_and_child_reaped() {
        let mut c = Child::fork(|| 42).expect("fork");
        assert_eq!(c.wait_exit().expect("exit"), 42);
        let pid = c.pid();
        drop(c);
        assert_eq!(wait4(pid, WNOHANG | __WALL), Err(Errno::ECHILD));
    }

    #[test]
    fn dropping_a_sleeping_child_kills_and_reaps_it() {
        let c = Child::fork(|| {
            loop {
                process::pause();
            }
        })
        .expect("fork");
        let pid = c.pid();
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        drop(c);
        assert_eq!(wait4(pid, WNOHANG | __WALL), Err(Errno::ECHILD));
    }

    #[test]
    fn status_decoding() {
        assert!(exited(0x2a00)); // exit(42)
        assert!(exited(9)); // killed by SIGKILL
        assert!(!exited(0x137f)); // stopped by SIGSTOP
        assert_eq!(stopped(0x137f), Some((19, 0)));
        assert_eq!(stopped(0x0080_057f), Some((5, 128)));
        assert_eq!(stopped(0x2a00), None);
    }
}
