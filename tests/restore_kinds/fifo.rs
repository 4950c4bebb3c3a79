//! The FIFO victim: FIFO `fifo` with a non-blocking read end (fd 24), a
//! write end (fd 25, close-on-exec) and a read-write end (fd 26), 19 bytes
//! queued; FIFO `lonely` held only read-write (fd 27) with 9 bytes queued.
//!
//! After go: each fd names its FIFO and has its flags; fd 24 reads the
//! queued bytes back, then would block (writers remain); a byte written
//! through fd 26 is read through fd 24; fd 27 reads its own bytes back.

use std::path::Path;

use crate::common::victim::{Child, Verdict};
use crate::raw::{check_flags, errno, place};

const QUEUED: &[u8] = b"queued in the fifo\n";

pub fn prepare(dir: &Path) {
    for name in ["fifo", "lonely"] {
        let p = std::ffi::CString::new(dir.join(name).to_str().unwrap()).unwrap();
        // SAFETY: a live C string.
        assert_eq!(unsafe { libc::mkfifo(p.as_ptr(), 0o600) }, 0, "mkfifo");
    }
}

fn read_some(fd: i32, buf: &mut [u8]) -> Result<usize, i32> {
    // SAFETY: a buffer of its own size.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 { Err(errno()) } else { Ok(n as usize) }
}

fn write_all(fd: i32, data: &[u8]) -> bool {
    // SAFETY: a buffer of its own size.
    unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) == data.len() as isize }
}

fn setup(c: &Child) -> Verdict {
    let fifo = c.path("fifo");
    let lonely = c.path("lonely");
    // SAFETY: raw opens of our own FIFOs.
    unsafe {
        place(
            libc::open(fifo.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK),
            24,
            false,
        )?;
        place(libc::open(fifo.as_ptr(), libc::O_WRONLY), 25, true)?;
        place(libc::open(fifo.as_ptr(), libc::O_RDWR), 26, false)?;
        place(libc::open(lonely.as_ptr(), libc::O_RDWR), 27, false)?;
    }
    ensure!(
        write_all(25, QUEUED) && write_all(27, b"only rdwr"),
        "write"
    );
    Ok(())
}

fn check_link(c: &Child, fd: i32, name: &str) -> Verdict {
    let want = c.path(name);
    let links = [
        c"/proc/self/fd/24",
        c"/proc/self/fd/25",
        c"/proc/self/fd/26",
        c"/proc/self/fd/27",
    ];
    let mut buf = [0u8; 512];
    // SAFETY: a NUL-terminated path and a buffer of its size.
    let n = unsafe {
        libc::readlink(
            links[(fd - 24) as usize].as_ptr(),
            buf.as_mut_ptr().cast(),
            512,
        )
    };
    ensure!(
        n > 0 && &buf[..n as usize] == want.as_bytes(),
        "fd {fd} names another file"
    );
    Ok(())
}

pub fn victim(c: &Child) -> Verdict {
    setup(c)?;
    c.ready(b"");
    c.wait_go();
    for (fd, name) in [(24, "fifo"), (25, "fifo"), (26, "fifo"), (27, "lonely")] {
        check_link(c, fd, name)?;
    }
    check_flags(24, true, false)?;
    check_flags(25, false, true)?;
    check_flags(26, false, false)?;
    let mut buf = [0u8; 64];
    let n = read_some(24, &mut buf);
    ensure!(
        n == Ok(QUEUED.len()) && &buf[..QUEUED.len()] == QUEUED,
        "queued bytes: {n:?}"
    );
    let again = read_some(24, &mut buf);
    ensure!(again == Err(libc::EAGAIN), "after the queue: {again:?}");
    ensure!(write_all(26, b"x"), "write through fd 26");
    ensure!(
        read_some(24, &mut buf) == Ok(1) && buf[0] == b'x',
        "fd 26 -> fd 24"
    );
    let n = read_some(27, &mut buf);
    ensure!(n == Ok(9) && &buf[..9] == b"only rdwr", "lonely: {n:?}");
    Ok(())
}
