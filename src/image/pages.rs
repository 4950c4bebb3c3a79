//! The page store: raw page data, page-aligned, in a pages file, and its
//! index of runs in a pagemap file (records in [`super::pagemap`]).
//!
//! ```text
//!  pagemap-NAME.img                          pages-NAME.img
//!  +--------+------+-----+-----+-----+-----+  +--------+--------+--------+--------+--
//!  | header | head | run | run | ... | end |  | header | 0 pad  | page 0 | page 1 | ..
//!  +--------+------+-----+-----+-----+-----+  +--------+--------+--------+--------+--
//!                    |                        0                 ^ page_size
//!                    +-- present, pages_off 0, nr 2 ------------+
//! ```
//!
//! [`PageWriter`] writes both in one pass to any two `Write`s: a present run's
//! data is appended to the pages stream (by the caller's closure too, so dump
//! can splice from a pipe into the file without copying) and its run record to
//! the index stream. Page alignment in a stream is kept by counting: the pages
//! stream starts with one page holding the header and zero padding, and only
//! whole pages follow. Nothing needs a total in advance; the end record of the
//! index states the pages file's final size so a short copy is detected.
//! [`PageIndex`] reads an index back, checks it against itself, and finds a
//! page by address, following `parent` runs down a chain of parent images.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;

use super::ImageError;
use super::crc::crc32c;
use super::dir::ImageDir;
use super::header::{Arch, FileKind, HEADER_LEN, Header};
use super::pagemap::{PageRun, PagemapHead, RunKind, Space};
use super::stream::{RecordReader, RecordWriter};
use crate::error::{Error, Result};

/// Page counts of an index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageTotals {
    /// Run records.
    pub runs: u64,
    /// Pages stored here.
    pub present: u64,
    /// Pages found in the parent image.
    pub parent: u64,
    /// Zero pages (not stored).
    pub zero: u64,
}

impl PageTotals {
    /// Counts one run.
    pub fn add(&mut self, run: &PageRun) {
        // Saturating: a hostile index must not overflow the counts.
        self.runs += 1;
        let n = run.nr_pages;
        match run.kind {
            RunKind::Present => self.present = self.present.saturating_add(n),
            RunKind::Parent => self.parent = self.parent.saturating_add(n),
            RunKind::Zero => self.zero = self.zero.saturating_add(n),
        }
    }
}

/// Writes a page index and its page data in one pass.
#[derive(Debug)]
pub struct PageWriter<I: Write, D: Write> {
    index: RecordWriter<I>,
    data: D,
    data_name: String,
    page_size: u64,
    next_off: u64,
    last_end: u64,
    pending: Option<PageRun>,
    totals: PageTotals,
    poisoned: bool,
}

impl<I: Write, D: Write> PageWriter<I, D> {
    /// Starts the index `index_name` and the data stream `data_name` (file
    /// names, also used in errors) for the address space `space`.
    pub fn new(
        index: I,
        index_name: &str,
        mut data: D,
        data_name: &str,
        arch: Arch,
        page_size: u32,
        space: Space,
    ) -> Result<Self> {
        let mut index = RecordWriter::new(
            index,
            index_name,
            Header::new(FileKind::Pagemap, arch, page_size),
        )?;
        index.write(&PagemapHead {
            space,
            pages_file: data_name.to_string(),
        })?;
        let mut first = vec![0u8; page_size as usize];
        first[..HEADER_LEN]
            .copy_from_slice(&Header::new(FileKind::Pages, arch, page_size).encode());
        data.write_all(&first)
            .map_err(|e| Error::io("write", data_name, e))?;
        Ok(PageWriter {
            index,
            data,
            data_name: data_name.to_string(),
            page_size: page_size as u64,
            next_off: 0,
            last_end: 0,
            pending: None,
            totals: PageTotals::default(),
            poisoned: false,
        })
    }

    fn order_error(&self, vaddr: u64, nr_pages: u64) -> Error {
        Error::Image(ImageError::new(
            &self.data_name,
            self.index.offset(),
            format!(
                "page run at {vaddr:#x} of {nr_pages} pages is unaligned, empty or \
                 below the previous run's end {:#x}",
                self.last_end
            ),
        ))
    }

    fn poisoned_error(&self) -> Error {
        Error::Image(ImageError::new(
            &self.data_name,
            self.page_size * (1 + self.next_off),
            "an earlier write failed, so this page store is incomplete",
        ))
    }

