//! The page walk of a dump: which pages of a VMA hold data, as spans of
//! neighbouring pages that are alike (data or the zero page, soft-dirty or
//! not), from the target's `/proc/PID/pagemap`.
//!
//! ```text
//!   ioctl(PAGEMAP_SCAN), any of PRESENT|SWAPPED      (Linux 6.7+)
//!     -> regions: [start, end) + PRESENT SWAPPED PFNZERO HUGE FILE SOFT_DIRTY
//!        SWAPPED                 -> read pagemap for them, 8 bytes a page
//!        HUGE and not PFNZERO    -> one pagemap entry per huge page
//!        anything else           -> a span as it is
//!   read(/proc/PID/pagemap), 8 bytes a page           (older kernels)
//! ```
//!
//! The ioctl walks the page tables in the kernel and returns a region per
//! run of alike pages: a populated 1 GiB VMA is one region instead of 2 MiB
//! of pagemap entries to read and decode (tens of ms for each GiB, most of
//! an incremental dump's freeze before this walk). Two things its
//! categories cannot tell are read from pagemap for those pages only:
//! whether a swapped page is a real swap entry or a pte marker (a uffd-wp
//! marker, which the tracker's scans leave on empty pages of its page
//! tables, holds no page and reads as swapped), and whether a huge page is
//! the huge zero page (PFNZERO is the small zero page only). A kernel
//! without the ioctl, or without one of these categories (EINVAL, e.g.
//! SOFT_DIRTY before 6.8), gets the pagemap read for everything.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;

use super::zero::ZeroPfns;
use crate::debug;
use crate::error::{Errno, Error, Result};
use crate::proc::pagemap::{entries, offset_of};
use crate::sys::uffd::{self as u, PageRegion, PmScan};

/// Pagemap entries read per pread (64 KiB of buffer, 32 MiB of address space).
const PAGEMAP_BATCH: usize = 8192;
/// Regions per PAGEMAP_SCAN call.
const SCAN_BATCH: usize = 512;

/// Neighbouring pages that hold data alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// First address.
    pub start: u64,
    /// End (exclusive).
    pub end: u64,
    /// Mapped to a zero page: read, never written.
    pub zero: bool,
    /// Soft-dirty (only looked at when the walker was asked to).
    pub soft_dirty: bool,
}

/// The walk over one process's pagemap.
pub struct Walker {
    pid: u32,
    pagemap: File,
    /// PAGEMAP_SCAN works here (until a call says otherwise).
    scan: bool,
    soft_dirty: bool,
    page_size: u64,
    zero: Option<ZeroPfns>,
    buf: Vec<u8>,
    regions: Vec<PageRegion>,
}

/// The callback that takes each span, in address order.
pub type Sink<'f> = &'f mut dyn FnMut(Span) -> Result<()>;

impl Walker {
    /// Opens `pid`'s pagemap; `soft_dirty`: report soft-dirty bits.
    pub fn open(pid: u32, soft_dirty: bool) -> Result<Walker> {
        let path = format!("/proc/{pid}/pagemap");
        let pagemap = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
        let scan = std::env::var_os("CREST_PAGEMAP_SCAN").is_none_or(|v| v != "0");
        Ok(Walker {
            pid,
            pagemap,
            scan,
            soft_dirty,
            page_size: crate::sys::mm::page_size() as u64,
            zero: None,
            buf: Vec::new(),
            regions: Vec::new(),
        })
    }

    /// Whether the walks use PAGEMAP_SCAN (so far).
    pub fn scans(&self) -> bool {
        self.scan
    }

    /// Every span of populated pages in [start, end); `anon_only` leaves
    /// out page-cache pages (a private file mapping's own pages only).
    pub fn walk(&mut self, start: u64, end: u64, anon_only: bool, f: Sink<'_>) -> Result<()> {
        if self.scan {
            // Only a refusal before any span was handed on may fall back:
            // the read would hand the same pages on again.
            let mut emitted = false;
            let scanned = self.walk_scan(start, end, anon_only, &mut |sp| {
                emitted = true;
                f(sp)
            });
            match scanned {
                Err(Error::Sys { errno, .. }) if !emitted && self.first_scan_refused(errno) => {}
                r => return r,
            }
        }
        self.read_range(start, end, anon_only, f)
    }

