//! The field codec inside a record payload: little-endian integers, byte
//! strings and counted lists.
//!
//! The [`Reader`] trusts nothing. It never reads past its payload, every
//! variable length is checked against the field's own limit *and* against the
//! bytes that remain before anything is allocated (a count of `n` elements of
//! at least `m` encoded bytes each needs `n * m` bytes left), and every
//! allocation it makes is charged to a budget proportional to the payload, so
//! a decode can never allocate more than a small multiple of what it read.
//!
//! ```text
//!  u8/u16/u32/u64/i32/i64   fixed width, little-endian
//!  bytes / string / path    u32 length, then that many bytes
//!  list                     u32 count, then count elements
//! ```
//!
//! Fields are appended in order; a decoder reads the fields it knows and
//! ignores the rest of the payload, which is how newer minor versions add
//! trailing fields without breaking older readers.

use super::ImageError;

/// How many bytes a decode may allocate per payload byte (plus a constant):
/// decoded structs are larger than their encodings, never by more than this.
pub const BUDGET_FACTOR: usize = 8;
/// The constant part of the budget, for records with empty lists.
pub const BUDGET_BASE: usize = 4096;

/// Builds a record payload.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty payload.
    pub fn new() -> Self {
        Writer::default()
    }
    /// The payload so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }
    /// Empties the payload, keeping its allocation.
    pub fn clear(&mut self) {
        self.buf.clear();
    }
    /// Appends a `u8`.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    /// Appends a `u16`.
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Appends a `u32`.
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Appends a `u64`.
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Appends an `i32`.
    pub fn i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Appends an `i64`.
    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Appends bytes with no length (fixed-size fields such as a siginfo).
    pub fn raw(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }
    /// Appends a length-prefixed byte string.
    pub fn bytes(&mut self, v: &[u8]) {
        self.count(v.len());
        self.buf.extend_from_slice(v);
    }
    /// Appends a length-prefixed UTF-8 string.
    pub fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
    /// Appends a list count. Counts above `u32::MAX` cannot be encoded; the
    /// field limits keep every real count far below it.
    pub fn count(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
    /// Appends a counted list, each element written by `f`.
    pub fn list<T>(&mut self, items: &[T], mut f: impl FnMut(&mut Writer, &T)) {
        self.count(items.len());
        for item in items {
            f(self, item);
        }
    }
}

