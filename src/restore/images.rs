//! Loading a dump for restore: every metadata file read and cross-checked
//! before any process exists, so a damaged or foreign image is refused
//! while nothing has changed.
//!
//! Besides the per-file checks of `image::load`, restore needs the image to
//! fit this machine: same architecture and page size, FPU state this CPU
//! can load, a tree shape restore can build, complete (inventory present),
//! and the page index sound against its pages file.

use crate::dump::inventory::cpu_features;
use crate::error::{Error, Result};
use crate::image::ImageDir;
use crate::image::dir::pagemap_file;
use crate::image::header::Arch;
use crate::image::inventory::Inventory;
use crate::image::load::{self, FilesImage, MmImage, TaskImage};
use crate::image::pages::PageIndex;
use crate::image::pstree::{Process, TaskState};

/// One dumped process, everything restore needs of it.
pub struct Images {
    /// The image directory.
    pub dir: ImageDir,
    /// inventory.img.
    pub inventory: Inventory,
    /// The process (pstree.img).
    pub process: Process,
    /// task-PID.img.
    pub task: TaskImage,
    /// mm-PID.img.
    pub mm: MmImage,
    /// files-PID.img.
    pub files: FilesImage,
    /// pagemap-PID.img.
    pub pages: PageIndex,
    /// pagemap-shmem-ID.img of each shared memory object, by shmid.
    pub shmem: Vec<(u64, PageIndex)>,
    /// The parent images' page indexes of this process, nearest first
    /// (incremental dumps: `parent` runs are looked up there).
    pub parents: Vec<(ImageDir, PageIndex)>,
}

/// A dumped tree: every process of pstree.img, parents first; the live
/// ones with their images, zombies with their record only.
pub struct Tree {
    /// inventory.img.
    pub inventory: Inventory,
    /// The processes in pstree order (the root first).
    pub procs: Vec<(Process, Option<Images>)>,
    /// Each process's name at dump time (process-comm records).
    pub comms: Vec<crate::image::pstree::ProcessComm>,
    /// The temporary tasks for dead session and group leaders.
    pub helpers: Vec<super::helpers::Helper>,
}

impl Tree {
    /// The root process's images (the root is never a zombie).
    pub fn root(&self) -> &Images {
        self.procs[0]
            .1
            .as_ref()
            .expect("load refuses a zombie root")
    }

    /// Every live process's images.
    pub fn live(&self) -> impl Iterator<Item = &Images> {
        self.procs.iter().filter_map(|(_, i)| i.as_ref())
    }
}

/// Loads and checks the image in `dir`.
pub fn load(dir: &std::path::Path) -> Result<Tree> {
    let d = ImageDir::open(dir)?;
    if !d.exists(crate::image::dir::INVENTORY) {
        return Err(Error::Unsupported(format!(
            "{} has no inventory.img: the dump did not finish (crest writes it last); dump again",
            dir.display()
        )));
    }
    let inventory = load::load_inventory(&d)?;
    check_machine(&inventory)?;
    let chain = parent_dirs(dir, &inventory)?;
    let procs = load::load_pstree(&d)?;
    check_tree(&procs)?;
    let helpers = super::helpers::plan(&procs)?;
    let mut out = Vec::new();
    for process in procs {
        let images = match process.state {
            TaskState::Zombie { .. } => None,
            _ => Some(load_process(&d, &inventory, process.clone(), &chain)?),
        };
        out.push((process, images));
    }
    let mut tree = Tree {
        inventory,
        procs: out,
        comms: load::load_comms(&d)?,
        helpers,
    };
    super::files::check_kinds_sharing(&mut tree)?;
    Ok(tree)
}

/// One live process's images, checked.
fn load_process(
    d: &ImageDir,
    inventory: &Inventory,
    process: Process,
    chain: &[ImageDir],
) -> Result<Images> {
    let pid = process.pid;
    let task = TaskImage::load(d, pid)?;
    let mm = MmImage::load(d, pid)?;
    let files = FilesImage::load(d, pid)?;
    let pages = PageIndex::load(d, &pagemap_file(pid))?;
    let shmem = load_shmem(d, &mm)?;
    check_threads(&process, &task)?;
    check_fpu(&task, inventory)?;
    let parents = load_parents(&pages, pid, chain)?;
    Ok(Images {
        dir: d.clone(),
        inventory: inventory.clone(),
        process,
        task,
        mm,
        files,
        pages,
        shmem,
        parents,
    })
}

/// The most parents a chain may have (a loop of --prev-images-dir links
/// must end somewhere).
const MAX_CHAIN: usize = 256;

