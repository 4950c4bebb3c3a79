//! The procfs victim: fds on its own /proc/PID/stat (5 bytes already
//! read), its /proc/PID directory, /proc/meminfo and
//! /proc/sys/kernel/pid_max. After go: the stat fd reads on from byte 5
//! and shows this process's own line (so after restore the path named the
//! restored process, which did not exist when the restore began); the
//! directory fd opens `stat` relative to it and finds the same line;
//! meminfo and pid_max read as a fresh open reads them.

use std::path::Path;

use crate::common::victim::{Child, Verdict, read_file};
use crate::raw::{errno, place};

const STAT: i32 = 10;
const DIR: i32 = 11;
const MEMINFO: i32 = 12;
const PID_MAX: i32 = 13;
/// Bytes of the stat line compared: the pid and the start of the comm,
/// which do not change while the victim lives.
const HEAD: usize = 10;

pub fn prepare(_dir: &Path) {}

fn setup() -> Verdict {
    // SAFETY: raw opens of procfs paths; place checks each result.
    unsafe {
        place(
            libc::open(c"/proc/self/stat".as_ptr(), libc::O_RDONLY),
            STAT,
            false,
        )?;
        let dir = libc::O_RDONLY | libc::O_DIRECTORY;
        place(libc::open(c"/proc/self".as_ptr(), dir), DIR, true)?;
        place(
            libc::open(c"/proc/meminfo".as_ptr(), libc::O_RDONLY),
            MEMINFO,
            false,
        )?;
        let pid_max = c"/proc/sys/kernel/pid_max";
        place(libc::open(pid_max.as_ptr(), libc::O_RDONLY), PID_MAX, false)?;
    }
    let mut first = [0u8; 5];
    // SAFETY: 5 writable bytes.
    let n = unsafe { libc::read(STAT, first.as_mut_ptr().cast(), 5) };
    ensure!(n == 5, "reading 5 bytes of stat: {n}, errno {}", errno());
    Ok(())
}

/// pread(2) of up to `buf.len()` bytes at 0.
fn pread_start(fd: i32, buf: &mut [u8]) -> &[u8] {
    // SAFETY: reads stay inside buf.
    let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    &buf[..n.max(0) as usize]
}

pub fn victim(c: &Child) -> Verdict {
    setup()?;
    c.ready(b"");
    c.wait_go();
    let mut fresh = [0u8; 512];
    let fresh = read_file(c"/proc/self/stat", &mut fresh);
    ensure!(fresh.len() > HEAD + 5, "fresh stat: {} bytes", fresh.len());
    let mut next = [0u8; 5];
    // SAFETY: 5 writable bytes.
    let n = unsafe { libc::read(STAT, next.as_mut_ptr().cast(), 5) };
    ensure!(
        n == 5 && next == fresh[5..10],
        "stat fd at byte 5 read {n} bytes {:?}, want {:?}",
        &next[..n.max(0) as usize],
        &fresh[5..10]
    );
    let mut buf = [0u8; 512];
    let own = pread_start(STAT, &mut buf);
    ensure!(
        own.get(..HEAD) == Some(&fresh[..HEAD]),
        "stat fd shows {:?}, this process {:?}",
        own.get(..HEAD),
        &fresh[..HEAD]
    );
    // SAFETY: openat relative to the directory fd; closed below.
    let at = unsafe { libc::openat(DIR, c"stat".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    ensure!(at >= 0, "openat(dir fd, stat): errno {}", errno());
    let mut buf = [0u8; 512];
    let via_dir = pread_start(at, &mut buf).get(..HEAD) == Some(&fresh[..HEAD]);
    // SAFETY: our own fd.
    unsafe { libc::close(at) };
    ensure!(via_dir, "the directory fd is not this process's /proc dir");
    let mut buf = [0u8; 64];
    let mem = pread_start(MEMINFO, &mut buf);
    ensure!(mem.starts_with(b"MemTotal:"), "meminfo fd reads {mem:?}");
    let mut a = [0u8; 32];
    let mut b = [0u8; 32];
    let now = read_file(c"/proc/sys/kernel/pid_max", &mut b);
    let got = pread_start(PID_MAX, &mut a);
    ensure!(
        !got.is_empty() && got == now,
        "pid_max fd reads {got:?}, want {now:?}"
    );
    Ok(())
}
