//! File descriptors: pipes, raw read/write, openat, ppoll, eventfd, epoll and
//! the generic ioctl entry point.
//!
//! These are the async-signal-safe building blocks a forked probe child may
//! use (no allocation, no locks), and the owned-descriptor plumbing the rest
//! of crest builds on.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use syscalls::{Sysno, syscall};

use super::SysResult;

/// `O_CLOEXEC` (uapi asm-generic/fcntl.h; the same value on x86_64 and aarch64).
pub const O_CLOEXEC: u32 = 0o2000000;
/// `O_NONBLOCK`.
pub const O_NONBLOCK: u32 = 0o4000;
/// `O_RDONLY`.
pub const O_RDONLY: u32 = 0;
/// `O_WRONLY`.
pub const O_WRONLY: u32 = 1;
/// `O_RDWR`.
pub const O_RDWR: u32 = 2;
/// `AT_FDCWD`: resolve relative paths against the working directory.
pub const AT_FDCWD: i32 = -100;
/// `EPOLL_CTL_ADD`.
pub const EPOLL_CTL_ADD: u32 = 1;
/// `EPOLLIN`.
pub const EPOLLIN: u32 = 1;
/// `POLLIN` for ppoll.
const POLLIN: i16 = 1;

/// Takes ownership of a descriptor a syscall just returned.
pub(crate) fn own(raw: usize) -> OwnedFd {
    // SAFETY: `raw` was just returned by a successful syscall that creates a
    // new descriptor, so nothing else owns it and it is open.
    unsafe { OwnedFd::from_raw_fd(raw as RawFd) }
}

/// pipe2(2): returns (read end, write end).
pub fn pipe2(flags: u32) -> SysResult<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: the kernel writes two ints into `fds`, which holds two ints.
    unsafe { syscall!(Sysno::pipe2, fds.as_mut_ptr(), flags) }?;
    Ok((own(fds[0] as usize), own(fds[1] as usize)))
}

/// read(2) into `buf`; returns the number of bytes read.
pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> SysResult<usize> {
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
    unsafe { syscall!(Sysno::read, fd.as_raw_fd(), buf.as_mut_ptr(), buf.len()) }
}

/// write(2) from `buf`; returns the number of bytes written.
pub fn write(fd: BorrowedFd<'_>, buf: &[u8]) -> SysResult<usize> {
    // SAFETY: the kernel reads at most `buf.len()` bytes from `buf`.
    unsafe { syscall!(Sysno::write, fd.as_raw_fd(), buf.as_ptr(), buf.len()) }
}

/// openat(2) relative to the working directory. Allocation-free, so a
/// forked child may use it.
pub fn openat(path: &CStr, flags: u32) -> SysResult<OwnedFd> {
    // SAFETY: `path` is NUL-terminated and outlives the call.
    let fd = unsafe { syscall!(Sysno::openat, AT_FDCWD, path.as_ptr(), flags | O_CLOEXEC, 0) }?;
    Ok(own(fd))
}

/// `PROC_SUPER_MAGIC`: statfs's f_type for procfs.
const PROC_SUPER_MAGIC: i64 = 0x9fa0;

/// Whether `path` lies on a procfs (statfs(2) f_type).
pub fn is_procfs(path: &CStr) -> SysResult<bool> {
    // struct statfs on x86_64 and aarch64: 120 bytes, f_type the first
    // 8-byte field.
    let mut buf = [0u64; 15];
    // SAFETY: `path` is NUL-terminated; the kernel writes one struct statfs
    // (120 bytes on both architectures) into `buf`, which holds 120 bytes.
    unsafe { syscall!(Sysno::statfs, path.as_ptr(), buf.as_mut_ptr()) }?;
    Ok(buf[0] as i64 == PROC_SUPER_MAGIC)
}

/// ftruncate(2).
pub fn ftruncate(fd: BorrowedFd<'_>, len: u64) -> SysResult<()> {
    // SAFETY: no pointers are passed.
    unsafe { syscall!(Sysno::ftruncate, fd.as_raw_fd(), len) }.map(drop)
}

