//! Raw Linux system calls for x86_64 blobs: the `syscall` instruction with the
//! number in rax and up to six arguments in rdi, rsi, rdx, r10, r8, r9.
//!
//! The blobs run inside another process without libc, so this file is their
//! only way into the kernel. The kernel clobbers rcx (return address) and r11
//! (saved rflags); the result comes back in rax, `-4095..=-1` meaning -errno.
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
    // SAFETY: the caller vouches for the call; rcx and r11 are declared clobbered.
    unsafe {
        asm!("syscall", inlateout("rax") nr as isize => ret,
             lateout("rcx") _, lateout("r11") _, options(nostack));
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
    // SAFETY: the caller vouches for the call; rcx and r11 are declared clobbered.
    unsafe {
        asm!("syscall", inlateout("rax") nr as isize => ret, in("rdi") a0,
             lateout("rcx") _, lateout("r11") _, options(nostack));
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
    // SAFETY: the caller vouches for the call; rcx and r11 are declared clobbered.
    unsafe {
        asm!("syscall", inlateout("rax") nr as isize => ret, in("rdi") a0, in("rsi") a1,
             lateout("rcx") _, lateout("r11") _, options(nostack));
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
    // SAFETY: the caller vouches for the call; rcx and r11 are declared clobbered.
    unsafe {
        asm!("syscall", inlateout("rax") nr as isize => ret, in("rdi") a0, in("rsi") a1,
             in("rdx") a2, lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}

/// Calls syscall `nr` with four arguments (the fourth goes in r10, not rcx).
///
/// # Safety
/// The caller guarantees the system call is sound in the blob's context.
#[inline(always)]
pub unsafe fn syscall4(nr: usize, a0: usize, a1: usize, a2: usize, a3: usize) -> isize {
    let ret: isize;
    // SAFETY: the caller vouches for the call; rcx and r11 are declared clobbered.
    unsafe {
        asm!("syscall", inlateout("rax") nr as isize => ret, in("rdi") a0, in("rsi") a1,
             in("rdx") a2, in("r10") a3, lateout("rcx") _, lateout("r11") _, options(nostack));
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
    // SAFETY: the caller vouches for the call; rcx and r11 are declared clobbered.
    unsafe {
        asm!("syscall", inlateout("rax") nr as isize => ret, in("rdi") a0, in("rsi") a1,
             in("rdx") a2, in("r10") a3, in("r8") a4,
             lateout("rcx") _, lateout("r11") _, options(nostack));
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
    // SAFETY: the caller vouches for the call; rcx and r11 are declared clobbered.
    unsafe {
        asm!("syscall", inlateout("rax") nr as isize => ret, in("rdi") a0, in("rsi") a1,
             in("rdx") a2, in("r10") a3, in("r8") a4, in("r9") a5,
             lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}

/// Calls `rt_sigreturn` on the signal frame whose rt_sigreturn stack
/// pointer is `frame_sp` (see sigframe.rs): loads the frame's registers,
/// mask and alternate stack, and continues where they say. Never returns; a
/// frame the kernel refuses kills the process with SIGSEGV.
///
/// # Safety
/// `frame_sp` points into a complete, valid frame that stays mapped.
pub unsafe fn rt_sigreturn(frame_sp: usize) -> ! {
    // SAFETY: the caller vouches for the frame; nothing runs after this.
    unsafe {
        asm!("mov rsp, {sp}", "syscall", sp = in(reg) frame_sp,
             in("rax") nr::SYS_rt_sigreturn, options(noreturn));
    }
}

/// A new thread of the blob with clone3(2) (`nr` = SYS_clone3, `a0` the
/// clone_args, `a1` their size) or clone(2) (`nr` = SYS_clone, `a0` the
/// flags, `a1` the new stack): the child starts on that stack, clears the frame pointer and calls `entry(arg)`, which
/// never returns. The parent gets the child's tid or -errno.
///
/// The child has no Rust frame to return into (its stack is new), so the
/// branch runs entirely in this asm; `arg` and `entry` travel in r12/r13,
/// which the kernel copies into the child like every register but rax,
/// rcx and r11.
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
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r12",
            "call r13",
            "ud2",
            "2:",
            inlateout("rax") nr => ret,
            in("rdi") a0, in("rsi") a1, in("r12") arg, in("r13") entry,
            lateout("rcx") _, lateout("r11") _, options(nostack)
        );
    }
    ret
}

/// System call numbers the blobs use, named as in libc (`SYS_` + the name in
/// arch/x86/entry/syscalls/syscall_64.tbl) so both arches share the names.
#[allow(non_upper_case_globals)]
pub mod nr {
    /// `write(2)`.
    pub const SYS_write: usize = 1;
    /// `munmap(2)`.
    pub const SYS_munmap: usize = 11;
    /// `rt_sigreturn(2)`.
    pub const SYS_rt_sigreturn: usize = 15;
    /// `getpid(2)`.
    pub const SYS_getpid: usize = 39;
    /// `exit(2)`.
    pub const SYS_exit: usize = 60;
    /// `gettid(2)`.
    pub const SYS_gettid: usize = 186;
    /// `exit_group(2)`.
    pub const SYS_exit_group: usize = 231;
    /// `rseq(2)`.
    pub const SYS_rseq: usize = 334;
    // ---- dirty tracking (pre-dump: a userfaultfd made in the task) ----
    /// `userfaultfd(2)`.
    pub const SYS_userfaultfd: usize = 323;
    // ---- page dump (vmsplice of the task's pages into a pipe) ----
    /// `close(2)`.
    pub const SYS_close: usize = 3;
    /// `pipe2(2)`.
    pub const SYS_pipe2: usize = 293;
    /// `vmsplice(2)`.
    pub const SYS_vmsplice: usize = 278;

    // The parasite-state commands (parasite.rs, CMD_DUMP_*).
    /// `brk(2)`.
    pub const SYS_brk: usize = 12;
    /// `rt_sigaction(2)`.
    pub const SYS_rt_sigaction: usize = 13;
    /// `getitimer(2)`.
    pub const SYS_getitimer: usize = 36;
    /// `umask(2)`.
    pub const SYS_umask: usize = 95;
    /// `sigaltstack(2)`.
    pub const SYS_sigaltstack: usize = 131;
    /// `personality(2)`.
    pub const SYS_personality: usize = 135;
    /// `prctl(2)`.
    pub const SYS_prctl: usize = 157;
    /// `timer_gettime(2)`.
    pub const SYS_timer_gettime: usize = 224;
    /// `timer_getoverrun(2)`.
    pub const SYS_timer_getoverrun: usize = 225;

    // The restorer (restorer.rs, restore/*.rs).
    /// `mmap(2)`.
    pub const SYS_mmap: usize = 9;
    /// `mprotect(2)`.
    pub const SYS_mprotect: usize = 10;
    /// `mremap(2)`.
    pub const SYS_mremap: usize = 25;
    /// `madvise(2)`.
    pub const SYS_madvise: usize = 28;
    /// `pread64(2)`.
    pub const SYS_pread64: usize = 17;
    /// `rt_sigprocmask(2)`.
    pub const SYS_rt_sigprocmask: usize = 14;
    /// `setitimer(2)`.
    pub const SYS_setitimer: usize = 38;
    /// `timer_create(2)`.
    pub const SYS_timer_create: usize = 222;
    /// `timer_settime(2)`.
    pub const SYS_timer_settime: usize = 223;
    /// `timer_delete(2)`.
    pub const SYS_timer_delete: usize = 226;
    /// `prlimit64(2)`.
    pub const SYS_prlimit64: usize = 302;
    /// `set_tid_address(2)`.
    pub const SYS_set_tid_address: usize = 218;
    /// `rt_sigqueueinfo(2)`.
    pub const SYS_rt_sigqueueinfo: usize = 129;
    /// `rt_tgsigqueueinfo(2)`.
    pub const SYS_rt_tgsigqueueinfo: usize = 297;
    /// `setgroups(2)`.
    pub const SYS_setgroups: usize = 116;
    /// `setresuid(2)`.
    pub const SYS_setresuid: usize = 117;
    /// `setresgid(2)`.
    pub const SYS_setresgid: usize = 119;
    /// `setfsuid(2)`.
    pub const SYS_setfsuid: usize = 122;
    /// `setfsgid(2)`.
    pub const SYS_setfsgid: usize = 123;
    /// `capset(2)`.
    pub const SYS_capset: usize = 126;
    /// `futex(2)`.
    pub const SYS_futex: usize = 202;
    /// `clone(2)`.
    pub const SYS_clone: usize = 56;
    /// `pwrite64(2)`.
    pub const SYS_pwrite64: usize = 18;
    /// `clone3(2)`.
    pub const SYS_clone3: usize = 435;
    /// `openat(2)`.
    pub const SYS_openat: usize = 257;
    /// `close_range(2)`.
    pub const SYS_close_range: usize = 436;
    /// `mlock(2)`.
    pub const SYS_mlock: usize = 149;

    // ---- parasite daemon (the command socket, parasite/cmds/daemon.rs) ----
    /// `socketpair(2)`: crest runs it in the target to make the socket.
    pub const SYS_socketpair: usize = 53;
    /// `sendto(2)`: the daemon's replies.
    pub const SYS_sendto: usize = 44;
    /// `recvfrom(2)`: the daemon's commands.
    pub const SYS_recvfrom: usize = 45;
}
