//! The fd kinds of an event loop (4 eventfd, 5 signalfd, 6 timerfd, 7 epoll,
//! 8 inotify): their fields' encoding and `crest show` values. The layout is
//! drawn in the parent module.

use super::FdFile;
use crate::image::codec::{Reader, Writer};
use crate::image::value::Value;
use crate::image::{ImageError, PATH_MAX};

/// One file an epoll instance watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpollTarget {
    /// The fd number it was added with, which still holds that file.
    pub fd: i32,
    /// The event mask (EPOLLIN, EPOLLET...).
    pub events: u32,
    /// The user data epoll_wait returns.
    pub data: u64,
}

/// One inotify watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InotifyWatch {
    /// The watch descriptor.
    pub wd: i32,
    /// The event mask (IN_MODIFY, IN_ONESHOT...).
    pub mask: u32,
    /// The watched file, as crest found it at the dump.
    pub path: Vec<u8>,
}

/// The most targets or watches one fd record holds (the fd record is
/// limited to 16 KiB).
pub const MAX_FD_ITEMS: usize = 512;

/// Encodes kinds 4-8.
pub(super) fn encode(file: &FdFile, w: &mut Writer) {
    match file {
        FdFile::EventFd {
            flags,
            count,
            semaphore,
        } => {
            w.u8(4);
            w.u32(*flags);
            w.u64(*count);
            w.u8(semaphore.map_or(2, u8::from));
        }
        FdFile::SignalFd { flags, sigmask } => {
            w.u8(5);
            w.u32(*flags);
            w.u64(*sigmask);
        }
        FdFile::TimerFd {
            flags,
            clockid,
            settime_flags,
            ticks,
            value_ns,
            interval_ns,
        } => {
            w.u8(6);
            w.u32(*flags);
            w.i32(*clockid);
            w.u32(*settime_flags);
            w.u64(*ticks);
            w.u64(*value_ns);
            w.u64(*interval_ns);
        }
        FdFile::Epoll { flags, targets } => {
            w.u8(7);
            w.u32(*flags);
            w.list(targets, |w, t| {
                w.i32(t.fd);
                w.u32(t.events);
                w.u64(t.data);
            });
        }
        FdFile::Inotify { flags, watches } => {
            w.u8(8);
            w.u32(*flags);
            w.list(watches, |w, x| {
                w.i32(x.wd);
                w.u32(x.mask);
                w.bytes(&x.path);
            });
        }
        _ => {}
    }
}

/// Decodes kinds 4-8.
pub(super) fn decode(kind: u8, r: &mut Reader) -> Result<FdFile, ImageError> {
    let flags = r.u32()?;
    Ok(match kind {
        4 => FdFile::EventFd {
            flags,
            count: r.u64()?,
            semaphore: match r.u8()? {
                0 => Some(false),
                1 => Some(true),
                2 => None,
                v => return Err(r.error(format!("eventfd semaphore byte is {v}, not 0, 1 or 2"))),
            },
        },
        5 => FdFile::SignalFd {
            flags,
            sigmask: r.u64()?,
        },
        6 => FdFile::TimerFd {
            flags,
            clockid: r.i32()?,
            settime_flags: r.u32()?,
            ticks: r.u64()?,
            value_ns: r.u64()?,
            interval_ns: r.u64()?,
        },
        7 => FdFile::Epoll {
            flags,
            targets: r.list("epoll targets", MAX_FD_ITEMS, 16, |r| {
                Ok(EpollTarget {
                    fd: r.i32()?,
                    events: r.u32()?,
                    data: r.u64()?,
                })
            })?,
        },
        _ => FdFile::Inotify {
            flags,
            watches: r.list("inotify watches", MAX_FD_ITEMS, 12, |r| {
                Ok(InotifyWatch {
                    wd: r.i32()?,
                    mask: r.u32()?,
                    path: r.bytes("watched path", PATH_MAX as usize)?,
                })
            })?,
        },
    })
}

