//! Seizing, remote system calls and the parasite, against real victims
//! (tests/infect/victim.rs). Ground truth comes from outside crest: the
//! victim's own counters and self-check in a shared page, /proc/PID/maps,
//! /proc/PID/fd, /proc/PID/status, /proc/PID/syscall, the registers read
//! with a plain PTRACE_GETREGSET, and the parent's wait status.

#[path = "infect/daemon.rs"]
mod daemon;
#[path = "infect/failures.rs"]
mod failures;
#[path = "infect/victim.rs"]
mod victim;

use std::time::Duration;

use crest::blob::proto::GetPid;
use crest::infect::{Parasite, Release, seize};
use crest::sys::ptrace::ptrace_getregs;
use victim::{
    COUNTER, DONE, FAILURES, Mode, RESULT, SIGNALS, SLEPT_NS, THREAD0, THREADS, VALUE, Victim,
};

const SEC: Duration = Duration::from_secs(3);

fn maps(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap()
}

/// The blocked mask of every thread, from /proc (independent of ptrace).
fn sigblk(pid: i32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    let mut v: Vec<String> = tasks
        .map(|t| {
            let s = std::fs::read_to_string(t.unwrap().path().join("status")).unwrap();
            s.lines()
                .find(|l| l.starts_with("SigBlk"))
                .unwrap()
                .to_string()
        })
        .collect();
    v.sort();
    v
}

fn fds(pid: i32) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn fd_link(pid: i32, fd: u64) -> String {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
    link.into_os_string().into_string().unwrap()
}

/// Seizes, injects, asks the parasite who it is, cures, releases; checks
/// registers, maps and fds around it. Returns the seized stop signal.
fn infect_once(pid: i32) -> Option<i32> {
    let (maps0, fds0, blk0) = (maps(pid), fds(pid), sigblk(pid));
    let seized = seize(pid).expect("seize");
    let stop = seized.stop_signal();
    let regs0: Vec<_> = seized
        .threads()
        .iter()
        .map(|&t| ptrace_getregs(t).unwrap())
        .collect();
    let mut p = Parasite::inject(&seized).expect("inject");
    assert!(
        maps(pid).contains("/memfd:crest"),
        "the blob is mapped in the victim"
    );
    let sock = p.daemon_fd().expect("the daemon's socket end");
    let mut with_sock = fds0.clone();
    with_sock.push(sock.to_string());
    with_sock.sort();
    assert_eq!(
        fds(pid),
        with_sock,
        "the memfd's fd is closed; only the daemon's socket end is added"
    );
    assert!(fd_link(pid, sock).starts_with("socket:["));
    assert_eq!(p.getpid().expect("CMD_GETPID"), GetPid { pid, tid: pid });
    p.cure().expect("cure");
    let regs1: Vec<_> = seized
        .threads()
        .iter()
        .map(|&t| ptrace_getregs(t).unwrap())
        .collect();
    assert_eq!(regs0, regs1, "registers of every thread as before");
    seized.release(Release::Resume).expect("release");
    assert_eq!(maps(pid), maps0, "maps as before");
    assert_eq!(fds(pid), fds0, "fds as before");
    assert_eq!(sigblk(pid), blk0, "blocked signals as before");
    stop
}

#[test]
fn injection_alone_leaves_a_busy_victim_unaware() {
    let v = Victim::spawn(Mode::Busy);
    assert!(v.progresses(COUNTER, SEC));
    assert_eq!(infect_once(v.pid), None);
    assert!(
        v.progresses(COUNTER, SEC),
        "the victim runs on after release"
    );
    assert_eq!(v.get(FAILURES), 0, "the victim's self-check passes");
    assert_ne!(v.state(), 'T', "not stopped");
}

#[test]
fn victim_in_nanosleep_completes_its_sleep() {
    let v = Victim::spawn(Mode::Nanosleep(Duration::from_millis(700)));
    v.wait_in_syscall(libc::SYS_nanosleep);
    infect_once(v.pid);
    v.wait_for(DONE, 1);
    assert_eq!(v.get(RESULT), 0, "nanosleep returned 0, not -EINTR");
    let slept = Duration::from_nanos(v.get(SLEPT_NS));
    assert!(slept >= Duration::from_millis(700), "slept only {slept:?}");
    assert!(slept < Duration::from_millis(700) + SEC, "slept {slept:?}");
    assert!(v.progresses(COUNTER, SEC));
    assert_eq!(v.get(FAILURES), 0);
}

#[test]
fn victim_blocked_in_read_gets_the_data_written_later() {
    let (r, w) = crest::sys::fd::pipe2(crest::sys::fd::O_CLOEXEC).unwrap();
    let v = Victim::spawn(Mode::ReadPipe(r));
    v.wait_in_syscall(libc::SYS_read);
    infect_once(v.pid);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(v.get(DONE), 0, "read must still block after the cure");
    let value = 0x1122_3344_5566_7788u64;
    crest::sys::fd::write(std::os::fd::AsFd::as_fd(&w), &value.to_ne_bytes()).unwrap();
    v.wait_for(DONE, 1);
    assert_eq!(v.get(RESULT), 8, "read returned the 8 bytes");
    assert_eq!(v.get(VALUE), value);
    assert!(v.progresses(COUNTER, SEC));
}

