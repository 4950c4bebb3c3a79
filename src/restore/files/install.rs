//! [`install_files`]: the fd table, cwd and root of the new task, made from a
//! [`FilesPlan`] with raw syscalls and no allocation (it runs in a task
//! cloned from crest, and in tests in a child forked from a threaded
//! harness).
//!
//! ```text
//!  fd numbers:  0 ........ first_free-1 | first_free ... (keep) ... | base ..... base+temp_fds-1
//!               the image's fds         | crest's kept fds          | temporary slots:
//!                                                                     opened files (one per fd),
//!                                                                     pipes (read, write), tty,
//!                                                                     FIFO keepers (one per FIFO)
//! ```
//!
//! Everything is first made at its slot (so nothing crest holds is hit,
//! whatever its number), then dup3 puts each fd at its number, replacing
//! what crest had there; last, every fd that is neither the image's nor
//! kept is closed, the slots included.

use std::os::fd::{AsFd, IntoRawFd, RawFd};

use super::{FilesPlan, How, PlannedPipe};
use crate::error::{Errno, Error, Result};
use crate::sys::fd::{O_CLOEXEC, O_NONBLOCK, pipe2, write};
use crate::sys::fdtable::set_status_flags;
use crate::sys::fdtable::{close, close_range, dup3, raise_nofile};
use crate::sys::splice::{pipe_size, set_pipe_size};

/// The temporary numbers install uses.
struct Slots {
    base: RawFd,
    nfds: RawFd,
    npipes: RawFd,
    nunix: RawFd,
}

impl Slots {
    fn open(&self, index: usize) -> RawFd {
        self.base + index as RawFd
    }
    fn pipe(&self, pipe: usize, write: bool) -> RawFd {
        self.base + self.nfds + 2 * pipe as RawFd + RawFd::from(write)
    }
    fn tty(&self) -> RawFd {
        self.base + self.nfds + 2 * self.npipes
    }
    fn unix(&self, k: usize) -> RawFd {
        self.tty() + 1 + k as RawFd
    }
    fn fifo(&self, fifo: usize) -> RawFd {
        self.tty() + 1 + self.nunix + fifo as RawFd
    }
}

