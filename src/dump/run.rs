//! `crest dump -t PID -D DIR`: the whole dump of the process tree under
//! PID (every process and thread), in the order the steps depend on each
//! other.
//!
//! ```text
//!   precheck (unseized tree) ─► refusals: nothing is touched yet
//!   seize_tree ─► session rules ─► per process, parents first (process.rs):
//!         collect + pipes ─► cores ─► inject ─► parasite state ─► pages
//!         ─► cure ─► task/mm/files-PID.img
//!   ─► pstree.img ─► inventory.img
//!   ─► release: SIGKILL every process (default) or resume as before (-R)
//! ```
//!
//! inventory.img is written last: a directory without it is an image cut
//! short, and `crest show` reports it as such. On any failure the parasite
//! is cured, every process of the tree is detached as it was (a stopped
//! task stays stopped, a zombie stays a zombie), and the error is
//! returned; the files already written are left without an inventory.
//!
//! Fault injection (as CRIU's CRIU_FAULT): with `CREST_FAULT=STEP` in the
//! environment the dump fails on purpose right after STEP (one of
//! [`FAULT_STEPS`]), so tests can prove that the tree survives a failure
//! at every step. `seize` and `metadata` are steps of the whole tree; the
//! others fail in the first process that reaches them, or, with
//! `CREST_FAULT_PID=PID`, in that process only.

use std::path::PathBuf;

use super::process::{Shared, dump_process};
use super::task::collect_pstree;
use super::{ProcessState, collect_process_unfrozen};
use crate::error::{Error, Result};
use crate::image::ImageDir;
use crate::image::dir;
use crate::image::header::FileKind;
use crate::image::pstree::{Process, TaskState};
use crate::image::vma::Backing;
use crate::infect::tree;
use crate::infect::{Member, Release, SeizedTree, seize_tree};
use crate::sys::Pid;
use crate::{debug, info, warn};

/// How long crest waits for a killed target to be gone.
const KILL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The steps after which `CREST_FAULT` can make the dump fail.
pub const FAULT_STEPS: &[&str] = &[
    "seize",
    "collect",
    "cores",
    "inject",
    "parasite-state",
    "track",
    "pages",
    "cure",
    "metadata",
];

/// Fails with a clear error if `CREST_FAULT` names `step` (and, if
/// `CREST_FAULT_PID` is set, it names `pid`).
pub fn fault_point(pid: Pid, step: &'static str) -> Result<()> {
    let only = std::env::var("CREST_FAULT_PID").ok();
    if only.is_some_and(|p| p.trim() != pid.to_string()) {
        return Ok(());
    }
    fault_tree(pid, step)
}

/// Fails with a clear error if `CREST_FAULT` names `step`, a step of the
/// whole tree (`pid` is its root).
fn fault_tree(pid: Pid, step: &'static str) -> Result<()> {
    match std::env::var_os("CREST_FAULT") {
        Some(v) if v == step => Err(Error::Target {
            pid,
            problem: format!("failing after step `{step}` as CREST_FAULT asks (fault injection)"),
        }),
        _ => Ok(()),
    }
}

/// What `crest dump` was asked to do.
#[derive(Debug, Clone)]
pub struct DumpOptions {
    /// The process to dump.
    pub pid: Pid,
    /// The images directory (created 0700 if missing).
    pub dir: PathBuf,
    /// `-R`: resume the target after the dump instead of killing it.
    pub leave_running: bool,
    /// The command line, recorded in the inventory.
    pub command_line: Vec<String>,
    /// `--external`: resources outside the tree the dump may refer to
    /// (`unix[INO]`: a unix socket peer, by inode).
    pub external: Vec<String>,
    /// `--ghost-limit` and `--file-locks`.
    pub files: super::files::FileOptions,
}

/// Dumps the tree under `opts.pid` into `opts.dir`, then kills or resumes
/// it; the root's session and group are handled as without --shell-job.
pub fn run(opts: &DumpOptions) -> Result<()> {
    run_with(opts, false)
}

/// Dumps the tree under `opts.pid`; `shell_job` (`-j`) allows the root's
/// session and group to be led from outside the tree (see
/// [`super::session`]).
pub fn run_with(opts: &DumpOptions, shell_job: bool) -> Result<()> {
    run_tracked(opts, shell_job, &Incremental::default())
}

/// The incremental part of a dump: `--prev-images-dir REL --track-mem`.
#[derive(Debug, Clone, Default)]
pub struct Incremental {
    /// `--prev-images-dir`: the parent image, relative to the new one.
    pub prev_images_dir: Option<String>,
    /// `--track-mem`: track written pages (and store only those when a
    /// parent is given).
    pub track_mem: bool,
}

/// Creates (or opens) the image directory `path`, refusing one that already
/// holds an image: `hint` says what to do instead.
pub(super) fn create_image_dir(path: &std::path::Path, hint: &str) -> Result<ImageDir> {
    let d = ImageDir::create(path)?;
    if d.exists(dir::INVENTORY) {
        return Err(Error::io(
            "write a new image over",
            path.join(dir::INVENTORY),
            std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("an image is already there; {hint}"),
            ),
        ));
    }
    Ok(d)
}

