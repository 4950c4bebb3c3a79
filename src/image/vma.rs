//! The vma record (mm-PID.img): one mapping of /proc/PID/maps and smaps, with
//! what backs it and the madvise-able flags smaps reports in VmFlags.
//!
//! ```text
//!  u64 start | u64 end | u64 pgoff | u32 prot (PROT_*) | u32 flags (MAP_*)
//!  u64 advice (VMA_* bits below) | u8 backing, then by backing:
//!     2 anon-shared:               u64 shmid (the shmem inode; pages in pagemap-shmem-ID)
//!     3 file-private, 4 file-shared: path | file id
//!  bytes name ("[heap]", "[stack]"... as in maps)
//! ```
//! Backings without fields: 1 anon-private, 5 vdso, 6 vvar, 7 vvar_vclock,
//! 8 vsyscall. The special mappings carry no pages: restore moves the
//! kernel's own (vvar, vvar_vclock and vdso together, keeping their layout).

use super::codec::{Reader, Writer};
use super::files::FileId;
use super::record::Record;
use super::value::Value;
use super::{ImageError, PATH_MAX};

/// VmFlags `lo`: mlocked.
pub const VMA_LOCKED: u64 = 1 << 0;
/// VmFlags `dc`: MADV_DONTFORK.
pub const VMA_DONTFORK: u64 = 1 << 1;
/// VmFlags `dd`: MADV_DONTDUMP.
pub const VMA_DONTDUMP: u64 = 1 << 2;
/// VmFlags `wf`: MADV_WIPEONFORK.
pub const VMA_WIPEONFORK: u64 = 1 << 3;
/// VmFlags `mg`: MADV_MERGEABLE.
pub const VMA_MERGEABLE: u64 = 1 << 4;
/// VmFlags `hg`: MADV_HUGEPAGE.
pub const VMA_HUGEPAGE: u64 = 1 << 5;
/// VmFlags `nh`: MADV_NOHUGEPAGE.
pub const VMA_NOHUGEPAGE: u64 = 1 << 6;
/// VmFlags `sr`: MADV_SEQUENTIAL.
pub const VMA_SEQ_READ: u64 = 1 << 7;
/// VmFlags `rr`: MADV_RANDOM.
pub const VMA_RAND_READ: u64 = 1 << 8;

/// What backs a mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backing {
    /// Private anonymous memory (heap, stack, malloc arenas).
    AnonPrivate,
    /// Shared anonymous memory; its pages are stored once per `shmid`.
    AnonShared {
        /// The shmem inode number.
        shmid: u64,
    },
    /// A private file mapping (copy on write).
    FilePrivate {
        /// The path.
        path: Vec<u8>,
        /// Identity to validate at restore.
        id: FileId,
    },
    /// A shared file mapping.
    FileShared {
        /// The path.
        path: Vec<u8>,
        /// Identity to validate at restore.
        id: FileId,
    },
    /// The `[vdso]` mapping.
    Vdso,
    /// The `[vvar]` mapping.
    Vvar,
    /// The `[vvar_vclock]` mapping.
    VvarVclock,
    /// The `[vsyscall]` mapping.
    Vsyscall,
}

impl Backing {
    /// A short word for `crest show`.
    pub fn word(&self) -> &'static str {
        match self {
            Backing::AnonPrivate => "anon",
            Backing::AnonShared { .. } => "anon-shared",
            Backing::FilePrivate { .. } => "file",
            Backing::FileShared { .. } => "file-shared",
            Backing::Vdso => "vdso",
            Backing::Vvar => "vvar",
            Backing::VvarVclock => "vvar_vclock",
            Backing::Vsyscall => "vsyscall",
        }
    }
}

