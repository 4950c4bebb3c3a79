//! Collecting a process's state from outside it (src/dump): a forked victim
//! sets up known state with raw libc calls and waits; the test collects it
//! and checks every field against what the victim did or what the kernel
//! tells the test directly (stat, getrlimit, capget, pidfd_getfd...), never
//! against crest's own /proc parsers.
//!
//! The victim is forked from a multithreaded test process, so its code is
//! raw libc calls only: no allocation, no locks.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crest::dump::{self, ProcessState};
use crest::image::files::{FdFile, FileId};
use crest::image::pstree::TaskState;
use crest::image::vma::{Backing, VMA_DONTDUMP, VMA_DONTFORK, VMA_HUGEPAGE, VMA_LOCKED, Vma};

/// The fds the victim keeps for talking to the test.
const REPORT_FD: i32 = 100;
const GO_FD: i32 = 101;

fn page() -> u64 {
    // SAFETY: sysconf has no memory effects.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as u64 }
}

/// A directory removed with everything in it when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p =
            std::env::temp_dir().join(format!("crest-collect-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p.canonicalize().expect("canonical temp dir"))
    }
    fn file(&self, name: &str, content: &[u8]) -> PathBuf {
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

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

/// A forked child, killed and reaped when dropped.
struct Victim {
    pid: i32,
    report: File,
    go: File,
}

impl Victim {
    /// Forks a child that runs `setup` (raw libc only), reports its N words
    /// (or the failing line) and then answers pings until killed.
    fn spawn<const N: usize>(setup: impl FnOnce() -> Result<[u64; N], u32>) -> (Victim, [u64; N]) {
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

    fn upid(&self) -> u32 {
        self.pid as u32
    }

    /// Whether the victim still answers.
    fn ping(&mut self) -> bool {
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

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into `fds`.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both fds were just created and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// The child: keep only the two pipes (at fixed numbers) and /dev/null on
/// 0-2, run the setup, report, then answer each `p` with `P`.
fn child_main<const N: usize>(
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
macro_rules! ok {
    ($e:expr) => {{
        let r = $e;
        if r as i64 == -1 {
            return Err(line!());
        }
        r
    }};
}

/// What the full victim reports.
struct Full {
    v: Victim,
    tmp: TempDir,
    mapped: PathBuf,
    regular: PathBuf,
    base: u64,
    reg_fd: i32,
    dir_fd: i32,
    null_fd: i32,
    pipe: [i32; 2],
    timer: i32,
    nofile_max: u64,
    brk: u64,
}

/// Slots of the full victim's address layout, in pages from its base.
const ANON: u64 = 1;
const SHARED: u64 = 6;
const FILE_PRIVATE: u64 = 9;
const FILE_SHARED: u64 = 11;
const DONTFORK: u64 = 14;
const DONTDUMP: u64 = 16;
const HUGEPAGE: u64 = 18;
const LOCKED: u64 = 21;
const GUARDED: u64 = 25;

/// A victim with every kind of state the collectors take.
fn full_victim() -> Full {
    let tmp = TempDir::new("full");
    let mapped = tmp.file("mapped", &vec![0x5a; 3 * page() as usize]);
    let regular = tmp.file("regular", b"0123456789");
    let (c_mapped, c_regular, c_tmp) = (cstr(&mapped), cstr(&regular), cstr(&tmp.0));
    let (v, w) = Victim::spawn(|| {
        // SAFETY: raw libc calls on memory and fds the child owns.
        unsafe { full_setup(&c_mapped, &c_regular, &c_tmp) }
    });
    Full {
        v,
        tmp,
        mapped,
        regular,
        base: w[0],
        reg_fd: w[1] as i32,
        dir_fd: w[2] as i32,
        null_fd: w[3] as i32,
        pipe: [w[4] as i32, w[5] as i32],
        timer: w[6] as i32,
        nofile_max: w[7],
        brk: w[8],
    }
}

/// Maps `pages` at slot `at` of `base`.
unsafe fn map_at(base: u64, at: u64, pages: u64, prot: i32, flags: i32, fd: i32, off: i64) -> i64 {
    let p = page();
    let flags = flags | libc::MAP_FIXED;
    // SAFETY: MAP_FIXED inside the child's own reservation.
    let r = unsafe {
        libc::mmap(
            (base + at * p) as *mut _,
            (pages * p) as usize,
            prot,
            flags,
            fd,
            off,
        )
    };
    if r == libc::MAP_FAILED { -1 } else { r as i64 }
}

/// # Safety
/// Runs in the forked child only.
unsafe fn full_setup(mapped: &CStr, regular: &CStr, tmp: &CStr) -> Result<[u64; 9], u32> {
    use libc::*;
    let p = page();
    let (rw, anon) = (PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    // SAFETY (whole body): syscalls on the child's own memory, fds and state.
    unsafe {
        let base = ok!(mmap(
            std::ptr::null_mut(),
            40 * p as usize,
            PROT_READ,
            anon,
            -1,
            0
        )) as u64;
        let one = |at, pages, prot, flags, fd, off| map_at(base, at, pages, prot, flags, fd, off);
        let a = ok!(one(ANON, 4, rw, anon, -1, 0));
        *(a as *mut u8) = 1;
        ok!(one(SHARED, 2, rw, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
        let fd = ok!(open(mapped.as_ptr(), O_RDWR));
        ok!(one(FILE_PRIVATE, 1, rw, MAP_PRIVATE, fd, p as i64));
        ok!(one(FILE_SHARED, 2, PROT_READ, MAP_SHARED, fd, 0));
        close(fd);
        for (at, pages, advice) in [
            (DONTFORK, 1, MADV_DONTFORK),
            (DONTDUMP, 1, MADV_DONTDUMP),
            (HUGEPAGE, 2, MADV_HUGEPAGE),
        ] {
            let addr = ok!(one(at, pages, rw, anon, -1, 0));
            ok!(madvise(addr as *mut _, (pages * p) as usize, advice));
        }
        let locked = ok!(one(LOCKED, 1, rw, anon, -1, 0));
        ok!(mlock(locked as *const _, p as usize));
        let guarded = ok!(one(GUARDED, 3, rw, anon, -1, 0));
        ok!(mprotect(guarded as *mut _, p as usize, PROT_NONE));
        let (nofile_max, timer) = task_setup(tmp)?;
        let reg = ok!(open(regular.as_ptr(), O_RDWR | O_APPEND));
        ok!(lseek(reg, 3, SEEK_SET));
        let dir = ok!(open(tmp.as_ptr(), O_RDONLY | O_DIRECTORY));
        let null = ok!(open(c"/dev/null".as_ptr(), O_WRONLY | O_CLOEXEC));
        let mut fds = [0; 2];
        ok!(pipe2(fds.as_mut_ptr(), O_NONBLOCK));
        let brk = sbrk(0) as u64;
        Ok([
            base,
            reg as u64,
            dir as u64,
            null as u64,
            fds[0] as u64,
            fds[1] as u64,
            timer,
            nofile_max,
            brk,
        ])
    }
}

/// Credentials, limits, names, signals and a timer; returns (the NOFILE
/// hard limit, the timer id).
///
/// # Safety
/// Runs in the forked child only.
unsafe fn task_setup(tmp: &CStr) -> Result<(u64, u64), u32> {
    use libc::*;
    // SAFETY (whole body): syscalls changing only the child's own state.
    unsafe {
        umask(0o027);
        ok!(chdir(tmp.as_ptr()));
        ok!(prctl(PR_SET_NAME, c"victim-x".as_ptr()));
        let mut lim = rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        ok!(getrlimit(RLIMIT_NOFILE, &mut lim));
        lim.rlim_cur = 200;
        ok!(setrlimit(RLIMIT_NOFILE, &lim));
        ok!(setgroups(3, [7, 8, 9].as_ptr()));
        ok!(setresgid(11, 12, 13));
        ok!(personality(0x0040000)); // ADDR_NO_RANDOMIZE
        ok!(prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0));
        ok!(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0));
        let oom = ok!(open(c"/proc/self/oom_score_adj".as_ptr(), O_WRONLY));
        ok!(write(oom, b"123".as_ptr().cast(), 3));
        close(oom);
        ok!(setsid());
        let mut set: sigset_t = std::mem::zeroed();
        sigemptyset(&mut set);
        sigaddset(&mut set, SIGUSR1);
        sigaddset(&mut set, SIGUSR2);
        ok!(sigprocmask(SIG_BLOCK, &set, std::ptr::null_mut()));
        ok!(kill(getpid(), SIGUSR1));
        let mut sev: sigevent = std::mem::zeroed();
        sev.sigev_notify = SIGEV_SIGNAL;
        sev.sigev_signo = SIGUSR2;
        sev.sigev_value = sigval {
            sival_ptr: 0x5eed as *mut _,
        };
        let mut id: i32 = -1;
        ok!(syscall(
            SYS_timer_create,
            CLOCK_MONOTONIC,
            &mut sev as *mut sigevent,
            &mut id as *mut i32
        ));
        Ok((lim.rlim_max, id as u64))
    }
}

fn collect(v: &Victim) -> ProcessState {
    dump::collect_process(v.upid()).unwrap_or_else(|e| panic!("collecting pid {}: {e}", v.pid))
}

fn id_of(meta: &std::fs::Metadata) -> FileId {
    FileId {
        dev: meta.dev(),
        ino: meta.ino(),
        size: meta.size(),
        mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        mode: meta.mode(),
    }
}

fn vma_at(state: &ProcessState, addr: u64) -> &Vma {
    state
        .mm
        .vmas
        .iter()
        .find(|v| v.start == addr)
        .unwrap_or_else(|| panic!("no mapping starts at {addr:#x}: {:#x?}", state.mm.vmas))
}

/// Checks one slot's mapping: bounds, protection, MAP_* flags and advice.
fn check_vma(
    state: &ProcessState,
    f: &Full,
    at: u64,
    pages: u64,
    prot: u32,
    flags: i32,
    advice: u64,
) -> Vma {
    let v = vma_at(state, f.base + at * page()).clone();
    assert_eq!(v.end, v.start + pages * page(), "end of slot {at}");
    assert_eq!(v.prot, prot, "prot of slot {at}");
    assert_eq!(v.flags, flags as u32, "flags of slot {at}");
    assert_eq!(v.advice, advice, "advice of slot {at}");
    v
}

#[test]
fn collects_every_vma_kind_with_flags_and_backing() {
    let f = full_victim();
    let s = collect(&f.v);
    let (rw, ro) = (3, 1);
    let anon = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
    assert!(
        s.mm.vmas.windows(2).all(|w| w[0].end <= w[1].start),
        "sorted, no overlap"
    );
    let v = check_vma(&s, &f, ANON, 4, rw, anon, 0);
    assert_eq!(v.backing, Backing::AnonPrivate);
    let v = check_vma(
        &s,
        &f,
        SHARED,
        2,
        rw,
        libc::MAP_SHARED | libc::MAP_ANONYMOUS,
        0,
    );
    let link = format!("/proc/{}/map_files/{:x}-{:x}", f.v.pid, v.start, v.end);
    let shm = std::fs::metadata(link).expect("stat the shared mapping");
    assert_eq!(v.backing, Backing::AnonShared { shmid: shm.ino() });
    let file = id_of(&std::fs::metadata(&f.mapped).unwrap());
    let path = f.mapped.as_os_str().as_bytes().to_vec();
    let v = check_vma(&s, &f, FILE_PRIVATE, 1, rw, libc::MAP_PRIVATE, 0);
    assert_eq!(v.pgoff, 1);
    assert_eq!(
        v.backing,
        Backing::FilePrivate {
            path: path.clone(),
            id: file
        }
    );
    let v = check_vma(&s, &f, FILE_SHARED, 2, ro, libc::MAP_SHARED, 0);
    assert_eq!(
        (v.pgoff, v.backing),
        (0, Backing::FileShared { path, id: file })
    );
    check_vma(&s, &f, DONTFORK, 1, rw, anon, VMA_DONTFORK);
    check_vma(&s, &f, DONTDUMP, 1, rw, anon, VMA_DONTDUMP);
    check_vma(&s, &f, HUGEPAGE, 2, rw, anon, VMA_HUGEPAGE);
    check_vma(&s, &f, LOCKED, 1, rw, anon, VMA_LOCKED);
    check_vma(&s, &f, GUARDED, 1, 0, anon, 0);
    check_vma(&s, &f, GUARDED + 1, 2, rw, anon, 0);
    check_vma(&s, &f, 0, 1, ro, anon, 0);
    // The layout the child inherited from this process.
    // SAFETY: getauxval reads this process's saved auxv.
    let vdso = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) };
    assert_eq!(vma_at(&s, vdso).backing, Backing::Vdso);
    let stack =
        s.mm.vmas
            .iter()
            .find(|v| v.name == b"[stack]")
            .expect("a [stack]");
    assert_ne!(
        stack.flags & libc::MAP_GROWSDOWN as u32,
        0,
        "the stack grows down"
    );
    let code = collects_every_vma_kind_with_flags_and_backing as fn() as usize as u64;
    let text =
        s.mm.vmas
            .iter()
            .find(|v| v.start <= code && code < v.end)
            .unwrap();
    let exe = std::env::current_exe().unwrap();
    assert!(
        matches!(&text.backing, Backing::FilePrivate { path, .. } if path == exe.as_os_str().as_bytes())
    );
    assert_eq!(text.prot, 5);
}

#[test]
fn collects_the_mm_record() {
    let f = full_victim();
    let mm = collect(&f.v).mm.mm;
    let exe = std::env::current_exe().unwrap();
    assert_eq!(mm.exe, exe.as_os_str().as_bytes());
    assert_eq!(mm.exe_id, id_of(&std::fs::metadata(&exe).unwrap()));
    for kind in [
        libc::AT_PHDR,
        libc::AT_ENTRY,
        libc::AT_SYSINFO_EHDR,
        libc::AT_PAGESZ,
    ] {
        // SAFETY: getauxval reads this process's saved auxv, the child's too.
        let want = unsafe { libc::getauxval(kind) };
        assert!(
            mm.auxv.contains(&(kind, want)),
            "auxv {kind} = {want:#x} in {:x?}",
            mm.auxv
        );
    }
    let code = collects_the_mm_record as fn() as usize as u64;
    assert!(
        mm.code.0 <= code && code < mm.code.1,
        "code {:x?} holds {code:#x}",
        mm.code
    );
    let heap = collect(&f.v).mm.vmas.iter().any(|v| v.name == b"[heap]");
    let round = f.brk.div_ceil(page()) * page();
    assert!(mm.brk.0 <= f.brk);
    assert_eq!(
        mm.brk.1,
        if heap { round } else { mm.brk.0 },
        "brk {:#x}",
        f.brk
    );
    let cmdline = std::fs::read("/proc/self/cmdline").unwrap();
    assert_eq!(
        mm.arg.1 - mm.arg.0,
        cmdline.len() as u64,
        "argument area size"
    );
    assert!(mm.env.0 >= mm.arg.1 && mm.start_stack > mm.env.0 - (64 << 20));
}

fn fd_of(s: &ProcessState, fd: i32) -> &FdFile {
    &s.files
        .fds
        .iter()
        .find(|f| f.fd == fd)
        .unwrap_or_else(|| panic!("fd {fd} not collected"))
        .file
}

fn cloexec(s: &ProcessState, fd: i32) -> bool {
    s.files.fds.iter().any(|f| f.fd == fd && f.fd_flags == 1)
}

/// The inode of the victim's fd, through a copy of it (pidfd_getfd).
fn victim_fd_ino(v: &Victim, fd: i32) -> u64 {
    let pidfd = crest::sys::process::pidfd_open(v.pid).expect("pidfd_open");
    let copy = crest::sys::process::pidfd_getfd(pidfd.as_fd(), fd).expect("pidfd_getfd");
    File::from(copy).metadata().expect("fstat").ino()
}

#[test]
fn collects_regular_files_directories_devices_and_pipes() {
    let f = full_victim();
    let s = collect(&f.v);
    let mut numbers: Vec<i32> = s.files.fds.iter().map(|f| f.fd).collect();
    let mut want = vec![0, 1, 2, f.reg_fd, f.dir_fd, f.null_fd, f.pipe[0], f.pipe[1]];
    want.extend([REPORT_FD, GO_FD]);
    want.sort();
    numbers.sort();
    assert_eq!(numbers, want);
    let null = std::fs::metadata("/dev/null").unwrap();
    for fd in [0, 1, 2, f.null_fd] {
        let FdFile::Chr {
            path, rdev, flags, ..
        } = fd_of(&s, fd)
        else {
            panic!("fd {fd} is not a character device: {:?}", fd_of(&s, fd));
        };
        assert_eq!((path.as_slice(), *rdev), (&b"/dev/null"[..], null.rdev()));
        let mode = if fd == f.null_fd {
            libc::O_WRONLY
        } else {
            libc::O_RDWR
        };
        assert_eq!(*flags as i32 & libc::O_ACCMODE, mode, "fd {fd}");
        assert_eq!(cloexec(&s, fd), fd == f.null_fd, "FD_CLOEXEC of fd {fd}");
    }
    let FdFile::Reg {
        path,
        flags,
        pos,
        id,
    } = fd_of(&s, f.reg_fd)
    else {
        panic!("the regular file fd");
    };
    assert_eq!(path.as_slice(), f.regular.as_os_str().as_bytes());
    assert_eq!(
        *flags as i32 & (libc::O_ACCMODE | libc::O_APPEND),
        libc::O_RDWR | libc::O_APPEND
    );
    assert_eq!(*pos, 3);
    assert_eq!(*id, id_of(&std::fs::metadata(&f.regular).unwrap()));
    let FdFile::Reg {
        path, id, flags, ..
    } = fd_of(&s, f.dir_fd)
    else {
        panic!("the directory fd");
    };
    assert_eq!(path.as_slice(), f.tmp.0.as_os_str().as_bytes());
    assert_eq!(*id, id_of(&std::fs::metadata(&f.tmp.0).unwrap()));
    assert_ne!(*flags as i32 & libc::O_DIRECTORY, 0);
    let ino = victim_fd_ino(&f.v, f.pipe[0]);
    for (fd, mode) in [(f.pipe[0], libc::O_RDONLY), (f.pipe[1], libc::O_WRONLY)] {
        let FdFile::Pipe { pipe_id, flags } = fd_of(&s, fd) else {
            panic!("fd {fd} is not a pipe");
        };
        assert_eq!(*pipe_id, ino);
        assert_eq!(
            *flags as i32 & (libc::O_ACCMODE | libc::O_NONBLOCK),
            mode | libc::O_NONBLOCK
        );
    }
    assert!(s.files.pipes.is_empty(), "pipe data is the parasite step's");
}

/// The capability sets of this process (the victim inherited them).
fn own_caps() -> (u64, u64, u64, u64, u64) {
    #[repr(C)]
    struct Header(u32, i32);
    let mut data = [[0u32; 3]; 2];
    let mut h = Header(0x2008_0522, 0); // _LINUX_CAPABILITY_VERSION_3
    // SAFETY: capget writes two struct __user_cap_data_struct into `data`.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut h as *mut Header, data.as_mut_ptr()) };
    assert_eq!(rc, 0);
    let join = |i: usize| u64::from(data[0][i]) | u64::from(data[1][i]) << 32;
    let (mut bnd, mut amb) = (0u64, 0u64);
    for cap in 0..64 {
        // SAFETY: prctl queries with integer arguments.
        let (b, a) = unsafe {
            let a = libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_IS_SET, cap, 0, 0);
            (libc::prctl(libc::PR_CAPBSET_READ, cap, 0, 0, 0), a)
        };
        bnd |= u64::from(b == 1) << cap;
        amb |= u64::from(a == 1) << cap;
    }
    (join(2), join(0), join(1), bnd, amb)
}

#[test]
fn collects_task_settings_credentials_limits_signals_and_timers() {
    let f = full_victim();
    let s = collect(&f.v);
    let pid = f.v.upid();
    assert_eq!((s.process.pid, s.process.ppid), (pid, std::process::id()));
    assert_eq!(
        (s.process.pgid, s.process.sid),
        (pid, pid),
        "the victim called setsid"
    );
    assert_eq!(
        (s.process.state, s.process.threads.clone()),
        (TaskState::Running, vec![pid])
    );
    let m = &s.task.misc;
    assert_eq!(m.comm, b"victim-x");
    assert_eq!(
        (m.umask, m.personality, m.thp_disable),
        (0o027, 0x0040000, true)
    );
    assert_eq!(
        (m.cwd.as_slice(), m.root.as_slice()),
        (f.tmp.0.as_os_str().as_bytes(), &b"/"[..])
    );
    let c = &s.task.creds;
    let (mut r, mut e, mut su) = (0, 0, 0);
    // SAFETY: getresuid writes three uids.
    assert_eq!(unsafe { libc::getresuid(&mut r, &mut e, &mut su) }, 0);
    assert_eq!(c.uids, [r, e, su, e]);
    assert_eq!(
        (c.gids, c.groups.clone()),
        ([11, 12, 13, 12], vec![7, 8, 9])
    );
    let caps = (
        c.cap_inheritable,
        c.cap_permitted,
        c.cap_effective,
        c.cap_bounding,
        c.cap_ambient,
    );
    assert_eq!(caps, own_caps());
    assert!(c.no_new_privs);
    check_limits(&s, f.nofile_max);
    assert_eq!(s.shared_pending, 1 << (libc::SIGUSR1 - 1));
    let blocked = 1u64 << (libc::SIGUSR1 - 1) | 1 << (libc::SIGUSR2 - 1);
    assert_eq!(s.threads.len(), 1);
    assert_eq!((s.threads[0].tid, s.threads[0].blocked), (pid, blocked));
    assert_eq!(s.threads[0].comm, b"victim-x");
    let t = &s.task.posix_timers;
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(
        (t[0].id, t[0].clock_id, t[0].sigev_signo),
        (f.timer, libc::CLOCK_MONOTONIC, libc::SIGUSR2)
    );
    assert_eq!(
        (t[0].sigev_notify, t[0].notify_tid, t[0].sigev_value),
        (libc::SIGEV_SIGNAL, pid, 0x5eed)
    );
    assert_eq!(s.oom_score_adj, 123);
}

/// RLIMIT_NOFILE as the victim set it; every other limit as inherited.
fn check_limits(s: &ProcessState, nofile_max: u64) {
    let l = &s.task.rlimits.limits;
    assert_eq!(l.len(), 16);
    for (r, got) in l.iter().enumerate() {
        let mut want = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one struct rlimit.
        assert_eq!(unsafe { libc::getrlimit(r as _, &mut want) }, 0);
        if r == libc::RLIMIT_NOFILE as usize {
            (want.rlim_cur, want.rlim_max) = (200, nofile_max);
        }
        assert_eq!(
            (got.cur, got.max),
            (want.rlim_cur, want.rlim_max),
            "limit {r}"
        );
    }
}

/// A victim holding one fd made by `make` (raw libc); returns it and the fd.
fn victim_with(make: fn() -> i32) -> (Victim, i32) {
    let (v, w) = Victim::spawn(|| {
        let fd = make();
        if fd < 0 {
            Err(line!())
        } else {
            Ok([fd as u64])
        }
    });
    (v, w[0] as i32)
}

fn refusal(v: &Victim) -> String {
    match dump::collect_process(v.upid()) {
        Ok(_) => panic!(
            "pid {} was collected despite an unsupported resource",
            v.pid
        ),
        Err(e) => {
            assert!(matches!(e, crest::Error::Unsupported(_)), "{e:?}");
            e.to_string()
        }
    }
}

#[test]
fn refuses_unsupported_fds_by_number_and_kind_and_leaves_the_victim_running() {
    // SAFETY (each maker): a raw syscall in the victim.
    let makers: [(fn() -> i32, &str); 4] = [
        (|| unsafe { libc::eventfd(5, 0) }, "an eventfd"),
        (|| unsafe { libc::epoll_create1(0) }, "an epoll instance"),
        (
            || unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, 0) },
            "a timerfd",
        ),
        (
            || {
                let mut sv = [0; 2];
                // SAFETY: socketpair writes two fds into `sv`.
                let rc = unsafe {
                    libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, sv.as_mut_ptr())
                };
                // The victim keeps one end, so only one fd is a socket.
                // SAFETY: closing the victim's own fd.
                if rc < 0 {
                    rc
                } else {
                    unsafe { libc::close(sv[1]) };
                    sv[0]
                }
            },
            "a socket",
        ),
    ];
    for (make, kind) in makers {
        let (mut v, fd) = victim_with(make);
        let msg = refusal(&v);
        let want = format!("fd {fd} of pid {} is {kind}", v.pid);
        assert!(msg.contains(&want), "`{msg}` lacks `{want}`");
        assert!(v.ping(), "the victim stopped answering after the refusal");
        assert!(
            Path::new(&format!("/proc/{}/fd/{fd}", v.pid)).exists(),
            "its fd is still open"
        );
    }
}

#[test]
fn refuses_a_deleted_file_fd_or_mapping_by_path() {
    let tmp = TempDir::new("deleted");
    let path = tmp.file("gone", b"data");
    let c = cstr(&path);
    let (mut v, w) = Victim::spawn(|| {
        // SAFETY: raw syscalls in the victim on its own fd.
        unsafe {
            let fd = ok!(libc::open(c.as_ptr(), libc::O_RDONLY));
            ok!(libc::unlink(c.as_ptr()));
            Ok([fd as u64])
        }
    });
    let msg = refusal(&v);
    let want = format!(
        "fd {} of pid {} is the deleted file `{}",
        w[0],
        v.pid,
        path.display()
    );
    assert!(msg.contains(&want), "`{msg}` lacks `{want}`");
    assert!(v.ping());
    let path = tmp.file("mapped-gone", &vec![1; page() as usize]);
    let c = cstr(&path);
    let (mut v, w) = Victim::spawn(|| {
        // SAFETY: raw syscalls in the victim on its own fd and memory.
        unsafe {
            let fd = ok!(libc::open(c.as_ptr(), libc::O_RDONLY));
            let len = page() as usize;
            let addr = ok!(libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                fd,
                0
            ));
            libc::close(fd);
            ok!(libc::unlink(c.as_ptr()));
            Ok([addr as u64])
        }
    });
    let msg = refusal(&v);
    let want = format!(
        "mapping {:#x}-{:#x} `{} (deleted)` of pid {}",
        w[0],
        w[0] + page(),
        path.display(),
        v.pid
    );
    assert!(
        msg.contains(&want) && msg.contains("deleted file"),
        "`{msg}` lacks `{want}`"
    );
    assert!(v.ping());
}

