//! The threads victim: the main thread, two workers with their own
//! thread_local values, and a spinner thread that holds known values in
//! every callee-saved general register and in all sixteen SIMD registers
//! (xmm0-15, v0-v15) and compares them with a table in memory on every
//! iteration, whichever instruction it is stopped at (counting
//! iterations in memory). After go every thread checks getpid, its gettid
//! and its TLS value; the spinner must still count and never have seen a
//! register change; /proc/self/task must list exactly these threads.

use std::cell::Cell;
use std::ffi::c_void;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

use crate::common::victim::{Child, Msg, Verdict, getpid, gettid, now_ns, proc_numbers, sleep_ms};

const WORKERS: usize = 2;

static PID: AtomicI32 = AtomicI32::new(0);
static GO: AtomicBool = AtomicBool::new(false);
static TIDS: [AtomicI32; WORKERS + 1] = [const { AtomicI32::new(0) }; WORKERS + 1];
static RESULTS: [Mutex<Option<Verdict>>; WORKERS] = [const { Mutex::new(None) }; WORKERS];
static SPIN: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static TLS: Cell<u64> = const { Cell::new(0) };
}

fn tls_value(n: usize) -> u64 {
    0x7157_0000_0000 + n as u64 * 0x0101_0101
}

/// What the spinner works on; the asm relies on these offsets.
#[repr(C)]
struct Spin {
    /// +0: iterations, bumped by the asm.
    counter: u64,
    /// +8: set to 1 by the asm when a register differs from the table.
    mismatch: u64,
    /// +16: the 1 ms nanosleep between bursts.
    ts: [i64; 2],
    /// +32: the callee-saved general registers' values.
    gpr: [u64; 10],
    /// +112: v0/xmm0 .. v15/xmm15.
    vec: [[u64; 2]; VECS],
    /// +368: where x86_64 stores a vector register to compare it.
    scratch: [u64; 2],
}

/// Vector registers the spinner keeps and checks: all sixteen, because
/// crest's code may use any of them (the C ABI lets it) while the spinner,
/// stopped at an arbitrary instruction, holds a live value in each.
const VECS: usize = 16;

fn expected_gpr(i: usize) -> u64 {
    0x6770_0000_0000_0000 | (i as u64) << 40 | 0x00c0_ffee_0000 | i as u64
}

fn expected_vec(i: usize, half: usize) -> u64 {
    0x5e00_0000_0000_0000 ^ (i as u64) << 48 ^ (half as u64) << 44 ^ 0x1234_5678_9abc
}

fn spin_ptr() -> *mut Spin {
    SPIN.load(Ordering::Relaxed) as *mut Spin
}

