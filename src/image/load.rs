//! Whole-file views for dump and restore: each image file as one typed value,
//! written in one call and loaded with its cross-record checks (exactly one
//! creds record, as many vmas as the mm record announces, sorted and not
//! overlapping, processes with unique pids whose parents come first...).
//!
//! Restore loads every metadata file this way before it creates any process,
//! so damage in metadata is refused while nothing has changed yet.

use std::io::Write;

use super::ImageError;
use super::creds::Creds;
use super::dir::{self, ImageDir};
use super::files::{Fd, FdDesc, PipeData, UnixQueue};
use super::header::FileKind;
use super::inventory::Inventory;
use super::mm::Mm;
use super::pstree::{Process, ProcessComm};
use super::record::{AnyRecord, Record};
use super::rlimits::Rlimits;
use super::sigactions::Sigactions;
use super::signals::SharedSignals;
use super::stream::RecordWriter;
use super::task::TaskMisc;
use super::thread::ThreadCore;
use super::timers::{Itimers, PosixTimer};
use super::vma::Vma;
use crate::error::Result;

/// Reads every known record of `name`, checking the file's kind.
pub fn read_records(d: &ImageDir, name: &str, kind: FileKind) -> Result<Vec<(u64, AnyRecord)>> {
    let mut rr = d.reader(name)?;
    if rr.header().kind != kind {
        let found = rr.header().kind.name();
        let problem = format!(
            "this is a {found} file, a {} file was expected",
            kind.name()
        );
        return Err(ImageError::new(name, 16, problem).into());
    }
    let mut v = Vec::new();
    while let Some(raw) = rr.next_known()? {
        v.push((raw.offset, AnyRecord::decode(&raw, name)?));
    }
    rr.expect_eof()?;
    Ok(v)
}

/// Fills a slot that must be set exactly once.
fn once<T>(slot: &mut Option<T>, v: T, name: &str, off: u64, what: &str) -> Result<(), ImageError> {
    if slot.is_some() {
        return Err(ImageError::new(
            name,
            off,
            format!("a second {what} record"),
        ));
    }
    *slot = Some(v);
    Ok(())
}

fn need<T>(slot: Option<T>, name: &str, what: &str) -> Result<T, ImageError> {
    slot.ok_or_else(|| ImageError::new(name, 0, format!("the file has no {what} record")))
}

/// inventory.img.
pub fn load_inventory(d: &ImageDir) -> Result<Inventory> {
    let mut inv = None;
    for (off, r) in read_records(d, dir::INVENTORY, FileKind::Inventory)? {
        if let AnyRecord::Inventory(i) = r {
            once(&mut inv, i, dir::INVENTORY, off, "inventory")?;
        }
    }
    Ok(need(inv, dir::INVENTORY, "inventory")?)
}

/// Writes a file holding `records` of one kind.
pub fn write_file<R: Record>(
    d: &ImageDir,
    name: &str,
    kind: FileKind,
    records: &[R],
) -> Result<()> {
    let mut w = d.writer(name, kind)?;
    for r in records {
        w.write(r)?;
    }
    w.finish()?
        .flush()
        .map_err(|e| crate::Error::io("write", d.path().join(name), e))
}

/// pstree.img: processes with unique pids, each parent listed before its children.
pub fn load_pstree(d: &ImageDir) -> Result<Vec<Process>> {
    let name = dir::PSTREE;
    let mut procs: Vec<Process> = Vec::new();
    for (off, r) in read_records(d, name, FileKind::Pstree)? {
        let AnyRecord::Process(p) = r else { continue };
        if procs.iter().any(|q| q.pid == p.pid) {
            return Err(
                ImageError::new(name, off, format!("process {} is listed twice", p.pid)).into(),
            );
        }
        if !procs.is_empty() && !procs.iter().any(|q| q.pid == p.ppid) {
            return Err(ImageError::new(
                name,
                off,
                format!("process {} comes before its parent {}", p.pid, p.ppid),
            )
            .into());
        }
        procs.push(p);
    }
    if procs.is_empty() {
        return Err(ImageError::new(name, 0, "the process tree is empty").into());
    }
    Ok(procs)
}

/// The process-comm records of pstree.img: each process's name at dump
/// time (none in images of an older crest).
pub fn load_comms(d: &ImageDir) -> Result<Vec<ProcessComm>> {
    Ok(read_records(d, dir::PSTREE, FileKind::Pstree)?
        .into_iter()
        .filter_map(|(_, r)| match r {
            AnyRecord::ProcessComm(c) => Some(c),
            _ => None,
        })
        .collect())
}

