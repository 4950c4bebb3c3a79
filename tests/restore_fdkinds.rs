//! Round trips of the event loop's fds (eventfd, signalfd, timerfd, epoll,
//! inotify) in the zdtm style of tests/restore.rs: each victim
//! (tests/restore_fdkinds/*.rs) makes its objects, the test dumps it
//! (`dump -R`, or dump then `crest restore`), and after go the victim checks
//! that every object behaves as before: counters read back, semaphores count
//! down, queued and new signals are read, timers fire on time, epoll wakes
//! with the right data, inotify reports changes under the same wds.
//!
//! Each victim also runs without a checkpoint (the baseline). The refusal
//! tests check that an epoll target closed after it was added is refused at
//! dump with a clear message, the target left running.

// A victim's failure reason lives inline in the Err (Msg, 240 bytes):
// a forked victim must not allocate, so it cannot be boxed.
#![allow(clippy::result_large_err)]

// A failed check in a victim: returns the reason from the victim's body.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(crate::common::victim::Msg::new(format_args!($($fmt)+)));
        }
    };
}

mod common;
#[path = "restore_fdkinds/epoll.rs"]
mod epoll;
#[path = "restore_fdkinds/eventfd.rs"]
mod eventfd;
#[path = "restore_fdkinds/eventloop.rs"]
mod eventloop;
#[path = "restore_fdkinds/inotify.rs"]
mod inotify;
#[path = "restore_fdkinds/raw.rs"]
mod raw;
#[path = "restore_fdkinds/signalfd.rs"]
mod signalfd;
#[path = "restore_fdkinds/timerfd.rs"]
mod timerfd;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::victim::{Child, Verdict, Victim, crest, pid_gone, scratch};

/// What the test does to a victim between ready and go.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// Nothing: the victim's own checks must pass untouched.
    Baseline,
    /// `dump -R`; the original goes on and must pass.
    LeaveRunning,
    /// dump (kills), restore with crest as the parent.
    RoundTrip,
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn dump(v: &Victim, extra: &[&str]) -> PathBuf {
    let img = v.dir.join("img");
    let pid = v.pid.to_string();
    let mut args = vec!["dump", "-t", &pid, "-D", img.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = crest(&args);
    assert!(out.status.success(), "dump failed: {}", stderr(&out));
    img
}

/// Restores from `img` with crest as the parent and checks the report.
fn restore_and_check(v: &mut Victim, img: &Path) {
    let err = img.with_file_name("restore.stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_crest"))
        .args(["restore", "-D", img.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&err).unwrap())
        .spawn()
        .expect("start crest restore");
    let text = |e: &Path| std::fs::read_to_string(e).unwrap_or_default();
    v.adopt();
    v.go();
    let report = v.wait_report(|| match child.try_wait().unwrap() {
        Some(s) if !s.success() => Some(format!("crest restore: {s}: {}", text(&err))),
        _ => None,
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "crest hangs");
        std::thread::sleep(Duration::from_millis(2));
    };
    assert_eq!(report.trim(), "pass", "restored victim {}", v.pid);
    assert!(status.success(), "crest restore: {}", text(&err));
    v.forget();
}

/// One victim through one mode, start to finish.
fn run(name: &str, prepare: fn(&Path), body: fn(&Child) -> Verdict, mode: Mode) {
    let dir = scratch(name);
    prepare(&dir);
    let mut v = Victim::spawn(&dir, body);
    match mode {
        Mode::Baseline | Mode::LeaveRunning => {
            if mode == Mode::LeaveRunning {
                dump(&v, &["-R"]);
                assert!(v.try_reap().is_none(), "the victim runs on after dump -R");
            }
            v.go();
            let report = v.wait_report(|| None);
            let status = v.reap();
            assert_eq!(report.trim(), "pass", "{mode:?}");
            assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        }
        Mode::RoundTrip => {
            let img = dump(&v, &[]);
            let status = v.reap();
            assert!(libc::WIFSIGNALED(status), "dump kills: status {status:#x}");
            let start = Instant::now();
            while !pid_gone(v.pid) {
                assert!(start.elapsed() < Duration::from_secs(10), "pid stays");
                std::thread::sleep(Duration::from_millis(5));
            }
            restore_and_check(&mut v, &img);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The three modes of one victim as three tests.
macro_rules! victim_tests {
    ($victim:ident, $module:ident) => {
        mod $victim {
            use super::*;
            #[test]
            fn baseline() {
                let name = concat!(stringify!($module), "-base");
                run(name, $module::prepare, $module::victim, Mode::Baseline);
            }
            #[test]
            fn survives_dump_leave_running() {
                let name = concat!(stringify!($module), "-R");
                run(name, $module::prepare, $module::victim, Mode::LeaveRunning);
            }
            #[test]
            fn round_trip() {
                let name = concat!(stringify!($module), "-rt");
                run(name, $module::prepare, $module::victim, Mode::RoundTrip);
            }
        }
    };
}

victim_tests!(eventfd_victim, eventfd);
victim_tests!(signalfd_victim, signalfd);
victim_tests!(timerfd_victim, timerfd);
victim_tests!(epoll_victim, epoll);
victim_tests!(inotify_victim, inotify);
victim_tests!(eventloop_victim, eventloop);

/// The dump image records what the victims' objects were: `crest show`
/// prints each kind with its state.
#[test]
fn show_prints_the_new_fd_kinds() {
    let dir = scratch("fdkinds-show");
    eventloop::prepare(&dir);
    let mut v = Victim::spawn(&dir, eventloop::victim);
    let img = dump(&v, &["-R"]);
    v.go();
    let report = v.wait_report(|| None);
    v.reap();
    assert_eq!(report.trim(), "pass");
    let out = crest(&["show", img.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    for want in [
        "eventfd count=0",
        "signalfd sigmask=0x200",
        "timerfd clock=1",
        "interval=50000000ns",
        "epoll flags=",
    ] {
        assert!(text.contains(want), "show lacks {want:?}:\n{text}");
    }
    let json = crest(&["show", "--json", img.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&json.stdout);
    assert!(text.contains("\"kind\":\"epoll\""), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs a refusal victim: the dump must fail naming `want`, and the victim,
/// left running, passes its checks.
fn refused(name: &str, body: fn(&Child) -> Verdict, want: &[&str]) {
    let dir = scratch(name);
    let mut v = Victim::spawn(&dir, body);
    let img = v.dir.join("img");
    let pid = v.pid.to_string();
    let out = crest(&["dump", "-t", &pid, "-D", img.to_str().unwrap()]);
    assert!(!out.status.success(), "dump must refuse");
    let err = stderr(&out);
    for w in want {
        assert!(err.contains(w), "message lacks {w:?}: {err}");
    }
    assert!(
        v.try_reap().is_none(),
        "the victim runs on after the refusal"
    );
    v.go();
    let report = v.wait_report(|| None);
    v.reap();
    assert_eq!(report.trim(), "pass");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An epoll target closed after it was added is still registered under its
/// old number: refused at dump, naming the epoll fd and the target.
#[test]
fn epoll_with_a_closed_target_is_refused() {
    refused(
        "fdkinds-epoll-stale",
        epoll::stale_victim,
        &["fd 20 of pid", "epoll instance", "fd 21 no longer holds"],
    );
}

/// An inotify watch on a file that was deleted has no path: refused.
#[test]
fn inotify_watch_on_a_deleted_file_is_refused() {
    refused(
        "fdkinds-inotify-deleted",
        inotify::deleted_victim,
        &["inotify instance whose watch 1", "remove that watch"],
    );
}
