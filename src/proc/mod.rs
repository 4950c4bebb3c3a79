//! Parsers for the /proc files that describe a process: maps, smaps, status,
//! stat, fdinfo, pagemap, auxv, timers and limits.
//!
//! Each parser works over a byte slice read in one go (so a test can feed it a
//! real sample) and splits lines with memchr without allocating per line.
//! Reading is separate ([`read`]) so the same parser serves a live process and
//! a unit test.

pub mod auxv;
pub mod fdinfo;
pub mod limits;
pub mod maps;
pub mod pagemap;
pub mod smaps;
pub mod stat;
pub mod status;
pub mod timers;

use crate::error::{Error, Result};

/// A parse failure: which /proc file, which line (1-based) and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The line, counting from 1 (0 when the problem is not tied to a line).
    pub line: usize,
    /// What was wrong.
    pub problem: String,
}

impl ParseError {
    fn new(line: usize, problem: impl Into<String>) -> Self {
        ParseError {
            line,
            problem: problem.into(),
        }
    }

    /// Turns the parse failure into crest's error, naming the file.
    pub fn in_file(self, path: &str) -> Error {
        Error::Proc {
            path: path.to_string(),
            line: self.line,
            problem: self.problem,
        }
    }
}

/// Reads `/proc/<pid>/<file>` (pid may be `self` or `<pid>/task/<tid>`) whole.
///
/// The listing is consistent only while the task's address space holds
/// still: seize the target first, and never read this process's own maps
/// through a buffer that grows between reads.
pub fn read(pid: &str, file: &str) -> Result<Vec<u8>> {
    use std::io::Read;
    let path = format!("/proc/{pid}/{file}");
    // /proc files report size 0: std::fs::read would stat the file, then
    // grow its buffer from 32 bytes, one read each time. A page first
    // holds most of them in one read (a dump reads dozens).
    let mut text = Vec::with_capacity(4096);
    std::fs::File::open(&path)
        .and_then(|mut f| f.read_to_end(&mut text))
        .map_err(|e| Error::io("read", path, e))?;
    Ok(text)
}

/// Iterates over the lines of `text` with their 1-based numbers, without the
/// trailing newline; a final line without newline is included.
pub(crate) fn lines(text: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut rest = text;
    let mut number = 0;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        number += 1;
        let (line, next) = match memchr::memchr(b'\n', rest) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = next;
        Some((number, line))
    })
}

/// Parses a hexadecimal number such as `7f12a000` (no `0x`).
pub(crate) fn hex(field: &[u8]) -> Option<u64> {
    if field.is_empty() || field.len() > 16 {
        return None;
    }
    field.iter().try_fold(0u64, |acc, &c| {
        let digit = (c as char).to_digit(16)?;
        Some((acc << 4) | u64::from(digit))
    })
}

/// Parses a decimal number, optionally negative.
pub(crate) fn dec(field: &[u8]) -> Option<i64> {
    std::str::from_utf8(field).ok()?.parse().ok()
}

/// Parses an unsigned decimal number.
pub(crate) fn udec(field: &[u8]) -> Option<u64> {
    std::str::from_utf8(field).ok()?.parse().ok()
}

/// Splits on runs of spaces and tabs.
pub(crate) fn fields(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|&c| c == b' ' || c == b'\t')
        .filter(|f| !f.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_keeps_a_last_line_without_newline() {
        let got: Vec<_> = lines(b"a\nbb\n\nc").collect();
        assert_eq!(got, [(1, &b"a"[..]), (2, b"bb"), (3, b""), (4, b"c")]);
        assert_eq!(lines(b"").count(), 0);
    }

    #[test]
    fn numbers() {
        assert_eq!(hex(b"7fff0000"), Some(0x7fff_0000));
        assert_eq!(hex(b"ffffffffffffffff"), Some(u64::MAX));
        assert_eq!(hex(b"10000000000000000"), None);
        assert_eq!(hex(b"xz"), None);
        assert_eq!(hex(b""), None);
        assert_eq!(dec(b"-1"), Some(-1));
        assert_eq!(udec(b"-1"), None);
    }
}
