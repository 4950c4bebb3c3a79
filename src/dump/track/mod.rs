//! Dirty-page tracking for incremental dumps (`crest pre-dump`, `crest dump
//! --prev-images-dir DIR --track-mem`): which pages of a process were
//! written since the previous image, behind one interface with three
//! mechanisms, chosen by the probes of `crest check`:
//!
//! ```text
//!   soft-dirty  pagemap bit 55, reset by writing "4" to /proc/PID/clear_refs
//!               once the pages are copied (CONFIG_MEM_SOFT_DIRTY; not arm64)
//!   uffd-wp     a userfaultfd made by the target (parasite), registered with
//!               UFFDIO_REGISTER_MODE_WP and UFFD_FEATURE_WP_ASYNC on crest's
//!               copy; ioctl(PAGEMAP_SCAN, PM_SCAN_WP_MATCHING) returns the
//!               PAGE_IS_WRITTEN pages and protects them again (uffd.rs); a
//!               keeper process holds it between two crest runs (keeper.rs)
//!   none        every pass copies everything (a warning says so)
//! ```
//!
//! Whatever the mechanism, a page is stored again ([`DirtyMap::dirty`])
//! when it was written, when its VMA is new, grown, moved or otherwise
//! different from the one recorded in the parent's mm-PID.img, when the
//! tracker does not watch its VMA (an application's own userfaultfd holds
//! it), or when the parent image does not cover it. Every other populated
//! page becomes a `parent` run. A page that is no longer populated is not
//! in the new image at all, so restore leaves it zero, as it now is; that
//! includes the uffd-wp markers the tracker's scans leave on empty pages,
//! which pagemap shows as swapped (dump::pages::walk tells them apart).

pub mod keeper;
pub mod session;
pub mod soft_dirty;
pub mod uffd;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::image::ImageDir;
use crate::image::dir::pagemap_file;
use crate::image::load::MmImage;
use crate::image::pages::PageIndex;
use crate::image::vma::{Backing, Vma};
use crate::{info, warn};

/// How dirty pages are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// clear_refs "4" + pagemap bit 55.
    SoftDirty,
    /// userfaultfd WP_ASYNC + PAGEMAP_SCAN.
    UffdWp,
    /// Nothing: full copies.
    None,
}

impl Mechanism {
    /// The name used in logs, docs and `CREST_TRACK`.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::SoftDirty => "soft-dirty",
            Mechanism::UffdWp => "uffd-wp",
            Mechanism::None => "none",
        }
    }
}

/// The mechanism this kernel offers: soft-dirty first (it leaves nothing in
/// the target), then uffd-wp, else none. `CREST_TRACK=soft-dirty|uffd-wp|none`
/// forces one (tests, benchmarks); a forced mechanism the kernel lacks fails
/// at its first use.
pub fn choose() -> Result<Mechanism> {
    let forced = match std::env::var_os("CREST_TRACK") {
        None => None,
        Some(v) => Some(match v.to_str() {
            Some("soft-dirty") => Mechanism::SoftDirty,
            Some("uffd-wp") => Mechanism::UffdWp,
            Some("none") => return Ok(Mechanism::None),
            _ => {
                return Err(Error::Usage(format!(
                    "CREST_TRACK={v:?} is not a tracker; use soft-dirty, uffd-wp or none"
                )));
            }
        }),
    };
    let available = available();
    match forced {
        None => Ok(available.first().copied().unwrap_or(Mechanism::None)),
        // A soft-dirty bit that never gets set would silently lose writes:
        // a forced mechanism must pass its probe.
        Some(m) if available.contains(&m) => Ok(m),
        Some(m) => Err(Error::Unsupported(format!(
            "CREST_TRACK={} asks for a tracker this kernel lacks (`crest check --all` shows why)",
            m.name()
        ))),
    }
}

/// The mechanisms whose probes pass here, soft-dirty first (it leaves
/// nothing in the target), then uffd-wp.
pub fn available() -> Vec<Mechanism> {
    let mut out = Vec::new();
    for (name, m) in [
        ("mem_dirty_track", Mechanism::SoftDirty),
        ("uffd_wp_async", Mechanism::UffdWp),
    ] {
        let f = crate::check::FEATURES.iter().find(|f| f.name == name);
        if f.is_some_and(|f| (f.probe)().is_ok()) {
            out.push(m);
        }
    }
    out
}

