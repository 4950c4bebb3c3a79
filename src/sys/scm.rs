//! Passing descriptors between processes: sendmsg(2)/recvmsg(2) with one
//! SCM_RIGHTS control message, and ppoll(2) over several descriptors.
//!
//! The dirty tracker (dump::track::keeper) holds the only copy of a
//! target's userfaultfd between two crest runs and hands it over on a unix
//! socket; std has no stable API for ancillary data, so it is built here.
//!
//! ```text
//!  msghdr: name NULL | iov -> 1 byte | control -> cmsghdr
//!  cmsghdr (24 bytes): u64 len = 20 | i32 SOL_SOCKET | i32 SCM_RIGHTS | i32 fd | pad
//! ```

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use syscalls::{Sysno, syscall};

use super::SysResult;
use super::fd::own;

/// `SOL_SOCKET`.
const SOL_SOCKET: i32 = 1;
/// `SCM_RIGHTS`.
const SCM_RIGHTS: i32 = 1;
/// `MSG_CMSG_CLOEXEC`: received descriptors are close-on-exec.
const MSG_CMSG_CLOEXEC: u32 = 0x4000_0000;
/// `MSG_NOSIGNAL`.
const MSG_NOSIGNAL: u32 = 0x4000;
/// `POLLIN`.
const POLLIN: i16 = 1;
/// `POLLHUP`.
const POLLHUP: i16 = 0x10;

/// CMSG_SPACE(sizeof(int)) on 64-bit targets, as u64 words.
const CONTROL_WORDS: usize = 3;
/// CMSG_LEN(sizeof(int)).
const CMSG_LEN_ONE_FD: u64 = 20;

#[repr(C)]
struct IoVec {
    base: *mut u8,
    len: usize,
}

#[repr(C)]
struct MsgHdr {
    name: usize,
    namelen: u32,
    pad: u32,
    iov: *mut IoVec,
    iovlen: usize,
    control: *mut u64,
    controllen: usize,
    flags: i32,
    pad2: u32,
}

/// Sends one byte `tag` and, if given, a copy of `fd` on the connected
/// unix socket `sock`.
pub fn send_fd(sock: BorrowedFd<'_>, tag: u8, fd: Option<BorrowedFd<'_>>) -> SysResult<()> {
    let mut byte = [tag];
    let mut iov = IoVec {
        base: byte.as_mut_ptr(),
        len: 1,
    };
    let mut control = [0u64; CONTROL_WORDS];
    control[0] = CMSG_LEN_ONE_FD;
    control[1] = (SOL_SOCKET as u32 as u64) | ((SCM_RIGHTS as u32 as u64) << 32);
    let (ptr, len) = match fd {
        Some(f) => {
            control[2] = f.as_raw_fd() as u32 as u64;
            (control.as_mut_ptr(), CONTROL_WORDS * 8)
        }
        None => (std::ptr::null_mut(), 0),
    };
    let msg = MsgHdr {
        name: 0,
        namelen: 0,
        pad: 0,
        iov: &mut iov,
        iovlen: 1,
        control: ptr,
        controllen: len,
        flags: 0,
        pad2: 0,
    };
    // SAFETY: msg is a struct msghdr whose pointers name `iov` (one byte
    // of `byte`) and `control` (a cmsghdr with one int), all alive for the
    // call; the kernel only reads them.
    unsafe {
        syscall!(
            Sysno::sendmsg,
            sock.as_raw_fd(),
            &msg as *const MsgHdr,
            MSG_NOSIGNAL
        )
    }
    .map(drop)
}

/// Receives one byte and the descriptor sent with it, if any (close-on-exec).
/// Ok(None) at EOF.
pub fn recv_fd(sock: BorrowedFd<'_>) -> SysResult<Option<(u8, Option<OwnedFd>)>> {
    let mut byte = [0u8];
    let mut iov = IoVec {
        base: byte.as_mut_ptr(),
        len: 1,
    };
    let mut control = [0u64; CONTROL_WORDS];
    let mut msg = MsgHdr {
        name: 0,
        namelen: 0,
        pad: 0,
        iov: &mut iov,
        iovlen: 1,
        control: control.as_mut_ptr(),
        controllen: CONTROL_WORDS * 8,
        flags: 0,
        pad2: 0,
    };
    // SAFETY: as in send_fd; the kernel writes at most one byte into
    // `byte` and at most `controllen` bytes into `control`.
    let n = unsafe {
        syscall!(
            Sysno::recvmsg,
            sock.as_raw_fd(),
            &mut msg as *mut MsgHdr,
            MSG_CMSG_CLOEXEC
        )
    }?;
    if n == 0 {
        return Ok(None);
    }
    let level_type = (SOL_SOCKET as u32 as u64) | ((SCM_RIGHTS as u32 as u64) << 32);
    let fd = (msg.controllen >= CMSG_LEN_ONE_FD as usize
        && control[0] == CMSG_LEN_ONE_FD
        && control[1] == level_type)
        .then(|| own(control[2] as u32 as usize));
    Ok(Some((byte[0], fd)))
}

/// ppoll(2) on `fds` for input or hangup; which are ready (all false on
/// timeout). `None` waits forever.
pub fn poll_ready(fds: &[BorrowedFd<'_>], timeout: Option<Duration>) -> SysResult<Vec<bool>> {
    #[repr(C)]
    struct PollFd {
        fd: i32,
        events: i16,
        revents: i16,
    }
    let mut pfds: Vec<PollFd> = fds
        .iter()
        .map(|f| PollFd {
            fd: f.as_raw_fd(),
            events: POLLIN,
            revents: 0,
        })
        .collect();
    let ts = timeout.map(|t| [t.as_secs() as i64, i64::from(t.subsec_nanos())]);
    let tsp = ts.as_ref().map_or(std::ptr::null(), |t| t.as_ptr());
    // SAFETY: `pfds` holds pfds.len() pollfds; `tsp` is NULL or a struct
    // timespec (two longs); the sigmask pointer is NULL.
    unsafe { syscall!(Sysno::ppoll, pfds.as_mut_ptr(), pfds.len(), tsp, 0, 8) }?;
    Ok(pfds
        .iter()
        .map(|p| p.revents & (POLLIN | POLLHUP) != 0 || p.revents != 0)
        .collect())
}

/// close(2) of every descriptor of this process except `keep` (for a
/// process forked to run on its own, which must not hold its parent's
/// pipes open).
pub fn close_all_except(keep: &[i32]) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| !keep.contains(fd))
        .collect();
    for fd in fds {
        // SAFETY: no pointers; closing a descriptor nothing in this process
        // uses any more (the caller keeps what it needs in `keep`); the
        // read_dir's own fd is already closed and gives EBADF.
        let _ = unsafe { syscall!(Sysno::close, fd) };
    }
}

/// SO_PEERCRED of a connected unix socket: the peer's (pid, uid, gid).
pub fn peer_cred(sock: BorrowedFd<'_>) -> SysResult<(i32, u32, u32)> {
    const SO_PEERCRED: i32 = 17;
    let mut cred = [0u32; 3];
    let mut len: u32 = 12;
    // SAFETY: the kernel writes at most `len` (12) bytes, a struct ucred
    // of three 32-bit fields, into `cred`, and the length into `len`.
    unsafe {
        syscall!(
            Sysno::getsockopt,
            sock.as_raw_fd(),
            SOL_SOCKET,
            SO_PEERCRED,
            cred.as_mut_ptr(),
            &mut len as *mut u32
        )
    }?;
    Ok((cred[0] as i32, cred[1], cred[2]))
}
