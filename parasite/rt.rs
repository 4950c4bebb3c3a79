//! The blobs' tiny runtime: what `core` expects from the platform (memcpy,
//! memmove, memset, memcmp, bcmp, a panic handler) and typed wrappers over
//! the few system calls the blobs make.
//!
//! A blob links no libc, yet LLVM emits calls to the mem functions for
//! struct copies and loops, so they are defined here. The blob crates are
//! `#![no_builtins]`, so LLVM does not recognise the loops below as a
//! memcpy idiom and turn them back into calls to themselves, and the
//! functions are `#[inline(never)]` so the loops stay loops in one place.
//! The panic handler traps with SIGILL: unwinding or exiting would take the
//! host process down, a trap lets crest notice and cure the task.
//!
//! # Safety
//! The mem functions have C's contracts (valid, and for memcpy disjoint,
//! ranges); Rust's generated calls honour them. The system call wrappers
//! that pass only values and change nothing are safe; the others are
//! `unsafe fn`s with their own contract.

use crate::syscall::{nr, syscall0};

/// C's `memcpy`: copies `n` bytes from `src` to the disjoint `dst`.
///
/// # Safety
/// `src` is readable and `dst` writable for `n` bytes; they do not overlap.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    let mut i = 0;
    while i < n {
        // SAFETY: i < n, both ranges are valid for n bytes (caller).
        unsafe { *dst.add(i) = *src.add(i) };
        i += 1;
    }
    dst
}

/// C's `memmove`: copies `n` bytes from `src` to `dst`, which may overlap.
///
/// # Safety
/// `src` is readable and `dst` writable for `n` bytes.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize) <= (src as usize) {
        // SAFETY: copying forwards never overwrites a source byte not yet
        // read when dst is below src; validity is the caller's.
        return unsafe { memcpy(dst, src, n) };
    }
    let mut i = n;
    while i > 0 {
        i -= 1;
        // SAFETY: i < n; backwards, so an overlapping source byte is read
        // before it is overwritten.
        unsafe { *dst.add(i) = *src.add(i) };
    }
    dst
}

/// C's `memset`: fills `n` bytes at `dst` with the low byte of `c`.
///
/// # Safety
/// `dst` is writable for `n` bytes.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    let mut i = 0;
    while i < n {
        // SAFETY: i < n, dst is valid for n bytes (caller).
        unsafe { *dst.add(i) = c as u8 };
        i += 1;
    }
    dst
}

/// C's `memcmp`: compares `n` bytes as unsigned chars.
///
/// # Safety
/// `a` and `b` are readable for `n` bytes.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: i < n, both are valid for n bytes (caller).
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// `bcmp`: memcmp that only reports equal (0) or not; LLVM emits it for
/// `==` on byte arrays.
///
/// # Safety
/// `a` and `b` are readable for `n` bytes.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    crate::entry::trap_abort()
}

/// `getpid()`: the task's thread group id (never fails).
pub fn getpid() -> i32 {
    // SAFETY: getpid takes no argument and changes nothing.
    unsafe { syscall0(nr::SYS_getpid) as i32 }
}

/// `gettid()`: the calling thread's id (never fails).
pub fn gettid() -> i32 {
    // SAFETY: gettid takes no argument and changes nothing.
    unsafe { syscall0(nr::SYS_gettid) as i32 }
}

/// `rseq(addr, len, RSEQ_FLAG_UNREGISTER, sig)`: 0 or -errno.
pub fn rseq_unregister(addr: u64, len: u32, sig: u32) -> i32 {
    const RSEQ_FLAG_UNREGISTER: usize = 1;
    let (addr, len, sig) = (addr as usize, len as usize, sig as usize);
    // SAFETY: unregistering only makes the kernel stop writing to the area.
    unsafe { crate::syscall::syscall4(nr::SYS_rseq, addr, len, RSEQ_FLAG_UNREGISTER, sig) as i32 }
}

/// `munmap(addr, len)`: 0 or -errno.
///
/// # Safety
/// Nothing the blob still uses (its own code, args area, stack) lies in
/// the range.
pub unsafe fn munmap(addr: u64, len: u64) -> i32 {
    // SAFETY: the caller keeps the blob's own memory out of the range.
    unsafe { crate::syscall::syscall2(nr::SYS_munmap, addr as usize, len as usize) as i32 }
}

// ---------------------------------------------------------------------------
// Queries of the parasite-state commands (CMD_DUMP_*). Each one either
// changes nothing or puts back what it changed before returning; those
// writing through a pointer are `unsafe fn`s whose contract is that the
// pointer is valid for the struct the kernel writes.
// ---------------------------------------------------------------------------

use crate::syscall::{syscall1, syscall2, syscall4, syscall5};

