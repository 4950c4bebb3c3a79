//! The address space part of the plan: each dumped VMA as the mmap that
//! recreates it, the runs of pages to read into it, the files it maps
//! (opened here, in crest, and checked against the identity recorded at
//! dump time), and the special mappings (vdso, vvar) to move.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use crate::blob::plan::{PlanRun, PlanShmem, PlanSpecial, PlanVma, RUN_ZERO, VMA_FILL, VMA_SHMEM};
use crate::error::{Error, Result};
use crate::image::files::FileId;
use crate::image::pagemap::RunKind;
use crate::image::pages::PageIndex;
use crate::image::vma::*;

const MAP_SHARED: u32 = 0x01;
const MAP_PRIVATE: u32 = 0x02;
const MAP_ANONYMOUS: u32 = 0x20;
const MAP_GROWSDOWN: u32 = 0x100;
const MAP_NORESERVE: u32 = 0x4000;
const PROT_WRITE: u32 = 0x2;

/// VMA_* advice bits and the madvise value that re-applies each.
const ADVICE: [(u64, u32); 8] = [
    (VMA_DONTFORK, 10),
    (VMA_DONTDUMP, 16),
    (VMA_WIPEONFORK, 18),
    (VMA_MERGEABLE, 12),
    (VMA_HUGEPAGE, 14),
    (VMA_NOHUGEPAGE, 15),
    (VMA_SEQ_READ, 2),
    (VMA_RAND_READ, 1),
];

/// Files crest opened for the task: mapped files and the exe. Their fds
/// are moved to `base` and above, where the task's own fds never are.
pub struct HelperFds {
    base: i32,
    open: Vec<(Vec<u8>, bool, OwnedFd)>,
    /// The memfds crest recreated (files::memfd), by id, at their numbers.
    memfds: Vec<(u64, i32)>,
    /// The deleted files crest recreated (files::ghost), by (dev, ino).
    ghosts: Vec<((u64, u64), i32)>,
}

impl HelperFds {
    /// Helper fds will be numbered from `base` up.
    pub fn new(base: i32) -> HelperFds {
        HelperFds {
            base,
            open: Vec::new(),
            memfds: Vec::new(),
            ghosts: Vec::new(),
        }
    }

    /// Keeps the recreated deleted file `key` (st_dev, st_ino at the dump).
    pub fn keep_ghost(&mut self, key: (u64, u64), fd: OwnedFd) -> Result<i32> {
        let raw = self.keep(fd, b"", true)?;
        self.ghosts.push((key, raw));
        Ok(raw)
    }

    /// The recreated deleted files as ((dev, ino), helper fd number).
    pub fn ghosts(&self) -> &[((u64, u64), i32)] {
        &self.ghosts
    }

    /// The helper fd of the deleted file mapped by `path` (which ends in
    /// " (deleted)"), if crest recreated it.
    fn ghost(&self, path: &[u8], id: &FileId) -> Option<i32> {
        let key = (id.dev, id.ino);
        path.ends_with(b" (deleted)")
            .then(|| {
                self.ghosts
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, fd)| *fd)
            })
            .flatten()
    }

    /// Keeps the recreated memfd `id` (its fds reopen it, its shared
    /// mappings map it).
    pub fn keep_memfd(&mut self, id: u64, fd: OwnedFd) -> Result<i32> {
        let raw = self.keep(fd, b"", true)?;
        self.memfds.push((id, raw));
        Ok(raw)
    }

    /// The recreated memfds as (id, helper fd number).
    pub fn memfds(&self) -> &[(u64, i32)] {
        &self.memfds
    }

    /// The fd of `path`, opened once per path and mode, after checking it is
    /// the file the dump saw (`what` names the user for the error).
    pub fn file(&mut self, path: &[u8], id: &FileId, write: bool, what: &str) -> Result<i32> {
        if let Some((_, _, fd)) = self.open.iter().find(|(p, w, _)| p == path && *w == write) {
            return Ok(fd.as_raw_fd());
        }
        let p = std::path::Path::new(std::ffi::OsStr::from_bytes(path));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .open(p)
            .map_err(|e| Error::io("open", p, e))
            .map_err(|e| gone(e, p, what))?;
        let meta = file.metadata().map_err(|e| Error::io("stat", p, e))?;
        super::files::check::same_file(what, path, id, &meta)?;
        self.keep(OwnedFd::from(file), path, write)
    }

    /// Moves `fd` into the helper range and keeps it open.
    pub fn keep(&mut self, fd: OwnedFd, path: &[u8], write: bool) -> Result<i32> {
        let raw = crate::sys::fdtable::dup_at_least(fd.as_raw_fd(), self.base)
            .map_err(|e| Error::sys("fcntl(F_DUPFD)", "moving a file for the restorer", e))?;
        let moved = crate::sys::fd::own(raw as usize);
        self.open.push((path.to_vec(), write, moved));
        Ok(raw)
    }

    /// The fd numbers, for the files step to leave alone.
    pub fn numbers(&self) -> Vec<i32> {
        self.open.iter().map(|(_, _, f)| f.as_raw_fd()).collect()
    }

    /// The first helper fd number.
    pub fn base(&self) -> i32 {
        self.base
    }
}

