//! Round trips of the event loop's fds (eventfd, signalfd, timerfd, epoll,
//! inotify, and files on procfs) in the zdtm style of tests/restore.rs: each victim
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

// ensure! (a failed check in a victim) and victim_tests! come from here.
#[macro_use]
mod common;
#[path = "restore_fdkinds/epoll.rs"]
mod epoll;
#[path = "restore_fdkinds/eventfd.rs"]
mod eventfd;
#[path = "restore_fdkinds/eventloop.rs"]
mod eventloop;
#[path = "restore_fdkinds/inotify.rs"]
mod inotify;
#[path = "restore_fdkinds/procfs.rs"]
mod procfs;
#[path = "restore_fdkinds/raw.rs"]
mod raw;
#[path = "restore_fdkinds/signalfd.rs"]
mod signalfd;
#[path = "restore_fdkinds/timerfd.rs"]
mod timerfd;

use common::roundtrip::{dump, go_and_pass, refused, stderr};
use common::victim::{Victim, crest, scratch};

victim_tests!(eventfd_victim, eventfd);
victim_tests!(signalfd_victim, signalfd);
victim_tests!(timerfd_victim, timerfd);
victim_tests!(epoll_victim, epoll);
victim_tests!(inotify_victim, inotify);
victim_tests!(eventloop_victim, eventloop);
victim_tests!(procfs_victim, procfs);

/// The dump image records what the victims' objects were: `crest show`
/// prints each kind with its state.
#[test]
fn show_prints_the_new_fd_kinds() {
    let dir = scratch("fdkinds-show");
    eventloop::prepare(&dir);
    let mut v = Victim::spawn(&dir, eventloop::victim);
    let img = dump(&v, &["-R"]);
    go_and_pass(&mut v);
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
