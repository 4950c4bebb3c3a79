//! memfds and deleted (ghost) files that several processes of the tree
//! hold, by an fd or a mapping: each made once, by crest, before any task
//! exists (memfd_create or an unlinked file, filled from the image as
//! [`super::memfd`] and [`super::ghost`] do for one process). Each task's
//! helper fd for it is then a dup of that one object, so its fds reopen the
//! same object and its mappings map it: a write in one process is seen in
//! the others, as before the dump. An object only one process holds is
//! still made for that process alone. Fds of these objects that shared one
//! open file description (fd-desc records: a dup, or inherited across
//! fork) share one again ([`share_descriptions`]), opened by crest before
//! the tree forks.

use std::os::fd::OwnedFd;

use super::How;
use crate::error::{Error, Result};
use crate::restore::images::Tree;

/// The objects crest made for several processes.
#[derive(Debug, Default)]
pub struct TreeObjects {
    memfds: Vec<(u64, OwnedFd)>,
    ghosts: Vec<((u64, u64), OwnedFd)>,
}

impl TreeObjects {
    /// A new fd of memfd `id` when it is shared, for a task's helper fds.
    pub(super) fn memfd(&self, id: u64) -> Result<Option<OwnedFd>> {
        let found = self.memfds.iter().find(|(m, _)| *m == id);
        found.map(|(_, fd)| dup(fd, "a shared memfd")).transpose()
    }

    /// A new fd of the deleted file `key` (dev, ino) when it is shared.
    pub(super) fn ghost(&self, key: (u64, u64)) -> Result<Option<OwnedFd>> {
        let found = self.ghosts.iter().find(|(k, _)| *k == key);
        found
            .map(|(_, fd)| dup(fd, "a shared deleted file"))
            .transpose()
    }

    /// How many objects crest made.
    pub fn len(&self) -> usize {
        self.memfds.len() + self.ghosts.len()
    }

    /// Whether it made none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn dup(fd: &OwnedFd, what: &str) -> Result<OwnedFd> {
    fd.try_clone()
        .map_err(|e| Error::io("fcntl(F_DUPFD_CLOEXEC)", what, e))
}

/// Keys that at least two processes hold, in first-seen order.
fn shared_keys<K: PartialEq + Copy>(per_process: &[Vec<K>]) -> Vec<K> {
    let mut out = Vec::new();
    for (i, keys) in per_process.iter().enumerate() {
        for k in keys {
            let elsewhere = per_process[i + 1..].iter().any(|o| o.contains(k));
            if elsewhere && !out.contains(k) {
                out.push(*k);
            }
        }
    }
    out
}

/// Makes every memfd and deleted file several processes of `tree` hold.
pub fn create_tree_objects(tree: &Tree) -> Result<TreeObjects> {
    let mut out = TreeObjects::default();
    let memfds: Vec<Vec<u64>> = tree
        .live()
        .map(|img| super::memfd::objects(img).iter().map(|o| o.id).collect())
        .collect();
    for id in shared_keys(&memfds) {
        out.memfds.push((id, make_memfd(tree, id)?));
    }
    let ghosts: Vec<Vec<(u64, u64)>> = tree
        .live()
        .map(|img| {
            let objs = super::ghost::objects(img);
            objs.iter().map(|(_, i)| (i.dev, i.ino)).collect()
        })
        .collect();
    for key in shared_keys(&ghosts) {
        out.ghosts.push((key, make_ghost(tree, key)?));
    }
    if !out.is_empty() {
        crate::debug!(
            "{} memfd(s) and deleted file(s) shared by processes",
            out.len()
        );
    }
    Ok(out)
}

/// Memfd `id` made once: described by an fd record when a process has one
/// (its size, seals and mode are the dumped ones), else by the process
/// whose mappings reach furthest.
fn make_memfd(tree: &Tree, id: u64) -> Result<OwnedFd> {
    let mut best: Option<(&crate::restore::images::Images, super::memfd::Object)> = None;
    for img in tree.live() {
        let Some(o) = super::memfd::objects(img).into_iter().find(|o| o.id == id) else {
            continue;
        };
        let better = match &best {
            None => true,
            Some((_, b)) => !b.from_fd && (o.from_fd || o.size > b.size),
        };
        if better {
            best = Some((img, o));
        }
    }
    let (img, o) = best.ok_or_else(|| lost(&format!("memfd {id}")))?;
    crate::debug!("memfd {id}: {} bytes shared by several processes", o.size);
    super::memfd::create(img, &o)
}

