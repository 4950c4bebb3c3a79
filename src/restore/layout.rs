//! The restorer's mapping: one memfd mapped shared and executable at an
//! address no dumped VMA uses, holding the blob, then the plan and its
//! tables, thread stacks and park slots, handed out by a bump allocator.
//!
//! crest writes it before it creates the task; the task inherits it at the
//! same address, so the plan's pointers are plain addresses valid on both
//! sides. crest keeps its own view to read the results.
//!
//! ```text
//!   base                                            base + len
//!   | blob (map_size) | plan | results | tables ... | stacks | park |
//! ```

use std::os::fd::{AsFd, OwnedFd};

use crate::blob::Blob;
use crate::error::{Error, Result};
use crate::image::vma::Vma;
use crate::sys::mm::{Mapping, memfd_create};

/// The lowest address crest places the restorer at (above mmap_min_addr
/// and the usual program load addresses).
const LOW: u64 = 0x1000_0000;
/// The top of the user address space with 4-level page tables.
const HIGH: u64 = 0x7fff_ffff_f000;

/// The restorer mapping and its allocator.
pub struct Layout {
    map: Mapping,
    _memfd: OwnedFd,
    used: usize,
    page: usize,
}

impl Layout {
    /// Maps `len` bytes (whole pages) for `blob` in a hole between `vmas`
    /// that crest's own mappings leave free too, and copies the blob in.
    pub fn new(blob: &Blob, len: usize, vmas: &[Vma]) -> Result<Layout> {
        let page = crate::sys::mm::page_size();
        let len = len.next_multiple_of(page);
        let memfd = memfd_create(c"crest-restorer", crate::sys::mm::MFD_CLOEXEC)
            .map_err(|e| Error::sys("memfd_create", "the restorer's memory", e))?;
        crate::sys::fd::ftruncate(memfd.as_fd(), len as u64)
            .map_err(|e| Error::sys("ftruncate", "the restorer's memory", e))?;
        let map = place(&memfd, len, vmas, page)?;
        map.write_bytes(0, blob.bytes);
        let used = blob.map_size(page);
        Ok(Layout {
            map,
            _memfd: memfd,
            used,
            page,
        })
    }

    /// Where the mapping starts.
    pub fn base(&self) -> usize {
        self.map.addr()
    }

    /// The mapping's length.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is mapped (never).
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// `size` bytes aligned to `align` (a power of two); returns the address.
    pub fn alloc(&mut self, size: usize, align: usize) -> Result<u64> {
        let start = self.used.next_multiple_of(align);
        if start + size > self.map.len() {
            return Err(Error::Target {
                pid: 0,
                problem: format!(
                    "the restorer's memory is too small ({} bytes, {} more needed)",
                    self.map.len(),
                    start + size - self.map.len()
                ),
            });
        }
        self.used = start + size;
        Ok((self.base() + start) as u64)
    }

    /// Whole pages.
    pub fn alloc_pages(&mut self, size: usize) -> Result<u64> {
        let page = self.page;
        self.alloc(size.next_multiple_of(page), page)
    }

    /// Copies `v` to `addr` (inside the mapping).
    pub fn put<T: Copy>(&self, addr: u64, v: &T) {
        self.map.write_value(addr as usize - self.base(), v);
    }

    /// Copies `v` to fresh memory and returns its address (0 when empty).
    pub fn put_slice<T: Copy>(&mut self, v: &[T]) -> Result<u64> {
        if v.is_empty() {
            return Ok(0);
        }
        let addr = self.alloc(size_of_val(v), 16)?;
        for (i, x) in v.iter().enumerate() {
            self.put(addr + (i * size_of::<T>()) as u64, x);
        }
        Ok(addr)
    }

    /// Copies raw bytes to `addr`.
    pub fn put_bytes(&self, addr: u64, b: &[u8]) {
        self.map.write_bytes(addr as usize - self.base(), b);
    }

    /// Reads the u32 at `addr` as the task left it.
    pub fn read_u32(&self, addr: u64) -> u32 {
        self.map.read_u32(addr as usize - self.base())
    }
}

/// Maps the memfd in the highest hole between the dumped VMAs that is also
/// free in crest (MAP_FIXED_NOREPLACE refuses an occupied place).
fn place(memfd: &OwnedFd, len: usize, vmas: &[Vma], page: usize) -> Result<Mapping> {
    let guard = page as u64;
    let need = len as u64 + 2 * guard;
    let mut gaps = Vec::new();
    let mut prev = LOW;
    for v in vmas.iter().filter(|v| v.end <= HIGH) {
        if v.start > prev && v.start - prev >= need {
            gaps.push((prev, v.start));
        }
        prev = prev.max(v.end);
    }
    if HIGH > prev && HIGH - prev >= need {
        gaps.push((prev, HIGH));
    }
    for &(lo, hi) in gaps.iter().rev() {
        let mut at = hi - guard - len as u64;
        while at >= lo + guard {
            match Mapping::shared_exec_at(memfd.as_fd(), at as usize, len) {
                Ok(m) => return Ok(m),
                Err(crate::sys::Errno::EEXIST) => {}
                Err(e) => return Err(Error::sys("mmap", "the restorer's memory", e)),
            }
            // Try lower in the same hole, past whatever crest has there.
            at = at.saturating_sub(need.max(1 << 30));
        }
    }
    Err(Error::Unsupported(format!(
        "no free place of {len} bytes for the restorer between the dumped mappings"
    )))
}
