//! Raw Linux system calls for aarch64 blobs: `svc #0` with the number in x8
//! and up to six arguments in x0..x5; the result comes back in x0,
//! `-4095..=-1` meaning -errno.
//!
//! The blobs run inside another process without libc, so this file is their
//! only way into the kernel. The kernel preserves every other register.
//!
//! # Safety
//! A system call can do anything to the calling process (unmap the code that
//! runs, change credentials...). Every function here is `unsafe`: the caller
//! vouches that the call and its arguments are valid for the blob's situation.

use core::arch::asm;

/// Calls syscall `nr` without arguments.
///
/// # Safety
/// The caller guarantees the system call is sound in the blob's context.
#[inline(always)]
pub unsafe fn syscall0(nr: usize) -> isize {
    let ret: isize;
    // SAFETY: the caller vouches for the call; only x0 is written by the kernel.
    unsafe {
        asm!("svc #0", in("x8") nr, lateout("x0") ret, options(nostack));
    }
    ret
}

/// Calls syscall `nr` with one argument.
///
/// # Safety
/// The caller guarantees the system call is sound in the blob's context.
#[inline(always)]
pub unsafe fn syscall1(nr: usize, a0: usize) -> isize {
    let ret: isize;
    // SAFETY: the caller vouches for the call; only x0 is written by the kernel.
    unsafe {
        asm!("svc #0", in("x8") nr, inlateout("x0") a0 as isize => ret, options(nostack));
    }
    ret
}

/// Calls syscall `nr` with two arguments.
///
/// # Safety
/// The caller guarantees the system call is sound in the blob's context.
#[inline(always)]
pub unsafe fn syscall2(nr: usize, a0: usize, a1: usize) -> isize {
    let ret: isize;
    // SAFETY: the caller vouches for the call; only x0 is written by the kernel.
    unsafe {
        asm!("svc #0", in("x8") nr, inlateout("x0") a0 as isize => ret, in("x1") a1,
             options(nostack));
    }
    ret
}

/// Calls syscall `nr` with three arguments.
///
/// # Safety
/// The caller guarantees the system call is sound in the blob's context.
#[inline(always)]
pub unsafe fn syscall3(nr: usize, a0: usize, a1: usize, a2: usize) -> isize {
    let ret: isize;
    // SAFETY: the caller vouches for the call; only x0 is written by the kernel.
    unsafe {
        asm!("svc #0", in("x8") nr, inlateout("x0") a0 as isize => ret, in("x1") a1,
             in("x2") a2, options(nostack));
    }
    ret
}

/// Calls syscall `nr` with four arguments.
///
/// # Safety
/// The caller guarantees the system call is sound in the blob's context.
#[inline(always)]
pub unsafe fn syscall4(nr: usize, a0: usize, a1: usize, a2: usize, a3: usize) -> isize {
    let ret: isize;
    // SAFETY: the caller vouches for the call; only x0 is written by the kernel.
    unsafe {
        asm!("svc #0", in("x8") nr, inlateout("x0") a0 as isize => ret, in("x1") a1,
             in("x2") a2, in("x3") a3, options(nostack));
    }
    ret
}

/// Calls syscall `nr` with five arguments.
///
/// # Safety
/// The caller guarantees the system call is sound in the blob's context.
#[inline(always)]
pub unsafe fn syscall5(nr: usize, a0: usize, a1: usize, a2: usize, a3: usize, a4: usize) -> isize {
    let ret: isize;
    // SAFETY: the caller vouches for the call; only x0 is written by the kernel.
    unsafe {
        asm!("svc #0", in("x8") nr, inlateout("x0") a0 as isize => ret, in("x1") a1,
             in("x2") a2, in("x3") a3, in("x4") a4, options(nostack));
    }
    ret
}