/// The parent image directories of an incremental dump, nearest first,
/// each complete and of this machine.
fn parent_dirs(dir: &std::path::Path, inventory: &Inventory) -> Result<Vec<ImageDir>> {
    if inventory.kind == crate::image::inventory::ImageKind::PreDump {
        return Err(Error::Unsupported(format!(
            "{} is a pre-dump (memory only); restore the final `crest dump --prev-images-dir` image",
            dir.display()
        )));
    }
    let mut out = Vec::new();
    let (mut at, mut next) = (dir.to_path_buf(), inventory.parent.clone());
    while let Some(rel) = next {
        if out.len() == MAX_CHAIN {
            return Err(Error::Unsupported(format!(
                "{} has more than {MAX_CHAIN} parent images (a loop of parents?)",
                dir.display()
            )));
        }
        at = at.join(rel);
        let d = ImageDir::open(&at)?;
        if !d.exists(crate::image::dir::INVENTORY) {
            return Err(Error::Unsupported(format!(
                "the parent image {} has no inventory.img: it is incomplete",
                at.display()
            )));
        }
        let inv = load::load_inventory(&d)?;
        check_machine(&inv)?;
        next = inv.parent;
        out.push(d);
    }
    Ok(out)
}

/// The page indexes of `pid` along the chain, as far as parent runs lead.
fn load_parents(
    pages: &PageIndex,
    pid: u32,
    chain: &[ImageDir],
) -> Result<Vec<(ImageDir, PageIndex)>> {
    let mut out: Vec<(ImageDir, PageIndex)> = Vec::new();
    let mut needs = pages.totals.parent > 0;
    for d in chain {
        if !needs {
            break;
        }
        let idx = PageIndex::load(d, &pagemap_file(pid))?;
        needs = idx.totals.parent > 0;
        out.push((d.clone(), idx));
    }
    if needs {
        return Err(Error::Unsupported(format!(
            "the pages of pid {pid} refer to a parent image the chain does not have"
        )));
    }
    Ok(out)
}

/// The page index of every shared memory object the VMAs map, once each.
fn load_shmem(d: &ImageDir, mm: &MmImage) -> Result<Vec<(u64, PageIndex)>> {
    let mut out: Vec<(u64, PageIndex)> = Vec::new();
    for v in &mm.vmas {
        if let crate::image::vma::Backing::AnonShared { shmid } = v.backing
            && crate::dump::files::memfd::memfd_name(&v.name).is_none()
            && !out.iter().any(|(id, _)| *id == shmid)
        {
            let idx = PageIndex::load(d, &crate::image::dir::shmem_pagemap_file(shmid))?;
            out.push((shmid, idx));
        }
    }
    Ok(out)
}

fn check_machine(inv: &Inventory) -> Result<()> {
    if inv.arch != Arch::host() {
        return Err(Error::Unsupported(format!(
            "the image is of a {:?} process and this is {:?}: restore it on a machine of its architecture",
            inv.arch,
            Arch::host()
        )));
    }
    let page = crate::image::dir::host_page_size();
    if inv.page_size != page {
        return Err(Error::Unsupported(format!(
            "the image was dumped with {}-byte pages and this kernel uses {page}: restore it on a kernel with its page size",
            inv.page_size
        )));
    }
    Ok(())
}

/// A live root (the shapes of sessions and groups restore can build are
/// helpers.rs's to check).
fn check_tree(procs: &[Process]) -> Result<()> {
    let root = &procs[0];
    if let TaskState::Zombie { .. } = root.state {
        return Err(Error::Unsupported(format!(
            "process {} was a zombie when dumped; there is nothing to restore",
            root.pid
        )));
    }
    Ok(())
}

fn check_threads(p: &Process, task: &TaskImage) -> Result<()> {
    let cores: Vec<u32> = task.threads.iter().map(|t| t.tid).collect();
    if cores != p.threads {
        return Err(Error::Image(crate::image::ImageError::new(
            &crate::image::dir::task_file(p.pid),
            0,
            format!(
                "its threads {cores:?} differ from pstree.img's {:?}",
                p.threads
            ),
        )));
    }
    for t in &task.threads {
        if t.arch != Arch::host() || t.gpregs.len() != crate::dump::core::gpregs_size() {
            return Err(Error::Image(crate::image::ImageError::new(
                &crate::image::dir::task_file(p.pid),
                0,
                format!("thread {} has registers of another layout", t.tid),
            )));
        }
    }
    Ok(())
}

/// On x86_64 each thread's XSAVE area names the state components it holds;
/// this CPU must support all of them, or the kernel would refuse the regset.
fn check_fpu(task: &TaskImage, inv: &Inventory) -> Result<()> {
    if !cfg!(target_arch = "x86_64") {
        return Ok(());
    }
    let here = cpu_features()?.xsave_mask;
    for t in &task.threads {
        let need = crate::dump::core::xsave_features(&t.fpregs).unwrap_or(inv.cpu.xsave_mask);
        if need & !here != 0 {
            return Err(Error::Unsupported(format!(
                "thread {} uses CPU state components {:#x} that this CPU lacks (it has {here:#x}); restore on a CPU with the same features",
                t.tid,
                need & !here
            )));
        }
    }
    Ok(())
}
