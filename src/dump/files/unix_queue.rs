//! The receive queues of a frozen process's unix sockets, read without
//! consuming them, and what the fds in flight in them hold.
//!
//! The queue is peeked through a copy of the socket (pidfd_getfd) with
//! MSG_PEEK and SO_PEEK_OFF stepping through it: one peek per datagram or
//! seqpacket record (their boundaries kept), and for a stream one stretch
//! of bytes up to each skb that carries fds (a stream read stops after
//! such an skb), split where that skb starts ([`stream_split`]): the
//! bytes before it, then its own bytes with its fds, each restored by one
//! sendmsg so that reads see the same boundaries. The target's own
//! SO_PEEK_OFF is put back afterwards.
//!
//! The fds in flight arrive in crest as new fds and are dumped like fds of
//! the process: a unix socket among them gets its own queue read through
//! that copy, a pipe its bytes copied like a held pipe's (once per pipe),
//! a regular file or device that is the open file of an fd of the frozen
//! tree a unix-flight-file record naming that fd.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::unix::copy_fd;
use crate::error::{Error, Result};
use crate::image::files::{
    Fd, FdFile, PipeData, UnixFlightFile, UnixMessage, UnixPeer, UnixQueue, UnixSocket,
};
use crate::sys::unix_diag::{self, TCP_LISTEN};
use crate::sys::unix_sock::{self, MSG_OOB, MSG_TRUNC, SO_PEEK_OFF, SOCK_DGRAM, SOCK_STREAM};

/// What the files in flight hold, gathered while the queues are read.
pub struct Carried<'a> {
    /// The queues of the sockets in flight.
    pub queues: Vec<UnixQueue>,
    /// The bytes in the pipes in flight.
    pub pipes: Vec<PipeData>,
    /// Pipe ids already stored in the image (by the tree's pipe step).
    pub seen_pipes: &'a mut Vec<u64>,
    /// The process whose queues are read.
    pub pid: u32,
    /// Files in flight that are the open file of a held fd.
    pub flight_files: Vec<UnixFlightFile>,
}

/// What [`collect_queues`] found.
pub struct Collected {
    /// The queues, the sockets' in flight included.
    pub queues: Vec<UnixQueue>,
    /// The bytes of the pipes in flight not stored yet.
    pub pipes: Vec<PipeData>,
    /// Files in flight that are the open file of a held fd.
    pub flight_files: Vec<UnixFlightFile>,
}

/// The receive queue of every unix socket among `fds` of the frozen `pid`
/// (each socket once), with the files in flight; the bytes of the pipes in
/// flight not in `seen_pipes` come back too (and are added to it).
pub fn collect_queues(pid: u32, fds: &[Fd], seen_pipes: &mut Vec<u64>) -> Result<Collected> {
    let mut out: Vec<UnixQueue> = Vec::new();
    let mut carried = Carried {
        queues: Vec::new(),
        pipes: Vec::new(),
        seen_pipes,
        pid,
        flight_files: Vec::new(),
    };
    for f in fds {
        let FdFile::Unix(s) = &f.file else { continue };
        if s.state == TCP_LISTEN || out.iter().any(|q| q.ino == s.ino) {
            continue;
        }
        if let UnixPeer::Pending(l) = s.peer {
            refuse_early_data(pid, f.fd, s.ino, l)?;
        }
        let copy = copy_fd(pid, f.fd)?;
        let messages = peek_all(copy.as_raw_fd(), s, Some(&mut carried))
            .map_err(|e| e.at(pid, f.fd, s.ino))?;
        if !messages.is_empty() {
            crate::debug!(
                "pid {pid}: socket {} holds {} message(s)",
                s.ino,
                messages.len()
            );
            out.push(UnixQueue {
                ino: s.ino,
                messages,
            });
        }
    }
    for q in carried.queues {
        if !out.iter().any(|o| o.ino == q.ino) {
            out.push(q);
        }
    }
    Ok(Collected {
        queues: out,
        pipes: carried.pipes,
        flight_files: carried.flight_files,
    })
}

