//! The page dump's commands (32..=47, see proto.rs): a pipe in the task
//! and vmsplice of the task's pages into it. Only the task can vmsplice
//! its own memory, so this runs in the parasite; crest splices the pipe.

use core::ptr::{read_volatile, write_volatile};

use crate::proto::{
    CMD_PIPE_CLOSE, CMD_PIPE_OPEN, CMD_VMSPLICE, EINVAL, MemRange, PipeFds, VMSPLICE_MAX_IOV,
    VmspliceArgs,
};
use crate::syscall::{nr, syscall1, syscall2, syscall4};

/// `O_CLOEXEC`: the pipe must not leak into a program the task execs
/// if crest dies before it closes it.
const O_CLOEXEC: usize = 0o2000000;
/// `SPLICE_F_NONBLOCK`: a full pipe ends the command instead of
/// blocking the task forever (only crest empties the pipe).
const SPLICE_F_NONBLOCK: usize = 2;
/// `EAGAIN`: the pipe is full.
const EAGAIN: isize = 11;

/// Runs one of the page dump's commands; 0 or a negative errno.
pub fn dispatch(cmd: u32, payload: *mut u8) -> i32 {
    match cmd {
        CMD_PIPE_OPEN => pipe_open(payload.cast()),
        CMD_VMSPLICE => vmsplice(payload.cast()),
        CMD_PIPE_CLOSE => pipe_close(payload.cast()),
        _ => -EINVAL,
    }
}

fn pipe_open(fds: *mut PipeFds) -> i32 {
    // SAFETY: the payload holds a PipeFds (asserted in proto.rs) and
    // pipe2 writes two ints, which is its layout.
    unsafe { syscall2(nr::SYS_pipe2, fds as usize, O_CLOEXEC) as i32 }
}

fn pipe_close(fds: *mut PipeFds) -> i32 {
    // SAFETY: the payload holds a PipeFds written by crest.
    let PipeFds { read_fd, write_fd } = unsafe { read_volatile(fds) };
    // SAFETY: closing the pipe CMD_PIPE_OPEN made; crest sends only
    // those numbers.
    let r = unsafe { syscall1(nr::SYS_close, read_fd as usize) };
    // SAFETY: as above.
    let w = unsafe { syscall1(nr::SYS_close, write_fd as usize) };
    if r < 0 { r as i32 } else { w as i32 }
}

/// vmsplices every range, advancing through them as the kernel takes
/// bytes (it may take part of a range), until all are in or the pipe is
/// full; records the bytes moved in `done`.
fn vmsplice(args: *mut VmspliceArgs) -> i32 {
    // SAFETY: the payload holds a VmspliceArgs (asserted in proto.rs).
    let (fd, nr_iov) = unsafe {
        (
            read_volatile(&raw const (*args).pipe_fd),
            read_volatile(&raw const (*args).nr_iov) as usize,
        )
    };
    if nr_iov > VMSPLICE_MAX_IOV {
        return -EINVAL;
    }
    // SAFETY: in the same payload.
    let iov = unsafe { (&raw mut (*args).iov).cast::<MemRange>() };
    let (mut i, mut done, mut ret) = (0usize, 0u64, 0i32);
    while i < nr_iov {
        // SAFETY: iov[i..nr_iov] are in the payload; the kernel only
        // reads them and the task's own memory they name.
        let n = unsafe {
            syscall4(
                nr::SYS_vmsplice,
                fd as usize,
                iov.add(i) as usize,
                nr_iov - i,
                SPLICE_F_NONBLOCK,
            )
        };
        if n == -EAGAIN || n == 0 {
            break;
        }
        if n < 0 {
            ret = n as i32;
            break;
        }
        done += n as u64;
        // SAFETY: i < nr_iov inside the loop keeps every access in the
        // payload's iov array.
        unsafe { i = advance(iov, i, nr_iov, n as u64) };
    }
    // SAFETY: in the payload.
    unsafe { write_volatile(&raw mut (*args).done, done) };
    ret
}

/// Skips `n` bytes of the ranges from `i`; returns the first range not
/// fully consumed (trimmed to what is left of it).
///
/// # Safety
/// `iov` points at `nr_iov` ranges.
unsafe fn advance(iov: *mut MemRange, mut i: usize, nr_iov: usize, mut n: u64) -> usize {
    while i < nr_iov {
        // SAFETY: i < nr_iov (caller's contract).
        let r = unsafe { &mut *iov.add(i) };
        if n < r.len {
            r.start += n;
            r.len -= n;
            break;
        }
        n -= r.len;
        i += 1;
    }
    i
}
