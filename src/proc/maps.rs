//! /proc/PID/maps: one line per VMA,
//! `start-end perms offset major:minor inode   [path]`.
//!
//! Only the fields crest's probes need are parsed (range, permissions and
//! the path or `[name]` of special mappings); the path is the rest of the
//! line after the inode, so names with spaces survive.

/// One VMA line of /proc/PID/maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapsEntry<'a> {
    /// First address.
    pub start: u64,
    /// End address (exclusive).
    pub end: u64,
    /// `rwxp`/`rwxs` flags as printed.
    pub perms: &'a [u8],
    /// Path or special name (`[vdso]`), empty for anonymous memory.
    pub path: &'a [u8],
}

impl MapsEntry<'_> {
    /// The size in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the VMA is empty (never, for kernel output).
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// Parses one line (without its newline); None if it is malformed.
pub fn parse_line(line: &[u8]) -> Option<MapsEntry<'_>> {
    let mut fields = Fields { rest: line };
    let range = fields.next()?;
    let dash = memchr::memchr(b'-', range)?;
    let start = super::parse_hex(&range[..dash])?;
    let end = super::parse_hex(&range[dash + 1..])?;
    let perms = fields.next()?;
    // offset, device and inode are not needed by any probe.
    for _ in 0..3 {
        fields.next()?;
    }
    let path = trim_start(fields.rest);
    if end < start || perms.len() != 4 {
        return None;
    }
    Some(MapsEntry {
        start,
        end,
        perms,
        path,
    })
}

/// Iterates over the well-formed lines of a maps file.
pub fn entries(buf: &[u8]) -> impl Iterator<Item = MapsEntry<'_>> {
    buf.split(|&b| b == b'\n').filter_map(parse_line)
}

struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn next(&mut self) -> Option<&'a [u8]> {
        let s = trim_start(self.rest);
        if s.is_empty() {
            return None;
        }
        let end = memchr::memchr(b' ', s).unwrap_or(s.len());
        self.rest = &s[end..];
        Some(&s[..end])
    }
}

fn trim_start(s: &[u8]) -> &[u8] {
    let skip = s.iter().take_while(|&&b| b == b' ').count();
    &s[skip..]
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] =
        b"55d0c8a00000-55d0c8a02000 r--p 00000000 fe:01 1835135                    /usr/bin/cat
55d0c8a02000-55d0c8a07000 r-xp 00002000 fe:01 1835135                    /usr/bin/my file
7f21c58a3000-7f21c58a7000 r--p 00000000 00:00 0                          [vvar]
7f21c58a7000-7f21c58a9000 r--p 00000000 00:00 0                          [vvar_vclock]
7f21c58a9000-7f21c58ab000 r-xp 00000000 00:00 0                          [vdso]
7ffd1c0e4000-7ffd1c105000 rw-p 00000000 00:00 0 
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
";

    #[test]
    fn parses_real_sample() {
        let all: Vec<_> = entries(SAMPLE).collect();
        assert_eq!(all.len(), 7);
        assert_eq!(all[1].path, b"/usr/bin/my file");
        assert_eq!(all[2].path, b"[vvar]");
        assert_eq!(all[2].len(), 16 * 1024);
        assert_eq!(all[3].len(), 8 * 1024);
        assert_eq!(all[4].perms, b"r-xp");
        assert_eq!(all[5].path, b"");
        assert_eq!(all[6].start, 0xffffffffff600000);
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(parse_line(b""), None);
        assert_eq!(parse_line(b"zz-10 r--p 0 0:0 0"), None);
        assert_eq!(parse_line(b"20-10 r--p 0 0:0 0"), None);
        assert_eq!(parse_line(b"10-20 r--p"), None);
    }
}
