//! `/proc/PID/smaps`: the maps line of each VMA followed by "Key: N kB" lines
//! and a `VmFlags:` line of two-letter codes.
//!
//! crest needs what maps does not show: the kernel's VMA flags (growsdown,
//! locked, dontfork, dontdump, hugepage advice, mergeable, uffd registration,
//! soft-dirty) so a restore can re-create them with mmap/madvise/mlock, and the
//! resident/anonymous/swap sizes to plan the page copy.

use super::{ParseError, fields, lines, maps, udec};

/// VmFlags codes crest understands, in the kernel's spelling. The index in
/// this table is the bit in [`SmapsEntry::vm_flags`].
pub const VM_FLAG_CODES: &[&[u8; 2]] = &[
    b"rd", b"wr", b"ex", b"sh", b"mr", b"mw", b"me", b"ms", b"gd", b"pf", b"lo", b"io", b"sr",
    b"rr", b"dc", b"de", b"ac", b"nr", b"ht", b"sf", b"ar", b"wf", b"dd", b"sd", b"mm", b"hg",
    b"nh", b"mg", b"um", b"uw", b"ss", b"sl", b"bt", b"mt", b"lf",
];

/// Returns the bit for a VmFlags code, e.g. `vm_flag(b"gd")` for VM_GROWSDOWN.
pub const fn vm_flag(code: &[u8; 2]) -> u64 {
    let mut i = 0;
    while i < VM_FLAG_CODES.len() {
        if VM_FLAG_CODES[i][0] == code[0] && VM_FLAG_CODES[i][1] == code[1] {
            return 1 << i;
        }
        i += 1;
    }
    panic!("unknown VmFlags code")
}

/// VM_GROWSDOWN: a stack that grows down on fault.
pub const VM_GROWSDOWN: u64 = vm_flag(b"gd");
/// VM_LOCKED: mlock()ed.
pub const VM_LOCKED: u64 = vm_flag(b"lo");
/// VM_DONTCOPY: MADV_DONTFORK.
pub const VM_DONTCOPY: u64 = vm_flag(b"dc");
/// VM_DONTDUMP: MADV_DONTDUMP.
pub const VM_DONTDUMP: u64 = vm_flag(b"dd");
/// VM_WIPEONFORK: MADV_WIPEONFORK.
pub const VM_WIPEONFORK: u64 = vm_flag(b"wf");
/// VM_HUGEPAGE: MADV_HUGEPAGE.
pub const VM_HUGEPAGE: u64 = vm_flag(b"hg");
/// VM_NOHUGEPAGE: MADV_NOHUGEPAGE.
pub const VM_NOHUGEPAGE: u64 = vm_flag(b"nh");
/// VM_MERGEABLE: MADV_MERGEABLE (KSM).
pub const VM_MERGEABLE: u64 = vm_flag(b"mg");
/// VM_HUGETLB: a hugetlbfs mapping.
pub const VM_HUGETLB: u64 = vm_flag(b"ht");
/// VM_IO / VM_PFNMAP style device memory that cannot be dumped.
pub const VM_IO: u64 = vm_flag(b"io");
/// VM_SOFTDIRTY: the whole VMA counts as dirty (new since the last clear).
pub const VM_SOFTDIRTY: u64 = vm_flag(b"sd");
/// VM_UFFD_MISSING: registered with userfaultfd for missing pages.
pub const VM_UFFD_MISSING: u64 = vm_flag(b"um");
/// VM_UFFD_WP: registered with userfaultfd write-protect.
pub const VM_UFFD_WP: u64 = vm_flag(b"uw");
/// VM_SEALED: mseal()ed.
pub const VM_SEALED: u64 = vm_flag(b"sl");

/// One VMA with the smaps details crest uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmapsEntry<'a> {
    /// The maps line.
    pub map: maps::MapsEntry<'a>,
    /// `Rss`, in bytes.
    pub rss: u64,
    /// `Anonymous`, in bytes.
    pub anonymous: u64,
    /// `Swap`, in bytes.
    pub swap: u64,
    /// `AnonHugePages`, in bytes.
    pub anon_huge: u64,
    /// VmFlags as bits of [`VM_FLAG_CODES`]; unknown codes are kept in `unknown_flags`.
    pub vm_flags: u64,
    /// VmFlags codes this crest does not know (newer kernels).
    pub unknown_flags: Vec<[u8; 2]>,
}

