//! Processes: fork, wait4, kill, prctl, clone3, pidfd, kcmp, rseq, unshare,
//! signals and POSIX timers.
//!
//! Everything except [`fork`] is a single raw syscall without allocation, so
//! a forked child may call it before it exits (async-signal-safe).

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use syscalls::{Sysno, syscall};

use super::fd::own;
use super::{Pid, SysResult};

/// `SIGKILL`.
pub const SIGKILL: i32 = 9;
/// `SIGUSR1`.
pub const SIGUSR1: i32 = 10;
/// `SIGUSR2`.
pub const SIGUSR2: i32 = 12;
/// `SIGCHLD` (x86_64 and aarch64 agree).
pub const SIGCHLD: i32 = 17;
/// `SIGSTOP`.
pub const SIGSTOP: i32 = 19;
/// `SIGTRAP`.
pub const SIGTRAP: i32 = 5;
/// `WNOHANG`.
pub const WNOHANG: i32 = 1;
/// `__WALL`: wait for clone and non-clone children alike, ptrace stops included.
pub const __WALL: i32 = 0x4000_0000;
/// `PR_SET_DUMPABLE`.
pub const PR_SET_DUMPABLE: i32 = 4;
/// `PR_SET_PDEATHSIG`.
pub const PR_SET_PDEATHSIG: i32 = 1;
/// `PR_SET_SECCOMP`.
pub const PR_SET_SECCOMP: i32 = 22;
/// `PR_SET_MM`.
pub const PR_SET_MM: i32 = 35;
/// `PR_SET_MM_MAP` (arg2 of PR_SET_MM).
pub const PR_SET_MM_MAP: u64 = 14;
/// `PR_SET_MM_MAP_SIZE` (arg2 of PR_SET_MM).
pub const PR_SET_MM_MAP_SIZE: u64 = 15;
/// `PR_SET_NO_NEW_PRIVS`.
pub const PR_SET_NO_NEW_PRIVS: i32 = 38;
/// `PR_TIMER_CREATE_RESTORE_IDS` (6.16): timer_create() takes the id to use
/// from `*created_timer_id`, so restore can recreate timers with their ids.
pub const PR_TIMER_CREATE_RESTORE_IDS: i32 = 77;
/// `PR_TIMER_CREATE_RESTORE_IDS_ON`.
pub const PR_TIMER_CREATE_RESTORE_IDS_ON: u64 = 1;
/// `CLONE_NEWPID`.
pub const CLONE_NEWPID: u64 = 0x2000_0000;
/// `CLONE_NEWTIME`.
pub const CLONE_NEWTIME: u64 = 0x80;
/// `KCMP_FILE`.
pub const KCMP_FILE: i32 = 0;
/// `KCMP_EPOLL_TFD`.
pub const KCMP_EPOLL_TFD: i32 = 7;
/// `CLOCK_MONOTONIC`.
pub const CLOCK_MONOTONIC: i32 = 1;
/// `SIGEV_NONE`.
pub const SIGEV_NONE: i32 = 1;

/// fork(2) through libc, so libc's own state (pid cache, atfork handlers)
/// stays right in both processes. Returns 0 in the child.
pub fn fork() -> SysResult<Pid> {
    // SAFETY: fork has no memory-safety preconditions; callers keep the
    // child to async-signal-safe work because the parent may be threaded.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(super::Errno::new(
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        ));
    }
    Ok(pid)
}

/// wait4(2) without rusage; returns (pid, raw status), pid 0 if WNOHANG found
/// nothing.
pub fn wait4(pid: Pid, options: i32) -> SysResult<(Pid, i32)> {
    let mut status = 0i32;
    // SAFETY: the kernel writes one int into `status`; rusage is NULL.
    let r = unsafe { syscall!(Sysno::wait4, pid, &mut status as *mut i32, options, 0) }?;
    Ok((r as Pid, status))
}

