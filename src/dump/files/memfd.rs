//! memfds: the fd record ([`collect`]: name, size, seals, mode, from the
//! /proc/PID/fd/N link, stat and fcntl(F_GET_SEALS)) and the contents
//! ([`dump_memfds`]), taken without the parasite.
//!
//! A memfd is a shmem file on the kernel's internal mount, so its link
//! reads `/memfd:NAME (deleted)` and it has no links; crest tells it from a
//! deleted file of the same name by its device, which is that of a memfd
//! crest makes itself. The contents are read through a file crest opens on
//! the same object (`/proc/PID/fd/N`, or `/proc/PID/map_files/START-END`
//! for a memfd that is only mapped): SEEK_DATA/SEEK_HOLE find what is
//! allocated, sendfile moves it into pages-shmem-ID.img (holes stay holes;
//! the page after the end of a file whose size is not a page multiple is
//! padded with zeros). The object is stored once, by its inode, for every
//! fd and mapping of it: a shared mapping of a memfd is a shared memory
//! object of the same id, so restore maps the very memfd it recreated. A
//! memfd only mapped has no fd record: [`mapped_only`] records its size,
//! seals and mode instead.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::sync::OnceLock;

use crate::error::{Error, Result};
use crate::image::ImageDir;
use crate::image::files::kinds::MEMFD_NAME_MAX;
use crate::image::files::{Fd, FdFile, MemfdObject};
use crate::image::vma::{Backing, Vma};

const PREFIX: &[u8] = b"/memfd:";
const DELETED: &[u8] = b" (deleted)";

/// The device of the kernel's internal shmem mount, where every memfd
/// lives (None if crest cannot make a memfd).
fn memfd_dev() -> Option<u64> {
    static DEV: OnceLock<Option<u64>> = OnceLock::new();
    *DEV.get_or_init(|| {
        let m = crate::sys::mm::memfd_create(c"crest-probe", crate::sys::mm::MFD_CLOEXEC).ok()?;
        File::from(m).metadata().ok().map(|meta| meta.dev())
    })
}

/// The memfd name in a link target or mapping name `/memfd:NAME (deleted)`.
pub fn memfd_name(target: &[u8]) -> Option<&[u8]> {
    target.strip_prefix(PREFIX)?.strip_suffix(DELETED)
}

/// Whether the file behind `target` (a /proc/PID/fd link) is a memfd.
pub fn is_memfd(target: &[u8], meta: &std::fs::Metadata) -> bool {
    memfd_name(target).is_some()
        && meta.file_type().is_file()
        && meta.nlink() == 0
        && Some(meta.dev()) == memfd_dev()
}

/// The fd record of fd `fd` of `pid` when it is a memfd.
pub fn collect(
    pid: u32,
    fd: i32,
    target: &[u8],
    meta: &std::fs::Metadata,
    flags: u32,
    pos: u64,
) -> Result<Option<FdFile>> {
    if !is_memfd(target, meta) {
        return Ok(None);
    }
    let name = memfd_name(target).unwrap_or_default().to_vec();
    if name.len() > MEMFD_NAME_MAX {
        return Err(Error::Unsupported(format!(
            "fd {fd} of pid {pid} is a memfd whose name is longer than memfd_create takes; the link is not what crest expects"
        )));
    }
    let link = format!("/proc/{pid}/fd/{fd}");
    let file = File::open(&link).map_err(|e| super::gone_or(pid, Error::io("open", &link, e)))?;
    let seals = crate::sys::memfd::get_seals(file.as_fd())
        .map_err(|e| Error::sys("fcntl(F_GET_SEALS)", format!("fd {fd} of pid {pid}"), e))?;
    Ok(Some(FdFile::Memfd {
        flags,
        pos,
        id: meta.ino(),
        name,
        size: meta.size(),
        seals,
        mode: meta.mode(),
    }))
}

