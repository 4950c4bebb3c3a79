//! Unix sockets of one process: [`plan`] (in crest, before any process
//! exists) turns the image's sockets into a list of steps over socket
//! slots, and [`create`] runs them with raw syscalls and no allocation,
//! placing socket `k` at the fd number the caller gives for slot `k`.
//! `create` is the "make these socket objects" step: it runs in the new
//! task (install), and could as well run in crest before the tree forks.
//!
//! How each socket comes back:
//! - a listener: socket, bind to its name, listen with its backlog; a
//!   path socket's old file is removed first when it is the dumped socket's
//!   own (same inode), and anything else at the path is refused.
//! - a connected stream/seqpacket pair held here: socketpair; an accepted
//!   connection (its socket carries a listener's name): connect to the
//!   listener, then accept; a connection still in a listener's backlog:
//!   connect only, after every accept.
//! - a datagram socket connected one way: connect to the peer's name.
//! - a socket whose peer was closed: socketpair, the other end closed
//!   after the queued data is written.
//! - an external peer (`--external`): connect to its name.
//!
//! Queued data is sent from the peer's side so it lands in the right
//! receive queue (with its fds in flight opened and sent by SCM_RIGHTS);
//! then shutdown bits, then options and file status flags.

use std::ffi::CString;
use std::os::fd::RawFd;

use crate::error::{Errno, Error, Result};
use crate::image::files::unix::show_name;
use crate::image::files::{Fd, FdFile, UnixPeer, UnixQueue, UnixSocket};
use crate::sys::unix_diag::TCP_LISTEN;
use crate::sys::unix_sock::{self as us, SockAddrUn};

/// One step over socket slots.
#[derive(Debug)]
pub enum Op {
    /// socket(type) at slot.
    Socket(usize, u32),
    /// socketpair(type) at two slots.
    Pair(usize, usize, u32),
    /// unlink the stale file (if any), then bind.
    Bind(usize, SockAddrUn, Option<CString>),
    /// listen(backlog).
    Listen(usize, u32),
    /// connect to a name.
    Connect(usize, SockAddrUn),
    /// accept the queued connection of listener slot .0 into slot .1.
    Accept(usize, usize),
    /// open a file in flight at slot (path, flags, pos).
    Open(usize, CString, u32, u64),
    /// send one message from slot, with the files at the slots in .2.
    Send(usize, Vec<u8>, Vec<usize>),
    /// close a helper slot.
    Close(usize),
    /// shutdown(how).
    Shutdown(usize, u32),
    /// options and status flags of a socket.
    Options(usize, Options),
}

/// What a socket's options come back as.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    sndbuf: u32,
    rcvbuf: u32,
    passcred: bool,
    peek_off: i32,
    flags: u32,
}

/// Everything [`create`] needs.
#[derive(Debug, Default)]
pub struct UnixPlan {
    /// The steps, in order.
    pub ops: Vec<Op>,
    /// Slots used (sockets, then helpers).
    pub slots: usize,
    /// The socket inode of each socket slot, for the fds to find theirs.
    pub inos: Vec<u64>,
}

impl UnixPlan {
    /// The slot of socket `ino`.
    pub fn slot_of(&self, ino: u64) -> Option<usize> {
        self.inos.iter().position(|&i| i == ino)
    }
}

fn refuse(fd: i32, s: &UnixSocket, why: &str) -> Error {
    Error::Unsupported(format!(
        "fd {fd} in the image is unix socket socket:[{}] {why}",
        s.ino
    ))
}

/// The address of `s`'s name, or a refusal.
fn addr(fd: i32, s: &UnixSocket, name: &[u8]) -> Result<SockAddrUn> {
    SockAddrUn::new(name).ok_or_else(|| {
        refuse(
            fd,
            s,
            &format!(
                "with the name `{}`, which is no socket address",
                show_name(name)
            ),
        )
    })
}

/// The bind step of a named socket: a path's stale file (the dumped
/// socket's own, same inode) is removed first; anything else there is refused.
fn bind_op(fd: i32, k: usize, s: &UnixSocket) -> Result<Op> {
    let a = addr(fd, s, &s.name)?;
    if s.name.first() == Some(&0) {
        return Ok(Op::Bind(k, a, None));
    }
    let path = std::path::Path::new(
        <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&s.name),
    );
    let unlink = match std::fs::symlink_metadata(path) {
        Err(_) => None,
        Ok(m) => {
            use std::os::unix::fs::{FileTypeExt, MetadataExt};
            if !m.file_type().is_socket() || (s.file.0 != 0 && m.ino() != s.file.0) {
                return Err(refuse(
                    fd,
                    s,
                    &format!(
                        "bound to `{}`, where another file now sits (inode {}, not the socket's {}); move that file away and restore again",
                        path.display(),
                        m.ino(),
                        s.file.0
                    ),
                ));
            }
            CString::new(s.name.clone()).ok()
        }
    };
    Ok(Op::Bind(k, a, unlink))
}

