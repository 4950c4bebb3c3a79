//! The dump of one seized process of the tree, in the order the steps
//! depend on each other:
//!
//! ```text
//!   collect_process + pipe data ─► fill_cores ─► inject ─► parasite state
//!         ─► dump_pages + shared memory ─► cure ─► task/mm/files-PID.img
//! ```
//!
//! The registers are read (fill_cores) before the parasite plants its own.
//! Whatever happens, the parasite is cured before this returns, so the
//! process is exactly as before and the tree can be released. What several
//! processes share is stored once ([`Shared`]): a pipe's queued bytes with
//! the first process holding an end of it, a shared memory object with the
//! first process mapping it.

use super::ProcessState;
use super::parasite_state::{apply_parasite_state, collect_parasite_state};
use super::run::{fault_point, pid_u32, refuse_unsupported};
use crate::error::Result;
use crate::image::ImageDir;
use crate::image::pstree::{Process, TaskState};
use crate::infect::{Parasite, Seized};
use crate::{debug, info};

/// What the processes of a tree share, dumped once: the pipes whose data
/// is stored and the shared memory objects dumped so far.
#[derive(Debug, Default)]
pub struct Shared {
    /// Pipe ids (inode numbers) already looked at.
    pub pipes: Vec<u64>,
    /// Shared memory object ids (shmids) already in the image.
    pub shmem: Vec<u64>,
    /// The inode of every socket the tree holds.
    pub sockets: Vec<u64>,
    /// Socket inodes outside the tree `--external unix[INO]` allows as peers.
    pub external: Vec<u64>,
    /// The open file descriptions seen so far (kcmp representatives).
    pub descs: super::files::Descs,
    /// Dirty tracking of an incremental dump (`--track-mem`).
    pub track: Option<super::track::session::Tracking>,
    /// What the dump's options allow of the processes' files.
    pub files: super::files::FileOptions,
}

/// Dumps `seized` into `d` (task, mm, files, pagemap and pages files);
/// returns its process record. The process is unchanged afterwards,
/// whatever this returns.
///
/// The VMAs come from /proc/PID/maps; /proc/PID/smaps, which adds the
/// VmFlags but walks every page table of the process (about 3 ms for 64
/// MiB, 90 ms for 2 GiB), is read on a second thread during the page dump
/// (see [`dump_inside`]), when the other CPU mostly waits for crest. Its
/// refusals come before the image files are written. A dump that tracks
/// memory compares the VMAs with the parent's without smaps' flags
/// (track::unchanged).
pub fn dump_process(seized: &Seized, d: &ImageDir, shared: &mut Shared) -> Result<Process> {
    let pid = seized.pid();
    let upid = pid_u32(pid)?;
    info!("pid {pid}: collecting /proc state of the seized process");
    let mut state = super::collect_process_unfrozen(upid)?;
    let smaps = dump_collected(seized, d, shared, &mut state)?;
    complete_vmas(upid, &mut state, &smaps)?;
    fault_point(pid, "cure")?;
    info!("pid {pid}: writing its image files");
    super::write_task_files(d, &state)?;
    Ok(state.process)
}

/// Adds smaps' VmFlags to the VMAs of `state` (see [`dump_process`]).
fn complete_vmas(pid: u32, state: &mut ProcessState, text: &[u8]) -> Result<()> {
    let vmas = &mut state.mm.vmas;
    if super::vma::apply_smaps(pid, vmas, text)? {
        return Ok(());
    }
    debug!("pid {pid}: smaps read with the parasite inside differs, reading it again");
    let text = super::read_proc(pid, "smaps")?;
    match super::vma::apply_smaps(pid, vmas, &text)? {
        true => Ok(()),
        false => Err(crate::error::Error::Target {
            pid: pid as crate::sys::Pid,
            problem: "its mappings changed while it was frozen; dump it again".into(),
        }),
    }
}

/// Everything from the checks of the collected state to the cure; returns
/// /proc/PID/smaps as read during the page dump.
fn dump_collected(
    seized: &Seized,
    d: &ImageDir,
    shared: &mut Shared,
    state: &mut ProcessState,
) -> Result<Vec<u8>> {
    let pid = seized.pid();
    refuse_unsupported(state)?;
    shared.files.refuse(state)?;
    info!("pid {pid}: copying the data queued in its pipes");
    state.files.pipes = super::files::collect_pipe_data_once(
        state.process.pid,
        &state.files.fds,
        &mut shared.pipes,
    )?;
    collect_sockets(state, shared)?;
    let fifos =
        super::files::fifo::collect_data(state.process.pid, &state.files.fds, &mut shared.pipes)?;
    state.files.pipes.extend(fifos);
    state.files.ghosts =
        super::files::ghost::collect_data(state.process.pid, &state.files.fds, &state.mm.vmas)?;
    state.files.memfds =
        super::files::memfd::mapped_only(state.process.pid, &state.files.fds, &state.mm.vmas)?;
    state.files.descs = shared.descs.assign(state.process.pid, &state.files.fds)?;
    fault_point(pid, "collect")?;
    state.process.state = match seized.stop_signal() {
        Some(sig) => TaskState::Stopped { signal: sig as u32 },
        None => TaskState::Running,
    };
    info!(
        "pid {pid}: reading the registers of {} thread(s)",
        seized.threads().len()
    );
    super::core::fill_cores(state, seized)?;
    fault_point(pid, "cores")?;
    info!("pid {pid}: injecting the parasite");
    let mut parasite = Parasite::inject(seized)?;
    let inside = dump_inside(seized, &mut parasite, state, d, shared);
    info!("pid {pid}: curing the parasite");
    let cured = parasite.cure();
    let smaps = inside?;
    cured?;
    Ok(smaps)
}

