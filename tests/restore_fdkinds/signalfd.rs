//! The signalfd victim: SIGUSR1, SIGUSR2 and a real-time signal blocked; a
//! non-blocking signalfd for SIGUSR1 and the real-time signal, with that
//! signal queued (value 77) before the dump. After go the signalfd reads
//! the queued signal with its value, then nothing; a SIGUSR1 sent now is
//! read, a SIGUSR2 (not in its mask) is not.

use std::path::Path;

use crate::common::victim::{Child, Verdict, getpid};
use crate::raw::{check_flags, place, read_siginfo, sigset};

const SFD: i32 = 10;
/// SIGRTMIN + 6 of the kernel (glibc keeps 32 and 33).
const RT: i32 = 40;

pub fn prepare(_dir: &Path) {}

fn setup() -> Verdict {
    let blocked = sigset(&[libc::SIGUSR1, libc::SIGUSR2, RT]);
    let mask = sigset(&[libc::SIGUSR1, RT]);
    // SAFETY: signal mask and signalfd calls with live sets.
    unsafe {
        ensure!(
            libc::sigprocmask(libc::SIG_BLOCK, &blocked, std::ptr::null_mut()) == 0,
            "sigprocmask"
        );
        place(libc::signalfd(-1, &mask, libc::SFD_NONBLOCK), SFD, false)?;
        let val = libc::sigval {
            sival_ptr: 77usize as *mut libc::c_void,
        };
        ensure!(libc::sigqueue(getpid(), RT, val) == 0, "sigqueue");
    }
    Ok(())
}

pub fn victim(c: &Child) -> Verdict {
    setup()?;
    c.ready(b"");
    c.wait_go();
    check_flags(SFD, true, false)?;
    let first = read_siginfo(SFD);
    ensure!(first == Ok((RT as u32, 77)), "queued signal: {first:?}");
    let none = read_siginfo(SFD);
    ensure!(none == Err(libc::EAGAIN), "after the queued one: {none:?}");
    // SAFETY: signals to ourselves, blocked.
    unsafe { libc::kill(getpid(), libc::SIGUSR2) };
    let none = read_siginfo(SFD);
    ensure!(
        none == Err(libc::EAGAIN),
        "SIGUSR2 is not in the mask: {none:?}"
    );
    // SAFETY: as above.
    unsafe { libc::kill(getpid(), libc::SIGUSR1) };
    let usr1 = read_siginfo(SFD);
    ensure!(
        matches!(usr1, Ok((s, _)) if s == libc::SIGUSR1 as u32),
        "SIGUSR1 sent after go: {usr1:?}"
    );
    Ok(())
}
