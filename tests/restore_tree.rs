//! `crest restore` of a process tree: the Full victim of the tree dump
//! tests (tests/dump_tree/victim.rs) without its shared pages and pipe
//! (sharing between processes is not rebuilt yet: restore refuses it by
//! name, tested here too) is dumped, killed and restored; then every
//! process verifies its own memory, pid, ppid, pgid, sid, thread count and
//! running threads, the stopped child is stopped and the zombie child is a
//! zombie of the root with its exit status.
//!
//! This test binary makes itself a child subreaper: the dump kills the
//! tree, and the root's children (reparented here) must be reaped before
//! their pids are free for the restore.

#[path = "dump_tree/victim.rs"]
#[allow(dead_code)]
mod victim;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crest::image::ImageDir;
use crest::image::load::load_pstree;
use crest::image::pstree::{Process, TaskState};
use victim::*;

fn scratch(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("crest-restore-tree-{name}"));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn crest(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_crest"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The state letter and parent of `pid` from /proc/PID/stat.
fn stat(pid: i32) -> Option<(char, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    Some((state, f.next()?.parse().ok()?))
}

fn wait_until(what: &str, ok: impl FnMut() -> bool) {
    wait_for(what, Duration::from_secs(10), ok)
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "{what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Reaps `pid` once it is our child (the subreaper gets orphans).
fn reap(pid: i32) {
    wait_until(&format!("pid {pid} reaped"), || {
        // SAFETY: reaps only this pid, which belongs to the test's tree.
        let r = unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG | libc::__WALL) };
        r == pid || stat(pid).is_none()
    });
}

fn become_subreaper() {
    // SAFETY: a flag of this process.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
}

/// One tree at a time: every victim maps the report files of the victims
/// forked before it, and a report written while another tree is dumped or
/// restored would change a file that tree's restore checks.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// The dumped zombie's comm, read before it was reaped.
static ZOMBIE_COMM: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Dumps a Full victim (killing it) and frees every pid; the image.
fn dumped(name: &str, sharing: bool) -> (Victim, PathBuf, Vec<Process>) {
    become_subreaper();
    let dir = scratch(name);
    let v = Victim::spawn(
        name,
        Shape::Full {
            own_session: true,
            sharing,
        },
    );
    wait_until("S stopped", || {
        stat(v.of(S, PID) as i32).map(|s| s.0) == Some('T')
    });
    let img = dir.join("img");
    let out = crest(&[
        "dump",
        "-t",
        &v.pid.to_string(),
        "-D",
        img.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = load_pstree(&ImageDir::open(&img).unwrap()).unwrap();
    assert_eq!(tree.len(), 5, "{tree:?}");
    let zombie = tree
        .iter()
        .find(|p| matches!(p.state, TaskState::Zombie { .. }))
        .unwrap();
    // Still there until reaped: the name restore must give it back.
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", zombie.pid)).unwrap();
    ZOMBIE_COMM.lock().unwrap().replace(comm);
    for p in tree.iter().rev() {
        reap(p.pid as i32);
    }
    (v, img, tree)
}

/// Kills the restored tree when a test fails half-way (its processes
/// would hold the harness's stdout open).
struct KillOnPanic<'a>(&'a [Process]);

impl Drop for KillOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            kill_all(self.0);
        }
    }
}

fn kill_all(tree: &[Process]) {
    for p in tree {
        // SAFETY: the restored victim tree.
        unsafe { libc::kill(p.pid as i32, libc::SIGKILL) };
    }
}

