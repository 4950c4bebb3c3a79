//! Thread cores and pending signals (src/dump/core.rs, src/dump/signals.rs)
//! against forked victims. Ground truth is independent of crest: the
//! constants the victim loaded into its registers, the signals this test
//! queued, what each victim thread reports about itself through a shared
//! page (tid, thread pointer, rseq area, mask), /proc/PID/{status,syscall},
//! the victim's instruction bytes, and what the victim receives after the
//! release.

#[path = "dump_core/regs.rs"]
mod regs;
#[path = "dump_core/threads.rs"]
mod threads;
#[path = "dump_core/victim.rs"]
mod victim;

use std::time::Duration;

use crest::dump::core::{collect_cores, collect_thread_core, fill_cores};
use crest::dump::signals::collect_shared_pending;
use crest::image::record::{AnyRecord, decode_payload, to_payload};
use crest::image::signals::{SharedSignals, Siginfo};
use crest::image::thread::ThreadCore;
use crest::image::{Arch, Record};
use crest::infect::{Release, seize};
use victim::{ARG, DONE, GO, READY, RECEIVED, RESULT, SIGNALS0, VALUE, Victim, get, set};

/// Word `i` of a register block.
fn word(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap())
}

/// The core encodes and decodes through the image format unchanged.
fn assert_roundtrip(core: &ThreadCore) {
    let back = decode_payload(ThreadCore::KIND, &to_payload(core)).expect("decode");
    assert_eq!(back, AnyRecord::ThreadCore(core.clone()));
}

fn assert_roundtrip_shared(s: &SharedSignals) {
    let back = decode_payload(SharedSignals::KIND, &to_payload(s)).expect("decode");
    assert_eq!(back, AnyRecord::SharedSignals(s.clone()));
}