/// Runs in the new task (single-threaded crest code, before the restorer blob): makes the
/// fd table exactly the image's (each fd at its number, FD_CLOEXEC as dumped, open flags
/// incl. O_APPEND/O_NONBLOCK, position restored with lseek; pipes recreated per pipe_id
/// with both ends placed where the image has them and their queued data written back;
/// /dev/null-like char devices reopened; with shell_job a tty fd becomes a dup of crest's
/// own terminal fd), chdir(cwd) and chroot(root) when root is not "/", and closes every
/// other fd except those in `keep` (which are >= first_free_fd()).
pub fn install_files(plan: &FilesPlan, keep: &[i32]) -> Result<()> {
    let slots = slots(plan, keep)?;
    if let Some(src) = plan.tty_source {
        dup3(src, slots.tty(), O_CLOEXEC).map_err(|e| fail("dup3", "crest's terminal", src, e))?;
    }
    for (n, fifo) in plan.fifos.iter().enumerate() {
        super::fifo::keep_open(fifo, slots.fifo(n))?;
    }
    for (i, f) in plan.fds.iter().enumerate() {
        if let How::PtyMaster { flags, state } = &f.how {
            super::pty::open_master(*flags, state, f.fd, slots.open(i))?;
        }
    }
    for (i, f) in plan.fds.iter().enumerate() {
        if let How::Fifo { fifo, flags } = f.how {
            super::fifo::open(&plan.fifos[fifo], flags, f.fd, slots.open(i))?;
        }
        if let How::PtySlave { master, flags } = f.how {
            super::pty::open_slave(slots.open(master), flags, f.fd, slots.open(i))?;
        }
        super::shared::open_description(&f.how, f.fd, slots.open(i))?;
        let object = match f.how {
            How::Memfd { id, flags, pos } => {
                let h = plan.memfds.iter().find(|(m, _)| *m == id).map(|m| m.1);
                Some((h, flags, pos))
            }
            How::Ghost { key, flags, pos } => {
                let h = plan.ghosts.iter().find(|(k, _)| *k == key).map(|g| g.1);
                Some((h, flags, pos))
            }
            _ => None,
        };
        if let Some((helper, flags, pos)) = object {
            let helper = helper.ok_or_else(|| super::memfd::missing(f.fd))?;
            super::memfd::open(helper, flags, pos, f.fd, slots.open(i))?;
        }
    }
    for (i, f) in plan.fds.iter().enumerate() {
        if let How::PtyMaster { state, .. } = &f.how {
            super::pty::relock(state, f.fd, slots.open(i))?;
        }
    }
    for (p, pipe) in plan.pipes.iter().enumerate() {
        if pipe.inherited.is_none() {
            make_pipe(pipe, slots.pipe(p, false), slots.pipe(p, true))?;
        }
    }
    for &(id, write, k) in &plan.unix.borrowed {
        // A pipe end in flight that the process holds too: the same pipe.
        if let Some(p) = plan.pipes.iter().position(|p| p.id == id) {
            let end = match plan.pipes[p].inherited {
                Some(ends) => ends[usize::from(write)],
                None => slots.pipe(p, write),
            };
            dup3(end, slots.unix(k), O_CLOEXEC)
                .map_err(|e| fail("dup3", "a pipe end in flight", -1, e))?;
        }
    }
    super::unix::create(&plan.unix, |k| slots.unix(k))?;
    for (i, f) in plan.fds.iter().enumerate() {
        let from = match f.how {
            How::Open { .. }
            | How::Anon(_)
            | How::Memfd { .. }
            | How::Ghost { .. }
            | How::Fifo { .. }
            | How::PtyMaster { .. }
            | How::PtySlave { .. } => slots.open(i),
            How::Pipe { pipe, write } => match plan.pipes[pipe].inherited {
                Some(ends) => ends[usize::from(write)],
                None => slots.pipe(pipe, write),
            },
            How::Tty => slots.tty(),
            How::Unix(k) => slots.unix(k),
            How::Inherited(n) => n,
        };
        let flags = if f.cloexec { O_CLOEXEC } else { 0 };
        dup3(from, f.fd, flags).map_err(|e| fail("dup3", "its open file", f.fd, e))?;
    }
    // Epoll targets are added by number, so every fd must be in place first.
    for f in &plan.fds {
        if let How::Anon(super::anon::PlannedAnon {
            what: super::anon::Anon::Epoll { targets },
            ..
        }) = &f.how
        {
            super::anon::add_epoll_targets(f.fd, targets)?;
        }
    }
    close_others(plan, keep)?;
    // After the close: closing any fd of a file drops the process's POSIX
    // locks on it, and the slots were such fds.
    super::lock::take(&plan.locks)?;
    enter_dirs(plan)
}

/// The slot layout: above the image's fds, every kept fd and 0-2 (crest's
/// terminal may be one of those), with RLIMIT_NOFILE raised to hold it.
fn slots(plan: &FilesPlan, keep: &[i32]) -> Result<Slots> {
    if let Some(&k) = keep.iter().find(|&&k| k < plan.first_free) {
        return Err(Error::Usage(format!(
            "install_files: kept fd {k} is below {}, among the image's fds; move it to a number >= first_free_fd() first",
            plan.first_free
        )));
    }
    let above_keep = keep.iter().map(|k| k + 1).max().unwrap_or(0);
    let base = plan.first_free.max(above_keep).max(3);
    let top = base as u64 + plan.temp_fds() as u64;
    let limit = raise_nofile(top).map_err(|e| fail("prlimit64", "RLIMIT_NOFILE", base, e))?;
    if limit < top {
        return Err(Error::Unsupported(format!(
            "restoring the fds needs fd numbers up to {} but RLIMIT_NOFILE's hard limit is {limit}; raise it (ulimit -Hn) and restore again",
            top - 1
        )));
    }
    Ok(Slots {
        base,
        nfds: plan.fds.len() as RawFd,
        npipes: plan.pipes.len() as RawFd,
        nunix: plan.unix.slots as RawFd,
    })
}