/// Decodes a record payload, bounded in reads and allocations.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    file: &'a str,
    base: u64,
    budget: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `payload`, which starts at byte `base` of `file` (both
    /// only for error messages).
    pub fn new(payload: &'a [u8], file: &'a str, base: u64) -> Self {
        Reader {
            buf: payload,
            pos: 0,
            file,
            base,
            budget: payload.len().saturating_mul(BUDGET_FACTOR) + BUDGET_BASE,
        }
    }

    /// An error at the current position.
    pub fn error(&self, problem: impl Into<String>) -> ImageError {
        ImageError::new(self.file, self.base + self.pos as u64, problem)
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Bytes of allocation budget left.
    pub fn budget_left(&self) -> usize {
        self.budget
    }

    /// Charges `bytes` of allocation to the budget, or fails.
    pub fn charge(&mut self, bytes: usize) -> Result<(), ImageError> {
        if bytes > self.budget {
            return Err(self.error(format!(
                "decoding would allocate {bytes} more bytes, over the limit for this record"
            )));
        }
        self.budget -= bytes;
        Ok(())
    }

    /// The next `n` bytes, borrowed.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], ImageError> {
        if n > self.remaining() {
            return Err(self.error(format!(
                "record ends early: {n} bytes needed, {} left",
                self.remaining()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// A fixed-size array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], ImageError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    /// A `u8`.
    pub fn u8(&mut self) -> Result<u8, ImageError> {
        Ok(self.array::<1>()?[0])
    }
    /// A `u16`.
    pub fn u16(&mut self) -> Result<u16, ImageError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    /// A `u32`.
    pub fn u32(&mut self) -> Result<u32, ImageError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    /// A `u64`.
    pub fn u64(&mut self) -> Result<u64, ImageError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    /// An `i32`.
    pub fn i32(&mut self) -> Result<i32, ImageError> {
        Ok(i32::from_le_bytes(self.array()?))
    }
    /// An `i64`.
    pub fn i64(&mut self) -> Result<i64, ImageError> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    /// A `u8` that must be 0 or 1.
    pub fn bool(&mut self) -> Result<bool, ImageError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(self.error(format!("flag byte is {v}, not 0 or 1"))),
        }
    }

    /// A list count of elements of at least `min_size` encoded bytes each,
    /// checked against `max` and against the bytes left.
    pub fn count(&mut self, what: &str, max: usize, min_size: usize) -> Result<usize, ImageError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(self.error(format!("{what}: {n} entries, the limit is {max}")));
        }
        if n.saturating_mul(min_size.max(1)) > self.remaining() {
            return Err(self.error(format!(
                "{what}: {n} entries cannot fit in the {} bytes left",
                self.remaining()
            )));
        }
        Ok(n)
    }

    /// A length-prefixed byte string of at most `max` bytes.
    pub fn bytes(&mut self, what: &str, max: usize) -> Result<Vec<u8>, ImageError> {
        let n = self.count(what, max, 1)?;
        self.charge(n)?;
        Ok(self.take(n)?.to_vec())
    }

    /// A length-prefixed UTF-8 string of at most `max` bytes.
    pub fn string(&mut self, what: &str, max: usize) -> Result<String, ImageError> {
        let at = self.pos;
        let b = self.bytes(what, max)?;
        String::from_utf8(b).map_err(|_| {
            ImageError::new(
                self.file,
                self.base + at as u64,
                format!("{what} is not UTF-8"),
            )
        })
    }

    /// A counted list of at most `max` elements of at least `min_size`
    /// encoded bytes, each decoded by `f`.
    pub fn list<T>(
        &mut self,
        what: &str,
        max: usize,
        min_size: usize,
        mut f: impl FnMut(&mut Reader<'a>) -> Result<T, ImageError>,
    ) -> Result<Vec<T>, ImageError> {
        let n = self.count(what, max, min_size)?;
        self.charge(n.saturating_mul(std::mem::size_of::<T>()))?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(f(self)?);
        }
        Ok(v)
    }

    /// Whether a trailing field added by a later minor version is present.
    pub fn has_more(&self) -> bool {
        self.pos < self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_and_strings_round_trip() {
        let mut w = Writer::new();
        w.u8(7);
        w.u16(0xbeef);
        w.u32(0xdead_beef);
        w.u64(u64::MAX - 1);
        w.i32(-5);
        w.i64(i64::MIN);
        w.str("héllo");
        w.list(&[1u32, 2, 3], |w, v| w.u32(*v));
        let b = w.as_bytes().to_vec();
        // Little-endian on the wire whatever the host is.
        assert_eq!(&b[1..3], &[0xef, 0xbe]);
        let mut r = Reader::new(&b, "t", 0);
        assert_eq!(r.u8().unwrap(), 7);
        assert_eq!(r.u16().unwrap(), 0xbeef);
        assert_eq!(r.u32().unwrap(), 0xdead_beef);
        assert_eq!(r.u64().unwrap(), u64::MAX - 1);
        assert_eq!(r.i32().unwrap(), -5);
        assert_eq!(r.i64().unwrap(), i64::MIN);
        assert_eq!(r.string("s", 100).unwrap(), "héllo");
        assert_eq!(r.list("l", 10, 4, |r| r.u32()).unwrap(), [1, 2, 3]);
        assert!(!r.has_more());
        assert!(r.u8().is_err());
    }

    #[test]
    fn lengths_are_checked_before_allocating() {
        // A count of 4 billion in a 4-byte payload must fail without allocating.
        let b = u32::MAX.to_le_bytes();
        let mut r = Reader::new(&b, "f", 100);
        let e = r.bytes("data", usize::MAX).unwrap_err();
        assert!(e.problem.contains("cannot fit"), "{e}");
        assert_eq!(e.offset, 104);
        let mut r = Reader::new(&b, "f", 0);
        assert!(r.list("l", 10, 0, |r| r.u8()).is_err());
        let mut w = Writer::new();
        w.bytes(b"abcdef");
        let mut r = Reader::new(w.as_bytes(), "f", 0);
        assert!(
            r.bytes("short", 5)
                .unwrap_err()
                .problem
                .contains("limit is 5")
        );
    }

    #[test]
    fn the_budget_stops_allocation_amplification() {
        // 1000 zero-size-encoded elements that each decode into 24 bytes of Vec
        // header would allocate far more than the payload: the budget refuses.
        let mut w = Writer::new();
        w.u32(100_000);
        w.raw(&[0u8; 100_000]);
        let mut r = Reader::new(w.as_bytes(), "f", 0);
        let e = r
            .list("nested", usize::MAX, 1, |r| {
                r.u8()?;
                Ok(vec![0u64; 0])
            })
            .unwrap_err();
        assert!(e.problem.contains("allocate"), "{e}");
    }

    #[test]
    fn bad_utf8_and_flags_are_errors() {
        let mut w = Writer::new();
        w.bytes(&[0xff, 0xfe]);
        w.u8(2);
        let mut r = Reader::new(w.as_bytes(), "f", 0);
        assert!(r.string("s", 10).is_err());
        let mut r = Reader::new(&w.as_bytes()[6..], "f", 0);
        assert!(r.bool().is_err());
    }
}
