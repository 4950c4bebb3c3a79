//! Open files several fds share, in one process or across the tree: each
//! is opened once, by crest, before the tree forks, so every task inherits
//! it and [`super::install_files`] dups it into each fd that held it. The
//! fds then share one offset and one set of status flags, as at the dump.
//!
//! An open file description is shared when its id (the fd-desc record)
//! appears on two fds or more; a pipe when its ends are in two processes
//! or more (its queued bytes, stored once, go in once). Each task keeps the
//! inherited fds it uses above its own fds until its restorer closes
//! crest's fds, and closes the others during install.
//!
//! [`open_description`] is the one place that makes an open file from its
//! plan, for install (an fd of its own) and for crest (a shared one): a new
//! fd kind plugs in there and in [`shareable`].

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::{FilesPlan, How, PlannedPipe};
use crate::error::{Error, Result};
use crate::sys::fdtable::{SEEK_SET, lseek, open_raw};

/// Makes the open file `how` describes at number `slot` (replacing what
/// is there), for fd `fd` of the image (named in errors). Ok(false) for a
/// kind made otherwise (pipes, the terminal, epoll's targets, inherited).
pub(super) fn open_description(how: &How, fd: i32, slot: RawFd) -> Result<bool> {
    match how {
        How::Open { path, flags, pos } => {
            let what = path.to_bytes();
            let low = open_raw(path, *flags).map_err(|e| fail_path("openat", what, fd, e))?;
            super::install::to_slot(low, slot).map_err(|e| fail_path("dup3", what, fd, e))?;
            if *pos != 0 {
                lseek(slot, *pos as i64, SEEK_SET).map_err(|e| fail_path("lseek", what, fd, e))?;
            }
            Ok(true)
        }
        How::Anon(a) => {
            super::anon::create(a, fd, slot)?;
            Ok(true)
        }
        // Made by install itself, one per fd (or shared otherwise: memfds
        // and deleted files by tree_objects.rs, FIFOs by fifo::share;
        // split.rs refuses a pty pair across processes).
        How::Pipe { .. }
        | How::Tty
        | How::Inherited(_)
        | How::Unix(_)
        | How::Memfd { .. }
        | How::Ghost { .. }
        | How::Fifo { .. }
        | How::PtyMaster { .. }
        | How::PtySlave { .. } => Ok(false),
    }
}

/// Whether crest can open `how` once for several fds. Epoll is not: its
/// targets are added by fd number in each process.
fn shareable(how: &How) -> bool {
    match how {
        How::Open { .. } => true,
        How::Anon(a) => !matches!(a.what, super::anon::Anon::Epoll { .. }),
        How::Pipe { .. }
        | How::Tty
        | How::Inherited(_)
        | How::Unix(_)
        | How::Memfd { .. }
        | How::Ghost { .. }
        | How::Fifo { .. }
        | How::PtyMaster { .. }
        | How::PtySlave { .. } => false,
    }
}

fn fail_path(call: &'static str, path: &[u8], fd: RawFd, e: crate::error::Errno) -> Error {
    Error::sys(
        call,
        format!("restoring fd {fd} (`{}`)", String::from_utf8_lossy(path)),
        e,
    )
}

/// The open files crest made for the tree; closing them (drop) once the
/// root exists leaves the tasks' copies only.
#[derive(Debug, Default)]
pub struct SharedFiles {
    open: Vec<OwnedFd>,
}

impl SharedFiles {
    /// A free fd number >= `base`, held by a placeholder until something is
    /// made there.
    pub(super) fn reserve(&mut self, base: i32) -> Result<RawFd> {
        let null = open_raw(
            c"/dev/null",
            crate::sys::fd::O_RDONLY | crate::sys::fd::O_CLOEXEC,
        )
        .map_err(|e| Error::sys("open", "/dev/null, reserving an fd number", e))?;
        let null = crate::sys::fd::own(null as usize);
        let raw = crate::sys::fdtable::dup_at_least(null.as_raw_fd(), base)
            .map_err(|e| Error::sys("fcntl(F_DUPFD)", "reserving an fd number", e))?;
        self.open.push(crate::sys::fd::own(raw as usize));
        Ok(raw)
    }

    /// Closes the open files `keep` says no to.
    pub(super) fn retain(&mut self, keep: impl Fn(&OwnedFd) -> bool) {
        self.open.retain(keep);
    }

