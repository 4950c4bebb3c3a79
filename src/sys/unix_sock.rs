//! Unix-domain sockets by raw number: socket, socketpair, bind, listen,
//! connect, accept4, shutdown, int options, and sendmsg/recvmsg carrying
//! SCM_RIGHTS.
//!
//! Dump copies a target's socket (pidfd_getfd) and peeks its receive queue
//! with [`recvmsg_peek`], taking the fds still in flight, and finds where
//! a stream's skb carrying fds starts with [`peek_whole_skbs`]; restore remakes
//! sockets in the new task, where nothing may allocate, so every wrapper
//! here is one raw syscall over stack memory and plain fd numbers.
//!
//! ```text
//!  sockaddr_un:   u16 sun_family (AF_UNIX) | sun_path[108]
//!                 path: bytes + NUL; abstract: NUL + name, length exact
//!  cmsghdr:       usize cmsg_len | i32 level | i32 type | data (aligned 8)
//!                 SCM_RIGHTS data: i32 fds[n], at most SCM_MAX_FD (253)
//! ```

use std::os::fd::{OwnedFd, RawFd};

use syscalls::{Sysno, syscall};

use super::SysResult;
use super::fd::own;

/// `AF_UNIX`.
pub const AF_UNIX: u32 = 1;
/// `SOCK_STREAM`.
pub const SOCK_STREAM: u32 = 1;
/// `SOCK_DGRAM`.
pub const SOCK_DGRAM: u32 = 2;
/// `SOCK_SEQPACKET`.
pub const SOCK_SEQPACKET: u32 = 5;
/// `SOCK_CLOEXEC`.
pub const SOCK_CLOEXEC: u32 = 0o2000000;
/// `SOL_SOCKET`.
pub const SOL_SOCKET: i32 = 1;
/// `SO_SNDBUF`.
pub const SO_SNDBUF: i32 = 7;
/// `SO_RCVBUF`.
pub const SO_RCVBUF: i32 = 8;
/// `SO_PASSCRED`.
pub const SO_PASSCRED: i32 = 16;
/// `SO_SNDBUFFORCE` (CAP_NET_ADMIN: past net.core.wmem_max).
pub const SO_SNDBUFFORCE: i32 = 32;
/// `SO_RCVBUFFORCE`.
pub const SO_RCVBUFFORCE: i32 = 33;
/// `SO_PEEK_OFF`.
pub const SO_PEEK_OFF: i32 = 42;
/// `SCM_RIGHTS`.
pub const SCM_RIGHTS: i32 = 1;
/// `SCM_MAX_FD`: the most fds one message carries.
pub const SCM_MAX_FD: usize = 253;
/// `MSG_OOB`.
pub const MSG_OOB: u32 = 1;
/// `MSG_PEEK`.
pub const MSG_PEEK: u32 = 2;
/// `MSG_TRUNC`.
pub const MSG_TRUNC: i32 = 0x20;
/// `MSG_CTRUNC`.
pub const MSG_CTRUNC: i32 = 8;
/// `MSG_DONTWAIT`.
pub const MSG_DONTWAIT: u32 = 0x40;
/// `MSG_NOSIGNAL`.
pub const MSG_NOSIGNAL: u32 = 0x4000;
/// `MSG_CMSG_CLOEXEC`.
pub const MSG_CMSG_CLOEXEC: u32 = 0x4000_0000;
/// Bytes of `sun_path`.
pub const UNIX_PATH_MAX: usize = 108;

/// A `struct sockaddr_un` and its length.
#[derive(Debug, Clone, Copy)]
pub struct SockAddrUn {
    raw: [u8; 2 + UNIX_PATH_MAX],
    len: u32,
}

impl SockAddrUn {
    /// The address of `name`: a path (no NUL inside), or an abstract name
    /// (starting with NUL). None when it does not fit `sun_path`.
    pub fn new(name: &[u8]) -> Option<SockAddrUn> {
        let abstract_ = name.first() == Some(&0);
        let need = name.len() + usize::from(!abstract_);
        if name.is_empty() || need > UNIX_PATH_MAX {
            return None;
        }
        let mut raw = [0u8; 2 + UNIX_PATH_MAX];
        raw[..2].copy_from_slice(&(AF_UNIX as u16).to_ne_bytes());
        raw[2..2 + name.len()].copy_from_slice(name);
        Some(SockAddrUn {
            raw,
            len: (2 + need) as u32,
        })
    }
}