/// What the previous image says about one process.
#[derive(Debug, Clone)]
pub struct ParentOf {
    /// The parent's VMAs of the process (its mm-PID.img).
    pub vmas: Vec<Vma>,
    /// The parent's page index of the process.
    pub pages: PageIndex,
}

/// The previous image of an incremental dump.
#[derive(Debug, Clone)]
pub struct Parent {
    /// As given (relative to the new image directory), for the inventory.
    pub rel: String,
    /// The directory.
    pub dir: ImageDir,
    /// Its canonical path: what a keeper remembers as its last image.
    pub canonical: PathBuf,
}

impl Parent {
    /// Opens `rel` relative to `new_dir`; it must be a complete image.
    pub fn open(new_dir: &Path, rel: &str) -> Result<Parent> {
        let path = new_dir.join(rel);
        let canonical = path
            .canonicalize()
            .map_err(|e| Error::io("open the previous image", &path, e))?;
        let dir = ImageDir::open(&canonical)?;
        if !dir.exists(crate::image::dir::INVENTORY) {
            return Err(Error::Unsupported(format!(
                "the previous image {} has no inventory.img (its dump did not finish); \
                 give a complete image to --prev-images-dir",
                path.display()
            )));
        }
        Ok(Parent {
            rel: rel.to_string(),
            dir,
            canonical,
        })
    }

    /// The process's VMAs and page index in this image, if it has them (a
    /// process new to the tree has none: it is dumped whole).
    pub fn of(&self, pid: u32) -> Result<Option<ParentOf>> {
        if !self.dir.exists(&pagemap_file(pid)) {
            return Ok(None);
        }
        let mm = MmImage::load(&self.dir, pid)?;
        let pages = PageIndex::load(&self.dir, &pagemap_file(pid))?;
        Ok(Some(ParentOf {
            vmas: mm.vmas,
            pages,
        }))
    }
}

/// Which pages of one process must be stored again.
#[derive(Debug)]
pub struct DirtyMap {
    /// Address ranges whose pages all count as dirty, sorted.
    whole: Vec<(u64, u64)>,
    /// uffd-wp: the written ranges, sorted; soft-dirty: None (bit 55 of
    /// each page's pagemap entry tells).
    written: Option<Vec<(u64, u64)>>,
    /// The parent's index: a page it lacks is stored.
    parent: PageIndex,
}

/// Whether `x` is inside one of the sorted, disjoint `ranges`, and where
/// that answer may change next.
fn at(ranges: &[(u64, u64)], x: u64) -> (bool, u64) {
    let i = ranges.partition_point(|&(s, _)| s <= x);
    match i.checked_sub(1).map(|j| ranges[j]) {
        Some((_, e)) if x < e => (true, e),
        _ => (false, ranges.get(i).map_or(u64::MAX, |r| r.0)),
    }
}

impl DirtyMap {
    /// Whether the populated page at `vaddr` must be stored; otherwise the
    /// parent image has it as it is. `soft_dirty`: the page's soft-dirty
    /// bit (only looked at by the soft-dirty tracker).
    pub fn dirty(&self, vaddr: u64, soft_dirty: bool) -> bool {
        let mut out = false;
        let _ = self.split(vaddr, vaddr + 1, soft_dirty, &mut |_, _, d| {
            out = d;
            Ok(())
        });
        out
    }

    /// Whether the soft-dirty bits decide (no list of written pages).
    pub fn soft_dirty(&self) -> bool {
        self.written.is_none()
    }

