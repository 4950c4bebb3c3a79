//! Terminals across a checkpoint, zdtm style (victims in
//! tests/restore_tty/): a session whose controlling terminal is a
//! pseudo-terminal pair of the tree gets it back (ctty.rs: /dev/tty, the
//! session, the foreground group, ^C to that group, bytes queued both
//! ways including a canonical line without its newline), bytes queued in
//! a raw pair come back exactly (queue.rs), and a controlling terminal
//! whose master is outside the tree is refused with the tree left
//! running (outside.rs). Each victim runs without a checkpoint (the
//! baseline), after `dump -R`, and through dump then `crest restore`; a
//! dump that fails late leaves the queued bytes and the terminal as they
//! were, and a restore that fails leaves no process.

// A victim's failure reason lives inline in the Err (Msg, 240 bytes):
// a forked victim must not allocate, so it cannot be boxed.
#![allow(clippy::result_large_err)]

#[macro_use]
mod common;
#[path = "restore_tty/ctty.rs"]
mod ctty;
#[path = "restore_tty/locked.rs"]
mod locked;
#[path = "restore_tty/outside.rs"]
mod outside;
#[path = "restore_tty/queue.rs"]
mod queue;
#[path = "restore_fdkinds/raw.rs"]
#[allow(dead_code)]
mod raw;
#[path = "restore_tty/util.rs"]
mod util;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::roundtrip::{Mode, go_and_pass, restore_and_check, stderr};
use common::victim::{Child, Verdict, Victim, crest, pid_gone, scratch};

/// Runs crest with `CREST_FAULT=step` when given.
fn crest_env(fault: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_crest"));
    cmd.args(args).stdin(Stdio::null());
    if let Some(step) = fault {
        cmd.env("CREST_FAULT", step);
    }
    cmd.output().expect("run crest")
}

