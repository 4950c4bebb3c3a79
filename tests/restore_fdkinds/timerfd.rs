//! The timerfd victim: a periodic CLOCK_MONOTONIC timer (100 ms), a 30 s
//! one-shot, a CLOCK_BOOTTIME one-shot that expired before the dump and was
//! not read, a CLOCK_REALTIME timer set absolute (TFD_TIMER_ABSTIME) 30 s
//! ahead, and a timer never armed. After go: the periodic timer has ticks,
//! then fires again within its period and keeps its interval; the long
//! timers have at most 30 s and more than 20 s left; the expired one reads
//! exactly one expiration; the unarmed one stays disarmed.

use std::path::Path;

use crate::common::victim::{Child, Verdict, now_ns, sleep_ms};
use crate::raw::{check_flags, clock_ns, place, read_u64, timer_get, timer_set};

const PERIODIC: i32 = 10;
const LONG: i32 = 11;
const EXPIRED: i32 = 12;
const ABS: i32 = 13;
const UNARMED: i32 = 14;
const PERIOD: u64 = 100_000_000;
const SEC: u64 = 1_000_000_000;

pub fn prepare(_dir: &Path) {}

fn setup() -> Verdict {
    let nb = libc::TFD_NONBLOCK;
    // SAFETY: raw timerfd creation.
    unsafe {
        place(
            libc::timerfd_create(libc::CLOCK_MONOTONIC, nb),
            PERIODIC,
            false,
        )?;
        place(libc::timerfd_create(libc::CLOCK_MONOTONIC, 0), LONG, false)?;
        place(
            libc::timerfd_create(libc::CLOCK_BOOTTIME, nb),
            EXPIRED,
            true,
        )?;
        place(libc::timerfd_create(libc::CLOCK_REALTIME, nb), ABS, false)?;
        place(
            libc::timerfd_create(libc::CLOCK_MONOTONIC, nb),
            UNARMED,
            false,
        )?;
    }
    timer_set(PERIODIC, 0, PERIOD, PERIOD)?;
    timer_set(LONG, 0, 30 * SEC, 0)?;
    timer_set(EXPIRED, 0, 1_000_000, 0)?;
    let at = clock_ns(libc::CLOCK_REALTIME) + 30 * SEC;
    timer_set(ABS, libc::TFD_TIMER_ABSTIME, at, 0)?;
    // Past the first period: both the periodic and the expired timer hold
    // unread expirations at the dump.
    sleep_ms(120);
    Ok(())
}

/// `fd` has between 20 and 30 s left and no interval.
fn long_left(fd: i32) -> Verdict {
    let t = timer_get(fd);
    ensure!(
        matches!(t, Some((v, 0)) if v > 20 * SEC && v <= 30 * SEC),
        "fd {fd}: 30 s timer reads {t:?}"
    );
    Ok(())
}

pub fn victim(c: &Child) -> Verdict {
    setup()?;
    c.ready(b"");
    c.wait_go();
    check_flags(PERIODIC, true, false)?;
    check_flags(LONG, false, false)?;
    check_flags(EXPIRED, true, true)?;
    let ticks = read_u64(PERIODIC);
    ensure!(
        matches!(ticks, Ok(n) if n >= 1),
        "periodic ticks: {ticks:?}"
    );
    let t = timer_get(PERIODIC);
    ensure!(
        matches!(t, Some((v, PERIOD)) if v <= PERIOD),
        "periodic timer reads {t:?}"
    );
    // The next expiration comes within one period (and some slack).
    let start = now_ns();
    let next = loop {
        if read_u64(PERIODIC).is_ok() {
            break now_ns() - start;
        }
        ensure!(now_ns() - start < 3 * PERIOD, "the periodic timer stopped");
        sleep_ms(1);
    };
    ensure!(next <= PERIOD + 20_000_000, "next tick after {next} ns");
    long_left(LONG)?;
    long_left(ABS)?;
    let e = read_u64(EXPIRED);
    ensure!(e == Ok(1), "the expired timer's unread tick: {e:?}");
    ensure!(timer_get(EXPIRED) == Some((0, 0)), "expired timer rearmed");
    let e = read_u64(EXPIRED);
    ensure!(e == Err(libc::EAGAIN), "expired timer ticks again: {e:?}");
    ensure!(timer_get(UNARMED) == Some((0, 0)), "unarmed timer armed");
    ensure!(
        read_u64(UNARMED) == Err(libc::EAGAIN),
        "unarmed timer ticks"
    );
    Ok(())
}