/// kill(2).
pub fn kill(pid: Pid, sig: i32) -> SysResult<()> {
    // SAFETY: no pointers are passed.
    unsafe { syscall!(Sysno::kill, pid, sig) }.map(drop)
}

/// getpid(2).
pub fn getpid() -> Pid {
    // SAFETY: getpid cannot fail and takes no arguments.
    unsafe { syscall!(Sysno::getpid) }.unwrap_or(0) as Pid
}

/// getppid(2).
pub fn getppid() -> Pid {
    // SAFETY: getppid cannot fail and takes no arguments.
    unsafe { syscall!(Sysno::getppid) }.unwrap_or(0) as Pid
}

/// exit_group(2).
pub fn exit_group(code: i32) -> ! {
    // SAFETY: exit_group does not return; no pointers are passed.
    let _ = unsafe { syscall!(Sysno::exit_group, code) };
    // exit_group cannot fail; this loop only satisfies the type checker.
    loop {
        std::hint::spin_loop();
    }
}

/// Sleeps until a signal arrives (ppoll with no descriptors: aarch64 has no
/// pause(2)).
pub fn pause() {
    // SAFETY: zero descriptors and NULL timeout/sigmask: nothing is accessed.
    let _ = unsafe { syscall!(Sysno::ppoll, 0, 0, 0, 0, 8) };
}

/// sched_yield(2).
pub fn sched_yield() {
    // SAFETY: no arguments.
    let _ = unsafe { syscall!(Sysno::sched_yield) };
}

/// nanosleep(2), interrupted sleeps are not resumed.
pub fn nanosleep(d: Duration) {
    let ts = [d.as_secs() as i64, i64::from(d.subsec_nanos())];
    // SAFETY: `ts` is a struct timespec the kernel only reads; rem is NULL.
    let _ = unsafe { syscall!(Sysno::nanosleep, ts.as_ptr(), 0) };
}

/// prctl(2) with integer arguments.
pub fn prctl(option: i32, a2: u64, a3: u64, a4: u64, a5: u64) -> SysResult<usize> {
    // SAFETY: the callers in this crate pass only options whose arguments are
    // integers; pointer-taking options have their own wrappers.
    unsafe { syscall!(Sysno::prctl, option, a2, a3, a4, a5) }
}

/// The kernel's `struct prctl_mm_map` (104 bytes).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct PrctlMmMap {
    /// Start of the text segment.
    pub start_code: u64,
    /// End of the text segment.
    pub end_code: u64,
    /// Start of the data segment.
    pub start_data: u64,
    /// End of the data segment.
    pub end_data: u64,
    /// Start of the heap.
    pub start_brk: u64,
    /// Current program break.
    pub brk: u64,
    /// Start of the main stack.
    pub start_stack: u64,
    /// Start of argv.
    pub arg_start: u64,
    /// End of argv.
    pub arg_end: u64,
    /// Start of the environment.
    pub env_start: u64,
    /// End of the environment.
    pub env_end: u64,
    /// Pointer to a saved auxv, or 0 to keep the current one.
    pub auxv: u64,
    /// Size of `auxv` in bytes.
    pub auxv_size: u32,
    /// New /proc/PID/exe, or -1 (as u32) to keep it.
    pub exe_fd: u32,
}

/// prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE): the size of `struct prctl_mm_map`
/// this kernel expects.
pub fn prctl_mm_map_size() -> SysResult<u32> {
    let mut size = 0u32;
    // SAFETY: the kernel writes one u32 into `size`.
    unsafe {
        syscall!(
            Sysno::prctl,
            PR_SET_MM,
            PR_SET_MM_MAP_SIZE,
            &mut size as *mut u32,
            0,
            0
        )
    }?;
    Ok(size)
}

