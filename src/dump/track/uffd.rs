//! The uffd-wp tracker of one process: a userfaultfd created inside the
//! target by the parasite (a uffd always acts on the mm of the task that
//! made it), of which crest keeps the only copy (pidfd_getfd, then the
//! target's fd is closed), registered over the writable private VMAs with
//! UFFDIO_REGISTER_MODE_WP and UFFD_FEATURE_WP_ASYNC, and scanned with
//! ioctl(PAGEMAP_SCAN) on /proc/PID/pagemap:
//!
//! ```text
//!   PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
//!   category_mask = return_mask = PAGE_IS_WRITTEN
//!     -> the pages written since the last scan, write-protected again
//! ```
//!
//! Registration is idempotent for crest's own uffd and refused (EBUSY) over
//! a VMA another uffd holds (the application's own): such a VMA is dumped
//! whole every time. A VMA that differs from the parent's record is dumped
//! whole and only protected by the scan.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::{ParentOf, dumped, unchanged};
use crate::blob::proto::{CMD_FD_CLOSE, CMD_UFFD_OPEN};
use crate::error::{Errno, Error, Result};
use crate::image::vma::Vma;
use crate::infect::Parasite;
use crate::sys::process::{pidfd_getfd, pidfd_open};
use crate::sys::uffd::{self as u, PageRegion, PmScan};
use crate::{debug, info};

/// `UFFD_FEATURE_WP_UNPOPULATED`: holes are protected too.
pub const UFFD_FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
/// Regions per PAGEMAP_SCAN call.
const SCAN_BATCH: usize = 1024;

/// A new userfaultfd of `pid`, made by its parasite; the target keeps no
/// copy. The caller must still do [`api`] on it.
pub fn open_in_target(pid: u32, parasite: &mut Parasite<'_>) -> Result<OwnedFd> {
    let reply = match parasite.command(CMD_UFFD_OPEN, &[], 8) {
        Err(Error::Sys { errno, .. }) => {
            let ctx = format!(
                "pid {pid}: creating a userfaultfd inside the target for dirty tracking \
                 (CREST_TRACK=none copies all memory instead)"
            );
            return Err(Error::sys("userfaultfd", ctx, errno));
        }
        r => r?,
    };
    let fd = i32::from_ne_bytes([reply[0], reply[1], reply[2], reply[3]]);
    let taken = take(pid, fd);
    let closed = parasite.command(CMD_FD_CLOSE, &reply[..8], 0);
    let own = taken?;
    closed?;
    Ok(own)
}

fn take(pid: u32, fd: i32) -> Result<OwnedFd> {
    let ctx = || format!("taking pid {pid}'s userfaultfd (its fd {fd})");
    let pidfd = pidfd_open(pid as i32).map_err(|e| Error::sys("pidfd_open", ctx(), e))?;
    pidfd_getfd(pidfd.as_fd(), fd).map_err(|e| Error::sys("pidfd_getfd", ctx(), e))
}

/// UFFDIO_API with WP_ASYNC (and WP_UNPOPULATED where the kernel has it).
pub fn api(pid: u32, uffd: BorrowedFd<'_>) -> Result<()> {
    let want = u::UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED;
    let got = match u::uffdio_api(uffd, want) {
        Err(Errno::EINVAL) => u::uffdio_api(uffd, u::UFFD_FEATURE_WP_ASYNC),
        r => r,
    };
    let ctx = format!("pid {pid}: UFFDIO_API(UFFD_FEATURE_WP_ASYNC) on its userfaultfd");
    let (features, _) = got.map_err(|e| Error::sys("ioctl", ctx.clone(), e))?;
    if features & u::UFFD_FEATURE_WP_ASYNC == 0 {
        return Err(Error::Unsupported(format!(
            "{ctx}: the kernel lacks UFFD_FEATURE_WP_ASYNC; run with CREST_TRACK=none"
        )));
    }
    Ok(())
}

/// What one pass found: VMA ranges dumped whole, pages written.
#[derive(Debug, Default)]
pub struct Pass {
    /// Ranges whose pages all count as dirty.
    pub whole: Vec<(u64, u64)>,
    /// Pages written since the previous pass, in tracked unchanged VMAs.
    pub written: Vec<(u64, u64)>,
}

/// Registers every private VMA of `vmas` and scans it: the written pages
/// of unchanged VMAs are returned; every other dumped VMA counts whole.
///
/// No list of what was registered before is needed: PAGE_IS_WRITTEN means
/// "not write-protected", and only crest's own scans protect pages, so in
/// a VMA registered just now (new, or re-created at the same place, or
/// after the uffd was lost) every present page reads as written and is
/// stored. A VMA another uffd holds (EBUSY) is not scanned at all, so the
/// application's own tracking is left alone.
pub fn pass(
    pid: u32,
    uffd: BorrowedFd<'_>,
    vmas: &[Vma],
    parent: Option<&ParentOf>,
) -> Result<Pass> {
    let path = format!("/proc/{pid}/pagemap");
    let pagemap = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
    let mut out = Pass::default();
    for v in vmas.iter().filter(|v| dumped(v)) {
        let range = (v.start, v.end);
        let mode = u::UFFDIO_REGISTER_MODE_WP;
        if let Err(e) = u::uffdio_register(uffd, v.start, v.end - v.start, mode) {
            debug!(
                "pid {pid}: {:#x}-{:#x} not tracked (UFFDIO_REGISTER: {e}); dumped whole",
                v.start, v.end
            );
            out.whole.push(range);
            continue;
        }
        let written = scan(&pagemap, pid, range)?;
        if parent.is_some_and(|p| unchanged(v, &p.vmas)) {
            out.written.extend(written);
        } else {
            out.whole.push(range);
        }
    }
    info!(
        "pid {pid}: uffd-wp pass: {} written range(s), {} VMA(s) whole",
        out.written.len(),
        out.whole.len()
    );
    Ok(out)
}

/// PAGEMAP_SCAN with WP matching over `range`: the written pages, which
/// are write-protected again.
fn scan(pagemap: &File, pid: u32, (start, end): (u64, u64)) -> Result<Vec<(u64, u64)>> {
    let mut regions = vec![PageRegion::default(); SCAN_BATCH];
    let mut out = Vec::new();
    let mut at = start;
    while at < end {
        let q = PmScan {
            flags: u::PM_SCAN_WP_MATCHING | u::PM_SCAN_CHECK_WPASYNC,
            start: at,
            end,
            category_mask: u::PAGE_IS_WRITTEN,
            return_mask: u::PAGE_IS_WRITTEN,
        };
        let (n, walk_end) = u::pagemap_scan(pagemap.as_fd(), &q, &mut regions).map_err(|e| {
            let ctx = format!("pid {pid}: scanning {at:#x}-{end:#x} for written pages");
            Error::sys("ioctl(PAGEMAP_SCAN)", ctx, e)
        })?;
        out.extend(regions[..n].iter().map(|r| (r.start, r.end)));
        if walk_end <= at {
            break;
        }
        at = walk_end;
    }
    Ok(out)
}
