//! File locks (dumped with --file-locks): re-taken by [`take`] in the new
//! task once every fd is at its number, so a POSIX lock is owned by the
//! restored process and a flock or OFD lock by the fd's open file, as at
//! the dump. Nothing blocks: a lock another process took meanwhile fails
//! the restore, naming the fd and the lock. They are taken after install
//! closed its temporary fds, since closing any fd of a file drops the
//! process's POSIX locks on it; for the same reason a POSIX lock on a file
//! the process also maps is dropped when the restorer closes crest's fd of
//! that mapping (a known limit).

use std::os::fd::RawFd;

use crate::error::{Error, Result};
use crate::image::files::{Fd, FileLock, LockKind};
use crate::sys::lock::{F_OFD_SETLK, F_RDLCK, F_SETLK, F_WRLCK, Flock, LOCK_EX, LOCK_NB, LOCK_SH};
use crate::sys::lock::{fcntl_lock, flock};

/// Every lock's fd is among the image's fds.
pub fn check(locks: &[FileLock], fds: &[&Fd]) -> Result<()> {
    for l in locks {
        if !fds.iter().any(|f| f.fd == l.fd) {
            return Err(Error::Unsupported(format!(
                "a {} lock in the image is held through fd {}, which is not among the image's fds; the image is damaged",
                l.kind.word(),
                l.fd
            )));
        }
    }
    Ok(())
}

/// Takes every lock through its fd, at its place.
pub fn take(locks: &[FileLock]) -> Result<()> {
    for l in locks {
        take_one(l.fd, l).map_err(|e| {
            Error::sys(
                "fcntl/flock",
                format!(
                    "re-taking the {} {} lock of fd {} (bytes {}-{}); another process may hold a conflicting lock now",
                    if l.write { "write" } else { "read" },
                    l.kind.word(),
                    l.fd,
                    l.start,
                    if l.end == u64::MAX { "EOF".into() } else { l.end.to_string() }
                ),
                e,
            )
        })?;
    }
    Ok(())
}

fn take_one(fd: RawFd, l: &FileLock) -> Result<(), crate::sys::Errno> {
    if l.kind == LockKind::Flock {
        let op = if l.write { LOCK_EX } else { LOCK_SH };
        return flock(fd, op | LOCK_NB);
    }
    let mut f = Flock {
        l_type: if l.write { F_WRLCK } else { F_RDLCK },
        l_whence: 0,
        l_start: l.start as i64,
        l_len: if l.end == u64::MAX {
            0
        } else {
            (l.end - l.start + 1) as i64
        },
        l_pid: 0,
    };
    let cmd = if l.kind == LockKind::Ofd {
        F_OFD_SETLK
    } else {
        F_SETLK
    };
    fcntl_lock(fd, cmd, &mut f)
}
