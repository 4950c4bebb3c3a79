//! The file descriptors of a process, from `/proc/PID/fd/N` (readlink for the
//! path or the kind of an anonymous file, stat through the magic link for the
//! file's type and identity) and `/proc/PID/fdinfo/N` (position, open flags
//! with O_CLOEXEC, mount).
//!
//! Regular files and directories, character devices, pipes, the event
//! loop's anonymous inodes (eventfd, signalfd, timerfd, epoll, inotify: see
//! [`anon`]), memfds ([`memfd`]), deleted files ([`ghost`]) and named FIFOs
//! ([`fifo`]) become fd
//! records; everything else (sockets, fanotify, io_uring, perf events, bpf
//! objects, pidfds, userfaultfds, deleted directories...) is refused with
//! the fd number, its kind and the pid.
//!
//! The bytes queued in a pipe are copied by [`collect_pipe_data`] while the
//! target is frozen, without taking them from it: crest gets the pipe with
//! pidfd_getfd (or, holding only the write end, opens a read end through
//! /proc/PID/fd/N), tee(2)s the queued buffers into a pipe of its own sized
//! to hold them all, and reads that copy. The target's pipe is left as it
//! was, byte for byte.

mod anon;
mod desc;
pub mod fifo;
pub mod ghost;
pub mod lock;
pub mod memfd;
pub mod pty;
pub mod tty;
pub mod tty_check;
pub mod unix;
pub mod unix_queue;

pub use desc::Descs;

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use super::mm::readlink;
use super::vma::file_id;
use super::{gone_or, parsed, read_proc};
use crate::error::{Error, Result};
use crate::image::MAX_RECORD;
use crate::image::files::{Fd, FdFile, PipeData};
use crate::proc::fdinfo;
use crate::sys::fd::{O_CLOEXEC as SYS_O_CLOEXEC, O_NONBLOCK, O_RDONLY, O_WRONLY, pipe2, read};
use crate::sys::pipe::{queued_bytes, tee};
use crate::sys::process::{pidfd_getfd, pidfd_open};
use crate::sys::splice::{SPLICE_F_NONBLOCK, pipe_size, set_pipe_size};

/// `O_CLOEXEC` as fdinfo shows it.
const O_CLOEXEC: u32 = crate::sys::fd::O_CLOEXEC;
/// `FD_CLOEXEC`.
const FD_CLOEXEC: u32 = 1;

