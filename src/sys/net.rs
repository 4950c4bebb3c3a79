//! Socket options: setsockopt/getsockopt with byte buffers, for TCP_REPAIR
//! and friends that std does not expose.

use std::os::fd::{AsRawFd, BorrowedFd};

use syscalls::{Sysno, syscall};

use super::SysResult;

/// `SOL_SOCKET`.
pub const SOL_SOCKET: i32 = 1;
/// `SO_LINGER`.
pub const SO_LINGER: i32 = 13;
/// `SOL_TCP` (IPPROTO_TCP).
pub const SOL_TCP: i32 = 6;
/// `TCP_REPAIR`.
pub const TCP_REPAIR: i32 = 19;
/// `TCP_REPAIR_QUEUE`.
pub const TCP_REPAIR_QUEUE: i32 = 20;
/// `TCP_QUEUE_SEQ`.
pub const TCP_QUEUE_SEQ: i32 = 21;
/// `TCP_REPAIR_WINDOW`.
pub const TCP_REPAIR_WINDOW: i32 = 29;
/// `TCP_SEND_QUEUE` (value of TCP_REPAIR_QUEUE).
pub const TCP_SEND_QUEUE: i32 = 2;

/// setsockopt(2) with `val` as the option value.
pub fn setsockopt(fd: BorrowedFd<'_>, level: i32, name: i32, val: &[u8]) -> SysResult<()> {
    // SAFETY: the kernel reads at most `val.len()` bytes from `val`.
    unsafe {
        syscall!(
            Sysno::setsockopt,
            fd.as_raw_fd(),
            level,
            name,
            val.as_ptr(),
            val.len()
        )
    }
    .map(drop)
}

/// setsockopt(2) of an int option.
pub fn setsockopt_int(fd: BorrowedFd<'_>, level: i32, name: i32, val: i32) -> SysResult<()> {
    setsockopt(fd, level, name, &val.to_ne_bytes())
}

/// getsockopt(2) into `buf`; returns the length the kernel reported.
pub fn getsockopt(fd: BorrowedFd<'_>, level: i32, name: i32, buf: &mut [u8]) -> SysResult<usize> {
    let mut len = buf.len() as u32;
    // SAFETY: the kernel writes at most `len` bytes into `buf` and one u32
    // into `len`.
    unsafe {
        syscall!(
            Sysno::getsockopt,
            fd.as_raw_fd(),
            level,
            name,
            buf.as_mut_ptr(),
            &mut len as *mut u32
        )
    }?;
    Ok(len as usize)
}

/// `AF_NETLINK`.
pub const AF_NETLINK: i32 = 16;
/// `NETLINK_SOCK_DIAG`.
pub const NETLINK_SOCK_DIAG: i32 = 4;
/// `SOCK_DGRAM`.
const SOCK_DGRAM: i32 = 2;
/// `SOCK_CLOEXEC`.
const SOCK_CLOEXEC: i32 = 0o2000000;

/// socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, `protocol`). Messages
/// written to it go to the kernel (the default destination).
pub fn netlink_socket(protocol: i32) -> SysResult<std::os::fd::OwnedFd> {
    // SAFETY: no pointers are passed.
    let fd = unsafe {
        syscall!(
            Sysno::socket,
            AF_NETLINK,
            SOCK_DGRAM | SOCK_CLOEXEC,
            protocol
        )
    }?;
    Ok(super::fd::own(fd))
}
