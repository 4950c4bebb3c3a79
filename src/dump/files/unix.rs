//! Unix sockets of a process: what unix_diag tells about each (type, state,
//! name, file, peer, pending connections, shutdown bits) and the options
//! read through a copy of the socket (pidfd_getfd, then getsockopt). The
//! receive queues are [`super::unix_queue`]'s.
//!
//! A peer outside the dumped tree is refused, naming the fd, both inodes
//! and the holder of the peer, unless `--external unix[INO]` allows it.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::dump::gone_or;
use crate::error::{Error, Result};
use crate::image::files::{Fd, FdFile, UnixPeer, UnixQueue, UnixSocket};
use crate::sys::process::{KCMP_FILE, pidfd_getfd, pidfd_open};
use crate::sys::unix_diag::{self, TCP_ESTABLISHED, TCP_LISTEN, UnixDiag};
use crate::sys::unix_sock::{self, SO_PASSCRED, SO_PEEK_OFF, SO_RCVBUF, SO_SNDBUF, SOCK_DGRAM};

/// What unix_diag showed, fetched once per process on its first socket.
pub type DiagCache = Option<Vec<UnixDiag>>;

/// The socket inode of a `socket:[N]` link target.
pub fn socket_ino(target: &[u8]) -> Option<u64> {
    let inner = target.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(inner).ok()?.parse().ok()
}

/// The fd record of a unix socket, or None when `target` is no unix
/// socket crest can see (another kind of socket, or another network
/// namespace): the caller refuses it by kind.
pub fn collect(
    pid: u32,
    fd: i32,
    target: &[u8],
    flags: u32,
    cache: &mut DiagCache,
) -> Result<Option<FdFile>> {
    let Some(ino) = socket_ino(target) else {
        return Ok(None);
    };
    if cache.is_none() {
        let all = unix_diag::dump_all()
            .map_err(|e| Error::sys("sock_diag", "listing unix sockets (unix_diag)", e))?;
        *cache = Some(all);
    }
    let all = cache.as_deref().unwrap_or_default();
    let Some(d) = all.iter().find(|d| u64::from(d.ino) == ino) else {
        return Ok(None);
    };
    let copy = copy_fd(pid, fd)?;
    let opt = |name, what: &str| {
        unix_sock::get_int(copy.as_raw_fd(), name).map_err(|e| {
            Error::sys(
                "getsockopt",
                format!("reading {what} of fd {fd} of pid {pid}"),
                e,
            )
        })
    };
    Ok(Some(FdFile::Unix(UnixSocket {
        flags,
        ino,
        kind: d.kind,
        state: d.state,
        name: name_of(d),
        file: d.vfs.map_or((0, 0), |(i, dev)| (i.into(), dev.into())),
        peer: peer_of(d, all),
        shutdown: d.shutdown,
        backlog: if d.state == TCP_LISTEN { d.rqlen.1 } else { 0 },
        sndbuf: opt(SO_SNDBUF, "SO_SNDBUF")? as u32,
        rcvbuf: opt(SO_RCVBUF, "SO_RCVBUF")? as u32,
        passcred: opt(SO_PASSCRED, "SO_PASSCRED")? != 0,
        peek_off: opt(SO_PEEK_OFF, "SO_PEEK_OFF")?,
    })))
}

/// The name without the NUL the kernel keeps after a path.
fn name_of(d: &UnixDiag) -> Vec<u8> {
    let mut n = d.name.clone().unwrap_or_default();
    if n.first() != Some(&0) {
        while n.last() == Some(&0) {
            n.pop();
        }
    }
    n
}

/// The peer as far as unix_diag tells; whether it is in the tree is
/// decided by [`check_peers`].
fn peer_of(d: &UnixDiag, all: &[UnixDiag]) -> UnixPeer {
    if d.peer != 0 {
        return UnixPeer::Socket(d.peer.into());
    }
    if d.state != TCP_ESTABLISHED || u32::from(d.kind) == SOCK_DGRAM {
        return UnixPeer::None;
    }
    // A connection not accepted yet: its peer is the listener's embryo,
    // which has no file; the listener names the client among its icons.
    match all
        .iter()
        .find(|l| l.state == TCP_LISTEN && l.icons.contains(&d.ino))
    {
        Some(l) => UnixPeer::Pending(l.ino.into()),
        None => UnixPeer::Gone,
    }
}

/// A copy of fd `fd` of `pid` in crest.
pub(super) fn copy_fd(pid: u32, fd: i32) -> Result<OwnedFd> {
    let ctx = || format!("taking a copy of socket fd {fd} of pid {pid}");
    let pidfd =
        pidfd_open(pid as i32).map_err(|e| gone_or(pid, Error::sys("pidfd_open", ctx(), e)))?;
    pidfd_getfd(std::os::fd::AsFd::as_fd(&pidfd), fd)
        .map_err(|e| gone_or(pid, Error::sys("pidfd_getfd", ctx(), e)))
}

/// The fd of a frozen process of the tree (one crest traces) whose open
/// file is `copy`'s (a file in flight crest received), `first`'s fds
/// looked at first: only fds on the same inode are compared (kcmp).
pub(super) fn file_holder(copy: RawFd, first: u32) -> Option<(u32, i32)> {
    use std::os::unix::fs::MetadataExt;
    let me = std::process::id();
    let want = std::fs::metadata(format!("/proc/self/fd/{copy}")).ok()?;
    let others = std::fs::read_dir("/proc").ok()?.flatten().filter_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        (pid != first && pid != me && traced_by(pid, me)).then_some(pid)
    });
    for pid in std::iter::once(first).chain(others) {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for e in fds.flatten() {
            let Some(fd) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            let same_inode = std::fs::metadata(e.path())
                .is_ok_and(|m| (m.dev(), m.ino()) == (want.dev(), want.ino()));
            let kcmp = || {
                crate::sys::process::kcmp(me as i32, pid as i32, KCMP_FILE, copy as u64, fd as u64)
            };
            if same_inode && kcmp() == Ok(0) {
                return Some((pid, fd));
            }
        }
    }
    None
}

