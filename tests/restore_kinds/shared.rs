//! Victims whose objects a parent and its child share (both hold an fd
//! and, for a memfd or deleted file, a shared mapping made before the
//! fork). After go the two check that they hold one object, not two
//! copies: the parent writes through its fd, the child must see it in its
//! mapping; the child writes through its mapping and its fd, the parent
//! must see both; the child moves the offset of their shared open file,
//! the parent must find it moved. The child reports by its exit status, which the parent
//! checks. The ready text is the child's pid.

use std::path::Path;

use crate::common::victim::{Child, Verdict, now_ns, sleep_ms};
use crate::raw::{errno, place};

const FD: i32 = 30;
const SIZE: usize = 4096;
const BEFORE: &[u8] = b"before the dump";
/// Where the child moves the offset of fd 30, which the parent shares.
const OFFSET: i64 = 777;

pub fn prepare(dir: &Path) {
    let mut data = vec![0u8; SIZE];
    data[..BEFORE.len()].copy_from_slice(BEFORE);
    std::fs::write(dir.join("gone"), &data).unwrap();
}

pub fn prepare_fifo(dir: &Path) {
    let p = std::ffi::CString::new(dir.join("fifo").to_str().unwrap()).unwrap();
    // SAFETY: a live C string.
    assert_eq!(unsafe { libc::mkfifo(p.as_ptr(), 0o600) }, 0, "mkfifo");
}

fn pwrite(fd: i32, b: u8, at: usize) -> bool {
    // SAFETY: one byte from a live local.
    unsafe { libc::pwrite(fd, (&b as *const u8).cast(), 1, at as i64) == 1 }
}

fn pread(fd: i32, at: usize) -> Option<u8> {
    let mut b = 0u8;
    // SAFETY: one byte into a live local.
    let n = unsafe { libc::pread(fd, (&mut b as *mut u8).cast(), 1, at as i64) };
    (n == 1).then_some(b)
}

/// Waits up to 10 s for `cond`.
fn until(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = now_ns() + 10_000_000_000;
    while !cond() {
        if now_ns() > deadline {
            return false;
        }
        sleep_ms(1);
    }
    true
}

/// Maps fd `FD` shared, read-write.
fn map() -> Result<*mut u8, crate::common::victim::Msg> {
    // SAFETY: a new mapping of our own fd, nothing else touched.
    let m = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            FD,
            0,
        )
    };
    ensure!(m != libc::MAP_FAILED, "mmap: errno {}", errno());
    Ok(m.cast())
}

/// The byte at `at` of mapping `m` (read volatile: the other process
/// writes it).
fn peek(m: *mut u8, at: usize) -> u8 {
    // SAFETY: at < SIZE, inside the live mapping.
    unsafe { m.add(at).read_volatile() }
}

fn poke(m: *mut u8, at: usize, b: u8) {
    // SAFETY: at < SIZE, inside the live mapping.
    unsafe { m.add(at).write_volatile(b) }
}

/// The child's side after go: 0 when every check passed, else which
/// failed.
fn child_checks(m: *mut u8) -> i32 {
    if !until(|| peek(m, 64) == 1) {
        return 2;
    }
    if (0..BEFORE.len()).any(|i| peek(m, i) != BEFORE[i]) {
        return 3;
    }
    poke(m, 128, 2);
    if !pwrite(FD, 3, 192) {
        return 4;
    }
    // SAFETY: integers only.
    if unsafe { libc::lseek(FD, OFFSET, libc::SEEK_SET) } != OFFSET {
        return 5;
    }
    0
}

/// Forks the child, says ready, and after go runs both sides.
fn share(c: &Child) -> Verdict {
    let m = map()?;
    // SAFETY: fork in the single-threaded victim.
    let pid = unsafe { libc::fork() };
    ensure!(pid >= 0, "fork: errno {}", errno());
    if pid == 0 {
        c.wait_go();
        // SAFETY: leaves without the harness's atexit code.
        unsafe { libc::_exit(child_checks(m)) }
    }
    let text = crate::common::victim::Msg::new(format_args!("{pid}"));
    c.ready(text.bytes());
    c.wait_go();
    ensure!(pwrite(FD, 1, 64), "pwrite: errno {}", errno());
    let seen = until(|| peek(m, 128) == 2 && pread(FD, 192) == Some(3));
    let mut status = 0;
    // SAFETY: waits for our own child.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    ensure!(r == pid, "waitpid: errno {}", errno());
    ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child failed its checks: status {status:#x}"
    );
    ensure!(seen, "the child's writes did not reach the parent");
    // SAFETY: integers only.
    let at = unsafe { libc::lseek(FD, 0, libc::SEEK_CUR) };
    ensure!(
        at == OFFSET,
        "the parent's offset is {at}, not the child's {OFFSET}"
    );
    Ok(())
}

