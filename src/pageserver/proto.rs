//! The page server's wire format: framed messages over one TCP
//! connection, from `crest dump --page-server` to `crest page-server`.
//!
//! ```text
//!  frame = header (24 bytes, little-endian) + payload (len bytes)
//!  header: magic "CRPS" u32 | kind u16 | flags u16 | file u32 | len u64 | crc u32
//!          crc = CRC32C of the header's first 20 bytes
//!
//!  client ─► HELLO  payload: version u32, page size u32
//!  client ─► OPEN   file id, payload: the image file name
//!  client ─► DATA   file id, payload: bytes appended to the file
//!                   (flag DATA_CRC: the last 4 payload bytes are the
//!                   CRC32C of the others; spliced page data has none)
//!  client ─► CLOSE  file id, payload: the file's total size u64
//!  client ─► COMMIT payload: number of files u32
//!  server ─► ACK    payload: 0 u32 once every file is renamed into place
//! ```
//!
//! The header's own CRC catches a stream that lost step (a short write, a
//! stray byte); sizes are checked at CLOSE, the file count at COMMIT.
//! Anything else is a refused stream: the server removes what it wrote.

use crate::image::crc::crc32c;

/// "CRPS", little-endian.
pub const MAGIC: u32 = u32::from_le_bytes(*b"CRPS");
/// The protocol version in HELLO.
pub const VERSION: u32 = 1;
/// Header bytes.
pub const HEADER_LEN: usize = 24;
/// The largest OPEN payload (a file name).
pub const MAX_NAME: usize = 255;
/// The largest DATA payload the server accepts in one frame.
pub const MAX_DATA: u64 = 1 << 30;

/// HELLO: version and page size.
pub const HELLO: u16 = 1;
/// OPEN: a file id and its name.
pub const OPEN: u16 = 2;
/// DATA: bytes for an open file.
pub const DATA: u16 = 3;
/// CLOSE: a file's total size; no more DATA for it.
pub const CLOSE: u16 = 4;
/// COMMIT: every file is complete; rename them into place.
pub const COMMIT: u16 = 5;
/// ACK: the server's answer to COMMIT.
pub const ACK: u16 = 6;
/// DATA flag: the payload ends with the CRC32C of the rest.
pub const DATA_CRC: u16 = 1;

/// One frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// What the frame is (HELLO...ACK).
    pub kind: u16,
    /// Per-kind flags (DATA_CRC).
    pub flags: u16,
    /// The file the frame is about (OPEN, DATA, CLOSE), else 0.
    pub file: u32,
    /// Payload bytes that follow.
    pub len: u64,
}

impl Frame {
    /// The header's bytes, with its CRC.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..6].copy_from_slice(&self.kind.to_le_bytes());
        b[6..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..12].copy_from_slice(&self.file.to_le_bytes());
        b[12..20].copy_from_slice(&self.len.to_le_bytes());
        let crc = crc32c(&b[..20]);
        b[20..24].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses a header; None names why it is not one.
    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<Frame, String> {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        if u32_at(0) != MAGIC {
            return Err("a frame does not start with the magic CRPS".into());
        }
        if u32_at(20) != crc32c(&b[..20]) {
            return Err("a frame header's CRC does not match".into());
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(&b[12..20]);
        Ok(Frame {
            kind: u16::from_le_bytes([b[4], b[5]]),
            flags: u16::from_le_bytes([b[6], b[7]]),
            file: u32_at(8),
            len: u64::from_le_bytes(len),
        })
    }
}

/// Whether `name` may be created by the server: a plain image file name,
/// no directory part, not hidden (temporary names start with a dot).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && name.ends_with(".img")
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_round_trips_and_any_flipped_bit_is_refused() {
        let f = Frame {
            kind: DATA,
            flags: DATA_CRC,
            file: 7,
            len: 1 << 33,
        };
        let b = f.encode();
        assert_eq!(Frame::decode(&b), Ok(f));
        for bit in 0..HEADER_LEN * 8 {
            let mut c = b;
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(Frame::decode(&c).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn only_plain_image_names_are_valid() {
        assert!(valid_name("pages-42.img"));
        assert!(valid_name("pagemap-42.img"));
        for bad in [
            "",
            "../x.img",
            "a/b.img",
            ".pages-1.img",
            "pages-1",
            "x\n.img",
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        assert!(!valid_name(&format!("{}.img", "a".repeat(300))));
    }
}
