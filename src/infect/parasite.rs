//! Loading the parasite blob into a seized process, running its commands,
//! and curing the process afterwards.
//!
//! Injection, all through [`Remote`] system calls in the leader thread:
//!
//! ```text
//!   target: memfd_create("crest")          -> fd N (in the target's table)
//!   crest:  open /proc/PID/fd/N, ftruncate to map_size, pwrite the blob
//!   target: mmap(0, map_size, RWX, MAP_SHARED, N, 0) -> base
//!   target: close(N)                        (the fd table is as before)
//!   target: socketpair(AF_UNIX, SOCK_SEQPACKET|SOCK_CLOEXEC, 0, args)
//!                                           -> fds C, D (written to args)
//!   crest:  pidfd_getfd(C)                  (crest's end of the socket)
//!   target: close(C)                        (D is the parasite's end)
//!   target: the blob's head, CMD_DAEMON(D)  (started once, runs on)
//!   crest:  recv the daemon's hello         (its per-thread entry)
//! ```
//!
//! crest keeps its own descriptor of the memfd and reaches the blob's
//! areas with pread/pwrite: the file and the target's shared mapping are
//! the same page-cache pages, so no Rust pointer into shared, concurrently
//! written memory is ever made. The socket is made by the target itself,
//! so crest needs no path in the target's filesystem and no shared network
//! namespace; SEQPACKET keeps one command = one message.
//!
//! Leader commands ([`Parasite::command`]) go over the socket to the
//! daemon (parasite/cmds/daemon.rs), each a fixed-size message (see the
//! proto.rs diagram), while the leader runs on after PTRACE_CONT. crest
//! waits for the answer in short ppoll slices and, between them, checks
//! the leader with wait4(WNOHANG|__WALL) (see daemon.rs here): a fault in
//! the daemon, the thread's end or a daemon that stopped on its trap is an
//! error naming it, never a hang; group stops are passed through.
//!
//! Per-thread commands ([`Parasite::command_in`]) stay in trap mode, one
//! start per command in their own thread (see thread.rs here). They run
//! while the daemon waits in the leader, so they cannot use the blob's own
//! stack and args area (the daemon's): crest maps a thread area after the
//! blob and enters the blob's per-thread entry with sp and args there.
//! Threads run one at a time (crest waits for each), so they share it.
//!
//! ```text
//!   base                       blob.map_size              map_size
//!   | blob: code, args, stack  | thread args | thread stack |
//!     (the daemon's)              (per-thread commands)
//! ```
//!
//! Cure: CMD_FINI to the daemon, which answers, closes its end and stops
//! on its trap (or, if it is gone or hung, the leader is interrupted);
//! munmap the blob, close whatever of crest's fds remain in the target,
//! restore the thread (see [`Remote::restore`]), then verify against what
//! was read before the injection: /proc/PID/maps and the /proc/PID/fd
//! listing must be identical. Dropping a [`Parasite`] cures it, so every
//! error path cures.

mod daemon;
mod dump_cmds;
mod thread;

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;

use syscalls::Sysno;

use super::remote::{NAME_OFFSET, Remote};
use super::seize::Seized;
use super::target_error;
use crate::blob::proto::{GetPid, PAYLOAD_SIZE, THREAD_ARGS_SIZE, THREAD_STACK_SIZE};
use crate::blob::{self, Blob};
use crate::error::{Error, Result};
use crate::sys::mm::{MAP_SHARED, MFD_CLOEXEC, page_size};
use crate::sys::{Errno, Pid};
use crate::{debug, info, warn};

/// `PROT_READ | PROT_WRITE | PROT_EXEC`.
const PROT_RWX: u64 = 0x7;

/// The steps of [`inject`](Parasite::inject), for tests that make it fail
/// after one of them ([`Parasite::inject_failing_after`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectStep {
    /// The memfd exists in the target's fd table.
    MemfdCreated,
    /// The blob is mapped in the target and its fd still open.
    Mapped,
    /// The target's memfd fd is closed.
    FdClosed,
    /// The socketpair exists in the target, both ends in its fd table.
    SocketPair,
    /// crest holds its end; the target keeps only the parasite's.
    SocketTaken,
    /// The daemon runs and answered: injection complete.
    DaemonStarted,
}

/// What the cure compares against.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    maps: Vec<u8>,
    fds: Vec<String>,
}