/// The sockets of `fds` (each once, by inode, with the fd that first holds it).
fn sockets<'a>(fds: &[&'a Fd]) -> Vec<(i32, &'a UnixSocket)> {
    let mut out: Vec<(i32, &UnixSocket)> = Vec::new();
    for f in fds {
        if let FdFile::Unix(s) = &f.file
            && !out.iter().any(|(_, o)| o.ino == s.ino)
        {
            out.push((f.fd, s));
        }
    }
    out
}

/// Plans every unix socket among `fds`, with the queues of `queues`.
pub fn plan(fds: &[&Fd], queues: &[UnixQueue]) -> Result<UnixPlan> {
    let socks = sockets(fds);
    let mut p = UnixPlan {
        inos: socks.iter().map(|(_, s)| s.ino).collect(),
        slots: socks.len(),
        ..UnixPlan::default()
    };
    let find = |ino: u64| socks.iter().position(|(_, s)| s.ino == ino);
    let mut made = vec![false; socks.len()];
    let mut later = Vec::new();
    // Listeners first: accepted and pending connections need them.
    for (k, (fd, s)) in socks.iter().enumerate() {
        if s.state == TCP_LISTEN {
            p.ops.push(Op::Socket(k, s.kind.into()));
            p.ops.push(bind_op(*fd, k, s)?);
            p.ops.push(Op::Listen(k, s.backlog));
            made[k] = true;
        }
    }
    let mut gone_ends = Vec::new();
    for (k, (fd, s)) in socks.iter().enumerate() {
        if made[k] {
            continue;
        }
        let listener_of = |x: &UnixSocket| {
            socks.iter().position(|(_, l)| {
                l.state == TCP_LISTEN && !x.name.is_empty() && l.name == x.name && l.kind == x.kind
            })
        };
        match &s.peer {
            UnixPeer::Socket(peer) => {
                let Some(j) = find(*peer) else {
                    return Err(refuse(
                        *fd,
                        s,
                        &format!(
                            "connected to socket:[{peer}] of another process of the tree; restoring sockets shared between processes comes with process-tree sharing"
                        ),
                    ));
                };
                let (o, mutual) = (socks[j].1, socks[j].1.peer == UnixPeer::Socket(s.ino));
                if u32::from(s.kind) == us::SOCK_DGRAM && !mutual {
                    later.push(k);
                    continue;
                }
                if let Some(l) = listener_of(s).or_else(|| listener_of(o)) {
                    let (acc, cli) = if listener_of(s).is_some() {
                        (k, j)
                    } else {
                        (j, k)
                    };
                    p.ops.push(Op::Socket(cli, s.kind.into()));
                    if !socks[cli].1.name.is_empty() {
                        p.ops.push(bind_op(socks[cli].0, cli, socks[cli].1)?);
                    }
                    p.ops
                        .push(Op::Connect(cli, addr(*fd, s, &socks[l].1.name)?));
                    p.ops.push(Op::Accept(l, acc));
                } else {
                    p.ops.push(Op::Pair(k, j, s.kind.into()));
                    for x in [k, j] {
                        let (xfd, xs) = socks[x];
                        if xs.name.is_empty() {
                            continue;
                        }
                        // A stream end named like a listener that is gone
                        // was accepted from it: its name cannot be bound again.
                        if u32::from(xs.kind) == us::SOCK_DGRAM {
                            p.ops.push(bind_op(xfd, x, xs)?);
                        } else {
                            crate::warn!(
                                "fd {xfd}: unix socket socket:[{}] comes back without its name `{}` (its listener is not in the image)",
                                xs.ino,
                                show_name(&xs.name)
                            );
                        }
                    }
                }
                made[k] = true;
                made[j] = true;
            }
            UnixPeer::Gone => {
                let tmp = p.slots;
                p.slots += 1;
                p.ops.push(Op::Pair(k, tmp, s.kind.into()));
                gone_ends.push((s.ino, tmp));
                made[k] = true;
            }
            UnixPeer::Pending(_) | UnixPeer::External(..) => later.push(k),
            UnixPeer::None => {
                p.ops.push(Op::Socket(k, s.kind.into()));
                if !s.name.is_empty() {
                    p.ops.push(bind_op(*fd, k, s)?);
                }
                made[k] = true;
            }
        }
    }
    for k in later {
        let (fd, s) = socks[k];
        p.ops.push(Op::Socket(k, s.kind.into()));
        if !s.name.is_empty() {
            p.ops.push(bind_op(fd, k, s)?);
        }
        let target = match &s.peer {
            UnixPeer::Socket(i) | UnixPeer::Pending(i) => {
                socks[find(*i).unwrap_or(k)].1.name.clone()
            }
            UnixPeer::External(_, name) => name.clone(),
            _ => Vec::new(),
        };
        if target.is_empty() {
            return Err(refuse(
                fd,
                s,
                "connected to a socket without a name, which crest cannot connect to again",
            ));
        }
        p.ops.push(Op::Connect(k, addr(fd, s, &target)?));
    }
    plan_queues(&mut p, &socks, queues, &gone_ends)?;
    for (_, tmp) in &gone_ends {
        p.ops.push(Op::Close(*tmp));
    }
    for (k, (_, s)) in socks.iter().enumerate() {
        if s.shutdown != 0 && s.state != TCP_LISTEN {
            p.ops.push(Op::Shutdown(k, u32::from(s.shutdown & 3) - 1));
        }
        p.ops.push(Op::Options(
            k,
            Options {
                sndbuf: s.sndbuf,
                rcvbuf: s.rcvbuf,
                passcred: s.passcred,
                peek_off: s.peek_off,
                flags: s.flags,
            },
        ));
    }
    Ok(p)
}

