//! `crest restore` round trips in the zdtm style: forked victims
//! (tests/restore/*.rs) set up memory, threads, registers, signals, timers,
//! files and credentials, the test dumps them and restores them with the real binary,
//! and each victim then checks its own state against what it recorded
//! before the dump and against the kernel (/proc/self, syscalls).
//!
//! Every victim also runs without any checkpoint (the baseline) and after a
//! `dump -R` of itself, so a failure of a round trip is the restore's and
//! not the victim's. The failure paths check that a refused restore exits 1
//! with the reason and leaves no process behind.

// A victim's failure reason lives inline in the Err (Msg, 240 bytes):
// a forked victim must not allocate, so it cannot be boxed.
#![allow(clippy::result_large_err)]

// ensure! (a failed check in a victim) comes from here.
#[macro_use]
mod common;
#[path = "restore/creds.rs"]
mod creds;
#[path = "restore/files.rs"]
mod files;
#[path = "restore/memory.rs"]
mod memory;
#[path = "restore/signals.rs"]
mod signals;
#[path = "restore/threads.rs"]
mod threads;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::roundtrip::{Restore, dump, stderr};
use common::victim::{Child, Verdict, Victim, crest, pid_gone, proc_state, scratch};

/// What the test does to a victim between ready and go.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// Nothing: the victim's own checks must pass untouched.
    Baseline,
    /// `dump -R`; the original goes on and must pass.
    LeaveRunning,
    /// dump (kills), restore with crest as the parent.
    RoundTrip,
    /// dump, `restore -d --pidfile`.
    Detached,
    /// `dump -R`, SIGKILL the original, restore.
    FromLeaveRunning,
}

/// Becomes the reaper of orphans, so a detached restored victim, whose
/// crest exits, becomes our child and leaves its exit status to us.
fn become_subreaper() {
    // SAFETY: a flag of this process, no memory effects.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
}

