//! The parasite-state commands (CMD_DUMP_*, numbers 16..=31): what only
//! the task itself can tell. Where the kernel writes a struct, it writes it
//! straight into the payload or into a local that is then stored with one
//! volatile write; the layouts are the kernel's (see proto.rs).

use core::ptr::{read_volatile, write_volatile};

use crate::proto::{
    CMD_DUMP_ITIMERS, CMD_DUMP_MISC, CMD_DUMP_POSIX_TIMERS, CMD_DUMP_SIGACTIONS, CMD_DUMP_THREAD,
    EINVAL, Itimerval, KSigaction, MAX_POSIX_TIMERS, MiscReply, NO_FAILURE, NSIG, PosixTimerValue,
    PosixTimersArgs, SIGKILL, SIGSTOP, ThreadReply,
};
use crate::rt;

/// Runs one of the CMD_DUMP_* commands; 0 or a negative errno.
pub fn dispatch(cmd: u32, payload: *mut u8) -> i32 {
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