/// Stops `v` with `sig` as its parent would see it, infects and releases
/// it; it must stay stopped with no thread running, its parent must get no
/// new wait event, and SIGCONT must wake every thread.
fn stopped_victim_case(v: &Victim, sig: i32, threads: usize) {
    let mut status = 0;
    // SAFETY: plain signal and wait on our own child.
    unsafe {
        libc::kill(v.pid, sig);
        assert_eq!(libc::waitpid(v.pid, &mut status, libc::WUNTRACED), v.pid);
    }
    assert!(libc::WIFSTOPPED(status) && libc::WSTOPSIG(status) == sig);
    assert_eq!(v.state(), 'T');
    let slots: Vec<usize> = std::iter::once(COUNTER)
        .chain((0..threads).map(|i| THREAD0 + i))
        .collect();
    let counts: Vec<u64> = slots.iter().map(|&s| v.get(s)).collect();
    assert_eq!(infect_once(v.pid), Some(sig));
    assert_eq!(v.state(), 'T', "still stopped after release");
    std::thread::sleep(Duration::from_millis(200));
    let now: Vec<u64> = slots.iter().map(|&s| v.get(s)).collect();
    assert_eq!(now, counts, "no thread ran");
    let flags = libc::WNOHANG | libc::WUNTRACED | libc::WCONTINUED;
    // SAFETY: as above.
    let r = unsafe { libc::waitpid(v.pid, &mut status, flags) };
    assert_eq!(r, 0, "no new wait event");
    // SAFETY: as above.
    unsafe { libc::kill(v.pid, libc::SIGCONT) };
    for s in slots {
        assert!(v.progresses(s, SEC), "slot {s} continues on SIGCONT");
    }
    assert_eq!(v.get(FAILURES), 0);
}

#[test]
fn stopped_victim_stays_stopped_and_its_parent_sees_nothing() {
    let v = Victim::spawn(Mode::Busy);
    stopped_victim_case(&v, libc::SIGSTOP, 0);
}

#[test]
fn tstp_stopped_threaded_victim_stays_stopped() {
    let v = Victim::spawn(Mode::Threads(2));
    v.wait_for(THREADS, 2);
    for i in 0..2 {
        v.wait_for(THREAD0 + i, 1);
    }
    v.wait_for(COUNTER, 1);
    stopped_victim_case(&v, libc::SIGTSTP, 2);
}

#[test]
fn all_threads_of_a_threaded_victim_are_seized_and_continue() {
    let v = Victim::spawn(Mode::Threads(3));
    v.wait_for(THREADS, 3);
    // Each thread counts once its start-up (stack, malloc arena) is over,
    // so the victim's maps no longer change by themselves.
    for i in 0..3 {
        v.wait_for(THREAD0 + i, 1);
    }
    v.wait_for(COUNTER, 1);
    let tasks = std::fs::read_dir(format!("/proc/{}/task", v.pid))
        .unwrap()
        .count();
    assert_eq!(tasks, 4);
    {
        let seized = seize(v.pid).unwrap();
        assert_eq!(seized.threads().len(), 4);
        assert_eq!(seized.threads()[0], v.pid, "the leader first");
        let c = v.get(THREAD0);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(v.get(THREAD0), c, "a seized thread does not run");
    }
    infect_once(v.pid);
    for i in 0..3 {
        assert!(v.progresses(THREAD0 + i, SEC), "thread {i} continues");
    }
    assert!(v.progresses(COUNTER, SEC));
    assert_eq!(v.get(FAILURES), 0);
}

#[test]
fn a_dropped_parasite_and_seize_cure_and_release() {
    let v = Victim::spawn(Mode::Busy);
    let maps0 = maps(v.pid);
    {
        let seized = seize(v.pid).unwrap();
        let _p = Parasite::inject(&seized).unwrap();
        assert_ne!(maps(v.pid), maps0);
    }
    assert_eq!(maps(v.pid), maps0);
    assert!(v.progresses(COUNTER, SEC));
}

#[test]
fn release_kill_ends_the_victim() {
    let mut v = Victim::spawn(Mode::Threads(2));
    v.wait_for(THREADS, 2);
    seize(v.pid).unwrap().release(Release::Kill).unwrap();
    let mut status = 0;
    // SAFETY: reaping our own child.
    assert_eq!(unsafe { libc::waitpid(v.pid, &mut status, 0) }, v.pid);
    v.mark_reaped();
    assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL);
}

#[test]
fn remote_syscall_returns_the_targets_answer() {
    let v = Victim::spawn(Mode::Busy);
    let seized = seize(v.pid).unwrap();
    let mut r = crest::infect::Remote::new(&seized, v.pid).unwrap();
    assert_eq!(
        r.syscall(libc::SYS_getpid as u64, [0; 6]).unwrap(),
        i64::from(v.pid)
    );
    assert_eq!(
        r.syscall(libc::SYS_close as u64, [9999, 0, 0, 0, 0, 0])
            .unwrap(),
        -i64::from(libc::EBADF)
    );
    r.restore().unwrap();
    drop(r);
    seized.release(Release::Resume).unwrap();
    assert!(v.progresses(COUNTER, SEC));
}

