//! The signals victim: a SIGUSR1 handler (SA_SIGINFO, a mask), a per-thread
//! blocked mask (the main thread blocks SIGWINCH, the second thread SIGUSR2,
//! both the shared test signal), a SIGUSR2 queued to the second thread with
//! sigqueue-style siginfo while blocked, a process-wide queued signal
//! blocked everywhere, a sigaltstack in the second thread, ITIMER_REAL every
//! 10 ms and a POSIX timer (CLOCK_MONOTONIC, SIGRTMIN) every 20 ms. After go
//! every piece is queried from the kernel and compared with what was set,
//! and each pending signal must arrive exactly once, only when unblocked,
//! with its si_code and value.

use std::ffi::c_void;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};

use crate::common::victim::{Child, Msg, Verdict, getpid, gettid, now_ns, read_file, sleep_ms};

const ALT_SIZE: usize = 64 * 1024;
const USR2_VALUE: usize = 0x5157;
pub const SHARED_VALUE: usize = 0x5348;
const TIMER_VALUE: usize = 0x7117;
const USR1_FLAGS: i32 = libc::SA_SIGINFO | libc::SA_RESTART;

/// What one handler saw last, and how often it ran.
struct Seen {
    count: AtomicU64,
    code: AtomicI32,
    value: AtomicUsize,
    pid: AtomicI32,
    tid: AtomicI32,
    /// The address of a local of the handler: which stack it ran on.
    sp: AtomicUsize,
}

impl Seen {
    const fn new() -> Seen {
        Seen {
            count: AtomicU64::new(0),
            code: AtomicI32::new(0),
            value: AtomicUsize::new(0),
            pid: AtomicI32::new(0),
            tid: AtomicI32::new(0),
            sp: AtomicUsize::new(0),
        }
    }

    fn record(&self, info: *mut libc::siginfo_t) {
        let local = 0u8;
        // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
        let (code, value, pid) = unsafe {
            let i = &*info;
            (i.si_code, i.si_value().sival_ptr as usize, i.si_pid())
        };
        self.code.store(code, Ordering::SeqCst);
        self.value.store(value, Ordering::SeqCst);
        self.pid.store(pid, Ordering::SeqCst);
        self.tid.store(gettid(), Ordering::SeqCst);
        self.sp.store(
            std::hint::black_box(&local) as *const u8 as usize,
            Ordering::SeqCst,
        );
        self.count.fetch_add(1, Ordering::SeqCst);
    }
}

static USR1: Seen = Seen::new();
static USR2: Seen = Seen::new();
static SHARED: Seen = Seen::new();
static TIMER: Seen = Seen::new();
static ALRMS: AtomicU64 = AtomicU64::new(0);

static SECOND_TID: AtomicI32 = AtomicI32::new(0);
static SECOND_SETUP: AtomicBool = AtomicBool::new(false);
static SECOND_GO: AtomicBool = AtomicBool::new(false);
static ALT: AtomicUsize = AtomicUsize::new(0);
static SECOND_RESULT: Mutex<Option<Verdict>> = Mutex::new(None);

extern "C" fn on_usr1(_: i32, info: *mut libc::siginfo_t, _: *mut c_void) {
    USR1.record(info);
}
extern "C" fn on_usr2(_: i32, info: *mut libc::siginfo_t, _: *mut c_void) {
    USR2.record(info);
}
extern "C" fn on_shared(_: i32, info: *mut libc::siginfo_t, _: *mut c_void) {
    SHARED.record(info);
}
extern "C" fn on_timer(_: i32, info: *mut libc::siginfo_t, _: *mut c_void) {
    TIMER.record(info);
}
extern "C" fn on_alrm(_: i32) {
    ALRMS.fetch_add(1, Ordering::SeqCst);
}

pub fn shared_sig() -> i32 {
    libc::SIGRTMIN() + 2
}

fn set(sigs: &[i32]) -> libc::sigset_t {
    // SAFETY: sigset manipulation on a live local.
    unsafe {
        let mut s: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut s);
        for &sig in sigs {
            libc::sigaddset(&mut s, sig);
        }
        s
    }
}

fn mask(how: i32, sigs: &[i32]) {
    let s = set(sigs);
    // SAFETY: a live set; only this thread's mask changes.
    unsafe { libc::pthread_sigmask(how, &s, std::ptr::null_mut()) };
}

/// The signals among 1..=SIGRTMAX set in `s`, as a bit mask (bit n-1).
fn bits(s: &libc::sigset_t) -> u64 {
    // SAFETY: sigismember only reads s.
    (1..=libc::SIGRTMAX())
        .filter(|&n| unsafe { libc::sigismember(s, n) } == 1)
        .fold(0, |b, n| b | 1 << (n - 1))
}