/// Everything task-PID.img holds.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskImage {
    /// Personality, umask, cwd...
    pub misc: TaskMisc,
    /// Credentials.
    pub creds: Creds,
    /// Resource limits.
    pub rlimits: Rlimits,
    /// Signal actions.
    pub sigactions: Sigactions,
    /// Interval timers.
    pub itimers: Itimers,
    /// POSIX timers.
    pub posix_timers: Vec<PosixTimer>,
    /// Process-wide pending signals.
    pub shared_signals: SharedSignals,
    /// One core per thread, the leader first.
    pub threads: Vec<ThreadCore>,
}

impl TaskImage {
    /// Writes task-PID.img.
    pub fn write(&self, d: &ImageDir, pid: u32) -> Result<()> {
        let name = dir::task_file(pid);
        let mut w: RecordWriter<_> = d.writer(&name, FileKind::Task)?;
        w.write(&self.misc)?;
        w.write(&self.creds)?;
        w.write(&self.rlimits)?;
        w.write(&self.sigactions)?;
        w.write(&self.itimers)?;
        for t in &self.posix_timers {
            w.write(t)?;
        }
        w.write(&self.shared_signals)?;
        for t in &self.threads {
            w.write(t)?;
        }
        w.finish()?;
        Ok(())
    }

    /// Loads task-PID.img.
    pub fn load(d: &ImageDir, pid: u32) -> Result<TaskImage> {
        let name = dir::task_file(pid);
        let (mut misc, mut creds, mut rl, mut sa, mut it, mut ss) =
            (None, None, None, None, None, None);
        let (mut posix_timers, mut threads) = (Vec::new(), Vec::<ThreadCore>::new());
        for (off, r) in read_records(d, &name, FileKind::Task)? {
            match r {
                AnyRecord::TaskMisc(v) => once(&mut misc, v, &name, off, "task-misc")?,
                AnyRecord::Creds(v) => once(&mut creds, v, &name, off, "creds")?,
                AnyRecord::Rlimits(v) => once(&mut rl, v, &name, off, "rlimits")?,
                AnyRecord::Sigactions(v) => once(&mut sa, v, &name, off, "sigactions")?,
                AnyRecord::Itimers(v) => once(&mut it, v, &name, off, "itimers")?,
                AnyRecord::SharedSignals(v) => once(&mut ss, v, &name, off, "shared-signals")?,
                AnyRecord::PosixTimer(v) => posix_timers.push(v),
                AnyRecord::ThreadCore(v) if threads.iter().any(|t| t.tid == v.tid) => {
                    return Err(
                        ImageError::new(&name, off, format!("thread {} twice", v.tid)).into(),
                    );
                }
                AnyRecord::ThreadCore(v) => threads.push(v),
                _ => {}
            }
        }
        if threads.first().map(|t| t.tid) != Some(pid) {
            return Err(
                ImageError::new(&name, 0, format!("the leader thread {pid} is not first")).into(),
            );
        }
        Ok(TaskImage {
            misc: need(misc, &name, "task-misc")?,
            creds: need(creds, &name, "creds")?,
            rlimits: need(rl, &name, "rlimits")?,
            sigactions: need(sa, &name, "sigactions")?,
            itimers: need(it, &name, "itimers")?,
            posix_timers,
            shared_signals: ss.unwrap_or_default(),
            threads,
        })
    }
}

/// Everything mm-PID.img holds.
#[derive(Debug, Clone, PartialEq)]
pub struct MmImage {
    /// The address-space values.
    pub mm: Mm,
    /// The mappings, sorted, not overlapping.
    pub vmas: Vec<Vma>,
}

impl MmImage {
    /// Writes mm-PID.img (`mm.nr_vmas` is set from `vmas`).
    pub fn write(&self, d: &ImageDir, pid: u32) -> Result<()> {
        let mut w = d.writer(&dir::mm_file(pid), FileKind::Mm)?;
        let mut mm = self.mm.clone();
        mm.nr_vmas = u32::try_from(self.vmas.len()).unwrap_or(u32::MAX);
        w.write(&mm)?;
        for v in &self.vmas {
            w.write(v)?;
        }
        w.finish()?;
        Ok(())
    }

