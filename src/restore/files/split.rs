//! Pseudo-terminal pairs split between processes of the tree: the dump
//! turns a slave into a pty-slave record only when its process holds the
//! master too, so a slave whose master sits in another process of the tree
//! is a plain character device record (as a shell job's terminal is).
//! [`check_tree`] finds those by the pair index (the slave's device minor,
//! the master's TIOCGPTN) and makes them pty-slave records, so that the
//! restore makes one pair for both ([`super::pty_share`]) instead of
//! taking the slave for crest's terminal. A slave whose master is outside
//! the tree stays a terminal (`--shell-job`). Then the controlling
//! terminals of tty.img are checked and the /dev/tty fds of their sessions
//! made dev-tty fds ([`super::ctty::check_tree`]). (memfds and deleted files
//! several processes hold are made once by crest, [`super::tree_objects`];
//! FIFO open files several fds share, by [`super::fifo`].)

use crate::error::Result;
use crate::image::files::FdFile;
use crate::restore::images::Tree;

/// The pair indexes of the masters `fds` hold.
fn masters(fds: &[crate::image::files::Fd]) -> Vec<u32> {
    fds.iter()
        .filter_map(|f| match f.file {
            FdFile::PtyMaster { index, .. } => Some(index),
            _ => None,
        })
        .collect()
}

/// Makes each slave whose master another process of `tree` holds a
/// pty-slave record of that pair.
pub fn check_tree(tree: &mut Tree) -> Result<()> {
    let all: Vec<(u32, Vec<u32>)> = tree
        .live()
        .map(|i| (i.process.pid, masters(&i.files.fds)))
        .collect();
    for (_, img) in tree.procs.iter_mut() {
        let Some(img) = img.as_mut() else { continue };
        let pid = img.process.pid;
        for f in img.files.fds.iter_mut() {
            let FdFile::Chr { flags, rdev, .. } = f.file else {
                continue;
            };
            let Some(index) = crate::dump::files::pty::slave_index(rdev) else {
                continue;
            };
            let holder = all
                .iter()
                .find(|(p, m)| *p != pid && m.contains(&index))
                .map(|(p, _)| *p);
            if let Some(other) = holder {
                crate::debug!(
                    "pid {pid}: fd {} is the slave of pseudo-terminal {index}, whose master is in pid {other}",
                    f.fd
                );
                f.file = FdFile::PtySlave { flags, index };
            }
        }
    }
    super::ctty::check_tree(tree)
}
