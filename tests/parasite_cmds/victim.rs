//! The victim of the parasite-command tests: a forked child that sets up
//! every piece of state the CMD_DUMP_* commands read, reports what it set
//! (read back with its own system calls) in a shared area, and, each time
//! the test sends SIGUSR1, checks that all of it is still as it set it.
//!
//! Forked from the multithreaded test harness, the child keeps to raw libc
//! calls: no allocation, no locks (its second thread comes from
//! pthread_create directly).
//!
//! ```text
//!   slot 0 main counter  1 ready  2 failures  3 setup error (line)  4 failed checks (bits)
//!        5 main checks done  6 thread checks done  7 SIGALRM  8 timer A signals  9 SIGUSR1
//!        10 thread counter  11 thread tid  12 thread clear_tid  13..16 thread sigaltstack
//!        16..19 main sigaltstack  19 main clear_tid  20 timer A id  21 timer B id
//!        22 timer B overrun  23 umask  24 securebits  25 personality  26 brk
//!        27 SIGUSR1 handler  28 dumpable  29 pdeath  30 subreaper  31 thp  32 nnp
//!        64..320 the raw rt_sigaction table, 4 words per signal 1..=64
//! ```

use std::ffi::c_void;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const COUNTER: usize = 0;
pub const READY: usize = 1;
pub const FAILURES: usize = 2;
pub const SETUP_ERR: usize = 3;
pub const FAILED_CHECKS: usize = 4;
pub const MAIN_CHECKS: usize = 5;
pub const THREAD_CHECKS: usize = 6;
pub const ALRMS: usize = 7;
pub const TIMER_A_SIGNALS: usize = 8;
pub const USR1S: usize = 9;
pub const THREAD_COUNTER: usize = 10;
pub const THREAD_TID: usize = 11;
pub const THREAD_CLEAR_TID: usize = 12;
/// sp, size, flags.
pub const THREAD_SS: usize = 13;
pub const MAIN_SS: usize = 16;
pub const MAIN_CLEAR_TID: usize = 19;
pub const TIMER_A: usize = 20;
pub const TIMER_B: usize = 21;
pub const TIMER_B_OVERRUN: usize = 22;
pub const UMASK: usize = 23;
pub const SECUREBITS: usize = 24;
pub const PERSONALITY: usize = 25;
pub const BRK: usize = 26;
pub const USR1_HANDLER: usize = 27;
pub const DUMPABLE: usize = 28;
pub const PDEATH: usize = 29;
pub const SUBREAPER: usize = 30;
pub const THP: usize = 31;
pub const NNP: usize = 32;
pub const SIGTABLE: usize = 64;

const AREA: usize = 8192;
const SLOTS: usize = AREA / 8;

/// What the victim sets.
pub const UMASK_SET: u64 = 0o027;
pub const SECBITS_SET: u64 = (1 << 2) | (1 << 4); // NO_SETUID_FIXUP | KEEP_CAPS
pub const PERSONALITY_SET: u64 = 0x0040000; // ADDR_NO_RANDOMIZE
pub const REAL_NS: u64 = 100_000_000;
pub const VIRT_INTERVAL_NS: u64 = 5_000_000_000;
pub const VIRT_VALUE_NS: u64 = 60_000_000_000;
pub const TIMER_A_NS: u64 = 150_000_000;
pub const TIMER_B_NS: u64 = 2_000_000;
pub const SIG_A: i32 = 40;
pub const SIG_B: i32 = 41;
pub const MAIN_SS_SIZE: usize = 65536;
pub const THREAD_SS_SIZE: usize = 32768;
pub const SS_AUTODISARM: i32 = i32::MIN;
/// `PR_GET_TID_ADDRESS` (not in the libc crate).
const PR_GET_TID_ADDRESS: i32 = 40;
/// The bits of sa_mask the SIGUSR1 handler is installed with.
pub const USR1_MASK: u64 = (1 << (libc::SIGUSR2 - 1)) | (1 << (libc::SIGINT - 1));

/// The area, for the signal handlers and the thread (the child's only user).
static AREA_PTR: AtomicUsize = AtomicUsize::new(0);
/// The word the second thread passes to set_tid_address.
static THREAD_TID_WORD: AtomicI32 = AtomicI32::new(0);

