//! Named FIFOs: checked in [`plan`] (the path must still be a FIFO) and
//! reopened in [`super::install_files`]. Before any fd of a FIFO is opened,
//! [`keep_open`] opens it O_RDWR at a temporary slot (so no open blocks for
//! want of a reader or a writer, as a FIFO open would) and writes the bytes
//! that were queued in it back; each fd then opens the path with its dumped
//! flags plus O_NONBLOCK, and gets its own flags back by F_SETFL. The
//! temporary fd is closed with the other slots; the queued bytes stay in
//! the FIFO as long as the process holds an end of it, as at the dump.
//!
//! FIFO fds that share one open file description (fd-desc records; in one
//! process or across the tree) are opened once by crest before the tree
//! forks ([`share`]): crest keeps the FIFO open read-write while it queues
//! the bytes (once) and opens each shared description, then every task
//! inherits it (`How::Inherited`), with one set of status flags as at the
//! dump. The bytes are then left out of every task's own keeper.

use std::ffi::CString;
use std::os::fd::{AsFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;

use super::{FilesPlan, How};
use crate::error::{Error, Result};
use crate::image::load::FilesImage;
use crate::sys::fd::{O_CLOEXEC, O_NONBLOCK, O_RDWR, write};
use crate::sys::fdtable::{open_raw, set_status_flags};
use crate::sys::splice::{pipe_size, set_pipe_size};

/// A FIFO the fds reopen.
#[derive(Debug)]
pub struct PlannedFifo {
    /// Its inode at the dump (the pipe-data id of its bytes).
    id: u64,
    /// Its path.
    path: CString,
    /// The bytes to queue back.
    data: Vec<u8>,
}

/// How fd `fd`, an end of FIFO `id` at `path`, will be opened.
pub fn plan(
    plan: &mut FilesPlan,
    files: &FilesImage,
    fd: i32,
    path: &[u8],
    id: u64,
    flags: u32,
) -> Result<How> {
    let show = String::from_utf8_lossy(path);
    let p = std::path::Path::new(std::ffi::OsStr::from_bytes(path));
    let is_fifo = std::fs::metadata(p).is_ok_and(|m| m.file_type().is_fifo());
    if !is_fifo {
        return Err(Error::Unsupported(format!(
            "fd {fd}: `{show}` was a FIFO at the dump and is not one now; recreate it (mkfifo), then restore"
        )));
    }
    let index = match plan.fifos.iter().position(|f| f.id == id) {
        Some(i) => i,
        None => {
            let path = CString::new(path).map_err(|_| {
                Error::Unsupported(format!("fd {fd}: the FIFO path `{show}` holds a NUL byte"))
            })?;
            let data = files
                .pipes
                .iter()
                .filter(|p| p.pipe_id == id)
                .flat_map(|p| p.data.iter().copied())
                .collect();
            plan.fifos.push(PlannedFifo { id, path, data });
            plan.fifos.len() - 1
        }
    };
    Ok(How::Fifo {
        fifo: index,
        flags: super::check::open_flags(flags),
    })
}

fn fail(call: &'static str, fifo: &PlannedFifo, e: crate::sys::Errno) -> Error {
    Error::sys(
        call,
        format!("reopening the FIFO `{}`", fifo.path.to_string_lossy()),
        e,
    )
}

/// Opens FIFO `fifo` read-write at `slot` and queues its bytes back.
pub fn keep_open(fifo: &PlannedFifo, slot: RawFd) -> Result<()> {
    let keeper = keeper(fifo)?;
    super::install::to_slot(keeper.into_raw_fd(), slot).map_err(|e| fail("dup3", fifo, e))
}

/// FIFO `fifo` open read-write, its bytes queued back.
fn keeper(fifo: &PlannedFifo) -> Result<OwnedFd> {
    let keeper = crate::sys::fd::openat(&fifo.path, O_RDWR | O_NONBLOCK | O_CLOEXEC)
        .map_err(|e| fail("open", fifo, e))?;
    if fifo.data.len() > pipe_size(keeper.as_fd()).map_err(|e| fail("fcntl", fifo, e))? {
        set_pipe_size(keeper.as_fd(), fifo.data.len())
            .map_err(|e| fail("fcntl(F_SETPIPE_SZ)", fifo, e))?;
    }
    let mut off = 0;
    while off < fifo.data.len() {
        off += write(keeper.as_fd(), &fifo.data[off..]).map_err(|e| fail("write", fifo, e))?;
    }
    Ok(keeper)
}

/// An fd of FIFO `fifo` with `flags`, at `slot` (its keeper is open).
pub fn open(fifo: &PlannedFifo, flags: u32, fd: RawFd, slot: RawFd) -> Result<()> {
    let err = |call, e| {
        Error::sys(
            call,
            format!(
                "restoring fd {fd} (the FIFO `{}`)",
                fifo.path.to_string_lossy()
            ),
            e,
        )
    };
    let low = open_raw(&fifo.path, flags | O_NONBLOCK).map_err(|e| err("openat", e))?;
    super::install::to_slot(low, slot).map_err(|e| err("dup3", e))?;
    set_status_flags(slot, flags).map_err(|e| err("fcntl(F_SETFL)", e))
}

/// Every (plan, fd index) of a FIFO fd whose description id is on another
/// fd too, grouped by id, with the FIFO's id.
fn shared_descs(plans: &[&mut FilesPlan]) -> Vec<(u64, Vec<(usize, usize)>)> {
    let mut groups: Vec<(u64, Vec<(usize, usize)>)> = Vec::new();
    for (p, plan) in plans.iter().enumerate() {
        for (i, f) in plan.fds.iter().enumerate() {
            let (How::Fifo { .. }, Some(id)) = (&f.how, f.desc) else {
                continue;
            };
            match groups.iter_mut().find(|(g, _)| *g == id) {
                Some((_, users)) => users.push((p, i)),
                None => groups.push((id, vec![(p, i)])),
            }
        }
    }
    groups.retain(|(_, users)| users.len() > 1);
    groups
}

/// The FIFO an fd of `plan` opens, with its flags.
fn fifo_of(plan: &FilesPlan, i: usize) -> Option<(&PlannedFifo, u32)> {
    match plan.fds[i].how {
        How::Fifo { fifo, flags } => Some((&plan.fifos[fifo], flags)),
        _ => None,
    }
}

/// Opens every FIFO description several fds share once, at `base` or
/// above, and points those fds at it (`keep`: per plan, the inherited
/// numbers it keeps).
pub(super) fn share(
    plans: &mut [&mut FilesPlan],
    base: i32,
    out: &mut super::SharedFiles,
    keep: &mut [Vec<i32>],
) -> Result<()> {
    let groups = shared_descs(plans);
    let mut done: Vec<u64> = Vec::new();
    for (desc, users) in &groups {
        let (p0, i0) = users[0];
        let Some((fifo, flags)) = fifo_of(plans[p0], i0) else {
            continue;
        };
        let id = fifo.id;
        let slot = out.reserve(base)?;
        // Held while the description opens (so it does not wait for the
        // other end) and dropped after: the description keeps the bytes.
        let _keeper = if done.contains(&id) {
            None
        } else {
            let data = merged_data(plans, id);
            Some(keeper(&PlannedFifo {
                id,
                path: fifo.path.clone(),
                data,
            })?)
        };
        open(fifo, flags, plans[p0].fds[i0].fd, slot)?;
        crate::debug!(
            "FIFO {id}: description {desc} shared by {} fds, fd {slot}",
            users.len()
        );
        for &(p, i) in users {
            plans[p].fds[i].how = How::Inherited(slot);
            if !keep[p].contains(&slot) {
                keep[p].push(slot);
            }
        }
        if !done.contains(&id) {
            done.push(id);
        }
    }
    for plan in plans.iter_mut() {
        for f in plan.fifos.iter_mut().filter(|f| done.contains(&f.id)) {
            f.data.clear();
        }
    }
    Ok(())
}

/// The bytes queued in FIFO `id`: those of the first plan holding any (the
/// dump stores them once).
fn merged_data(plans: &[&mut FilesPlan], id: u64) -> Vec<u8> {
    plans
        .iter()
        .flat_map(|p| p.fifos.iter())
        .filter(|f| f.id == id)
        .map(|f| f.data.as_slice())
        .find(|d| !d.is_empty())
        .unwrap_or_default()
        .to_vec()
}
