//! Restore through /proc/sys/kernel/ns_last_pid, the way kernels before 5.5
//! (no clone3 set_tid) are served: `CREST_NO_SET_TID=1` takes that path
//! here. The threads victim must find its pid, its thread ids and its
//! registers as before.
//!
//! A test binary of its own: crest rewinds the pid namespace's last pid
//! to just below each id it needs, so any fork elsewhere in the namespace
//! at that moment takes the id (crest then fails, naming the race), and
//! the processes forked after the rewind land on ids that other tests'
//! restores are about to need. cargo runs test binaries one at a time, so
//! here only this test forks.

// A victim's failure reason lives inline in the Err (Msg, 240 bytes).
#![allow(clippy::result_large_err)]

#[macro_use]
mod common;
#[path = "restore/threads.rs"]
#[allow(dead_code)]
mod threads;

use std::path::Path;
use std::time::Duration;

use common::roundtrip::{Restore, dump, wait_gone};
use common::victim::{Victim, scratch};

/// A failed attempt's message when another process took an id crest was
/// setting up (a daemon of the machine may fork at the wrong moment).
const RACES: [&str; 3] = [
    "another task took that",
    "went to another new process",
    "is in use by",
];

/// Restores until the victim answers a ping (it runs its own code again).
/// An attempt that lost a race for an id must leave nothing behind; then,
/// as a user would, this restores again.
fn restore_retrying_races(v: &mut Victim, img: &Path) -> Restore {
    const ATTEMPTS: usize = 5;
    for attempt in 1..=ATTEMPTS {
        let mut crest = Restore::start_env(img, &[], &[("CREST_NO_SET_TID", "1")]);
        v.adopt();
        let Err(why) = v.try_ping(|| crest.failed()) else {
            return crest;
        };
        let raced = RACES.iter().any(|r| why.contains(r));
        assert!(raced && attempt < ATTEMPTS, "attempt {attempt}: {why}");
        eprintln!("attempt {attempt} lost a race for an id: {why}");
        wait_gone(v.pid);
        std::thread::sleep(Duration::from_millis(100));
    }
    unreachable!("the last attempt returns or panics")
}

#[test]
fn threads_victim_restored_through_ns_last_pid() {
    let dir = scratch("threads-ns-last-pid");
    let mut v = Victim::spawn(&dir, threads::victim);
    let img = dump(&v, &[]);
    assert!(libc::WIFSIGNALED(v.reap()));
    let mut crest = restore_retrying_races(&mut v, &img);
    v.go();
    let report = v.wait_report(|| crest.failed());
    assert_eq!(report.trim(), "pass", "restored victim {}", v.pid);
    let code = crest.code();
    let text = crest.stderr();
    assert_eq!(code, Some(0), "crest restore: {text}");
    assert!(
        text.contains("ns_last_pid"),
        "took the ns_last_pid path: {text}"
    );
    v.forget();
    let _ = std::fs::remove_dir_all(&dir);
}
