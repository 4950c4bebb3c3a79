//! The zdtm-style round trip of one forked victim (tests/common/victim.rs)
//! through `crest dump` and `crest restore`, shared by the restore test
//! binaries (restore_kinds, restore_fdkinds, restore_unix...): each mode
//! of [`run`], the dump, the restore with crest as the victim's parent,
//! and the dump refusals that must leave the victim running.
//!
//! A test binary takes the macros with `#[macro_use] mod common;` placed
//! before its victim modules: `ensure!` (a failed check in a victim) and
//! `victim_tests!` (the three modes of one victim as three tests).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use super::victim::{Child, Verdict, Victim, crest, pid_gone, scratch};

/// A failed check in a victim: returns the reason from the victim's body
/// (inline in the Err: a forked victim must not allocate).
#[allow(unused_macros)]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(crate::common::victim::Msg::new(format_args!($($fmt)+)));
        }
    };
}

/// The three modes of victim module `$module` (its `prepare` and
/// `victim`) as three tests in a module `$victim`; their scratch
/// directories are named `$prefix` MODULE `-base`, `-R` and `-rt`.
#[allow(unused_macros)]
macro_rules! victim_tests {
    ($victim:ident, $module:ident) => {
        victim_tests!($victim, $module, "");
    };
    ($victim:ident, $module:ident, $prefix:literal) => {
        mod $victim {
            use super::*;
            use crate::common::roundtrip::{Mode, run};
            #[test]
            fn baseline() {
                let name = concat!($prefix, stringify!($module), "-base");
                run(name, $module::prepare, $module::victim, Mode::Baseline);
            }
            #[test]
            fn survives_dump_leave_running() {
                let name = concat!($prefix, stringify!($module), "-R");
                run(name, $module::prepare, $module::victim, Mode::LeaveRunning);
            }
            #[test]
            fn round_trip() {
                let name = concat!($prefix, stringify!($module), "-rt");
                run(name, $module::prepare, $module::victim, Mode::RoundTrip);
            }
        }
    };
}

/// What the test does to a victim between ready and go.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// Nothing: the victim's own checks must pass untouched.
    Baseline,
    /// `dump -R`; the original goes on and must pass.
    LeaveRunning,
    /// dump (kills), restore with crest as the parent.
    RoundTrip,
}