/// One mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vma {
    /// First address.
    pub start: u64,
    /// Address after the last byte.
    pub end: u64,
    /// File offset in pages.
    pub pgoff: u64,
    /// PROT_READ | PROT_WRITE | PROT_EXEC.
    pub prot: u32,
    /// MAP_SHARED / MAP_PRIVATE, MAP_ANONYMOUS, MAP_GROWSDOWN...
    pub flags: u32,
    /// VMA_* bits.
    pub advice: u64,
    /// What backs it.
    pub backing: Backing,
    /// The name shown in maps, if any.
    pub name: Vec<u8>,
}

impl Record for Vma {
    const KIND: u16 = 12;
    const NAME: &'static str = "vma";

    fn encode(&self, w: &mut Writer) {
        w.u64(self.start);
        w.u64(self.end);
        w.u64(self.pgoff);
        w.u32(self.prot);
        w.u32(self.flags);
        w.u64(self.advice);
        match &self.backing {
            Backing::AnonPrivate => w.u8(1),
            Backing::AnonShared { shmid } => {
                w.u8(2);
                w.u64(*shmid);
            }
            Backing::FilePrivate { path, id } | Backing::FileShared { path, id } => {
                w.u8(if matches!(self.backing, Backing::FilePrivate { .. }) {
                    3
                } else {
                    4
                });
                w.bytes(path);
                id.encode(w);
            }
            Backing::Vdso => w.u8(5),
            Backing::Vvar => w.u8(6),
            Backing::VvarVclock => w.u8(7),
            Backing::Vsyscall => w.u8(8),
        }
        w.bytes(&self.name);
    }

    fn decode(r: &mut Reader) -> Result<Self, ImageError> {
        let (start, end, pgoff) = (r.u64()?, r.u64()?, r.u64()?);
        if start >= end || start % 4096 != 0 || end % 4096 != 0 {
            return Err(r.error(format!("mapping {start:#x}-{end:#x} is empty or unaligned")));
        }
        let (prot, flags, advice) = (r.u32()?, r.u32()?, r.u64()?);
        if prot & !7 != 0 {
            return Err(r.error(format!("protection {prot:#x} has unknown bits")));
        }
        let backing = match r.u8()? {
            1 => Backing::AnonPrivate,
            2 => Backing::AnonShared { shmid: r.u64()? },
            3 => Backing::FilePrivate {
                path: r.bytes("path", PATH_MAX as usize)?,
                id: FileId::decode(r)?,
            },
            4 => Backing::FileShared {
                path: r.bytes("path", PATH_MAX as usize)?,
                id: FileId::decode(r)?,
            },
            5 => Backing::Vdso,
            6 => Backing::Vvar,
            7 => Backing::VvarVclock,
            8 => Backing::Vsyscall,
            b => return Err(r.error(format!("unknown mapping backing {b}"))),
        };
        let name = r.bytes("name", PATH_MAX as usize)?;
        Ok(Vma {
            start,
            end,
            pgoff,
            prot,
            flags,
            advice,
            backing,
            name,
        })
    }

    fn to_value(&self) -> Value {
        let mut v = vec![
            ("start", Value::Hex(self.start)),
            ("end", Value::Hex(self.end)),
            ("pgoff", Value::U(self.pgoff)),
            ("prot", Value::Str(prot_str(self.prot))),
            ("flags", Value::Hex(self.flags as u64)),
            ("advice", Value::Hex(self.advice)),
            ("backing", Value::Str(self.backing.word().into())),
            ("name", Value::path(&self.name)),
        ];
        match &self.backing {
            Backing::AnonShared { shmid } => v.push(("shmid", Value::U(*shmid))),
            Backing::FilePrivate { path, id } | Backing::FileShared { path, id } => {
                v.push(("path", Value::path(path)));
                v.push(("file", id.to_value()));
            }
            _ => {}
        }
        Value::Obj(v)
    }
}

/// `rwxp`-style protection, as in /proc/PID/maps (without the share letter).
pub fn prot_str(prot: u32) -> String {
    let bit = |b: u32, c: char| if prot & b != 0 { c } else { '-' };
    [bit(1, 'r'), bit(2, 'w'), bit(4, 'x')].iter().collect()
}
