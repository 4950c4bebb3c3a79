//! The files and misc victim: an O_APPEND file, a file read to a known
//! offset, /dev/null read-write, a directory fd with FD_CLOEXEC, the cwd in
//! a scratch directory, umask, a lowered RLIMIT_NOFILE, a personality flag
//! and a comm name. After go it checks each fd's kind, flags and position
//! (the read continues where it stopped, an append lands at the end), that
//! no other fd exists, and every process attribute.

use std::ffi::CStr;
use std::path::Path;

use crate::common::victim::{Child, Msg, Verdict, proc_numbers, read_file};

/// The file the victim reads; deleting it after a dump makes restore fail.
pub const DATA: &str = "data.bin";
pub const APPEND: &str = "append.log";
const CWD: &str = "cwd";
/// The directory held open: nothing is created in it after the dump, so its
/// size and mtime (which restore may validate) stay as dumped.
const FIXED: &str = "fixed";
const APPEND_FD: i32 = 10;
const DATA_FD: i32 = 11;
const NULL_FD: i32 = 12;
const DIR_FD: i32 = 13;
const READ_BEFORE: usize = 100;
const UMASK: u32 = 0o027;
const NOFILE: u64 = 200;
const COMM: &CStr = c"crest-vfiles";

fn data_byte(off: usize) -> u8 {
    (off * 13 + off / 256) as u8
}

pub fn prepare(dir: &Path) {
    let data: Vec<u8> = (0..1024).map(data_byte).collect();
    std::fs::write(dir.join(DATA), data).unwrap();
    std::fs::write(dir.join(APPEND), b"").unwrap();
    std::fs::create_dir(dir.join(CWD)).unwrap();
    std::fs::create_dir(dir.join(FIXED)).unwrap();
}

/// Opens `path` at exactly `fd`.
fn open_at(path: &CStr, flags: i32, fd: i32) -> Verdict {
    // SAFETY: raw fd calls on a live path.
    let ok = unsafe {
        let f = libc::open(path.as_ptr(), flags);
        f >= 0 && libc::dup3(f, fd, flags & libc::O_CLOEXEC) == fd && libc::close(f) == 0
    };
    ensure!(ok, "opening {path:?} at fd {fd}");
    Ok(())
}

/// What setup recorded for the checks.
struct Before {
    dir_ino: u64,
    cwd_ino: u64,
    nofile_max: u64,
    personality: i32,
}

fn ino(fd: i32) -> u64 {
    // SAFETY: fstat into a zeroed local.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is a live local.
    unsafe { libc::fstat(fd, &mut st) };
    st.st_ino
}

fn setup_fds(c: &Child) -> Verdict {
    open_at(&c.path(APPEND), libc::O_WRONLY | libc::O_APPEND, APPEND_FD)?;
    open_at(&c.path(DATA), libc::O_RDONLY, DATA_FD)?;
    open_at(c"/dev/null", libc::O_RDWR, NULL_FD)?;
    open_at(
        &c.path(FIXED),
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        DIR_FD,
    )?;
    let mut buf = [0u8; READ_BEFORE];
    // SAFETY: raw I/O on the victim's own fds and a live buffer.
    let (w, r, pos) = unsafe {
        let w = libc::write(APPEND_FD, b"before\n".as_ptr().cast(), 7);
        let r = libc::read(DATA_FD, buf.as_mut_ptr().cast(), READ_BEFORE);
        // An append must land at the end whatever the position says.
        (w, r, libc::lseek(APPEND_FD, 0, libc::SEEK_SET))
    };
    ensure!(w == 7 && pos == 0, "writing append.log");
    ensure!(r == READ_BEFORE as isize, "reading data.bin");
    ensure!(
        buf.iter().enumerate().all(|(i, &b)| b == data_byte(i)),
        "data.bin content"
    );
    Ok(())
}

fn setup(c: &Child) -> Result<Before, Msg> {
    setup_fds(c)?;
    // SAFETY: process attribute syscalls with live arguments.
    unsafe {
        ensure!(libc::chdir(c.path(CWD).as_ptr()) == 0, "chdir");
        libc::umask(UMASK);
        let mut rl: libc::rlimit = std::mem::zeroed();
        ensure!(
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0,
            "getrlimit"
        );
        let lowered = libc::rlimit {
            rlim_cur: NOFILE,
            rlim_max: rl.rlim_max,
        };
        ensure!(
            libc::setrlimit(libc::RLIMIT_NOFILE, &lowered) == 0,
            "setrlimit"
        );
        let old = libc::personality(0xffff_ffff);
        ensure!(
            libc::personality((old | libc::ADDR_NO_RANDOMIZE) as u64) >= 0,
            "personality"
        );
        ensure!(
            libc::prctl(libc::PR_SET_NAME, COMM.as_ptr()) == 0,
            "PR_SET_NAME"
        );
        Ok(Before {
            dir_ino: ino(DIR_FD),
            cwd_ino: {
                let mut st: libc::stat = std::mem::zeroed();
                libc::stat(c".".as_ptr(), &mut st);
                st.st_ino
            },
            nofile_max: rl.rlim_max,
            personality: libc::personality(0xffff_ffff),
        })
    }
}

