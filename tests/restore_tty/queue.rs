//! The queued-bytes victim, one process holding both ends of a pair in
//! raw mode (master fd 28, slave fd 29, no ICANON, ECHO, ISIG or OPOST):
//! the master wrote "abc\x03def" (a ^C that is data here) and the slave
//! "xyz\n", neither read. After go: the slave reads exactly the master's
//! bytes, the master exactly the slave's (no CR added, no echo), and the
//! slave's termios is still raw. Pair C (master fd 31) had its only slave
//! open, write "bye\n" and close: its master reads "bye\r\n", then end
//! of file (EIO) with a hangup, as before.

use crate::common::victim::{Child, Verdict};
use crate::util::{expect, inq, new_master, open_slave, readable, until, write_all};

const MASTER: i32 = 28;
const SLAVE: i32 = 29;
const TO_SLAVE: &[u8] = b"abc\x03def";
const TO_MASTER: &[u8] = b"xyz\n";
const CLOSED: i32 = 31;

/// Pair C: its slave wrote a line and closed.
fn closed_pair() -> Verdict {
    new_master(CLOSED)?;
    open_slave(CLOSED, 32)?;
    write_all(32, b"bye\n")?;
    // SAFETY: our own fd.
    ensure!(unsafe { libc::close(32) } == 0, "close the slave");
    ensure!(until(|| inq(CLOSED) == 5), "the slave's line never came");
    Ok(())
}

/// Pair C after go: the line, then end of file with a hangup.
fn check_closed_pair() -> Verdict {
    expect(CLOSED, b"bye\r\n")?;
    let mut p = libc::pollfd {
        fd: CLOSED,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one live pollfd.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    ensure!(
        n == 1 && p.revents & libc::POLLHUP != 0,
        "no hangup: {:#x}",
        p.revents
    );
    let mut b = [0u8; 8];
    // SAFETY: a local buffer of its own size.
    let r = unsafe { libc::read(CLOSED, b.as_mut_ptr().cast(), b.len()) };
    ensure!(
        r < 0 && crate::raw::errno() == libc::EIO,
        "read gave {r}, errno {}",
        crate::raw::errno()
    );
    Ok(())
}

/// The slave (fd 29) in raw mode.
pub fn make_raw() -> Verdict {
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
    closed_pair()?;
    c.ready(b"");
    c.wait_go();
    check_closed_pair()?;
    still_raw()?;
    expect(SLAVE, TO_SLAVE)?;
    expect(MASTER, TO_MASTER)?;
    ensure!(
        inq(SLAVE) == 0 && inq(MASTER) == 0,
        "more bytes than queued"
    );
    still_raw()
}

/// Byte `i` of the overfull victim's streams.
fn pattern(i: usize, salt: usize) -> u8 {
    ((i * 7 + salt) % 251) as u8
}

/// Writes `len` bytes of the pattern to `fd` in chunks.
fn write_pattern(fd: i32, len: usize, salt: usize) -> Verdict {
    let mut chunk = [0u8; 1000];
    for start in (0..len).step_by(chunk.len()) {
        let n = chunk.len().min(len - start);
        for (k, b) in chunk[..n].iter_mut().enumerate() {
            *b = pattern(start + k, salt);
        }
        write_all(fd, &chunk[..n])?;
    }
    Ok(())
}

/// Reads `len` bytes from `fd` (each chunk within 3 s): the pattern, in
/// order, and nothing more.
fn read_pattern(fd: i32, len: usize, salt: usize) -> Verdict {
    let mut buf = [0u8; 1024];
    let mut got = 0;
    while got < len {
        ensure!(readable(fd, 3000), "fd {fd}: only {got} of {len} bytes");
        let room = buf.len().min(len - got);
        // SAFETY: a local buffer, at most its size.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), room) };
        ensure!(n > 0, "read fd {fd}: errno {}", crate::raw::errno());
        for (k, &b) in buf[..n as usize].iter().enumerate() {
            ensure!(
                b == pattern(got + k, salt),
                "fd {fd}: byte {} differs",
                got + k
            );
        }
        got += n as usize;
    }
    ensure!(!readable(fd, 0), "fd {fd}: more than {len} bytes");
    Ok(())
}

/// A raw pair with more unread bytes than a line discipline holds, to
/// the master (`to_master`) and to the slave (`to_slave`): the dump must
/// refuse before reading any, and after go every byte is there in order.
fn overfull(c: &Child, to_master: usize, to_slave: usize) -> Verdict {
    new_master(MASTER)?;
    open_slave(MASTER, SLAVE)?;
    make_raw()?;
    write_pattern(SLAVE, to_master, 0)?;
    write_pattern(MASTER, to_slave, 3)?;
    let full = |fd: i32, len: usize| inq(fd) == len.min(4095) as i32;
    ensure!(
        until(|| full(MASTER, to_master) && full(SLAVE, to_slave)),
        "the buffers never filled: {} {}",
        inq(MASTER),
        inq(SLAVE)
    );
    c.ready(b"");
    c.wait_go();
    read_pattern(MASTER, to_master, 0)?;
    read_pattern(SLAVE, to_slave, 3)
}

/// 10000 bytes to the master, 6000 to the slave.
pub fn overfull_victim(c: &Child) -> Verdict {
    overfull(c, 10_000, 6_000)
}

/// 6000 bytes to the slave only (the master side is read and put back).
pub fn overfull_input_victim(c: &Child) -> Verdict {
    overfull(c, 0, 6_000)
}

/// A raw pair whose master is in packet mode with "xyz" from the slave
/// unread: the dump must refuse (the bytes cannot be read without taking
/// the packet status); after go the master reads them as one data packet.
pub fn packet_victim(c: &Child) -> Verdict {
    new_master(MASTER)?;
    open_slave(MASTER, SLAVE)?;
    make_raw()?;
    let on: i32 = 1;
    // SAFETY: TIOCPKT reads one int.
    let r = unsafe { libc::ioctl(MASTER, libc::TIOCPKT, &on) };
    ensure!(r == 0, "TIOCPKT: errno {}", crate::raw::errno());
    write_all(SLAVE, b"xyz")?;
    ensure!(until(|| inq(MASTER) == 3), "the bytes never arrived");
    c.ready(b"");
    c.wait_go();
    expect(MASTER, b"\0xyz")
}
