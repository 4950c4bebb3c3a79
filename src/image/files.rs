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
//!    16 memfd:    u32 open_flags | u64 pos | u64 id | name | u64 size | u32 seals
//!                 | u32 mode          (contents: pagemap-shmem-ID.img by id)
//!    17 ghost:    u32 open_flags | u64 pos | file id | path (without " (deleted)")
//!    19 pty-master: u32 open_flags | u32 index | termios (36 bytes) | 4 x u16 winsize
//!                 | u8 bits (1 locked, 2 packet mode)
//!    20 pty-slave: u32 open_flags | u32 index       (its master is in the same image)
//!    18 fifo:     u32 open_flags | u64 id (inode; its data: pipe-data, pipe_id = id) | path
//!  pipe-data:  u64 pipe_id | bytes data
//!    21 unix:    see [`unix`] (and its unix-queue record)
//!    30 dev-tty:  u32 open_flags   (/dev/tty of a restored controlling terminal)
//!  ghost-data: u64 dev | u64 ino | u64 offset | bytes data   (a deleted file's contents)
//!  file-lock:  see [`lock`]
//!  fd-desc:    i32 fd | u64 desc_id      (see [`FdDesc`])
//! ```
//!
//! Kinds 4-8 are the anonymous-inode objects of an event loop; an older
//! crest reads them as [`FdFile::Unknown`] and refuses them by number.
//!
//! An fd kind a newer crest added decodes as [`FdFile::Unknown`]; `crest show`
//! prints it and a restore refuses it by name.

mod anon;
mod desc;
mod fields;
pub mod kinds;
pub mod lock;
pub mod unix;

pub use anon::{EpollTarget, InotifyWatch, MAX_FD_ITEMS};
pub use desc::FdDesc;
pub use kinds::MemfdObject;
pub use kinds::{GhostData, PtyState};
pub use lock::{FileLock, LockKind};
pub use unix::{UnixFlightFile, UnixMessage, UnixPeer, UnixQueue, UnixSocket};

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
    /// A unix socket.
    Unix(UnixSocket),
    /// A memfd (its contents are stored by `id`, see [`kinds`]).
    Memfd {
        /// O_* flags.
        flags: u32,
        /// The file position.
        pos: u64,
        /// The object's id (its inode number), shared with its mappings.
        id: u64,
        /// The name given to memfd_create (without `memfd:`).
        name: Vec<u8>,
        /// Its size in bytes.
        size: u64,
        /// F_GET_SEALS.
        seals: u32,
        /// st_mode.
        mode: u32,
    },
    /// A deleted file still open (its contents: ghost-data records).
    Ghost {
        /// The path it had, without " (deleted)".
        path: Vec<u8>,
        /// O_* flags.
        flags: u32,
        /// The file position.
        pos: u64,
        /// Its identity, size, mtime and mode at the dump.
        id: FileId,
    },
    /// The master of a pseudo-terminal pair whose slave the process holds
    /// too (/dev/ptmx).
    PtyMaster {
        /// O_* flags.
        flags: u32,
        /// The pair's index (/dev/pts/INDEX) at the dump.
        index: u32,
        /// Termios, window size, lock, packet mode.
        state: PtyState,
    },
    /// The slave of a pair whose master the process holds.
    PtySlave {
        /// O_* flags.
        flags: u32,
        /// The pair's index at the dump.
        index: u32,
    },
    /// A named FIFO (its queued bytes: a pipe-data record for `id`).
    Fifo {
        /// The path at dump time.
        path: Vec<u8>,
        /// O_* flags.
        flags: u32,
        /// The FIFO's inode number.
        id: u64,
    },
    /// /dev/tty (5:0) of a process whose session's controlling terminal
    /// is a pair of the tree (kind 30): restore opens /dev/tty once that
    /// terminal is back. Images carry such fds as chr records; restore
    /// makes them this kind (see restore's ctty module).
    DevTty {
        /// O_* flags.
        flags: u32,
    },
}

/// The fd kind of /dev/tty, [`FdFile::DevTty`].
pub const KIND_DEV_TTY: u8 = 30;

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
            FdFile::DevTty { flags } => {
                w.u8(KIND_DEV_TTY);
                w.u32(*flags);
            }
            FdFile::Unix(s) => unix::encode(s, w),
            f @ (FdFile::Memfd { .. }
            | FdFile::Ghost { .. }
            | FdFile::Fifo { .. }
            | FdFile::PtyMaster { .. }
            | FdFile::PtySlave { .. }) => kinds::encode(f, w),
            other => anon::encode(other, w),
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
            k @ 4..=8 => anon::decode(k, r)?,
            unix::KIND_UNIX => FdFile::Unix(unix::decode(r)?),
            KIND_DEV_TTY => FdFile::DevTty { flags: r.u32()? },
            k if kinds::is_kind(k) => kinds::decode(k, r)?,
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
            FdFile::DevTty { flags } => v.extend([
                ("kind", Value::Str("dev-tty".into())),
                ("flags", Value::Hex(*flags as u64)),
            ]),
            FdFile::Unix(s) => v.extend(unix::value(s)),
            f @ (FdFile::Memfd { .. }
            | FdFile::Ghost { .. }
            | FdFile::Fifo { .. }
            | FdFile::PtyMaster { .. }
            | FdFile::PtySlave { .. }) => v.extend(kinds::value(f)),
            other => v.extend(anon::value(other)),
        }
        Value::Obj(v)
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