fn blocked_now() -> u64 {
    let mut old = set(&[]);
    // SAFETY: a query into a live local.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut old) };
    bits(&old)
}

fn pending_now() -> u64 {
    let mut p = set(&[]);
    // SAFETY: a query into a live local.
    unsafe { libc::sigpending(&mut p) };
    bits(&p)
}

fn bit(sig: i32) -> u64 {
    1 << (sig - 1)
}

fn install(sig: i32, handler: usize, flags: i32, mask: &[i32]) -> Verdict {
    // SAFETY: a zeroed sigaction is valid; the handlers only touch atomics.
    let r = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler;
        sa.sa_flags = flags;
        sa.sa_mask = set(mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut())
    };
    ensure!(r == 0, "sigaction {sig}");
    Ok(())
}

/// Queues `sig` with SI_QUEUE and `value` to thread `tid` of `pid` or
/// (tid 0) to the process, as sigqueue(3) does.
pub fn queue(pid: i32, tid: i32, sig: i32, value: usize) -> Verdict {
    // SAFETY: a zeroed siginfo filled as the kernel's SI_QUEUE layout
    // (signo, errno, code, then pid, uid, value in the union).
    let r = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        info.si_signo = sig;
        info.si_code = libc::SI_QUEUE;
        let f = (&mut info as *mut libc::siginfo_t).cast::<u8>();
        f.add(16).cast::<i32>().write(getpid());
        f.add(20).cast::<u32>().write(libc::getuid());
        f.add(24).cast::<usize>().write(value);
        if tid == 0 {
            libc::syscall(libc::SYS_rt_sigqueueinfo, pid, sig, &info)
        } else {
            libc::syscall(libc::SYS_rt_tgsigqueueinfo, pid, tid, sig, &info)
        }
    };
    ensure!(r == 0, "queueing signal {sig}");
    Ok(())
}

fn second_setup() -> Verdict {
    mask(libc::SIG_BLOCK, &[libc::SIGUSR2]);
    // SAFETY: a fresh mapping for the alternate stack, then sigaltstack on it.
    let alt = unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            ALT_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        ensure!(p != libc::MAP_FAILED, "mmap of the alternate stack");
        let ss = libc::stack_t {
            ss_sp: p,
            ss_flags: 0,
            ss_size: ALT_SIZE,
        };
        ensure!(
            libc::sigaltstack(&ss, std::ptr::null_mut()) == 0,
            "sigaltstack"
        );
        p as usize
    };
    ALT.store(alt, Ordering::SeqCst);
    queue(getpid(), gettid(), libc::SIGUSR2, USR2_VALUE)
}

fn second_check(tid: i32) -> Verdict {
    ensure!(
        gettid() == tid,
        "second thread: gettid {} != {tid}",
        gettid()
    );
    let want = bit(libc::SIGUSR2) | bit(shared_sig());
    ensure!(
        blocked_now() == want,
        "second thread blocks {:#x}, want {want:#x}",
        blocked_now()
    );
    // SAFETY: a zeroed stack_t is valid.
    let mut ss: libc::stack_t = unsafe { std::mem::zeroed() };
    // SAFETY: a query into a live local.
    unsafe { libc::sigaltstack(std::ptr::null(), &mut ss) };
    let alt = ALT.load(Ordering::SeqCst);
    ensure!(
        ss.ss_sp as usize == alt && ss.ss_size == ALT_SIZE && ss.ss_flags == 0,
        "sigaltstack {:?}/{}/{} , want {alt:#x}/{ALT_SIZE}/0",
        ss.ss_sp,
        ss.ss_size,
        ss.ss_flags
    );
    let pending = pending_now();
    ensure!(
        pending & bit(libc::SIGUSR2) != 0,
        "SIGUSR2 is not pending in the second thread ({pending:#x})"
    );
    ensure!(
        USR2.count.load(Ordering::SeqCst) == 0,
        "SIGUSR2 arrived while blocked"
    );
    mask(libc::SIG_UNBLOCK, &[libc::SIGUSR2]);
    ensure!(
        USR2.count.load(Ordering::SeqCst) == 1,
        "SIGUSR2 arrived {} times after the unblock",
        USR2.count.load(Ordering::SeqCst)
    );
    let (code, value) = (
        USR2.code.load(Ordering::SeqCst),
        USR2.value.load(Ordering::SeqCst),
    );
    ensure!(
        code == libc::SI_QUEUE && value == USR2_VALUE,
        "SIGUSR2 siginfo code {code} value {value:#x}"
    );
    ensure!(
        USR2.pid.load(Ordering::SeqCst) == getpid(),
        "SIGUSR2 si_pid {}",
        USR2.pid.load(Ordering::SeqCst)
    );
    let sp = USR2.sp.load(Ordering::SeqCst);
    ensure!(
        (alt..alt + ALT_SIZE).contains(&sp),
        "the SIGUSR2 handler ran at {sp:#x}, not on the alternate stack"
    );
    Ok(())
}

