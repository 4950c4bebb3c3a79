//! memfds: each object made once in crest before the task exists
//! ([`create_memfds`]: memfd_create with its name, its mode, its size, its
//! contents written where the dump found data so holes stay holes, then
//! its seals, which would forbid the filling), kept open as one of the
//! task's helper fds. Every fd of it is a new open of that object
//! (`/proc/self/fd/N`, with the dumped flags and position, in
//! [`super::install_files`]); every shared mapping of it maps that same
//! object (restore::mem), so a write through an fd shows in the mapping as
//! before. The restorer closes the helper fd once the mappings exist.
//!
//! A memfd that was only mapped (its fds closed) is made from its
//! memfd-object record (size, seals, mode); in an image without one (an
//! older crest) it comes back without seals, sized to the end of its
//! furthest mapping or stored page.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileExt, PermissionsExt};

use crate::error::{Error, Result};
use crate::image::files::FdFile;
use crate::image::pagemap::RunKind;
use crate::image::pages::PageIndex;
use crate::image::vma::Backing;
use crate::restore::images::Images;
use crate::restore::mem::HelperFds;
use crate::sys::memfd::{MFD_ALLOW_SEALING, add_seals};
use crate::sys::mm::{MFD_CLOEXEC, memfd_create};

/// One memfd to make.
pub(super) struct Object {
    pub(super) id: u64,
    name: Vec<u8>,
    pub(super) size: u64,
    seals: u32,
    mode: u32,
    /// Whether an fd or memfd-object record described it (its size, seals
    /// and mode are the dumped ones, not guessed from a mapping).
    pub(super) from_fd: bool,
}

/// The memfds of `img`: from its fd records, then those only mapped (from
/// their memfd-object records where the image has them).
pub(super) fn objects(img: &Images) -> Vec<Object> {
    let mut out: Vec<Object> = Vec::new();
    for f in &img.files.fds {
        if let FdFile::Memfd {
            id,
            name,
            size,
            seals,
            mode,
            ..
        } = &f.file
            && !out.iter().any(|o| o.id == *id)
        {
            out.push(Object {
                id: *id,
                name: name.clone(),
                size: *size,
                seals: *seals,
                mode: *mode,
                from_fd: true,
            });
        }
    }
    let page = img.pages.page_size;
    for v in &img.mm.vmas {
        let Backing::AnonShared { shmid } = v.backing else {
            continue;
        };
        let Some(name) = crate::dump::files::memfd::memfd_name(&v.name) else {
            continue;
        };
        if out.iter().any(|o| o.id == shmid) {
            continue;
        }
        let end = v.pgoff * page + (v.end - v.start);
        out.push(match img.files.memfds.iter().find(|m| m.id == shmid) {
            Some(m) => Object {
                id: shmid,
                name: m.name.clone(),
                size: m.size,
                seals: m.seals,
                mode: m.mode,
                from_fd: true,
            },
            None => Object {
                id: shmid,
                name: name.to_vec(),
                size: end,
                seals: 0,
                mode: 0o100777,
                from_fd: false,
            },
        });
    }
    out
}

/// Makes every memfd of `img` and keeps each as a helper fd of the task;
/// one that `shared` holds (made once for several processes) is a dup of
/// that object instead.
pub fn create_memfds(
    img: &Images,
    fds: &mut HelperFds,
    shared: &super::tree_objects::TreeObjects,
) -> Result<()> {
    for o in objects(img) {
        let fd = match shared.memfd(o.id)? {
            Some(fd) => fd,
            None => create(img, &o)?,
        };
        fds.keep_memfd(o.id, fd)?;
    }
    Ok(())
}

fn fail(o: &Object, call: &'static str, e: crate::sys::Errno) -> Error {
    Error::sys(
        call,
        format!(
            "recreating memfd `{}` (id {})",
            String::from_utf8_lossy(&o.name),
            o.id
        ),
        e,
    )
}

/// One memfd, filled and sealed.
pub(super) fn create(img: &Images, o: &Object) -> Result<OwnedFd> {
    let name = CString::new(o.name.clone()).map_err(|_| {
        Error::Unsupported(format!(
            "memfd {} in the image has a name with a NUL byte; the image is damaged",
            o.id
        ))
    })?;
    let fd = memfd_create(&name, MFD_CLOEXEC | MFD_ALLOW_SEALING)
        .map_err(|e| fail(o, "memfd_create", e))?;
    let file = File::from(fd);
    let what = || format!("memfd `{}`", String::from_utf8_lossy(&o.name));
    file.set_permissions(std::fs::Permissions::from_mode(o.mode & 0o7777))
        .map_err(|e| Error::io("chmod", what(), e))?;
    file.set_len(o.size)
        .map_err(|e| Error::io("ftruncate", what(), e))?;
    let index_name = crate::image::dir::shmem_pagemap_file(o.id);
    if img.dir.exists(&index_name) {
        let idx = PageIndex::load(&img.dir, &index_name)?;
        fill(img, &idx, &file, o.size).map_err(|e| Error::io("fill", what(), e))?;
    }
    if o.seals != 0 {
        add_seals(file.as_fd(), o.seals).map_err(|e| fail(o, "fcntl(F_ADD_SEALS)", e))?;
    }
    Ok(file.into())
}

/// Writes the stored runs of `idx` into `to`, clipped to `size`.
fn fill(img: &Images, idx: &PageIndex, to: &File, size: u64) -> std::io::Result<()> {
    let data = img
        .dir
        .open_file(&idx.head.pages_file)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut buf = vec![0u8; 1 << 20];
    for r in idx.runs.iter().filter(|r| r.kind == RunKind::Present) {
        let end = (r.vaddr + r.nr_pages * idx.page_size).min(size);
        let mut at = r.vaddr;
        while at < end {
            let n = ((end - at) as usize).min(buf.len());
            data.read_exact_at(&mut buf[..n], idx.data_offset(r, 0) + (at - r.vaddr))?;
            to.write_all_at(&buf[..n], at)?;
            at += n as u64;
        }
    }
    Ok(())
}

/// How fd `fd` of a memfd or deleted file is made at install: a new open
/// of the helper fd `helper` with the dumped flags, at `slot`, then its
/// position.
pub fn open(helper: RawFd, flags: u32, pos: u64, fd: RawFd, slot: RawFd) -> Result<()> {
    let mut buf = [0u8; 32];
    let path = super::anon::proc_fd_path(&mut buf, helper);
    let err = |call, e| Error::sys(call, format!("restoring fd {fd} (a memfd)"), e);
    let low = crate::sys::fdtable::open_raw(path, flags).map_err(|e| err("openat", e))?;
    super::install::to_slot(low, slot).map_err(|e| err("dup3", e))?;
    if pos != 0 {
        crate::sys::fdtable::lseek(slot, pos as i64, crate::sys::fdtable::SEEK_SET)
            .map_err(|e| err("lseek", e))?;
    }
    Ok(())
}

/// Fails when `plan_files` named a memfd or deleted file no object was
/// made for.
pub fn missing(fd: RawFd) -> Error {
    Error::Unsupported(format!(
        "fd {fd} in the image is a memfd or deleted file crest did not recreate; this is a bug in crest"
    ))
}
