//! The anonymous-inode objects of an event loop: eventfd2, signalfd4,
//! timerfd_create/settime (and the TFD_IOC_SET_TICKS ioctl), epoll_create1
//! and epoll_ctl, inotify_init1/add_watch/rm_watch, and open_by_handle_at to
//! turn an inotify watch's file handle back into a file.
//!
//! Restore creates these objects in the new task itself (they belong to the
//! calling process), after clone3 and before the restorer blob: every
//! wrapper is one raw syscall without allocation and works on raw numbers,
//! like [`super::fdtable`].
//!
//! # Safety
//! The unsafe blocks pass pointers to locals of the exact kernel layout
//! (sigset_t of 8 bytes, struct itimerspec, struct epoll_event, struct
//! file_handle) that outlive the call.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use syscalls::{Sysno, syscall};

use super::SysResult;

/// `EFD_SEMAPHORE`.
pub const EFD_SEMAPHORE: u32 = 1;
/// `TFD_TIMER_ABSTIME`.
pub const TFD_TIMER_ABSTIME: u32 = 1;
/// `TFD_TIMER_CANCEL_ON_SET`.
pub const TFD_TIMER_CANCEL_ON_SET: u32 = 2;
/// `TFD_IOC_SET_TICKS`: _IOW('T', 0, u64), 3.17+ with CONFIG_CHECKPOINT_RESTORE.
pub const TFD_IOC_SET_TICKS: u64 = 0x4008_5400;
/// `EPOLL_CTL_ADD`.
const EPOLL_CTL_ADD: u32 = 1;
/// `IN_DONT_FOLLOW`.
pub const IN_DONT_FOLLOW: u32 = 0x0200_0000;
/// `IN_MASK_ADD`.
pub const IN_MASK_ADD: u32 = 0x2000_0000;
/// `IN_MASK_CREATE`.
pub const IN_MASK_CREATE: u32 = 0x1000_0000;
/// `O_PATH`.
pub const O_PATH: u32 = 0o10_000_000;

/// eventfd2(2) with counter `count` (written after creation, since eventfd2
/// takes a 32-bit initial value).
pub fn eventfd(count: u64, flags: u32) -> SysResult<RawFd> {
    // SAFETY: integers only.
    let fd = unsafe { syscall!(Sysno::eventfd2, 0, flags) }? as RawFd;
    if count != 0 {
        let buf = count.to_ne_bytes();
        // SAFETY: `buf` is 8 readable bytes; a zero counter takes any value
        // below u64::MAX without blocking.
        if let Err(e) = unsafe { syscall!(Sysno::write, fd, buf.as_ptr(), 8) } {
            let _ = super::fdtable::close(fd);
            return Err(e);
        }
    }
    Ok(fd)
}

/// signalfd4(2) of a new signalfd reading the signals in `mask`.
pub fn signalfd(mask: u64, flags: u32) -> SysResult<RawFd> {
    // SAFETY: `mask` is a kernel sigset_t (8 bytes) read during the call.
    unsafe {
        syscall!(
            Sysno::signalfd4,
            -1i32 as usize,
            &mask as *const u64,
            8,
            flags
        )
    }
    .map(|f| f as RawFd)
}

/// timerfd_create(2).
pub fn timerfd_create(clockid: i32, flags: u32) -> SysResult<RawFd> {
    // SAFETY: integers only.
    unsafe { syscall!(Sysno::timerfd_create, clockid, flags) }.map(|f| f as RawFd)
}

fn timespec(ns: u64) -> [i64; 2] {
    [(ns / 1_000_000_000) as i64, (ns % 1_000_000_000) as i64]
}

/// timerfd_settime(2) with the first expiration after `value_ns` (or at it
/// with TFD_TIMER_ABSTIME) and period `interval_ns`; 0/0 disarms.
pub fn timerfd_settime(fd: RawFd, flags: u32, value_ns: u64, interval_ns: u64) -> SysResult<()> {
    // struct itimerspec: it_interval then it_value, each two longs.
    let [is, ins] = timespec(interval_ns);
    let [vs, vns] = timespec(value_ns);
    let spec = [is, ins, vs, vns];
    // SAFETY: `spec` is a struct itimerspec read during the call; the old
    // value pointer is NULL.
    unsafe { syscall!(Sysno::timerfd_settime, fd, flags, spec.as_ptr(), 0) }.map(drop)
}