    /// Queues a run, merging it with the previous one when it continues it.
    /// A run that is refused here leaves the writer as it was.
    fn push(&mut self, run: PageRun) -> Result<()> {
        if self.poisoned {
            return Err(self.poisoned_error());
        }
        let len = run.nr_pages.checked_mul(self.page_size);
        let end = len.and_then(|l| run.vaddr.checked_add(l));
        let Some(end) = end.filter(|_| {
            run.nr_pages > 0 && run.vaddr % self.page_size == 0 && run.vaddr >= self.last_end
        }) else {
            return Err(self.order_error(run.vaddr, run.nr_pages));
        };
        self.totals.add(&run);
        if let Some(p) = &mut self.pending {
            let merges = p.kind == run.kind && p.crc.is_none() && run.crc.is_none();
            if merges && p.vaddr + p.nr_pages * self.page_size == run.vaddr {
                p.nr_pages += run.nr_pages;
                self.totals.runs -= 1;
                self.last_end = end;
                return Ok(());
            }
        }
        if let Some(p) = self.pending.replace(run) {
            self.index.write(&p)?;
        }
        self.last_end = end;
        Ok(())
    }

    /// Stores `pages` (whole pages) read at `vaddr`, with their CRC32C.
    pub fn add_pages(&mut self, vaddr: u64, pages: &[u8]) -> Result<()> {
        if pages.len() as u64 % self.page_size != 0 {
            return Err(self.order_error(vaddr, 0));
        }
        let nr_pages = pages.len() as u64 / self.page_size;
        self.push(PageRun {
            vaddr,
            nr_pages,
            kind: RunKind::Present,
            pages_off: self.next_off,
            crc: Some(crc32c(pages)),
        })?;
        if let Err(e) = self.data.write_all(pages) {
            self.poisoned = true;
            return Err(Error::io("write", &self.data_name, e));
        }
        self.next_off += nr_pages;
        Ok(())
    }

    /// Stores `nr_pages` at `vaddr` whose bytes `fill` writes to the data
    /// stream itself (e.g. splicing from a pipe to the file's fd); `fill`
    /// returns how many bytes it wrote, which must be exactly the pages. No
    /// CRC is recorded, since crest never sees the bytes. When `fill` writes
    /// to the fd under `D`, `D` must not buffer (a plain `File`, as
    /// [`PageWriter::create`] gives), or earlier bytes would land after it.
    pub fn add_pages_with(
        &mut self,
        vaddr: u64,
        nr_pages: u64,
        fill: impl FnOnce(&mut D, u64) -> std::io::Result<u64>,
    ) -> Result<()> {
        let bytes = nr_pages.saturating_mul(self.page_size);
        self.push(PageRun {
            vaddr,
            nr_pages,
            kind: RunKind::Present,
            pages_off: self.next_off,
            crc: None,
        })?;
        // Until the closure has written exactly the run, the data stream and
        // the index disagree: only success clears this.
        self.poisoned = true;
        let wrote =
            fill(&mut self.data, bytes).map_err(|e| Error::io("write", &self.data_name, e))?;
        if wrote != bytes {
            return Err(Error::Image(ImageError::new(
                &self.data_name,
                self.page_size * (1 + self.next_off),
                format!("{wrote} bytes were stored for a run of {bytes}"),
            )));
        }
        self.poisoned = false;
        self.next_off += nr_pages;
        Ok(())
    }

    /// Records `nr_pages` zero pages at `vaddr` (nothing stored).
    pub fn add_zero(&mut self, vaddr: u64, nr_pages: u64) -> Result<()> {
        self.push(PageRun {
            vaddr,
            nr_pages,
            kind: RunKind::Zero,
            pages_off: 0,
            crc: None,
        })
    }

    /// Records `nr_pages` at `vaddr` as unchanged since the parent image.
    pub fn add_parent(&mut self, vaddr: u64, nr_pages: u64) -> Result<()> {
        self.push(PageRun {
            vaddr,
            nr_pages,
            kind: RunKind::Parent,
            pages_off: 0,
            crc: None,
        })
    }

    /// Counts so far.
    pub fn totals(&self) -> PageTotals {
        self.totals
    }

    /// Writes the last run and the end record; hands back both sinks. Fails
    /// if any data write failed, so a broken store never gets an end record.
    pub fn finish(mut self) -> Result<(I, D)> {
        if self.poisoned {
            return Err(self.poisoned_error());
        }
        if let Some(p) = self.pending.take() {
            self.index.write(&p)?;
        }
        self.index
            .set_data_bytes(self.page_size * (1 + self.next_off));
        self.data
            .flush()
            .map_err(|e| Error::io("write", &self.data_name, e))?;
        Ok((self.index.finish()?, self.data))
    }
}

