//! Threads and what each thread sets for itself: its tid (clone3 with
//! set_tid), clear_child_tid, sigaltstack, rseq, its pending signals and
//! its credentials (per thread in the kernel). Then every thread parks on
//! a futex word nobody changes, until crest takes it over with ptrace.
//!
//! All signals stay blocked throughout (crest blocked them before entering
//! the blob, and threads inherit the mask), so the signals queued here
//! wait until crest gives each thread its dumped mask.
//!
//! # Safety
//! Thread stacks and the plan's tables lie in the restorer mapping; each
//! thread writes only its own results through atomics.

use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{Ordering, fence};

use super::calls::{self, Sys};
use super::mem::Failed;
use crate::plan::{PlanCreds, PlanResults, PlanThread, RestorePlan, SIGINFO_SIZE, THREAD_STACK_SIZE};
use crate::syscall::{clone_thread, nr};

const CLONE_VM: u64 = 0x100;
const CLONE_FS: u64 = 0x200;
const CLONE_FILES: u64 = 0x400;
const CLONE_SIGHAND: u64 = 0x800;
const CLONE_THREAD: u64 = 0x10000;
const CLONE_SYSVSEM: u64 = 0x40000;
const SS_DISABLE: i32 = 2;
const PR_SET_NAME: usize = 15;

fn at(i: usize, r: Sys) -> Result<usize, Failed> {
    r.map_err(|e| (i as u32, e))
}

/// The plan's threads, the leader first.
pub fn threads(p: &RestorePlan) -> &'static [PlanThread] {
    // SAFETY: crest wrote nr_threads entries at `threads` in the mapping.
    unsafe { core::slice::from_raw_parts(p.threads as *const PlanThread, p.nr_threads as usize) }
}

/// What the calling thread sets on itself: clear_child_tid, sigaltstack,
/// rseq.
pub fn own_state(t: &PlanThread, i: usize) -> Result<(), Failed> {
    // SAFETY: the kernel only stores the address.
    unsafe { calls::call(nr::SYS_set_tid_address, [t.clear_tid as usize, 0, 0, 0, 0]) }.ok();
    let mut ss = t.altstack;
    if ss.flags & SS_DISABLE != 0 {
        ss = crate::proto::StackT { sp: 0, flags: SS_DISABLE, pad: 0, size: 0 };
    }
    // SAFETY: the kernel reads one stack_t from this frame.
    at(i, unsafe { calls::call(nr::SYS_sigaltstack, [&ss as *const _ as usize, 0, 0, 0, 0]) })?;
    // SAFETY: the kernel reads 16 bytes of name from the plan.
    at(i, unsafe { calls::call(nr::SYS_prctl, [PR_SET_NAME, t.comm.as_ptr() as usize, 0, 0, 0]) })?;
    if t.rseq_addr != 0 {
        let a = [t.rseq_addr as usize, t.rseq_len as usize, 0, t.rseq_sig as usize, 0];
        // SAFETY: the area is in the task's restored memory, as dumped.
        at(i, unsafe { calls::call(nr::SYS_rseq, a) })?;
    }
    Ok(())
}

/// Queues `n` siginfos at `sigs` to the process (`tid` 0) or to one thread.
pub fn queue_signals(sigs: u64, n: u64, tid: i32) -> Result<(), Failed> {
    let pid = crate::rt::getpid() as usize;
    for i in 0..n as usize {
        let info = sigs as usize + i * SIGINFO_SIZE;
        // SAFETY: crest wrote n siginfos at `sigs`; si_signo is the first int.
        let signo = unsafe { *(info as *const i32) } as usize;
        // SAFETY: the kernel reads one siginfo; sending to our own process
        // lets it carry any si_code.
        let r = unsafe {
            if tid == 0 {
                calls::call(nr::SYS_rt_sigqueueinfo, [pid, signo, info, 0, 0])
            } else {
                calls::call(nr::SYS_rt_tgsigqueueinfo, [pid, tid as usize, signo, info, 0])
            }
        };
        at(i, r)?;
    }
    Ok(())
}

/// Writes `last` in decimal to /proc/sys/kernel/ns_last_pid (`fd`), so the
/// next task created gets `last + 1`.
fn set_ns_last_pid(fd: i32, last: i32) -> Result<(), isize> {
    let mut digits = [0u8; 12];
    let mut n = last.max(0) as u32;
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let text = &digits[at..];
    let a = [fd as usize, text.as_ptr() as usize, text.len(), 0, 0];
    // SAFETY: the kernel reads `text` from this frame.
    unsafe { calls::call(nr::SYS_pwrite64, a) }.map(drop)
}

/// The kernel's `struct clone_args` (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Creates every thread but the leader with its tid and waits until each
/// reported ready.
pub fn clone_threads(p: &RestorePlan) -> Result<(), Failed> {
    let list = threads(p);
    for (i, t) in list.iter().enumerate().skip(1) {
        let tid = t.tid;
        let args = CloneArgs {
            flags: CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM,
            pidfd: 0,
            child_tid: 0,
            parent_tid: 0,
            exit_signal: 0,
            stack: t.stack_top - THREAD_STACK_SIZE,
            stack_size: THREAD_STACK_SIZE,
            tls: 0,
            set_tid: &tid as *const i32 as u64,
            set_tid_size: 1,
            cgroup: 0,
        };
        let size = core::mem::size_of::<CloneArgs>();
        let entry = t as *const PlanThread as usize;
        let ret = if p.ns_last_pid_fd < 0 {
            // SAFETY: the stack is this thread's slice of the mapping, unused.
            unsafe { clone_thread(nr::SYS_clone3, &args as *const CloneArgs as usize, size, thread_main, entry) }
        } else {
            set_ns_last_pid(p.ns_last_pid_fd, tid - 1).map_err(|e| (i as u32, e))?;
            // SAFETY: as above; clone(2) takes the flags and the stack top.
            unsafe { clone_thread(nr::SYS_clone, args.flags as usize, t.stack_top as usize, thread_main, entry) }
        };
        if ret >= 0 && ret as i32 != tid {
            // Another task took the id between the write and the clone.
            return Err((i as u32, -17));
        }
        at(i, if ret < 0 { Err(ret) } else { Ok(ret as usize) })?;
    }
    for t in &list[1..] {
        let word = t.ready as *const u32;
        // SAFETY: crest allocated each thread's ready word in the mapping;
        // only that thread writes it.
        while unsafe { read_volatile(word) } == 0 {
            calls::futex_wait(word, 0);
        }
    }
    fence(Ordering::SeqCst);
    Ok(())
}