fn snapshot(pid: Pid) -> Result<Snapshot> {
    let maps = crate::proc::read(&pid.to_string(), "maps")?;
    let path = format!("/proc/{pid}/fd");
    let dir = std::fs::read_dir(&path).map_err(|e| Error::io("list", &path, e))?;
    let mut fds: Vec<String> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    fds.sort();
    Ok(Snapshot { maps, fds })
}

/// The parasite loaded into a seized process.
#[derive(Debug)]
pub struct Parasite<'a> {
    seized: &'a Seized,
    /// The leader, which runs the daemon.
    remote: Remote<'a>,
    blob: Blob,
    before: Snapshot,
    /// Descriptors crest made in the target and must close there.
    remote_fds: Vec<u64>,
    /// crest's descriptor of the memfd.
    memfd: Option<File>,
    /// crest's end of the daemon's socket.
    sock: Option<OwnedFd>,
    /// The daemon's end, as the target's fd number.
    daemon_fd: Option<u64>,
    /// Where per-thread commands enter the blob (from the daemon's hello).
    thread_entry: u64,
    /// Where the blob is mapped in the target, 0 before.
    base: u64,
    map_size: u64,
    /// Blob starts in any thread: one for the daemon, one per thread
    /// command.
    starts: u64,
    /// The payload area of the last answer (what a failed command left).
    last_payload: Vec<u8>,
    /// The leader's registers when the daemon stopped on its trap right
    /// after answering (CMD_FINI), seen while crest waited for the answer.
    trapped: Option<crate::blob::regs::UserRegs>,
    /// Commands sent with [`Parasite::command_start`] whose answers are
    /// still due, oldest first: a command run with [`Parasite::command`]
    /// collects them first.
    pending: std::collections::VecDeque<u32>,
    cured: bool,
}