/// fcntl(F_DUPFD_CLOEXEC): a second descriptor for the same open file.
pub fn dup_cloexec(fd: BorrowedFd<'_>) -> SysResult<OwnedFd> {
    const F_DUPFD_CLOEXEC: u32 = 1030;
    // SAFETY: no pointers are passed.
    let new = unsafe { syscall!(Sysno::fcntl, fd.as_raw_fd(), F_DUPFD_CLOEXEC, 0) }?;
    Ok(own(new))
}

/// ppoll(2) for readability of one descriptor; Ok(false) on timeout.
pub fn ppoll_readable(fd: BorrowedFd<'_>, timeout: Duration) -> SysResult<bool> {
    ppoll_one(fd.as_raw_fd(), POLLIN, timeout)
}

/// ppoll(2) of one descriptor for `events` (POLLHUP and POLLERR are always
/// reported); whether it is ready within `timeout`.
pub(crate) fn ppoll_one(fd: RawFd, events: i16, timeout: Duration) -> SysResult<bool> {
    #[repr(C)]
    struct PollFd {
        fd: i32,
        events: i16,
        revents: i16,
    }
    let mut pfd = PollFd {
        fd,
        events,
        revents: 0,
    };
    let ts = [timeout.as_secs() as i64, i64::from(timeout.subsec_nanos())];
    // SAFETY: `pfd` is one pollfd and `ts` a struct timespec (two longs on
    // both 64-bit targets); the sigmask pointer is NULL.
    let n = unsafe { syscall!(Sysno::ppoll, &mut pfd as *mut PollFd, 1, ts.as_ptr(), 0, 8) }?;
    Ok(n > 0)
}

/// eventfd2(2).
pub fn eventfd2(initval: u32, flags: u32) -> SysResult<OwnedFd> {
    // SAFETY: no pointers are passed.
    let fd = unsafe { syscall!(Sysno::eventfd2, initval, flags | O_CLOEXEC) }?;
    Ok(own(fd))
}

/// epoll_create1(2).
pub fn epoll_create1() -> SysResult<OwnedFd> {
    // SAFETY: no pointers are passed.
    let fd = unsafe { syscall!(Sysno::epoll_create1, O_CLOEXEC) }?;
    Ok(own(fd))
}

/// epoll_ctl(EPOLL_CTL_ADD) of `target` for `events`.
pub fn epoll_ctl_add(epfd: BorrowedFd<'_>, target: BorrowedFd<'_>, events: u32) -> SysResult<()> {
    // struct epoll_event is packed on x86_64 (12 bytes) and naturally aligned
    // (16 bytes) on aarch64.
    #[cfg_attr(target_arch = "x86_64", repr(C, packed))]
    #[cfg_attr(not(target_arch = "x86_64"), repr(C))]
    struct EpollEvent {
        events: u32,
        data: u64,
    }
    let ev = EpollEvent { events, data: 0 };
    // SAFETY: `ev` is a struct epoll_event the kernel only reads.
    unsafe {
        syscall!(
            Sysno::epoll_ctl,
            epfd.as_raw_fd(),
            EPOLL_CTL_ADD,
            target.as_raw_fd(),
            &ev as *const EpollEvent
        )
    }
    .map(drop)
}

/// ioctl(2) whose argument is a pointer to `T`.
///
/// # Safety
/// `request` must be one whose argument is a `T` (or shorter) the kernel may
/// read and write, and any pointers inside `*arg` must point to memory valid
/// for what that request does with them.
pub unsafe fn ioctl_ptr<T>(fd: BorrowedFd<'_>, request: u64, arg: &mut T) -> SysResult<usize> {
    // SAFETY: the caller guarantees `request` matches `T`.
    unsafe { syscall!(Sysno::ioctl, fd.as_raw_fd(), request, arg as *mut T) }
}
