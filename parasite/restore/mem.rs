//! The address space: the special mappings parked and placed, every VMA
//! mapped, its pages read in, its protections and advice set.
//!
//! Pages go straight from the pages file into place with pread, so a run
//! costs one system call and no copy through a buffer. A VMA that receives
//! pages is mapped writable first and gets its own protection afterwards.
//!
//! # Safety
//! Everything here rewrites the address space: the plan's tables lie in
//! the restorer's mapping, which no VMA of the plan overlaps (crest chose
//! the place), and the specials' park slots lie inside it too.

use super::calls::{self, Sys};
use crate::plan::{PlanRun, PlanShmem, PlanSpecial, PlanVma, RUN_ZERO, RestorePlan, VMA_FILL, VMA_SHMEM};

/// A failed item: its index and the negative errno.
pub type Failed = (u32, isize);

fn table<T>(addr: u64, n: u64) -> &'static [T] {
    // SAFETY: crest wrote `n` entries of T at `addr` inside the restorer
    // mapping, which stays mapped and unchanged while the blob runs.
    unsafe { core::slice::from_raw_parts(addr as *const T, n as usize) }
}

/// `MADV_POPULATE_WRITE`.
const MADV_POPULATE_WRITE: u32 = 23;

fn at(i: usize, r: Sys) -> Result<usize, Failed> {
    r.map_err(|e| (i as u32, e))
}

/// The VMAs of the plan.
pub fn vmas(p: &RestorePlan) -> &'static [PlanVma] {
    table(p.vmas, p.nr_vmas)
}

fn specials(p: &RestorePlan) -> &[PlanSpecial] {
    &p.special[..(p.nr_special as usize).min(p.special.len())]
}

/// Moves vdso/vvar into their park slots inside the restorer mapping, out of
/// the way of the VMAs.
pub fn park_specials(p: &RestorePlan) -> Result<(), Failed> {
    for (i, s) in specials(p).iter().enumerate() {
        // SAFETY: the park slot is inside the restorer mapping (module note).
        at(i, unsafe { calls::mremap_to(s.cur, s.len, s.park) })?;
    }
    Ok(())
}

/// Moves the parked specials to their dumped addresses (or drops them).
pub fn place_specials(p: &RestorePlan) -> Result<(), Failed> {
    for (i, s) in specials(p).iter().enumerate() {
        // SAFETY: dst was the special's place in the dumped process, so no
        // VMA of the plan is there.
        let r = if s.dst == 0 {
            unsafe { calls::munmap(s.park, s.len) }
        } else {
            unsafe { calls::mremap_to(s.park, s.len, s.dst) }
        };
        at(i, r)?;
    }
    Ok(())
}

fn shmems(p: &RestorePlan) -> &'static [PlanShmem] {
    table(p.shmem, p.nr_shmem)
}

const MAP_SHARED_ANON: u32 = 0x01 | 0x20;
const PROT_RW: u32 = 0x1 | 0x2;
const O_RDWR_CLOEXEC: usize = 0o2 | 0o2000000;
const AT_FDCWD: isize = -100;

/// Creates each shared memory object whole at its temporary place in the
/// restorer mapping, reads its pages in, and opens it through
/// /proc/self/map_files so the VMAs can map it.
pub fn create_shmem(p: &RestorePlan) -> Result<(), Failed> {
    for (i, s) in shmems(p).iter().enumerate() {
        if s.inherited_fd >= 0 {
            // SAFETY: fd_slot is a u32 crest reserved for this object.
            unsafe { core::ptr::write_volatile(s.fd_slot as *mut u32, s.inherited_fd as u32) };
            continue;
        }
        // SAFETY: tmp..tmp+size is a slice of the restorer mapping that
        // crest reserved for this object.
        at(i, unsafe { calls::mmap_fixed(s.tmp, s.size, PROT_RW, MAP_SHARED_ANON, -1, 0) })?;
        fill(table(s.runs, s.nr_runs)).map_err(|(_, e)| (i as u32, e))?;
        let a = [AT_FDCWD as usize, s.path.as_ptr() as usize, O_RDWR_CLOEXEC, 0, 0];
        // SAFETY: the kernel reads the NUL-terminated path from the plan.
        let fd = at(i, unsafe { calls::call(crate::syscall::nr::SYS_openat, a) })?;
        // SAFETY: fd_slot is a u32 crest reserved for this object.
        unsafe { core::ptr::write_volatile(s.fd_slot as *mut u32, fd as u32) };
    }
    Ok(())
}