/// The queues of the process's unix sockets (with the sockets in flight
/// in them), then the refusal of peers outside the tree.
fn collect_sockets(state: &mut ProcessState, shared: &Shared) -> Result<()> {
    use super::files::{unix, unix_queue};
    let (pid, files) = (state.process.pid, &mut state.files);
    info!("pid {pid}: copying the data queued in its unix sockets");
    // A pipe in flight is stored with this process unless it holds the
    // pipe itself (its bytes are stored already): restore remakes it for
    // this process.
    let mut seen: Vec<u64> = files
        .fds
        .iter()
        .filter_map(|f| match f.file {
            crate::image::files::FdFile::Pipe { pipe_id, .. } => Some(pipe_id),
            _ => None,
        })
        .collect();
    let got = unix_queue::collect_queues(pid, &files.fds, &mut seen)?;
    files.unix_queues = got.queues;
    files.pipes.extend(got.pipes);
    files.flight_files = got.flight_files;
    let mut known = shared.sockets.clone();
    known.extend(unix::in_flight_sockets(&files.unix_queues).map(|s| s.ino));
    unix::check_in_flight_peers(pid, &files.unix_queues, &known)?;
    unix::check_peers(pid, &mut files.fds, &known, &shared.external)
}

/// The steps run through the parasite; returns /proc/PID/smaps, read on
/// a second thread from the page dump on. Not earlier: the tracker's
/// UFFDIO_REGISTER takes the target's mmap lock for writing, and a smaps
/// read holds it for reading while it walks a whole VMA (about 40 ms for
/// 1 GiB), which made an incremental dump's short freeze wait for smaps.
fn dump_inside(
    seized: &Seized,
    parasite: &mut Parasite<'_>,
    state: &mut ProcessState,
    d: &ImageDir,
    shared: &mut Shared,
) -> Result<Vec<u8>> {
    let pid = seized.pid();
    fault_point(pid, "inject")?;
    info!("pid {pid}: collecting what only the process can tell");
    let ids: Vec<i32> = state.task.posix_timers.iter().map(|t| t.id).collect();
    let ps = collect_parasite_state(parasite, seized, &ids)?;
    apply_parasite_state(state, &ps)?;
    fault_point(pid, "parasite-state")?;
    let dirty = match shared.track.as_mut() {
        Some(t) => t.start_process(pid_u32(pid)?, parasite, &state.mm.vmas)?,
        None => None,
    };
    fault_point(pid, "track")?;
    let upid = pid_u32(pid)?;
    std::thread::scope(|s| {
        let smaps = s.spawn(move || super::read_proc(upid, "smaps"));
        let dumped = dump_memory(seized, parasite, state, d, shared, dirty);
        let text = smaps
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        dumped?;
        text
    })
}

/// The private pages, memfds and shared memory of the process.
fn dump_memory(
    seized: &Seized,
    parasite: &mut Parasite<'_>,
    state: &ProcessState,
    d: &ImageDir,
    shared: &mut Shared,
    dirty: Option<super::track::DirtyMap>,
) -> Result<()> {
    let pid = seized.pid();
    info!("pid {pid}: dumping memory pages");
    let vmas = &state.mm.vmas;
    super::pages::dump_pages_filtered(seized, parasite, vmas, d, dirty.as_ref())?;
    if let Some(t) = &shared.track {
        t.after_pages(pid_u32(pid)?)?;
    }
    let vmas = &state.mm.vmas;
    let fds = &state.files.fds;
    let memfds = super::files::memfd::dump_memfds(pid_u32(pid)?, fds, vmas, d, &mut shared.shmem)?;
    if memfds > 0 {
        info!("pid {pid}: dumped {memfds} memfd(s)");
    }
    let objects = super::shmem::dump_shmem_once(pid_u32(pid)?, vmas, d, &mut shared.shmem)?;
    if objects > 0 {
        info!("pid {pid}: dumped {objects} shared memory object(s)");
    } else {
        debug!("pid {pid}: no shared memory object it maps is new to the image");
    }
    fault_point(pid, "pages")
}
