//! The header at the start of every image file.
//!
//! ```text
//!  0        8       10      12          14     16     18      20          24         28      32
//!  +--------+-------+-------+-----------+------+------+-------+-----------+----------+-------+
//!  | magic  | major | minor | header_len| arch | kind | flags | page_size | reserved | crc32c|
//!  |CRESTIMG|  u16  |  u16  |  u16 (32) | u16  | u16  |  u16  |    u32    |   u32    |  u32  |
//!  +--------+-------+-------+-----------+------+------+-------+-----------+----------+-------+
//! ```
//!
//! The first 14 bytes keep this meaning in every version, so any crest can
//! name the version of an image it cannot read. `header_len` lets a later
//! minor version grow the header; the CRC32C always covers the bytes before
//! its last four. Checks run in this order: magic, length, CRC, major
//! version, then the fields.

use std::io::Read;

use super::{FORMAT_MAJOR, FORMAT_MINOR, ImageError, crc::crc32c};

/// The first eight bytes of every crest image file.
pub const MAGIC: [u8; 8] = *b"CRESTIMG";
/// The size of the header this version writes.
pub const HEADER_LEN: usize = 32;
/// The largest header a reader accepts.
pub const MAX_HEADER_LEN: usize = 256;

/// The CPU architecture an image was taken on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// x86_64 (code 1).
    X86_64,
    /// aarch64 (code 2).
    Aarch64,
    /// An architecture this crest does not know.
    Other(u16),
}

impl Arch {
    /// The architecture crest was built for.
    pub fn host() -> Arch {
        if cfg!(target_arch = "x86_64") {
            Arch::X86_64
        } else if cfg!(target_arch = "aarch64") {
            Arch::Aarch64
        } else {
            Arch::Other(0)
        }
    }
    /// The on-disk code.
    pub fn code(self) -> u16 {
        match self {
            Arch::X86_64 => 1,
            Arch::Aarch64 => 2,
            Arch::Other(c) => c,
        }
    }
    /// From the on-disk code.
    pub fn from_code(c: u16) -> Arch {
        match c {
            1 => Arch::X86_64,
            2 => Arch::Aarch64,
            c => Arch::Other(c),
        }
    }
    /// The name people know it by.
    pub fn name(self) -> String {
        match self {
            Arch::X86_64 => "x86_64".into(),
            Arch::Aarch64 => "aarch64".into(),
            Arch::Other(c) => format!("unknown-arch-{c}"),
        }
    }
}

/// What an image file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// inventory.img: what was dumped, by what, on what (1).
    Inventory,
    /// pstree.img: the process tree (2).
    Pstree,
    /// task-PID.img: one process and its threads (3).
    Task,
    /// mm-PID.img: one address space (4).
    Mm,
    /// files-PID.img: one fd table (5).
    Files,
    /// pagemap-NAME.img: the index of a page store (6).
    Pagemap,
    /// pages-NAME.img: raw page data (7).
    Pages,
    /// A kind this crest does not know.
    Other(u16),
}

impl FileKind {
    /// The on-disk code.
    pub fn code(self) -> u16 {
        match self {
            FileKind::Inventory => 1,
            FileKind::Pstree => 2,
            FileKind::Task => 3,
            FileKind::Mm => 4,
            FileKind::Files => 5,
            FileKind::Pagemap => 6,
            FileKind::Pages => 7,
            FileKind::Other(c) => c,
        }
    }
    /// From the on-disk code.
    pub fn from_code(c: u16) -> FileKind {
        match c {
            1 => FileKind::Inventory,
            2 => FileKind::Pstree,
            3 => FileKind::Task,
            4 => FileKind::Mm,
            5 => FileKind::Files,
            6 => FileKind::Pagemap,
            7 => FileKind::Pages,
            c => FileKind::Other(c),
        }
    }
    /// A short name for `crest show`.
    pub fn name(self) -> String {
        match self {
            FileKind::Inventory => "inventory".into(),
            FileKind::Pstree => "pstree".into(),
            FileKind::Task => "task".into(),
            FileKind::Mm => "mm".into(),
            FileKind::Files => "files".into(),
            FileKind::Pagemap => "pagemap".into(),
            FileKind::Pages => "pages".into(),
            FileKind::Other(c) => format!("unknown-kind-{c}"),
        }
    }
}

/// A decoded file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Format major version.
    pub major: u16,
    /// Format minor version.
    pub minor: u16,
    /// The architecture of the dumped processes.
    pub arch: Arch,
    /// What the file holds.
    pub kind: FileKind,
    /// The page size of the dumped machine.
    pub page_size: u32,
    /// The header's length on disk.
    pub len: usize,
}

impl Header {
    /// A header of this crest's version.
    pub fn new(kind: FileKind, arch: Arch, page_size: u32) -> Header {
        Header {
            major: FORMAT_MAJOR,
            minor: FORMAT_MINOR,
            arch,
            kind,
            page_size,
            len: HEADER_LEN,
        }
    }