    /// Whether a failed PAGEMAP_SCAN means the kernel lacks it (or a
    /// category): then pagemap is read from now on.
    fn first_scan_refused(&mut self, errno: Errno) -> bool {
        let missing = matches!(errno, Errno::ENOTTY | Errno::EINVAL | Errno::EOPNOTSUPP);
        if missing {
            debug!(
                "pid {}: PAGEMAP_SCAN refused ({errno}): reading pagemap",
                self.pid
            );
            self.scan = false;
        }
        missing
    }

    fn walk_scan(&mut self, start: u64, end: u64, anon_only: bool, f: Sink<'_>) -> Result<()> {
        let mut ret =
            u::PAGE_IS_PRESENT | u::PAGE_IS_SWAPPED | u::PAGE_IS_PFNZERO | u::PAGE_IS_HUGE;
        if anon_only {
            ret |= u::PAGE_IS_FILE;
        }
        if self.soft_dirty {
            ret |= u::PAGE_IS_SOFT_DIRTY;
        }
        let mut regions = std::mem::take(&mut self.regions);
        regions.resize(SCAN_BATCH, PageRegion::default());
        let mut at = start;
        let mut result = Ok(());
        while at < end && result.is_ok() {
            let q = PmScan {
                flags: 0,
                start: at,
                end,
                category_mask: 0,
                return_mask: ret,
            };
            let anyof = u::PAGE_IS_PRESENT | u::PAGE_IS_SWAPPED;
            let (n, walk_end) =
                u::pagemap_scan_anyof(self.pagemap.as_fd(), &q, anyof, &mut regions).map_err(
                    |e| {
                        let ctx = format!("pid {}: scanning {at:#x}-{end:#x} for pages", self.pid);
                        Error::sys("ioctl(PAGEMAP_SCAN)", ctx, e)
                    },
                )?;
            result = regions[..n]
                .iter()
                .try_for_each(|&r| self.region(r, anon_only, f));
            if walk_end <= at {
                break;
            }
            at = walk_end;
        }
        self.regions = regions;
        result
    }

    /// One region of the scan as spans.
    fn region(&mut self, r: PageRegion, anon_only: bool, f: Sink<'_>) -> Result<()> {
        let c = r.categories;
        if anon_only && c & u::PAGE_IS_FILE != 0 {
            return Ok(());
        }
        if c & u::PAGE_IS_SWAPPED != 0 {
            return self.read_range(r.start, r.end, anon_only, f);
        }
        let soft_dirty = c & u::PAGE_IS_SOFT_DIRTY != 0;
        if c & u::PAGE_IS_HUGE != 0 && c & u::PAGE_IS_PFNZERO == 0 {
            return self.huge(r.start, r.end, soft_dirty, f);
        }
        f(Span {
            start: r.start,
            end: r.end,
            zero: c & u::PAGE_IS_PFNZERO != 0,
            soft_dirty,
        })
    }

    /// Present huge pages: one pagemap entry per huge page tells whether
    /// it is the huge zero page.
    fn huge(&mut self, start: u64, end: u64, soft_dirty: bool, f: Sink<'_>) -> Result<()> {
        let pmd = self.page_size * (self.page_size / 8);
        let zero = *self.zero.get_or_insert_with(ZeroPfns::learn);
        let mut at = start;
        while at < end {
            let next = ((at / pmd + 1) * pmd).min(end);
            let mut word = [0u8; 8];
            self.read_at(&mut word, at)?;
            let e = entries(&word).next().unwrap_or_default();
            let zero = e.pfn().is_some_and(|p| zero.is_zero(p));
            f(Span {
                start: at,
                end: next,
                zero,
                soft_dirty,
            })?;
            at = next;
        }
        Ok(())
    }

    fn read_at(&self, bytes: &mut [u8], vaddr: u64) -> Result<()> {
        let off = offset_of(vaddr, self.page_size);
        self.pagemap.read_exact_at(bytes, off).map_err(|e| {
            Error::io(
                "read",
                format!("/proc/{}/pagemap at {vaddr:#x}", self.pid),
                e,
            )
        })
    }