fn collect_one(pid: i32) -> ThreadCore {
    let seized = seize(pid).expect("seize");
    let core = collect_thread_core(pid).expect("collect");
    seized.release(Release::Resume).expect("release");
    assert_eq!(core.tid, pid as u32);
    assert_eq!(core.arch, Arch::host());
    assert_roundtrip(&core);
    core
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    /// CPUID leaf/subleaf: (eax, ebx, ecx, edx).
    pub fn cpuid(leaf: u32, sub: u32) -> (u32, u32, u32, u32) {
        #[allow(unused_unsafe)]
        // SAFETY: CPUID exists on every x86_64 CPU.
        let r = unsafe { std::arch::x86_64::__cpuid_count(leaf, sub) };
        (r.eax, r.ebx, r.ecx, r.edx)
    }

    /// XCR0, read with XGETBV (OSXSAVE is set on every CPU this runs on).
    pub fn xcr0() -> u64 {
        let (lo, hi): (u32, u32);
        // SAFETY: XGETBV with ecx = 0 only reads XCR0.
        unsafe {
            std::arch::asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi,
                options(nomem, nostack))
        };
        u64::from(hi) << 32 | u64::from(lo)
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn core_registers_hold_the_patterns_the_victim_loaded() {
    use crest::dump::core::xsave_features;
    assert!(std::is_x86_feature_detected!("avx"), "the victim needs AVX");
    let v = Victim::spawn(regs::child);
    let core = collect_one(v.pid);
    let g = &core.gpregs;
    assert_eq!(g.len(), 216);
    // user_regs_struct: r15 0, r14 1, r13 2, r12 3, rbp 4, rbx 5.
    let got = [
        word(g, 5),
        word(g, 4),
        word(g, 3),
        word(g, 2),
        word(g, 1),
        word(g, 0),
    ];
    assert_eq!(got, regs::GP[..6], "rbx rbp r12 r13 r14 r15");
    assert_eq!(word(g, 15), u64::MAX, "orig_rax: not in a system call");
    assert_eq!(core.tls, word(g, 21), "tls is fs_base");
    let fp = &core.fpregs;
    // The XSAVE area's size and features are those of this CPU and kernel.
    assert_eq!(fp.len() as u32, x86::cpuid(0xd, 0).1, "CPUID 0xD size");
    assert_eq!(xsave_features(fp), Some(x86::xcr0()), "XCR0");
    assert_ne!(word(fp, 512 / 8) & 0b100, 0, "XSTATE_BV has AVX");
    let avx = x86::cpuid(0xd, 2).1 as usize;
    for r in 0..16 {
        let want = &regs::SIMD.0[r * 32..r * 32 + 32];
        assert_eq!(&fp[160 + 16 * r..176 + 16 * r], &want[..16], "xmm{r}");
        assert_eq!(
            &fp[avx + 16 * r..avx + 16 * r + 16],
            &want[16..],
            "ymm{r} high"
        );
    }
    assert_eq!(v.get(READY), 1);
}

#[cfg(target_arch = "aarch64")]
#[test]
fn core_registers_hold_the_patterns_the_victim_loaded() {
    let v = Victim::spawn(regs::child);
    let core = collect_one(v.pid);
    let g = &core.gpregs;
    assert_eq!(g.len(), 272);
    let got: Vec<u64> = (19..29).map(|i| word(g, i)).collect();
    assert_eq!(got, regs::GP, "x19..x28");
    assert_eq!(core.fpregs.len(), 528);
    assert_eq!(&core.fpregs[..512], &regs::SIMD.0[..], "v0..v31");
    let tls = &core.extra_regsets[0];
    assert_eq!(tls.note, crest::sys::ptrace::NT_ARM_TLS);
    assert_eq!(word(&tls.data, 0), core.tls);
    assert_ne!(core.tls, 0);
}

// ---- pending signals ----

const SIG_THREAD_RT: i32 = 40;
const SIG_SHARED_RT: i32 = 41;
const SI_QUEUE: i32 = -1;
const SI_TKILL: i32 = -6;
const ALL: [i32; 4] = [libc::SIGUSR1, libc::SIGUSR2, SIG_THREAD_RT, SIG_SHARED_RT];

fn bit(sig: i32) -> u64 {
    1 << (sig - 1)
}

static PAGE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

extern "C" fn on_signal(sig: i32, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let page = PAGE.load(std::sync::atomic::Ordering::Relaxed) as *mut u64;
    let raw = info.cast::<u8>();
    // SAFETY: the kernel's siginfo is 128 bytes; the offsets are in it.
    let (code, pid, value) = unsafe {
        (
            raw.add(8).cast::<i32>().read_unaligned(),
            raw.add(16).cast::<u32>().read_unaligned(),
            raw.add(24).cast::<u64>().read_unaligned(),
        )
    };
    let n = get(page, RECEIVED) as usize;
    let rec = [sig as u64, code as u64, value, u64::from(pid)];
    for (k, w) in rec.into_iter().enumerate() {
        set(page, SIGNALS0 + 4 * n + k, w);
    }
    set(page, RECEIVED, n as u64 + 1);
}

fn signals_child(page: *mut u64) -> ! {
    PAGE.store(page as usize, std::sync::atomic::Ordering::Relaxed);
    for sig in ALL {
        // SAFETY: a zeroed sigaction is valid; the handler only writes the
        // shared page; every signal is blocked while it runs (no nesting).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO;
            libc::sigfillset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    victim::set_mask(ALL.iter().fold(0, |m, &s| m | bit(s)));
    set(page, READY, 1);
    while get(page, GO) == 0 {
        // SAFETY: no arguments.
        unsafe { libc::sched_yield() };
    }
    victim::set_mask(0);
    set(page, DONE, 1);
    victim::spin()
}

/// A queued siginfo built here (not with crest's helper).
fn queued(sig: i32, pid: u32, value: u64) -> [u8; 128] {
    let mut b = [0u8; 128];
    b[0..4].copy_from_slice(&sig.to_ne_bytes());
    b[8..12].copy_from_slice(&SI_QUEUE.to_ne_bytes());
    b[16..20].copy_from_slice(&pid.to_ne_bytes());
    b[24..32].copy_from_slice(&value.to_ne_bytes());
    b
}

/// (signo, code, value, sender pid) of a collected siginfo.
fn fields(s: &Siginfo) -> [u64; 4] {
    let i32_at = |o: usize| i32::from_ne_bytes(s.0[o..o + 4].try_into().unwrap());
    let uid = u32::from_ne_bytes(s.0[20..24].try_into().unwrap());
    assert_eq!(uid, 0, "sender uid");
    let value = u64::from_ne_bytes(s.0[24..32].try_into().unwrap());
    [s.signo() as u64, i32_at(8) as u64, value, i32_at(16) as u64]
}

/// Queues, to `pid`: thread 40 x2 and SIGUSR2 (tgkill), shared 41 x2 and
/// SIGUSR1. Returns (thread, shared) expectations in queue order.
fn send_signals(pid: i32) -> (Vec<[u64; 4]>, Vec<[u64; 4]>) {
    let me = std::process::id();
    let (mut th, mut sh) = (Vec::new(), Vec::new());
    for value in [0xaaaa_0001u64, 0xaaaa_0002] {
        let info = queued(SIG_THREAD_RT, me, value);
        // SAFETY: the kernel reads one 128-byte siginfo.
        let r = unsafe {
            libc::syscall(
                libc::SYS_rt_tgsigqueueinfo,
                pid,
                pid,
                SIG_THREAD_RT,
                info.as_ptr(),
            )
        };
        assert_eq!(r, 0);
        th.push([SIG_THREAD_RT as u64, SI_QUEUE as u64, value, u64::from(me)]);
    }
    // SAFETY: plain tgkill to our own child.
    let r = unsafe { libc::syscall(libc::SYS_tgkill, pid, pid, libc::SIGUSR2) };
    assert_eq!(r, 0);
    th.push([libc::SIGUSR2 as u64, SI_TKILL as u64, 0, u64::from(me)]);
    for (sig, value) in [
        (SIG_SHARED_RT, 0xbbbb_0001u64),
        (SIG_SHARED_RT, 0xbbbb_0002),
        (libc::SIGUSR1, 0xbbbb_0003),
    ] {
        let info = queued(sig, me, value);
        // SAFETY: as above.
        let r = unsafe { libc::syscall(libc::SYS_rt_sigqueueinfo, pid, sig, info.as_ptr()) };
        assert_eq!(r, 0);
        sh.push([sig as u64, SI_QUEUE as u64, value, u64::from(me)]);
    }
    (th, sh)
}

#[test]
fn pending_signals_are_peeked_whole_and_still_delivered_after_release() {
    let v = Victim::spawn(signals_child);
    let (want_thread, want_shared) = send_signals(v.pid);
    let masks = (v.status_mask("SigPnd:"), v.status_mask("ShdPnd:"));
    let thread_mask = bit(libc::SIGUSR2) | bit(SIG_THREAD_RT);
    assert_eq!(
        masks,
        (thread_mask, bit(libc::SIGUSR1) | bit(SIG_SHARED_RT))
    );

    let seized = seize(v.pid).expect("seize");
    let cores = collect_cores(&seized).expect("cores");
    let shared = collect_shared_pending(v.pid).expect("shared");
    // Peeking twice gives the same: nothing was dequeued.
    assert_eq!(collect_shared_pending(v.pid).expect("again"), shared);
    seized.release(Release::Resume).expect("release");

    assert_eq!(cores.len(), 1);
    let blocked = ALL.iter().fold(0, |m, &s| m | bit(s));
    assert_eq!(cores[0].sigmask, blocked);
    let got: Vec<_> = cores[0].pending.iter().map(fields).collect();
    assert_eq!(got, want_thread, "per-thread queue, in order");
    let got: Vec<_> = shared.pending.iter().map(fields).collect();
    assert_eq!(got, want_shared, "shared queue, in order");
    assert_roundtrip(&cores[0]);
    assert_roundtrip_shared(&shared);
    assert_eq!((v.status_mask("SigPnd:"), v.status_mask("ShdPnd:")), masks);

    v.set(GO, 1);
    v.wait_for(DONE, 1);
    assert_eq!(
        v.get(RECEIVED),
        6,
        "every signal delivered after the release"
    );
    let mut received: Vec<[u64; 4]> = (0..6)
        .map(|n| std::array::from_fn(|k| v.get(SIGNALS0 + 4 * n + k)))
        .collect();
    let mut all: Vec<[u64; 4]> = want_thread.into_iter().chain(want_shared).collect();
    received.sort();
    all.sort();
    assert_eq!(received, all);
}

fn block_all_child(page: *mut u64) -> ! {
    victim::set_mask(!0);
    set(page, READY, 1);
    victim::spin()
}

/// More signals than one PTRACE_PEEKSIGINFO batch, on both queues.
#[test]
fn long_queues_are_read_in_batches_in_order() {
    const N: u64 = 100;
    let v = Victim::spawn(block_all_child);
    let me = std::process::id();
    for value in 0..N {
        let sig = 42 + (value % 3) as i32;
        let info = queued(sig, me, value);
        // SAFETY: the kernel reads one 128-byte siginfo.
        let r = unsafe {
            libc::syscall(
                libc::SYS_rt_tgsigqueueinfo,
                v.pid,
                v.pid,
                sig,
                info.as_ptr(),
            )
        };
        assert_eq!(r, 0);
        // SAFETY: as above.
        let r = unsafe { libc::syscall(libc::SYS_rt_sigqueueinfo, v.pid, sig, info.as_ptr()) };
        assert_eq!(r, 0);
    }
    let seized = seize(v.pid).expect("seize");
    let core = collect_thread_core(v.pid).expect("core");
    let shared = collect_shared_pending(v.pid).expect("shared");
    seized.release(Release::Resume).expect("release");
    let want: Vec<[u64; 4]> = (0..N)
        .map(|value| [42 + value % 3, SI_QUEUE as u64, value, u64::from(me)])
        .collect();
    let got: Vec<_> = core.pending.iter().map(fields).collect();
    assert_eq!(got, want, "thread queue");
    let got: Vec<_> = shared.pending.iter().map(fields).collect();
    assert_eq!(got, want, "shared queue");
    assert_roundtrip(&core);
    assert_roundtrip_shared(&shared);
}

// ---- threads: masks, rseq, TLS, names ----

#[test]
fn each_thread_has_its_own_mask_rseq_tls_and_name() {
    let v = Victim::spawn(threads::child);
    // A signal for thread 1 alone, blocked there only: it stays pending in
    // thread 1's queue.
    let t1 = threads::Report::read(&v, 1).tid as i32;
    let info = queued(libc::SIGUSR2, std::process::id(), 0xcccc_0001);
    // SAFETY: the kernel reads one 128-byte siginfo.
    let r = unsafe {
        libc::syscall(
            libc::SYS_rt_tgsigqueueinfo,
            v.pid,
            t1,
            libc::SIGUSR2,
            info.as_ptr(),
        )
    };
    assert_eq!(r, 0);
    let mut state = crest::dump::collect_process(v.pid as u32).expect("collect_process");
    let seized = seize(v.pid).expect("seize");
    fill_cores(&mut state, &seized).expect("fill_cores");
    seized.release(Release::Resume).expect("release");
    let cores = &state.task.threads;
    assert_eq!(cores.len(), threads::N);
    assert_eq!(cores[0].tid, v.pid as u32, "leader first");
    let mut addrs = Vec::new();
    for i in 0..threads::N {
        let me = threads::Report::read(&v, i);
        let core = cores
            .iter()
            .find(|c| u64::from(c.tid) == me.tid)
            .expect("core of a thread");
        assert_eq!(core.sigmask, threads::MASKS[i], "thread {i} mask");
        assert_eq!(core.tls, me.tp, "thread {i} thread pointer");
        assert_eq!(core.rseq.addr, me.rseq, "thread {i} rseq area");
        assert_eq!(
            core.rseq.sig, me.rseq_sig as u32,
            "thread {i} rseq signature"
        );
        assert!(core.rseq.len >= 32, "thread {i} rseq len {}", core.rseq.len);
        assert_eq!(core.comm, threads::name(i).as_bytes(), "thread {i} name");
        let pending: Vec<[u64; 4]> = core.pending.iter().map(fields).collect();
        if i == 1 {
            let me = u64::from(std::process::id());
            let want = [libc::SIGUSR2 as u64, SI_QUEUE as u64, 0xcccc_0001, me];
            assert_eq!(pending, [want], "thread 1's own queue");
        } else {
            assert!(
                pending.is_empty(),
                "thread {i} has nothing pending: {pending:?}"
            );
        }
        addrs.push(core.rseq.addr);
        assert_roundtrip(core);
    }
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), threads::N, "rseq areas differ per thread");
    assert!(state.task.shared_signals.pending.is_empty());
    assert_roundtrip_shared(&state.task.shared_signals);
    let status = std::fs::read_to_string(format!("/proc/{}/task/{t1}/status", v.pid)).unwrap();
    let pnd = status
        .lines()
        .find_map(|l| l.strip_prefix("SigPnd:"))
        .unwrap();
    assert_eq!(
        u64::from_str_radix(pnd.trim(), 16).unwrap(),
        bit(libc::SIGUSR2),
        "still pending"
    );
    // Still running, all of them.
    let before = threads::counters(&v);
    std::thread::sleep(Duration::from_millis(50));
    let after = threads::counters(&v);
    assert!(
        before.iter().zip(&after).all(|(a, b)| b > a),
        "{before:?} {after:?}"
    );
}