/// `crest dump` of the victim's tree (-j: its root is in the test's
/// session) with `extra`.
fn dump_args(v: &Victim, extra: &[&str]) -> (PathBuf, Vec<String>) {
    let img = v.dir.join("img");
    let mut args: Vec<String> = ["dump", "-j", "-t", &v.pid.to_string(), "-D"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(img.to_str().unwrap().into());
    args.extend(extra.iter().map(|s| s.to_string()));
    (img, args)
}

fn dump(v: &Victim, extra: &[&str]) -> PathBuf {
    let (img, args) = dump_args(v, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = crest(&args);
    assert!(out.status.success(), "dump failed: {}", stderr(&out));
    img
}

/// The pids of the ready text (a tree victim's other members).
fn members(v: &Victim) -> Vec<i32> {
    v.ready_text()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// Waits until the victim and `others` are gone (zombies reaped: the
/// test is a child subreaper).
fn wait_gone(v: &mut Victim, others: &[i32]) {
    let start = Instant::now();
    loop {
        for &p in others {
            // SAFETY: a non-blocking wait on a pid that is ours once orphaned.
            unsafe { libc::waitpid(p, std::ptr::null_mut(), libc::WNOHANG) };
        }
        let free = |p: i32| !Path::new(&format!("/proc/{p}")).exists();
        if pid_gone(v.pid) && others.iter().all(|&p| free(p)) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "pids stay");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One victim through one mode, start to finish.
fn run(name: &str, body: fn(&Child) -> Verdict, mode: Mode) {
    // SAFETY: integers only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    let dir = scratch(name);
    let mut v = Victim::spawn(&dir, body);
    let others = members(&v);
    match mode {
        Mode::Baseline | Mode::LeaveRunning => {
            if mode == Mode::LeaveRunning {
                dump(&v, &["-R"]);
                assert!(v.try_reap().is_none(), "the victim runs on after dump -R");
            }
            go_and_pass(&mut v);
        }
        Mode::RoundTrip => {
            let img = dump(&v, &[]);
            let status = v.reap();
            assert!(libc::WIFSIGNALED(status), "dump kills: status {status:#x}");
            wait_gone(&mut v, &others);
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
                let name = concat!("tty-", stringify!($module), "-base");
                run(name, $module::victim, Mode::Baseline);
            }
            #[test]
            fn survives_dump_leave_running() {
                let name = concat!("tty-", stringify!($module), "-R");
                run(name, $module::victim, Mode::LeaveRunning);
            }
            #[test]
            fn round_trip() {
                let name = concat!("tty-", stringify!($module), "-rt");
                run(name, $module::victim, Mode::RoundTrip);
            }
        }
    };
}

victim_tests!(ctty_victim, ctty);
victim_tests!(queue_victim, queue);
victim_tests!(locked_victim, locked);
mod locked_ctty {
    pub use super::locked::ctty_victim as victim;
}
victim_tests!(locked_ctty_victim, locked_ctty);

/// A session leader whose controlling terminal's master is outside the
/// tree is refused, even with --shell-job, by pid, session and cause,
/// before the tree is seized; the tree runs on with its terminal.
#[test]
fn a_controlling_terminal_outside_the_tree_is_refused() {
    let dir = scratch("tty-outside");
    let mut v = Victim::spawn(&dir, outside::victim);
    let (_, args) = dump_args(&v, &["-v4"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = crest(&args);
    assert!(!out.status.success(), "dump must refuse");
    let err = stderr(&out);
    assert!(
        !err.contains("seizing every process"),
        "refused before the seize: {err}"
    );
    let s = members(&v)[0];
    for want in [
        &format!("pid {s} leads session {s}"),
        "controlling terminal (device 136:",
        "not a pseudo-terminal whose master the tree holds",
    ] {
        assert!(err.contains(want), "message lacks {want:?}: {err}");
    }
    assert!(
        v.try_reap().is_none(),
        "the victim runs on after the refusal"
    );
    go_and_pass(&mut v);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A dump that fails after the terminals were read (CREST_FAULT=metadata)
/// leaves the tree running with its terminal, foreground group and every
/// queued byte as they were: the victim's own checks pass.
#[test]
fn a_failed_dump_leaves_the_terminal_and_its_queued_bytes_as_they_were() {
    for (name, body) in [
        ("tty-dumpfault-ctty", ctty::victim as fn(&Child) -> Verdict),
        ("tty-dumpfault-queue", queue::victim),
    ] {
        let dir = scratch(name);
        let mut v = Victim::spawn(&dir, body);
        let (_, args) = dump_args(&v, &[]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = crest_env(Some("metadata"), &args);
        assert!(!out.status.success(), "{name}: the dump must fail");
        assert!(stderr(&out).contains("CREST_FAULT"), "{}", stderr(&out));
        assert!(v.try_reap().is_none(), "{name}: the victim runs on");
        go_and_pass(&mut v);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A restore of the terminal tree that fails once the files are in place
/// leaves none of its processes behind.
#[test]
fn a_failed_restore_of_a_terminal_session_leaves_nothing_behind() {
    // SAFETY: integers only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    let dir = scratch("tty-restorefault");
    let mut v = Victim::spawn(&dir, ctty::victim);
    let others = members(&v);
    let img = dump(&v, &[]);
    v.reap();
    wait_gone(&mut v, &others);
    let out = crest_env(
        Some("restore-files"),
        &["restore", "-D", img.to_str().unwrap()],
    );
    assert!(!out.status.success(), "the restore must fail");
    wait_gone(&mut v, &others);
    v.forget();
    let _ = std::fs::remove_dir_all(&dir);
}

/// `crest show` prints the controlling terminal and the queued bytes.
#[test]
fn show_prints_the_ctty_and_the_queued_bytes() {
    let dir = scratch("tty-show");
    let mut v = Victim::spawn(&dir, ctty::victim);
    let img = dump(&v, &["-R"]);
    go_and_pass(&mut v);
    let out = crest(&["show", "--json", img.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json = common::parse(&String::from_utf8_lossy(&out.stdout)).expect("json");
    let text = format!("{json:?}");
    let s = members(&v)[0];
    assert!(text.contains("tty.img"), "{text}");
    assert!(text.contains(&format!("Num({s}.0)")), "{text}");
    for want in ["fg_pgrp", "to_slave", "to_master"] {
        assert!(text.contains(want), "show lacks {want}: {text}");
    }
    let out = crest(&["show", img.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    for want in ["tty.img", "ctty", "pty-queue"] {
        assert!(text.contains(want), "show lacks {want}:\n{text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// More unread bytes in a pair than crest can queue back: refused before
/// any is read, and the victim then reads every byte in order both ways.
#[test]
fn an_overfull_pair_is_refused_with_every_byte_left_in_place() {
    common::roundtrip::refused(
        "tty-overfull",
        queue::overfull_victim,
        &["pseudo-terminal", "more than 4095 unread bytes"],
    );
    common::roundtrip::refused(
        "tty-overfull-in",
        queue::overfull_input_victim,
        &["pseudo-terminal", "more than 4095 unread bytes"],
    );
}

/// Unread bytes at a packet-mode master: refused, the victim then reads
/// them as the data packet it would have read.
#[test]
fn unread_bytes_at_a_packet_mode_master_are_refused() {
    common::roundtrip::refused(
        "tty-packet",
        queue::packet_victim,
        &["pseudo-terminal", "packet mode", "has not read"],
    );
}
