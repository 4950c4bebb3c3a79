//! `crest dump` of a process whose pipes hold data: the image holds exactly
//! the queued bytes of each pipe and the process keeps every one of them.
//!
//! The victim (a forked child, raw libc only: the harness is threaded) holds
//! pipe A with both ends and 100 KiB queued (more than the default 64 KiB
//! capacity), pipe B's read end only (5000 bytes, no writer), pipe C's write
//! end only (3000 bytes; the test holds the read end), and an empty pipe D.
//! Ground truth: the bytes the test wrote, read back after the dump by the
//! victim (A, B) and by the test (C).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crest::image::ImageDir;
use crest::image::load::FilesImage;

const A_READ: i32 = 20;
const A_WRITE: i32 = 21;
const B_READ: i32 = 22;
const C_WRITE: i32 = 23;
const D_READ: i32 = 24;
const D_WRITE: i32 = 25;
const CMD: i32 = 26;
const RESULT: i32 = 27;

const A_LEN: usize = 100 * 1024;
const B_LEN: usize = 5000;
const C_LEN: usize = 3000;

/// Pipe `seed`'s byte `i`: varies along the buffer and between pipes.
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed)
        .collect()
}

fn pipe(flags: i32) -> (OwnedFd, OwnedFd) {
    let mut p = [-1; 2];
    // SAFETY: pipe2 writes two fds into `p`.
    assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), flags) }, 0);
    // SAFETY: both fds were just created and are owned here.
    unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) }
}

fn fill(w: &OwnedFd, data: &[u8]) {
    // SAFETY: F_SETPIPE_SZ takes an integer.
    let cap = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, 256 * 1024) };
    assert!(cap >= data.len() as i32, "pipe capacity {cap}");
    // SAFETY: writes from a live slice.
    let n = unsafe { libc::write(w.as_raw_fd(), data.as_ptr().cast(), data.len()) };
    assert_eq!(n, data.len() as isize);
}

fn ino(fd: &OwnedFd) -> u64 {
    // SAFETY: a zeroed stat is written by fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is a live local.
    assert_eq!(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) }, 0);
    st.st_ino
}

/// Reads `want.len()` bytes from `fd` (waiting at most 2 s) and checks them,
/// then that nothing more is queued. Raw libc: the victim calls it too.
fn drained_equal(fd: i32, want: &[u8]) -> bool {
    let mut buf = [0u8; 4096];
    let mut off = 0;
    let mut spins = 0;
    while off < want.len() && spins < 2000 {
        let n = (want.len() - off).min(buf.len());
        // SAFETY: reads into a live buffer.
        let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), n) };
        if r <= 0 {
            spins += 1;
            // SAFETY: plain sleep.
            unsafe { libc::usleep(1000) };
            continue;
        }
        if buf[..r as usize] != want[off..off + r as usize] {
            return false;
        }
        off += r as usize;
    }
    // SAFETY: reads into a live buffer; a non-blocking fd says EAGAIN, a
    // pipe without writers 0.
    off == want.len() && unsafe { libc::read(fd, buf.as_mut_ptr().cast(), 1) } <= 0
}

/// The victim: its fds at fixed numbers, everything else closed; waits for
/// a command byte, then checks A and B and answers 1 (intact) or 2.
fn victim(fds: &[(i32, i32)], a: &[u8], b: &[u8]) -> ! {
    // SAFETY: raw fd syscalls in the forked child.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        libc::setpgid(0, 0);
        // Out of the way first: a source may sit at another's target.
        let mut high = [0i32; 8];
        for (i, &(from, _)) in fds.iter().enumerate() {
            high[i] = libc::fcntl(from, libc::F_DUPFD_CLOEXEC, 1000);
        }
        for (i, &(_, to)) in fds.iter().enumerate() {
            if libc::dup3(high[i], to, 0) != to {
                libc::_exit(10);
            }
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        for fd in 0..3 {
            libc::dup2(null, fd);
        }
        libc::syscall(libc::SYS_close_range, 3u32, 19u32, 0u32);
        libc::syscall(libc::SYS_close_range, 28u32, u32::MAX, 0u32);
        let mut c = [0u8; 1];
        while libc::read(CMD, c.as_mut_ptr().cast(), 1) != 1 {}
        let ok = drained_equal(A_READ, a) && drained_equal(B_READ, b);
        let answer = [if ok { 1u8 } else { 2 }];
        libc::write(RESULT, answer.as_ptr().cast(), 1);
        libc::_exit(0)
    }
}