/// unlinkat(AT_FDCWD, path, 0): removes a path socket's stale file.
pub fn unlink(path: &std::ffi::CStr) -> SysResult<()> {
    // SAFETY: `path` is NUL-terminated and outlives the call.
    unsafe { syscall!(Sysno::unlinkat, super::fd::AT_FDCWD, path.as_ptr(), 0) }.map(drop)
}

/// socket(AF_UNIX, `kind` | SOCK_CLOEXEC, 0).
pub fn socket(kind: u32) -> SysResult<RawFd> {
    // SAFETY: integers only.
    unsafe { syscall!(Sysno::socket, AF_UNIX, kind | SOCK_CLOEXEC, 0) }.map(|f| f as RawFd)
}

/// socketpair(AF_UNIX, `kind` | SOCK_CLOEXEC, 0).
pub fn socketpair(kind: u32) -> SysResult<(RawFd, RawFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: the kernel writes two ints into `fds`, which holds two ints.
    unsafe {
        syscall!(
            Sysno::socketpair,
            AF_UNIX,
            kind | SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr()
        )
    }?;
    Ok((fds[0], fds[1]))
}

/// bind(2).
pub fn bind(fd: RawFd, addr: &SockAddrUn) -> SysResult<()> {
    // SAFETY: the kernel reads `addr.len` (<= its size) bytes of `addr.raw`.
    unsafe { syscall!(Sysno::bind, fd, addr.raw.as_ptr(), addr.len) }.map(drop)
}

/// connect(2).
pub fn connect(fd: RawFd, addr: &SockAddrUn) -> SysResult<()> {
    // SAFETY: the kernel reads `addr.len` (<= its size) bytes of `addr.raw`.
    unsafe { syscall!(Sysno::connect, fd, addr.raw.as_ptr(), addr.len) }.map(drop)
}

/// listen(2).
pub fn listen(fd: RawFd, backlog: u32) -> SysResult<()> {
    // SAFETY: integers only.
    unsafe { syscall!(Sysno::listen, fd, backlog) }.map(drop)
}

/// accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK): a connection
/// already queued, or EAGAIN.
pub fn accept_queued(fd: RawFd) -> SysResult<RawFd> {
    /// `SOCK_NONBLOCK`.
    const SOCK_NONBLOCK: u32 = 0o4000;
    // SAFETY: no address is asked for (NULL pointers).
    unsafe { syscall!(Sysno::accept4, fd, 0, 0, SOCK_CLOEXEC | SOCK_NONBLOCK) }.map(|f| f as RawFd)
}

/// shutdown(2); `how` is SHUT_RD (0), SHUT_WR (1) or SHUT_RDWR (2).
pub fn shutdown(fd: RawFd, how: u32) -> SysResult<()> {
    // SAFETY: integers only.
    unsafe { syscall!(Sysno::shutdown, fd, how) }.map(drop)
}

/// setsockopt(SOL_SOCKET, `name`, int).
pub fn set_int(fd: RawFd, name: i32, val: i32) -> SysResult<()> {
    let v = val.to_ne_bytes();
    // SAFETY: the kernel reads 4 bytes from `v`.
    unsafe { syscall!(Sysno::setsockopt, fd, SOL_SOCKET, name, v.as_ptr(), 4) }.map(drop)
}

/// getsockopt(SOL_SOCKET, `name`) of an int option.
pub fn get_int(fd: RawFd, name: i32) -> SysResult<i32> {
    let mut v = [0u8; 4];
    let mut len = 4u32;
    // SAFETY: the kernel writes at most `len` (4) bytes into `v` and one
    // u32 into `len`.
    unsafe {
        syscall!(
            Sysno::getsockopt,
            fd,
            SOL_SOCKET,
            name,
            v.as_mut_ptr(),
            &mut len as *mut u32
        )
    }?;
    Ok(i32::from_ne_bytes(v))
}

/// Room for one SCM_RIGHTS message of SCM_MAX_FD fds, 8-aligned.
#[repr(C, align(8))]
struct Control([u8; 16 + 4 * SCM_MAX_FD + 8]);

