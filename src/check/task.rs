//! Probes of what restore needs to rebuild tasks (pids, mm layout, time
//! namespaces, timer ids) and what dump needs to compare their resources
//! (kcmp, pidfd_getfd).
//!
//! Experiments that change a task's own state (PR_SET_MM_MAP, unshare,
//! PR_TIMER_CREATE_RESTORE_IDS) run in a forked child that then exits, so
//! crest itself is left as it was. No sysctl of the host is written:
//! ns_last_pid is written inside a pid namespace created for the probe.

use std::os::fd::{AsFd, AsRawFd};

use crate::proc::stat;
use crate::sys::mm::{self, MFD_CLOEXEC};
use crate::sys::process::{self as p, KCMP_FILE};
use crate::sys::{Errno, fd};

use super::child::Child;
use super::probe::{Fail, ProbeResult, SysExt, errno_text, expect};

/// Turns a child's exit code (0 or an errno) into a probe result.
fn child_verdict(code: i32, call: &str) -> Result<(), Fail> {
    match code {
        0 => Ok(()),
        255 => Err(Fail::error(format!(
            "{call} succeeded but did not do what was asked"
        ))),
        127 => Err(Fail::error(
            "the probe child could not arm PR_SET_PDEATHSIG".into(),
        )),
        e if e > 128 => Err(Fail::error(format!(
            "the probe child was killed by signal {}",
            e - 128
        ))),
        e => Err(Fail::from_errno(call, Errno::new(e))),
    }
}

fn errno_code(r: crate::sys::SysResult<impl Sized>) -> Option<i32> {
    r.err().map(Errno::into_raw)
}

/// kcmp(KCMP_FILE) tells a dup from another file.
pub fn kcmp() -> ProbeResult {
    let a = mm::memfd_create(c"crest-kcmp-a", MFD_CLOEXEC).ctx("memfd_create")?;
    let b = fd::dup_cloexec(a.as_fd()).ctx("fcntl(F_DUPFD_CLOEXEC)")?;
    let c = mm::memfd_create(c"crest-kcmp-c", MFD_CLOEXEC).ctx("memfd_create")?;
    let me = p::getpid();
    let raw = |f: &std::os::fd::OwnedFd| f.as_raw_fd() as u64;
    let same = p::kcmp(me, me, KCMP_FILE, raw(&a), raw(&b)).ctx("kcmp(KCMP_FILE)")?;
    let other = p::kcmp(me, me, KCMP_FILE, raw(&a), raw(&c)).ctx("kcmp(KCMP_FILE)")?;
    expect(same == 0 && other != 0, || {
        format!("kcmp said {same} for a dup and {other} for another file")
    })?;
    Ok("KCMP_FILE on a dup and on another file".into())
}

/// kcmp(KCMP_EPOLL_TFD) finds a file registered in an epoll.
pub fn kcmp_epoll() -> ProbeResult {
    let ep = fd::epoll_create1().ctx("epoll_create1")?;
    let ev = fd::eventfd2(0, 0).ctx("eventfd2")?;
    fd::epoll_ctl_add(ep.as_fd(), ev.as_fd(), fd::EPOLLIN).ctx("epoll_ctl")?;
    let me = p::getpid();
    let (e, t) = (ep.as_raw_fd(), ev.as_raw_fd());
    let r = p::kcmp_epoll_tfd(me, me, t, e as u32, t as u32).ctx("kcmp(KCMP_EPOLL_TFD)")?;
    expect(r == 0, || {
        format!("kcmp(KCMP_EPOLL_TFD) returned {r} for the registered file")
    })?;
    Ok("KCMP_EPOLL_TFD finds an eventfd in an epoll".into())
}

