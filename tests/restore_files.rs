//! restore::files: plan_files refuses what changed since the dump, and
//! install_files makes a forked child's fd table, cwd and pipe contents
//! exactly the image's.
//!
//! Ground truth: the child's fd table as /proc shows it (read with crest's
//! dump collectors, whose own tests check them against the kernel), the
//! bytes the test put in each pipe and file, and the child's own reads.

#[path = "restore_files/harness.rs"]
mod harness;

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crest::dump::files::{collect_files, collect_pipe_data};
use crest::dump::vma::file_id;
use crest::image::files::{Fd, FdFile, FileId, PipeData};
use crest::image::load::FilesImage;
use crest::image::task::TaskMisc;
use crest::restore::files::{install_files, plan_files};
use harness::*;

const CLOEXEC: u32 = 1;
const RDONLY: u32 = 0;
const WRONLY: u32 = 1;
const RDWR: u32 = 2;
const APPEND: u32 = libc::O_APPEND as u32;
const NONBLOCK: u32 = libc::O_NONBLOCK as u32;
const DIRECTORY: u32 = libc::O_DIRECTORY as u32;

fn scratch(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("crest-rfiles-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(p.join("sub")).unwrap();
    p
}

fn bytes(p: &Path) -> Vec<u8> {
    p.to_str().unwrap().as_bytes().to_vec()
}

fn id_of(p: &Path) -> FileId {
    file_id(&std::fs::metadata(p).unwrap())
}

fn reg(fd: i32, fd_flags: u32, path: &Path, flags: u32, pos: u64) -> Fd {
    Fd {
        fd,
        fd_flags,
        file: FdFile::Reg {
            path: bytes(path),
            flags,
            pos,
            id: id_of(path),
        },
    }
}

fn chr(fd: i32, fd_flags: u32, path: &str, flags: u32) -> Fd {
    let rdev = std::os::unix::fs::MetadataExt::rdev(&std::fs::metadata(path).unwrap());
    Fd {
        fd,
        fd_flags,
        file: FdFile::Chr {
            path: path.as_bytes().to_vec(),
            flags,
            rdev,
            pos: 0,
        },
    }
}

fn pipe_end(fd: i32, fd_flags: u32, pipe_id: u64, flags: u32) -> Fd {
    Fd {
        fd,
        fd_flags,
        file: FdFile::Pipe { pipe_id, flags },
    }
}

fn misc(cwd: &Path) -> TaskMisc {
    TaskMisc {
        cwd: bytes(cwd),
        root: b"/".to_vec(),
        ..Default::default()
    }
}

/// Reads exactly `want` from `fd` and then finds it empty: EAGAIN if
/// `eof` is false, end of file if true. Raw libc (runs in the child).
fn reads_exactly(fd: i32, want: &[u8], eof: bool) -> bool {
    let mut buf = [0u8; 4096];
    let mut off = 0;
    while off < want.len() {
        let n = (want.len() - off).min(buf.len());
        // SAFETY: reads into a live buffer.
        let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), n) };
        if r <= 0 || buf[..r as usize] != want[off..off + r as usize] {
            return false;
        }
        off += r as usize;
    }
    // SAFETY: reads into a live buffer.
    let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), 1) };
    if eof { r == 0 } else { r < 0 }
}

/// Fills fds at image numbers and above with /dev/urandom, so install must
/// replace and close what the task held there.
fn clutter() {
    // SAFETY: raw fd syscalls in the forked child.
    unsafe {
        let u = libc::open(c"/dev/urandom".as_ptr(), libc::O_RDONLY);
        for fd in [3, 5, 40, 45, 60, 100, 900] {
            libc::dup2(u, fd);
        }
    }
}

struct Built {
    img: FilesImage,
    p1_data: Vec<u8>,
    p2_data: Vec<u8>,
    data_file: Vec<u8>,
    out: PathBuf,
    cwd: CString,
}

