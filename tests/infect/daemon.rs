//! The parasite's daemon mode: leader commands go over the socket to one
//! blob start, per-thread commands run beside it, and every way the daemon
//! can end early (a crash inside a command, the target killed, crest's
//! socket gone) is an error after which the cure restores all. Ground
//! truth: /proc/PID/fd and /proc/PID/syscall of the victim, the registers
//! read with a plain PTRACE_GETREGSET, maps, and the victim's counters.

use std::time::{Duration, Instant};

use crest::blob::proto::{CMD_GETPID, GetPid};
use crest::infect::{Parasite, Release, seize};
use crest::sys::ptrace::ptrace_getregs;

use crate::victim::{COUNTER, FAILURES, Mode, THREAD0, THREADS, Victim};
use crate::{SEC, fd_link, fds, maps};

/// /proc/PID/syscall of the leader: "NR ARG0 ..." while it is blocked in
/// a system call.
fn leader_syscall(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default()
}

/// Waits until the leader sits in recvfrom on `fd`: the daemon waiting
/// for crest's next command.
fn wait_in_recvfrom(pid: i32, fd: u64) {
    let want = format!("{} {fd:#x} ", libc::SYS_recvfrom);
    let deadline = Instant::now() + SEC;
    while !leader_syscall(pid).starts_with(&want) {
        assert!(
            Instant::now() < deadline,
            "the leader is not in recvfrom on fd {fd}: {}",
            leader_syscall(pid)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_thousand_commands_run_over_one_daemon_start() {
    let v = Victim::spawn(Mode::Busy);
    let (maps0, fds0) = (maps(v.pid), fds(v.pid));
    let seized = seize(v.pid).unwrap();
    let regs0 = ptrace_getregs(v.pid).unwrap();
    let mut p = Parasite::inject(&seized).unwrap();
    let sock = p.daemon_fd().expect("daemon socket");
    assert!(fd_link(v.pid, sock).starts_with("socket:["));
    assert_eq!(p.blob_starts(), 1, "the daemon's start");
    wait_in_recvfrom(v.pid, sock);
    for i in 0..1000 {
        let got = p.getpid().unwrap_or_else(|e| panic!("command {i}: {e}"));
        assert_eq!(
            got,
            GetPid {
                pid: v.pid,
                tid: v.pid
            }
        );
    }
    assert_eq!(p.blob_starts(), 1, "no start per command");
    wait_in_recvfrom(v.pid, sock);
    p.cure().unwrap();
    assert_eq!(ptrace_getregs(v.pid).unwrap(), regs0);
    seized.release(Release::Resume).unwrap();
    assert_eq!(fds(v.pid), fds0, "the socket end is gone after the cure");
    assert_eq!(maps(v.pid), maps0);
    assert!(v.progresses(COUNTER, SEC));
    assert_eq!(v.get(FAILURES), 0);
}

/// Commands in the leader (over the socket) and in another thread (trap
/// mode, its own stack) alternate: each answers for its own thread, and
/// the daemon is not disturbed by the thread runs.
#[test]
fn thread_commands_interleave_with_the_daemon() {
    let v = Victim::spawn(Mode::Threads(2));
    v.wait_for(THREADS, 2);
    for i in 0..2 {
        v.wait_for(THREAD0 + i, 1);
    }
    let seized = seize(v.pid).unwrap();
    let tid = seized.threads()[1];
    let regs0 = ptrace_getregs(tid).unwrap();
    let mut p = Parasite::inject(&seized).unwrap();
    for _ in 0..100 {
        let r = p.command_in(tid, CMD_GETPID, &[], 8).unwrap();
        let got = i32::from_ne_bytes([r[4], r[5], r[6], r[7]]);
        assert_eq!(got, tid, "answered in the thread");
        assert_eq!(p.getpid().unwrap().tid, v.pid, "answered in the leader");
    }
    assert_eq!(
        p.blob_starts(),
        101,
        "the daemon once, the thread per command"
    );
    assert_eq!(ptrace_getregs(tid).unwrap(), regs0);
    p.cure().unwrap();
    seized.release(Release::Resume).unwrap();
    for i in 0..2 {
        assert!(v.progresses(THREAD0 + i, SEC));
    }
    assert_eq!(v.get(FAILURES), 0);
}

/// crest loses its end of the socket: the daemon sees EOF, closes its own
/// end and stops on its trap; commands fail clearly, the cure restores all.
#[test]
fn crest_losing_its_socket_ends_the_daemon_and_the_cure_restores_all() {
    let v = Victim::spawn(Mode::Busy);
    let (maps0, fds0) = (maps(v.pid), fds(v.pid));
    let seized = seize(v.pid).unwrap();
    let regs0 = ptrace_getregs(v.pid).unwrap();
    let mut p = Parasite::inject(&seized).unwrap();
    let sock = p.daemon_fd().unwrap();
    p.close_socket();
    // The daemon closes its end when it sees EOF.
    let deadline = Instant::now() + SEC;
    while fds(v.pid).contains(&sock.to_string()) {
        assert!(Instant::now() < deadline, "the daemon kept its socket end");
        std::thread::sleep(Duration::from_millis(1));
    }
    let err = p.getpid().expect_err("no socket").to_string();
    assert!(err.contains("socket"), "{err}");
    p.cure().expect("cure");
    assert_eq!(ptrace_getregs(v.pid).unwrap(), regs0);
    seized.release(Release::Resume).unwrap();
    assert_eq!((maps(v.pid), fds(v.pid)), (maps0, fds0));
    assert!(v.progresses(COUNTER, SEC));
    assert_eq!(v.get(FAILURES), 0);
}

/// The target is killed while the daemon waits: the next command is an
/// error naming the end (not a hang), and nothing is left behind.
#[test]
fn a_target_killed_while_the_daemon_runs_is_an_error_not_a_hang() {
    let mut v = Victim::spawn(Mode::Busy);
    let seized = seize(v.pid).unwrap();
    let mut p = Parasite::inject(&seized).unwrap();
    assert_eq!(p.getpid().unwrap().pid, v.pid);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(v.pid, libc::SIGKILL) };
    let t0 = Instant::now();
    let err = p.getpid().expect_err("the target is gone").to_string();
    assert!(err.contains("ended") && err.contains("Killed(9)"), "{err}");
    assert!(p.cure().is_err(), "nothing left to cure in a dead target");
    drop(seized);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    // crest's wait4 on the leader may have reaped our child already (it
    // is the tracer and, here, the parent too).
    let mut status = 0;
    // SAFETY: reaping our own child.
    let r = unsafe { libc::waitpid(v.pid, &mut status, 0) };
    v.mark_reaped();
    if r == v.pid {
        assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL);
    } else {
        let e = std::io::Error::last_os_error().raw_os_error();
        assert_eq!((r, e), (-1, Some(libc::ECHILD)));
    }
    assert!(
        !std::path::Path::new(&format!("/proc/{}", v.pid)).exists(),
        "the victim is gone"
    );
}