extern "C" fn second(_: *mut c_void) -> *mut c_void {
    let tid = gettid();
    SECOND_TID.store(tid, Ordering::SeqCst);
    let v = second_setup();
    if v.is_err() {
        *SECOND_RESULT.lock().unwrap() = Some(v);
    }
    SECOND_SETUP.store(true, Ordering::SeqCst);
    while !SECOND_GO.load(Ordering::SeqCst) {
        sleep_ms(2);
    }
    let v = second_check(tid);
    *SECOND_RESULT.lock().unwrap() = Some(v);
    loop {
        sleep_ms(1000);
    }
}

/// Returns the kernel's id of the new POSIX timer.
fn setup_timers() -> Result<libc::timer_t, Msg> {
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
        ensure!(
            libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut()) == 0,
            "setitimer"
        );
        let mut ev: libc::sigevent = std::mem::zeroed();
        ev.sigev_notify = libc::SIGEV_SIGNAL;
        ev.sigev_signo = libc::SIGRTMIN();
        ev.sigev_value.sival_ptr = TIMER_VALUE as *mut c_void;
        let mut id: libc::timer_t = std::mem::zeroed();
        ensure!(
            libc::timer_create(libc::CLOCK_MONOTONIC, &mut ev, &mut id) == 0,
            "timer_create"
        );
        let period = libc::timespec {
            tv_sec: 0,
            tv_nsec: 20_000_000,
        };
        let spec = libc::itimerspec {
            it_interval: period,
            it_value: period,
        };
        ensure!(
            libc::timer_settime(id, 0, &spec, std::ptr::null_mut()) == 0,
            "timer_settime"
        );
        Ok(id)
    }
}

fn setup() -> Result<libc::timer_t, Msg> {
    install(
        libc::SIGUSR1,
        on_usr1 as *const () as usize,
        USR1_FLAGS,
        &[libc::SIGINT, libc::SIGQUIT],
    )?;
    install(
        libc::SIGUSR2,
        on_usr2 as *const () as usize,
        libc::SA_SIGINFO | libc::SA_ONSTACK,
        &[],
    )?;
    install(
        shared_sig(),
        on_shared as *const () as usize,
        libc::SA_SIGINFO,
        &[],
    )?;
    install(
        libc::SIGRTMIN(),
        on_timer as *const () as usize,
        libc::SA_SIGINFO | libc::SA_RESTART,
        &[],
    )?;
    install(
        libc::SIGALRM,
        on_alrm as *const () as usize,
        libc::SA_RESTART,
        &[],
    )?;
    // Blocked before the thread starts, so it inherits it too.
    mask(libc::SIG_BLOCK, &[shared_sig()]);
    // SAFETY: a zeroed pthread_t is written by pthread_create; second only
    // touches statics and its own mappings.
    let r = unsafe {
        let mut t: libc::pthread_t = std::mem::zeroed();
        libc::pthread_create(&mut t, std::ptr::null(), second, std::ptr::null_mut())
    };
    ensure!(r == 0, "pthread_create");
    let deadline = now_ns() + 5_000_000_000;
    while !SECOND_SETUP.load(Ordering::SeqCst) {
        ensure!(now_ns() < deadline, "second thread never set up");
        sleep_ms(1);
    }
    if let Some(v) = *SECOND_RESULT.lock().unwrap() {
        v?;
    }
    mask(libc::SIG_BLOCK, &[libc::SIGWINCH]);
    queue(getpid(), 0, shared_sig(), SHARED_VALUE)?;
    setup_timers()
}

fn check_usr1() -> Verdict {
    // SAFETY: a zeroed sigaction for the kernel to fill.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a query only.
    let r = unsafe { libc::sigaction(libc::SIGUSR1, std::ptr::null(), &mut old) };
    ensure!(r == 0, "sigaction query");
    ensure!(
        old.sa_sigaction == on_usr1 as *const () as usize,
        "SIGUSR1 handler {:#x}",
        old.sa_sigaction
    );
    ensure!(
        old.sa_flags & USR1_FLAGS == USR1_FLAGS,
        "SIGUSR1 flags {:#x}",
        old.sa_flags
    );
    let m = bits(&old.sa_mask);
    let want = bit(libc::SIGINT) | bit(libc::SIGQUIT);
    ensure!(m == want, "SIGUSR1 handler mask {m:#x}, want {want:#x}");
    // SAFETY: plain syscalls on this thread.
    unsafe { libc::syscall(libc::SYS_tgkill, getpid(), gettid(), libc::SIGUSR1) };
    ensure!(
        USR1.count.load(Ordering::SeqCst) == 1,
        "SIGUSR1 ran {} times",
        USR1.count.load(Ordering::SeqCst)
    );
    ensure!(
        USR1.code.load(Ordering::SeqCst) == libc::SI_TKILL,
        "SIGUSR1 si_code {}",
        USR1.code.load(Ordering::SeqCst)
    );
    Ok(())
}

