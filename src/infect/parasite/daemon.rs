//! The parasite's daemon seen from crest: the socketpair made in the
//! target, the daemon's start, one command over the socket, and its stop.
//!
//! Waiting for an answer watches two things, since the daemon runs with
//! the leader continued: the socket (ppoll in [`POLL_SLICE`] steps) and,
//! between steps, the leader itself (wait4 with WNOHANG through
//! [`Remote::poll`](crate::infect::Remote)). So a daemon that faults
//! (SIGSEGV, the SIGILL of its panic handler), a target that dies, or a
//! daemon that stopped on its trap because its socket failed each become
//! an error that names what happened, and a daemon that hangs becomes an
//! error after [`DAEMON_TIMEOUT`]; the cure then interrupts the leader.

use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use syscalls::Sysno;

use super::Parasite;
use crate::blob::proto::{
    CMD_DAEMON, CMD_FINI, CmdHeader, DAEMON_MSG_SIZE, DaemonHello, PAYLOAD_OFFSET, RET_PENDING,
};
use crate::error::{Error, Result};
use crate::infect::target_error;
use crate::sys::Errno;
use crate::sys::fd::ppoll_readable;
use crate::sys::process::pidfd_open;
use crate::sys::unix::{
    AF_UNIX, MSG_DONTWAIT, MSG_NOSIGNAL, SOCK_CLOEXEC, SOCK_SEQPACKET, recv, send,
};
use crate::{debug, warn};

/// How long one command may take before crest gives up on the daemon.
const DAEMON_TIMEOUT: Duration = Duration::from_secs(10);
/// How long crest waits on the socket before it looks at the leader.
const POLL_SLICE: Duration = Duration::from_millis(5);
/// How long crest waits for the leader to explain a socket that closed.
const GONE_TIMEOUT: Duration = Duration::from_secs(2);