/// Loads the table into the registers and checks them forever.
#[cfg(target_arch = "x86_64")]
fn spin(s: *mut Spin) -> ! {
    // SAFETY: never returns, so clobbering rbx/rbp, the callee-saved
    // registers and xmm0-15 breaks nothing; it touches only *s, which stays allocated.
    unsafe {
        std::arch::asm!(
            "mov rbx, [r9 + 32]",
            "mov rbp, [r9 + 40]",
            "mov r12, [r9 + 48]",
            "mov r13, [r9 + 56]",
            "mov r14, [r9 + 64]",
            "mov r15, [r9 + 72]",
            "movdqu xmm0, [r9 + 112]",
            "movdqu xmm1, [r9 + 128]",
            "movdqu xmm2, [r9 + 144]",
            "movdqu xmm3, [r9 + 160]",
            "movdqu xmm4, [r9 + 176]",
            "movdqu xmm5, [r9 + 192]",
            "movdqu xmm6, [r9 + 208]",
            "movdqu xmm7, [r9 + 224]",
            "movdqu xmm8, [r9 + 240]",
            "movdqu xmm9, [r9 + 256]",
            "movdqu xmm10, [r9 + 272]",
            "movdqu xmm11, [r9 + 288]",
            "movdqu xmm12, [r9 + 304]",
            "movdqu xmm13, [r9 + 320]",
            "movdqu xmm14, [r9 + 336]",
            "movdqu xmm15, [r9 + 352]",
            "2:",
            "mov r10d, 20000",
            "3:",
            "cmp rbx, [r9 + 32]",
            "jne 9f",
            "cmp rbp, [r9 + 40]",
            "jne 9f",
            "cmp r12, [r9 + 48]",
            "jne 9f",
            "cmp r13, [r9 + 56]",
            "jne 9f",
            "cmp r14, [r9 + 64]",
            "jne 9f",
            "cmp r15, [r9 + 72]",
            "jne 9f",
            // Stores (which leave the register as it is) and compares.
            "movdqu [r9 + 368], xmm0",
            "mov rax, [r9 + 368]",
            "cmp rax, [r9 + 112]",
            "jne 9f",
            "mov rax, [r9 + 376]",
            "cmp rax, [r9 + 120]",
            "jne 9f",
            "movdqu [r9 + 368], xmm1",
            "mov rax, [r9 + 368]",
            "cmp rax, [r9 + 128]",
            "jne 9f",
            "mov rax, [r9 + 376]",
            "cmp rax, [r9 + 136]",
            "jne 9f",
            "movdqu [r9 + 368], xmm2",
            "mov rax, [r9 + 368]",
            "cmp rax, [r9 + 144]",
            "jne 9f",
            "mov rax, [r9 + 376]",
            "cmp rax, [r9 + 152]",
            "jne 9f",
            "movdqu [r9 + 368], xmm3",
            "mov rax, [r9 + 368]",
            "cmp rax, [r9 + 160]",
            "jne 9f",
            "mov rax, [r9 + 376]",
            "cmp rax, [r9 + 168]",
            "jne 9f",
            "movdqu [r9 + 368], xmm4",
            "mov rax, [r9 + 368]",
            "cmp rax, [r9 + 176]",
            "jne 9f",
            "mov rax, [r9 + 376]",
            "cmp rax, [r9 + 184]",
            "jne 9f",
            "movdqu [r9 + 368], xmm5",
            "mov rax, [r9 + 368]",
            "cmp rax, [r9 + 192]",
            "jne 9f",
            "mov rax, [r9 + 376]",
            "cmp rax, [r9 + 200]",
            "jne 9f",
            "movdqu [r9 + 368], xmm6",
            "mov rax, [r9 + 368]",
            "cmp rax, [r9 + 208]",
            "jne 9f",
            "mov rax, [r9 + 376]",
            "cmp rax, [r9 + 216]",
            "jne 9f",
            "movdqu [r9 + 368], xmm7",
            "mov rax, [r9 + 368]",
            "cmp rax, [r9 + 224]",
            "jne 9f",
            "mov rax, [r9 + 376]",
            "cmp rax, [r9 + 232]",
            "jne 9f",
            "movdqu [r9 + 368], xmm8",
            "mov rax, [r9 + 368]",
            "cmp rax, [r9 + 240]",
            "jne 9f",
            "mov rax, [r9 + 376]",
            "cmp rax, [r9 + 248]",
            "jne 9f",
            "movdqu [r9 + 368], xmm9",
            "mov rax, [r9 + 368]",
            "cmp rax, [r9 + 256]",
            "jne 9f",
            "mov rax, [r9 + 376]",
            "cmp rax, [r9 + 264]",
            "jne 9f",
            "movdqu [r9 + 368], xmm10",
            "mov rax, [r9 + 368]",
            "cmp rax, [r9 + 272]",
            "jne 9f",
            "mov rax, [r9 + 376]",
            "cmp rax, [r9 + 280]",
            "jne 9f",
            "movdqu [r9 + 368], xmm11",
            "mov rax, [r9 + 368]",
            "cmp rax, [r9 + 288]",
            "jne 9f",
            "mov rax, [r9 + 376]",
            "cmp rax, [r9 + 296]",
            "jne 9f",
            "movdqu [r9 + 368], xmm12",
            "mov rax, [r9 + 368]",
            "cmp rax, [r9 + 304]",
            "jne 9f",
            "mov rax, [r9 + 376]",
            "cmp rax, [r9 + 312]",
            "jne 9f",
            "movdqu [r9 + 368], xmm13",
            "mov rax, [r9 + 368]",
            "cmp rax, [r9 + 320]",
            "jne 9f",
            "mov rax, [r9 + 376]",
            "cmp rax, [r9 + 328]",
            "jne 9f",
            "movdqu [r9 + 368], xmm14",
            "mov rax, [r9 + 368]",
            "cmp rax, [r9 + 336]",
            "jne 9f",
            "mov rax, [r9 + 376]",
            "cmp rax, [r9 + 344]",
            "jne 9f",
            "movdqu [r9 + 368], xmm15",
            "mov rax, [r9 + 368]",
            "cmp rax, [r9 + 352]",
            "jne 9f",
            "mov rax, [r9 + 376]",
            "cmp rax, [r9 + 360]",
            "jne 9f",
            "inc qword ptr [r9]",
            "dec r10d",
            "jnz 3b",
            // nanosleep(&s.ts, NULL): the kernel keeps every register but
            // rax, rcx and r11.
            "lea rdi, [r9 + 16]",
            "xor esi, esi",
            "mov eax, {nr}",
            "syscall",
            "jmp 2b",
            "9:",
            "mov qword ptr [r9 + 8], 1",
            "8:",
            "lea rdi, [r9 + 16]",
            "xor esi, esi",
            "mov eax, {nr}",
            "syscall",
            "jmp 8b",
            in("r9") s,
            nr = const libc::SYS_nanosleep,
            options(noreturn)
        )
    }
}