/// The deleted file `key` made once, from a process whose image holds its
/// contents (else the first holding it: the file was empty or a hole).
fn make_ghost(tree: &Tree, key: (u64, u64)) -> Result<OwnedFd> {
    let has_data = |img: &&crate::restore::images::Images| {
        img.files.ghosts.iter().any(|g| (g.dev, g.ino) == key)
    };
    let order = tree.live().filter(has_data).chain(tree.live());
    for img in order {
        let objs = super::ghost::objects(img);
        if let Some((path, id)) = objs.iter().find(|(_, i)| (i.dev, i.ino) == key) {
            crate::debug!(
                "deleted file `{}`: shared by several processes",
                String::from_utf8_lossy(path)
            );
            return super::ghost::create(img, path, id).map(OwnedFd::from);
        }
    }
    Err(lost(&format!("deleted file {key:?}")))
}

fn lost(what: &str) -> Error {
    Error::Unsupported(format!(
        "{what} is shared by processes of the image but none holds it; this is a bug in crest"
    ))
}

/// Every (plan, fd index) of a memfd or deleted-file fd whose description
/// id is on another fd too, grouped by id.
fn shared_descs(plans: &[&mut super::FilesPlan]) -> Vec<Vec<(usize, usize)>> {
    let mut groups: Vec<(u64, Vec<(usize, usize)>)> = Vec::new();
    for (p, plan) in plans.iter().enumerate() {
        for (i, f) in plan.fds.iter().enumerate() {
            let object = matches!(f.how, How::Memfd { .. } | How::Ghost { .. });
            let Some(id) = f.desc.filter(|_| object) else {
                continue;
            };
            match groups.iter_mut().find(|(g, _)| *g == id) {
                Some((_, users)) => users.push((p, i)),
                None => groups.push((id, vec![(p, i)])),
            }
        }
    }
    groups
        .into_iter()
        .map(|(_, users)| users)
        .filter(|users| users.len() > 1)
        .collect()
}

/// Opens every memfd or deleted-file description several fds share (a
/// dup, or inherited across fork: one offset, one set of status flags)
/// once, at `base` or above, as a new open of the object through the
/// first user's helper fd, and points those fds at it (`keep`: per plan,
/// the inherited numbers it keeps).
pub(super) fn share_descriptions(
    plans: &mut [&mut super::FilesPlan],
    base: i32,
    out: &mut super::SharedFiles,
    keep: &mut [Vec<i32>],
) -> Result<()> {
    for users in shared_descs(plans) {
        let (p0, i0) = users[0];
        let plan = &plans[p0];
        let first = &plan.fds[i0];
        let (helper, flags, pos) = match first.how {
            How::Memfd { id, flags, pos } => {
                let h = plan.memfds.iter().find(|(m, _)| *m == id).map(|m| m.1);
                (h, flags, pos)
            }
            How::Ghost { key, flags, pos } => {
                let h = plan.ghosts.iter().find(|(k, _)| *k == key).map(|g| g.1);
                (h, flags, pos)
            }
            _ => continue,
        };
        let helper = helper.ok_or_else(|| super::memfd::missing(first.fd))?;
        let slot = out.reserve(base)?;
        super::memfd::open(helper, flags, pos, first.fd, slot)?;
        crate::debug!(
            "memfd or deleted file: {} fds share one open file, fd {slot}",
            users.len()
        );
        for (p, i) in users {
            plans[p].fds[i].how = How::Inherited(slot);
            if !keep[p].contains(&slot) {
                keep[p].push(slot);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::shared_keys;

    #[test]
    fn only_keys_of_two_processes_or_more_are_shared() {
        let held = vec![vec![1u64, 2, 2], vec![3, 1], vec![3, 4], vec![]];
        assert_eq!(shared_keys(&held), vec![1, 3]);
        assert!(shared_keys(&[vec![5u64, 5]]).is_empty());
    }
}
