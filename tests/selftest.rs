//! `crest selftest` as a user runs it: the real binary, its report, its
//! exit status, and what it leaves behind (nothing: no temporary directory,
//! no process). The failure paths use fault injection: the workload
//! corrupting its own memory after the restore (its checks must catch it),
//! and a dump failing halfway.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A fresh, empty directory to serve as $TMPDIR for one run.
fn tmpdir(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("crest-selftest-tests")
        .join(name);
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn selftest(tmp: &Path, fault: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_crest"));
    cmd.arg("selftest")
        .env("TMPDIR", tmp)
        .env_remove("CREST_FAULT")
        .stdin(Stdio::null());
    if let Some(f) = fault {
        cmd.env("CREST_FAULT", f);
    }
    cmd.output().expect("run crest selftest")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The processes whose command line mentions `tmp` (the workload runs from
/// a copy of crest there, with its directory as argument).
fn processes_using(tmp: &Path) -> Vec<String> {
    let needle = tmp.to_str().unwrap().as_bytes();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if cmdline.windows(needle.len()).any(|w| w == needle) {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            found.push(format!("{name}: {stat}"));
        }
    }
    found
}

/// Nothing is left: $TMPDIR is empty again and no process uses it.
fn assert_clean(tmp: &Path) {
    let left: Vec<_> = std::fs::read_dir(tmp).unwrap().flatten().collect();
    assert!(left.is_empty(), "left in $TMPDIR: {left:?}");
    let procs = processes_using(tmp);
    assert!(procs.is_empty(), "processes left: {procs:?}");
}

/// The pid on the report's `workload  pid N, ...` line.
fn workload_pid(out: &str) -> i32 {
    let line = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("workload  pid "))
        .unwrap_or_else(|| panic!("no workload line in {out}"));
    line.split(',').next().unwrap().parse().unwrap()
}

#[test]
fn selftest_round_trip_passes_and_reports() {
    let tmp = tmpdir("pass");
    let out = selftest(&tmp, None);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let pid = workload_pid(&stdout);
    for want in [
        "required kernel features ok",
        "dump ",
        "restore ",
        &format!("verified  pid {pid} and thread ids ["),
        "verified  memory: 4 MiB heap pattern",
        "verified  3 thread counters kept their values and keep increasing",
        "verified  blocked SIGWINCH (process) and SIGURG",
        "verified  POSIX timers (id, clock)",
        "verified  cwd, and the open data file at offset 1000",
        &format!("passed: pid {pid} "),
        " MiB in ",
    ] {
        assert!(stdout.contains(want), "report lacks {want:?}:\n{stdout}");
    }
    // Read-only where the build applies RELRO (every build but the aarch64
    // static PIE, whose musl start code does not), its content either way.
    let relro = stdout.contains("verified  read-only data (pointers, relocated in a PIE) at 0x")
        || (cfg!(target_arch = "aarch64") && stdout.contains("verified  relocated data at 0x"));
    assert!(relro, "report lacks the relocated data line:\n{stdout}");
    // Four thread ids (main + 3 workers), the first one the pid.
    let tids = stdout
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix(&format!("workload  pid {pid}, threads "))
        })
        .unwrap();
    let tids: Vec<&str> = tids.trim_end_matches(": ready").split(' ').collect();
    assert_eq!(tids.len(), 4, "{tids:?}");
    assert_eq!(tids[0], pid.to_string());
    assert!(stderr.is_empty(), "stderr: {stderr}");
    assert_clean(&tmp);
}

#[test]
fn selftest_fails_when_the_restored_workload_finds_a_changed_word() {
    let tmp = tmpdir("verify-fault");
    let out = selftest(&tmp, Some("selftest-verify"));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("failed its own checks after the restore (exited with status 1)"),
        "{stderr}"
    );
    // The word the workload flipped: a third into its 4 MiB pattern.
    assert!(
        stderr.contains("heap pattern word 174762 (page 341)"),
        "{stderr}"
    );
    assert!(
        stdout.contains("restore "),
        "the restore itself worked: {stdout}"
    );
    assert!(!stdout.contains("passed"), "{stdout}");
    assert_clean(&tmp);
}

#[test]
fn selftest_fails_cleanly_when_the_dump_fails() {
    let tmp = tmpdir("dump-fault");
    let out = selftest(&tmp, Some("pages"));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("the dump of the workload failed") && stderr.contains("CREST_FAULT asks"),
        "{stderr}"
    );
    assert!(!stdout.contains("passed"), "{stdout}");
    assert_clean(&tmp);
}

#[test]
fn selftest_refuses_arguments() {
    let out = Command::new(env!("CARGO_BIN_EXE_crest"))
        .args(["selftest", "extra"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unexpected argument `extra`"));
}

/// Without privileges the required features are missing: crest names them
/// and stops before starting anything.
#[test]
fn selftest_without_privileges_names_the_missing_features() {
    use std::os::unix::process::CommandExt;
    let tmp = tmpdir("unprivileged");
    let out = Command::new(env!("CARGO_BIN_EXE_crest"))
        .arg("selftest")
        .env("TMPDIR", &tmp)
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::null())
        .output()
        .expect("run crest selftest as nobody");
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("this machine cannot checkpoint and restore: required features missing: ")
            && stderr.contains("clone3_set_tid")
            && stderr.contains("`crest check` says what brings them"),
        "{stderr}"
    );
    assert!(!stdout.contains("workload"), "{stdout}");
    assert_clean(&tmp);
}
