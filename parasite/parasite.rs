//! The parasite blob: code crest runs inside the task it dumps, to collect
//! what only the task itself can see (its own ids, and in later stages its
//! memory pages, file descriptors, signal state...).
//!
//! A freestanding crate (`no_std`, no libc, panic = abort) that build.rs
//! compiles for the target architecture, links into one flat position
//! independent image and embeds in crest (`crest::blob::parasite()`). The
//! head in `arch/<arch>/entry.rs` sets up the stack and calls [`parasite_main`]
//! with the args area; it runs the command found there (see proto.rs),
//! writes the result back, returns, and the head traps.
//!
//! # Safety
//! The blob runs in a process that is not crest, on memory crest mapped for
//! it: the args area is valid, 64-aligned and `PARASITE_ARGS_SIZE` bytes,
//! because the head hands over the address of the blob's own
//! `__crest_args`. Nothing else is assumed about the host process.
#![no_std]
#![no_main]
#![no_builtins]

#[macro_use]
#[cfg_attr(target_arch = "x86_64", path = "../arch/x86_64/entry.rs")]
#[cfg_attr(target_arch = "aarch64", path = "../arch/aarch64/entry.rs")]
mod entry;
#[allow(dead_code)]
#[cfg_attr(target_arch = "x86_64", path = "../arch/x86_64/infect.rs")]
#[cfg_attr(target_arch = "aarch64", path = "../arch/aarch64/infect.rs")]
mod infect;
#[allow(dead_code)]
#[cfg_attr(target_arch = "x86_64", path = "../arch/x86_64/regs.rs")]
#[cfg_attr(target_arch = "aarch64", path = "../arch/aarch64/regs.rs")]
mod regs;
#[allow(dead_code)]
#[cfg_attr(target_arch = "x86_64", path = "../arch/x86_64/sigframe.rs")]
#[cfg_attr(target_arch = "aarch64", path = "../arch/aarch64/sigframe.rs")]
mod sigframe;
#[allow(dead_code)]
#[cfg_attr(target_arch = "x86_64", path = "../arch/x86_64/syscall.rs")]
#[cfg_attr(target_arch = "aarch64", path = "../arch/aarch64/syscall.rs")]
mod syscall;

#[allow(dead_code)]
mod proto;
// Shared by both blobs; each uses its part.
#[allow(dead_code)]
mod rt;

use core::ptr::{read_volatile, write_volatile};
use proto::{CMD_ABORT, CMD_FINI, CMD_GETPID, CmdHeader, EINVAL, GetPid, PAYLOAD_OFFSET};

blob_head!(
    parasite_main,
    proto::PARASITE_ARGS_SIZE,
    proto::PARASITE_STACK_SIZE
);

/// The Rust entry, called by the head with the blob's args area.
///
/// The header is read and written with volatile accesses: crest reads and
/// writes the same bytes through its own mapping of the area.
extern "C" fn parasite_main(args: *mut u8) {
    let hdr = args.cast::<CmdHeader>();
    // SAFETY: args is the blob's own args area (see the crate's Safety note),
    // large enough and aligned for a CmdHeader.
    let cmd = unsafe { read_volatile(&raw const (*hdr).cmd) };
    // SAFETY: the payload starts PAYLOAD_OFFSET bytes into the same area.
    let payload = unsafe { args.add(PAYLOAD_OFFSET) };
    let ret = dispatch(cmd, payload);
    // SAFETY: as for the read above.
    unsafe { write_volatile(&raw mut (*hdr).ret, ret) };
}

/// Runs one command on its payload; returns 0 or a negative errno. The
/// socket daemon of a later stage calls this for every command it receives.
fn dispatch(cmd: u32, payload: *mut u8) -> i32 {
    match cmd {
        CMD_GETPID => {
            let reply = GetPid {
                pid: rt::getpid(),
                tid: rt::gettid(),
            };
            // SAFETY: the payload holds PAYLOAD_SIZE bytes, 8-aligned, and a
            // compile-time assertion in proto.rs checks GetPid fits.
            unsafe { write_volatile(payload.cast::<GetPid>(), reply) };
            0
        }
        // Nothing to undo yet: trap mode sets nothing up in the task.
        CMD_FINI => 0,
        CMD_ABORT => panic!(),
        proto::CMD_PIPE_OPEN..=47 => page_dump::dispatch(cmd, payload),
        16..=31 => dump_state(cmd, payload),
        _ => -EINVAL,
    }
}

