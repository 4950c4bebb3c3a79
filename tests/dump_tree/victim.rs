//! The victims of the tree dump tests, forked from the threaded test
//! harness (so they keep to raw libc calls):
//!
//! ```text
//!   Full:   root R (setsid, or only setpgid with `own_session: false`; 2 threads)
//!           ├─ A (3 threads) ── G (its own process group, 2 threads)
//!           ├─ S (2 threads, stopped by SIGSTOP)
//!           └─ Z (exited with status 7, never reaped: a zombie)
//!   Forker: root (setsid) forking children all the time, each child forking
//!           a grandchild it kills and reaps 20 ms later; the root reaps its
//!           children. A grandchild whose parent dies first lives on, so a
//!           grandchild the seize missed is seen after the tree is killed
//!   Orphan: root (setsid) whose child X forked Y and exited: Y, reparented
//!           out of the tree, stays in the root's session
//!   Threads: one process (setsid) with many sleeping threads
//!   DeadLeaders: root R (setsid, a child subreaper)
//!           ├─ D (session and group of C, which made them and exited)
//!           └─ F (group of E, which made it and exited; R's session)
//!   Many(n): root (setsid) with n - 1 sleeping children
//! ```
//!
//! Every live process of Full keeps a private region with a pattern of its
//! own, checks the anonymous shared pages the root made before forking and
//! the bytes queued in a pipe every process inherited, and on command
//! verifies itself: the memory, its pid, ppid, pgid, sid as set up, its
//! thread count in /proc/self/status and that its threads still run. The
//! report area is a MAP_SHARED page of a regular file: one block of slots
//! per role.

use std::ffi::c_void;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const ROOT: usize = 0;
pub const A: usize = 1;
pub const G: usize = 2;
pub const S: usize = 3;
/// The live roles (role 4 is Z, the zombie).
pub const LIVE: [usize; 4] = [ROOT, A, G, S];
/// DeadLeaders' orphans: in a session, in a group whose leader is dead.
pub const D: usize = 5;
pub const F: usize = 6;
/// Threads per role.
pub const THREADS: [u64; 7] = [2, 3, 2, 2, 1, 2, 2];
/// Z's exit status.
pub const Z_EXIT: i32 = 7;

const BLOCK: usize = 32;
pub const PID: usize = 0;
pub const PPID: usize = 1;
pub const PGID: usize = 2;
pub const SID: usize = 3;
pub const READY: usize = 5;
const CMD: usize = 6;
const RESULT: usize = 7;
const FAILED: usize = 8;
pub const COUNTER: usize = 9;
const TCOUNT: usize = 10;
/// Global slots after the role blocks.
const SETUP_ERR: usize = 400;
pub const FORKS: usize = 401;
pub const ORPHAN: usize = 402;
/// DeadLeaders: the pids of the dead session leader C and group leader E.
pub const DEAD_SESSION: usize = 403;
pub const DEAD_GROUP: usize = 404;
/// Many: how many children are ready.
pub const MANY_READY: usize = 405;

const AREA: usize = 4096;
const PAGES: u64 = 16;
const SHM_PAGES: u64 = 4;
pub const PIPE_DATA: &[u8] = b"queued in a pipe of the whole tree";
pub const PIPE_FD: i32 = 20;
/// A regular file the root opens before forking: every process holds one
/// open file (one offset) at this fd; the offset is FILE_POS.
pub const FILE_FD: i32 = 22;
pub const FILE_POS: i64 = 3;
/// Its path, a C string made before the fork (the child cannot allocate).
static FILE_PATH: AtomicUsize = AtomicUsize::new(0);

static AREA_PTR: AtomicUsize = AtomicUsize::new(0);
static REGION: AtomicUsize = AtomicUsize::new(0);
static SHM: AtomicUsize = AtomicUsize::new(0);
static ROLE: AtomicUsize = AtomicUsize::new(0);
static SHARING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// The shape of the tree to fork (each test binary uses some).
#[allow(dead_code)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Full {
        own_session: bool,
        /// The shared pages and the pipe of the whole tree (restore does
        /// not rebuild sharing between processes yet: without them the
        /// tree can round-trip).
        sharing: bool,
    },
    Forker,
    Orphan,
    /// One process (setsid) with this many threads in all.
    Threads(usize),
    /// Orphans of a dead session leader and of a dead group leader.
    DeadLeaders,
    /// A root (setsid) and this many processes in all.
    Many(usize),
}

