//! Reading what is queued in a pipe without taking it: tee(2) and
//! ioctl(FIONREAD).
//!
//! The dump copies a target's pipe buffer while the target is frozen: tee
//! duplicates the queued buffers (page references, no copy) into a pipe of
//! crest's own, which crest then reads, and the target's pipe keeps every
//! byte. FIONREAD says how many bytes are queued, so crest knows what the
//! copy must hold.

use std::os::fd::{AsRawFd, BorrowedFd};

use syscalls::{Sysno, syscall};

use super::SysResult;

/// `FIONREAD` (asm-generic/ioctls.h, the same on x86_64 and aarch64).
pub const FIONREAD: u64 = 0x541B;

/// tee(2) of up to `len` bytes from the pipe `from` (a read end) to the pipe
/// `to` (a write end), leaving `from` as it was; returns the bytes copied.
pub fn tee(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize, flags: u32) -> SysResult<usize> {
    // SAFETY: integers only; the descriptors are borrowed and open.
    unsafe { syscall!(Sysno::tee, from.as_raw_fd(), to.as_raw_fd(), len, flags) }
}

/// ioctl(FIONREAD): the bytes queued in the pipe.
pub fn queued_bytes(pipe: BorrowedFd<'_>) -> SysResult<usize> {
    let mut n: i32 = 0;
    // SAFETY: FIONREAD writes one int into `n`.
    unsafe { syscall!(Sysno::ioctl, pipe.as_raw_fd(), FIONREAD, &mut n as *mut i32) }?;
    Ok(n.max(0) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fd::{O_CLOEXEC, O_NONBLOCK, pipe2, read, write};
    use crate::sys::splice::SPLICE_F_NONBLOCK;
    use std::os::fd::AsFd;

    #[test]
    fn tee_copies_without_consuming() {
        let (r, w) = pipe2(O_CLOEXEC | O_NONBLOCK).unwrap();
        assert_eq!(queued_bytes(r.as_fd()).unwrap(), 0);
        write(w.as_fd(), b"queued bytes").unwrap();
        assert_eq!(queued_bytes(r.as_fd()).unwrap(), 12);
        let (r2, w2) = pipe2(O_CLOEXEC).unwrap();
        assert_eq!(
            tee(r.as_fd(), w2.as_fd(), 1 << 20, SPLICE_F_NONBLOCK).unwrap(),
            12
        );
        let mut buf = [0u8; 32];
        let n = read(r2.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"queued bytes");
        assert_eq!(queued_bytes(r.as_fd()).unwrap(), 12, "still queued");
        let n = read(r.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"queued bytes");
    }
}
