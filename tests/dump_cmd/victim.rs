//! The victim of the `crest dump` command tests: a forked child with two
//! threads, a memory region filled with a known pattern, signal handlers, a
//! blocked signal left pending, an interval timer and a POSIX timer, and
//! open regular-file and /dev/null fds (optionally an io_uring instance, which crest
//! must refuse). When the test writes 1 to CMD it checks that all of it is
//! still as it set it and reports in RESULT and FAILED.
//!
//! The report area is a MAP_SHARED page of a regular file (crest does not
//! dump shared anonymous memory yet and refuses it), kept after the test. The child runs after a
//! fork from the threaded test harness, so it keeps to raw libc calls.
//!
//! ```text
//!   slot 0 counter  1 ready  2 setup error (line)  3 cmd  4 result  5 failed bits
//!        6 region address  7 thread tid  8 thread counter  9 SIGALRMs
//!        10 SIGUSR2s  11 POSIX timer signals  12 SIGUSR1s
//! ```

use std::ffi::{CString, c_void};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const COUNTER: usize = 0;
pub const READY: usize = 1;
pub const SETUP_ERR: usize = 2;
pub const CMD: usize = 3;
pub const RESULT: usize = 4;
pub const FAILED: usize = 5;
pub const REGION: usize = 6;
pub const THREAD_TID: usize = 7;
pub const THREAD_COUNTER: usize = 8;
pub const ALRMS: usize = 9;
pub const USR2S: usize = 10;
pub const TIMER_SIGS: usize = 11;
pub const USR1S: usize = 12;

/// Pages of the pattern region.
pub const PAGES: u64 = 64;
/// Where the victim keeps its fds.
pub const FILE_FD: i32 = 10;
pub const NULL_FD: i32 = 11;
pub const EXTRA_FD: i32 = 12;

/// An fd kind crest must refuse, held at EXTRA_FD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extra {
    None,
    /// An io_uring instance (eventfd, crest's first refusal, is dumped now).
    IoUring,
    /// The read end of a pipe holding a few bytes.
    Pipe,
}
/// The regular file's position.
pub const FILE_POS: i64 = 5;
pub const SIG_TIMER: i32 = 40;
const AREA: usize = 4096;

static AREA_PTR: AtomicUsize = AtomicUsize::new(0);

/// The pattern word `i` of page `page`: different on every page and word.
pub fn word(page: u64, i: u64) -> u64 {
    0x5eed_c0de_0000_0000 ^ (page << 24) ^ i.wrapping_mul(0x9e37_79b9)
}

pub fn page_size() -> u64 {
    // SAFETY: sysconf has no memory effects.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as u64 }
}

/// The bytes of page `page` of the region.
pub fn pattern_page(page: u64) -> Vec<u8> {
    (0..page_size() / 8)
        .flat_map(|i| word(page, i).to_ne_bytes())
        .collect()
}

fn slot(i: usize) -> *mut u64 {
    assert!(i < AREA / 8);
    // SAFETY: i is inside the area, mapped for the child's whole life.
    unsafe { (AREA_PTR.load(Ordering::Relaxed) as *mut u64).add(i) }
}

fn get(i: usize) -> u64 {
    // SAFETY: see slot(); volatile because the other process reads it.
    unsafe { slot(i).read_volatile() }
}

fn set(i: usize, v: u64) {
    // SAFETY: as in get().
    unsafe { slot(i).write_volatile(v) }
}

fn bump(i: usize) {
    set(i, get(i) + 1);
}

extern "C" fn on_usr1(_: i32, _: *mut libc::siginfo_t, _: *mut c_void) {
    bump(USR1S);
}

extern "C" fn on_usr2(_: i32) {
    bump(USR2S);
}

extern "C" fn on_alrm(_: i32) {
    bump(ALRMS);
}

extern "C" fn on_timer(_: i32) {
    bump(TIMER_SIGS);
}

const USR1_FLAGS: i32 = libc::SA_SIGINFO | libc::SA_RESTART;