/// Dumps the tree under `opts.pid`, incrementally as `inc` asks: with a
/// parent and tracking, only pages written since the parent are stored.
pub fn run_tracked(opts: &DumpOptions, shell_job: bool, inc: &Incremental) -> Result<()> {
    let root = opts.pid;
    let external = super::files::unix::parse_external(&opts.external)?;
    info!("pid {root}: checking its tree before seizing it");
    precheck(pid_u32(root)?, shell_job, opts.files)?;
    let d = create_image_dir(
        &opts.dir,
        "give an empty directory or remove that image first",
    )?;
    let mut shared = Shared {
        track: super::predump::tracking_for(&opts.dir, inc)?,
        external,
        files: opts.files,
        ..Shared::default()
    };
    info!("pid {root}: seizing every process of its tree and every thread");
    let frozen = std::time::Instant::now();
    let tree = seize_tree(root)?;
    // Pages sent to a page server count only once it committed them.
    let dumped = dump_tree(&tree, &d, opts, shell_job, &mut shared)
        .and_then(|()| crate::pageserver::client::commit_active());
    let track = shared.track.take();
    match dumped {
        Ok(()) => {
            let r = finish(tree, opts, frozen);
            if let Some(t) = track {
                // -R with --track-mem goes on tracking for a later dump.
                t.finish(r.is_ok(), opts.leave_running && inc.track_mem)?;
            }
            r
        }
        Err(e) => {
            warn!("pid {root}: dump failed, resuming every process of the tree as it was");
            if let Some(t) = track
                && let Err(r) = t.finish(false, false)
            {
                warn!("pid {root}: {r}");
            }
            if let Err(r) = tree.release(Release::Resume) {
                warn!("pid {root}: {r}");
            }
            Err(e)
        }
    }
}

/// The refusals that need no ptrace, on the tree as /proc shows it while
/// it still runs: what each process holds, and the sessions and groups.
/// The same checks run again once the tree is frozen. The scan of every
/// process on the machine for the sessions runs on a second thread while
/// this one walks the tree.
fn precheck(root: u32, shell_job: bool, files: super::files::FileOptions) -> Result<()> {
    std::thread::scope(|s| {
        let scan = s.spawn(super::session::Machine::scan);
        let procs = precheck_tree(root, files);
        let machine = joined(scan);
        let procs = procs?;
        super::session::check_sessions_in(&procs, shell_job, &machine?)?;
        super::files::tty_check::precheck(&procs, shell_job)
    })
}

/// The result of a scoped thread; a panic in it goes on in this thread.
fn joined<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
    h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// The process records of the tree under `root`, each process checked
/// for what crest refuses, before the seize.
fn precheck_tree(root: u32, files: super::files::FileOptions) -> Result<Vec<Process>> {
    let mut procs: Vec<Process> = Vec::new();
    let mut i = 0;
    let mut pids = vec![root];
    while i < pids.len() {
        let pid = pids[i];
        i += 1;
        let p = match collect_pstree(pid) {
            Ok(p) => p,
            // A child may exit while it runs; the seize decides about it.
            Err(_) if pid != root => continue,
            Err(e) => return Err(e),
        };
        if pid == root || !matches!(p.state, TaskState::Zombie { .. }) {
            match collect_process_unfrozen(pid) {
                Ok(state) => {
                    refuse_unsupported(&state)?;
                    files.refuse(&state)?;
                }
                // A running child may be exiting (its mm already gone while
                // its state still reads R) or a zombie by now: the frozen
                // pass decides.
                Err(e) if pid != root && (!matches!(e, Error::Unsupported(_)) || exited(pid)) => {
                    debug!("pid {pid}: not checked before the seize: {e}");
                }
                Err(e) => return Err(e),
            }
            let tids: Vec<Pid> = p.threads.iter().map(|&t| t as Pid).collect();
            let kids = tree::children(pid as Pid, &tids)?;
            pids.extend(kids.into_iter().filter_map(|c| u32::try_from(c).ok()));
        }
        procs.push(p);
    }
    Ok(procs)
}

/// Whether `pid` is gone or a zombie.
fn exited(pid: u32) -> bool {
    tree::state_of(pid as Pid).is_none_or(|(state, _)| state == b'Z')
}

/// Every step that needs the tree seized; the tree is unchanged after it,
/// whatever it returns. The machine's processes are scanned for the
/// session check on a second thread while this one collects and dumps
/// (the scan takes about as long as collecting a process); its verdict
/// comes before any other error, as if it had run first, and before the
/// image is completed.
fn dump_tree(
    tree: &SeizedTree,
    d: &ImageDir,
    opts: &DumpOptions,
    shell_job: bool,
    shared: &mut Shared,
) -> Result<()> {
    let root = tree.root();
    let mut procs = Vec::with_capacity(tree.members().len());
    for m in tree.members() {
        procs.push(collect_pstree(pid_u32(m.pid())?)?);
    }
    let members = procs.clone();
    let dumped = std::thread::scope(|s| {
        let scan = s.spawn(super::session::Machine::scan);
        let dumped = dump_members(tree, shared, d, &mut procs);
        let machine = joined(scan);
        super::session::check_sessions_in(&members, shell_job, &machine?)?;
        dumped
    });
    dumped?;
    super::files::tty::dump_ttys(d, &procs, shell_job)?;
    info!("pid {root}: writing the process tree and the inventory");
    write_pstree(d, &procs)?;
    fault_tree(root, "metadata")?;
    let parent = shared.track.as_ref().and_then(|t| t.parent.as_ref());
    let kind = crate::image::inventory::ImageKind::Dump;
    super::predump::write_inventory(d, pid_u32(root)?, &opts.command_line, kind, parent)
}

