//! Raw terminal helpers for the tty victims (forks of the threaded
//! harness: libc calls only, no allocation).

use crate::common::victim::{Msg, now_ns, sleep_ms};
use crate::raw::errno;

/// The NUL-terminated path /dev/pts/N of the master at `master`.
pub fn pts_path(master: i32) -> Result<[u8; 32], Msg> {
    let mut n: u32 = 0;
    // SAFETY: TIOCGPTN writes one int.
    let r = unsafe { libc::ioctl(master, libc::TIOCGPTN, &mut n) };
    ensure!(r == 0, "TIOCGPTN: errno {}", errno());
    let m = Msg::new(format_args!("/dev/pts/{n}"));
    let mut out = [0u8; 32];
    out[..m.bytes().len()].copy_from_slice(m.bytes());
    Ok(out)
}

/// A new master at `fd`, unlocked.
pub fn new_master(fd: i32) -> Result<(), Msg> {
    // SAFETY: raw terminal calls on our own fds.
    unsafe {
        crate::raw::place(libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY), fd, false)?;
        ensure!(libc::unlockpt(fd) == 0, "unlockpt: errno {}", errno());
    }
    Ok(())
}

/// Opens the slave of the master at `master` at `fd`.
pub fn open_slave(master: i32, fd: i32) -> Result<(), Msg> {
    let path = pts_path(master)?;
    // SAFETY: a NUL-terminated path.
    let s = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDWR | libc::O_NOCTTY) };
    crate::raw::place(s, fd, false)
}

/// Bytes ready to read on `fd` (FIONREAD), -1 on error.
pub fn inq(fd: i32) -> i32 {
    let mut n: i32 = 0;
    // SAFETY: FIONREAD writes one int.
    let r = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
    if r == 0 { n } else { -1 }
}

/// Waits up to 10 s for `cond`.
pub fn until(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = now_ns() + 10_000_000_000;
    while !cond() {
        if now_ns() > deadline {
            return false;
        }
        sleep_ms(1);
    }
    true
}

/// Whether `fd` becomes readable within `ms`.
pub fn readable(fd: i32, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one live pollfd.
    unsafe { libc::poll(&mut p, 1, ms) == 1 }
}

/// Reads from `fd` until `want.len()` bytes came (each within 3 s) and
/// checks they are `want`.
pub fn expect(fd: i32, want: &[u8]) -> Result<(), Msg> {
    let mut buf = [0u8; 128];
    let mut got = 0;
    while got < want.len() {
        ensure!(
            readable(fd, 3000),
            "fd {fd}: only {:?} of {:?} within 3 s",
            crate::common::victim::Msg::new(format_args!("{:?}", &buf[..got])).as_str(),
            want
        );
        // SAFETY: the rest of a local buffer.
        let n = unsafe { libc::read(fd, buf[got..].as_mut_ptr().cast(), buf.len() - got) };
        ensure!(n > 0, "read fd {fd}: errno {}", errno());
        got += n as usize;
    }
    ensure!(
        &buf[..got] == want,
        "fd {fd} read {:?}, want {:?}",
        &buf[..got],
        want
    );
    Ok(())
}

/// write(2) of all of `data`.
pub fn write_all(fd: i32, data: &[u8]) -> Result<(), Msg> {
    // SAFETY: a buffer of its own size.
    let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    ensure!(n == data.len() as isize, "write fd {fd}: errno {}", errno());
    Ok(())
}

/// The session TIOCGSID reports for the terminal at `fd`, or -errno.
pub fn tty_sid(fd: i32) -> i32 {
    let mut sid: libc::pid_t = 0;
    // SAFETY: TIOCGSID writes one pid_t.
    let r = unsafe { libc::ioctl(fd, libc::TIOCGSID, &mut sid) };
    if r == 0 { sid } else { -errno() }
}

/// Field 7 (tty_nr) of /proc/self/stat, -1 if unreadable.
pub fn tty_nr() -> i64 {
    let mut buf = [0u8; 1024];
    let text = crate::common::victim::read_file(c"/proc/self/stat", &mut buf);
    let Some(close) = text.iter().rposition(|&b| b == b')') else {
        return -1;
    };
    let mut fields = text[close + 1..]
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty());
    let Some(f) = fields.nth(4) else { return -1 };
    std::str::from_utf8(f)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(-1)
}

/// st_rdev of `fd` as the kernel's new_encode_dev (the tty_nr encoding).
pub fn rdev_nr(fd: i32) -> i64 {
    // SAFETY: fstat fills a zeroed local.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return -1;
    }
    let (ma, mi) = (
        libc::major(st.st_rdev) as i64,
        libc::minor(st.st_rdev) as i64,
    );
    (mi & 0xff) | (ma << 8) | ((mi & !0xff) << 12)
}

/// getsid(0).
pub fn my_sid() -> i32 {
    // SAFETY: no memory effects.
    unsafe { libc::getsid(0) }
}

/// getppid().
pub fn parent() -> i32 {
    // SAFETY: no memory effects.
    unsafe { libc::getppid() }
}

/// tcgetpgrp(fd).
pub fn fg_of(fd: i32) -> i32 {
    // SAFETY: an integer call on our own fd.
    unsafe { libc::tcgetpgrp(fd) }
}

/// The session of a fresh open of /dev/tty (TIOCGSID), closed again;
/// -errno when it does not open.
pub fn dev_tty_sid() -> i32 {
    // SAFETY: a live C string.
    let fd = unsafe { libc::open(c"/dev/tty".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return -errno();
    }
    let sid = tty_sid(fd);
    // SAFETY: the fd just opened.
    unsafe { libc::close(fd) };
    sid
}

/// tcgetattr of `fd`.
pub fn termios(fd: i32) -> Option<libc::termios> {
    // SAFETY: a zeroed termios the call fills.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        (libc::tcgetattr(fd, &mut t) == 0).then_some(t)
    }
}

/// Waits for child `s` (S, the session leader): it must exit 0 (its
/// exit code names the check that failed otherwise).
pub fn exited_cleanly(s: i32) -> Result<(), Msg> {
    let mut status = 0;
    // SAFETY: our own child.
    let r = unsafe { libc::waitpid(s, &mut status, 0) };
    ensure!(r == s, "waitpid S: errno {}", errno());
    ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "S failed: status {status:#x} (exit code {})",
        libc::WEXITSTATUS(status)
    );
    Ok(())
}