fn sigaction(sig: i32, handler: usize, flags: i32) -> bool {
    // SAFETY: a zeroed sigaction is valid; the handlers only touch the area.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler;
        sa.sa_flags = flags;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaddset(&mut sa.sa_mask, libc::SIGINT);
        libc::sigaction(sig, &sa, std::ptr::null_mut()) == 0
    }
}

fn now() -> Duration {
    // SAFETY: a zeroed timespec is written by the kernel.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: ts is a live local.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Sleeps `ms` milliseconds whatever signals arrive.
fn sleep_ms(ms: u64) {
    let end = now() + Duration::from_millis(ms);
    while now() < end {
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 1_000_000,
        };
        // SAFETY: ts is a live local.
        unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
    }
}

fn region() -> *mut u64 {
    get(REGION) as *mut u64
}

fn memory_intact() -> bool {
    let words = page_size() / 8;
    (0..PAGES).all(|p| {
        (0..words).all(|i| {
            // SAFETY: the region is PAGES pages long and stays mapped.
            unsafe { region().add((p * words + i) as usize).read_volatile() == word(p, i) }
        })
    })
}

fn usr1_action_intact() -> bool {
    // SAFETY: a zeroed sigaction is valid for the kernel to fill.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: query only.
    let ok = unsafe { libc::sigaction(libc::SIGUSR1, std::ptr::null(), &mut old) } == 0;
    // SAFETY: old.sa_mask was filled by the kernel.
    let masked = unsafe { libc::sigismember(&old.sa_mask, libc::SIGINT) } == 1;
    ok && old.sa_sigaction == on_usr1 as *const () as usize
        && old.sa_flags & USR1_FLAGS == USR1_FLAGS
        && masked
}

fn tgkill_self(sig: i32) {
    // SAFETY: plain syscalls on this thread.
    unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), libc::gettid(), sig) };
}

/// Checks everything the victim set up; bit n of FAILED names check n.
fn self_check() {
    let mut bad = 0u64;
    bad |= u64::from(!memory_intact());
    bad |= u64::from(!usr1_action_intact()) << 1;
    let u1 = get(USR1S);
    tgkill_self(libc::SIGUSR1);
    bad |= u64::from(get(USR1S) != u1 + 1) << 2;
    let (a, t, c) = (get(ALRMS), get(TIMER_SIGS), get(THREAD_COUNTER));
    sleep_ms(100);
    bad |= u64::from(get(ALRMS) <= a) << 3;
    bad |= u64::from(get(TIMER_SIGS) <= t) << 4;
    bad |= u64::from(get(THREAD_COUNTER) <= c) << 5;
    // The SIGUSR2 raised at setup is still pending: unblocking delivers it.
    bad |= u64::from(get(USR2S) != 0) << 6;
    set_usr2_blocked(false);
    bad |= u64::from(get(USR2S) != 1) << 7;
    set(FAILED, bad);
    set(RESULT, if bad == 0 { 1 } else { 2 });
    set(CMD, 0);
}

fn set_usr2_blocked(block: bool) {
    // SAFETY: sigset manipulation on a live local.
    unsafe {
        let mut s: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut s);
        libc::sigaddset(&mut s, libc::SIGUSR2);
        let how = if block {
            libc::SIG_BLOCK
        } else {
            libc::SIG_UNBLOCK
        };
        libc::pthread_sigmask(how, &s, std::ptr::null_mut());
    }
}

extern "C" fn thread_main(_: *mut c_void) -> *mut c_void {
    // SAFETY: plain syscall.
    set(THREAD_TID, unsafe { libc::gettid() } as u64);
    loop {
        bump(THREAD_COUNTER);
        sleep_ms(1);
    }
}

/// Records the failing setup line and stops.
macro_rules! need {
    ($ok:expr) => {
        if !$ok {
            set(SETUP_ERR, line!() as u64);
            // SAFETY: the child ends here without running the harness's code.
            unsafe { libc::_exit(1) };
        }
    };
}