/// sendmsg(fd, `data` + SCM_RIGHTS `fds` when not empty, `flags`): bytes
/// sent. At most [`SCM_MAX_FD`] fds (more is EINVAL).
pub fn sendmsg_fds(fd: RawFd, data: &[u8], fds: &[RawFd], flags: u32) -> SysResult<usize> {
    if fds.len() > SCM_MAX_FD {
        return Err(super::Errno::EINVAL);
    }
    let mut ctl = Control([0; 16 + 4 * SCM_MAX_FD + 8]);
    let clen = 16 + 4 * fds.len();
    ctl.0[..8].copy_from_slice(&(clen as u64).to_ne_bytes());
    ctl.0[8..12].copy_from_slice(&SOL_SOCKET.to_ne_bytes());
    ctl.0[12..16].copy_from_slice(&SCM_RIGHTS.to_ne_bytes());
    for (i, f) in fds.iter().enumerate() {
        ctl.0[16 + 4 * i..20 + 4 * i].copy_from_slice(&f.to_ne_bytes());
    }
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is valid (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = ctl.0.as_mut_ptr().cast();
        // musl declares msg_controllen as u32, glibc as usize.
        msg.msg_controllen = ((clen + 7) & !7) as _;
    }
    // SAFETY: the kernel reads `data` through the one iovec and `clen`
    // (rounded up, within `ctl`) bytes of control data; all outlive the call.
    unsafe { syscall!(Sysno::sendmsg, fd, &msg as *const libc::msghdr, flags) }
}

/// One message or stretch of bytes peeked from a socket.
#[derive(Debug)]
pub struct Peeked {
    /// Bytes copied into the buffer.
    pub len: usize,
    /// The message's flags (MSG_TRUNC, MSG_CTRUNC).
    pub flags: i32,
    /// The fds that came with it (copies installed in this process).
    pub fds: Vec<OwnedFd>,
}

/// recvmsg(fd, `buf`, MSG_PEEK | MSG_DONTWAIT | MSG_CMSG_CLOEXEC | `flags`):
/// what the next read would return, without taking it; fds in flight come
/// back as new fds of this process.
pub fn recvmsg_peek(fd: RawFd, buf: &mut [u8], flags: u32) -> SysResult<Peeked> {
    let mut iov = [libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    }];
    peek_iov(fd, &mut iov, flags)
}

/// How many bytes of a stream socket's queue, from its peek offset, lie
/// in whole skbs (one per sendmsg, or per chunk of a large one) that fit
/// in `buf`: a peek into `buf` followed by one byte of a PROT_NONE page.
/// The kernel copies an skb's stretch in one piece, so the copy reaching
/// that byte fails with EFAULT and the call returns what the earlier skbs
/// gave (0 when the first skb reaches it: EFAULT). Nothing is taken; the
/// peek offset moves by the returned count.
pub fn peek_whole_skbs(fd: RawFd, buf: &mut [u8]) -> SysResult<usize> {
    let page = super::mm::page_size();
    const PROT_NONE: u64 = 0;
    let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
    // SAFETY: a new private anonymous mapping that nothing else uses; it
    // is only passed to the kernel as a destination it cannot write to.
    let guard = unsafe { syscall!(Sysno::mmap, 0, page, PROT_NONE, flags, -1i64 as u64, 0) }?;
    let mut iov = [
        libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        },
        libc::iovec {
            iov_base: guard as *mut libc::c_void,
            iov_len: 1,
        },
    ];
    let got = peek_iov(fd, &mut iov, 0);
    // SAFETY: unmaps the page mapped above, which nothing refers to now.
    let _ = unsafe { syscall!(Sysno::munmap, guard, page) };
    match got {
        Ok(p) => Ok(p.len),
        Err(super::Errno::EFAULT) => Ok(0),
        Err(e) => Err(e),
    }
}

