//! The victim harness: a forked child that sets up state with raw libc calls
//! (the test process is multithreaded, so no allocation or locks in the
//! child), reports words over a pipe, then answers pings until it is killed
//! and reaped by its guard. Also a temp directory guard.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// The fds the victim keeps for talking to the test.
pub const REPORT_FD: i32 = 100;
pub const GO_FD: i32 = 101;

pub fn page() -> u64 {
    // SAFETY: sysconf has no memory effects.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as u64 }
}

/// A directory removed with everything in it when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p =
            std::env::temp_dir().join(format!("crest-collect-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p.canonicalize().expect("canonical temp dir"))
    }
    pub fn file(&self, name: &str, content: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, content).expect("write temp file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

/// A forked child, killed and reaped when dropped.
pub struct Victim {
    pub pid: i32,
    pub report: File,
    pub go: File,
}

impl Victim {
    /// Forks a child that runs `setup` (raw libc only), reports its N words
    /// (or the failing line) and then answers pings until killed.
    pub fn spawn<const N: usize>(
        setup: impl FnOnce() -> Result<[u64; N], u32>,
    ) -> (Victim, [u64; N]) {
        let (report_r, report_w) = pipe();
        let (go_r, go_w) = pipe();
        // SAFETY: the child only makes raw libc calls and ends in _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            child_main(report_w.as_raw_fd(), go_r.as_raw_fd(), setup);
        }
        drop((report_w, go_r));
        let mut v = Victim {
            pid,
            report: File::from(report_r),
            go: File::from(go_w),
        };
        let mut buf = vec![0u8; 8 * (N + 1)];
        v.report
            .read_exact(&mut buf)
            .expect("the victim died during its setup");
        let words: Vec<u64> = buf
            .chunks_exact(8)
            .map(|c| u64::from_ne_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(
            words[0], 0,
            "the victim's setup failed at line {}",
            words[0]
        );
        (v, words[1..].try_into().unwrap())
    }

    pub fn upid(&self) -> u32 {
        self.pid as u32
    }

    /// Whether the victim still answers.
    pub fn ping(&mut self) -> bool {
        let mut b = [0u8];
        self.go.write_all(b"p").is_ok() && self.report.read_exact(&mut b).is_ok() && b[0] == b'P'
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        // SAFETY: plain syscalls on our own child.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

pub fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into `fds`.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both fds were just created and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// The child: keep only the two pipes (at fixed numbers) and /dev/null on
/// 0-2, run the setup, report, then answer each `p` with `P`.
pub fn child_main<const N: usize>(
    report: i32,
    go: i32,
    setup: impl FnOnce() -> Result<[u64; N], u32>,
) -> ! {
    // SAFETY: raw syscalls in a freshly forked child; buffers are on its stack.
    unsafe {
        libc::dup2(report, REPORT_FD);
        libc::dup2(go, GO_FD);
        libc::syscall(libc::SYS_close_range, 3, REPORT_FD - 1, 0);
        libc::syscall(libc::SYS_close_range, GO_FD + 1, u32::MAX, 0);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        for fd in 0..3 {
            libc::dup2(null, fd);
        }
        libc::close(null);
        let mut out = [0u64; 64];
        match setup() {
            Ok(words) => out[1..=N].copy_from_slice(&words),
            Err(line) => out[0] = u64::from(line.max(1)),
        }
        libc::write(REPORT_FD, out.as_ptr().cast(), 8 * (N + 1));
        loop {
            let mut b = 0u8;
            let n = libc::read(GO_FD, (&mut b as *mut u8).cast(), 1);
            if n == 0 || (n < 0 && *libc::__errno_location() != libc::EINTR) {
                libc::_exit(0);
            }
            if b == b'p' {
                libc::write(REPORT_FD, b"P".as_ptr().cast(), 1);
            }
        }
    }
}

/// Fails the setup with the caller's line when a libc call returned -1.
#[macro_export]
macro_rules! ok {
    ($e:expr) => {{
        let r = $e;
        if r as i64 == -1 {
            return Err(line!());
        }
        r
    }};
}