impl PageWriter<std::io::BufWriter<File>, File> {
    /// Creates `pagemap-NAME.img` and `pages-NAME.img` style files in `dir`.
    pub fn create(dir: &ImageDir, index_name: &str, data_name: &str, space: Space) -> Result<Self> {
        let index = std::io::BufWriter::new(dir.create_file(index_name)?);
        let data = dir.create_file(data_name)?;
        let ps = super::dir::host_page_size();
        PageWriter::new(index, index_name, data, data_name, Arch::host(), ps, space)
    }
}

/// A page index read back and checked.
#[derive(Debug, Clone)]
pub struct PageIndex {
    /// The head record.
    pub head: PagemapHead,
    /// The page size.
    pub page_size: u64,
    /// The runs, in increasing address order, not overlapping.
    pub runs: Vec<PageRun>,
    /// The size the pages file must have.
    pub data_bytes: u64,
    /// Counts.
    pub totals: PageTotals,
}

impl PageIndex {
    /// Reads a whole index from `rr`, checking order, overlap, offsets and
    /// the pages file size the end record states.
    pub fn read<R: Read>(rr: &mut RecordReader<R>) -> Result<PageIndex, ImageError> {
        let file = rr.file().to_string();
        let page_size = rr.header().page_size as u64;
        let head = match rr.next_known()? {
            Some(raw) => raw.decode::<PagemapHead>(&file)?,
            None => {
                return Err(ImageError::new(
                    &file,
                    rr.offset(),
                    "page index has no head record",
                ));
            }
        };
        let mut idx = PageIndex {
            head,
            page_size,
            runs: Vec::new(),
            data_bytes: 0,
            totals: PageTotals::default(),
        };
        while let Some(raw) = rr.next_known()? {
            let run: PageRun = raw.decode(&file)?;
            idx.check_next(&run)
                .map_err(|p| ImageError::new(&file, raw.offset, p))?;
            idx.totals.add(&run);
            idx.runs.push(run);
        }
        let end = rr.end().map(|e| e.data_bytes).unwrap_or(0);
        idx.data_bytes = page_size.saturating_mul(idx.totals.present.saturating_add(1));
        if end != idx.data_bytes {
            return Err(ImageError::new(
                &file,
                rr.offset(),
                format!(
                    "the end record gives a pages file of {end} bytes, the runs need {}",
                    idx.data_bytes
                ),
            ));
        }
        Ok(idx)
    }

    fn check_next(&self, run: &PageRun) -> Result<(), String> {
        if run.vaddr % self.page_size != 0 {
            return Err(format!("page run at {:#x} is not page-aligned", run.vaddr));
        }
        if run
            .vaddr
            .checked_add(run.nr_pages.saturating_mul(self.page_size))
            .is_none()
        {
            return Err(format!("page run at {:#x} wraps around", run.vaddr));
        }
        if let Some(prev) = self.runs.last() {
            if run.vaddr < prev.vaddr + prev.nr_pages * self.page_size {
                return Err(format!(
                    "page run at {:#x} overlaps or precedes the previous one",
                    run.vaddr
                ));
            }
        }
        if run.kind == RunKind::Present && run.pages_off != self.totals.present {
            return Err(format!(
                "page run at {:#x} says its data is at page {}, but it is at page {}",
                run.vaddr, run.pages_off, self.totals.present
            ));
        }
        Ok(())
    }

    /// Loads `name` from `dir`, and checks the pages file's size.
    pub fn load(dir: &ImageDir, name: &str) -> Result<PageIndex> {
        let mut rr = dir.reader(name)?;
        let idx = PageIndex::read(&mut rr)?;
        rr.expect_eof()?;
        let data = dir.open_file(&idx.head.pages_file)?;
        let len = data
            .metadata()
            .map_err(|e| Error::io("stat", dir.path().join(&idx.head.pages_file), e))?
            .len();
        if len != idx.data_bytes {
            return Err(Error::Image(ImageError::new(
                &idx.head.pages_file,
                len.min(idx.data_bytes),
                format!(
                    "pages file is {len} bytes, its index needs {}",
                    idx.data_bytes
                ),
            )));
        }
        Ok(idx)
    }

    /// The run holding `vaddr`, and the page's index inside it.
    pub fn find(&self, vaddr: u64) -> Option<(&PageRun, u64)> {
        let i = self
            .runs
            .partition_point(|r| r.vaddr <= vaddr)
            .checked_sub(1)?;
        let run = &self.runs[i];
        let page = (vaddr - run.vaddr) / self.page_size;
        (page < run.nr_pages).then_some((run, page))
    }

    /// Byte offset in the pages file of `page` of a present `run`.
    pub fn data_offset(&self, run: &PageRun, page: u64) -> u64 {
        self.page_size * (1 + run.pages_off + page)
    }

