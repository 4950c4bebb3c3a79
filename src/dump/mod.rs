//! `crest dump`: what crest collects about a process from the outside,
//! through /proc and syscalls on its pid, without entering it.
//!
//! Each collector is one function over one kernel interface, named after the
//! resource (`collect_vmas`, `collect_files`...), returning the image records
//! of `src/image/`. [`collect_process`] gathers them into a [`ProcessState`]
//! and [`write_metadata`] writes it. What only the process itself can tell
//! (registers, sigactions, timer values, securebits, dumpable, the exact brk,
//! pipe contents, memory pages) is left at its default here and filled by the
//! parasite step; each such field says so where it is declared.
//!
//! ```text
//!  /proc/PID/{smaps,map_files,stat,auxv,exe}  ──► mm::collect_mm, vma::collect_vmas  ──► mm-PID.img
//!  /proc/PID/{fd,fdinfo}                       ──► files::collect_files                ──► files-PID.img
//!  /proc/PID/{status,comm,cwd,root,personality,timers}, prlimit64
//!                                              ──► task::collect_*                     ──► task-PID.img
//!  /proc/PID/{stat,task}                       ──► task::collect_pstree                ──► pstree.img
//!  uname, CPUID/XGETBV, AT_HWCAP               ──► inventory::build_inventory          ──► inventory.img
//! ```

pub mod core;
pub mod files;
pub mod inventory;
pub mod mm;
pub mod pages;
pub mod parasite_state;
pub mod predump;
pub mod process;
pub mod run;
pub mod session;
pub mod shmem;
pub mod signals;
pub mod task;
pub mod track;
pub mod vma;

use crate::error::{Errno, Error, Result};
use crate::image::ImageDir;
use crate::image::dir;
use crate::image::header::FileKind;
use crate::image::load::{FilesImage, MmImage, TaskImage, write_file};
use crate::image::pstree::{Process, TaskState};

pub use task::ThreadInfo;

/// Everything crest collects about one process from outside it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessState {
    /// The process record of pstree.img.
    pub process: Process,
    /// task-PID.img. Filled here: misc (but `dumpable`, `pdeath_signal`,
    /// `child_subreaper`: parasite), creds (but `securebits`: parasite),
    /// rlimits, POSIX timers (ids, clocks and sigevents; their times and
    /// overruns: parasite). Left for the parasite: sigactions, itimers,
    /// shared_signals (the siginfo needs PTRACE_PEEKSIGINFO; the mask is in
    /// `shared_pending`), thread cores.
    pub task: TaskImage,
    /// mm-PID.img. `mm.brk.1` is the page-aligned end of `[heap]`: the exact
    /// brk needs brk(0) in the process.
    pub mm: MmImage,
    /// files-PID.img; the pipe data is added while the process is seized
    /// (files::collect_pipe_data).
    pub files: FilesImage,
    /// Per thread: tid, comm, blocked and pending masks from /proc.
    pub threads: Vec<ThreadInfo>,
    /// ShdPnd: the signals pending for the whole process.
    pub shared_pending: u64,
    /// /proc/PID/oom_score_adj (the image format has no field for it yet).
    pub oom_score_adj: i32,
}

/// Collects everything /proc and syscalls on `pid` tell about the process.
///
/// Refuses, naming the resource, a process holding what crest cannot dump
/// yet, a zombie (its parent's tree dump records it) and a pid that is gone.
pub fn collect_process(pid: u32) -> Result<ProcessState> {
    collect_process_with(pid, vma::collect_vmas)
}

/// [`collect_process`] for the checks before the seize: the VMAs from
/// /proc/PID/maps only (see [`vma::collect_vmas_unfrozen`]).
pub fn collect_process_unfrozen(pid: u32) -> Result<ProcessState> {
    collect_process_with(pid, vma::collect_vmas_unfrozen)
}

