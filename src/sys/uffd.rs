//! userfaultfd(2) and its ioctls, and ioctl(PAGEMAP_SCAN) on /proc/PID/pagemap.
//!
//! Together they are crest's dirty-page tracker where soft-dirty is absent:
//! a uffd registered with UFFDIO_REGISTER_MODE_WP and UFFD_FEATURE_WP_ASYNC
//! makes the kernel clear a page's write-protect bit on the first write
//! without a fault message, and PAGEMAP_SCAN with PM_SCAN_WP_MATCHING reports
//! the pages written since the last scan and protects them again at once.
//! Lazy restore (UFFDIO_COPY on missing faults) uses the same descriptor type.
//!
//! ```text
//! struct pm_scan_arg (96 bytes)             struct page_region (24 bytes)
//!  0 size      8 flags    16 start           0 start
//! 24 end      32 walk_end 40 vec             8 end
//! 48 vec_len  56 max_pages                  16 categories
//! 64 category_inverted  72 category_mask
//! 80 category_anyof_mask 88 return_mask
//! ```

use std::os::fd::{BorrowedFd, OwnedFd};

use syscalls::{Sysno, syscall};

use super::SysResult;
use super::fd::{ioctl_ptr, own};

/// `UFFD_API`.
pub const UFFD_API: u64 = 0xAA;
/// `UFFD_USER_MODE_ONLY`: a uffd that handles user-mode faults only
/// (allowed to unprivileged users).
pub const UFFD_USER_MODE_ONLY: u32 = 1;
/// `UFFD_FEATURE_EVENT_FORK`.
pub const UFFD_FEATURE_EVENT_FORK: u64 = 1 << 1;
/// `UFFD_FEATURE_EVENT_REMAP`.
pub const UFFD_FEATURE_EVENT_REMAP: u64 = 1 << 2;
/// `UFFD_FEATURE_EVENT_REMOVE`.
pub const UFFD_FEATURE_EVENT_REMOVE: u64 = 1 << 3;
/// `UFFD_FEATURE_EVENT_UNMAP`.
pub const UFFD_FEATURE_EVENT_UNMAP: u64 = 1 << 6;
/// `UFFD_FEATURE_WP_ASYNC`.
pub const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
/// `UFFDIO_REGISTER_MODE_MISSING`.
pub const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
/// `UFFDIO_REGISTER_MODE_WP`.
pub const UFFDIO_REGISTER_MODE_WP: u64 = 2;
/// `_UFFDIO_COPY`: bit number in the ioctls mask of a registered range.
pub const _UFFDIO_COPY: u64 = 0x03;
/// `UFFDIO_API` = _IOWR(0xAA, 0x3F, struct uffdio_api).
pub const UFFDIO_API: u64 = 0xC018_AA3F;
/// `UFFDIO_REGISTER` = _IOWR(0xAA, 0x00, struct uffdio_register).
pub const UFFDIO_REGISTER: u64 = 0xC020_AA00;
/// `UFFDIO_UNREGISTER` = _IOR(0xAA, 0x01, struct uffdio_range).
pub const UFFDIO_UNREGISTER: u64 = 0x8010_AA01;
/// `PAGEMAP_SCAN` = _IOWR('f', 16, struct pm_scan_arg).
pub const PAGEMAP_SCAN: u64 = 0xC060_6610;
/// `PM_SCAN_WP_MATCHING`: write-protect the pages that match.
pub const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
/// `PM_SCAN_CHECK_WPASYNC`: fail unless the range is registered WP_ASYNC.
pub const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;
/// `PAGE_IS_WRITTEN`.
pub const PAGE_IS_WRITTEN: u64 = 1 << 1;
/// `PAGE_IS_FILE`: a page-cache page or shared anonymous page.
pub const PAGE_IS_FILE: u64 = 1 << 2;
/// `PAGE_IS_PRESENT`.
pub const PAGE_IS_PRESENT: u64 = 1 << 3;
/// `PAGE_IS_SWAPPED`: a swap entry, which includes the kernel's pte
/// markers (a uffd-wp marker left on an empty page reads as swapped).
pub const PAGE_IS_SWAPPED: u64 = 1 << 4;
/// `PAGE_IS_PFNZERO`: mapped to the shared zero page (not the huge one).
pub const PAGE_IS_PFNZERO: u64 = 1 << 5;
/// `PAGE_IS_HUGE`: mapped by a THP or hugetlb entry.
pub const PAGE_IS_HUGE: u64 = 1 << 6;
/// `PAGE_IS_SOFT_DIRTY`: the pte's soft-dirty bit, or a VM_SOFTDIRTY VMA.
pub const PAGE_IS_SOFT_DIRTY: u64 = 1 << 7;