/// Parses a whole smaps file.
pub fn parse(text: &[u8]) -> Result<Vec<SmapsEntry<'_>>, ParseError> {
    let mut out: Vec<SmapsEntry<'_>> = Vec::new();
    for (n, line) in lines(text) {
        if line.is_empty() {
            continue;
        }
        let key_end = memchr::memchr(b':', line);
        let is_field = key_end.is_some_and(|i| {
            line[..i]
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || *c == b'_')
        });
        if !is_field {
            let map =
                maps::parse_line(line).ok_or_else(|| ParseError::new(n, "malformed VMA header"))?;
            out.push(SmapsEntry {
                map,
                rss: 0,
                anonymous: 0,
                swap: 0,
                anon_huge: 0,
                vm_flags: 0,
                unknown_flags: Vec::new(),
            });
            continue;
        }
        let entry = out
            .last_mut()
            .ok_or_else(|| ParseError::new(n, "field before the first VMA"))?;
        let i = key_end.unwrap_or(0);
        apply(entry, &line[..i], &line[i + 1..])
            .ok_or_else(|| ParseError::new(n, "malformed smaps field"))?;
    }
    Ok(out)
}

fn apply(e: &mut SmapsEntry<'_>, key: &[u8], value: &[u8]) -> Option<()> {
    let kb = || Some(udec(fields(value).next()?)? * 1024);
    match key {
        b"Rss" => e.rss = kb()?,
        b"Anonymous" => e.anonymous = kb()?,
        b"Swap" => e.swap = kb()?,
        b"AnonHugePages" => e.anon_huge = kb()?,
        b"VmFlags" => {
            for code in fields(value) {
                let code: [u8; 2] = code.try_into().ok()?;
                match VM_FLAG_CODES.iter().position(|c| **c == code) {
                    Some(bit) => e.vm_flags |= 1 << bit,
                    None => e.unknown_flags.push(code),
                }
            }
        }
        _ => {}
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = b"\
7ffd3b2d6000-7ffd3b2f7000 rw-p 00000000 00:00 0                          [stack]
Size:                132 kB
KernelPageSize:        4 kB
Rss:                  12 kB
Anonymous:            12 kB
AnonHugePages:         0 kB
Swap:                  8 kB
THPeligible:           0
VmFlags: rd wr mr mw me gd ac zz
7f0e5c000000-7f0e5c021000 rw-s 00000000 00:01 1055                       /memfd:x (deleted)
Rss:                   4 kB
VmFlags: rd wr sh mr mw me ms dc dd hg
";

    #[test]
    fn parses_a_real_sample() {
        let v = parse(SAMPLE).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].map.path, b"[stack]");
        assert_eq!(
            (v[0].rss, v[0].anonymous, v[0].swap),
            (12 << 10, 12 << 10, 8 << 10)
        );
        assert_ne!(v[0].vm_flags & VM_GROWSDOWN, 0);
        assert_eq!(v[0].vm_flags & VM_LOCKED, 0);
        assert_eq!(v[0].unknown_flags, [*b"zz"]);
        assert_ne!(v[1].vm_flags & VM_DONTCOPY, 0);
        assert_ne!(v[1].vm_flags & VM_DONTDUMP, 0);
        assert_ne!(v[1].vm_flags & VM_HUGEPAGE, 0);
    }

    #[test]
    fn agrees_with_maps_for_this_process() {
        let smaps = crate::proc::maps::tests::read_self_once("smaps");
        let v = parse(&smaps).unwrap();
        assert!(
            v.iter()
                .any(|e| e.map.path == b"[stack]" && e.vm_flags & VM_GROWSDOWN != 0)
        );
        assert!(
            v.iter()
                .all(|e| e.vm_flags & vm_flag(b"rd") != 0 || !e.map.read)
        );
    }

    #[test]
    fn refuses_fields_before_a_header() {
        assert_eq!(parse(b"Rss: 4 kB\n").unwrap_err().line, 1);
        assert!(parse(b"10-20 rw-p 0 00:00 0\nRss: x kB\n").is_err());
    }
}