/// The page dump's commands (32..=47, see proto.rs): a pipe in the task and
/// vmsplice of the task's pages into it.
mod page_dump {
    use crate::proto::{
        CMD_PIPE_CLOSE, CMD_PIPE_OPEN, CMD_VMSPLICE, EINVAL, MemRange, PipeFds, VMSPLICE_MAX_IOV,
        VmspliceArgs,
    };
    use crate::syscall::{nr, syscall1, syscall2, syscall4};
    use core::ptr::{read_volatile, write_volatile};

    /// `O_CLOEXEC`: the pipe must not leak into a program the task execs
    /// if crest dies before it closes it.
    const O_CLOEXEC: usize = 0o2000000;
    /// `SPLICE_F_NONBLOCK`: a full pipe ends the command instead of
    /// blocking the task forever (only crest empties the pipe).
    const SPLICE_F_NONBLOCK: usize = 2;
    /// `EAGAIN`: the pipe is full.
    const EAGAIN: isize = 11;

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
}
// ---------------------------------------------------------------------------
// The parasite-state commands (CMD_DUMP_*, numbers 16..=31): what only the
// task itself can tell. Where the kernel writes a struct, it writes it
// straight into the payload or into a local that is then stored with one
// volatile write; the layouts are the kernel's (see proto.rs).
// ---------------------------------------------------------------------------

use proto::{
    CMD_DUMP_ITIMERS, CMD_DUMP_MISC, CMD_DUMP_POSIX_TIMERS, CMD_DUMP_SIGACTIONS, CMD_DUMP_THREAD,
    Itimerval, KSigaction, MAX_POSIX_TIMERS, MiscReply, NO_FAILURE, NSIG, PosixTimerValue,
    PosixTimersArgs, SIGKILL, SIGSTOP, ThreadReply,
};

/// Runs one of the CMD_DUMP_* commands; 0 or a negative errno.
fn dump_state(cmd: u32, payload: *mut u8) -> i32 {
    match cmd {
        CMD_DUMP_SIGACTIONS => dump_sigactions(payload),
        CMD_DUMP_ITIMERS => dump_itimers(payload),
        CMD_DUMP_POSIX_TIMERS => dump_posix_timers(payload),
        CMD_DUMP_MISC => dump_misc(payload),
        CMD_DUMP_THREAD => dump_thread(payload),
        _ => -EINVAL,
    }
}

/// Fills a SigactionsReply; SIGKILL's and SIGSTOP's entries (which
/// rt_sigaction refuses) are zeroed.
fn dump_sigactions(payload: *mut u8) -> i32 {
    for sig in 1..=NSIG {
        // SAFETY: the payload holds a SigactionsReply (asserted in
        // proto.rs); entry sig - 1 lies inside it, 8-aligned.
        let slot = unsafe { payload.add((sig - 1) * size_of::<KSigaction>()) };
        if sig == SIGKILL || sig == SIGSTOP {
            // SAFETY: as above.
            unsafe { write_volatile(slot.cast::<KSigaction>(), KSigaction::default()) };
            continue;
        }
        // SAFETY: slot is writable for the 32-byte kernel struct.
        let r = unsafe { rt::sigaction_get(sig, slot) };
        if r < 0 {
            return r;
        }
    }
    0
}

/// Fills an ItimersReply, indexed by ITIMER_REAL, _VIRTUAL, _PROF.
fn dump_itimers(payload: *mut u8) -> i32 {
    for which in 0..3 {
        // SAFETY: the payload holds an ItimersReply (asserted in proto.rs);
        // entry `which` is a 32-byte itimerval inside it.
        let r = unsafe { rt::getitimer(which, payload.add(which * size_of::<Itimerval>())) };
        if r < 0 {
            return r;
        }
    }
    0
}

