//! Creating a restored task and handing it over: clone3 with the pid to
//! use (set_tid), session and group, the shared futex crest waits on while
//! the restorer works, fd moves, and the jump into the restorer blob.
//!
//! Restore needs a task with one exact pid. clone3's set_tid gives it
//! (CAP_SYS_ADMIN over the pid namespace); the child then runs crest's own
//! code like a forked one until it jumps into the blob, which never comes
//! back.

use std::time::Duration;

use syscalls::{Sysno, syscall};

use super::process::CloneArgs;
use super::{Pid, SysResult};

/// clone3(2) like fork, with the child's pid `pid`: returns the pid in the
/// parent and 0 in the child. EEXIST: the pid is taken.
///
/// The child continues on a copy of the caller's stack, as after fork; the
/// caller must be single-threaded (crest's restore is), so no lock another
/// thread held is copied locked.
pub fn clone3_with_pid(pid: Pid) -> SysResult<Pid> {
    let tid = [pid];
    let args = CloneArgs {
        exit_signal: super::process::SIGCHLD as u64,
        set_tid: tid.as_ptr() as u64,
        set_tid_size: 1,
        ..CloneArgs::default()
    };
    // SAFETY: args is a valid clone_args of the size passed and set_tid
    // points to one pid. Without CLONE_VM the child gets a copy of the
    // address space and returns here on its own copy of the stack, exactly
    // like fork.
    let r = unsafe {
        syscall!(
            Sysno::clone3,
            &args as *const CloneArgs,
            size_of::<CloneArgs>()
        )
    }?;
    Ok(r as Pid)
}

/// setsid(2).
pub fn setsid() -> SysResult<()> {
    // SAFETY: no pointers are passed.
    unsafe { syscall!(Sysno::setsid) }.map(drop)
}

/// setpgid(2).
pub fn setpgid(pid: Pid, pgid: Pid) -> SysResult<()> {
    // SAFETY: no pointers are passed.
    unsafe { syscall!(Sysno::setpgid, pid, pgid) }.map(drop)
}

/// FUTEX_WAIT (shared) on the u32 at `addr` while it holds `val`, at most
/// `timeout`. The word may be changed by another process that maps the
/// same memory; a spurious or early return is normal, callers re-check.
pub fn futex_wait_shared(addr: usize, val: u32, timeout: Duration) {
    let ts = [timeout.as_secs() as i64, i64::from(timeout.subsec_nanos())];
    // SAFETY: the kernel reads the word at addr (the caller's mapping) and
    // the timespec; EAGAIN/ETIMEDOUT/EINTR are all "look again".
    let _ = unsafe { syscall!(Sysno::futex, addr, 0, val, ts.as_ptr()) };
}

/// FUTEX_WAKE (shared) of every waiter on the u32 at `addr`.
pub fn futex_wake_shared(addr: usize) {
    // SAFETY: a wake touches no memory; a bad address is just EFAULT.
    let _ = unsafe { syscall!(Sysno::futex, addr, 1, i32::MAX) };
}

/// Jumps to `entry`, never to return: the restorer blob takes the task
/// over there, with its own stack.
///
/// # Safety
/// `entry` is the head of a restorer blob mapped executable at its place,
/// with its args filled in.
#[allow(unsafe_code)]
pub unsafe fn jump_to_blob(entry: usize) -> ! {
    // SAFETY: the caller vouches for the blob; the head sets its own stack
    // and never returns here.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        core::arch::asm!("jmp {0}", in(reg) entry, options(noreturn));
        #[cfg(target_arch = "aarch64")]
        core::arch::asm!("br {0}", in(reg) entry, options(noreturn));
    }
}

/// The calling thread's rseq registration as glibc made it (address,
/// length, signature), or zeros: the restorer must drop it before it
/// unmaps the memory the kernel writes to. musl does not register rseq.
/// glibc 2.35+ exports where the area lies relative to the thread pointer;
/// it registers at least 32 bytes (the original struct rseq) even where
/// `__rseq_size` names a smaller feature size.
pub fn own_rseq() -> (u64, u32, u32) {
    #[cfg(target_env = "gnu")]
    {
        unsafe extern "C" {
            static __rseq_offset: isize;
            static __rseq_size: u32;
        }
        // SAFETY: both are plain data glibc sets up before main.
        let (offset, size) = unsafe { (__rseq_offset, __rseq_size) };
        if size == 0 {
            return (0, 0, 0);
        }
        let tp: u64;
        // SAFETY: reads fs:0, which glibc keeps pointing at the thread
        // control block itself.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            core::arch::asm!("mov {}, fs:0", out(reg) tp)
        };
        // SAFETY: reads the thread pointer register.
        #[cfg(target_arch = "aarch64")]
        unsafe {
            core::arch::asm!("mrs {}, tpidr_el0", out(reg) tp)
        };
        #[cfg(target_arch = "x86_64")]
        const RSEQ_SIG: u32 = 0x5305_3053;
        #[cfg(target_arch = "aarch64")]
        const RSEQ_SIG: u32 = 0xd428_bc00;
        (
            tp.wrapping_add_signed(offset as i64),
            size.max(32),
            RSEQ_SIG,
        )
    }
    #[cfg(not(target_env = "gnu"))]
    {
        (0, 0, 0)
    }
}

/// flock(LOCK_EX) on `f`, held until it is closed.
pub fn flock_exclusive(f: &std::fs::File) -> SysResult<()> {
    use std::os::fd::AsRawFd;
    const LOCK_EX: i32 = 2;
    // SAFETY: no pointers.
    unsafe { syscall!(Sysno::flock, f.as_raw_fd(), LOCK_EX) }.map(drop)
}

/// Whether the running kernel's release is at least `major.minor`
/// (/proc/sys/kernel/osrelease); false when it cannot be read.
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (a, b) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (a, b) >= (major, minor)
}
