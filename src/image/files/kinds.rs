//! The fd kinds whose object crest recreates from data the image holds
//! (16 memfd, 17 ghost file, 18 FIFO, 19 and 20 the ends of a pseudo-terminal
//! pair): their fields' encoding, `crest show`
//! values and text, and the ghost-data record holding a deleted file's
//! contents. The layout is drawn in the parent module.
//!
//! A memfd's contents are not in its fd record: they are stored once per
//! object, by its id (the inode number), in the page store of shared memory
//! (pagemap-shmem-ID.img and pages-shmem-ID.img, a run's address being its
//! byte offset), which a shared mapping of the same memfd uses too. A FIFO's
//! queued bytes are a pipe-data record whose pipe id is the FIFO's inode.

use super::{FdFile, FileId};
use crate::image::codec::{Reader, Writer};
use crate::image::record::Record;
use crate::image::value::Value;
use crate::image::{ImageError, MAX_RECORD, PATH_MAX};

/// The longest memfd name the kernel takes (MFD_NAME_MAX_LEN is 249).
pub const MEMFD_NAME_MAX: usize = 249;

/// Whether `kind` is one of this module's.
pub(super) fn is_kind(kind: u8) -> bool {
    matches!(kind, 16..=20)
}

/// The bytes of a `struct termios` as TCGETS returns it (4 flag words, the
/// line discipline, 19 control characters).
pub const TERMIOS_LEN: usize = 36;

/// What a pseudo-terminal pair keeps besides its buffers, read through
/// its master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PtyState {
    /// The pair's `struct termios` (TCGETS).
    pub termios: [u8; TERMIOS_LEN],
    /// rows, cols, xpixel, ypixel (TIOCGWINSZ).
    pub winsize: [u16; 4],
    /// TIOCGPTLCK: the slave may not be opened.
    pub locked: bool,
    /// TIOCGPKT: packet mode.
    pub packet: bool,
}

/// Encodes kinds 16 and 18.
pub(super) fn encode(file: &FdFile, w: &mut Writer) {
    match file {
        FdFile::Memfd {
            flags,
            pos,
            id,
            name,
            size,
            seals,
            mode,
        } => {
            w.u8(16);
            w.u32(*flags);
            w.u64(*pos);
            w.u64(*id);
            w.bytes(name);
            w.u64(*size);
            w.u32(*seals);
            w.u32(*mode);
        }
        FdFile::Ghost {
            path,
            flags,
            pos,
            id,
        } => {
            w.u8(17);
            w.u32(*flags);
            w.u64(*pos);
            id.encode(w);
            w.bytes(path);
        }
        FdFile::Fifo { path, flags, id } => {
            w.u8(18);
            w.u32(*flags);
            w.u64(*id);
            w.bytes(path);
        }
        FdFile::PtyMaster {
            flags,
            index,
            state,
        } => {
            w.u8(19);
            w.u32(*flags);
            w.u32(*index);
            w.raw(&state.termios);
            for v in state.winsize {
                w.u16(v);
            }
            w.u8(u8::from(state.locked) | (u8::from(state.packet) << 1));
        }
        FdFile::PtySlave { flags, index } => {
            w.u8(20);
            w.u32(*flags);
            w.u32(*index);
        }
        _ => {}
    }
}

/// Decodes kinds 16 and 18.
pub(super) fn decode(kind: u8, r: &mut Reader) -> Result<FdFile, ImageError> {
    let flags = r.u32()?;
    Ok(match kind {
        16 => FdFile::Memfd {
            flags,
            pos: r.u64()?,
            id: r.u64()?,
            name: r.bytes("memfd name", MEMFD_NAME_MAX)?,
            size: r.u64()?,
            seals: r.u32()?,
            mode: r.u32()?,
        },
        17 => FdFile::Ghost {
            flags,
            pos: r.u64()?,
            id: FileId::decode(r)?,
            path: r.bytes("path", PATH_MAX as usize)?,
        },
        18 => FdFile::Fifo {
            flags,
            id: r.u64()?,
            path: r.bytes("path", PATH_MAX as usize)?,
        },
        19 => {
            let index = r.u32()?;
            let termios = r.array::<TERMIOS_LEN>()?;
            let winsize = [r.u16()?, r.u16()?, r.u16()?, r.u16()?];
            let bits = r.u8()?;
            FdFile::PtyMaster {
                flags,
                index,
                state: PtyState {
                    termios,
                    winsize,
                    locked: bits & 1 != 0,
                    packet: bits & 2 != 0,
                },
            }
        }
        _ => FdFile::PtySlave {
            flags,
            index: r.u32()?,
        },
    })
}

/// `crest show` fields of kinds 16 and 18.
pub(super) fn value(file: &FdFile) -> Vec<(&'static str, Value)> {
    match file {
        FdFile::Memfd {
            flags,
            pos,
            id,
            name,
            size,
            seals,
            mode,
        } => vec![
            ("kind", Value::Str("memfd".into())),
            ("name", Value::path(name)),
            ("flags", Value::Hex(*flags as u64)),
            ("pos", Value::U(*pos)),
            ("id", Value::U(*id)),
            ("size", Value::U(*size)),
            ("seals", Value::Hex(*seals as u64)),
            ("mode", Value::Str(format!("{mode:o}"))),
        ],
        FdFile::Ghost {
            path,
            flags,
            pos,
            id,
        } => vec![
            ("kind", Value::Str("ghost".into())),
            ("path", Value::path(path)),
            ("flags", Value::Hex(*flags as u64)),
            ("pos", Value::U(*pos)),
            ("id", id.to_value()),
        ],
        FdFile::Fifo { path, flags, id } => vec![
            ("kind", Value::Str("fifo".into())),
            ("path", Value::path(path)),
            ("flags", Value::Hex(*flags as u64)),
            ("id", Value::U(*id)),
        ],
        FdFile::PtyMaster {
            flags,
            index,
            state,
        } => vec![
            ("kind", Value::Str("pty-master".into())),
            ("flags", Value::Hex(*flags as u64)),
            ("index", Value::U(*index as u64)),
            ("termios", Value::Bytes(state.termios.to_vec())),
            ("rows", Value::U(state.winsize[0] as u64)),
            ("cols", Value::U(state.winsize[1] as u64)),
            ("locked", Value::Bool(state.locked)),
            ("packet", Value::Bool(state.packet)),
        ],
        FdFile::PtySlave { flags, index } => vec![
            ("kind", Value::Str("pty-slave".into())),
            ("flags", Value::Hex(*flags as u64)),
            ("index", Value::U(*index as u64)),
        ],
        _ => Vec::new(),
    }
}

