//! One crest run's tracking: for each process of the tree, the dirty map
//! its page dump uses, and, at the end, what becomes of its tracker (a
//! keeper goes on holding the uffd after a successful pre-dump; after a
//! failure, or a final dump that kills the tree, tracking ends).

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use super::keeper::{self, Session};
use super::{DirtyMap, Mechanism, Parent, dirty_map, soft_dirty, uffd};
use crate::error::Result;
use crate::image::vma::Vma;
use crate::infect::Parasite;
use crate::{info, warn};

/// A process's userfaultfd while crest runs.
#[derive(Debug)]
struct Held {
    pid: u32,
    uffd: OwnedFd,
    keeper: Option<Session>,
}

/// The tracking of one run.
#[derive(Debug)]
pub struct Tracking {
    /// The mechanism.
    pub mech: Mechanism,
    /// The previous image, if this is an incremental pass.
    pub parent: Option<Parent>,
    /// The new image's canonical path (what keepers remember).
    pub image: PathBuf,
    held: Vec<Held>,
}

impl Tracking {
    /// Tracking with `mech` into `image`, relative to `parent`.
    pub fn new(mech: Mechanism, parent: Option<Parent>, image: PathBuf) -> Tracking {
        Tracking {
            mech,
            parent,
            image,
            held: Vec::new(),
        }
    }

    /// Starts or continues tracking `pid` (seized, parasite injected):
    /// the dirty map of this pass, or None to store every page.
    pub fn start_process(
        &mut self,
        pid: u32,
        parasite: &mut Parasite<'_>,
        vmas: &[Vma],
    ) -> Result<Option<DirtyMap>> {
        let parent_of = match &self.parent {
            Some(p) => p.of(pid)?,
            None => None,
        };
        match self.mech {
            Mechanism::None => Ok(None),
            Mechanism::SoftDirty => {
                Ok(parent_of.map(|p| dirty_map(soft_dirty::whole(vmas, Some(&p)), None, p.pages)))
            }
            Mechanism::UffdWp => {
                let (fd, keeper) = match keeper::connect(pid)? {
                    Some((fd, s)) => (fd, Some(s)),
                    None => {
                        let fd = uffd::open_in_target(pid, parasite)?;
                        uffd::api(pid, fd.as_fd())?;
                        (fd, None)
                    }
                };
                let fresh = keeper.is_none();
                let matches = match (&keeper, &self.parent) {
                    (Some(k), Some(p)) => k.last_image == p.canonical.to_string_lossy(),
                    _ => false,
                };
                if let (Some(k), Some(p), false) = (&keeper, &self.parent, matches) {
                    warn!(
                        "pid {pid}: its tracker last served {}, not {}: all its memory is stored",
                        k.last_image,
                        p.canonical.display()
                    );
                }
                if self.parent.is_some() && fresh {
                    warn!(
                        "pid {pid}: no tracker from the previous image: all its memory is stored"
                    );
                }
                self.held.push(Held {
                    pid,
                    uffd: fd,
                    keeper,
                });
                let held = self.held.last().map(|h| h.uffd.as_fd());
                let Some(fd) = held else { return Ok(None) };
                let parent_of = parent_of.filter(|_| matches);
                let pass = uffd::pass(pid, fd, vmas, parent_of.as_ref())?;
                Ok(parent_of.map(|p| dirty_map(pass.whole, Some(pass.written), p.pages)))
            }
        }
    }

    /// After `pid`'s pages are stored, still frozen: soft-dirty starts over.
    pub fn after_pages(&self, pid: u32) -> Result<()> {
        match self.mech {
            Mechanism::SoftDirty => soft_dirty::reset(pid),
            _ => Ok(()),
        }
    }

    /// Ends the run: on success with `keep`, every uffd stays tracked (its
    /// keeper continues, or a new keeper takes it); otherwise tracking ends.
    pub fn finish(self, ok: bool, keep: bool) -> Result<()> {
        let mut first_err = None;
        for h in self.held {
            let r = match (ok && keep, h.keeper) {
                (true, Some(k)) => k.keep(&self.image),
                (true, None) => keeper::spawn(h.pid, h.uffd, &self.image),
                (false, Some(k)) => {
                    k.quit();
                    info!("pid {}: tracking ended", h.pid);
                    Ok(())
                }
                (false, None) => Ok(()),
            };
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}