fn slot(i: usize) -> *mut u64 {
    assert!(i < SLOTS);
    // SAFETY: i < SLOTS keeps the slot inside the area, mapped for the
    // child's whole life (AREA_PTR is set before any user runs).
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

/// Records a failed check `bit`.
fn fail(bit: u32) {
    set(FAILED_CHECKS, get(FAILED_CHECKS) | (1 << bit));
    bump(FAILURES);
}

fn check(bit: u32, ok: bool) {
    if !ok {
        fail(bit);
    }
}

/// Raw syscall returning its result.
macro_rules! sys {
    ($nr:expr $(, $a:expr)*) => {
        // SAFETY: every use passes valid pointers to live locals or statics.
        unsafe { libc::syscall($nr $(, $a)*) }
    };
}

extern "C" fn on_usr1(_: i32, _: *mut libc::siginfo_t, _: *mut c_void) {
    bump(USR1S);
}

extern "C" fn on_alrm(_: i32) {
    bump(ALRMS);
}

extern "C" fn on_timer_a(_: i32) {
    bump(TIMER_A_SIGNALS);
}

/// Timer B's one delivery: record its overrun (the ground truth for the
/// dump), then keep SIG_B blocked after the handler returns, so the
/// overrun stays what it is now.
extern "C" fn on_timer_b(_: i32, _: *mut libc::siginfo_t, uc: *mut c_void) {
    let overrun = sys!(libc::SYS_timer_getoverrun, get(TIMER_B) as i32);
    set(TIMER_B_OVERRUN, overrun as u64);
    // SAFETY: uc is the kernel's ucontext for this handler; its sigmask is
    // what rt_sigreturn installs.
    unsafe { libc::sigaddset(&mut (*uc.cast::<libc::ucontext_t>()).uc_sigmask, SIG_B) };
}

fn sigaction(sig: i32, handler: usize, flags: i32, mask: &[i32]) -> bool {
    // SAFETY: a zeroed sigaction is valid; the handlers only use volatile
    // accesses to the shared area and raw syscalls.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler;
        sa.sa_flags = flags;
        libc::sigemptyset(&mut sa.sa_mask);
        for &s in mask {
            libc::sigaddset(&mut sa.sa_mask, s);
        }
        libc::sigaction(sig, &sa, std::ptr::null_mut()) == 0
    }
}

fn install_handlers() -> bool {
    let info = libc::SA_SIGINFO;
    sigaction(
        libc::SIGUSR1,
        on_usr1 as *const () as usize,
        libc::SA_RESTART | info,
        &[libc::SIGUSR2, libc::SIGINT],
    ) && sigaction(libc::SIGTERM, libc::SIG_IGN, 0, &[])
        && sigaction(
            libc::SIGALRM,
            on_alrm as *const () as usize,
            libc::SA_RESTART,
            &[],
        )
        && sigaction(
            SIG_A,
            on_timer_a as *const () as usize,
            libc::SA_RESTART,
            &[],
        )
        && sigaction(SIG_B, on_timer_b as *const () as usize, info, &[])
}

fn ts(ns: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: (ns / 1_000_000_000) as i64,
        tv_nsec: (ns % 1_000_000_000) as i64,
    }
}

fn tv(ns: u64) -> libc::timeval {
    libc::timeval {
        tv_sec: (ns / 1_000_000_000) as i64,
        tv_usec: ((ns % 1_000_000_000) / 1000) as i64,
    }
}

/// timer_create(CLOCK_MONOTONIC, SIGEV_SIGNAL sig) armed with `period`.
fn posix_timer(sig: i32, period: u64) -> Option<i32> {
    // SAFETY: a zeroed sigevent is valid.
    let mut sev: libc::sigevent = unsafe { std::mem::zeroed() };
    sev.sigev_notify = libc::SIGEV_SIGNAL;
    sev.sigev_signo = sig;
    sev.sigev_value = libc::sigval {
        sival_ptr: 0x5eed as *mut c_void,
    };
    let mut id: i32 = -1;
    let clock = libc::CLOCK_MONOTONIC;
    if sys!(
        libc::SYS_timer_create,
        clock,
        &sev as *const _,
        &mut id as *mut i32
    ) != 0
    {
        return None;
    }
    let spec = libc::itimerspec {
        it_interval: ts(period),
        it_value: ts(period),
    };
    let null = std::ptr::null_mut::<libc::itimerspec>();
    (sys!(libc::SYS_timer_settime, id, 0, &spec as *const _, null) == 0).then_some(id)
}

