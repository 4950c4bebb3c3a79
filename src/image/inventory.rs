//! The inventory record (inventory.img): what was dumped, by which crest, on
//! which kernel and CPU, when, with which options, and the parent image of an
//! incremental dump.
//!
//! The CPU features are those a restore must match: on x86_64 the XSAVE
//! feature mask (XCR0) and the XSAVE area size, since FP state saved with
//! AVX-512 cannot be loaded on a CPU without it; on aarch64 AT_HWCAP and
//! AT_HWCAP2 (SVE, SME, pointer authentication...).
//!
//! ```text
//!  string crest_version | string kernel_release | u16 arch | u32 page_size
//!  u64 xsave_mask | u32 xsave_size | u64 hwcap | u64 hwcap2
//!  u64 dump_time_ns (unix) | u8 image_kind | u32 root_pid
//!  list<string> options | u8 has_parent [string parent]
//! ```

use super::codec::{Reader, Writer};
use super::header::Arch;
use super::record::Record;
use super::value::Value;
use super::{ImageError, PATH_MAX};

/// CPU features a restore must find again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuFeatures {
    /// x86_64: XCR0, the state components XSAVE saves.
    pub xsave_mask: u64,
    /// x86_64: the XSAVE area size (the NT_X86_XSTATE regset size).
    pub xsave_size: u32,
    /// aarch64: AT_HWCAP (x86_64: AT_HWCAP too, for information).
    pub hwcap: u64,
    /// aarch64: AT_HWCAP2.
    pub hwcap2: u64,
}

/// Whether the image is a full dump or a memory-only pre-dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    /// `crest dump` (1).
    Dump,
    /// `crest pre-dump`: memory only (2).
    PreDump,
}

/// The inventory of an image directory.
#[derive(Debug, Clone, PartialEq)]
pub struct Inventory {
    /// The crest that wrote the image.
    pub crest_version: String,
    /// `uname -r` of the dumped machine.
    pub kernel_release: String,
    /// The architecture of the dumped processes.
    pub arch: Arch,
    /// The page size of the dumped machine.
    pub page_size: u32,
    /// CPU features that matter for restore.
    pub cpu: CpuFeatures,
    /// When the dump was taken, in nanoseconds since the Unix epoch.
    pub dump_time_ns: u64,
    /// Full dump or pre-dump.
    pub kind: ImageKind,
    /// The root of the dumped tree.
    pub root_pid: u32,
    /// The command line options of the dump.
    pub options: Vec<String>,
    /// The parent image directory (`--prev-images-dir`), relative to this one.
    pub parent: Option<String>,
}

impl Record for Inventory {
    const KIND: u16 = 1;
    const NAME: &'static str = "inventory";

    fn encode(&self, w: &mut Writer) {
        w.str(&self.crest_version);
        w.str(&self.kernel_release);
        w.u16(self.arch.code());
        w.u32(self.page_size);
        w.u64(self.cpu.xsave_mask);
        w.u32(self.cpu.xsave_size);
        w.u64(self.cpu.hwcap);
        w.u64(self.cpu.hwcap2);
        w.u64(self.dump_time_ns);
        w.u8(match self.kind {
            ImageKind::Dump => 1,
            ImageKind::PreDump => 2,
        });
        w.u32(self.root_pid);
        w.list(&self.options, |w, o| w.str(o));
        w.u8(self.parent.is_some() as u8);
        if let Some(p) = &self.parent {
            w.str(p);
        }
    }

    fn decode(r: &mut Reader) -> Result<Self, ImageError> {
        let crest_version = r.string("crest version", 256)?;
        let kernel_release = r.string("kernel release", 256)?;
        let arch = Arch::from_code(r.u16()?);
        let page_size = r.u32()?;
        let cpu = CpuFeatures {
            xsave_mask: r.u64()?,
            xsave_size: r.u32()?,
            hwcap: r.u64()?,
            hwcap2: r.u64()?,
        };
        let dump_time_ns = r.u64()?;
        let kind = match r.u8()? {
            1 => ImageKind::Dump,
            2 => ImageKind::PreDump,
            k => return Err(r.error(format!("unknown image kind {k}"))),
        };
        let root_pid = r.u32()?;
        let options = r.list("options", 4096, 4, |r| {
            r.string("option", PATH_MAX as usize)
        })?;
        let parent = match r.bool()? {
            true => Some(r.string("parent path", PATH_MAX as usize)?),
            false => None,
        };
        Ok(Inventory {
            crest_version,
            kernel_release,
            arch,
            page_size,
            cpu,
            dump_time_ns,
            kind,
            root_pid,
            options,
            parent,
        })
    }

    fn to_value(&self) -> Value {
        Value::Obj(vec![
            ("crest_version", Value::Str(self.crest_version.clone())),
            ("kernel_release", Value::Str(self.kernel_release.clone())),
            ("arch", Value::Str(self.arch.name())),
            ("page_size", Value::U(self.page_size as u64)),
            ("xsave_mask", Value::Hex(self.cpu.xsave_mask)),
            ("xsave_size", Value::U(self.cpu.xsave_size as u64)),
            ("hwcap", Value::Hex(self.cpu.hwcap)),
            ("hwcap2", Value::Hex(self.cpu.hwcap2)),
            ("dump_time_ns", Value::U(self.dump_time_ns)),
            (
                "kind",
                Value::Str(match self.kind {
                    ImageKind::Dump => "dump".into(),
                    ImageKind::PreDump => "pre-dump".into(),
                }),
            ),
            ("root_pid", Value::U(self.root_pid as u64)),
            (
                "options",
                Value::List(self.options.iter().map(|o| Value::Str(o.clone())).collect()),
            ),
            (
                "parent",
                self.parent
                    .as_ref()
                    .map_or(Value::Null, |p| Value::Str(p.clone())),
            ),
        ])
    }
}
