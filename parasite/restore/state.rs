//! Per-process kernel state only the task can set on itself: the mm's
//! layout (PR_SET_MM_MAP), signal actions, interval and POSIX timers,
//! resource limits, personality, umask and the prctl flags.
//!
//! # Safety
//! Every pointer handed to the kernel points into the plan (inside the
//! restorer mapping) or to a local; the plan's values were checked by
//! crest when it built them.

use super::calls::{self, Sys};
use super::mem::Failed;
use crate::plan::{PlanTimer, RestorePlan};
use crate::proto::{NSIG, SIGKILL, SIGSTOP};
use crate::syscall::nr;

const PR_SET_PDEATHSIG: usize = 1;
const PR_SET_DUMPABLE: usize = 4;
const PR_SET_MM: usize = 35;
const PR_SET_MM_MAP: usize = 14;
const PR_SET_CHILD_SUBREAPER: usize = 36;
const PR_SET_THP_DISABLE: usize = 41;
const PR_TIMER_CREATE_RESTORE_IDS: usize = 77;
const SIGEV_THREAD_ID: i32 = 4;
/// `sizeof(sigset_t)` as the kernel wants it.
const SIGSET_SIZE: usize = 8;

fn at(i: usize, r: Sys) -> Result<usize, Failed> {
    r.map_err(|e| (i as u32, e))
}

fn ptr<T>(v: &T) -> usize {
    v as *const T as usize
}

/// PR_SET_MM_MAP: code, data, brk, stack, args, env, auxv and exe at once.
pub fn set_mm(p: &RestorePlan) -> Result<(), Failed> {
    let size = core::mem::size_of_val(&p.mm);
    // SAFETY: the kernel reads the map and the auxv it points to.
    at(0, unsafe { calls::call(nr::SYS_prctl, [PR_SET_MM, PR_SET_MM_MAP, ptr(&p.mm), size, 0]) })
        .map(drop)
}

/// Every signal's action but SIGKILL's and SIGSTOP's.
pub fn sigactions(p: &RestorePlan) -> Result<(), Failed> {
    for (i, act) in p.sigactions.iter().enumerate().take(NSIG) {
        let sig = i + 1;
        if sig == SIGKILL || sig == SIGSTOP {
            continue;
        }
        // SAFETY: the kernel reads one struct sigaction from the plan.
        let r = unsafe { calls::call(nr::SYS_rt_sigaction, [sig, ptr(act), 0, SIGSET_SIZE, 0]) };
        at(sig, r)?;
    }
    Ok(())
}

/// The three interval timers, with the time they had left.
pub fn itimers(p: &RestorePlan) -> Result<(), Failed> {
    for (which, t) in p.itimers.timers.iter().enumerate() {
        if t.value.sec == 0 && t.value.usec == 0 {
            continue;
        }
        // SAFETY: the kernel reads one struct itimerval from the plan.
        at(which, unsafe { calls::call(nr::SYS_setitimer, [which, ptr(t), 0, 0, 0]) })?;
    }
    Ok(())
}

/// The kernel's `struct sigevent` (64 bytes).
#[repr(C)]
struct Sigevent {
    value: u64,
    signo: i32,
    notify: i32,
    tid: i32,
    pad: [i32; 11],
}

fn timer_create(t: &PlanTimer, id: &mut i32) -> Sys {
    let ev = Sigevent {
        value: t.value,
        signo: t.signo,
        notify: t.notify,
        tid: if t.notify & SIGEV_THREAD_ID != 0 { t.tid } else { 0 },
        pad: [0; 11],
    };
    // SAFETY: the kernel reads the sigevent and writes the id.
    unsafe {
        calls::call(
            nr::SYS_timer_create,
            [t.clock as usize, ptr(&ev), id as *mut i32 as usize, 0, 0],
        )
    }
}

/// Creates `t` with its own id: by asking for it where the kernel takes
/// the id to use, or else by creating timers in order (a new process's ids
/// start at 0 and grow by one) and deleting the ones in between.
fn create_with_id(t: &PlanTimer, by_prctl: bool) -> Sys {
    loop {
        let mut id = if by_prctl { t.id } else { 0 };
        timer_create(t, &mut id)?;
        if id == t.id {
            return Ok(0);
        }
        if by_prctl || id > t.id {
            // The kernel skipped past the id: it cannot be had.
            return Err(-17);
        }
        // SAFETY: deletes a timer this loop just created.
        unsafe { calls::call(nr::SYS_timer_delete, [id as usize, 0, 0, 0, 0]) }?;
    }
}

