//! zdtm-style victims for round-trip tests: the test forks a victim that sets
//! up some state, says "ready" through a file, waits for a "go" file, then
//! checks all of its state and writes "pass" or "fail: REASON" to a report
//! file before it exits 0 or 1. The test meanwhile dumps it, kills it,
//! restores it, or does nothing at all (the baseline).
//!
//! Everything goes through files under CARGO_TARGET_TMPDIR, never shared
//! memory: a victim must not hold anything a dump cannot save or a restore
//! cannot rebuild. The child side runs in a fork of the multi-threaded test
//! harness, so it uses raw libc calls, fixed buffers and core::fmt only
//! (no Rust allocation, no std I/O).

use std::ffi::{CStr, CString};
use std::fmt::{self, Write as _};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A failure reason built without allocating (the victim is a fork).
#[derive(Clone, Copy)]
pub struct Msg {
    buf: [u8; 240],
    len: usize,
}

impl Msg {
    pub const fn empty() -> Msg {
        Msg {
            buf: [0; 240],
            len: 0,
        }
    }

    pub fn new(args: fmt::Arguments<'_>) -> Msg {
        let mut m = Msg::empty();
        let _ = m.write_fmt(args);
        m
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    pub fn as_str(&self) -> &str {
        lossy(self.bytes())
    }
}

impl fmt::Write for Msg {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// What a victim's body returns: Ok for pass, the reason otherwise.
pub type Verdict = Result<(), Msg>;

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// The victim's side: file names prepared before the fork.
pub struct Child {
    pub dir: PathBuf,
    ready_tmp: CString,
    ready: CString,
    go: CString,
    ping: CString,
    pong: CString,
    report_tmp: CString,
    report: CString,
}

impl Child {
    fn new(dir: &Path) -> Child {
        Child {
            dir: dir.to_path_buf(),
            ready_tmp: cpath(&dir.join("ready.tmp")),
            ready: cpath(&dir.join("ready")),
            go: cpath(&dir.join("go")),
            ping: cpath(&dir.join("ping")),
            pong: cpath(&dir.join("pong")),
            report_tmp: cpath(&dir.join("report.tmp")),
            report: cpath(&dir.join("report")),
        }
    }

    /// `name` inside the victim's directory, prepared by the test.
    pub fn path(&self, name: &str) -> CString {
        cpath(&self.dir.join(name))
    }

    /// Says ready; `text` (addresses, ids) is for the test to read.
    pub fn ready(&self, text: &[u8]) {
        write_file(&self.ready_tmp, text);
        // SAFETY: both paths are live C strings.
        unsafe { libc::rename(self.ready_tmp.as_ptr(), self.ready.as_ptr()) };
    }

    /// Polls for the go file; the sleep is restarted across a checkpoint.
    /// A victim whose test died gives up after a minute (a victim has no
    /// PR_SET_PDEATHSIG: restore would bring it back, and a detached
    /// restore's exiting crest would then kill it).
    pub fn wait_go(&self) {
        let deadline = now_ns() + 60_000_000_000;
        // SAFETY: access only reads the path.
        while unsafe { libc::access(self.go.as_ptr(), libc::F_OK) } != 0 {
            if now_ns() > deadline {
                self.finish(Err(Msg::new(format_args!("no go file within 60 s"))));
            }
            // The test's "are you running your own code again?"
            // SAFETY: live C strings.
            unsafe { libc::rename(self.ping.as_ptr(), self.pong.as_ptr()) };
            sleep_ms(2);
        }
    }

    fn finish(&self, v: Verdict) -> ! {
        let (text, code) = match &v {
            Ok(()) => (Msg::new(format_args!("pass\n")), 0),
            Err(m) => (Msg::new(format_args!("fail: {}\n", lossy(m.bytes()))), 1),
        };
        write_file(&self.report_tmp, text.bytes());
        // SAFETY: live C strings; _exit skips the harness's atexit code.
        unsafe {
            libc::rename(self.report_tmp.as_ptr(), self.report.as_ptr());
            libc::_exit(code)
        }
    }
}

fn lossy(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap_or("(not utf-8)")
}

/// Writes `data` to a fresh file with raw calls.
pub fn write_file(path: &CStr, data: &[u8]) -> bool {
    // SAFETY: raw calls on a live path and buffer.
    unsafe {
        let fd = libc::open(
            path.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
            0o644,
        );
        if fd < 0 {
            return false;
        }
        let n = libc::write(fd, data.as_ptr().cast(), data.len());
        libc::close(fd);
        n == data.len() as isize
    }
}

/// Reads a whole (small, /proc) file into `buf`; the bytes read.
pub fn read_file<'a>(path: &CStr, buf: &'a mut [u8]) -> &'a [u8] {
    let mut len = 0;
    // SAFETY: raw calls on a live path; reads stay inside buf.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return &buf[..0];
        }
        while len < buf.len() {
            let n = libc::read(fd, buf[len..].as_mut_ptr().cast(), buf.len() - len);
            if n <= 0 {
                break;
            }
            len += n as usize;
        }
        libc::close(fd);
    }
    &buf[..len]
}

