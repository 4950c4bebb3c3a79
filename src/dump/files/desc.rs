//! Open file descriptions shared between fds: kcmp(2) with KCMP_FILE tells
//! whether two fds, of one process or of two, refer to the same open file
//! (dup, or inherited across fork). Every fd of the tree gets a description
//! id (the fd-desc record); the same id means one open file, whose offset
//! and status flags the fds share and which a restore opens once.
//!
//! Only fds on the same inode can share a description, so each fd is
//! compared (kcmp) with one representative per description already seen on
//! its inode: a handful of calls per fd. The processes stay seized for the
//! whole dump, so every representative's pid still names its process.

use std::os::unix::fs::MetadataExt;

use crate::dump::gone_or;
use crate::error::{Error, Result};
use crate::image::files::{Fd, FdDesc};
use crate::sys::process::{KCMP_FILE, kcmp};

/// One description seen so far: where it was first found.
#[derive(Debug, Clone, Copy)]
pub struct Rep {
    id: u64,
    pid: u32,
    fd: i32,
    dev: u64,
    ino: u64,
}

/// The descriptions of the tree seen so far.
#[derive(Debug, Default)]
pub struct Descs {
    reps: Vec<Rep>,
}

impl Descs {
    /// The description id of each of `pid`'s fds, new ids for descriptions
    /// not seen in this or an earlier process.
    pub fn assign(&mut self, pid: u32, fds: &[Fd]) -> Result<Vec<FdDesc>> {
        let mut out = Vec::with_capacity(fds.len());
        for f in fds {
            let link = format!("/proc/{pid}/fd/{}", f.fd);
            let meta =
                std::fs::metadata(&link).map_err(|e| gone_or(pid, Error::io("stat", &link, e)))?;
            let (dev, ino) = (meta.dev(), meta.ino());
            let id = match self.find(pid, f.fd, dev, ino)? {
                Some(id) => id,
                None => {
                    let id = self.reps.len() as u64 + 1;
                    self.reps.push(Rep {
                        id,
                        pid,
                        fd: f.fd,
                        dev,
                        ino,
                    });
                    id
                }
            };
            out.push(FdDesc {
                fd: f.fd,
                desc_id: id,
            });
        }
        Ok(out)
    }

    /// The id of the description `pid`'s `fd` shares with one seen before.
    fn find(&self, pid: u32, fd: i32, dev: u64, ino: u64) -> Result<Option<u64>> {
        for r in self.reps.iter().filter(|r| r.dev == dev && r.ino == ino) {
            match kcmp(r.pid as i32, pid as i32, KCMP_FILE, r.fd as u64, fd as u64) {
                Ok(0) => return Ok(Some(r.id)),
                Ok(_) => {}
                Err(e) => {
                    return Err(gone_or(
                        pid,
                        Error::sys(
                            "kcmp",
                            format!(
                                "comparing fd {fd} of pid {pid} with fd {} of pid {}",
                                r.fd, r.pid
                            ),
                            e,
                        ),
                    ));
                }
            }
        }
        Ok(None)
    }
}
