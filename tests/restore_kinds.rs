//! Round trips of the fd kinds whose objects crest recreates from the image
//! (memfd with its mappings, FIFOs) in the zdtm style of
//! tests/restore_fdkinds.rs: each victim (tests/restore_kinds/*.rs) makes
//! its objects, the test dumps it (`dump -R`, or dump then `crest restore`),
//! and after go the victim checks that every object behaves as before:
//! a memfd keeps its name, size, holes, seals, contents, flags and
//! positions, and a write through its fd shows in its shared mapping (one
//! object, not two); a FIFO's queued bytes are read back.
//!
//! Each victim also runs without a checkpoint (the baseline). The refusal
//! tests check that kinds crest cannot dump are refused at dump, naming
//! the fd and its kind, the target left running.

// A victim's failure reason lives inline in the Err (Msg, 240 bytes):
// a forked victim must not allocate, so it cannot be boxed.
#![allow(clippy::result_large_err)]

// ensure! (a failed check in a victim) and victim_tests! come from here.
#[macro_use]
mod common;
#[path = "restore_kinds/fifo.rs"]
mod fifo;
#[path = "restore_kinds/ghost.rs"]
mod ghost;
#[path = "restore_kinds/lock.rs"]
mod lock;
#[path = "restore_kinds/memfd.rs"]
mod memfd;
#[path = "restore_kinds/pty.rs"]
mod pty;
#[path = "restore_fdkinds/raw.rs"]
#[allow(dead_code)]
mod raw;
#[path = "restore_kinds/refuse.rs"]
mod refuse;
#[path = "restore_kinds/sealed.rs"]
mod sealed;
#[path = "restore_kinds/shared.rs"]
mod shared;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::roundtrip::{
    Mode, dump, go_and_pass, refused, refused_with, restore_and_check, run, run_with, stderr,
    wait_gone,
};
use common::victim::{Child, Verdict, Victim, crest, pid_gone, scratch};

victim_tests!(memfd_victim, memfd, "kinds-");
victim_tests!(ghost_victim, ghost, "kinds-");
victim_tests!(fifo_victim, fifo, "kinds-");
victim_tests!(pty_victim, pty, "kinds-");
// memfds only mapped (fds closed) keep their seals, size and mode.
victim_tests!(sealed_victim, sealed, "kinds-");

/// The lock victim's modes, its dumps with --file-locks.
mod lock_victim {
    use super::*;
    #[test]
    fn baseline() {
        run(
            "kinds-lock-base",
            lock::prepare,
            lock::victim,
            Mode::Baseline,
        );
    }
    #[test]
    fn survives_dump_leave_running() {
        let (p, v) = (lock::prepare, lock::victim);
        run_with("kinds-lock-R", p, v, Mode::LeaveRunning, &["--file-locks"]);
    }
    #[test]
    fn round_trip() {
        let (p, v) = (lock::prepare, lock::victim);
        run_with("kinds-lock-rt", p, v, Mode::RoundTrip, &["--file-locks"]);
    }
    /// Without --file-locks a held lock is refused by fd, kind and option.
    #[test]
    fn refused_without_file_locks() {
        refused_with(
            "kinds-lock-refused",
            lock::prepare,
            lock::victim,
            &[],
            &["fd 32 of pid", "holds a write FLOCK lock", "--file-locks"],
        );
    }
}

/// A deleted file bigger than --ghost-limit is refused, naming the mapping
/// (checked before the fds) or fd,
/// the path and the option; the victim runs on.
#[test]
fn ghost_over_the_limit_is_refused() {
    refused_with(
        "kinds-ghost-limit",
        ghost::prepare,
        ghost::victim,
        &["--ghost-limit", "64K"],
        &[
            "of pid",
            "is the deleted file",
            "/gone` of 65636 bytes",
            "--ghost-limit",
        ],
    );
}

