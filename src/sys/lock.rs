//! File locks: flock(2) and fcntl(F_SETLK / F_OFD_SETLK / F_GETLK /
//! F_OFD_GETLK) with a `struct flock`.
//!
//! Restore re-takes a process's locks in the new task itself (a POSIX lock
//! belongs to the process that takes it), after its fds are in place and
//! before the restorer blob: one raw syscall each, raw fd numbers, no
//! allocation, never blocking (LOCK_NB, F_SETLK).

use std::os::fd::RawFd;

use syscalls::{Sysno, syscall};

use super::SysResult;

/// `LOCK_SH`.
pub const LOCK_SH: u32 = 1;
/// `LOCK_EX`.
pub const LOCK_EX: u32 = 2;
/// `LOCK_NB`.
pub const LOCK_NB: u32 = 4;
/// `F_GETLK`.
pub const F_GETLK: u32 = 5;
/// `F_SETLK`.
pub const F_SETLK: u32 = 6;
/// `F_OFD_GETLK`.
pub const F_OFD_GETLK: u32 = 36;
/// `F_OFD_SETLK`.
pub const F_OFD_SETLK: u32 = 37;
/// `F_RDLCK`.
pub const F_RDLCK: i16 = 0;
/// `F_WRLCK`.
pub const F_WRLCK: i16 = 1;
/// `F_UNLCK`.
pub const F_UNLCK: i16 = 2;

/// The kernel's `struct flock` (64-bit off_t on both arches).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flock {
    /// F_RDLCK, F_WRLCK or F_UNLCK.
    pub l_type: i16,
    /// SEEK_SET.
    pub l_whence: i16,
    /// The first byte.
    pub l_start: i64,
    /// How many bytes, 0 for "to the end of the file".
    pub l_len: i64,
    /// The owner (F_GETLK), -1 for an OFD lock.
    pub l_pid: i32,
}

/// flock(2).
pub fn flock(fd: RawFd, op: u32) -> SysResult<()> {
    // SAFETY: integers only.
    unsafe { syscall!(Sysno::flock, fd, op) }.map(drop)
}

/// fcntl(cmd) with a `struct flock` the kernel reads and, for the GETLK
/// commands, writes.
pub fn fcntl_lock(fd: RawFd, cmd: u32, l: &mut Flock) -> SysResult<()> {
    // SAFETY: `l` is a struct flock of the kernel's layout, alive for the call.
    unsafe { syscall!(Sysno::fcntl, fd, cmd, l as *mut Flock) }.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn an_ofd_lock_conflicts_with_another_open_file() {
        let path = std::env::temp_dir().join(format!("crest-lock-{}", std::process::id()));
        let a = std::fs::File::create(&path).unwrap();
        let b = std::fs::File::options().write(true).open(&path).unwrap();
        let mut l = Flock {
            l_type: F_WRLCK,
            l_start: 10,
            l_len: 5,
            ..Flock::default()
        };
        fcntl_lock(a.as_raw_fd(), F_OFD_SETLK, &mut l).unwrap();
        let mut probe = Flock {
            l_type: F_WRLCK,
            l_start: 12,
            l_len: 1,
            ..Flock::default()
        };
        fcntl_lock(b.as_raw_fd(), F_OFD_GETLK, &mut probe).unwrap();
        assert_eq!((probe.l_type, probe.l_start, probe.l_len), (F_WRLCK, 10, 5));
        flock(a.as_raw_fd(), LOCK_EX | LOCK_NB).unwrap();
        assert!(flock(b.as_raw_fd(), LOCK_SH | LOCK_NB).is_err());
        let _ = std::fs::remove_file(&path);
    }
}