    /// Splits the populated pages [start, end), whose soft-dirty bits are
    /// all `soft_dirty`, into maximal runs that must be stored (true) or
    /// are the parent's (false), handed to `f` in address order. Each run
    /// costs a few binary searches, not one per page.
    pub fn split(
        &self,
        start: u64,
        end: u64,
        soft_dirty: bool,
        f: &mut dyn FnMut(u64, u64, bool) -> Result<()>,
    ) -> Result<()> {
        let page = self.parent.page_size.max(1);
        let parent = |x: u64| {
            let i = self.parent.runs.partition_point(|r| r.vaddr <= x);
            let run = i.checked_sub(1).map(|j| &self.parent.runs[j]);
            match run.map(|r| (r.vaddr, r.vaddr + r.nr_pages * page)) {
                Some((_, e)) if x < e => (true, e),
                _ => (false, self.parent.runs.get(i).map_or(u64::MAX, |r| r.vaddr)),
            }
        };
        let mut open: Option<(u64, bool)> = None;
        let mut x = start;
        while x < end {
            let (whole, w_next) = at(&self.whole, x);
            let (written, wr_next) = match &self.written {
                Some(w) => at(w, x),
                None => (soft_dirty, u64::MAX),
            };
            let (known, p_next) = parent(x);
            let dirty = whole || written || !known;
            let next = w_next.min(wr_next).min(p_next).min(end).max(x + 1);
            open = match open {
                Some((s, d)) if d == dirty => Some((s, d)),
                Some((s, d)) => {
                    f(s, x, d)?;
                    Some((x, dirty))
                }
                None => Some((x, dirty)),
            };
            x = next;
        }
        match open {
            Some((s, d)) => f(s, end, d),
            None => Ok(()),
        }
    }

    /// Pages counted dirty as whole VMAs, for the log.
    pub fn whole_bytes(&self) -> u64 {
        self.whole.iter().map(|(s, e)| e - s).sum()
    }
}

/// MAP_GROWSDOWN comes from smaps' VmFlags, which a dump reads while (or
/// after) the pages are dumped: the VMAs it compares come from maps.
const GROWSDOWN: u32 = libc::MAP_GROWSDOWN as u32;

/// Whether `v` is the same mapping as one of the parent's: same range,
/// protection, flags and backing. Anything else (new, grown, shrunk,
/// moved, re-protected) is dumped whole. MAP_GROWSDOWN is not compared
/// (see [`GROWSDOWN`]): the range and backing cannot stay the same
/// without the mapping staying the same kind, and a mapping made again
/// in the same place is caught by the tracker itself (a new VMA is
/// soft-dirty, or not yet write-protected).
pub fn unchanged(v: &Vma, parent: &[Vma]) -> bool {
    let i = parent.partition_point(|p| p.start < v.start);
    parent.get(i).is_some_and(|p| {
        p.start == v.start
            && p.end == v.end
            && p.pgoff == v.pgoff
            && p.prot == v.prot
            && p.flags & !GROWSDOWN == v.flags & !GROWSDOWN
            && p.backing == v.backing
    })
}

/// The VMAs whose pages a dump stores (as dump::pages keeps them).
pub fn dumped(v: &Vma) -> bool {
    matches!(
        v.backing,
        Backing::AnonPrivate | Backing::FilePrivate { .. }
    )
}

/// Builds the map from the VMAs counted whole and the written ranges.
pub fn dirty_map(
    mut whole: Vec<(u64, u64)>,
    written: Option<Vec<(u64, u64)>>,
    parent: PageIndex,
) -> DirtyMap {
    whole.sort_unstable();
    let written = written.map(|mut w| {
        w.sort_unstable();
        w
    });
    DirtyMap {
        whole,
        written,
        parent,
    }
}