fn slot(i: usize) -> *mut u64 {
    assert!(i < AREA / 8);
    // SAFETY: i is inside the area, mapped for the victim's whole life.
    unsafe { (AREA_PTR.load(Ordering::Relaxed) as *mut u64).add(i) }
}

fn get(i: usize) -> u64 {
    // SAFETY: see slot(); volatile because other processes read it.
    unsafe { slot(i).read_volatile() }
}

fn set(i: usize, v: u64) {
    // SAFETY: as in get().
    unsafe { slot(i).write_volatile(v) }
}

fn mine(i: usize) -> usize {
    ROLE.load(Ordering::Relaxed) * BLOCK + i
}

fn word(role: u64, page: u64, i: u64) -> u64 {
    0x7ee0_0000_0000_0000 ^ (role << 44) ^ (page << 24) ^ i.wrapping_mul(0x9e37_79b9)
}

fn page_words() -> u64 {
    // SAFETY: sysconf has no memory effects.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as u64 / 8 }
}

fn sleep_ms(ms: u64) {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: (ms * 1_000_000) as i64,
    };
    // SAFETY: ts is a live local.
    unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
}

/// Records the failing setup line and ends the process.
fn die(line: u32) -> ! {
    set(SETUP_ERR, u64::from(line));
    // SAFETY: the child ends here without running the harness's code.
    unsafe { libc::_exit(1) }
}

macro_rules! need {
    ($ok:expr) => {
        if !$ok {
            die(line!());
        }
    };
}

fn map(pages: u64, flags: i32) -> *mut u64 {
    // SAFETY: a fresh anonymous mapping.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            (pages * page_words() * 8) as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            flags | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    need!(p != libc::MAP_FAILED);
    p.cast()
}

/// Fills (or, with `check`, compares) `pages` pages at `at` with role's words.
fn pattern(at: *mut u64, role: u64, pages: u64, check: bool) -> bool {
    let w = page_words();
    for p in 0..pages {
        for i in 0..w {
            // SAFETY: inside a mapping of `pages` pages.
            let cell = unsafe { at.add((p * w + i) as usize) };
            if check {
                // SAFETY: as above.
                if unsafe { cell.read_volatile() } != word(role, p, i) {
                    return false;
                }
            } else {
                // SAFETY: as above.
                unsafe { cell.write_volatile(word(role, p, i)) };
            }
        }
    }
    true
}

extern "C" fn thread_main(_: *mut c_void) -> *mut c_void {
    loop {
        set(mine(TCOUNT), get(mine(TCOUNT)) + 1);
        sleep_ms(1);
    }
}

/// The value of "Threads:" in /proc/self/status.
fn thread_count() -> u64 {
    let mut buf = [0u8; 4096];
    // SAFETY: raw open/read/close into a live buffer.
    let n = unsafe {
        let fd = libc::open(c"/proc/self/status".as_ptr(), libc::O_RDONLY);
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n
    };
    let text = &buf[..n.max(0) as usize];
    let key = b"\nThreads:\t";
    let Some(at) = text.windows(key.len()).position(|w| w == key) else {
        return 0;
    };
    text[at + key.len()..]
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .fold(0, |n, c| n * 10 + u64::from(c - b'0'))
}

fn queued() -> i64 {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes an int.
    let r = unsafe { libc::ioctl(PIPE_FD, libc::FIONREAD, &mut n) };
    if r == 0 { i64::from(n) } else { -1 }
}

fn self_check() {
    let role = ROLE.load(Ordering::Relaxed);
    let mut bad = 0u64;
    bad |= u64::from(!pattern(
        REGION.load(Ordering::Relaxed) as *mut u64,
        role as u64,
        PAGES,
        true,
    ));
    let sharing = SHARING.load(Ordering::Relaxed);
    bad |= u64::from(
        sharing && !pattern(SHM.load(Ordering::Relaxed) as *mut u64, 99, SHM_PAGES, true),
    ) << 1;
    // SAFETY: plain id queries.
    let ids = unsafe {
        [
            libc::getpid(),
            libc::getppid(),
            libc::getpgrp(),
            libc::getsid(0),
        ]
    };
    for (k, id) in ids.into_iter().enumerate() {
        bad |= u64::from(get(mine(PID + k)) != id as u64) << (2 + k);
    }
    bad |= u64::from(thread_count() != THREADS[role]) << 6;
    let t = get(mine(TCOUNT));
    sleep_ms(50);
    bad |= u64::from(get(mine(TCOUNT)) <= t) << 7;
    bad |= u64::from(sharing && queued() != PIPE_DATA.len() as i64) << 8;
    set(mine(FAILED), bad);
    set(mine(RESULT), if bad == 0 { 1 } else { 2 });
    set(mine(CMD), 0);
}

