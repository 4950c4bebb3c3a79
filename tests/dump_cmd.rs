//! `crest dump` end to end: the real binary against forked, self-checking
//! victims (tests/dump_cmd/victim.rs). Ground truth is the victim's own
//! self-check after the dump, waitpid, /proc/PID/status, and the victim's
//! pattern function compared with the pages read back through `PageIndex`.

#[path = "dump_cmd/victim.rs"]
mod victim;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crest::image::ImageDir;
use crest::image::dir::pagemap_file;
use crest::image::pagemap::RunKind;
use crest::image::pages::PageIndex;
use victim::*;

fn scratch(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("crest-dump-cmd-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn crest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crest"))
        .args(args)
        .output()
        .expect("run crest")
}

fn dump(pid: i32, dir: &Path, extra: &[&str]) -> Output {
    let pid = pid.to_string();
    let mut args = vec!["dump", "-t", &pid, "-D", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    crest(&args)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The process state letter from /proc/PID/status.
fn state(pid: i32) -> char {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with("State:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .chars()
        .next()
        .unwrap()
}

fn tracer(pid: i32) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with("TracerPid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().to_string()
}

/// Every page of the victim's region is in the image with the pattern.
fn assert_region_pages(dir: &Path, v: &Victim) {
    let d = ImageDir::open(dir).unwrap();
    let idx = PageIndex::load(&d, &pagemap_file(v.pid as u32)).expect("load the page index");
    let data = d.open_file(&idx.head.pages_file).unwrap();
    let ps = page_size();
    let base = v.get(REGION);
    for page in 0..PAGES {
        let (run, at) = idx
            .find(base + page * ps)
            .unwrap_or_else(|| panic!("page {page} of the region is not in the image"));
        assert_eq!(run.kind, RunKind::Present, "page {page}");
        let mut buf = vec![0u8; (run.nr_pages * ps) as usize];
        idx.read_run(&data, run, &mut buf).expect("read a run");
        let off = (at * ps) as usize;
        assert!(
            buf[off..off + ps as usize] == pattern_page(page)[..],
            "page {page} differs from the pattern"
        );
    }
}

#[test]
fn dump_leave_running_writes_a_full_image_and_the_victim_runs_on() {
    let dir = scratch("r");
    let v = Victim::spawn(&dir, Extra::None);
    let img = dir.join("img");
    let out = dump(v.pid, &img, &["-R"]);
    assert!(out.status.success(), "dump -R failed: {}", stderr(&out));
    assert!(v.runs(), "the victim runs after dump -R");
    assert_eq!(tracer(v.pid), "0", "nothing traces the victim any more");
    assert_eq!(v.self_check(), 0, "failed self-check bits");
    let show = crest(&["show", img.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(show.status.success(), "show: {text}{}", stderr(&show));
    let tid = v.get(THREAD_TID);
    assert!(
        text.contains(&format!("threads {},{tid}", v.pid)),
        "both threads listed: {text}"
    );
    let main_core = text
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("thread {} ", v.pid)))
        .expect("the main thread's core");
    // SIGUSR2 (bit 11) is blocked and pending in the main thread. The dump
    // may catch it inside a handler of its timers or SIGUSR1, which blocks
    // SIGINT (sa_mask) and its own signal besides.
    let mask = main_core
        .split_whitespace()
        .find_map(|w| w.strip_prefix("sigmask=0x"))
        .and_then(|m| u64::from_str_radix(m, 16).ok())
        .unwrap_or_else(|| panic!("no sigmask in {main_core}"));
    let bit = |sig: i32| 1u64 << (sig - 1);
    let in_handler = bit(libc::SIGINT) | bit(libc::SIGUSR1) | bit(libc::SIGALRM) | bit(SIG_TIMER);
    assert_ne!(mask & bit(libc::SIGUSR2), 0, "{main_core}");
    assert_eq!(mask & !(bit(libc::SIGUSR2) | in_handler), 0, "{main_core}");
    assert!(main_core.contains("pending=1"), "{main_core}");
    assert!(
        text.contains(&format!("thread {tid} ")),
        "the second thread's core"
    );
    // The region may have merged with a neighbouring anonymous VMA (the
    // layout differs between kernels): some VMA row must cover it.
    let region = v.get(REGION);
    let covered = text.lines().any(|l| {
        let mut w = l.split_whitespace();
        let hex =
            |f: Option<&str>| f.and_then(|f| u64::from_str_radix(f.strip_prefix("0x")?, 16).ok());
        matches!((hex(w.next()), hex(w.next())), (Some(a), Some(b)) if a <= region && region < b)
    });
    assert!(covered, "a VMA covers the region at {region:#x}:\n{text}");
    let regular = dir.join("regular");
    assert!(text.contains(&format!("fd {FILE_FD}")), "the file fd");
    assert!(text.contains(regular.to_str().unwrap()), "the file path");
    assert!(text.contains(&format!("fd {NULL_FD}")), "the /dev/null fd");
    assert!(text.contains("options: dump -t"), "the command line");
    assert_region_pages(&img, &v);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dump_without_leave_running_kills_the_victim() {
    let dir = scratch("kill");
    let mut v = Victim::spawn(&dir, Extra::None);
    let img = dir.join("img");
    let out = dump(v.pid, &img, &[]);
    assert!(out.status.success(), "dump failed: {}", stderr(&out));
    let status = v.reap();
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
        "killed by SIGKILL, status {status:#x}"
    );
    let show = crest(&["show", img.to_str().unwrap()]);
    assert!(show.status.success(), "show: {}", stderr(&show));
    assert_region_pages(&img, &v);
    // The inventory marks a complete image: without it, show says so.
    std::fs::remove_file(img.join("inventory.img")).unwrap();
    let show = crest(&["show", img.to_str().unwrap()]);
    assert_eq!(show.status.code(), Some(1));
    let all = format!("{}{}", String::from_utf8_lossy(&show.stdout), stderr(&show));
    assert!(
        all.contains("inventory.img"),
        "names the missing inventory: {all}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dump_leave_running_keeps_a_stopped_victim_stopped() {
    let dir = scratch("stopped");
    let v = Victim::spawn(&dir, Extra::None);
    // SAFETY: our own child.
    unsafe { libc::kill(v.pid, libc::SIGSTOP) };
    let start = Instant::now();
    while state(v.pid) != 'T' {
        assert!(start.elapsed() < Duration::from_secs(2), "never stopped");
        std::thread::sleep(Duration::from_millis(1));
    }
    let img = dir.join("img");
    let out = dump(v.pid, &img, &["--leave-running"]);
    assert!(out.status.success(), "dump failed: {}", stderr(&out));
    assert!(!v.runs(), "a stopped victim does not run after the dump");
    assert_eq!(state(v.pid), 'T');
    let show = crest(&["show", img.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(text.contains("stopped"), "recorded as stopped: {text}");
    // SAFETY: our own child.
    unsafe { libc::kill(v.pid, libc::SIGCONT) };
    assert!(v.runs());
    assert_eq!(v.self_check(), 0, "failed self-check bits");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dump_of_a_missing_pid_fails_naming_it() {
    // A pid that just ended and was reaped.
    // SAFETY: the child exits at once.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: ends the child without running the harness's code.
        unsafe { libc::_exit(0) };
    }
    // SAFETY: our own child.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    let dir = scratch("missing");
    let out = dump(pid, &dir.join("img"), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(&pid.to_string()), "{}", stderr(&out));
    assert!(!dir.join("img/inventory.img").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A victim holding `extra` is refused before it is touched, with one
/// sentence naming the fd and `kind`, and runs on unharmed.
fn refused(name: &str, extra: Extra, kind: &str) {
    let dir = scratch(name);
    let v = Victim::spawn(&dir, extra);
    let img = dir.join("img");
    let out = dump(v.pid, &img, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("fd {EXTRA_FD}")), "{err}");
    assert!(err.contains(kind), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");
    assert!(v.runs(), "the victim still runs");
    assert_eq!(tracer(v.pid), "0");
    assert!(!img.join("inventory.img").exists());
    assert_eq!(v.self_check(), 0, "failed self-check bits");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dump_refuses_an_io_uring_and_leaves_the_victim_unharmed() {
    refused("io_uring", Extra::IoUring, "an io_uring instance");
}

#[test]
fn dump_copies_a_pipe_with_its_queued_bytes() {
    // Once refused; the pipe data is now dumped (tests/dump_pipes.rs checks
    // the bytes stay in the victim's pipe).
    let dir = scratch("pipe");
    let v = Victim::spawn(&dir, Extra::Pipe);
    let img = dir.join("img");
    let out = dump(v.pid, &img, &["-R"]);
    assert!(out.status.success(), "dump -R failed: {}", stderr(&out));
    let files =
        crest::image::load::FilesImage::load(&ImageDir::open(&img).unwrap(), v.pid as u32).unwrap();
    assert_eq!(files.pipes.len(), 1, "{files:?}");
    assert_eq!(files.pipes[0].data, b"data");
    assert_eq!(v.self_check(), 0, "failed self-check bits");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dump_log_goes_into_the_images_dir_and_an_image_is_never_overwritten() {
    let dir = scratch("log");
    let v = Victim::spawn(&dir, Extra::None);
    let img = dir.join("img");
    let out = dump(v.pid, &img, &["-R", "-o", "dump.log", "-v4"]);
    assert!(out.status.success(), "dump failed: {}", stderr(&out));
    let log = std::fs::read_to_string(img.join("dump.log")).expect("the log in DIR");
    assert!(
        log.contains(&format!("pid {}: injecting the parasite", v.pid)),
        "{log}"
    );
    let before = std::fs::read(img.join("inventory.img")).unwrap();
    let again = dump(v.pid, &img, &["-R"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("already"), "{}", stderr(&again));
    assert_eq!(std::fs::read(img.join("inventory.img")).unwrap(), before);
    assert_eq!(v.self_check(), 0, "failed self-check bits");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dump_usage_errors_exit_2() {
    for args in [
        &["dump", "-D", "/tmp/crest-never"][..],
        &["dump", "-t", "1"][..],
        &["dump", "-t", "abc", "-D", "/tmp/crest-never"][..],
        &["dump", "-t", "1", "-D", "/tmp/crest-never", "extra"][..],
    ] {
        let out = crest(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    assert!(!Path::new("/tmp/crest-never").exists());
}

/// /proc/PID/maps and the fd table, to compare before and after a dump.
fn maps_and_fds(pid: i32) -> (String, Vec<String>) {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let target = std::fs::read_link(e.path()).unwrap();
            format!("{} {}", e.file_name().to_string_lossy(), target.display())
        })
        .collect();
    fds.sort();
    (maps, fds)
}

#[test]
fn dump_failing_at_every_step_leaves_the_victim_intact_and_no_inventory() {
    let dir = scratch("faults");
    let v = Victim::spawn(&dir, Extra::None);
    let before = maps_and_fds(v.pid);
    for step in crest::dump::run::FAULT_STEPS {
        let img = dir.join(format!("img-{step}"));
        let pid = v.pid.to_string();
        let out = Command::new(env!("CARGO_BIN_EXE_crest"))
            .args(["dump", "-t", &pid, "-D", img.to_str().unwrap()])
            .env("CREST_FAULT", step)
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{step}: {err}");
        assert!(err.contains(&format!("`{step}`")), "{step}: {err}");
        assert!(!img.join("inventory.img").exists(), "{step}");
        assert_eq!(tracer(v.pid), "0", "{step}");
        assert!(v.runs(), "{step}: the victim runs");
        assert_eq!(
            maps_and_fds(v.pid),
            before,
            "{step}: maps and fds as before"
        );
        let show = crest(&["show", img.to_str().unwrap()]);
        assert_eq!(show.status.code(), Some(1), "{step}: an incomplete image");
    }
    assert_eq!(v.self_check(), 0, "failed self-check bits");
    let _ = std::fs::remove_dir_all(&dir);
}
