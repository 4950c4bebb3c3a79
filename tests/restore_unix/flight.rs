//! Victims for fds in flight whose position or identity matters.
//!
//! [`stream_fds_victim`]: a stream queue carrying fds in the middle of its
//! bytes. Each queue is filled by the same sends: "aaa", "bbb" with the
//! read end of the held pipe 40/41, "cc" with the held file 42, "ddd",
//! 50000 bytes with 40 and 42 (the kernel cuts such a send into skbs, the
//! fds on the first), "e", "ff" with the write end 41. Before the
//! checkpoint the victim fills a scratch pair per reading style (reads of
//! 2, 5 and 65536 bytes) and reads it: the kernel's own answer, the ground
//! truth. Then it fills the pairs 20/21, 22/23 and 24/25 the same way and
//! waits. After go it reads 20, 22 and 24 in the three styles and checks
//! that every read returns the same bytes with the same fds (the same
//! files: the held pipe's ends, the open file of fd 42, whose offset a
//! seek on the file in flight moves) as the scratch reads did.
//!
//! [`held_pipe_victim`]: a datagram pair 20/21 both processes of a tree
//! hold, whose queue carries the read end of the pipe 40/41 (holding
//! "pipe-bytes") and one end 30 of the stream pair 30/31. The parent
//! keeps 40 and 31, the child keeps 41 and 30. After go the parent
//! receives the message: the pipe end in flight is the held pipe (same
//! inode as 40, its bytes first, then what the child writes on 41 after
//! go) and the socket in flight is the child's 30 (same inode; the parent
//! reads on 31 what the child writes on 30). A second message carries
//! the parent's fd 42: after restore the file in flight is 42's open file
//! (a seek on it moves 42's offset).

use crate::common::victim::{Child, Msg, Verdict};
use crate::raw::{errno, place};

/// The big send's size: more than one skb.
const BIG: usize = 50000;
/// The reading styles: bytes asked per read.
const STYLES: [usize; 3] = [2, 5, 65536];
/// Fd events remembered per style for a failure message.
const EVENTS: usize = 8;

fn socketpair(kind: i32, a: i32, b: i32) -> Verdict {
    let mut sv = [0i32; 2];
    // SAFETY: two ints for socketpair.
    let r = unsafe { libc::socketpair(libc::AF_UNIX, kind, 0, sv.as_mut_ptr()) };
    ensure!(r == 0, "socketpair: errno {}", errno());
    place(sv[0], a, false)?;
    place(sv[1], b, false)
}

/// One sendmsg of `data` with `fds` in SCM_RIGHTS (none when empty).
fn send_fds(fd: i32, data: &[u8], fds: &[i32]) -> Verdict {
    let mut ctl = [0u64; 4];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: zeroed msghdr, then live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let len = 16 + 4 * fds.len();
        ctl[0] = len as u64;
        ctl[1] = (libc::SOL_SOCKET as u64) | ((libc::SCM_RIGHTS as u64) << 32);
        ctl[2] = fds[0] as u32 as u64 | fds.get(1).map_or(0, |f| (*f as u32 as u64) << 32);
        msg.msg_control = ctl.as_mut_ptr().cast();
        msg.msg_controllen = ((len + 7) & !7) as _;
    }
    // SAFETY: as above.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) };
    ensure!(
        n == data.len() as isize,
        "sendmsg on fd {fd}: {n}, errno {}",
        errno()
    );
    Ok(())
}

/// recvmsg of at most `buf.len()` bytes: (bytes, fds received, count).
fn recv_fds(fd: i32, buf: &mut [u8]) -> (isize, [i32; 2], usize) {
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
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    let rights = (libc::SOL_SOCKET as u64) | ((libc::SCM_RIGHTS as u64) << 32);
    let mut fds = [-1i32; 2];
    let mut count = 0;
    if n >= 0 && msg.msg_controllen >= 20 && ctl[1] == rights {
        count = ((ctl[0] as usize) - 16) / 4;
        fds[0] = (ctl[2] & 0xffff_ffff) as i32;
        if count > 1 {
            fds[1] = (ctl[2] >> 32) as i32;
        }
    }
    (n, fds, count)
}

