//! Unix sockets in files-PID.img: fd kind 21 (one socket, by inode), the
//! unix-queue record (what waited in a socket's receive queue, with the
//! files still in flight in SCM_RIGHTS messages) and the unix-flight-file
//! record (a file in flight that is the open file of a held fd).
//!
//! ```text
//!  fd kind 21 unix:  u32 open_flags | u64 ino | u8 type (SOCK_*) | u8 state (TCP_*)
//!                    | name | u64 file_ino | u64 file_dev | peer | u8 shutdown
//!                    | u32 backlog | u32 sndbuf | u32 rcvbuf | u8 passcred | i32 peek_off
//!     name:          bytes: empty unbound, a path (no NUL), or NUL + abstract name
//!     file_ino/dev:  a path socket's file at the dump (dev as the kernel encodes it), else 0
//!     peer:          u8 tag, then: 0 none | 1 socket: u64 ino | 2 gone (closed)
//!                    | 3 pending: u64 listener ino | 4 external: u64 ino, name
//!  unix-queue (41):  u64 ino | u32 n | n x (bytes data | u32 m | m x fd)
//!     fd:            an fd record's fields (i32 fd = index, u32 0, u8 kind...)
//!  unix-flight-file (55): u64 ino | u32 message | u32 index | u32 pid | i32 fd
//! ```
//!
//! A socket's send side needs no record: what it sent waits in its peer's
//! receive queue, which is dumped with the peer.

use super::{Fd, FdFile};
use crate::image::codec::{Reader, Writer};
use crate::image::record::Record;
use crate::image::value::Value;
use crate::image::{ImageError, MAX_RECORD};

/// The fd kind number of a unix socket.
pub const KIND_UNIX: u8 = 21;
/// The most bytes of a socket name (sun_path).
const NAME_MAX: usize = 108;
/// The most messages one queue record holds.
pub const MAX_MESSAGES: usize = 1 << 20;

/// Who a socket is connected to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnixPeer {
    /// Nobody: unconnected, or a listener.
    None,
    /// Another socket of the dumped tree, by inode.
    Socket(u64),
    /// A stream or seqpacket socket whose other end was closed.
    Gone,
    /// A connection waiting in the backlog of this listener (by inode).
    Pending(u64),
    /// A socket outside the tree (allowed by `--external unix[INO]`): its
    /// inode and bound name (empty when it has none).
    External(u64, Vec<u8>),
}

/// One unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixSocket {
    /// O_* status flags (O_NONBLOCK).
    pub flags: u32,
    /// The socket's inode at the dump, which names it in the image.
    pub ino: u64,
    /// SOCK_STREAM (1), SOCK_DGRAM (2) or SOCK_SEQPACKET (5).
    pub kind: u8,
    /// TCP_ESTABLISHED (1), TCP_CLOSE (7) or TCP_LISTEN (10).
    pub state: u8,
    /// The bound name: empty, a path, or NUL and an abstract name.
    pub name: Vec<u8>,
    /// A path socket's file: (inode, kernel-encoded device), or (0, 0).
    pub file: (u64, u64),
    /// Its peer.
    pub peer: UnixPeer,
    /// RCV_SHUTDOWN (1) | SEND_SHUTDOWN (2).
    pub shutdown: u8,
    /// A listener's backlog.
    pub backlog: u32,
    /// SO_SNDBUF as getsockopt shows it (twice what was set).
    pub sndbuf: u32,
    /// SO_RCVBUF as getsockopt shows it.
    pub rcvbuf: u32,
    /// SO_PASSCRED.
    pub passcred: bool,
    /// SO_PEEK_OFF (-1: off).
    pub peek_off: i32,
}

pub(super) fn encode(s: &UnixSocket, w: &mut Writer) {
    w.u8(KIND_UNIX);
    w.u32(s.flags);
    w.u64(s.ino);
    w.u8(s.kind);
    w.u8(s.state);
    w.bytes(&s.name);
    w.u64(s.file.0);
    w.u64(s.file.1);
    match &s.peer {
        UnixPeer::None => w.u8(0),
        UnixPeer::Socket(i) => {
            w.u8(1);
            w.u64(*i);
        }
        UnixPeer::Gone => w.u8(2),
        UnixPeer::Pending(i) => {
            w.u8(3);
            w.u64(*i);
        }
        UnixPeer::External(i, name) => {
            w.u8(4);
            w.u64(*i);
            w.bytes(name);
        }
    }
    w.u8(s.shutdown);
    w.u32(s.backlog);
    w.u32(s.sndbuf);
    w.u32(s.rcvbuf);
    w.u8(u8::from(s.passcred));
    w.i32(s.peek_off);
}

