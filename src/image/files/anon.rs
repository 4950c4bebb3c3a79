//! The fd kinds of an event loop (4 eventfd, 5 signalfd, 6 timerfd, 7 epoll,
//! 8 inotify): their fields' encoding and `crest show` values. The layout is
//! drawn in the parent module.

use super::FdFile;
use super::fields::{self, Field, Fields};
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

/// The kind number, `crest show` name and fields of kinds 4-6.
fn field_list(file: &FdFile) -> Option<(u8, &'static str, Fields<'_>)> {
    use Field::*;
    Some(match *file {
        FdFile::EventFd {
            flags,
            count,
            semaphore,
        } => (
            4,
            "eventfd",
            vec![
                ("flags", Hex(flags)),
                ("count", U64(count)),
                ("semaphore", Tri(semaphore)),
            ],
        ),
        FdFile::SignalFd { flags, sigmask } => (
            5,
            "signalfd",
            vec![("flags", Hex(flags)), ("sigmask", Hex64(sigmask))],
        ),
        FdFile::TimerFd {
            flags,
            clockid,
            settime_flags,
            ticks,
            value_ns,
            interval_ns,
        } => (
            6,
            "timerfd",
            vec![
                ("flags", Hex(flags)),
                ("clockid", I32(clockid)),
                ("settime_flags", Hex(settime_flags)),
                ("ticks", U64(ticks)),
                ("value_ns", U64(value_ns)),
                ("interval_ns", U64(interval_ns)),
            ],
        ),
        _ => return None,
    })
}

/// Encodes kinds 4-8.
pub(super) fn encode(file: &FdFile, w: &mut Writer) {
    if let Some((kind, _, f)) = field_list(file) {
        return fields::encode(kind, &f, w);
    }
    match file {
        FdFile::Epoll { flags, targets } => {
            fields::encode(7, &[("flags", Field::Hex(*flags))], w);
            w.list(targets, |w, t| {
                w.i32(t.fd);
                w.u32(t.events);
                w.u64(t.data);
            });
        }
        FdFile::Inotify { flags, watches } => {
            fields::encode(8, &[("flags", Field::Hex(*flags))], w);
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
    if let Some((_, name, f)) = field_list(file) {
        return fields::value(name, &f);
    }
    let (name, flags, key, items) = match file {
        FdFile::Epoll { flags, targets } => {
            let items = targets.iter().map(|t| {
                Value::Obj(vec![
                    ("fd", Value::I(t.fd as i64)),
                    ("events", Value::Hex(t.events as u64)),
                    ("data", Value::Hex(t.data)),
                ])
            });
            ("epoll", flags, "targets", items.collect())
        }
        FdFile::Inotify { flags, watches } => {
            let items = watches.iter().map(|x| {
                Value::Obj(vec![
                    ("wd", Value::I(x.wd as i64)),
                    ("mask", Value::Hex(x.mask as u64)),
                    ("path", Value::path(&x.path)),
                ])
            });
            ("inotify", flags, "watches", items.collect())
        }
        _ => return Vec::new(),
    };
    let mut v = fields::value(name, &[("flags", Field::Hex(*flags))]);
    v.push((key, Value::List(items)));
    v
}

#[cfg(test)]
mod tests {
    use super::super::fields::round_trip;
    use super::super::{Fd, Record};
    use super::*;

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