fn fill(sender: i32) -> Verdict {
    static BIG_DATA: [u8; BIG] = [b'x'; BIG];
    send_fds(sender, b"aaa", &[])?;
    send_fds(sender, b"bbb", &[40])?;
    send_fds(sender, b"cc", &[42])?;
    send_fds(sender, b"ddd", &[])?;
    send_fds(sender, &BIG_DATA, &[40, 42])?;
    send_fds(sender, b"e", &[])?;
    send_fds(sender, b"ff", &[41])
}

/// st_ino of `fd`, 0 when it is not open.
fn ino(fd: i32) -> u64 {
    // SAFETY: an all-zero stat is valid; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: our own fd and a live stat.
    let r = unsafe { libc::fstat(fd, &mut st) };
    if r == 0 { st.st_ino } else { 0 }
}

/// Whether `fd` is the open file of fd 42 (not only the same file): a
/// seek on it moves 42's offset too.
fn shares_42(fd: i32) -> bool {
    // SAFETY: seeks on our own fds.
    unsafe {
        let before = libc::lseek(42, 0, libc::SEEK_CUR);
        libc::lseek(fd, 1, libc::SEEK_CUR);
        libc::lseek(42, 0, libc::SEEK_CUR) == before + 1
    }
}

/// Which held file `fd` is: 1 the pipe's read end, 2 its write end, 3 the
/// open file of fd 42, 4 the file of 42 opened apart; 9 another. Closes it.
fn label(fd: i32) -> u64 {
    let i = ino(fd);
    // SAFETY: integer fcntl on our own fd.
    let acc = unsafe { libc::fcntl(fd, libc::F_GETFL) } & libc::O_ACCMODE;
    let l = match (i == ino(40), i == ino(42), acc) {
        (true, _, libc::O_RDONLY) => 1,
        (true, _, libc::O_WRONLY) => 2,
        (_, true, _) if shares_42(fd) => 3,
        (_, true, _) => 4,
        _ => 9,
    };
    // SAFETY: the fd came with the message and is ours.
    unsafe { libc::close(fd) };
    l
}

/// What reading a queue in one style returned: every read folded into a
/// hash (its length, bytes and fds), the number of reads, and the first
/// reads that brought fds: (byte position, length, labels).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Pattern {
    hash: u64,
    reads: usize,
    events: [(usize, isize, u64); EVENTS],
}

fn mix(h: u64, v: u64) -> u64 {
    (h ^ v).wrapping_mul(0x100_0000_01b3)
}

/// Reads `fd` to its end `step` bytes at a time.
fn read_pattern(fd: i32, step: usize) -> Result<Pattern, Msg> {
    let mut buf = [0u8; 65536];
    let mut p = Pattern {
        hash: 0xcbf2_9ce4_8422_2325,
        reads: 0,
        events: [(0, 0, 0); EVENTS],
    };
    let (mut pos, mut seen) = (0usize, 0usize);
    loop {
        let (n, fds, count) = recv_fds(fd, &mut buf[..step]);
        if n < 0 && errno() == libc::EAGAIN {
            return Ok(p);
        }
        ensure!(n > 0, "fd {fd}: read {n}, errno {}", errno());
        let labels = fds[..count.min(2)]
            .iter()
            .fold(count as u64, |a, f| a * 16 + label(*f));
        p.hash = mix(mix(p.hash, n as u64), labels);
        for b in &buf[..n as usize] {
            p.hash = mix(p.hash, u64::from(*b));
        }
        if count > 0 && seen < EVENTS {
            p.events[seen] = (pos, n, labels);
            seen += 1;
        }
        p.reads += 1;
        pos += n as usize;
    }
}

fn held_files(c: &Child) -> Verdict {
    let mut p = [0i32; 2];
    // SAFETY: two ints for pipe.
    let r = unsafe { libc::pipe(p.as_mut_ptr()) };
    ensure!(r == 0, "pipe: errno {}", errno());
    place(p[0], 40, false)?;
    place(p[1], 41, false)?;
    let path = c.path("inflight");
    // SAFETY: a live C string.
    let f = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
    place(f, 42, false)
}