/// userfaultfd(2) with O_CLOEXEC | O_NONBLOCK plus `flags`.
pub fn userfaultfd(flags: u32) -> SysResult<OwnedFd> {
    let all = flags | super::fd::O_CLOEXEC | super::fd::O_NONBLOCK;
    // SAFETY: no pointers are passed.
    let fd = unsafe { syscall!(Sysno::userfaultfd, all) }?;
    Ok(own(fd))
}

/// UFFDIO_API handshake requesting `features`; returns (features the kernel
/// supports, ioctls mask).
pub fn uffdio_api(uffd: BorrowedFd<'_>, features: u64) -> SysResult<(u64, u64)> {
    let mut api = [UFFD_API, features, 0u64];
    // SAFETY: UFFDIO_API takes a 24-byte struct uffdio_api of three u64.
    unsafe { ioctl_ptr(uffd, UFFDIO_API, &mut api) }?;
    Ok((api[1], api[2]))
}

/// UFFDIO_REGISTER of [start, start+len) in `mode`; returns the ioctls mask
/// available on the range. The range must be memory crest owns (a mapping).
pub fn uffdio_register(uffd: BorrowedFd<'_>, start: u64, len: u64, mode: u64) -> SysResult<u64> {
    let mut reg = [start, len, mode, 0u64];
    // SAFETY: UFFDIO_REGISTER takes a 32-byte struct uffdio_register; the
    // range is only an address range to the kernel, nothing is dereferenced.
    unsafe { ioctl_ptr(uffd, UFFDIO_REGISTER, &mut reg) }?;
    Ok(reg[3])
}

/// UFFDIO_UNREGISTER of [start, start+len).
pub fn uffdio_unregister(uffd: BorrowedFd<'_>, start: u64, len: u64) -> SysResult<()> {
    let mut range = [start, len];
    // SAFETY: UFFDIO_UNREGISTER takes a 16-byte struct uffdio_range.
    unsafe { ioctl_ptr(uffd, UFFDIO_UNREGISTER, &mut range) }.map(drop)
}

/// One run of pages with the same categories, as PAGEMAP_SCAN reports it.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PageRegion {
    /// First address.
    pub start: u64,
    /// End address (exclusive).
    pub end: u64,
    /// PAGE_IS_* bits of the run, masked by return_mask.
    pub categories: u64,
}

/// What to ask PAGEMAP_SCAN for.
#[derive(Debug, Default, Clone, Copy)]
pub struct PmScan {
    /// PM_SCAN_* flags.
    pub flags: u64,
    /// Range start.
    pub start: u64,
    /// Range end (exclusive).
    pub end: u64,
    /// Pages must have all of these categories.
    pub category_mask: u64,
    /// Categories to report in each region.
    pub return_mask: u64,
}

/// ioctl(PAGEMAP_SCAN) on an open /proc/PID/pagemap; fills `out` and returns
/// (regions filled, walk_end).
pub fn pagemap_scan(
    pagemap: BorrowedFd<'_>,
    scan: &PmScan,
    out: &mut [PageRegion],
) -> SysResult<(usize, u64)> {
    pagemap_scan_anyof(pagemap, scan, 0, out)
}

/// Like [`pagemap_scan`], where a page must also have at least one of the
/// categories of `anyof` (category_anyof_mask; 0: no such condition).
pub fn pagemap_scan_anyof(
    pagemap: BorrowedFd<'_>,
    scan: &PmScan,
    anyof: u64,
    out: &mut [PageRegion],
) -> SysResult<(usize, u64)> {
    let mut arg = [0u64; 12];
    arg[0] = (arg.len() * 8) as u64;
    arg[1] = scan.flags;
    arg[2] = scan.start;
    arg[3] = scan.end;
    arg[5] = out.as_mut_ptr() as u64;
    arg[6] = out.len() as u64;
    arg[9] = scan.category_mask;
    arg[10] = anyof;
    arg[11] = scan.return_mask;
    // SAFETY: PAGEMAP_SCAN takes a 96-byte struct pm_scan_arg (twelve u64)
    // whose vec points to `out`, vec_len regions long; the scanned range is
    // only interpreted as addresses.
    let n = unsafe { ioctl_ptr(pagemap, PAGEMAP_SCAN, &mut arg) }?;
    Ok((n, arg[4]))
}
