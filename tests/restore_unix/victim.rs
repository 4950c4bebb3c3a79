//! The unix socket victim. Before the checkpoint it builds, at fixed fds:
//! - 20/21 a stream pair: 21 sends "F" with the file `inflight` in
//!   SCM_RIGHTS, then "stream-one" and "two", then shuts down writing;
//!   20 sends "back"; 20 is non-blocking with SO_SNDBUF 65536.
//! - 22/23 a datagram pair: 23 sends "d1", "" and "dgram-three", then
//!   "sock" carrying 32, one end of the stream pair 31/32, closed after
//!   31 sent it "via-flight"; then "pipe" carrying the read end of a pipe
//!   holding "pipe-bytes" (no writer left) and "wpipe" carrying the write
//!   end of the pipe 35/36 the victim holds.
//! - 24/25 a seqpacket pair: 24 sends "sp-a" and "sp-bb"; 25 has
//!   SO_PEEK_OFF 0 and SO_PASSCRED.
//! - 26 a stream listener on the path `sock` (backlog 4), 27 a client
//!   accepted as 28 (27 sent "to-server"), 29 a client not accepted yet.
//! - 30 a seqpacket listener on an abstract name.
//! - 33 a datagram socket bound to the path `dsock` (SO_RCVBUF 32768),
//!   34 connected to it one way, having sent "one-way".
//!
//! After go it checks every queue byte for byte, in order, with its
//! boundaries; the file in flight reads `inflight`'s text; the socket in
//! flight reads its queued bytes and talks to its peer; shutdown holds
//! (end of file after the data, EPIPE on the shut side); the options are
//! as set; both listeners accept new connections at their names and the
//! pending one.

use std::ffi::CStr;

#[path = "shared.rs"]
mod shared;
pub use shared::shared_sockets_victim;

use crate::common::victim::{Child, Msg, Verdict};
use crate::raw::{check_flags, errno, place};

pub const FLIGHT_TEXT: &[u8] = b"in-flight file\n";

pub fn prepare(dir: &std::path::Path) {
    std::fs::write(dir.join("inflight"), FLIGHT_TEXT).unwrap();
}

fn pair(kind: i32, a: i32, b: i32) -> Verdict {
    let mut sv = [0i32; 2];
    // SAFETY: two ints for socketpair.
    let r = unsafe { libc::socketpair(libc::AF_UNIX, kind, 0, sv.as_mut_ptr()) };
    ensure!(r == 0, "socketpair: errno {}", errno());
    place(sv[0], a, false)?;
    place(sv[1], b, false)
}

fn send(fd: i32, data: &[u8]) -> Verdict {
    // SAFETY: a live buffer.
    let n = unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), libc::MSG_NOSIGNAL) };
    ensure!(
        n == data.len() as isize,
        "send on fd {fd}: {n}, errno {}",
        errno()
    );
    Ok(())
}

/// recvmsg of at most `buf.len()` bytes: (bytes, fd received or -1).
fn recv(fd: i32, buf: &mut [u8], flags: i32) -> (isize, i32) {
    let mut ctl = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: zeroed msghdr, then live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl.as_mut_ptr().cast();
    msg.msg_controllen = 64;
    // SAFETY: as above.
    let n = unsafe { libc::recvmsg(fd, &mut msg, flags) };
    let rights = (libc::SOL_SOCKET as u64) | ((libc::SCM_RIGHTS as u64) << 32);
    let got = if n >= 0 && msg.msg_controllen >= 20 && ctl[1] == rights {
        (ctl[2] & 0xffff_ffff) as i32
    } else {
        -1
    };
    (n, got)
}

