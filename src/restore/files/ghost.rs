//! Ghost files (deleted files the process held open or mapped): each made
//! once in crest before the task exists ([`create_ghosts`]) as an unlinked
//! file in the directory the file was deleted from (created under its old
//! name and removed at once when that name is free, so /proc shows the same
//! `PATH (deleted)`; else O_TMPFILE, or, where the file system lacks it, a
//! new name removed at once), with the dumped
//! mode, size, contents (the stored ranges; the rest stays a hole) and
//! mtime, and kept as one of the task's helper fds. Every fd of it is a new
//! open of that file with its dumped flags and position (like a memfd's,
//! [`super::memfd::open`]); every mapping of it maps that file. So the
//! process finds what it had: a file with no name, its bytes, its offset.

use std::fs::{File, OpenOptions};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use crate::error::{Error, Result};
use crate::image::files::{FdFile, FileId};
use crate::image::vma::Backing;
use crate::restore::images::Images;
use crate::restore::mem::HelperFds;

const DELETED: &[u8] = b" (deleted)";

/// The deleted files of `img` as (path, identity), each once: from its fd
/// records, then from its mappings.
pub(super) fn objects(img: &Images) -> Vec<(Vec<u8>, FileId)> {
    let mut out: Vec<(Vec<u8>, FileId)> = Vec::new();
    let mut add = |path: &[u8], id: &FileId| {
        if !out.iter().any(|(_, o)| (o.dev, o.ino) == (id.dev, id.ino)) {
            out.push((path.to_vec(), *id));
        }
    };
    for f in &img.files.fds {
        if let FdFile::Ghost { path, id, .. } = &f.file {
            add(path, id);
        }
    }
    for v in &img.mm.vmas {
        if let Backing::FilePrivate { path, id } | Backing::FileShared { path, id } = &v.backing
            && let Some(p) = path.strip_suffix(DELETED)
        {
            add(p, id);
        }
    }
    out
}

/// Makes every deleted file of `img` and keeps each as a helper fd; one
/// that `shared` holds (made once for several processes) is a dup of it.
pub fn create_ghosts(
    img: &Images,
    fds: &mut HelperFds,
    shared: &super::tree_objects::TreeObjects,
) -> Result<()> {
    for (path, id) in objects(img) {
        let key = (id.dev, id.ino);
        let fd = match shared.ghost(key)? {
            Some(fd) => fd,
            None => OwnedFd::from(create(img, &path, &id)?),
        };
        fds.keep_ghost(key, fd)?;
    }
    Ok(())
}

fn show(p: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(p)
}

/// One unlinked file holding the dumped contents of `path`.
pub(super) fn create(img: &Images, path: &[u8], id: &FileId) -> Result<File> {
    let p = Path::new(std::ffi::OsStr::from_bytes(path));
    let dir = p.parent().unwrap_or(Path::new("/"));
    let file = unlinked(dir, p, id.mode & 0o7777).map_err(|e| {
        Error::Unsupported(format!(
            "the deleted file `{}` cannot be recreated in {} ({e}); that directory must exist and be writable at restore",
            show(path),
            dir.display()
        ))
    })?;
    let what = || format!("the deleted file `{}`", show(path));
    file.set_len(id.size)
        .map_err(|e| Error::io("ftruncate", what(), e))?;
    let chunks = img
        .files
        .ghosts
        .iter()
        .filter(|g| (g.dev, g.ino) == (id.dev, id.ino));
    for g in chunks {
        if g.offset.saturating_add(g.data.len() as u64) > id.size {
            return Err(Error::Unsupported(format!(
                "the image holds bytes of {} past its size; the image is damaged",
                what()
            )));
        }
        file.write_all_at(&g.data, g.offset)
            .map_err(|e| Error::io("write", what(), e))?;
    }
    let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(id.mtime_ns.max(0) as u64);
    if let Err(e) = file.set_modified(mtime) {
        crate::warn!("{}: its mtime is not restored ({e})", what());
    }
    Ok(file)
}

/// A new file in `dir` with no name. Made under its old name and removed
/// at once when that name is free, so /proc shows `PATH (deleted)` as
/// before; else O_TMPFILE (/proc shows `DIR/#INODE (deleted)`), or a
/// created name removed at once where the file system lacks O_TMPFILE.
fn unlinked(dir: &Path, was: &Path, mode: u32) -> std::io::Result<File> {
    let same = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_CLOEXEC)
        .open(was);
    if let Ok(f) = same {
        std::fs::remove_file(was)?;
        return Ok(f);
    }
    let tmp = OpenOptions::new()
        .read(true)
        .write(true)
        .mode(mode)
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .open(dir);
    match tmp {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR)) => {}
        other => return other,
    }
    let base = was
        .file_name()
        .map_or("ghost".into(), |n| n.to_string_lossy());
    for n in 0..100 {
        let name = dir.join(format!(".{base}.crest-ghost-{}-{n}", std::process::id()));
        let made = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_CLOEXEC)
            .open(&name);
        match made {
            Ok(f) => {
                std::fs::remove_file(&name)?;
                return Ok(f);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free temporary name"))
}
