//! `crest restore -D DIR`: the whole restore of a process tree, in the
//! order that keeps it all-or-nothing. Everything that can be checked is
//! checked before any task exists (images, every pid free, files, vdso
//! layout, each process's plan); from the moment the root exists a guard
//! kills the whole tree on any failure, so a failed restore leaves no
//! process behind.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use std::os::fd::AsFd;

use super::finish::{self, Restored};
use super::tree::{Created, PidSource};
use super::{child, files, images, pids, plan, shmem};
use crate::blob::plan::{DONE_FAILED, DONE_OK, DONE_PENDING, PlanResults};
use crate::dump::run::fault_point;
use crate::error::{Error, Result};
use crate::image::pstree::TaskState;
use crate::sys::Pid;
use crate::sys::mm::{MFD_CLOEXEC, Mapping, memfd_create};
use crate::sys::process::{__WALL, WNOHANG, wait4};

/// What `crest restore` was asked to do.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The image directory.
    pub dir: PathBuf,
    /// -d: return once the process runs instead of waiting for it.
    pub detach: bool,
    /// --pidfile: where to write the restored pid.
    pub pidfile: Option<PathBuf>,
    /// -j: the process may use crest's terminal.
    pub shell_job: bool,
}

/// The steps after which `CREST_FAULT` makes a restore fail (tests of the
/// all-or-nothing guarantee): crest's own steps, then `restorer-NAME` for
/// each step of the restorer blob (in the leader, `restorer-creds` also in
/// the other threads).
pub const FAULT_STEPS: &[&str] = &["restore-plan", "restore-files", "restore-takeover"];

/// The restorer's steps by number (plan.rs STEP_*), as CREST_FAULT names
/// them after `restorer-`.
pub const RESTORER_STEPS: [&str; 18] = [
    "start",
    "park",
    "map",
    "fill",
    "protect",
    "place",
    "mm",
    "sigactions",
    "itimers",
    "timers",
    "rlimits",
    "misc",
    "close",
    "clone",
    "thread",
    "signals",
    "creds",
    "shmem",
];

/// The restorer step CREST_FAULT names, if any, for the task `pid` (only
/// the one CREST_FAULT_PID names when it is set).
fn restorer_fault(pid: u32) -> u32 {
    let only = std::env::var("CREST_FAULT_PID").ok();
    if only.is_some_and(|p| p.trim() != pid.to_string()) {
        return crate::blob::plan::NO_FAULT;
    }
    let want = std::env::var("CREST_FAULT").unwrap_or_default();
    let name = want.strip_prefix("restorer-").unwrap_or("");
    RESTORER_STEPS
        .iter()
        .position(|s| *s == name)
        .map_or(crate::blob::plan::NO_FAULT, |i| i as u32)
}

/// How long the restorer may take before crest gives up on it.
const RESTORER_TIMEOUT: Duration = Duration::from_secs(120);
/// Bytes of the area where the new task leaves an error message.
const MSG_LEN: usize = 1024;

/// One live process on its way back: its images, files and built plan.
struct Task<'a> {
    img: &'a images::Images,
    files: files::FilesPlan,
    built: plan::Built,
    keep: Vec<i32>,
    msg: u64,
    code: u64,
}

/// Everything checked and built for one live process, before any task
/// exists.
fn prepare_task<'a>(
    img: &'a images::Images,
    opts: &RestoreOptions,
    pids: &PidSource,
    shared_shmem: &[(u64, i32)],
    sockets: &files::TreeSockets,
    objects: &files::TreeObjects,
) -> Result<Task<'a>> {
    let mut files = files::plan_files_in_tree(&img.files, &img.task.misc, opts.shell_job, sockets)?;
    let mut built = plan::build(
        img,
        files.first_free_fd(),
        restorer_fault(img.process.pid),
        pids.file(),
        shared_shmem,
        objects,
    )?;
    files.set_objects(&built.fds)?;
    let msg = built.layout.alloc(MSG_LEN, 16)?;
    let code = built.layout.alloc(16, 16)?;
    crate::debug!("pid {}: {}", img.process.pid, plan::describe(&built));
    let mut keep = built.fds.numbers();
    keep.extend(
        shared_shmem
            .iter()
            .filter(|(id, _)| img.shmem.iter().any(|(s, _)| s == id))
            .map(|(_, fd)| *fd),
    );
    keep.extend(sockets.used_by(&img.files));
    Ok(Task {
        img,
        files,
        built,
        keep,
        msg,
        code,
    })
}