/// A client whose connection is not accepted yet may have sent bytes to
/// the listener's embryo, which no fd reaches: refused.
fn refuse_early_data(pid: u32, fd: i32, ino: u64, listener: u64) -> Result<()> {
    let all = unix_diag::dump_all()
        .map_err(|e| Error::sys("sock_diag", "listing unix sockets (unix_diag)", e))?;
    let sent = all
        .iter()
        .find(|d| u64::from(d.ino) == ino)
        .map_or(0, |d| d.rqlen.1);
    if sent > 0 {
        return Err(Error::Unsupported(format!(
            "fd {fd} of pid {pid} is unix socket socket:[{ino}], which sent data over a connection socket:[{listener}] has not accepted yet; crest cannot read it: dump once the connection is accepted"
        )));
    }
    Ok(())
}

/// Why peeking a queue failed, before the fd is known.
pub(crate) enum PeekError {
    Sys(&'static str, crate::error::Errno),
    Problem(String),
}

impl PeekError {
    fn at(self, pid: u32, fd: i32, ino: u64) -> Error {
        match self {
            PeekError::Sys(call, e) => Error::sys(
                call,
                format!("reading the queue of unix socket socket:[{ino}] at fd {fd} of pid {pid}"),
                e,
            ),
            PeekError::Problem(p) => Error::Unsupported(format!(
                "fd {fd} of pid {pid} is unix socket socket:[{ino}] {p}"
            )),
        }
    }
}

/// Every message of the queue of `sock` (a copy of the target's socket),
/// the target's SO_PEEK_OFF put back whatever happens.
/// `carried` receives what the files in flight hold (None: a socket or
/// pipe in flight is refused, as in a socket that is itself in flight).
fn peek_all(
    sock: RawFd,
    s: &UnixSocket,
    carried: Option<&mut Carried<'_>>,
) -> Result<Vec<UnixMessage>, PeekError> {
    if u32::from(s.kind) == SOCK_STREAM {
        refuse_urgent_byte(sock)?;
    }
    let old = unix_sock::get_int(sock, SO_PEEK_OFF).map_err(|e| PeekError::Sys("getsockopt", e))?;
    unix_sock::set_int(sock, SO_PEEK_OFF, 0).map_err(|e| PeekError::Sys("setsockopt", e))?;
    let got = peek_from(sock, s, carried);
    let back = unix_sock::set_int(sock, SO_PEEK_OFF, old);
    let got = got?;
    back.map_err(|e| PeekError::Sys("setsockopt", e))?;
    Ok(got)
}

/// A byte sent with MSG_OOB and not read yet: a peek shows it as plain
/// data, so the queue would come back without its mark and the program's
/// recv(MSG_OOB) would fail. Refused rather than restored wrong (EINVAL:
/// none waiting; other errors: a kernel without AF_UNIX MSG_OOB).
fn refuse_urgent_byte(sock: RawFd) -> Result<(), PeekError> {
    let mut byte = [0u8; 1];
    match unix_sock::recvmsg_peek(sock, &mut byte, MSG_OOB) {
        Ok(p) if p.len > 0 => Err(PeekError::Problem(
            "holding an out-of-band byte (sent with MSG_OOB) not read yet, which crest cannot restore; dump once the program has read it with recv(MSG_OOB)".into(),
        )),
        _ => Ok(()),
    }
}

/// The buffer one peek uses: the largest datagram a socket may queue is
/// bounded by the sender's SO_SNDBUF, which crest does not know.
const PEEK_BUF: usize = 4 << 20;

fn peek_from(
    sock: RawFd,
    s: &UnixSocket,
    mut carried: Option<&mut Carried<'_>>,
) -> Result<Vec<UnixMessage>, PeekError> {
    let mut buf = vec![0u8; PEEK_BUF];
    let mut out = Vec::new();
    let mut total = 0usize;
    loop {
        let p = match unix_sock::recvmsg_peek(sock, &mut buf, 0) {
            Ok(p) => p,
            Err(crate::error::Errno::EAGAIN) => return Ok(out),
            Err(e) => return Err(PeekError::Sys("recvmsg", e)),
        };
        if p.flags & MSG_TRUNC != 0 {
            return Err(PeekError::Problem(format!(
                "holding a message larger than {PEEK_BUF} bytes, which crest cannot dump"
            )));
        }
        total += p.len;
        if total > crate::image::MAX_RECORD as usize / 2 {
            return Err(PeekError::Problem(
                "holding more queued bytes than an image record holds; drain it before the dump"
                    .into(),
            ));
        }
        // A stream or seqpacket socket whose peer shut its side down reads
        // end of file once its queue is empty.
        let eof = u32::from(s.kind) != SOCK_DGRAM && s.shutdown & 1 != 0;
        if p.len == 0 && p.fds.is_empty() && (eof || u32::from(s.kind) == SOCK_STREAM) {
            return Ok(out);
        }
        if u32::from(s.kind) == SOCK_STREAM && p.len > 0 && !p.fds.is_empty() {
            let at = total - p.len;
            let c = carried.as_deref_mut();
            total = stretch_with_fds((sock, s.ino), at, &mut buf, &p, c, &mut out)?;
            continue;
        }
        out.push(UnixMessage {
            data: buf[..p.len].to_vec(),
            fds: in_flight(&p.fds, carried.as_deref_mut(), (s.ino, out.len()))?,
        });
    }
}

/// The stream stretch `p` peeked at `at` into `buf`, which ends with the
/// skb carrying `p`'s fds: the bytes before that skb, then the skb with
/// its fds, as two messages. Returns where the next peek starts (set).
fn stretch_with_fds(
    (sock, ino): (RawFd, u64),
    at: usize,
    buf: &mut [u8],
    p: &unix_sock::Peeked,
    carried: Option<&mut Carried<'_>>,
    out: &mut Vec<UnixMessage>,
) -> Result<usize, PeekError> {
    let before = stream_split(sock, at, &mut buf[..p.len])?;
    if before > 0 {
        out.push(UnixMessage {
            data: buf[..before].to_vec(),
            fds: Vec::new(),
        });
    }
    if p.len == buf.len() && before > 0 {
        // The buffer may have ended inside the skb with the fds: the next
        // peek starts at that skb.
        set_peek_off(sock, at + before)?;
        return Ok(at + before);
    }
    out.push(UnixMessage {
        data: buf[before..p.len].to_vec(),
        fds: in_flight(&p.fds, carried, (ino, out.len()))?,
    });
    Ok(at + p.len)
}

fn set_peek_off(sock: RawFd, off: usize) -> Result<(), PeekError> {
    let off = i32::try_from(off).unwrap_or(i32::MAX);
    unix_sock::set_int(sock, SO_PEEK_OFF, off).map_err(|e| PeekError::Sys("setsockopt", e))
}

/// Where the skb carrying fds starts in the stream stretch `stretch`
/// just peeked at queue offset `at`, as a count of the bytes before it.
///
/// A stream peek stops after the first skb carrying fds (one sendmsg
/// with SCM_RIGHTS, or the first chunk of a large one) and reports its
/// fds, but a peek of any stretch before it reports them too, so the
/// peek cannot show where that skb starts. Every byte of the stretch but
/// the last is peeked again into a buffer followed by an unwritable byte
/// ([`unix_sock::peek_whole_skbs`]): the skbs before the fds are copied
/// whole, the one with the fds reaches the unwritable byte, and the count
/// returned is exactly the bytes before it. The peek offset is left at
/// the stretch's end, where the next peek starts.
fn stream_split(sock: RawFd, at: usize, stretch: &mut [u8]) -> Result<usize, PeekError> {
    let len = stretch.len();
    set_peek_off(sock, at)?;
    let before = unix_sock::peek_whole_skbs(sock, &mut stretch[..len - 1])
        .map_err(|e| PeekError::Sys("recvmsg", e))?;
    set_peek_off(sock, at + len)?;
    Ok(before.min(len - 1))
}

/// The files that came with a peeked message, as fd records' files; what
/// a socket or pipe among them holds goes to `carried`.
/// `(ino, message)`: the queue's socket and the message's index, which
/// name a file in flight that is the open file of a held fd.
fn in_flight(
    fds: &[OwnedFd],
    mut carried: Option<&mut Carried<'_>>,
    (ino, message): (u64, usize),
) -> Result<Vec<FdFile>, PeekError> {
    let me = std::process::id();
    let mut out = Vec::with_capacity(fds.len());
    for (index, f) in fds.iter().enumerate() {
        let rec = super::collect_fd(me, f.as_raw_fd()).map_err(|e| {
            PeekError::Problem(format!("carrying a file in flight crest cannot dump: {e}"))
        })?;
        match (&rec.file, carried.as_deref_mut()) {
            (FdFile::Reg { .. } | FdFile::Chr { .. }, Some(c)) => {
                if let Some((pid, fd)) = super::unix::file_holder(f.as_raw_fd(), c.pid) {
                    c.flight_files.push(UnixFlightFile {
                        ino,
                        message: message as u32,
                        index: index as u32,
                        pid,
                        fd,
                    });
                }
            }
            (FdFile::Reg { .. } | FdFile::Chr { .. }, None) => {}
            (FdFile::Unix(s), Some(c)) => {
                if s.state != TCP_LISTEN && !c.queues.iter().any(|q| q.ino == s.ino) {
                    let messages = peek_all(f.as_raw_fd(), s, None)?;
                    c.queues.push(UnixQueue {
                        ino: s.ino,
                        messages,
                    });
                }
            }
            (FdFile::Pipe { .. }, Some(c)) => {
                let data =
                    super::collect_pipe_data_once(me, std::slice::from_ref(&rec), c.seen_pipes)
                        .map_err(|e| {
                            PeekError::Problem(format!(
                                "carrying a pipe in flight crest cannot copy: {e}"
                            ))
                        })?;
                c.pipes.extend(data);
            }
            (other, _) => {
                return Err(PeekError::Problem(format!(
                    "carrying {} in an SCM_RIGHTS message still queued; crest restores regular files, devices, pipes and unix sockets in flight (not inside a socket in flight) only: let the process read it before the dump",
                    flight_kind(other)
                )));
            }
        }
        out.push(rec.file);
    }
    Ok(out)
}

fn flight_kind(f: &FdFile) -> &'static str {
    match f {
        FdFile::Pipe { .. } => "a pipe inside a socket in flight",
        FdFile::Unix(_) => "a unix socket inside a socket in flight",
        _ => "an event-loop file",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::unix_sock::{SO_SNDBUFFORCE, sendmsg_fds, socketpair};
    use std::os::fd::AsRawFd;

    fn stream(ino: u64) -> UnixSocket {
        UnixSocket {
            flags: 2,
            ino,
            kind: SOCK_STREAM as u8,
            state: 1,
            name: Vec::new(),
            file: (0, 0),
            peer: UnixPeer::Gone,
            shutdown: 0,
            backlog: 0,
            sndbuf: 0,
            rcvbuf: 0,
            passcred: false,
            peek_off: -1,
        }
    }

    fn shape(msgs: &[UnixMessage]) -> Vec<(usize, usize)> {
        msgs.iter().map(|m| (m.data.len(), m.fds.len())).collect()
    }

    #[test]
    fn stream_fds_are_kept_with_their_own_bytes() {
        let (a, b) = socketpair(SOCK_STREAM).unwrap();
        let (a, b) = (unix_sock::owned(a), unix_sock::owned(b));
        let null = std::fs::File::open("/dev/null").unwrap();
        let n = null.as_raw_fd();
        for (data, fds) in [
            (&b"aaa"[..], &[][..]),
            (b"bbb", &[n]),
            (b"cc", &[n, n]),
            (b"ddd", &[]),
            (b"e", &[]),
        ] {
            sendmsg_fds(a.as_raw_fd(), data, fds, 0).unwrap();
        }
        let got = peek_all(b.as_raw_fd(), &stream(1), None).ok().unwrap();
        assert_eq!(shape(&got), [(3, 0), (3, 1), (2, 2), (4, 0)]);
        assert_eq!(got[1].data, b"bbb");
        assert_eq!(unix_sock::get_int(b.as_raw_fd(), SO_PEEK_OFF).unwrap(), -1);
        // Nothing was taken: a read still starts with the first bytes.
        let mut buf = [0u8; 8];
        let n = crate::sys::fd::read(std::os::fd::AsFd::as_fd(&b), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"aaabbb");
    }

    #[test]
    fn a_peek_buffer_ending_inside_the_skb_with_fds_starts_again_there() {
        let (a, b) = socketpair(SOCK_STREAM).unwrap();
        let (a, b) = (unix_sock::owned(a), unix_sock::owned(b));
        unix_sock::set_int(a.as_raw_fd(), SO_SNDBUFFORCE, 16 << 20).unwrap();
        let null = std::fs::File::open("/dev/null").unwrap();
        let chunk = vec![b'x'; 1 << 16];
        let mut left = PEEK_BUF - 2;
        while left > 0 {
            let n = left.min(chunk.len());
            sendmsg_fds(a.as_raw_fd(), &chunk[..n], &[], 0).unwrap();
            left -= n;
        }
        sendmsg_fds(a.as_raw_fd(), b"xyz", &[null.as_raw_fd()], 0).unwrap();
        let got = peek_all(b.as_raw_fd(), &stream(2), None).ok().unwrap();
        assert_eq!(shape(&got), [(PEEK_BUF - 2, 0), (3, 1)]);
    }
}
