//! zdtm-style victims: a forked child that sets up one state, reports
//! through a shared page, and checks itself while it runs.
//!
//! The page is `MAP_SHARED` anonymous memory mapped before the fork, so
//! the test reads the victim's counters without any help from crest:
//!
//! ```text
//!   slot 0 main counter   1 ready   2 self-check failures   3 blocking call's result
//!        4 nanosleep ns   5 value read from the pipe   6 blocking call done
//!        7 SIGUSR1 handler runs
//!        8..16 per-thread counters   16 threads started
//! ```
//!
//! The child runs after a fork from the threaded test harness, so it keeps
//! to raw system calls; a threaded victim starts its threads itself, after
//! the fork (glibc resets its allocator locks in the child).

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const COUNTER: usize = 0;
pub const READY: usize = 1;
pub const FAILURES: usize = 2;
pub const RESULT: usize = 3;
pub const SLEPT_NS: usize = 4;
pub const VALUE: usize = 5;
pub const DONE: usize = 6;
pub const SIGNALS: usize = 7;
pub const THREAD0: usize = 8;
pub const THREADS: usize = 16;

/// What the victim does.
pub enum Mode {
    /// Counts and checks itself in a loop.
    Busy,
    /// Sleeps this long in nanosleep, records result and duration, then counts.
    Nanosleep(Duration),
    /// Blocks in read() on this pipe end, records what came, then counts.
    ReadPipe(OwnedFd),
    /// Starts this many threads that count in their own slots, then counts.
    Threads(usize),
    /// Installs a seccomp filter that kills the process on memfd_create
    /// (the first call of an injection), then counts.
    Seccomp,
    /// A thread starts short-lived threads in a loop (slot THREADS counts
    /// them) while the main thread counts.
    ThreadChurn,
}

pub struct Victim {
    pub pid: i32,
    page: *mut u64,
    reaped: bool,
}

fn slot_ptr(page: *mut u64, i: usize) -> *mut u64 {
    assert!(i < 512);
    // SAFETY: i < 512 keeps the slot inside the 4 KiB page.
    unsafe { page.add(i) }
}

fn get(page: *mut u64, i: usize) -> u64 {
    // SAFETY: the page is mapped for the victim's lifetime; volatile because
    // the other process writes it.
    unsafe { slot_ptr(page, i).read_volatile() }
}

fn set(page: *mut u64, i: usize, v: u64) {
    // SAFETY: as in get().
    unsafe { slot_ptr(page, i).write_volatile(v) }
}

fn bump(page: *mut u64, i: usize) {
    set(page, i, get(page, i) + 1);
}

/// The counting loop with a self-check: a private buffer whose checksum
/// must never change (it would if crest wrote into the victim's memory).
fn count_forever(page: *mut u64, slot: usize) -> ! {
    let mut buf = [0u64; 512];
    for (i, v) in buf.iter_mut().enumerate() {
        *v = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    let expect: u64 = buf.iter().fold(0, |a, &v| a.rotate_left(5) ^ v);
    loop {
        let sum = std::hint::black_box(&buf)
            .iter()
            .fold(0u64, |a, &v| a.rotate_left(5) ^ v);
        if sum != expect {
            bump(page, FAILURES);
        }
        bump(page, slot);
        // Mostly user-space work (so a seize often lands outside any system
        // call), with a yield now and then to keep parallel tests moving.
        if get(page, slot) % 64 == 0 {
            // SAFETY: sched_yield has no arguments.
            unsafe { libc::sched_yield() };
        }
    }
}

/// The page, for the signal handler (the child is its only user).
static PAGE: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_usr1(_: i32) {
    bump(PAGE.load(Ordering::Relaxed) as *mut u64, SIGNALS);
}

fn install_handler(page: *mut u64) {
    PAGE.store(page as usize, Ordering::Relaxed);
    // SAFETY: a zeroed sigaction is valid; the handler only touches the
    // shared page through volatile accesses (async-signal-safe).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_usr1 as *const () as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
}

/// seccomp(SECCOMP_MODE_FILTER): memfd_create kills the process, every
/// other call is allowed.
fn install_seccomp() {
    let filter = [
        // BPF_LD | BPF_W | BPF_ABS: load seccomp_data.nr (offset 0).
        libc::sock_filter {
            code: 0x20,
            jt: 0,
            jf: 0,
            k: 0,
        },
        // BPF_JMP | BPF_JEQ | BPF_K: memfd_create? fall through : skip one.
        libc::sock_filter {
            code: 0x15,
            jt: 0,
            jf: 1,
            k: libc::SYS_memfd_create as u32,
        },
        // BPF_RET | BPF_K: SECCOMP_RET_KILL_PROCESS.
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: 0x8000_0000,
        },
        // BPF_RET | BPF_K: SECCOMP_RET_ALLOW.
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: 0x7fff_0000,
        },
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: prog points to the filter, alive across the call (the kernel
    // copies it); no_new_privs first, as seccomp requires without privileges.
    let r = unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog)
    };
    assert_eq!(r, 0, "seccomp filter");
}