/// A memfd at fd 30 holding BEFORE, mapped shared, then a child.
pub fn memfd(c: &Child) -> Verdict {
    // SAFETY: a NUL-terminated name.
    let fd = unsafe { libc::memfd_create(c"shared".as_ptr(), 0) };
    ensure!(fd >= 0, "memfd_create: errno {}", errno());
    place(fd, FD, false)?;
    // SAFETY: integers only.
    let r = unsafe { libc::ftruncate(FD, SIZE as i64) };
    ensure!(r == 0, "ftruncate: errno {}", errno());
    for (i, b) in BEFORE.iter().enumerate() {
        ensure!(pwrite(FD, *b, i), "pwrite");
    }
    share(c)
}

/// `gone` (BEFORE, then zeros) opened read-write at fd 30, mapped shared,
/// deleted, then a child.
pub fn ghost(c: &Child) -> Verdict {
    let path = c.path("gone");
    // SAFETY: a live C string.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR) };
    ensure!(fd >= 0, "open: errno {}", errno());
    place(fd, FD, false)?;
    // SAFETY: a live C string.
    let r = unsafe { libc::unlink(path.as_ptr()) };
    ensure!(r == 0, "unlink: errno {}", errno());
    share(c)
}

fn nonblocking(fd: i32) -> bool {
    // SAFETY: integers only.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    fl >= 0 && fl & libc::O_NONBLOCK != 0
}

/// FIFO `fifo` opened read-write (blocking) at fd 30 with BEFORE queued,
/// then a child sharing that open file. After go the child sets
/// O_NONBLOCK on it; the parent must see the flag (one description, not
/// two), then read BEFORE once and find the FIFO empty.
pub fn fifo(c: &Child) -> Verdict {
    let path = c.path("fifo");
    // SAFETY: a live C string.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR) };
    ensure!(fd >= 0, "open: errno {}", errno());
    place(fd, FD, false)?;
    // SAFETY: BEFORE is live for its length.
    let n = unsafe { libc::write(FD, BEFORE.as_ptr().cast(), BEFORE.len()) };
    ensure!(n == BEFORE.len() as isize, "write: errno {}", errno());
    // SAFETY: fork in the single-threaded victim.
    let pid = unsafe { libc::fork() };
    ensure!(pid >= 0, "fork: errno {}", errno());
    if pid == 0 {
        c.wait_go();
        // SAFETY: integers only; then leave without atexit code.
        unsafe {
            let fl = libc::fcntl(FD, libc::F_GETFL);
            let r = libc::fcntl(FD, libc::F_SETFL, fl | libc::O_NONBLOCK);
            libc::_exit(if fl >= 0 && r == 0 { 0 } else { 2 })
        }
    }
    let text = crate::common::victim::Msg::new(format_args!("{pid}"));
    c.ready(text.bytes());
    c.wait_go();
    let seen = until(|| nonblocking(FD));
    let mut status = 0;
    // SAFETY: waits for our own child.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    ensure!(r == pid, "waitpid: errno {}", errno());
    ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child failed: status {status:#x}"
    );
    ensure!(seen, "the child's O_NONBLOCK did not reach the parent's fd");
    let mut buf = [0u8; 64];
    // SAFETY: a buffer of its own size.
    let n = unsafe { libc::read(FD, buf.as_mut_ptr().cast(), buf.len()) };
    ensure!(
        n >= 0 && &buf[..n as usize] == BEFORE,
        "queued bytes: {n} read"
    );
    // SAFETY: as above.
    let n = unsafe { libc::read(FD, buf.as_mut_ptr().cast(), buf.len()) };
    ensure!(n < 0 && errno() == libc::EAGAIN, "the FIFO holds more: {n}");
    Ok(())
}