pub(super) fn decode(r: &mut Reader) -> Result<UnixSocket, ImageError> {
    let (flags, ino, kind, state) = (r.u32()?, r.u64()?, r.u8()?, r.u8()?);
    if ![1, 2, 5].contains(&kind) {
        return Err(r.error(format!("unix socket type {kind} is not 1, 2 or 5")));
    }
    let name = r.bytes("socket name", NAME_MAX)?;
    let file = (r.u64()?, r.u64()?);
    let peer = match r.u8()? {
        0 => UnixPeer::None,
        1 => UnixPeer::Socket(r.u64()?),
        2 => UnixPeer::Gone,
        3 => UnixPeer::Pending(r.u64()?),
        4 => UnixPeer::External(r.u64()?, r.bytes("peer name", NAME_MAX)?),
        t => return Err(r.error(format!("unix socket peer tag {t} is unknown"))),
    };
    Ok(UnixSocket {
        flags,
        ino,
        kind,
        state,
        name,
        file,
        peer,
        shutdown: r.u8()?,
        backlog: r.u32()?,
        sndbuf: r.u32()?,
        rcvbuf: r.u32()?,
        passcred: r.bool()?,
        peek_off: r.i32()?,
    })
}

pub(super) fn value(s: &UnixSocket) -> Vec<(&'static str, Value)> {
    let peer = match &s.peer {
        UnixPeer::None => Value::Null,
        UnixPeer::Socket(i) => Value::Str(format!("socket:[{i}]")),
        UnixPeer::Gone => Value::Str("closed".into()),
        UnixPeer::Pending(i) => Value::Str(format!("pending on socket:[{i}]")),
        UnixPeer::External(i, n) => Value::Str(format!("external socket:[{i}] {}", show_name(n))),
    };
    vec![
        ("kind", Value::Str("unix".into())),
        ("flags", Value::Hex(s.flags as u64)),
        ("ino", Value::U(s.ino)),
        ("type", Value::U(s.kind as u64)),
        ("state", Value::U(s.state as u64)),
        ("name", Value::Str(show_name(&s.name))),
        ("file_ino", Value::U(s.file.0)),
        ("peer", peer),
        ("shutdown", Value::U(s.shutdown as u64)),
        ("backlog", Value::U(s.backlog as u64)),
        ("sndbuf", Value::U(s.sndbuf as u64)),
        ("rcvbuf", Value::U(s.rcvbuf as u64)),
        ("passcred", Value::Bool(s.passcred)),
        ("peek_off", Value::I(s.peek_off as i64)),
    ]
}

/// A name as `ss` prints it: `@name` for an abstract one.
pub fn show_name(n: &[u8]) -> String {
    match n.split_first() {
        Some((0, rest)) => format!("@{}", String::from_utf8_lossy(rest)),
        _ => String::from_utf8_lossy(n).into_owned(),
    }
}

/// One message waiting in a receive queue: a datagram, a seqpacket
/// record, or on a stream the bytes one sendmsg restores (the bytes before
/// the skb that carries fds, or that skb with its fds, or the bytes after
/// the last fds), so the fds sit at the same byte after restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixMessage {
    /// Its bytes.
    pub data: Vec<u8>,
    /// The files in flight with it (SCM_RIGHTS), in order.
    pub fds: Vec<FdFile>,
}

/// The receive queue of socket `ino`, in read order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixQueue {
    /// The receiving socket's inode.
    pub ino: u64,
    /// The messages.
    pub messages: Vec<UnixMessage>,
}

impl Record for UnixQueue {
    const KIND: u16 = 41;
    const NAME: &'static str = "unix-queue";

    fn encode(&self, w: &mut Writer) {
        w.u64(self.ino);
        w.list(&self.messages, |w, m| {
            w.bytes(&m.data);
            w.count(m.fds.len());
            for (i, f) in m.fds.iter().enumerate() {
                let fd = Fd {
                    fd: i as i32,
                    fd_flags: 0,
                    file: f.clone(),
                };
                fd.encode(w);
            }
        });
    }

    fn decode(r: &mut Reader) -> Result<Self, ImageError> {
        let ino = r.u64()?;
        let messages = r.list("queued messages", MAX_MESSAGES, 8, |r| {
            let data = r.bytes("message", MAX_RECORD as usize)?;
            let n = r.count("fds in flight", crate::sys::unix_sock::SCM_MAX_FD, 9)?;
            let mut fds = Vec::with_capacity(n);
            for _ in 0..n {
                fds.push(Fd::decode(r)?.file);
            }
            Ok(UnixMessage { data, fds })
        })?;
        Ok(UnixQueue { ino, messages })
    }