fn setup_fds(file: &CString, extra: Extra) -> bool {
    // SAFETY: raw fd syscalls on paths the parent prepared before the fork.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        let ok = null >= 0 && (0..3).all(|fd| libc::dup2(null, fd) == fd);
        // Whatever the harness had open (pipes, the jobserver) is not ours.
        let ok = ok && libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) == 0;
        let f = libc::open(file.as_ptr(), libc::O_RDONLY);
        let ok = ok && f >= 0 && libc::dup2(f, FILE_FD) == FILE_FD && libc::close(f) == 0;
        let ok = ok && libc::lseek(FILE_FD, FILE_POS, libc::SEEK_SET) == FILE_POS;
        let n = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        let ok = ok && n >= 0 && libc::dup3(n, NULL_FD, libc::O_CLOEXEC) == NULL_FD;
        let ok = ok && libc::close(n) == 0;
        let e = match extra {
            Extra::None => return ok,
            Extra::IoUring => {
                let mut params = [0u8; 120];
                libc::syscall(libc::SYS_io_uring_setup, 4, params.as_mut_ptr()) as i32
            }
            Extra::Pipe => {
                let mut p = [-1; 2];
                let made = libc::pipe(p.as_mut_ptr()) == 0;
                let wrote = made && libc::write(p[1], b"data".as_ptr().cast(), 4) == 4;
                if !wrote || libc::close(p[1]) != 0 {
                    return false;
                }
                p[0]
            }
        };
        ok && e >= 0 && libc::dup2(e, EXTRA_FD) == EXTRA_FD && libc::close(e) == 0
    }
}

fn setup_region() -> bool {
    let len = (PAGES * page_size()) as usize;
    // SAFETY: a fresh private anonymous mapping.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return false;
    }
    set(REGION, p as u64);
    let words = page_size() / 8;
    for pg in 0..PAGES {
        for i in 0..words {
            // SAFETY: inside the mapping just made.
            unsafe { region().add((pg * words + i) as usize).write(word(pg, i)) };
        }
    }
    true
}

fn setup_timers() -> bool {
    let tick = libc::timeval {
        tv_sec: 0,
        tv_usec: 10_000,
    };
    let it = libc::itimerval {
        it_interval: tick,
        it_value: tick,
    };
    // SAFETY: a zeroed sigevent is valid; all pointers are live locals.
    unsafe {
        if libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut()) != 0 {
            return false;
        }
        let mut ev: libc::sigevent = std::mem::zeroed();
        ev.sigev_notify = libc::SIGEV_SIGNAL;
        ev.sigev_signo = SIG_TIMER;
        let mut id: libc::timer_t = std::mem::zeroed();
        if libc::timer_create(libc::CLOCK_MONOTONIC, &mut ev, &mut id) != 0 {
            return false;
        }
        let period = libc::timespec {
            tv_sec: 0,
            tv_nsec: 20_000_000,
        };
        let spec = libc::itimerspec {
            it_interval: period,
            it_value: period,
        };
        libc::timer_settime(id, 0, &spec, std::ptr::null_mut()) == 0
    }
}

fn child(area: usize, file: &CString, extra: Extra) -> ! {
    AREA_PTR.store(area, Ordering::Relaxed);
    // SAFETY: the victim dies with the test thread that forked it.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    need!(setup_fds(file, extra));
    need!(setup_region());
    need!(sigaction(
        libc::SIGUSR1,
        on_usr1 as *const () as usize,
        USR1_FLAGS
    ));
    need!(sigaction(libc::SIGUSR2, on_usr2 as *const () as usize, 0));
    need!(sigaction(
        libc::SIGALRM,
        on_alrm as *const () as usize,
        libc::SA_RESTART
    ));
    need!(sigaction(
        SIG_TIMER,
        on_timer as *const () as usize,
        libc::SA_RESTART
    ));
    set_usr2_blocked(true);
    tgkill_self(libc::SIGUSR2);
    need!(setup_timers());
    // SAFETY: a zeroed pthread_t is written by pthread_create.
    let mut t: libc::pthread_t = unsafe { std::mem::zeroed() };
    // SAFETY: thread_main only touches the area and sleeps.
    let r = unsafe {
        libc::pthread_create(&mut t, std::ptr::null(), thread_main, std::ptr::null_mut())
    };
    need!(r == 0);
    while get(THREAD_TID) == 0 {
        sleep_ms(1);
    }
    set(READY, 1);
    loop {
        bump(COUNTER);
        if get(CMD) == 1 {
            self_check();
        }
        sleep_ms(1);
    }
}

