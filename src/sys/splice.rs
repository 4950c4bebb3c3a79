//! Moving pages between pipes and files without copying them through user
//! space: splice(2) and the pipe capacity fcntls (F_SETPIPE_SZ,
//! F_GETPIPE_SZ).
//!
//! The page dump fills a pipe inside the target with vmsplice (done by the
//! parasite) and empties it into the pages file with [`splice`], so crest
//! never holds the data; the pipe's capacity bounds how much one parasite
//! command may move, hence the fcntls.

use std::os::fd::{AsRawFd, BorrowedFd};

use syscalls::{Sysno, syscall};

use super::SysResult;

/// `F_SETPIPE_SZ` (uapi linux/fcntl.h: F_LINUX_SPECIFIC_BASE + 7).
pub const F_SETPIPE_SZ: u32 = 1031;
/// `F_GETPIPE_SZ` (F_LINUX_SPECIFIC_BASE + 8).
pub const F_GETPIPE_SZ: u32 = 1032;
/// `SPLICE_F_MOVE`: a hint to move pages instead of copying them.
pub const SPLICE_F_MOVE: u32 = 1;
/// `SPLICE_F_NONBLOCK`: do not block on the pipe.
pub const SPLICE_F_NONBLOCK: u32 = 2;

/// splice(2) of up to `len` bytes from `from` to `to`, both at their file
/// positions (no offsets); returns the bytes moved, 0 when `from` is an
/// empty pipe without writers or at end of file.
pub fn splice(
    from: BorrowedFd<'_>,
    to: BorrowedFd<'_>,
    len: usize,
    flags: u32,
) -> SysResult<usize> {
    // SAFETY: the offset pointers are NULL, so the kernel dereferences no
    // user memory; the descriptors are borrowed and open.
    unsafe {
        syscall!(
            Sysno::splice,
            from.as_raw_fd(),
            0usize,
            to.as_raw_fd(),
            0usize,
            len,
            flags
        )
    }
}

/// fcntl(F_SETPIPE_SZ): asks for a pipe capacity of at least `bytes`;
/// returns the capacity the kernel set (rounded up to a power of two pages).
pub fn set_pipe_size(pipe: BorrowedFd<'_>, bytes: usize) -> SysResult<usize> {
    // SAFETY: an integer argument only.
    unsafe { syscall!(Sysno::fcntl, pipe.as_raw_fd(), F_SETPIPE_SZ, bytes) }
}

/// fcntl(F_GETPIPE_SZ): the pipe's capacity in bytes.
pub fn pipe_size(pipe: BorrowedFd<'_>) -> SysResult<usize> {
    // SAFETY: no pointer is passed.
    unsafe { syscall!(Sysno::fcntl, pipe.as_raw_fd(), F_GETPIPE_SZ) }
}

/// sendfile(2) of up to `len` bytes from `from` at `*off_in` to `to` at its
/// file position; advances `*off_in` and returns the bytes moved (0 at end
/// of file). The kernel copies, crest never sees the bytes, and unlike
/// copy_file_range the two files may be on different file systems.
pub fn sendfile(
    to: BorrowedFd<'_>,
    from: BorrowedFd<'_>,
    off_in: &mut u64,
    len: usize,
) -> SysResult<usize> {
    // SAFETY: the kernel reads and updates the one u64 at off_in.
    unsafe {
        syscall!(
            Sysno::sendfile,
            to.as_raw_fd(),
            from.as_raw_fd(),
            off_in as *mut u64,
            len
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fd::{O_CLOEXEC, pipe2, write};
    use std::os::fd::AsFd;

    #[test]
    fn pipe_capacity_grows_and_splice_moves_bytes() {
        let (r, w) = pipe2(O_CLOEXEC).unwrap();
        let got = set_pipe_size(w.as_fd(), 256 * 1024).unwrap();
        assert!(got >= 256 * 1024);
        assert_eq!(pipe_size(r.as_fd()).unwrap(), got);
        assert_eq!(write(w.as_fd(), b"crest pages").unwrap(), 11);
        let (r2, w2) = pipe2(O_CLOEXEC).unwrap();
        assert_eq!(
            splice(r.as_fd(), w2.as_fd(), 64, SPLICE_F_NONBLOCK).unwrap(),
            11
        );
        let mut buf = [0u8; 32];
        let n = crate::sys::fd::read(r2.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"crest pages");
        assert_eq!(
            splice(r.as_fd(), w2.as_fd(), 64, SPLICE_F_NONBLOCK),
            Err(crate::sys::Errno::EAGAIN)
        );
    }
}