    fn to_value(&self) -> Value {
        let msgs = self.messages.iter().map(|m| {
            let fds = m.fds.iter().map(|f| {
                Fd {
                    fd: 0,
                    fd_flags: 0,
                    file: f.clone(),
                }
                .to_value()
            });
            Value::Obj(vec![
                ("size", Value::U(m.data.len() as u64)),
                ("data", Value::Bytes(m.data.clone())),
                ("fds", Value::List(fds.collect())),
            ])
        });
        Value::Obj(vec![
            ("ino", Value::U(self.ino)),
            ("messages", Value::List(msgs.collect())),
        ])
    }
}

/// A regular file or device in flight that was, at the dump, the open
/// file of fd `fd` of process `pid` of the tree (sent and kept): restore
/// makes them one open file again (one offset, one set of status flags).
/// Message `message`'s file `index` in the queue of socket `ino`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixFlightFile {
    /// The receiving socket's inode.
    pub ino: u64,
    /// The message's index in the queue.
    pub message: u32,
    /// The file's index among the message's fds.
    pub index: u32,
    /// The process holding the same open file.
    pub pid: u32,
    /// Its fd.
    pub fd: i32,
}

impl Record for UnixFlightFile {
    const KIND: u16 = 55;
    const NAME: &'static str = "unix-flight-file";

    fn encode(&self, w: &mut Writer) {
        w.u64(self.ino);
        w.u32(self.message);
        w.u32(self.index);
        w.u32(self.pid);
        w.i32(self.fd);
    }

    fn decode(r: &mut Reader) -> Result<Self, ImageError> {
        Ok(UnixFlightFile {
            ino: r.u64()?,
            message: r.u32()?,
            index: r.u32()?,
            pid: r.u32()?,
            fd: r.i32()?,
        })
    }

    fn to_value(&self) -> Value {
        Value::Obj(vec![
            ("ino", Value::U(self.ino)),
            ("message", Value::U(self.message.into())),
            ("index", Value::U(self.index.into())),
            ("pid", Value::U(self.pid.into())),
            ("fd", Value::I(self.fd.into())),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock(peer: UnixPeer) -> UnixSocket {
        UnixSocket {
            flags: 0o4002,
            ino: 77,
            kind: 5,
            state: 1,
            name: b"\0abs".to_vec(),
            file: (0, 0),
            peer,
            shutdown: 2,
            backlog: 0,
            sndbuf: 425984,
            rcvbuf: 4096,
            passcred: true,
            peek_off: -1,
        }
    }

    #[test]
    fn sockets_and_queues_round_trip() {
        let peers = [
            UnixPeer::None,
            UnixPeer::Socket(78),
            UnixPeer::Gone,
            UnixPeer::Pending(9),
            UnixPeer::External(1234, b"/run/x".to_vec()),
        ];
        for peer in peers {
            let fd = Fd {
                fd: 4,
                fd_flags: 1,
                file: FdFile::Unix(sock(peer)),
            };
            let mut w = Writer::new();
            fd.encode(&mut w);
            let mut r = Reader::new(w.as_bytes(), "files-1.img", 0);
            assert_eq!(Fd::decode(&mut r).unwrap(), fd);
            assert!(!r.has_more());
        }
        let q = UnixQueue {
            ino: 78,
            messages: vec![
                UnixMessage {
                    data: b"abc".to_vec(),
                    fds: vec![],
                },
                UnixMessage {
                    data: vec![],
                    fds: vec![FdFile::Pipe {
                        pipe_id: 5,
                        flags: 0,
                    }],
                },
            ],
        };
        let mut w = Writer::new();
        q.encode(&mut w);
        let mut r = Reader::new(w.as_bytes(), "files-1.img", 0);
        assert_eq!(UnixQueue::decode(&mut r).unwrap(), q);
    }

    #[test]
    fn damaged_sockets_are_refused() {
        let fd = Fd {
            fd: 4,
            fd_flags: 0,
            file: FdFile::Unix(sock(UnixPeer::None)),
        };
        let mut w = Writer::new();
        fd.encode(&mut w);
        let good = w.as_bytes().to_vec();
        // The socket type byte follows fd, fd_flags, kind, flags and ino.
        let mut bad = good.clone();
        bad[4 + 4 + 1 + 4 + 8] = 3;
        assert!(Fd::decode(&mut Reader::new(&bad, "f", 0)).is_err());
        let mut cut = good.clone();
        cut.truncate(good.len() - 3);
        assert!(Fd::decode(&mut Reader::new(&cut, "f", 0)).is_err());
    }
}
