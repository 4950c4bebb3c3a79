//! File records (files-PID.img): one record per open file descriptor, and
//! one pipe-data record per pipe holding what was buffered in it.
//!
//! A file is identified at dump time by (dev, ino, size, mtime, mode) so a
//! restore can refuse a file that changed since, instead of reopening a
//! different file at a stale offset. Directories are regular records whose
//! mode says S_IFDIR. A pipe's two ends share a pipe id (its inode number);
//! its data is stored once, in a pipe-data record, whichever end is dumped.
//!
//! ```text
//!  file id:    u64 dev | u64 ino | u64 size | i64 mtime_ns | u32 mode        (36 bytes)
//!  fd:         i32 fd | u32 fd_flags (FD_CLOEXEC) | u8 kind, then by kind:
//!     1 reg:   path | u32 open_flags | u64 pos | file id
//!     2 pipe:  u64 pipe_id | u32 open_flags
//!     3 chr:   path | u32 open_flags | u64 rdev | u64 pos
//!     4 eventfd:  u32 open_flags | u64 count | u8 semaphore (0 no, 1 yes, 2 not shown)
//!     5 signalfd: u32 open_flags | u64 sigmask
//!     6 timerfd:  u32 open_flags | i32 clockid | u32 settime_flags | u64 ticks
//!                 | u64 value_ns (remaining) | u64 interval_ns
//!     7 epoll:    u32 open_flags | u32 n | n x (i32 fd | u32 events | u64 data)
//!     8 inotify:  u32 open_flags | u32 n | n x (i32 wd | u32 mask | path)
//!  pipe-data:  u64 pipe_id | bytes data
//! ```
//!
//! Kinds 4-8 are the anonymous-inode objects of an event loop; an older
//! crest reads them as [`FdFile::Unknown`] and refuses them by number.
//!
//! An fd kind a newer crest added decodes as [`FdFile::Unknown`]; `crest show`
//! prints it and a restore refuses it by name.

use super::codec::{Reader, Writer};
use super::record::Record;
use super::value::Value;
use super::{ImageError, MAX_RECORD, PATH_MAX};

/// What identifies a file's content at dump time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileId {
    /// st_dev.
    pub dev: u64,
    /// st_ino.
    pub ino: u64,
    /// st_size.
    pub size: u64,
    /// st_mtime in nanoseconds.
    pub mtime_ns: i64,
    /// st_mode (type and permissions).
    pub mode: u32,
}

impl FileId {
    /// Appends the 36 bytes.
    pub fn encode(&self, w: &mut Writer) {
        w.u64(self.dev);
        w.u64(self.ino);
        w.u64(self.size);
        w.i64(self.mtime_ns);
        w.u32(self.mode);
    }
    /// Reads the 36 bytes.
    pub fn decode(r: &mut Reader) -> Result<FileId, ImageError> {
        Ok(FileId {
            dev: r.u64()?,
            ino: r.u64()?,
            size: r.u64()?,
            mtime_ns: r.i64()?,
            mode: r.u32()?,
        })
    }
    /// For `crest show`.
    pub fn to_value(&self) -> Value {
        Value::Obj(vec![
            ("dev", Value::Hex(self.dev)),
            ("ino", Value::U(self.ino)),
            ("size", Value::U(self.size)),
            ("mtime_ns", Value::I(self.mtime_ns)),
            ("mode", Value::Str(format!("{:o}", self.mode))),
        ])
    }
}

/// What an fd refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FdFile {
    /// A regular file or directory.
    Reg {
        /// The path at dump time.
        path: Vec<u8>,
        /// O_* flags (O_APPEND, O_RDWR...).
        flags: u32,
        /// The file position.
        pos: u64,
        /// Identity to validate at restore.
        id: FileId,
    },
    /// One end of a pipe.
    Pipe {
        /// The pipe's inode number, shared by both ends.
        pipe_id: u64,
        /// O_* flags (which end, O_NONBLOCK).
        flags: u32,
    },
    /// A character device (/dev/null, a tty...).
    Chr {
        /// The path at dump time.
        path: Vec<u8>,
        /// O_* flags.
        flags: u32,
        /// The device number.
        rdev: u64,
        /// The file position.
        pos: u64,
    },
    /// An eventfd.
    EventFd {
        /// O_* flags (O_NONBLOCK).
        flags: u32,
        /// The counter.
        count: u64,
        /// EFD_SEMAPHORE, when the kernel shows it (kernels after 6.1).
        semaphore: Option<bool>,
    },
    /// A signalfd.
    SignalFd {
        /// O_* flags (O_NONBLOCK).
        flags: u32,
        /// The signals it reads, bit `n - 1` for signal `n`.
        sigmask: u64,
    },
    /// A timerfd.
    TimerFd {
        /// O_* flags (O_NONBLOCK).
        flags: u32,
        /// The clock (CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_BOOTTIME...).
        clockid: i32,
        /// The flags of the last timerfd_settime (TFD_TIMER_ABSTIME...).
        settime_flags: u32,
        /// Expirations not read yet.
        ticks: u64,
        /// Time left until the next expiration, 0 when disarmed.
        value_ns: u64,
        /// The period, 0 for a one-shot timer.
        interval_ns: u64,
    },
    /// An epoll instance.
    Epoll {
        /// O_* flags.
        flags: u32,
        /// What it watches, in the kernel's order.
        targets: Vec<EpollTarget>,
    },
    /// An inotify instance.
    Inotify {
        /// O_* flags (O_NONBLOCK).
        flags: u32,
        /// Its watches, in increasing wd order.
        watches: Vec<InotifyWatch>,
    },
    /// A kind a newer crest wrote.
    Unknown(u8),
}

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