// ---- a thread stopped inside a system call ----

fn read_child(page: *mut u64) -> ! {
    let fd = get(page, ARG) as i32;
    let mut v = 0u64;
    set(page, READY, 1);
    // SAFETY: reads at most 8 bytes into v.
    let r = unsafe { libc::syscall(libc::SYS_read, fd, &mut v as *mut u64, 8) };
    set(page, VALUE, v);
    set(page, RESULT, r as u64);
    set(page, DONE, 1);
    victim::spin()
}

const NAP: Duration = Duration::from_millis(400);

fn nanosleep_child(page: *mut u64) -> ! {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: NAP.as_nanos() as _,
    };
    let t0 = std::time::Instant::now();
    set(page, READY, 1);
    // SAFETY: ts is a valid timespec; no remainder wanted.
    let r = unsafe {
        libc::syscall(
            libc::SYS_nanosleep,
            &ts,
            std::ptr::null_mut::<libc::timespec>(),
        )
    };
    set(page, VALUE, t0.elapsed().as_nanos() as u64);
    set(page, RESULT, r as u64);
    set(page, DONE, 1);
    victim::spin()
}

/// Reads `n` bytes of the victim's memory through /proc/PID/mem.
fn peek(pid: i32, addr: u64, n: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut b = vec![0u8; n];
    f.read_exact_at(&mut b, addr).unwrap();
    b
}

