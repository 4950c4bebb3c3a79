//! The file-lock victim: fd 32 holds flock(LOCK_EX) on `a`; fd 33 a POSIX
//! write lock on bytes 5-14 of `b` (fd 35 is a second fd on `b`, so the
//! lock shows on both); fd 34 an OFD read lock on `c` from byte 100 to the
//! end.
//!
//! After go a child process (locks are seen from another process) checks
//! each: flock(LOCK_EX|LOCK_NB) on `a` fails, F_GETLK on `b` reports the
//! victim's write lock on 5-14, F_OFD_GETLK on `c` reports the read lock at
//! byte 200 and none at byte 50.

use std::path::Path;

use crate::common::victim::{Child, Verdict};
use crate::raw::{errno, place};

pub fn prepare(dir: &Path) {
    for name in ["a", "b", "c"] {
        std::fs::write(dir.join(name), [0u8; 300]).unwrap();
    }
}

fn lock(fd: i32, cmd: i32, kind: i32, start: i64, len: i64) -> libc::flock {
    let mut l: libc::flock = unsafe_zeroed();
    l.l_type = kind as i16;
    l.l_whence = libc::SEEK_SET as i16;
    l.l_start = start;
    l.l_len = len;
    // SAFETY: a struct flock of our own.
    unsafe { libc::fcntl(fd, cmd, &mut l) };
    l
}

fn unsafe_zeroed() -> libc::flock {
    // SAFETY: struct flock is plain integers.
    unsafe { std::mem::zeroed() }
}

fn setup(c: &Child) -> Verdict {
    let (a, b, cc) = (c.path("a"), c.path("b"), c.path("c"));
    // SAFETY: raw calls on our own files.
    unsafe {
        place(libc::open(a.as_ptr(), libc::O_RDWR), 32, false)?;
        ensure!(
            libc::flock(32, libc::LOCK_EX) == 0,
            "flock: errno {}",
            errno()
        );
        place(libc::open(b.as_ptr(), libc::O_RDWR), 33, false)?;
        place(libc::open(b.as_ptr(), libc::O_RDONLY), 35, true)?;
        place(libc::open(cc.as_ptr(), libc::O_RDONLY), 34, false)?;
    }
    let mut l = unsafe_zeroed();
    l.l_type = libc::F_WRLCK as i16;
    l.l_start = 5;
    l.l_len = 10;
    // SAFETY: a struct flock of our own.
    let posix = unsafe { libc::fcntl(33, libc::F_SETLK, &mut l) };
    ensure!(posix == 0, "posix lock");
    l.l_type = libc::F_RDLCK as i16;
    l.l_start = 100;
    l.l_len = 0;
    // SAFETY: as above.
    let ofd = unsafe { libc::fcntl(34, libc::F_OFD_SETLK, &mut l) };
    ensure!(ofd == 0, "ofd lock");
    Ok(())
}

/// The checks of the child: 0 when every lock is seen, else which failed.
fn child_checks(c: &Child, owner: i32) -> i32 {
    let (a, b, cc) = (c.path("a"), c.path("b"), c.path("c"));
    // SAFETY: raw calls on new fds of our own.
    unsafe {
        let fa = libc::open(a.as_ptr(), libc::O_RDWR);
        if fa < 0 || libc::flock(fa, libc::LOCK_EX | libc::LOCK_NB) == 0 {
            return 1;
        }
        let fb = libc::open(b.as_ptr(), libc::O_RDWR);
        let l = lock(fb, libc::F_GETLK, libc::F_WRLCK, 0, 100);
        if l.l_type != libc::F_WRLCK as i16 || (l.l_start, l.l_len, l.l_pid) != (5, 10, owner) {
            return 2;
        }
        let fc = libc::open(cc.as_ptr(), libc::O_RDWR);
        let l = lock(fc, libc::F_OFD_GETLK, libc::F_WRLCK, 200, 1);
        if l.l_type != libc::F_RDLCK as i16 || (l.l_start, l.l_len) != (100, 0) {
            return 3;
        }
        let l = lock(fc, libc::F_OFD_GETLK, libc::F_WRLCK, 50, 1);
        if l.l_type != libc::F_UNLCK as i16 {
            return 4;
        }
    }
    0
}

pub fn victim(c: &Child) -> Verdict {
    setup(c)?;
    c.ready(b"");
    c.wait_go();
    // SAFETY: fork of this single-threaded victim; the child only makes raw
    // calls and leaves with _exit.
    let pid = unsafe { libc::fork() };
    ensure!(pid >= 0, "fork");
    if pid == 0 {
        // SAFETY: leaving the child.
        unsafe { libc::_exit(child_checks(c, libc::getppid())) };
    }
    let mut status = 0;
    // SAFETY: our own child.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    ensure!(waited == pid, "waitpid");
    let code = libc::WEXITSTATUS(status);
    let what = [
        "",
        "flock on a",
        "POSIX lock on b",
        "OFD lock on c",
        "OFD range on c",
    ];
    ensure!(
        code == 0,
        "another process does not see the {}",
        what[code.min(4) as usize]
    );
    Ok(())
}
