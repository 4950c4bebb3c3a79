//! The composite event-loop victim: one epoll (fd 10) over an eventfd
//! (data 'E'), a periodic 50 ms CLOCK_MONOTONIC timerfd (data 'T') and a
//! signalfd for a blocked SIGUSR1 (data 'S'), all non-blocking. After go
//! the loop runs on epoll_wait alone: the timer must tick at least three
//! times within a second, a write of 42 to the eventfd and a SIGUSR1 sent
//! to itself must each be reported under their data and read back.

use std::path::Path;

use crate::common::victim::{Child, Verdict, getpid, now_ns};
use crate::raw::{
    epoll_add, place, read_siginfo, read_u64, sigset, timer_set, wait_one, write_u64,
};

const EP: i32 = 10;
const EV: i32 = 11;
const TIMER: i32 = 12;
const SIG: i32 = 13;
const PERIOD: u64 = 50_000_000;

pub fn prepare(_dir: &Path) {}

fn setup() -> Verdict {
    let usr1 = sigset(&[libc::SIGUSR1]);
    // SAFETY: raw object creation and a live signal set.
    unsafe {
        ensure!(
            libc::sigprocmask(libc::SIG_BLOCK, &usr1, std::ptr::null_mut()) == 0,
            "sigprocmask"
        );
        place(libc::epoll_create1(0), EP, false)?;
        place(libc::eventfd(0, libc::EFD_NONBLOCK), EV, false)?;
        let nb = libc::TFD_NONBLOCK;
        place(
            libc::timerfd_create(libc::CLOCK_MONOTONIC, nb),
            TIMER,
            false,
        )?;
        place(libc::signalfd(-1, &usr1, libc::SFD_NONBLOCK), SIG, false)?;
    }
    timer_set(TIMER, 0, PERIOD, PERIOD)?;
    let inn = libc::EPOLLIN as u32;
    epoll_add(EP, EV, inn, u64::from(b'E'))?;
    epoll_add(EP, TIMER, inn, u64::from(b'T'))?;
    epoll_add(EP, SIG, inn, u64::from(b'S'))?;
    Ok(())
}

/// What the loop saw.
#[derive(Default)]
struct Seen {
    ticks: u64,
    event: Option<u64>,
    signal: bool,
}

/// One round of the loop: handles whatever epoll reports within 100 ms.
fn round(seen: &mut Seen) -> Verdict {
    let Some((_, data)) = wait_one(EP, 100) else {
        return Ok(());
    };
    match data as u8 {
        b'T' => seen.ticks += read_u64(TIMER).unwrap_or(0),
        b'E' => seen.event = read_u64(EV).ok(),
        b'S' => {
            let si = read_siginfo(SIG);
            ensure!(matches!(si, Ok((10, _))), "signalfd read {si:?}");
            seen.signal = true;
        }
        other => ensure!(false, "epoll data {other:#x}"),
    }
    Ok(())
}

pub fn victim(c: &Child) -> Verdict {
    setup()?;
    c.ready(b"");
    c.wait_go();
    let mut seen = Seen::default();
    let start = now_ns();
    // Drain what piled up during the checkpoint, then count fresh ticks.
    while wait_one(EP, 0).is_some() {
        round(&mut seen)?;
    }
    seen = Seen::default();
    while seen.ticks < 3 {
        ensure!(
            now_ns() - start < 1_000_000_000,
            "{} ticks in 1 s",
            seen.ticks
        );
        round(&mut seen)?;
    }
    ensure!(write_u64(EV, 42), "eventfd write");
    // SAFETY: a blocked signal to ourselves.
    unsafe { libc::kill(getpid(), libc::SIGUSR1) };
    let deadline = now_ns() + 1_000_000_000;
    while seen.event.is_none() || !seen.signal {
        ensure!(
            now_ns() < deadline,
            "event {:?} signal {}",
            seen.event,
            seen.signal
        );
        round(&mut seen)?;
    }
    ensure!(seen.event == Some(42), "eventfd value {:?}", seen.event);
    Ok(())
}