/// Restores the image of `v` and checks what every tree shape shares: the
/// zombie, the stopped child, each parent, each self-check; the crest
/// restore process (still running, the root's parent).
fn restored(v: &Victim, img: &Path, tree: &[Process]) -> std::process::Child {
    let _guard = KillOnPanic(tree);
    let restore = restore_running(v, img);
    let s_pid = v.of(S, PID) as i32;
    wait_until("S restored stopped", || {
        stat(s_pid).map(|s| s.0) == Some('T')
    });
    let zombie = tree
        .iter()
        .find(|p| matches!(p.state, TaskState::Zombie { .. }))
        .unwrap();
    let z = stat(zombie.pid as i32).expect("the zombie exists again");
    assert_eq!(z, ('Z', v.pid), "a zombie child of the root");
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", zombie.pid)).unwrap();
    assert_eq!(
        Some(comm),
        ZOMBIE_COMM.lock().unwrap().clone(),
        "the zombie keeps its name"
    );
    for p in tree {
        let (_, ppid) = stat(p.pid as i32).expect("restored");
        assert_eq!(
            ppid as u32,
            if p.pid == v.pid as u32 {
                ppid as u32
            } else {
                p.ppid
            }
        );
    }
    // SAFETY: continue the restored stopped child, then check everyone.
    unsafe { libc::kill(s_pid, libc::SIGCONT) };
    // The root's parent is crest restore now, as CRIU's would be (bit 3 of
    // its self-check compares its ppid with the one before the dump).
    let root_ppid_bit = 1u64 << 3;
    for r in LIVE {
        let allowed = if r == ROOT { root_ppid_bit } else { 0 };
        let bad = v.self_check(r) & !allowed;
        if bad != 0 {
            kill_all(tree);
        }
        assert_eq!(bad, 0, "role {r}: failed self-check bits after restore");
        assert!(v.runs(r), "role {r} runs after restore");
    }
    assert_eq!(
        stat(v.pid).map(|s| s.1),
        Some(restore.id() as i32),
        "the root's parent is crest"
    );
    restore
}

/// Kills the restored tree; crest restore ends with the root.
fn finish(mut restore: std::process::Child, tree: &[Process]) {
    kill_all(tree);
    let status = restore.wait().unwrap();
    for p in tree.iter().rev() {
        reap(p.pid as i32);
    }
    assert_eq!(
        status.code(),
        Some(128 + libc::SIGKILL),
        "crest restore ends with the root"
    );
}

#[test]
fn a_tree_comes_back_with_every_identity_and_each_process_verifies_itself() {
    let _one = serial();
    let (v, img, tree) = dumped("rt", false);
    let restore = restored(&v, &img, &tree);
    finish(restore, &tree);
}

/// kcmp(KCMP_FILE): whether two processes' fds are one open file.
fn same_open_file(pid1: i32, fd1: i32, pid2: i32, fd2: i32) -> bool {
    const KCMP_FILE: i32 = 0;
    // SAFETY: kcmp only compares kernel objects.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pid1, pid2, KCMP_FILE, fd1, fd2) };
    assert!(
        r >= 0,
        "kcmp {pid1}/{fd1} {pid2}/{fd2}: {}",
        std::io::Error::last_os_error()
    );
    r == 0
}

/// The shared anonymous mapping of `pid` (the victim's 4 shared pages):
/// its start and its inode.
fn shm_of(pid: i32) -> (u64, u64) {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let line = maps
        .lines()
        .find(|l| l.ends_with("/dev/zero (deleted)"))
        .unwrap_or_else(|| panic!("pid {pid} maps no shared memory:\n{maps}"));
    let f: Vec<&str> = line.split_whitespace().collect();
    let start = u64::from_str_radix(f[0].split('-').next().unwrap(), 16).unwrap();
    (start, f[4].parse().unwrap())
}