/// Every fd of `pid`, in increasing order.
pub fn collect_files(pid: u32) -> Result<Vec<Fd>> {
    let dir = format!("/proc/{pid}/fd");
    let entries = std::fs::read_dir(&dir).map_err(|e| gone_or(pid, Error::io("list", &dir, e)))?;
    let mut fds = Vec::new();
    let mut diag: unix::DiagCache = None;
    for entry in entries {
        let entry = entry.map_err(|e| gone_or(pid, Error::io("list", &dir, e)))?;
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        match collect_fd_cached(pid, fd, &mut diag) {
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
    pty::pair(pid, &mut fds)?;
    Ok(fds)
}

/// One fd as an fd record, or a refusal naming its kind.
pub fn collect_fd(pid: u32, fd: i32) -> Result<Fd> {
    collect_fd_cached(pid, fd, &mut None)
}

/// [`collect_fd`], with what unix_diag showed kept in `diag` for the next
/// socket.
fn collect_fd_cached(pid: u32, fd: i32, diag: &mut unix::DiagCache) -> Result<Fd> {
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
    let flags = info.flags & !O_CLOEXEC;
    if let Some(file) = anon::collect(pid, fd, &target, &info, flags)? {
        return Ok(Fd { fd, fd_flags, file });
    }
    if let Some(file) = unix::collect(pid, fd, &target, flags, diag)? {
        return Ok(Fd { fd, fd_flags, file });
    }
    if let Some(file) = memfd::collect(pid, fd, &target, &meta, flags, info.pos)? {
        return Ok(Fd { fd, fd_flags, file });
    }
    if let Some(file) = ghost::collect(pid, fd, &target, &meta, flags, info.pos)? {
        return Ok(Fd { fd, fd_flags, file });
    }
    if let Some(file) = fifo::collect(&target, &meta, flags) {
        return Ok(Fd { fd, fd_flags, file });
    }
    let file = classify(target, &meta, flags, info.pos).map_err(|kind| refusal(pid, fd, &kind))?;
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
        (b"anon_inode:[fanotify]", "a fanotify instance"),
        (b"anon_inode:[io_uring]", "an io_uring instance"),
        (b"anon_inode:[perf_event]", "a perf event"),
        (b"anon_inode:[pidfd]", "a pidfd"),
        (b"anon_inode:[userfaultfd]", "a userfaultfd"),
        (b"anon_inode:bpf-map", "a bpf map"),
        (b"anon_inode:bpf-prog", "a bpf program"),
        (b"anon_inode:bpf_link", "a bpf link"),
    ];
    if let Some((_, name)) = ANON.iter().find(|(t, _)| target == *t) {
        return (*name).into();
    }
    let ft = meta.file_type();
    if target.starts_with(b"socket:[") || ft.is_socket() {
        "a socket that is not a unix socket of crest's network namespace".into()
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

/// `O_ACCMODE`.
const O_ACCMODE: u32 = 3;

/// The bytes queued in every pipe among `fds` of `pid`, one record per pipe
/// holding data, copied without taking them from the pipe. `pid` must be
/// frozen (seized), or a pipe may change while it is copied.
pub fn collect_pipe_data(pid: u32, fds: &[Fd]) -> Result<Vec<PipeData>> {
    collect_pipe_data_once(pid, fds, &mut Vec::new())
}

/// As [`collect_pipe_data`], skipping the pipes in `seen` (already stored
/// with another process of the tree) and adding the others to it: a pipe
/// whose ends sit in several processes is stored once, in the files image
/// of the first process (in pstree order) holding an end of it.
pub fn collect_pipe_data_once(pid: u32, fds: &[Fd], seen: &mut Vec<u64>) -> Result<Vec<PipeData>> {
    let mut out = Vec::new();
    let fresh = |f: &Fd| matches!(f.file, FdFile::Pipe { pipe_id, .. } if !seen.contains(&pipe_id));
    if !fds.iter().any(fresh) {
        return Ok(out);
    }
    let pidfd = pidfd_open(pid as i32).map_err(|e| {
        gone_or(
            pid,
            Error::sys("pidfd_open", format!("copying the pipes of pid {pid}"), e),
        )
    })?;
    for f in fds {
        let FdFile::Pipe { pipe_id, .. } = f.file else {
            continue;
        };
        if seen.contains(&pipe_id) {
            continue;
        }
        seen.push(pipe_id);
        let reader = pipe_reader(pid, pidfd.as_fd(), fds, pipe_id)?;
        let data = copy_queued(reader.as_fd()).map_err(|e| e.in_pipe(pid, f.fd))?;
        if !data.is_empty() {
            crate::debug!("pid {pid}: pipe {pipe_id} holds {} bytes", data.len());
            out.push(PipeData { pipe_id, data });
        }
    }
    Ok(out)
}

/// A read end of pipe `pipe_id` of `pid`: its own read end if it holds one,
/// else a new one opened through /proc/PID/fd/N of a write end.
fn pipe_reader(pid: u32, pidfd: BorrowedFd<'_>, fds: &[Fd], pipe_id: u64) -> Result<OwnedFd> {
    let end = |want: u32| {
        fds.iter().find(|f| {
            matches!(f.file, FdFile::Pipe { pipe_id: p, flags } if p == pipe_id && flags & O_ACCMODE == want)
        })
    };
    if let Some(r) = end(O_RDONLY) {
        return pidfd_getfd(pidfd, r.fd).map_err(|e| {
            gone_or(
                pid,
                Error::sys(
                    "pidfd_getfd",
                    format!("copying the pipe at fd {} of pid {pid}", r.fd),
                    e,
                ),
            )
        });
    }
    let w = end(O_WRONLY)
        .or_else(|| {
            fds.iter()
                .find(|f| matches!(f.file, FdFile::Pipe { pipe_id: p, .. } if p == pipe_id))
        })
        .map_or(-1, |f| f.fd);
    let link = format!("/proc/{pid}/fd/{w}");
    let path = CString::new(link.clone()).map_err(|_| Error::Usage(format!("bad path {link}")))?;
    // Opening the pipe like a FIFO, non-blocking: it never waits for a
    // writer, and the target's file descriptions are untouched.
    crate::sys::fd::openat(&path, O_RDONLY | O_NONBLOCK).map_err(|e| {
        gone_or(
            pid,
            Error::sys(
                "open",
                format!("opening a read end of the pipe at fd {w} of pid {pid}"),
                e,
            ),
        )
    })
}

/// Why copying a pipe's queue failed, before the fd is known.
struct CopyError {
    call: &'static str,
    errno: crate::error::Errno,
    problem: Option<String>,
}

impl CopyError {
    fn sys(call: &'static str) -> impl FnOnce(crate::error::Errno) -> CopyError {
        move |errno| CopyError {
            call,
            errno,
            problem: None,
        }
    }

    fn in_pipe(self, pid: u32, fd: i32) -> Error {
        match self.problem {
            Some(p) => Error::Unsupported(format!("fd {fd} of pid {pid} is a pipe {p}")),
            None => Error::sys(
                self.call,
                format!("copying the data queued in the pipe at fd {fd} of pid {pid}"),
                self.errno,
            ),
        }
    }
}

/// Copies what is queued in the pipe behind `reader` without consuming it.
fn copy_queued(reader: BorrowedFd<'_>) -> Result<Vec<u8>, CopyError> {
    let queued = queued_bytes(reader).map_err(CopyError::sys("ioctl(FIONREAD)"))?;
    if queued == 0 {
        return Ok(Vec::new());
    }
    if queued > MAX_RECORD as usize - 64 {
        return Err(CopyError {
            call: "",
            errno: crate::error::Errno::EFBIG,
            problem: Some(format!(
                "holding {queued} bytes, more than an image record holds ({MAX_RECORD}); drain it before the dump"
            )),
        });
    }
    let (r, w) = pipe2(SYS_O_CLOEXEC | O_NONBLOCK).map_err(CopyError::sys("pipe2"))?;
    // tee copies buffers, not bytes: the copy needs as many slots as the
    // source has, whatever the bytes in them.
    let cap = pipe_size(reader).map_err(CopyError::sys("fcntl(F_GETPIPE_SZ)"))?;
    set_pipe_size(w.as_fd(), cap.max(queued)).map_err(CopyError::sys("fcntl(F_SETPIPE_SZ)"))?;
    let copied =
        tee(reader, w.as_fd(), queued, SPLICE_F_NONBLOCK).map_err(CopyError::sys("tee"))?;
    if copied != queued {
        return Err(CopyError {
            call: "",
            errno: crate::error::Errno::EIO,
            problem: Some(format!(
                "whose {queued} queued bytes changed while crest copied them ({copied} copied); dump it while nothing writes to the pipe"
            )),
        });
    }
    let mut data = vec![0u8; queued];
    let mut got = 0;
    while got < queued {
        match read(r.as_fd(), &mut data[got..]).map_err(CopyError::sys("read"))? {
            0 => break,
            n => got += n,
        }
    }
    data.truncate(got);
    Ok(data)
}

/// What the dump's options allow of the files a process holds
/// (`--ghost-limit`, `--file-locks`); crest refuses the rest
/// ([`FileOptions::refuse`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileOptions {
    /// The largest deleted file a dump stores (`--ghost-limit`).
    pub ghost_limit: u64,
    /// Whether file locks are taken along (`--file-locks`).
    pub file_locks: bool,
}

impl Default for FileOptions {
    fn default() -> FileOptions {
        FileOptions {
            ghost_limit: ghost::DEFAULT_GHOST_LIMIT,
            file_locks: false,
        }
    }
}

impl FileOptions {
    /// Refuses what these options do not allow in the collected `state`:
    /// a deleted file over the limit (mapped, then held), then a lock.
    pub fn refuse(&self, state: &super::ProcessState) -> Result<()> {
        let (pid, files) = (state.process.pid, &state.files);
        ghost::check_limit(pid, &files.fds, &state.mm.vmas, self.ghost_limit)?;
        lock::check_allowed(pid, &files.locks, self.file_locks)
    }
}
