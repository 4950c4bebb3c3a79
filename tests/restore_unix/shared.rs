//! The victim whose sockets span two processes: before the fork it makes
//! at fixed fds a stream pair 20/21, a datagram pair 22/23 and a stream
//! pair 24/25, and queues data both ways in each; the child keeps 21, 23
//! and 24 (inherited: both processes hold 24), the parent 20, 22, 24 and
//! 25. After go each process reads exactly the queued bytes (nothing more
//! waits in the parent's queues), then new messages cross both ways, and
//! the child writes on its 24 what the parent reads on 25: one socket in
//! both. A stream listener 26 on an abstract name both hold: the parent's
//! client 27 was accepted as 28, which the child keeps (with "acc-q"
//! queued), and the child's client 29 waits in the backlog, which the
//! parent accepts after go. The child reports through its exit status.

use super::{abstract_name, accept, connect, expect, listener, pair, send};
use crate::common::victim::{Child, Msg, Verdict};
use crate::raw::errno;
use crate::raw::place;

/// recv of exactly `want` (SO_RCVTIMEO 10 s): a message sent after go.
fn expect_wait(fd: i32, want: &[u8]) -> Verdict {
    let tv = libc::timeval {
        tv_sec: 10,
        tv_usec: 0,
    };
    // SAFETY: a live timeval of the size given.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as u32,
        )
    };
    let mut buf = [0u8; 64];
    // SAFETY: reads stay inside buf.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), want.len(), libc::MSG_WAITALL) };
    ensure!(
        n == want.len() as isize && &buf[..want.len()] == want,
        "fd {fd}: read {:?} ({n}, errno {}), wanted {:?}",
        String::from_utf8_lossy(&buf[..n.max(0) as usize]),
        errno(),
        String::from_utf8_lossy(want)
    );
    Ok(())
}

/// Nothing more waits in `fd`'s receive queue.
fn empty(fd: i32) -> Verdict {
    let mut b = [0u8; 64];
    // SAFETY: reads stay inside b.
    let n = unsafe { libc::recv(fd, b.as_mut_ptr().cast(), b.len(), libc::MSG_DONTWAIT) };
    ensure!(
        n < 0 && errno() == libc::EAGAIN,
        "fd {fd}: {n} more bytes queued: {:?}",
        String::from_utf8_lossy(&b[..n.max(0) as usize])
    );
    Ok(())
}

fn close(fds: &[i32]) {
    for fd in fds {
        // SAFETY: our own fds.
        unsafe { libc::close(*fd) };
    }
}

fn child_checks() -> Verdict {
    expect(21, b"p2c-stream", false)?;
    expect(23, b"dg-p2c", false)?;
    expect_wait(21, b"p2c-new")?;
    expect_wait(23, b"dg-p-new")?;
    send(21, b"c2p-new")?;
    send(23, b"dg-c-new")?;
    send(24, b"child-on-24")?;
    expect(28, b"acc-q", false)?;
    send(28, b"acc-back")?;
    expect_wait(29, b"pend")
}

fn child(c: &Child, [unused, ready]: [i32; 2]) -> ! {
    close(&[20, 22, 25, 27, unused]);
    // SAFETY: one byte from a live buffer; then our own fd.
    unsafe {
        libc::write(ready, b"x".as_ptr().cast(), 1);
        libc::close(ready);
    }
    c.wait_go();
    let code = match child_checks() {
        Ok(()) => 0,
        Err(_) => 3,
    };
    // SAFETY: exits the child only.
    unsafe { libc::_exit(code) }
}

fn parent_checks(pid: i32) -> Verdict {
    expect(20, b"c2p-stream", false)?;
    expect(22, b"dg-c2p", false)?;
    expect(22, b"dg-c2p-2", false)?;
    expect(24, b"to-24", false)?;
    expect(25, b"to-25", false)?;
    for fd in [20, 22, 24, 25] {
        empty(fd)?;
    }
    send(20, b"p2c-new")?;
    send(22, b"dg-p-new")?;
    expect_wait(20, b"c2p-new")?;
    expect_wait(22, b"dg-c-new")?;
    expect_wait(25, b"child-on-24")?;
    expect_wait(27, b"acc-back")?;
    let pending = accept(26)?;
    send(pending, b"pend")?;
    let mut status = 0;
    // SAFETY: our own child.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    ensure!(
        r == pid && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child {pid}: waitpid {r}, status {status:#x}"
    );
    Ok(())
}

pub fn shared_sockets_victim(c: &Child) -> Verdict {
    pair(libc::SOCK_STREAM, 20, 21)?;
    pair(libc::SOCK_DGRAM, 22, 23)?;
    pair(libc::SOCK_STREAM, 24, 25)?;
    send(21, b"c2p-stream")?;
    send(20, b"p2c-stream")?;
    send(23, b"dg-c2p")?;
    send(23, b"dg-c2p-2")?;
    send(22, b"dg-p2c")?;
    send(25, b"to-24")?;
    send(24, b"to-25")?;
    let mut buf = [0u8; 64];
    let name = abstract_name(&mut buf);
    listener(libc::SOCK_STREAM, name, 26)?;
    place(connect(libc::SOCK_STREAM, name)?, 27, false)?;
    place(accept(26)?, 28, false)?;
    place(connect(libc::SOCK_STREAM, name)?, 29, false)?;
    send(27, b"acc-q")?;
    let mut p = [0i32; 2];
    // SAFETY: two ints for pipe.
    let r = unsafe { libc::pipe(p.as_mut_ptr()) };
    ensure!(r == 0, "pipe: errno {}", errno());
    // SAFETY: fork in the single-threaded victim; the child runs raw calls.
    let pid = unsafe { libc::fork() };
    ensure!(pid >= 0, "fork: errno {}", errno());
    if pid == 0 {
        child(c, p);
    }
    close(&[21, 23, 28, 29, p[1]]);
    let mut b = [0u8; 1];
    // SAFETY: one byte into b: the child closed what it does not keep.
    let n = unsafe { libc::read(p[0], b.as_mut_ptr().cast(), 1) };
    close(&[p[0]]);
    ensure!(n == 1, "the child's ready byte: {n}, errno {}", errno());
    c.ready(pid.to_string().as_bytes());
    c.wait_go();
    parent_checks(pid).map_err(|e| Msg::new(format_args!("parent: {}", e.as_str())))
}
