//! The fd table of the calling process: dup3, fcntl's descriptor and status
//! flags, lseek, close_range, chdir, chroot and the RLIMIT_NOFILE that bounds
//! fd numbers.
//!
//! Restore rebuilds a task's fd table in the new task itself, after clone3
//! and before the restorer blob, possibly in a child forked from a threaded
//! process (the tests): every wrapper here is one raw syscall with no
//! allocation, so it is async-signal-safe. Descriptors are plain numbers
//! (`RawFd`) because the point is to place them at given numbers and to close
//! whole ranges, which `OwnedFd` cannot express.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use syscalls::{Sysno, syscall};

use super::SysResult;

/// `F_DUPFD_CLOEXEC`.
pub const F_DUPFD_CLOEXEC: u32 = 1030;
/// `F_GETFD`.
pub const F_GETFD: u32 = 1;
/// `F_SETFD`.
pub const F_SETFD: u32 = 2;
/// `F_GETFL`.
pub const F_GETFL: u32 = 3;
/// `F_SETFL`.
pub const F_SETFL: u32 = 4;
/// `FD_CLOEXEC`.
pub const FD_CLOEXEC: u32 = 1;
/// `SEEK_SET`.
pub const SEEK_SET: u32 = 0;
/// `SEEK_CUR`.
pub const SEEK_CUR: u32 = 1;

/// dup3(2): makes `new` a copy of `old`, closing what `new` was; `flags` is
/// 0 or `O_CLOEXEC`. `old` and `new` must differ.
pub fn dup3(old: RawFd, new: RawFd, flags: u32) -> SysResult<RawFd> {
    // SAFETY: integers only; replacing `new` is what the caller asks for.
    unsafe { syscall!(Sysno::dup3, old, new, flags) }.map(|fd| fd as RawFd)
}

/// fcntl(F_DUPFD_CLOEXEC, min): a copy of `fd` at the lowest free number
/// `>= min`.
pub fn dup_at_least(fd: RawFd, min: RawFd) -> SysResult<RawFd> {
    // SAFETY: integers only.
    unsafe { syscall!(Sysno::fcntl, fd, F_DUPFD_CLOEXEC, min) }.map(|fd| fd as RawFd)
}

/// fcntl(F_GETFD): the descriptor flags (FD_CLOEXEC).
pub fn get_fd_flags(fd: RawFd) -> SysResult<u32> {
    // SAFETY: integers only.
    unsafe { syscall!(Sysno::fcntl, fd, F_GETFD) }.map(|f| f as u32)
}

/// fcntl(F_GETFL): the access mode and file status flags.
pub fn get_status_flags(fd: RawFd) -> SysResult<u32> {
    // SAFETY: integers only.
    unsafe { syscall!(Sysno::fcntl, fd, F_GETFL) }.map(|f| f as u32)
}

/// fcntl(F_SETFL): sets O_APPEND, O_NONBLOCK, O_ASYNC, O_DIRECT, O_NOATIME
/// (the kernel ignores the other bits).
pub fn set_status_flags(fd: RawFd, flags: u32) -> SysResult<()> {
    // SAFETY: integers only.
    unsafe { syscall!(Sysno::fcntl, fd, F_SETFL, flags) }.map(drop)
}

/// lseek(2); returns the new position.
pub fn lseek(fd: RawFd, off: i64, whence: u32) -> SysResult<u64> {
    // SAFETY: integers only.
    unsafe { syscall!(Sysno::lseek, fd, off, whence) }.map(|p| p as u64)
}

/// close(2) of a raw number the caller owns.
pub fn close(fd: RawFd) -> SysResult<()> {
    // SAFETY: integers only; the caller owns `fd` and never uses it again.
    unsafe { syscall!(Sysno::close, fd) }.map(drop)
}

