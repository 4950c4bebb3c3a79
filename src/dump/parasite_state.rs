//! What only the dumped task can tell, asked through the parasite's
//! CMD_DUMP_* commands and turned into the image's records: signal actions
//! (rt_sigaction), interval timers (getitimer), POSIX timer values
//! (timer_gettime, timer_getoverrun), umask, personality, the prctl flags
//! (PR_GET_DUMPABLE, _SECUREBITS, _PDEATHSIG, _CHILD_SUBREAPER,
//! _THP_DISABLE, _NO_NEW_PRIVS), the exact brk (brk(0)), and per thread the
//! sigaltstack and the clear_child_tid address (PR_GET_TID_ADDRESS).
//!
//! /proc shows none of these exactly (or at all), which is why
//! [`crate::dump::collect_process`] leaves them at their defaults;
//! [`collect_parasite_state`] gathers them while the task is seized and
//! infected, and [`apply_parasite_state`] patches them into the
//! [`ProcessState`].

use crate::blob::proto::{Itimerval, KSigaction, MiscReply, PosixTimerValue, ThreadReply};
use crate::dump::ProcessState;
use crate::error::{Error, Result};
use crate::image::sigactions::{Sigaction, Sigactions};
use crate::image::thread::{AltStack, ThreadCore};
use crate::image::timers::{Itimers, TimerSpec};
use crate::infect::{Parasite, Seized};
use crate::sys::Pid;
use crate::{debug, info};

/// One thread's state seen from inside it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThreadState {
    /// The thread.
    pub tid: u32,
    /// sigaltstack(2).
    pub altstack: AltStack,
    /// The clear_child_tid address (set_tid_address, CLONE_CHILD_CLEARTID).
    pub clear_tid: u64,
}

impl ThreadState {
    /// Copies the thread's sigaltstack and clear_tid into its core.
    pub fn apply_to(&self, core: &mut ThreadCore) {
        core.altstack = self.altstack;
        core.clear_tid = self.clear_tid;
    }
}

/// A POSIX timer's value at the dump, by the kernel's timer id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PosixTimerState {
    /// The timer id (as in /proc/PID/timers).
    pub id: i32,
    /// Period and time left until the next expiry.
    pub spec: TimerSpec,
    /// timer_getoverrun.
    pub overrun: i32,
}

/// Per-process settings the task-misc and creds records need.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MiscState {
    /// personality(2) flags.
    pub personality: u32,
    /// The file creation mask.
    pub umask: u32,
    /// PR_GET_DUMPABLE (0, 1 or 2).
    pub dumpable: u8,
    /// PR_GET_THP_DISABLE.
    pub thp_disable: bool,
    /// PR_GET_PDEATHSIG.
    pub pdeath_signal: u32,
    /// PR_GET_CHILD_SUBREAPER.
    pub child_subreaper: bool,
    /// PR_GET_SECUREBITS.
    pub securebits: u32,
    /// PR_GET_NO_NEW_PRIVS.
    pub no_new_privs: bool,
}

/// Everything the parasite's dump commands collected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParasiteState {
    /// The sigactions record.
    pub sigactions: Sigactions,
    /// The itimers record.
    pub itimers: Itimers,
    /// The values of the timers asked for, in the order asked.
    pub posix_timers: Vec<PosixTimerState>,
    /// umask, personality and the prctl flags.
    pub misc: MiscState,
    /// brk(0): the exact program break.
    pub brk: u64,
    /// One per seized thread, the leader first.
    pub threads: Vec<ThreadState>,
}

/// Runs every CMD_DUMP_* command: the per-process ones in the leader, the
/// per-thread one in each seized thread. `timer_ids` are the POSIX timers
/// of /proc/PID/timers (`ProcessState::task.posix_timers`).
pub fn collect_parasite_state(
    parasite: &mut Parasite,
    seized: &Seized,
    timer_ids: &[i32],
) -> Result<ParasiteState> {
    let pid = seized.pid();
    let sigactions = to_sigactions(&parasite.dump_sigactions()?.actions);
    let it = parasite.dump_itimers()?.timers;
    let itimers = Itimers {
        real: itimer_spec(&it[0]),
        virt: itimer_spec(&it[1]),
        prof: itimer_spec(&it[2]),
    };
    let posix_timers = parasite
        .dump_posix_timers(timer_ids)?
        .iter()
        .map(posix_timer_state)
        .collect();
    let m = parasite.dump_misc()?;
    let mut threads = Vec::with_capacity(seized.threads().len());
    for &tid in seized.threads() {
        threads.push(thread_state(parasite.dump_thread(tid)?));
        debug!("pid {pid}: thread {tid}: sigaltstack and clear_tid collected");
    }
    info!(
        "pid {pid}: {} sigaction(s), {} POSIX timer value(s), {} thread(s) collected by the parasite",
        sigactions.actions.len(),
        timer_ids.len(),
        threads.len()
    );
    Ok(ParasiteState {
        sigactions,
        itimers,
        posix_timers,
        misc: misc_state(&m),
        brk: m.brk,
        threads,
    })
}

/// Every signal whose action is not the kernel's initial one (all zero:
/// SIG_DFL, no flags, empty mask). A SIG_DFL action with flags is kept
/// too: SA_NOCLDWAIT on a default SIGCHLD still changes what the kernel
/// does.
fn to_sigactions(actions: &[KSigaction]) -> Sigactions {
    let actions = actions
        .iter()
        .zip(1u32..)
        .filter(|(a, _)| **a != KSigaction::default())
        .map(|(a, signo)| Sigaction {
            signo,
            handler: a.handler,
            flags: a.flags,
            restorer: a.restorer,
            mask: a.mask,
        })
        .collect();
    Sigactions { actions }
}