/// Sets up the calling process as `role`, marks it ready, then runs.
fn live(role: usize, stop: bool, before_ready: impl FnOnce()) -> ! {
    ROLE.store(role, Ordering::Relaxed);
    let region = map(PAGES, libc::MAP_PRIVATE);
    pattern(region, role as u64, PAGES, false);
    REGION.store(region as usize, Ordering::Relaxed);
    for _ in 1..THREADS[role] {
        // SAFETY: a zeroed pthread_t is written by pthread_create.
        let mut t: libc::pthread_t = unsafe { std::mem::zeroed() };
        // SAFETY: thread_main only touches the area and sleeps.
        let r = unsafe {
            libc::pthread_create(&mut t, std::ptr::null(), thread_main, std::ptr::null_mut())
        };
        need!(r == 0);
    }
    before_ready();
    // SAFETY: plain id queries.
    let ids = unsafe {
        [
            libc::getpid(),
            libc::getppid(),
            libc::getpgrp(),
            libc::getsid(0),
        ]
    };
    for (k, id) in ids.into_iter().enumerate() {
        set(mine(PID + k), id as u64);
    }
    set(mine(READY), 1);
    if stop {
        // SAFETY: stops this process; the test continues it.
        unsafe { libc::kill(libc::getpid(), libc::SIGSTOP) };
    }
    loop {
        set(mine(COUNTER), get(mine(COUNTER)) + 1);
        if get(mine(CMD)) == 1 {
            self_check();
        }
        sleep_ms(1);
    }
}

fn fork() -> i32 {
    // SAFETY: the child only makes raw libc calls.
    let pid = unsafe { libc::fork() };
    need!(pid >= 0);
    pid
}

fn wait_ready(role: usize) {
    while get(role * BLOCK + READY) == 0 {
        sleep_ms(1);
    }
}

/// The pipe with queued bytes and the shared pages every process of the
/// tree inherits.
fn share() {
    // SAFETY: raw calls in the forked child.
    unsafe {
        let mut p = [-1; 2];
        need!(libc::pipe(p.as_mut_ptr()) == 0);
        let n = PIPE_DATA.len();
        need!(libc::write(p[1], PIPE_DATA.as_ptr().cast(), n) == n as isize);
        need!(libc::dup2(p[0], PIPE_FD) == PIPE_FD && libc::dup2(p[1], PIPE_FD + 1) == PIPE_FD + 1);
        need!(libc::close(p[0]) == 0 && libc::close(p[1]) == 0);
        let path = FILE_PATH.load(Ordering::Relaxed) as *const libc::c_char;
        let f = libc::open(path, libc::O_RDWR);
        need!(f >= 0 && libc::dup2(f, FILE_FD) == FILE_FD && libc::close(f) == 0);
        need!(libc::lseek(FILE_FD, FILE_POS, libc::SEEK_SET) == FILE_POS);
    }
    let shm = map(SHM_PAGES, libc::MAP_SHARED);
    pattern(shm, 99, SHM_PAGES, false);
    SHM.store(shm as usize, Ordering::Relaxed);
}

fn full_root(own_session: bool, sharing: bool) -> ! {
    SHARING.store(sharing, Ordering::Relaxed);
    // SAFETY: raw calls in the forked child.
    unsafe {
        if own_session {
            need!(libc::setsid() > 0);
        } else {
            need!(libc::setpgid(0, 0) == 0);
        }
    }
    if sharing {
        share();
    }
    if fork() == 0 {
        // SAFETY: ends the child at once: Z.
        unsafe { libc::_exit(Z_EXIT) };
    }
    if fork() == 0 {
        live(S, true, || {});
    }
    if fork() == 0 {
        live(A, false, || {
            if fork() == 0 {
                // SAFETY: a process group of its own.
                need!(unsafe { libc::setpgid(0, 0) } == 0);
                live(G, false, || {});
            }
            wait_ready(G);
        });
    }
    live(ROOT, false, || {
        wait_ready(S);
        wait_ready(A);
    })
}