    /// The pagemap read: 8 bytes a page, in batches; neighbouring alike
    /// pages are merged across batches.
    fn read_range(&mut self, start: u64, end: u64, anon_only: bool, f: Sink<'_>) -> Result<()> {
        let zero = *self.zero.get_or_insert_with(ZeroPfns::learn);
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(PAGEMAP_BATCH * 8, 0);
        let mut open: Option<Span> = None;
        let mut vaddr = start;
        let mut result = Ok(());
        while vaddr < end && result.is_ok() {
            let n = ((end - vaddr) / self.page_size).min(PAGEMAP_BATCH as u64) as usize;
            let bytes = &mut buf[..n * 8];
            result = self.read_at(bytes, vaddr).and_then(|()| {
                for (i, e) in entries(bytes).enumerate() {
                    let at = vaddr + i as u64 * self.page_size;
                    let keep = e.populated() && !(anon_only && e.file_or_shared());
                    let page = keep.then(|| Span {
                        start: at,
                        end: at + self.page_size,
                        zero: e.pfn().is_some_and(|p| zero.is_zero(p)),
                        soft_dirty: self.soft_dirty && e.soft_dirty(),
                    });
                    open = merge(open, page, f)?;
                }
                Ok(())
            });
            vaddr += n as u64 * self.page_size;
        }
        self.buf = buf;
        result?;
        open.map_or(Ok(()), f)
    }
}

