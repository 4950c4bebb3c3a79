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

use std::fs::File;
use std::path::Path;
use std::process::{Child as Process, Command, Stdio};
use std::time::Duration;

use common::roundtrip::{dump, wait_crest, wait_gone};
use common::victim::{Victim, scratch};

/// A failed attempt's message when another process took an id crest was
/// setting up (a daemon of the machine may fork at the wrong moment).
const RACES: [&str; 3] = [
    "another task took that",
    "went to another new process",
    "is in use by",
];

fn start_restore(img: &Path, err: &Path) -> Process {
    Command::new(env!("CARGO_BIN_EXE_crest"))
        .args(["restore", "-D", img.to_str().unwrap()])
        .env("CREST_NO_SET_TID", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(err).unwrap())
        .spawn()
        .expect("start crest restore")
}

/// Why waiting for the victim is pointless: crest exited with an error.
fn failed(crest: &mut Process, err: &Path) -> Option<String> {
    match crest.try_wait().unwrap() {
        Some(s) if !s.success() => Some(format!(
            "crest restore: {s}: {}",
            std::fs::read_to_string(err).unwrap_or_default()
        )),
        _ => None,
    }
}

/// Restores until the victim answers a ping (it runs its own code again).
/// An attempt that lost a race for an id must leave nothing behind; then,
/// as a user would, this restores again.
fn restore_retrying_races(v: &mut Victim, img: &Path, err: &Path) -> Process {
    const ATTEMPTS: usize = 5;
    for attempt in 1..=ATTEMPTS {
        let mut crest = start_restore(img, err);
        v.adopt();
        let Err(why) = v.try_ping(|| failed(&mut crest, err)) else {
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
    let err = img.with_file_name("restore.stderr");
    let mut crest = restore_retrying_races(&mut v, &img, &err);
    v.go();
    let report = v.wait_report(|| failed(&mut crest, &err));
    assert_eq!(report.trim(), "pass", "restored victim {}", v.pid);
    let status = wait_crest(&mut crest);
    let text = std::fs::read_to_string(&err).unwrap_or_default();
    assert!(status.success(), "crest restore: {text}");
    assert!(
        text.contains("ns_last_pid"),
        "took the ns_last_pid path: {text}"
    );
    v.forget();
    let _ = std::fs::remove_dir_all(&dir);
}
