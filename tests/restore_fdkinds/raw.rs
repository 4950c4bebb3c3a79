//! Raw fd helpers for the victims (forks of the threaded harness: libc
//! calls only, no allocation).

use crate::common::victim::Msg;

/// errno of the last failed call.
pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Moves a new fd `made` to exactly `fd` (keeping O_CLOEXEC as `cloexec`).
pub fn place(made: i32, fd: i32, cloexec: bool) -> Result<(), Msg> {
    ensure!(
        made >= 0,
        "creating the object for fd {fd}: errno {}",
        errno()
    );
    let flags = if cloexec { libc::O_CLOEXEC } else { 0 };
    // SAFETY: raw fd calls on our own fds.
    let ok = unsafe { libc::dup3(made, fd, flags) == fd && libc::close(made) == 0 };
    ensure!(ok, "placing fd {fd}: errno {}", errno());
    Ok(())
}

/// read(2) of one u64: the value or the errno.
pub fn read_u64(fd: i32) -> Result<u64, i32> {
    let mut v = 0u64;
    // SAFETY: 8 writable bytes.
    let n = unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) };
    if n == 8 { Ok(v) } else { Err(errno()) }
}

/// write(2) of one u64.
pub fn write_u64(fd: i32, v: u64) -> bool {
    // SAFETY: 8 readable bytes.
    unsafe { libc::write(fd, (&v as *const u64).cast(), 8) == 8 }
}

/// fcntl(F_GETFL) and whether FD_CLOEXEC is set.
pub fn flags(fd: i32) -> (i32, bool) {
    // SAFETY: integer fcntl on our own fd.
    unsafe {
        (
            libc::fcntl(fd, libc::F_GETFL),
            libc::fcntl(fd, libc::F_GETFD) & libc::FD_CLOEXEC != 0,
        )
    }
}

/// The fd's O_NONBLOCK and FD_CLOEXEC are `nonblock` and `cloexec`.
pub fn check_flags(fd: i32, nonblock: bool, cloexec: bool) -> Result<(), Msg> {
    let (fl, ce) = flags(fd);
    ensure!(fl >= 0, "fd {fd} is not open");
    ensure!(
        (fl & libc::O_NONBLOCK != 0) == nonblock && ce == cloexec,
        "fd {fd}: flags {fl:#o} cloexec {ce}, want nonblock {nonblock} cloexec {cloexec}"
    );
    Ok(())
}

/// epoll_wait for one event within `ms`: (events, data).
pub fn wait_one(epfd: i32, ms: i32) -> Option<(u32, u64)> {
    let mut ev = libc::epoll_event { events: 0, u64: 0 };
    // SAFETY: room for one event.
    let n = unsafe { libc::epoll_wait(epfd, &mut ev, 1, ms) };
    (n == 1).then_some((ev.events, ev.u64))
}

/// epoll_ctl(ADD) of `fd` with `events` and `data`.
pub fn epoll_add(epfd: i32, fd: i32, events: u32, data: u64) -> Result<(), Msg> {
    let mut ev = libc::epoll_event { events, u64: data };
    // SAFETY: a live epoll_event.
    let r = unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) };
    ensure!(r == 0, "epoll_ctl add fd {fd}: errno {}", errno());
    Ok(())
}

/// timerfd_gettime: (value_ns, interval_ns).
pub fn timer_get(fd: i32) -> Option<(u64, u64)> {
    // SAFETY: a zeroed itimerspec the kernel fills.
    let mut t: libc::itimerspec = unsafe { std::mem::zeroed() };
    // SAFETY: live out pointer.
    if unsafe { libc::timerfd_gettime(fd, &mut t) } != 0 {
        return None;
    }
    let ns = |s: libc::timespec| s.tv_sec as u64 * 1_000_000_000 + s.tv_nsec as u64;
    Some((ns(t.it_value), ns(t.it_interval)))
}

/// timerfd_settime with nanosecond value and interval.
pub fn timer_set(fd: i32, flags: i32, value_ns: u64, interval_ns: u64) -> Result<(), Msg> {
    let ts = |ns: u64| libc::timespec {
        tv_sec: (ns / 1_000_000_000) as _,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    };
    let t = libc::itimerspec {
        it_interval: ts(interval_ns),
        it_value: ts(value_ns),
    };
    // SAFETY: live itimerspec; no old value.
    let r = unsafe { libc::timerfd_settime(fd, flags, &t, std::ptr::null_mut()) };
    ensure!(r == 0, "timerfd_settime fd {fd}: errno {}", errno());
    Ok(())
}

/// clock_gettime(clock) in nanoseconds.
pub fn clock_ns(clock: libc::clockid_t) -> u64 {
    // SAFETY: a zeroed timespec the kernel fills.
    let mut t: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: live out pointer.
    unsafe { libc::clock_gettime(clock, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// A signal set of `sigs`.
pub fn sigset(sigs: &[i32]) -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the zeroed set.
    let mut s: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: live set.
    unsafe {
        libc::sigemptyset(&mut s);
        for &sig in sigs {
            libc::sigaddset(&mut s, sig);
        }
    }
    s
}

/// Reads one signalfd_siginfo: (signo, ssi_int) or the errno.
pub fn read_siginfo(fd: i32) -> Result<(u32, i32), i32> {
    // SAFETY: a zeroed signalfd_siginfo.
    let mut si: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: `size` writable bytes.
    let n = unsafe { libc::read(fd, (&mut si as *mut libc::signalfd_siginfo).cast(), size) };
    if n as usize == size {
        Ok((si.ssi_signo, si.ssi_int))
    } else {
        Err(errno())
    }
}
