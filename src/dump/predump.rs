//! `crest pre-dump -t PID -D DIR [--prev-images-dir REL] [--track-mem]`:
//! the memory of the tree under PID copied while it keeps running (it is
//! frozen only while the pages are gathered), and dirty tracking started or
//! continued so that the next pre-dump or the final `crest dump
//! --prev-images-dir REL --track-mem` stores only what was written since.
//!
//! ```text
//!   seize_tree ─► per process: collect VMAs + mm ─► inject ─► track pass
//!        ─► pages (unchanged ones as parent runs) ─► soft-dirty reset ─► cure
//!        ─► mm-PID.img
//!   ─► pstree.img ─► inventory.img (kind pre-dump, parent REL)
//!   ─► resume the tree ─► keepers hold the uffds (uffd-wp)
//! ```
//!
//! A pre-dump image holds what restore needs of memory only: pstree.img,
//! mm-PID.img (the VMA list the next pass compares with), pagemap-PID.img
//! and pages-PID.img, and the inventory. Restore refuses it as a starting
//! point; a full dump names it as its parent. Shared memory objects are not
//! pre-dumped (the final dump stores them whole). As in CRIU, pre-dump
//! always tracks memory: `--track-mem` is accepted and implied.
//!
//! On failure the tree is resumed as it was and tracking ends: the uffd is
//! dropped (its registration goes with its last copy) and a keeper from an
//! earlier pass is told to exit, so the next pass starts over with a full
//! copy. `CREST_FAULT` steps: seize, collect, inject, track, pages, cure,
//! metadata.

use std::path::{Path, PathBuf};

use super::run::{Incremental, fault_point, pid_u32};
use super::task::collect_pstree;
use super::track::session::Tracking;
use super::track::{self, Parent};
use crate::error::{Error, Result};
use crate::image::ImageDir;
use crate::image::dir;
use crate::image::header::FileKind;
use crate::image::inventory::ImageKind;
use crate::image::load::{MmImage, write_file};
use crate::infect::{Member, Parasite, Release, Seized, SeizedTree, seize_tree};
use crate::sys::Pid;
use crate::{info, warn};

/// What `crest pre-dump` was asked to do.
#[derive(Debug, Clone)]
pub struct PreDumpOptions {
    /// The root of the tree.
    pub pid: Pid,
    /// The new image directory.
    pub dir: PathBuf,
    /// `--prev-images-dir`, relative to `dir`.
    pub prev_images_dir: Option<String>,
    /// The command line, recorded in the inventory.
    pub command_line: Vec<String>,
}

/// The tracking an incremental dump into `dir` asks for; None without
/// `--track-mem` (then a parent is ignored, with a warning: without
/// tracking crest cannot tell what changed).
pub fn tracking_for(dir: &Path, inc: &Incremental) -> Result<Option<Tracking>> {
    if !inc.track_mem {
        if inc.prev_images_dir.is_some() {
            warn!("--prev-images-dir without --track-mem: every page is stored, no parent is used");
        }
        return Ok(None);
    }
    let mech = track::choose()?;
    track::announce(mech);
    let parent = match &inc.prev_images_dir {
        Some(rel) => Some(Parent::open(dir, rel)?),
        None => None,
    };
    let image = dir
        .canonicalize()
        .map_err(|e| Error::io("open the image directory", dir, e))?;
    Ok(Some(Tracking::new(mech, parent, image)))
}

/// inventory.img of kind `kind`, naming `parent`.
pub fn write_inventory(
    d: &ImageDir,
    root: u32,
    options: &[String],
    kind: ImageKind,
    parent: Option<&Parent>,
) -> Result<()> {
    let mut inv = super::inventory::build_inventory(root, options)?;
    inv.kind = kind;
    inv.parent = parent.map(|p| p.rel.clone());
    write_file(d, dir::INVENTORY, FileKind::Inventory, &[inv])
}

