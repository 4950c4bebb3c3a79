//! The page dump: a process's private memory into pagemap-PID.img and
//! pages-PID.img, read through `/proc/PID/pagemap` and moved with
//! vmsplice(2) and splice(2) so the data never passes through crest.
//!
//! ```text
//!   PAGEMAP_SCAN or /proc/PID/pagemap (walk.rs) ──► spans: data, zero page ─► zero
//!   target (parasite):  vmsplice(pipe k%N, batch k), k+1, k+2 ... as commands arrive
//!   crest:              splice(pipe (k-N+1)%N, batch k-N+1) into the file, in order
//! ```
//!
//! A ring of pipes takes turns so that the two sides overlap: crest sends
//! the commands that fill the pipes (without waiting for their answers),
//! and empties the oldest filled pipe into the pages file while the
//! parasite fills the others; the answer of a command is collected just
//! before its pipe is emptied. Waiting for each command's round trip
//! instead (the parasite's wake-up on the other CPU costs more than its
//! vmsplice) cost about 40% of the page dump's time; with several commands
//! queued, a parasite that gets the CPU late catches up in one go.
//!
//! Which pages: every present or swapped page of a private anonymous VMA,
//! and of a private file VMA only its anonymous (copied-on-write) pages:
//! page-cache pages are the file's, which restore maps again. Shared
//! mappings are not here (shared anonymous memory goes to the shmem store,
//! shared files keep their data), nor are the kernel's special mappings
//! (restore takes the kernel's own vdso/vvar). A page mapped to the
//! kernel's zero page (read, never written) is recorded as a zero run
//! (PAGEMAP_SCAN says so; the pagemap read and the huge zero page need its
//! PFN, learnt by reading a fresh page of crest's own, and visible to
//! CAP_SYS_ADMIN only: without it such pages are stored like any other). A
//! page that was written and later zeroed by the program is stored: only
//! its PFN is looked at, never its bytes. A never-touched page is not in the
//! image at all.
//!
//! The pipe is created inside the target (only the target can vmsplice its
//! own memory), crest takes a copy of its read end with pidfd_getfd and
//! grows it with F_SETPIPE_SZ (crest's privilege, not the target's, counts),
//! and closes both ends in the target at the end, on every path, so the
//! target's fd table is as before. A VMA the target cannot read (PROT_NONE,
//! write-only) cannot be vmspliced: its pages are copied through
//! `/proc/PID/mem` (which may read them) with their CRC instead.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;

use crate::blob::proto::{CMD_VMSPLICE, MemRange, PipeFds, VMSPLICE_MAX_IOV, VmspliceArgs};
use crate::error::{Error, Result};
use crate::image::ImageDir;
use crate::image::dir::{pagemap_file, pages_file};
use crate::image::pagemap::Space;
use crate::image::vma::{Backing, Vma};
use crate::infect::{Parasite, Seized};
use crate::sys::splice::pipe_size;
use crate::{debug, info};

use super::track::DirtyMap;

mod pipe;
pub mod sink;
pub mod walk;
mod zero;

use sink::Writer;
pub use sink::{PageTarget, Sink};
use walk::{Span, Walker};

/// The pipes that take turns (see the module docs): up to PIPES - 1
/// commands are queued in the parasite while crest empties a pipe.
const PIPES: usize = 4;
/// Runs queued before they are written, whatever the pipe holds.
const MAX_QUEUED: usize = 4096;
/// Bytes per read of a page copy through /proc/PID/mem.
const COPY_CHUNK: usize = 256 << 10;

/// What a page dump stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageStats {
    /// Pages stored in the pages file.
    pub stored: u64,
    /// Zero pages recorded (not stored).
    pub zero: u64,
    /// Bytes of page data written (stored * page size).
    pub bytes: u64,
}

/// Which pages of a VMA the dump keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// Every present or swapped page.
    All,
    /// Only anonymous (copied-on-write) pages: not page-cache ones.
    AnonOnly,
}

fn keep(vma: &Vma) -> Option<Keep> {
    match vma.backing {
        Backing::AnonPrivate => Some(Keep::All),
        Backing::FilePrivate { .. } => Some(Keep::AnonOnly),
        _ => None,
    }
}

/// One queued run, written in address order.
#[derive(Debug, Clone, Copy)]
enum Run {
    /// Moved through the pipe.
    Splice { vaddr: u64, pages: u64 },
    /// Copied through /proc/PID/mem (the target cannot read it).
    Copy { vaddr: u64, pages: u64 },
    /// Zero pages.
    Zero { vaddr: u64, pages: u64 },
    /// Unchanged since the parent image (incremental dumps).
    Parent { vaddr: u64, pages: u64 },
}

/// One of the target's page pipes and crest's copy of its read end.
struct Pipe {
    fds: PipeFds,
    read_end: OwnedFd,
}

