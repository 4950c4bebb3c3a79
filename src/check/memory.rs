//! Probes of the memory interfaces: memfd, map_files, process_vm_readv,
//! vmsplice, the special-mapping layout and the two dirty-page trackers.
//!
//! Soft-dirty is judged only by behaviour: some kernels accept the write of
//! "4" to clear_refs although CONFIG_MEM_SOFT_DIRTY is off, and then bit 55
//! of pagemap simply never gets set.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;

use crate::proc::maps;
use crate::sys::mm::{self, MADV_NOHUGEPAGE, MFD_CLOEXEC, Mapping};
use crate::sys::{fd, process};

use super::child::Child;
use super::probe::{Fail, ProbeResult, SysExt, expect};

const PATTERN: &[u8; 16] = b"crest-check-0123";

/// memfd_create, size it, map it shared, see the bytes through the fd.
pub fn memfd() -> ProbeResult {
    let (file, map) = memfd_mapping()?;
    let mut back = [0u8; 16];
    file.read_exact_at(&mut back, 0).ctx("pread(memfd)")?;
    expect(&back == PATTERN, || {
        "bytes written through a shared memfd mapping did not reach the file".into()
    })?;
    drop(map);
    Ok("memfd_create, ftruncate and a shared mapping".into())
}

fn memfd_mapping() -> Result<(File, Mapping), Fail> {
    let page = mm::page_size();
    let memfd = mm::memfd_create(c"crest-check", MFD_CLOEXEC).ctx("memfd_create")?;
    fd::ftruncate(memfd.as_fd(), page as u64).ctx("ftruncate(memfd)")?;
    let map = Mapping::shared(memfd.as_fd(), page).ctx("mmap(memfd)")?;
    for (i, &b) in PATTERN.iter().enumerate() {
        map.write_byte(i, b);
    }
    Ok((File::from(memfd), map))
}

/// /proc/self/map_files/START-END names and opens a memfd mapping.
pub fn map_files() -> ProbeResult {
    let (_file, map) = memfd_mapping()?;
    let path = format!(
        "/proc/self/map_files/{:x}-{:x}",
        map.addr(),
        map.addr() + map.len()
    );
    let target = std::fs::read_link(&path).ctx("readlink(map_files)")?;
    let target = target.to_string_lossy();
    expect(target.starts_with("/memfd:crest-check"), || {
        format!("{path} points to {target}")
    })?;
    let mut back = [0u8; 16];
    File::open(&path)
        .ctx("open(map_files)")?
        .read_exact_at(&mut back, 0)
        .ctx("pread(map_files)")?;
    expect(&back == PATTERN, || {
        format!("{path} does not show the mapping's bytes")
    })?;
    Ok("readlink and open of a memfd mapping".into())
}

/// process_vm_readv from a child sees the child's copy, not ours.
pub fn process_vm_readv() -> ProbeResult {
    let map = Mapping::anonymous(mm::page_size()).ctx("mmap")?;
    for (i, &b) in PATTERN.iter().enumerate() {
        map.write_byte(i, b);
    }
    let child = Child::fork(|| {
        loop {
            process::pause();
        }
    })?;
    map.write_byte(0, b'X');
    let mut back = [0u8; 16];
    let n =
        mm::process_vm_readv(child.pid(), map.addr() as u64, &mut back).ctx("process_vm_readv")?;
    expect(n == 16 && &back == PATTERN, || {
        "process_vm_readv did not return the child's memory".into()
    })?;
    Ok("read 16 bytes of a forked child".into())
}

/// vmsplice of an unaligned buffer into a pipe, read back intact.
pub fn vmsplice() -> ProbeResult {
    let (rd, wr) = fd::pipe2(fd::O_CLOEXEC).ctx("pipe2")?;
    let buf: Vec<u8> = (0..256u32).map(|i| (i * 7) as u8).collect();
    let part = &buf[17..17 + 100];
    let n = mm::vmsplice(wr.as_fd(), part).ctx("vmsplice")?;
    let mut back = [0u8; 100];
    let m = fd::read(rd.as_fd(), &mut back).ctx("read(pipe)")?;
    expect(n == 100 && m == 100 && back[..] == *part, || {
        "vmsplice of an unaligned buffer came back different".into()
    })?;
    Ok("unaligned buffer through a pipe".into())
}

