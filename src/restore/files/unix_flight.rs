//! What is in flight in a unix socket's queue and held by the tree too,
//! made once by crest before the tree forks.
//!
//! Pipes: a pipe in flight in a socket the tree shares that a process
//! holds is made once with its bytes ([`make_held_pipes`]); the send
//! takes its end from there ([`lend_pipe_ends`]) and the holders inherit
//! its ends.
//!
//! Regular files and devices in flight that were, at the dump, the open
//! file of an fd the tree holds (a process sent its fd and kept it; the
//! unix-flight-file records say which). Opened once by
//! crest before the tree forks: every fd with that open file's description
//! id inherits it ([`super::How::Inherited`]) and the send puts a copy of
//! it in flight ([`super::unix::Op::Dup`]), so the file in flight and the
//! held fd share one offset and one set of status flags again.
//!
//! A file in flight whose holder has no description id (an older image)
//! or is no regular file or device is opened anew for the send, as one
//! without a holder is.

use std::os::fd::RawFd;

use super::shared::SharedFiles;
use super::unix::Lent;
use super::{How, check};
use crate::error::{Error, Result};
use crate::image::files::{Fd, FdFile, PipeData, UnixQueue};
use crate::image::load::FilesImage;

/// An open file crest made: (its description id, its fd number).
pub type Opened = (u64, RawFd);

/// Opens each held open file that is in flight too once, at numbers >=
/// `base` kept in `open`: (description id, fd) of each, and where each
/// file in flight is, with the fd of its open file.
pub fn open_flight_files(
    procs: &[&FilesImage],
    pids: &[u32],
    open: &mut SharedFiles,
    base: i32,
) -> Result<(Vec<Opened>, Vec<Lent>)> {
    let mut files: Vec<Opened> = Vec::new();
    let mut lent: Vec<Lent> = Vec::new();
    for e in procs.iter().flat_map(|p| p.flight_files.iter()) {
        let Some((desc, held)) = holder(procs, pids, e.pid, e.fd) else {
            continue;
        };
        let fd = match files.iter().find(|(d, _)| *d == desc) {
            Some(&(_, fd)) => fd,
            None => {
                let fd = open.reserve(base)?;
                let how = plan_open(held)?;
                super::shared::open_description(&how, held.fd, fd)?;
                crate::debug!(
                    "fd {} of pid {}: its open file is in flight too, opened once at {fd}",
                    e.fd,
                    e.pid
                );
                files.push((desc, fd));
                fd
            }
        };
        let key = (e.ino, e.message, e.index);
        if !lent.iter().any(|(k, _)| *k == key) {
            lent.push((key, fd));
        }
    }
    Ok((files, lent))
}

/// The description id and fd record of fd `fd` of process `pid`, when it
/// is a regular file or a device with a description id.
fn holder<'a>(procs: &[&'a FilesImage], pids: &[u32], pid: u32, fd: i32) -> Option<(u64, &'a Fd)> {
    let files = procs[pids.iter().position(|&p| p == pid)?];
    let desc = files.descs.iter().find(|d| d.fd == fd)?.desc_id;
    let held = files.fds.iter().find(|f| f.fd == fd)?;
    let ok = match held.file {
        FdFile::Reg { .. } => true,
        // A terminal comes from crest's own (--shell-job), not opened.
        FdFile::Chr { rdev, .. } => !check::is_tty(rdev),
        _ => false,
    };
    ok.then_some((desc, held))
}

/// How the held fd `f` (a regular file or device) is opened, checked
/// against the file system as install checks it.
fn plan_open(f: &Fd) -> Result<How> {
    match &f.file {
        FdFile::Chr {
            path,
            flags,
            rdev,
            pos,
        } => Ok(How::Open {
            path: check::char_device(f.fd, path, *rdev)?,
            flags: check::open_flags(*flags) | check::O_NOCTTY,
            pos: *pos,
        }),
        FdFile::Reg {
            path,
            flags,
            pos,
            id,
        } => Ok(How::Open {
            path: check::regular(f.fd, path, id)?,
            flags: check::open_flags(*flags),
            pos: *pos,
        }),
        _ => Err(Error::Unsupported(format!(
            "fd {} in flight and held is no regular file or device; this is a bug in crest",
            f.fd
        ))),
    }
}

/// Each pipe in flight in `queues` that a process holds, made once at
/// numbers >= `base` with its bytes and each end's flags as a holder's
/// fd (or the message) has them: (pipe id, [read, write]).
pub(super) fn make_held_pipes(
    procs: &[&FilesImage],
    queues: &[UnixQueue],
    data: &[PipeData],
    open: &mut SharedFiles,
    base: i32,
) -> Result<Vec<(u64, [RawFd; 2])>> {
    let mut out: Vec<(u64, [RawFd; 2])> = Vec::new();
    for id in queues.iter().flat_map(super::unix_tree::pipes_in) {
        if out.iter().any(|(i, _)| *i == id) || super::unix_tree::pipe_holders(procs, id).is_empty()
        {
            continue;
        }
        let held = procs.iter().flat_map(|p| p.fds.iter()).map(|f| &f.file);
        let carried = queues
            .iter()
            .flat_map(|q| q.messages.iter().flat_map(|m| m.fds.iter()));
        let ends: Vec<u32> = held
            .chain(carried)
            .filter_map(|f| match f {
                FdFile::Pipe { pipe_id, flags } if *pipe_id == id => Some(*flags),
                _ => None,
            })
            .collect();
        let end = |write: bool| {
            ends.iter()
                .copied()
                .find(|f| (f & super::check::O_ACCMODE == crate::sys::fd::O_WRONLY) == write)
        };
        let pipe = super::PlannedPipe {
            id,
            data: data
                .iter()
                .filter(|d| d.pipe_id == id)
                .flat_map(|d| d.data.iter().copied())
                .collect(),
            flags: [end(false), end(true)],
            inherited: None,
        };
        let (r, w) = (open.reserve(base)?, open.reserve(base)?);
        super::install::make_pipe(&pipe, r, w)?;
        crate::debug!("pipe {id}: in flight and held, made once at fds {r} and {w}");
        out.push((id, [r, w]));
    }
    Ok(out)
}

/// Puts a copy of each pipe end the plan borrows at its slot.
pub(super) fn lend_pipe_ends(
    plan: &super::unix::UnixPlan,
    pipes: &[(u64, [RawFd; 2])],
    slots: &[RawFd],
) -> Result<()> {
    for &(id, write, k) in &plan.borrowed {
        let Some((_, ends)) = pipes.iter().find(|(i, _)| *i == id) else {
            return Err(Error::Unsupported(format!(
                "pipe {id} in flight is missing from the pipes crest made; this is a bug in crest"
            )));
        };
        crate::sys::fdtable::dup3(
            ends[usize::from(write)],
            slots[k],
            crate::sys::fd::O_CLOEXEC,
        )
        .map_err(|e| Error::sys("dup3", format!("lending an end of pipe {id} in flight"), e))?;
    }
    Ok(())
}