/// Runs in address order, with the ranges of the spliced ones, which one
/// CMD_VMSPLICE moves into pipe number `pipe`.
#[derive(Default)]
struct Batch {
    pipe: usize,
    runs: Vec<Run>,
    iov: Vec<MemRange>,
    pages: u64,
}

/// The dump's state: the target's pipes, the image writer, the batch
/// being gathered and those sent to the parasite, oldest first.
struct Dumper<'p, 'a, 'c> {
    pid: u32,
    parasite: &'p mut Parasite<'a>,
    pipes: Vec<Pipe>,
    pipe_pages: u64,
    page_size: u64,
    writer: Writer<'c>,
    mem: File,
    batch: Batch,
    /// Sent to the parasite (CMD_VMSPLICE), not yet written.
    inflight: std::collections::VecDeque<Batch>,
    /// Which pages changed since the parent image (incremental dumps).
    dirty: Option<&'p DirtyMap>,
}

/// Dumps the private pages of `vmas` (the process's, in address order) of
/// the seized process into `dir`, through its injected `parasite`; to the
/// page server instead when `crest dump --page-server` connected to one.
pub fn dump_pages(
    seized: &Seized,
    parasite: &mut Parasite<'_>,
    vmas: &[Vma],
    dir: &ImageDir,
) -> Result<PageStats> {
    dump_pages_filtered(seized, parasite, vmas, dir, None)
}

/// Like [`dump_pages`], for an incremental dump: a populated page that
/// `dirty` says was not written since the parent image is recorded as a
/// `parent` run instead of being stored (zero pages stay zero runs).
pub fn dump_pages_filtered(
    seized: &Seized,
    parasite: &mut Parasite<'_>,
    vmas: &[Vma],
    dir: &ImageDir,
    dirty: Option<&DirtyMap>,
) -> Result<PageStats> {
    crate::pageserver::client::with_active(|client| {
        let target = match client {
            Some(c) => PageTarget::Server(c),
            None => PageTarget::Dir(dir),
        };
        dump_pages_to(seized, parasite, vmas, target, dirty)
    })
}

