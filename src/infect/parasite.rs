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
//! ```
//!
//! crest keeps its own descriptor of the memfd and reaches the args area
//! with pread/pwrite at `args_offset`: the file and the target's shared
//! mapping are the same page-cache pages, so no Rust pointer into shared,
//! concurrently written memory is ever made.
//!
//! Commands run in "trap mode": crest writes the command header (with
//! `RET_PENDING`) and payload, sets ip = base + entry, continues the
//! thread and waits for the blob's final trap (ip = base + trap_ip); any
//! other stop (SIGILL from the blob's panic handler, SIGSEGV) is an error
//! naming it. The unix-socket command loop of the dump issue is a later
//! step; one start per command is enough for what the dump needs so far.
//!
//! Cure: munmap the blob in the target, restore the thread (see
//! [`Remote::restore`]), then verify against what was read before the
//! injection: /proc/PID/maps and the /proc/PID/fd listing must be identical.
//! Dropping a [`Parasite`] cures it, so every error path cures.
//!
//! Per-thread commands ([`Parasite::command_in`]) run the same mapped blob
//! in another seized thread: a [`Remote`] of that thread saves its
//! registers and signal mask, the blob runs there exactly as in the
//! leader, and the thread is restored and verified before the call
//! returns, whether the command succeeded, failed or crashed. Commands run
//! one at a time, so every thread can share the one args area and stack.

mod dump_cmds;

use std::fs::File;
use std::os::unix::fs::FileExt;

use syscalls::Sysno;

