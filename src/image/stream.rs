//! Record framing: how records follow the header in an image file or stream.
//!
//! ```text
//!  0      2       4        8                 8+len
//!  +------+-------+--------+-----------------+--------+
//!  | kind | flags | len    | payload         | crc32c |   crc32c covers kind..payload
//!  | u16  | u16   | u32    | len bytes       | u32    |
//!  +------+-------+--------+-----------------+--------+
//!  flags bit 0 MUST_UNDERSTAND: a reader that does not know `kind` must refuse
//!  the file instead of skipping the record.
//! ```
//!
//! Every file ends with an end record (kind 0xffff) holding the number of
//! records before it and the size of the companion data file, if any: a file
//! cut at a record boundary, or a stream that stopped early, is therefore
//! never mistaken for a complete one. The writer never seeks, so it takes any
//! `Write`; the reader takes any `Read` and checks each length against the
//! kind's limit before reading (and allocating) the payload.

use std::io::{Read, Write};

use super::ImageError;
use super::codec::{Reader, Writer};
use super::header::{Header, read_full};
use super::record::{self, Record};
use crate::error::{Error, Result};

/// Size of the frame before the payload.
pub const FRAME_LEN: usize = 8;
/// The kind of the end record.
pub const END_KIND: u16 = 0xffff;
/// Record flag: readers that do not know the kind must refuse the file.
pub const MUST_UNDERSTAND: u16 = 1;

/// Writes records to any byte sink, in one pass.
#[derive(Debug)]
pub struct RecordWriter<W: Write> {
    out: W,
    name: String,
    offset: u64,
    records: u64,
    data_bytes: u64,
    payload: Writer,
}

impl<W: Write> RecordWriter<W> {
    /// Starts a file named `name` (for error messages) by writing `header`.
    pub fn new(out: W, name: &str, header: Header) -> Result<Self> {
        let mut w = RecordWriter {
            out,
            name: name.to_string(),
            offset: 0,
            records: 0,
            data_bytes: 0,
            payload: Writer::new(),
        };
        w.put(&header.encode())?;
        Ok(w)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| Error::io("write", &self.name, e))?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Appends one record.
    pub fn write<R: Record>(&mut self, rec: &R) -> Result<()> {
        let mut payload = std::mem::take(&mut self.payload);
        payload.clear();
        rec.encode(&mut payload);
        let r = self.write_raw(R::KIND, 0, payload.as_bytes());
        self.payload = payload;
        r
    }

    /// Appends one record whose payload is already encoded.
    pub fn write_raw(&mut self, kind: u16, flags: u16, payload: &[u8]) -> Result<()> {
        let limit = record::max_len(kind);
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        if len > limit {
            return Err(Error::Image(ImageError::new(
                &self.name,
                self.offset,
                format!(
                    "a {} record of {len} bytes exceeds its limit of {limit}",
                    record::name(kind)
                ),
            )));
        }
        let mut frame = [0u8; FRAME_LEN];
        frame[0..2].copy_from_slice(&kind.to_le_bytes());
        frame[2..4].copy_from_slice(&flags.to_le_bytes());
        frame[4..8].copy_from_slice(&len.to_le_bytes());
        let mut crc = super::crc::Crc32c::default();
        crc.update(&frame);
        crc.update(payload);
        self.put(&frame)?;
        self.put(payload)?;
        self.put(&crc.finish().to_le_bytes())?;
        if kind != END_KIND {
            self.records += 1;
        }
        Ok(())
    }

    /// Records the size of the companion data file for the end record.
    pub fn set_data_bytes(&mut self, n: u64) {
        self.data_bytes = n;
    }

    /// Bytes written so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Writes the end record, flushes and hands back the sink.
    pub fn finish(mut self) -> Result<W> {
        let mut w = Writer::new();
        w.u64(self.records);
        w.u64(self.data_bytes);
        self.write_raw(END_KIND, MUST_UNDERSTAND, w.as_bytes())?;
        self.out
            .flush()
            .map_err(|e| Error::io("write", &self.name, e))?;
        Ok(self.out)
    }
}

/// One framed record, checked but not yet decoded.
#[derive(Debug, Clone)]
pub struct RawRecord {
    /// The record kind.
    pub kind: u16,
    /// The frame flags.
    pub flags: u16,
    /// Offset of the frame in the file.
    pub offset: u64,
    /// The payload.
    pub payload: Vec<u8>,
}

