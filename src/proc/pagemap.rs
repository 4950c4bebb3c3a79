//! `/proc/PID/pagemap`: one little-endian u64 per virtual page.
//!
//! ```text
//!  63  62  61  60..58 57  56  55  54 ........................... 0
//! ┌───┬───┬───┬──────┬───┬───┬───┬──────────────────────────────┐
//! │ P │ S │ F │  0   │ W │ E │ D │ PFN (root only) or swap entry │
//! └───┴───┴───┴──────┴───┴───┴───┴──────────────────────────────┘
//!  P present  S swapped  F file page or shared anon  W uffd-wp
//!  E mapped exclusively  D soft-dirty
//! ```
//!
//! A dump copies pages that are present or swapped; soft-dirty (where the
//! kernel has it) tells a pre-dump which pages changed since the last pass.

/// Bit 55: written since the last `echo 4 > clear_refs` (needs CONFIG_MEM_SOFT_DIRTY).
pub const PM_SOFT_DIRTY: u64 = 1 << 55;
/// Bit 56: the page is mapped by this process only.
pub const PM_MMAP_EXCLUSIVE: u64 = 1 << 56;
/// Bit 57: the page is write-protected by userfaultfd.
pub const PM_UFFD_WP: u64 = 1 << 57;
/// Bit 61: a page-cache page or shared anonymous page.
pub const PM_FILE: u64 = 1 << 61;
/// Bit 62: the page is in swap.
pub const PM_SWAP: u64 = 1 << 62;
/// Bit 63: the page is in memory.
pub const PM_PRESENT: u64 = 1 << 63;
/// Bits 0-54: the page frame number (zero unless CAP_SYS_ADMIN).
pub const PM_PFRAME_MASK: u64 = (1 << 55) - 1;
/// Bits 0-4 of a swap entry: its swap type (with CAP_SYS_ADMIN only).
const PM_SWAP_TYPE_MASK: u64 = (1 << 5) - 1;
/// The swap type of the kernel's pte markers (SWP_PTE_MARKER, the last of
/// the 32 types): not a page at all, e.g. a uffd-wp marker the kernel left
/// where a write-protected page was dropped or never populated.
const SWP_PTE_MARKER: u64 = PM_SWAP_TYPE_MASK;

/// One decoded pagemap entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PageEntry(pub u64);

impl PageEntry {
    /// In memory.
    pub fn present(self) -> bool {
        self.0 & PM_PRESENT != 0
    }
    /// In swap.
    pub fn swapped(self) -> bool {
        self.0 & PM_SWAP != 0
    }
    /// Has content a dump must keep (in memory or in swap; a pte marker
    /// holds no page).
    pub fn populated(self) -> bool {
        self.present() || (self.swapped() && !self.pte_marker())
    }
    /// A pte marker that reads as swapped: an empty page. Only known when
    /// the reader sees swap entries (CAP_SYS_ADMIN); otherwise false, and
    /// the page is dumped as if it were swapped (it reads as zero).
    pub fn pte_marker(self) -> bool {
        !self.present() && self.swapped() && self.0 & PM_SWAP_TYPE_MASK == SWP_PTE_MARKER
    }
    /// Written since soft-dirty bits were last cleared.
    pub fn soft_dirty(self) -> bool {
        self.0 & PM_SOFT_DIRTY != 0
    }
    /// Write-protected by userfaultfd.
    pub fn uffd_wp(self) -> bool {
        self.0 & PM_UFFD_WP != 0
    }
    /// A file page or a shared anonymous page.
    pub fn file_or_shared(self) -> bool {
        self.0 & PM_FILE != 0
    }
    /// Mapped only by this process.
    pub fn exclusive(self) -> bool {
        self.0 & PM_MMAP_EXCLUSIVE != 0
    }
    /// The page frame number, when the reader may see it and the page is present.
    pub fn pfn(self) -> Option<u64> {
        (self.present() && self.0 & PM_PFRAME_MASK != 0).then_some(self.0 & PM_PFRAME_MASK)
    }
}

/// Decodes a buffer read from pagemap; a trailing partial entry is ignored
/// (a short read never yields half an entry from the kernel).
pub fn entries(bytes: &[u8]) -> impl Iterator<Item = PageEntry> + '_ {
    bytes.chunks_exact(8).map(|c| {
        let mut word = [0u8; 8];
        word.copy_from_slice(c);
        PageEntry(u64::from_le_bytes(word))
    })
}

/// The byte offset in pagemap of the entry for `vaddr`.
pub fn offset_of(vaddr: u64, page_size: u64) -> u64 {
    vaddr / page_size * 8
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom};

    #[test]
    fn decodes_bits() {
        let e = PageEntry(PM_PRESENT | PM_MMAP_EXCLUSIVE | 0x1234);
        assert!(e.present() && e.populated() && e.exclusive());
        assert!(!e.swapped() && !e.soft_dirty() && !e.uffd_wp() && !e.file_or_shared());
        assert_eq!(e.pfn(), Some(0x1234));
        let s = PageEntry(PM_SWAP | PM_SOFT_DIRTY);
        assert!(s.populated() && s.soft_dirty() && s.pfn().is_none());
        assert_eq!(entries(&[0u8; 17]).count(), 2);
        // A uffd-wp marker: type 31, marker bit 1 in the offset.
        let marker = PageEntry(PM_SWAP | PM_UFFD_WP | 31 | 1 << 5);
        assert!(marker.pte_marker() && !marker.populated());
        let real = PageEntry(PM_SWAP | PM_UFFD_WP | 1 << 5);
        assert!(!real.pte_marker() && real.populated());
    }

    #[test]
    fn a_touched_page_is_present_and_an_untouched_one_is_not() {
        // A fresh anonymous mapping: the kernel populates a page on first
        // write only (malloc could hand back memory it already touched).
        let page = crate::sys::mm::page_size();
        let map = crate::sys::mm::Mapping::anonymous(8 * page).unwrap();
        map.write_byte(3 * page, 1);
        let mut f = std::fs::File::open("/proc/self/pagemap").unwrap();
        f.seek(SeekFrom::Start(offset_of(map.addr() as u64, page as u64)))
            .unwrap();
        let mut raw = [0u8; 8 * 8];
        f.read_exact(&mut raw).unwrap();
        let e: Vec<_> = entries(&raw).collect();
        assert!(e[3].present() && e[3].exclusive());
        assert!(!e[6].populated());
    }
}