fn send_fd(sock: i32, data: &[u8], pass: i32) -> Verdict {
    let mut ctl = [0u64; 3];
    ctl[0] = 20;
    ctl[1] = (libc::SOL_SOCKET as u64) | ((libc::SCM_RIGHTS as u64) << 32);
    ctl[2] = pass as u32 as u64;
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: zeroed msghdr, then live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl.as_mut_ptr().cast();
    msg.msg_controllen = 24;
    // SAFETY: as above.
    let n = unsafe { libc::sendmsg(sock, &msg, 0) };
    ensure!(
        n == data.len() as isize,
        "sendmsg with an fd: errno {}",
        errno()
    );
    Ok(())
}

fn sockopt(fd: i32, name: i32) -> i32 {
    let mut v = 0i32;
    let mut len = 4u32;
    // SAFETY: 4 writable bytes.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            (&mut v as *mut i32).cast(),
            &mut len,
        )
    };
    if r == 0 { v } else { -999 }
}

fn setopt(fd: i32, name: i32, v: i32) -> Verdict {
    // SAFETY: 4 readable bytes.
    let r = unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, name, (&v as *const i32).cast(), 4) };
    ensure!(r == 0, "setsockopt {name}: errno {}", errno());
    Ok(())
}

fn addr(name: &[u8]) -> (libc::sockaddr_un, u32) {
    // SAFETY: an all-zero sockaddr_un is valid.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as u16;
    for (i, b) in name.iter().enumerate() {
        a.sun_path[i] = *b as libc::c_char;
    }
    let len = 2 + name.len() + usize::from(name.first() != Some(&0));
    (a, len as u32)
}

fn listener(kind: i32, name: &[u8], fd: i32) -> Verdict {
    // SAFETY: plain socket calls on live structs.
    unsafe {
        let s = libc::socket(libc::AF_UNIX, kind, 0);
        let (a, len) = addr(name);
        ensure!(
            libc::bind(s, (&a as *const libc::sockaddr_un).cast(), len) == 0,
            "bind: errno {}",
            errno()
        );
        ensure!(libc::listen(s, 4) == 0, "listen: errno {}", errno());
        place(s, fd, false)
    }
}

fn connect(kind: i32, name: &[u8]) -> Result<i32, Msg> {
    // SAFETY: plain socket calls on live structs.
    unsafe {
        let s = libc::socket(libc::AF_UNIX, kind, 0);
        let (a, len) = addr(name);
        let r = libc::connect(s, (&a as *const libc::sockaddr_un).cast(), len);
        ensure!(r == 0, "connect: errno {}", errno());
        Ok(s)
    }
}

fn accept(l: i32) -> Result<i32, Msg> {
    // SAFETY: no address asked.
    let s = unsafe { libc::accept(l, std::ptr::null_mut(), std::ptr::null_mut()) };
    ensure!(s >= 0, "accept on {l}: errno {}", errno());
    Ok(s)
}

fn abstract_name(buf: &mut [u8; 64]) -> &[u8] {
    let prefix = b"\0crest-unix-test-";
    buf[..prefix.len()].copy_from_slice(prefix);
    let mut n = crate::common::victim::getpid() as u32;
    let mut i = prefix.len();
    while n > 0 {
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        i += 1;
    }
    &buf[..i]
}