/// Calls syscall `nr` with six arguments.
///
/// # Safety
/// The caller guarantees the system call is sound in the blob's context.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub unsafe fn syscall6(
    nr: usize,
    a0: usize,
    a1: usize,
    a2: usize,
    a3: usize,
    a4: usize,
    a5: usize,
) -> isize {
    let ret: isize;
    // SAFETY: the caller vouches for the call; only x0 is written by the kernel.
    unsafe {
        asm!("svc #0", in("x8") nr, inlateout("x0") a0 as isize => ret, in("x1") a1,
             in("x2") a2, in("x3") a3, in("x4") a4, in("x5") a5, options(nostack));
    }
    ret
}

/// Calls `rt_sigreturn` on the signal frame at `frame_sp` (16-aligned, see
/// sigframe.rs): loads the frame's registers, mask, alternate stack and
/// FP/SIMD state, and continues where they say. Never returns; a frame the
/// kernel refuses kills the process with SIGSEGV.
///
/// # Safety
/// `frame_sp` points to a complete, valid frame that stays mapped.
pub unsafe fn rt_sigreturn(frame_sp: usize) -> ! {
    // SAFETY: the caller vouches for the frame; nothing runs after this.
    unsafe {
        asm!("mov sp, {sp}", "svc #0", sp = in(reg) frame_sp,
             in("x8") nr::SYS_rt_sigreturn, options(noreturn));
    }
}

/// A new thread of the blob with clone3(2) (`nr` = SYS_clone3, `a0` the
/// clone_args, `a1` their size) or clone(2) (`nr` = SYS_clone, `a0` the
/// flags, `a1` the new stack): the child starts on that stack, clears the frame pointer and calls `entry(arg)`, which
/// never returns. The parent gets the child's tid or -errno.
///
/// The child has no Rust frame to return into (its stack is new), so the
/// branch runs entirely in this asm; `arg` and `entry` travel in x9/x10,
/// which the kernel preserves across `svc` and copies into the child.
///
/// # Safety
/// The arguments make a thread whose stack is mapped, 16-aligned at its
/// top and used by nothing else (for clone3, `a0` points to a valid
/// `struct clone_args` of `a1` bytes).
pub unsafe fn clone_thread(
    nr: usize,
    a0: usize,
    a1: usize,
    entry: extern "C" fn(usize) -> !,
    arg: usize,
) -> isize {
    let ret: isize;
    // SAFETY: the caller vouches for args; the child never leaves the asm
    // except into `entry`, which does not return.
    unsafe {
        asm!(
            "svc #0",
            "cbnz x0, 2f",
            "mov x29, xzr",
            "mov x0, x9",
            "blr x10",
            "udf #0",
            "2:",
            in("x8") nr,
            inlateout("x0") a0 as isize => ret, in("x1") a1,
            in("x9") arg, in("x10") entry, options(nostack)
        );
    }
    ret
}

/// System call numbers the blobs use, named as in libc (`SYS_` + the name in
/// the generic table include/uapi/asm-generic/unistd.h) so both arches share
/// the names.
#[allow(non_upper_case_globals)]
pub mod nr {
    /// `write(2)`.
    pub const SYS_write: usize = 64;
    /// `munmap(2)`.
    pub const SYS_munmap: usize = 215;
    /// `rt_sigreturn(2)`.
    pub const SYS_rt_sigreturn: usize = 139;
    /// `getpid(2)`.
    pub const SYS_getpid: usize = 172;
    /// `exit(2)`.
    pub const SYS_exit: usize = 93;
    /// `gettid(2)`.
    pub const SYS_gettid: usize = 178;
    /// `exit_group(2)`.
    pub const SYS_exit_group: usize = 94;
    /// `rseq(2)`.
    pub const SYS_rseq: usize = 293;
    // ---- dirty tracking (pre-dump: a userfaultfd made in the task) ----
    /// `userfaultfd(2)`.
    pub const SYS_userfaultfd: usize = 282;
    // ---- page dump (vmsplice of the task's pages into a pipe) ----
    /// `close(2)`.
    pub const SYS_close: usize = 57;
    /// `pipe2(2)`.
    pub const SYS_pipe2: usize = 59;
    /// `vmsplice(2)`.
    pub const SYS_vmsplice: usize = 75;