/// Nanoseconds of seconds + `frac` units of `unit_ns`; the kernel never
/// reports negative times, which read as 0.
fn ns(sec: i64, frac: i64, unit_ns: u64) -> u64 {
    let sec = u64::try_from(sec).unwrap_or(0);
    let frac = u64::try_from(frac).unwrap_or(0);
    sec.saturating_mul(1_000_000_000)
        .saturating_add(frac.saturating_mul(unit_ns))
}

fn itimer_spec(t: &Itimerval) -> TimerSpec {
    TimerSpec {
        interval_ns: ns(t.interval.sec, t.interval.usec, 1_000),
        value_ns: ns(t.value.sec, t.value.usec, 1_000),
    }
}

fn posix_timer_state(t: &PosixTimerValue) -> PosixTimerState {
    PosixTimerState {
        id: t.id,
        spec: TimerSpec {
            interval_ns: ns(t.interval.sec, t.interval.nsec, 1),
            value_ns: ns(t.value.sec, t.value.nsec, 1),
        },
        overrun: t.overrun,
    }
}

fn misc_state(m: &MiscReply) -> MiscState {
    MiscState {
        personality: m.personality,
        umask: m.umask,
        // PR_GET_DUMPABLE answers 0, 1 or 2 (SUID_DUMP_*).
        dumpable: u8::try_from(m.dumpable).unwrap_or(u8::MAX),
        thp_disable: m.thp_disable != 0,
        pdeath_signal: u32::try_from(m.pdeath_signal).unwrap_or(0),
        child_subreaper: m.child_subreaper != 0,
        securebits: m.securebits as u32,
        no_new_privs: m.no_new_privs != 0,
    }
}

fn thread_state(t: ThreadReply) -> ThreadState {
    ThreadState {
        tid: t.tid as u32,
        altstack: AltStack {
            sp: t.altstack.sp,
            flags: t.altstack.flags,
            size: t.altstack.size,
        },
        clear_tid: t.clear_tid,
    }
}

/// Patches `state` with what the parasite collected: sigactions, itimers,
/// the POSIX timers' values (by id), the task-misc and creds fields /proc
/// could not give, the exact brk, and the sigaltstack and clear_tid of
/// every thread core already in `state.task.threads` (a core added later
/// takes them through [`ThreadState::apply_to`]). A timer of `state` that
/// the parasite was not asked about is an error: its value would be lost.
pub fn apply_parasite_state(state: &mut ProcessState, ps: &ParasiteState) -> Result<()> {
    let task = &mut state.task;
    task.sigactions = ps.sigactions.clone();
    task.itimers = ps.itimers;
    for t in &mut task.posix_timers {
        let Some(v) = ps.posix_timers.iter().find(|v| v.id == t.id) else {
            return Err(Error::Target {
                pid: state.process.pid as Pid,
                problem: format!(
                    "POSIX timer {} was not read by the parasite; dump again (it was created during the dump)",
                    t.id
                ),
            });
        };
        t.spec = v.spec;
        t.overrun = v.overrun;
    }
    let (misc, creds) = (&mut task.misc, &mut task.creds);
    misc.personality = ps.misc.personality;
    misc.umask = ps.misc.umask;
    misc.dumpable = ps.misc.dumpable;
    misc.thp_disable = ps.misc.thp_disable;
    misc.pdeath_signal = ps.misc.pdeath_signal;
    misc.child_subreaper = ps.misc.child_subreaper;
    creds.securebits = ps.misc.securebits;
    creds.no_new_privs = ps.misc.no_new_privs;
    state.mm.mm.brk.1 = ps.brk;
    for core in &mut task.threads {
        if let Some(t) = ps.threads.iter().find(|t| t.tid == core.tid) {
            t.apply_to(core);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::proto::{Timespec, Timeval};

    #[test]
    fn times_convert_to_nanoseconds() {
        let t = Itimerval {
            interval: Timeval { sec: 2, usec: 5 },
            value: Timeval { sec: 0, usec: -1 },
        };
        let spec = itimer_spec(&t);
        assert_eq!(spec.interval_ns, 2_000_005_000);
        assert_eq!(spec.value_ns, 0);
        let p = posix_timer_state(&PosixTimerValue {
            id: 3,
            overrun: 7,
            interval: Timespec { sec: 1, nsec: 1 },
            value: Timespec {
                sec: i64::MAX,
                nsec: 0,
            },
        });
        assert_eq!(p.spec.interval_ns, 1_000_000_001);
        assert_eq!(p.spec.value_ns, u64::MAX, "saturates");
        assert_eq!((p.id, p.overrun), (3, 7));
    }

    #[test]
    fn only_non_initial_actions_are_listed() {
        let mut a = [KSigaction::default(); 64];
        a[9] = KSigaction {
            handler: 0x1234,
            flags: 4,
            restorer: 0x99,
            mask: 1,
        };
        a[16].flags = 2; // SIGCHLD (17): SIG_DFL with SA_NOCLDWAIT
        let s = to_sigactions(&a);
        let signos: Vec<u32> = s.actions.iter().map(|a| a.signo).collect();
        assert_eq!(signos, [10, 17]);
        assert_eq!(s.actions[0].handler, 0x1234);
        assert_eq!(s.actions[0].restorer, 0x99);
    }
}
