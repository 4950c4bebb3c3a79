//! The controlling-terminal victim, a tree of three: the root R holds a
//! pair's master (fd 28) and forks S, which leads a new session whose
//! controlling terminal is the pair's slave (fd 29, TIOCSCTTY) and holds
//! /dev/tty at fd 30; S forks G into a group of its own and makes it the
//! terminal's foreground group. Before ready, S writes a line to the
//! slave and R types "before\npart" on the master (canonical mode, echo
//! on), so both directions hold bytes: the master's "from-slave\r\n
//! before\r\npart", the slave's line "before\n" and the partial "part".
//! Everyone inherits R's SIGINT handler. The ready text is "S G".
//!
//! After go, S checks that it leads its session, that its tty_nr is the
//! slave's device, that /dev/tty opens and is the terminal of its session
//! (TIOCGSID), that fd 30 is /dev/tty of that session, that G's group is
//! in the foreground, reads the master's queued bytes exactly, writes
//! through fd 30 and reads it on the master; then lets G go: G checks
//! its session and /dev/tty, that it is the foreground, reads "before\n"
//! on the slave and then nothing (the partial line waits for its end),
//! types "-tail\n" on the master and reads "part-tail\n", types ^C on the
//! master and gets SIGINT. S, in the background, must not get it.
//! Each failed check is an exit code, reported by R.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::common::victim::{Child, Msg, Verdict, now_ns, sleep_ms, write_file};
use crate::raw::errno;
use crate::util::{
    dev_tty_sid, exited_cleanly, expect, fg_of, inq, my_sid, new_master, parent, readable, termios,
    tty_nr, tty_sid, until, write_all,
};

pub const MASTER: i32 = 28;
pub const SLAVE: i32 = 29;
pub const DEVTTY: i32 = 30;
const FROM_SLAVE: &[u8] = b"from-slave\n";
const TYPED: &[u8] = b"before\npart";
const TO_MASTER: &[u8] = b"from-slave\r\nbefore\r\npart";

static GOT_INT: AtomicBool = AtomicBool::new(false);

extern "C" fn on_int(_: i32) {
    GOT_INT.store(true, Ordering::SeqCst);
}

fn catch_sigint() -> Verdict {
    // SAFETY: a zeroed sigaction with a handler that only stores a flag.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_int as *const () as usize;
        sa.sa_flags = libc::SA_RESTART;
        ensure!(
            libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut()) == 0,
            "sigaction"
        );
    }
    Ok(())
}

/// Waits for the file `path` (up to 60 s, like wait_go).
fn wait_file(path: &std::ffi::CStr) -> bool {
    let deadline = now_ns() + 60_000_000_000;
    // SAFETY: access only reads the path.
    while unsafe { libc::access(path.as_ptr(), libc::F_OK) } != 0 {
        if now_ns() > deadline {
            return false;
        }
        sleep_ms(2);
    }
    true
}

/// The pid in the file at `path`, once it is there.
fn read_pid(path: &std::ffi::CStr) -> i32 {
    let mut buf = [0u8; 32];
    if !until(|| !crate::common::victim::read_file(path, &mut buf).is_empty()) {
        return -1;
    }
    let text = crate::common::victim::read_file(path, &mut buf);
    std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(-1)
}

pub fn victim(c: &Child) -> Verdict {
    let (gpid_path, ggo) = (c.path("g-pid"), c.path("g-go"));
    new_master(MASTER)?;
    catch_sigint()?;
    // SAFETY: fork in the single-threaded victim.
    let s = unsafe { libc::fork() };
    ensure!(s >= 0, "fork: errno {}", errno());
    if s == 0 {
        let code = leader(c, &gpid_path, &ggo);
        // SAFETY: leaves without the harness's atexit code.
        unsafe { libc::_exit(code) }
    }
    ensure!(
        until(|| inq(MASTER) >= (FROM_SLAVE.len() + 1) as i32),
        "the slave's line never reached the master"
    );
    write_all(MASTER, TYPED)?;
    ensure!(
        until(|| inq(MASTER) >= TO_MASTER.len() as i32),
        "the echo never came: {} bytes",
        inq(MASTER)
    );
    let g = read_pid(&gpid_path);
    ensure!(g > 0, "no pid from G");
    c.ready(Msg::new(format_args!("{s} {g}")).bytes());
    c.wait_go();
    exited_cleanly(s)?;
    Ok(())
}

