//! The crest image format: what a dump writes and a restore reads.
//!
//! No kernel interface is wrapped here; this is crest's own on-disk (and
//! on-the-wire) format, specified in docs/IMAGES.md. It is shaped by three
//! needs: it is written in one pass with no seeking back (so the same bytes go
//! to a file, a pipe or a page server), every byte read is distrusted (every
//! length is checked against a limit before anything is allocated, every
//! record carries a CRC32C), and it stays readable across versions (unknown
//! record kinds and trailing fields are skipped, a newer major version is
//! refused by name).
//!
//! ```text
//!  image file = header, record*, end record          pages file = header, padding, pages
//!  +--------+--------+-----+--------+-----+           +--------+---------+------+------+--
//!  | header | record | ... | record | end |           | header | 0 ... 0 | page | page | ..
//!  +--------+--------+-----+--------+-----+           +--------+---------+------+------+--
//!                                                     0                  page_size (aligned)
//! ```
//!
//! Layers: [`crc`] (the checksum), [`codec`] (bounded field reader/writer),
//! [`header`] and [`stream`] (file header and record framing), one module per
//! record kind, [`pages`] (the page store and its index), [`dir`] (the image
//! directory, 0700/0600) and [`show`] (`crest show`).

use std::fmt;

pub mod codec;
pub mod crc;
pub mod creds;
pub mod dir;
pub mod files;
pub mod header;
pub mod inventory;
pub mod load;
pub mod mm;
pub mod pagemap;
pub mod pages;
pub mod pstree;
pub mod record;
pub mod rlimits;
pub mod sample;
pub mod show;
mod show_text;
pub mod sigactions;
pub mod signals;
pub mod stream;
pub mod task;
pub mod thread;
pub mod timers;
pub mod tty;
pub mod value;
pub mod vma;

pub use codec::{Reader, Writer};
pub use dir::ImageDir;
pub use header::{Arch, FileKind, Header};
pub use record::{AnyRecord, Record};
pub use stream::{RawRecord, RecordReader, RecordWriter};

/// The format's major version: a reader refuses images with a larger one.
pub const FORMAT_MAJOR: u16 = 1;
/// The format's minor version: grows when fields or record kinds are added.
pub const FORMAT_MINOR: u16 = 0;

/// The largest record payload any kind may have (64 MiB): pipe data and
/// FP state are the biggest records, far below this.
pub const MAX_RECORD: u32 = 64 << 20;
/// The longest path stored (the kernel's PATH_MAX).
pub const PATH_MAX: u32 = 4096;

/// A damaged, truncated or unsupported image: which file, where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageError {
    /// The image file.
    pub file: String,
    /// Byte offset in the file where the problem was found.
    pub offset: u64,
    /// What is wrong, as a sentence fragment.
    pub problem: String,
}

impl ImageError {
    /// An error in `file` at `offset`.
    pub fn new(file: &str, offset: u64, problem: impl Into<String>) -> Self {
        ImageError {
            file: file.to_string(),
            offset,
            problem: problem.into(),
        }
    }
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "image {} is damaged at offset {}: {}",
            self.file, self.offset, self.problem
        )
    }
}

impl std::error::Error for ImageError {}