/// The special mappings a restorer must move together.
pub fn vdso_layout() -> ProbeResult {
    let buf = std::fs::read("/proc/self/maps").ctx("read(/proc/self/maps)")?;
    let maps =
        maps::parse(&buf).map_err(|e| Fail::error(format!("/proc/self/maps: {}", e.problem)))?;
    let special: Vec<_> = maps
        .into_iter()
        .filter(|e| matches!(e.path, b"[vvar]" | b"[vvar_vclock]" | b"[vdso]"))
        .collect();
    let Some(vdso) = special.iter().find(|e| e.path == b"[vdso]") else {
        return Err(Fail::missing(
            "no [vdso] in /proc/self/maps (vdso=0 or an emulator)".into(),
        ));
    };
    let mut magic = [0u8; 4];
    File::open("/proc/self/mem")
        .ctx("open(/proc/self/mem)")?
        .read_exact_at(&mut magic, vdso.start)
        .ctx("pread(/proc/self/mem)")?;
    expect(&magic == b"\x7fELF", || {
        "the [vdso] mapping does not start with an ELF header".into()
    })?;
    let adjacent = special.windows(2).all(|w| w[0].end == w[1].start);
    let parts: Vec<String> = special
        .iter()
        .map(|e| format!("{} {} KiB", String::from_utf8_lossy(e.path), e.len() / 1024))
        .collect();
    let layout = if adjacent {
        "adjacent in this order"
    } else {
        "NOT adjacent"
    };
    Ok(format!("{}, {layout}", parts.join(", ")))
}

/// Bit 55 of a /proc/PID/pagemap entry: the page is soft-dirty.
const PM_SOFT_DIRTY: u64 = 1 << 55;

fn pagemap_entry(pagemap: &File, addr: usize) -> Result<u64, Fail> {
    let mut e = [0u8; 8];
    let off = (addr / mm::page_size() * 8) as u64;
    pagemap
        .read_exact_at(&mut e, off)
        .ctx("pread(/proc/self/pagemap)")?;
    Ok(u64::from_ne_bytes(e))
}

/// Soft-dirty by behaviour: after clear_refs "4", a rewritten page and a
/// freshly written page must both show bit 55, and a page left alone not.
pub fn mem_dirty_track() -> ProbeResult {
    let page = mm::page_size();
    let map = Mapping::anonymous(3 * page).ctx("mmap")?;
    map.madvise(MADV_NOHUGEPAGE)
        .ctx("madvise(MADV_NOHUGEPAGE)")?;
    map.write_byte(0, 1);
    map.write_byte(2 * page, 1);
    let mut clear = std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/self/clear_refs")
        .ctx("open(/proc/self/clear_refs)")?;
    clear.write_all(b"4").ctx("write(clear_refs, \"4\")")?;
    map.write_byte(0, 2); // rewritten after the clear
    map.write_byte(page, 2); // fresh page
    let pagemap = File::open("/proc/self/pagemap").ctx("open(/proc/self/pagemap)")?;
    let bits: Vec<bool> = (0..3)
        .map(|i| pagemap_entry(&pagemap, map.addr() + i * page).map(|e| e & PM_SOFT_DIRTY != 0))
        .collect::<Result<_, _>>()?;
    if !bits[0] && !bits[1] {
        return Err(Fail::missing(
            "pagemap bit 55 stayed 0 for pages written after clear_refs \"4\"".into(),
        ));
    }
    expect(bits == [true, true, false], || {
        format!("soft-dirty bits after clear_refs were {bits:?}, expected [true, true, false]")
    })?;
    Ok("clear_refs \"4\" then writes set pagemap bit 55 exactly".into())
}
