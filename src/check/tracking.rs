//! Probes of userfaultfd and PAGEMAP_SCAN: lazy restore's page source and
//! the soft-dirty replacement for incremental dumps.
//!
//! The uffd_wp_async probe runs the tracker exactly as pre-dump will: pages
//! are written, a scan with PM_SCAN_WP_MATCHING collects and re-protects them,
//! then only the pages written after that scan must be reported.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};

use crate::sys::Errno;
use crate::sys::mm::{self, MADV_NOHUGEPAGE, Mapping};
use crate::sys::uffd::{self as u, PageRegion, PmScan};

use super::probe::{Fail, ProbeResult, SysExt, expect};

/// A userfaultfd, falling back to a user-mode-only one where the full kind
/// needs privileges (vm.unprivileged_userfaultfd = 0); true if it fell back.
fn open_uffd() -> Result<(OwnedFd, bool), Fail> {
    match u::userfaultfd(0) {
        Ok(fd) => Ok((fd, false)),
        Err(Errno::EPERM) => {
            let fd =
                u::userfaultfd(u::UFFD_USER_MODE_ONLY).ctx("userfaultfd(UFFD_USER_MODE_ONLY)")?;
            Ok((fd, true))
        }
        Err(e) => Err(Fail::from_errno("userfaultfd", e)),
    }
}

/// An anonymous mapping of `pages` base pages that THP will not merge.
fn probe_region(pages: usize) -> Result<Mapping, Fail> {
    let map = Mapping::anonymous(pages * mm::page_size()).ctx("mmap")?;
    map.madvise(MADV_NOHUGEPAGE)
        .ctx("madvise(MADV_NOHUGEPAGE)")?;
    Ok(map)
}

/// userfaultfd + UFFDIO_API + UFFDIO_REGISTER (missing mode) offering UFFDIO_COPY.
pub fn uffd() -> ProbeResult {
    let (fd, user_only) = open_uffd()?;
    let (features, _) = u::uffdio_api(fd.as_fd(), 0).ctx("UFFDIO_API")?;
    let map = probe_region(1)?;
    let (start, len) = (map.addr() as u64, map.len() as u64);
    let ioctls = u::uffdio_register(fd.as_fd(), start, len, u::UFFDIO_REGISTER_MODE_MISSING)
        .ctx("UFFDIO_REGISTER")?;
    u::uffdio_unregister(fd.as_fd(), start, len).ctx("UFFDIO_UNREGISTER")?;
    expect(ioctls & (1 << u::_UFFDIO_COPY) != 0, || {
        format!("a registered range offers ioctls {ioctls:#x}, without UFFDIO_COPY")
    })?;
    let mode = if user_only { " (user-mode only)" } else { "" };
    Ok(format!(
        "features {features:#x}, UFFDIO_COPY on a registered range{mode}"
    ))
}

/// UFFDIO_API accepts the events lazy restore of a changing tree needs.
pub fn uffd_noncoop() -> ProbeResult {
    let (fd, _) = open_uffd()?;
    let want = u::UFFD_FEATURE_EVENT_FORK
        | u::UFFD_FEATURE_EVENT_REMAP
        | u::UFFD_FEATURE_EVENT_REMOVE
        | u::UFFD_FEATURE_EVENT_UNMAP;
    u::uffdio_api(fd.as_fd(), want).ctx("UFFDIO_API(EVENT_FORK|REMAP|REMOVE|UNMAP)")?;
    Ok("fork, remap, remove and unmap events".into())
}

fn pages(map: &Mapping, regions: &[PageRegion]) -> Vec<(usize, usize)> {
    let ps = mm::page_size() as u64;
    let base = map.addr() as u64;
    regions
        .iter()
        .map(|r| {
            (
                ((r.start - base) / ps) as usize,
                ((r.end - base) / ps) as usize,
            )
        })
        .collect()
}

fn scan(pagemap: &File, map: &Mapping, flags: u64, mask: u64) -> Result<Vec<(usize, usize)>, Fail> {
    let mut out = [PageRegion::default(); 16];
    let end = (map.addr() + map.len()) as u64;
    let q = PmScan {
        flags,
        start: map.addr() as u64,
        end,
        category_mask: mask,
        return_mask: mask,
    };
    let (n, walk_end) =
        u::pagemap_scan(pagemap.as_fd(), &q, &mut out).ctx("ioctl(PAGEMAP_SCAN)")?;
    expect(walk_end == end, || {
        format!("PAGEMAP_SCAN stopped at {walk_end:#x}, not {end:#x}")
    })?;
    Ok(pages(map, &out[..n]))
}

/// PAGEMAP_SCAN finds exactly the present pages of a region.
pub fn pagemap_scan() -> ProbeResult {
    let map = probe_region(8)?;
    let ps = mm::page_size();
    map.write_byte(ps, 1);
    map.write_byte(4 * ps, 1);
    let pagemap = File::open("/proc/self/pagemap").ctx("open(/proc/self/pagemap)")?;
    let got = scan(&pagemap, &map, 0, u::PAGE_IS_PRESENT)?;
    expect(got == [(1, 2), (4, 5)], || {
        format!("present pages {got:?}, expected [(1, 2), (4, 5)]")
    })?;
    Ok("PAGE_IS_PRESENT runs of a region with pages 1 and 4 written".into())
}

/// uffd-wp async + PAGEMAP_SCAN: the writes after a scan, and nothing else.
pub fn uffd_wp_async() -> ProbeResult {
    let (fd, _) = open_uffd()?;
    let (features, _) = u::uffdio_api(fd.as_fd(), u::UFFD_FEATURE_WP_ASYNC)
        .ctx("UFFDIO_API(UFFD_FEATURE_WP_ASYNC)")?;
    // Without WP_ASYNC a write to a protected page would block this thread
    // on a fault nobody reads: never register WP unless the kernel said yes.
    if features & u::UFFD_FEATURE_WP_ASYNC == 0 {
        return Err(Fail::missing(
            "UFFDIO_API does not list UFFD_FEATURE_WP_ASYNC".into(),
        ));
    }
    let map = probe_region(8)?;
    let ps = mm::page_size();
    for i in 0..8 {
        map.write_byte(i * ps, 1);
    }
    let (start, len) = (map.addr() as u64, map.len() as u64);
    u::uffdio_register(fd.as_fd(), start, len, u::UFFDIO_REGISTER_MODE_WP)
        .ctx("UFFDIO_REGISTER(UFFDIO_REGISTER_MODE_WP)")?;
    let pagemap = File::open("/proc/self/pagemap").ctx("open(/proc/self/pagemap)")?;
    let flags = u::PM_SCAN_WP_MATCHING | u::PM_SCAN_CHECK_WPASYNC;
    let result = (|| {
        scan(&pagemap, &map, flags, u::PAGE_IS_WRITTEN)?; // protects everything
        map.write_byte(2 * ps, 2);
        map.write_byte(5 * ps, 2);
        let _ = map.read_byte(3 * ps);
        let got = scan(&pagemap, &map, flags, u::PAGE_IS_WRITTEN)?;
        expect(got == [(2, 3), (5, 6)], || {
            format!("written pages {got:?}, expected [(2, 3), (5, 6)]")
        })?;
        let again = scan(&pagemap, &map, flags, u::PAGE_IS_WRITTEN)?;
        expect(again.is_empty(), || {
            format!("a second scan still reported {again:?}")
        })
    })();
    u::uffdio_unregister(fd.as_fd(), start, len).ctx("UFFDIO_UNREGISTER")?;
    result?;
    Ok("pages written after a scan reported exactly, and re-protected".into())
}