fn now() -> Instant {
    Instant::now()
}

fn child(page: *mut u64, mode: Mode) -> ! {
    // SAFETY: plain prctl: the victim dies with the test thread that forked it.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    install_handler(page);
    match mode {
        Mode::Busy => {}
        Mode::Nanosleep(d) => {
            let ts = libc::timespec {
                tv_sec: d.as_secs() as i64,
                tv_nsec: i64::from(d.subsec_nanos()),
            };
            let t0 = now();
            set(page, READY, 1);
            // SAFETY: ts is a valid timespec; no remainder wanted.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_nanosleep,
                    &ts,
                    std::ptr::null_mut::<libc::timespec>(),
                )
            };
            set(page, SLEPT_NS, t0.elapsed().as_nanos() as u64);
            set(page, RESULT, r as u64);
            set(page, DONE, 1);
        }
        Mode::ReadPipe(fd) => {
            let mut v = 0u64;
            set(page, READY, 1);
            // SAFETY: reads at most 8 bytes into v.
            let r = unsafe { libc::syscall(libc::SYS_read, fd.as_raw_fd(), &mut v as *mut u64, 8) };
            set(page, VALUE, v);
            set(page, RESULT, r as u64);
            set(page, DONE, 1);
        }
        Mode::Threads(n) => {
            let p = page as usize;
            for i in 0..n {
                std::thread::spawn(move || count_forever(p as *mut u64, THREAD0 + i));
            }
            set(page, THREADS, n as u64);
        }
        Mode::Seccomp => install_seccomp(),
        Mode::ThreadChurn => {
            let p = page as usize;
            std::thread::spawn(move || {
                loop {
                    std::thread::spawn(|| ()).join().unwrap();
                    bump(p as *mut u64, THREADS);
                }
            });
        }
    }
    set(page, READY, 1);
    count_forever(page, COUNTER)
}

impl Victim {
    pub fn spawn(mode: Mode) -> Victim {
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        // SAFETY: a fresh shared anonymous page at a kernel-chosen address.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                prot,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let page = p.cast::<u64>();
        // SAFETY: the child only runs the victim and never returns.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // A group of its own whose parent (this test) sits in another
            // group of the same session: the group is then not orphaned,
            // so SIGTSTP stops it even where the test runs as a child of
            // init (the qemu lanes), whose children's groups count as
            // orphaned and have job-control stops discarded.
            // SAFETY: setpgid on the calling process.
            unsafe { libc::setpgid(0, 0) };
            child(page, mode);
        }
        let v = Victim {
            pid,
            page,
            reaped: false,
        };
        v.wait_for(READY, 1);
        v
    }

    pub fn get(&self, i: usize) -> u64 {
        get(self.page, i)
    }

    /// Waits (5 s at most) until slot `i` holds at least `v`.
    pub fn wait_for(&self, i: usize, v: u64) {
        let t0 = now();
        while self.get(i) < v {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "victim {}: slot {i} never reached {v}",
                self.pid
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Whether slot `i` grows within `within`.
    pub fn progresses(&self, i: usize, within: Duration) -> bool {
        let (start, t0) = (self.get(i), now());
        while t0.elapsed() < within {
            if self.get(i) > start + 10 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }

    /// Waits until the victim's leader sits in system call `nr`
    /// (/proc/PID/syscall) and sleeps.
    pub fn wait_in_syscall(&self, nr: i64) {
        let t0 = now();
        loop {
            let s =
                std::fs::read_to_string(format!("/proc/{}/syscall", self.pid)).unwrap_or_default();
            if s.split(' ').next() == Some(&nr.to_string()) && self.state() == 'S' {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "victim never blocked in {nr}: {s}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The State letter of /proc/PID/status.
    pub fn state(&self) -> char {
        state_of(self.pid)
    }

    pub fn mark_reaped(&mut self) {
        self.reaped = true;
    }
}

pub fn state_of(pid: i32) -> char {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("State:"))
        .and_then(|v| v.trim().chars().next())
        .unwrap_or('?')
}

impl Drop for Victim {
    fn drop(&mut self) {
        if !self.reaped {
            // SAFETY: our own child; kill and reap it.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
        // SAFETY: the page mapped in spawn(); the child is gone.
        unsafe { libc::munmap(self.page.cast(), 4096) };
    }
}
