//! The multi-threaded victim: each thread names itself, sets its own
//! blocked mask, finds its own rseq area and thread pointer, reports them
//! in its slots of the shared page, and counts.
//!
//! glibc registers rseq for every thread at `thread pointer +
//! __rseq_offset`; musl registers none, so there each thread registers its
//! own area with rseq(2) and reports that address.

use std::sync::atomic::{AtomicU64, Ordering};

use super::victim::{self, READY, THREAD0, THREADS_READY, Victim, set};

pub const N: usize = 3;
/// Distinct masks (SIGUSR1/SIGUSR2/SIGALRM and one real-time signal each).
pub const MASKS: [u64; N] = [1 << 9 | 1 << 39, 1 << 11 | 1 << 40, 1 << 13 | 1 << 41];
const COUNT: usize = 5;

pub fn name(i: usize) -> String {
    format!("core-t{i}")
}

/// What thread `i` reported.
pub struct Report {
    pub tid: u64,
    pub tp: u64,
    pub rseq: u64,
    pub rseq_sig: u64,
}

impl Report {
    pub fn read(v: &Victim, i: usize) -> Report {
        let s = THREAD0 + 8 * i;
        Report {
            tid: v.get(s),
            tp: v.get(s + 1),
            rseq: v.get(s + 2),
            rseq_sig: v.get(s + 3),
        }
    }
}

pub fn counters(v: &Victim) -> Vec<u64> {
    (0..N).map(|i| v.get(THREAD0 + 8 * i + COUNT)).collect()
}

#[cfg(target_arch = "x86_64")]
fn thread_pointer() -> u64 {
    let tp: u64;
    // SAFETY: reads the TCB's self pointer at fs:0 (glibc and musl).
    unsafe { std::arch::asm!("mov {}, fs:0", out(reg) tp, options(nostack, readonly)) };
    tp
}

#[cfg(target_arch = "aarch64")]
fn thread_pointer() -> u64 {
    let tp: u64;
    // SAFETY: reads tpidr_el0.
    unsafe { std::arch::asm!("mrs {}, tpidr_el0", out(reg) tp, options(nomem, nostack)) };
    tp
}

#[cfg(target_arch = "x86_64")]
const RSEQ_SIG: u32 = 0x5305_3053;
#[cfg(target_arch = "aarch64")]
const RSEQ_SIG: u32 = 0xd428_bc00;

#[cfg(target_env = "gnu")]
fn own_rseq(tp: u64) -> u64 {
    unsafe extern "C" {
        static __rseq_offset: isize;
    }
    // SAFETY: glibc (2.35+) exports __rseq_offset, constant after startup.
    tp.wrapping_add_signed(unsafe { __rseq_offset } as i64)
}

#[cfg(not(target_env = "gnu"))]
fn own_rseq(_tp: u64) -> u64 {
    #[repr(C, align(32))]
    struct Area([u8; 32]);
    let area: &'static mut Area = Box::leak(Box::new(Area([0; 32])));
    let addr = area as *mut Area as u64;
    // SAFETY: registers a 32-byte, 32-aligned area that lives forever.
    let r = unsafe { libc::syscall(libc::SYS_rseq, addr, 32, 0, RSEQ_SIG) };
    assert_eq!(r, 0, "rseq registration");
    addr
}

fn body(page: usize, i: usize) -> ! {
    let page = page as *mut u64;
    let name = format!("{}\0", name(i));
    // SAFETY: a NUL-terminated name of fewer than 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
    victim::set_mask(MASKS[i]);
    let tp = thread_pointer();
    let s = THREAD0 + 8 * i;
    set(page, s, victim::gettid());
    set(page, s + 1, tp);
    set(page, s + 2, own_rseq(tp));
    set(page, s + 3, u64::from(RSEQ_SIG));
    // SAFETY: the slot is an aligned u64 in the shared page, written by
    // several threads only through this atomic.
    let ready = unsafe { AtomicU64::from_ptr(page.add(THREADS_READY)) };
    ready.fetch_add(1, Ordering::SeqCst);
    if i == 0 {
        while ready.load(Ordering::SeqCst) < N as u64 {
            std::hint::spin_loop();
        }
        set(page, READY, 1);
    }
    let mut n = 0u64;
    loop {
        n += 1;
        set(page, s + COUNT, n);
        if n % 64 == 0 {
            // SAFETY: no arguments.
            unsafe { libc::sched_yield() };
        }
    }
}

/// Keeps only /dev/null on 0-2 (collect_process refuses fd kinds such as
/// the test harness's sockets), starts the threads, becomes thread 0.
pub fn child(page: *mut u64) -> ! {
    // SAFETY: raw calls on this process's own fd table.
    unsafe {
        libc::syscall(libc::SYS_close_range, 0, u32::MAX, 0);
        let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        libc::dup2(fd, 1);
        libc::dup2(fd, 2);
    }
    let p = page as usize;
    for i in 1..N {
        std::thread::spawn(move || body(p, i));
    }
    body(p, 0)
}
