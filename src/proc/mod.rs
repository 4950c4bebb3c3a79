//! Parsers for /proc files, over byte slices.
//!
//! Each parser takes the bytes of one read of the file and borrows from
//! them, so a caller reads once (one syscall) and parses without allocating
//! per line; `memchr` finds the line and field boundaries.

pub mod maps;
pub mod stat;

/// Parses a lowercase/uppercase hexadecimal number, all of `s`.
pub(crate) fn parse_hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &c| {
        let d = (c as char).to_digit(16)?;
        Some(acc << 4 | u64::from(d))
    })
}

/// Parses a decimal number, all of `s`.
pub(crate) fn parse_dec(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &c| {
        let d = (c as char).to_digit(10)?;
        acc.checked_mul(10)?.checked_add(u64::from(d))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(parse_hex(b"7f21c58a3000"), Some(0x7f21c58a3000));
        assert_eq!(parse_hex(b"ffffffffff600000"), Some(0xffffffffff600000));
        assert_eq!(parse_hex(b"x1"), None);
        assert_eq!(parse_hex(b""), None);
        assert_eq!(parse_dec(b"32768"), Some(32768));
        assert_eq!(parse_dec(b"99999999999999999999"), None);
        assert_eq!(parse_dec(b"-1"), None);
    }
}