fn collect_process_with(
    pid: u32,
    collect_vmas: fn(u32) -> Result<Vec<crate::image::vma::Vma>>,
) -> Result<ProcessState> {
    let process = task::collect_pstree(pid)?;
    if let TaskState::Zombie { .. } = process.state {
        return Err(Error::Unsupported(format!(
            "pid {pid} is a zombie: it has no memory or files to dump; dump its parent's tree instead"
        )));
    }
    let vmas = collect_vmas(pid)?;
    let mm = mm::collect_mm(pid, &vmas)?;
    let files = files::collect_files(pid)?;
    let status = task::status(pid)?;
    let task = collect_task(pid, &status)?;
    Ok(ProcessState {
        threads: task::collect_threads(pid, &process.threads)?,
        process,
        task,
        mm: MmImage { mm, vmas },
        files: FilesImage {
            locks: files::lock::collect_locks(pid, &files)?,
            fds: files,
            ..FilesImage::default()
        },
        shared_pending: status.shared_pending,
        oom_score_adj: task::collect_oom_score_adj(pid)?,
    })
}

/// task-PID.img's records as far as /proc shows them (see [`ProcessState::task`]).
fn collect_task(pid: u32, status: &crate::proc::status::Status) -> Result<TaskImage> {
    task::refuse_seccomp(pid, status)?;
    Ok(TaskImage {
        misc: task::collect_misc(pid, status)?,
        creds: task::collect_creds(status),
        rlimits: task::collect_rlimits(pid)?,
        sigactions: Default::default(),
        itimers: Default::default(),
        posix_timers: task::collect_posix_timers(pid)?,
        shared_signals: Default::default(),
        threads: Vec::new(),
    })
}

/// Writes pstree.img, task-PID.img, mm-PID.img and files-PID.img, then
/// inventory.img last, so that an inventory marks a complete image;
/// `options` is the dump's command line for the inventory. The page store
/// (pagemap-*.img, pages-*.img) is the page step's.
pub fn write_metadata(d: &ImageDir, state: &ProcessState, options: &[String]) -> Result<()> {
    write_process_files(d, state)?;
    write_inventory(d, state.process.pid, options)
}

/// pstree.img (of this one process), task-PID.img, mm-PID.img and
/// files-PID.img of `state`.
pub fn write_process_files(d: &ImageDir, state: &ProcessState) -> Result<()> {
    write_file(
        d,
        dir::PSTREE,
        FileKind::Pstree,
        std::slice::from_ref(&state.process),
    )?;
    write_task_files(d, state)
}

/// task-PID.img, mm-PID.img and files-PID.img of `state` (a tree dump
/// writes pstree.img once, for every process).
pub fn write_task_files(d: &ImageDir, state: &ProcessState) -> Result<()> {
    let pid = state.process.pid;
    state.task.write(d, pid)?;
    state.mm.write(d, pid)?;
    state.files.write(d, pid)
}

/// inventory.img: written last, it is what makes an image complete.
pub fn write_inventory(d: &ImageDir, pid: u32, options: &[String]) -> Result<()> {
    let inv = inventory::build_inventory(pid, options)?;
    write_file(d, dir::INVENTORY, FileKind::Inventory, &[inv])
}

/// Reads `/proc/PID/FILE`, turning "no such file" for the whole process
/// into an error that says the process is gone.
pub(crate) fn read_proc(pid: u32, file: &str) -> Result<Vec<u8>> {
    crate::proc::read(&pid.to_string(), file).map_err(|e| gone_or(pid, e))
}

/// If `pid` no longer exists, an error saying so; otherwise `e`.
pub(crate) fn gone_or(pid: u32, e: Error) -> Error {
    if std::path::Path::new(&format!("/proc/{pid}")).exists() {
        return e;
    }
    Error::Sys {
        call: "open /proc/PID",
        context: format!("collecting the state of pid {pid}"),
        errno: Errno::ESRCH,
        hint: "the process does not exist or exited during the dump; check the pid",
    }
}

/// Turns a /proc parse failure into crest's error, naming the file.
pub(crate) fn parsed<T>(
    pid: u32,
    file: &str,
    r: std::result::Result<T, crate::proc::ParseError>,
) -> Result<T> {
    r.map_err(|e| e.in_file(&format!("/proc/{pid}/{file}")))
}
