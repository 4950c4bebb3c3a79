//! The eventfd victim: a plain counter of 5 (non-blocking), a semaphore
//! holding 3 (non-blocking, close-on-exec), a blocking counter at 0 and a
//! counter near the top of its range. After go: the plain counter reads 5
//! then would block; the semaphore reads 1 three times then would block;
//! the blocking one is blocking and becomes 7 after a write; the big one
//! reads back whole; every fd has its flags.

use std::path::Path;

use crate::common::victim::{Child, Verdict, read_file};
use crate::raw::{check_flags, place, read_u64, write_u64};

const PLAIN: i32 = 10;
const SEM: i32 = 11;
const BLOCKING: i32 = 12;
const BIG: i32 = 13;
const BIG_VALUE: u64 = 0xffff_ffff_ffff_fff0;

pub fn prepare(_dir: &Path) {}

fn setup() -> Verdict {
    // SAFETY: raw eventfd creation.
    unsafe {
        place(libc::eventfd(5, libc::EFD_NONBLOCK), PLAIN, false)?;
        let sem = libc::EFD_SEMAPHORE | libc::EFD_NONBLOCK | libc::EFD_CLOEXEC;
        place(libc::eventfd(3, sem), SEM, true)?;
        place(libc::eventfd(0, 0), BLOCKING, false)?;
        place(libc::eventfd(0, libc::EFD_NONBLOCK), BIG, false)?;
    }
    ensure!(write_u64(BIG, BIG_VALUE), "filling the big counter");
    Ok(())
}

/// Whether this kernel shows EFD_SEMAPHORE in fdinfo (the line came in
/// 2023: 6.1 lacks it). Without it a dump cannot tell, and restore makes a
/// plain counter (documented, with a warning).
fn semaphore_visible() -> bool {
    let mut buf = [0u8; 512];
    let text = read_file(c"/proc/self/fdinfo/11", &mut buf);
    text.windows(17).any(|w| w == b"eventfd-semaphore")
}

pub fn victim(c: &Child) -> Verdict {
    setup()?;
    let visible = semaphore_visible();
    c.ready(b"");
    c.wait_go();
    check_flags(PLAIN, true, false)?;
    check_flags(SEM, true, true)?;
    check_flags(BLOCKING, false, false)?;
    ensure!(
        read_u64(PLAIN) == Ok(5),
        "plain counter: {:?}",
        read_u64(PLAIN)
    );
    let again = read_u64(PLAIN);
    ensure!(
        again == Err(libc::EAGAIN),
        "plain counter after read: {again:?}"
    );
    let first = read_u64(SEM);
    if visible || first == Ok(1) {
        ensure!(first == Ok(1), "semaphore read 0: {first:?}");
        for i in 1..3 {
            let v = read_u64(SEM);
            ensure!(v == Ok(1), "semaphore read {i}: {v:?}");
        }
    } else {
        // The restored plain counter of a kernel that hides the flag.
        ensure!(first == Ok(3), "counter without its flag: {first:?}");
    }
    let v = read_u64(SEM);
    ensure!(v == Err(libc::EAGAIN), "semaphore after 3 reads: {v:?}");
    ensure!(write_u64(BLOCKING, 7), "write to the blocking counter");
    ensure!(read_u64(BLOCKING) == Ok(7), "blocking counter");
    let v = read_u64(BIG);
    ensure!(v == Ok(BIG_VALUE), "big counter: {v:x?}");
    Ok(())
}
