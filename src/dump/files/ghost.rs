//! Ghost files: regular files deleted while a process still holds them open
//! or mapped. Their contents exist nowhere else, so they go into the image
//! (ghost-data records, at most `--ghost-limit` bytes per file, CRIU's
//! default of 1 MiB), read through a file crest opens on the same inode
//! (`/proc/PID/fd/N`, or `/proc/PID/map_files/START-END` for a file that is
//! only mapped). Only the ranges SEEK_DATA finds are stored, so a sparse
//! file stays sparse. A bigger file is refused, naming the fd or mapping,
//! the path and the option.
//!
//! The limit is an option of the dump ([`super::FileOptions`]), checked
//! once the process is collected ([`check_limit`]), the mappings first.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};

use crate::error::{Error, Result};
use crate::image::files::{Fd, FdFile, FileId, GhostData};
use crate::image::vma::{Backing, Vma};

/// CRIU's default for --ghost-limit: 1 MiB.
pub const DEFAULT_GHOST_LIMIT: u64 = 1 << 20;
/// The most bytes one ghost-data record holds.
const CHUNK: u64 = 1 << 20;
const DELETED: &[u8] = b" (deleted)";

/// The path a deleted file had, when `target` (a link or mapping name)
/// shows one and the file has no links left.
pub fn deleted_path<'a>(target: &'a [u8], meta: &std::fs::Metadata) -> Option<&'a [u8]> {
    let path = target.strip_suffix(DELETED)?;
    (meta.nlink() == 0 && meta.is_file() && path.starts_with(b"/")).then_some(path)
}

fn too_big(what: &str, path: &[u8], size: u64, limit: u64) -> Error {
    Error::Unsupported(format!(
        "{what} is the deleted file `{}` of {size} bytes, more than the {} bytes crest stores for a deleted file; raise the limit with --ghost-limit SIZE or close the file before the dump",
        String::from_utf8_lossy(path),
        limit
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
    Ok(Some(FdFile::Ghost {
        path: path.to_vec(),
        flags,
        pos,
        id: crate::dump::vma::file_id(meta),
    }))
}

/// Refuses a deleted file bigger than `limit` that `vmas` map (the vma
/// records it as a file mapping, its path ending in " (deleted)") or
/// `fds` hold, the mappings first.
pub fn check_limit(pid: u32, fds: &[Fd], vmas: &[Vma], limit: u64) -> Result<()> {
    for v in vmas {
        if let Backing::FilePrivate { path, id } | Backing::FileShared { path, id } = &v.backing
            && let Some(p) = path.strip_suffix(DELETED)
            && id.size > limit
        {
            let what = format!("the mapping {:#x}-{:#x} of pid {pid}", v.start, v.end);
            return Err(too_big(&what, p, id.size, limit));
        }
    }
    for f in fds {
        if let FdFile::Ghost { path, id, .. } = &f.file
            && id.size > limit
        {
            let what = format!("fd {} of pid {pid}", f.fd);
            return Err(too_big(&what, path, id.size, limit));
        }
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