    // The parasite-state commands (parasite.rs, CMD_DUMP_*).
    /// `personality(2)`.
    pub const SYS_personality: usize = 92;
    /// `getitimer(2)`.
    pub const SYS_getitimer: usize = 102;
    /// `timer_gettime(2)`.
    pub const SYS_timer_gettime: usize = 108;
    /// `timer_getoverrun(2)`.
    pub const SYS_timer_getoverrun: usize = 109;
    /// `sigaltstack(2)`.
    pub const SYS_sigaltstack: usize = 132;
    /// `rt_sigaction(2)`.
    pub const SYS_rt_sigaction: usize = 134;
    /// `umask(2)`.
    pub const SYS_umask: usize = 166;
    /// `prctl(2)`.
    pub const SYS_prctl: usize = 167;
    /// `brk(2)`.
    pub const SYS_brk: usize = 214;

    // The restorer (restorer.rs, restore/*.rs).
    /// `mmap(2)`.
    pub const SYS_mmap: usize = 222;
    /// `mprotect(2)`.
    pub const SYS_mprotect: usize = 226;
    /// `mremap(2)`.
    pub const SYS_mremap: usize = 216;
    /// `madvise(2)`.
    pub const SYS_madvise: usize = 233;
    /// `pread64(2)`.
    pub const SYS_pread64: usize = 67;
    /// `rt_sigprocmask(2)`.
    pub const SYS_rt_sigprocmask: usize = 135;
    /// `setitimer(2)`.
    pub const SYS_setitimer: usize = 103;
    /// `timer_create(2)`.
    pub const SYS_timer_create: usize = 107;
    /// `timer_settime(2)`.
    pub const SYS_timer_settime: usize = 110;
    /// `timer_delete(2)`.
    pub const SYS_timer_delete: usize = 111;
    /// `prlimit64(2)`.
    pub const SYS_prlimit64: usize = 261;
    /// `set_tid_address(2)`.
    pub const SYS_set_tid_address: usize = 96;
    /// `rt_sigqueueinfo(2)`.
    pub const SYS_rt_sigqueueinfo: usize = 138;
    /// `rt_tgsigqueueinfo(2)`.
    pub const SYS_rt_tgsigqueueinfo: usize = 240;
    /// `setgroups(2)`.
    pub const SYS_setgroups: usize = 159;
    /// `setresuid(2)`.
    pub const SYS_setresuid: usize = 147;
    /// `setresgid(2)`.
    pub const SYS_setresgid: usize = 149;
    /// `setfsuid(2)`.
    pub const SYS_setfsuid: usize = 151;
    /// `setfsgid(2)`.
    pub const SYS_setfsgid: usize = 152;
    /// `capset(2)`.
    pub const SYS_capset: usize = 91;
    /// `futex(2)`.
    pub const SYS_futex: usize = 98;
    /// `clone(2)`.
    pub const SYS_clone: usize = 220;
    /// `pwrite64(2)`.
    pub const SYS_pwrite64: usize = 68;
    /// `clone3(2)`.
    pub const SYS_clone3: usize = 435;
    /// `openat(2)`.
    pub const SYS_openat: usize = 56;
    /// `close_range(2)`.
    pub const SYS_close_range: usize = 436;
    /// `mlock(2)`.
    pub const SYS_mlock: usize = 228;

    // ---- parasite daemon (the command socket, parasite/cmds/daemon.rs) ----
    /// `socketpair(2)`: crest runs it in the target to make the socket.
    pub const SYS_socketpair: usize = 199;
    /// `sendto(2)`: the daemon's replies.
    pub const SYS_sendto: usize = 206;
    /// `recvfrom(2)`: the daemon's commands.
    pub const SYS_recvfrom: usize = 207;
}