/// The permission column ("r-xp") of the /proc/self/maps row covering `addr`.
pub fn maps_perms(addr: usize) -> Option<[u8; 4]> {
    let mut buf = [0u8; 256 * 1024];
    let text = read_file(c"/proc/self/maps", &mut buf);
    text.split(|&b| b == b'\n').find_map(|line| {
        let mut cols = line.split(|&b| b == b' ');
        let range = cols.next()?;
        let perms = cols.next()?;
        let dash = range.iter().position(|&b| b == b'-')?;
        let hex = |s: &[u8]| usize::from_str_radix(std::str::from_utf8(s).ok()?, 16).ok();
        let (start, end) = (hex(&range[..dash])?, hex(&range[dash + 1..])?);
        (start <= addr && addr < end).then(|| perms.try_into().ok())?
    })
}

/// The numeric entries of a /proc directory (fds, tids), sorted, into `out`;
/// how many there are (more than `out` holds are counted, not stored).
pub fn proc_numbers(path: &CStr, out: &mut [i64]) -> usize {
    let mut n = 0;
    let mut buf = [0u8; 8192];
    // SAFETY: raw calls on a live path; getdents64 writes inside buf.
    unsafe {
        let fd = libc::open(
            path.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return 0;
        }
        loop {
            let len = libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.len());
            if len <= 0 {
                break;
            }
            let mut at = 0;
            while at < len as usize {
                // linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, name.
                let reclen = u16::from_ne_bytes([buf[at + 16], buf[at + 17]]) as usize;
                let name = &buf[at + 19..at + reclen];
                let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
                if let Some(v) = std::str::from_utf8(name).ok().and_then(|s| s.parse().ok()) {
                    if n < out.len() {
                        out[n] = v;
                    }
                    n += 1;
                }
                at += reclen;
            }
        }
        libc::close(fd);
    }
    let stored = n.min(out.len());
    out[..stored].sort_unstable();
    n
}

/// Sleeps `ms` milliseconds of CLOCK_MONOTONIC whatever signals arrive.
pub fn sleep_ms(ms: u64) {
    let end = now_ns() + ms * 1_000_000;
    loop {
        let left = end.saturating_sub(now_ns());
        if left == 0 {
            return;
        }
        let ts = libc::timespec {
            tv_sec: (left / 1_000_000_000) as i64,
            tv_nsec: (left % 1_000_000_000) as i64,
        };
        // SAFETY: ts is a live local.
        unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
    }
}

/// CLOCK_MONOTONIC in nanoseconds.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a live local.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// gettid(2).
pub fn gettid() -> i32 {
    // SAFETY: no memory effects.
    unsafe { libc::gettid() }
}

/// getpid(2).
pub fn getpid() -> i32 {
    // SAFETY: no memory effects.
    unsafe { libc::getpid() }
}

/// The part every victim shares: a process of its own (own process group,
/// /dev/null on 0-2, none of the harness's fds).
fn prologue() -> bool {
    // SAFETY: raw calls in the forked child on its own fds.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        let ok = null >= 0 && (0..3).all(|fd| libc::dup2(null, fd) == fd);
        // cargo's pipes, the jobserver, other tests' files: not the victim's.
        let ok = ok && libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) == 0;
        ok && libc::setpgid(0, 0) == 0
    }
}

/// The test's handle on a forked victim.
pub struct Victim {
    pub pid: i32,
    pub dir: PathBuf,
    /// Set once waitpid returned or the process is known gone.
    reaped: bool,
}

/// A fresh scratch directory for one test, under cargo's test tmpdir. The
/// path does not depend on the run, so a failed test's images (tens of MiB)
/// stay for a look until the next run replaces them.
pub fn scratch(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("crest-victims")
        .join(name);
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// Runs crest to completion.
pub fn crest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crest"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run crest")
}

