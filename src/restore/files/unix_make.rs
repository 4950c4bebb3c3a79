//! [`create`]: runs a [`UnixPlan`]'s steps with raw syscalls and no
//! allocation (but on an error), socket slot `k` at the fd number the
//! caller gives. It runs in the new task (install), and in crest before
//! the tree forks for the sockets processes share, then inherited.
//!
//! Queued messages are sent without blocking, the sender's SO_SNDBUF
//! raised first (a stream's bytes stay charged to the sender until read);
//! options come last, the buffer sizes halved because the kernel doubles
//! what is set.

use std::os::fd::RawFd;

use super::unix::{Op, Options, UnixPlan};
use crate::error::{Errno, Error, Result};
use crate::sys::unix_sock as us;

fn fail(call: &'static str, k: usize, e: Errno) -> Error {
    Error::sys(call, format!("recreating unix socket {k} of the image"), e)
}

/// Runs the plan's steps; slot `k` is at fd `slot(k)`. No allocation but
/// on an error.
pub fn create(p: &UnixPlan, slot: impl Fn(usize) -> RawFd) -> Result<()> {
    use super::install::to_slot;
    for op in &p.ops {
        match op {
            Op::Socket(k, kind) => {
                let fd = us::socket(*kind).map_err(|e| fail("socket", *k, e))?;
                to_slot(fd, slot(*k)).map_err(|e| fail("dup3", *k, e))?;
            }
            Op::Pair(a, b, kind) => {
                let (x, y) = us::socketpair(*kind).map_err(|e| fail("socketpair", *a, e))?;
                to_slot(x, slot(*a)).map_err(|e| fail("dup3", *a, e))?;
                to_slot(y, slot(*b)).map_err(|e| fail("dup3", *b, e))?;
            }
            Op::Bind(k, a, unlink) => {
                if let Some(path) = unlink {
                    us::unlink(path).map_err(|e| fail("unlink", *k, e))?;
                }
                us::bind(slot(*k), a).map_err(|e| fail("bind", *k, e))?;
            }
            Op::Listen(k, backlog) => {
                us::listen(slot(*k), *backlog).map_err(|e| fail("listen", *k, e))?
            }
            Op::Connect(k, a) => us::connect(slot(*k), a).map_err(|e| fail("connect", *k, e))?,
            Op::Accept(l, k) => {
                let fd = us::accept_queued(slot(*l)).map_err(|e| fail("accept4", *k, e))?;
                to_slot(fd, slot(*k)).map_err(|e| fail("dup3", *k, e))?;
            }
            Op::Open(k, path, flags, pos) => {
                let fd = crate::sys::fdtable::open_raw(path, *flags)
                    .map_err(|e| fail("openat", *k, e))?;
                to_slot(fd, slot(*k)).map_err(|e| fail("dup3", *k, e))?;
                if *pos != 0 {
                    crate::sys::fdtable::lseek(
                        slot(*k),
                        *pos as i64,
                        crate::sys::fdtable::SEEK_SET,
                    )
                    .map_err(|e| fail("lseek", *k, e))?;
                }
            }
            Op::Send(k, data, fds) => send(slot(*k), *k, data, fds, &slot)?,
            Op::Pipe(r, w, data) => pipe(slot(*r), slot(*w), *r, data)?,
            Op::Flags(k, flags) => crate::sys::fdtable::set_status_flags(slot(*k), *flags)
                .map_err(|e| fail("fcntl(F_SETFL)", *k, e))?,
            Op::Dup(k, n) => {
                crate::sys::fdtable::dup3(*n, slot(*k), crate::sys::fd::O_CLOEXEC)
                    .map_err(|e| fail("dup3", *k, e))?;
            }
            Op::Close(k) => {
                crate::sys::fdtable::close(slot(*k)).map_err(|e| fail("close", *k, e))?
            }
            Op::Shutdown(k, how) => {
                us::shutdown(slot(*k), *how).map_err(|e| fail("shutdown", *k, e))?
            }
            Op::Options(k, o) => options(slot(*k), *k, o)?,
        }
    }
    Ok(())
}

/// One message, never blocking: the sender's buffer is raised first so a
/// queue that fitted at the dump fits again.
fn send(
    fd: RawFd,
    k: usize,
    data: &[u8],
    fds: &[usize],
    slot: &impl Fn(usize) -> RawFd,
) -> Result<()> {
    let mut raw = [0 as RawFd; us::SCM_MAX_FD];
    for (i, s) in fds.iter().take(us::SCM_MAX_FD).enumerate() {
        raw[i] = slot(*s);
    }
    let need = us::get_int(fd, us::SO_SNDBUF).unwrap_or(0).max(0) as usize + 2 * data.len() + 4096;
    let _ = us::set_int(
        fd,
        us::SO_SNDBUFFORCE,
        i32::try_from(need).unwrap_or(i32::MAX),
    );
    let flags = us::MSG_DONTWAIT | us::MSG_NOSIGNAL;
    let mut off = 0;
    loop {
        let n = us::sendmsg_fds(
            fd,
            &data[off..],
            if off == 0 { &raw[..fds.len()] } else { &[] },
            flags,
        )
        .map_err(|e| fail("sendmsg", k, e))?;
        off += n;
        if off >= data.len() {
            return Ok(());
        }
    }
}

/// A pipe in flight with its bytes, made non-blocking while it is filled.
fn pipe(r: RawFd, w: RawFd, k: usize, data: &[u8]) -> Result<()> {
    use super::install::to_slot;
    use crate::sys::fd::{O_CLOEXEC, O_NONBLOCK};
    use std::os::fd::{AsFd, IntoRawFd};
    let fail = |e| fail("pipe2", k, e);
    let (pr, pw) = crate::sys::fd::pipe2(O_CLOEXEC | O_NONBLOCK).map_err(fail)?;
    if data.len() > crate::sys::splice::pipe_size(pw.as_fd()).map_err(fail)? {
        crate::sys::splice::set_pipe_size(pw.as_fd(), data.len()).map_err(fail)?;
    }
    let mut off = 0;
    while off < data.len() {
        off += crate::sys::fd::write(pw.as_fd(), &data[off..]).map_err(fail)?;
    }
    to_slot(pr.into_raw_fd(), r).map_err(fail)?;
    to_slot(pw.into_raw_fd(), w).map_err(fail)
}

/// Buffer sizes (the kernel doubles what is set, so half the dumped
/// value), SO_PASSCRED, SO_PEEK_OFF, then O_NONBLOCK.
fn options(fd: RawFd, k: usize, o: &Options) -> Result<()> {
    for (force, plain, v) in [
        (us::SO_SNDBUFFORCE, us::SO_SNDBUF, o.sndbuf),
        (us::SO_RCVBUFFORCE, us::SO_RCVBUF, o.rcvbuf),
    ] {
        let half = i32::try_from(v / 2).unwrap_or(i32::MAX);
        if us::set_int(fd, force, half).is_err() {
            us::set_int(fd, plain, half).map_err(|e| fail("setsockopt", k, e))?;
        }
    }
    us::set_int(fd, us::SO_PASSCRED, i32::from(o.passcred))
        .map_err(|e| fail("setsockopt", k, e))?;
    if o.peek_off >= 0 {
        us::set_int(fd, us::SO_PEEK_OFF, o.peek_off).map_err(|e| fail("setsockopt", k, e))?;
    }
    crate::sys::fdtable::set_status_flags(fd, o.flags).map_err(|e| fail("fcntl(F_SETFL)", k, e))
}
