//! `/proc/PID/fdinfo/FD`: "key:\tvalue" lines about one open file.
//!
//! Every file has `pos`, `flags` (octal, the open flags incl. O_CLOEXEC as the
//! kernel reports it) and `mnt_id`; most have `ino`. Kind-specific lines
//! (eventfd-count, tfd, inotify, epoll targets...) are kept raw for the
//! modules that handle those kinds; [`anon`] parses them for eventfd,
//! signalfd, timerfd, epoll and inotify.

pub mod anon;

use super::{ParseError, fields, lines, udec};

/// The common fields of an fdinfo file, and the rest raw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FdInfo<'a> {
    /// The file position.
    pub pos: u64,
    /// The open flags (O_*), including O_CLOEXEC for this descriptor.
    pub flags: u32,
    /// The mount id of the file.
    pub mnt_id: u64,
    /// The inode number, when the kernel shows it.
    pub ino: Option<u64>,
    /// Every other line as (key, value), value with leading blanks removed.
    pub extra: Vec<(&'a [u8], &'a [u8])>,
}

/// Parses an fdinfo file.
pub fn parse(text: &[u8]) -> Result<FdInfo<'_>, ParseError> {
    let mut info = FdInfo::default();
    let mut seen_flags = false;
    for (n, line) in lines(text) {
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let (key, value) = (&line[..colon], line[colon + 1..].trim_ascii_start());
        let bad = || ParseError::new(n, format!("bad value for {}", String::from_utf8_lossy(key)));
        let first = fields(value).next().unwrap_or_default();
        match key {
            b"pos" => info.pos = udec(first).ok_or_else(bad)?,
            b"flags" => {
                let text = std::str::from_utf8(first).map_err(|_| bad())?;
                info.flags = u32::from_str_radix(text, 8).map_err(|_| bad())?;
                seen_flags = true;
            }
            b"mnt_id" => info.mnt_id = udec(first).ok_or_else(bad)?,
            b"ino" => info.ino = Some(udec(first).ok_or_else(bad)?),
            _ => info.extra.push((key, value)),
        }
    }
    if !seen_flags {
        return Err(ParseError::new(0, "no flags line"));
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom};
    use std::os::fd::AsRawFd;

    #[test]
    fn parses_a_real_sample() {
        let text = b"pos:\t42\nflags:\t02100002\nmnt_id:\t25\nino:\t1234\neventfd-count:                5\n";
        let i = parse(text).unwrap();
        assert_eq!(
            (i.pos, i.flags, i.mnt_id, i.ino),
            (42, 0o2100002, 25, Some(1234))
        );
        assert_eq!(i.extra, [(&b"eventfd-count"[..], &b"5"[..])]);
    }

    #[test]
    fn agrees_with_the_kernel_for_an_open_file() {
        let mut f = std::fs::File::open("/proc/self/status").unwrap();
        f.seek(SeekFrom::Start(7)).unwrap();
        let text = std::fs::read(format!("/proc/self/fdinfo/{}", f.as_raw_fd())).unwrap();
        let i = parse(&text).unwrap();
        assert_eq!(i.pos, 7);
        assert_eq!(i.flags & libc::O_ACCMODE as u32, libc::O_RDONLY as u32);
        assert_ne!(
            i.flags & libc::O_CLOEXEC as u32,
            0,
            "std opens files close-on-exec"
        );
    }

    #[test]
    fn refuses_bad_values() {
        assert_eq!(parse(b"pos:\tx\nflags:\t0\n").unwrap_err().line, 1);
        assert!(parse(b"pos:\t1\n").is_err());
        assert!(parse(b"flags:\t9\n").is_err());
    }
}
