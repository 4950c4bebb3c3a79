//! The VMAs of a process, from `/proc/PID/smaps` (the maps line plus the
//! kernel's VmFlags, which maps lacks) and `/proc/PID/map_files/START-END`
//! (stat of the exact file mapped, even after a rename).
//!
//! Each VMA becomes a vma record with its protection, MAP_* flags, the
//! madvise/mlock state restore re-applies, and its backing: anonymous
//! private, anonymous shared (shared /dev/zero, SysV shm and memfd mappings:
//! shmem objects whose pages are stored once by their inode), a file with its
//! identity (so restore refuses a file that changed), or one of the kernel's
//! special mappings. A mapping of a deleted file is a file mapping whose path
//! ends in " (deleted)": its contents go into the image (files::ghost).
//! Mappings crest cannot rebuild (hugetlbfs, VM_IO/VM_PFNMAP device memory, a
//! private mapping of a memfd, a deleted file over --ghost-limit, other
//! special mappings) are refused by name.

use std::os::unix::fs::MetadataExt;

use super::{gone_or, parsed, read_proc};
use crate::error::{Error, Result};
use crate::image::files::FileId;
use crate::image::vma::{
    Backing, VMA_DONTDUMP, VMA_DONTFORK, VMA_HUGEPAGE, VMA_LOCKED, VMA_MERGEABLE, VMA_NOHUGEPAGE,
    VMA_RAND_READ, VMA_SEQ_READ, VMA_WIPEONFORK, Vma,
};
use crate::proc::maps::MapsEntry;
use crate::proc::smaps::{
    self, SmapsEntry, VM_DONTCOPY, VM_DONTDUMP, VM_GROWSDOWN, VM_HUGEPAGE, VM_HUGETLB, VM_IO,
    VM_LOCKED, VM_MERGEABLE, VM_NOHUGEPAGE, VM_WIPEONFORK, vm_flag,
};

/// VM_PFNMAP: raw page frames (device memory), no struct page to copy.
const VM_PFNMAP: u64 = vm_flag(b"pf");

/// smaps VmFlags -> the vma record's advice bits.
const ADVICE: [(u64, u64); 9] = [
    (VM_LOCKED, VMA_LOCKED),
    (VM_DONTCOPY, VMA_DONTFORK),
    (VM_DONTDUMP, VMA_DONTDUMP),
    (VM_WIPEONFORK, VMA_WIPEONFORK),
    (VM_MERGEABLE, VMA_MERGEABLE),
    (VM_HUGEPAGE, VMA_HUGEPAGE),
    (VM_NOHUGEPAGE, VMA_NOHUGEPAGE),
    (vm_flag(b"sr"), VMA_SEQ_READ),
    (vm_flag(b"rr"), VMA_RAND_READ),
];

/// Every VMA of `pid`, in address order.
pub fn collect_vmas(pid: u32) -> Result<Vec<Vma>> {
    let text = read_proc(pid, "smaps")?;
    let entries = parsed(pid, "smaps", smaps::parse(&text))?;
    entries.iter().map(|e| collect_vma(pid, e)).collect()
}

/// Every VMA of `pid` from `/proc/PID/maps` alone, for the checks before
/// the seize: smaps walks every page table of the process (about 90 ms for
/// 2 GiB here), which the dump then pays again once the tree is frozen.
/// Without VmFlags these records have no advice bits, and hugetlbfs and
/// device memory are refused only by that frozen pass.
pub fn collect_vmas_unfrozen(pid: u32) -> Result<Vec<Vma>> {
    let text = read_proc(pid, "maps")?;
    let entries = parsed(pid, "maps", crate::proc::maps::parse(&text))?;
    entries
        .into_iter()
        .map(|map| {
            let e = SmapsEntry {
                map,
                rss: 0,
                anonymous: 0,
                swap: 0,
                anon_huge: 0,
                vm_flags: 0,
                unknown_flags: Vec::new(),
            };
            collect_vma(pid, &e)
        })
        .collect()
}

/// One smaps entry as a vma record.
fn collect_vma(pid: u32, e: &SmapsEntry<'_>) -> Result<Vma> {
    let m = &e.map;
    refuse_unsupported(pid, e)?;
    let backing = backing(pid, m)?;
    let prot = prot(m);
    let file_backed = matches!(
        backing,
        Backing::FilePrivate { .. } | Backing::FileShared { .. }
    );
    let vma = Vma {
        start: m.start,
        end: m.end,
        pgoff: m.offset / crate::sys::mm::page_size() as u64,
        prot,
        flags: map_flags(e, &backing),
        advice: advice(e),
        backing,
        name: if file_backed {
            Vec::new()
        } else {
            m.path.to_vec()
        },
    };
    Ok(vma)
}

/// Completes VMAs collected from maps alone ([`collect_vmas_unfrozen`],
/// the tree frozen) with smaps' VmFlags: the advice bits, MAP_GROWSDOWN
/// and the refusals that need them. `text` is /proc/PID/smaps, read on a
/// second thread while the parasite may have been in the process: its
/// own mappings are skipped. False if a VMA of `vmas` is not in `text` as
/// maps showed it (a parasite mapping merged with it): the caller reads
/// smaps again once the parasite is gone.
pub fn apply_smaps(pid: u32, vmas: &mut [Vma], text: &[u8]) -> Result<bool> {
    let entries = parsed(pid, "smaps", smaps::parse(text))?;
    let mut rest = entries.iter();
    for v in vmas.iter_mut() {
        let Some(e) = rest.find(|e| e.map.start >= v.start) else {
            return Ok(false);
        };
        let m = &e.map;
        let pgoff = m.offset / crate::sys::mm::page_size() as u64;
        let shared = v.flags & libc::MAP_SHARED as u32 != 0;
        if (m.start, m.end, pgoff, prot(m), m.shared) != (v.start, v.end, v.pgoff, v.prot, shared) {
            return Ok(false);
        }
        refuse_unsupported(pid, e)?;
        v.flags = map_flags(e, &v.backing);
        v.advice = advice(e);
    }
    Ok(true)
}

