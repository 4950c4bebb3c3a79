//! Named FIFOs: the fd record (the path, the open flags, the inode as the
//! FIFO's id) and the bytes queued in it, copied like a pipe's (tee(2) into
//! a pipe of crest's, see [`super::copy_queued`]) without taking them from
//! the FIFO, and stored as a pipe-data record whose pipe id is the FIFO's
//! inode.
//!
//! crest reads the queue through the process's own read end when it holds
//! one (pidfd_getfd); otherwise through a read end it opens itself on
//! /proc/PID/fd/N with O_NONBLOCK, which for a moment adds a reader to the
//! FIFO: a writer blocked in open(2) waiting for a reader may then proceed.

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use crate::error::{Error, Result};
use crate::image::files::{Fd, FdFile, PipeData};
use crate::sys::fd::{O_NONBLOCK, O_RDONLY, O_WRONLY};
use crate::sys::process::{pidfd_getfd, pidfd_open};

/// The fd record of fd `fd` when it is a FIFO reached by a path.
pub fn collect(target: &[u8], meta: &std::fs::Metadata, flags: u32) -> Option<FdFile> {
    (meta.file_type().is_fifo() && target.starts_with(b"/")).then(|| FdFile::Fifo {
        path: target.to_vec(),
        flags,
        id: meta.ino(),
    })
}

/// The bytes queued in every FIFO among `fds` of `pid` not in `seen`
/// (stored already, with another process of the tree), adding each to it.
/// `pid` must be frozen.
pub fn collect_data(pid: u32, fds: &[Fd], seen: &mut Vec<u64>) -> Result<Vec<PipeData>> {
    let mut out = Vec::new();
    for f in fds {
        let FdFile::Fifo { id, .. } = f.file else {
            continue;
        };
        if seen.contains(&id) {
            continue;
        }
        seen.push(id);
        let reader = reader(pid, fds, id)?;
        let data = super::copy_queued(reader.as_fd()).map_err(|e| e.in_pipe(pid, f.fd))?;
        if !data.is_empty() {
            crate::debug!("pid {pid}: FIFO {id} holds {} bytes", data.len());
            out.push(PipeData { pipe_id: id, data });
        }
    }
    Ok(out)
}

/// A read end of FIFO `id` of `pid`: its own when it holds one, else a new
/// non-blocking one.
fn reader(pid: u32, fds: &[Fd], id: u64) -> Result<OwnedFd> {
    let ours = |f: &&Fd| matches!(f.file, FdFile::Fifo { id: i, flags, .. } if i == id && flags & 3 != O_WRONLY);
    let fail = |call, fd: i32, e| {
        super::gone_or(
            pid,
            Error::sys(call, format!("copying the FIFO at fd {fd} of pid {pid}"), e),
        )
    };
    if let Some(r) = fds.iter().find(ours) {
        let pidfd = pidfd_open(pid as i32).map_err(|e| fail("pidfd_open", r.fd, e))?;
        return pidfd_getfd(pidfd.as_fd(), r.fd).map_err(|e| fail("pidfd_getfd", r.fd, e));
    }
    let any = fds
        .iter()
        .find(|f| matches!(f.file, FdFile::Fifo { id: i, .. } if i == id))
        .map_or(-1, |f| f.fd);
    let link = format!("/proc/{pid}/fd/{any}");
    let path = CString::new(link.clone()).map_err(|_| Error::Usage(format!("bad path {link}")))?;
    crate::sys::fd::openat(&path, O_RDONLY | O_NONBLOCK).map_err(|e| fail("open", any, e))
}
