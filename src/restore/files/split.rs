//! The objects of the new fd kinds that a tree restore would rebuild once
//! per process although processes of the tree shared them: a
//! pseudo-terminal pair whose master and slave sit in different processes.
//! Refused by name before any process exists, rather than restored as
//! copies that no longer see each other. (memfds and deleted files several
//! processes hold are made once by crest, [`super::tree_objects`]; a named
//! FIFO needs no check: every process opens the same path.)

use crate::error::{Error, Result};
use crate::image::files::FdFile;
use crate::restore::images::Tree;

/// What one process holds: pty masters' indexes, slaves' device numbers.
#[derive(Default)]
struct Held {
    masters: Vec<u32>,
    slaves: Vec<u32>,
}

fn held(img: &crate::restore::images::Images) -> Held {
    let mut h = Held::default();
    for f in &img.files.fds {
        match &f.file {
            FdFile::PtyMaster { index, .. } => h.masters.push(*index),
            FdFile::Chr { rdev, .. } => {
                h.slaves.extend(crate::dump::files::pty::slave_index(*rdev));
            }
            _ => {}
        }
    }
    h
}

/// Refuses a pty pair shared between processes.
pub fn check_tree(tree: &Tree) -> Result<()> {
    let all: Vec<(u32, Held)> = tree.live().map(|i| (i.process.pid, held(i))).collect();
    for (i, (pid, h)) in all.iter().enumerate() {
        for (other, o) in all.iter().skip(i + 1) {
            let what = if let Some(n) = h.masters.iter().find(|m| o.slaves.contains(m)) {
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
