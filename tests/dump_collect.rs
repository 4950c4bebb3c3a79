//! Collecting a process's state from outside it (src/dump): a forked victim
//! sets up known state with raw libc calls and waits; the test collects it
//! and checks every field against what the victim did or what the kernel
//! tells the test directly (stat, getrlimit, capget, pidfd_getfd...), never
//! against crest's own /proc parsers.
//!
//! The victim is forked from a multithreaded test process, so its code is
//! raw libc calls only: no allocation, no locks.

use std::ffi::CStr;
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crest::dump::{self, ProcessState};
use crest::image::files::{FdFile, FileId};
use crest::image::pstree::TaskState;
use crest::image::vma::{Backing, VMA_DONTDUMP, VMA_DONTFORK, VMA_HUGEPAGE, VMA_LOCKED, Vma};

#[macro_use]
#[path = "dump_collect/victim.rs"]
mod victim;
#[path = "dump_collect/full.rs"]
mod full;

use full::*;
use victim::*;

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

/// Makes the fd a victim holds, in the victim.
type Maker = fn() -> i32;

fn make_io_uring() -> i32 {
    // struct io_uring_params is 120 bytes the kernel fills.
    let mut params = [0u8; 120];
    // SAFETY: a raw syscall in the victim with a live params buffer.
    unsafe { libc::syscall(libc::SYS_io_uring_setup, 4, params.as_mut_ptr()) as i32 }
}

fn make_userfaultfd() -> i32 {
    // SAFETY: a raw syscall in the victim.
    unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC) as i32 }
}

fn make_pidfd() -> i32 {
    // SAFETY: raw syscalls in the victim.
    unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) as i32 }
}

/// A UDP socket: unix sockets are dumped now (tests/restore_unix.rs),
/// other families are still refused.
fn make_socket() -> i32 {
    // SAFETY: a raw syscall in the victim.
    unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) }
}

#[test]
fn refuses_unsupported_fds_by_number_and_kind_and_leaves_the_victim_running() {
    // eventfd, epoll, timerfd, signalfd and inotify are dumped now
    // (tests/restore_fdkinds.rs).
    let makers: [(Maker, &str); 4] = [
        (make_io_uring, "an io_uring instance"),
        (make_userfaultfd, "a userfaultfd"),
        (make_pidfd, "a pidfd"),
        (make_socket, "a socket"),
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

/// A deleted file is stored in the image up to --ghost-limit; over it, the
/// fd or mapping is refused by path (the limit is 2 bytes here).
#[test]
fn refuses_a_deleted_file_fd_or_mapping_over_the_ghost_limit_by_path() {
    let refusal = |v: &Victim| {
        let s = collect(v);
        let files = dump::files::FileOptions {
            ghost_limit: 2,
            file_locks: false,
        };
        let e = files.refuse(&s).expect_err("a deleted file over the limit");
        assert!(matches!(e, crest::Error::Unsupported(_)), "{e:?}");
        e.to_string()
    };
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
        "mapping {:#x}-{:#x} of pid {} is the deleted file `{}`",
        w[0],
        w[0] + page(),
        v.pid,
        path.display(),
    );
    assert!(
        msg.contains(&want) && msg.contains("--ghost-limit"),
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
    let pid = pid as u32;
    let errors = [
        dump::collect_process(pid).map(drop),
        dump::vma::collect_vmas(pid).map(drop),
        dump::mm::collect_mm(pid, &[]).map(drop),
        dump::files::collect_files(pid).map(drop),
        dump::task::collect_rlimits(pid).map(drop),
        dump::task::collect_posix_timers(pid).map(drop),
    ];
    for e in errors {
        let msg = e.expect_err("collected a process that is gone").to_string();
        let gone = msg.contains(&format!("pid {pid}")) && msg.contains("does not exist or exited");
        assert!(gone, "{msg}");
    }
}

#[test]
fn collects_every_thread_with_its_name_and_blocked_mask() {
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let worker = std::thread::Builder::new()
        .name("collect-probe".into())
        .spawn(move || {
            // SAFETY: blocks SIGUSR2 in this thread only; gettid has no effects.
            let tid = unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGUSR2);
                libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                libc::gettid()
            };
            tx.send(tid as u32).unwrap();
            let _ = stop_rx.recv();
        })
        .unwrap();
    let tid = rx.recv().unwrap();
    // SAFETY: unblocks SIGUSR2 in this thread only; gettid has no effects.
    let mine = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::gettid() as u32
    };
    let me = std::process::id();
    let p = dump::task::collect_pstree(me).unwrap();
    assert_eq!(p.threads[0], me, "the leader comes first");
    assert!(p.threads.contains(&tid), "{tid} in {:?}", p.threads);
    // Other test threads of this process come and go, and libtest's main
    // thread blocks every signal while it starts one (pthread_create); a
    // real target is seized first. Read the two threads this test controls.
    let threads = dump::task::collect_threads(me, &[mine, tid]).unwrap();
    let t = threads.iter().find(|t| t.tid == tid).expect("the worker");
    assert_eq!(t.comm, b"collect-probe");
    assert_ne!(t.blocked & 1 << (libc::SIGUSR2 - 1), 0);
    let this = threads
        .iter()
        .find(|t| t.tid == mine)
        .expect("this test's thread");
    assert_eq!(
        this.blocked & 1 << (libc::SIGUSR2 - 1),
        0,
        "the mask is per thread"
    );
    stop_tx.send(()).unwrap();
    worker.join().unwrap();
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