/// The POSIX timers, with their ids, signals and the time they had left.
pub fn timers(p: &RestorePlan) -> Result<(), Failed> {
    let list: &[PlanTimer] = if p.nr_timers == 0 {
        &[]
    } else {
        // SAFETY: crest wrote nr_timers entries at `timers` in the mapping.
        unsafe { core::slice::from_raw_parts(p.timers as *const PlanTimer, p.nr_timers as usize) }
    };
    let by_prctl = p.timer_ids_by_prctl != 0;
    if by_prctl && !list.is_empty() {
        // SAFETY: a prctl with plain values.
        at(0, unsafe { calls::call(nr::SYS_prctl, [PR_TIMER_CREATE_RESTORE_IDS, 1, 0, 0, 0]) })?;
    }
    for (i, t) in list.iter().enumerate() {
        at(i, create_with_id(t, by_prctl))?;
        if t.left.sec != 0 || t.left.nsec != 0 {
            let spec = [t.interval, t.left];
            // SAFETY: the kernel reads one itimerspec from this frame.
            let r = unsafe {
                calls::call(nr::SYS_timer_settime, [t.id as usize, 0, ptr(&spec), 0, 0])
            };
            at(i, r)?;
        }
    }
    if by_prctl && !list.is_empty() {
        // SAFETY: a prctl with plain values.
        at(0, unsafe { calls::call(nr::SYS_prctl, [PR_TIMER_CREATE_RESTORE_IDS, 0, 0, 0, 0]) })?;
    }
    Ok(())
}

/// Every resource limit.
pub fn rlimits(p: &RestorePlan) -> Result<(), Failed> {
    let n = (p.nr_rlimits as usize).min(p.rlimits.len());
    for (res, l) in p.rlimits[..n].iter().enumerate() {
        // SAFETY: the kernel reads one struct rlimit64 from the plan.
        at(res, unsafe { calls::call(nr::SYS_prlimit64, [0, res, ptr(l), 0, 0]) })?;
    }
    Ok(())
}

/// personality, umask and the prctl flags.
pub fn misc(p: &RestorePlan) -> Result<(), Failed> {
    let calls: [(usize, [usize; 5]); 6] = [
        (nr::SYS_personality, [p.personality as usize, 0, 0, 0, 0]),
        (nr::SYS_umask, [p.umask as usize, 0, 0, 0, 0]),
        (nr::SYS_prctl, [PR_SET_DUMPABLE, p.dumpable as usize, 0, 0, 0]),
        (nr::SYS_prctl, [PR_SET_PDEATHSIG, p.pdeath_signal as usize, 0, 0, 0]),
        (nr::SYS_prctl, [PR_SET_CHILD_SUBREAPER, p.child_subreaper as usize, 0, 0, 0]),
        (nr::SYS_prctl, [PR_SET_THP_DISABLE, p.thp_disable as usize, 0, 0, 0]),
    ];
    for (i, (n, args)) in calls.iter().enumerate() {
        // SAFETY: calls with plain values only.
        at(i, unsafe { calls::call(*n, *args) })?;
    }
    Ok(())
}

/// What a change of credentials resets (commit_creds): the dumpable flag
/// and the parent-death signal.
pub fn after_creds(p: &RestorePlan) -> Result<(), Failed> {
    let calls: [[usize; 5]; 2] = [
        [PR_SET_DUMPABLE, p.dumpable as usize, 0, 0, 0],
        [PR_SET_PDEATHSIG, p.pdeath_signal as usize, 0, 0, 0],
    ];
    for (i, a) in calls.iter().enumerate() {
        // SAFETY: prctl calls with plain values.
        at(i, unsafe { calls::call(nr::SYS_prctl, *a) })?;
    }
    Ok(())
}

/// Closes crest's helper fds (pages file, mapped files, exe): all fds from
/// `close_from` up.
pub fn close_fds(p: &RestorePlan) -> Result<(), Failed> {
    let a = [p.close_from as usize, u32::MAX as usize, 0, 0, 0];
    // SAFETY: only crest's helper fds are at or above close_from.
    at(0, unsafe { calls::call(nr::SYS_close_range, a) }).map(drop)
}