/// The sends that refill every receive queue, from the peer's side.
fn plan_queues(
    p: &mut UnixPlan,
    socks: &[(i32, &UnixSocket)],
    queues: &[UnixQueue],
    gone_ends: &[(u64, usize)],
) -> Result<()> {
    for q in queues {
        let Some(r) = socks.iter().position(|(_, s)| s.ino == q.ino) else {
            continue;
        };
        let (fd, s) = socks[r];
        let from = match &s.peer {
            UnixPeer::Socket(i) => socks
                .iter()
                .position(|(_, o)| o.ino == *i && o.peer == UnixPeer::Socket(s.ino)),
            UnixPeer::Gone => gone_ends.iter().find(|(i, _)| *i == s.ino).map(|(_, t)| *t),
            _ => None,
        };
        let from = match from {
            Some(f) => f,
            None if u32::from(s.kind) == us::SOCK_DGRAM && !s.name.is_empty() => {
                let tmp = p.slots;
                p.slots += 1;
                p.ops.push(Op::Socket(tmp, us::SOCK_DGRAM));
                p.ops.push(Op::Connect(tmp, addr(fd, s, &s.name)?));
                p.ops.push(Op::Close(tmp));
                // The close must come after the sends: move it to the end.
                let close = p.ops.pop();
                plan_sends(p, tmp, q)?;
                p.ops.extend(close);
                continue;
            }
            None => {
                return Err(refuse(
                    fd,
                    s,
                    "holds queued data from a sender crest cannot recreate (an external peer, or a datagram socket without a name)",
                ));
            }
        };
        plan_sends(p, from, q)?;
    }
    Ok(())
}

/// One send per message from slot `from`, its files in flight opened first.
fn plan_sends(p: &mut UnixPlan, from: usize, q: &UnixQueue) -> Result<()> {
    for m in &q.messages {
        let mut slots = Vec::with_capacity(m.fds.len());
        for f in &m.fds {
            let k = p.slots;
            p.slots += 1;
            let (path, flags, pos) = match f {
                FdFile::Reg {
                    path,
                    flags,
                    pos,
                    id,
                } => (
                    super::check::regular(-1, path, id)?,
                    super::check::open_flags(*flags),
                    *pos,
                ),
                FdFile::Chr {
                    path,
                    flags,
                    rdev,
                    pos,
                } => (
                    super::check::char_device(-1, path, *rdev)?,
                    super::check::open_flags(*flags) | super::check::O_NOCTTY,
                    *pos,
                ),
                _ => {
                    return Err(Error::Unsupported(format!(
                        "socket:[{}] in the image has a file in flight of a kind crest does not restore in flight",
                        q.ino
                    )));
                }
            };
            p.ops.push(Op::Open(k, path, flags, pos));
            slots.push(k);
        }
        p.ops.push(Op::Send(from, m.data.clone(), slots.clone()));
        for k in slots {
            p.ops.push(Op::Close(k));
        }
    }
    Ok(())
}

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
