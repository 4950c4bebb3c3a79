//! The pseudo-terminal victim: pair A with its master at fd 28 and its
//! slave at fd 29 (close-on-exec), with distinctive termios (VINTR ^G,
//! VERASE ^H) and a 40x120 window; pair B's master at fd 31, left locked.
//!
//! After go: fd 29 is the slave of fd 28's pair (its link is /dev/pts/N of
//! the master's TIOCGPTN), termios and window size are kept, a line written
//! to the master is read on the slave and echoed back to the master, bytes
//! written to the slave are read on the master, and pair B is still locked.

use std::path::Path;

use crate::common::victim::{Child, Verdict};
use crate::raw::{check_flags, errno, place};

const MASTER: i32 = 28;
const SLAVE: i32 = 29;
const LOCKED: i32 = 31;

pub fn prepare(_dir: &Path) {}

fn pts_path(n: u32, buf: &mut [u8; 32]) -> usize {
    let m = crate::common::victim::Msg::new(format_args!("/dev/pts/{n}"));
    let b = m.bytes();
    buf[..b.len()].copy_from_slice(b);
    b.len()
}

fn setup() -> Verdict {
    // SAFETY: raw terminal calls on our own fds and local structs.
    unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        place(m, MASTER, false)?;
        ensure!(libc::unlockpt(MASTER) == 0, "unlockpt: errno {}", errno());
        let mut n: u32 = 0;
        ensure!(libc::ioctl(MASTER, libc::TIOCGPTN, &mut n) == 0, "TIOCGPTN");
        let mut path = [0u8; 32];
        let len = pts_path(n, &mut path);
        path[len] = 0;
        let s = libc::open(path.as_ptr().cast(), libc::O_RDWR | libc::O_NOCTTY);
        place(s, SLAVE, true)?;
        let mut t: libc::termios = std::mem::zeroed();
        ensure!(libc::tcgetattr(SLAVE, &mut t) == 0, "tcgetattr");
        t.c_cc[libc::VINTR] = 7;
        t.c_cc[libc::VERASE] = 8;
        ensure!(libc::tcsetattr(SLAVE, libc::TCSANOW, &t) == 0, "tcsetattr");
        let ws = libc::winsize {
            ws_row: 40,
            ws_col: 120,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        ensure!(libc::ioctl(SLAVE, libc::TIOCSWINSZ, &ws) == 0, "TIOCSWINSZ");
        place(
            libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY),
            LOCKED,
            false,
        )?;
    }
    Ok(())
}

/// Reads what arrives on `fd` within 2 s.
fn read_ready(fd: i32, buf: &mut [u8]) -> Result<usize, crate::common::victim::Msg> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd and a buffer of its own size.
    unsafe {
        ensure!(
            libc::poll(&mut p, 1, 2000) == 1,
            "nothing to read on fd {fd}"
        );
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        ensure!(n > 0, "read fd {fd}: errno {}", errno());
        Ok(n as usize)
    }
}

fn write_all(fd: i32, data: &[u8]) -> bool {
    // SAFETY: a buffer of its own size.
    unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) == data.len() as isize }
}

fn check_pair() -> Verdict {
    // SAFETY: raw terminal calls on our own fds and local structs.
    unsafe {
        let mut n: u32 = 0;
        ensure!(libc::ioctl(MASTER, libc::TIOCGPTN, &mut n) == 0, "TIOCGPTN");
        let mut want = [0u8; 32];
        let len = pts_path(n, &mut want);
        let mut link = [0u8; 64];
        let got = libc::readlink(c"/proc/self/fd/29".as_ptr(), link.as_mut_ptr().cast(), 64);
        ensure!(
            got as usize == len && link[..len] == want[..len],
            "fd 29 is not the slave of fd 28"
        );
        let mut t: libc::termios = std::mem::zeroed();
        ensure!(libc::tcgetattr(SLAVE, &mut t) == 0, "tcgetattr");
        ensure!(
            t.c_cc[libc::VINTR] == 7 && t.c_cc[libc::VERASE] == 8,
            "termios lost"
        );
        ensure!(
            t.c_lflag & libc::ECHO != 0 && t.c_lflag & libc::ICANON != 0,
            "lflag"
        );
        let mut ws: libc::winsize = std::mem::zeroed();
        ensure!(
            libc::ioctl(SLAVE, libc::TIOCGWINSZ, &mut ws) == 0,
            "TIOCGWINSZ"
        );
        ensure!(
            (ws.ws_row, ws.ws_col) == (40, 120),
            "window {}x{}",
            ws.ws_col,
            ws.ws_row
        );
        let mut lock: i32 = 0;
        ensure!(
            libc::ioctl(LOCKED, libc::TIOCGPTLCK, &mut lock) == 0 && lock == 1,
            "pair B unlocked"
        );
    }
    Ok(())
}

pub fn victim(c: &Child) -> Verdict {
    setup()?;
    c.ready(b"");
    c.wait_go();
    check_flags(MASTER, false, false)?;
    check_flags(SLAVE, false, true)?;
    check_pair()?;
    ensure!(write_all(MASTER, b"hi\n"), "write to the master");
    let mut buf = [0u8; 64];
    let n = read_ready(SLAVE, &mut buf)?;
    ensure!(&buf[..n] == b"hi\n", "the slave read {:?}", &buf[..n]);
    let n = read_ready(MASTER, &mut buf)?;
    ensure!(&buf[..n] == b"hi\r\n", "the echo was {:?}", &buf[..n]);
    ensure!(write_all(SLAVE, b"out"), "write to the slave");
    let n = read_ready(MASTER, &mut buf)?;
    ensure!(&buf[..n] == b"out", "the master read {:?}", &buf[..n]);
    Ok(())
}