/// A signal sent while the parasite is in the target stays pending
/// (crest blocks all signals in the thread it runs) and reaches the
/// victim's handler exactly once after the cure.
#[test]
fn a_signal_sent_during_injection_is_delivered_after_cure() {
    let v = Victim::spawn(Mode::Busy);
    let seized = seize(v.pid).unwrap();
    let mut p = Parasite::inject(&seized).unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(v.pid, libc::SIGUSR1) };
    assert_eq!(
        p.getpid().unwrap().pid,
        v.pid,
        "the parasite is not disturbed"
    );
    p.cure().unwrap();
    assert_eq!(v.get(SIGNALS), 0, "not delivered while seized");
    seized.release(Release::Resume).unwrap();
    v.wait_for(SIGNALS, 1);
    assert!(v.progresses(COUNTER, SEC));
    assert_eq!(v.get(SIGNALS), 1, "delivered once");
    assert_eq!(v.get(FAILURES), 0);
}

/// SIGSTOP (which cannot be blocked) sent while the parasite works: the
/// command still completes, and the victim ends up stopped after release,
/// as the signal asked, then runs on SIGCONT.
#[test]
fn a_sigstop_during_injection_leaves_the_victim_stopped() {
    let v = Victim::spawn(Mode::Busy);
    let seized = seize(v.pid).unwrap();
    assert_eq!(seized.stop_signal(), None);
    let mut p = Parasite::inject(&seized).unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(v.pid, libc::SIGSTOP) };
    assert_eq!(p.getpid().unwrap().pid, v.pid);
    p.cure().unwrap();
    assert_eq!(seized.stop_signal(), Some(libc::SIGSTOP));
    seized.release(Release::Resume).unwrap();
    assert_eq!(v.state(), 'T');
    assert!(!v.progresses(COUNTER, Duration::from_millis(200)));
    // SAFETY: as above.
    unsafe { libc::kill(v.pid, libc::SIGCONT) };
    assert!(v.progresses(COUNTER, SEC));
    assert_eq!(v.get(FAILURES), 0);
}

/// A seccomp filter that kills the victim on memfd_create: crest's
/// remote memfd_create still works (PTRACE_O_SUSPEND_SECCOMP), and the
/// filter is in force again after release.
#[test]
fn a_seccomp_filter_does_not_stop_the_injection() {
    let v = Victim::spawn(Mode::Seccomp);
    let status = || std::fs::read_to_string(format!("/proc/{}/status", v.pid)).unwrap();
    assert!(
        status().contains("Seccomp:\t2"),
        "the victim runs under a filter"
    );
    infect_once(v.pid);
    assert!(
        v.progresses(COUNTER, SEC),
        "the victim survived memfd_create"
    );
    assert!(
        status().contains("Seccomp:\t2"),
        "the filter is still there"
    );
}

/// A victim that keeps creating and ending threads: threads that appear
/// or exit while crest seizes are handled, and the victim runs on.
#[test]
fn threads_that_come_and_go_during_the_seize() {
    let v = Victim::spawn(Mode::ThreadChurn);
    v.wait_for(THREADS, 10);
    for _ in 0..5 {
        let seized = seize(v.pid).unwrap();
        assert_eq!(seized.threads()[0], v.pid);
        let mut p = Parasite::inject(&seized).unwrap();
        assert_eq!(p.getpid().unwrap().pid, v.pid);
        p.cure().unwrap();
        seized.release(Release::Resume).unwrap();
        assert!(v.progresses(THREADS, SEC), "threads keep coming");
    }
    assert!(v.progresses(COUNTER, SEC));
    assert_eq!(v.get(FAILURES), 0);
}

/// A victim under a storm of signals (a thread of the test sends SIGUSR1
/// as fast as it can): each seize still reaches its stop, crest delivering
/// the signals that come first, and the signals reach the victim's handler
/// after the release.
#[test]
fn a_signal_storm_does_not_keep_the_seize_from_stopping() {
    let v = Victim::spawn(Mode::Busy);
    let pid = v.pid;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let storm = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // SAFETY: signalling our own child, which handles SIGUSR1.
                unsafe { libc::kill(pid, libc::SIGUSR1) };
            }
        })
    };
    v.wait_for(SIGNALS, 100);
    for round in 0..50 {
        let seized = seize(pid).unwrap_or_else(|e| panic!("round {round}: {e}"));
        seized.release(Release::Resume).unwrap();
    }
    let before = v.get(SIGNALS);
    assert!(v.progresses(SIGNALS, SEC), "signals are handled after");
    assert!(v.get(SIGNALS) > before);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    storm.join().unwrap();
    assert!(v.progresses(COUNTER, SEC));
    assert_eq!(v.get(FAILURES), 0);
}