    /// Loads mm-PID.img.
    pub fn load(d: &ImageDir, pid: u32) -> Result<MmImage> {
        let name = dir::mm_file(pid);
        let (mut mm, mut vmas) = (None, Vec::<Vma>::new());
        for (off, r) in read_records(d, &name, FileKind::Mm)? {
            match r {
                AnyRecord::Mm(v) => once(&mut mm, v, &name, off, "mm")?,
                AnyRecord::Vma(v) => {
                    if vmas.last().is_some_and(|p| p.end > v.start) {
                        return Err(ImageError::new(
                            &name,
                            off,
                            format!(
                                "mapping at {:#x} overlaps or precedes the previous one",
                                v.start
                            ),
                        )
                        .into());
                    }
                    vmas.push(v);
                }
                _ => {}
            }
        }
        let mm = need(mm, &name, "mm")?;
        if mm.nr_vmas as usize != vmas.len() {
            return Err(ImageError::new(
                &name,
                0,
                format!(
                    "the mm record announces {} mappings, the file has {}",
                    mm.nr_vmas,
                    vmas.len()
                ),
            )
            .into());
        }
        Ok(MmImage { mm, vmas })
    }
}

/// Everything files-PID.img holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FilesImage {
    /// The fds, each number once.
    pub fds: Vec<Fd>,
    /// Buffered pipe contents.
    pub pipes: Vec<PipeData>,
    /// What waited in unix sockets' receive queues.
    pub unix_queues: Vec<UnixQueue>,
    /// The contents of deleted files still open or mapped.
    pub ghosts: Vec<crate::image::files::GhostData>,
    /// The file locks held (dumped with --file-locks).
    pub locks: Vec<crate::image::files::FileLock>,
    /// The open file description of each fd (none in older images).
    pub descs: Vec<FdDesc>,
    /// Files in flight that are the open file of a held fd.
    pub flight_files: Vec<crate::image::files::UnixFlightFile>,
    /// The memfds mapped without an fd (none in older images).
    pub memfds: Vec<crate::image::files::MemfdObject>,
}

impl FilesImage {
    /// Writes files-PID.img.
    pub fn write(&self, d: &ImageDir, pid: u32) -> Result<()> {
        let mut w = d.writer(&dir::files_file(pid), FileKind::Files)?;
        for f in &self.fds {
            w.write(f)?;
        }
        for p in &self.pipes {
            w.write(p)?;
        }
        for q in &self.unix_queues {
            w.write(q)?;
        }
        for g in &self.ghosts {
            w.write(g)?;
        }
        // An older crest must refuse the image, not restore it without
        // the locks the process relies on.
        for l in &self.locks {
            let payload = super::record::to_payload(l);
            w.write_raw(
                crate::image::files::FileLock::KIND,
                super::stream::MUST_UNDERSTAND,
                &payload,
            )?;
        }
        for x in &self.descs {
            w.write(x)?;
        }
        for x in &self.flight_files {
            w.write(x)?;
        }
        for m in &self.memfds {
            w.write(m)?;
        }
        w.finish()?;
        Ok(())
    }

    /// Loads files-PID.img.
    pub fn load(d: &ImageDir, pid: u32) -> Result<FilesImage> {
        let name = dir::files_file(pid);
        let mut img = FilesImage::default();
        for (off, r) in read_records(d, &name, FileKind::Files)? {
            match r {
                AnyRecord::Fd(f) if img.fds.iter().any(|g| g.fd == f.fd) => {
                    return Err(ImageError::new(&name, off, format!("fd {} twice", f.fd)).into());
                }
                AnyRecord::Fd(f) => img.fds.push(f),
                AnyRecord::PipeData(p) => img.pipes.push(p),
                AnyRecord::UnixQueue(q) => img.unix_queues.push(q),
                AnyRecord::GhostData(g) => img.ghosts.push(g),
                AnyRecord::FileLock(l) => img.locks.push(l),
                AnyRecord::FdDesc(x) if img.descs.iter().any(|y| y.fd == x.fd) => {
                    let what = format!("fd {} has two description ids", x.fd);
                    return Err(ImageError::new(&name, off, what).into());
                }
                AnyRecord::FdDesc(x) => img.descs.push(x),
                AnyRecord::UnixFlightFile(x) => img.flight_files.push(x),
                AnyRecord::MemfdObject(m) => img.memfds.push(m),
                _ => {}
            }
        }
        Ok(img)
    }
}
