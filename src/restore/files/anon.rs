//! Eventfd, signalfd, timerfd, epoll and inotify fds: checked in
//! [`plan`] (before any process exists) and made by [`create`] in the new
//! task, at a temporary number like an opened file; epoll targets are added
//! by [`add_epoll_targets`] once every fd sits at its number.
//!
//! What comes back:
//! - eventfd: the counter and O_NONBLOCK; EFD_SEMAPHORE when the image knows
//!   it (the dumping kernel showed it).
//! - signalfd: the mask and O_NONBLOCK (the queued signals themselves are the
//!   process's, restored with its signal state).
//! - timerfd: clock, O_NONBLOCK, period, the time that was left at the dump
//!   (counted from the restore; an absolute timer is re-armed at now + that
//!   time, with TFD_TIMER_ABSTIME and TFD_TIMER_CANCEL_ON_SET as dumped), and
//!   the unread expirations through TFD_IOC_SET_TICKS. A periodic timer
//!   that had expired without being read shows no time left: its next
//!   expiration is one period after the restore (the periods missed between
//!   its expiration and the dump are not counted).
//! - epoll: every target with its events and data, added by fd number.
//! - inotify: every watch by path with its mask, in wd order; wds the dumped
//!   instance had removed are skipped by adding and removing a watch on a
//!   pipe of crest, so each watch gets its dumped wd. Events that were queued
//!   and not read at the dump are not restored.

use std::ffi::CString;
use std::os::fd::RawFd;

use crate::error::{Errno, Error, Result};
use crate::image::files::{EpollTarget, Fd, FdFile};
use crate::sys::anonfd::{self, EFD_SEMAPHORE, IN_DONT_FOLLOW, TFD_TIMER_ABSTIME};
use crate::sys::fd::{O_CLOEXEC, O_NONBLOCK};
use crate::sys::fdtable::set_status_flags;

/// An object to make.
#[derive(Debug)]
pub enum Anon {
    /// eventfd2 then a write of the counter.
    EventFd { count: u64, semaphore: bool },
    /// signalfd4 of the mask.
    SignalFd { mask: u64 },
    /// timerfd_create, timerfd_settime, TFD_IOC_SET_TICKS.
    TimerFd {
        clockid: i32,
        settime_flags: u32,
        ticks: u64,
        value_ns: u64,
        interval_ns: u64,
    },
    /// epoll_create1; the targets come after every fd is placed.
    Epoll { targets: Vec<EpollTarget> },
    /// inotify_init1 and one watch per (wd, mask, path).
    Inotify { watches: Vec<(i32, u32, CString)> },
}

/// An anonymous object with its file status flags.
#[derive(Debug)]
pub struct PlannedAnon {
    /// What to make.
    pub what: Anon,
    /// O_NONBLOCK and the other F_SETFL flags as dumped.
    pub flags: u32,
}

/// The object fd `f` needs, or None when it is not one of these kinds.
pub fn plan(f: &Fd, all: &[&Fd]) -> Result<Option<PlannedAnon>> {
    let (what, flags) = match &f.file {
        FdFile::EventFd {
            flags,
            count,
            semaphore,
        } => {
            if semaphore.is_none() {
                crate::warn!(
                    "fd {}: the dumping kernel did not show whether the eventfd was EFD_SEMAPHORE; restored as a plain counter",
                    f.fd
                );
            }
            let semaphore = semaphore.unwrap_or(false);
            (
                Anon::EventFd {
                    count: *count,
                    semaphore,
                },
                *flags,
            )
        }
        FdFile::SignalFd { flags, sigmask } => (Anon::SignalFd { mask: *sigmask }, *flags),
        FdFile::TimerFd {
            flags,
            clockid,
            settime_flags,
            ticks,
            value_ns,
            interval_ns,
        } => (
            Anon::TimerFd {
                clockid: *clockid,
                settime_flags: *settime_flags,
                ticks: *ticks,
                value_ns: *value_ns,
                interval_ns: *interval_ns,
            },
            *flags,
        ),
        FdFile::Epoll { flags, targets } => {
            check_targets(f.fd, targets, all)?;
            (
                Anon::Epoll {
                    targets: targets.clone(),
                },
                *flags,
            )
        }
        FdFile::Inotify { flags, watches } => {
            let mut planned = Vec::with_capacity(watches.len());
            let mut last = 0;
            for w in watches {
                if w.wd <= last {
                    return Err(Error::Unsupported(format!(
                        "fd {}: inotify watch descriptors in the image are not increasing ({} after {last}); the image is damaged",
                        f.fd, w.wd
                    )));
                }
                last = w.wd;
                let path = super::check::watched(f.fd, w.wd, &w.path)?;
                planned.push((w.wd, w.mask, path));
            }
            (Anon::Inotify { watches: planned }, *flags)
        }
        _ => return Ok(None),
    };
    Ok(Some(PlannedAnon { what, flags }))
}