/// Loads the table into the registers and checks them forever.
#[cfg(target_arch = "aarch64")]
fn spin(s: *mut Spin) -> ! {
    // SAFETY: never returns, so clobbering x19-x28 and v0-v15 breaks
    // nothing; it touches only *s, which stays allocated.
    unsafe {
        std::arch::asm!(
            "ldp x19, x20, [x9, #32]",
            "ldp x21, x22, [x9, #48]",
            "ldp x23, x24, [x9, #64]",
            "ldp x25, x26, [x9, #80]",
            "ldp x27, x28, [x9, #96]",
            "ldp q0, q1, [x9, #112]",
            "ldp q2, q3, [x9, #144]",
            "ldp q4, q5, [x9, #176]",
            "ldp q6, q7, [x9, #208]",
            "ldp q8, q9, [x9, #240]",
            "ldp q10, q11, [x9, #272]",
            "ldp q12, q13, [x9, #304]",
            "ldp q14, q15, [x9, #336]",
            "2:",
            "mov x10, #20000",
            "3:",
            "ldp x0, x1, [x9, #32]",
            "cmp x19, x0",
            "ccmp x20, x1, #0, eq",
            "b.ne 9f",
            "ldp x0, x1, [x9, #48]",
            "cmp x21, x0",
            "ccmp x22, x1, #0, eq",
            "b.ne 9f",
            "ldp x0, x1, [x9, #64]",
            "cmp x23, x0",
            "ccmp x24, x1, #0, eq",
            "b.ne 9f",
            "ldp x0, x1, [x9, #80]",
            "cmp x25, x0",
            "ccmp x26, x1, #0, eq",
            "b.ne 9f",
            "ldp x0, x1, [x9, #96]",
            "cmp x27, x0",
            "ccmp x28, x1, #0, eq",
            "b.ne 9f",
            // umov copies a lane out and leaves the register as it is.
            "umov x0, v0.d[0]",
            "umov x1, v0.d[1]",
            "ldp x2, x3, [x9, #112]",
            "cmp x0, x2",
            "ccmp x1, x3, #0, eq",
            "b.ne 9f",
            "umov x0, v1.d[0]",
            "umov x1, v1.d[1]",
            "ldp x2, x3, [x9, #128]",
            "cmp x0, x2",
            "ccmp x1, x3, #0, eq",
            "b.ne 9f",
            "umov x0, v2.d[0]",
            "umov x1, v2.d[1]",
            "ldp x2, x3, [x9, #144]",
            "cmp x0, x2",
            "ccmp x1, x3, #0, eq",
            "b.ne 9f",
            "umov x0, v3.d[0]",
            "umov x1, v3.d[1]",
            "ldp x2, x3, [x9, #160]",
            "cmp x0, x2",
            "ccmp x1, x3, #0, eq",
            "b.ne 9f",
            "umov x0, v4.d[0]",
            "umov x1, v4.d[1]",
            "ldp x2, x3, [x9, #176]",
            "cmp x0, x2",
            "ccmp x1, x3, #0, eq",
            "b.ne 9f",
            "umov x0, v5.d[0]",
            "umov x1, v5.d[1]",
            "ldp x2, x3, [x9, #192]",
            "cmp x0, x2",
            "ccmp x1, x3, #0, eq",
            "b.ne 9f",
            "umov x0, v6.d[0]",
            "umov x1, v6.d[1]",
            "ldp x2, x3, [x9, #208]",
            "cmp x0, x2",
            "ccmp x1, x3, #0, eq",
            "b.ne 9f",
            "umov x0, v7.d[0]",
            "umov x1, v7.d[1]",
            "ldp x2, x3, [x9, #224]",
            "cmp x0, x2",
            "ccmp x1, x3, #0, eq",
            "b.ne 9f",
            "umov x0, v8.d[0]",
            "umov x1, v8.d[1]",
            "ldp x2, x3, [x9, #240]",
            "cmp x0, x2",
            "ccmp x1, x3, #0, eq",
            "b.ne 9f",
            "umov x0, v9.d[0]",
            "umov x1, v9.d[1]",
            "ldp x2, x3, [x9, #256]",
            "cmp x0, x2",
            "ccmp x1, x3, #0, eq",
            "b.ne 9f",
            "umov x0, v10.d[0]",
            "umov x1, v10.d[1]",
            "ldp x2, x3, [x9, #272]",
            "cmp x0, x2",
            "ccmp x1, x3, #0, eq",
            "b.ne 9f",
            "umov x0, v11.d[0]",
            "umov x1, v11.d[1]",
            "ldp x2, x3, [x9, #288]",
            "cmp x0, x2",
            "ccmp x1, x3, #0, eq",
            "b.ne 9f",
            "umov x0, v12.d[0]",
            "umov x1, v12.d[1]",
            "ldp x2, x3, [x9, #304]",
            "cmp x0, x2",
            "ccmp x1, x3, #0, eq",
            "b.ne 9f",
            "umov x0, v13.d[0]",
            "umov x1, v13.d[1]",
            "ldp x2, x3, [x9, #320]",
            "cmp x0, x2",
            "ccmp x1, x3, #0, eq",
            "b.ne 9f",
            "umov x0, v14.d[0]",
            "umov x1, v14.d[1]",
            "ldp x2, x3, [x9, #336]",
            "cmp x0, x2",
            "ccmp x1, x3, #0, eq",
            "b.ne 9f",
            "umov x0, v15.d[0]",
            "umov x1, v15.d[1]",
            "ldp x2, x3, [x9, #352]",
            "cmp x0, x2",
            "ccmp x1, x3, #0, eq",
            "b.ne 9f",
            "ldr x0, [x9]",
            "add x0, x0, #1",
            "str x0, [x9]",
            "subs x10, x10, #1",
            "b.ne 3b",
            // nanosleep(&s.ts, NULL): svc keeps every register but x0.
            "add x0, x9, #16",
            "mov x1, xzr",
            "mov x8, #{nr}",
            "svc #0",
            "b 2b",
            "9:",
            "mov x0, #1",
            "str x0, [x9, #8]",
            "8:",
            "add x0, x9, #16",
            "mov x1, xzr",
            "mov x8, #{nr}",
            "svc #0",
            "b 8b",
            in("x9") s,
            nr = const libc::SYS_nanosleep,
            options(noreturn)
        )
    }
}