/// `PR_GET_PDEATHSIG`: writes the signal to an `int *`.
pub const PR_GET_PDEATHSIG: usize = 2;
/// `PR_GET_DUMPABLE`: returns the flag.
pub const PR_GET_DUMPABLE: usize = 3;
/// `PR_GET_SECUREBITS`: returns the bits.
pub const PR_GET_SECUREBITS: usize = 27;
/// `PR_GET_CHILD_SUBREAPER`: writes the flag to an `int *`.
pub const PR_GET_CHILD_SUBREAPER: usize = 37;
/// `PR_GET_NO_NEW_PRIVS`: returns the flag.
pub const PR_GET_NO_NEW_PRIVS: usize = 39;
/// `PR_GET_TID_ADDRESS`: writes the clear_child_tid pointer to an `int **`.
pub const PR_GET_TID_ADDRESS: usize = 40;
/// `PR_GET_THP_DISABLE`: returns the flag.
pub const PR_GET_THP_DISABLE: usize = 42;

/// `rt_sigaction(sig, NULL, out, 8)`: reads signal `sig`'s action; 0 or
/// -errno.
///
/// # Safety
/// `out` is writable for the kernel's `struct sigaction` (32 bytes).
pub unsafe fn sigaction_get(sig: usize, out: *mut u8) -> i32 {
    // SAFETY: a NULL new action only reads; out is valid (caller).
    unsafe { syscall4(nr::SYS_rt_sigaction, sig, 0, out as usize, 8) as i32 }
}

/// `getitimer(which, out)`: 0 or -errno.
///
/// # Safety
/// `out` is writable for a `struct itimerval` (32 bytes).
pub unsafe fn getitimer(which: usize, out: *mut u8) -> i32 {
    // SAFETY: getitimer only writes *out, valid (caller).
    unsafe { syscall2(nr::SYS_getitimer, which, out as usize) as i32 }
}

/// `timer_gettime(id, out)`: 0 or -errno.
///
/// # Safety
/// `out` is writable for a `struct itimerspec` (32 bytes).
pub unsafe fn timer_gettime(id: i32, out: *mut u8) -> i32 {
    // SAFETY: timer_gettime only writes *out, valid (caller). The id is
    // passed as the kernel's int timer_t.
    unsafe { syscall2(nr::SYS_timer_gettime, id as u32 as usize, out as usize) as i32 }
}

/// `timer_getoverrun(id)`: the overrun count or -errno.
pub fn timer_getoverrun(id: i32) -> i32 {
    // SAFETY: a query by value that changes nothing.
    unsafe { syscall1(nr::SYS_timer_getoverrun, id as u32 as usize) as i32 }
}

/// The file creation mask: umask(0) returns it, umask(old) puts it back.
/// Every other thread is stopped by crest meanwhile, so none creates a
/// file with the temporary mask.
pub fn umask_get() -> u32 {
    // SAFETY: umask cannot fail; the second call restores the first's change.
    unsafe {
        let old = syscall1(nr::SYS_umask, 0) as usize;
        syscall1(nr::SYS_umask, old);
        old as u32
    }
}

/// `personality(0xffffffff)`: the current persona, unchanged.
pub fn personality_get() -> u32 {
    // SAFETY: 0xffffffff is the query value; nothing changes.
    unsafe { syscall1(nr::SYS_personality, 0xffff_ffff) as u32 }
}

/// `brk(0)`: the current program break. 0 lies below the heap's start, so
/// the kernel refuses to move it and returns the break as it is.
pub fn brk_get() -> u64 {
    // SAFETY: see above: the request is refused and changes nothing.
    unsafe { syscall1(nr::SYS_brk, 0) as u64 }
}

/// `prctl(option, 0, 0, 0, 0)` for the PR_GET_* options that return
/// their answer: the answer or -errno. Every unused argument is passed as
/// 0: some options (PR_GET_THP_DISABLE, PR_GET_NO_NEW_PRIVS) refuse
/// anything else with EINVAL.
pub fn prctl_get(option: usize) -> isize {
    // SAFETY: the PR_GET_* options of this kind only read.
    unsafe { syscall5(nr::SYS_prctl, option, 0, 0, 0, 0) }
}

/// `prctl(option, out)` for the PR_GET_* options that write their answer
/// through a pointer: 0 or -errno.
///
/// # Safety
/// `out` is writable for what `option` writes (an int, or a pointer for
/// PR_GET_TID_ADDRESS).
pub unsafe fn prctl_get_into(option: usize, out: *mut u8) -> i32 {
    // SAFETY: these options only write *out, valid (caller); the unused
    // arguments are 0, as for prctl_get.
    unsafe { syscall5(nr::SYS_prctl, option, out as usize, 0, 0, 0) as i32 }
}

/// `sigaltstack(NULL, out)`: 0 or -errno.
///
/// # Safety
/// `out` is writable for a `stack_t` (24 bytes).
pub unsafe fn sigaltstack_get(out: *mut u8) -> i32 {
    // SAFETY: a NULL new stack only reads; out is valid (caller).
    unsafe { syscall2(nr::SYS_sigaltstack, 0, out as usize) as i32 }
}
