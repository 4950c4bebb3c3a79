//! The epoll victim: an epoll instance watching an empty eventfd (data
//! 0xdead_beef_0000_0001), the read end of an empty pipe (edge-triggered,
//! data 2) and an eventfd holding 1 (data 3); a second epoll watching the
//! first (data 9). After go: only the full eventfd is ready, with its data;
//! once read nothing is; a write to the empty eventfd, then to the pipe,
//! each wakes epoll_wait with its own data, and the outer epoll sees the
//! inner one ready.
//!
//! [`stale_victim`] adds an eventfd and then closes it: the registration
//! stays under a number that no longer holds the file, which dump refuses.

use std::path::Path;

use crate::common::victim::{Child, Verdict};
use crate::raw::{check_flags, epoll_add, place, read_u64, wait_one, write_u64};

const EP: i32 = 20;
const EMPTY: i32 = 21;
const FULL: i32 = 22;
const PIPE_R: i32 = 23;
const PIPE_W: i32 = 24;
const OUTER: i32 = 25;
const DATA_EMPTY: u64 = 0xdead_beef_0000_0001;

pub fn prepare(_dir: &Path) {}

fn setup() -> Verdict {
    let mut p = [0i32; 2];
    // SAFETY: raw object creation.
    unsafe {
        place(libc::epoll_create1(libc::EPOLL_CLOEXEC), EP, true)?;
        place(libc::eventfd(0, libc::EFD_NONBLOCK), EMPTY, false)?;
        place(libc::eventfd(1, libc::EFD_NONBLOCK), FULL, false)?;
        ensure!(libc::pipe2(p.as_mut_ptr(), libc::O_NONBLOCK) == 0, "pipe2");
        place(p[0], PIPE_R, false)?;
        place(p[1], PIPE_W, false)?;
        place(libc::epoll_create1(0), OUTER, false)?;
    }
    let et = (libc::EPOLLIN | libc::EPOLLET) as u32;
    epoll_add(EP, EMPTY, libc::EPOLLIN as u32, DATA_EMPTY)?;
    epoll_add(EP, PIPE_R, et, 2)?;
    epoll_add(EP, FULL, libc::EPOLLIN as u32, 3)?;
    epoll_add(OUTER, EP, libc::EPOLLIN as u32, 9)?;
    Ok(())
}

pub fn victim(c: &Child) -> Verdict {
    setup()?;
    c.ready(b"");
    c.wait_go();
    check_flags(EP, false, true)?;
    let ev = wait_one(EP, 0);
    ensure!(
        ev == Some((libc::EPOLLIN as u32, 3)),
        "first event: {ev:x?}"
    );
    ensure!(
        wait_one(OUTER, 0) == Some((libc::EPOLLIN as u32, 9)),
        "outer"
    );
    ensure!(read_u64(FULL) == Ok(1), "the full eventfd");
    let ev = wait_one(EP, 0);
    ensure!(ev.is_none(), "ready with nothing to read: {ev:x?}");
    ensure!(wait_one(OUTER, 0).is_none(), "outer ready with nothing");
    ensure!(write_u64(EMPTY, 4), "write to the empty eventfd");
    let ev = wait_one(EP, 1000);
    ensure!(
        ev == Some((libc::EPOLLIN as u32, DATA_EMPTY)),
        "after write: {ev:x?}"
    );
    ensure!(read_u64(EMPTY) == Ok(4), "the eventfd's value");
    // SAFETY: one byte from a live buffer.
    let wrote = unsafe { libc::write(PIPE_W, b"x".as_ptr().cast(), 1) };
    ensure!(wrote == 1, "pipe write");
    let ev = wait_one(EP, 1000);
    ensure!(
        ev == Some((libc::EPOLLIN as u32, 2)),
        "after pipe write: {ev:x?}"
    );
    // Edge-triggered: no second report of the same byte.
    let ev = wait_one(EP, 0);
    ensure!(ev.is_none(), "edge-triggered pipe reported twice: {ev:x?}");
    Ok(())
}

/// An epoll watching fd 21, which is closed afterwards.
pub fn stale_victim(c: &Child) -> Verdict {
    // SAFETY: raw object creation.
    unsafe {
        place(libc::epoll_create1(0), EP, false)?;
        place(libc::eventfd(0, 0), EMPTY, false)?;
    }
    epoll_add(EP, EMPTY, libc::EPOLLIN as u32, 1)?;
    // A dup keeps the file alive (and registered) with fd 21 closed.
    // SAFETY: raw fd calls on our own fds.
    let kept = unsafe { libc::dup(EMPTY) };
    // SAFETY: as above.
    ensure!(kept >= 0 && unsafe { libc::close(EMPTY) } == 0, "dup/close");
    c.ready(b"");
    c.wait_go();
    ensure!(write_u64(kept, 1), "write through the dup");
    let ev = wait_one(EP, 1000);
    ensure!(
        ev == Some((libc::EPOLLIN as u32, 1)),
        "stale epoll: {ev:x?}"
    );
    Ok(())
}
