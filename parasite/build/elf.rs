//! A minimal ELF64 little-endian reader for build.rs: just enough to check a
//! linked blob and cut its flat image out, with no external tool (GNU objcopy
//! here cannot even read aarch64 ELF) and no build-dependency.
//!
//! [`check_blob`] is the gate every blob passes before crest embeds it, in
//! the spirit of Linux's vdso2c: exactly one loadable segment at address 0,
//! no relocation of any kind (a relocation would need a loader that patches
//! addresses; a flat copy would run with wrong ones), no undefined symbol,
//! the symbols crest jumps to present, and the image within its budget.
//! Every read is bounds-checked; a malformed file is an error, not a panic.

use std::collections::BTreeMap;

const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const PT_TLS: u32 = 7;
const SHT_SYMTAB: u32 = 2;
const SHT_RELA: u32 = 4;
const SHT_DYNAMIC: u32 = 6;
const SHT_REL: u32 = 9;
const SHT_RELR: u32 = 19;
const SHN_UNDEF: u16 = 0;
const DT_NULL: u64 = 0;
/// DT_PLTRELSZ, DT_RELA, DT_RELASZ, DT_REL, DT_RELSZ, DT_TEXTREL, DT_JMPREL,
/// DT_RELRSZ, DT_RELR: any of them means the image needs a loader.
const DT_RELOCATION_TAGS: [u64; 9] = [2, 7, 8, 17, 18, 22, 23, 35, 36];

/// What a blob must look like.
pub struct BlobSpec<'a> {
    /// The blob's name, for messages.
    pub name: &'a str,
    /// `x86_64` or `aarch64`.
    pub arch: &'a str,
    /// Largest allowed image (file bytes of the segment).
    pub budget: usize,
    /// Symbols that must be defined.
    pub symbols: &'a [&'a str],
}

/// A blob that passed [`check_blob`].
#[derive(Debug)]
pub struct CheckedBlob {
    /// The flat image: the segment's file bytes, loaded at offset 0.
    pub image: Vec<u8>,
    /// Bytes the blob occupies in memory (image plus zero-filled tail).
    pub mem_size: u64,
    /// Each required symbol's offset and size.
    pub symbols: BTreeMap<String, (u64, u64)>,
}

fn bytes<const N: usize>(d: &[u8], off: u64) -> Result<[u8; N], String> {
    usize::try_from(off)
        .ok()
        .and_then(|o| d.get(o..o.checked_add(N)?))
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| format!("the file is truncated at offset {off}"))
}

fn u16_at(d: &[u8], off: u64) -> Result<u16, String> {
    bytes(d, off).map(u16::from_le_bytes)
}

fn u32_at(d: &[u8], off: u64) -> Result<u32, String> {
    bytes(d, off).map(u32::from_le_bytes)
}

fn u64_at(d: &[u8], off: u64) -> Result<u64, String> {
    bytes(d, off).map(u64::from_le_bytes)
}

fn slice(d: &[u8], off: u64, len: u64) -> Result<&[u8], String> {
    usize::try_from(off)
        .ok()
        .zip(usize::try_from(len).ok())
        .and_then(|(o, l)| d.get(o..o.checked_add(l)?))
        .ok_or_else(|| format!("range {off}+{len} lies outside the file"))
}

/// One section header, the fields the checks need.
struct Section {
    name: String,
    kind: u32,
    offset: u64,
    size: u64,
    link: u32,
}

/// One program header.
struct Segment {
    kind: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
    memsz: u64,
}

fn segments(d: &[u8]) -> Result<Vec<Segment>, String> {
    let (phoff, phnum) = (u64_at(d, 32)?, u16_at(d, 56)?);
    (0..u64::from(phnum))
        .map(|i| {
            let p = entry(d, phoff, i, 56)?;
            Ok(Segment {
                kind: u32_at(p, 0)?,
                offset: u64_at(p, 8)?,
                vaddr: u64_at(p, 16)?,
                filesz: u64_at(p, 32)?,
                memsz: u64_at(p, 40)?,
            })
        })
        .collect()
}

/// Entry `i` of a table of `size`-byte entries at `table`, bounds-checked
/// (offsets in a damaged file may be anything, even near `u64::MAX`).
fn entry(d: &[u8], table: u64, i: u64, size: u64) -> Result<&[u8], String> {
    let off = i
        .checked_mul(size)
        .and_then(|o| o.checked_add(table))
        .ok_or_else(|| format!("table at offset {table} lies outside the file"))?;
    slice(d, off, size)
}

/// The NUL-terminated string at `table + off`.
fn cstr(d: &[u8], table: u64, off: u32) -> Result<String, String> {
    let off = table
        .checked_add(u64::from(off))
        .ok_or("string offset overflows")?;
    let tail = usize::try_from(off)
        .ok()
        .and_then(|o| d.get(o..))
        .ok_or_else(|| format!("string offset {off} lies outside the file"))?;
    let end = tail
        .iter()
        .position(|&b| b == 0)
        .ok_or("unterminated string")?;
    Ok(String::from_utf8_lossy(&tail[..end]).into_owned())
}

