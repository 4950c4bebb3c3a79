//! Locked pairs (TIOCSPTLCK after the slave was opened). `victim`: bytes
//! queued each way, in raw mode; after go the slave and the master read
//! exactly the bytes the other side wrote, and the pair is still locked.
//! `ctty_victim`: the root R holds the master, its child S leads a
//! session whose controlling terminal is the slave (fd 29), then R locks
//! the pair; after go S checks its terminal (tty_nr, TIOCGSID) and R that
//! the pair is still locked. The ready text is "S".

use crate::common::victim::{Child, Msg, Verdict};
use crate::queue::make_raw;
use crate::raw::errno;
use crate::util::{
    exited_cleanly, expect, inq, my_sid, new_master, open_slave, rdev_nr, tty_nr, tty_sid, until,
    write_all,
};

const MASTER: i32 = 28;
const SLAVE: i32 = 29;

fn locked() -> bool {
    let mut v: i32 = 0;
    // SAFETY: TIOCGPTLCK writes one int.
    let r = unsafe { libc::ioctl(MASTER, libc::TIOCGPTLCK, &mut v) };
    r == 0 && v != 0
}

pub fn victim(c: &Child) -> Verdict {
    new_master(MASTER)?;
    open_slave(MASTER, SLAVE)?;
    make_raw()?;
    let on: i32 = 1;
    // SAFETY: TIOCSPTLCK reads one int.
    let r = unsafe { libc::ioctl(MASTER, libc::TIOCSPTLCK, &on) };
    ensure!(
        r == 0 && locked(),
        "TIOCSPTLCK: errno {}",
        crate::raw::errno()
    );
    write_all(MASTER, b"to-slave")?;
    write_all(SLAVE, b"to-master")?;
    ensure!(
        until(|| inq(SLAVE) == 8 && inq(MASTER) == 9),
        "the bytes never arrived"
    );
    c.ready(b"");
    c.wait_go();
    ensure!(locked(), "the pair is no longer locked");
    expect(SLAVE, b"to-slave")?;
    expect(MASTER, b"to-master")?;
    ensure!(
        inq(SLAVE) == 0 && inq(MASTER) == 0,
        "more bytes than queued"
    );
    Ok(())
}

/// S: a new session whose controlling terminal is the slave; after go,
/// its exit code (0: the terminal came back).
fn session_leader(c: &Child) -> i32 {
    // SAFETY: integer calls in the forked child.
    let sid = unsafe { libc::setsid() };
    if sid < 0 || open_slave(MASTER, SLAVE).is_err() {
        return 10;
    }
    // SAFETY: an integer ioctl on our own fd.
    if unsafe { libc::ioctl(SLAVE, libc::TIOCSCTTY, 0) } != 0 {
        return 11;
    }
    c.wait_go();
    if my_sid() != sid || tty_sid(SLAVE) != sid {
        return 12;
    }
    if tty_nr() != rdev_nr(SLAVE) {
        return 13;
    }
    0
}

pub fn ctty_victim(c: &Child) -> Verdict {
    new_master(MASTER)?;
    // SAFETY: fork in the single-threaded victim.
    let s = unsafe { libc::fork() };
    ensure!(s >= 0, "fork: errno {}", errno());
    if s == 0 {
        let code = session_leader(c);
        // SAFETY: leaves without the harness's atexit code.
        unsafe { libc::_exit(code) }
    }
    ensure!(until(|| tty_sid(MASTER) == s), "S never took the terminal");
    let on: i32 = 1;
    // SAFETY: TIOCSPTLCK reads one int.
    let r = unsafe { libc::ioctl(MASTER, libc::TIOCSPTLCK, &on) };
    ensure!(r == 0 && locked(), "TIOCSPTLCK: errno {}", errno());
    c.ready(Msg::new(format_args!("{s}")).bytes());
    c.wait_go();
    exited_cleanly(s)?;
    ensure!(locked(), "the pair is no longer locked");
    Ok(())
}
