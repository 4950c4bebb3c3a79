//! Probe of sock_diag (NETLINK_SOCK_DIAG): how dump finds the peer, state
//! and queues of every socket a task holds, looked up by inode number.
//!
//! ```text
//! nlmsghdr (16)        len u32 | type u16 | flags u16 | seq u32 | pid u32
//! unix_diag_req (24)   family u8 | protocol u8 | pad u16 | states u32 |
//!                      ino u32 | show u32 | cookie u32[2]
//! unix_diag_msg        family u8 | type u8 | state u8 | pad u8 | ino u32 ...
//! inet_diag_req_v2 (56) family u8 | protocol u8 | ext u8 | pad u8 | states u32 |
//!                      sockid: sport be16 | dport be16 | src be32[4] |
//!                              dst be32[4] | if u32 | cookie u32[2]
//! inet_diag_msg        family, state, timer, retrans (u8 each) | sockid (48) |
//!                      expires | rqueue | wqueue | uid | inode (u32 each, @68)
//! ```

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;

use crate::sys::net::{NETLINK_SOCK_DIAG, netlink_socket};
use crate::sys::{Errno, fd};

use super::probe::{Fail, ProbeResult, SysExt, expect};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const AF_UNIX: u8 = 1;
const AF_INET: u8 = 2;
const IPPROTO_TCP: u8 = 6;

/// The inode of a socket descriptor, from its /proc/self/fd link `socket:[N]`.
fn socket_inode(raw: i32) -> Result<u32, Fail> {
    let link = std::fs::read_link(format!("/proc/self/fd/{raw}")).ctx("readlink(/proc/self/fd)")?;
    let s = link.to_string_lossy();
    s.strip_prefix("socket:[")
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| Fail::error(format!("descriptor {raw} links to {s}, not a socket")))
}

/// Sends one SOCK_DIAG_BY_FAMILY request and returns the payload of the
/// single answer, or the errno of an NLMSG_ERROR.
fn lookup(req: &[u8], family: &str) -> Result<Vec<u8>, Fail> {
    let sk = netlink_socket(NETLINK_SOCK_DIAG).ctx("socket(NETLINK_SOCK_DIAG)")?;
    let mut msg = Vec::with_capacity(16 + req.len());
    msg.extend_from_slice(&((16 + req.len()) as u32).to_ne_bytes());
    msg.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    msg.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    msg.extend_from_slice(&[0u8; 8]); // seq, pid
    msg.extend_from_slice(req);
    fd::write(sk.as_fd(), &msg).ctx("send(sock_diag)")?;
    let mut buf = vec![0u8; 8192];
    let n = fd::read(sk.as_fd(), &mut buf).ctx("recv(sock_diag)")?;
    let le = |o: usize| u32::from_ne_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3]]);
    expect(n >= 20 && le(0) as usize <= n, || {
        format!("short sock_diag answer of {n} bytes")
    })?;
    let kind = u16::from_ne_bytes([buf[4], buf[5]]);
    if kind == NLMSG_ERROR {
        let err = Errno::new(-(le(16) as i32));
        if err == Errno::ENOENT {
            // The kernel has no handler for this family: the *_diag module
            // is neither built in nor loaded.
            return Err(Fail::missing(format!(
                "sock_diag has no handler for {family}"
            )));
        }
        return Err(Fail::from_errno("sock_diag", err));
    }
    expect(kind == SOCK_DIAG_BY_FAMILY, || {
        format!("sock_diag answered with message type {kind}")
    })?;
    Ok(buf[16..le(0) as usize].to_vec())
}

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    b.get(o..o + 4)
        .map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
}

fn unix_by_inode() -> Result<(), Fail> {
    let (a, _b) = UnixStream::pair().ctx("socketpair(AF_UNIX)")?;
    let ino = socket_inode(a.as_raw_fd())?;
    let mut req = vec![AF_UNIX, 0, 0, 0];
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    req.extend_from_slice(&ino.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes()); // show nothing extra
    req.extend_from_slice(&[0xff; 8]); // INET_DIAG_NOCOOKIE
    let got = u32_at(&lookup(&req, "AF_UNIX (unix_diag not loaded)")?, 4);
    expect(got == Some(ino), || {
        format!("unix_diag returned inode {got:?}, asked for {ino}")
    })
}

fn tcp_by_inode() -> Result<(), Fail> {
    let (client, _server) = super::net::connected()?;
    super::net::no_linger(&client)?;
    let ino = socket_inode(client.as_raw_fd())?;
    let (src, dst) = (
        client.local_addr().ctx("getsockname")?,
        client.peer_addr().ctx("getpeername")?,
    );
    let mut req = vec![AF_INET, IPPROTO_TCP, 0, 0];
    req.extend_from_slice(&u32::MAX.to_ne_bytes());
    req.extend_from_slice(&src.port().to_be_bytes());
    req.extend_from_slice(&dst.port().to_be_bytes());
    for addr in [src, dst] {
        req.extend_from_slice(&v4(addr));
        req.extend_from_slice(&[0; 12]);
    }
    req.extend_from_slice(&0u32.to_ne_bytes()); // any interface
    req.extend_from_slice(&[0xff; 8]); // INET_DIAG_NOCOOKIE
    let got = u32_at(&lookup(&req, "TCP (inet_diag/tcp_diag not loaded)")?, 68);
    expect(got == Some(ino), || {
        format!("inet_diag returned inode {got:?}, asked for {ino}")
    })
}

fn v4(a: SocketAddr) -> [u8; 4] {
    match a.ip() {
        IpAddr::V4(ip) => ip.octets(),
        IpAddr::V6(_) => [0; 4],
    }
}

/// unix_diag and inet_diag find a socket of ours by its addresses/inode.
pub fn sock_diag() -> ProbeResult {
    unix_by_inode()?;
    tcp_by_inode()?;
    Ok("unix and tcp sockets looked up by inode".into())
}