/// Every epoll target is another fd of the image.
fn check_targets(fd: i32, targets: &[EpollTarget], all: &[&Fd]) -> Result<()> {
    for t in targets {
        if t.fd == fd || !all.iter().any(|o| o.fd == t.fd) {
            return Err(Error::Unsupported(format!(
                "fd {fd}: the epoll instance watches fd {}, which is not among the image's fds; the image is damaged or incomplete",
                t.fd
            )));
        }
    }
    Ok(())
}

fn fail(call: &'static str, fd: RawFd, what: &str, e: Errno) -> Error {
    Error::sys(call, format!("restoring fd {fd} ({what})"), e)
}

/// Makes the object at `slot` (close-on-exec) for fd `fd`.
pub fn create(p: &PlannedAnon, fd: RawFd, slot: RawFd) -> Result<()> {
    let base = O_CLOEXEC | O_NONBLOCK;
    let made = match &p.what {
        Anon::EventFd { count, semaphore } => {
            let sem = if *semaphore { EFD_SEMAPHORE } else { 0 };
            anonfd::eventfd(*count, base | sem).map_err(|e| fail("eventfd2", fd, "an eventfd", e))
        }
        Anon::SignalFd { mask } => {
            anonfd::signalfd(*mask, base).map_err(|e| fail("signalfd4", fd, "a signalfd", e))
        }
        Anon::TimerFd { clockid, .. } => anonfd::timerfd_create(*clockid, base)
            .map_err(|e| fail("timerfd_create", fd, "a timerfd", e)),
        Anon::Epoll { .. } => anonfd::epoll_create(O_CLOEXEC)
            .map_err(|e| fail("epoll_create1", fd, "an epoll instance", e)),
        Anon::Inotify { .. } => anonfd::inotify_init(base)
            .map_err(|e| fail("inotify_init1", fd, "an inotify instance", e)),
    }?;
    super::install::to_slot(made, slot).map_err(|e| fail("dup3", fd, "its new object", e))?;
    match &p.what {
        Anon::TimerFd {
            clockid,
            settime_flags,
            ticks,
            value_ns,
            interval_ns,
        } => arm_timer(
            fd,
            slot,
            *clockid,
            *settime_flags,
            *value_ns,
            *interval_ns,
            *ticks,
        )?,
        Anon::Inotify { watches } => add_watches(fd, slot, watches)?,
        _ => {}
    }
    set_status_flags(slot, p.flags).map_err(|e| fail("fcntl(F_SETFL)", fd, "its flags", e))
}

/// Arms a new timerfd with the dumped time left and period, and makes its
/// unread expirations readable.
fn arm_timer(
    fd: RawFd,
    slot: RawFd,
    clockid: i32,
    settime_flags: u32,
    value_ns: u64,
    interval_ns: u64,
    ticks: u64,
) -> Result<()> {
    let fail = |call, e| fail(call, fd, "a timerfd", e);
    // A periodic timer whose expiration was not read yet shows 0 left (the
    // kernel moves it on only at the read): it goes on one period from now.
    let value_ns = if value_ns == 0 { interval_ns } else { value_ns };
    if value_ns != 0 {
        let (flags, value) = if settime_flags & TFD_TIMER_ABSTIME != 0 {
            let now = anonfd::clock_gettime_ns(clockid).map_err(|e| fail("clock_gettime", e))?;
            (settime_flags, now.saturating_add(value_ns))
        } else {
            (0, value_ns)
        };
        anonfd::timerfd_settime(slot, flags, value, interval_ns)
            .map_err(|e| fail("timerfd_settime", e))?;
    }
    if ticks != 0 {
        if let Err(e) = anonfd::timerfd_set_ticks(slot, ticks) {
            // Without CONFIG_CHECKPOINT_RESTORE the expirations cannot be
            // put back; the timer itself still runs.
            crate::warn!(
                "fd {fd}: the timerfd had {ticks} unread expirations, which this kernel cannot restore (TFD_IOC_SET_TICKS: {e}); the process will not see them"
            );
        }
    }
    Ok(())
}