fn gone(e: Error, p: &std::path::Path, what: &str) -> Error {
    match e {
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            Error::Unsupported(format!(
                "{} ({what}) no longer exists; restore needs the files the process used",
                p.display()
            ))
        }
        other => other,
    }
}

fn is_special(v: &Vma) -> bool {
    matches!(
        v.backing,
        Backing::Vdso | Backing::Vvar | Backing::VvarVclock | Backing::Vsyscall
    )
}

/// The mmap recreating each ordinary VMA (specials are moved, not mapped).
/// `shmids` lists the shared memory objects in plan order.
pub fn plan_vmas(
    vmas: &[Vma],
    pages: &PageIndex,
    shmids: &[u64],
    fds: &mut HelperFds,
) -> Result<Vec<PlanVma>> {
    let mut out = Vec::new();
    for v in vmas.iter().filter(|v| !is_special(v)) {
        if let Backing::AnonShared { shmid } = v.backing {
            let memfd = fds.memfds.iter().find(|(id, _)| *id == shmid);
            out.push(match memfd {
                Some(&(_, fd)) => memfd_vma(v, fd, pages.page_size),
                None => shmem_vma(v, shmid, shmids, pages.page_size)?,
            });
            continue;
        }
        let (fd, kind) = match &v.backing {
            Backing::AnonPrivate => (-1, MAP_PRIVATE | MAP_ANONYMOUS),
            Backing::FilePrivate { path, id } | Backing::FileShared { path, id }
                if fds.ghost(path, id).is_some() =>
            {
                let shared = matches!(v.backing, Backing::FileShared { .. });
                let kind = if shared { MAP_SHARED } else { MAP_PRIVATE };
                (fds.ghost(path, id).unwrap_or(-1), kind)
            }
            Backing::FilePrivate { path, id } => {
                let what = format!("mapped at {:#x}", v.start);
                (fds.file(path, id, false, &what)?, MAP_PRIVATE)
            }
            Backing::FileShared { path, id } => {
                let what = format!("mapped shared at {:#x}", v.start);
                (
                    fds.file(path, id, v.prot & PROT_WRITE != 0, &what)?,
                    MAP_SHARED,
                )
            }
            _ => unreachable!("specials and shared memory are handled above"),
        };
        let fill = if has_runs(pages, v.start, v.end) {
            VMA_FILL
        } else {
            0
        };
        out.push(PlanVma {
            start: v.start,
            len: v.end - v.start,
            offset: v.pgoff * pages.page_size,
            prot: v.prot,
            flags: kind | (v.flags & (MAP_GROWSDOWN | MAP_NORESERVE)),
            fd,
            fill,
            advice: advice(v.advice),
        });
    }
    Ok(out)
}

/// A VMA of shared memory object `shmid`: mapped from the object the
/// restorer recreates (index `fd` in the plan's shmem table).
fn shmem_vma(v: &Vma, shmid: u64, shmids: &[u64], page: u64) -> Result<PlanVma> {
    if v.name != b"/dev/zero (deleted)" {
        return Err(Error::Unsupported(format!(
            "the shared mapping at {:#x} ({}) cannot be restored yet",
            v.start,
            String::from_utf8_lossy(&v.name)
        )));
    }
    let index = shmids
        .iter()
        .position(|&s| s == shmid)
        .unwrap_or(usize::MAX);
    Ok(PlanVma {
        start: v.start,
        len: v.end - v.start,
        offset: v.pgoff * page,
        prot: v.prot,
        flags: MAP_SHARED | (v.flags & MAP_NORESERVE),
        fd: index as i32,
        fill: VMA_SHMEM,
        advice: advice(v.advice),
    })
}