/// Extends `open` with `page` when they are alike neighbours; otherwise
/// hands `open` on and starts over with `page`.
fn merge(open: Option<Span>, page: Option<Span>, f: Sink<'_>) -> Result<Option<Span>> {
    match (open, page) {
        (Some(o), Some(p))
            if o.end == p.start && (o.zero, o.soft_dirty) == (p.zero, p.soft_dirty) =>
        {
            Ok(Some(Span { end: p.end, ..o }))
        }
        (o, p) => {
            if let Some(o) = o {
                f(o)?;
            }
            Ok(p)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::mm::{Mapping, page_size};

    const MADV_DONTNEED: u32 = 4;

    /// Whether this kernel has PAGEMAP_SCAN, asked directly.
    fn kernel_scans() -> bool {
        let pagemap = File::open("/proc/self/pagemap").unwrap();
        let q = PmScan {
            flags: 0,
            start: 0,
            end: 0,
            category_mask: 0,
            return_mask: u::PAGE_IS_PRESENT,
        };
        match u::pagemap_scan(pagemap.as_fd(), &q, &mut []) {
            Ok(_) => true,
            Err(Errno::ENOTTY | Errno::EINVAL) => false,
            Err(e) => panic!("PAGEMAP_SCAN: {e}"),
        }
    }

    /// The spans of `m` as (first page, end page, zero), with PAGEMAP_SCAN
    /// where the kernel has it (`scan`) or the pagemap read.
    fn spans(m: &Mapping, scan: bool) -> Vec<(usize, usize, bool)> {
        let mut w = Walker::open(std::process::id(), false).unwrap();
        w.scan = scan;
        let (base, ps) = (m.addr() as u64, page_size() as u64);
        let mut out: Vec<(usize, usize, bool)> = Vec::new();
        let end = base + m.len() as u64;
        w.walk(base, end, false, &mut |s| {
            let page = |a: u64| ((a - base) / ps) as usize;
            // Both walks may cut where they like: compare merged spans.
            match out.last_mut() {
                Some(l) if l.1 == page(s.start) && l.2 == s.zero => l.1 = page(s.end),
                _ => out.push((page(s.start), page(s.end), s.zero)),
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(
            w.scans(),
            scan && kernel_scans(),
            "PAGEMAP_SCAN used where it works"
        );
        out
    }

    #[test]
    fn scan_and_pagemap_read_find_the_same_pages() {
        let ps = page_size();
        let m = Mapping::anonymous(64 * ps).unwrap();
        for p in (0..10).chain(20..30) {
            m.write_byte(p * ps, 1);
        }
        let _ = m.read_byte(40 * ps);
        m.madvise_pages(5, 1, MADV_DONTNEED).unwrap();
        let want = [
            (0, 5, false),
            (6, 10, false),
            (20, 30, false),
            (40, 41, true),
        ];
        assert_eq!(spans(&m, true), want);
        assert_eq!(spans(&m, false), want);
    }

    /// A swap file of crest's test, on while it lives.
    struct Swap(std::path::PathBuf);

    impl Swap {
        fn on() -> Swap {
            let path = std::env::temp_dir().join(format!("crest-walk-{}.swap", std::process::id()));
            // Written out: swapon refuses a file with holes.
            std::fs::write(&path, vec![0u8; 16 << 20]).unwrap();
            let swap = Swap(path);
            let run = |cmd: &str, args: &[&std::ffi::OsStr]| {
                let st = std::process::Command::new(cmd).args(args).output().unwrap();
                assert!(st.status.success(), "{cmd}: {st:?}");
            };
            let p = swap.0.as_os_str();
            run("chmod", &["600".as_ref(), p]);
            run("mkswap", &[p]);
            run("swapon", &[p]);
            swap
        }
    }

    impl Drop for Swap {
        fn drop(&mut self) {
            let _ = std::process::Command::new("swapoff").arg(&self.0).status();
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// A page in swap is data like a page in memory (only a pte marker,
    /// which reads as swapped too, is not). Needs a file system that can
    /// hold a swap file: the qemu lanes boot from an initramfs.
    #[test]
    fn swapped_pages_are_data() {
        if std::env::var_os("CREST_VM_LANE").is_some() {
            eprintln!("no swap file on an initramfs: not run in a qemu lane");
            return;
        }
        const MADV_PAGEOUT: u32 = 21;
        let ps = page_size();
        let m = Mapping::anonymous(16 * ps).unwrap();
        for p in 0..16 {
            m.write_byte(p * ps, p as u8 + 1);
        }
        let swap = Swap::on();
        m.madvise_pages(2, 6, MADV_PAGEOUT).unwrap();
        let swapped = (2..8).filter(|&p| entry(&m, p).swapped()).count();
        let got = (spans(&m, true), spans(&m, false));
        let marker = (0..16).any(|p| entry(&m, p).pte_marker());
        let bytes: Vec<u8> = (0..16).map(|p| m.read_byte(p * ps)).collect();
        drop(swap);
        assert!(swapped > 0, "MADV_PAGEOUT put no page in swap");
        assert!(!marker, "a swapped page taken for a pte marker");
        assert_eq!(got, (vec![(0, 16, false)], vec![(0, 16, false)]));
        assert_eq!(bytes, (1..=16).collect::<Vec<u8>>());
    }

    /// The raw pagemap entry of page `page` of `m`.
    fn entry(m: &Mapping, page: usize) -> crate::proc::pagemap::PageEntry {
        let f = File::open("/proc/self/pagemap").unwrap();
        let mut word = [0u8; 8];
        let at = (m.addr() + page * page_size()) as u64;
        f.read_exact_at(&mut word, offset_of(at, page_size() as u64))
            .unwrap();
        entries(&word).next().unwrap()
    }

    /// What the uffd-wp tracker's scans leave behind: a page dropped after
    /// a scan, and the empty pages of a populated page table, become
    /// uffd-wp pte markers that read as swapped; neither walk counts them.
    #[test]
    fn uffd_wp_markers_of_dropped_pages_are_not_pages() {
        let ps = page_size();
        let m = Mapping::anonymous(16 * ps).unwrap();
        for p in 0..8 {
            m.write_byte(p * ps, 1);
        }
        let uffd = u::userfaultfd(0).unwrap();
        let (features, _) =
            u::uffdio_api(uffd.as_fd(), u::UFFD_FEATURE_WP_ASYNC).unwrap_or_else(|e| {
                // Linux 6.1 (a qemu lane): no WP_ASYNC, so no tracker leaves markers.
                assert!(!kernel_scans(), "PAGEMAP_SCAN without WP_ASYNC: {e}");
                (0, 0)
            });
        if features & u::UFFD_FEATURE_WP_ASYNC == 0 {
            eprintln!("no UFFD_FEATURE_WP_ASYNC here: no uffd-wp markers to test");
            return;
        }
        let (start, len) = (m.addr() as u64, m.len() as u64);
        u::uffdio_register(uffd.as_fd(), start, len, u::UFFDIO_REGISTER_MODE_WP).unwrap();
        let pagemap = File::open("/proc/self/pagemap").unwrap();
        let scan = || {
            let mut out = [PageRegion::default(); 8];
            let q = PmScan {
                flags: u::PM_SCAN_WP_MATCHING | u::PM_SCAN_CHECK_WPASYNC,
                start,
                end: start + len,
                category_mask: u::PAGE_IS_WRITTEN,
                return_mask: u::PAGE_IS_WRITTEN,
            };
            u::pagemap_scan(pagemap.as_fd(), &q, &mut out).unwrap();
        };
        scan();
        m.madvise_pages(3, 1, MADV_DONTNEED).unwrap();
        scan();
        let (dropped, empty) = (entry(&m, 3), entry(&m, 12));
        let got = (spans(&m, true), spans(&m, false));
        u::uffdio_unregister(uffd.as_fd(), start, len).unwrap();
        assert!(dropped.swapped() && dropped.pte_marker(), "{dropped:x?}");
        assert!(empty.swapped() && empty.pte_marker(), "{empty:x?}");
        assert!(!entry(&m, 2).pte_marker());
        let want = vec![(0, 3, false), (4, 8, false)];
        assert_eq!(got, (want.clone(), want));
    }
}
