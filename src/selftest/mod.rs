//! `crest selftest`: one checkpoint/restore round trip on this machine,
//! through the real dump and restore code, of a workload that verifies
//! itself afterwards.
//!
//! ```text
//!  check (required features) ─► mkdtemp $TMPDIR/crest-selftest-XXXX
//!  ─► exec /proc/self/exe selftest --workload DIR ─► DIR/ready
//!  ─► dump::run (kills it) ─► reap ─► restore::run (detached: crest stays
//!     its parent) ─► DIR/go ─► the workload checks itself, DIR/report
//!  ─► wait for its exit status ─► report; DIR removed, no process left
//! ```
//!
//! The workload is crest itself (see [`workload`]), so the self-test needs
//! nothing but the binary. Dump and restore run in this process as library
//! calls: the same code paths as `crest dump` and `crest restore`, and the
//! restored workload is this process's child, which it reaps. Guards kill
//! whatever workload exists and remove the directory on every exit path.

pub mod inspect;
pub mod workload;

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::sys::Pid;
use crate::sys::process::{SIGKILL, WNOHANG, kill, wait4};

/// The workload's ready file: `pid P` and `tids T...` lines.
pub const READY: &str = "ready";
/// Created by crest once the workload is restored.
pub const GO: &str = "go";
/// The workload's verdict: `ok ...` lines, then `pass` or `fail: REASON`.
pub const REPORT: &str = "report";
/// The regular file the workload keeps open.
pub const DATA: &str = "data";
/// How long each wait on the workload may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A fresh 0700 directory under $TMPDIR (or /tmp), removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn create() -> Result<TempDir> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::temp_dir();
        let mut last = None;
        for attempt in 0..32u32 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let name = format!(
                "crest-selftest-{}-{:x}",
                std::process::id(),
                nanos ^ attempt
            );
            let path = base.join(name);
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(TempDir(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(Error::io("create the temporary directory", path, e)),
            }
        }
        let e = last.unwrap_or_else(|| std::io::Error::other("no free name"));
        Err(Error::io("create a temporary directory in", base, e))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            crate::warn!("selftest: cannot remove {}: {e}", self.0.display());
        }
    }
}

/// The workload in whichever form it exists; killed and reaped on drop.
enum Workload {
    None,
    Started(std::process::Child),
    Restored(Pid),
}