impl Parasite<'_> {
    /// socketpair in the target, its two fds written into the blob's args
    /// area (crest reads them through the memfd); returns (crest's end,
    /// the daemon's end) as the target's fd numbers.
    pub(super) fn create_socket(&mut self) -> Result<(u64, u64)> {
        let args = self.base + self.blob.args_offset as u64;
        let kind = u64::from(SOCK_SEQPACKET | SOCK_CLOEXEC);
        let nr = Sysno::socketpair.id() as u64;
        let call = [u64::from(AF_UNIX), kind, 0, args, 0, 0];
        self.remote.syscall_ok("socketpair", nr, call)?;
        let mut fds = [0u8; 8];
        let off = self.blob.args_offset as u64;
        self.memfd_io(|f, path| {
            f.read_exact_at(&mut fds, off)
                .map_err(|e| Error::io("read", path, e))
        })?;
        let a = i32::from_ne_bytes([fds[0], fds[1], fds[2], fds[3]]);
        let b = i32::from_ne_bytes([fds[4], fds[5], fds[6], fds[7]]);
        let (a, b) = (u64::from(a as u32), u64::from(b as u32));
        self.remote_fds.extend([a, b]);
        self.daemon_fd = Some(b);
        debug!(
            "pid {}: socketpair {a}, {b} in the target",
            self.seized.pid()
        );
        Ok((a, b))
    }

    /// crest's copy of `crest_end` (pidfd_getfd), then the target closes
    /// its own, keeping only `daemon_end`.
    pub(super) fn take_socket(&mut self, crest_end: u64, daemon_end: u64) -> Result<()> {
        let pid = self.seized.pid();
        let ctx = || format!("pid {pid}: taking crest's end of the parasite socket");
        let pidfd = pidfd_open(pid).map_err(|e| Error::sys("pidfd_open", ctx(), e))?;
        let fd = crate::sys::process::pidfd_getfd(pidfd.as_fd(), crest_end as i32)
            .map_err(|e| Error::sys("pidfd_getfd", ctx(), e))?;
        self.sock = Some(fd);
        self.close_remote(crest_end)?;
        debug!("pid {pid}: crest holds the socket, the daemon gets fd {daemon_end}");
        Ok(())
    }

    /// Starts the blob's head in the leader with CMD_DAEMON and waits for
    /// the daemon's hello, which names the per-thread entry.
    pub(super) fn start_daemon(&mut self) -> Result<()> {
        let fd = self.daemon_fd.unwrap_or(u64::MAX) as u32;
        let mut area = [0u8; PAYLOAD_OFFSET + 8];
        area[..4].copy_from_slice(&CMD_DAEMON.to_ne_bytes());
        area[4..8].copy_from_slice(&RET_PENDING.to_ne_bytes());
        area[8..12].copy_from_slice(&fd.to_ne_bytes());
        let off = self.blob.args_offset as u64;
        self.memfd_io(|f, path| {
            f.write_all_at(&area, off)
                .map_err(|e| Error::io("write", path, e))
        })?;
        let mut regs = *self.remote.saved_regs();
        regs.set_ip(self.base + self.blob.entry as u64);
        let what = "starting the parasite daemon";
        self.remote.start(regs, what)?;
        self.starts += 1;
        let hello = self.receive(what)?;
        let (cmd, ret) = header(&hello);
        let at = PAYLOAD_OFFSET + std::mem::offset_of!(DaemonHello, thread_entry);
        let entry = u64::from_ne_bytes(hello[at..at + 8].try_into().unwrap_or([0; 8]));
        let code = self.base..self.base + self.blob.bytes.len() as u64;
        if cmd != CMD_DAEMON || ret != 0 || !code.contains(&entry) {
            return Err(target_error(
                self.seized.pid(),
                format!(
                    "the parasite daemon's hello is wrong (command {cmd}, ret {ret}, entry {entry:#x})"
                ),
            ));
        }
        self.thread_entry = entry;
        Ok(())
    }

    /// Sends `cmd` with `payload` to the daemon and waits for its answer;
    /// returns the command's `ret` and keeps the answer's payload area.
    /// Answers of commands started earlier and still due are collected
    /// (and dropped) first, so answers never get out of step with commands.
    pub(super) fn daemon_command(&mut self, cmd: u32, payload: &[u8]) -> Result<i32> {
        while !self.pending.is_empty() {
            let _ = self.daemon_finish()?;
        }
        self.daemon_start(cmd, payload)?;
        self.daemon_finish()
    }

    /// Sends `cmd` with `payload` to the daemon without waiting for its
    /// answer; the daemon answers queued commands in order.
    pub(super) fn daemon_start(&mut self, cmd: u32, payload: &[u8]) -> Result<()> {
        let what = format!("running parasite command {cmd}");
        let gone = match (&self.sock, self.remote.is_running()) {
            (None, _) => Some("crest's end of its socket is closed"),
            (Some(_), false) => Some("the daemon is not running (it ended after an earlier error)"),
            (Some(_), true) => None,
        };
        if let Some(why) = gone {
            return Err(target_error(
                self.seized.pid(),
                format!("parasite command {cmd} cannot run: {why}; crest cures the target"),
            ));
        }
        let Some(sock) = self.sock.as_ref() else {
            return Err(self.broken("no socket"));
        };
        let mut msg = vec![0u8; DAEMON_MSG_SIZE];
        msg[..4].copy_from_slice(&cmd.to_ne_bytes());
        msg[4..8].copy_from_slice(&RET_PENDING.to_ne_bytes());
        msg[PAYLOAD_OFFSET..][..payload.len()].copy_from_slice(payload);
        match send(sock.as_fd(), &msg, MSG_NOSIGNAL) {
            Ok(DAEMON_MSG_SIZE) => {}
            Ok(n) => return Err(self.broken(&format!("sent {n} bytes while {what}"))),
            Err(_) => return Err(self.daemon_gone(&what)),
        }
        self.pending.push_back(cmd);
        Ok(())
    }

    /// Waits for the answer to the oldest command still due; returns its
    /// `ret` and keeps the answer's payload area.
    pub(super) fn daemon_finish(&mut self) -> Result<i32> {
        let Some(cmd) = self.pending.pop_front() else {
            return Err(self.broken("an answer was awaited but no command was sent"));
        };
        let what = format!("running parasite command {cmd}");
        let reply = self.receive(&what)?;
        let (got, ret) = header(&reply);
        if got != cmd {
            return Err(self.broken(&format!("the answer is for command {got} while {what}")));
        }
        self.last_payload = reply[PAYLOAD_OFFSET..].to_vec();
        Ok(ret)
    }

    /// Waits for one whole message from the daemon, watching the leader.
    fn receive(&mut self, what: &str) -> Result<Vec<u8>> {
        let deadline = Instant::now() + DAEMON_TIMEOUT;
        let mut buf = vec![0u8; DAEMON_MSG_SIZE];
        loop {
            let Some(sock) = self.sock.as_ref() else {
                return Err(self.broken(&format!("crest's socket is closed while {what}")));
            };
            let ready = ppoll_readable(sock.as_fd(), POLL_SLICE).or_else(|e| match e {
                Errno::EINTR => Ok(false),
                e => Err(Error::sys("ppoll", format!("parasite socket, {what}"), e)),
            })?;
            if ready {
                match recv(sock.as_fd(), &mut buf, MSG_DONTWAIT) {
                    Ok(DAEMON_MSG_SIZE) => return Ok(buf),
                    Ok(0) => return Err(self.daemon_gone(what)),
                    Ok(n) => return Err(self.broken(&format!("a {n}-byte message while {what}"))),
                    Err(Errno::EAGAIN | Errno::EINTR) => {}
                    Err(_) => return Err(self.daemon_gone(what)),
                }
            }
            if let Some(regs) = self.remote.poll(what)? {
                // The daemon may have answered just before it stopped
                // (CMD_FINI does both): the answer counts, the stop is kept.
                if let Some(sock) = self.sock.as_ref()
                    && let Ok(DAEMON_MSG_SIZE) = recv(sock.as_fd(), &mut buf, MSG_DONTWAIT)
                {
                    self.trapped = Some(regs);
                    return Ok(buf);
                }
                return Err(self.ended_at(regs.ip(), what));
            }
            if Instant::now() > deadline {
                return Err(target_error(
                    self.seized.pid(),
                    format!(
                        "the parasite daemon did not answer within {DAEMON_TIMEOUT:?} while {what}; crest stops it and cures the target"
                    ),
                ));
            }
        }
    }

    /// The socket says the daemon's end is gone: ask the leader why (a
    /// fault, its end, or the daemon stopped on its trap).
    fn daemon_gone(&mut self, what: &str) -> Error {
        let deadline = Instant::now() + GONE_TIMEOUT;
        while self.remote.is_running() && Instant::now() < deadline {
            match self.remote.poll(what) {
                Err(e) => return e,
                Ok(Some(regs)) => return self.ended_at(regs.ip(), what),
                Ok(None) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        self.broken(&format!("its socket closed while {what}"))
    }

    /// The leader stopped on a trap at `ip` while the daemon should run.
    fn ended_at(&self, ip: u64, what: &str) -> Error {
        if ip == self.base + self.blob.trap_ip() as u64 {
            self.broken(&format!(
                "it stopped on its trap (its socket failed) while {what}"
            ))
        } else {
            self.remote.stray_trap(ip, what)
        }
    }

    fn broken(&self, problem: &str) -> Error {
        target_error(
            self.seized.pid(),
            format!("the parasite daemon failed: {problem}; crest cures the target"),
        )
    }

    /// Ends a running daemon: CMD_FINI (when crest still has its socket),
    /// then its trap, and checks it closed its end of the socket.
    pub(super) fn stop_daemon(&mut self) -> Result<()> {
        if !self.remote.is_running() && self.trapped.is_none() {
            // Never started, or already stopped by a fault or its trap.
            self.sock = None;
            return Ok(());
        }
        let what = "stopping the parasite daemon";
        let fini = match self.sock {
            Some(_) => self.daemon_command(CMD_FINI, &[]).map(|_| ()),
            None => Ok(()),
        };
        self.sock = None;
        fini?;
        let deadline = Instant::now() + DAEMON_TIMEOUT;
        let regs = loop {
            if let Some(regs) = self.trapped.take() {
                break regs;
            }
            if let Some(regs) = self.remote.poll(what)? {
                break regs;
            }
            if Instant::now() > deadline {
                return Err(self.broken("it did not stop on its trap after CMD_FINI"));
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        if regs.ip() != self.base + self.blob.trap_ip() as u64 {
            return Err(self.remote.stray_trap(regs.ip(), what));
        }
        self.daemon_closed()
    }

    /// Reads CMD_DAEMON's `ret` (the result of closing the daemon's
    /// socket) from the args area; on success the fd is no longer crest's
    /// to close.
    fn daemon_closed(&mut self) -> Result<()> {
        let mut hdr = [0u8; PAYLOAD_OFFSET];
        let off = self.blob.args_offset as u64;
        self.memfd_io(|f, path| {
            f.read_exact_at(&mut hdr, off)
                .map_err(|e| Error::io("read", path, e))
        })?;
        let (cmd, ret) = header(&hdr);
        if cmd != CMD_DAEMON || ret != 0 {
            warn!(
                "pid {}: the parasite daemon ended with command {cmd}, ret {ret}",
                self.seized.pid()
            );
            return Ok(());
        }
        if let Some(fd) = self.daemon_fd.take() {
            self.remote_fds.retain(|&f| f != fd);
        }
        debug!("pid {}: parasite daemon stopped", self.seized.pid());
        Ok(())
    }
}

/// The [`CmdHeader`] at the start of a message: (cmd, ret).
fn header(msg: &[u8]) -> (u32, i32) {
    const _: () = assert!(size_of::<CmdHeader>() == 8);
    let cmd = u32::from_ne_bytes([msg[0], msg[1], msg[2], msg[3]]);
    let ret = i32::from_ne_bytes([msg[4], msg[5], msg[6], msg[7]]);
    (cmd, ret)
}
