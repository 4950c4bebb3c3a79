//! The kind-specific lines of `/proc/PID/fdinfo/FD` for the anonymous-inode
//! objects of an event loop: eventfd (fs/eventfd.c), signalfd
//! (fs/signalfd.c), timerfd (fs/timerfd.c), epoll (fs/eventpoll.c) and
//! inotify (fs/notify/fdinfo.c).
//!
//! Each parser takes the `extra` lines [`super::parse`] kept raw and returns
//! what a restore needs. The kernel prints these with fixed formats:
//!
//! ```text
//!  eventfd-count:  %16llx         eventfd-semaphore: %d   (added in 2023; 6.1 lacks it)
//!  sigmask:        %016llx        (bit n-1 = signal n)
//!  clockid: %d   ticks: %llu   settime flags: 0%o
//!  it_value: (%llu, %llu)   it_interval: (%llu, %llu)   (seconds, nanoseconds)
//!  tfd: %8d events: %8x data: %16llx  pos:%lli ino:%lx sdev:%x
//!  inotify wd:%x ino:%lx sdev:%x mask:%x ignored_mask:%x
//!          [fhandle-bytes:%x fhandle-type:%x f_handle:%02x...]
//! ```
//!
//! The inotify wd, ino, sdev and mask are hexadecimal, the epoll tfd decimal.

use super::super::{ParseError, fields, hex, udec};
use super::FdInfo;

/// What fdinfo shows of a timerfd.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimerFdInfo {
    /// The clock id.
    pub clockid: i32,
    /// Expirations not read yet.
    pub ticks: u64,
    /// The flags of the last settime (TFD_TIMER_ABSTIME = 1,
    /// TFD_TIMER_CANCEL_ON_SET = 2).
    pub settime_flags: u32,
    /// Time left until the next expiration, in nanoseconds.
    pub value_ns: u64,
    /// The period in nanoseconds.
    pub interval_ns: u64,
}

/// One epoll target line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpollTfd {
    /// The fd number it was added with.
    pub tfd: i32,
    /// The event mask.
    pub events: u32,
    /// The user data.
    pub data: u64,
    /// The inode number of the target file.
    pub ino: u64,
}

/// One inotify watch line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InotifyMark {
    /// The watch descriptor.
    pub wd: i32,
    /// The inode number.
    pub ino: u64,
    /// The superblock's device, kernel encoding (major << 20 | minor).
    pub sdev: u64,
    /// The event mask.
    pub mask: u32,
    /// The file handle type and bytes, when the kernel shows them.
    pub handle: Option<(i32, Vec<u8>)>,
}

fn value<'a>(info: &FdInfo<'a>, key: &[u8]) -> Result<&'a [u8], ParseError> {
    info.extra
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| *v)
        .ok_or_else(|| ParseError::new(0, format!("no {} line", String::from_utf8_lossy(key))))
}

fn bad(what: &str) -> ParseError {
    ParseError::new(0, format!("bad value for {what}"))
}

/// An eventfd's counter and, when shown, its EFD_SEMAPHORE flag.
pub fn eventfd(info: &FdInfo<'_>) -> Result<(u64, Option<bool>), ParseError> {
    let count =
        hex(value(info, b"eventfd-count")?.trim_ascii()).ok_or_else(|| bad("eventfd-count"))?;
    let semaphore = match value(info, b"eventfd-semaphore") {
        Ok(v) => Some(udec(v.trim_ascii()).ok_or_else(|| bad("eventfd-semaphore"))? != 0),
        Err(_) => None,
    };
    Ok((count, semaphore))
}

/// A signalfd's mask.
pub fn signalfd(info: &FdInfo<'_>) -> Result<u64, ParseError> {
    hex(value(info, b"sigmask")?.trim_ascii()).ok_or_else(|| bad("sigmask"))
}

/// "(seconds, nanoseconds)" as nanoseconds.
fn timespec(v: &[u8], what: &str) -> Result<u64, ParseError> {
    let inner = v
        .trim_ascii()
        .strip_prefix(b"(")
        .and_then(|v| v.strip_suffix(b")"))
        .ok_or_else(|| bad(what))?;
    let comma = memchr::memchr(b',', inner).ok_or_else(|| bad(what))?;
    let sec = udec(inner[..comma].trim_ascii()).ok_or_else(|| bad(what))?;
    let nsec = udec(inner[comma + 1..].trim_ascii()).ok_or_else(|| bad(what))?;
    sec.checked_mul(1_000_000_000)
        .and_then(|ns| ns.checked_add(nsec))
        .ok_or_else(|| bad(what))
}

