//! zdtm-style victims for the thread-core tests: a forked child that sets
//! up one state with raw libc calls (and inline asm for the registers),
//! reports through a shared page, and spins. The page is MAP_SHARED
//! anonymous memory mapped before the fork, so the test reads what the
//! victim reports without any help from crest.
//!
//! ```text
//!   slot 0 ready   1 go   2 signals received   3 blocking call's result
//!        4 blocking call done   5 value read   6 threads ready   7 argument
//!        8 + 8*i  thread i: tid, thread pointer, rseq addr, rseq sig, mask
//!        64 + 4*n received signal n: signo, code, value, sender pid
//! ```

use std::time::{Duration, Instant};

pub const READY: usize = 0;
pub const GO: usize = 1;
pub const RECEIVED: usize = 2;
pub const RESULT: usize = 3;
pub const DONE: usize = 4;
pub const VALUE: usize = 5;
pub const THREADS_READY: usize = 6;
pub const ARG: usize = 7;
pub const THREAD0: usize = 8;
pub const SIGNALS0: usize = 64;

pub struct Victim {
    pub pid: i32,
    page: *mut u64,
}

pub fn get(page: *mut u64, i: usize) -> u64 {
    assert!(i < 512);
    // SAFETY: i < 512 keeps the access inside the 4 KiB page, mapped for the
    // victim's lifetime; volatile because the other process writes it.
    unsafe { page.add(i).read_volatile() }
}

pub fn set(page: *mut u64, i: usize, v: u64) {
    assert!(i < 512);
    // SAFETY: as in get().
    unsafe { page.add(i).write_volatile(v) }
}

impl Victim {
    /// Forks a child running `child(page)`; waits for its READY.
    pub fn spawn(child: fn(*mut u64) -> !) -> Victim {
        Victim::spawn_with(child, &[])
    }

    /// As [`Victim::spawn`], with `slots` (index, value) set before the fork.
    pub fn spawn_with(child: fn(*mut u64) -> !, slots: &[(usize, u64)]) -> Victim {
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
        for &(i, v) in slots {
            set(page, i, v);
        }
        // SAFETY: the child only runs `child`, which never returns.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: plain prctl: the victim dies with the thread that forked it.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
            child(page);
        }
        let v = Victim { pid, page };
        v.wait_for(READY, 1);
        v
    }

    pub fn get(&self, i: usize) -> u64 {
        get(self.page, i)
    }

    pub fn set(&self, i: usize, v: u64) {
        set(self.page, i, v)
    }

    /// Waits (10 s at most) until slot `i` holds at least `v`.
    pub fn wait_for(&self, i: usize, v: u64) {
        let t0 = Instant::now();
        while self.get(i) < v {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "victim {}: slot {i} never reached {v}",
                self.pid
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits until the leader sleeps in system call `nr`; returns the
    /// fields of /proc/PID/syscall (nr, 6 args, sp, pc).
    pub fn wait_in_syscall(&self, nr: i64) -> Vec<u64> {
        let t0 = Instant::now();
        loop {
            let s =
                std::fs::read_to_string(format!("/proc/{}/syscall", self.pid)).unwrap_or_default();
            let f: Vec<&str> = s.split_whitespace().collect();
            if f.len() == 9 && f[0] == nr.to_string() && self.state() == 'S' {
                let hex = |x: &str| u64::from_str_radix(x.trim_start_matches("0x"), 16).unwrap();
                return std::iter::once(nr as u64)
                    .chain(f[1..].iter().map(|x| hex(x)))
                    .collect();
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "victim never blocked in {nr}: {s}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// A line's value (hex mask) of /proc/PID/status.
    pub fn status_mask(&self, key: &str) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap();
        let v = s.lines().find_map(|l| l.strip_prefix(key)).unwrap();
        u64::from_str_radix(v.trim(), 16).unwrap()
    }

    pub fn state(&self) -> char {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        s.lines()
            .find_map(|l| l.strip_prefix("State:"))
            .and_then(|v| v.trim().chars().next())
            .unwrap_or('?')
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        // SAFETY: our own child; kill and reap it, then unmap the page.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            libc::munmap(self.page.cast(), 4096);
        }
    }
}

/// Sets this thread's blocked mask (bit n-1 for signal n) with the raw call.
pub fn set_mask(mask: u64) {
    // SAFETY: the kernel reads one 8-byte set; no old set wanted.
    let r = unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &mask as *const u64,
            std::ptr::null_mut::<u64>(),
            8,
        )
    };
    assert_eq!(r, 0);
}

pub fn gettid() -> u64 {
    // SAFETY: gettid has no arguments.
    unsafe { libc::syscall(libc::SYS_gettid) as u64 }
}

/// Spins forever, yielding now and then so parallel tests keep moving.
pub fn spin() -> ! {
    loop {
        // SAFETY: sched_yield has no arguments.
        unsafe { libc::sched_yield() };
    }
}
