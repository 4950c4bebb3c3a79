//! Anonymous shared memory several processes of the tree map: created once
//! by crest before the root exists, so that every task inherits the same
//! object and its restorer maps it from the inherited fd. A write in one
//! process is then seen by the others, as before the dump.
//!
//! The object is made the way the kernel makes one for
//! mmap(MAP_SHARED|MAP_ANONYMOUS) (so a later dump sees it as
//! `/dev/zero (deleted)` again): crest maps one, reopens it through
//! /proc/self/map_files, unmaps it and writes the dumped pages into the
//! object through that fd. An object only one process maps is still
//! created by that process's restorer.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;

use super::images::Tree;
use crate::error::{Error, Result};
use crate::image::pagemap::RunKind;
use crate::image::pages::PageIndex;
use crate::sys::mm::Mapping;

/// The objects crest created, each with its fd (numbered from the base
/// given to [`create`], where no task has an fd of its own).
#[derive(Debug, Default)]
pub struct SharedShmem {
    objects: Vec<(u64, OwnedFd)>,
}

impl SharedShmem {
    /// Each object's shmid and fd, for the plans.
    pub fn fds(&self) -> Vec<(u64, i32)> {
        self.objects
            .iter()
            .map(|(id, fd)| (*id, fd.as_raw_fd()))
            .collect()
    }

    /// The fd numbers, which every task keeps until its restorer ran.
    pub fn numbers(&self) -> Vec<i32> {
        self.objects.iter().map(|(_, fd)| fd.as_raw_fd()).collect()
    }
}

/// The shmids at least two live processes map, in first-seen order.
fn shared_ids(tree: &Tree) -> Vec<u64> {
    let mut seen: Vec<(u64, u32)> = Vec::new();
    let mut shared = Vec::new();
    for img in tree.live() {
        for (id, _) in &img.shmem {
            match seen.iter().find(|(s, _)| s == id) {
                Some((_, pid)) if *pid != img.process.pid && !shared.contains(id) => {
                    shared.push(*id)
                }
                Some(_) => {}
                None => seen.push((*id, img.process.pid)),
            }
        }
    }
    shared
}

/// Creates every object several processes map, filled with its pages, its
/// fd at `base` or above.
pub fn create(tree: &Tree, base: i32) -> Result<SharedShmem> {
    let mut out = SharedShmem::default();
    for id in shared_ids(tree) {
        let mut mapped = Vec::new();
        let mut index = None;
        for img in tree.live() {
            let page = img.pages.page_size;
            mapped.extend(super::mem::mapped_ends(&img.mm.vmas, id, page));
            if index.is_none() {
                index = img.shmem.iter().find(|(s, _)| *s == id).map(|(_, i)| i);
            }
        }
        let Some(idx) = index else { continue };
        let size = super::mem::object_size(mapped.into_iter(), idx);
        let fd = make_object(id, size, idx, tree)?;
        let raw = crate::sys::fdtable::dup_at_least(fd.as_raw_fd(), base)
            .map_err(|e| Error::sys("fcntl(F_DUPFD)", format!("moving shmem {id}"), e))?;
        out.objects.push((id, crate::sys::fd::own(raw as usize)));
        crate::debug!("shmem {id}: {size} bytes shared by several processes, fd {raw}");
    }
    Ok(out)
}

/// A fresh shared anonymous object of `size` bytes holding `idx`'s pages.
fn make_object(id: u64, size: u64, idx: &PageIndex, tree: &Tree) -> Result<OwnedFd> {
    let what = format!("recreating shared memory object {id}");
    let m = Mapping::shared_anonymous(size as usize)
        .map_err(|e| Error::sys("mmap", what.clone(), e))?;
    let path = format!(
        "/proc/self/map_files/{:x}-{:x}",
        m.addr(),
        m.addr() + m.len()
    );
    let object = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io("open", &path, e))?;
    drop(m);
    let pages = tree.root().dir.open_file(&idx.head.pages_file)?;
    let mut buf = Vec::new();
    for r in &idx.runs {
        match r.kind {
            RunKind::Present => {}
            RunKind::Zero => continue,
            RunKind::Parent => {
                return Err(Error::Unsupported(
                    "the image refers to pages in a parent image, which restore does not follow yet".into(),
                ));
            }
        }
        buf.resize((r.nr_pages * idx.page_size) as usize, 0);
        idx.read_run(&pages, r, &mut buf)?;
        object
            .write_all_at(&buf, r.vaddr)
            .map_err(|e| Error::io("write", &path, e))?;
    }
    Ok(object.into())
}
