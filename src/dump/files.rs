//! The file descriptors of a process, from `/proc/PID/fd/N` (readlink for the
//! path or the kind of an anonymous file, stat through the magic link for the
//! file's type and identity) and `/proc/PID/fdinfo/N` (position, open flags
//! with O_CLOEXEC, mount).
//!
//! Regular files and directories, character devices and pipes become fd
//! records; everything else (sockets, eventfd, epoll, timerfd, signalfd,
//! inotify, io_uring, perf events, bpf objects, pidfds, deleted files...) is
//! refused with the fd number, its kind and the pid. The bytes queued in a
//! pipe are not read here: reading would take them from the process, so they
//! wait for the parasite step (which can tee them).

use std::os::unix::fs::{FileTypeExt, MetadataExt};

use super::mm::readlink;
use super::vma::file_id;
use super::{gone_or, parsed, read_proc};
use crate::error::{Error, Result};
use crate::image::files::{Fd, FdFile};
use crate::proc::fdinfo;

/// `O_CLOEXEC` as fdinfo shows it.
const O_CLOEXEC: u32 = crate::sys::fd::O_CLOEXEC;
/// `FD_CLOEXEC`.
const FD_CLOEXEC: u32 = 1;

/// Every fd of `pid`, in increasing order.
pub fn collect_files(pid: u32) -> Result<Vec<Fd>> {
    let dir = format!("/proc/{pid}/fd");
    let entries = std::fs::read_dir(&dir).map_err(|e| gone_or(pid, Error::io("list", &dir, e)))?;
    let mut fds = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| gone_or(pid, Error::io("list", &dir, e)))?;
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        match collect_fd(pid, fd) {
            Ok(f) => fds.push(f),
            // Closed between the listing and now: a running process may do
            // that; a frozen one cannot, so nothing is lost.
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                crate::debug!("pid {pid}: fd {fd} closed while its files were listed");
            }
            Err(e) => return Err(e),
        }
    }
    fds.sort_by_key(|f| f.fd);
    Ok(fds)
}

/// One fd as an fd record, or a refusal naming its kind.
pub fn collect_fd(pid: u32, fd: i32) -> Result<Fd> {
    let link = format!("/proc/{pid}/fd/{fd}");
    let target = readlink(pid, &link)?;
    let text = read_proc(pid, &format!("fdinfo/{fd}"))?;
    let info = parsed(pid, &format!("fdinfo/{fd}"), fdinfo::parse(&text))?;
    let meta = std::fs::metadata(&link).map_err(|e| gone_or(pid, Error::io("stat", &link, e)))?;
    let fd_flags = if info.flags & O_CLOEXEC != 0 {
        FD_CLOEXEC
    } else {
        0
    };
    let file = classify(target, &meta, info.flags & !O_CLOEXEC, info.pos)
        .map_err(|kind| refusal(pid, fd, &kind))?;
    Ok(Fd { fd, fd_flags, file })
}

/// What the fd refers to, from its link target and stat; `Err` names the
/// kind crest does not dump.
fn classify(
    target: Vec<u8>,
    meta: &std::fs::Metadata,
    flags: u32,
    pos: u64,
) -> Result<FdFile, String> {
    let ft = meta.file_type();
    let path_like = target.starts_with(b"/");
    if target.starts_with(b"pipe:[") && ft.is_fifo() {
        return Ok(FdFile::Pipe {
            pipe_id: meta.ino(),
            flags,
        });
    }
    if (ft.is_file() || ft.is_dir()) && path_like {
        if target.ends_with(b" (deleted)") && meta.nlink() == 0 {
            return Err(format!("the deleted file `{}`", lossy(&target)));
        }
        let id = file_id(meta);
        return Ok(FdFile::Reg {
            path: target,
            flags,
            pos,
            id,
        });
    }
    if ft.is_char_device() && path_like {
        let rdev = meta.rdev();
        return Ok(FdFile::Chr {
            path: target,
            flags,
            rdev,
            pos,
        });
    }
    Err(kind_name(&target, meta))
}

fn refusal(pid: u32, fd: i32, kind: &str) -> Error {
    Error::Unsupported(format!(
        "fd {fd} of pid {pid} is {kind}, which crest cannot dump yet; close it before the dump"
    ))
}

fn lossy(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b)
}

/// Names the kind of a file crest does not dump, for the refusal.
fn kind_name(target: &[u8], meta: &std::fs::Metadata) -> String {
    const ANON: &[(&[u8], &str)] = &[
        (b"anon_inode:[eventfd]", "an eventfd"),
        (b"anon_inode:[eventpoll]", "an epoll instance"),
        (b"anon_inode:[timerfd]", "a timerfd"),
        (b"anon_inode:[signalfd]", "a signalfd"),
        (b"anon_inode:inotify", "an inotify instance"),
        (b"anon_inode:[fanotify]", "a fanotify instance"),
        (b"anon_inode:[io_uring]", "an io_uring instance"),
        (b"anon_inode:[perf_event]", "a perf event"),
        (b"anon_inode:[pidfd]", "a pidfd"),
        (b"anon_inode:[userfaultfd]", "a userfaultfd"),
        (b"anon_inode:bpf-map", "a bpf map"),
        (b"anon_inode:bpf-prog", "a bpf program"),
    ];
    if let Some((_, name)) = ANON.iter().find(|(t, _)| target == *t) {
        return (*name).into();
    }
    let ft = meta.file_type();
    if target.starts_with(b"socket:[") || ft.is_socket() {
        "a socket".into()
    } else if target.starts_with(b"anon_inode:") {
        format!("an anonymous inode ({})", lossy(&target[11..]))
    } else if ft.is_fifo() {
        format!("the named FIFO `{}`", lossy(target))
    } else if ft.is_block_device() {
        format!("the block device `{}`", lossy(target))
    } else {
        format!("`{}` (file mode {:o})", lossy(target), meta.mode())
    }
}