/// recvmsg with MSG_PEEK into `iov`, fds in flight taken as new fds.
fn peek_iov(fd: RawFd, iov: &mut [libc::iovec], flags: u32) -> SysResult<Peeked> {
    let mut ctl = Control([0; 16 + 4 * SCM_MAX_FD + 8]);
    // SAFETY: an all-zero msghdr is valid (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = iov.len() as _;
    msg.msg_control = ctl.0.as_mut_ptr().cast();
    msg.msg_controllen = ctl.0.len() as _;
    let all = MSG_PEEK | MSG_DONTWAIT | MSG_CMSG_CLOEXEC | flags;
    // SAFETY: the kernel writes at most each iovec's length through it
    // (the caller's buffers, or a page it cannot write), at most
    // `ctl.0.len()` bytes of control data, and the msghdr's lengths and
    // flags; all outlive the call.
    let n = unsafe { syscall!(Sysno::recvmsg, fd, &mut msg as *mut libc::msghdr, all) }?;
    let mut fds = Vec::new();
    let mut off = 0;
    let total = (msg.msg_controllen as usize).min(ctl.0.len());
    while off + 16 <= total {
        let word = |o: usize| [ctl.0[o], ctl.0[o + 1], ctl.0[o + 2], ctl.0[o + 3]];
        let mut len8 = [0u8; 8];
        len8.copy_from_slice(&ctl.0[off..off + 8]);
        let clen = (u64::from_ne_bytes(len8) as usize).min(total - off);
        let (level, kind) = (
            i32::from_ne_bytes(word(off + 8)),
            i32::from_ne_bytes(word(off + 12)),
        );
        if clen < 16 {
            break;
        }
        if level == SOL_SOCKET && kind == SCM_RIGHTS {
            for i in 0..(clen - 16) / 4 {
                let raw = i32::from_ne_bytes(word(off + 16 + 4 * i));
                fds.push(own(raw as usize));
            }
        }
        off += (clen + 7) & !7;
    }
    Ok(Peeked {
        len: n,
        flags: msg.msg_flags,
        fds,
    })
}

/// Takes ownership of a raw fd made by a wrapper here (for callers outside
/// install that want it closed on drop).
pub fn owned(fd: RawFd) -> OwnedFd {
    own(fd as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn peeking_finds_bytes_boundaries_and_fds_without_taking_them() {
        let (a, b) = socketpair(SOCK_SEQPACKET).unwrap();
        let (a, b) = (owned(a), owned(b));
        let (r, _w) = crate::sys::fd::pipe2(0).unwrap();
        let raw = [r.as_raw_fd()];
        assert_eq!(sendmsg_fds(b.as_raw_fd(), b"one", &[], 0), Ok(3));
        assert_eq!(sendmsg_fds(b.as_raw_fd(), b"two!", &raw, 0), Ok(4));
        set_int(a.as_raw_fd(), SO_PEEK_OFF, 0).unwrap();
        let mut buf = [0u8; 64];
        let p = recvmsg_peek(a.as_raw_fd(), &mut buf, 0).unwrap();
        assert_eq!((&buf[..p.len], p.fds.len()), (&b"one"[..], 0));
        let p = recvmsg_peek(a.as_raw_fd(), &mut buf, 0).unwrap();
        assert_eq!((&buf[..p.len], p.fds.len()), (&b"two!"[..], 1));
        let same = std::fs::metadata(format!("/proc/self/fd/{}", p.fds[0].as_raw_fd()));
        let orig = std::fs::metadata(format!("/proc/self/fd/{}", r.as_raw_fd()));
        use std::os::unix::fs::MetadataExt;
        assert_eq!(same.unwrap().ino(), orig.unwrap().ino(), "the same pipe");
        let again = recvmsg_peek(a.as_raw_fd(), &mut buf, 0);
        assert_eq!(again.err(), Some(super::super::Errno::EAGAIN));
        assert_eq!(get_int(a.as_raw_fd(), SO_PEEK_OFF), Ok(7));
        set_int(a.as_raw_fd(), SO_PEEK_OFF, -1).unwrap();
        let n = crate::sys::unix::recv(std::os::fd::AsFd::as_fd(&a), &mut buf, 0).unwrap();
        assert_eq!(&buf[..n], b"one", "still queued");
    }

    #[test]
    fn addresses_of_paths_and_abstract_names() {
        let p = SockAddrUn::new(b"/tmp/x").unwrap();
        assert_eq!(p.len, 2 + 6 + 1);
        let a = SockAddrUn::new(b"\0x").unwrap();
        assert_eq!(a.len, 2 + 2);
        assert!(SockAddrUn::new(&[b'a'; 108]).is_none());
        assert!(SockAddrUn::new(b"").is_none());
    }
}