fn sections(d: &[u8]) -> Result<Vec<Section>, String> {
    let (shoff, shnum, shstrndx) = (u64_at(d, 40)?, u16_at(d, 60)?, u16_at(d, 62)?);
    let names = u64_at(entry(d, shoff, u64::from(shstrndx), 64)?, 24)?;
    (0..u64::from(shnum))
        .map(|i| {
            let s = entry(d, shoff, i, 64)?;
            Ok(Section {
                name: cstr(d, names, u32_at(s, 0)?)?,
                kind: u32_at(s, 4)?,
                offset: u64_at(s, 24)?,
                size: u64_at(s, 32)?,
                link: u32_at(s, 40)?,
            })
        })
        .collect()
}

/// Refuses any relocation section with entries and any dynamic tag that
/// asks a loader to patch the image.
fn check_relocations(d: &[u8], secs: &[Section]) -> Result<(), String> {
    for s in secs {
        if matches!(s.kind, SHT_RELA | SHT_REL | SHT_RELR) && s.size > 0 {
            return Err(format!(
                "it has relocations ({} holds {} bytes): some code or data depends on \
                 its load address; pass addresses PC-relatively, never through a static \
                 that holds an address",
                s.name, s.size
            ));
        }
        if s.kind == SHT_DYNAMIC {
            for i in 0..s.size / 16 {
                let tag = u64_at(entry(d, s.offset, i, 16)?, 0)?;
                if tag == DT_NULL {
                    break;
                }
                if DT_RELOCATION_TAGS.contains(&tag) {
                    return Err(format!("its dynamic section has relocation tag {tag}"));
                }
            }
        }
    }
    Ok(())
}

/// Every defined symbol by name (offset, size); refuses undefined ones.
fn symbols(d: &[u8], secs: &[Section]) -> Result<BTreeMap<String, (u64, u64)>, String> {
    let tab = secs
        .iter()
        .find(|s| s.kind == SHT_SYMTAB)
        .ok_or("it has no symbol table (was it stripped?)")?;
    let strtab = secs
        .get(tab.link as usize)
        .ok_or("bad symbol string table")?;
    let mut out = BTreeMap::new();
    for i in 1..tab.size / 24 {
        let e = entry(d, tab.offset, i, 24)?;
        let name = cstr(d, strtab.offset, u32_at(e, 0)?)?;
        if u16_at(e, 6)? == SHN_UNDEF {
            return Err(format!("symbol `{name}` is undefined"));
        }
        out.insert(name, (u64_at(e, 8)?, u64_at(e, 16)?));
    }
    Ok(out)
}

fn check_header(d: &[u8], arch: &str) -> Result<(), String> {
    let machine = match arch {
        "x86_64" => EM_X86_64,
        "aarch64" => EM_AARCH64,
        _ => return Err(format!("architecture {arch} has no blobs")),
    };
    if bytes::<6>(d, 0)? != [0x7f, b'E', b'L', b'F', 2, 1] {
        return Err("it is not a little-endian ELF64 file".into());
    }
    if u16_at(d, 18)? != machine {
        return Err(format!("it is not an {arch} ELF file"));
    }
    Ok(())
}

/// The one PT_LOAD at address 0; refuses any other shape.
fn load_segment(d: &[u8]) -> Result<Segment, String> {
    let segs = segments(d)?;
    let loads = segs.iter().filter(|p| p.kind == PT_LOAD).count();
    if loads != 1 {
        return Err(format!("it has {loads} loadable segments, not exactly 1"));
    }
    if let Some(p) = segs
        .iter()
        .find(|p| matches!(p.kind, PT_DYNAMIC | PT_INTERP | PT_TLS))
    {
        return Err(format!(
            "it has a program header of type {} (dynamic, interpreter or TLS)",
            p.kind
        ));
    }
    let load = segs
        .into_iter()
        .find(|p| p.kind == PT_LOAD)
        .ok_or("no PT_LOAD")?;
    if load.vaddr != 0 || load.filesz > load.memsz {
        return Err("its segment is not linked at address 0 (check blob.ld)".into());
    }
    Ok(load)
}

/// Checks a linked blob against `spec` and cuts out its flat image.
pub fn check_blob(d: &[u8], spec: &BlobSpec) -> Result<CheckedBlob, String> {
    let fail = |why: String| format!("blob `{}` ({}) is refused: {why}", spec.name, spec.arch);
    check_header(d, spec.arch).map_err(fail)?;
    let load = load_segment(d).map_err(fail)?;
    let secs = sections(d).map_err(fail)?;
    check_relocations(d, &secs).map_err(fail)?;
    let mut all = symbols(d, &secs).map_err(fail)?;
    let mut wanted = BTreeMap::new();
    for &name in spec.symbols {
        let (off, size) = all
            .remove(name)
            .ok_or_else(|| fail(format!("symbol `{name}` is missing")))?;
        if off.saturating_add(size) > load.memsz {
            return Err(fail(format!("symbol `{name}` lies outside the segment")));
        }
        wanted.insert(name.to_string(), (off, size));
    }
    if load.filesz > spec.budget as u64 {
        return Err(fail(format!(
            "its image is {} bytes, over the budget of {}",
            load.filesz, spec.budget
        )));
    }
    let image = slice(d, load.offset, load.filesz).map_err(fail)?.to_vec();
    Ok(CheckedBlob {
        image,
        mem_size: load.memsz,
        symbols: wanted,
    })
}