/// A shared mapping of a memfd crest recreated (helper fd `fd`): mapped
/// from it, its contents already in it.
fn memfd_vma(v: &Vma, fd: i32, page: u64) -> PlanVma {
    PlanVma {
        start: v.start,
        len: v.end - v.start,
        offset: v.pgoff * page,
        prot: v.prot,
        flags: MAP_SHARED | (v.flags & MAP_NORESERVE),
        fd,
        fill: 0,
        advice: advice(v.advice),
    }
}

/// The shared memory objects: each created whole in the restorer mapping
/// (`size` bytes: the furthest any VMA or stored page reaches), its present
/// runs at their offsets there; or, for an object crest created already
/// because several processes share it (`inherited`: shmid and fd), only
/// mapped from that fd.
pub fn plan_shmem(
    l: &mut super::layout::Layout,
    vmas: &[Vma],
    objects: &[(u64, PageIndex)],
    fds: &mut HelperFds,
    dir: &crate::image::ImageDir,
    inherited: &[(u64, i32)],
) -> Result<Vec<PlanShmem>> {
    let mut out = Vec::new();
    for (shmid, idx) in objects {
        if let Some(&(_, fd)) = inherited.iter().find(|(id, _)| id == shmid) {
            out.push(PlanShmem {
                tmp: 0,
                size: 0,
                runs: 0,
                nr_runs: 0,
                pages_fd: -1,
                inherited_fd: fd,
                fd_slot: l.alloc(4, 4)?,
                path: [0; 64],
            });
            continue;
        }
        let page = idx.page_size;
        let size = object_size(mapped_ends(vmas, *shmid, page), idx);
        let tmp = l.alloc_pages(size as usize)?;
        let runs: Vec<PlanRun> = idx
            .runs
            .iter()
            .filter(|r| r.kind == RunKind::Present)
            .map(|r| PlanRun {
                addr: tmp + r.vaddr,
                len: r.nr_pages * page,
                file_off: idx.data_offset(r, 0),
                fd: 0,
                pad: 0,
            })
            .collect();
        let file = dir.open_file(&idx.head.pages_file)?;
        let pages_fd = fds.keep(file.into(), b"", false)?;
        let runs: Vec<PlanRun> = runs
            .into_iter()
            .map(|r| PlanRun { fd: pages_fd, ..r })
            .collect();
        let fd_slot = l.alloc(4, 4)?;
        let mut path = [0u8; 64];
        let text = format!("/proc/self/map_files/{:x}-{:x}", tmp, tmp + size);
        path[..text.len()].copy_from_slice(text.as_bytes());
        out.push(PlanShmem {
            tmp,
            size,
            runs: l.put_slice(&runs)?,
            nr_runs: runs.len() as u64,
            pages_fd,
            inherited_fd: -1,
            fd_slot,
            path,
        });
    }
    Ok(out)
}

/// Where each of `vmas` mapping shared memory object `shmid` ends in the
/// object, in bytes.
pub fn mapped_ends(vmas: &[Vma], shmid: u64, page: u64) -> impl Iterator<Item = u64> + '_ {
    vmas.iter()
        .filter(move |v| v.backing == (Backing::AnonShared { shmid }))
        .map(move |v| v.pgoff * page + (v.end - v.start))
}

/// The bytes a shared memory object needs: the furthest any of its VMAs
/// (`mapped`: each one's end offset in the object) or stored pages reach.
pub fn object_size(mapped: impl Iterator<Item = u64>, idx: &PageIndex) -> u64 {
    let page = idx.page_size;
    let stored = idx.runs.iter().map(|r| r.vaddr + r.nr_pages * page);
    mapped
        .chain(stored)
        .max()
        .unwrap_or(page)
        .next_multiple_of(page)
}

fn advice(bits: u64) -> u64 {
    ADVICE
        .iter()
        .filter(|(bit, _)| bits & bit != 0)
        .enumerate()
        .fold(0, |acc, (i, (_, m))| acc | (u64::from(*m) << (8 * i)))
}

fn has_runs(pages: &PageIndex, start: u64, end: u64) -> bool {
    let i = pages
        .runs
        .partition_point(|r| r.vaddr + r.nr_pages * pages.page_size <= start);
    pages.runs.get(i).is_some_and(|r| r.vaddr < end)
}

/// Where a piece of a run comes from, along the chain of images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Src {
    /// In the pages file of `chain[level]`, at byte `off`.
    Stored { level: usize, off: u64 },
    /// Zero pages.
    Zero,
}