/// close_range(2) of `first..=last` (5.9+).
pub fn close_range(first: u32, last: u32) -> SysResult<()> {
    // SAFETY: integers only; the caller owns every open fd in the range.
    unsafe { syscall!(Sysno::close_range, first, last, 0) }.map(drop)
}

/// openat(2) relative to the working directory with exactly `flags` (mode 0:
/// never creates); the result lands at the lowest free number.
pub fn open_raw(path: &CStr, flags: u32) -> SysResult<RawFd> {
    // SAFETY: `path` is NUL-terminated and outlives the call.
    let fd = unsafe { syscall!(Sysno::openat, super::fd::AT_FDCWD, path.as_ptr(), flags, 0) }?;
    Ok(fd as RawFd)
}

/// chdir(2).
pub fn chdir(path: &CStr) -> SysResult<()> {
    // SAFETY: `path` is NUL-terminated and outlives the call.
    unsafe { syscall!(Sysno::chdir, path.as_ptr()) }.map(drop)
}

/// chroot(2).
pub fn chroot(path: &CStr) -> SysResult<()> {
    // SAFETY: `path` is NUL-terminated and outlives the call.
    unsafe { syscall!(Sysno::chroot, path.as_ptr()) }.map(drop)
}

/// `RLIMIT_NOFILE`.
pub const RLIMIT_NOFILE: u32 = 7;

/// Raises this process's soft RLIMIT_NOFILE to at least `min` (up to the
/// hard limit), so fds up to `min - 1` can be placed; returns the soft limit
/// now in force.
pub fn raise_nofile(min: u64) -> SysResult<u64> {
    let mut cur = [0u64; 2];
    // SAFETY: `cur` is a struct rlimit64 the kernel writes; the new-limit
    // pointer is NULL, so this call only reads.
    unsafe { syscall!(Sysno::prlimit64, 0, RLIMIT_NOFILE, 0, cur.as_mut_ptr()) }?;
    if cur[0] >= min || cur[0] >= cur[1] {
        return Ok(cur[0]);
    }
    let new = [min.min(cur[1]), cur[1]];
    // SAFETY: `new` is a struct rlimit64 the kernel only reads; the old-limit
    // pointer is NULL.
    unsafe { syscall!(Sysno::prlimit64, 0, RLIMIT_NOFILE, new.as_ptr(), 0) }?;
    Ok(new[0])
}

/// True if `fd` is a terminal: ioctl(TCGETS) succeeds.
pub fn isatty(fd: BorrowedFd<'_>) -> bool {
    /// `TCGETS` (x86_64 and aarch64 share asm-generic/ioctls.h).
    const TCGETS: u64 = 0x5401;
    // struct termios (asm-generic): 4 flag words, c_line, 19 c_cc bytes
    // (36 bytes); a larger buffer is harmless.
    let mut termios = [0u8; 64];
    // SAFETY: TCGETS writes one struct termios (36 bytes) into the buffer.
    unsafe { syscall!(Sysno::ioctl, fd.as_raw_fd(), TCGETS, termios.as_mut_ptr()) }.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fd::{O_CLOEXEC, pipe2};
    use std::os::fd::AsFd;

    #[test]
    fn dup3_places_a_copy_with_its_cloexec() {
        let (r, _w) = pipe2(O_CLOEXEC).unwrap();
        let high = dup_at_least(r.as_raw_fd(), 900).unwrap();
        assert!(high >= 900);
        assert_eq!(get_fd_flags(high).unwrap(), FD_CLOEXEC);
        let placed = dup3(high, high + 1, 0).unwrap();
        assert_eq!(placed, high + 1);
        assert_eq!(get_fd_flags(placed).unwrap(), 0);
        assert_eq!(get_status_flags(placed).unwrap() & 3, 0, "O_RDONLY");
        close_range(high as u32, placed as u32).unwrap();
        assert!(get_fd_flags(high).is_err());
        assert!(!isatty(r.as_fd()), "a pipe is not a terminal");
    }
}
