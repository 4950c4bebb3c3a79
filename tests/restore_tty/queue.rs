//! The queued-bytes victim, one process holding both ends of a pair in
//! raw mode (master fd 28, slave fd 29, no ICANON, ECHO, ISIG or OPOST):
//! the master wrote "abc\x03def" (a ^C that is data here) and the slave
//! "xyz\n", neither read. After go: the slave reads exactly the master's
//! bytes, the master exactly the slave's (no CR added, no echo), and the
//! slave's termios is still raw.

use crate::common::victim::{Child, Verdict};
use crate::util::{expect, inq, new_master, open_slave, until, write_all};

const MASTER: i32 = 28;
const SLAVE: i32 = 29;
const TO_SLAVE: &[u8] = b"abc\x03def";
const TO_MASTER: &[u8] = b"xyz\n";

fn make_raw() -> Verdict {
    // SAFETY: termios calls on our own fd and a local struct.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        ensure!(libc::tcgetattr(SLAVE, &mut t) == 0, "tcgetattr");
        libc::cfmakeraw(&mut t);
        ensure!(libc::tcsetattr(SLAVE, libc::TCSANOW, &t) == 0, "tcsetattr");
    }
    Ok(())
}

fn still_raw() -> Verdict {
    // SAFETY: a termios call on our own fd and a local struct.
    let t = unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        ensure!(libc::tcgetattr(SLAVE, &mut t) == 0, "tcgetattr");
        t
    };
    let cooked = libc::ICANON | libc::ECHO | libc::ISIG | libc::IEXTEN;
    ensure!(t.c_lflag & cooked == 0, "lflag {:#o} is not raw", t.c_lflag);
    ensure!(t.c_oflag & libc::OPOST == 0, "oflag {:#o}", t.c_oflag);
    Ok(())
}

pub fn victim(c: &Child) -> Verdict {
    new_master(MASTER)?;
    open_slave(MASTER, SLAVE)?;
    make_raw()?;
    write_all(MASTER, TO_SLAVE)?;
    write_all(SLAVE, TO_MASTER)?;
    ensure!(
        until(|| inq(SLAVE) == TO_SLAVE.len() as i32 && inq(MASTER) == TO_MASTER.len() as i32),
        "the bytes never arrived"
    );
    c.ready(b"");
    c.wait_go();
    still_raw()?;
    expect(SLAVE, TO_SLAVE)?;
    expect(MASTER, TO_MASTER)?;
    ensure!(
        inq(SLAVE) == 0 && inq(MASTER) == 0,
        "more bytes than queued"
    );
    still_raw()
}
