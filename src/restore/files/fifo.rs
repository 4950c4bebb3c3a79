//! Named FIFOs: checked in [`plan`] (the path must still be a FIFO) and
//! reopened in [`super::install_files`]. Before any fd of a FIFO is opened,
//! [`keep_open`] opens it O_RDWR at a temporary slot (so no open blocks for
//! want of a reader or a writer, as a FIFO open would) and writes the bytes
//! that were queued in it back; each fd then opens the path with its dumped
//! flags plus O_NONBLOCK, and gets its own flags back by F_SETFL. The
//! temporary fd is closed with the other slots; the queued bytes stay in
//! the FIFO as long as the process holds an end of it, as at the dump.

use std::ffi::CString;
use std::os::fd::{AsFd, IntoRawFd, RawFd};
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
    super::install::to_slot(keeper.into_raw_fd(), slot).map_err(|e| fail("dup3", fifo, e))
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