/// The page stores the page step will write, empty here, so the image is
/// complete for `crest show`.
fn write_empty_page_stores(d: &crest::image::ImageDir, s: &ProcessState) {
    use crest::image::dir::{pagemap_file, pages_file, shmem_pagemap_file, shmem_pages_file};
    use crest::image::pagemap::Space;
    use crest::image::pages::PageWriter;
    let pid = s.process.pid;
    let mut spaces = vec![(pagemap_file(pid), pages_file(pid), Space::Process(pid))];
    for v in &s.mm.vmas {
        if let Backing::AnonShared { shmid } = v.backing {
            spaces.push((
                shmem_pagemap_file(shmid),
                shmem_pages_file(shmid),
                Space::Shmem(shmid),
            ));
        }
    }
    for (index, data, space) in spaces {
        PageWriter::create(d, &index, &data, space)
            .unwrap()
            .finish()
            .unwrap();
    }
}

#[test]
fn written_metadata_loads_back_and_crest_show_displays_it() {
    use crest::image::load::{FilesImage, MmImage, load_inventory, load_pstree};
    let f = full_victim();
    let s = collect(&f.v);
    let dir = f.tmp.0.join("img");
    let d = crest::image::ImageDir::create(&dir).unwrap();
    let options = ["dump", "-t", &f.v.pid.to_string(), "-D", "img"].map(String::from);
    dump::write_metadata(&d, &s, &options).unwrap();
    assert_eq!(MmImage::load(&d, f.v.upid()).unwrap(), s.mm);
    assert_eq!(FilesImage::load(&d, f.v.upid()).unwrap(), s.files);
    assert_eq!(load_pstree(&d).unwrap(), std::slice::from_ref(&s.process));
    let inv = load_inventory(&d).unwrap();
    // SAFETY: uname fills one struct utsname.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::uname(&mut uts) }, 0);
    // SAFETY: uname NUL-terminates release.
    let release = unsafe { CStr::from_ptr(uts.release.as_ptr()) };
    assert_eq!(inv.kernel_release.as_bytes(), release.to_bytes());
    assert_eq!(
        (inv.root_pid, inv.options.as_slice()),
        (f.v.upid(), &options[..])
    );
    #[cfg(target_arch = "x86_64")]
    assert_eq!(
        inv.cpu.xsave_size,
        std::arch::x86_64::__cpuid_count(0xd, 0).ebx
    );
    write_empty_page_stores(&d, &s);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crest"))
        .args(["show", dir.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "crest show failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let base = format!("{:#018x}", f.base + FILE_PRIVATE * page());
    for needle in [
        &base,
        f.mapped.to_str().unwrap(),
        f.regular.to_str().unwrap(),
        "victim-x",
        "[vdso]",
        "pipe id=",
    ] {
        assert!(
            text.contains(needle),
            "crest show lacks `{needle}`:\n{text}"
        );
    }
}

#[test]
fn refuses_a_seccomp_filter_and_leaves_the_victim_running() {
    let (mut v, _) = Victim::spawn(|| {
        // SAFETY: prctl with integer arguments in the victim.
        ok!(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) });
        crest::sys::process::seccomp_allow_all().map_err(|_| line!())?;
        Ok([0u64])
    });
    let msg = refusal(&v);
    let want = format!("pid {} runs under seccomp (mode 2)", v.pid);
    assert!(msg.contains(&want), "`{msg}` lacks `{want}`");
    assert!(v.ping());
}

/// A whole `crest dump -R` reads smaps on a second thread while it dumps
/// the pages: its mm image must still carry every mapping's MAP_* flags
/// and advice exactly as collect_process (smaps read first) finds them.
#[test]
fn dump_command_records_the_flags_and_advice_smaps_shows() {
    use crest::image::load::MmImage;
    let f = full_victim();
    let s = collect(&f.v);
    let dir = f.tmp.0.join("whole");
    let opts = dump::run::DumpOptions {
        pid: f.v.pid,
        dir: dir.clone(),
        leave_running: true,
        command_line: Vec::new(),
        external: Vec::new(),
        files: Default::default(),
    };
    dump::run::run(&opts).unwrap_or_else(|e| panic!("dump -R: {e}"));
    let d = crest::image::ImageDir::open(&dir).unwrap();
    let got = MmImage::load(&d, f.v.upid()).unwrap();
    let flags = |vmas: &[Vma]| -> Vec<(u64, u32, u64)> {
        vmas.iter().map(|v| (v.start, v.flags, v.advice)).collect()
    };
    assert_eq!(flags(&got.vmas), flags(&s.mm.vmas));
    assert!(
        s.mm.vmas.iter().any(|v| v.advice != 0),
        "the victim sets advice"
    );
}