extern "C" fn spinner(_: *mut c_void) -> *mut c_void {
    TIDS[WORKERS].store(gettid(), Ordering::SeqCst);
    // SAFETY: a full set on a live local; signals go to the other threads.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
    }
    spin(spin_ptr())
}

fn check_thread(n: usize, tid: i32) -> Verdict {
    ensure!(
        getpid() == PID.load(Ordering::SeqCst),
        "thread {n}: getpid {} != {}",
        getpid(),
        PID.load(Ordering::SeqCst)
    );
    ensure!(gettid() == tid, "thread {n}: gettid {} != {tid}", gettid());
    let tls = TLS.with(Cell::get);
    ensure!(
        tls == tls_value(n),
        "thread {n}: TLS {tls:#x} != {:#x}",
        tls_value(n)
    );
    Ok(())
}

extern "C" fn worker(arg: *mut c_void) -> *mut c_void {
    let idx = arg as usize;
    TLS.with(|t| t.set(tls_value(idx + 1)));
    let tid = gettid();
    TIDS[idx].store(tid, Ordering::SeqCst);
    while !GO.load(Ordering::SeqCst) {
        sleep_ms(2);
    }
    let v = check_thread(idx + 1, tid);
    *RESULTS[idx].lock().unwrap() = Some(v);
    loop {
        sleep_ms(1000);
    }
}