/// The test's handle on a victim.
pub struct Victim {
    pub pid: i32,
    area: *mut u64,
    reaped: bool,
}

impl Victim {
    /// Forks a victim whose report page and regular file live in `dir`.
    pub fn spawn(dir: &Path, extra: Extra) -> Victim {
        // Every victim inherits every report mapping the harness has at its
        // fork, other tests' too: a report file deleted while a victim maps
        // it would make that victim's dump refuse a deleted file's mapping.
        // So report files stay (4 KiB each) in one directory per test run,
        // under cargo's scratch directory for tests rather than /tmp.
        let reports = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("crest-dump-cmd-reports-{}", std::process::id()));
        std::fs::create_dir_all(&reports).unwrap();
        let name = dir.file_name().unwrap();
        let report = reports.join(name);
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&report)
            .unwrap();
        f.set_len(AREA as u64).unwrap();
        let regular = dir.join("regular");
        std::fs::write(&regular, b"some bytes of a regular file").unwrap();
        let cpath = CString::new(regular.to_str().unwrap()).unwrap();
        // SAFETY: a shared mapping of the report file, kept for the test.
        let area = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                AREA,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&f),
                0,
            )
        };
        assert_ne!(area, libc::MAP_FAILED);
        // SAFETY: the child only makes raw libc calls (see the module doc).
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            child(area as usize, &cpath, extra);
        }
        let v = Victim {
            pid,
            area: area.cast(),
            reaped: false,
        };
        v.wait_for(READY, Duration::from_secs(5));
        v
    }

    pub fn get(&self, i: usize) -> u64 {
        // SAFETY: the area stays mapped while self lives; i is in range.
        unsafe { self.area.add(i).read_volatile() }
    }

    fn set(&self, i: usize, v: u64) {
        // SAFETY: as in get().
        unsafe { self.area.add(i).write_volatile(v) }
    }

    fn wait_for(&self, i: usize, limit: Duration) {
        let start = Instant::now();
        while self.get(i) == 0 {
            assert_eq!(self.get(SETUP_ERR), 0, "victim setup failed at line");
            assert!(start.elapsed() < limit, "victim slot {i} never set");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Runs the victim's self-check; returns its failed-check bits.
    pub fn self_check(&self) -> u64 {
        self.set(RESULT, 0);
        self.set(CMD, 1);
        self.wait_for(RESULT, Duration::from_secs(5));
        self.get(FAILED)
    }

    /// The main counter moves: the victim runs.
    pub fn runs(&self) -> bool {
        // A frozen victim never counts on; a running one may wait a while
        // for a CPU on a slow machine (the emulated arm64 lane).
        let c = self.get(COUNTER);
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(30));
            if self.get(COUNTER) != c {
                return true;
            }
        }
        false
    }

    /// waitpid for the victim; returns the raw status.
    pub fn reap(&mut self) -> i32 {
        let mut status = 0;
        // SAFETY: our own child.
        let r = unsafe { libc::waitpid(self.pid, &mut status, 0) };
        assert_eq!(r, self.pid, "waitpid");
        self.reaped = true;
        status
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        if !self.reaped {
            // SAFETY: our own child, killed and reaped once.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
        // SAFETY: unmapping the area mapped in spawn.
        unsafe { libc::munmap(self.area.cast(), AREA) };
    }
}
