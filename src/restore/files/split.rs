//! The objects of the new fd kinds that a tree restore would rebuild once
//! per process although processes of the tree shared them: a memfd, a
//! deleted file, a pseudo-terminal pair whose master and slave sit in
//! different processes. Refused by name before any process exists, rather
//! than restored as copies that no longer see each other's writes.
//! (A named FIFO needs no check: every process opens the same path.)

use crate::error::{Error, Result};
use crate::image::files::FdFile;
use crate::image::vma::Backing;
use crate::restore::images::Tree;

/// What one process holds: memfd ids, deleted files, pty masters' indexes,
/// slaves' device numbers.
#[derive(Default)]
struct Held {
    memfds: Vec<u64>,
    ghosts: Vec<(u64, u64)>,
    masters: Vec<u32>,
    slaves: Vec<u32>,
}

fn held(img: &crate::restore::images::Images) -> Held {
    let mut h = Held::default();
    for f in &img.files.fds {
        match &f.file {
            FdFile::Memfd { id, .. } => h.memfds.push(*id),
            FdFile::Ghost { id, .. } => h.ghosts.push((id.dev, id.ino)),
            FdFile::PtyMaster { index, .. } => h.masters.push(*index),
            FdFile::Chr { rdev, .. } => {
                h.slaves.extend(crate::dump::files::pty::slave_index(*rdev));
            }
            _ => {}
        }
    }
    for v in &img.mm.vmas {
        match &v.backing {
            Backing::AnonShared { shmid }
                if crate::dump::files::memfd::memfd_name(&v.name).is_some() =>
            {
                h.memfds.push(*shmid)
            }
            Backing::FilePrivate { path, id } | Backing::FileShared { path, id }
                if path.ends_with(b" (deleted)") =>
            {
                h.ghosts.push((id.dev, id.ino))
            }
            _ => {}
        }
    }
    h
}

/// Refuses a memfd, a deleted file or a pty pair shared between processes.
pub fn check_tree(tree: &Tree) -> Result<()> {
    let all: Vec<(u32, Held)> = tree.live().map(|i| (i.process.pid, held(i))).collect();
    for (i, (pid, h)) in all.iter().enumerate() {
        for (other, o) in all.iter().skip(i + 1) {
            let what = if let Some(id) = h.memfds.iter().find(|m| o.memfds.contains(m)) {
                format!("memfd {id}")
            } else if let Some((d, n)) = h.ghosts.iter().find(|g| o.ghosts.contains(g)) {
                format!("the deleted file of device {d:#x} inode {n}")
            } else if let Some(n) = h.masters.iter().find(|m| o.slaves.contains(m)) {
                format!("pseudo-terminal {n} (master in {pid}, slave in {other})")
            } else if let Some(n) = o.masters.iter().find(|m| h.slaves.contains(m)) {
                format!("pseudo-terminal {n} (master in {other}, slave in {pid})")
            } else {
                continue;
            };
            return Err(Error::Unsupported(format!(
                "processes {pid} and {other} share {what}; restoring it shared between processes comes with process-tree sharing"
            )));
        }
    }
    Ok(())
}