/// A new thread: its own state, signals and credentials, then ready.
extern "C" fn thread_main(entry: usize) -> ! {
    // SAFETY: the leader passes the address of this thread's entry, which
    // crest wrote in the mapping with the plan's address.
    let t = unsafe { &*(entry as *const PlanThread) };
    // SAFETY: as above.
    let p = unsafe { &*(t.plan as *const RestorePlan) };
    let r = p.results as *mut PlanResults;
    let i = (entry - p.threads as usize) / core::mem::size_of::<PlanThread>();
    if p.fault_step == crate::plan::STEP_CREDS {
        // Injected fault: a new thread fails while the leader waits for it.
        super::fail(r, crate::plan::STEP_CREDS, i as u32, -crate::plan::FAULT_ERRNO)
    }
    let steps = own_state(t, i)
        .map_err(|e| (crate::plan::STEP_THREAD, e))
        .and_then(|_| queue_signals(t.sigs, t.nr_sigs, t.tid).map_err(|e| (crate::plan::STEP_SIGNALS, e)))
        .and_then(|_| creds(&p.creds, p.no_new_privs).map_err(|e| (crate::plan::STEP_CREDS, (i as u32, e))));
    match steps {
        Ok(()) => {
            fence(Ordering::SeqCst);
            let word = t.ready as *mut u32;
            // SAFETY: this thread's own ready word (see clone_threads).
            unsafe { write_volatile(word, 1) };
            calls::futex_wake(word);
            super::park(r)
        }
        Err((step, (index, err))) => super::fail(r, step, index, err),
    }
}

const PR_CAPBSET_DROP: usize = 24;
const PR_SET_KEEPCAPS: usize = 8;
const PR_SET_SECUREBITS: usize = 28;
const PR_SET_NO_NEW_PRIVS: usize = 38;
const PR_CAP_AMBIENT: usize = 47;
const PR_CAP_AMBIENT_RAISE: usize = 2;
const SECBIT_KEEP_CAPS: u32 = 1 << 4;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

fn prctl(a: [usize; 5]) -> Sys {
    // SAFETY: prctl calls with plain values.
    unsafe { calls::call(nr::SYS_prctl, a) }
}

/// The calling thread's credentials, in the order the kernel allows: the
/// bounding set and securebits (with KEEP_CAPS, so the uid change keeps the
/// permitted set) while still privileged, then groups and ids, then the
/// capability sets, the ambient set, KEEP_CAPS as dumped, no_new_privs.
pub fn creds(c: &PlanCreds, no_new_privs: u32) -> Result<(), isize> {
    if c.unchanged == 0 {
        for cap in 0..=c.cap_last as usize {
            if c.cap_bounding & (1 << cap) == 0 {
                prctl([PR_CAPBSET_DROP, cap, 0, 0, 0])?;
            }
        }
        prctl([PR_SET_SECUREBITS, (c.securebits | SECBIT_KEEP_CAPS) as usize, 0, 0, 0])?;
        // SAFETY: the kernel reads nr_groups u32s from the plan.
        unsafe { calls::call(nr::SYS_setgroups, [c.nr_groups as usize, c.groups as usize, 0, 0, 0]) }?;
        let (u, g) = (c.uids.map(|v| v as usize), c.gids.map(|v| v as usize));
        // SAFETY: id changes with plain values.
        unsafe {
            calls::call(nr::SYS_setresgid, [g[0], g[1], g[2], 0, 0])?;
            calls::call(nr::SYS_setfsgid, [g[3], 0, 0, 0, 0])?;
            calls::call(nr::SYS_setresuid, [u[0], u[1], u[2], 0, 0])?;
            calls::call(nr::SYS_setfsuid, [u[3], 0, 0, 0, 0])?;
        }
        let head = [LINUX_CAPABILITY_VERSION_3, 0];
        let lo = |v: u64| v as u32;
        let hi = |v: u64| (v >> 32) as u32;
        let data = [
            [lo(c.cap_effective), lo(c.cap_permitted), lo(c.cap_inheritable)],
            [hi(c.cap_effective), hi(c.cap_permitted), hi(c.cap_inheritable)],
        ];
        // SAFETY: the kernel reads the header and two data structs.
        unsafe { calls::call(nr::SYS_capset, [head.as_ptr() as usize, data.as_ptr() as usize, 0, 0, 0]) }?;
        for cap in 0..=c.cap_last as usize {
            if c.cap_ambient & (1 << cap) != 0 {
                prctl([PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0])?;
            }
        }
        if c.securebits & SECBIT_KEEP_CAPS == 0 {
            prctl([PR_SET_KEEPCAPS, 0, 0, 0, 0])?;
        }
    }
    if no_new_privs != 0 {
        prctl([PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0])?;
    }
    Ok(())
}