fn setup(c: &Child, path: &CStr, abs: &[u8]) -> Verdict {
    pair(libc::SOCK_STREAM, 20, 21)?;
    let f = c.path("inflight");
    // SAFETY: a live path.
    let file = unsafe { libc::open(f.as_ptr(), libc::O_RDONLY) };
    send_fd(21, b"F", file)?;
    // SAFETY: our own fd, now in flight.
    unsafe { libc::close(file) };
    send(21, b"stream-one")?;
    send(21, b"two")?;
    // SAFETY: our own socket.
    unsafe { libc::shutdown(21, libc::SHUT_WR) };
    send(20, b"back")?;
    setopt(20, libc::SO_SNDBUF, 65536)?;
    // SAFETY: our own fd.
    unsafe { libc::fcntl(20, libc::F_SETFL, libc::O_NONBLOCK) };
    pair(libc::SOCK_DGRAM, 22, 23)?;
    for m in [&b"d1"[..], b"", b"dgram-three"] {
        send(23, m)?;
    }
    // A socket in flight, with bytes of its own queued: 32 goes into
    // 22's queue and is closed here; its peer 31 stays.
    pair(libc::SOCK_STREAM, 31, 32)?;
    send(31, b"via-flight")?;
    send_fd(23, b"sock", 32)?;
    // SAFETY: our own fd, now in flight.
    unsafe { libc::close(32) };
    pipes_in_flight()?;
    pair(libc::SOCK_SEQPACKET, 24, 25)?;
    send(24, b"sp-a")?;
    send(24, b"sp-bb")?;
    setopt(25, libc::SO_PEEK_OFF, 0)?;
    setopt(25, libc::SO_PASSCRED, 1)?;
    listener(libc::SOCK_STREAM, path.to_bytes(), 26)?;
    place(connect(libc::SOCK_STREAM, path.to_bytes())?, 27, false)?;
    place(accept(26)?, 28, false)?;
    send(27, b"to-server")?;
    place(connect(libc::SOCK_STREAM, path.to_bytes())?, 29, false)?;
    listener(libc::SOCK_SEQPACKET, abs, 30)?;
    dgram_server(c)
}

/// 33: an unconnected datagram socket bound to the path `dsock`, with
/// SO_RCVBUF 32768; 34 connected to it one way, having sent "one-way".
fn dgram_server(c: &Child) -> Verdict {
    let path = c.path("dsock");
    // SAFETY: plain socket calls on live structs.
    unsafe {
        let s = libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0);
        let (a, len) = addr(path.to_bytes());
        let r = libc::bind(s, (&a as *const libc::sockaddr_un).cast(), len);
        ensure!(r == 0, "bind dsock: errno {}", errno());
        place(s, 33, false)?;
    }
    setopt(33, libc::SO_RCVBUF, 32768)?;
    place(connect(libc::SOCK_DGRAM, path.to_bytes())?, 34, false)?;
    send(34, b"one-way")
}

fn check_dgram_server(rcvbuf: i32) -> Verdict {
    expect(33, b"one-way", false)?;
    send(34, b"again")?;
    expect(33, b"again", false)?;
    let now = sockopt(33, libc::SO_RCVBUF);
    ensure!(now == rcvbuf, "SO_RCVBUF {now} != {rcvbuf}");
    Ok(())
}

/// A pipe only in flight (its read end, its bytes "pipe-bytes", no
/// writer left), then the write end of the pipe 35/36 the victim holds.
fn pipes_in_flight() -> Verdict {
    let mut p = [0i32; 2];
    // SAFETY: two ints for pipe.
    ensure!(unsafe { libc::pipe(p.as_mut_ptr()) } == 0, "pipe");
    // SAFETY: live buffers and our own fds.
    unsafe {
        libc::write(p[1], b"pipe-bytes".as_ptr().cast(), 10);
        libc::close(p[1]);
    }
    send_fd(23, b"pipe", p[0])?;
    // SAFETY: our own fd, now in flight.
    unsafe { libc::close(p[0]) };
    // SAFETY: two ints for pipe.
    ensure!(unsafe { libc::pipe(p.as_mut_ptr()) } == 0, "pipe");
    place(p[0], 35, false)?;
    place(p[1], 36, false)?;
    send_fd(23, b"wpipe", 36)
}

fn check_pipes_in_flight() -> Verdict {
    let r = expect(22, b"pipe", true)?;
    let mut buf = [0u8; 32];
    // SAFETY: our own fd and buffer.
    let n = unsafe { libc::read(r, buf.as_mut_ptr().cast(), 32) };
    ensure!(
        n == 10 && &buf[..10] == b"pipe-bytes",
        "pipe in flight reads {n}"
    );
    // SAFETY: as above.
    let n = unsafe { libc::read(r, buf.as_mut_ptr().cast(), 32) };
    ensure!(
        n == 0,
        "pipe in flight: end of file after its bytes, got {n}"
    );
    let w = expect(22, b"wpipe", true)?;
    // SAFETY: live buffers and our own fds.
    let n = unsafe { libc::write(w, b"through".as_ptr().cast(), 7) };
    ensure!(n == 7, "write into the pipe end in flight");
    // SAFETY: as above.
    let n = unsafe { libc::read(35, buf.as_mut_ptr().cast(), 32) };
    ensure!(n == 7 && &buf[..7] == b"through", "the held pipe reads {n}");
    Ok(())
}