/// Says once per run which mechanism tracks memory.
pub fn announce(m: Mechanism) {
    match m {
        Mechanism::None => warn!(
            "this kernel has neither soft-dirty nor userfaultfd WP_ASYNC with PAGEMAP_SCAN: \
             every pre-dump and the final dump copy all memory"
        ),
        m => info!("tracking written pages with {}", m.name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::pagemap::{PageRun, PagemapHead, RunKind, Space};
    use crate::image::pages::PageTotals;

    fn parent_index(runs: &[(u64, u64)]) -> PageIndex {
        PageIndex {
            head: PagemapHead {
                space: Space::Process(1),
                pages_file: "p".into(),
            },
            page_size: 4096,
            runs: runs
                .iter()
                .map(|&(vaddr, nr_pages)| PageRun {
                    vaddr,
                    nr_pages,
                    kind: RunKind::Present,
                    pages_off: 0,
                    crc: None,
                })
                .collect(),
            data_bytes: 0,
            totals: PageTotals::default(),
        }
    }

    fn vma(start: u64, end: u64, prot: u32) -> Vma {
        Vma {
            start,
            end,
            pgoff: 0,
            prot,
            flags: 0x22,
            advice: 0,
            backing: Backing::AnonPrivate,
            name: Vec::new(),
        }
    }

    #[test]
    fn dirty_pages_are_written_whole_or_unknown_to_the_parent() {
        const P: u64 = 4096;
        let parent = parent_index(&[(0, 16)]);
        let uffd = dirty_map(
            vec![(8 * P, 10 * P)],
            Some(vec![(2 * P, 3 * P)]),
            parent.clone(),
        );
        let dirty: Vec<u64> = (0..20).filter(|&p| uffd.dirty(p * P, false)).collect();
        // written 2, whole 8-9, beyond the parent 16-19.
        assert_eq!(dirty, [2, 8, 9, 16, 17, 18, 19]);
        let sd = dirty_map(Vec::new(), None, parent);
        assert!(sd.dirty(P, true) && !sd.dirty(P, false) && sd.dirty(16 * P, false));
    }

    /// The runs `split` hands on, as (first page, pages, dirty).
    fn runs(m: &DirtyMap, start: u64, end: u64, soft: bool) -> Vec<(u64, u64, bool)> {
        let mut out = Vec::new();
        m.split(start * 4096, end * 4096, soft, &mut |a, b, d| {
            out.push((a / 4096, (b - a) / 4096, d));
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn split_gives_maximal_runs_that_agree_with_each_page() {
        const P: u64 = 4096;
        // Parent pages 0-9 and 12-29 (two runs touching at 20), holes 10-11.
        let parent = parent_index(&[(0, 10), (12 * P, 8), (20 * P, 10)]);
        let written = vec![(3 * P, 5 * P), (5 * P, 6 * P), (25 * P, 26 * P)];
        let m = dirty_map(vec![(14 * P, 16 * P)], Some(written), parent.clone());
        let got = runs(&m, 0, 32, false);
        assert_eq!(
            got,
            [
                (0, 3, false),
                (3, 3, true),
                (6, 4, false),
                (10, 2, true),
                (12, 2, false),
                (14, 2, true),
                (16, 9, false),
                (25, 1, true),
                (26, 4, false),
                (30, 2, true),
            ]
        );
        // Every page of every sub-range agrees with the page-wise answer.
        for (s, e) in [(0, 32), (4, 13), (15, 27), (29, 30)] {
            let mut pages = Vec::new();
            for (first, n, d) in runs(&m, s, e, false) {
                pages.extend((first..first + n).map(|p| (p, d)));
            }
            let want: Vec<(u64, bool)> = (s..e).map(|p| (p, m.dirty(p * P, false))).collect();
            assert_eq!(pages, want, "pages {s}..{e}");
        }
        let sd = dirty_map(Vec::new(), None, parent);
        assert_eq!(runs(&sd, 8, 13, true), [(8, 5, true)]);
        assert_eq!(
            runs(&sd, 8, 13, false),
            [(8, 2, false), (10, 2, true), (12, 1, false)]
        );
    }

    #[test]
    fn a_vma_is_unchanged_only_if_it_is_the_same_mapping() {
        let parent = [vma(0x1000, 0x5000, 3), vma(0x8000, 0x9000, 3)];
        assert!(unchanged(&vma(0x1000, 0x5000, 3), &parent));
        assert!(!unchanged(&vma(0x1000, 0x6000, 3), &parent), "grown");
        assert!(!unchanged(&vma(0x1000, 0x4000, 3), &parent), "shrunk");
        assert!(!unchanged(&vma(0x8000, 0x9000, 1), &parent), "re-protected");
        let mut stack = vma(0x8000, 0x9000, 3);
        stack.flags |= libc::MAP_GROWSDOWN as u32;
        assert!(
            unchanged(&stack, &parent),
            "MAP_GROWSDOWN is not known from maps"
        );
        assert!(!unchanged(&vma(0xa000, 0xb000, 3), &parent), "new");
        let mut file = vma(0x8000, 0x9000, 3);
        file.backing = Backing::FilePrivate {
            path: b"/x".to_vec(),
            id: Default::default(),
        };
        assert!(!unchanged(&file, &parent), "other backing");
    }
}
