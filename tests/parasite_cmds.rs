//! The parasite's dump commands (CMD_DUMP_*) and per-thread commands
//! (`Parasite::command_in`), against a forked victim
//! (tests/parasite_cmds/victim.rs) that set every value itself and read it
//! back with its own system calls: that report, in a shared area, is the
//! ground truth, never crest's /proc parsers. After the cure and release
//! the victim checks itself (on SIGUSR1) that nothing it set changed, and
//! its timers must still fire.

#[path = "parasite_cmds/victim.rs"]
mod victim;

use crest::blob::proto::CMD_ABORT;
use crest::dump::parasite_state::{ParasiteState, apply_parasite_state, collect_parasite_state};
use crest::dump::{ProcessState, collect_process};
use crest::image::sigactions::Sigaction;
use crest::infect::{Parasite, Release, Seized, seize};
use crest::sys::ptrace::ptrace_getregs;
use victim::*;

const SA_RESTORER: u64 = 0x0400_0000;

fn maps(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap()
}

fn all_regs(seized: &Seized) -> Vec<crest::blob::regs::UserRegs> {
    seized
        .threads()
        .iter()
        .map(|&t| ptrace_getregs(t).unwrap())
        .collect()
}

/// Seizes and infects `v`, runs `f`, cures and releases; checks that the
/// registers of every thread and the maps are as before.
fn infected<T>(v: &Victim, f: impl FnOnce(&mut Parasite, &Seized) -> T) -> T {
    let maps0 = maps(v.pid);
    let seized = seize(v.pid).expect("seize");
    let regs0 = all_regs(&seized);
    let mut p = Parasite::inject(&seized).expect("inject");
    let out = f(&mut p, &seized);
    p.cure().expect("cure");
    assert_eq!(all_regs(&seized), regs0, "registers of every thread");
    seized.release(Release::Resume).expect("release");
    assert_eq!(maps(v.pid), maps0, "maps as before");
    out
}

/// The victim after the dump: unaware, its timers and handlers live.
fn runs_on_unaware(v: &Victim) {
    assert!(v.progresses(COUNTER, 10), "main thread runs");
    assert!(v.progresses(THREAD_COUNTER, 10), "second thread runs");
    assert!(v.progresses(ALRMS, 2), "ITIMER_REAL still fires");
    assert!(
        v.progresses(TIMER_A_SIGNALS, 2),
        "the POSIX timer still fires"
    );
    v.self_check();
    v.signal(libc::SIGTERM);
    assert!(v.progresses(COUNTER, 10), "SIGTERM is still ignored");
    v.self_check();
}

fn collect(v: &Victim) -> (ProcessState, ParasiteState) {
    let mut state = collect_process(v.pid as u32).expect("collect_process");
    let ids: Vec<i32> = state.task.posix_timers.iter().map(|t| t.id).collect();
    let ps = infected(v, |p, seized| {
        collect_parasite_state(p, seized, &ids).expect("collect_parasite_state")
    });
    apply_parasite_state(&mut state, &ps).expect("apply");
    (state, ps)
}

/// The sigactions record must be the victim's raw table, without the
/// all-zero (initial) entries.
fn check_sigactions(v: &Victim, ps: &ParasiteState) {
    let want: Vec<Sigaction> = (1..=64usize)
        .map(|sig| (sig, v.action(sig)))
        .filter(|(_, a)| *a != [0; 4])
        .map(|(sig, a)| Sigaction {
            signo: sig as u32,
            handler: a[0],
            flags: a[1],
            restorer: a[2],
            mask: a[3],
        })
        .collect();
    assert_eq!(ps.sigactions.actions, want);
    let find = |sig: i32| {
        *ps.sigactions
            .actions
            .iter()
            .find(|a| a.signo == sig as u32)
            .expect("an action")
    };
    let usr1 = find(libc::SIGUSR1);
    assert_eq!(usr1.handler, v.get(USR1_HANDLER));
    let flags = (libc::SA_RESTART | libc::SA_SIGINFO) as u64;
    assert_eq!(usr1.flags & !SA_RESTORER, flags);
    assert_eq!(usr1.mask, USR1_MASK);
    assert_eq!(find(libc::SIGTERM).handler, libc::SIG_IGN as u64);
}