fn scratch() -> PathBuf {
    let p = std::env::temp_dir().join(format!("crest-dump-pipes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

#[test]
fn dump_copies_queued_pipe_bytes_and_leaves_them_in_the_process() {
    let (a, b, c) = (pattern(1, A_LEN), pattern(2, B_LEN), pattern(3, C_LEN));
    let (ar, aw) = pipe(libc::O_NONBLOCK | libc::O_CLOEXEC);
    fill(&aw, &a);
    let (br, bw) = pipe(libc::O_CLOEXEC);
    fill(&bw, &b);
    drop(bw);
    let (cr, cw) = pipe(libc::O_CLOEXEC | libc::O_NONBLOCK);
    fill(&cw, &c);
    let (dr, dw) = pipe(libc::O_CLOEXEC);
    let (cmd_r, cmd_w) = pipe(libc::O_CLOEXEC);
    let (res_r, res_w) = pipe(libc::O_CLOEXEC);
    let ids = (ino(&ar), ino(&br), ino(&cr));
    let fds = [
        (ar.as_raw_fd(), A_READ),
        (aw.as_raw_fd(), A_WRITE),
        (br.as_raw_fd(), B_READ),
        (cw.as_raw_fd(), C_WRITE),
        (dr.as_raw_fd(), D_READ),
        (dw.as_raw_fd(), D_WRITE),
        (cmd_r.as_raw_fd(), CMD),
        (res_w.as_raw_fd(), RESULT),
    ];
    // SAFETY: the child only makes raw libc calls.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        victim(&fds, &a, &b);
    }
    drop((ar, aw, br, cw, dr, dw, cmd_r, res_w));
    let dir = scratch();
    let img = dir.join("img");
    let out = Command::new(env!("CARGO_BIN_EXE_crest"))
        .args(["dump", "-R", "-t", &pid.to_string(), "-D"])
        .arg(&img)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "dump -R failed: {err}");
    let files = FilesImage::load(&ImageDir::open(&img).unwrap(), pid as u32).unwrap();
    let mut got: Vec<(u64, usize)> = files
        .pipes
        .iter()
        .map(|p| (p.pipe_id, p.data.len()))
        .collect();
    got.sort();
    let mut want = vec![(ids.0, A_LEN), (ids.1, B_LEN), (ids.2, C_LEN)];
    want.sort();
    assert_eq!(got, want, "one record per pipe holding data (ids, sizes)");
    for (id, data) in [(ids.0, &a), (ids.1, &b), (ids.2, &c)] {
        let p = files.pipes.iter().find(|p| p.pipe_id == id).unwrap();
        assert!(p.data == *data, "pipe {id}: the image holds other bytes");
    }
    // The process still has every byte: C from here, A and B by the victim.
    assert!(drained_equal(cr.as_raw_fd(), &c), "pipe C lost bytes");
    let one = [1u8];
    // SAFETY: writes one byte from a live buffer.
    let wrote = unsafe { libc::write(cmd_w.as_raw_fd(), one.as_ptr().cast(), 1) };
    assert_eq!(wrote, 1);
    let mut answer = [0u8; 1];
    let start = Instant::now();
    // SAFETY: reads into a live buffer.
    while unsafe { libc::read(res_r.as_raw_fd(), answer.as_mut_ptr().cast(), 1) } != 1 {
        assert!(start.elapsed() < Duration::from_secs(5), "no answer");
    }
    assert_eq!(
        answer[0], 1,
        "the victim's pipes A and B lost or changed bytes"
    );
    let mut status = 0;
    // SAFETY: our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    let _ = std::fs::remove_dir_all(&dir);
}
