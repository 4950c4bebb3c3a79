//! Real programs through a checkpoint and a restore, each verified by the
//! program itself and by what it wrote: a python3 interpreter holding a
//! dict and a loop counter, a bash loop appending to files, and
//! redis-server with keys read back by redis-cli over a unix socket (over
//! TCP it waits for TCP support).
//!
//! Each program is started the way crest can take it: in its own session
//! (setsid), /dev/null on fds 0-2 and no other fd of the test harness
//! (whose pipes could not be restored meaningfully), as a child of the
//! test, which reaps it after the dump kills it (a zombie keeps its pid
//! taken). `crest restore` runs without -d: it stays the restored
//! program's parent and exits with its exit status.
//!
//! A missing interpreter fails the test with the package to install; it
//! never passes silently (only the qemu lanes, which hold nothing but
//! crest's binaries, let such a test end early, saying so).

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("crest-real-programs")
        .join(name);
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// The absolute path of `program` in $PATH. Missing, it fails the test
/// naming the package, except inside a qemu lane (tests/vm), whose
/// initramfs holds only crest's binaries: there the test says so on stderr
/// and returns None, and the caller ends early.
fn need(program: &str, package: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file());
    if found.is_none()
        && let Some(lane) = std::env::var_os("CREST_VM_LANE")
    {
        eprintln!("{program} is not in the {lane:?} lane's initramfs: not run there");
        return None;
    }
    Some(found.unwrap_or_else(|| {
        panic!("`{program}` is not installed; this test needs it (apt-get install {package})")
    }))
}