    /// How many open files crest made.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// Whether it made none.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

/// Opens every shared description and pipe of `plans` once, at `base` or
/// above (above every fd of every plan), and points the fds at them;
/// returns the open files and, per plan, the inherited numbers it keeps.
pub fn share(plans: &mut [&mut FilesPlan], base: i32) -> Result<(SharedFiles, Vec<Vec<i32>>)> {
    let mut out = SharedFiles::default();
    let mut keep = vec![Vec::new(); plans.len()];
    share_descriptions(plans, base, &mut out, &mut keep)?;
    share_pipes(plans, base, &mut out, &mut keep)?;
    super::fifo::share(plans, base, &mut out, &mut keep)?;
    super::tree_objects::share_descriptions(plans, base, &mut out, &mut keep)?;
    for p in plans.iter() {
        super::warn_half_pipes(p);
    }
    Ok((out, keep))
}

/// Every (plan, fd index) of a shareable fd whose description id is on
/// another fd too, grouped by id.
fn shared_descs(plans: &[&mut FilesPlan]) -> Vec<(u64, Vec<(usize, usize)>)> {
    let mut groups: Vec<(u64, Vec<(usize, usize)>)> = Vec::new();
    for (p, plan) in plans.iter().enumerate() {
        for (i, f) in plan.fds.iter().enumerate() {
            let Some(id) = f.desc.filter(|_| shareable(&f.how)) else {
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

fn share_descriptions(
    plans: &mut [&mut FilesPlan],
    base: i32,
    out: &mut SharedFiles,
    keep: &mut [Vec<i32>],
) -> Result<()> {
    for (id, users) in shared_descs(plans) {
        let (p0, i0) = users[0];
        let slot = out.reserve(base)?;
        let first = &plans[p0].fds[i0];
        open_description(&first.how, first.fd, slot)?;
        crate::debug!("open file {id}: {} fds share it, fd {slot}", users.len());
        for (p, i) in users {
            plans[p].fds[i].how = How::Inherited(slot);
            if !keep[p].contains(&slot) {
                keep[p].push(slot);
            }
        }
    }
    Ok(())
}

/// Pipes with ends in several plans: made once, with their bytes.
fn share_pipes(
    plans: &mut [&mut FilesPlan],
    base: i32,
    out: &mut SharedFiles,
    keep: &mut [Vec<i32>],
) -> Result<()> {
    let mut done: Vec<u64> = Vec::new();
    for p in 0..plans.len() {
        for q in 0..plans[p].pipes.len() {
            let id = plans[p].pipes[q].id;
            let holders: Vec<usize> = (0..plans.len())
                .filter(|&o| plans[o].pipes.iter().any(|x| x.id == id))
                .collect();
            // Made with the tree's unix sockets (a pipe in flight too).
            let made = plans[p].pipes[q].inherited.is_some();
            if holders.len() < 2 || done.contains(&id) || made {
                continue;
            }
            done.push(id);
            let ends = make_shared_pipe(plans, id, out, base)?;
            for o in holders {
                let Some(x) = plans[o].pipes.iter_mut().find(|x| x.id == id) else {
                    continue;
                };
                for (end, fd) in ends.iter().enumerate() {
                    if x.flags[end].is_some() && !keep[o].contains(fd) {
                        keep[o].push(*fd);
                    }
                }
                x.inherited = Some(ends);
            }
        }
    }
    Ok(())
}

/// Pipe `id` made once: the bytes one plan holds (the dump stores them
/// once), each end's flags from the first plan holding that end.
fn make_shared_pipe(
    plans: &[&mut FilesPlan],
    id: u64,
    out: &mut SharedFiles,
    base: i32,
) -> Result<[RawFd; 2]> {
    let all = || {
        plans
            .iter()
            .flat_map(|p| p.pipes.iter())
            .filter(|x| x.id == id)
    };
    let merged = PlannedPipe {
        id,
        data: all()
            .map(|x| x.data.as_slice())
            .find(|d| !d.is_empty())
            .unwrap_or_default()
            .to_vec(),
        flags: [
            all().find_map(|x| x.flags[0]),
            all().find_map(|x| x.flags[1]),
        ],
        inherited: None,
    };
    let (r, w) = (out.reserve(base)?, out.reserve(base)?);
    super::install::make_pipe(&merged, r, w)?;
    crate::debug!("pipe {id}: shared by several processes, fds {r} and {w}");
    Ok([r, w])
}