/// The object records of the memfds `vmas` of `pid` map while `fds` hold
/// none of them, each once: size and mode from fstat, the seals from
/// fcntl(F_GET_SEALS), on a file crest opens through
/// /proc/PID/map_files/START-END (there is no fd to read them through).
pub fn mapped_only(pid: u32, fds: &[Fd], vmas: &[Vma]) -> Result<Vec<MemfdObject>> {
    let mut out: Vec<MemfdObject> = Vec::new();
    let held = |id: u64| {
        fds.iter()
            .any(|f| matches!(f.file, FdFile::Memfd { id: i, .. } if i == id))
    };
    for v in vmas {
        let (Backing::AnonShared { shmid: id }, Some(name)) = (&v.backing, memfd_name(&v.name))
        else {
            continue;
        };
        if held(*id) || out.iter().any(|o| o.id == *id) {
            continue;
        }
        let path = format!("/proc/{pid}/map_files/{:x}-{:x}", v.start, v.end);
        let file =
            File::open(&path).map_err(|e| super::gone_or(pid, Error::io("open", &path, e)))?;
        let meta = file.metadata().map_err(|e| Error::io("stat", &path, e))?;
        let seals = crate::sys::memfd::get_seals(file.as_fd())
            .map_err(|e| Error::sys("fcntl(F_GET_SEALS)", path.clone(), e))?;
        out.push(MemfdObject {
            id: *id,
            name: name.to_vec(),
            size: meta.size(),
            seals,
            mode: meta.mode(),
        });
    }
    Ok(out)
}

/// Stores the contents of every memfd `fds` and `vmas` of `pid` hold that
/// is not in `done` (stored already, from another process of the tree),
/// adding each to it; returns how many this call stored. `pid` must be
/// frozen.
pub fn dump_memfds(
    pid: u32,
    fds: &[Fd],
    vmas: &[Vma],
    dir: &ImageDir,
    done: &mut Vec<u64>,
) -> Result<usize> {
    let before = done.len();
    for f in fds {
        if let FdFile::Memfd { id, .. } = f.file
            && !done.contains(&id)
        {
            dump_object(pid, &format!("/proc/{pid}/fd/{}", f.fd), id, dir)?;
            done.push(id);
        }
    }
    for v in vmas {
        if let Backing::AnonShared { shmid } = v.backing
            && memfd_name(&v.name).is_some()
            && !done.contains(&shmid)
        {
            let path = format!("/proc/{pid}/map_files/{:x}-{:x}", v.start, v.end);
            dump_object(pid, &path, shmid, dir)?;
            done.push(shmid);
        }
    }
    Ok(done.len() - before)
}

/// Stores the object behind `path` as shared memory object `id`.
fn dump_object(pid: u32, path: &str, id: u64, dir: &ImageDir) -> Result<()> {
    let file = File::open(path).map_err(|e| super::gone_or(pid, Error::io("open", path, e)))?;
    let size = crate::dump::shmem::store_object(&file, path, id, dir)?;
    crate::debug!("pid {pid}: memfd {id} ({size} bytes) stored");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn memfd_names_come_from_the_link() {
        assert_eq!(memfd_name(b"/memfd:buf (deleted)"), Some(&b"buf"[..]));
        assert_eq!(memfd_name(b"/memfd: (deleted)"), Some(&b""[..]));
        assert_eq!(memfd_name(b"/memfd:buf"), None);
        assert_eq!(memfd_name(b"/tmp/memfd:x (deleted)"), None);
    }

    #[test]
    fn a_memfd_is_told_from_a_deleted_file() {
        let m = crate::sys::mm::memfd_create(c"probe-test", 0).unwrap();
        let link = format!("/proc/self/fd/{}", m.as_raw_fd());
        let target = std::fs::read_link(&link).unwrap();
        let target = target.as_os_str().as_encoded_bytes();
        let meta = std::fs::metadata(&link).unwrap();
        assert!(is_memfd(target, &meta), "{target:?}");
        let dir = std::env::temp_dir().join(format!("crest-memfd-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("memfd:x");
        let f = File::create(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let meta = f.metadata().unwrap();
        assert!(!is_memfd(b"/memfd:x (deleted)", &meta));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
