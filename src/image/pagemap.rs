//! The page index records (pagemap-NAME.img): which pages of an address space
//! the image holds, and where.
//!
//! The index is a head record naming the address space and the pages file,
//! then runs of consecutive pages in increasing address order, then the end
//! record (whose data_bytes is the pages file's size). A run is one of:
//!
//! ```text
//!  present  the data is in this image's pages file, at pages_off (in pages,
//!           counted after the header page); present runs are stored in order,
//!           so pages_off is the sum of the present runs before it
//!  parent   the data is in the parent image (--prev-images-dir), found by
//!           address in the parent's index for the same address space
//!  zero     the pages are known to be zero: nothing is stored
//!
//!  head:  u8 space (1 process, 2 shmem) | u64 id (pid or shmid) | string pages_file
//!  run:   u64 vaddr | u64 nr_pages | u8 kind (1 present, 2 parent, 3 zero)
//!         u8 flags (bit 0: crc valid) | u64 pages_off | u32 crc32c of the run's data
//! ```
//!
//! Runs never need a total in advance: dump streams them as it goes.

use super::ImageError;
use super::codec::{Reader, Writer};
use super::record::Record;
use super::value::Value;

/// Run flag: `crc` holds the CRC32C of the run's data.
pub const RUN_HAS_CRC: u8 = 1;
/// The most pages one run may cover (2^36 pages: 256 TiB at 4 KiB).
pub const MAX_RUN_PAGES: u64 = 1 << 36;

/// Whose pages an index describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    /// The private memory of a process.
    Process(u32),
    /// A shared anonymous memory object, by shmem inode.
    Shmem(u64),
}

/// The first record of a pagemap file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PagemapHead {
    /// The address space.
    pub space: Space,
    /// The pages file holding present runs, in the same directory.
    pub pages_file: String,
}

impl Record for PagemapHead {
    const KIND: u16 = 15;
    const NAME: &'static str = "pagemap-head";

    fn encode(&self, w: &mut Writer) {
        match self.space {
            Space::Process(pid) => {
                w.u8(1);
                w.u64(pid as u64);
            }
            Space::Shmem(id) => {
                w.u8(2);
                w.u64(id);
            }
        }
        w.str(&self.pages_file);
    }

    fn decode(r: &mut Reader) -> Result<Self, ImageError> {
        let space = match (r.u8()?, r.u64()?) {
            (1, pid) if pid > 0 && pid <= u32::MAX as u64 => Space::Process(pid as u32),
            (2, id) => Space::Shmem(id),
            (k, id) => return Err(r.error(format!("unknown address space {k} (id {id})"))),
        };
        let pages_file = r.string("pages file name", 255)?;
        if !super::dir::valid_name(&pages_file) {
            return Err(r.error(format!(
                "pages file name {pages_file:?} is not a plain file name"
            )));
        }
        Ok(PagemapHead { space, pages_file })
    }

    fn to_value(&self) -> Value {
        let (k, id) = match self.space {
            Space::Process(p) => ("process", p as u64),
            Space::Shmem(s) => ("shmem", s),
        };
        Value::Obj(vec![
            ("space", Value::Str(k.into())),
            ("id", Value::U(id)),
            ("pages_file", Value::Str(self.pages_file.clone())),
        ])
    }
}

/// Where a run's data is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    /// In this image's pages file.
    Present,
    /// In the parent image.
    Parent,
    /// All zero, not stored.
    Zero,
}

/// A run of consecutive pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRun {
    /// The first page's address.
    pub vaddr: u64,
    /// How many pages.
    pub nr_pages: u64,
    /// Where the data is.
    pub kind: RunKind,
    /// Present runs: the first page's index in the pages file.
    pub pages_off: u64,
    /// Present runs: CRC32C of the data, when the dump computed one.
    pub crc: Option<u32>,
}

impl Record for PageRun {
    const KIND: u16 = 16;
    const NAME: &'static str = "page-run";

    fn encode(&self, w: &mut Writer) {
        w.u64(self.vaddr);
        w.u64(self.nr_pages);
        w.u8(match self.kind {
            RunKind::Present => 1,
            RunKind::Parent => 2,
            RunKind::Zero => 3,
        });
        w.u8(if self.crc.is_some() { RUN_HAS_CRC } else { 0 });
        w.u64(self.pages_off);
        w.u32(self.crc.unwrap_or(0));
    }

    fn decode(r: &mut Reader) -> Result<Self, ImageError> {
        let (vaddr, nr_pages) = (r.u64()?, r.u64()?);
        let kind = match r.u8()? {
            1 => RunKind::Present,
            2 => RunKind::Parent,
            3 => RunKind::Zero,
            k => return Err(r.error(format!("unknown page run kind {k}"))),
        };
        let flags = r.u8()?;
        let (pages_off, crc) = (r.u64()?, r.u32()?);
        if nr_pages == 0 || nr_pages > MAX_RUN_PAGES || vaddr % 4096 != 0 {
            return Err(r.error(format!(
                "page run at {vaddr:#x} of {nr_pages} pages is empty, too long or unaligned"
            )));
        }
        if vaddr.checked_add(nr_pages << 12).is_none() {
            return Err(r.error(format!(
                "page run at {vaddr:#x} wraps around the address space"
            )));
        }
        Ok(PageRun {
            vaddr,
            nr_pages,
            kind,
            pages_off,
            crc: (flags & RUN_HAS_CRC != 0).then_some(crc),
        })
    }

    fn to_value(&self) -> Value {
        let kind = match self.kind {
            RunKind::Present => "present",
            RunKind::Parent => "parent",
            RunKind::Zero => "zero",
        };
        Value::Obj(vec![
            ("vaddr", Value::Hex(self.vaddr)),
            ("nr_pages", Value::U(self.nr_pages)),
            ("kind", Value::Str(kind.into())),
            ("pages_off", Value::U(self.pages_off)),
            (
                "crc",
                self.crc.map_or(Value::Null, |c| Value::Hex(c as u64)),
            ),
        ])
    }
}