#[test]
fn thread_blocked_in_read_is_recorded_to_restart_the_call() {
    let mut fds = [0; 2];
    // SAFETY: pipe writes two fds.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let v = Victim::spawn_with(read_child, &[(ARG, fds[0] as u64)]);
    let sc = v.wait_in_syscall(libc::SYS_read);
    let pc = sc[8];
    let core = collect_one(v.pid);
    let g = &core.gpregs;
    #[cfg(target_arch = "x86_64")]
    {
        assert_eq!(word(g, 10), libc::SYS_read as u64, "rax: the call again");
        assert_eq!(word(g, 15), u64::MAX, "orig_rax: nothing left to restart");
        assert_eq!(word(g, 16), pc - 2, "rip back on the syscall instruction");
        assert_eq!(peek(v.pid, pc - 2, 2), [0x0f, 0x05]);
        assert_eq!(word(g, 14), fds[0] as u64, "rdi: the fd");
    }
    #[cfg(target_arch = "aarch64")]
    {
        assert_eq!(word(g, 8), libc::SYS_read as u64, "x8: the call");
        assert_eq!(word(g, 0), fds[0] as u64, "x0: the fd again");
        assert_eq!(word(g, 32), pc - 4, "pc back on the svc");
        assert_eq!(peek(v.pid, pc - 4, 4), 0xd400_0001u32.to_le_bytes());
    }
    // The kernel restarts the call by itself in the released victim.
    let val = 0x1234_5678_9abc_def0u64;
    // SAFETY: writes 8 bytes from val.
    let n = unsafe { libc::write(fds[1], (&val as *const u64).cast(), 8) };
    assert_eq!(n, 8);
    v.wait_for(DONE, 1);
    assert_eq!((v.get(RESULT), v.get(VALUE)), (8, val));
    // SAFETY: our fds.
    unsafe { (libc::close(fds[0]), libc::close(fds[1])) };
}