/// pidfd_open on a child and pidfd_getfd of a descriptor it holds.
pub fn pidfd_store() -> ProbeResult {
    let m = mm::memfd_create(c"crest-pidfd", MFD_CLOEXEC).ctx("memfd_create")?;
    let child = Child::fork(|| {
        loop {
            p::pause();
        }
    })?;
    let pidfd = p::pidfd_open(child.pid()).ctx("pidfd_open")?;
    let got = p::pidfd_getfd(pidfd.as_fd(), m.as_raw_fd()).ctx("pidfd_getfd")?;
    let me = p::getpid();
    let same = p::kcmp(
        me,
        me,
        KCMP_FILE,
        m.as_raw_fd() as u64,
        got.as_raw_fd() as u64,
    )
    .ctx("kcmp(KCMP_FILE)")?;
    expect(same == 0, || "pidfd_getfd returned a different file".into())?;
    Ok("pidfd_open and pidfd_getfd of a child's memfd".into())
}

/// PR_SET_MM_MAP with the child's own current layout.
pub fn prctl_mm_map() -> ProbeResult {
    let size = p::prctl_mm_map_size().ctx("prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE)")?;
    let want = size_of::<p::PrctlMmMap>() as u32;
    expect(size == want, || {
        format!("the kernel's struct prctl_mm_map is {size} bytes, crest's {want}")
    })?;
    let buf = std::fs::read("/proc/self/stat").ctx("read(/proc/self/stat)")?;
    let l =
        stat::parse(&buf).map_err(|e| Fail::error(format!("/proc/self/stat: {}", e.problem)))?;
    let mut map = p::PrctlMmMap {
        start_code: l.start_code,
        end_code: l.end_code,
        start_data: l.start_data,
        end_data: l.end_data,
        start_brk: l.start_brk,
        start_stack: l.start_stack,
        arg_start: l.arg_start,
        arg_end: l.arg_end,
        env_start: l.env_start,
        env_end: l.env_end,
        exe_fd: u32::MAX,
        ..Default::default()
    };
    let mut child = Child::fork(move || {
        map.brk = p::brk_current();
        errno_code(p::prctl_set_mm_map(&map)).unwrap_or(0)
    })?;
    child_verdict(child.wait_exit()?, "prctl(PR_SET_MM, PR_SET_MM_MAP)")?;
    Ok(format!(
        "struct prctl_mm_map of {size} bytes applied in a child"
    ))
}

fn read_sysctl(path: &str) -> Result<u64, Fail> {
    let s = std::fs::read_to_string(path).ctx(&format!("read({path})"))?;
    s.trim()
        .parse()
        .map_err(|_| Fail::error(format!("{path} holds {s:?}, not a number")))
}

/// kernel.pid_max: the highest pid + 1 restore can ask for.
pub fn pid_max() -> ProbeResult {
    Ok(format!("{}", read_sysctl("/proc/sys/kernel/pid_max")?))
}

/// Writing ns_last_pid makes the next fork get the following pid. Done in a
/// fresh pid namespace (a child unshares one; its first child is that
/// namespace's init and does the experiment), so the host's value is never
/// touched.
pub fn ns_last_pid() -> ProbeResult {
    const LAST: &[u8] = b"100";
    const WANT: i32 = 101;
    let mut child = Child::fork(|| {
        if let Err(e) = p::unshare(p::CLONE_NEWPID) {
            return e.into_raw();
        }
        run_in_child(|| {
            let f = match fd::openat(c"/proc/sys/kernel/ns_last_pid", fd::O_WRONLY) {
                Ok(f) => f,
                Err(e) => return e.into_raw(),
            };
            if let Err(e) = fd::write(f.as_fd(), LAST) {
                return e.into_raw();
            }
            run_in_child(|| if p::getpid() == WANT { 0 } else { 255 })
        })
    })?;
    child_verdict(child.wait_exit()?, "write(/proc/sys/kernel/ns_last_pid)")?;
    Ok(format!(
        "next pid was {WANT} after writing {} (in a new pid namespace)",
        WANT - 1
    ))
}

