//! File descriptors, cwd and root of a restored task (files-PID.img).
//!
//! Interim version: regular files, directories and character devices
//! reopened by path at their numbers with their position; pipes refused.
//! (The full version, with pipes and --shell-job, replaces it.)

use std::ffi::CString;
use std::os::fd::IntoRawFd;
use std::os::unix::ffi::OsStrExt;

use crate::error::{Error, Result};
use crate::image::files::{Fd, FdFile};
use crate::image::load::FilesImage;
use crate::image::task::TaskMisc;

/// Everything about the files, checked before any process exists.
pub struct FilesPlan {
    fds: Vec<Fd>,
    cwd: Vec<u8>,
}

impl FilesPlan {
    /// The lowest fd number above every fd of the image.
    pub fn first_free_fd(&self) -> i32 {
        self.fds.iter().map(|f| f.fd + 1).max().unwrap_or(0).max(3)
    }
}

/// Checks the fds of the image against the file system now.
pub fn plan_files(files: &FilesImage, misc: &TaskMisc, _shell_job: bool) -> Result<FilesPlan> {
    for f in &files.fds {
        if let FdFile::Pipe { .. } | FdFile::Unknown(_) = f.file {
            return Err(Error::Unsupported(format!(
                "fd {} cannot be restored yet",
                f.fd
            )));
        }
    }
    Ok(FilesPlan {
        fds: files.fds.clone(),
        cwd: misc.cwd.clone(),
    })
}

fn cstr(b: &[u8]) -> Result<CString> {
    CString::new(b).map_err(|_| Error::Unsupported("a path with a NUL byte".into()))
}

/// Makes the fd table the image's; closes every other fd but `keep`.
pub fn install_files(plan: &FilesPlan, keep: &[i32]) -> Result<()> {
    let tmp_base = keep
        .iter()
        .copied()
        .max()
        .unwrap_or(0)
        .max(plan.first_free_fd())
        + 1;
    let mut opened = Vec::new();
    for f in &plan.fds {
        let (path, flags, pos) = match &f.file {
            FdFile::Reg {
                path, flags, pos, ..
            }
            | FdFile::Chr {
                path, flags, pos, ..
            } => (path, *flags, *pos),
            _ => continue,
        };
        let flags = flags & !(0o100 | 0o200 | 0o1000) | 0o400;
        let file = crate::sys::fd::openat(&cstr(path)?, flags)
            .map_err(|e| Error::sys("open", String::from_utf8_lossy(path).into_owned(), e))?;
        let moved = crate::sys::spawn::dup_at_least(std::os::fd::AsFd::as_fd(&file), tmp_base)
            .map_err(|e| Error::sys("fcntl", "moving an fd", e))?;
        opened.push((f.fd, f.fd_flags, pos, moved.into_raw_fd()));
    }
    for (target, fd_flags, pos, raw) in opened {
        crate::sys::spawn::dup3_to(raw, target, fd_flags & 1 != 0)
            .map_err(|e| Error::sys("dup3", format!("fd {target}"), e))?;
        crate::sys::spawn::close_raw(raw);
        crate::sys::spawn::lseek_set(target, pos);
    }
    let mut keep_all: Vec<i32> = plan.fds.iter().map(|f| f.fd).collect();
    keep_all.extend_from_slice(keep);
    crate::sys::spawn::close_all_but(&keep_all);
    let cwd = std::path::Path::new(std::ffi::OsStr::from_bytes(&plan.cwd));
    std::env::set_current_dir(cwd).map_err(|e| Error::io("chdir", cwd, e))?;
    Ok(())
}
