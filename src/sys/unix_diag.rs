//! unix_diag over NETLINK_SOCK_DIAG: every unix socket of crest's network
//! namespace with its inode, type, state, bound name, file (path sockets),
//! peer inode, pending connections (listeners), queue lengths and shutdown
//! bits, in one dump request.
//!
//! This is what the kernel tells about a socket that no socket call on it
//! can: the peer of a socketpair end, which client waits in a listener's
//! backlog, whether the other end is still open. One dump of all sockets is
//! cheaper than one request per inode and also finds peers outside the
//! dumped tree.
//!
//! ```text
//!  request:  nlmsghdr (16): len u32 | type u16 = SOCK_DIAG_BY_FAMILY | flags u16
//!                           = NLM_F_REQUEST|NLM_F_DUMP | seq u32 | pid u32
//!            unix_diag_req (24): family u8 | protocol u8 | pad u16 | states u32
//!                           | ino u32 | show u32 | cookie u32[2]
//!  answer:   nlmsghdr + unix_diag_msg (16): family u8 | type u8 | state u8 |
//!                           pad u8 | ino u32 | cookie u32[2]
//!            then attributes: len u16 | type u16 | payload, 4-aligned
//!              UNIX_DIAG_NAME (0) bytes     UNIX_DIAG_VFS (1) ino u32 | dev u32
//!              UNIX_DIAG_PEER (2) u32       UNIX_DIAG_ICONS (3) u32[]
//!              UNIX_DIAG_RQLEN (4) rqueue u32 | wqueue u32
//!              UNIX_DIAG_SHUTDOWN (6) u8
//!            until NLMSG_DONE (3) or NLMSG_ERROR (2)
//! ```

use std::os::fd::AsFd;

use super::SysResult;
use super::net::{NETLINK_SOCK_DIAG, netlink_socket};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const AF_UNIX: u8 = 1;
const UDIAG_SHOW_NAME: u32 = 1;
const UDIAG_SHOW_VFS: u32 = 2;
const UDIAG_SHOW_PEER: u32 = 4;
const UDIAG_SHOW_ICONS: u32 = 8;
const UDIAG_SHOW_RQLEN: u32 = 0x10;
const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_VFS: u16 = 1;
const UNIX_DIAG_PEER: u16 = 2;
const UNIX_DIAG_ICONS: u16 = 3;
const UNIX_DIAG_RQLEN: u16 = 4;
const UNIX_DIAG_SHUTDOWN: u16 = 6;

/// `TCP_ESTABLISHED`: a connected socket.
pub const TCP_ESTABLISHED: u8 = 1;
/// `TCP_SYN_SENT`: a stream socket connecting (not seen for unix after connect returns).
pub const TCP_SYN_SENT: u8 = 2;
/// `TCP_CLOSE`: unconnected.
pub const TCP_CLOSE: u8 = 7;
/// `TCP_LISTEN`.
pub const TCP_LISTEN: u8 = 10;

/// One unix socket as unix_diag shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnixDiag {
    /// The socket's inode.
    pub ino: u32,
    /// SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET.
    pub kind: u8,
    /// TCP_ESTABLISHED, TCP_CLOSE, TCP_LISTEN.
    pub state: u8,
    /// The bound name as the kernel keeps it (a path with its NUL, or NUL
    /// and an abstract name); None when unbound.
    pub name: Option<Vec<u8>>,
    /// For a path socket: the inode and (kernel-encoded) device of its file.
    pub vfs: Option<(u32, u32)>,
    /// The peer's inode; 0 when none or when the peer has no file any more.
    pub peer: u32,
    /// A listener's queued connections, by the connecting socket's inode.
    pub icons: Vec<u32>,
    /// Receive queue (bytes; a listener: queued connections; a datagram
    /// socket: the first message's bytes) and send queue (bytes in
    /// flight; a listener: its backlog).
    pub rqlen: (u32, u32),
    /// RCV_SHUTDOWN (1) | SEND_SHUTDOWN (2).
    pub shutdown: u8,
}

/// Every unix socket of the network namespace.
pub fn dump_all() -> SysResult<Vec<UnixDiag>> {
    let sk = netlink_socket(NETLINK_SOCK_DIAG)?;
    super::fd::write(sk.as_fd(), &request())?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 32 << 10];
    loop {
        let n = super::fd::read(sk.as_fd(), &mut buf)?;
        if n == 0 {
            return Err(super::Errno::EIO);
        }
        match parse_batch(&buf[..n], &mut out) {
            Batch::More => {}
            Batch::Done => return Ok(out),
            Batch::Error(e) => return Err(e),
        }
    }
}

fn request() -> Vec<u8> {
    let mut m = Vec::with_capacity(40);
    m.extend_from_slice(&40u32.to_ne_bytes());
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    m.extend_from_slice(&[0u8; 8]);
    m.extend_from_slice(&[AF_UNIX, 0, 0, 0]);
    m.extend_from_slice(&u32::MAX.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    let show = UDIAG_SHOW_NAME | UDIAG_SHOW_VFS | UDIAG_SHOW_PEER | UDIAG_SHOW_ICONS;
    m.extend_from_slice(&(show | UDIAG_SHOW_RQLEN).to_ne_bytes());
    m.extend_from_slice(&[0xff; 8]);
    m
}

/// What one datagram of the answer said.
#[derive(Debug, PartialEq, Eq)]
enum Batch {
    More,
    Done,
    Error(super::Errno),
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(o..o + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(o..o + 4)?.try_into().ok()?))
}

