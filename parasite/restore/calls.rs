//! The system calls the restorer makes, as small wrappers over the raw
//! `syscallN` functions: each returns the kernel's answer (>= 0, or
//! -errno) as `Result<usize, isize>` so the steps can use `?`.
//!
//! # Safety
//! Most of these change the address space or the task the blob runs in.
//! They are `unsafe fn`s: the caller vouches that the arguments are right
//! for the plan (addresses the plan holds, buffers inside the blob's
//! mapping).

use crate::syscall::{nr, syscall2, syscall3, syscall4, syscall5, syscall6};

/// A system call's result: the value, or the negative errno.
pub type Sys = Result<usize, isize>;

fn check(r: isize) -> Sys {
    if r < 0 { Err(r) } else { Ok(r as usize) }
}

/// `MAP_FIXED`.
pub const MAP_FIXED: usize = 0x10;
/// `PROT_WRITE`.
pub const PROT_WRITE: u32 = 0x2;
/// `MREMAP_MAYMOVE | MREMAP_FIXED`.
const MREMAP_TO: usize = 0x1 | 0x2;
/// `FUTEX_WAIT` / `FUTEX_WAKE`, shared (crest waits through its own mapping).
const FUTEX_WAIT: usize = 0;
const FUTEX_WAKE: usize = 1;

/// mmap(2) at a fixed address.
///
/// # Safety
/// Replaces whatever is mapped at `addr..addr+len`.
pub unsafe fn mmap_fixed(addr: u64, len: u64, prot: u32, flags: u32, fd: i32, off: u64) -> Sys {
    // SAFETY: the caller vouches for the range.
    check(unsafe {
        syscall6(
            nr::SYS_mmap,
            addr as usize,
            len as usize,
            prot as usize,
            flags as usize | MAP_FIXED,
            fd as isize as usize,
            off as usize,
        )
    })
}

/// mprotect(2).
///
/// # Safety
/// The range is the plan's; the blob's own memory is never in it.
pub unsafe fn mprotect(addr: u64, len: u64, prot: u32) -> Sys {
    // SAFETY: as the caller vouches.
    check(unsafe { syscall3(nr::SYS_mprotect, addr as usize, len as usize, prot as usize) })
}

/// madvise(2).
///
/// # Safety
/// As for [`mprotect`].
pub unsafe fn madvise(addr: u64, len: u64, advice: u32) -> Sys {
    // SAFETY: as the caller vouches.
    check(unsafe { syscall3(nr::SYS_madvise, addr as usize, len as usize, advice as usize) })
}

/// mremap(2) of a whole mapping to `to`.
///
/// # Safety
/// Replaces whatever is mapped at the destination.
pub unsafe fn mremap_to(from: u64, len: u64, to: u64) -> Sys {
    // SAFETY: as the caller vouches.
    check(unsafe {
        syscall5(
            nr::SYS_mremap,
            from as usize,
            len as usize,
            len as usize,
            MREMAP_TO,
            to as usize,
        )
    })
}

/// munmap(2).
///
/// # Safety
/// The range holds nothing the blob still uses.
pub unsafe fn munmap(addr: u64, len: u64) -> Sys {
    // SAFETY: as the caller vouches.
    check(unsafe { syscall2(nr::SYS_munmap, addr as usize, len as usize) })
}

/// pread64(2) into memory the plan mapped.
///
/// # Safety
/// `addr..addr+len` is mapped writable.
pub unsafe fn pread(fd: i32, addr: u64, len: u64, off: u64) -> Sys {
    // SAFETY: as the caller vouches.
    check(unsafe {
        syscall4(
            nr::SYS_pread64,
            fd as isize as usize,
            addr as usize,
            len as usize,
            off as usize,
        )
    })
}

/// Any call with up to five plain or pointer arguments.
///
/// # Safety
/// The call and its pointers are valid (the caller's to show).
pub unsafe fn call(n: usize, a: [usize; 5]) -> Sys {
    // SAFETY: as the caller vouches.
    check(unsafe { syscall5(n, a[0], a[1], a[2], a[3], a[4]) })
}

/// Waits while the futex word at `word` holds `val`.
pub fn futex_wait(word: *const u32, val: u32) {
    // SAFETY: a futex wait only reads the word, which the caller owns.
    unsafe { syscall4(nr::SYS_futex, word as usize, FUTEX_WAIT, val as usize, 0) };
}

/// Wakes every waiter on the futex word at `word`.
pub fn futex_wake(word: *const u32) {
    // SAFETY: a futex wake touches no memory.
    unsafe { syscall3(nr::SYS_futex, word as usize, FUTEX_WAKE, i32::MAX as usize) };
}