/// Restores the image in `opts.dir`; returns crest's exit status.
pub fn run(opts: &RestoreOptions) -> Result<i32> {
    let t0 = Instant::now();
    let tree = images::load(&opts.dir)?;
    let root = tree.root().process.pid as Pid;
    let all_ids: Vec<u32> = tree
        .procs
        .iter()
        .flat_map(|(p, _)| std::iter::once(p.pid).chain(p.threads.iter().copied()))
        .chain(tree.helpers.iter().map(|h| h.pid))
        .collect();
    pids::check_free(&all_ids)?;
    let pid_source = PidSource::choose()?;
    let base = shared_fd_base(&tree);
    let shm = shmem::create(&tree, base)?;
    let shm_fds = shm.fds();
    let sockets = share_sockets(&tree, base)?;
    let objects = files::create_tree_objects(&tree)?;
    let mut tasks: Vec<Task<'_>> = tree
        .live()
        .map(|img| prepare_task(img, opts, &pid_source, &shm_fds, &sockets, &objects))
        .collect::<Result<_>>()?;
    // Each task's helper fds hold its own dup of every object it uses.
    drop(objects);
    let shared_files = share_files(&mut tasks, base)?;
    fault_point(root, "restore-plan")?;
    let barrier = barrier_page()?;
    let nodes = nodes(&tree, &tasks);
    let mut ids: Vec<Pid> = all_ids.iter().map(|&i| i as Pid).collect();
    ids.dedup();
    let shared = child::Shared {
        nodes: &nodes,
        pids: &pid_source,
        barrier: &barrier,
        helpers: &tree.helpers,
    };
    let mut guard = Created::new(ids);
    if pid_source.create(root)? == 0 {
        child::main(&shared, 0);
    }
    // The tasks hold their own copies now: a pipe must not stay open here.
    drop(shared_files);
    drop(sockets);
    drop(shm);
    for t in &tasks {
        wait_restorer(&t.built, t.img.process.pid as Pid, root, t.msg)?;
    }
    crate::debug!("pid {root}: every restorer done after {:?}", t0.elapsed());
    let restored: Vec<Restored<'_>> = tasks.iter().map(restored).collect();
    finish::take_over(&restored, || fault_point(root, "restore-takeover"))?;
    guard.disarm();
    crate::info!(
        "pid {root}: restored {} process(es) in {:?}",
        tree.procs.len(),
        t0.elapsed()
    );
    if let Some(path) = &opts.pidfile {
        std::fs::write(path, format!("{root}\n")).map_err(|e| Error::io("write", path, e))?;
    }
    if opts.detach {
        return Ok(0);
    }
    wait_exit(root)
}

/// The lowest fd number above every fd of every process of the image:
/// where the open files and memory objects several tasks inherit go.
fn shared_fd_base(tree: &images::Tree) -> i32 {
    tree.live()
        .flat_map(|img| img.files.fds.iter().map(|f| f.fd + 1))
        .max()
        .unwrap_or(0)
        .max(3)
}

/// Opens the files several fds share once (files::share); each task keeps
/// the ones it uses until its restorer closes crest's fds.
fn share_files(tasks: &mut [Task<'_>], base: i32) -> Result<files::SharedFiles> {
    let imgs: Vec<&images::Images> = tasks.iter().map(|t| t.img).collect();
    let mut plans: Vec<&mut files::FilesPlan> = tasks.iter_mut().map(|t| &mut t.files).collect();
    let (mut shared, mut keep) = files::share(&mut plans, base)?;
    files::share_ptys(&imgs, &mut plans, base, &mut shared, &mut keep)?;
    for (t, k) in tasks.iter_mut().zip(keep) {
        t.keep.extend(k);
    }
    if !shared.is_empty() {
        crate::debug!("{} open file(s) shared between fds", shared.len());
    }
    Ok(shared)
}

/// Makes the unix sockets processes of the tree share, once (see
/// files::create_tree_sockets); the tasks inherit them.
fn share_sockets(tree: &images::Tree, base: i32) -> Result<files::TreeSockets> {
    let all: Vec<&crate::image::load::FilesImage> = tree.live().map(|i| &i.files).collect();
    let pids: Vec<u32> = tree.live().map(|i| i.process.pid).collect();
    let sockets = files::create_tree_sockets(&all, &pids, base)?;
    if !sockets.is_empty() {
        crate::debug!("{} unix socket(s) shared between processes", sockets.len());
    }
    Ok(sockets)
}

/// The shared page the tasks count themselves on before joining groups.
fn barrier_page() -> Result<Mapping> {
    let memfd = memfd_create(c"crest-barrier", MFD_CLOEXEC)
        .map_err(|e| Error::sys("memfd_create", "the restore barrier", e))?;
    let page = crate::sys::mm::page_size();
    crate::sys::fd::ftruncate(memfd.as_fd(), page as u64)
        .map_err(|e| Error::sys("ftruncate", "the restore barrier", e))?;
    Mapping::shared(memfd.as_fd(), page).map_err(|e| Error::sys("mmap", "the restore barrier", e))
}

/// The tree as the tasks see it: every process with its setup.
fn nodes<'a>(tree: &'a images::Tree, tasks: &'a [Task<'a>]) -> Vec<child::Node<'a>> {
    tree.procs
        .iter()
        .map(|(p, _)| child::Node {
            process: p,
            live: tasks
                .iter()
                .find(|t| t.img.process.pid == p.pid)
                .map(|t| child::LiveSetup {
                    files: &t.files,
                    keep: &t.keep,
                    layout: &t.built.layout,
                    plan: t.built.plan,
                    msg: t.msg,
                    msg_len: MSG_LEN,
                }),
            comm: tree
                .comms
                .iter()
                .find(|c| c.pid == p.pid)
                .map(|c| c.comm.as_slice()),
        })
        .collect()
}