#[test]
fn thread_in_nanosleep_is_recorded_as_interrupted() {
    let v = Victim::spawn(nanosleep_child);
    let sc = v.wait_in_syscall(libc::SYS_nanosleep);
    let (ts, pc) = (sc[1], sc[8]);
    let core = collect_one(v.pid);
    let g = &core.gpregs;
    #[cfg(target_arch = "x86_64")]
    {
        // -ERESTART_RESTARTBLOCK: the restart block dies with the task, so
        // a restored thread sees EINTR.
        assert_eq!(word(g, 10) as i64, -(libc::EINTR as i64), "rax");
        assert_eq!(word(g, 15), u64::MAX, "orig_rax");
        assert_eq!(word(g, 16), pc, "rip after the syscall");
        assert_eq!(word(g, 14), ts, "rdi");
    }
    #[cfg(target_arch = "aarch64")]
    {
        assert_eq!(word(g, 8), libc::SYS_nanosleep as u64, "x8");
        assert_eq!(word(g, 0), ts, "x0: the argument again");
        assert_eq!(word(g, 32), pc - 4, "pc back on the svc");
    }
    v.wait_for(DONE, 1);
    assert_eq!(v.get(RESULT), 0, "the live victim's sleep completed");
    assert!(
        v.get(VALUE) >= NAP.as_nanos() as u64,
        "slept the whole time"
    );
}

