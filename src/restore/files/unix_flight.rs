//! Regular files and devices in flight in a unix socket's queue that were,
//! at the dump, the open file of an fd the tree holds (a process sent its
//! fd and kept it; the unix-flight-file records say which). Opened once by
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
use crate::error::Result;
use crate::image::files::{Fd, FdFile};
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
        _ => Err(crate::error::Error::Unsupported(format!(
            "fd {} in flight and held is no regular file or device; this is a bug in crest",
            f.fd
        ))),
    }
}