fn check_main_mask() -> Verdict {
    let want = bit(libc::SIGWINCH) | bit(shared_sig());
    ensure!(
        blocked_now() == want,
        "main thread blocks {:#x}, want {want:#x}",
        blocked_now()
    );
    let p = pending_now();
    ensure!(
        p & bit(shared_sig()) != 0,
        "the process-wide signal is not pending ({p:#x})"
    );
    ensure!(
        p & bit(libc::SIGUSR2) == 0,
        "the second thread's SIGUSR2 is pending in main"
    );
    ensure!(
        SHARED.count.load(Ordering::SeqCst) == 0,
        "the process-wide signal arrived while blocked"
    );
    mask(libc::SIG_UNBLOCK, &[shared_sig()]);
    let n = SHARED.count.load(Ordering::SeqCst);
    ensure!(
        n == 1,
        "the process-wide signal arrived {n} times after the unblock"
    );
    let (code, value) = (
        SHARED.code.load(Ordering::SeqCst),
        SHARED.value.load(Ordering::SeqCst),
    );
    ensure!(
        code == libc::SI_QUEUE && value == SHARED_VALUE,
        "process-wide signal code {code} value {value:#x}"
    );
    Ok(())
}

fn check_timers(id: libc::timer_t) -> Verdict {
    let (a0, t0) = (
        ALRMS.load(Ordering::SeqCst),
        TIMER.count.load(Ordering::SeqCst),
    );
    sleep_ms(100);
    let (a1, t1) = (
        ALRMS.load(Ordering::SeqCst),
        TIMER.count.load(Ordering::SeqCst),
    );
    ensure!(
        a1 >= a0 + 3,
        "ITIMER_REAL fired {} times in 100 ms",
        a1 - a0
    );
    ensure!(
        t1 >= t0 + 2,
        "the POSIX timer fired {} times in 100 ms",
        t1 - t0
    );
    let (code, value) = (
        TIMER.code.load(Ordering::SeqCst),
        TIMER.value.load(Ordering::SeqCst),
    );
    ensure!(
        code == libc::SI_TIMER && value == TIMER_VALUE,
        "timer siginfo code {code} value {value:#x}"
    );
    // SAFETY: queries into live locals.
    let (it, spec, r) = unsafe {
        let mut it: libc::itimerval = std::mem::zeroed();
        libc::getitimer(libc::ITIMER_REAL, &mut it);
        let mut spec: libc::itimerspec = std::mem::zeroed();
        let r = libc::timer_gettime(id, &mut spec);
        (it, spec, r)
    };
    ensure!(
        it.it_interval.tv_sec == 0 && it.it_interval.tv_usec == 10_000,
        "ITIMER_REAL interval {}us",
        it.it_interval.tv_usec
    );
    ensure!(
        r == 0,
        "timer_gettime of timer {}: the id is gone",
        id as usize
    );
    ensure!(
        spec.it_interval.tv_nsec == 20_000_000,
        "POSIX timer interval {}ns",
        spec.it_interval.tv_nsec
    );
    let mut buf = [0u8; 4096];
    let text = read_file(c"/proc/self/timers", &mut buf);
    let line = Msg::new(format_args!("ID: {}\n", id as usize));
    let listed = text.windows(line.bytes().len()).any(|w| w == line.bytes());
    ensure!(listed, "/proc/self/timers lacks timer {}", id as usize);
    Ok(())
}

pub fn prepare(_: &std::path::Path) {}

pub fn victim(c: &Child) -> Verdict {
    let id = setup()?;
    let main = gettid();
    c.ready(b"");
    c.wait_go();
    ensure!(gettid() == main, "main gettid {} != {main}", gettid());
    check_usr1()?;
    check_main_mask()?;
    SECOND_GO.store(true, Ordering::SeqCst);
    let deadline = now_ns() + 5_000_000_000;
    loop {
        if let Some(v) = *SECOND_RESULT.lock().unwrap() {
            v?;
            break;
        }
        ensure!(
            now_ns() < deadline,
            "the second thread never checked itself"
        );
        sleep_ms(1);
    }
    check_timers(id)
}