impl Workload {
    /// Forgets a workload that was reaped: its pid may belong to another
    /// process by now and must never be signalled.
    fn reaped(&mut self) {
        std::mem::forget(std::mem::replace(self, Workload::None));
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        match self {
            Workload::None => {}
            Workload::Started(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Workload::Restored(pid) => {
                let _ = kill(*pid, SIGKILL);
                let _ = wait4(*pid, 0);
            }
        }
    }
}

/// The measurements of a round trip.
struct Round {
    pid: Pid,
    tids: String,
    dump: Duration,
    restore: Duration,
    image_bytes: u64,
    image_files: usize,
}

/// Runs the self-test, printing the report to `out`; 0 when the workload
/// verified itself after the restore.
pub fn run(out: &mut dyn Write) -> Result<i32> {
    let say = |out: &mut dyn Write, line: String| {
        // The report is for a person; a closed stdout must not stop the test.
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    say(
        out,
        "crest selftest: checkpoint and restore a small multi-threaded process".into(),
    );
    say(out, check()?);
    let dir = TempDir::create()?;
    let mut w = Workload::None;
    let round = round_trip(&dir.0, &mut w, &mut |l| say(out, l))?;
    let (report, verdict) = finish(&dir.0, &mut w, round.pid);
    for line in report.lines().filter_map(|l| l.strip_prefix("ok ")) {
        say(out, format!("  verified  {line}"));
    }
    verdict?;
    say(
        out,
        format!(
            "passed: pid {} (threads {}) came back and verified itself; dump {:.1} ms, restore {:.1} ms, image {:.1} MiB in {} files",
            round.pid,
            round.tids,
            ms(round.dump),
            ms(round.restore),
            round.image_bytes as f64 / (1 << 20) as f64,
            round.image_files
        ),
    );
    Ok(0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The required features of `crest check`; an error naming the missing ones.
fn check() -> Result<String> {
    let start = Instant::now();
    let required: Vec<_> = crate::check::FEATURES
        .iter()
        .filter(|f| f.category == crate::check::Category::Required)
        .collect();
    let report = crate::check::probe_all(&required, true);
    if !report.failed_required.is_empty() {
        let why: Vec<String> = report
            .rows
            .iter()
            .filter(|r| report.failed_required.contains(&r.feature.name))
            .map(|r| format!("{} ({})", r.feature.name, r.text))
            .collect();
        return Err(Error::Unsupported(format!(
            "this machine cannot checkpoint and restore: required features missing: {}; `crest check` says what brings them",
            why.join(", ")
        )));
    }
    Ok(format!(
        "  check     {} required kernel features ok ({:.1} ms)",
        report.rows.len(),
        ms(start.elapsed())
    ))
}

/// Starts the workload, dumps it, restores it; `w` holds it throughout.
fn round_trip(dir: &Path, w: &mut Workload, say: &mut dyn FnMut(String)) -> Result<Round> {
    let (pid, tids) = start_workload(dir, w)?;
    say(format!("  workload  pid {pid}, threads {tids}: ready"));
    let images = dir.join("img");
    let start = Instant::now();
    let opts = crate::dump::run::DumpOptions {
        pid,
        dir: images.clone(),
        leave_running: false,
        command_line: vec!["selftest".into()],
        external: Vec::new(),
        files: Default::default(),
    };
    crate::dump::run::run(&opts).map_err(|e| phase("dump", e))?;
    let dump = start.elapsed();
    reap_original(w, pid)?;
    let (image_bytes, image_files) = image_size(&images)?;
    say(format!(
        "  dump      {:.1} ms, {:.1} MiB in {image_files} files; the workload was killed",
        ms(dump),
        image_bytes as f64 / (1 << 20) as f64
    ));
    let restore = restore_workload(images, w, pid)?;
    same_threads(pid, &tids)?;
    say(format!(
        "  restore   {:.1} ms; /proc shows pid {pid} with threads {tids} again",
        ms(restore)
    ));
    Ok(Round {
        pid,
        tids,
        dump,
        restore,
        image_bytes,
        image_files,
    })
}

/// Starts the workload in its own process group with /dev/null on 0-2 and
/// waits until it is ready; its pid and thread ids.
fn start_workload(dir: &Path, w: &mut Workload) -> Result<(Pid, String)> {
    let exe = PathBuf::from("/proc/self/exe");
    let child = std::process::Command::new(&exe)
        .arg("selftest")
        .arg("--workload")
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| Error::io("start the workload", exe, e))?;
    let pid = child.id() as Pid;
    *w = Workload::Started(child);
    Ok((pid, wait_ready(dir, w, pid)?))
}

/// Restores the image with crest's restore code, this process staying the
/// parent (detached: the wait is [`finish`]'s); how long it took.
fn restore_workload(images: PathBuf, w: &mut Workload, pid: Pid) -> Result<Duration> {
    let start = Instant::now();
    let opts = crate::restore::run::RestoreOptions {
        dir: images,
        detach: true,
        pidfile: None,
        shell_job: false,
    };
    crate::restore::run::run(&opts).map_err(|e| phase("restore", e))?;
    *w = Workload::Restored(pid);
    Ok(start.elapsed())
}

/// Checks from outside, before the workload's own checks, that the
/// restored process has the thread ids it was dumped with.
fn same_threads(pid: Pid, tids: &str) -> Result<()> {
    let dir = format!("/proc/{pid}/task");
    let entries = std::fs::read_dir(&dir).map_err(|e| Error::io("read", &dir, e))?;
    let mut now: Vec<i64> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    now.sort_unstable();
    let want: Vec<i64> = tids.split(' ').filter_map(|t| t.parse().ok()).collect();
    if now != want {
        return Err(Error::Target {
            pid,
            problem: format!("restored with threads {now:?}, dumped with {want:?}"),
        });
    }
    Ok(())
}

fn phase(what: &str, e: Error) -> Error {
    Error::Unsupported(format!("selftest: the {what} of the workload failed: {e}"))
}

/// Waits for the ready file; its `tids` line.
fn wait_ready(dir: &Path, w: &mut Workload, pid: Pid) -> Result<String> {
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(dir.join(READY)) {
            let tids = text.lines().find_map(|l| l.strip_prefix("tids "));
            return Ok(tids.unwrap_or("?").to_string());
        }
        if let Workload::Started(child) = w
            && let Ok(Some(status)) = child.try_wait()
        {
            w.reaped();
            return Err(workload_failed(
                dir,
                pid,
                &format!("ended during setup ({status})"),
            ));
        }
        if start.elapsed() > TIMEOUT {
            return Err(workload_failed(dir, pid, "was not ready in time"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn workload_failed(dir: &Path, pid: Pid, what: &str) -> Error {
    let report = std::fs::read_to_string(dir.join(REPORT)).unwrap_or_default();
    let reason = report
        .lines()
        .find_map(|l| l.strip_prefix("fail: "))
        .unwrap_or("no report");
    Error::Target {
        pid,
        problem: format!("the self-test workload {what}: {reason}"),
    }
}

/// The dump killed the original: reap it so its pid is free again.
fn reap_original(w: &mut Workload, pid: Pid) -> Result<()> {
    if let Workload::Started(child) = w {
        let status = child
            .wait()
            .map_err(|e| Error::io("wait for the workload", format!("pid {pid}"), e))?;
        w.reaped();
        if std::os::unix::process::ExitStatusExt::signal(&status) != Some(SIGKILL) {
            return Err(Error::Target {
                pid,
                problem: format!("after the dump the workload ended with {status}, not SIGKILL"),
            });
        }
    }
    Ok(())
}

/// Total bytes and number of files of the image.
fn image_size(images: &Path) -> Result<(u64, usize)> {
    let entries = std::fs::read_dir(images).map_err(|e| Error::io("read", images, e))?;
    let mut total = (0, 0);
    for e in entries {
        let meta = e
            .and_then(|e| e.metadata())
            .map_err(|e| Error::io("read", images, e))?;
        total = (total.0 + meta.len(), total.1 + 1);
    }
    Ok(total)
}

/// Lets the restored workload verify itself; its report, and whether it
/// passed.
fn finish(dir: &Path, w: &mut Workload, pid: Pid) -> (String, Result<()>) {
    let read = || std::fs::read_to_string(dir.join(REPORT)).unwrap_or_default();
    if let Err(e) = std::fs::write(dir.join(GO), b"") {
        return (read(), Err(Error::io("create", dir.join(GO), e)));
    }
    let start = Instant::now();
    let status = loop {
        match wait4(pid, WNOHANG) {
            Ok((got, status)) if got == pid => break status,
            Ok(_) | Err(crate::sys::Errno::EINTR) => {}
            Err(e) => {
                let e = Error::sys("wait4", format!("waiting for pid {pid}"), e);
                return (read(), Err(e));
            }
        }
        if start.elapsed() > TIMEOUT {
            let e = workload_failed(dir, pid, "did not finish its checks in time");
            return (read(), Err(e));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    w.reaped();
    let report = read();
    if status == 0 && report.lines().last() == Some("pass") {
        return (report, Ok(()));
    }
    let how = if status & 0x7f == 0 {
        format!("exited with status {}", (status >> 8) & 0xff)
    } else {
        format!("was killed by signal {}", status & 0x7f)
    };
    let what = format!("failed its own checks after the restore ({how})");
    (report, Err(workload_failed(dir, pid, &what)))
}