/// An image of every kind of fd, by hand, over files in `dir`.
fn build(dir: &Path) -> Built {
    let data_file: Vec<u8> = (0..300u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.join("data"), &data_file).unwrap();
    std::fs::write(dir.join("out"), b"first line\n").unwrap();
    let p1_data: Vec<u8> = (0..100 * 1024u32).map(|i| (i % 253) as u8).collect();
    let p2_data = b"ten bytes!".to_vec();
    let (p1, p2, p3) = (1111, 2222, 3333);
    let fds = vec![
        chr(0, 0, "/dev/null", RDWR),
        reg(1, 0, &dir.join("out"), WRONLY | APPEND, 11),
        pipe_end(2, 0, p1, WRONLY),
        reg(3, CLOEXEC, &dir.join("data"), RDONLY, 5),
        pipe_end(5, 0, p1, RDONLY | NONBLOCK),
        pipe_end(7, CLOEXEC, p1, WRONLY),
        reg(8, CLOEXEC, dir, RDONLY | DIRECTORY, 0),
        pipe_end(10, 0, p2, RDONLY),
        pipe_end(12, 0, p3, WRONLY | NONBLOCK),
        reg(13, 0, &dir.join("data"), RDWR, 299),
        chr(40, CLOEXEC, "/dev/zero", RDONLY),
    ];
    let pipes = vec![
        PipeData {
            pipe_id: p1,
            data: p1_data.clone(),
        },
        PipeData {
            pipe_id: p2,
            data: p2_data.clone(),
        },
    ];
    Built {
        img: FilesImage {
            fds,
            pipes,
            descs: Vec::new(),
        },
        p1_data,
        p2_data,
        data_file,
        out: dir.join("out"),
        cwd: CString::new(bytes(&dir.join("sub"))).unwrap(),
    }
}

/// The child's own checks of a [`build`] image; 0 or the failed check.
fn verify_built(b: &Built) -> i32 {
    let mut buf = [0u8; 4096];
    // SAFETY: raw calls on the fds the image gave the child.
    unsafe {
        let cwd = libc::getcwd(buf.as_mut_ptr().cast(), buf.len());
        if cwd.is_null() || std::ffi::CStr::from_ptr(cwd) != b.cwd.as_c_str() {
            return 1;
        }
        if !reads_exactly(5, &b.p1_data, false) {
            return 2;
        }
        // fds 2 and 7 are the write end of the pipe read at 5.
        libc::write(2, b"x".as_ptr().cast(), 1);
        libc::write(7, b"y".as_ptr().cast(), 1);
        if !reads_exactly(5, b"xy", false) {
            return 3;
        }
        // The write end of pipe 2 was not the task's: end of file after the data.
        if !reads_exactly(10, &b.p2_data, true) {
            return 4;
        }
        if !reads_exactly(3, &b.data_file[5..], true) {
            return 5;
        }
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        let epipe = libc::write(12, b"z".as_ptr().cast(), 1) < 0
            && *libc::__errno_location() == libc::EPIPE;
        if !epipe {
            return 6;
        }
        if libc::write(1, b"appended\n".as_ptr().cast(), 9) != 9 {
            return 7;
        }
    }
    0
}