/// Splits `[vaddr, vaddr + len)` of `chain[level]` into pieces by where
/// their data is, following parent runs down the chain. Every page must
/// be covered at every level a parent run sends it to.
fn resolve(
    chain: &[&PageIndex],
    level: usize,
    vaddr: u64,
    len: u64,
    out: &mut Vec<(u64, u64, Src)>,
) -> Result<()> {
    let end = vaddr + len;
    let damaged = |at: u64| {
        Error::Unsupported(format!(
            "the page at {at:#x} is marked as in parent image {level}, which does not have it;              the chain of images is incomplete or mixed up"
        ))
    };
    let Some(idx) = chain.get(level) else {
        return Err(damaged(vaddr));
    };
    let ps = idx.page_size;
    let mut i = idx
        .runs
        .partition_point(|r| r.vaddr + r.nr_pages * ps <= vaddr);
    let mut at = vaddr;
    while at < end {
        let r = idx
            .runs
            .get(i)
            .filter(|r| r.vaddr <= at)
            .ok_or_else(|| damaged(at))?;
        let piece_end = end.min(r.vaddr + r.nr_pages * ps);
        match r.kind {
            RunKind::Present => {
                let off = idx.data_offset(r, (at - r.vaddr) / ps);
                out.push((at, piece_end - at, Src::Stored { level, off }));
            }
            RunKind::Zero => out.push((at, piece_end - at, Src::Zero)),
            RunKind::Parent => resolve(chain, level + 1, at, piece_end - at, out)?,
        }
        at = piece_end;
        i += 1;
    }
    Ok(())
}

/// The runs to read (present) or clear (zero pages over file contents;
/// anonymous memory starts zeroed), checked to lie inside planned VMAs.
/// `chain` is the process's page index and its parents' (incremental
/// dumps), `fds` their pages files' fds in the task, level by level.
pub fn plan_runs(chain: &[&PageIndex], fds: &[i32], vmas: &[PlanVma]) -> Result<Vec<PlanRun>> {
    let mut out: Vec<PlanRun> = Vec::new();
    let mut pieces = Vec::new();
    for r in &chain[0].runs {
        let len = r.nr_pages * chain[0].page_size;
        let inside = |a: u64| vmas.iter().find(|v| v.start <= a && a < v.start + v.len);
        let first = inside(r.vaddr);
        if first.is_none() || inside(r.vaddr + len - 1).is_none() {
            return Err(Error::Unsupported(format!(
                "the pages at {:#x} lie outside every mapping of the image; the image is inconsistent",
                r.vaddr
            )));
        }
        let over_file = first.is_some_and(|v| v.fd >= 0);
        pieces.clear();
        resolve(chain, 0, r.vaddr, len, &mut pieces)?;
        for &(addr, len, src) in &pieces {
            let (file_off, fd) = match src {
                Src::Stored { level, off } => (off, fds.get(level).copied().unwrap_or(-1)),
                Src::Zero if over_file => (RUN_ZERO, -1),
                Src::Zero => continue,
            };
            let run = PlanRun {
                addr,
                len,
                file_off,
                fd,
                pad: 0,
            };
            match out.last_mut() {
                Some(p) if continues(p, &run) => p.len += len,
                _ => out.push(run),
            }
        }
    }
    Ok(out)
}

/// Whether `next` reads on where `prev` stops, in memory and in the same
/// file: one pread can do both.
fn continues(prev: &PlanRun, next: &PlanRun) -> bool {
    prev.fd == next.fd
        && prev.file_off != RUN_ZERO
        && next.file_off != RUN_ZERO
        && prev.addr + prev.len == next.addr
        && prev.file_off + prev.len == next.file_off
}

/// The special mappings crest has now, by name.
fn own_specials() -> Result<Vec<(Backing, u64, u64)>> {
    let text =
        std::fs::read("/proc/self/maps").map_err(|e| Error::io("read", "/proc/self/maps", e))?;
    let mut out = Vec::new();
    for e in crate::proc::maps::parse(&text).map_err(|e| Error::Proc {
        path: "/proc/self/maps".into(),
        line: 0,
        problem: format!("{e:?}"),
    })? {
        let kind = match e.path {
            b"[vdso]" => Backing::Vdso,
            b"[vvar]" => Backing::Vvar,
            b"[vvar_vclock]" => Backing::VvarVclock,
            _ => continue,
        };
        out.push((kind, e.start, e.end - e.start));
    }
    Ok(out)
}