/// `crest show` fields of kinds 4-8.
pub(super) fn value(file: &FdFile) -> Vec<(&'static str, Value)> {
    let kind = |k: &str| ("kind", Value::Str(k.into()));
    match file {
        FdFile::EventFd {
            flags,
            count,
            semaphore,
        } => vec![
            kind("eventfd"),
            ("flags", Value::Hex(*flags as u64)),
            ("count", Value::U(*count)),
            ("semaphore", semaphore.map_or(Value::Null, Value::Bool)),
        ],
        FdFile::SignalFd { flags, sigmask } => vec![
            kind("signalfd"),
            ("flags", Value::Hex(*flags as u64)),
            ("sigmask", Value::Hex(*sigmask)),
        ],
        FdFile::TimerFd {
            flags,
            clockid,
            settime_flags,
            ticks,
            value_ns,
            interval_ns,
        } => vec![
            kind("timerfd"),
            ("flags", Value::Hex(*flags as u64)),
            ("clockid", Value::I(*clockid as i64)),
            ("settime_flags", Value::Hex(*settime_flags as u64)),
            ("ticks", Value::U(*ticks)),
            ("value_ns", Value::U(*value_ns)),
            ("interval_ns", Value::U(*interval_ns)),
        ],
        FdFile::Epoll { flags, targets } => vec![
            kind("epoll"),
            ("flags", Value::Hex(*flags as u64)),
            (
                "targets",
                Value::List(
                    targets
                        .iter()
                        .map(|t| {
                            Value::Obj(vec![
                                ("fd", Value::I(t.fd as i64)),
                                ("events", Value::Hex(t.events as u64)),
                                ("data", Value::Hex(t.data)),
                            ])
                        })
                        .collect(),
                ),
            ),
        ],
        FdFile::Inotify { flags, watches } => vec![
            kind("inotify"),
            ("flags", Value::Hex(*flags as u64)),
            (
                "watches",
                Value::List(
                    watches
                        .iter()
                        .map(|x| {
                            Value::Obj(vec![
                                ("wd", Value::I(x.wd as i64)),
                                ("mask", Value::Hex(x.mask as u64)),
                                ("path", Value::path(&x.path)),
                            ])
                        })
                        .collect(),
                ),
            ),
        ],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Fd, Record};
    use super::*;

    fn round_trip(file: FdFile) {
        let fd = Fd {
            fd: 9,
            fd_flags: 1,
            file,
        };
        let mut w = Writer::new();
        fd.encode(&mut w);
        let mut r = Reader::new(w.as_bytes(), "files-1.img", 0);
        assert_eq!(Fd::decode(&mut r).unwrap(), fd);
        assert!(!r.has_more(), "every byte read");
    }

    #[test]
    fn event_loop_kinds_round_trip() {
        for semaphore in [Some(true), Some(false), None] {
            round_trip(FdFile::EventFd {
                flags: 0o4002,
                count: u64::MAX - 1,
                semaphore,
            });
        }
        round_trip(FdFile::SignalFd {
            flags: 2,
            sigmask: 1 << 9,
        });
        round_trip(FdFile::TimerFd {
            flags: 0o4002,
            clockid: 7,
            settime_flags: 3,
            ticks: 4,
            value_ns: 2_998_083_065,
            interval_ns: 250_000_000,
        });
        round_trip(FdFile::Epoll {
            flags: 0o2000002,
            targets: vec![
                EpollTarget {
                    fd: 3,
                    events: 0x8000_0019,
                    data: u64::MAX,
                },
                EpollTarget {
                    fd: 1000,
                    events: 1,
                    data: 0,
                },
            ],
        });
        round_trip(FdFile::Inotify {
            flags: 0,
            watches: vec![InotifyWatch {
                wd: 3,
                mask: 0x102,
                path: b"/tmp/a b".to_vec(),
            }],
        });
    }

    #[test]
    fn damaged_event_loop_records_are_refused() {
        // An eventfd whose semaphore byte is 7.
        let mut w = Writer::new();
        w.i32(3);
        w.u32(0);
        w.u8(4);
        w.u32(2);
        w.u64(5);
        w.u8(7);
        let mut r = Reader::new(w.as_bytes(), "files-1.img", 0);
        assert!(Fd::decode(&mut r).is_err());
        // An epoll claiming more targets than the bytes hold.
        let mut w = Writer::new();
        w.i32(3);
        w.u32(0);
        w.u8(7);
        w.u32(2);
        w.u32(1000);
        w.i32(4);
        let mut r = Reader::new(w.as_bytes(), "files-1.img", 0);
        assert!(Fd::decode(&mut r).is_err());
        // A kind from a newer crest stays unknown.
        let mut w = Writer::new();
        w.i32(3);
        w.u32(0);
        w.u8(9);
        let mut r = Reader::new(w.as_bytes(), "files-1.img", 0);
        assert_eq!(Fd::decode(&mut r).unwrap().file, FdFile::Unknown(9));
    }
}