impl Victim {
    /// Forks a victim running `body` in `dir` and waits for its ready file.
    pub fn spawn(dir: &Path, body: fn(&Child) -> Verdict) -> Victim {
        let child = Child::new(dir);
        // SAFETY: the child runs only raw libc calls and core code.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            if !prologue() {
                child.finish(Err(Msg::new(format_args!("prologue"))));
            }
            let v = body(&child);
            child.finish(v);
        }
        let mut v = Victim {
            pid,
            dir: dir.to_path_buf(),
            reaped: false,
        };
        v.wait_ready();
        v
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        while !self.dir.join("ready").exists() {
            if let Some(status) = self.try_reap() {
                panic!(
                    "victim {} ended during setup (status {status:#x}): {:?}",
                    self.pid,
                    self.report()
                );
            }
            assert!(start.elapsed() < Duration::from_secs(20), "never ready");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// What the victim wrote with its ready file.
    pub fn ready_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("ready")).unwrap()
    }

    /// Lets the victim check itself.
    pub fn go(&self) {
        std::fs::write(self.dir.join("go"), b"").unwrap();
    }

    /// Waits until the victim answers a ping from its wait loop: it runs
    /// its own code (after a restore: the restore is complete). `quit` as
    /// for wait_report.
    pub fn ping(&self, quit: impl FnMut() -> Option<String>) {
        if let Err(why) = self.try_ping(quit) {
            panic!("no pong from victim {}: {why}", self.pid);
        }
    }

    /// As `ping`, but gives back why `quit` gave up instead of panicking.
    pub fn try_ping(&self, mut quit: impl FnMut() -> Option<String>) -> Result<(), String> {
        let _ = std::fs::remove_file(self.dir.join("pong"));
        std::fs::write(self.dir.join("ping"), b"").unwrap();
        let start = Instant::now();
        while !self.dir.join("pong").exists() {
            if let Some(why) = quit() {
                return Err(why);
            }
            assert!(start.elapsed() < Duration::from_secs(20), "no pong");
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// The report, once written.
    pub fn report(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join("report")).ok()
    }

    /// Forgets an old report (before a second run from the same images).
    pub fn clear_report(&self) {
        let _ = std::fs::remove_file(self.dir.join("report"));
    }

    /// Waits for the report; `quit` is asked on every round whether waiting
    /// is pointless (e.g. crest exited with an error) and why.
    pub fn wait_report(&self, mut quit: impl FnMut() -> Option<String>) -> String {
        let start = Instant::now();
        loop {
            if let Some(r) = self.report() {
                return r;
            }
            if let Some(why) = quit() {
                panic!("no report from victim {}: {why}", self.pid);
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no report from victim {} in 20 s",
                self.pid
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// waitpid WNOHANG: the raw status once the victim (our child) ended.
    pub fn try_reap(&mut self) -> Option<i32> {
        let mut status = 0;
        // SAFETY: our own child.
        let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
        (r == self.pid).then(|| {
            self.reaped = true;
            status
        })
    }

    /// Waits (bounded) for the victim, our child, to end; its raw status.
    pub fn reap(&mut self) -> i32 {
        let start = Instant::now();
        loop {
            if let Some(s) = self.try_reap() {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "victim {} did not end",
                self.pid
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Kills the original with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        // SAFETY: our own child, not reaped yet.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        let s = self.reap();
        assert!(libc::WIFSIGNALED(s), "status {s:#x}");
    }

    /// The process with this pid is no longer ours to clean up (a restored
    /// one belongs to crest or was reaped by the test).
    pub fn forget(&mut self) {
        self.reaped = true;
    }

    /// Takes back the duty to kill the pid on drop (a restored process).
    pub fn adopt(&mut self) {
        self.reaped = false;
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        if !self.reaped {
            // SAFETY: a process this test created under this pid.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), libc::WNOHANG);
            }
        }
    }
}

/// The state letter of /proc/PID/stat ('R', 'S', 'T', 'Z'...), None if gone.
pub fn proc_state(pid: i32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &s[s.rfind(')')? + 2..];
    after.chars().next()
}

/// No live process has `pid` (a zombie counts as gone; ours is reaped).
pub fn pid_gone(pid: i32) -> bool {
    // SAFETY: reaps only a zombie child of ours with this pid.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
    matches!(proc_state(pid), None | Some('Z') | Some('X'))
}