/// A grandchild of the forker: it runs until its parent kills it, and on
/// forever once orphaned: a grandchild the seize missed outlives the kill
/// of its parent and is seen.
fn grandchild() -> ! {
    // SAFETY: plain id query.
    let parent = unsafe { libc::getppid() };
    // SAFETY: plain id query.
    while unsafe { libc::getppid() } == parent {
        sleep_ms(1);
    }
    loop {
        sleep_ms(10);
    }
}

/// `role`, once its parent (which exits at once) is gone and the
/// subreaper `root` adopted it.
fn orphan(role: usize, root: i32) -> ! {
    live(role, false, move || {
        // SAFETY: plain id query.
        while unsafe { libc::getppid() } != root {
            sleep_ms(1);
        }
    })
}

fn dead_leaders() -> ! {
    SHARING.store(false, Ordering::Relaxed);
    // SAFETY: raw calls in the forked child and its children.
    unsafe {
        need!(libc::setsid() > 0);
        need!(libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) == 0);
        let root = libc::getpid();
        let c = fork();
        if c == 0 {
            need!(libc::setsid() > 0);
            if fork() == 0 {
                orphan(D, root);
            }
            libc::_exit(0);
        }
        set(DEAD_SESSION, c as u64);
        let e = fork();
        if e == 0 {
            need!(libc::setpgid(0, 0) == 0);
            if fork() == 0 {
                orphan(F, root);
            }
            libc::_exit(0);
        }
        set(DEAD_GROUP, e as u64);
        need!(libc::waitpid(c, std::ptr::null_mut(), 0) == c);
        need!(libc::waitpid(e, std::ptr::null_mut(), 0) == e);
    }
    live(ROOT, false, || {
        wait_ready(D);
        wait_ready(F);
    })
}

/// A root with `n - 1` children, each sleeping; the children count
/// themselves in.
fn many(n: usize) -> ! {
    // SAFETY: raw calls in the forked child and its children.
    need!(unsafe { libc::setsid() } > 0);
    for _ in 1..n {
        if fork() == 0 {
            let counter = slot(MANY_READY).cast::<AtomicUsize>();
            // SAFETY: the slot is a shared, aligned word of the area.
            unsafe { (*counter).fetch_add(1, Ordering::SeqCst) };
            loop {
                sleep_ms(100);
            }
        }
    }
    while get(MANY_READY) < n as u64 - 1 {
        sleep_ms(1);
    }
    ROLE.store(ROOT, Ordering::Relaxed);
    set(mine(READY), 1);
    loop {
        set(mine(COUNTER), get(mine(COUNTER)) + 1);
        sleep_ms(1);
    }
}

fn forker() -> ! {
    // SAFETY: raw calls in the forked child and its children.
    unsafe {
        need!(libc::setsid() > 0);
        set(ROOT * BLOCK + READY, 1);
        let mut live = 0;
        loop {
            while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) > 0 {
                live -= 1;
            }
            if live < 12 {
                let pid = fork();
                if pid == 0 {
                    let gc = fork();
                    if gc == 0 {
                        grandchild();
                    }
                    sleep_ms(20);
                    libc::kill(gc, libc::SIGKILL);
                    libc::waitpid(gc, std::ptr::null_mut(), 0);
                    libc::_exit(0);
                }
                live += 1;
                set(FORKS, get(FORKS) + 1);
            }
            let ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 200_000,
            };
            libc::nanosleep(&ts, std::ptr::null_mut());
        }
    }
}

fn orphan_root() -> ! {
    // SAFETY: raw calls in the forked child and its children.
    unsafe {
        need!(libc::setsid() > 0);
        let x = fork();
        if x == 0 {
            let y = fork();
            if y == 0 {
                loop {
                    sleep_ms(10);
                }
            }
            set(ORPHAN, y as u64);
            libc::_exit(0);
        }
        libc::waitpid(x, std::ptr::null_mut(), 0);
        ROLE.store(ROOT, Ordering::Relaxed);
        set(mine(READY), 1);
        loop {
            set(mine(COUNTER), get(mine(COUNTER)) + 1);
            sleep_ms(1);
        }
    }
}