/// One file descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fd {
    /// The fd number.
    pub fd: i32,
    /// FD_CLOEXEC.
    pub fd_flags: u32,
    /// What it refers to.
    pub file: FdFile,
}

impl Record for Fd {
    const KIND: u16 = 13;
    const NAME: &'static str = "fd";

    fn encode(&self, w: &mut Writer) {
        w.i32(self.fd);
        w.u32(self.fd_flags);
        match &self.file {
            FdFile::Reg {
                path,
                flags,
                pos,
                id,
            } => {
                w.u8(1);
                w.bytes(path);
                w.u32(*flags);
                w.u64(*pos);
                id.encode(w);
            }
            FdFile::Pipe { pipe_id, flags } => {
                w.u8(2);
                w.u64(*pipe_id);
                w.u32(*flags);
            }
            FdFile::Chr {
                path,
                flags,
                rdev,
                pos,
            } => {
                w.u8(3);
                w.bytes(path);
                w.u32(*flags);
                w.u64(*rdev);
                w.u64(*pos);
            }
            FdFile::Unknown(k) => w.u8(*k),
            other => encode_anon(other, w),
        }
    }

    fn decode(r: &mut Reader) -> Result<Self, ImageError> {
        let fd = r.i32()?;
        if fd < 0 {
            return Err(r.error(format!("fd number {fd} is negative")));
        }
        let fd_flags = r.u32()?;
        let file = match r.u8()? {
            1 => FdFile::Reg {
                path: r.bytes("path", PATH_MAX as usize)?,
                flags: r.u32()?,
                pos: r.u64()?,
                id: FileId::decode(r)?,
            },
            2 => FdFile::Pipe {
                pipe_id: r.u64()?,
                flags: r.u32()?,
            },
            3 => FdFile::Chr {
                path: r.bytes("path", PATH_MAX as usize)?,
                flags: r.u32()?,
                rdev: r.u64()?,
                pos: r.u64()?,
            },
            k @ 4..=8 => decode_anon(k, r)?,
            k => FdFile::Unknown(k),
        };
        Ok(Fd { fd, fd_flags, file })
    }

    fn to_value(&self) -> Value {
        let mut v = vec![
            ("fd", Value::I(self.fd as i64)),
            ("fd_flags", Value::Hex(self.fd_flags as u64)),
        ];
        match &self.file {
            FdFile::Reg {
                path,
                flags,
                pos,
                id,
            } => v.extend([
                ("kind", Value::Str("reg".into())),
                ("path", Value::path(path)),
                ("flags", Value::Hex(*flags as u64)),
                ("pos", Value::U(*pos)),
                ("id", id.to_value()),
            ]),
            FdFile::Pipe { pipe_id, flags } => v.extend([
                ("kind", Value::Str("pipe".into())),
                ("pipe_id", Value::U(*pipe_id)),
                ("flags", Value::Hex(*flags as u64)),
            ]),
            FdFile::Chr {
                path,
                flags,
                rdev,
                pos,
            } => v.extend([
                ("kind", Value::Str("chr".into())),
                ("path", Value::path(path)),
                ("flags", Value::Hex(*flags as u64)),
                ("rdev", Value::Hex(*rdev)),
                ("pos", Value::U(*pos)),
            ]),
            FdFile::Unknown(k) => v.push(("kind", Value::Str(format!("unknown-{k}")))),
            other => v.extend(anon_value(other)),
        }
        Value::Obj(v)
    }
}

/// Encodes kinds 4-8.
fn encode_anon(file: &FdFile, w: &mut Writer) {
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
        FdFile::Reg { .. } | FdFile::Pipe { .. } | FdFile::Chr { .. } | FdFile::Unknown(_) => {}
    }
}

/// Decodes kinds 4-8.
fn decode_anon(kind: u8, r: &mut Reader) -> Result<FdFile, ImageError> {
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
fn anon_value(file: &FdFile) -> Vec<(&'static str, Value)> {
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
        FdFile::Reg { .. } | FdFile::Pipe { .. } | FdFile::Chr { .. } | FdFile::Unknown(_) => {
            Vec::new()
        }
    }
}

/// The bytes buffered in a pipe at dump time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipeData {
    /// The pipe's inode number.
    pub pipe_id: u64,
    /// The buffered bytes, in read order.
    pub data: Vec<u8>,
}

impl Record for PipeData {
    const KIND: u16 = 14;
    const NAME: &'static str = "pipe-data";

    fn encode(&self, w: &mut Writer) {
        w.u64(self.pipe_id);
        w.bytes(&self.data);
    }

    fn decode(r: &mut Reader) -> Result<Self, ImageError> {
        Ok(PipeData {
            pipe_id: r.u64()?,
            data: r.bytes("pipe data", MAX_RECORD as usize)?,
        })
    }

    fn to_value(&self) -> Value {
        Value::Obj(vec![
            ("pipe_id", Value::U(self.pipe_id)),
            ("size", Value::U(self.data.len() as u64)),
            ("data", Value::Bytes(self.data.clone())),
        ])
    }
}

#[cfg(test)]
mod tests {
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
