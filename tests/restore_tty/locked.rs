//! A locked pair (TIOCSPTLCK after its slave was opened) with bytes
//! queued each way, in raw mode: after go the slave and the master read
//! exactly the bytes the other side wrote, and the pair is still locked
//! (no new slave can be opened).

use crate::common::victim::{Child, Verdict};
use crate::util::{expect, inq, new_master, open_slave, until, write_all};

const MASTER: i32 = 28;
const SLAVE: i32 = 29;

fn set_raw() -> Verdict {
    // SAFETY: termios calls on our own fd and a local struct.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        ensure!(libc::tcgetattr(SLAVE, &mut t) == 0, "tcgetattr");
        libc::cfmakeraw(&mut t);
        ensure!(libc::tcsetattr(SLAVE, libc::TCSANOW, &t) == 0, "tcsetattr");
    }
    Ok(())
}

fn locked() -> bool {
    let mut v: i32 = 0;
    // SAFETY: TIOCGPTLCK writes one int.
    let r = unsafe { libc::ioctl(MASTER, libc::TIOCGPTLCK, &mut v) };
    r == 0 && v != 0
}

pub fn victim(c: &Child) -> Verdict {
    new_master(MASTER)?;
    open_slave(MASTER, SLAVE)?;
    set_raw()?;
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