/// prctl(PR_SET_MM, PR_SET_MM_MAP): replaces the mm's layout fields at once.
/// `map.auxv` must be 0 or point to `map.auxv_size` readable bytes.
pub fn prctl_set_mm_map(map: &PrctlMmMap) -> SysResult<()> {
    if map.auxv != 0 {
        return Err(super::Errno::EINVAL);
    }
    let size = size_of::<PrctlMmMap>();
    // SAFETY: the kernel reads `size` bytes from `map`; auxv is NULL (checked
    // above) so it reads nothing else.
    unsafe {
        syscall!(
            Sysno::prctl,
            PR_SET_MM,
            PR_SET_MM_MAP,
            map as *const PrctlMmMap,
            size,
            0
        )
    }
    .map(drop)
}

/// brk(2) with 0: the current program break.
pub fn brk_current() -> u64 {
    // SAFETY: brk(0) only reports the break; it never fails.
    unsafe { syscall!(Sysno::brk, 0) }.unwrap_or(0) as u64
}

/// pidfd_open(2).
pub fn pidfd_open(pid: Pid) -> SysResult<OwnedFd> {
    // SAFETY: no pointers are passed.
    let fd = unsafe { syscall!(Sysno::pidfd_open, pid, 0) }?;
    Ok(own(fd))
}

/// process_mrelease(2): frees the memory of the process behind `pidfd`,
/// which must be dying (SIGKILL sent), in the caller's context, while the
/// process itself tears its address space down on its own CPU.
pub fn process_mrelease(pidfd: BorrowedFd<'_>) -> SysResult<()> {
    // SAFETY: no pointers are passed.
    unsafe { syscall!(Sysno::process_mrelease, pidfd.as_raw_fd(), 0) }.map(|_| ())
}

/// pidfd_getfd(2): a copy of descriptor `targetfd` of the process behind `pidfd`.
pub fn pidfd_getfd(pidfd: BorrowedFd<'_>, targetfd: i32) -> SysResult<OwnedFd> {
    // SAFETY: no pointers are passed.
    let fd = unsafe { syscall!(Sysno::pidfd_getfd, pidfd.as_raw_fd(), targetfd, 0) }?;
    Ok(own(fd))
}

/// kcmp(2) with integer arguments (KCMP_FILE, KCMP_VM, ...): 0 when equal.
pub fn kcmp(pid1: Pid, pid2: Pid, kind: i32, idx1: u64, idx2: u64) -> SysResult<usize> {
    if kind == KCMP_EPOLL_TFD {
        return Err(super::Errno::EINVAL);
    }
    // SAFETY: every kind but KCMP_EPOLL_TFD (refused above) takes integers.
    unsafe { syscall!(Sysno::kcmp, pid1, pid2, kind, idx1, idx2) }
}

/// kcmp(KCMP_EPOLL_TFD): 0 when `file_fd` of `pid1` is the file registered as
/// (`tfd`, `toff`) in the epoll `efd` of `pid2`.
pub fn kcmp_epoll_tfd(pid1: Pid, pid2: Pid, file_fd: i32, efd: u32, tfd: u32) -> SysResult<usize> {
    let slot = [efd, tfd, 0u32];
    // SAFETY: the kernel reads one struct kcmp_epoll_slot (three u32).
    unsafe {
        syscall!(
            Sysno::kcmp,
            pid1,
            pid2,
            KCMP_EPOLL_TFD,
            file_fd,
            slot.as_ptr()
        )
    }
}

/// The kernel's `struct clone_args` up to `set_tid_size` (CLONE_ARGS_SIZE_VER1).
#[repr(C)]
#[derive(Debug, Default)]
pub(super) struct CloneArgs {
    pub(super) flags: u64,
    pub(super) pidfd: u64,
    pub(super) child_tid: u64,
    pub(super) parent_tid: u64,
    pub(super) exit_signal: u64,
    pub(super) stack: u64,
    pub(super) stack_size: u64,
    pub(super) tls: u64,
    pub(super) set_tid: u64,
    pub(super) set_tid_size: u64,
}

