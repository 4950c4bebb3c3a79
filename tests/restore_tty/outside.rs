//! A session leader whose controlling terminal's master is held outside
//! the tree: the root R makes a pair and forks S, which leads a new
//! session with the slave (fd 29) as its controlling terminal and closes
//! its copy of the master; R forks an outsider O (through a child that
//! exits at once, so O is no descendant of R) in a group of its own that
//! keeps the master, then closes its own. The ready text is "S O".
//!
//! After go (the dump must have been refused): S still has its terminal
//! (TIOCGSID on fd 29 is its session), a line it writes reaches O, which
//! reads it and exits 0; R checks S's exit status.

use crate::common::victim::{Child, Msg, Verdict};
use crate::raw::errno;
use crate::util::{expect, new_master, open_slave, tty_sid, write_all};

const MASTER: i32 = 28;
const SLAVE: i32 = 29;

/// S: the session and its terminal; after go, the checks; its exit code.
fn leader(c: &Child) -> i32 {
    // SAFETY: raw session and terminal calls on our own fds. SIGHUP is
    // ignored: O's exit, once it read the line, hangs the terminal up.
    let set = unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN) != libc::SIG_ERR
            && libc::setsid() > 0
            && open_slave(MASTER, SLAVE).is_ok()
            && libc::ioctl(SLAVE, libc::TIOCSCTTY, 0) == 0
            && libc::close(MASTER) == 0
    };
    if !set {
        return 10;
    }
    c.wait_go();
    // SAFETY: an integer call.
    if tty_sid(SLAVE) != unsafe { libc::getpid() } {
        return 11;
    }
    if write_all(SLAVE, b"still\n").is_err() {
        return 12;
    }
    0
}

/// O: keeps the master; after go reads S's line; its exit code.
fn outsider(c: &Child) -> i32 {
    // SAFETY: an integer call.
    unsafe { libc::setpgid(0, 0) };
    c.wait_go();
    if expect(MASTER, b"still\r\n").is_err() {
        20
    } else {
        0
    }
}

/// Forks a child that runs `f` and exits with its code.
fn spawn(c: &Child, f: fn(&Child) -> i32) -> Result<i32, Msg> {
    // SAFETY: fork in the single-threaded victim.
    let pid = unsafe { libc::fork() };
    ensure!(pid >= 0, "fork: errno {}", errno());
    if pid == 0 {
        let code = f(c);
        // SAFETY: leaves without the harness's atexit code.
        unsafe { libc::_exit(code) }
    }
    Ok(pid)
}

pub fn victim(c: &Child) -> Verdict {
    let o_path = c.path("o-pid");
    new_master(MASTER)?;
    let s = spawn(c, leader)?;
    // SAFETY: fork in the single-threaded victim.
    let x = unsafe { libc::fork() };
    ensure!(x >= 0, "fork: errno {}", errno());
    if x == 0 {
        let o = spawn(c, outsider).unwrap_or(-1);
        crate::common::victim::write_file(&o_path, Msg::new(format_args!("{o}")).bytes());
        // SAFETY: leaves at once, orphaning O.
        unsafe { libc::_exit(0) }
    }
    let mut status = 0;
    // SAFETY: our own child; then our own fd.
    unsafe {
        ensure!(libc::waitpid(x, &mut status, 0) == x, "waitpid X");
        ensure!(libc::close(MASTER) == 0, "close the master");
    }
    let mut buf = [0u8; 32];
    let o = crate::common::victim::read_file(&o_path, &mut buf);
    let o = std::str::from_utf8(o).unwrap_or("?");
    // S has its terminal once its session has one.
    ensure!(
        crate::util::until(|| s_has_tty(s)),
        "S never took its terminal"
    );
    c.ready(Msg::new(format_args!("{s} {o}")).bytes());
    c.wait_go();
    crate::util::exited_cleanly(s)
}

/// Whether pid `s` has a controlling terminal (tty_nr of its stat).
fn s_has_tty(s: i32) -> bool {
    let path = Msg::new(format_args!("/proc/{s}/stat\0"));
    let Ok(cpath) = std::ffi::CStr::from_bytes_with_nul(path.bytes()) else {
        return false;
    };
    let mut buf = [0u8; 1024];
    let text = crate::common::victim::read_file(cpath, &mut buf);
    let Some(close) = text.iter().rposition(|&b| b == b')') else {
        return false;
    };
    text[close + 1..]
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty())
        .nth(4)
        .is_some_and(|f| f != b"0")
}
