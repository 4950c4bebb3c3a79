//! Unix-domain sockets: socketpair(2) and message send/receive with flags
//! (sendto/recvfrom without an address), for the parasite's command socket.
//!
//! std's `UnixDatagram` has no SOCK_SEQPACKET and no way to pass
//! `MSG_NOSIGNAL`; crest needs both: one command is one message, and a
//! parasite that went away must be an `EPIPE`, not a SIGPIPE to crest.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use syscalls::{Sysno, syscall};

use super::SysResult;
use super::fd::own;

/// `AF_UNIX`.
pub const AF_UNIX: u32 = 1;
/// `SOCK_SEQPACKET`: connected, reliable, message boundaries kept.
pub const SOCK_SEQPACKET: u32 = 5;
/// `SOCK_CLOEXEC` (= O_CLOEXEC on x86_64 and aarch64).
pub const SOCK_CLOEXEC: u32 = 0o2000000;
/// `MSG_DONTWAIT`: fail with EAGAIN instead of blocking.
pub const MSG_DONTWAIT: u32 = 0x40;
/// `MSG_NOSIGNAL`: EPIPE instead of SIGPIPE when the peer is gone.
pub const MSG_NOSIGNAL: u32 = 0x4000;

/// socketpair(AF_UNIX, `kind`, 0): the two connected ends.
pub fn socketpair(kind: u32) -> SysResult<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: the kernel writes two ints into `fds`, which holds two ints.
    unsafe { syscall!(Sysno::socketpair, AF_UNIX, kind, 0, fds.as_mut_ptr()) }?;
    Ok((own(fds[0] as usize), own(fds[1] as usize)))
}

/// sendto(fd, buf, flags, NULL, 0) on a connected socket: bytes sent.
pub fn send(fd: BorrowedFd<'_>, buf: &[u8], flags: u32) -> SysResult<usize> {
    // SAFETY: the kernel reads at most `buf.len()` bytes from `buf`; no
    // address is passed.
    unsafe {
        syscall!(
            Sysno::sendto,
            fd.as_raw_fd(),
            buf.as_ptr(),
            buf.len(),
            flags,
            0,
            0
        )
    }
}

/// recvfrom(fd, buf, flags, NULL, NULL): bytes received, 0 at EOF. On a
/// SOCK_SEQPACKET socket one call takes one whole message (the part that
/// does not fit `buf` is dropped).
pub fn recv(fd: BorrowedFd<'_>, buf: &mut [u8], flags: u32) -> SysResult<usize> {
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`; no
    // address is asked for.
    unsafe {
        syscall!(
            Sysno::recvfrom,
            fd.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
            flags,
            0,
            0
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn seqpacket_keeps_messages_and_reports_a_closed_peer() {
        let (a, b) = socketpair(SOCK_SEQPACKET | SOCK_CLOEXEC).unwrap();
        assert_eq!(send(a.as_fd(), b"one", MSG_NOSIGNAL), Ok(3));
        assert_eq!(send(a.as_fd(), b"second", MSG_NOSIGNAL), Ok(6));
        let mut buf = [0u8; 16];
        assert_eq!(recv(b.as_fd(), &mut buf, 0), Ok(3), "one message");
        assert_eq!(&buf[..3], b"one");
        assert_eq!(recv(b.as_fd(), &mut buf, 0), Ok(6));
        assert_eq!(&buf[..6], b"second");
        let empty = recv(b.as_fd(), &mut buf, MSG_DONTWAIT);
        assert_eq!(empty, Err(crate::sys::Errno::EAGAIN));
        drop(a);
        assert_eq!(recv(b.as_fd(), &mut buf, 0), Ok(0), "EOF");
        let sent = send(b.as_fd(), b"x", MSG_NOSIGNAL);
        assert_eq!(sent, Err(crate::sys::Errno::EPIPE), "no SIGPIPE");
    }
}