/// clone3(2) like fork (no shared memory, SIGCHLD on exit) with the child's
/// pid chosen by `set_tid`. The child does nothing but `exit_group(0)`.
/// Returns the child's pid.
pub fn clone3_set_tid_and_exit(set_tid: Pid) -> SysResult<Pid> {
    // The child only returns from the clone and exits: it takes no lock
    // another thread of the caller might hold.
    let r = super::spawn::clone3_with_pid(set_tid)?;
    if r == 0 {
        exit_group(0);
    }
    Ok(r)
}

/// unshare(2).
pub fn unshare(flags: u64) -> SysResult<()> {
    // SAFETY: no pointers are passed.
    unsafe { syscall!(Sysno::unshare, flags) }.map(drop)
}

/// timer_create(2) with SIGEV_NONE; `id` is read (with
/// PR_TIMER_CREATE_RESTORE_IDS on) and written with the new timer's id.
pub fn timer_create_none(clock: i32, id: &mut i32) -> SysResult<()> {
    // struct sigevent: value(8) signo(4) notify(4) then a 48-byte union.
    let mut sev = [0u8; 64];
    sev[12..16].copy_from_slice(&SIGEV_NONE.to_ne_bytes());
    // SAFETY: the kernel reads a 64-byte sigevent and reads/writes one int.
    unsafe { syscall!(Sysno::timer_create, clock, sev.as_ptr(), id as *mut i32) }.map(drop)
}

/// Installs a one-instruction seccomp filter that allows every syscall
/// (needs no_new_privs or CAP_SYS_ADMIN). Used to give a probe child a filter
/// that changes nothing.
pub fn seccomp_allow_all() -> SysResult<()> {
    const SECCOMP_MODE_FILTER: u64 = 2;
    const BPF_RET_K: u16 = 0x06;
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    // struct sock_filter { u16 code; u8 jt; u8 jf; u32 k; }: on a
    // little-endian machine the first u32 is code with jt = jf = 0.
    let insn: [u32; 2] = [u32::from(BPF_RET_K), SECCOMP_RET_ALLOW];
    // struct sock_fprog { u16 len; (pad); struct sock_filter *filter; }
    let prog: [u64; 2] = [1, insn.as_ptr() as u64];
    // SAFETY: `prog` is a sock_fprog whose filter points to one 8-byte insn;
    // both live until the call returns (the kernel copies the program).
    unsafe {
        syscall!(
            Sysno::prctl,
            PR_SET_SECCOMP,
            SECCOMP_MODE_FILTER,
            prog.as_ptr(),
            0,
            0
        )
    }
    .map(drop)
}

/// getauxval(3): an entry of the auxiliary vector, 0 if absent.
pub fn getauxval(kind: u64) -> u64 {
    // SAFETY: getauxval only reads the process's saved auxv.
    unsafe { libc::getauxval(kind as libc::c_ulong) as u64 }
}

/// The `struct rseq` a probe child registers: 32 bytes aligned to 32, as
/// the original rseq ABI requires.
#[repr(C, align(32))]
struct RseqArea(std::cell::UnsafeCell<[u8; 32]>);

// SAFETY: Rust code never reads or writes the area; only the kernel writes
// it, on behalf of the single thread of the child that registered it.
unsafe impl Sync for RseqArea {}

static RSEQ_AREA: RseqArea = RseqArea(std::cell::UnsafeCell::new([0; 32]));

/// The address [`rseq_register_static`] registers.
pub fn rseq_static_area() -> u64 {
    RSEQ_AREA.0.get() as u64
}

/// rseq(2): registers crest's static 32-byte area for the calling thread
/// with signature `sig`. Meant for a forked probe child (one thread): in a
/// threaded process only one thread could use the area.
pub fn rseq_register_static(sig: u32) -> SysResult<()> {
    // SAFETY: the area is a static (mapped for the life of the process),
    // 32 bytes, aligned to 32, and never touched by Rust code.
    unsafe { syscall!(Sysno::rseq, RSEQ_AREA.0.get(), 32, 0, sig) }.map(drop)
}