/// S: sets up the session, then after go runs its checks; its exit code.
fn leader(c: &Child, gpid_path: &std::ffi::CStr, ggo: &std::ffi::CStr) -> i32 {
    let g = match leader_setup(c, gpid_path, ggo) {
        Ok(g) => g,
        Err(_) => return 10,
    };
    c.wait_go();
    if let Err(code) = leader_checks(g) {
        return code;
    }
    write_file(ggo, b"");
    let mut status = 0;
    // SAFETY: our own child.
    if unsafe { libc::waitpid(g, &mut status, 0) } != g || !libc::WIFEXITED(status) {
        return 30;
    }
    if libc::WEXITSTATUS(status) != 0 {
        return 100 + libc::WEXITSTATUS(status);
    }
    if GOT_INT.load(Ordering::SeqCst) {
        return 31;
    }
    0
}

fn leader_setup(c: &Child, gpid_path: &std::ffi::CStr, ggo: &std::ffi::CStr) -> Result<i32, Msg> {
    // SAFETY: raw session and terminal calls on our own fds.
    unsafe {
        ensure!(libc::setsid() > 0, "setsid");
        crate::util::open_slave(MASTER, SLAVE)?;
        ensure!(libc::ioctl(SLAVE, libc::TIOCSCTTY, 0) == 0, "TIOCSCTTY");
        crate::raw::place(
            libc::open(c"/dev/tty".as_ptr(), libc::O_RDWR),
            DEVTTY,
            false,
        )?;
        let g = libc::fork();
        ensure!(g >= 0, "fork G");
        if g == 0 {
            let code = foreground(ggo);
            libc::_exit(code)
        }
        let _ = libc::setpgid(g, g);
        ensure!(
            libc::tcsetpgrp(SLAVE, g) == 0,
            "tcsetpgrp: errno {}",
            errno()
        );
        ensure!(
            write_file(gpid_path, Msg::new(format_args!("{g}")).bytes()),
            "g-pid"
        );
        let _ = c;
        write_all(SLAVE, FROM_SLAVE)?;
        Ok(g)
    }
}

/// S's checks after go; the failing step's code.
fn leader_checks(g: i32) -> Result<(), i32> {
    let me = crate::common::victim::getpid();
    let check = |ok: bool, code: i32| if ok { Ok(()) } else { Err(code) };
    check(my_sid() == me, 20)?;
    check(tty_nr() > 0 && tty_nr() == crate::util::rdev_nr(SLAVE), 21)?;
    check(tty_sid(DEVTTY) == me, 22)?;
    let mut link = [0u8; 32];
    // SAFETY: a local buffer of its own size.
    let n = unsafe { libc::readlink(c"/proc/self/fd/30".as_ptr(), link.as_mut_ptr().cast(), 32) };
    check(n == 8 && &link[..8] == b"/dev/tty", 23)?;
    check(dev_tty_sid() == me, 24)?;
    check(fg_of(SLAVE) == g, 25)?;
    check(fg_of(DEVTTY) == g, 26)?;
    check(expect(MASTER, TO_MASTER).is_ok(), 27)?;
    check(write_all(DEVTTY, b"via-devtty\n").is_ok(), 28)?;
    check(expect(MASTER, b"via-devtty\r\n").is_ok(), 29)?;
    Ok(())
}

/// G's checks after g-go; the failing step's code.
fn foreground_checks() -> Result<(), i32> {
    let me = crate::common::victim::getpid();
    let check = |ok: bool, code: i32| if ok { Ok(()) } else { Err(code) };
    check(my_sid() == parent(), 40)?;
    check(dev_tty_sid() == parent(), 41)?;
    check(fg_of(SLAVE) == me, 42)?;
    check(expect(SLAVE, b"before\n").is_ok(), 43)?;
    check(!readable(SLAVE, 150), 44)?;
    check(write_all(MASTER, b"-tail\n").is_ok(), 45)?;
    check(expect(SLAVE, b"part-tail\n").is_ok(), 46)?;
    let t = termios(SLAVE).ok_or(47)?;
    check(t.c_lflag & libc::ISIG != 0, 48)?;
    check(write_all(MASTER, &[t.c_cc[libc::VINTR]]).is_ok(), 49)?;
    check(until(|| GOT_INT.load(Ordering::SeqCst)), 50)
}

/// G: its own group; after g-go its checks; its exit code.
fn foreground(ggo: &std::ffi::CStr) -> i32 {
    // SAFETY: an integer call.
    unsafe { libc::setpgid(0, 0) };
    if !wait_file(ggo) {
        return 1;
    }
    match foreground_checks() {
        Ok(()) => 0,
        Err(code) => code,
    }
}