impl RawRecord {
    /// A bounded reader over the payload, reporting offsets in `file`.
    pub fn reader<'a>(&'a self, file: &'a str) -> Reader<'a> {
        Reader::new(&self.payload, file, self.offset + FRAME_LEN as u64)
    }

    /// Decodes the payload as `T`, which must be its kind.
    pub fn decode<T: Record>(&self, file: &str) -> Result<T, ImageError> {
        if self.kind != T::KIND {
            return Err(ImageError::new(
                file,
                self.offset,
                format!(
                    "expected a {} record, found a {}",
                    T::NAME,
                    record::name(self.kind)
                ),
            ));
        }
        T::decode(&mut self.reader(file))
    }
}

/// What the end record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct End {
    /// Records before the end record.
    pub records: u64,
    /// Size of the companion data file (pages), 0 if none.
    pub data_bytes: u64,
}

/// Reads records from any byte source.
#[derive(Debug)]
pub struct RecordReader<R: Read> {
    input: R,
    file: String,
    header: Header,
    offset: u64,
    records: u64,
    end: Option<End>,
}

impl<R: Read> RecordReader<R> {
    /// Reads and checks the header of `file`.
    pub fn new(mut input: R, file: &str) -> Result<Self, ImageError> {
        let header = Header::read(&mut input, file)?;
        Ok(RecordReader::with_header(input, file, header))
    }

    /// Continues after a header the caller already read and checked.
    pub fn with_header(input: R, file: &str, header: Header) -> Self {
        RecordReader {
            input,
            file: file.to_string(),
            offset: header.len as u64,
            header,
            records: 0,
            end: None,
        }
    }

    /// The file header.
    pub fn header(&self) -> &Header {
        &self.header
    }
    /// The file name used in errors.
    pub fn file(&self) -> &str {
        &self.file
    }
    /// The end record, once reached.
    pub fn end(&self) -> Option<End> {
        self.end
    }
    /// The offset of the next record.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn err(&self, offset: u64, problem: impl Into<String>) -> ImageError {
        ImageError::new(&self.file, offset, problem)
    }

    /// The next record, or `None` after the end record.
    pub fn next_raw(&mut self) -> Result<Option<RawRecord>, ImageError> {
        if self.end.is_some() {
            return Ok(None);
        }
        let at = self.offset;
        let mut frame = [0u8; FRAME_LEN];
        read_frame(&mut self.input, &mut frame, &self.file, at)?;
        let kind = u16::from_le_bytes([frame[0], frame[1]]);
        let flags = u16::from_le_bytes([frame[2], frame[3]]);
        let len = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
        let limit = record::max_len(kind);
        if len > limit {
            return Err(self.err(
                at + 4,
                format!(
                    "{} record claims {len} bytes, the limit is {limit}",
                    record::name(kind)
                ),
            ));
        }
        let payload = self.read_payload(len as usize, at)?;
        let mut crc_bytes = [0u8; 4];
        let crc_at = at + (FRAME_LEN + payload.len()) as u64;
        read_full(&mut self.input, &mut crc_bytes, &self.file, crc_at)?;
        let mut crc = super::crc::Crc32c::default();
        crc.update(&frame);
        crc.update(&payload);
        let (stored, computed) = (u32::from_le_bytes(crc_bytes), crc.finish());
        if stored != computed {
            return Err(self.err(
                at,
                format!(
                    "{} record checksum mismatch (stored {stored:#010x}, computed {computed:#010x})",
                    record::name(kind)
                ),
            ));
        }
        self.offset = crc_at + 4;
        let raw = RawRecord {
            kind,
            flags,
            offset: at,
            payload,
        };
        if kind == END_KIND {
            self.end = Some(self.check_end(&raw)?);
            return Ok(None);
        }
        self.records += 1;
        Ok(Some(raw))
    }

    /// Reads exactly `len` payload bytes, growing the buffer only as data
    /// actually arrives, so a lying length on a short stream allocates little.
    fn read_payload(&mut self, len: usize, at: u64) -> Result<Vec<u8>, ImageError> {
        let mut payload = Vec::with_capacity(len.min(64 << 10));
        let got = (&mut self.input)
            .take(len as u64)
            .read_to_end(&mut payload)
            .map_err(|e| self.err(at, format!("read failed: {e}")))?;
        if got < len {
            return Err(self.err(
                at + (FRAME_LEN + got) as u64,
                format!(
                    "file is truncated inside a record: {} more bytes expected",
                    len - got
                ),
            ));
        }
        Ok(payload)
    }

    fn check_end(&self, raw: &RawRecord) -> Result<End, ImageError> {
        let mut r = raw.reader(&self.file);
        let end = End {
            records: r.u64()?,
            data_bytes: r.u64()?,
        };
        if end.records != self.records {
            return Err(self.err(
                raw.offset,
                format!(
                    "the end record counts {} records but {} were read (records are missing)",
                    end.records, self.records
                ),
            ));
        }
        Ok(end)
    }

    /// The next record whose kind this crest knows (unknown ones without
    /// MUST_UNDERSTAND are skipped), or `None` at the end.
    pub fn next_known(&mut self) -> Result<Option<RawRecord>, ImageError> {
        while let Some(raw) = self.next_raw()? {
            if record::is_known(raw.kind) {
                return Ok(Some(raw));
            }
            if raw.flags & MUST_UNDERSTAND != 0 {
                return Err(self.err(
                    raw.offset,
                    format!(
                        "record kind {} is required but unknown to this crest; use a newer crest",
                        raw.kind
                    ),
                ));
            }
        }
        Ok(None)
    }

    /// Checks that nothing follows the end record (for files, not streams).
    pub fn expect_eof(&mut self) -> Result<(), ImageError> {
        let mut b = [0u8; 1];
        loop {
            return match self.input.read(&mut b) {
                Ok(0) => Ok(()),
                Ok(_) => Err(self.err(self.offset, "data follows the end record")),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => Err(self.err(self.offset, format!("read failed: {e}"))),
            };
        }
    }
}