/// Whether a thread of process `me` traces `pid` (a frozen member of the
/// dumped tree).
fn traced_by(pid: u32, me: u32) -> bool {
    let field = |pid: u32, name: &str| -> Option<u32> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = text.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].trim().parse().ok()
    };
    match field(pid, "TracerPid:") {
        None | Some(0) => false,
        Some(t) => t == me || field(t, "Tgid:") == Some(me),
    }
}

/// `--external` values: the socket inodes `unix[INO]` names.
pub fn parse_external(values: &[String]) -> Result<Vec<u64>> {
    values
        .iter()
        .map(|v| {
            v.strip_prefix("unix[")
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| {
                    Error::Usage(format!(
                        "bad --external `{v}`: crest knows unix[INO], a unix socket by its inode (see `ss -xp`)"
                    ))
                })
        })
        .collect()
}

/// The inodes of every socket the processes `pids` hold.
pub fn tree_sockets(pids: &[u32]) -> Vec<u64> {
    let mut out = Vec::new();
    for pid in pids {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for e in dir.flatten() {
            if let Ok(t) = std::fs::read_link(e.path())
                && let Some(i) = socket_ino(t.as_os_str().as_encoded_bytes())
            {
                out.push(i);
            }
        }
    }
    out
}

/// Which process holds socket `ino`, for a refusal.
pub(crate) fn holder(ino: u64) -> String {
    let want = format!("socket:[{ino}]");
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return "no process crest can see".into();
    };
    for p in procs.flatten() {
        let name = p.file_name();
        let Some(pid) = name.to_str().filter(|n| n.parse::<u32>().is_ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        if fds
            .flatten()
            .any(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.as_os_str() == want.as_str()))
        {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            return format!("pid {pid} (`{}`)", comm.trim());
        }
    }
    "no process (it may be passed around in a socket)".into()
}

/// Refuses a socket whose peer (or listener) is outside the tree
/// (`tree`: every socket inode the tree holds) unless `external` names
/// it; an allowed one becomes [`UnixPeer::External`] with its name.
pub fn check_peers(pid: u32, fds: &mut [Fd], tree: &[u64], external: &[u64]) -> Result<()> {
    let mut cache: DiagCache = None;
    for f in fds.iter_mut() {
        let FdFile::Unix(s) = &mut f.file else {
            continue;
        };
        let (UnixPeer::Socket(peer) | UnixPeer::Pending(peer)) = s.peer else {
            continue;
        };
        if tree.contains(&peer) {
            continue;
        }
        if !external.contains(&peer) {
            let what = match s.peer {
                UnixPeer::Pending(_) => "waits to be accepted by the listening socket",
                _ => "is connected to",
            };
            return Err(Error::Unsupported(format!(
                "fd {} of pid {pid} is unix socket socket:[{}], which {what} socket:[{peer}] outside the dumped tree (held by {}); dump a tree that holds both, or allow it with --external unix[{peer}]",
                f.fd,
                s.ino,
                holder(peer)
            )));
        }
        if cache.is_none() {
            cache = Some(
                unix_diag::dump_all()
                    .map_err(|e| Error::sys("sock_diag", "listing unix sockets (unix_diag)", e))?,
            );
        }
        let d = cache
            .as_deref()
            .unwrap_or_default()
            .iter()
            .find(|d| u64::from(d.ino) == peer);
        s.peer = UnixPeer::External(peer, d.map(name_of).unwrap_or_default());
    }
    Ok(())
}

/// The sockets in flight in `queues`.
pub fn in_flight_sockets(queues: &[UnixQueue]) -> impl Iterator<Item = &UnixSocket> {
    queues
        .iter()
        .flat_map(|q| q.messages.iter().flat_map(|m| m.fds.iter()))
        .filter_map(|f| match f {
            FdFile::Unix(s) => Some(s),
            _ => None,
        })
}

/// Refuses a socket in flight whose peer is neither in the tree nor in
/// flight itself (`known`): crest cannot name such a peer at restore.
pub fn check_in_flight_peers(pid: u32, queues: &[UnixQueue], known: &[u64]) -> Result<()> {
    for s in in_flight_sockets(queues) {
        if let UnixPeer::Socket(p) | UnixPeer::Pending(p) = s.peer
            && !known.contains(&p)
        {
            return Err(Error::Unsupported(format!(
                "pid {pid} has unix socket socket:[{}] in flight in an SCM_RIGHTS message, connected to socket:[{p}] outside the dumped tree (held by {}); crest cannot restore that peer",
                s.ino,
                holder(p)
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inodes_and_external_values() {
        assert_eq!(socket_ino(b"socket:[12345]"), Some(12345));
        assert_eq!(socket_ino(b"pipe:[12345]"), None);
        assert_eq!(socket_ino(b"socket:[x]"), None);
        let ok = parse_external(&["unix[7]".into(), "unix[99]".into()]).unwrap();
        assert_eq!(ok, vec![7, 99]);
        assert!(parse_external(&["tcp[1]".into()]).is_err());
        assert!(parse_external(&["unix[]".into()]).is_err());
    }
}