fn sigmask(how: i32, sig: i32) {
    let set: u64 = 1 << (sig - 1);
    sys!(libc::SYS_rt_sigprocmask, how, &set as *const u64, 0usize, 8);
}

/// Timer B fires every 2 ms with its signal blocked for 60 ms, then the
/// signal is let through once: its handler sees a known overrun.
fn timer_b_overrun() -> bool {
    sigmask(libc::SIG_BLOCK, SIG_B);
    let Some(id) = posix_timer(SIG_B, TIMER_B_NS) else {
        return false;
    };
    set(TIMER_B, id as u64);
    let sleep = ts(60_000_000);
    sys!(libc::SYS_nanosleep, &sleep as *const _, 0usize);
    set(TIMER_B_OVERRUN, u64::MAX);
    sigmask(libc::SIG_UNBLOCK, SIG_B);
    get(TIMER_B_OVERRUN) != u64::MAX
}

fn itimers() -> bool {
    let real = libc::itimerval {
        it_interval: tv(REAL_NS),
        it_value: tv(REAL_NS),
    };
    let virt = libc::itimerval {
        it_interval: tv(VIRT_INTERVAL_NS),
        it_value: tv(VIRT_VALUE_NS),
    };
    let null = std::ptr::null_mut::<libc::itimerval>();
    sys!(
        libc::SYS_setitimer,
        libc::ITIMER_REAL,
        &real as *const _,
        null
    ) == 0
        && sys!(
            libc::SYS_setitimer,
            libc::ITIMER_VIRTUAL,
            &virt as *const _,
            null
        ) == 0
}

/// Maps `size` bytes and makes them the calling thread's sigaltstack.
fn altstack(size: usize, flags: i32, at: usize) -> bool {
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    let map = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
    // SAFETY: a fresh anonymous mapping.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), size, prot, map, -1, 0) };
    if p == libc::MAP_FAILED {
        return false;
    }
    let ss = libc::stack_t {
        ss_sp: p,
        ss_flags: flags,
        ss_size: size,
    };
    if sys!(libc::SYS_sigaltstack, &ss as *const _, 0usize) != 0 {
        return false;
    }
    let now = read_altstack();
    set(at, now.0);
    set(at + 1, now.1);
    set(at + 2, now.2 as u32 as u64);
    now == (p as u64, size as u64, flags)
}

/// (sp, size, flags) of the calling thread's sigaltstack.
fn read_altstack() -> (u64, u64, i32) {
    // SAFETY: a zeroed stack_t is valid.
    let mut old: libc::stack_t = unsafe { std::mem::zeroed() };
    sys!(
        libc::SYS_sigaltstack,
        0usize,
        &mut old as *mut libc::stack_t
    );
    (old.ss_sp as u64, old.ss_size as u64, old.ss_flags)
}

fn tid_address() -> u64 {
    let mut addr: u64 = 0;
    sys!(libc::SYS_prctl, PR_GET_TID_ADDRESS, &mut addr as *mut u64);
    addr
}

extern "C" fn thread_main(_: *mut c_void) -> *mut c_void {
    let ok = altstack(THREAD_SS_SIZE, SS_AUTODISARM, THREAD_SS);
    sys!(libc::SYS_set_tid_address, THREAD_TID_WORD.as_ptr());
    set(THREAD_CLEAR_TID, THREAD_TID_WORD.as_ptr() as u64);
    set(THREAD_TID, sys!(libc::SYS_gettid) as u64);
    if !ok || tid_address() != get(THREAD_CLEAR_TID) {
        set(SETUP_ERR, line!().into());
    }
    let mut seen = 0;
    loop {
        bump(THREAD_COUNTER);
        if get(USR1S) > seen {
            seen = get(USR1S);
            let ss = read_altstack();
            let want = (get(THREAD_SS), get(THREAD_SS + 1), SS_AUTODISARM);
            check(20, ss == want);
            check(21, tid_address() == get(THREAD_CLEAR_TID));
            bump(THREAD_CHECKS);
        }
        if get(THREAD_COUNTER) % 64 == 0 {
            sys!(libc::SYS_sched_yield);
        }
    }
}