/// Pre-dumps the tree under `opts.pid` into `opts.dir`; the tree runs on.
pub fn run(opts: &PreDumpOptions) -> Result<()> {
    let root = opts.pid;
    let d = super::run::create_image_dir(&opts.dir, "give an empty directory for each pre-dump")?;
    let inc = Incremental {
        prev_images_dir: opts.prev_images_dir.clone(),
        track_mem: true,
    };
    let Some(mut track) = tracking_for(&opts.dir, &inc)? else {
        return Err(Error::Usage("pre-dump always tracks memory".into()));
    };
    info!("pid {root}: seizing its tree for a pre-dump");
    let frozen = std::time::Instant::now();
    let tree = seize_tree(root)?;
    // Pages sent to a page server count only once it committed them.
    let gathered = predump_tree(&tree, &d, opts, &mut track)
        .and_then(|()| crate::pageserver::client::commit_active());
    match gathered {
        Ok(()) => {
            tree.release(Release::Resume)?;
            info!(
                "pid {root}: frozen for {:.3} ms (seize to resume)",
                frozen.elapsed().as_secs_f64() * 1e3
            );
            track.finish(true, true)?;
            info!("pid {root}: pre-dump complete, the tree runs on");
            Ok(())
        }
        Err(e) => {
            warn!("pid {root}: pre-dump failed, resuming the tree; tracking ends");
            if let Err(r) = track.finish(false, false) {
                warn!("pid {root}: {r}");
            }
            if let Err(r) = tree.release(Release::Resume) {
                warn!("pid {root}: {r}");
            }
            Err(e)
        }
    }
}

fn predump_tree(
    tree: &SeizedTree,
    d: &ImageDir,
    opts: &PreDumpOptions,
    track: &mut Tracking,
) -> Result<()> {
    let root = tree.root();
    let mut procs = Vec::with_capacity(tree.members().len());
    for m in tree.members() {
        procs.push(collect_pstree(pid_u32(m.pid())?)?);
    }
    fault_point(root, "seize")?;
    for m in tree.members() {
        if let Member::Seized(s) = m {
            predump_process(s, d, track)?;
        }
    }
    write_file(d, dir::PSTREE, FileKind::Pstree, &procs)?;
    fault_point(root, "metadata")?;
    let parent = track.parent.as_ref();
    write_inventory(
        d,
        pid_u32(root)?,
        &opts.command_line,
        ImageKind::PreDump,
        parent,
    )
}

/// The memory of one seized process: its pages and its mm-PID.img.
fn predump_process(seized: &Seized, d: &ImageDir, track: &mut Tracking) -> Result<()> {
    let pid = seized.pid();
    let upid = pid_u32(pid)?;
    let vmas = super::vma::collect_vmas(upid)?;
    let mm = super::mm::collect_mm(upid, &vmas)?;
    fault_point(pid, "collect")?;
    let mut parasite = Parasite::inject(seized)?;
    let inside = pages_inside(seized, &mut parasite, &vmas, d, track);
    let cured = parasite.cure();
    inside?;
    cured?;
    fault_point(pid, "cure")?;
    MmImage { mm, vmas }.write(d, upid)
}

fn pages_inside(
    seized: &Seized,
    parasite: &mut Parasite<'_>,
    vmas: &[crate::image::vma::Vma],
    d: &ImageDir,
    track: &mut Tracking,
) -> Result<()> {
    let pid = seized.pid();
    fault_point(pid, "inject")?;
    let dirty = track.start_process(pid_u32(pid)?, parasite, vmas)?;
    fault_point(pid, "track")?;
    let stats = super::pages::dump_pages_filtered(seized, parasite, vmas, d, dirty.as_ref())?;
    if let Some(m) = &dirty {
        info!(
            "pid {pid}: {} bytes stored, {} bytes of whole VMAs counted dirty",
            stats.bytes,
            m.whole_bytes()
        );
    }
    track.after_pages(pid_u32(pid)?)?;
    fault_point(pid, "pages")
}