/// Starts `cmd` as crest can dump it: setsid, /dev/null on 0-2, no other fd.
fn start(mut cmd: Command, dir: &Path) -> Child {
    cmd.current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: between fork and exec only async-signal-safe syscalls run;
    // CLOSE_RANGE_CLOEXEC closes the harness's fds at exec (std's own
    // error pipe keeps working until then).
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0
                || libc::syscall(
                    libc::SYS_close_range,
                    3u32,
                    u32::MAX,
                    libc::CLOSE_RANGE_CLOEXEC,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().expect("start the program")
}

/// Kills and reaps a program on drop, whatever the test did.
struct Program(Child);

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `crest restore` running in the background, stderr in a file; killed on drop.
struct Restore {
    child: Child,
    err: PathBuf,
    pid: i32,
}

impl Restore {
    fn start(img: &Path, pid: i32) -> Restore {
        let err = img.with_file_name("restore.stderr");
        let child = Command::new(env!("CARGO_BIN_EXE_crest"))
            .args(["restore", "-D", img.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&err).unwrap())
            .spawn()
            .expect("start crest restore");
        Restore { child, err, pid }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Why waiting for the program is pointless: crest already exited.
    fn ended(&mut self) -> Option<String> {
        let s = self.child.try_wait().unwrap()?;
        Some(format!("crest restore exited ({s}): {}", self.stderr()))
    }

    /// crest's exit code, which is the restored program's (bounded wait).
    fn code(&mut self) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "crest restore hangs"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // The restored program dies with crest (its parent): kill it first.
            // SAFETY: a process this test restored under this pid.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Dumps `p` (which kills it), reaps it; the image directory.
fn dump(p: &mut Program, dir: &Path) -> PathBuf {
    let img = dir.join("img");
    let pid = p.0.id().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_crest"))
        .args(["dump", "-t", &pid, "-D", img.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .expect("run crest dump");
    assert!(
        out.status.success(),
        "crest dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = p.0.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "the dump kills the program: {status}"
    );
    img
}

/// Polls `probe` until it returns Some; `quit` names why waiting is pointless.
fn wait_for<T>(
    what: &str,
    mut probe: impl FnMut() -> Option<T>,
    mut quit: impl FnMut() -> Option<String>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe() {
            return v;
        }
        if let Some(why) = quit() {
            panic!("waiting for {what}: {why}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no {what} in 20 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The numbers of a file with one number per line; None if a line is not one
/// (a line being written).
fn numbers(path: &Path) -> Option<Vec<u64>> {
    let text = std::fs::read_to_string(path).ok()?;
    if !text.ends_with('\n') {
        return None;
    }
    text.lines().map(|l| l.parse().ok()).collect()
}

/// `v` is exactly 1, 2, ..., n.
fn assert_consecutive(v: &[u64], what: &str) {
    for (i, &n) in v.iter().enumerate() {
        assert_eq!(n, i as u64 + 1, "{what}: line {} is {n}", i + 1);
    }
}

const PYTHON: &str = r#"
import os, sys, time
# State the restore must bring back: a dict built by the interpreter, its
# hash, and a counter kept in a local variable of this frame.
state = {"k%d" % i: i * i for i in range(1000)}
state["nested"] = {"list": list(range(100)), "text": "crest"}
digest = hash(tuple(sorted((k, str(v)) for k, v in state.items())))
log = open("progress.log", "a", buffering=1)
counter = 0
while not os.path.exists("go"):
    counter += 1
    log.write("%d\n" % counter)
    time.sleep(0.002)
seen = int(open("go").read())
problems = []
if any(state["k%d" % i] != i * i for i in range(1000)):
    problems.append("dict values changed")
if state["nested"] != {"list": list(range(100)), "text": "crest"} or len(state) != 1001:
    problems.append("dict shape changed")
if hash(tuple(sorted((k, str(v)) for k, v in state.items()))) != digest:
    problems.append("dict hash changed")
if counter <= seen:
    problems.append("counter %d did not continue past %d" % (counter, seen))
log.close()
lines = [int(l) for l in open("progress.log")]
if lines != list(range(1, counter + 1)):
    problems.append("progress.log is not 1..%d" % counter)
with open("result", "w") as f:
    f.write("fail: " + "; ".join(problems) if problems else "pass %d %d\n" % (counter, len(state)))
sys.exit(1 if problems else 0)
"#;

#[test]
fn python3_keeps_its_dict_and_counter() {
    // The interpreter itself, not a wrapper script (pyenv's shims exec it).
    let Some(python3) = need("python3", "python3") else {
        return;
    };
    let out = Command::new(&python3)
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("run python3");
    let exe = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(out.status.success() && !exe.is_empty(), "python3 -c failed");
    let dir = scratch("python3");
    std::fs::write(dir.join("state.py"), PYTHON).unwrap();
    let mut cmd = Command::new(&exe);
    cmd.arg("state.py");
    let mut p = Program(start(cmd, &dir));
    let pid = p.0.id() as i32;
    let log = dir.join("progress.log");
    wait_for(
        "python's first 20 lines",
        || numbers(&log).filter(|v| v.len() >= 20),
        || None,
    );
    let img = dump(&mut p, &dir);
    let at_dump = numbers(&log).expect("progress.log after the dump");
    assert_consecutive(&at_dump, "progress.log at the dump");
    let seen = at_dump.len();
    let mut r = Restore::start(&img, pid);
    // It runs its own loop again: the log grows past what it had.
    wait_for(
        "python to count on",
        || numbers(&log).filter(|v| v.len() > seen + 10),
        || r.ended(),
    );
    std::fs::write(dir.join("go"), seen.to_string()).unwrap();
    let code = r.code();
    let result = std::fs::read_to_string(dir.join("result")).unwrap_or_default();
    assert_eq!(code, Some(0), "python's verdict: {result} ({})", r.stderr());
    let mut words = result.split_whitespace();
    assert_eq!(words.next(), Some("pass"), "{result}");
    let counter: usize = words.next().unwrap().parse().unwrap();
    assert_eq!(words.next(), Some("1001"), "{result}");
    let lines = numbers(&log).unwrap();
    assert_consecutive(&lines, "progress.log after the restore");
    assert_eq!(lines.len(), counter);
    assert!(counter > seen + 10, "{counter} vs {seen}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// No `sleep` child (crest dumps one process, not a tree): the loop waits
/// by polling bash's own clock. fd 3 appends, fd 4 writes at its offset:
/// after a restore with a wrong offset fd 4's file would differ from fd 3's.
const BASH: &str = r#"
exec 3>>append.log 4>offset.log
i=0
while [ ! -e go ]; do
  i=$((i + 1))
  echo "$i" >&3
  echo "$i" >&4
  t=$(( ${EPOCHREALTIME/./} + 2000 ))
  while (( ${EPOCHREALTIME/./} < t )); do :; done
done
mapfile -t lines < append.log
read -r seen < go
if (( ${#lines[@]} == i && ${lines[i - 1]} == i && i > seen )); then
  echo "pass $i" > result
  exit 0
fi
echo "fail: i=$i lines=${#lines[@]} seen=$seen" > result
exit 1
"#;

#[test]
fn bash_loop_appends_on_after_restore() {
    let Some(bash) = need("bash", "bash") else {
        return;
    };
    let dir = scratch("bash");
    let mut cmd = Command::new(bash);
    cmd.args(["--norc", "--noprofile", "-c", BASH]);
    let mut p = Program(start(cmd, &dir));
    let pid = p.0.id() as i32;
    let (append, offset) = (dir.join("append.log"), dir.join("offset.log"));
    wait_for(
        "bash's first 20 lines",
        || numbers(&append).filter(|v| v.len() >= 20),
        || None,
    );
    let img = dump(&mut p, &dir);
    let at_dump = numbers(&append).expect("append.log after the dump");
    assert_consecutive(&at_dump, "append.log at the dump");
    let seen = at_dump.len();
    let mut r = Restore::start(&img, pid);
    wait_for(
        "bash to count on",
        || numbers(&append).filter(|v| v.len() > seen + 10),
        || r.ended(),
    );
    std::fs::write(dir.join("go"), format!("{seen}\n")).unwrap();
    let code = r.code();
    let result = std::fs::read_to_string(dir.join("result")).unwrap_or_default();
    assert_eq!(code, Some(0), "bash's verdict: {result} ({})", r.stderr());
    let n: usize = result
        .trim()
        .strip_prefix("pass ")
        .unwrap()
        .parse()
        .unwrap();
    let appended = numbers(&append).unwrap();
    assert_consecutive(&appended, "append.log after the restore");
    assert_eq!(appended.len(), n);
    assert!(n > seen + 10);
    // The plain (non-append) fd wrote on at its restored offset.
    assert_eq!(
        std::fs::read(&offset).unwrap(),
        std::fs::read(&append).unwrap(),
        "offset.log differs from append.log"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn redis_cli(cli: &Path, port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new(cli)
        .args(["-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// redis-server keeps its keys across a checkpoint. It listens on a TCP
/// socket, which crest refuses to dump: TCP is not built yet (issue 8
/// covers unix sockets; no issue covers TCP so far). Its epoll, eventfd
/// and unix sockets are dumped already (the test above); enable this one
/// when TCP lands.
#[test]
#[ignore = "needs TCP sockets, which crest refuses to dump (not built yet)"]
fn redis_server_keeps_its_keys() {
    let (Some(server), Some(cli)) = (
        need("redis-server", "redis-server"),
        need("redis-cli", "redis-tools"),
    ) else {
        return;
    };
    let dir = scratch("redis");
    let port = 20000 + (std::process::id() % 20000) as u16;
    let mut cmd = Command::new(server);
    cmd.args([
        "--port",
        &port.to_string(),
        "--save",
        "",
        "--appendonly",
        "no",
    ]);
    cmd.args(["--daemonize", "no", "--bind", "127.0.0.1"]);
    let mut p = Program(start(cmd, &dir));
    let pid = p.0.id() as i32;
    let ping = || redis_cli(&cli, port, &["ping"]).filter(|s| s == "PONG");
    wait_for("redis to answer PING", ping, || None);
    for i in 0..100 {
        let (k, v) = (format!("key{i}"), format!("value-{i}-{}", i * i));
        assert_eq!(
            redis_cli(&cli, port, &["set", &k, &v]).as_deref(),
            Some("OK")
        );
    }
    let img = dump(&mut p, &dir);
    assert!(
        ping().is_none(),
        "redis still answers after the dump killed it"
    );
    let mut r = Restore::start(&img, pid);
    wait_for("the restored redis to answer PING", ping, || r.ended());
    for i in 0..100 {
        let v = redis_cli(&cli, port, &["get", &format!("key{i}")]);
        assert_eq!(v, Some(format!("value-{i}-{}", i * i)), "key{i}");
    }
    assert_eq!(redis_cli(&cli, port, &["dbsize"]).as_deref(), Some("100"));
    let _ = redis_cli(&cli, port, &["shutdown", "nosave"]);
    assert_eq!(r.code(), Some(0), "{}", r.stderr());
    let _ = std::fs::remove_dir_all(&dir);
}

/// redis-server listening on a unix socket only (`--port 0`) keeps its
/// keys across a checkpoint: its listener comes back at its path, its
/// event loop (epoll, pipe) with it, and redis-cli connects again.
#[test]
fn redis_server_over_a_unix_socket_keeps_its_keys() {
    let (Some(server), Some(cli)) = (
        need("redis-server", "redis-server"),
        need("redis-cli", "redis-tools"),
    ) else {
        return;
    };
    let dir = scratch("redis-unix");
    let sock = dir.join("redis.sock");
    let sock = sock.to_str().unwrap();
    let mut cmd = Command::new(server);
    cmd.args(["--port", "0", "--unixsocket", sock, "--save", ""]);
    cmd.args(["--appendonly", "no", "--daemonize", "no"]);
    let mut p = Program(start(cmd, &dir));
    let pid = p.0.id() as i32;
    let run = |args: &[&str]| {
        let out = Command::new(&cli)
            .args(["-s", sock])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let ping = || run(&["ping"]).filter(|s| s == "PONG");
    wait_for("redis to answer PING", ping, || None);
    for i in 0..100 {
        let (k, v) = (format!("key{i}"), format!("value-{i}-{}", i * i));
        assert_eq!(run(&["set", &k, &v]).as_deref(), Some("OK"));
    }
    let img = dump(&mut p, &dir);
    assert!(
        ping().is_none(),
        "redis still answers after the dump killed it"
    );
    let mut r = Restore::start(&img, pid);
    wait_for("the restored redis to answer PING", ping, || r.ended());
    for i in 0..100 {
        let v = run(&["get", &format!("key{i}")]);
        assert_eq!(v, Some(format!("value-{i}-{}", i * i)), "key{i}");
    }
    assert_eq!(run(&["dbsize"]).as_deref(), Some("100"));
    let _ = run(&["shutdown", "nosave"]);
    assert_eq!(r.code(), Some(0), "{}", r.stderr());
    let _ = std::fs::remove_dir_all(&dir);
}
