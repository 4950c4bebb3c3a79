//! The full victim: one process holding every kind of state the collectors
//! take (mappings of each backing and advice, fds of each kind, credentials,
//! limits, names, signals, a POSIX timer), at known addresses and numbers.

use std::ffi::CStr;
use std::path::PathBuf;

use super::victim::{TempDir, Victim, cstr, page};

/// What the full victim reports.
pub struct Full {
    pub v: Victim,
    pub tmp: TempDir,
    pub mapped: PathBuf,
    pub regular: PathBuf,
    pub base: u64,
    pub reg_fd: i32,
    pub dir_fd: i32,
    pub null_fd: i32,
    pub pipe: [i32; 2],
    pub timer: i32,
    pub nofile_max: u64,
    pub brk: u64,
}

/// Slots of the full victim's address layout, in pages from its base.
pub const ANON: u64 = 1;
pub const SHARED: u64 = 6;
pub const FILE_PRIVATE: u64 = 9;
pub const FILE_SHARED: u64 = 11;
pub const DONTFORK: u64 = 14;
pub const DONTDUMP: u64 = 16;
pub const HUGEPAGE: u64 = 18;
pub const LOCKED: u64 = 21;
pub const GUARDED: u64 = 25;

/// A victim with every kind of state the collectors take.
pub fn full_victim() -> Full {
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
pub unsafe fn map_at(
    base: u64,
    at: u64,
    pages: u64,
    prot: i32,
    flags: i32,
    fd: i32,
    off: i64,
) -> i64 {
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
pub unsafe fn full_setup(mapped: &CStr, regular: &CStr, tmp: &CStr) -> Result<[u64; 9], u32> {
    use libc::*;
    let p = page();
    let (rw, anon) = (PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    // SAFETY: (whole body) syscalls on the child's own memory, fds and state.
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
pub unsafe fn task_setup(tmp: &CStr) -> Result<(u64, u64), u32> {
    use libc::*;
    // SAFETY: (whole body) syscalls changing only the child's own state.
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