/// ioctl(TFD_IOC_SET_TICKS): makes `ticks` expirations readable now.
pub fn timerfd_set_ticks(fd: RawFd, ticks: u64) -> SysResult<()> {
    // SAFETY: the ioctl reads one u64.
    unsafe { syscall!(Sysno::ioctl, fd, TFD_IOC_SET_TICKS, &ticks as *const u64) }.map(drop)
}

/// epoll_create1(2).
pub fn epoll_create(flags: u32) -> SysResult<RawFd> {
    // SAFETY: integers only.
    unsafe { syscall!(Sysno::epoll_create1, flags) }.map(|f| f as RawFd)
}

/// struct epoll_event: packed on x86_64 (12 bytes), naturally aligned (16
/// bytes) elsewhere.
#[cfg_attr(target_arch = "x86_64", repr(C, packed))]
#[cfg_attr(not(target_arch = "x86_64"), repr(C))]
struct EpollEvent {
    events: u32,
    data: u64,
}

/// epoll_ctl(EPOLL_CTL_ADD) of fd `target` with `events` and `data`.
pub fn epoll_add(epfd: RawFd, target: RawFd, events: u32, data: u64) -> SysResult<()> {
    let ev = EpollEvent { events, data };
    // SAFETY: `ev` is a struct epoll_event the kernel only reads.
    unsafe {
        syscall!(
            Sysno::epoll_ctl,
            epfd,
            EPOLL_CTL_ADD,
            target,
            &ev as *const EpollEvent
        )
    }
    .map(drop)
}

/// inotify_init1(2).
pub fn inotify_init(flags: u32) -> SysResult<RawFd> {
    // SAFETY: integers only.
    unsafe { syscall!(Sysno::inotify_init1, flags) }.map(|f| f as RawFd)
}

/// inotify_add_watch(2): the watch descriptor.
pub fn inotify_add_watch(fd: RawFd, path: &CStr, mask: u32) -> SysResult<i32> {
    // SAFETY: `path` is NUL-terminated and outlives the call.
    unsafe { syscall!(Sysno::inotify_add_watch, fd, path.as_ptr(), mask) }.map(|w| w as i32)
}

/// inotify_rm_watch(2).
pub fn inotify_rm_watch(fd: RawFd, wd: i32) -> SysResult<()> {
    // SAFETY: integers only.
    unsafe { syscall!(Sysno::inotify_rm_watch, fd, wd) }.map(drop)
}

/// read(2) on a raw number into `buf`.
pub fn read_raw(fd: RawFd, buf: &mut [u8]) -> SysResult<usize> {
    // SAFETY: `buf` is writable for its length.
    unsafe { syscall!(Sysno::read, fd, buf.as_mut_ptr(), buf.len()) }
}

/// open_by_handle_at(2) of the file handle (`handle_type`, `handle`) on the
/// file system of `mount`, opened with `flags` (O_PATH for a name only).
pub fn open_by_handle_at(
    mount: BorrowedFd<'_>,
    handle_type: i32,
    handle: &[u8],
    flags: u32,
) -> SysResult<OwnedFd> {
    // struct file_handle: u32 handle_bytes | i32 handle_type | bytes; the
    // kernel caps handle_bytes at MAX_HANDLE_SZ (128).
    let mut buf = [0u8; 8 + 128];
    if handle.len() > 128 {
        return Err(super::Errno::EINVAL);
    }
    buf[..4].copy_from_slice(&(handle.len() as u32).to_ne_bytes());
    buf[4..8].copy_from_slice(&handle_type.to_ne_bytes());
    buf[8..8 + handle.len()].copy_from_slice(handle);
    // SAFETY: `buf` holds a struct file_handle of handle.len() bytes.
    let fd = unsafe {
        syscall!(
            Sysno::open_by_handle_at,
            mount.as_raw_fd(),
            buf.as_ptr(),
            flags | super::fd::O_CLOEXEC
        )
    }?;
    Ok(super::fd::own(fd))
}

/// clock_gettime(2) of `clockid` in nanoseconds (raw syscall, no vDSO).
pub fn clock_gettime_ns(clockid: i32) -> SysResult<u64> {
    // The alarm clocks read like their base clocks.
    let clock = match clockid {
        8 => 0,
        9 => 7,
        c => c,
    };
    let mut ts = [0i64; 2];
    // SAFETY: `ts` is a struct timespec the kernel writes.
    unsafe { syscall!(Sysno::clock_gettime, clock, ts.as_mut_ptr()) }?;
    Ok(ts[0] as u64 * 1_000_000_000 + ts[1] as u64)
}