/// `crest show` names the new kinds.
#[test]
fn show_prints_the_new_fd_kinds() {
    for (name, prepare, body, want) in [
        (
            "kinds-show-memfd",
            memfd::prepare as fn(&Path),
            memfd::victim as fn(&Child) -> Verdict,
            "memfd name=crest-buf",
        ),
        (
            "kinds-show-ghost",
            ghost::prepare,
            ghost::victim,
            "gone (deleted) size=65636",
        ),
    ] {
        let dir = scratch(name);
        prepare(&dir);
        let mut v = Victim::spawn(&dir, body);
        let img = dump(&v, &["-R"]);
        go_and_pass(&mut v);
        let out = crest(&["show", img.to_str().unwrap()]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(text.contains(want), "show lacks {want:?}:\n{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Each kind crest cannot dump is refused at dump, naming the fd, the pid
/// and the kind; the victim runs on with the object intact.
mod refusals {
    use super::*;

    fn check(name: &str, body: fn(&Child) -> Verdict, kind: &str) {
        refused(name, body, &["fd 30 of pid", kind, "cannot dump"]);
    }
    #[test]
    fn io_uring_is_refused() {
        check("kinds-no-uring", refuse::io_uring, "an io_uring instance");
    }
    #[test]
    fn perf_event_is_refused() {
        check("kinds-no-perf", refuse::perf_event, "a perf event");
    }
    #[test]
    fn userfaultfd_is_refused() {
        check("kinds-no-uffd", refuse::userfaultfd, "a userfaultfd");
    }
    #[test]
    fn pidfd_is_refused() {
        check("kinds-no-pidfd", refuse::pidfd, "a pidfd");
    }
    #[test]
    fn fanotify_is_refused() {
        check("kinds-no-fanotify", refuse::fanotify, "a fanotify instance");
    }
    #[test]
    fn hugetlb_memfd_is_refused() {
        check(
            "kinds-no-hugememfd",
            refuse::hugetlb_memfd,
            "the hugetlbfs memfd",
        );
    }
    #[test]
    fn bpf_map_is_refused() {
        check("kinds-no-bpf", refuse::bpf_map, "a bpf map");
    }
}

/// The parent/child victims of tests/restore_kinds/shared.rs, each as a
/// round trip: after restore a write by one process is seen by the other.
mod shared_between_processes {
    use super::*;
    #[test]
    fn a_memfd_shared_by_two_processes_round_trips_as_one_object() {
        shared_round_trip("kinds-shared-memfd", noop, shared::memfd);
    }
    #[test]
    fn a_deleted_file_shared_by_two_processes_round_trips_as_one_file() {
        shared_round_trip("kinds-shared-ghost", shared::prepare, shared::ghost);
    }
    #[test]
    fn a_fifo_open_file_shared_by_two_processes_round_trips_as_one_open_file() {
        let name = "kinds-shared-fifo";
        shared_round_trip(name, shared::prepare_fifo, shared::fifo);
    }
    #[test]
    fn a_pty_pair_split_between_two_processes_round_trips_as_one_pair() {
        shared_round_trip("kinds-shared-pty", noop, shared::pty);
    }
}

fn noop(_: &Path) {}

type SharedVictim = (&'static str, fn(&Path), fn(&Child) -> Verdict);

const SHARED: [SharedVictim; 4] = [
    ("memfd", noop, shared::memfd),
    ("ghost", shared::prepare, shared::ghost),
    ("fifo", shared::prepare_fifo, shared::fifo),
    ("pty", noop, shared::pty),
];

/// Dumps a parent/child victim; returns it, the child's pid and the image
/// once both pids are free.
fn dump_shared(
    dir: &Path,
    prepare: fn(&Path),
    body: fn(&Child) -> Verdict,
) -> (Victim, i32, PathBuf) {
    // SAFETY: integers only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    prepare(dir);
    let mut v = Victim::spawn(dir, body);
    let child: i32 = v.ready_text().trim().parse().expect("the child's pid");
    let img = dump(&v, &["-j"]);
    v.reap();
    let start = Instant::now();
    while !pid_gone(v.pid) || !free(child) {
        // SAFETY: a non-blocking wait on the child, ours once orphaned.
        unsafe { libc::waitpid(child, std::ptr::null_mut(), libc::WNOHANG) };
        assert!(start.elapsed() < Duration::from_secs(10), "pid stays");
        std::thread::sleep(Duration::from_millis(5));
    }
    (v, child, img)
}

fn free(pid: i32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// A restore of a parent/child victim that fails at the plan or once the
/// files are in place leaves neither process nor the deleted file's name
/// behind, and no crest-made object open in crest (it has exited).
#[test]
fn a_failed_restore_of_shared_objects_leaves_nothing_behind() {
    for (name, prepare, body) in SHARED {
        for step in ["restore-plan", "restore-files"] {
            let dir = scratch(&format!("kinds-sharedfault-{name}-{step}"));
            let (mut v, child, img) = dump_shared(&dir, prepare, body);
            let out = crest_fault(step, &["restore", "-D", img.to_str().unwrap()]);
            assert!(
                !out.status.success(),
                "{name} {step}: the restore must fail"
            );
            let start = Instant::now();
            while !pid_gone(v.pid) || !pid_gone(child) {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "{name} {step}: a process stays"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            assert!(
                !dir.join("gone").exists(),
                "{name} {step}: a deleted file came back"
            );
            v.forget();
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

/// Dumps a parent/child victim (its ready text is the child's pid),
/// restores it and checks the parent's report. The test binary becomes a
/// child subreaper so that it can reap the child the dump killed.
fn shared_round_trip(name: &str, prepare: fn(&Path), body: fn(&Child) -> Verdict) {
    let dir = scratch(name);
    let (mut v, _, img) = dump_shared(&dir, prepare, body);
    restore_and_check(&mut v, &img);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs crest with `CREST_FAULT=step`.
fn crest_fault(step: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crest"))
        .args(args)
        .env("CREST_FAULT", step)
        .stdin(Stdio::null())
        .output()
        .expect("run crest")
}

type Kind = (
    &'static str,
    fn(&Path),
    fn(&Child) -> Verdict,
    &'static [&'static str],
);

const KINDS: [Kind; 5] = [
    ("memfd", memfd::prepare, memfd::victim, &[]),
    ("ghost", ghost::prepare, ghost::victim, &[]),
    ("fifo", fifo::prepare, fifo::victim, &[]),
    ("pty", pty::prepare, pty::victim, &[]),
    ("lock", lock::prepare, lock::victim, &["--file-locks"]),
];

/// A dump that fails after its last per-process step leaves each kinds
/// victim running with every object as it was (its own checks pass).
#[test]
fn a_failed_dump_leaves_every_kind_as_it_was() {
    for (name, prepare, body, extra) in KINDS {
        let dir = scratch(&format!("kinds-dumpfault-{name}"));
        prepare(&dir);
        let mut v = Victim::spawn(&dir, body);
        let img = v.dir.join("img");
        let pid = v.pid.to_string();
        let mut args = vec!["dump", "-t", &pid, "-D", img.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = crest_fault("cure", &args);
        assert!(!out.status.success(), "{name}: the dump must fail");
        assert!(
            stderr(&out).contains("CREST_FAULT"),
            "{name}: {}",
            stderr(&out)
        );
        assert!(v.try_reap().is_none(), "{name}: the victim runs on");
        go_and_pass(&mut v);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A restore that fails once the files are in place leaves no process,
/// no recreated deleted file under its name and no lock behind.
#[test]
fn a_failed_restore_leaves_nothing_behind_for_every_kind() {
    for (name, prepare, body, extra) in KINDS {
        let dir = scratch(&format!("kinds-restorefault-{name}"));
        prepare(&dir);
        let mut v = Victim::spawn(&dir, body);
        let img = dump(&v, extra);
        v.reap();
        wait_gone(v.pid);
        let out = crest_fault("restore-files", &["restore", "-D", img.to_str().unwrap()]);
        assert!(!out.status.success(), "{name}: the restore must fail");
        let start = Instant::now();
        while !pid_gone(v.pid) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{name}: a process stays"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            !dir.join("gone").exists(),
            "{name}: a deleted file came back"
        );
        let a = File::options().write(true).open(dir.join("a"));
        if let Ok(a) = a {
            use std::os::fd::AsRawFd;
            // SAFETY: flock on our own file.
            let r = unsafe { libc::flock(a.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            assert_eq!(r, 0, "{name}: the flock outlived the failed restore");
        }
        v.forget();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
