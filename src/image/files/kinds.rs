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

use super::fields::{self, Field, Fields};
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

/// The kind number, `crest show` name and fields of the kinds made of
/// plain fields (all but the pty master).
fn field_list(file: &FdFile) -> Option<(u8, &'static str, Fields<'_>)> {
    use Field::*;
    Some(match file {
        FdFile::Memfd {
            flags,
            pos,
            id,
            name,
            size,
            seals,
            mode,
        } => (
            16,
            "memfd",
            vec![
                ("flags", Hex(*flags)),
                ("pos", U64(*pos)),
                ("id", U64(*id)),
                ("name", Path(name)),
                ("size", U64(*size)),
                ("seals", Hex(*seals)),
                ("mode", Mode(*mode)),
            ],
        ),
        FdFile::Ghost {
            path,
            flags,
            pos,
            id,
        } => (
            17,
            "ghost",
            vec![
                ("flags", Hex(*flags)),
                ("pos", U64(*pos)),
                ("id", Id(id)),
                ("path", Path(path)),
            ],
        ),
        FdFile::Fifo { path, flags, id } => (
            18,
            "fifo",
            vec![
                ("flags", Hex(*flags)),
                ("id", U64(*id)),
                ("path", Path(path)),
            ],
        ),
        FdFile::PtySlave { flags, index } => (
            20,
            "pty-slave",
            vec![("flags", Hex(*flags)), ("index", U32(*index))],
        ),
        _ => return None,
    })
}

/// Encodes kinds 16-20.
pub(super) fn encode(file: &FdFile, w: &mut Writer) {
    if let Some((kind, _, f)) = field_list(file) {
        return fields::encode(kind, &f, w);
    }
    if let FdFile::PtyMaster {
        flags,
        index,
        state,
    } = file
    {
        fields::encode(
            19,
            &[("flags", Field::Hex(*flags)), ("index", Field::U32(*index))],
            w,
        );
        w.raw(&state.termios);
        for v in state.winsize {
            w.u16(v);
        }
        w.u8(u8::from(state.locked) | (u8::from(state.packet) << 1));
    }
}

/// Decodes kinds 16-20.
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

/// `crest show` fields of kinds 16-20.
pub(super) fn value(file: &FdFile) -> Vec<(&'static str, Value)> {
    if let Some((_, name, f)) = field_list(file) {
        return fields::value(name, &f);
    }
    let FdFile::PtyMaster {
        flags,
        index,
        state,
    } = file
    else {
        return Vec::new();
    };
    let mut v = fields::value(
        "pty-master",
        &[("flags", Field::Hex(*flags)), ("index", Field::U32(*index))],
    );
    v.extend([
        ("termios", Value::Bytes(state.termios.to_vec())),
        ("rows", Value::U(state.winsize[0] as u64)),
        ("cols", Value::U(state.winsize[1] as u64)),
        ("locked", Value::Bool(state.locked)),
        ("packet", Value::Bool(state.packet)),
    ]);
    v
}

/// The `crest show` text of kinds 16-20 (after "fd N ").
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

/// A memfd a process maps but holds no fd of (its fds were closed): what
/// an fd record tells of the object (size, seals, mode), so restore makes
/// it as it was rather than guessing from the mapping. Its contents are in
/// the shared memory page store by `id`, as for every memfd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemfdObject {
    /// The memfd's inode number (the mapping's shmid).
    pub id: u64,
    /// The name given to memfd_create (without `memfd:`).
    pub name: Vec<u8>,
    /// st_size.
    pub size: u64,
    /// F_GET_SEALS.
    pub seals: u32,
    /// st_mode.
    pub mode: u32,
}

impl Record for MemfdObject {
    const KIND: u16 = 60;
    const NAME: &'static str = "memfd-object";

    fn encode(&self, w: &mut Writer) {
        w.u64(self.id);
        w.bytes(&self.name);
        w.u64(self.size);
        w.u32(self.seals);
        w.u32(self.mode);
    }

    fn decode(r: &mut Reader) -> Result<Self, ImageError> {
        Ok(MemfdObject {
            id: r.u64()?,
            name: r.bytes("memfd name", MEMFD_NAME_MAX)?,
            size: r.u64()?,
            seals: r.u32()?,
            mode: r.u32()?,
        })
    }

    fn to_value(&self) -> Value {
        Value::Obj(vec![
            ("name", Value::path(&self.name)),
            ("id", Value::U(self.id)),
            ("size", Value::U(self.size)),
            ("seals", Value::Hex(self.seals as u64)),
            ("mode", Value::Str(format!("{:o}", self.mode))),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::super::fields::round_trip;
    use super::super::{Fd, Record};
    use super::*;

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

    /// The bytes of a memfd record as docs/IMAGES.md draws them, and its
    /// show fields: kind, name, then wire order.
    #[test]
    fn a_memfd_record_keeps_its_layout_and_show_order() {
        let file = FdFile::Memfd {
            flags: 2,
            pos: 3,
            id: 4,
            name: b"n".to_vec(),
            size: 5,
            seals: 6,
            mode: 0o100600,
        };
        let mut w = Writer::new();
        encode(&file, &mut w);
        let mut want = Writer::new();
        want.u8(16);
        want.u32(2);
        want.u64(3);
        want.u64(4);
        want.bytes(b"n");
        want.u64(5);
        want.u32(6);
        want.u32(0o100600);
        assert_eq!(w.as_bytes(), want.as_bytes());
        let keys: Vec<&str> = value(&file).iter().map(|(k, _)| *k).collect();
        let order = [
            "kind", "name", "flags", "pos", "id", "size", "seals", "mode",
        ];
        assert_eq!(keys, order);
        assert_eq!(value(&file)[7].1, Value::Str("100600".into()));
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