#[test]
fn install_makes_the_fd_table_exactly_the_image_over_fds_in_the_way() {
    let dir = scratch("built");
    let b = build(&dir);
    let plan = plan_files(&b.img, &misc(&dir.join("sub")), false).expect("plan");
    assert_eq!(plan.first_free_fd(), 41);
    let inst = install_in_child(&clutter, &|keep| install_files(&plan, keep), &|| {
        verify_built(&b)
    })
    .expect("install");
    assert_matches(&inst, &b.img);
    assert_eq!(inst.cwd(), dir.join("sub"));
    assert_eq!(inst.go(), 0, "the child's own check that failed");
    let out = std::fs::read(&b.out).unwrap();
    assert_eq!(out, b"first line\nappended\n", "fd 1 appends");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A process with files, pipes and a cwd of its own; returns its pid once
/// it is set up (it pauses until killed).
fn source_process(dir: &Path) -> i32 {
    std::fs::write(dir.join("data"), b"0123456789abcdef").unwrap();
    std::fs::write(dir.join("log"), b"log\n").unwrap();
    let data = CString::new(bytes(&dir.join("data"))).unwrap();
    let log = CString::new(bytes(&dir.join("log"))).unwrap();
    let sub = CString::new(bytes(&dir.join("sub"))).unwrap();
    let queued: Vec<u8> = (0..70_000u32).map(|i| (i % 241) as u8).collect();
    let (ready_r, ready_w) = pipe(libc::O_CLOEXEC);
    // SAFETY: the child keeps to raw libc calls.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: raw fd syscalls in the forked child.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            libc::dup3(ready_w.as_raw_fd(), 11, 0);
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
            libc::syscall(libc::SYS_close_range, 3u32, 10u32, 0u32);
            libc::syscall(libc::SYS_close_range, 12u32, u32::MAX, 0u32);
            let f = libc::open(data.as_ptr(), libc::O_RDONLY);
            libc::lseek(f, 7, libc::SEEK_SET);
            libc::open(
                log.as_ptr(),
                libc::O_WRONLY | libc::O_APPEND | libc::O_CLOEXEC,
            );
            let mut p = [0; 2];
            libc::pipe2(p.as_mut_ptr(), 0);
            libc::fcntl(p[0], libc::F_SETFL, libc::O_NONBLOCK);
            libc::fcntl(p[1], libc::F_SETPIPE_SZ, 128 * 1024);
            libc::write(p[1], queued.as_ptr().cast(), queued.len());
            libc::open(
                sub.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            );
            libc::dup2(p[1], 9);
            libc::chdir(sub.as_ptr());
            libc::write(11, b"r".as_ptr().cast(), 1);
            loop {
                libc::pause();
            }
        }
    }
    drop(ready_w);
    let mut b = [0u8; 1];
    // SAFETY: reads one byte into a live buffer.
    let n = unsafe { libc::read(ready_r.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
    assert_eq!(n, 1, "the source process set up its fds");
    pid
}

#[test]
fn install_reproduces_the_fds_collect_files_saw_in_a_real_process() {
    let dir = scratch("real");
    let src = source_process(&dir);
    let fds = collect_files(src as u32).expect("collect the source's fds");
    let pipes = collect_pipe_data(src as u32, &fds).expect("copy its pipes");
    let cwd = std::fs::read_link(format!("/proc/{src}/cwd")).unwrap();
    // SAFETY: our own child, killed and reaped.
    unsafe {
        libc::kill(src, libc::SIGKILL);
        libc::waitpid(src, std::ptr::null_mut(), 0);
    }
    let kinds: Vec<(i32, &str)> = fds
        .iter()
        .map(|f| {
            let k = match f.file {
                FdFile::Reg { .. } => "reg",
                FdFile::Pipe { .. } => "pipe",
                FdFile::Chr { .. } => "chr",
                _ => "?",
            };
            (f.fd, k)
        })
        .collect();
    let want = [(0, "chr"), (1, "chr"), (2, "chr"), (3, "reg"), (4, "reg")];
    assert_eq!(&kinds[..5], &want, "the source's fds");
    assert_eq!(pipes.len(), 1);
    assert_eq!(pipes[0].data.len(), 70_000);
    let img = FilesImage {
        fds,
        pipes,
        descs: Vec::new(),
    };
    let plan = plan_files(&img, &misc(&cwd), false).expect("plan");
    let inst =
        install_in_child(&clutter, &|keep| install_files(&plan, keep), &|| 0).expect("install");
    assert_matches(&inst, &img);
    assert_eq!(inst.cwd(), cwd);
    assert_eq!(inst.go(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[path = "restore_files/refusals.rs"]
mod refusals;