    /// Reads a present run's data into `buf` (exactly its size) from the
    /// pages file and checks its CRC32C if it has one.
    pub fn read_run(&self, data: &File, run: &PageRun, buf: &mut [u8]) -> Result<(), ImageError> {
        let file = &self.head.pages_file;
        let off = self.data_offset(run, 0);
        if run.kind != RunKind::Present || buf.len() as u64 != run.nr_pages * self.page_size {
            return Err(ImageError::new(
                file,
                off,
                "internal: read of a run that is not stored here",
            ));
        }
        data.read_exact_at(buf, off)
            .map_err(|e| ImageError::new(file, off, format!("cannot read page data: {e}")))?;
        match run.crc {
            Some(want) if crc32c(buf) != want => Err(ImageError::new(
                file,
                off,
                format!(
                    "page data of the run at {:#x} fails its checksum",
                    run.vaddr
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// Where a page's data is along a chain of images (child first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Located<'a> {
    /// In `chain[level]`'s pages file.
    Stored {
        /// Index in the chain.
        level: usize,
        /// The run.
        run: &'a PageRun,
        /// The page's index in the run.
        page: u64,
    },
    /// A zero page.
    Zero,
    /// Not dumped (outside every run).
    Absent,
}

/// Follows `parent` runs from `chain[0]` down to the image that stores `vaddr`.
pub fn locate<'a>(chain: &'a [PageIndex], vaddr: u64) -> Result<Located<'a>, String> {
    for (level, idx) in chain.iter().enumerate() {
        let Some((run, page)) = idx.find(vaddr) else {
            if level == 0 {
                return Ok(Located::Absent);
            }
            return Err(format!(
                "page {vaddr:#x} is marked as in the parent image, but parent {level} lacks it"
            ));
        };
        match run.kind {
            RunKind::Present => return Ok(Located::Stored { level, run, page }),
            RunKind::Zero => return Ok(Located::Zero),
            RunKind::Parent => continue,
        }
    }
    Err(format!(
        "page {vaddr:#x} is marked as in a parent image, but the chain has no more parents"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(runs: &[(u64, u64, RunKind)]) -> PageIndex {
        let mut idx = PageIndex {
            head: PagemapHead {
                space: Space::Process(1),
                pages_file: "p".into(),
            },
            page_size: 4096,
            runs: Vec::new(),
            data_bytes: 0,
            totals: PageTotals::default(),
        };
        for &(vaddr, nr_pages, kind) in runs {
            let pages_off = if kind == RunKind::Present {
                idx.totals.present
            } else {
                0
            };
            let run = PageRun {
                vaddr,
                nr_pages,
                kind,
                pages_off,
                crc: None,
            };
            idx.check_next(&run).unwrap();
            idx.totals.add(&run);
            idx.runs.push(run);
        }
        idx
    }

    #[test]
    fn find_and_locate_follow_runs_and_parents() {
        use RunKind::*;
        let child = index(&[(0x1000, 2, Parent), (0x3000, 1, Present), (0x8000, 1, Zero)]);
        let parent = index(&[(0x1000, 1, Present), (0x2000, 1, Parent)]);
        let grand = index(&[(0x0, 4, Present)]);
        let chain = [child, parent, grand];
        assert_eq!(
            chain[0].find(0x1fff).map(|(r, p)| (r.vaddr, p)),
            Some((0x1000, 0))
        );
        assert_eq!(
            chain[0].find(0x2000).map(|(r, p)| (r.vaddr, p)),
            Some((0x1000, 1))
        );
        assert!(chain[0].find(0x4000).is_none() && chain[0].find(0).is_none());
        let level = |v| match locate(&chain, v).unwrap() {
            Located::Stored { level, page, .. } => (level as i64, page),
            Located::Zero => (-1, 0),
            Located::Absent => (-2, 0),
        };
        assert_eq!(level(0x1000), (1, 0));
        assert_eq!(level(0x2000), (2, 2));
        assert_eq!(level(0x3000), (0, 0));
        assert_eq!(level(0x8000), (-1, 0));
        assert_eq!(level(0x9000), (-2, 0));
        assert!(locate(&chain[..2], 0x2000).is_err());
    }

    #[test]
    fn overlapping_and_misplaced_runs_are_refused() {
        let idx = index(&[(0x1000, 2, RunKind::Present)]);
        let run = |vaddr, kind, pages_off| PageRun {
            vaddr,
            nr_pages: 1,
            kind,
            pages_off,
            crc: None,
        };
        assert!(idx.check_next(&run(0x2000, RunKind::Zero, 0)).is_err());
        assert!(idx.check_next(&run(0x3000, RunKind::Present, 1)).is_err());
        assert!(idx.check_next(&run(0x3000, RunKind::Present, 2)).is_ok());
        assert!(idx.check_next(&run(0x3800, RunKind::Zero, 0)).is_err());
    }
}