/// `/proc/self/fd/N` as a C string in `buf`, without allocating.
pub(super) fn proc_fd_path(buf: &mut [u8; 32], n: RawFd) -> &std::ffi::CStr {
    numbered_path(buf, b"/proc/self/fd/", n.unsigned_abs())
}

/// `prefix` followed by `n` in decimal, as a C string in `buf`, without
/// allocating. `prefix` is at most 21 bytes.
pub(super) fn numbered_path<'a>(
    buf: &'a mut [u8; 32],
    prefix: &[u8],
    n: u32,
) -> &'a std::ffi::CStr {
    buf[..prefix.len()].copy_from_slice(prefix);
    let mut digits = [0u8; 10];
    let (mut v, mut len) = (n, 0);
    loop {
        digits[len] = b'0' + (v % 10) as u8;
        len += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for i in 0..len {
        buf[prefix.len() + i] = digits[len - 1 - i];
    }
    buf[prefix.len() + len] = 0;
    // The buffer holds the prefix, at most 10 digits and one NUL, and no
    // other NUL: the conversion cannot fail.
    std::ffi::CStr::from_bytes_until_nul(&buf[..]).unwrap_or_default()
}

/// Adds every watch at its dumped wd; wds the dumped instance had removed
/// are used up by a watch on a fresh pipe, removed at once.
fn add_watches(fd: RawFd, slot: RawFd, watches: &[(i32, u32, CString)]) -> Result<()> {
    let mut next = 1;
    for (wd, mask, path) in watches {
        while next < *wd {
            filler_watch(fd, slot)?;
            next += 1;
        }
        let got = anonfd::inotify_add_watch(slot, path, mask | IN_DONT_FOLLOW).map_err(|e| {
            fail(
                "inotify_add_watch",
                fd,
                &format!("watch {wd} on `{}`", path.to_string_lossy()),
                e,
            )
        })?;
        if got != *wd {
            return Err(Error::Unsupported(format!(
                "fd {fd}: the inotify watch on `{}` came back as wd {got} instead of {wd} (the same file watched twice, or a wd the kernel does not hand out in order); crest cannot restore this instance",
                path.to_string_lossy()
            )));
        }
        next = wd + 1;
    }
    drain(slot);
    Ok(())
}

/// Takes one wd with a watch on a new pipe, then removes it.
fn filler_watch(fd: RawFd, slot: RawFd) -> Result<()> {
    let fail = |e| fail("inotify_add_watch", fd, "a placeholder watch", e);
    let (r, _w) = crate::sys::fd::pipe2(O_CLOEXEC).map_err(fail)?;
    let mut buf = [0u8; 32];
    let path = proc_fd_path(&mut buf, std::os::fd::AsRawFd::as_raw_fd(&r));
    let wd = anonfd::inotify_add_watch(slot, path, 2).map_err(fail)?;
    anonfd::inotify_rm_watch(slot, wd).map_err(fail)
}

/// Reads away the IN_IGNORED events of the placeholder watches (the
/// instance is non-blocking until its dumped flags are set).
fn drain(slot: RawFd) {
    let mut buf = [0u8; 4096];
    while matches!(anonfd::read_raw(slot, &mut buf), Ok(n) if n > 0) {}
}

/// Adds the targets of epoll `epfd` (at its number), each by its fd number.
pub fn add_epoll_targets(epfd: RawFd, targets: &[EpollTarget]) -> Result<()> {
    for t in targets {
        anonfd::epoll_add(epfd, t.fd, t.events, t.data).map_err(|e| {
            fail(
                "epoll_ctl",
                epfd,
                &format!("adding target fd {} with events {:#x}", t.fd, t.events),
                e,
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_fd_paths() {
        let mut b = [0u8; 32];
        assert_eq!(proc_fd_path(&mut b, 0).to_bytes(), b"/proc/self/fd/0");
        assert_eq!(proc_fd_path(&mut b, 1234).to_bytes(), b"/proc/self/fd/1234");
        assert_eq!(
            proc_fd_path(&mut b, i32::MAX).to_bytes(),
            b"/proc/self/fd/2147483647"
        );
    }
}
