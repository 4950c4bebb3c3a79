//! Unix sockets of one process: [`plan`] (in crest, before any process
//! exists) turns the image's sockets into a list of steps over socket
//! slots, and [`create`] runs them with raw syscalls and no allocation,
//! placing socket `k` at the fd number the caller gives for slot `k`.
//! `create` is the "make these socket objects" step: it runs in the new
//! task (install) for a process's own sockets, and in crest before the
//! tree forks for the sockets processes share (unix_tree.rs).
//!
//! How each socket comes back:
//! - a listener: socket, bind to its name, listen with its backlog; a
//!   path socket's old file is removed first when no socket is bound to it
//!   any more (the dumped socket's own, or a failed restore's); a live
//!   socket or any other file at the path is refused.
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

use crate::error::{Error, Result};
use crate::image::files::unix::show_name;
use crate::image::files::{Fd, FdFile, PipeData, UnixPeer, UnixQueue, UnixSocket};
use crate::sys::unix_diag::TCP_LISTEN;
use crate::sys::unix_sock::{self as us, SockAddrUn};
use std::ffi::CString;

pub use super::unix_make::create;

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
    /// a pipe (read slot, write slot) holding these bytes.
    Pipe(usize, usize, Vec<u8>),
    /// fcntl(F_SETFL) of a helper slot (a pipe end in flight).
    Flags(usize, u32),
    /// open a file in flight at slot (path, flags, pos).
    Open(usize, CString, u32, u64),
    /// send one message from slot, with the files at the slots in .2.
    Send(usize, Vec<u8>, Vec<usize>),
    /// close a helper slot.
    Close(usize),
    /// a copy of open file `.1` (an fd number crest made, inherited) at slot.
    Dup(usize, i32),
    /// shutdown(how).
    Shutdown(usize, u32),
    /// options and status flags of a socket.
    Options(usize, Options),
}

/// What a socket's options come back as.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// SO_SNDBUF as dumped (twice what is set).
    pub sndbuf: u32,
    /// SO_RCVBUF as dumped.
    pub rcvbuf: u32,
    /// SO_PASSCRED.
    pub passcred: bool,
    /// SO_PEEK_OFF (-1: leave off).
    pub peek_off: i32,
    /// File status flags.
    pub flags: u32,
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
    /// Ends of pipes the process holds that are also in flight: (pipe
    /// id, write end, slot); install puts a copy of the end at the slot
    /// before [`create`] runs.
    pub borrowed: Vec<(u64, bool, usize)>,
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
            let sits = |what: String| {
                refuse(
                    fd,
                    s,
                    &format!(
                        "bound to `{}`, where {what} now sits; move it away and restore again",
                        path.display()
                    ),
                )
            };
            if !m.file_type().is_socket() {
                return Err(sits(format!("another file (inode {})", m.ino())));
            }
            if let Some(live) = bound_at(m.ino())? {
                return Err(sits(format!(
                    "the live socket socket:[{live}] (held by {})",
                    crate::dump::files::unix::holder(live.into())
                )));
            }
            // A socket file no socket is bound to: the dumped socket's own,
            // or one a failed restore left; bound again in its place.
            CString::new(s.name.clone()).ok()
        }
    };
    Ok(Op::Bind(k, a, unlink))
}

/// The live socket bound to the socket file with inode `file_ino`, if any.
fn bound_at(file_ino: u64) -> Result<Option<u32>> {
    let all = crate::sys::unix_diag::dump_all()
        .map_err(|e| Error::sys("sock_diag", "looking for sockets bound to a path", e))?;
    Ok(all
        .iter()
        .find(|d| d.vfs.is_some_and(|(i, _)| u64::from(i) == file_ino))
        .map(|d| d.ino))
}

