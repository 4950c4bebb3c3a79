//! Runs install_files in a forked child and compares the child's fd table,
//! as /proc shows it (crest's own dump collectors), with the image.
//!
//! The child (raw libc only, the harness is threaded) runs `pre` to put
//! things of its own in the way, installs, then says `R` (or `E` and the
//! error) on a pipe kept at [`KEEP_READY`]; the test compares; on `go` the
//! child runs its own checks and exits with their result.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crest::dump::files::{collect_files, collect_pipe_data};
use crest::image::files::{Fd, FdFile, PipeData};
use crest::image::load::FilesImage;

/// The two fds the child keeps across install to talk to the test.
pub const KEEP_READY: i32 = 500;
pub const KEEP_GO: i32 = 501;

/// O_LARGEFILE as the kernel adds it to every open on 64-bit.
#[cfg(target_arch = "x86_64")]
pub const O_LARGEFILE: u32 = 0o100000;
#[cfg(target_arch = "aarch64")]
pub const O_LARGEFILE: u32 = 0o400000;

pub fn pipe(flags: i32) -> (OwnedFd, OwnedFd) {
    let mut p = [-1; 2];
    // SAFETY: pipe2 writes two fds into `p`.
    assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), flags) }, 0);
    // SAFETY: both fds were just created and are owned here.
    unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) }
}

/// A child that installed its files and waits for `go`.
pub struct Installed {
    pub pid: i32,
    go: OwnedFd,
    reaped: bool,
}

/// Forks; the child runs `pre`, `install(&[KEEP_READY, KEEP_GO])`, reports,
/// and on go exits with `verify()`. Err carries install's error message.
pub fn install_in_child(
    pre: &dyn Fn(),
    install: &dyn Fn(&[i32]) -> crest::error::Result<()>,
    verify: &dyn Fn() -> i32,
) -> Result<Installed, String> {
    let (ready_r, ready_w) = pipe(libc::O_CLOEXEC);
    let (go_r, go_w) = pipe(libc::O_CLOEXEC);
    // SAFETY: the child keeps to raw libc calls and install_files (which
    // does not allocate) until it exits; only a failed install formats.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        child(ready_w.as_raw_fd(), go_r.as_raw_fd(), pre, install, verify);
    }
    drop((ready_w, go_r));
    let mut inst = Installed {
        pid,
        go: go_w,
        reaped: false,
    };
    let msg = read_report(&ready_r);
    if msg.first() == Some(&b'R') {
        return Ok(inst);
    }
    inst.wait();
    Err(String::from_utf8_lossy(msg.get(1..).unwrap_or_default()).into_owned())
}

fn child(
    ready: i32,
    go: i32,
    pre: &dyn Fn(),
    install: &dyn Fn(&[i32]) -> crest::error::Result<()>,
    verify: &dyn Fn() -> i32,
) -> ! {
    // SAFETY: raw fd syscalls in the forked child.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::dup3(ready, KEEP_READY, libc::O_CLOEXEC) < 0
            || libc::dup3(go, KEEP_GO, libc::O_CLOEXEC) < 0
        {
            libc::_exit(98);
        }
    }
    pre();
    if let Err(e) = install(&[KEEP_READY, KEEP_GO]) {
        let msg = format!("E{e}");
        // SAFETY: writes from a live buffer, then ends the child.
        unsafe {
            libc::write(KEEP_READY, msg.as_ptr().cast(), msg.len());
            libc::_exit(99)
        }
    }
    let mut b = [0u8; 1];
    // SAFETY: raw reads and writes on the kept fds.
    unsafe {
        libc::write(KEEP_READY, b"R".as_ptr().cast(), 1);
        while libc::read(KEEP_GO, b.as_mut_ptr().cast(), 1) != 1 {}
        libc::_exit(verify())
    }
}