fn check_timers(v: &Victim, state: &ProcessState, ps: &ParasiteState) {
    let it = ps.itimers;
    assert_eq!(it.real.interval_ns, REAL_NS);
    // A periodic ITIMER_REAL that expired while the victim was seized
    // reads 0 until its SIGALRM is taken (the kernel re-arms it then): on a
    // slow machine (the qemu lanes) the dump can land in that window, and
    // the signal may have been raised after `state` read the pending set.
    let alrm_pending = state.shared_pending & (1 << (libc::SIGALRM - 1)) != 0;
    assert!(
        it.real.value_ns <= REAL_NS,
        "{it:?}, SIGALRM pending: {alrm_pending}"
    );
    assert_eq!(it.virt.interval_ns, VIRT_INTERVAL_NS);
    // set_cpu_itimer adds one tick (at most 10 ms) to a CPU timer's value.
    let virt_max = VIRT_VALUE_NS + 10_000_000;
    assert!(
        it.virt.value_ns > 0 && it.virt.value_ns <= virt_max,
        "{it:?}"
    );
    assert_eq!((it.prof.interval_ns, it.prof.value_ns), (0, 0));
    assert_eq!(state.task.itimers, it, "applied");
    let timer = |id: u64| {
        let t = state.task.posix_timers.iter().find(|t| t.id as u64 == id);
        *t.expect("the timer is in the state")
    };
    let a = timer(v.get(TIMER_A));
    assert_eq!(a.spec.interval_ns, TIMER_A_NS);
    assert!(
        a.spec.value_ns > 0 && a.spec.value_ns <= TIMER_A_NS,
        "{a:?}"
    );
    let b = timer(v.get(TIMER_B));
    assert_eq!(b.spec.interval_ns, TIMER_B_NS);
    let overrun = v.get(TIMER_B_OVERRUN);
    assert!(overrun > 5, "the victim saw an overrun of {overrun}");
    assert_eq!(b.overrun as u64, overrun, "timer_getoverrun of timer B");
    assert_eq!(ps.posix_timers.len(), state.task.posix_timers.len());
}

fn check_misc(v: &Victim, state: &ProcessState, ps: &ParasiteState) {
    let m = ps.misc;
    assert_eq!((m.umask as u64, v.get(UMASK)), (UMASK_SET, UMASK_SET));
    assert_eq!(m.securebits as u64, v.get(SECUREBITS));
    assert_eq!(m.securebits as u64, SECBITS_SET);
    assert_eq!(m.personality as u64, v.get(PERSONALITY));
    assert_eq!(m.personality as u64, PERSONALITY_SET);
    assert_eq!((m.dumpable as u64, v.get(DUMPABLE)), (0, 0));
    assert_eq!(m.pdeath_signal as u64, v.get(PDEATH));
    assert_eq!(m.pdeath_signal, libc::SIGHUP as u32);
    assert!(m.child_subreaper && v.get(SUBREAPER) == 1);
    assert!(m.thp_disable && v.get(THP) == 1);
    assert!(m.no_new_privs && v.get(NNP) == 1);
    assert_eq!(ps.brk, v.get(BRK));
    assert_ne!(ps.brk % 4096, 0, "the exact brk, not a page boundary");
    let (misc, creds) = (&state.task.misc, &state.task.creds);
    assert_eq!(
        (misc.umask, misc.dumpable, misc.pdeath_signal),
        (0o027, 0, 1)
    );
    assert!(misc.child_subreaper && misc.thp_disable && creds.no_new_privs);
    assert_eq!(creds.securebits as u64, SECBITS_SET);
    assert_eq!(state.mm.mm.brk.1, ps.brk, "applied");
}

fn check_threads(v: &Victim, ps: &ParasiteState) {
    let tids: Vec<u32> = ps.threads.iter().map(|t| t.tid).collect();
    assert_eq!(tids, [v.pid as u32, v.get(THREAD_TID) as u32]);
    let (main, thread) = (ps.threads[0], ps.threads[1]);
    let ss = |at: usize| (v.get(at), v.get(at + 1), v.get(at + 2) as u32 as i32);
    let got = |t: &crest::dump::parasite_state::ThreadState| {
        (t.altstack.sp, t.altstack.size, t.altstack.flags)
    };
    assert_eq!(got(&main), ss(MAIN_SS));
    assert_eq!(main.altstack.size, MAIN_SS_SIZE as u64);
    assert_eq!(main.clear_tid, v.get(MAIN_CLEAR_TID));
    assert_eq!(got(&thread), ss(THREAD_SS));
    assert_eq!(
        (thread.altstack.size, thread.altstack.flags),
        (THREAD_SS_SIZE as u64, SS_AUTODISARM)
    );
    assert_eq!(thread.clear_tid, v.get(THREAD_CLEAR_TID), "set_tid_address");
}

