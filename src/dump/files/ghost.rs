//! Ghost files: regular files deleted while a process still holds them open
//! or mapped. Their contents exist nowhere else, so they go into the image
//! (ghost-data records, at most `--ghost-limit` bytes per file, CRIU's
//! default of 1 MiB), read through a file crest opens on the same inode
//! (`/proc/PID/fd/N`, or `/proc/PID/map_files/START-END` for a file that is
//! only mapped). Only the ranges SEEK_DATA finds are stored, so a sparse
//! file stays sparse. A bigger file is refused, naming the fd or mapping,
//! the path and the option.
//!
//! The limit is a setting of the whole crest run, given once on the command
//! line ([`set_ghost_limit`]), so every collector sees the same value
//! without it being passed through each.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::image::files::{Fd, FdFile, FileId, GhostData};
use crate::image::vma::{Backing, Vma};

/// CRIU's default for --ghost-limit: 1 MiB.
pub const DEFAULT_GHOST_LIMIT: u64 = 1 << 20;
/// The most bytes one ghost-data record holds.
const CHUNK: u64 = 1 << 20;
const DELETED: &[u8] = b" (deleted)";

static GHOST_LIMIT: AtomicU64 = AtomicU64::new(DEFAULT_GHOST_LIMIT);

/// Sets the largest deleted file a dump stores (`--ghost-limit`).
pub fn set_ghost_limit(bytes: u64) {
    GHOST_LIMIT.store(bytes, Ordering::Relaxed);
}

/// The largest deleted file a dump stores.
pub fn ghost_limit() -> u64 {
    GHOST_LIMIT.load(Ordering::Relaxed)
}

/// The path a deleted file had, when `target` (a link or mapping name)
/// shows one and the file has no links left.
pub fn deleted_path<'a>(target: &'a [u8], meta: &std::fs::Metadata) -> Option<&'a [u8]> {
    let path = target.strip_suffix(DELETED)?;
    (meta.nlink() == 0 && meta.is_file() && path.starts_with(b"/")).then_some(path)
}

fn too_big(what: &str, path: &[u8], size: u64) -> Error {
    Error::Unsupported(format!(
        "{what} is the deleted file `{}` of {size} bytes, more than the {} bytes crest stores for a deleted file; raise the limit with --ghost-limit SIZE or close the file before the dump",
        String::from_utf8_lossy(path),
        ghost_limit()
    ))
}

/// The fd record of fd `fd` of `pid` when it is a deleted regular file
/// (memfds were taken before this).
pub fn collect(
    pid: u32,
    fd: i32,
    target: &[u8],
    meta: &std::fs::Metadata,
    flags: u32,
    pos: u64,
) -> Result<Option<FdFile>> {
    let Some(path) = deleted_path(target, meta) else {
        return Ok(None);
    };
    if path.starts_with(b"/memfd:") {
        // A memfd crest did not recognise: not on the shmem mount, so made
        // with MFD_HUGETLB; a ghost of that name would be a file in /.
        return Err(Error::Unsupported(format!(
            "fd {fd} of pid {pid} is the hugetlbfs memfd `{}` (MFD_HUGETLB), which crest cannot dump yet; close it before the dump",
            String::from_utf8_lossy(target)
        )));
    }
    if meta.size() > ghost_limit() {
        return Err(too_big(&format!("fd {fd} of pid {pid}"), path, meta.size()));
    }
    Ok(Some(FdFile::Ghost {
        path: path.to_vec(),
        flags,
        pos,
        id: crate::dump::vma::file_id(meta),
    }))
}

/// Refuses a mapping of a deleted file over the limit (the vma records it
/// as a file mapping with its path ending in " (deleted)").
pub fn check_mapping(pid: u32, v: &Vma) -> Result<()> {
    if let Backing::FilePrivate { path, id } | Backing::FileShared { path, id } = &v.backing
        && let Some(p) = path.strip_suffix(DELETED)
        && id.size > ghost_limit()
    {
        let what = format!("the mapping {:#x}-{:#x} of pid {pid}", v.start, v.end);
        return Err(too_big(&what, p, id.size));
    }
    Ok(())
}

/// The contents of every deleted file `fds` and `vmas` of `pid` hold,
/// each once. `pid` must be frozen.
pub fn collect_data(pid: u32, fds: &[Fd], vmas: &[Vma]) -> Result<Vec<GhostData>> {
    let mut out = Vec::new();
    let mut seen: Vec<(u64, u64)> = Vec::new();
    let mut sources: Vec<(String, FileId)> = Vec::new();
    for f in fds {
        if let FdFile::Ghost { id, .. } = &f.file {
            sources.push((format!("/proc/{pid}/fd/{}", f.fd), *id));
        }
    }
    for v in vmas {
        if let Backing::FilePrivate { path, id } | Backing::FileShared { path, id } = &v.backing
            && path.ends_with(DELETED)
        {
            let link = format!("/proc/{pid}/map_files/{:x}-{:x}", v.start, v.end);
            sources.push((link, *id));
        }
    }
    for (link, id) in sources {
        if seen.contains(&(id.dev, id.ino)) {
            continue;
        }
        seen.push((id.dev, id.ino));
        read_extents(pid, &link, &id, &mut out)?;
    }
    Ok(out)
}

/// Appends the data ranges of the file behind `link` as records.
fn read_extents(pid: u32, link: &str, id: &FileId, out: &mut Vec<GhostData>) -> Result<()> {
    let file = File::open(link).map_err(|e| super::gone_or(pid, Error::io("open", link, e)))?;
    let size = file
        .metadata()
        .map_err(|e| Error::io("stat", link, e))?
        .len();
    if size != id.size {
        return Err(Error::Unsupported(format!(
            "the deleted file at {link} changed size during the dump ({} -> {size} bytes); dump it while nothing writes to it",
            id.size
        )));
    }
    crate::dump::shmem::data_ranges(&file, link, size, |data, hole| {
        let mut at = data;
        while at < hole {
            let mut buf = vec![0u8; (hole - at).min(CHUNK) as usize];
            file.read_exact_at(&mut buf, at)
                .map_err(|e| Error::io("read", link, e))?;
            out.push(GhostData {
                dev: id.dev,
                ino: id.ino,
                offset: at,
                data: buf,
            });
            at = (at + CHUNK).min(hole);
        }
        Ok(hole)
    })?;
    crate::debug!("pid {pid}: deleted file {link} ({size} bytes) stored");
    Ok(())
}