#[test]
fn a_tree_sharing_memory_a_pipe_and_its_files_keeps_sharing_them() {
    let _one = serial();
    use std::os::unix::fs::FileExt;
    let (v, img, tree) = dumped("shared", true);
    // The image names one open file per inherited fd, across processes.
    let d = ImageDir::open(&img).unwrap();
    let desc_of = |pid: u32, fd: i32| {
        let files = crest::image::load::FilesImage::load(&d, pid).unwrap();
        files.descs.iter().find(|x| x.fd == fd).unwrap().desc_id
    };
    let live_pids: Vec<u32> = LIVE.iter().map(|&r| v.of(r, PID) as u32).collect();
    for fd in [PIPE_FD, PIPE_FD + 1, FILE_FD] {
        let ids: Vec<u64> = live_pids.iter().map(|&p| desc_of(p, fd)).collect();
        assert!(ids.iter().all(|&i| i == ids[0]), "fd {fd}: {ids:?}");
    }
    assert_ne!(
        desc_of(v.pid as u32, PIPE_FD),
        desc_of(v.pid as u32, PIPE_FD + 1)
    );
    let restore = restored(&v, &img, &tree);
    let _guard = KillOnPanic(&tree);
    let live: Vec<i32> = LIVE.iter().map(|&r| v.of(r, PID) as i32).collect();
    let (root_shm, ino) = shm_of(live[0]);
    for &pid in &live[1..] {
        for fd in [0, 1, 2, PIPE_FD, PIPE_FD + 1, FILE_FD] {
            assert!(
                same_open_file(live[0], fd, pid, fd),
                "fd {fd} of pid {pid} is the root's open file"
            );
        }
        assert_eq!(shm_of(pid).1, ino, "pid {pid} maps the root's object");
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{FILE_FD}")).unwrap();
        assert!(info.starts_with(&format!("pos:\t{FILE_POS}\n")), "{info}");
    }
    // A write in the root's memory is seen in G's.
    let mem = |pid: i32| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/{pid}/mem"))
            .unwrap()
    };
    let g = live[2];
    mem(live[0])
        .write_all_at(b"written by the root", root_shm + 100)
        .unwrap();
    let mut got = [0u8; 19];
    mem(g).read_exact_at(&mut got, shm_of(g).0 + 100).unwrap();
    assert_eq!(&got, b"written by the root");
    // The queued bytes, then new ones written by A's end, come out of G's.
    let a = live[1];
    let mut writer = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{a}/fd/{}", PIPE_FD + 1))
        .unwrap();
    std::io::Write::write_all(&mut writer, b" and more").unwrap();
    let mut reader = std::fs::File::open(format!("/proc/{g}/fd/{PIPE_FD}")).unwrap();
    let want = [PIPE_DATA, b" and more"].concat();
    let mut buf = vec![0u8; want.len()];
    std::io::Read::read_exact(&mut reader, &mut buf).unwrap();
    assert_eq!(buf, want);
    finish(restore, &tree);
}

/// Dumps `v` with `crest dump -t` (killing it) and reaps its processes.
fn dump_and_reap(v: &Victim, name: &str) -> (PathBuf, Vec<Process>) {
    let img = scratch(name).join("img");
    let out = crest(&[
        "dump",
        "-t",
        &v.pid.to_string(),
        "-D",
        img.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = load_pstree(&ImageDir::open(&img).unwrap()).unwrap();
    for p in tree.iter().rev() {
        reap(p.pid as i32);
    }
    (img, tree)
}

/// (pgid, sid) of `pid`.
fn ids(pid: i32) -> (i32, i32) {
    // SAFETY: plain id queries.
    unsafe { (libc::getpgid(pid), libc::getsid(pid)) }
}

#[test]
fn orphans_of_dead_session_and_group_leaders_come_back_in_them_and_no_helper_remains() {
    let _one = serial();
    become_subreaper();
    let v = Victim::spawn("dead", Shape::DeadLeaders);
    let (c, e) = (v.get(DEAD_SESSION) as i32, v.get(DEAD_GROUP) as i32);
    let (d, f) = (v.of(D, PID) as i32, v.of(F, PID) as i32);
    assert_eq!(ids(d), (c, c), "D in the session and group of the dead C");
    assert_eq!(ids(f), (e, v.pid), "F in the group of the dead E");
    let (img, tree) = dump_and_reap(&v, "dead");
    assert_eq!(tree.len(), 3, "{tree:?}");
    let mut pids: Vec<i32> = tree.iter().map(|p| p.pid as i32).collect();
    pids.extend([c, e]);
    fails_cleanly(&img, "restore-files", d as u64, &pids);
    fails_cleanly(&img, "restorer-start", f as u64, &pids);
    let _guard = KillOnPanic(&tree);
    let restore = restore_running(&v, &img);
    assert!(v.runs(D) && v.runs(F), "the orphans run");
    assert_eq!(ids(d), (c, c), "D back in the session and group of C");
    assert_eq!(ids(f), (e, v.pid), "F back in the group of E");
    assert_eq!(stat(d).unwrap().1, v.pid, "D's parent is the root");
    assert_eq!(stat(f).unwrap().1, v.pid, "F's parent is the root");
    for helper in [c, e] {
        assert!(stat(helper).is_none(), "helper {helper} is gone");
    }
    for r in [D, F] {
        assert_eq!(v.self_check(r), 0, "role {r}: failed self-check bits");
    }
    assert_eq!(v.self_check(ROOT) & !(1 << 3), 0, "root's self-check");
    finish(restore, &tree);
}

/// Restores `img` (crest stays the root's parent) once the tree is dumped
/// and reaped; waits until crest has let the whole tree go (it writes the
/// pid file last) and the root runs.
fn restore_running(v: &Victim, img: &Path) -> std::process::Child {
    let pidfile = img.with_extension("pid");
    let _ = std::fs::remove_file(&pidfile);
    let mut restore = Command::new(env!("CARGO_BIN_EXE_crest"))
        .args(["restore", "-D", img.to_str().unwrap(), "--pidfile"])
        .arg(&pidfile)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the tree restored", Duration::from_secs(60), || {
        if let Some(status) = restore.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(restore.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("crest restore ended ({status}): {err}");
        }
        pidfile.exists()
    });
    assert!(v.runs(ROOT), "the root runs after restore");
    restore
}