fn check_fd_set() -> Verdict {
    // The fd listing /proc/self/fd takes the lowest free number: 3.
    let want = [
        0,
        1,
        2,
        3,
        APPEND_FD as i64,
        DATA_FD as i64,
        NULL_FD as i64,
        DIR_FD as i64,
    ];
    let mut got = [0i64; 32];
    let n = proc_numbers(c"/proc/self/fd", &mut got);
    ensure!(
        got[..n.min(32)] == want[..],
        "open fds {:?}, want {want:?}",
        &got[..n.min(32)]
    );
    Ok(())
}

fn check_fds(c: &Child, b: &Before) -> Verdict {
    check_fd_set()?;
    // SAFETY: fcntl/lseek/read/write on the victim's own fds, live buffers.
    unsafe {
        let fl = libc::fcntl(APPEND_FD, libc::F_GETFL);
        ensure!(
            fl & libc::O_APPEND != 0 && fl & libc::O_ACCMODE == libc::O_WRONLY,
            "append.log flags {fl:#o}"
        );
        ensure!(
            libc::write(APPEND_FD, b"after\n".as_ptr().cast(), 6) == 6,
            "write append.log"
        );
        let pos = libc::lseek(DATA_FD, 0, libc::SEEK_CUR);
        ensure!(
            pos == READ_BEFORE as i64,
            "data.bin position {pos}, want {READ_BEFORE}"
        );
        let mut buf = [0u8; 10];
        ensure!(
            libc::read(DATA_FD, buf.as_mut_ptr().cast(), 10) == 10,
            "read data.bin"
        );
        let same = buf
            .iter()
            .enumerate()
            .all(|(i, &x)| x == data_byte(READ_BEFORE + i));
        ensure!(same, "data.bin read after the restore: {buf:?}");
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(NULL_FD, &mut st);
        let null = st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == libc::makedev(1, 3);
        ensure!(
            null,
            "fd {NULL_FD} is not /dev/null (mode {:o})",
            st.st_mode
        );
        let fl = libc::fcntl(NULL_FD, libc::F_GETFL) & libc::O_ACCMODE;
        ensure!(fl == libc::O_RDWR, "/dev/null access mode {fl}");
        ensure!(
            libc::fcntl(NULL_FD, libc::F_GETFD) & libc::FD_CLOEXEC == 0,
            "/dev/null got FD_CLOEXEC"
        );
        ensure!(
            libc::fcntl(DIR_FD, libc::F_GETFD) & libc::FD_CLOEXEC != 0,
            "the directory fd lost FD_CLOEXEC"
        );
        ensure!(
            ino(DIR_FD) == b.dir_ino,
            "the directory fd is another directory"
        );
    }
    let mut buf = [0u8; 64];
    let text = read_file(&c.path(APPEND), &mut buf);
    ensure!(
        text == b"before\nafter\n",
        "append.log holds {:?}",
        std::str::from_utf8(text)
    );
    Ok(())
}

fn check_process(c: &Child, b: &Before) -> Verdict {
    let mut buf = [0u8; 4096];
    // SAFETY: queries into live locals.
    unsafe {
        let p = libc::getcwd(buf.as_mut_ptr().cast(), buf.len());
        ensure!(!p.is_null(), "getcwd");
        let cwd = CStr::from_ptr(p);
        ensure!(cwd == c.path(CWD).as_c_str(), "cwd {cwd:?}");
        let mut st: libc::stat = std::mem::zeroed();
        libc::stat(c".".as_ptr(), &mut st);
        ensure!(st.st_ino == b.cwd_ino, "cwd is another directory");
        let um = libc::umask(0);
        ensure!(um == UMASK, "umask {um:o}");
        let mut rl: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl);
        ensure!(
            rl.rlim_cur == NOFILE && rl.rlim_max == b.nofile_max,
            "RLIMIT_NOFILE {}/{}",
            rl.rlim_cur,
            rl.rlim_max
        );
        let pers = libc::personality(0xffff_ffff);
        ensure!(
            pers == b.personality,
            "personality {pers:#x}, was {:#x}",
            b.personality
        );
        let mut name = [0u8; 16];
        libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr());
        let name = CStr::from_bytes_until_nul(&name).unwrap_or_default();
        ensure!(name == COMM, "comm {name:?}");
    }
    Ok(())
}

pub fn victim(c: &Child) -> Verdict {
    let b = setup(c)?;
    c.ready(b"");
    c.wait_go();
    check_fds(c, &b)?;
    check_process(c, &b)
}