#[test]
fn a_process_that_is_gone_or_a_zombie_is_a_clear_error() {
    // SAFETY: the child exits at once.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: leaving the forked child.
        unsafe { libc::_exit(3) };
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let stat = format!("/proc/{pid}/stat");
    while !std::fs::read_to_string(&stat).is_ok_and(|s| s.contains(") Z ")) {
        assert!(
            std::time::Instant::now() < deadline,
            "the child never became a zombie"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let p = dump::task::collect_pstree(pid as u32).expect("a zombie's process record");
    assert_eq!(p.state, TaskState::Zombie { exit_code: 3 << 8 });
    assert!(p.threads.is_empty());
    let msg = dump::collect_process(pid as u32).unwrap_err().to_string();
    assert!(msg.contains(&format!("pid {pid} is a zombie")), "{msg}");
    let mut status = 0;
    // SAFETY: reaping our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert_eq!(status, 3 << 8, "the wait status the record announced");
    let msg = dump::collect_process(pid as u32).unwrap_err().to_string();
    assert!(
        msg.contains(&format!("pid {pid}")) && msg.contains("does not exist or exited"),
        "{msg}"
    );
}

#[test]
fn a_stopped_process_is_recorded_as_stopped_and_limits_come_from_prlimit() {
    let (v, w) = Victim::spawn(|| {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: raw syscalls changing the victim's own limit.
        unsafe {
            ok!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim));
            lim.rlim_cur = 200;
            ok!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim));
        }
        Ok([lim.rlim_max])
    });
    // Same ids as this process: prlimit64 is allowed, no /proc fallback.
    check_limits(&collect(&v), w[0]);
    // SAFETY: signals to our own child.
    unsafe { libc::kill(v.pid, libc::SIGSTOP) };
    let stat = format!("/proc/{}/stat", v.pid);
    while !std::fs::read_to_string(&stat).unwrap().contains(") T ") {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let p = dump::task::collect_pstree(v.upid()).unwrap();
    assert_eq!(
        p.state,
        TaskState::Stopped {
            signal: libc::SIGSTOP as u32
        }
    );
    assert_eq!(p.threads, [v.upid()]);
    // SAFETY: as above.
    unsafe { libc::kill(v.pid, libc::SIGCONT) };
}