fn expect(fd: i32, want: &[u8], with_fd: bool) -> Result<i32, Msg> {
    let mut buf = [0u8; 64];
    let (n, got) = recv(fd, &mut buf[..want.len().max(1)], libc::MSG_DONTWAIT);
    ensure!(
        n == want.len() as isize,
        "fd {fd}: read {n} bytes (errno {}), wanted {:?}",
        errno(),
        core::str::from_utf8(want)
    );
    ensure!(
        &buf[..want.len()] == want,
        "fd {fd}: read {:?}, wanted {:?}",
        core::str::from_utf8(&buf[..want.len()]),
        core::str::from_utf8(want)
    );
    ensure!(
        (got >= 0) == with_fd,
        "fd {fd}: fd in flight {got}, expected one: {with_fd}"
    );
    Ok(got)
}

fn check_stream(sndbuf: i32) -> Verdict {
    let file = expect(20, b"F", true)?;
    let mut buf = [0u8; 64];
    // SAFETY: our own fd and buffer.
    let n = unsafe { libc::pread(file, buf.as_mut_ptr().cast(), 64, 0) };
    ensure!(
        n >= 0 && &buf[..n as usize] == FLIGHT_TEXT,
        "the file in flight reads {n} bytes {:?}",
        core::str::from_utf8(&buf[..n.max(0) as usize])
    );
    expect(20, b"stream-onetwo", false)?;
    let (n, _) = recv(20, &mut buf, 0);
    ensure!(
        n == 0,
        "after the data and SHUT_WR: {n} (errno {})",
        errno()
    );
    // SAFETY: a live buffer.
    let w = unsafe { libc::send(21, b"x".as_ptr().cast(), 1, libc::MSG_NOSIGNAL) };
    ensure!(
        w == -1 && errno() == libc::EPIPE,
        "send on the shut side: {w}, errno {}",
        errno()
    );
    expect(21, b"back", false)?;
    check_flags(20, true, false)?;
    check_flags(21, false, false)?;
    ensure!(
        sockopt(20, libc::SO_SNDBUF) == sndbuf,
        "SO_SNDBUF {} != {sndbuf}",
        sockopt(20, libc::SO_SNDBUF)
    );
    Ok(())
}

fn check_packets() -> Verdict {
    for m in [&b"d1"[..], b"", b"dgram-three"] {
        let mut buf = [0u8; 64];
        let (n, _) = recv(22, &mut buf, libc::MSG_DONTWAIT);
        ensure!(
            n == m.len() as isize && &buf[..m.len()] == m,
            "datagram {:?}: got {n}",
            core::str::from_utf8(m)
        );
    }
    let carried = expect(22, b"sock", true)?;
    expect(carried, b"via-flight", false)?;
    send(carried, b"pong")?;
    expect(31, b"pong", false)?;
    check_pipes_in_flight()?;
    let mut buf = [0u8; 8];
    let (n, _) = recv(22, &mut buf, libc::MSG_DONTWAIT);
    ensure!(
        n == -1 && errno() == libc::EAGAIN,
        "datagram queue not empty: {n}"
    );
    ensure!(
        sockopt(25, libc::SO_PEEK_OFF) == 0,
        "SO_PEEK_OFF {}",
        sockopt(25, libc::SO_PEEK_OFF)
    );
    ensure!(sockopt(25, libc::SO_PASSCRED) == 1, "SO_PASSCRED lost");
    ensure!(sockopt(24, libc::SO_PASSCRED) == 0, "SO_PASSCRED on 24");
    // SO_PEEK_OFF 0: a peek moves the offset, the read starts at the head.
    let (n, _) = recv(25, &mut buf, libc::MSG_PEEK | libc::MSG_DONTWAIT);
    ensure!(n == 4 && &buf[..4] == b"sp-a", "peek: {n}");
    ensure!(
        sockopt(25, libc::SO_PEEK_OFF) == 4,
        "peek offset after a peek"
    );
    setopt(25, libc::SO_PEEK_OFF, -1)?;
    expect(25, b"sp-a", false)?;
    expect(25, b"sp-bb", false)?;
    Ok(())
}