/// Moves the fd at `low` to `slot`, close-on-exec (already there if equal).
pub(super) fn to_slot(low: RawFd, slot: RawFd) -> Result<(), Errno> {
    if low != slot {
        dup3(low, slot, O_CLOEXEC)?;
        close(low)?;
    }
    Ok(())
}

/// A new pipe at `read_slot`/`write_slot` holding `pipe.data`, each end with
/// its dumped status flags.
pub(super) fn make_pipe(pipe: &PlannedPipe, read_slot: RawFd, write_slot: RawFd) -> Result<()> {
    let what = |e| {
        Error::sys(
            "pipe",
            format!("recreating pipe {} of the image", pipe.id),
            e,
        )
    };
    // Non-blocking while it is filled, so data that does not fit fails
    // instead of hanging the restore.
    let (r, w) = pipe2(O_CLOEXEC | O_NONBLOCK).map_err(what)?;
    if pipe.data.len() > pipe_size(w.as_fd()).map_err(what)? {
        set_pipe_size(w.as_fd(), pipe.data.len()).map_err(what)?;
    }
    let mut off = 0;
    while off < pipe.data.len() {
        off += write(w.as_fd(), &pipe.data[off..]).map_err(what)?;
    }
    to_slot(r.into_raw_fd(), read_slot).map_err(what)?;
    to_slot(w.into_raw_fd(), write_slot).map_err(what)?;
    for (slot, flags) in [(read_slot, pipe.flags[0]), (write_slot, pipe.flags[1])] {
        if let Some(flags) = flags {
            set_status_flags(slot, flags).map_err(what)?;
        }
    }
    Ok(())
}

/// Closes every fd that is neither one of the image's nor in `keep`.
fn close_others(plan: &FilesPlan, keep: &[i32]) -> Result<()> {
    let mut lo: u32 = 0;
    let ranges = plan
        .fds
        .iter()
        .map(|f| f.fd as u32)
        .chain(std::iter::once(plan.first_free as u32));
    for next in ranges {
        close_gap(lo, next)?;
        lo = next + 1;
    }
    let mut lo = plan.first_free as u32;
    // `keep` is unsorted and small: take its members in order without
    // sorting (which would need a copy).
    while let Some(k) = keep.iter().map(|&k| k as u32).filter(|&k| k >= lo).min() {
        close_gap(lo, k)?;
        lo = k + 1;
    }
    close_range(lo, u32::MAX).map_err(|e| fail("close_range", "crest's other fds", lo as i32, e))
}

/// Closes `lo..hi` (nothing when empty).
fn close_gap(lo: u32, hi: u32) -> Result<()> {
    if lo < hi {
        close_range(lo, hi - 1)
            .map_err(|e| fail("close_range", "crest's other fds", lo as i32, e))?;
    }
    Ok(())
}

/// chdir to cwd, then chroot: both paths are as crest saw them.
fn enter_dirs(plan: &FilesPlan) -> Result<()> {
    crate::sys::fdtable::chdir(&plan.cwd).map_err(|e| {
        Error::sys(
            "chdir",
            format!(
                "entering the working directory `{}`",
                plan.cwd.to_string_lossy()
            ),
            e,
        )
    })?;
    if let Some(root) = &plan.root {
        crate::sys::fdtable::chroot(root).map_err(|e| {
            Error::sys(
                "chroot",
                format!("entering the root directory `{}`", root.to_string_lossy()),
                e,
            )
        })?;
    }
    Ok(())
}

fn fail(call: &'static str, what: &str, fd: RawFd, e: Errno) -> Error {
    Error::sys(call, format!("restoring fd {fd} ({what})"), e)
}