/// From inside a probe child: forks a grandchild that runs `body`, waits for
/// it and returns its exit code (or an errno). The grandchild dies with its
/// parent (PR_SET_PDEATHSIG), so a killed probe child takes it along.
/// The init of a new pid namespace sees parent pid 0 (its parent is outside);
/// it never blocks on anything but its own short-lived child, so it cannot
/// linger even if it lost that race.
fn run_in_child(body: impl FnOnce() -> i32) -> i32 {
    let parent = p::getpid();
    match p::fork() {
        Err(e) => e.into_raw(),
        Ok(0) => {
            if p::prctl(p::PR_SET_PDEATHSIG, p::SIGKILL as u64, 0, 0, 0).is_err() {
                p::exit_group(127);
            }
            let ppid = p::getppid();
            if ppid != parent && ppid != 0 {
                p::exit_group(127);
            }
            p::exit_group(body())
        }
        Ok(pid) => loop {
            match p::wait4(pid, p::__WALL) {
                Err(Errno::EINTR) => {}
                Err(e) => return e.into_raw(),
                Ok((_, status)) if status & 0x7f == 0 => return (status >> 8) & 0xff,
                Ok(_) => return 254,
            }
        },
    }
}

/// clone3 with set_tid creates a child with the pid asked for.
pub fn clone3_set_tid() -> ProbeResult {
    let pid_max = read_sysctl("/proc/sys/kernel/pid_max")?;
    let last = read_sysctl("/proc/sys/kernel/ns_last_pid").unwrap_or(300);
    // Pids just above the last one are the least likely to be taken.
    let mut want = last + 1000;
    for _ in 0..16 {
        if want >= pid_max {
            want = 300 + want % 1000;
        }
        if !std::path::Path::new(&format!("/proc/{want}")).exists() {
            match p::clone3_set_tid_and_exit(want as i32) {
                Ok(pid) => return clone3_reap(pid, want as i32),
                Err(Errno::EEXIST) => {}
                Err(Errno::EPERM) => {
                    return Err(Fail::error(format!(
                        "clone3(set_tid) failed with {}: needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN",
                        errno_text(Errno::EPERM)
                    )));
                }
                Err(e) => return Err(Fail::from_errno("clone3(set_tid)", e)),
            }
        }
        want += 7;
    }
    Err(Fail::error("found no free pid to ask clone3 for".into()))
}

fn clone3_reap(pid: i32, want: i32) -> ProbeResult {
    let mut child = Child::adopt(pid);
    let code = child.wait_exit()?;
    expect(pid == want && code == 0, || {
        format!("clone3(set_tid = {want}) created pid {pid}")
    })?;
    Ok(format!("child created with the requested pid {want}"))
}

/// unshare(CLONE_NEWTIME) and writing timens_offsets, in a child.
pub fn timens() -> ProbeResult {
    let offsets = b"monotonic 1 0\n";
    let mut child = Child::fork(|| {
        if let Err(e) = p::unshare(p::CLONE_NEWTIME) {
            return e.into_raw();
        }
        let f = match fd::openat(c"/proc/self/timens_offsets", fd::O_WRONLY) {
            Ok(f) => f,
            Err(e) => return e.into_raw(),
        };
        match fd::write(f.as_fd(), offsets) {
            Ok(n) if n == offsets.len() => 0,
            Ok(_) => 255,
            Err(e) => e.into_raw(),
        }
    })?;
    child_verdict(
        child.wait_exit()?,
        "unshare(CLONE_NEWTIME) + timens_offsets",
    )?;
    Ok("new time namespace with a monotonic offset, in a child".into())
}

/// PR_TIMER_CREATE_RESTORE_IDS makes timer_create use the id asked for.
pub fn timer_restore_ids() -> ProbeResult {
    const WANT: i32 = 4242;
    let mut child = Child::fork(|| {
        let on = p::PR_TIMER_CREATE_RESTORE_IDS_ON;
        if let Err(e) = p::prctl(p::PR_TIMER_CREATE_RESTORE_IDS, on, 0, 0, 0) {
            return e.into_raw();
        }
        let mut id = WANT;
        match p::timer_create_none(p::CLOCK_MONOTONIC, &mut id) {
            Ok(()) if id == WANT => 0,
            Ok(()) => 255,
            Err(e) => e.into_raw(),
        }
    })?;
    child_verdict(child.wait_exit()?, "prctl(PR_TIMER_CREATE_RESTORE_IDS)")?;
    Ok(format!(
        "timer_create gave the requested id {WANT}, in a child"
    ))
}