#[test]
fn a_tree_of_100_processes_round_trips() {
    let _one = serial();
    become_subreaper();
    let v = Victim::spawn("many", Shape::Many(100));
    let (img, tree) = dump_and_reap(&v, "many");
    assert_eq!(tree.len(), 100, "the root and its 99 children");
    let _guard = KillOnPanic(&tree);
    let restore = restore_running(&v, &img);
    for p in &tree[1..] {
        let (_, ppid) = stat(p.pid as i32).expect("restored");
        assert_eq!(ppid, v.pid, "pid {}", p.pid);
        // Just resumed, a child may still be on its way back to sleep
        // (seen in the slow qemu lanes).
        let asleep = || stat(p.pid as i32).is_some_and(|(state, _)| state == 'S');
        wait_for(
            &format!("pid {} sleeps again", p.pid),
            Duration::from_secs(10),
            asleep,
        );
        assert_eq!(ids(p.pid as i32), (v.pid, v.pid), "pid {}", p.pid);
    }
    finish(restore, &tree);
}

#[test]
fn a_process_with_1000_threads_round_trips() {
    let _one = serial();
    become_subreaper();
    let v = Victim::spawn("threads", Shape::Threads(1000));
    let task = format!("/proc/{}/task", v.pid);
    wait_until("1000 threads", || {
        std::fs::read_dir(&task).unwrap().count() == 1000
    });
    let (img, tree) = dump_and_reap(&v, "threads");
    assert_eq!(tree[0].threads.len(), 1000);
    let _guard = KillOnPanic(&tree);
    let restore = restore_running(&v, &img);
    let mut tids: Vec<u32> = std::fs::read_dir(&task)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
        .collect();
    tids.sort();
    let mut want = tree[0].threads.clone();
    want.sort();
    assert_eq!(tids, want, "every thread id back");
    finish(restore, &tree);
}

/// `crest restore` of `img` with CREST_FAULT=`step` in task `pid` only:
/// it fails and leaves none of `pids` behind.
fn fails_cleanly(img: &Path, step: &str, pid: u64, pids: &[i32]) {
    let out = Command::new(env!("CARGO_BIN_EXE_crest"))
        .args(["restore", "-D", img.to_str().unwrap()])
        .env("CREST_FAULT", step)
        .env("CREST_FAULT_PID", pid.to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{step} in {pid}: {err}");
    for &p in pids {
        assert!(stat(p).is_none(), "{step} in {pid}: pid {p} left behind");
    }
}

#[test]
fn a_fault_in_one_task_of_a_sharing_tree_leaves_no_process_behind() {
    let _one = serial();
    let (v, img, tree) = dumped("fault", true);
    let pids: Vec<i32> = tree.iter().map(|p| p.pid as i32).collect();
    for (step, role) in [
        ("restore-files", A),
        ("restorer-shmem", G),
        ("restorer-map", S),
        ("restorer-creds", ROOT),
    ] {
        fails_cleanly(&img, step, v.of(role, PID), &pids);
    }
    // Nothing was left holding a pid: the image still restores.
    let restore = restored(&v, &img, &tree);
    finish(restore, &tree);
}