/// The ground truth of each style, read from scratch pairs at 50/51.
fn reference() -> Result<[Pattern; 3], Msg> {
    let mut out = [Pattern {
        hash: 0,
        reads: 0,
        events: [(0, 0, 0); EVENTS],
    }; 3];
    for (i, step) in STYLES.iter().enumerate() {
        socketpair(libc::SOCK_STREAM, 50, 51)?;
        fill(51)?;
        out[i] = read_pattern(50, *step)?;
        // SAFETY: our own fds.
        unsafe {
            libc::close(50);
            libc::close(51);
        }
    }
    Ok(out)
}

pub fn stream_fds_victim(c: &Child) -> Verdict {
    held_files(c)?;
    let want = reference()?;
    ensure!(
        want[0].events[1].0 == 6 && want[0].events[1].2 == 0x13,
        "the kernel's own 2-byte reads: {:?}",
        want[0]
    );
    for i in 0..3 {
        let fd = 20 + 2 * i;
        socketpair(libc::SOCK_STREAM, fd, fd + 1)?;
        fill(fd + 1)?;
    }
    c.ready(b"stream-fds");
    c.wait_go();
    for (i, step) in STYLES.iter().enumerate() {
        let got = read_pattern(20 + 2 * i as i32, *step)?;
        ensure!(
            got == want[i],
            "reads of {step} bytes: got {got:?}, the kernel gave {:?}",
            want[i]
        );
    }
    Ok(())
}

/// The child: keeps 20, 41 and 30; writes on 41 and 30 after go.
fn held_pipe_child(c: &Child, [unused, ready]: [i32; 2]) -> ! {
    for fd in [21, 31, 40, 42, unused] {
        // SAFETY: our own fds.
        unsafe { libc::close(fd) };
    }
    // SAFETY: one byte from a live buffer; then our own fd.
    unsafe {
        libc::write(ready, b"x".as_ptr().cast(), 1);
        libc::close(ready);
    }
    c.wait_go();
    // SAFETY: live buffers on our own fds.
    let ok = unsafe {
        libc::write(41, b"+child".as_ptr().cast(), 6) == 6
            && libc::write(30, b"on-30".as_ptr().cast(), 5) == 5
    };
    // The parent looks at this process's fd 30 first, then says bye.
    let ok = ok && read_wait(30, b"bye").is_ok();
    // SAFETY: exits the child only.
    unsafe { libc::_exit(if ok { 0 } else { 3 }) }
}

/// Copies `b` into `buf` at `at`; returns the end.
fn put(buf: &mut [u8], at: usize, b: &[u8]) -> usize {
    buf[at..at + b.len()].copy_from_slice(b);
    at + b.len()
}

/// Writes `n` in decimal into `buf` at `at`; returns the end.
fn put_num(buf: &mut [u8], at: usize, n: u64) -> usize {
    let mut digits = [0u8; 20];
    let (mut i, mut v) = (digits.len(), n);
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    put(buf, at, &digits[i..])
}

/// readlink of /proc/`pid`/fd/30 into `out` (no allocation: a fork of
/// the threaded harness): its length.
fn held_link(pid: i32, out: &mut [u8; 64]) -> usize {
    let mut path = [0u8; 48];
    let e = put(&mut path, 0, b"/proc/");
    let e = put_num(&mut path, e, pid as u64);
    put(&mut path, e, b"/fd/30\0");
    // SAFETY: a NUL-terminated path and a live buffer of the size given.
    let n = unsafe { libc::readlink(path.as_ptr().cast(), out.as_mut_ptr().cast(), out.len()) };
    n.max(0) as usize
}

/// Reads exactly `want` from `fd`, waiting up to 10 s.
fn read_wait(fd: i32, want: &[u8]) -> Verdict {
    let mut buf = [0u8; 64];
    let mut got = 0;
    for _ in 0..1000 {
        // SAFETY: reads stay inside buf.
        let n = unsafe {
            libc::recv(
                fd,
                buf[got..].as_mut_ptr().cast(),
                want.len() - got,
                libc::MSG_DONTWAIT,
            )
        };
        let n = if n < 0 {
            // SAFETY: reads stay inside buf (recv is for sockets only).
            unsafe { libc::read(fd, buf[got..].as_mut_ptr().cast(), want.len() - got) }
        } else {
            n
        };
        if n > 0 {
            got += n as usize;
        }
        if got == want.len() {
            break;
        }
        // SAFETY: a plain sleep.
        unsafe { libc::usleep(10_000) };
    }
    ensure!(
        &buf[..got] == want,
        "fd {fd}: read {:?}, wanted {:?}",
        String::from_utf8_lossy(&buf[..got]),
        String::from_utf8_lossy(want)
    );
    Ok(())
}