#[test]
fn dump_commands_read_what_the_victim_set_and_it_runs_on() {
    let v = Victim::spawn();
    let (state, ps) = collect(&v);
    check_sigactions(&v, &ps);
    check_timers(&v, &state, &ps);
    check_misc(&v, &state, &ps);
    check_threads(&v, &ps);
    assert_eq!(state.task.sigactions, ps.sigactions, "applied");
    runs_on_unaware(&v);
}

#[test]
fn a_command_crashing_in_a_second_thread_is_cured() {
    let v = Victim::spawn();
    let tid = v.get(THREAD_TID) as i32;
    infected(&v, |p, seized| {
        let regs0 = ptrace_getregs(tid).unwrap();
        let before = p.dump_thread(tid).expect("CMD_DUMP_THREAD");
        let err = p.command_in(tid, CMD_ABORT, &[], 0).expect_err("crash");
        let err = err.to_string();
        assert!(err.contains(&format!("signal {}", libc::SIGILL)), "{err}");
        assert!(err.contains(&format!("thread {tid}")), "{err}");
        assert_eq!(ptrace_getregs(tid).unwrap(), regs0, "restored at once");
        assert_eq!(p.dump_thread(tid).expect("after the crash"), before);
        assert_eq!(p.getpid().expect("leader still works").pid, v.pid);
        assert!(seized.threads().contains(&tid));
    });
    runs_on_unaware(&v);
}

#[test]
fn refusals_and_batches_leave_the_parasite_working() {
    let v = Victim::spawn();
    infected(&v, |p, _| {
        let a = v.get(TIMER_A) as i32;
        // More ids than one command carries: sent in two commands.
        let many = p.dump_posix_timers(&[a; 70]).expect("70 timers");
        assert_eq!(many.len(), 70);
        assert!(many.iter().all(|t| t.id == a));
        assert!(many.iter().all(|t| t.interval.nsec as u64 == TIMER_A_NS));
        let err = p.dump_posix_timers(&[a, 99_999]).unwrap_err().to_string();
        assert!(
            err.contains("POSIX timer 99999") && err.contains("EINVAL"),
            "{err}"
        );
        let err = p.command_in(i32::MAX - 1, CMD_ABORT, &[], 0).unwrap_err();
        assert!(err.to_string().contains("is not seized"), "{err}");
        // The per-thread command in the leader goes through the leader's
        // own remote.
        let t = p.dump_thread(v.pid).expect("leader");
        assert_eq!(t.clear_tid, v.get(MAIN_CLEAR_TID));
    });
    runs_on_unaware(&v);
}

#[test]
fn a_command_started_without_waiting_is_answered_in_step() {
    let v = Victim::spawn();
    infected(&v, |p, _| {
        use crest::blob::proto::CMD_GETPID;
        let err = p.command_finish(8).expect_err("nothing sent yet");
        assert!(err.to_string().contains("no parasite command"), "{err}");
        p.command_start(CMD_GETPID, &[]).expect("sent");
        let r = p.command_finish(8).expect("answered");
        assert_eq!(i32::from_ne_bytes([r[0], r[1], r[2], r[3]]), v.pid);
        // An answer never collected is dropped by the next command, which
        // gets its own answer; the cure after it works as well.
        p.command_start(CMD_GETPID, &[]).expect("sent");
        let t = p.dump_thread(v.pid).expect("the next command");
        assert_eq!(t.clear_tid, v.get(MAIN_CLEAR_TID));
        p.command_start(CMD_GETPID, &[])
            .expect("sent, left for the cure");
    });
    runs_on_unaware(&v);
}

fn state_of(pid: i32) -> char {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find_map(|l| l.strip_prefix("State:")).unwrap();
    line.trim().chars().next().unwrap()
}

#[test]
fn a_stopped_victim_is_read_in_every_thread_and_stays_stopped() {
    let v = Victim::spawn();
    let mut status = 0;
    v.signal(libc::SIGSTOP);
    // SAFETY: waiting for our own child's stop.
    let r = unsafe { libc::waitpid(v.pid, &mut status, libc::WUNTRACED) };
    assert!(r == v.pid && libc::WIFSTOPPED(status));
    let (state, ps) = collect(&v);
    check_threads(&v, &ps);
    check_misc(&v, &state, &ps);
    assert_eq!(state_of(v.pid), 'T', "still stopped after release");
    let counts = (v.get(COUNTER), v.get(THREAD_COUNTER));
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(
        (v.get(COUNTER), v.get(THREAD_COUNTER)),
        counts,
        "no thread ran"
    );
    v.signal(libc::SIGCONT);
    runs_on_unaware(&v);
}