/// The child's report, waiting at most 10 s.
fn read_report(r: &OwnedFd) -> Vec<u8> {
    let mut out = Vec::new();
    let start = Instant::now();
    let mut buf = [0u8; 512];
    while start.elapsed() < Duration::from_secs(10) {
        let mut pfd = libc::pollfd {
            fd: r.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 100) } <= 0 {
            continue;
        }
        // SAFETY: reads into a live buffer.
        let n = unsafe { libc::read(r.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        out.extend_from_slice(&buf[..n as usize]);
        if out == b"R" || out.len() > 1 && pfd.revents & libc::POLLHUP != 0 {
            break;
        }
    }
    assert!(!out.is_empty(), "the child never reported");
    out
}

impl Installed {
    /// The child's fds, as crest's dump sees them, without the kept two.
    pub fn fds(&self) -> Vec<Fd> {
        let mut fds = collect_files(self.pid as u32).expect("collect the child's fds");
        fds.retain(|f| f.fd != KEEP_READY && f.fd != KEEP_GO);
        fds
    }

    /// What the child's pipes hold, copied without taking it.
    pub fn pipes(&self, fds: &[Fd]) -> Vec<PipeData> {
        collect_pipe_data(self.pid as u32, fds).expect("copy the child's pipes")
    }

    /// The child's working directory.
    pub fn cwd(&self) -> std::path::PathBuf {
        std::fs::read_link(format!("/proc/{}/cwd", self.pid)).unwrap()
    }

    /// Lets the child run its checks; returns its exit code.
    pub fn go(mut self) -> i32 {
        // SAFETY: writes one byte from a live buffer.
        let wrote = unsafe { libc::write(self.go.as_raw_fd(), b"g".as_ptr().cast(), 1) };
        assert_eq!(wrote, 1);
        let status = self.wait();
        assert!(libc::WIFEXITED(status), "child status {status:#x}");
        libc::WEXITSTATUS(status)
    }

    fn wait(&mut self) -> i32 {
        let mut status = 0;
        // SAFETY: our own child, reaped once.
        assert_eq!(unsafe { libc::waitpid(self.pid, &mut status, 0) }, self.pid);
        self.reaped = true;
        status
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if !self.reaped {
            // SAFETY: our own child, killed and reaped once.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

/// An fd record with what a restore cannot or need not reproduce taken
/// out: pipe ids become the order of first appearance, O_LARGEFILE goes.
fn normal(fds: &[Fd]) -> Vec<Fd> {
    let mut ids: Vec<u64> = Vec::new();
    fds.iter()
        .map(|f| {
            let mut f = f.clone();
            match &mut f.file {
                FdFile::Pipe { pipe_id, flags } => {
                    if !ids.contains(pipe_id) {
                        ids.push(*pipe_id);
                    }
                    *pipe_id = ids.iter().position(|i| i == pipe_id).unwrap() as u64;
                    *flags &= !O_LARGEFILE;
                }
                FdFile::Reg { flags, .. } | FdFile::Chr { flags, .. } => *flags &= !O_LARGEFILE,
                _ => {}
            }
            f
        })
        .collect()
}

/// The child's fds are exactly the image's (numbers, FD_CLOEXEC, flags,
/// positions, file identities, pipe ends paired the same way) and each
/// pipe holds exactly the image's bytes.
pub fn assert_matches(inst: &Installed, img: &FilesImage) {
    let got = inst.fds();
    let mut want = img.fds.clone();
    want.sort_by_key(|f| f.fd);
    assert_eq!(normal(&got), normal(&want), "the fd table");
    let data = inst.pipes(&got);
    for (w, g) in want.iter().zip(&got) {
        let (FdFile::Pipe { pipe_id: wid, .. }, FdFile::Pipe { pipe_id: gid, .. }) =
            (&w.file, &g.file)
        else {
            continue;
        };
        let bytes = |p: &[PipeData], id: &u64| {
            p.iter()
                .find(|d| d.pipe_id == *id)
                .map(|d| d.data.clone())
                .unwrap_or_default()
        };
        assert!(
            bytes(&img.pipes, wid) == bytes(&data, gid),
            "fd {}: the pipe holds other bytes than the image",
            w.fd
        );
    }
}