fn held_pipe_parent(c: &Child, child: i32) -> Verdict {
    let mut buf = [0u8; 16];
    let (n, fds, count) = recv_fds(20, &mut buf);
    ensure!(n == 1 && count == 2, "the message: {n} bytes, {count} fds");
    let (pipe, sock) = (fds[0], fds[1]);
    ensure!(
        ino(pipe) == ino(40),
        "the pipe in flight is not the held pipe"
    );
    let mut link = [0u8; 64];
    let n = held_link(child, &mut link);
    let mut want = [0u8; 40];
    let w = put(&mut want, 0, b"socket:[");
    let w = put_num(&mut want, w, ino(sock));
    let w = put(&mut want, w, b"]");
    ensure!(
        link[..n] == want[..w],
        "the socket in flight is {:?}, the child's 30 is {:?}",
        String::from_utf8_lossy(&want[..w]),
        String::from_utf8_lossy(&link[..n])
    );
    // SAFETY: the pipe is non-blocking below; reads stay inside buf.
    unsafe { libc::fcntl(pipe, libc::F_SETFL, libc::O_NONBLOCK) };
    read_wait(pipe, b"pipe-bytes+child")?;
    read_wait(31, b"on-30")?;
    let (n, fds, count) = recv_fds(20, &mut buf);
    ensure!(
        n == 1 && count == 1,
        "the second message: {n} bytes, {count} fds"
    );
    ensure!(
        label(fds[0]) == 3,
        "the file in flight is not fd 42's open file"
    );
    // SAFETY: a live buffer on our own fd.
    let bye = unsafe { libc::write(31, b"bye".as_ptr().cast(), 3) };
    ensure!(bye == 3, "bye: errno {}", errno());
    let (n, _, _) = recv_fds(21, &mut buf);
    ensure!(n == 4 && &buf[..4] == b"back", "21 reads {n} bytes");
    let mut status = 0;
    // SAFETY: our own child.
    let r = unsafe { libc::waitpid(child, &mut status, 0) };
    ensure!(
        r == child && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child {child}: waitpid {r}, status {status:#x}"
    );
    let _ = c;
    Ok(())
}

pub fn held_pipe_victim(c: &Child) -> Verdict {
    held_files(c)?;
    // SAFETY: live buffer on our own fd.
    let w = unsafe { libc::write(41, b"pipe-bytes".as_ptr().cast(), 10) };
    ensure!(w == 10, "write to the pipe: errno {}", errno());
    socketpair(libc::SOCK_DGRAM, 20, 21)?;
    socketpair(libc::SOCK_STREAM, 30, 31)?;
    send_fds(21, b"M", &[40, 30])?;
    send_fds(21, b"G", &[42])?;
    send_fds(20, b"back", &[])?;
    let mut p = [0i32; 2];
    // SAFETY: two ints for pipe.
    let r = unsafe { libc::pipe(p.as_mut_ptr()) };
    ensure!(r == 0, "pipe: errno {}", errno());
    // SAFETY: fork in the single-threaded victim; the child runs raw calls.
    let pid = unsafe { libc::fork() };
    ensure!(pid >= 0, "fork: errno {}", errno());
    if pid == 0 {
        held_pipe_child(c, p);
    }
    for fd in [30, 41, p[1]] {
        // SAFETY: our own fds.
        unsafe { libc::close(fd) };
    }
    let mut b = [0u8; 1];
    // SAFETY: one byte into b: the child closed what it does not keep.
    let n = unsafe { libc::read(p[0], b.as_mut_ptr().cast(), 1) };
    // SAFETY: our own fd.
    unsafe { libc::close(p[0]) };
    ensure!(n == 1, "the child's ready byte: {n}, errno {}", errno());
    c.ready(pid.to_string().as_bytes());
    c.wait_go();
    held_pipe_parent(c, pid)
}