fn check_listeners(path: &CStr, abs: &[u8]) -> Verdict {
    expect(28, b"to-server", false)?;
    send(28, b"reply")?;
    expect(27, b"reply", false)?;
    let pending = accept(26)?;
    send(29, b"late")?;
    expect(pending, b"late", false)?;
    let fresh = connect(libc::SOCK_STREAM, path.to_bytes())?;
    let other = accept(26)?;
    send(fresh, b"new")?;
    expect(other, b"new", false)?;
    let sp = connect(libc::SOCK_SEQPACKET, abs)?;
    let spa = accept(30)?;
    send(sp, b"abs")?;
    expect(spa, b"abs", false)?;
    Ok(())
}

pub fn victim(c: &Child) -> Verdict {
    let path = c.path("sock");
    let mut name = [0u8; 64];
    let abs = abstract_name(&mut name);
    setup(c, &path, abs)?;
    let sndbuf = sockopt(20, libc::SO_SNDBUF);
    let rcvbuf = sockopt(33, libc::SO_RCVBUF);
    c.ready(b"");
    c.wait_go();
    check_stream(sndbuf)?;
    check_packets()?;
    check_dgram_server(rcvbuf)?;
    check_listeners(&path, abs)
}

/// Holds fd 20 connected to the listener at the abstract name the test
/// made (`\0crest-unix-ext-<test pid>`, given in the file `ext`).
pub fn external_victim(c: &Child) -> Verdict {
    let mut buf = [0u8; 64];
    let name = crate::common::victim::read_file(&c.path("ext"), &mut buf);
    let mut full = [0u8; 65];
    full[1..1 + name.len()].copy_from_slice(name);
    place(
        connect(libc::SOCK_STREAM, &full[..1 + name.len()])?,
        20,
        false,
    )?;
    c.ready(b"");
    c.wait_go();
    send(20, b"still-here")
}

/// Holds a stream pair 20-21 whose queue at 21 is "ab", an out-of-band
/// "c", then "de": the dump must refuse it; afterwards the byte and the
/// data are still there, in order.
pub fn oob_victim(c: &Child) -> Verdict {
    pair(libc::SOCK_STREAM, 20, 21)?;
    send(20, b"ab")?;
    // SAFETY: a live one-byte buffer.
    let n = unsafe { libc::send(20, b"c".as_ptr().cast(), 1, libc::MSG_OOB) };
    ensure!(n == 1, "send MSG_OOB: {n}, errno {}", errno());
    send(20, b"de")?;
    c.ready(b"");
    c.wait_go();
    let mut buf = [0u8; 8];
    let (n, _) = recv(21, &mut buf, libc::MSG_OOB | libc::MSG_DONTWAIT);
    ensure!(n == 1 && buf[0] == b'c', "the out-of-band byte: {n}");
    let (n, _) = recv(21, &mut buf, libc::MSG_DONTWAIT);
    ensure!(&buf[..n.max(0) as usize] == b"ab", "before the mark: {n}");
    let (n, _) = recv(21, &mut buf, libc::MSG_DONTWAIT);
    ensure!(&buf[..n.max(0) as usize] == b"de", "after the mark: {n}");
    Ok(())
}
