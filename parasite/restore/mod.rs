//! The restore proper: what the restorer does once crest's memory is gone,
//! step by step in the order of the `STEP_*` constants of plan.rs. The
//! leader runs it; the other threads run their part in threads.rs.
//!
//! Each step reports where it is in [`PlanResults`]; a failure records the
//! step, the item and the errno, wakes crest and parks, and crest kills the
//! task. On success every thread parks the same way and crest, which waits
//! on `done`, takes the threads over with ptrace.
//!
//! # Safety
//! `results` points to the plan's results in the restorer mapping, written
//! only through volatile stores and atomics.

mod calls;
mod mem;
mod state;
mod threads;

use core::ptr::write_volatile;
use core::sync::atomic::{Ordering, fence};

use crate::plan::*;

/// Records that step `s` runs, and fails it at once when the plan injects a
/// fault there (tests of the failure paths).
fn step(r: *mut PlanResults, p: &RestorePlan, s: u32) {
    // SAFETY: results is valid for the blob's life (module note).
    unsafe { write_volatile(&raw mut (*r).step, s) };
    if p.fault_step == s {
        fail(r, s, 0, -FAULT_ERRNO)
    }
}

/// Publishes the end (`done`) and wakes crest.
fn finish(r: *mut PlanResults, done: u32) {
    // The step, index and errno must be visible before `done` says so.
    fence(Ordering::SeqCst);
    // SAFETY: as for step.
    let word = unsafe { &raw mut (*r).done };
    // SAFETY: as for step.
    unsafe { write_volatile(word, done) };
    calls::futex_wake(word);
}

/// Waits forever on a word nobody changes: crest takes the thread over
/// with ptrace from here (or kills it).
pub fn park(r: *mut PlanResults) -> ! {
    // SAFETY: as for step.
    let word = unsafe { &raw const (*r).park };
    loop {
        calls::futex_wait(word, 0);
    }
}

/// Records a failed step and parks.
pub fn fail(r: *mut PlanResults, s: u32, index: u32, err: isize) -> ! {
    // SAFETY: as for step.
    unsafe {
        write_volatile(&raw mut (*r).step, s);
        write_volatile(&raw mut (*r).index, index);
        write_volatile(&raw mut (*r).err, err as i32);
    }
    finish(r, DONE_FAILED);
    park(r)
}

/// Runs step `s` with `f`, or fails with what it reports.
fn run_step(r: *mut PlanResults, p: &RestorePlan, s: u32, f: fn(&RestorePlan) -> Result<(), mem::Failed>) {
    step(r, p, s);
    if let Err((i, e)) = f(p) {
        fail(r, s, i, e)
    }
}

/// Runs the whole plan in the leader; never returns. (Steps are called one
/// by one, not from a table: a table of function addresses would need
/// relocations, which a blob must not have.)
pub fn run(p: &RestorePlan) -> ! {
    let r = p.results as *mut PlanResults;
    step(r, p, STEP_START);
    run_step(r, p, STEP_PARK, mem::park_specials);
    run_step(r, p, STEP_SHMEM, mem::create_shmem);
    run_step(r, p, STEP_MAP, mem::map_vmas);
    run_step(r, p, STEP_FILL, mem::fill_runs);
    run_step(r, p, STEP_PROTECT, mem::protect_vmas);
    run_step(r, p, STEP_PLACE, mem::place_specials);
    run_step(r, p, STEP_MM, state::set_mm);
    run_step(r, p, STEP_SIGACTIONS, state::sigactions);
    run_step(r, p, STEP_ITIMERS, state::itimers);
    run_step(r, p, STEP_TIMERS, state::timers);
    run_step(r, p, STEP_RLIMITS, state::rlimits);
    run_step(r, p, STEP_MISC, state::misc);
    let leader = &threads::threads(p)[0];
    step(r, p, STEP_THREAD);
    if let Err((i, e)) = threads::own_state(leader, 0) {
        fail(r, STEP_THREAD, i, e)
    }
    step(r, p, STEP_SIGNALS);
    let queued = threads::queue_signals(p.shared_sigs, p.nr_shared_sigs, 0)
        .and_then(|_| threads::queue_signals(leader.sigs, leader.nr_sigs, leader.tid));
    if let Err((i, e)) = queued {
        fail(r, STEP_SIGNALS, i, e)
    }
    step(r, p, STEP_CLONE);
    if let Err((i, e)) = threads::clone_threads(p) {
        fail(r, STEP_CLONE, i, e)
    }
    // After the threads: creating them may need crest's ns_last_pid fd.
    step(r, p, STEP_CLOSE);
    if let Err((i, e)) = state::close_fds(p) {
        fail(r, STEP_CLOSE, i, e)
    }
    step(r, p, STEP_CREDS);
    if let Err(e) = threads::creds(&p.creds, p.no_new_privs) {
        fail(r, STEP_CREDS, 0, e)
    }
    // A change of ids resets the dumpable flag and the parent-death signal:
    // set them again, now that every thread has its credentials.
    if let Err((i, e)) = state::after_creds(p) {
        fail(r, STEP_CREDS, i, e)
    }
    finish(r, DONE_OK);
    park(r)
}