    /// The header's bytes as this version writes them.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&self.major.to_le_bytes());
        b[10..12].copy_from_slice(&self.minor.to_le_bytes());
        b[12..14].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
        b[14..16].copy_from_slice(&self.arch.code().to_le_bytes());
        b[16..18].copy_from_slice(&self.kind.code().to_le_bytes());
        b[20..24].copy_from_slice(&self.page_size.to_le_bytes());
        let crc = crc32c(&b[..HEADER_LEN - 4]);
        b[HEADER_LEN - 4..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Reads and checks a header from the start of `input`.
    pub fn read(input: &mut impl Read, file: &str) -> Result<Header, ImageError> {
        let mut b = [0u8; MAX_HEADER_LEN];
        read_full(input, &mut b[..14], file, 0)?;
        if b[..8] != MAGIC {
            return Err(ImageError::new(
                file,
                0,
                "not a crest image (bad magic; expected CRESTIMG)",
            ));
        }
        let len = u16::from_le_bytes([b[12], b[13]]) as usize;
        if !(HEADER_LEN..=MAX_HEADER_LEN).contains(&len) || len % 4 != 0 {
            return Err(ImageError::new(
                file,
                12,
                format!("header length {len} is invalid"),
            ));
        }
        read_full(input, &mut b[14..len], file, 14)?;
        Header::parse(&b[..len], file)
    }

    fn parse(b: &[u8], file: &str) -> Result<Header, ImageError> {
        let len = b.len();
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let stored = u32::from_le_bytes([b[len - 4], b[len - 3], b[len - 2], b[len - 1]]);
        let computed = crc32c(&b[..len - 4]);
        if stored != computed {
            return Err(ImageError::new(
                file,
                (len - 4) as u64,
                format!(
                    "header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
                ),
            ));
        }
        let (major, minor) = (u16_at(8), u16_at(10));
        if major > FORMAT_MAJOR {
            return Err(ImageError::new(
                file,
                8,
                format!(
                    "format version {major}.{minor} is newer than this crest reads \
                     ({FORMAT_MAJOR}.{FORMAT_MINOR}); use a newer crest"
                ),
            ));
        }
        let page_size = u32::from_le_bytes([b[20], b[21], b[22], b[23]]);
        if !page_size.is_power_of_two() || !(4096..=65536).contains(&page_size) {
            return Err(ImageError::new(
                file,
                20,
                format!("page size {page_size} is invalid"),
            ));
        }
        Ok(Header {
            major,
            minor,
            arch: Arch::from_code(u16_at(14)),
            kind: FileKind::from_code(u16_at(16)),
            page_size,
            len,
        })
    }
}

/// Fills `buf` from `input`, naming a short read as truncation at `offset`.
pub fn read_full(
    input: &mut impl Read,
    buf: &mut [u8],
    file: &str,
    offset: u64,
) -> Result<(), ImageError> {
    let mut done = 0;
    while done < buf.len() {
        match input.read(&mut buf[done..]) {
            Ok(0) => {
                return Err(ImageError::new(
                    file,
                    offset + done as u64,
                    format!(
                        "file is truncated: {} more bytes expected",
                        buf.len() - done
                    ),
                ));
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(ImageError::new(
                    file,
                    offset + done as u64,
                    format!("read failed: {e}"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_layout() {
        let h = Header::new(FileKind::Mm, Arch::Aarch64, 16384);
        let b = h.encode();
        assert_eq!(&b[..8], b"CRESTIMG");
        assert_eq!(u16::from_le_bytes([b[14], b[15]]), 2);
        assert_eq!(Header::read(&mut &b[..], "f").unwrap(), h);
    }

    #[test]
    fn a_newer_major_version_is_refused_by_name() {
        let mut h = Header::new(FileKind::Task, Arch::X86_64, 4096);
        h.major = FORMAT_MAJOR + 1;
        h.minor = 3;
        let e = Header::read(&mut &h.encode()[..], "task-1.img").unwrap_err();
        let want = format!(
            "{}.3 is newer than this crest reads ({FORMAT_MAJOR}.",
            FORMAT_MAJOR + 1
        );
        assert!(e.problem.contains(&want), "{e}");
    }

    #[test]
    fn a_newer_minor_with_a_longer_header_is_read() {
        let mut b = [0u8; 40];
        b[..28].copy_from_slice(&Header::new(FileKind::Pstree, Arch::X86_64, 4096).encode()[..28]);
        b[10] = 9;
        b[12] = 40;
        b[28..36].copy_from_slice(b"newfield");
        let crc = crc32c(&b[..36]);
        b[36..].copy_from_slice(&crc.to_le_bytes());
        let h = Header::read(&mut &b[..], "f").unwrap();
        assert_eq!((h.minor, h.len, h.kind), (9, 40, FileKind::Pstree));
    }

    #[test]
    fn damage_is_named() {
        let good = Header::new(FileKind::Mm, Arch::X86_64, 4096).encode();
        let mut b = good;
        b[0] = b'X';
        assert!(
            Header::read(&mut &b[..], "f")
                .unwrap_err()
                .problem
                .contains("magic")
        );
        let mut b = good;
        b[17] ^= 1;
        assert!(
            Header::read(&mut &b[..], "f")
                .unwrap_err()
                .problem
                .contains("checksum")
        );
        let e = Header::read(&mut &good[..20], "f").unwrap_err();
        assert!(e.problem.contains("truncated"), "{e}");
    }
}