impl<'a> Parasite<'a> {
    /// Injects the parasite into the leader thread of `seized`.
    pub fn inject(seized: &'a Seized) -> Result<Parasite<'a>> {
        Self::inject_until(seized, None)
    }

    /// Injects like [`inject`](Self::inject), then fails right after
    /// `step` with a test error; the partly injected parasite is cured on
    /// the way out. For tests of the failure paths.
    #[doc(hidden)]
    pub fn inject_failing_after(seized: &'a Seized, step: InjectStep) -> Result<Parasite<'a>> {
        Self::inject_until(seized, Some(step))
    }

    fn inject_until(seized: &'a Seized, fail: Option<InjectStep>) -> Result<Parasite<'a>> {
        let pid = seized.pid();
        let before = snapshot(pid)?;
        let blob = blob::parasite();
        let thread_area = (THREAD_ARGS_SIZE + THREAD_STACK_SIZE) as u64;
        let map_size =
            (blob.map_size(page_size()) as u64 + thread_area).next_multiple_of(page_size() as u64);
        let mut p = Parasite {
            seized,
            remote: Remote::new(seized, pid)?,
            blob,
            before,
            remote_fds: Vec::new(),
            memfd: None,
            sock: None,
            daemon_fd: None,
            thread_entry: 0,
            base: 0,
            map_size,
            starts: 0,
            last_payload: Vec::new(),
            trapped: None,
            pending: std::collections::VecDeque::new(),
            cured: false,
        };
        let hook = |step| match fail {
            Some(f) if f == step => Err(target_error(
                pid,
                format!("test hook: injection stopped after {step:?}"),
            )),
            _ => Ok(()),
        };
        let memfd = p.create_memfd()?;
        hook(InjectStep::MemfdCreated)?;
        p.map_blob(memfd)?;
        hook(InjectStep::Mapped)?;
        p.close_remote(memfd)?;
        hook(InjectStep::FdClosed)?;
        let (crest_end, daemon_end) = p.create_socket()?;
        hook(InjectStep::SocketPair)?;
        p.take_socket(crest_end, daemon_end)?;
        hook(InjectStep::SocketTaken)?;
        p.start_daemon()?;
        hook(InjectStep::DaemonStarted)?;
        info!(
            "pid {pid}: parasite loaded at {:#x} ({} bytes), daemon on fd {daemon_end}",
            p.base, p.map_size
        );
        Ok(p)
    }

    fn create_memfd(&mut self) -> Result<u64> {
        let pid = self.remote.tid();
        let name = self.remote.code_addr() + NAME_OFFSET;
        let nr = Sysno::memfd_create.id() as u64;
        let fd = self.remote.syscall_ok(
            "memfd_create",
            nr,
            [name, u64::from(MFD_CLOEXEC), 0, 0, 0, 0],
        )?;
        self.remote_fds.push(fd);
        let path = format!("/proc/{pid}/fd/{fd}");
        let file = File::options()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        file.set_len(self.map_size)
            .map_err(|e| Error::io("ftruncate", &path, e))?;
        file.write_all_at(self.blob.bytes, 0)
            .map_err(|e| Error::io("write the blob to", &path, e))?;
        self.memfd = Some(file);
        debug!("pid {pid}: memfd {fd} created and filled");
        Ok(fd)
    }

    fn map_blob(&mut self, fd: u64) -> Result<()> {
        let nr = Sysno::mmap.id() as u64;
        let args = [0, self.map_size, PROT_RWX, u64::from(MAP_SHARED), fd, 0];
        self.base = self.remote.syscall_ok("mmap", nr, args)?;
        debug!("pid {}: blob mapped at {:#x}", self.remote.tid(), self.base);
        Ok(())
    }

    /// Closes `fd` in the target and forgets it.
    fn close_remote(&mut self, fd: u64) -> Result<()> {
        self.remote
            .syscall_ok("close", Sysno::close.id() as u64, [fd, 0, 0, 0, 0, 0])?;
        self.remote_fds.retain(|&f| f != fd);
        Ok(())
    }

    /// Where the blob is mapped in the target.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// How many times the blob was started, in any thread: once for the
    /// daemon, plus one per command run in another thread. Leader commands
    /// go over the socket and start nothing.
    pub fn blob_starts(&self) -> u64 {
        self.starts
    }

    /// The target's fd number of the daemon's socket end, while it may be
    /// open there.
    pub fn daemon_fd(&self) -> Option<u64> {
        self.daemon_fd
    }

    /// Closes crest's end of the socket, as a crest that lost it would:
    /// the daemon sees EOF and stops on its trap. For tests.
    #[doc(hidden)]
    pub fn close_socket(&mut self) {
        self.sock = None;
    }

    /// Runs command `cmd` with `payload` in the leader thread; on success
    /// returns the payload area as the parasite left it (`reply_len`
    /// bytes). A negative answer from the parasite is an error naming the
    /// command and errno.
    pub fn command(&mut self, cmd: u32, payload: &[u8], reply_len: usize) -> Result<Vec<u8>> {
        self.check_sizes(cmd, payload, reply_len)?;
        let ret = self.daemon_command(cmd, payload)?;
        let tid = self.remote.tid();
        self.answer(tid, cmd, ret, reply_len)
    }

    /// Sends command `cmd` with `payload` and returns without waiting for
    /// the answer, so crest can work while the parasite runs it; collect
    /// the answers with [`Self::command_finish`], in the order sent. The
    /// daemon runs queued commands one after the other; answers never
    /// collected are dropped by the next [`Self::command`].
    pub fn command_start(&mut self, cmd: u32, payload: &[u8]) -> Result<()> {
        self.check_sizes(cmd, payload, 0)?;
        self.daemon_start(cmd, payload)
    }

    /// Waits for the answer of the oldest command sent by
    /// [`Self::command_start`]; as [`Self::command`] returns it.
    pub fn command_finish(&mut self, reply_len: usize) -> Result<Vec<u8>> {
        let Some(&cmd) = self.pending.front() else {
            return Err(target_error(
                self.seized.pid(),
                "no parasite command is waiting for its answer",
            ));
        };
        self.check_sizes(cmd, &[], reply_len)?;
        let ret = self.daemon_finish()?;
        let tid = self.remote.tid();
        self.answer(tid, cmd, ret, reply_len)
    }

    fn check_sizes(&self, cmd: u32, payload: &[u8], reply_len: usize) -> Result<()> {
        if self.base == 0 || payload.len() > PAYLOAD_SIZE || reply_len > PAYLOAD_SIZE {
            return Err(target_error(
                self.seized.pid(),
                format!(
                    "parasite command {cmd} cannot be sent (no parasite, or payload too large)"
                ),
            ));
        }
        Ok(())
    }

    /// The reply of a command that returned `ret`, from the payload area
    /// the parasite sent back ([`Self::last_payload`]).
    fn answer(&self, tid: Pid, cmd: u32, ret: i32, reply_len: usize) -> Result<Vec<u8>> {
        debug!("thread {tid}: parasite command {cmd} returned {ret}");
        match ret {
            0 => Ok(self.last_payload[..reply_len].to_vec()),
            crate::blob::proto::RET_PENDING => Err(target_error(
                self.seized.pid(),
                format!("thread {tid}: the parasite stopped without running command {cmd}"),
            )),
            e => Err(Error::sys(
                "parasite command",
                format!("pid {} (thread {tid}): command {cmd}", self.seized.pid()),
                Errno::new(-e),
            )),
        }
    }

    /// The payload area as the last command left it: what a failed
    /// command recorded about its failure.
    fn read_payload(&self, len: usize) -> Result<Vec<u8>> {
        Ok(self.last_payload[..len.min(self.last_payload.len())].to_vec())
    }

    /// CMD_GETPID: the pid and tid as the parasite sees them inside.
    pub fn getpid(&mut self) -> Result<GetPid> {
        let r = self.command(crate::blob::proto::CMD_GETPID, &[], size_of::<GetPid>())?;
        let pid = i32::from_ne_bytes([r[0], r[1], r[2], r[3]]);
        let tid = i32::from_ne_bytes([r[4], r[5], r[6], r[7]]);
        Ok(GetPid { pid, tid })
    }

    /// Stops the parasite, unmaps it, restores the thread and verifies
    /// that maps, fds and registers are as before the injection.
    pub fn cure(mut self) -> Result<()> {
        self.cure_inner()
    }

    fn cure_inner(&mut self) -> Result<()> {
        if self.cured {
            return Ok(());
        }
        self.cured = true;
        let pid = self.remote.tid();
        let mut first: Option<Error> = None;
        if let Err(e) = self.stop_daemon() {
            first.get_or_insert(e);
        }
        // Whatever happened to the daemon, the leader must be stopped
        // before crest can run system calls in it again.
        if let Err(e) = self.remote.halt() {
            first.get_or_insert(e);
        }
        if self.base != 0 {
            let args = [self.base, self.map_size, 0, 0, 0, 0];
            match self
                .remote
                .syscall_ok("munmap", Sysno::munmap.id() as u64, args)
            {
                Ok(_) => self.base = 0,
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        if let Err(e) = self.close_remote_fds() {
            first.get_or_insert(e);
        }
        self.memfd = None;
        if let Err(e) = self.remote.restore() {
            first.get_or_insert(e);
        }
        if first.is_none() {
            first = self.verify_clean().err();
        }
        match first {
            None => {
                info!("pid {pid}: cured, maps, fds and registers verified");
                Ok(())
            }
            Some(e) => Err(e),
        }
    }

    /// Closes every fd crest made in the target and still holds there.
    /// The daemon's end may already be closed by a daemon that ended
    /// before crest learned it (EBADF is then fine: every thread is
    /// stopped, so the number cannot have been reused).
    fn close_remote_fds(&mut self) -> Result<()> {
        for fd in self.remote_fds.clone() {
            let nr = Sysno::close.id() as u64;
            let ret = self.remote.syscall(nr, [fd, 0, 0, 0, 0, 0])?;
            let already = Some(fd) == self.daemon_fd && ret == -i64::from(Errno::EBADF.into_raw());
            if ret < 0 && !already {
                let ctx = format!(
                    "pid {}: closing crest's fd {fd} in the target",
                    self.seized.pid()
                );
                return Err(Error::sys("close", ctx, Errno::new(-ret as i32)));
            }
            self.remote_fds.retain(|&f| f != fd);
        }
        self.daemon_fd = None;
        Ok(())
    }

    fn verify_clean(&self) -> Result<()> {
        let pid = self.remote.tid();
        let after = snapshot(pid)?;
        if after.maps != self.before.maps {
            return Err(target_error(
                pid,
                format!("/proc/{pid}/maps differs after the cure"),
            ));
        }
        if after.fds != self.before.fds {
            let (b, a) = (&self.before.fds, &after.fds);
            return Err(target_error(
                pid,
                format!("fds {b:?} became {a:?} after the cure"),
            ));
        }
        Ok(())
    }

    /// Runs `f` on crest's descriptor of the memfd.
    fn memfd_io(&self, f: impl FnOnce(&File, String) -> Result<()>) -> Result<()> {
        let pid = self.seized.pid();
        match &self.memfd {
            Some(file) => f(file, format!("memfd of the parasite in pid {pid}")),
            None => Err(target_error(pid, "the parasite's memfd is gone")),
        }
    }
}

impl Drop for Parasite<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.cure_inner() {
            warn!("pid {}: curing after an error: {e}", self.remote.tid());
        }
    }
}