/// The sockets of `fds` (each once, by inode, with the fd that first
/// holds it), then the sockets in flight in `queues` that no fd holds
/// (fd -1).
fn sockets<'a>(fds: &[&'a Fd], queues: &'a [UnixQueue]) -> Vec<(i32, &'a UnixSocket)> {
    let mut out: Vec<(i32, &UnixSocket)> = Vec::new();
    let held = fds.iter().map(|f| (f.fd, &f.file));
    let carried = queues
        .iter()
        .flat_map(|q| q.messages.iter().flat_map(|m| m.fds.iter()))
        .map(|f| (-1, f));
    for (fd, file) in held.chain(carried) {
        if let FdFile::Unix(s) = file
            && !out.iter().any(|(_, o)| o.ino == s.ino)
        {
            out.push((fd, s));
        }
    }
    out
}

/// Plans every unix socket among `fds`, with the queues of `queues`.
#[cfg(test)]
pub fn plan(fds: &[&Fd], queues: &[UnixQueue], pipes: &[PipeData]) -> Result<UnixPlan> {
    plan_lent(fds, queues, pipes, &[])
}

/// [`plan`], with the files in flight that crest opened already because
/// a held fd has the same open file: ((socket inode, message, index), fd
/// number of that open file).
pub fn plan_lent(
    fds: &[&Fd],
    queues: &[UnixQueue],
    pipes: &[PipeData],
    lent: &[Lent],
) -> Result<UnixPlan> {
    let socks = sockets(fds, queues);
    let mut pl = Planner {
        p: UnixPlan {
            inos: socks.iter().map(|(_, s)| s.ino).collect(),
            slots: socks.len(),
            ..UnixPlan::default()
        },
        made: vec![false; socks.len()],
        socks,
        later: Vec::new(),
        gone_ends: Vec::new(),
        held_pipes: fds
            .iter()
            .filter_map(|f| match f.file {
                FdFile::Pipe { pipe_id, .. } => Some(pipe_id),
                _ => None,
            })
            .collect(),
        pipes,
        flight_pipes: Vec::new(),
        lent,
    };
    pl.listeners()?;
    for k in 0..pl.socks.len() {
        if !pl.made[k] {
            pl.one(k)?;
        }
    }
    for k in std::mem::take(&mut pl.later) {
        pl.deferred(k)?;
    }
    for q in queues {
        pl.queue(q)?;
    }
    for (_, tmp) in std::mem::take(&mut pl.gone_ends) {
        pl.p.ops.push(Op::Close(tmp));
    }
    pl.finish();
    Ok(pl.p)
}

/// The plan being built.
pub(super) struct Planner<'a> {
    pub(super) p: UnixPlan,
    /// (first fd holding it, socket), by slot.
    socks: Vec<(i32, &'a UnixSocket)>,
    /// Slots whose socket exists by now.
    made: Vec<bool>,
    /// Slots connected by name after every other socket exists.
    later: Vec<usize>,
    /// (socket inode, helper slot) for sockets whose peer was closed.
    gone_ends: Vec<(u64, usize)>,
    /// The pipes the process holds, by id.
    pub(super) held_pipes: Vec<u64>,
    /// The image's pipe-data records.
    pub(super) pipes: &'a [PipeData],
    /// Pipes only in flight: (pipe id, read slot, write slot).
    pub(super) flight_pipes: Vec<(u64, usize, usize)>,
    /// Files in flight crest opened already.
    pub(super) lent: &'a [Lent],
}

/// A file in flight crest opened already: ((socket inode, message index,
/// file index), the fd number of the open file).
pub type Lent = ((u64, u32, u32), i32);

