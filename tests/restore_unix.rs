//! Round trips of unix sockets in the zdtm style of tests/restore.rs: the
//! victim (tests/restore_unix/victim.rs) makes a stream, a datagram and a
//! seqpacket pair with data queued both ways and a file in flight, a
//! listener on a path with an accepted and a pending connection, and a
//! listener on an abstract name; the test dumps it (`dump -R`, or dump
//! then `crest restore`), and after go the victim checks every queue byte
//! for byte with its boundaries, the file in flight, shutdown, options, and
//! that both listeners accept at their names.
//!
//! A tree victim (tests/restore_unix/shared.rs) holds sockets across a
//! parent and its child: split pairs and an inherited socket, restored
//! shared.
//!
//! The victims of tests/restore_unix/flight.rs: fds in flight on a stream
//! read back at the same bytes as the kernel gave them before (reads of
//! 2, 5 and 65536 bytes), and a socket two processes share whose queue
//! carries a pipe and a socket the processes hold too: the same pipe and
//! socket after restore. Each: round trip, restore from a `dump -R`
//! image, a failed dump (and restore) leaving everything as it was.
//!
//! The refusal tests: a socket connected to a peer outside the tree is
//! refused at dump naming the fd, the socket and the peer, the victim left
//! running; `--external unix[INO]` lets it through.

#![allow(clippy::result_large_err)]

// ensure! (a failed check in a victim) and victim_tests! come from here.
#[macro_use]
mod common;
#[path = "restore_unix/flight.rs"]
mod flight;
#[path = "restore_fdkinds/raw.rs"]
#[allow(dead_code)]
mod raw;
#[path = "restore_unix/victim.rs"]
mod victim;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::roundtrip::{
    dump, go_and_pass, restore_and_check, restore_and_check_with, restore_inspect_and_check,
    stderr, wait_gone,
};
use common::victim::{Victim, crest, pid_gone, scratch};