/// A finished command's stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Dumps the victim into `DIR/img` with `extra` options; the image path.
pub fn dump(v: &Victim, extra: &[&str]) -> PathBuf {
    let img = v.dir.join("img");
    let pid = v.pid.to_string();
    let mut args = vec!["dump", "-t", &pid, "-D", img.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = crest(&args);
    assert!(out.status.success(), "dump failed: {}", stderr(&out));
    img
}

/// `crest restore` running in the background, stderr in a file; killed on
/// drop.
pub struct Restore {
    child: std::process::Child,
    err: PathBuf,
}

impl Restore {
    pub fn start(img: &Path, extra: &[&str]) -> Restore {
        Restore::start_env(img, extra, &[])
    }

    /// As `start`, with `env` added to crest's environment.
    pub fn start_env(img: &Path, extra: &[&str], env: &[(&str, &str)]) -> Restore {
        let err = img.with_file_name("restore.stderr");
        let child = Command::new(env!("CARGO_BIN_EXE_crest"))
            .args(["restore", "-D", img.to_str().unwrap()])
            .args(extra)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&err).unwrap())
            .spawn()
            .expect("start crest restore");
        Restore { child, err }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Why waiting for the victim is pointless: crest already failed.
    pub fn failed(&mut self) -> Option<String> {
        match self.child.try_wait().unwrap() {
            Some(s) if !s.success() => Some(format!("crest restore: {s}: {}", self.stderr())),
            _ => None,
        }
    }

    /// crest's exit code (bounded wait).
    pub fn code(&mut self) -> Option<i32> {
        wait_crest(&mut self.child).code()
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (bounded) for a crest command that should be ending.
pub fn wait_crest(crest: &mut std::process::Child) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = crest.try_wait().unwrap() {
            return s;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "crest hangs");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits (bounded) until no live process has `pid`.
pub fn wait_gone(pid: i32) {
    let start = Instant::now();
    while !pid_gone(pid) {
        assert!(start.elapsed() < Duration::from_secs(10), "pid stays");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Restores from `img` with crest as the parent and checks the report.
pub fn restore_and_check(v: &mut Victim, img: &Path) {
    restore_and_check_with(v, img, &[]);
}

/// As [`restore_and_check`], with `extra` restore options; a report the
/// victim left before the dump (-R) is cleared first.
pub fn restore_and_check_with(v: &mut Victim, img: &Path, extra: &[&str]) {
    restore_inspect_and_check(v, img, extra, None);
}

/// As [`restore_and_check_with`]; with `inspect`, the restored victim is
/// pinged (it answers once restored, before its checks) and `inspect` runs
/// before it is let go.
pub fn restore_inspect_and_check(
    v: &mut Victim,
    img: &Path,
    extra: &[&str],
    inspect: Option<&dyn Fn()>,
) {
    let mut r = Restore::start(img, extra);
    v.clear_report();
    v.adopt();
    if let Some(inspect) = inspect {
        v.ping(|| r.failed());
        inspect();
    }
    v.go();
    let report = v.wait_report(|| r.failed());
    let code = r.code();
    assert_eq!(report.trim(), "pass", "restored victim {}", v.pid);
    assert_eq!(code, Some(0), "crest restore: {}", r.stderr());
    v.forget();
}

/// Lets the victim check itself, reaps it: it must pass and exit 0.
pub fn go_and_pass(v: &mut Victim) {
    v.go();
    let report = v.wait_report(|| None);
    let status = v.reap();
    let dir = v.dir.display();
    assert_eq!(report.trim(), "pass", "victim in {dir}");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "victim in {dir}: status {status:#x}"
    );
}

/// One victim through one mode, start to finish.
pub fn run(name: &str, prepare: fn(&Path), body: fn(&Child) -> Verdict, mode: Mode) {
    run_with(name, prepare, body, mode, &[]);
}

/// As [`run`], with `extra` options for every dump.
pub fn run_with(
    name: &str,
    prepare: fn(&Path),
    body: fn(&Child) -> Verdict,
    mode: Mode,
    extra: &[&str],
) {
    let dir = scratch(name);
    prepare(&dir);
    let mut v = Victim::spawn(&dir, body);
    match mode {
        Mode::Baseline | Mode::LeaveRunning => {
            if mode == Mode::LeaveRunning {
                let args: Vec<&str> = ["-R"].iter().chain(extra).copied().collect();
                dump(&v, &args);
                assert!(v.try_reap().is_none(), "the victim runs on after dump -R");
            }
            go_and_pass(&mut v);
        }
        Mode::RoundTrip => {
            let img = dump(&v, extra);
            let status = v.reap();
            assert!(libc::WIFSIGNALED(status), "dump kills: status {status:#x}");
            wait_gone(v.pid);
            restore_and_check(&mut v, &img);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs a refusal victim: the dump must fail naming `want`, and the victim,
/// left running, passes its checks.
pub fn refused(name: &str, body: fn(&Child) -> Verdict, want: &[&str]) {
    refused_with(name, |_| {}, body, &[], want);
}

/// As [`refused`], with `prepare` run first and `extra` dump options.
pub fn refused_with(
    name: &str,
    prepare: fn(&Path),
    body: fn(&Child) -> Verdict,
    extra: &[&str],
    want: &[&str],
) {
    let dir = scratch(name);
    prepare(&dir);
    let mut v = Victim::spawn(&dir, body);
    let img = v.dir.join("img");
    let pid = v.pid.to_string();
    let mut args = vec!["dump", "-t", &pid, "-D", img.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = crest(&args);
    assert!(!out.status.success(), "dump must refuse");
    let err = stderr(&out);
    for w in want {
        assert!(err.contains(w), "message lacks {w:?}: {err}");
    }
    assert!(
        v.try_reap().is_none(),
        "the victim runs on after the refusal"
    );
    go_and_pass(&mut v);
    let _ = std::fs::remove_dir_all(&dir);
}