fn start(f: extern "C" fn(*mut c_void) -> *mut c_void, arg: usize) -> Verdict {
    // SAFETY: a zeroed pthread_t is written by pthread_create; f only
    // touches statics and its own stack.
    let r = unsafe {
        let mut t: libc::pthread_t = std::mem::zeroed();
        libc::pthread_create(&mut t, std::ptr::null(), f, arg as *mut c_void)
    };
    ensure!(r == 0, "pthread_create: {r}");
    Ok(())
}

fn setup() -> Verdict {
    PID.store(getpid(), Ordering::SeqCst);
    TLS.with(|t| t.set(tls_value(0)));
    // SAFETY: a zeroed allocation of a plain struct, checked for null.
    let s = unsafe { libc::calloc(1, std::mem::size_of::<Spin>()) }.cast::<Spin>();
    ensure!(!s.is_null(), "calloc");
    // SAFETY: s is a fresh allocation no other thread sees yet.
    unsafe {
        (*s).ts = [0, 1_000_000];
        (*s).gpr = std::array::from_fn(expected_gpr);
        (*s).vec = std::array::from_fn(|i| [expected_vec(i, 0), expected_vec(i, 1)]);
    }
    SPIN.store(s as usize, Ordering::SeqCst);
    for idx in 0..WORKERS {
        start(worker, idx)?;
    }
    start(spinner, 0)?;
    let deadline = now_ns() + 5_000_000_000;
    while TIDS.iter().any(|t| t.load(Ordering::SeqCst) == 0) || counter() == 0 {
        ensure!(now_ns() < deadline, "threads never started");
        sleep_ms(1);
    }
    Ok(())
}

fn counter() -> u64 {
    // SAFETY: the spinner's table stays allocated; volatile because the
    // spinner writes it.
    unsafe { std::ptr::addr_of!((*spin_ptr()).counter).read_volatile() }
}

fn mismatch() -> u64 {
    // SAFETY: as in counter().
    unsafe { std::ptr::addr_of!((*spin_ptr()).mismatch).read_volatile() }
}

fn check_spinner(before: u64) -> Verdict {
    let c0 = counter();
    ensure!(
        c0 >= before,
        "spinner counter went back from {before} to {c0}"
    );
    sleep_ms(30);
    let c1 = counter();
    // A mismatch stops the counting too; name the cause.
    ensure!(
        mismatch() == 0,
        "the spinner saw a register change (counter {c1})"
    );
    ensure!(c1 > c0, "the spinner stopped counting at {c1}");
    // SAFETY: the table is read only now.
    let (gpr, vec) = unsafe { ((*spin_ptr()).gpr, (*spin_ptr()).vec) };
    ensure!(
        gpr == std::array::from_fn(expected_gpr),
        "the register table changed"
    );
    ensure!(
        vec == std::array::from_fn(|i| [expected_vec(i, 0), expected_vec(i, 1)]),
        "the vector table changed"
    );
    Ok(())
}

fn collect_workers() -> Verdict {
    let deadline = now_ns() + 5_000_000_000;
    for (i, slot) in RESULTS.iter().enumerate() {
        loop {
            if let Some(v) = *slot.lock().unwrap() {
                v?;
                break;
            }
            ensure!(now_ns() < deadline, "worker {i} never checked itself");
            sleep_ms(1);
        }
    }
    Ok(())
}

fn check_task_list(main: i32) -> Verdict {
    let mut want = [0i64; WORKERS + 2];
    want[0] = main as i64;
    for (w, t) in want[1..].iter_mut().zip(&TIDS) {
        *w = t.load(Ordering::SeqCst) as i64;
    }
    want.sort_unstable();
    let mut got = [0i64; 16];
    let n = proc_numbers(c"/proc/self/task", &mut got);
    ensure!(
        got[..n.min(16)] == want[..],
        "/proc/self/task lists {:?}, want {want:?}",
        &got[..n.min(16)]
    );
    Ok(())
}

pub fn prepare(_: &std::path::Path) {}

pub fn victim(c: &Child) -> Verdict {
    setup()?;
    let main = gettid();
    let before = counter();
    c.ready(
        Msg::new(format_args!(
            "spinner={}\n",
            TIDS[WORKERS].load(Ordering::SeqCst)
        ))
        .bytes(),
    );
    c.wait_go();
    check_thread(0, main)?;
    GO.store(true, Ordering::SeqCst);
    collect_workers()?;
    check_spinner(before)?;
    check_task_list(main)
}