fn start_thread() -> bool {
    // SAFETY: a zeroed pthread_t is a valid out slot; thread_main never
    // returns and uses only the shared area and raw syscalls.
    unsafe {
        let mut t: libc::pthread_t = std::mem::zeroed();
        let null = std::ptr::null_mut();
        if libc::pthread_create(&mut t, std::ptr::null(), thread_main, null) != 0 {
            return false;
        }
    }
    let t0 = Instant::now();
    while get(THREAD_TID) == 0 {
        if t0.elapsed() > Duration::from_secs(5) {
            return false;
        }
        sys!(libc::SYS_sched_yield);
    }
    true
}

fn prctl(option: i32, arg: u64) -> bool {
    sys!(libc::SYS_prctl, option, arg, 0u64, 0u64, 0u64) == 0
}

fn prctl_flags() -> bool {
    prctl(libc::PR_SET_PDEATHSIG, libc::SIGHUP as u64)
        && prctl(libc::PR_SET_CHILD_SUBREAPER, 1)
        && prctl(libc::PR_SET_THP_DISABLE, 1)
        && prctl(libc::PR_SET_NO_NEW_PRIVS, 1)
        && prctl(libc::PR_SET_SECUREBITS, SECBITS_SET)
        && prctl(libc::PR_SET_DUMPABLE, 0)
}

/// The values the dump must find, read back with the victim's own calls.
fn misc_now() -> [u64; 8] {
    let umask = sys!(libc::SYS_umask, 0);
    sys!(libc::SYS_umask, umask);
    let get = |o: i32| sys!(libc::SYS_prctl, o, 0u64, 0u64, 0u64, 0u64) as u64;
    let (mut pdeath, mut subreaper) = (0i32, 0i32);
    sys!(
        libc::SYS_prctl,
        libc::PR_GET_PDEATHSIG,
        &mut pdeath as *mut i32
    );
    let sub = libc::PR_GET_CHILD_SUBREAPER;
    sys!(libc::SYS_prctl, sub, &mut subreaper as *mut i32);
    [
        umask as u64,
        get(libc::PR_GET_SECUREBITS),
        sys!(libc::SYS_personality, 0xffff_ffffu64) as u64,
        get(libc::PR_GET_DUMPABLE),
        pdeath as u64,
        subreaper as u64,
        get(libc::PR_GET_THP_DISABLE),
        get(libc::PR_GET_NO_NEW_PRIVS),
    ]
}

const MISC_SLOTS: [usize; 8] = [
    UMASK,
    SECUREBITS,
    PERSONALITY,
    DUMPABLE,
    PDEATH,
    SUBREAPER,
    THP,
    NNP,
];

/// The raw kernel action of `sig` (4 words), as rt_sigaction reads it.
fn raw_action(sig: usize) -> [u64; 4] {
    let mut a = [0u64; 4];
    if sig != 9 && sig != 19 {
        sys!(libc::SYS_rt_sigaction, sig, 0usize, a.as_mut_ptr(), 8);
    }
    a
}

fn record_state() {
    for sig in 1..=64 {
        for (k, w) in raw_action(sig).into_iter().enumerate() {
            set(SIGTABLE + (sig - 1) * 4 + k, w);
        }
    }
    for (s, v) in MISC_SLOTS.into_iter().zip(misc_now()) {
        set(s, v);
    }
    set(MAIN_CLEAR_TID, tid_address());
    set(BRK, sys!(libc::SYS_brk, 0usize) as u64);
}

/// After SIGUSR1: everything the dump read must be as the victim set it.
fn verify_main() {
    for sig in 1..=64 {
        let want: [u64; 4] = std::array::from_fn(|k| get(SIGTABLE + (sig - 1) * 4 + k));
        check(0, raw_action(sig) == want);
    }
    for (i, (s, v)) in MISC_SLOTS.into_iter().zip(misc_now()).enumerate() {
        check(1 + i as u32, get(s) == v);
    }
    check(10, sys!(libc::SYS_brk, 0usize) as u64 == get(BRK));
    let ss = read_altstack();
    check(11, ss == (get(MAIN_SS), get(MAIN_SS + 1), 0));
    check(12, tid_address() == get(MAIN_CLEAR_TID));
    // SAFETY: a zeroed itimerval is a valid out slot.
    let mut it: libc::itimerval = unsafe { std::mem::zeroed() };
    sys!(libc::SYS_getitimer, libc::ITIMER_REAL, &mut it as *mut _);
    check(13, it.it_interval.tv_usec as u64 * 1000 == REAL_NS);
    // SAFETY: as above.
    let mut spec: libc::itimerspec = unsafe { std::mem::zeroed() };
    sys!(
        libc::SYS_timer_gettime,
        get(TIMER_A) as i32,
        &mut spec as *mut _
    );
    check(14, spec.it_interval.tv_nsec as u64 == TIMER_A_NS);
    bump(MAIN_CHECKS);
}