#[test]
fn baseline() {
    let dir = scratch("unix-base");
    victim::prepare(&dir);
    let mut v = Victim::spawn(&dir, victim::victim);
    go_and_pass(&mut v);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `dump -R` peeks every queue without taking anything: the original
/// reads all of it afterwards; `crest show` names the sockets.
#[test]
fn survives_dump_leave_running() {
    let dir = scratch("unix-R");
    victim::prepare(&dir);
    let mut v = Victim::spawn(&dir, victim::victim);
    let img = dump(&v, &["-R"]);
    assert!(v.try_reap().is_none(), "the victim runs on after dump -R");
    go_and_pass(&mut v);
    let out = crest(&["show", img.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "unix socket:[",
        "type=5 state=10",
        "@crest-unix-test-",
        "Pending(",
        "unix-queue",
    ] {
        assert!(text.contains(want), "show lacks {want:?}:\n{text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn round_trip() {
    let dir = scratch("unix-rt");
    victim::prepare(&dir);
    let mut v = Victim::spawn(&dir, victim::victim);
    let img = dump(&v, &[]);
    let status = v.reap();
    assert!(libc::WIFSIGNALED(status), "dump kills: status {status:#x}");
    wait_gone(v.pid);
    // The path listener's file stays behind after the kill: restore binds
    // the path again in its place.
    assert!(dir.join("sock").exists());
    restore_and_check(&mut v, &img);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Something else at the listener's path is not overwritten: refused
/// before any process exists.
#[test]
fn a_foreign_file_at_the_socket_path_is_refused() {
    let dir = scratch("unix-path");
    victim::prepare(&dir);
    let mut v = Victim::spawn(&dir, victim::victim);
    let img = dump(&v, &[]);
    v.reap();
    std::fs::remove_file(dir.join("sock")).unwrap();
    std::fs::write(dir.join("sock"), b"not a socket").unwrap();
    wait_gone(v.pid);
    let out = crest(&["restore", "-D", img.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("another file (inode"), "{err}");
    assert!(pid_gone(v.pid), "no process is left behind");
    assert_eq!(std::fs::read(dir.join("sock")).unwrap(), b"not a socket");
    v.forget();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Dumps (killing) a fresh victim in `name` and waits until its pid is free.
fn dumped(name: &str) -> (Victim, PathBuf) {
    let dir = scratch(name);
    victim::prepare(&dir);
    let mut v = Victim::spawn(&dir, victim::victim);
    let img = dump(&v, &[]);
    v.reap();
    wait_gone(v.pid);
    (v, img)
}

/// A restore that fails after the sockets were made (and the path bound)
/// leaves no process, and the next restore binds the path again.
#[test]
fn a_failed_restore_leaves_nothing_and_the_next_one_works() {
    let (mut v, img) = dumped("unix-refail");
    let out = Command::new(env!("CARGO_BIN_EXE_crest"))
        .args(["restore", "-D", img.to_str().unwrap()])
        .env("CREST_FAULT", "restore-files")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the fault makes the restore fail");
    assert!(stderr(&out).contains("restore-files"), "{}", stderr(&out));
    let start = Instant::now();
    while !pid_gone(v.pid) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no process is left"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    restore_and_check(&mut v, &img);
    let _ = std::fs::remove_dir_all(&v.dir);
}

/// A live socket bound at the listener's path now is not taken over:
/// refused, naming it and its holder.
#[test]
fn a_live_socket_at_the_path_is_refused() {
    let (mut v, img) = dumped("unix-live");
    let path = v.dir.join("sock");
    std::fs::remove_file(&path).unwrap();
    let live = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let out = crest(&["restore", "-D", img.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("the live socket socket:["), "{err}");
    assert!(
        err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    assert!(pid_gone(v.pid), "no process");
    drop(live);
    v.forget();
    let _ = std::fs::remove_dir_all(&v.dir);
}

/// A listener of the test; the victim connects, the test accepts.
fn external_peer(dir: &Path) -> (std::os::unix::net::UnixListener, String) {
    use std::os::linux::net::SocketAddrExt;
    let name = format!(
        "crest-unix-ext-{}-{}",
        std::process::id(),
        dir.display().to_string().len()
    );
    std::fs::write(dir.join("ext"), &name).unwrap();
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    (
        std::os::unix::net::UnixListener::bind_addr(&addr).unwrap(),
        name,
    )
}

#[test]
fn an_external_peer_is_refused_unless_allowed() {
    let dir = scratch("unix-ext");
    let (l, _) = external_peer(&dir);
    let mut v = Victim::spawn(&dir, victim::external_victim);
    let (server, _) = l.accept().unwrap();
    let ino = std::fs::metadata(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&server)
    ))
    .unwrap()
    .ino();
    let img = v.dir.join("img");
    let pid = v.pid.to_string();
    let out = crest(&["dump", "-t", &pid, "-D", img.to_str().unwrap()]);
    assert!(!out.status.success(), "dump must refuse");
    let err = stderr(&out);
    for want in [
        format!("fd 20 of pid {pid}"),
        format!("socket:[{ino}] outside the dumped tree"),
        format!("--external unix[{ino}]"),
        format!("pid {}", std::process::id()),
    ] {
        assert!(err.contains(&want), "message lacks {want:?}: {err}");
    }
    assert!(
        v.try_reap().is_none(),
        "the victim runs on after the refusal"
    );
    let allow = format!("unix[{ino}]");
    let img2 = v.dir.join("img2");
    let out = crest(&[
        "dump",
        "-t",
        &pid,
        "-D",
        img2.to_str().unwrap(),
        "-R",
        "--external",
        &allow,
    ]);
    assert!(out.status.success(), "allowed: {}", stderr(&out));
    go_and_pass(&mut v);
    let mut buf = [0u8; 16];
    let n = std::io::Read::read(&mut &server, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"still-here");
    let show = crest(&["show", img2.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&show.stdout).contains(&format!("External({ino}")));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A dump that fails after the queues were peeked leaves every queue, peek
/// offset and option as it was: the victim passes its checks afterwards.
#[test]
fn a_failed_dump_leaves_every_socket_as_it_was() {
    let dir = scratch("unix-fault");
    victim::prepare(&dir);
    let mut v = Victim::spawn(&dir, victim::victim);
    let img = v.dir.join("img");
    let out = Command::new(env!("CARGO_BIN_EXE_crest"))
        .args([
            "dump",
            "-t",
            &v.pid.to_string(),
            "-D",
            img.to_str().unwrap(),
        ])
        .env("CREST_FAULT", "collect")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the fault makes the dump fail");
    assert!(stderr(&out).contains("collect"), "{}", stderr(&out));
    assert!(v.try_reap().is_none(), "the victim runs on");
    go_and_pass(&mut v);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The pids of the tree in the image at `img`, once every one is gone.
fn dumped_tree_gone(img: &Path) -> Vec<i32> {
    let procs =
        crest::image::load::load_pstree(&crest::image::ImageDir::open(img).unwrap()).unwrap();
    let pids: Vec<i32> = procs.iter().map(|p| p.pid as i32).collect();
    let start = Instant::now();
    // The child, an orphan now, stays a zombie until init reaps it.
    while pids
        .iter()
        .any(|p| Path::new(&format!("/proc/{p}")).exists())
    {
        assert!(start.elapsed() < Duration::from_secs(10), "pids stay");
        std::thread::sleep(Duration::from_millis(5));
    }
    pids
}

/// The socket inode `pid`'s fd `fd` refers to.
fn sock_link(pid: i32, fd: i32) -> String {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A parent and child connected by a stream and a datagram socketpair,
/// data queued both ways, and a stream socket both hold: dumped (the tree
/// killed), a restore failing after its tasks exist (CREST_FAULT) leaves
/// no process, then the restore brings the sockets back shared: each
/// process reads exactly the queued bytes, new messages cross both ways,
/// and the inherited socket is one socket in both.
#[test]
fn sockets_shared_between_parent_and_child_round_trip() {
    let dir = scratch("unix-shared-base");
    let mut v = Victim::spawn(&dir, victim::shared_sockets_victim);
    go_and_pass(&mut v);
    let _ = std::fs::remove_dir_all(&dir);

    let dir = scratch("unix-shared");
    let mut v = Victim::spawn(&dir, victim::shared_sockets_victim);
    let img = dump(&v, &["-j"]);
    v.reap();
    let pids = dumped_tree_gone(&img);
    assert_eq!(pids.len(), 2, "the victim and its child");
    failed_restore_leaves_none_of(&img, &pids);

    let shared = || {
        let link = sock_link(pids[0], 24);
        assert!(link.starts_with("socket:["), "parent fd 24: {link}");
        assert_eq!(sock_link(pids[1], 24), link, "fd 24 is one socket in both");
        let listener = sock_link(pids[0], 26);
        assert!(listener.starts_with("socket:["), "parent fd 26: {listener}");
        assert_eq!(sock_link(pids[1], 26), listener, "the listener is shared");
        assert_ne!(sock_link(pids[0], 20), sock_link(pids[1], 21));
    };
    restore_inspect_and_check(&mut v, &img, &["-j"], Some(&shared));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A `restore -j` of `img` failing once its tasks exist
/// (CREST_FAULT=restore-takeover) leaves none of `pids` behind.
fn failed_restore_leaves_none_of(img: &Path, pids: &[i32]) {
    let out = Command::new(env!("CARGO_BIN_EXE_crest"))
        .args(["restore", "-j", "-D", img.to_str().unwrap()])
        .env("CREST_FAULT", "restore-takeover")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the fault makes the restore fail");
    assert!(
        stderr(&out).contains("restore-takeover"),
        "{}",
        stderr(&out)
    );
    let start = Instant::now();
    while !pids.iter().all(|p| pid_gone(*p)) {
        assert!(start.elapsed() < Duration::from_secs(10), "no process left");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A fresh victim running `body` in scratch dir `name`.
fn flight_victim(
    name: &str,
    body: fn(&common::victim::Child) -> common::victim::Verdict,
) -> Victim {
    let dir = scratch(name);
    victim::prepare(&dir);
    Victim::spawn(&dir, body)
}

/// Baseline (no checkpoint), then dump (killing the tree) and restore.
fn flight_round_trip(
    name: &str,
    body: fn(&common::victim::Child) -> common::victim::Verdict,
    extra: &[&str],
) {
    let mut v = flight_victim(&format!("{name}-base"), body);
    go_and_pass(&mut v);
    let _ = std::fs::remove_dir_all(&v.dir);
    let mut v = flight_victim(name, body);
    let img = dump(&v, extra);
    v.reap();
    dumped_tree_gone(&img);
    restore_and_check_with(&mut v, &img, extra);
    let _ = std::fs::remove_dir_all(&v.dir);
}

/// `dump -R` leaves every queue as it was (the victim passes on), and
/// the image it wrote restores once the victim is gone.
fn flight_leave_running(
    name: &str,
    body: fn(&common::victim::Child) -> common::victim::Verdict,
    extra: &[&str],
) {
    let mut v = flight_victim(name, body);
    let mut args = vec!["-R"];
    args.extend_from_slice(extra);
    let img = dump(&v, &args);
    assert!(v.try_reap().is_none(), "the victim runs on after dump -R");
    go_and_pass(&mut v);
    dumped_tree_gone(&img);
    restore_and_check_with(&mut v, &img, extra);
    let _ = std::fs::remove_dir_all(&v.dir);
}

/// A dump failing after the queues were read (CREST_FAULT=collect) leaves
/// the victim running with every queue as it was: it passes afterwards.
fn flight_failed_dump(
    name: &str,
    body: fn(&common::victim::Child) -> common::victim::Verdict,
    extra: &[&str],
) {
    let mut v = flight_victim(name, body);
    let img = v.dir.join("img");
    let pid = v.pid.to_string();
    let mut args = vec!["dump", "-t", &pid, "-D", img.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = Command::new(env!("CARGO_BIN_EXE_crest"))
        .args(&args)
        .env("CREST_FAULT", "collect")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the fault makes the dump fail");
    assert!(stderr(&out).contains("collect"), "{}", stderr(&out));
    assert!(v.try_reap().is_none(), "the victim runs on");
    go_and_pass(&mut v);
    let _ = std::fs::remove_dir_all(&v.dir);
}

/// Fds in flight on a stream socket come back at the byte where they
/// were: reads of 2, 5 and 65536 bytes return the same stretches with the
/// same fds as the kernel gave for the same sends before the checkpoint.
#[test]
fn stream_fds_keep_their_byte_positions_round_trip() {
    flight_round_trip("unix-sfd", flight::stream_fds_victim, &[]);
}

#[test]
fn stream_fds_keep_their_byte_positions_from_a_leave_running_image() {
    flight_leave_running("unix-sfd-R", flight::stream_fds_victim, &[]);
}

#[test]
fn stream_fds_a_failed_dump_leaves_the_queue_as_it_was() {
    flight_failed_dump("unix-sfd-fault", flight::stream_fds_victim, &[]);
}

/// A socket two processes hold whose queue carries a pipe end (and a
/// socket) the processes hold too: after restore the end in flight is the
/// held pipe, bytes included, and the socket in flight the held socket.
#[test]
fn a_held_pipe_in_flight_in_a_shared_socket_round_trip() {
    flight_round_trip("unix-hp", flight::held_pipe_victim, &["-j"]);
}

#[test]
fn a_held_pipe_in_flight_in_a_shared_socket_from_a_leave_running_image() {
    flight_leave_running("unix-hp-R", flight::held_pipe_victim, &["-j"]);
}

/// A failed dump leaves the tree as it was; a restore failing once its
/// tasks exist leaves no process behind.
#[test]
fn a_held_pipe_in_flight_failed_dump_and_restore_leave_nothing() {
    flight_failed_dump("unix-hp-fault", flight::held_pipe_victim, &["-j"]);
    let mut v = flight_victim("unix-hp-refault", flight::held_pipe_victim);
    let img = dump(&v, &["-j"]);
    v.reap();
    let pids = dumped_tree_gone(&img);
    failed_restore_leaves_none_of(&img, &pids);
    v.forget();
    let _ = std::fs::remove_dir_all(&v.dir);
}

/// A byte sent with MSG_OOB and not read yet would come back as plain
/// data: refused, naming the socket, the victim left running with its
/// queue (the byte and the data around it) as it was.
#[test]
fn an_out_of_band_byte_waiting_is_refused() {
    common::roundtrip::refused(
        "unix-oob",
        victim::oob_victim,
        &["fd 21 of pid", "out-of-band byte", "recv(MSG_OOB)"],
    );
}