impl Planner<'_> {
    fn find(&self, ino: u64) -> Option<usize> {
        self.socks.iter().position(|(_, s)| s.ino == ino)
    }

    /// The listener whose name `x` carries (`x` was accepted from it).
    fn listener_of(&self, x: &UnixSocket) -> Option<usize> {
        self.socks.iter().position(|(_, l)| {
            l.state == TCP_LISTEN && !x.name.is_empty() && l.name == x.name && l.kind == x.kind
        })
    }

    pub(super) fn helper(&mut self) -> usize {
        self.p.slots += 1;
        self.p.slots - 1
    }

    /// socket(), then bind if it has a name.
    fn named(&mut self, k: usize) -> Result<()> {
        let (fd, s) = self.socks[k];
        self.p.ops.push(Op::Socket(k, s.kind.into()));
        if !s.name.is_empty() {
            self.p.ops.push(bind_op(fd, k, s)?);
        }
        self.made[k] = true;
        Ok(())
    }

    /// Listeners first: accepted and pending connections need them.
    fn listeners(&mut self) -> Result<()> {
        for k in 0..self.socks.len() {
            let s = self.socks[k].1;
            if s.state == TCP_LISTEN {
                self.named(k)?;
                self.p.ops.push(Op::Listen(k, s.backlog));
            }
        }
        Ok(())
    }

    /// Socket `k` and, when connected to one, its peer.
    fn one(&mut self, k: usize) -> Result<()> {
        let (fd, s) = self.socks[k];
        match &s.peer {
            UnixPeer::Socket(peer) => {
                let Some(j) = self.find(*peer) else {
                    return Err(refuse(
                        fd,
                        s,
                        &format!(
                            "connected to socket:[{peer}] of another process, which is not restored with it; restore the whole tree the image holds"
                        ),
                    ));
                };
                let mutual = self.socks[j].1.peer == UnixPeer::Socket(s.ino);
                if u32::from(s.kind) == us::SOCK_DGRAM && !mutual {
                    self.later.push(k);
                    return Ok(());
                }
                let o = self.socks[j].1;
                match (self.listener_of(s), self.listener_of(o)) {
                    (Some(l), _) => self.accepted(l, k, j),
                    (None, Some(l)) => self.accepted(l, j, k),
                    (None, None) => self.pair(k, j),
                }
            }
            UnixPeer::Gone => {
                let tmp = self.helper();
                self.p.ops.push(Op::Pair(k, tmp, s.kind.into()));
                self.gone_ends.push((s.ino, tmp));
                self.made[k] = true;
                Ok(())
            }
            UnixPeer::Pending(_) | UnixPeer::External(..) => {
                self.later.push(k);
                Ok(())
            }
            UnixPeer::None => self.named(k),
        }
    }

    /// A connection accepted from listener `l`: `cli` connects, `l`
    /// accepts it as `acc`.
    fn accepted(&mut self, l: usize, acc: usize, cli: usize) -> Result<()> {
        let (fd, s) = self.socks[acc];
        self.named(cli)?;
        let to = addr(fd, s, &self.socks[l].1.name)?;
        self.p.ops.push(Op::Connect(cli, to));
        self.p.ops.push(Op::Accept(l, acc));
        self.made[acc] = true;
        Ok(())
    }

    /// A socketpair; datagram ends get their names back.
    fn pair(&mut self, k: usize, j: usize) -> Result<()> {
        let kind = self.socks[k].1.kind;
        self.p.ops.push(Op::Pair(k, j, kind.into()));
        for x in [k, j] {
            self.made[x] = true;
            let (xfd, xs) = self.socks[x];
            if xs.name.is_empty() {
                continue;
            }
            // A stream end named like a listener that is gone was
            // accepted from it: that name cannot be bound again.
            if u32::from(xs.kind) == us::SOCK_DGRAM {
                self.p.ops.push(bind_op(xfd, x, xs)?);
            } else {
                crate::warn!(
                    "fd {xfd}: unix socket socket:[{}] comes back without its name `{}` (its listener is not in the image)",
                    xs.ino,
                    show_name(&xs.name)
                );
            }
        }
        Ok(())
    }

    /// A socket connected by name: a one-way datagram connect, a
    /// connection still in a listener's backlog, an external peer.
    fn deferred(&mut self, k: usize) -> Result<()> {
        let (fd, s) = self.socks[k];
        self.named(k)?;
        let target = match &s.peer {
            UnixPeer::Socket(i) | UnixPeer::Pending(i) => self
                .find(*i)
                .map(|j| self.socks[j].1.name.clone())
                .unwrap_or_default(),
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
        self.p.ops.push(Op::Connect(k, addr(fd, s, &target)?));
        Ok(())
    }

    /// The sends that refill the receive queue `q`, from the peer's side
    /// (a datagram socket with no peer here gets them from a helper
    /// socket connected to its name).
    fn queue(&mut self, q: &UnixQueue) -> Result<()> {
        let Some(r) = self.find(q.ino) else {
            return Ok(());
        };
        let (fd, s) = self.socks[r];
        let from = match &s.peer {
            UnixPeer::Socket(i) => self
                .socks
                .iter()
                .position(|(_, o)| o.ino == *i && o.peer == UnixPeer::Socket(s.ino)),
            UnixPeer::Gone => self
                .gone_ends
                .iter()
                .find(|(i, _)| *i == s.ino)
                .map(|(_, t)| *t),
            _ => None,
        };
        if let Some(from) = from {
            return self.sends(from, q);
        }
        if u32::from(s.kind) != us::SOCK_DGRAM || s.name.is_empty() {
            return Err(refuse(
                fd,
                s,
                "holds queued data from a sender crest cannot recreate (an external peer, or a datagram socket without a name)",
            ));
        }
        let tmp = self.helper();
        self.p.ops.push(Op::Socket(tmp, us::SOCK_DGRAM));
        self.p.ops.push(Op::Connect(tmp, addr(fd, s, &s.name)?));
        self.sends(tmp, q)?;
        self.p.ops.push(Op::Close(tmp));
        Ok(())
    }

    /// Shutdown bits after the data, then options and flags.
    fn finish(&mut self) {
        for (k, (_, s)) in self.socks.iter().enumerate() {
            if s.shutdown != 0 && s.state != TCP_LISTEN {
                self.p
                    .ops
                    .push(Op::Shutdown(k, u32::from(s.shutdown & 3) - 1));
            }
            self.p.ops.push(Op::Options(
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
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::image::files::UnixMessage;

    fn sock(ino: u64, kind: u8, state: u8, name: &[u8], peer: UnixPeer) -> Fd {
        socket_fd(ino as i32, ino, kind, state, name, peer, 4096)
    }

    /// A unix socket fd as the dump records it, with buffers of `buf` bytes.
    pub(in crate::restore::files) fn socket_fd(
        fd: i32,
        ino: u64,
        kind: u8,
        state: u8,
        name: &[u8],
        peer: UnixPeer,
        buf: u32,
    ) -> Fd {
        Fd {
            fd,
            fd_flags: 0,
            file: FdFile::Unix(UnixSocket {
                flags: 2,
                ino,
                kind,
                state,
                name: name.to_vec(),
                file: (0, 0),
                peer,
                shutdown: 0,
                backlog: 4,
                sndbuf: buf,
                rcvbuf: buf,
                passcred: false,
                peek_off: -1,
            }),
        }
    }

    fn tags(p: &UnixPlan) -> Vec<String> {
        p.ops
            .iter()
            .filter(|o| !matches!(o, Op::Options(..)))
            .map(|o| match o {
                Op::Socket(k, _) => format!("socket{k}"),
                Op::Pair(a, b, _) => format!("pair{a}-{b}"),
                Op::Bind(k, ..) => format!("bind{k}"),
                Op::Listen(k, _) => format!("listen{k}"),
                Op::Connect(k, _) => format!("connect{k}"),
                Op::Accept(l, k) => format!("accept{l}>{k}"),
                Op::Open(k, ..) => format!("open{k}"),
                Op::Send(k, d, _) => format!("send{k}:{}", String::from_utf8_lossy(d)),
                Op::Close(k) => format!("close{k}"),
                Op::Dup(k, n) => format!("dup{k}<{n}"),
                Op::Pipe(r, w, d) => format!("pipe{r}-{w}:{}", String::from_utf8_lossy(d)),
                Op::Flags(k, _) => format!("flags{k}"),
                Op::Shutdown(k, how) => format!("shutdown{k}/{how}"),
                Op::Options(..) => String::new(),
            })
            .collect()
    }

    fn queue(ino: u64, data: &[u8]) -> UnixQueue {
        UnixQueue {
            ino,
            messages: vec![UnixMessage {
                data: data.to_vec(),
                fds: Vec::new(),
            }],
        }
    }

    #[test]
    fn accepted_before_pending_and_data_from_the_peer() {
        let name = b"\0srv";
        let fds = [
            sock(10, 1, 10, name, UnixPeer::None),
            sock(11, 1, 1, b"", UnixPeer::Socket(12)),
            sock(12, 1, 1, name, UnixPeer::Socket(11)),
            sock(13, 1, 1, b"", UnixPeer::Pending(10)),
            sock(14, 2, 1, b"", UnixPeer::Socket(15)),
            sock(15, 2, 1, b"", UnixPeer::Socket(14)),
        ];
        let refs: Vec<&Fd> = fds.iter().collect();
        let p = plan(&refs, &[queue(12, b"hi"), queue(14, b"dg")], &[]).unwrap();
        assert_eq!(
            tags(&p),
            [
                "socket0",
                "bind0",
                "listen0",
                "socket1",
                "connect1",
                "accept0>2",
                "pair4-5",
                "socket3",
                "connect3",
                "send1:hi",
                "send5:dg"
            ]
        );
        assert_eq!(p.slots, 6);
        assert_eq!(p.slot_of(13), Some(3));
    }

    #[test]
    fn a_closed_peer_sends_then_closes_and_shutdown_comes_last() {
        let mut f = sock(20, 5, 1, b"", UnixPeer::Gone);
        if let FdFile::Unix(s) = &mut f.file {
            s.shutdown = 3;
        }
        let p = plan(&[&f], &[queue(20, b"last words")], &[]).unwrap();
        assert_eq!(
            tags(&p),
            ["pair0-1", "send1:last words", "close1", "shutdown0/2"]
        );
    }

    #[test]
    fn a_datagram_queue_without_a_peer_comes_through_a_helper() {
        let f = sock(30, 2, 7, b"\0dgram", UnixPeer::None);
        let p = plan(&[&f], &[queue(30, b"x")], &[]).unwrap();
        assert_eq!(
            tags(&p),
            [
                "socket0", "bind0", "socket1", "connect1", "send1:x", "close1"
            ]
        );
    }

    #[test]
    fn pipes_in_flight_are_made_once_or_borrowed_from_the_process() {
        let held = Fd {
            fd: 5,
            fd_flags: 0,
            file: FdFile::Pipe {
                pipe_id: 70,
                flags: 0,
            },
        };
        let a = sock(50, 2, 1, b"", UnixPeer::Socket(51));
        let b = sock(51, 2, 1, b"", UnixPeer::Socket(50));
        let end = |pipe_id, flags| FdFile::Pipe { pipe_id, flags };
        let q = UnixQueue {
            ino: 50,
            messages: vec![UnixMessage {
                data: b"m".to_vec(),
                fds: vec![end(71, 0), end(71, 1), end(70, 1)],
            }],
        };
        let data = [PipeData {
            pipe_id: 71,
            data: b"in pipe".to_vec(),
        }];
        let p = plan(&[&held, &a, &b], &[q], &data).unwrap();
        assert_eq!(
            tags(&p),
            ["pair0-1", "pipe2-3:in pipe", "flags2", "flags3", "send1:m"]
        );
        assert_eq!(p.borrowed, vec![(70, true, 4)]);
        assert_eq!(p.slots, 5);
    }

    #[test]
    fn what_cannot_be_rebuilt_is_refused_by_name() {
        let split = sock(40, 1, 1, b"", UnixPeer::Socket(41));
        let e = plan(&[&split], &[], &[]).unwrap_err().to_string();
        assert!(e.contains("fd 40") && e.contains("another process"), "{e}");
        let ext = sock(42, 1, 1, b"", UnixPeer::External(9, b"\0x".to_vec()));
        let e = plan(&[&ext], &[queue(42, b"y")], &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("socket:[42]") && e.contains("queued data"),
            "{e}"
        );
        let anon = sock(43, 1, 1, b"", UnixPeer::External(9, Vec::new()));
        let e = plan(&[&anon], &[], &[]).unwrap_err().to_string();
        assert!(e.contains("without a name"), "{e}");
    }
}