/// Dumps every seized member of `tree`, parents first, replacing its
/// record in `procs`.
fn dump_members(
    tree: &SeizedTree,
    shared: &mut Shared,
    d: &ImageDir,
    procs: &mut [Process],
) -> Result<()> {
    fault_tree(tree.root(), "seize")?;
    let pids: Vec<u32> = procs.iter().map(|p| p.pid).collect();
    shared.sockets = super::files::unix::tree_sockets(&pids);
    for (m, p) in tree.members().iter().zip(procs.iter_mut()) {
        if let Member::Seized(s) = m {
            *p = dump_process(s, d, shared)?;
        }
    }
    Ok(())
}

/// pstree.img: the process records, then each process's comm (a zombie
/// comes back with its name from there).
fn write_pstree(d: &ImageDir, procs: &[Process]) -> Result<()> {
    let mut w = d.writer(dir::PSTREE, FileKind::Pstree)?;
    for p in procs {
        w.write(p)?;
    }
    for p in procs {
        let comm = super::read_proc(p.pid, "comm")?;
        let comm = comm.strip_suffix(b"\n").unwrap_or(&comm);
        let n = comm.len().min(crate::image::pstree::COMM_LEN - 1);
        w.write(&crate::image::pstree::ProcessComm {
            pid: p.pid,
            comm: comm[..n].to_vec(),
        })?;
    }
    w.finish()?;
    Ok(())
}

pub(crate) fn pid_u32(pid: Pid) -> Result<u32> {
    u32::try_from(pid)
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| Error::Usage(format!("bad pid {pid}: give a positive process id")))
}

/// Refuses what the image cannot hold yet, before ptrace touches the
/// target. collect_process already refuses fds of unknown kinds, deleted
/// files and seccomp filters.
pub(crate) fn refuse_unsupported(state: &ProcessState) -> Result<()> {
    let pid = state.process.pid;
    let unsupported = |v: &&crate::image::vma::Vma| {
        matches!(v.backing, Backing::AnonShared { .. }) && !super::shmem::supported(v)
    };
    if let Some(v) = state.mm.vmas.iter().find(unsupported) {
        let kind = if v.name.starts_with(b"/SYSV") {
            "System V shared memory"
        } else if v.name.starts_with(b"[anon_shmem:") {
            "named shared anonymous memory"
        } else {
            "a shared memfd mapping"
        };
        return Err(Error::Unsupported(format!(
            "pid {pid} maps {kind} at {:#x}-{:#x} ({}), which crest cannot dump yet",
            v.start,
            v.end,
            String::from_utf8_lossy(&v.name)
        )));
    }
    Ok(())
}

/// After a complete dump: kill every process of the tree (and wait until
/// each is gone or a zombie for its parent to reap) or resume them (-R).
/// `frozen`: when the seize began; the freeze (seize to kill or resume)
/// is logged.
fn finish(tree: SeizedTree, opts: &DumpOptions, frozen: std::time::Instant) -> Result<()> {
    let root = tree.root();
    let count = tree.members().len();
    let ms = || frozen.elapsed().as_secs_f64() * 1e3;
    if opts.leave_running {
        tree.release(Release::Resume)?;
        info!("pid {root}: frozen for {:.3} ms (seize to resume)", ms());
        info!("pid {root}: dump complete, {count} process(es) resumed");
        return Ok(());
    }
    let pids: Vec<Pid> = tree.members().iter().map(Member::pid).collect();
    // Children first: nothing can fork meanwhile, every process is frozen
    // until its SIGKILL, and a killed child stays a zombie until its
    // parent dies too, then init reaps it.
    info!("pid {root}: frozen for {:.3} ms (seize to kill)", ms());
    tree.release(Release::Kill)?;
    let start = std::time::Instant::now();
    while let Some(&pid) = pids.iter().find(|&&p| !gone(p)) {
        if start.elapsed() > KILL_WAIT {
            return Err(Error::Target {
                pid,
                problem: "the image is complete but the process did not die within 5 s of SIGKILL"
                    .into(),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    info!("pid {root}: dump complete, {count} process(es) killed");
    Ok(())
}

/// True once `pid` no longer runs: /proc/PID is gone or shows a zombie.
pub fn gone(pid: Pid) -> bool {
    match std::fs::read(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(text) => {
            // The state follows the last ')' (the comm may contain one).
            let after = memchr::memrchr(b')', &text).map_or(&text[..], |i| &text[i + 1..]);
            matches!(after.get(1), Some(b'Z' | b'X'))
        }
    }
}
