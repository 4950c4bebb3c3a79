//! The kernel's zero pages, by PFN: a page of the target mapped to one of
//! them was read but never written, so the dump records it as zero instead
//! of storing it.
//!
//! The PFNs are learnt from crest itself: read one byte of a fresh private
//! anonymous page and `/proc/self/pagemap` shows the shared zero page's
//! PFN; read one byte of a PMD-aligned range advised MADV_HUGEPAGE and it
//! may show the huge zero page's first PFN (only when THP maps it; else
//! the small zero page again). PFNs are hidden (read as 0) without
//! CAP_SYS_ADMIN: then nothing is known and every page is stored.

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::proc::pagemap::{PageEntry, offset_of};
use crate::sys::mm::{Mapping, page_size};

/// `MADV_HUGEPAGE`.
const MADV_HUGEPAGE: u32 = 14;

/// The PFNs of the zero pages, as far as they could be learnt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ZeroPfns {
    small: Option<u64>,
    /// The huge zero page's first PFN and its page count.
    huge: Option<(u64, u64)>,
}

impl ZeroPfns {
    /// Learns the PFNs from a fresh page and a fresh huge range of crest's own.
    pub fn learn() -> ZeroPfns {
        let ps = page_size();
        let small = Mapping::anonymous(ps)
            .ok()
            .and_then(|m| pfn_after_read(&m, 0));
        // One PMD maps page_size / 8 pages.
        let pmd = ps * (ps / 8);
        let huge = Mapping::anonymous(2 * pmd).ok().and_then(|m| {
            let _ = m.madvise(MADV_HUGEPAGE);
            let off = (pmd - m.addr() % pmd) % pmd;
            let pfn = pfn_after_read(&m, off)?;
            (Some(pfn) != small).then_some((pfn, (pmd / ps) as u64))
        });
        crate::debug!("zero page PFNs: {small:?}, huge {huge:?}");
        ZeroPfns { small, huge }
    }

    /// Whether `pfn` is a zero page.
    pub fn is_zero(&self, pfn: u64) -> bool {
        self.small == Some(pfn) || self.huge.is_some_and(|(h, n)| pfn >= h && pfn < h + n)
    }
}

/// Reads the byte at `off` of `m` (mapping the zero page there) and
/// returns the PFN pagemap shows for it.
fn pfn_after_read(m: &Mapping, off: usize) -> Option<u64> {
    let _ = m.read_byte(off);
    let addr = (m.addr() + off) as u64;
    let pagemap = File::open("/proc/self/pagemap").ok()?;
    let mut word = [0u8; 8];
    pagemap
        .read_exact_at(&mut word, offset_of(addr, page_size() as u64))
        .ok()?;
    PageEntry(u64::from_le_bytes(word)).pfn()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_page_is_the_zero_page_and_a_written_one_is_not() {
        let z = ZeroPfns::learn();
        // Root sees PFNs (tests run as root).
        let small = z.small.expect("root sees the zero page's PFN");
        assert!(z.is_zero(small));
        let m = Mapping::anonymous(page_size()).unwrap();
        assert_eq!(pfn_after_read(&m, 0), Some(small));
        m.write_byte(0, 1);
        let written = pfn_after_read(&m, 0).unwrap();
        assert!(!z.is_zero(written));
    }
}
