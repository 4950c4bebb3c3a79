//! `crest dump` of a whole process tree against forked, self-checking
//! victim trees (tests/dump_tree/victim.rs). Ground truth: the tree as
//! /proc shows it before the dump (children lists, stat, task), each
//! process's own check of its memory, ids and threads after the dump,
//! TracerPid and the state letters of every process, and, for the kill
//! path, which processes of the victim's session are still alive.

#[path = "dump_tree/victim.rs"]
mod victim;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crest::image::ImageDir;
use crest::image::load::{FilesImage, load_pstree};
use crest::image::pstree::{Process, TaskState};
use victim::*;

fn scratch(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("crest-dump-tree-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn dump_env(pid: i32, img: &Path, extra: &[&str], env: &[(&str, String)]) -> Output {
    let pid = pid.to_string();
    let mut c = Command::new(env!("CARGO_BIN_EXE_crest"));
    c.args(["dump", "-t", &pid, "-D", img.to_str().unwrap()]);
    c.args(extra);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run crest")
}

fn dump(pid: i32, img: &Path, extra: &[&str]) -> Output {
    dump_env(pid, img, extra, &[])
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// /proc/PID/stat fields after the comm: [state, ppid, pgrp, session, ...].
fn stat(pid: i32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &text[text.rfind(')')? + 2..];
    Some(after.split_whitespace().map(String::from).collect())
}

fn state(pid: i32) -> char {
    stat(pid).map_or('-', |s| s[0].chars().next().unwrap())
}

fn tracer(pid: i32) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("TracerPid:"))?;
    Some(line.split_whitespace().nth(1)?.to_string())
}

fn tids(pid: i32) -> Vec<u32> {
    let mut t: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    t.sort_by_key(|&x| (x != pid as u32, x));
    t
}

fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for t in tids(pid) {
        let text =
            std::fs::read_to_string(format!("/proc/{pid}/task/{t}/children")).unwrap_or_default();
        out.extend(text.split_whitespace().map(|w| w.parse::<i32>().unwrap()));
    }
    out
}

/// The tree under `root` as /proc shows it, as pstree records.
fn proc_tree(root: i32) -> Vec<Process> {
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(pid) = todo.pop() {
        let s = stat(pid).expect("a member vanished");
        let n = |i: usize| s[i].parse::<i64>().unwrap();
        let st = match s[0].as_str() {
            "Z" => TaskState::Zombie {
                exit_code: n(49) as i32,
            },
            "T" => TaskState::Stopped {
                signal: libc::SIGSTOP as u32,
            },
            _ => TaskState::Running,
        };
        let threads = match st {
            TaskState::Zombie { .. } => Vec::new(),
            _ => tids(pid),
        };
        out.push(Process {
            pid: pid as u32,
            ppid: n(1) as u32,
            pgid: n(2) as u32,
            sid: n(3) as u32,
            state: st,
            threads,
        });
        todo.extend(children(pid));
    }
    out.sort_by_key(|p| p.pid);
    out
}