/// The victim's report after `go`, and crest restore's exit code.
fn restore_and_check(v: &mut Victim, img: &Path, detached: bool) {
    if detached {
        become_subreaper();
        let pidfile = v.dir.join("pidfile");
        let mut r = Restore::start(img, &["-d", "--pidfile", pidfile.to_str().unwrap()]);
        assert_eq!(r.code(), Some(0), "restore -d: {}", r.stderr());
        v.adopt();
        let text = std::fs::read_to_string(&pidfile).expect("the pidfile");
        assert_eq!(text.trim(), v.pid.to_string(), "pidfile");
        v.go();
        let report = v.wait_report(|| None);
        assert_eq!(report.trim(), "pass", "restored victim {}", v.pid);
        // Orphaned by crest, the victim is ours now (subreaper): its status.
        let status = v.reap();
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "detached victim status {status:#x}"
        );
        return;
    }
    let mut r = Restore::start(img, &[]);
    v.adopt();
    v.go();
    let report = v.wait_report(|| r.failed());
    assert_eq!(report.trim(), "pass", "restored victim {}", v.pid);
    assert_eq!(r.code(), Some(0), "crest restore: {}", r.stderr());
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
        Mode::RoundTrip | Mode::Detached => {
            let img = dump(&v, &[]);
            let status = v.reap();
            assert!(libc::WIFSIGNALED(status), "dump kills: status {status:#x}");
            restore_and_check(&mut v, &img, mode == Mode::Detached);
        }
        Mode::FromLeaveRunning => {
            let img = dump(&v, &["-R"]);
            v.kill();
            restore_and_check(&mut v, &img, false);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The five modes of one victim as five tests.
macro_rules! victim_tests {
    ($victim:ident, $module:ident) => {
        mod $victim {
            use super::*;
            const PREPARE: fn(&Path) = $module::prepare;
            const BODY: fn(&Child) -> Verdict = $module::victim;
            #[test]
            fn baseline() {
                run(
                    concat!(stringify!($module), "-base"),
                    PREPARE,
                    BODY,
                    Mode::Baseline,
                );
            }
            #[test]
            fn survives_dump_leave_running() {
                run(
                    concat!(stringify!($module), "-R"),
                    PREPARE,
                    BODY,
                    Mode::LeaveRunning,
                );
            }
            #[test]
            fn round_trip() {
                run(
                    concat!(stringify!($module), "-rt"),
                    PREPARE,
                    BODY,
                    Mode::RoundTrip,
                );
            }
            #[test]
            fn round_trip_detached() {
                run(
                    concat!(stringify!($module), "-d"),
                    PREPARE,
                    BODY,
                    Mode::Detached,
                );
            }
            #[test]
            fn restore_from_leave_running_images() {
                run(
                    concat!(stringify!($module), "-Rrt"),
                    PREPARE,
                    BODY,
                    Mode::FromLeaveRunning,
                );
            }
        }
    };
}

victim_tests!(memory_victim, memory);
victim_tests!(threads_victim, threads);
victim_tests!(signals_victim, signals);
victim_tests!(files_victim, files);
victim_tests!(creds_victim, creds);

/// The memory victim's checks can fail: a page changed behind its back
/// (through /proc/PID/mem) is reported.
#[test]
fn memory_victim_detects_a_changed_page() {
    let dir = scratch("memory-neg");
    memory::prepare(&dir);
    let mut v = Victim::spawn(&dir, memory::victim);
    let addr = memory::big_region(&v.ready_text());
    // A page of the pattern class, 3 words in.
    let at = addr + 9 * 4096 + 24;
    let mem = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{}/mem", v.pid))
        .unwrap();
    std::os::unix::fs::FileExt::write_at(&mem, &[0xa5; 8], at as u64).unwrap();
    v.go();
    let report = v.wait_report(|| None);
    let status = v.reap();
    assert!(report.starts_with("fail: "), "{report}");
    assert!(report.contains("big"), "names the region: {report}");
    assert_eq!(libc::WEXITSTATUS(status), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

fn wait_state(pid: i32, want: char) {
    let start = Instant::now();
    while proc_state(pid) != Some(want) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "pid {pid} state {:?}, want {want}",
            proc_state(pid)
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A stopped victim comes back stopped and passes once continued.
#[test]
fn stopped_victim_is_restored_stopped() {
    let dir = scratch("stopped");
    files::prepare(&dir);
    let mut v = Victim::spawn(&dir, files::victim);
    // SAFETY: our own child.
    unsafe { libc::kill(v.pid, libc::SIGSTOP) };
    wait_state(v.pid, 'T');
    let img = dump(&v, &[]);
    assert!(libc::WIFSIGNALED(v.reap()));
    let mut r = Restore::start(&img, &[]);
    v.adopt();
    v.go();
    let start = Instant::now();
    while proc_state(v.pid) != Some('T') {
        if let Some(why) = r.failed() {
            panic!("{why}");
        }
        assert!(start.elapsed() < Duration::from_secs(10), "never stopped");
        std::thread::sleep(Duration::from_millis(2));
    }
    // Stopped means stopped: no report while it stays so.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(proc_state(v.pid), Some('T'));
    assert!(v.report().is_none(), "a stopped victim ran");
    // SAFETY: the restored victim, created by this test's crest.
    unsafe { libc::kill(v.pid, libc::SIGCONT) };
    let report = v.wait_report(|| r.failed());
    assert_eq!(report.trim(), "pass");
    assert_eq!(r.code(), Some(0), "{}", r.stderr());
    v.forget();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs a restore that must be refused; its stderr.
fn refused(img: &Path, pid: i32) -> String {
    let out = crest(&["restore", "-D", img.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "restore: {err}");
    assert!(!err.trim().is_empty(), "a refusal says why");
    assert!(pid_gone(pid), "a process {pid} was left behind");
    err
}

#[test]
fn restore_refuses_a_pid_in_use() {
    let dir = scratch("files-collision");
    files::prepare(&dir);
    let mut v = Victim::spawn(&dir, files::victim);
    let img = dump(&v, &["-R"]);
    let out = crest(&["restore", "-D", img.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "restore: {err}");
    assert!(err.contains(&v.pid.to_string()), "names the pid: {err}");
    // The original is untouched: it runs and passes its own checks.
    assert!(v.try_reap().is_none(), "the original died");
    assert_ne!(proc_state(v.pid), Some('T'));
    v.go();
    assert_eq!(v.wait_report(|| None).trim(), "pass");
    let status = v.reap();
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Dumps (and so kills) a files victim; its pid and image directory.
fn dumped_files_victim(name: &str) -> (Victim, PathBuf) {
    let dir = scratch(name);
    files::prepare(&dir);
    let mut v = Victim::spawn(&dir, files::victim);
    let img = dump(&v, &[]);
    assert!(libc::WIFSIGNALED(v.reap()));
    (v, img)
}

#[test]
fn restore_refuses_a_corrupted_mm_image() {
    let (v, img) = dumped_files_victim("corrupt-mm");
    let mm = img.join(format!("mm-{}.img", v.pid));
    let mut bytes = std::fs::read(&mm).unwrap();
    assert!(bytes.len() > 64, "mm image too small to corrupt");
    for i in [bytes.len() / 2, bytes.len() / 2 + 1, bytes.len() - 9] {
        bytes[i] ^= 0x5a;
    }
    std::fs::write(&mm, &bytes).unwrap();
    let err = refused(&img, v.pid);
    assert!(
        err.contains(&format!("mm-{}.img", v.pid)),
        "names the file: {err}"
    );
    let _ = std::fs::remove_dir_all(&v.dir);
}

#[test]
fn restore_refuses_a_truncated_pages_file() {
    let (v, img) = dumped_files_victim("truncated-pages");
    let pages = img.join(format!("pages-{}.img", v.pid));
    let len = std::fs::metadata(&pages).unwrap().len();
    assert!(len > 8192, "pages file of {len} bytes");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&pages)
        .unwrap();
    f.set_len(len / 2).unwrap();
    let err = refused(&img, v.pid);
    assert!(err.contains("pages"), "names the pages file: {err}");
    let _ = std::fs::remove_dir_all(&v.dir);
}

#[test]
fn restore_refuses_a_missing_open_file() {
    let (v, img) = dumped_files_victim("missing-file");
    let data = v.dir.join(files::DATA);
    std::fs::remove_file(&data).unwrap();
    let err = refused(&img, v.pid);
    assert!(
        err.contains(data.to_str().unwrap()),
        "names the missing file: {err}"
    );
    let _ = std::fs::remove_dir_all(&v.dir);
}

/// Reads the victim's ready text value `key=N`.
fn ready_value(v: &Victim, key: &str) -> i32 {
    let text = v.ready_text();
    let word = text.split_whitespace().find_map(|w| w.strip_prefix(key));
    word.and_then(|w| w.strip_prefix('=')?.parse().ok())
        .unwrap_or_else(|| panic!("{key}= in {text:?}"))
}

/// Where the spinner's rbx/x19 (NT_PRSTATUS) and xmm8/v8 (NT_PRFPREG) are
/// in the register sets, as u64 indices.
#[cfg(target_arch = "x86_64")]
const SPIN_REGS: [(i32, usize); 2] = [(libc::NT_PRSTATUS, 5), (libc::NT_PRFPREG, 36)];
#[cfg(target_arch = "aarch64")]
const SPIN_REGS: [(i32, usize); 2] = [(libc::NT_PRSTATUS, 19), (libc::NT_PRFPREG, 16)];

/// Gets or sets register set `note` of a ptrace-stopped thread.
fn regset(tid: i32, set: bool, note: i32, regs: &mut [u64; 128]) -> i64 {
    // The request's integer type differs between libcs: let it be inferred.
    let req = if set {
        libc::PTRACE_SETREGSET
    } else {
        libc::PTRACE_GETREGSET
    };
    let mut iov = libc::iovec {
        iov_base: regs.as_mut_ptr().cast(),
        iov_len: std::mem::size_of_val(regs),
    };
    // SAFETY: iov points at a live buffer large enough for the set.
    unsafe { libc::ptrace(req, tid, note as usize, &mut iov) }
}

/// Flips one bit of register `which` of SPIN_REGS in thread `tid`.
fn flip_register(tid: i32, which: usize) {
    // SAFETY: ptrace of a thread of this test's own victim.
    unsafe {
        assert_eq!(libc::ptrace(libc::PTRACE_SEIZE, tid, 0, 0), 0, "seize");
        assert_eq!(libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0), 0);
        let mut status = 0;
        assert_eq!(libc::waitpid(tid, &mut status, libc::__WALL), tid);
    }
    let (note, index) = SPIN_REGS[which];
    let mut regs = [0u64; 128];
    assert_eq!(regset(tid, false, note, &mut regs), 0);
    regs[index] ^= 1 << 12;
    assert_eq!(regset(tid, true, note, &mut regs), 0);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::ptrace(libc::PTRACE_DETACH, tid, 0, 0) }, 0);
}

/// The spinner's register checks can fail: a general or a vector register
/// changed behind its back (with ptrace) is reported.
#[test]
fn threads_victim_detects_a_changed_register() {
    for which in 0..SPIN_REGS.len() {
        let dir = scratch(&format!("threads-neg-{which}"));
        let mut v = Victim::spawn(&dir, threads::victim);
        flip_register(ready_value(&v, "spinner"), which);
        v.go();
        let report = v.wait_report(|| None);
        let status = v.reap();
        assert!(report.contains("register change"), "{which}: {report}");
        assert_eq!(libc::WEXITSTATUS(status), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The signals victim's checks can fail: a pending signal queued twice
/// (as a restore that queues it again would) is reported.
#[test]
fn signals_victim_detects_a_doubled_pending_signal() {
    let dir = scratch("signals-neg");
    let mut v = Victim::spawn(&dir, signals::victim);
    signals::queue(v.pid, 0, signals::shared_sig(), signals::SHARED_VALUE)
        .unwrap_or_else(|m| panic!("{}", m.as_str()));
    v.go();
    let report = v.wait_report(|| None);
    let status = v.reap();
    assert!(report.contains("arrived 2 times"), "{report}");
    assert_eq!(libc::WEXITSTATUS(status), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Without -d crest exits with the restored process's exit code: a victim
/// whose check fails (the test appended to its O_APPEND file once the
/// victim answered a ping) exits 1, and so does crest.
#[test]
fn restore_exits_with_the_restored_exit_code() {
    let (mut v, img) = dumped_files_victim("exit-code");
    let mut r = Restore::start(&img, &[]);
    v.adopt();
    v.ping(|| r.failed());
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(v.dir.join(files::APPEND))
        .unwrap();
    std::io::Write::write_all(&mut f, b"intruder\n").unwrap();
    v.go();
    let report = v.wait_report(|| r.failed().filter(|_| v.report().is_none()));
    assert!(report.starts_with("fail: append.log holds"), "{report}");
    assert_eq!(r.code(), Some(1), "{}", r.stderr());
    v.forget();
    let _ = std::fs::remove_dir_all(&v.dir);
}

/// Without -d crest exits 128+N when the restored process dies of signal N.
#[test]
fn restore_exits_128_plus_the_signal() {
    let (mut v, img) = dumped_files_victim("exit-signal");
    let mut r = Restore::start(&img, &[]);
    v.adopt();
    v.ping(|| r.failed());
    // SAFETY: the restored victim, created by this test's crest.
    unsafe { libc::kill(v.pid, libc::SIGKILL) };
    assert_eq!(r.code(), Some(128 + libc::SIGKILL), "{}", r.stderr());
    assert!(v.report().is_none(), "the victim ran its checks");
    v.forget();
    let _ = std::fs::remove_dir_all(&v.dir);
}

/// All or nothing: a restore that fails at any step, in crest or in the
/// restorer blob (CREST_FAULT injects the failure), exits 1 naming the
/// step and leaves no process or thread behind; the image stays good, so a
/// last restore without the fault brings the victim back and it passes.
#[test]
fn a_failed_restore_leaves_nothing_behind_at_every_step() {
    let dir = scratch("fault-steps");
    let mut v = Victim::spawn(&dir, threads::victim);
    let tids: Vec<i32> = std::fs::read_dir(format!("/proc/{}/task", v.pid))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
        .collect();
    assert!(tids.len() > 1, "the threads victim has threads: {tids:?}");
    let img = dump(&v, &[]);
    assert!(libc::WIFSIGNALED(v.reap()));
    let restorer = crest::restore::run::RESTORER_STEPS.map(|s| format!("restorer-{s}"));
    let steps = crest::restore::run::FAULT_STEPS
        .iter()
        .map(|s| s.to_string());
    for step in steps.chain(restorer) {
        let out = Command::new(env!("CARGO_BIN_EXE_crest"))
            .args(["restore", "-D", img.to_str().unwrap()])
            .env("CREST_FAULT", &step)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{step}: {err}");
        assert!(
            err.contains("fault injection") || err.contains("ECANCELED"),
            "{step}: the reason is the injected fault: {err}"
        );
        for &tid in &tids {
            assert!(pid_gone(tid), "{step}: task {tid} was left behind");
        }
    }
    restore_and_check(&mut v, &img, false);
    let _ = std::fs::remove_dir_all(&dir);
}