fn setup() -> Result<(), u32> {
    let r = |ok: bool, line: u32| if ok { Ok(()) } else { Err(line) };
    sys!(libc::SYS_close_range, 3, u32::MAX, 0);
    r(install_handlers(), line!())?;
    set(USR1_HANDLER, on_usr1 as *const () as u64);
    sys!(libc::SYS_umask, UMASK_SET);
    r(prctl_flags(), line!())?;
    sys!(libc::SYS_personality, PERSONALITY_SET);
    r(altstack(MAIN_SS_SIZE, 0, MAIN_SS), line!())?;
    let a = posix_timer(SIG_A, TIMER_A_NS);
    set(TIMER_A, a.map_or(u64::MAX, |id| id as u64));
    r(a.is_some(), line!())?;
    r(timer_b_overrun(), line!())?;
    r(itimers(), line!())?;
    r(start_thread(), line!())?;
    // An exact, not page-aligned break; nothing allocates after this.
    let brk = sys!(libc::SYS_brk, 0usize) as u64;
    let want = brk + 3 * 4096 + 123;
    r(sys!(libc::SYS_brk, want) as u64 == want, line!())?;
    record_state();
    Ok(())
}

fn child() -> ! {
    if let Err(line) = setup() {
        set(SETUP_ERR, line.into());
    }
    set(READY, 1);
    let mut seen = 0;
    loop {
        bump(COUNTER);
        if get(USR1S) > seen {
            seen = get(USR1S);
            verify_main();
        }
        if get(COUNTER) % 64 == 0 {
            sys!(libc::SYS_sched_yield);
        }
    }
}

/// The forked victim; killed and reaped when dropped.
pub struct Victim {
    pub pid: i32,
    area: *mut u64,
}

impl Victim {
    pub fn spawn() -> Victim {
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        let map = libc::MAP_SHARED | libc::MAP_ANONYMOUS;
        // SAFETY: a fresh shared anonymous area at a kernel-chosen address.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), AREA, prot, map, -1, 0) };
        assert_ne!(p, libc::MAP_FAILED);
        // SAFETY: the child only runs the victim and never returns.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            AREA_PTR.store(p as usize, Ordering::Relaxed);
            child();
        }
        let v = Victim {
            pid,
            area: p.cast(),
        };
        v.wait_for(READY, 1);
        assert_eq!(v.get(SETUP_ERR), 0, "victim setup failed at that line");
        v
    }

    pub fn get(&self, i: usize) -> u64 {
        assert!(i < SLOTS);
        // SAFETY: i < SLOTS: inside the area, mapped while self lives.
        unsafe { self.area.add(i).read_volatile() }
    }

    /// The raw action of `sig` the victim read back after setting it up.
    pub fn action(&self, sig: usize) -> [u64; 4] {
        std::array::from_fn(|k| self.get(SIGTABLE + (sig - 1) * 4 + k))
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

    /// Whether slot `i` grows by more than `by` within 3 s.
    pub fn progresses(&self, i: usize, by: u64) -> bool {
        let (start, t0) = (self.get(i), Instant::now());
        while t0.elapsed() < Duration::from_secs(3) {
            if self.get(i) > start + by {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill of our own child.
        assert_eq!(unsafe { libc::kill(self.pid, sig) }, 0);
    }

    /// Sends SIGUSR1 and waits until both threads checked themselves.
    pub fn self_check(&self) {
        let (m, t) = (self.get(MAIN_CHECKS), self.get(THREAD_CHECKS));
        self.signal(libc::SIGUSR1);
        self.wait_for(MAIN_CHECKS, m + 1);
        self.wait_for(THREAD_CHECKS, t + 1);
        assert_eq!(
            (self.get(FAILURES), self.get(FAILED_CHECKS)),
            (0, 0),
            "the victim's self-check (failures, failed check bits)"
        );
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        // SAFETY: our own child; kill and reap it, then unmap the area.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            libc::munmap(self.area.cast(), AREA);
        }
    }
}