/// Answers a PosixTimersArgs in place: for each id crest wrote, the
/// itimerspec and the overrun; on failure `failed` names the entry.
fn dump_posix_timers(payload: *mut u8) -> i32 {
    let args = payload.cast::<PosixTimersArgs>();
    // SAFETY: the payload holds a PosixTimersArgs (asserted in proto.rs).
    let nr = unsafe { read_volatile(&raw const (*args).nr) } as usize;
    if nr > MAX_POSIX_TIMERS {
        return -EINVAL;
    }
    // SAFETY: as above.
    unsafe { write_volatile(&raw mut (*args).failed, NO_FAILURE) };
    // SAFETY: as above; the array starts inside the payload.
    let timers = unsafe { (&raw mut (*args).timers).cast::<PosixTimerValue>() };
    for i in 0..nr {
        // SAFETY: i < nr <= MAX_POSIX_TIMERS: inside the array.
        let t = unsafe { timers.add(i) };
        // SAFETY: t points to an entry crest wrote.
        let id = unsafe { read_volatile(&raw const (*t).id) };
        // SAFETY: interval and value follow each other as in struct
        // itimerspec, 32 writable bytes inside the entry.
        let mut r = unsafe { rt::timer_gettime(id, (&raw mut (*t).interval).cast()) };
        if r >= 0 {
            r = rt::timer_getoverrun(id);
        }
        if r < 0 {
            // SAFETY: as above.
            unsafe { write_volatile(&raw mut (*args).failed, i as u32) };
            return r;
        }
        // SAFETY: as above.
        unsafe { write_volatile(&raw mut (*t).overrun, r) };
    }
    0
}

/// Fills a MiscReply.
fn dump_misc(payload: *mut u8) -> i32 {
    let mut m = MiscReply {
        umask: rt::umask_get(),
        personality: rt::personality_get(),
        brk: rt::brk_get(),
        ..MiscReply::default()
    };
    let returned = [
        (rt::PR_GET_DUMPABLE, &mut m.dumpable),
        (rt::PR_GET_SECUREBITS, &mut m.securebits),
        (rt::PR_GET_THP_DISABLE, &mut m.thp_disable),
        (rt::PR_GET_NO_NEW_PRIVS, &mut m.no_new_privs),
    ];
    for (option, field) in returned {
        let v = rt::prctl_get(option);
        if v < 0 {
            return v as i32;
        }
        *field = v as i32;
    }
    let written = [
        (rt::PR_GET_PDEATHSIG, &raw mut m.pdeath_signal),
        (rt::PR_GET_CHILD_SUBREAPER, &raw mut m.child_subreaper),
    ];
    for (option, field) in written {
        // SAFETY: field is an int of the local struct, writable.
        let r = unsafe { rt::prctl_get_into(option, field.cast()) };
        if r < 0 {
            return r;
        }
    }
    // SAFETY: the payload holds a MiscReply (asserted in proto.rs), 8-aligned.
    unsafe { write_volatile(payload.cast::<MiscReply>(), m) };
    0
}

/// Fills a ThreadReply for the thread the blob runs in.
fn dump_thread(payload: *mut u8) -> i32 {
    let mut t = ThreadReply {
        tid: rt::gettid(),
        ..ThreadReply::default()
    };
    // SAFETY: altstack is a writable stack_t of the local struct.
    let r = unsafe { rt::sigaltstack_get((&raw mut t.altstack).cast()) };
    if r < 0 {
        return r;
    }
    // SAFETY: clear_tid is a writable pointer-sized field of the local.
    let r = unsafe { rt::prctl_get_into(rt::PR_GET_TID_ADDRESS, (&raw mut t.clear_tid).cast()) };
    if r < 0 {
        return r;
    }
    // SAFETY: the payload holds a ThreadReply (asserted in proto.rs), 8-aligned.
    unsafe { write_volatile(payload.cast::<ThreadReply>(), t) };
    0
}