fn wait_state(pid: i32, want: char) {
    let start = Instant::now();
    while state(pid) != want {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "pid {pid} never {want}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Kills every process of a Full victim and reaps the root.
fn end(v: &Victim, truth: &[Process]) {
    for p in truth {
        // SAFETY: kill on processes of the victim tree.
        unsafe { libc::kill(p.pid as i32, libc::SIGKILL) };
    }
    // SAFETY: our own child.
    unsafe { libc::waitpid(v.pid, std::ptr::null_mut(), 0) };
}

fn spawn_full(name: &str, own_session: bool) -> (Victim, Vec<Process>) {
    let v = Victim::spawn(
        name,
        Shape::Full {
            own_session,
            sharing: true,
        },
    );
    wait_state(v.of(S, PID) as i32, 'T');
    wait_state(v.pid_of_zombie(), 'Z');
    let truth = proc_tree(v.pid);
    assert_eq!(truth.len(), 5, "{truth:?}");
    (v, truth)
}

impl Victim {
    fn pid_of_zombie(&self) -> i32 {
        let live: Vec<i32> = LIVE.iter().map(|&r| self.of(r, PID) as i32).collect();
        let start = Instant::now();
        loop {
            if let Some(z) = children(self.pid).into_iter().find(|c| !live.contains(c)) {
                return z;
            }
            assert!(start.elapsed() < Duration::from_secs(5), "no zombie child");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Every live process runs (S stays stopped), nothing traces any of them,
/// and each verifies itself (S after SIGCONT).
fn assert_tree_intact(v: &Victim, truth: &[Process], what: &str) {
    for p in truth {
        assert_eq!(
            tracer(p.pid as i32).as_deref(),
            Some("0"),
            "{what}: pid {} traced",
            p.pid
        );
    }
    let zombie = v.pid_of_zombie();
    assert_eq!(state(zombie), 'Z', "{what}: the zombie stays a zombie");
    assert_eq!(state(v.of(S, PID) as i32), 'T', "{what}: S stays stopped");
    for r in [ROOT, A, G] {
        assert!(v.runs(r), "{what}: role {r} runs");
    }
}

fn self_checks(v: &Victim) {
    // SAFETY: continue the stopped child of the victim tree.
    unsafe { libc::kill(v.of(S, PID) as i32, libc::SIGCONT) };
    for r in LIVE {
        assert_eq!(v.self_check(r), 0, "role {r}: failed self-check bits");
    }
    // SAFETY: stop it again, as it was.
    unsafe { libc::kill(v.of(S, PID) as i32, libc::SIGSTOP) };
    wait_state(v.of(S, PID) as i32, 'T');
}

#[test]
fn tree_dump_leave_running_records_the_tree_and_every_process_verifies_itself() {
    let dir = scratch("full");
    let (v, truth) = spawn_full("full", true);
    let img = dir.join("img");
    let out = dump(v.pid, &img, &["-R"]);
    assert!(out.status.success(), "dump -R failed: {}", stderr(&out));
    assert_tree_intact(&v, &truth, "after dump -R");
    let d = ImageDir::open(&img).unwrap();
    let image = load_pstree(&d).expect("load pstree.img");
    assert_eq!(image[0].pid, v.pid as u32, "the root first");
    let mut sorted = image.clone();
    sorted.sort_by_key(|p| p.pid);
    assert_eq!(sorted, truth, "pstree.img is the tree /proc showed");
    for (r, p) in LIVE.iter().map(|&r| (r, v.of(r, PID) as u32)) {
        let rec = image.iter().find(|q| q.pid == p).unwrap();
        assert_eq!(rec.threads.len() as u64, THREADS[r], "role {r} threads");
        assert_eq!(
            (rec.ppid, rec.pgid, rec.sid),
            (
                v.of(r, PPID) as u32,
                v.of(r, PGID) as u32,
                v.of(r, SID) as u32
            ),
            "role {r} ids as the process saw them"
        );
    }
    let z = image
        .iter()
        .find(|p| matches!(p.state, TaskState::Zombie { .. }))
        .unwrap();
    assert_eq!(
        z.state,
        TaskState::Zombie {
            exit_code: Z_EXIT << 8
        }
    );
    assert!(
        !img.join(format!("task-{}.img", z.pid)).exists(),
        "no task file for a zombie"
    );
    let s = image.iter().find(|p| p.pid == v.of(S, PID) as u32).unwrap();
    assert_eq!(
        s.state,
        TaskState::Stopped {
            signal: libc::SIGSTOP as u32
        }
    );
    // The pipe every process holds is stored once, with the root.
    let mut stored = Vec::new();
    for p in image.iter().filter(|p| !p.threads.is_empty()) {
        let files = FilesImage::load(&d, p.pid).unwrap();
        stored.extend(files.pipes.iter().map(|x| (p.pid, x.data.clone())));
    }
    assert_eq!(
        stored,
        vec![(v.pid as u32, PIPE_DATA.to_vec())],
        "one pipe record"
    );
    let shmem = std::fs::read_dir(&img)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("pagemap-shmem-")
        })
        .count();
    assert_eq!(shmem, 1, "the shared memory object once");
    let show = Command::new(env!("CARGO_BIN_EXE_crest"))
        .arg("show")
        .arg(&img)
        .output()
        .unwrap();
    assert!(show.status.success(), "show: {}", stderr(&show));
    self_checks(&v);
    end(&v, &truth);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tree_dump_without_leave_running_kills_every_process() {
    let dir = scratch("kill");
    let (v, truth) = spawn_full("kill", true);
    let img = dir.join("img");
    let out = dump(v.pid, &img, &[]);
    assert!(out.status.success(), "dump failed: {}", stderr(&out));
    // Killed means on its way out: a slow kernel (the qemu lanes) may
    // show a task in its last moments (X, or still exiting) just after
    // crest returns; it must be gone or a zombie within a moment.
    for p in &truth {
        let start = Instant::now();
        while !matches!(state(p.pid as i32), 'Z' | 'X' | '-') {
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "pid {} still alive ({})",
                p.pid,
                state(p.pid as i32)
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let mut status = 0;
    // SAFETY: our own child.
    unsafe { libc::waitpid(v.pid, &mut status, 0) };
    assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL);
    assert!(img.join("inventory.img").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// /proc/PID/maps and the fds of every live process.
fn snapshot(truth: &[Process]) -> Vec<(String, Vec<String>)> {
    let live = truth.iter().filter(|p| !p.threads.is_empty());
    live.map(|p| {
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", p.pid)).unwrap();
        let mut fds: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", p.pid))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let t = std::fs::read_link(e.path()).unwrap();
                format!("{} {}", e.file_name().to_string_lossy(), t.display())
            })
            .collect();
        fds.sort();
        (maps, fds)
    })
    .collect()
}

#[test]
fn tree_dump_failing_at_every_step_leaves_the_whole_tree_intact() {
    let dir = scratch("faults");
    let (v, truth) = spawn_full("faults", true);
    let before = snapshot(&truth);
    let g = v.of(G, PID).to_string();
    for step in crest::dump::run::FAULT_STEPS {
        for only in [None, Some(&g)] {
            let what = format!("{step} in {}", only.map_or("the root", |s| s.as_str()));
            let img = dir.join(format!("img-{step}-{}", only.is_some()));
            let mut env = vec![("CREST_FAULT", step.to_string())];
            if let Some(pid) = only {
                env.push(("CREST_FAULT_PID", pid.clone()));
            }
            let out = dump_env(v.pid, &img, &[], &env);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(1), "{what}: {err}");
            assert!(err.contains(&format!("`{step}`")), "{what}: {err}");
            assert!(!img.join("inventory.img").exists(), "{what}");
            assert_tree_intact(&v, &truth, &what);
            assert_eq!(snapshot(&truth), before, "{what}: maps and fds as before");
        }
    }
    assert_eq!(proc_tree(v.pid), truth, "the tree is as before");
    self_checks(&v);
    end(&v, &truth);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Live (not zombie) processes of session `sid`.
fn session_members(sid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Some(s) = stat(pid) {
            if s[3] == sid.to_string() && s[0] != "Z" && s[0] != "X" {
                out.push(pid);
            }
        }
    }
    out
}

#[test]
fn tree_dump_catches_a_fork_during_the_seize() {
    let dir = scratch("forker");
    let v = Victim::spawn("forker", Shape::Forker);
    let start = Instant::now();
    while v.get(FORKS) < 50 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the forker does not fork"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    for round in 0..3 {
        let img = dir.join(format!("img-{round}"));
        let out = dump(v.pid, &img, &["-R"]);
        // Caught (a complete image) or refused cleanly; never half-seized.
        if out.status.success() {
            let image = load_pstree(&ImageDir::open(&img).unwrap()).unwrap();
            assert_eq!(image[0].pid, v.pid as u32);
            eprintln!("round {round}: {} processes in the image", image.len());
        } else {
            eprintln!("round {round}: refused: {}", stderr(&out));
            assert_eq!(
                out.status.code(),
                Some(1),
                "round {round}: {}",
                stderr(&out)
            );
        }
        for pid in session_members(v.pid) {
            assert_eq!(
                tracer(pid).as_deref().unwrap_or("0"),
                "0",
                "round {round}: {pid} traced"
            );
            assert!(
                !matches!(state(pid), 't' | 'T'),
                "round {round}: {pid} left stopped"
            );
        }
        let forks = v.get(FORKS);
        std::thread::sleep(Duration::from_millis(30));
        assert!(v.get(FORKS) > forks, "round {round}: the forker goes on");
    }
    // Killing the tree: a process the seize missed would survive it.
    let img = dir.join("img-kill");
    let out = dump(v.pid, &img, &[]);
    assert!(out.status.success(), "dump failed: {}", stderr(&out));
    let escaped = session_members(v.pid);
    for &pid in &escaped {
        // SAFETY: a process of the victim's session.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    assert_eq!(
        escaped,
        Vec::<i32>::new(),
        "a forked process escaped the seize"
    );
    // SAFETY: our own child.
    unsafe { libc::waitpid(v.pid, std::ptr::null_mut(), 0) };
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tree_dump_refuses_a_root_outside_its_session_unless_shell_job() {
    let dir = scratch("session");
    let (v, truth) = spawn_full("session", false);
    let img = dir.join("img");
    let out = dump(v.pid, &img, &["-R"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("session") && err.contains("--shell-job"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");
    assert!(!img.join("inventory.img").exists());
    assert_tree_intact(&v, &truth, "after the refusal");
    let out = dump(v.pid, &img, &["-R", "-j"]);
    assert!(out.status.success(), "dump -R -j failed: {}", stderr(&out));
    let image = load_pstree(&ImageDir::open(&img).unwrap()).unwrap();
    assert_eq!(image.len(), 5);
    assert_tree_intact(&v, &truth, "after dump -j");
    self_checks(&v);
    end(&v, &truth);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tree_dump_refuses_a_process_outside_the_tree_in_its_session() {
    let dir = scratch("orphan");
    let v = Victim::spawn("orphan", Shape::Orphan);
    let y = v.get(ORPHAN) as i32;
    assert!(y > 0);
    for extra in [&["-R"][..], &["-R", "-j"]] {
        let out = dump(v.pid, &dir.join("img"), extra);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {err}");
        assert!(
            err.contains(&format!("pid {y} ")),
            "{extra:?} names the outsider: {err}"
        );
        assert!(err.contains("session"), "{err}");
        assert_eq!(tracer(v.pid).as_deref(), Some("0"));
        assert!(v.runs(ROOT));
    }
    // SAFETY: the orphan and our own child.
    unsafe {
        libc::kill(y, libc::SIGKILL);
        libc::kill(v.pid, libc::SIGKILL);
        libc::waitpid(v.pid, std::ptr::null_mut(), 0);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits until `pid` has `n` children (or threads, with `threads`).
fn wait_count(pid: i32, n: usize, threads: bool) {
    let start = Instant::now();
    loop {
        let have = if threads {
            tids(pid).len()
        } else {
            children(pid).len()
        };
        if have >= n {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{have} of {n}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn tree_dump_of_a_hundred_processes() {
    use std::os::unix::process::CommandExt;
    let dir = scratch("large");
    // A shell leading its session with 100 sleeping children.
    let mut sh = Command::new("sh");
    sh.args(["-c", "for i in $(seq 100); do sleep 1000 & done; wait"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: setsid in the child before exec.
    unsafe {
        sh.pre_exec(|| {
            libc::setsid();
            Ok(())
        })
    };
    let mut sh = sh.spawn().unwrap();
    let root = sh.id() as i32;
    wait_count(root, 100, false);
    let truth = proc_tree(root);
    let start = Instant::now();
    let out = dump(root, &dir.join("img"), &["-R"]);
    let took = start.elapsed();
    assert!(out.status.success(), "dump failed: {}", stderr(&out));
    let mut image = load_pstree(&ImageDir::open(dir.join("img")).unwrap()).unwrap();
    image.sort_by_key(|p| p.pid);
    assert_eq!(image, truth, "101 processes as /proc showed them");
    assert_eq!(proc_tree(root), truth, "every process as before");
    for p in &truth {
        assert_eq!(tracer(p.pid as i32).as_deref(), Some("0"));
    }
    eprintln!("dump -R of 101 processes: {took:?}");
    // SAFETY: the shell's process group (its session) ends with it.
    unsafe { libc::kill(-root, libc::SIGKILL) };
    let _ = sh.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// One process with `n` threads dumped with -R: every thread in the image,
/// every thread still there and running afterwards.
fn many_threads(n: usize) {
    let dir = scratch(&format!("threads-{n}"));
    let v = Victim::spawn(&format!("threads-{n}"), Shape::Threads(n));
    wait_count(v.pid, n, true);
    let before = tids(v.pid);
    let start = Instant::now();
    let out = dump(v.pid, &dir.join("img"), &["-R"]);
    let took = start.elapsed();
    assert!(out.status.success(), "dump failed: {}", stderr(&out));
    let image = load_pstree(&ImageDir::open(dir.join("img")).unwrap()).unwrap();
    assert_eq!(image.len(), 1);
    assert_eq!(image[0].threads, before, "every thread, the leader first");
    assert_eq!(tids(v.pid), before, "every thread still there");
    assert_eq!(tracer(v.pid).as_deref(), Some("0"));
    assert!(v.runs(ROOT));
    eprintln!(
        "dump -R of 1 process with {} threads: {took:?}",
        before.len()
    );
    // SAFETY: our own child.
    unsafe {
        libc::kill(v.pid, libc::SIGKILL);
        libc::waitpid(v.pid, std::ptr::null_mut(), 0);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tree_dump_of_a_process_with_200_threads() {
    many_threads(200);
}

#[test]
fn tree_dump_of_a_process_with_1000_threads() {
    many_threads(1000);
}