/// Reads a frame; a clean end of input here means the end record is missing.
fn read_frame(
    input: &mut impl Read,
    frame: &mut [u8],
    file: &str,
    at: u64,
) -> Result<(), ImageError> {
    let mut first = [0u8; 1];
    loop {
        match input.read(&mut first) {
            Ok(0) => {
                return Err(ImageError::new(
                    file,
                    at,
                    "file ends without its end record (truncated, or the dump did not finish)",
                ));
            }
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ImageError::new(file, at, format!("read failed: {e}"))),
        }
    }
    frame[0] = first[0];
    read_full(input, &mut frame[1..], file, at + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::header::{Arch, FileKind};
    use crate::image::rlimits::{Rlimit, Rlimits};

    fn file_of(n: usize) -> (Vec<u8>, Vec<usize>) {
        let mut w = RecordWriter::new(
            Vec::new(),
            "t",
            Header::new(FileKind::Task, Arch::X86_64, 4096),
        )
        .unwrap();
        let mut offsets = Vec::new();
        for i in 0..n {
            offsets.push(w.offset() as usize);
            let limits = vec![Rlimit {
                cur: i as u64,
                max: 100,
            }];
            w.write(&Rlimits { limits }).unwrap();
        }
        offsets.push(w.offset() as usize);
        (w.finish().unwrap(), offsets)
    }

    #[test]
    fn a_record_removed_cleanly_is_noticed_by_the_end_record() {
        let (bytes, offs) = file_of(3);
        let mut cut = bytes[..offs[1]].to_vec();
        cut.extend_from_slice(&bytes[offs[2]..]);
        let mut rr = RecordReader::new(&cut[..], "t").unwrap();
        assert!(rr.next_raw().unwrap().is_some());
        assert!(rr.next_raw().unwrap().is_some());
        let e = rr.next_raw().unwrap_err();
        assert_eq!(e.offset, (offs[3] - (offs[2] - offs[1])) as u64);
        assert!(e.problem.contains("counts 3 records but 2"), "{e}");
    }

    #[test]
    fn lengths_over_the_kind_limit_are_refused_before_reading() {
        let (mut bytes, offs) = file_of(1);
        // rlimits are limited to 4 KiB.
        bytes[offs[0] + 4..offs[0] + 8].copy_from_slice(&5000u32.to_le_bytes());
        let mut rr = RecordReader::new(&bytes[..], "t").unwrap();
        let e = rr.next_raw().unwrap_err();
        assert_eq!(e.offset, offs[0] as u64 + 4);
        assert!(e.problem.contains("limit is 4096"), "{e}");
    }

    #[test]
    fn a_record_over_its_limit_is_not_written() {
        let mut w = RecordWriter::new(
            Vec::new(),
            "t",
            Header::new(FileKind::Task, Arch::X86_64, 4096),
        )
        .unwrap();
        let limits = vec![Rlimit::default(); 300];
        assert!(w.write(&Rlimits { limits }).is_err());
    }
}