fn many_threads(n: usize) -> ! {
    // SAFETY: raw calls in the forked child.
    need!(unsafe { libc::setsid() } > 0);
    ROLE.store(ROOT, Ordering::Relaxed);
    // SAFETY: a zeroed attr is initialised by pthread_attr_init.
    let mut attr: libc::pthread_attr_t = unsafe { std::mem::zeroed() };
    // SAFETY: attr is a live local.
    unsafe {
        libc::pthread_attr_init(&mut attr);
        libc::pthread_attr_setstacksize(&mut attr, 64 << 10);
    }
    for _ in 1..n {
        // SAFETY: a zeroed pthread_t is written by pthread_create.
        let mut t: libc::pthread_t = unsafe { std::mem::zeroed() };
        // SAFETY: idle only sleeps.
        let r = unsafe { libc::pthread_create(&mut t, &attr, idle, std::ptr::null_mut()) };
        need!(r == 0);
    }
    set(mine(READY), 1);
    loop {
        set(mine(COUNTER), get(mine(COUNTER)) + 1);
        sleep_ms(1);
    }
}

extern "C" fn idle(_: *mut c_void) -> *mut c_void {
    loop {
        sleep_ms(100);
    }
}

fn child(area: usize, shape: Shape) -> ! {
    AREA_PTR.store(area, Ordering::Relaxed);
    // SAFETY: raw fd calls: /dev/null on 0-2, nothing of the harness's.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        need!(null >= 0 && (0..3).all(|fd| libc::dup2(null, fd) == fd));
        need!(libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) == 0);
    }
    match shape {
        Shape::Full {
            own_session,
            sharing,
        } => full_root(own_session, sharing),
        Shape::Forker => forker(),
        Shape::Orphan => orphan_root(),
        Shape::Threads(n) => many_threads(n),
        Shape::DeadLeaders => dead_leaders(),
        Shape::Many(n) => many(n),
    }
}

/// The test's handle on a victim tree.
pub struct Victim {
    pub pid: i32,
    area: *mut u64,
}

impl Victim {
    /// Forks a victim tree of `shape`, its report page named after `name`.
    pub fn spawn(name: &str, shape: Shape) -> Victim {
        // Report files stay: every later victim maps them too (see
        // tests/dump_cmd/victim.rs), and a deleted file's mapping is refused.
        let reports = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("crest-dump-tree-reports-{}", std::process::id()));
        std::fs::create_dir_all(&reports).unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(reports.join(name))
            .unwrap();
        f.set_len(AREA as u64).unwrap();
        let shared = reports.join(format!("{name}.file"));
        std::fs::write(&shared, b"0123456789").unwrap();
        let c = std::ffi::CString::new(shared.to_str().unwrap()).unwrap();
        FILE_PATH.store(c.into_raw() as usize, Ordering::Relaxed);
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
        // SAFETY: the child only makes raw libc calls.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            child(area as usize, shape);
        }
        let v = Victim {
            pid,
            area: area.cast(),
        };
        v.wait_for(ROOT * BLOCK + READY);
        v
    }

    pub fn get(&self, i: usize) -> u64 {
        // SAFETY: the area stays mapped (never unmapped); i is in range.
        unsafe { self.area.add(i).read_volatile() }
    }

    pub fn of(&self, role: usize, i: usize) -> u64 {
        self.get(role * BLOCK + i)
    }

    fn set(&self, i: usize, v: u64) {
        // SAFETY: as in get().
        unsafe { self.area.add(i).write_volatile(v) }
    }

    fn wait_for(&self, i: usize) {
        let start = Instant::now();
        while self.get(i) == 0 {
            assert_eq!(self.get(SETUP_ERR), 0, "victim setup failed at this line");
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "slot {i} never set"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Runs `role`'s self-check; returns its failed-check bits.
    pub fn self_check(&self, role: usize) -> u64 {
        self.set(role * BLOCK + RESULT, 0);
        self.set(role * BLOCK + CMD, 1);
        self.wait_for(role * BLOCK + RESULT);
        self.of(role, FAILED)
    }

    /// `role`'s main counter moves: it runs.
    pub fn runs(&self, role: usize) -> bool {
        // A frozen process never counts on; a running one may wait a while
        // for a CPU when the machine is loaded.
        let c = self.of(role, COUNTER);
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(30));
            if self.of(role, COUNTER) != c {
                return true;
            }
        }
        false
    }
}