/// Parses the netlink messages of one datagram into `out`.
fn parse_batch(b: &[u8], out: &mut Vec<UnixDiag>) -> Batch {
    let mut off = 0;
    while let (Some(len), Some(kind)) = (u32_at(b, off), u16_at(b, off + 4)) {
        let len = len as usize;
        if len < 16 || off + len > b.len() {
            return Batch::Error(super::Errno::EIO);
        }
        match kind {
            NLMSG_DONE => return Batch::Done,
            NLMSG_ERROR => {
                let e = u32_at(b, off + 16).map_or(5, |v| -(v as i32));
                return Batch::Error(super::Errno::new(e));
            }
            SOCK_DIAG_BY_FAMILY => {
                if let Some(d) = parse_msg(&b[off + 16..off + len]) {
                    out.push(d);
                }
            }
            _ => {}
        }
        off += (len + 3) & !3;
    }
    Batch::More
}

/// One unix_diag_msg with its attributes.
fn parse_msg(m: &[u8]) -> Option<UnixDiag> {
    let mut d = UnixDiag {
        kind: *m.get(1)?,
        state: *m.get(2)?,
        ino: u32_at(m, 4)?,
        ..UnixDiag::default()
    };
    let mut off = 16;
    while let (Some(len), Some(ty)) = (u16_at(m, off), u16_at(m, off + 2)) {
        let len = len as usize;
        if len < 4 || off + len > m.len() {
            break;
        }
        let p = &m[off + 4..off + len];
        match ty & 0x3fff {
            UNIX_DIAG_NAME => d.name = Some(p.to_vec()),
            UNIX_DIAG_VFS => d.vfs = Some((u32_at(p, 0)?, u32_at(p, 4)?)),
            UNIX_DIAG_PEER => d.peer = u32_at(p, 0)?,
            UNIX_DIAG_ICONS => d.icons = p.chunks_exact(4).filter_map(|c| u32_at(c, 0)).collect(),
            UNIX_DIAG_RQLEN => d.rqlen = (u32_at(p, 0)?, u32_at(p, 4)?),
            UNIX_DIAG_SHUTDOWN => d.shutdown = *p.first()?,
            _ => {}
        }
        off += (len + 3) & !3;
    }
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::net::{UnixListener, UnixStream};

    fn ino(f: &impl std::os::fd::AsRawFd) -> u32 {
        let m = std::fs::metadata(format!("/proc/self/fd/{}", f.as_raw_fd())).unwrap();
        m.ino() as u32
    }

    #[test]
    fn a_pair_a_listener_and_a_waiting_client() {
        let (a, b) = UnixStream::pair().unwrap();
        std::io::Write::write_all(&mut &b, b"12345").unwrap();
        b.shutdown(std::net::Shutdown::Write).unwrap();
        let name = format!("\0crest-diag-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name.as_bytes()[1..]);
        let l = UnixListener::bind_addr(&addr.unwrap()).unwrap();
        let c = UnixStream::connect_addr(&l.local_addr().unwrap()).unwrap();
        let all = dump_all().unwrap();
        let find = |i: u32| all.iter().find(|d| d.ino == i).unwrap().clone();
        let (da, db, dl, dc) = (find(ino(&a)), find(ino(&b)), find(ino(&l)), find(ino(&c)));
        assert_eq!((da.kind, da.state, da.peer), (1, TCP_ESTABLISHED, ino(&b)));
        assert_eq!(db.peer, ino(&a));
        assert_eq!(da.rqlen.0, 5, "five bytes wait in a");
        assert_eq!(
            (da.shutdown, db.shutdown),
            (1, 2),
            "b shut its writing side"
        );
        assert_eq!(dl.state, TCP_LISTEN);
        assert_eq!(dl.name.as_deref(), Some(name.as_bytes()));
        assert_eq!(dl.icons, vec![ino(&c)], "the client waits in the backlog");
        assert_eq!(
            (dc.state, dc.peer),
            (TCP_ESTABLISHED, 0),
            "its peer has no file"
        );
    }

    #[test]
    fn damaged_answers_are_errors() {
        let mut out = Vec::new();
        assert_eq!(parse_batch(&[0, 0, 0], &mut out), Batch::More, "no header");
        let mut short = vec![0u8; 20];
        short[..4].copy_from_slice(&200u32.to_ne_bytes());
        assert_eq!(
            parse_batch(&short, &mut out),
            Batch::Error(crate::sys::Errno::EIO)
        );
        let mut done = vec![0u8; 20];
        done[..4].copy_from_slice(&20u32.to_ne_bytes());
        done[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        assert_eq!(parse_batch(&done, &mut out), Batch::Done);
        assert!(out.is_empty());
    }
}