/// A timerfd's clock, ticks, settime flags and times.
pub fn timerfd(info: &FdInfo<'_>) -> Result<TimerFdInfo, ParseError> {
    let clockid = udec(value(info, b"clockid")?.trim_ascii()).ok_or_else(|| bad("clockid"))?;
    let flags = std::str::from_utf8(value(info, b"settime flags")?.trim_ascii())
        .ok()
        .and_then(|t| u32::from_str_radix(t, 8).ok())
        .ok_or_else(|| bad("settime flags"))?;
    Ok(TimerFdInfo {
        clockid: i32::try_from(clockid).map_err(|_| bad("clockid"))?,
        ticks: udec(value(info, b"ticks")?.trim_ascii()).ok_or_else(|| bad("ticks"))?,
        settime_flags: flags,
        value_ns: timespec(value(info, b"it_value")?, "it_value")?,
        interval_ns: timespec(value(info, b"it_interval")?, "it_interval")?,
    })
}

/// The value after `name:` among `key:value` fields.
fn field<'a>(fs: &[&'a [u8]], name: &[u8]) -> Option<&'a [u8]> {
    fs.iter().find_map(|f| {
        f.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(b":"))
    })
}

/// Every target of an epoll instance, in the kernel's order.
pub fn epoll(info: &FdInfo<'_>) -> Result<Vec<EpollTfd>, ParseError> {
    let mut out = Vec::new();
    for (_, v) in info.extra.iter().filter(|(k, _)| *k == b"tfd") {
        // "3 events: 19 data: 3  pos:0 ino:40e sdev:10": the events and data
        // values follow their labels as separate fields.
        let fs: Vec<&[u8]> = fields(v).collect();
        let after = |label: &[u8]| {
            fs.iter()
                .position(|f| *f == label)
                .and_then(|i| fs.get(i + 1))
                .copied()
        };
        let tfd = fs.first().and_then(|f| udec(f)).ok_or_else(|| bad("tfd"))?;
        out.push(EpollTfd {
            tfd: i32::try_from(tfd).map_err(|_| bad("tfd"))?,
            events: after(b"events:")
                .and_then(hex)
                .and_then(|e| u32::try_from(e).ok())
                .ok_or_else(|| bad("tfd events"))?,
            data: after(b"data:")
                .and_then(hex)
                .ok_or_else(|| bad("tfd data"))?,
            ino: field(&fs, b"ino")
                .and_then(hex)
                .ok_or_else(|| bad("tfd ino"))?,
        });
    }
    Ok(out)
}

/// Every watch of an inotify instance, in increasing wd order.
pub fn inotify(info: &FdInfo<'_>) -> Result<Vec<InotifyMark>, ParseError> {
    let mut out = Vec::new();
    // The line "inotify wd:1 ino:..." splits at its first colon into the key
    // "inotify wd" and the value "1 ino:...".
    for (_, v) in info.extra.iter().filter(|(k, _)| *k == b"inotify wd") {
        let fs: Vec<&[u8]> = fields(v).collect();
        let num = |name: &[u8]| field(&fs, name).and_then(hex);
        let wd = fs
            .first()
            .and_then(|f| hex(f))
            .ok_or_else(|| bad("inotify wd"))?;
        let handle = match (num(b"fhandle-type"), field(&fs, b"f_handle")) {
            (Some(t), Some(h)) => Some((t as i32, hex_bytes(h).ok_or_else(|| bad("f_handle"))?)),
            _ => None,
        };
        out.push(InotifyMark {
            wd: i32::try_from(wd).map_err(|_| bad("inotify wd"))?,
            ino: num(b"ino").ok_or_else(|| bad("inotify ino"))?,
            sdev: num(b"sdev").ok_or_else(|| bad("inotify sdev"))?,
            mask: num(b"mask")
                .and_then(|m| u32::try_from(m).ok())
                .ok_or_else(|| bad("inotify mask"))?,
            handle,
        });
    }
    out.sort_by_key(|m| m.wd);
    Ok(out)
}