/// The x86_64 restart rules on hand-made register blocks (the victims above
/// only reach -ERESTARTSYS and -ERESTART_RESTARTBLOCK).
#[cfg(target_arch = "x86_64")]
#[test]
fn syscall_restart_rules_for_every_restart_code() {
    use crest::dump::core::resolve_syscall_restart;
    let regs = |rax: i64, orig: i64| {
        let mut g = vec![0u8; 216];
        g[80..88].copy_from_slice(&rax.to_le_bytes());
        g[120..128].copy_from_slice(&orig.to_le_bytes());
        g[128..136].copy_from_slice(&0x1000u64.to_le_bytes());
        g
    };
    let out = |g: &[u8]| (word(g, 10) as i64, word(g, 15) as i64, word(g, 16));
    for code in [512, 513, 514] {
        let mut g = regs(-code, 7);
        assert!(resolve_syscall_restart(&mut g));
        assert_eq!(out(&g), (7, -1, 0x0ffe), "-{code}: the call again");
    }
    let mut g = regs(-516, 35);
    assert!(resolve_syscall_restart(&mut g));
    assert_eq!(out(&g), (-4, -1, 0x1000), "restart block: EINTR");
    for (rax, orig) in [(-4, 7), (3, 0), (-512, -1), (-515, 7)] {
        let mut g = regs(rax, orig);
        assert!(!resolve_syscall_restart(&mut g));
        assert_eq!(out(&g), (rax, orig, 0x1000), "{rax}/{orig} kept");
    }
}