use super::remote::{NAME_OFFSET, Remote};
use super::seize::Seized;
use super::target_error;
use crate::blob::proto::{CMD_FINI, CMD_GETPID, GetPid, PAYLOAD_OFFSET, PAYLOAD_SIZE, RET_PENDING};
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
    /// The target's fd is closed: injection complete.
    FdClosed,
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
    remote: Remote<'a>,
    blob: Blob,
    before: Snapshot,
    /// The target's descriptor of the memfd, while it is open there.
    remote_fd: Option<u64>,
    /// crest's descriptor of the same memfd.
    memfd: Option<File>,
    /// Where the blob is mapped in the target, 0 before.
    base: u64,
    map_size: u64,
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
        let mut p = Parasite {
            seized,
            remote: Remote::new(seized, pid)?,
            blob,
            before,
            remote_fd: None,
            memfd: None,
            base: 0,
            map_size: blob.map_size(page_size()) as u64,
            cured: false,
        };
        let hook = |step| match fail {
            Some(f) if f == step => Err(target_error(
                pid,
                format!("test hook: injection stopped after {step:?}"),
            )),
            _ => Ok(()),
        };
        p.create_memfd()?;
        hook(InjectStep::MemfdCreated)?;
        p.map_blob()?;
        hook(InjectStep::Mapped)?;
        p.close_remote_fd()?;
        hook(InjectStep::FdClosed)?;
        info!(
            "pid {pid}: parasite loaded at {:#x} ({} bytes)",
            p.base, p.map_size
        );
        Ok(p)
    }

    fn create_memfd(&mut self) -> Result<()> {
        let pid = self.remote.tid();
        let name = self.remote.code_addr() + NAME_OFFSET;
        let nr = Sysno::memfd_create.id() as u64;
        let fd = self.remote.syscall_ok(
            "memfd_create",
            nr,
            [name, u64::from(MFD_CLOEXEC), 0, 0, 0, 0],
        )?;
        self.remote_fd = Some(fd);
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
        Ok(())
    }

    fn map_blob(&mut self) -> Result<()> {
        let fd = self.remote_fd.unwrap_or(u64::MAX);
        let nr = Sysno::mmap.id() as u64;
        let args = [0, self.map_size, PROT_RWX, u64::from(MAP_SHARED), fd, 0];
        self.base = self.remote.syscall_ok("mmap", nr, args)?;
        debug!("pid {}: blob mapped at {:#x}", self.remote.tid(), self.base);
        Ok(())
    }

    fn close_remote_fd(&mut self) -> Result<()> {
        if let Some(fd) = self.remote_fd.take() {
            self.remote
                .syscall_ok("close", Sysno::close.id() as u64, [fd, 0, 0, 0, 0, 0])?;
        }
        Ok(())
    }

    /// Where the blob is mapped in the target.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Runs command `cmd` with `payload` in the leader thread; on success
    /// returns the payload area as the parasite left it (`reply_len`
    /// bytes). A negative answer from the parasite is an error naming the
    /// command and errno.
    pub fn command(&mut self, cmd: u32, payload: &[u8], reply_len: usize) -> Result<Vec<u8>> {
        // Field by field: the channel borrows what the remote does not.
        let ctx = Channel {
            pid: self.seized.pid(),
            blob: &self.blob,
            memfd: self.memfd.as_ref(),
            base: self.base,
        };
        ctx.run(&mut self.remote, cmd, payload, reply_len)
    }

    /// Runs command `cmd` like [`command`](Self::command), but in thread
    /// `tid` of the seized process. The thread's registers and signal mask
    /// are saved before and restored (and verified) after, whatever the
    /// command did, as the leader's are by the cure. Threads run the blob
    /// one at a time, so they share its args area and stack.
    pub fn command_in(
        &mut self,
        tid: Pid,
        cmd: u32,
        payload: &[u8],
        reply_len: usize,
    ) -> Result<Vec<u8>> {
        if tid == self.remote.tid() {
            return self.command(cmd, payload, reply_len);
        }
        let mut remote = Remote::new(self.seized, tid)?;
        let ctx = self.channel();
        let reply = ctx.run(&mut remote, cmd, payload, reply_len);
        match (reply, remote.restore()) {
            (Ok(reply), Ok(())) => Ok(reply),
            (Ok(_), Err(e)) => Err(e),
            (Err(e), restored) => {
                if let Err(r) = restored {
                    warn!("thread {tid}: restoring after command {cmd} failed: {r}");
                }
                Err(e)
            }
        }
    }

    fn channel(&self) -> Channel<'_> {
        Channel {
            pid: self.seized.pid(),
            blob: &self.blob,
            memfd: self.memfd.as_ref(),
            base: self.base,
        }
    }

    /// The payload area as the last command left it: what a failed
    /// command recorded about its failure.
    fn read_payload(&self, len: usize) -> Result<Vec<u8>> {
        let ctx = self.channel();
        let mut reply = vec![0u8; len.min(PAYLOAD_SIZE)];
        let off = (self.blob.args_offset + PAYLOAD_OFFSET) as u64;
        ctx.io(|f, path| {
            f.read_exact_at(&mut reply, off)
                .map_err(|e| Error::io("read", &path, e))
        })?;
        Ok(reply)
    }

    /// CMD_GETPID: the pid and tid as the parasite sees them inside.
    pub fn getpid(&mut self) -> Result<GetPid> {
        let r = self.command(CMD_GETPID, &[], size_of::<GetPid>())?;
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
        if self.base != 0 {
            if let Err(e) = self.command(CMD_FINI, &[], 0) {
                first.get_or_insert(e);
            }
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
        if let Err(e) = self.close_remote_fd() {
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
}

/// What running a command needs besides the thread: the blob's layout,
/// crest's descriptor of its memfd and where it is mapped. Borrowed from
/// a [`Parasite`] so a command can run in its leader's [`Remote`] or in
/// another thread's.
struct Channel<'p> {
    pid: Pid,
    blob: &'p Blob,
    memfd: Option<&'p File>,
    base: u64,
}

impl Channel<'_> {
    /// Writes the header and payload, starts the blob in `remote`'s thread,
    /// waits for its trap and reads the reply.
    fn run(
        &self,
        remote: &mut Remote,
        cmd: u32,
        payload: &[u8],
        reply_len: usize,
    ) -> Result<Vec<u8>> {
        let tid = remote.tid();
        if self.base == 0 || payload.len() > PAYLOAD_SIZE || reply_len > PAYLOAD_SIZE {
            return Err(target_error(
                self.pid,
                format!(
                    "parasite command {cmd} cannot be sent (no parasite, or payload too large)"
                ),
            ));
        }
        let args = self.blob.args_offset as u64;
        let mut hdr = [0u8; PAYLOAD_OFFSET];
        hdr[..4].copy_from_slice(&cmd.to_ne_bytes());
        hdr[4..].copy_from_slice(&RET_PENDING.to_ne_bytes());
        self.io(|f, path| {
            f.write_all_at(&hdr, args)
                .map_err(|e| Error::io("write", &path, e))?;
            f.write_all_at(payload, args + PAYLOAD_OFFSET as u64)
                .map_err(|e| Error::io("write", &path, e))
        })?;
        let mut regs = *remote.saved_regs();
        regs.set_ip(self.base + self.blob.entry as u64);
        let what = format!("running parasite command {cmd}");
        let after = remote.run(regs, &what)?;
        if after.ip() != self.base + self.blob.trap_ip() as u64 {
            return Err(remote.stray_trap(after.ip(), &what));
        }
        let mut reply = vec![0u8; reply_len];
        self.io(|f, path| {
            f.read_exact_at(&mut hdr, args)
                .map_err(|e| Error::io("read", &path, e))?;
            f.read_exact_at(&mut reply, args + PAYLOAD_OFFSET as u64)
                .map_err(|e| Error::io("read", &path, e))
        })?;
        let ret = i32::from_ne_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
        debug!("thread {tid}: parasite command {cmd} returned {ret}");
        match ret {
            0 => Ok(reply),
            RET_PENDING => Err(target_error(
                self.pid,
                format!("thread {tid}: the parasite trapped without running command {cmd}"),
            )),
            e => Err(Error::sys(
                "parasite command",
                format!("pid {} (thread {tid}): command {cmd}", self.pid),
                Errno::new(-e),
            )),
        }
    }

    fn io(&self, f: impl FnOnce(&File, String) -> Result<()>) -> Result<()> {
        match self.memfd {
            Some(file) => f(file, format!("memfd of the parasite in pid {}", self.pid)),
            None => Err(target_error(self.pid, "the parasite's memfd is gone")),
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
