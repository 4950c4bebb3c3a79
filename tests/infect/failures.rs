//! Failure paths: targets crest must refuse (with a clear reason, and
//! the target unharmed), and injections that fail half-way or a parasite
//! that fails inside the target, after which the cure must still restore
//! registers, maps and fds exactly.

use std::time::Duration;

use crest::blob::proto::CMD_ABORT;
use crest::infect::{InjectStep, Parasite, Release, seize};
use crest::sys::ptrace::ptrace_getregs;

use crate::victim::{self, COUNTER, FAILURES, Mode, Victim};
use crate::{SEC, fds, maps};

fn seize_error(pid: i32) -> String {
    seize(pid).expect_err("seize must refuse").to_string()
}

#[test]
fn refuses_a_pid_that_does_not_exist() {
    // SAFETY: the child exits at once; we reap it, so its pid is free.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: exit without running the harness's atexit handlers.
        unsafe { libc::_exit(0) };
    }
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    assert!(seize_error(pid).contains("no such process"));
    assert!(seize_error(-5).contains("not a valid pid"));
}

#[test]
fn refuses_a_zombie() {
    // SAFETY: as above, but the child stays unreaped for a while.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: as above.
        unsafe { libc::_exit(0) };
    }
    while victim::state_of(pid) != 'Z' {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(seize_error(pid).contains("zombie"));
    let mut status = 0;
    // SAFETY: reaping our own child; its exit status proves it was unharmed.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
}

#[test]
fn refuses_an_already_traced_task_and_leaves_it_alone() {
    let v = Victim::spawn(Mode::Busy);
    crest::sys::ptrace::ptrace_seize(v.pid, 0).unwrap();
    // SAFETY: gettid has no arguments.
    let me = unsafe { libc::gettid() };
    let err = seize_error(v.pid);
    assert!(
        err.contains(&format!("already traced by pid {me}")),
        "{err}"
    );
    // A seized, running tracee must stop before it can be detached.
    crest::sys::ptrace::ptrace_interrupt(v.pid).unwrap();
    crest::sys::process::wait4(v.pid, crest::sys::process::__WALL).unwrap();
    crest::sys::ptrace::ptrace_detach(v.pid).unwrap();
    assert!(v.progresses(COUNTER, SEC));
}

#[test]
fn refuses_crest_itself_and_its_ancestors() {
    let me = crest::sys::process::getpid();
    assert!(seize_error(me).contains("crest itself"));
    let parent = crest::sys::process::getppid();
    assert!(seize_error(parent).contains("an ancestor of crest"));
    assert!(seize_error(2).contains("kernel thread"));
}

/// Injection stopped after every step: the error comes back, the cure
/// leaves registers, maps and fds as they were.
#[test]
fn a_failed_injection_is_cured_at_every_step() {
    let v = Victim::spawn(Mode::Busy);
    let (maps0, fds0) = (maps(v.pid), fds(v.pid));
    for step in [
        InjectStep::MemfdCreated,
        InjectStep::Mapped,
        InjectStep::FdClosed,
        InjectStep::SocketPair,
        InjectStep::SocketTaken,
        InjectStep::DaemonStarted,
    ] {
        let seized = seize(v.pid).unwrap();
        let regs0 = ptrace_getregs(v.pid).unwrap();
        let err = Parasite::inject_failing_after(&seized, step).expect_err("the hook fails");
        assert!(err.to_string().contains("test hook"), "{err}");
        assert_eq!(ptrace_getregs(v.pid).unwrap(), regs0, "after {step:?}");
        assert_eq!(
            (maps(v.pid), fds(v.pid)),
            (maps0.clone(), fds0.clone()),
            "after {step:?}"
        );
        drop(seized);
        assert!(v.progresses(COUNTER, SEC), "after {step:?}");
    }
    assert_eq!(v.get(FAILURES), 0);
}

/// A command the parasite refuses, and one that crashes it (SIGILL from
/// its panic handler): both are errors, and the cure still restores all.
#[test]
fn a_refused_or_crashing_command_is_cured() {
    let v = Victim::spawn(Mode::Busy);
    let (maps0, fds0) = (maps(v.pid), fds(v.pid));
    let seized = seize(v.pid).unwrap();
    let regs0 = ptrace_getregs(v.pid).unwrap();
    let mut p = Parasite::inject(&seized).unwrap();
    let err = p
        .command(0xdead, &[], 0)
        .expect_err("unknown command")
        .to_string();
    assert!(err.contains("EINVAL"), "{err}");
    assert_eq!(p.getpid().unwrap().pid, v.pid, "the parasite still works");
    let err = p.command(CMD_ABORT, &[], 0).expect_err("crash").to_string();
    assert!(err.contains(&format!("signal {}", libc::SIGILL)), "{err}");
    let err = p.getpid().expect_err("the daemon is gone").to_string();
    assert!(err.contains("daemon is not running"), "{err}");
    p.cure().expect("cure after a crash");
    assert_eq!(ptrace_getregs(v.pid).unwrap(), regs0);
    seized.release(Release::Resume).unwrap();
    assert_eq!((maps(v.pid), fds(v.pid)), (maps0, fds0));
    assert!(v.progresses(COUNTER, SEC));
    assert_eq!(v.get(FAILURES), 0);
}
