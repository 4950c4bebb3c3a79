//! The page pipe: created inside the target by the parasite (only the
//! target can vmsplice its own memory), read by crest through a copy of its
//! read end (pidfd_getfd) grown with F_SETPIPE_SZ (crest's privilege counts,
//! not the target's), emptied into the pages file with splice, and closed
//! in the target again so its fd table is as before.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::blob::proto::{CMD_PIPE_CLOSE, CMD_PIPE_OPEN, PipeFds, VmspliceArgs};
use crate::error::{Error, Result};
use crate::infect::Parasite;
use crate::sys::process::{pidfd_getfd, pidfd_open};
use crate::sys::splice::{SPLICE_F_MOVE, SPLICE_F_NONBLOCK, set_pipe_size, splice};

/// The pipe capacity crest asks for: one parasite command moves at most
/// this much, so bigger means fewer round trips into the target. Its pages
/// are the target's, only referenced: crest's memory does not grow with it.
const PIPE_BYTES: usize = 16 << 20;

/// CMD_PIPE_OPEN: a pipe in the target; its fd numbers there.
pub fn open(pid: u32, parasite: &mut Parasite<'_>) -> Result<PipeFds> {
    let reply = match parasite.command(CMD_PIPE_OPEN, &[], size_of::<PipeFds>()) {
        Err(Error::Sys { errno, .. }) => {
            let ctx = format!(
                "pid {pid}: creating the page pipe inside the target (it needs two free fds \
                 under its RLIMIT_NOFILE)"
            );
            return Err(Error::sys("pipe2", ctx, errno));
        }
        r => r?,
    };
    Ok(PipeFds {
        read_fd: i32::from_ne_bytes([reply[0], reply[1], reply[2], reply[3]]),
        write_fd: i32::from_ne_bytes([reply[4], reply[5], reply[6], reply[7]]),
    })
}

/// CMD_PIPE_CLOSE: closes both ends in the target.
pub fn close(parasite: &mut Parasite<'_>, fds: PipeFds) -> Result<()> {
    let mut payload = Vec::with_capacity(8);
    payload.extend_from_slice(&fds.read_fd.to_ne_bytes());
    payload.extend_from_slice(&fds.write_fd.to_ne_bytes());
    parasite.command(CMD_PIPE_CLOSE, &payload, 0).map(|_| ())
}

/// crest's copy of the target's pipe end, grown to [`PIPE_BYTES`] (or as
/// much as the kernel grants).
pub fn read_end(pid: u32, fd: i32) -> Result<OwnedFd> {
    let ctx = || format!("taking pid {pid}'s page pipe (its fd {fd})");
    let pidfd = pidfd_open(pid as i32).map_err(|e| Error::sys("pidfd_open", ctx(), e))?;
    let end = pidfd_getfd(pidfd.as_fd(), fd).map_err(|e| Error::sys("pidfd_getfd", ctx(), e))?;
    let mut want = PIPE_BYTES;
    while set_pipe_size(end.as_fd(), want).is_err() && want > 64 << 10 {
        want /= 2;
    }
    Ok(end)
}

/// The payload bytes of a [`VmspliceArgs`], in its `repr(C)` layout.
pub fn encode_vmsplice(args: &VmspliceArgs) -> Vec<u8> {
    let mut p = Vec::with_capacity(16 + 16 * args.nr_iov as usize);
    p.extend_from_slice(&args.pipe_fd.to_ne_bytes());
    p.extend_from_slice(&args.nr_iov.to_ne_bytes());
    p.extend_from_slice(&args.done.to_ne_bytes());
    for r in &args.iov[..args.nr_iov as usize] {
        p.extend_from_slice(&r.start.to_ne_bytes());
        p.extend_from_slice(&r.len.to_ne_bytes());
    }
    p
}

/// Splices `bytes` from the pipe to the pages file at its position; stops
/// short (and the writer reports it) if the pipe runs dry.
pub fn drain(pipe: BorrowedFd<'_>, file: &mut File, bytes: u64) -> std::io::Result<u64> {
    let mut moved = 0u64;
    while moved < bytes {
        let left = (bytes - moved) as usize;
        match splice(pipe, file.as_fd(), left, SPLICE_F_MOVE | SPLICE_F_NONBLOCK) {
            Ok(0) => break,
            Ok(n) => moved += n as u64,
            Err(e) if e == crate::sys::Errno::EINTR => {}
            Err(e) if e == crate::sys::Errno::EAGAIN => break,
            Err(e) => return Err(std::io::Error::from_raw_os_error(e.into_raw())),
        }
    }
    Ok(moved)
}