/// Dumps the private pages of `vmas` like [`dump_pages_filtered`] into `target`.
pub fn dump_pages_to(
    seized: &Seized,
    parasite: &mut Parasite<'_>,
    vmas: &[Vma],
    target: PageTarget<'_>,
    dirty: Option<&DirtyMap>,
) -> Result<PageStats> {
    let pid = seized.pid() as u32;
    let mut fds = Vec::with_capacity(PIPES);
    let mut result = Ok(PageStats::default());
    for _ in 0..PIPES {
        match pipe::open(pid, parasite) {
            Ok(f) => fds.push(f),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    if result.is_ok() {
        result = dump_through(pid, parasite, &fds, vmas, target, dirty);
    }
    // Every pipe is closed whatever happened, the first failure reported.
    let closed: Result<Vec<()>> = fds.into_iter().map(|f| pipe::close(parasite, f)).collect();
    let stats = result?;
    closed?;
    info!(
        "pid {pid}: {} pages stored, {} zero pages recorded",
        stats.stored, stats.zero
    );
    Ok(stats)
}

fn dump_through(
    pid: u32,
    parasite: &mut Parasite<'_>,
    fds: &[PipeFds],
    vmas: &[Vma],
    target: PageTarget<'_>,
    dirty: Option<&DirtyMap>,
) -> Result<PageStats> {
    let mut d = Dumper::new(pid, parasite, fds, target)?;
    d.dirty = dirty;
    let mut walker = Walker::open(pid, dirty.is_some_and(DirtyMap::soft_dirty))?;
    for vma in vmas {
        if let Some(k) = keep(vma) {
            d.walk_vma(&mut walker, vma, k)?;
        }
    }
    debug!(
        "pid {pid}: pages found with {}",
        match walker.scans() {
            true => "PAGEMAP_SCAN",
            false => "a pagemap read",
        }
    );
    d.flush()?;
    d.write_filled()?;
    let totals = d.writer.totals();
    sink::finish(d.writer, &pagemap_file(pid))?;
    Ok(PageStats {
        stored: totals.present,
        zero: totals.zero,
        bytes: totals.present * d.page_size,
    })
}

impl<'p, 'a, 'c> Dumper<'p, 'a, 'c> {
    /// Takes the pipes' read ends and creates the image files.
    fn new(
        pid: u32,
        parasite: &'p mut Parasite<'a>,
        fds: &[PipeFds],
        target: PageTarget<'c>,
    ) -> Result<Dumper<'p, 'a, 'c>> {
        let page_size = crate::sys::mm::page_size() as u64;
        let mut pipes = Vec::with_capacity(fds.len());
        let mut pipe_pages = u64::MAX;
        for &f in fds {
            let read_end = pipe::read_end(pid, f.read_fd)?;
            let bytes = pipe_size(read_end.as_fd())
                .map_err(|e| Error::sys("fcntl", format!("F_GETPIPE_SZ of pid {pid}'s pipe"), e))?;
            pipe_pages = pipe_pages.min((bytes as u64 / page_size).max(1));
            pipes.push(Pipe { fds: f, read_end });
        }
        debug!(
            "pid {pid}: {} page pipes of {pipe_pages} pages",
            pipes.len()
        );
        let mem_path = format!("/proc/{pid}/mem");
        let mem = File::open(&mem_path).map_err(|e| Error::io("open", &mem_path, e))?;
        let space = Space::Process(pid);
        let writer = target.writer(&pagemap_file(pid), &pages_file(pid), space)?;
        Ok(Dumper {
            pid,
            parasite,
            pipes,
            pipe_pages,
            page_size,
            writer,
            mem,
            batch: Batch::default(),
            inflight: std::collections::VecDeque::with_capacity(PIPES),
            dirty: None,
        })
    }

    /// Queues the runs of one VMA's populated pages, as the walk finds them.
    fn walk_vma(&mut self, walker: &mut Walker, vma: &Vma, keep: Keep) -> Result<()> {
        let readable = vma.prot & 1 != 0;
        let anon_only = keep == Keep::AnonOnly;
        walker.walk(vma.start, vma.end, anon_only, &mut |s| {
            self.span(s, readable)
        })
    }

    /// Queues one span: zero pages as they are; data as stored runs, or,
    /// for an incremental dump, split into what changed since the parent
    /// image (stored) and what did not (parent runs).
    fn span(&mut self, s: Span, readable: bool) -> Result<()> {
        let pages = |a: u64, b: u64| (b - a) / self.page_size;
        if s.zero {
            let pages = pages(s.start, s.end);
            return self.queue(Run::Zero {
                vaddr: s.start,
                pages,
            });
        }
        let data = |vaddr, pages| match readable {
            true => Run::Splice { vaddr, pages },
            false => Run::Copy { vaddr, pages },
        };
        let Some(dirty) = self.dirty else {
            return self.queue(data(s.start, pages(s.start, s.end)));
        };
        let page_size = self.page_size;
        dirty.split(s.start, s.end, s.soft_dirty, &mut |a, b, changed| {
            let n = (b - a) / page_size;
            match changed {
                true => self.queue(data(a, n)),
                false => self.queue(Run::Parent { vaddr: a, pages: n }),
            }
        })
    }

    /// Queues a run, splitting spliced ones to fit the pipe; hands the
    /// batch on when the pipe or the queue is full.
    fn queue(&mut self, run: Run) -> Result<()> {
        let Run::Splice {
            mut vaddr,
            mut pages,
        } = run
        else {
            self.batch.runs.push(run);
            return self.flush_if(self.batch.runs.len() >= MAX_QUEUED);
        };
        while pages > 0 {
            let take = pages.min(self.pipe_pages - self.batch.pages);
            let len = take * self.page_size;
            let b = &mut self.batch;
            b.runs.push(Run::Splice { vaddr, pages: take });
            b.iov.push(MemRange { start: vaddr, len });
            b.pages += take;
            (vaddr, pages) = (vaddr + len, pages - take);
            let full = b.pages == self.pipe_pages
                || b.iov.len() == VMSPLICE_MAX_IOV
                || b.runs.len() >= MAX_QUEUED;
            self.flush_if(full)?;
        }
        Ok(())
    }

    fn flush_if(&mut self, full: bool) -> Result<()> {
        if full { self.flush() } else { Ok(()) }
    }

    /// Hands the gathered batch on: when every pipe is taken, the oldest
    /// batch is written first (its answer collected, its pipe emptied),
    /// then the parasite is asked to fill the free pipe. A batch with
    /// nothing to splice is written right away, after those before it.
    fn flush(&mut self) -> Result<()> {
        let pipe = self.batch.pipe;
        let batch = std::mem::take(&mut self.batch);
        if batch.iov.is_empty() {
            self.batch.pipe = pipe;
            self.write_filled()?;
            return self.write(batch);
        }
        if self.inflight.len() == self.pipes.len() {
            self.write_oldest()?;
        }
        self.batch.pipe = (pipe + 1) % self.pipes.len();
        self.start_vmsplice(&batch)?;
        self.inflight.push_back(batch);
        Ok(())
    }

    /// Writes every batch sent to the parasite, in order.
    fn write_filled(&mut self) -> Result<()> {
        while !self.inflight.is_empty() {
            self.write_oldest()?;
        }
        Ok(())
    }

    /// Collects the answer for the oldest batch sent and writes it.
    fn write_oldest(&mut self) -> Result<()> {
        let Some(batch) = self.inflight.pop_front() else {
            return Ok(());
        };
        self.finish_vmsplice(&batch)?;
        self.write(batch)
    }

    /// Writes every run of `batch` in order, the spliced ones from its pipe.
    ///
    /// The spliced runs up to the next copied one are moved from the pipe
    /// with one splice(2) at their first run (the data file takes them in
    /// the same order), not one per run: an incremental dump's runs are
    /// often a page or two each, and a splice per page cost more than the
    /// rest of its page dump.
    fn write(&mut self, batch: Batch) -> Result<()> {
        let pipe = self.pipes[batch.pipe].read_end.as_fd();
        // Bytes moved into the data file for the spliced runs still to come.
        let mut ahead = 0u64;
        for (i, run) in batch.runs.iter().enumerate() {
            match *run {
                Run::Zero { vaddr, pages } => self.writer.add_zero(vaddr, pages)?,
                Run::Parent { vaddr, pages } => self.writer.add_parent(vaddr, pages)?,
                Run::Copy { vaddr, pages } => {
                    copy(&self.mem, &mut self.writer, self.pid, vaddr, pages)?
                }
                Run::Splice { vaddr, pages } => {
                    let group = match ahead {
                        0 => spliced_bytes(&batch.runs[i..], self.page_size),
                        _ => 0,
                    };
                    self.writer.add_pages_with(vaddr, pages, |sink, bytes| {
                        if ahead == 0 {
                            ahead = sink.splice_from(pipe, group)?;
                        }
                        let take = ahead.min(bytes);
                        ahead -= take;
                        Ok(take)
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Sends CMD_VMSPLICE of the batch's ranges into its pipe; the answer
    /// is left for [`Self::finish_vmsplice`].
    fn start_vmsplice(&mut self, batch: &Batch) -> Result<()> {
        let mut args = VmspliceArgs {
            pipe_fd: self.pipes[batch.pipe].fds.write_fd,
            nr_iov: batch.iov.len() as u32,
            done: 0,
            iov: [MemRange::default(); VMSPLICE_MAX_IOV],
        };
        args.iov[..batch.iov.len()].copy_from_slice(&batch.iov);
        let payload = pipe::encode_vmsplice(&args);
        self.parasite.command_start(CMD_VMSPLICE, &payload)
    }

    /// The answer to CMD_VMSPLICE: all of the batch must have gone in.
    fn finish_vmsplice(&mut self, batch: &Batch) -> Result<()> {
        let first = batch.iov[0].start;
        let reply = match self.parasite.command_finish(16) {
            Err(Error::Sys { errno, .. }) => {
                let ctx = format!(
                    "pid {}: moving {} pages from {first:#x} on into the page pipe, run by \
                     the parasite; a mapping the task cannot read, or that changed since \
                     the VMAs were collected",
                    self.pid, batch.pages
                );
                return Err(Error::sys("vmsplice", ctx, errno));
            }
            r => r?,
        };
        let done = u64::from_ne_bytes(reply[8..16].try_into().unwrap_or([0; 8]));
        let want = batch.pages * self.page_size;
        if done != want {
            return Err(Error::Target {
                pid: self.pid as i32,
                problem: format!(
                    "vmsplice moved {done} of {want} bytes of its memory into the page pipe; \
                     its mappings changed during the dump or the pipe is smaller than set"
                ),
            });
        }
        Ok(())
    }
}

/// The bytes of the spliced runs at the head of `runs`, up to the first
/// copied run (whose bytes must land in the data file before the next).
fn spliced_bytes(runs: &[Run], page_size: u64) -> u64 {
    let mut bytes = 0;
    for run in runs {
        match *run {
            Run::Splice { pages, .. } => bytes += pages * page_size,
            Run::Copy { .. } => break,
            Run::Zero { .. } | Run::Parent { .. } => {}
        }
    }
    bytes
}

/// Stores pages the target cannot read by copying them from /proc/PID/mem.
fn copy(mem: &File, writer: &mut Writer<'_>, pid: u32, vaddr: u64, pages: u64) -> Result<()> {
    let page_size = crate::sys::mm::page_size() as u64;
    let chunk = COPY_CHUNK as u64 / page_size;
    let mut buf = vec![0u8; (pages.min(chunk) * page_size) as usize];
    let mut done = 0;
    while done < pages {
        let n = (pages - done).min(chunk);
        let at = vaddr + done * page_size;
        let b = &mut buf[..(n * page_size) as usize];
        mem.read_exact_at(b, at)
            .map_err(|e| Error::io("read", format!("/proc/{pid}/mem at {at:#x}"), e))?;
        writer.add_pages(at, b)?;
        done += n;
    }
    Ok(())
}