/// The fd of shared memory object `index` (opened by create_shmem).
fn shmem_fd(p: &RestorePlan, index: i32) -> i32 {
    let s = &shmems(p)[index as usize];
    // SAFETY: create_shmem wrote the slot before any VMA is mapped.
    unsafe { core::ptr::read_volatile(s.fd_slot as *const u32) as i32 }
}

/// Closes the shared memory objects' fds once every VMA maps them.
pub fn close_shmem(p: &RestorePlan) -> Result<(), Failed> {
    for i in 0..shmems(p).len() {
        let fd = shmem_fd(p, i as i32) as usize;
        // SAFETY: closes an fd create_shmem opened.
        at(i, unsafe { calls::call(crate::syscall::nr::SYS_close, [fd, 0, 0, 0, 0]) })?;
    }
    Ok(())
}

/// Maps every VMA at its address, writable when pages go in.
pub fn map_vmas(p: &RestorePlan) -> Result<(), Failed> {
    for (i, v) in vmas(p).iter().enumerate() {
        let prot = if v.fill == VMA_FILL {
            v.prot | calls::PROT_WRITE
        } else {
            v.prot
        };
        let fd = if v.fill == VMA_SHMEM { shmem_fd(p, v.fd) } else { v.fd };
        // SAFETY: the VMAs do not overlap the restorer mapping (module note).
        at(i, unsafe { calls::mmap_fixed(v.start, v.len, prot, v.flags, fd, v.offset) })?;
    }
    close_shmem(p)
}

/// Reads every run of the process's private pages into place.
pub fn fill_runs(p: &RestorePlan) -> Result<(), Failed> {
    fill(table(p.runs, p.nr_runs))
}

/// Reads `runs` from their pages files (each run names its own: the
/// images of a parent chain each have one) into place; clears the zero
/// runs.
fn fill(runs: &[PlanRun]) -> Result<(), Failed> {
    for (i, r) in runs.iter().enumerate() {
        if r.file_off == RUN_ZERO {
            clear(r.addr, r.len);
            continue;
        }
        // Fault the run's pages in with one call instead of one fault per
        // page during the copy; kernels before 5.14 lack it (EINVAL): the
        // copy then faults them in itself.
        // SAFETY: the run's own range, mapped writable (as above).
        let _ = unsafe { calls::madvise(r.addr, r.len, MADV_POPULATE_WRITE) };
        let mut done = 0;
        while done < r.len {
            // SAFETY: as above; the range stays inside the run.
            let got = at(i, unsafe {
                calls::pread(r.fd, r.addr + done, r.len - done, r.file_off + done)
            })?;
            if got == 0 {
                // The pages file is shorter than its index said.
                return Err((i as u32, -5));
            }
            done += got as u64;
        }
    }
    Ok(())
}

/// Zeroes a page-aligned run, a word at a time (a direct call to the
/// runtime's memset would go through an address the blob would have to
/// relocate).
fn clear(addr: u64, len: u64) {
    let words = addr as *mut u64;
    for i in 0..(len / 8) as usize {
        // SAFETY: crest lists runs only inside VMAs it marked VMA_FILL,
        // which are mapped writable now; i stays inside the run.
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
    }
}

/// Gives the filled VMAs their own protection and every VMA its advice.
pub fn protect_vmas(p: &RestorePlan) -> Result<(), Failed> {
    for (i, v) in vmas(p).iter().enumerate() {
        if v.fill == VMA_FILL && v.prot & calls::PROT_WRITE == 0 {
            // SAFETY: the VMA's own range.
            at(i, unsafe { calls::mprotect(v.start, v.len, v.prot) })?;
        }
        let mut advice = v.advice;
        while advice != 0 {
            let a = (advice & 0xff) as u32;
            advice >>= 8;
            if a != 0 {
                // SAFETY: the VMA's own range.
                at(i, unsafe { calls::madvise(v.start, v.len, a) })?;
            }
        }
    }
    Ok(())
}