/// Where each of crest's special mappings goes: to the dumped process's
/// mapping of the same kind and size, with the same distances between them
/// (the vdso finds its data pages by offset). Refused otherwise.
pub fn plan_specials(vmas: &[Vma]) -> Result<Vec<PlanSpecial>> {
    let own = own_specials()?;
    let dumped: Vec<&Vma> = vmas
        .iter()
        .filter(|v| is_special(v) && v.backing != Backing::Vsyscall)
        .collect();
    let mut out = Vec::new();
    for d in &dumped {
        if !own.iter().any(|(k, _, _)| *k == d.backing) {
            return Err(layout_refusal(&format!(
                "this kernel has no {}",
                d.backing.word()
            )));
        }
    }
    for (kind, cur, len) in &own {
        let dst = match dumped.iter().find(|d| d.backing == *kind) {
            Some(d) if d.end - d.start != *len => {
                return Err(layout_refusal(&format!(
                    "its {} is {} bytes, this kernel's {len}",
                    kind.word(),
                    d.end - d.start
                )));
            }
            Some(d) => d.start,
            None => 0,
        };
        out.push(PlanSpecial {
            cur: *cur,
            len: *len,
            park: 0,
            dst,
        });
    }
    let placed: Vec<&PlanSpecial> = out.iter().filter(|s| s.dst != 0).collect();
    if let Some(first) = placed.first()
        && placed
            .iter()
            .any(|s| s.dst.wrapping_sub(first.dst) != s.cur.wrapping_sub(first.cur))
    {
        return Err(layout_refusal("its vdso and vvar are laid out differently"));
    }
    Ok(out)
}

fn layout_refusal(what: &str) -> Error {
    Error::Unsupported(format!(
        "the image comes from a kernel with another vdso layout ({what}); restore on the kernel it was dumped on"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::pagemap::{PageRun, PagemapHead, Space};
    use crate::image::pages::PageTotals;

    /// An index of (vaddr, pages, kind) runs; present runs numbered in order.
    fn index(runs: &[(u64, u64, RunKind)]) -> PageIndex {
        let mut totals = PageTotals::default();
        let runs = runs
            .iter()
            .map(|&(vaddr, nr_pages, kind)| {
                let r = PageRun {
                    vaddr,
                    nr_pages,
                    kind,
                    pages_off: totals.present,
                    crc: None,
                };
                totals.add(&r);
                r
            })
            .collect();
        PageIndex {
            head: PagemapHead {
                space: Space::Process(1),
                pages_file: "p".into(),
            },
            page_size: 4096,
            runs,
            data_bytes: 0,
            totals,
        }
    }

    fn vma(start: u64, len: u64, fd: i32) -> PlanVma {
        PlanVma {
            start,
            len,
            fd,
            ..PlanVma::default()
        }
    }

    #[test]
    fn runs_follow_parents_to_the_level_that_stores_them() {
        use RunKind::*;
        const P: u64 = 4096;
        // child: parent 0..4, present 4, zero 5; parent: present 0..2,
        // parent 2..4; grand: present 0..4.
        let child = index(&[(0, 4, Parent), (4 * P, 1, Present), (5 * P, 1, Zero)]);
        let parent = index(&[(0, 2, Present), (2 * P, 2, Parent)]);
        let grand = index(&[(0, 4, Present)]);
        let vmas = [vma(0, 8 * P, -1)];
        let runs = plan_runs(&[&child, &parent, &grand], &[10, 11, 12], &vmas).unwrap();
        let got: Vec<(u64, u64, u64, i32)> = runs
            .iter()
            .map(|r| (r.addr / P, r.len / P, r.file_off / P, r.fd))
            .collect();
        // Pages 0-1 from the parent (data pages 0-1 after its header page),
        // 2-3 from the grandparent (its data pages 2-3), 4 from the child;
        // the zero page over anonymous memory needs nothing.
        assert_eq!(got, [(0, 2, 1, 11), (2, 2, 3, 12), (4, 1, 1, 10)]);
        // Over a file, the zero page is cleared.
        let file = [vma(0, 8 * P, 3)];
        let runs = plan_runs(&[&child, &parent, &grand], &[10, 11, 12], &file).unwrap();
        assert_eq!(runs.last().map(|r| r.file_off), Some(RUN_ZERO));
    }

    #[test]
    fn a_parent_that_lacks_a_page_is_refused() {
        use RunKind::*;
        let child = index(&[(0, 3, Parent)]);
        let parent = index(&[(0, 1, Present), (2 * 4096, 1, Present)]);
        let vmas = [vma(0, 4 * 4096, -1)];
        assert!(plan_runs(&[&child, &parent], &[10, 11], &vmas).is_err());
        assert!(plan_runs(&[&child], &[10], &vmas).is_err());
    }
}
