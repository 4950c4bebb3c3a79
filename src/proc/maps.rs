//! `/proc/PID/maps`: one line per VMA.
//!
//! ```text
//! 7f3c2a000000-7f3c2a021000 rw-p 00000000 00:00 0          [heap]
//! └─ start ──┘ └─ end ───┘ │││└ p private / s shared
//!                          └┴┴─ r w x     offset dev  inode path (rest of line)
//! ```
//!
//! The path is everything after the inode's column, so names with spaces
//! survive; a file that was unlinked ends with ` (deleted)`.

use super::{ParseError, fields, hex, lines, udec};

/// One VMA as the maps file shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapsEntry<'a> {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Readable.
    pub read: bool,
    /// Writable.
    pub write: bool,
    /// Executable.
    pub exec: bool,
    /// `MAP_SHARED` (`s`) rather than private (`p`).
    pub shared: bool,
    /// Offset into the backing file, in bytes.
    pub offset: u64,
    /// Device major number of the backing file.
    pub dev_major: u32,
    /// Device minor number of the backing file.
    pub dev_minor: u32,
    /// Inode of the backing file, 0 for anonymous memory.
    pub inode: u64,
    /// The path or pseudo-name (`[heap]`, `[vdso]`...), empty for anonymous memory.
    pub path: &'a [u8],
}

impl MapsEntry<'_> {
    /// The size in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the VMA is empty (never true for a kernel-produced line).
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// A kernel special mapping such as `[vdso]`, `[vvar]`, `[vsyscall]`;
    /// `[heap]` and `[stack]` are ordinary anonymous memory and are not special.
    pub fn is_special(&self) -> bool {
        matches!(
            self.path,
            b"[vdso]"
                | b"[vvar]"
                | b"[vvar_vclock]"
                | b"[vsyscall]"
                | b"[uprobes]"
                | b"[sigpage]"
                | b"[vectors]"
        )
    }

    /// The backing file was unlinked after it was mapped.
    pub fn is_deleted(&self) -> bool {
        self.inode != 0 && self.path.ends_with(b" (deleted)")
    }
}

/// Parses a whole maps file.
pub fn parse(text: &[u8]) -> Result<Vec<MapsEntry<'_>>, ParseError> {
    lines(text)
        .filter(|(_, line)| !line.is_empty())
        .map(|(n, line)| parse_line(line).ok_or_else(|| ParseError::new(n, "malformed maps line")))
        .collect()
}

/// Parses one line; `None` when it is malformed.
pub fn parse_line(line: &[u8]) -> Option<MapsEntry<'_>> {
    let mut it = fields(line);
    let (start, end) = split_pair(it.next()?, b'-', hex)?;
    let perms = it.next()?;
    let offset = hex(it.next()?)?;
    let (dev_major, dev_minor) = split_pair(it.next()?, b':', hex)?;
    let inode_field = it.next()?;
    let inode = udec(inode_field)?;
    if perms.len() != 4 || start > end {
        return None;
    }
    // The path starts at the first non-blank after the inode column.
    let inode_end = inode_field.as_ptr() as usize + inode_field.len() - line.as_ptr() as usize;
    let rest = &line[inode_end..];
    let skip = rest
        .iter()
        .take_while(|&&c| c == b' ' || c == b'\t')
        .count();
    Some(MapsEntry {
        start,
        end,
        read: flag(perms[0], b'r')?,
        write: flag(perms[1], b'w')?,
        exec: flag(perms[2], b'x')?,
        shared: match perms[3] {
            b's' => true,
            b'p' => false,
            _ => return None,
        },
        offset,
        dev_major: u32::try_from(dev_major).ok()?,
        dev_minor: u32::try_from(dev_minor).ok()?,
        inode,
        path: &rest[skip..],
    })
}

fn flag(c: u8, set: u8) -> Option<bool> {
    match c {
        b'-' => Some(false),
        c if c == set => Some(true),
        _ => None,
    }
}