/// "6302000000000000" as bytes.
fn hex_bytes(h: &[u8]) -> Option<Vec<u8>> {
    if h.len() % 2 != 0 || h.len() > 256 {
        return None;
    }
    h.chunks(2).map(|c| hex(c).map(|b| b as u8)).collect()
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;

    // Samples read on Linux 6.18 from a python process.
    const EVENTFD: &[u8] = b"pos:\t0\nflags:\t04002\nmnt_id:\t17\nino:\t1038\neventfd-count:                5\neventfd-id: 1\neventfd-semaphore: 1\n";
    const SIGNALFD: &[u8] =
        b"pos:\t0\nflags:\t04002\nmnt_id:\t17\nino:\t1038\nsigmask:\t0000000000000200\n";
    const TIMERFD: &[u8] = b"pos:\t0\nflags:\t02\nmnt_id:\t17\nino:\t1038\nclockid: 1\nticks: 0\nsettime flags: 03\nit_value: (2, 998083065)\nit_interval: (0, 250000000)\n";
    const EPOLL: &[u8] = b"pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t1038\ntfd:        3 events: 80000019 data:                3  pos:0 ino:40e sdev:10\ntfd:       15 events:       19 data: ffffffffffffffff  pos:0 ino:40e sdev:10\n";
    const INOTIFY: &[u8] = b"pos:\t0\nflags:\t00\nmnt_id:\t17\nino:\t1038\ninotify wd:2 ino:263 sdev:fe00000 mask:fff ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:6302000000000000\ninotify wd:1 ino:3c4a7 sdev:fe00000 mask:2 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:a7c4030000000000\n";

    #[test]
    fn eventfd_count_is_hex_and_semaphore_optional() {
        assert_eq!(eventfd(&parse(EVENTFD).unwrap()).unwrap(), (5, Some(true)));
        // 6.1 does not print eventfd-semaphore.
        let old = b"pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t1\neventfd-count:               1a\neventfd-id: 3\n";
        assert_eq!(eventfd(&parse(old).unwrap()).unwrap(), (26, None));
        assert!(eventfd(&parse(SIGNALFD).unwrap()).is_err());
    }

    #[test]
    fn signalfd_mask() {
        assert_eq!(signalfd(&parse(SIGNALFD).unwrap()).unwrap(), 1 << 9);
    }

    #[test]
    fn timerfd_fields() {
        let t = timerfd(&parse(TIMERFD).unwrap()).unwrap();
        assert_eq!(
            t,
            TimerFdInfo {
                clockid: 1,
                ticks: 0,
                settime_flags: 3,
                value_ns: 2_998_083_065,
                interval_ns: 250_000_000
            }
        );
        let broken = b"flags:\t02\nclockid: 1\nticks: 0\nsettime flags: 00\nit_value: (2 99)\nit_interval: (0, 0)\n";
        assert!(timerfd(&parse(broken).unwrap()).is_err());
    }

    #[test]
    fn epoll_targets() {
        let t = epoll(&parse(EPOLL).unwrap()).unwrap();
        assert_eq!(
            t,
            [
                EpollTfd {
                    tfd: 3,
                    events: 0x8000_0019,
                    data: 3,
                    ino: 0x40e
                },
                EpollTfd {
                    tfd: 15,
                    events: 0x19,
                    data: u64::MAX,
                    ino: 0x40e
                },
            ]
        );
        assert!(epoll(&parse(TIMERFD).unwrap()).unwrap().is_empty());
    }

    #[test]
    fn inotify_watches_sorted_by_wd() {
        let w = inotify(&parse(INOTIFY).unwrap()).unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(
            (w[0].wd, w[0].ino, w[0].sdev, w[0].mask),
            (1, 0x3c4a7, 0xfe0_0000, 2)
        );
        assert_eq!(w[0].handle, Some((1, vec![0xa7, 0xc4, 3, 0, 0, 0, 0, 0])));
        assert_eq!((w[1].wd, w[1].mask), (2, 0xfff));
        let plain = b"flags:\t0\ninotify wd:a ino:5 sdev:800001 mask:2 ignored_mask:0\n";
        let w = inotify(&parse(plain).unwrap()).unwrap();
        assert_eq!((w[0].wd, w[0].handle.clone()), (10, None));
    }
}