/// Reads what `fd` (non-blocking) has within 10 s, into `buf`.
fn read_within(fd: i32, buf: &mut [u8]) -> usize {
    let mut n = 0;
    until(|| {
        // SAFETY: the rest of a live buffer.
        let r = unsafe { libc::read(fd, buf[n..].as_mut_ptr().cast(), buf.len() - n) };
        if r > 0 {
            n += r as usize;
        }
        n > 0 && buf[n - 1] == b'\n'
    });
    n
}

fn write_all(fd: i32, data: &[u8]) -> bool {
    // SAFETY: data is live for its length.
    unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) == data.len() as isize }
}

/// The child of [`pty`]: opens the slave at fd 31 (non-blocking), closes
/// the master, says so through the pair; after go writes "ping\n" and
/// waits for "pong".
fn pty_child(c: &Child, name: &[u8]) -> i32 {
    let mut path = [0u8; 64];
    path[..name.len()].copy_from_slice(name);
    // SAFETY: a NUL-terminated path in a live buffer; integers.
    unsafe {
        let fd = libc::open(
            path.as_ptr().cast(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_NONBLOCK,
        );
        if fd < 0 || place(fd, 31, false).is_err() {
            return 2;
        }
        libc::close(FD);
    }
    if !write_all(31, b"r\n") {
        return 3;
    }
    c.wait_go();
    if !write_all(31, b"ping\n") {
        return 4;
    }
    let mut buf = [0u8; 64];
    let n = read_within(31, &mut buf);
    if &buf[..n] != b"pong\n" { 5 } else { 0 }
}

/// A pty pair whose master (fd 30, non-blocking, raw on the slave side
/// so nothing is echoed) is in the parent and whose slave (fd 31) is in
/// the child. After go the child writes "ping" to the slave, the parent
/// must read it from the master and answer "pong", which the child must
/// read: one pair, not two.
pub fn pty(c: &Child) -> Verdict {
    // SAFETY: a NUL-terminated path; integers; a live buffer for the name.
    let name = unsafe {
        let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_NONBLOCK);
        ensure!(fd >= 0, "posix_openpt: errno {}", errno());
        place(fd, FD, false)?;
        ensure!(
            libc::grantpt(FD) == 0 && libc::unlockpt(FD) == 0,
            "unlockpt"
        );
        let mut t: libc::termios = std::mem::zeroed();
        ensure!(
            libc::tcgetattr(FD, &mut t) == 0,
            "tcgetattr: errno {}",
            errno()
        );
        t.c_lflag &= !(libc::ECHO | libc::ICANON);
        t.c_oflag &= !libc::OPOST;
        ensure!(libc::tcsetattr(FD, libc::TCSANOW, &t) == 0, "tcsetattr");
        let mut name = [0u8; 64];
        ensure!(
            libc::ptsname_r(FD, name.as_mut_ptr().cast(), 63) == 0,
            "ptsname_r"
        );
        name
    };
    let len = name.iter().position(|&b| b == 0).unwrap_or(0) + 1;
    // SAFETY: fork in the single-threaded victim.
    let pid = unsafe { libc::fork() };
    ensure!(pid >= 0, "fork: errno {}", errno());
    if pid == 0 {
        let code = pty_child(c, &name[..len]);
        // SAFETY: leaves without the harness's atexit code.
        unsafe { libc::_exit(code) }
    }
    let mut buf = [0u8; 64];
    let n = read_within(FD, &mut buf);
    ensure!(&buf[..n] == b"r\n", "the child's slave did not say ready");
    let text = crate::common::victim::Msg::new(format_args!("{pid}"));
    c.ready(text.bytes());
    c.wait_go();
    let n = read_within(FD, &mut buf);
    let got_ping = &buf[..n] == b"ping\n";
    let answered = got_ping && write_all(FD, b"pong\n");
    let mut status = 0;
    // SAFETY: waits for our own child.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    ensure!(r == pid, "waitpid: errno {}", errno());
    ensure!(
        got_ping,
        "the master did not read the child's ping: {n} bytes"
    );
    ensure!(answered, "write to the master: errno {}", errno());
    ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child failed: status {status:#x}"
    );
    Ok(())
}