/// PROT_* of a maps line.
fn prot(m: &MapsEntry<'_>) -> u32 {
    [(m.read, 1), (m.write, 2), (m.exec, 4)]
        .iter()
        .filter(|(on, _)| *on)
        .fold(0, |p, (_, bit)| p | bit)
}

/// The vma record's advice bits from smaps' VmFlags.
fn advice(e: &SmapsEntry<'_>) -> u64 {
    ADVICE
        .iter()
        .filter(|(vm, _)| e.vm_flags & vm != 0)
        .fold(0, |a, (_, bit)| a | bit)
}

/// The MAP_* flags an mmap re-creating the mapping would take.
fn map_flags(e: &SmapsEntry<'_>, backing: &Backing) -> u32 {
    let mut flags = match e.map.shared {
        true => libc::MAP_SHARED,
        false => libc::MAP_PRIVATE,
    };
    if matches!(backing, Backing::AnonPrivate | Backing::AnonShared { .. }) {
        flags |= libc::MAP_ANONYMOUS;
    }
    if e.vm_flags & VM_GROWSDOWN != 0 {
        flags |= libc::MAP_GROWSDOWN;
    }
    flags as u32
}

/// Refuses the mappings no restore could rebuild, naming them. The kernel's
/// special mappings are exempt: [vvar] is VM_IO|VM_PFNMAP, and restore
/// moves the kernel's own instead of copying them.
fn refuse_unsupported(pid: u32, e: &SmapsEntry<'_>) -> Result<()> {
    let why = if e.map.is_special() {
        return Ok(());
    } else if e.vm_flags & VM_HUGETLB != 0 {
        "a hugetlbfs mapping"
    } else if e.vm_flags & (VM_IO | VM_PFNMAP) != 0 {
        "device memory (VM_IO/VM_PFNMAP)"
    } else if e.map.is_deleted()
        && !is_shmem(&e.map)
        && super::files::memfd::memfd_name(e.map.path).is_some()
    {
        "a private mapping of a memfd"
    } else {
        return Ok(());
    };
    Err(unsupported_vma(pid, &e.map, why))
}

fn unsupported_vma(pid: u32, m: &MapsEntry<'_>, why: &str) -> Error {
    Error::Unsupported(format!(
        "the mapping {:#x}-{:#x} `{}` of pid {pid} is {why}, which crest cannot dump yet",
        m.start,
        m.end,
        String::from_utf8_lossy(m.path)
    ))
}

/// Shared memory the kernel backs with a shmem inode: shared /dev/zero or
/// MAP_SHARED|MAP_ANONYMOUS (`[anon_shmem:NAME]` once named with
/// PR_SET_VMA_ANON_NAME), SysV shm, memfd.
fn is_shmem(m: &MapsEntry<'_>) -> bool {
    m.shared
        && m.inode != 0
        && (m.path == b"/dev/zero (deleted)"
            || m.path.starts_with(b"[anon_shmem:")
            || m.path.starts_with(b"/SYSV")
            || m.path.starts_with(b"/memfd:"))
}

/// What backs `m`.
fn backing(pid: u32, m: &MapsEntry<'_>) -> Result<Backing> {
    let special = match m.path {
        b"[vdso]" => Some(Backing::Vdso),
        b"[vvar]" => Some(Backing::Vvar),
        b"[vvar_vclock]" => Some(Backing::VvarVclock),
        b"[vsyscall]" => Some(Backing::Vsyscall),
        _ if m.is_special() => return Err(unsupported_vma(pid, m, "a special kernel mapping")),
        _ => None,
    };
    if let Some(b) = special {
        return Ok(b);
    }
    if is_shmem(m) {
        return Ok(Backing::AnonShared { shmid: m.inode });
    }
    if m.inode == 0 || (m.path == b"/dev/zero" && !m.shared) {
        if m.shared {
            return Err(unsupported_vma(pid, m, "shared memory without an inode"));
        }
        return Ok(Backing::AnonPrivate);
    }
    let id = map_file_id(pid, m)?;
    if id.mode & libc::S_IFMT != libc::S_IFREG {
        return Err(unsupported_vma(
            pid,
            m,
            "a mapping of a device or special file",
        ));
    }
    let path = m.path.to_vec();
    Ok(match m.shared {
        true => Backing::FileShared { path, id },
        false => Backing::FilePrivate { path, id },
    })
}

/// stat of `/proc/PID/map_files/START-END`: the file actually mapped.
fn map_file_id(pid: u32, m: &MapsEntry<'_>) -> Result<FileId> {
    let link = format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end);
    let meta = std::fs::metadata(&link).map_err(|e| gone_or(pid, Error::io("stat", &link, e)))?;
    Ok(file_id(&meta))
}

/// The identity of a file as the image records it.
pub fn file_id(meta: &std::fs::Metadata) -> FileId {
    FileId {
        dev: meta.dev(),
        ino: meta.ino(),
        size: meta.size(),
        mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        mode: meta.mode(),
    }
}
