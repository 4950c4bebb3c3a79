//! Shared anonymous memory (MAP_SHARED|MAP_ANONYMOUS, which maps show as
//! `/dev/zero (deleted)`): each shmem object
//! once per tree (however many processes map it), by inode, into pagemap-shmem-ID.img and pages-shmem-ID.img, where a
//! run's "address" is its byte offset in the object.
//!
//! The object is read through `/proc/PID/map_files/START-END`, which opens
//! the very shmem file behind the mapping (CAP_SYS_ADMIN). That sees every
//! page the object holds, also pages this process never touched (another
//! process sharing it may have written them), which the process's pagemap
//! would miss; SEEK_DATA/SEEK_HOLE find the allocated pages (swapped ones
//! included) and sendfile moves them into the pages file without
//! passing through crest. The process is seized meanwhile, so nothing in it
//! writes to the object.
//!
//! A memfd's mappings are stored with the memfd (files::memfd, called
//! first, which leaves its id in `done`).
//! The walk of a file's allocated ranges (`data_ranges`) and the page
//! store writer (`store_object`) serve memfds (files::memfd) too; deleted
//! files (files::ghost) read their ranges through the same walk.
//! SysV shared memory and named shared anonymous memory
//! (`[anon_shmem:NAME]`) are refused before the dump: they need their IPC
//! object, fd or name restored with them.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};

use crate::error::{Error, Result};
use crate::image::ImageDir;
use crate::image::dir::{shmem_pagemap_file, shmem_pages_file};
use crate::image::pagemap::Space;
use crate::image::pages::PageWriter;
use crate::image::vma::{Backing, Vma};
use crate::sys::fdtable::lseek;
use crate::sys::splice::sendfile;

const SEEK_DATA: u32 = 3;
const SEEK_HOLE: u32 = 4;

/// Whether crest can dump the shared anonymous mapping `v` (by its name):
/// shared anonymous memory here, a memfd in files::memfd.
pub fn supported(v: &Vma) -> bool {
    v.name == b"/dev/zero (deleted)" || super::files::memfd::memfd_name(&v.name).is_some()
}

/// Dumps every shmem object `vmas` map, once each; returns how many.
pub fn dump_shmem(pid: u32, vmas: &[Vma], dir: &ImageDir) -> Result<usize> {
    dump_shmem_once(pid, vmas, dir, &mut Vec::new())
}

/// Dumps every shmem object `vmas` map that is not in `done` (objects
/// already dumped from another process of the tree), adding each to it;
/// returns how many this call dumped.
pub fn dump_shmem_once(
    pid: u32,
    vmas: &[Vma],
    dir: &ImageDir,
    done: &mut Vec<u64>,
) -> Result<usize> {
    let before = done.len();
    for v in vmas {
        let Backing::AnonShared { shmid } = v.backing else {
            continue;
        };
        if done.contains(&shmid) {
            continue;
        }
        dump_object(pid, v, shmid, dir)?;
        done.push(shmid);
    }
    Ok(done.len() - before)
}

fn dump_object(pid: u32, v: &Vma, shmid: u64, dir: &ImageDir) -> Result<()> {
    let path = format!("/proc/{pid}/map_files/{:x}-{:x}", v.start, v.end);
    let file = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
    store_object(&file, &path, shmid, dir)?;
    Ok(())
}

/// Calls `each(data, hole)` for every allocated range SEEK_DATA/SEEK_HOLE
/// find in the first `size` bytes of `file` (opened from `path`, which
/// errors name); `each` returns where it stopped (`hole` or past it), and
/// the walk goes on from there.
pub(super) fn data_ranges(
    file: &File,
    path: &str,
    size: u64,
    mut each: impl FnMut(u64, u64) -> Result<u64>,
) -> Result<()> {
    let fd = file.as_raw_fd();
    let mut off = 0;
    while off < size {
        let data = match lseek(fd, off as i64, SEEK_DATA) {
            Ok(d) => d,
            Err(crate::sys::Errno::ENXIO) => break,
            Err(e) => return Err(Error::sys("lseek(SEEK_DATA)", path.to_string(), e)),
        };
        let hole = lseek(fd, data as i64, SEEK_HOLE)
            .map_err(|e| Error::sys("lseek(SEEK_HOLE)", path.to_string(), e))?
            .min(size);
        off = each(data, hole)?.max(hole);
    }
    Ok(())
}

/// Stores the shmem file `file` (a shared anonymous object or a memfd,
/// opened from `path`) as shared memory object `id`: the pages holding its
/// allocated ranges, the end of its last page past its size as zeros.
/// Returns its size.
pub(super) fn store_object(file: &File, path: &str, id: u64, dir: &ImageDir) -> Result<u64> {
    let size = file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len();
    let mut w = PageWriter::create(
        dir,
        &shmem_pagemap_file(id),
        &shmem_pages_file(id),
        Space::Shmem(id),
    )?;
    let page = crate::sys::mm::page_size() as u64;
    data_ranges(file, path, size, |data, hole| {
        let start = data / page * page;
        let end = hole.next_multiple_of(page).min(size.next_multiple_of(page));
        w.add_pages_with(start, (end - start) / page, |out, bytes| {
            copy_padded(file, start, size, out, bytes)
        })?;
        Ok(end)
    })?;
    w.finish()?;
    Ok(size)
}

/// Copies `bytes` of `from` at `at` to `to`, the part past `size` as
/// zeros; an object that shrank meanwhile is an error, never a short run.
fn copy_padded(
    from: &File,
    mut at: u64,
    size: u64,
    to: &mut File,
    bytes: u64,
) -> std::io::Result<u64> {
    let real = bytes.min(size.saturating_sub(at));
    let mut done = 0;
    while done < real {
        let n = sendfile(to.as_fd(), from.as_fd(), &mut at, (real - done) as usize)
            .map_err(|e| std::io::Error::from_raw_os_error(e.into_raw()))?;
        if n == 0 {
            return Err(std::io::Error::other(
                "the shared memory object or memfd shrank during the dump",
            ));
        }
        done += n as u64;
    }
    let zeros = vec![0u8; (bytes - real) as usize];
    to.write_all(&zeros)?;
    Ok(bytes)
}