/// The `crest show` text of kinds 16 and 18 (after "fd N ").
pub fn text(file: &FdFile) -> Option<String> {
    Some(match file {
        FdFile::Memfd {
            flags,
            pos,
            id,
            name,
            size,
            seals,
            ..
        } => format!(
            "memfd name={} id={id} size={size} seals={seals:#x} flags={flags:#o} pos={pos}",
            String::from_utf8_lossy(name)
        ),
        FdFile::Ghost {
            path,
            flags,
            pos,
            id,
        } => format!(
            "ghost {} (deleted) size={} flags={flags:#o} pos={pos}",
            String::from_utf8_lossy(path),
            id.size
        ),
        FdFile::Fifo { path, flags, id } => format!(
            "fifo {} id={id} flags={flags:#o}",
            String::from_utf8_lossy(path)
        ),
        FdFile::PtyMaster {
            flags,
            index,
            state,
        } => format!(
            "pty master of /dev/pts/{index} {}x{}{} flags={flags:#o}",
            state.winsize[1],
            state.winsize[0],
            if state.locked { " locked" } else { "" }
        ),
        FdFile::PtySlave { flags, index } => {
            format!("pty slave /dev/pts/{index} flags={flags:#o}")
        }
        _ => return None,
    })
}

/// A stretch of a deleted file's contents (the ranges SEEK_DATA finds; the
/// rest reads as zeros), stored once per file in the files image of the
/// process that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GhostData {
    /// st_dev of the deleted file.
    pub dev: u64,
    /// st_ino of the deleted file.
    pub ino: u64,
    /// Where the bytes go.
    pub offset: u64,
    /// The bytes.
    pub data: Vec<u8>,
}

impl Record for GhostData {
    const KIND: u16 = 40;
    const NAME: &'static str = "ghost-data";

    fn encode(&self, w: &mut Writer) {
        w.u64(self.dev);
        w.u64(self.ino);
        w.u64(self.offset);
        w.bytes(&self.data);
    }

    fn decode(r: &mut Reader) -> Result<Self, ImageError> {
        Ok(GhostData {
            dev: r.u64()?,
            ino: r.u64()?,
            offset: r.u64()?,
            data: r.bytes("ghost data", MAX_RECORD as usize)?,
        })
    }

    fn to_value(&self) -> Value {
        Value::Obj(vec![
            ("dev", Value::Hex(self.dev)),
            ("ino", Value::U(self.ino)),
            ("offset", Value::U(self.offset)),
            ("size", Value::U(self.data.len() as u64)),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Fd, Record};
    use super::*;

    fn round_trip(file: FdFile) {
        let fd = Fd {
            fd: 7,
            fd_flags: 0,
            file,
        };
        let mut w = Writer::new();
        fd.encode(&mut w);
        let mut r = Reader::new(w.as_bytes(), "files-1.img", 0);
        assert_eq!(Fd::decode(&mut r).unwrap(), fd);
        assert!(!r.has_more(), "every byte read");
    }

    #[test]
    fn memfd_and_fifo_round_trip() {
        round_trip(FdFile::Memfd {
            flags: 0o100002,
            pos: 12,
            id: 4242,
            name: b"buf with space".to_vec(),
            size: 10_000,
            seals: 0xf,
            mode: 0o100777,
        });
        round_trip(FdFile::Ghost {
            path: b"/tmp/gone".to_vec(),
            flags: 0o2,
            pos: 5,
            id: FileId {
                dev: 1,
                ino: 2,
                size: 3,
                mtime_ns: 4,
                mode: 0o100600,
            },
        });
        round_trip(FdFile::PtyMaster {
            flags: 0o100002,
            index: 3,
            state: PtyState {
                termios: [7; TERMIOS_LEN],
                winsize: [24, 80, 1, 2],
                locked: true,
                packet: false,
            },
        });
        round_trip(FdFile::PtySlave {
            flags: 0o400,
            index: 3,
        });
        round_trip(FdFile::Fifo {
            path: b"/tmp/f f".to_vec(),
            flags: 0o4000,
            id: 99,
        });
    }

    #[test]
    fn a_memfd_name_longer_than_the_kernel_takes_is_refused() {
        let mut w = Writer::new();
        w.i32(3);
        w.u32(0);
        w.u8(16);
        w.u32(2);
        w.u64(0);
        w.u64(1);
        w.bytes(&[b'a'; MEMFD_NAME_MAX + 1]);
        w.u64(0);
        w.u32(0);
        w.u32(0);
        let mut r = Reader::new(w.as_bytes(), "files-1.img", 0);
        assert!(Fd::decode(&mut r).is_err());
    }
}
