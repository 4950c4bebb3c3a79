//! `crest dump -t PID -D DIR`: the whole dump of one process and its
//! threads, in the order the steps depend on each other.
//!
//! ```text
//!   collect_process (unseized) ─► refusals: nothing is touched yet
//!   seize ─► collect_process + pipe data ─► fill_cores ─► inject ─► parasite state
//!         ─► dump_pages ─► cure ─► task/mm/files/pstree ─► inventory.img
//!         ─► release: SIGKILL (default) or resume as before (-R)
//! ```
//!
//! The registers are read (fill_cores) before the parasite plants its own.
//! inventory.img is written last: a directory without it is an image cut
//! short, and `crest show` reports it as such. On any failure the parasite
//! is cured, the target is detached as it was (a stopped task stays
//! stopped), and the error is returned; the files already written are left
//! without an inventory.
//!
//! Fault injection (as CRIU's CRIU_FAULT): with `CREST_FAULT=STEP` in the
//! environment the dump fails on purpose right after STEP (one of
//! [`FAULT_STEPS`]), so tests can prove that the target survives a failure
//! at every step.

use std::path::PathBuf;

use super::parasite_state::{apply_parasite_state, collect_parasite_state};
use super::{ProcessState, collect_process};
use crate::error::{Error, Result};
use crate::image::ImageDir;
use crate::image::dir;
use crate::image::pstree::TaskState;
use crate::image::vma::Backing;
use crate::infect::{Parasite, Release, Seized, seize};
use crate::sys::Pid;
use crate::{info, warn};

/// How long crest waits for a killed target to be gone.
const KILL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The steps after which `CREST_FAULT` can make the dump fail.
pub const FAULT_STEPS: &[&str] = &[
    "seize",
    "collect",
    "cores",
    "inject",
    "parasite-state",
    "pages",
    "cure",
    "metadata",
];

/// Fails with a clear error if `CREST_FAULT` names `step`.
pub fn fault_point(pid: Pid, step: &'static str) -> Result<()> {
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
}

/// Dumps `opts.pid` into `opts.dir`, then kills or resumes it.
pub fn run(opts: &DumpOptions) -> Result<()> {
    let pid = opts.pid;
    info!("pid {pid}: checking what it holds before seizing it");
    let pre = collect_process(pid_u32(pid)?)?;
    refuse_unsupported(&pre)?;
    let d = ImageDir::create(&opts.dir)?;
    if d.exists(dir::INVENTORY) {
        return Err(Error::io(
            "write a new image over",
            opts.dir.join(dir::INVENTORY),
            std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "an image is already there; give an empty directory or remove that image first",
            ),
        ));
    }
    info!("pid {pid}: seizing every thread");
    let seized = seize(pid)?;
    match dump_seized(&seized, &d, opts) {
        Ok(()) => finish(seized, opts),
        Err(e) => {
            warn!("pid {pid}: dump failed, resuming the process as it was");
            if let Err(r) = seized.release(Release::Resume) {
                warn!("pid {pid}: {r}");
            }
            Err(e)
        }
    }
}

fn pid_u32(pid: Pid) -> Result<u32> {
    u32::try_from(pid)
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| Error::Usage(format!("bad pid {pid}: give a positive process id")))
}

/// Refuses what the image cannot hold yet, before ptrace touches the
/// target. collect_process already refuses fds of unknown kinds, deleted
/// files and seccomp filters.
fn refuse_unsupported(state: &ProcessState) -> Result<()> {
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

/// Every step that needs the target seized; the target is unchanged after
/// it, whatever it returns.
fn dump_seized(seized: &Seized, d: &ImageDir, opts: &DumpOptions) -> Result<()> {
    let pid = seized.pid();
    info!("pid {pid}: collecting /proc state of the seized process");
    fault_point(pid, "seize")?;
    let mut state = collect_process(pid_u32(pid)?)?;
    refuse_unsupported(&state)?;
    info!("pid {pid}: copying the data queued in its pipes");
    state.files.pipes = super::files::collect_pipe_data(state.process.pid, &state.files.fds)?;
    fault_point(pid, "collect")?;
    state.process.state = match seized.stop_signal() {
        Some(sig) => TaskState::Stopped { signal: sig as u32 },
        None => TaskState::Running,
    };
    info!(
        "pid {pid}: reading the registers of {} thread(s)",
        seized.threads().len()
    );
    super::core::fill_cores(&mut state, seized)?;
    fault_point(pid, "cores")?;
    info!("pid {pid}: injecting the parasite");
    let mut parasite = Parasite::inject(seized)?;
    let inside = dump_inside(seized, &mut parasite, &mut state, d);
    info!("pid {pid}: curing the parasite");
    let cured = parasite.cure();
    inside?;
    cured?;
    fault_point(pid, "cure")?;
    write_image(d, &state, &opts.command_line)
}

/// The steps run through the parasite.
fn dump_inside(
    seized: &Seized,
    parasite: &mut Parasite<'_>,
    state: &mut ProcessState,
    d: &ImageDir,
) -> Result<()> {
    let pid = seized.pid();
    fault_point(pid, "inject")?;
    info!("pid {pid}: collecting what only the process can tell");
    let ids: Vec<i32> = state.task.posix_timers.iter().map(|t| t.id).collect();
    let ps = collect_parasite_state(parasite, seized, &ids)?;
    apply_parasite_state(state, &ps)?;
    fault_point(pid, "parasite-state")?;
    info!("pid {pid}: dumping memory pages");
    super::pages::dump_pages(seized, parasite, &state.mm.vmas, d)?;
    let objects = super::shmem::dump_shmem(pid as u32, &state.mm.vmas, d)?;
    if objects > 0 {
        info!("pid {pid}: dumped {objects} shared memory object(s)");
    }
    fault_point(pid, "pages")
}

/// The metadata files, inventory.img last so that it marks a complete image.
fn write_image(d: &ImageDir, state: &ProcessState, command_line: &[String]) -> Result<()> {
    let pid = state.process.pid;
    info!("pid {pid}: writing the image metadata");
    super::write_process_files(d, state)?;
    fault_point(pid as Pid, "metadata")?;
    super::write_inventory(d, pid, command_line)
}

/// After a complete dump: kill the target (and wait until it is gone or a
/// zombie for its parent to reap) or resume it with `-R`.
fn finish(seized: Seized, opts: &DumpOptions) -> Result<()> {
    let pid = seized.pid();
    if opts.leave_running {
        seized.release(Release::Resume)?;
        info!("pid {pid}: dump complete, process resumed");
        return Ok(());
    }
    seized.release(Release::Kill)?;
    let start = std::time::Instant::now();
    while !gone(pid) {
        if start.elapsed() > KILL_WAIT {
            return Err(Error::Target {
                pid,
                problem: "the image is complete but the process did not die within 5 s of SIGKILL"
                    .into(),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    info!("pid {pid}: dump complete, process killed");
    Ok(())
}

/// True once `pid` no longer runs: /proc/PID is gone or shows a zombie.
fn gone(pid: Pid) -> bool {
    match std::fs::read(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(text) => {
            // The state follows the last ')' (the comm may contain one).
            let after = memchr::memrchr(b')', &text).map_or(&text[..], |i| &text[i + 1..]);
            matches!(after.get(1), Some(b'Z' | b'X'))
        }
    }
}