fn split_pair(field: &[u8], sep: u8, num: fn(&[u8]) -> Option<u64>) -> Option<(u64, u64)> {
    let i = memchr::memchr(sep, field)?;
    Some((num(&field[..i])?, num(&field[i + 1..])?))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const SAMPLE: &[u8] = b"\
5616d8a5e000-5616d8a60000 r--p 00000000 fe:00 247282                     /usr/bin/cat
5616d8a60000-5616d8a65000 r-xp 00002000 fe:00 247282                     /usr/bin/cat
5616da0b1000-5616da0d2000 rw-p 00000000 00:00 0                          [heap]
7f0e5c000000-7f0e5c021000 rw-s 00000000 00:01 1055                       /memfd:buf with space (deleted)
7ffd3b2d6000-7ffd3b2f7000 rw-p 00000000 00:00 0                          [stack]
7ffd3b3e5000-7ffd3b3e9000 r--p 00000000 00:00 0                          [vvar]
7ffd3b3e9000-7ffd3b3eb000 r--p 00000000 00:00 0                          [vvar_vclock]
7ffd3b3eb000-7ffd3b3ed000 r-xp 00000000 00:00 0                          [vdso]
7f0e5c100000-7f0e5c200000 ---p 00000000 00:00 0 
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
";

    #[test]
    fn parses_a_real_sample() {
        let v = parse(SAMPLE).unwrap();
        assert_eq!(v.len(), 10);
        assert_eq!(v[1].start, 0x5616_d8a6_0000);
        assert_eq!(v[1].offset, 0x2000);
        assert!(v[1].read && v[1].exec && !v[1].write && !v[1].shared);
        assert_eq!(
            (v[1].dev_major, v[1].dev_minor, v[1].inode),
            (0xfe, 0, 247282)
        );
        assert_eq!(v[1].path, b"/usr/bin/cat");
        assert_eq!(v[3].path, b"/memfd:buf with space (deleted)");
        assert!(v[3].shared && v[3].is_deleted());
        assert_eq!(v[8].path, b"");
        assert!(!v[8].read && !v[8].write);
        assert!(v[5].is_special() && v[6].is_special() && v[7].is_special() && v[9].is_special());
        assert!(!v[2].is_special());
        assert_eq!(v[7].len(), 0x2000);
    }

    /// Reads a /proc file of this process into a buffer allocated
    /// beforehand: growing a buffer between reads changes the very mappings
    /// being listed, and the lines then overlap.
    pub(crate) fn read_self_once(file: &str) -> Vec<u8> {
        use std::io::Read;
        let mut buf = vec![0u8; 1 << 20];
        let mut f = std::fs::File::open(format!("/proc/self/{file}")).unwrap();
        let mut len = 0;
        loop {
            let n = f.read(&mut buf[len..]).unwrap();
            if n == 0 {
                break;
            }
            len += n;
            assert!(
                len < buf.len(),
                "/proc/self/{file} is larger than the buffer"
            );
        }
        buf.truncate(len);
        buf
    }

    #[test]
    fn parses_this_process() {
        let text = read_self_once("maps");
        let v = parse(&text).unwrap();
        assert!(v.windows(2).all(|w| w[0].end <= w[1].start));
        let here = parses_this_process as fn() as usize as u64;
        assert!(v.iter().any(|e| e.exec && e.start <= here && here < e.end));
    }

    #[test]
    fn refuses_malformed_lines() {
        for bad in [
            &b"zz-10 rw-p 0 00:00 0"[..],
            b"10-20 rw-q 0 00:00 0",
            b"20-10 rw-p 0 00:00 0",
            b"10-20 rw-p 0 00:00",
            b"10-20 rw- 0 00:00 0",
            b"10-20 rw-p 0 0000 0",
        ] {
            assert!(
                parse_line(bad).is_none(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(parse(b"10-20 rw-p 0 00:00 0\nbad\n").unwrap_err().line, 2);
    }
}