fn restored<'a>(t: &'a Task<'a>) -> Restored<'a> {
    Restored {
        threads: &t.img.task.threads,
        layout: &t.built.layout,
        code: t.code,
        stopped: match t.img.process.state {
            TaskState::Stopped { signal } => Some(signal),
            _ => None,
        },
    }
}

fn results_word(b: &plan::Built, field: usize) -> u32 {
    b.layout.read_u32(b.results + field as u64)
}

/// Waits until `pid`'s restorer reports; a task that died or a failed step
/// become the error. Only the root is crest's child; the others are seen
/// dying in /proc.
fn wait_restorer(b: &plan::Built, pid: Pid, root: Pid, msg: u64) -> Result<()> {
    let done_at = b.results + std::mem::offset_of!(PlanResults, done) as u64;
    let start = Instant::now();
    loop {
        match results_word(b, std::mem::offset_of!(PlanResults, done)) {
            DONE_OK => return Ok(()),
            DONE_FAILED => return Err(step_error(b, pid)),
            DONE_PENDING => {}
            other => {
                return Err(Error::Target {
                    pid,
                    problem: format!("the restorer reported {other}"),
                });
            }
        }
        if pid == root
            && let Ok((got, status)) = wait4(pid, WNOHANG | __WALL)
            && got == pid
        {
            return Err(died(b, pid, status, msg));
        }
        if pid != root && crate::dump::run::gone(pid) {
            return Err(died(b, pid, 0, msg));
        }
        if start.elapsed() > RESTORER_TIMEOUT {
            return Err(Error::Target {
                pid,
                problem: "the restorer did not finish in time".into(),
            });
        }
        crate::sys::spawn::futex_wait_shared(
            done_at as usize,
            DONE_PENDING,
            Duration::from_millis(20),
        );
    }
}

/// What the restorer was doing at each step, for errors.
const STEP_NAMES: [&str; 18] = [
    "starting",
    "moving the vdso out of the way",
    "mapping memory",
    "reading pages into memory",
    "setting memory protections",
    "placing the vdso",
    "setting the mm layout (PR_SET_MM_MAP)",
    "restoring signal actions",
    "restoring interval timers",
    "restoring POSIX timers",
    "restoring resource limits",
    "restoring personality, umask and prctl values",
    "closing crest's fds",
    "creating threads",
    "restoring a thread's own state",
    "queueing pending signals",
    "restoring credentials",
    "recreating shared memory",
];

fn step_error(b: &plan::Built, pid: Pid) -> Error {
    let step = results_word(b, std::mem::offset_of!(PlanResults, step)) as usize;
    let err = results_word(b, std::mem::offset_of!(PlanResults, err)) as i32;
    let index = results_word(b, std::mem::offset_of!(PlanResults, index));
    let what = STEP_NAMES.get(step).copied().unwrap_or("an unknown step");
    let errno = crate::sys::Errno::new(-err);
    // clone3's set_tid says EEXIST when another task holds the thread id:
    // free when crest checked, taken since (pids are reused).
    let why = if what == "creating threads" && errno == crate::sys::Errno::EEXIST {
        "; another task took that thread id after crest checked it was free: restore again once it is free"
    } else {
        ""
    };
    Error::Target {
        pid,
        problem: format!("the restorer failed {what} (item {index}): {errno}{why}"),
    }
}

fn died(b: &plan::Built, pid: Pid, status: i32, msg: u64) -> Error {
    let mut text = Vec::new();
    for i in 0..MSG_LEN as u64 {
        let byte = b.layout.read_u32((msg + i) & !3).to_le_bytes()[((msg + i) & 3) as usize];
        if byte == 0 {
            break;
        }
        text.push(byte);
    }
    if !text.is_empty() {
        return Error::Target {
            pid,
            problem: String::from_utf8_lossy(&text).into_owned(),
        };
    }
    let step = results_word(b, std::mem::offset_of!(PlanResults, step)) as usize;
    let what = STEP_NAMES.get(step).copied().unwrap_or("an unknown step");
    Error::Target {
        pid,
        problem: format!(
            "the new task died (wait status {status:#x}) while the restorer was {what}"
        ),
    }
}

/// Waits for the restored process like its parent; its exit status, or
/// 128 + the signal that killed it.
fn wait_exit(pid: Pid) -> Result<i32> {
    loop {
        match wait4(pid, 0) {
            Ok((_, status)) if status & 0x7f == 0 => return Ok((status >> 8) & 0xff),
            Ok((_, status)) => return Ok(128 + (status & 0x7f)),
            Err(crate::sys::Errno::EINTR) => continue,
            Err(e) => {
                return Err(Error::sys(
                    "wait4",
                    format!("waiting for restored pid {pid}"),
                    e,
                ));
            }
        }
    }
}
