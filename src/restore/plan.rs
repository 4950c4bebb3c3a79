//! Builds the restorer's plan (blob::plan) from the images: the VMAs and
//! runs of mem.rs, the threads with their stacks and pending signals, the
//! process's signal actions, timers, limits, mm layout and credentials,
//! all written into the restorer mapping (layout.rs) before the task
//! exists.

use super::images::Images;
use super::layout::Layout;
use super::mem::{self, HelperFds};
use crate::blob::plan::*;
use crate::blob::proto::{ItimersReply, Itimerval, KSigaction, NSIG, StackT, Timespec, Timeval};
use crate::error::Result;
use crate::image::creds::Creds;
use crate::image::signals::Siginfo;
use crate::image::timers::TimerSpec;

/// `SIGKILL` and `SIGSTOP` cannot be queued back: a stopped task is
/// restored stopped instead.
const UNQUEUEABLE: [i32; 2] = [9, 19];

/// Where the pid of the next task of this pid namespace is set.
pub const NS_LAST_PID: &str = "/proc/sys/kernel/ns_last_pid";

/// A built plan: its address in the mapping and where results come.
pub struct Built {
    /// The restorer mapping.
    pub layout: Layout,
    /// Files crest opened for the task.
    pub fds: HelperFds,
    /// Address of the [`RestorePlan`].
    pub plan: u64,
    /// Address of its [`PlanResults`].
    pub results: u64,
}

/// Bytes the mapping needs beyond the blob: the plan, tables, stacks, park
/// slots, with room to spare for alignment.
fn size_needed(
    img: &Images,
    vmas: usize,
    runs: usize,
    specials: &[PlanSpecial],
    shared_shmem: &[(u64, i32)],
) -> usize {
    let threads = img.task.threads.len();
    let sigs: usize = img
        .task
        .threads
        .iter()
        .map(|t| t.pending.len())
        .sum::<usize>()
        + img.task.shared_signals.pending.len();
    let page = crate::sys::mm::page_size();
    size_of::<RestorePlan>()
        + size_of::<PlanResults>()
        + vmas * size_of::<PlanVma>()
        + runs * size_of::<PlanRun>()
        + threads * (size_of::<PlanThread>() + THREAD_STACK_SIZE as usize + page + 16)
        + sigs * SIGINFO_SIZE
        + img.task.posix_timers.len() * size_of::<PlanTimer>()
        + img.task.creds.groups.len() * 4
        + img.mm.mm.auxv.len() * 16
        + specials.iter().map(|s| s.len as usize).sum::<usize>()
        + shmem_bytes(img, shared_shmem)
        + 16 * page
}

/// Room for the shared memory objects the restorer creates (each whole,
/// as [`mem::plan_shmem`] sizes it, with its runs); those crest created
/// need only their fd slot.
fn shmem_bytes(img: &Images, shared_shmem: &[(u64, i32)]) -> usize {
    let page = img.pages.page_size;
    img.shmem
        .iter()
        .filter(|(id, _)| !shared_shmem.iter().any(|(s, _)| s == id))
        .map(|(id, idx)| {
            let mapped = mem::mapped_ends(&img.mm.vmas, *id, idx.page_size);
            mem::object_size(mapped, idx) as usize
                + idx.runs.len() * size_of::<PlanRun>()
                + 2 * page as usize
                + size_of::<PlanShmem>()
        })
        .sum::<usize>()
        + shared_shmem.len() * (size_of::<PlanShmem>() + 8)
}

/// Everything the restorer needs, in a fresh mapping.
/// `ns_last_pid`: the open /proc/sys/kernel/ns_last_pid when threads must
/// get their ids through it (no clone3 set_tid).
/// `shared_shmem`: the shared memory objects crest created for several
/// processes (shmid, fd every task inherits). `objects`: the memfds and
/// deleted files crest made for several processes.
pub fn build(
    img: &Images,
    helper_base: i32,
    fault_step: u32,
    ns_last_pid: Option<&std::fs::File>,
    shared_shmem: &[(u64, i32)],
    objects: &super::files::TreeObjects,
) -> Result<Built> {
    let blob = crate::blob::restorer();
    let mut fds = HelperFds::new(helper_base);
    super::files::create_memfds(img, &mut fds, objects)?;
    super::files::create_ghosts(img, &mut fds, objects)?;
    let shmids: Vec<u64> = img.shmem.iter().map(|(id, _)| *id).collect();
    let vmas = mem::plan_vmas(&img.mm.vmas, &img.pages, &shmids, &mut fds)?;
    let mut specials = mem::plan_specials(&img.mm.vmas)?;
    let pages_file = img.dir.open_file(&img.pages.head.pages_file)?;
    let pages_fd = fds.keep(pages_file.into(), b"", false)?;
    let mut chain = vec![&img.pages];
    let mut level_fds = vec![pages_fd];
    for (dir, idx) in &img.parents {
        let file = dir.open_file(&idx.head.pages_file)?;
        level_fds.push(fds.keep(file.into(), b"", false)?);
        chain.push(idx);
    }
    let runs = mem::plan_runs(&chain, &level_fds, &vmas)?;
    let exe_fd = exe_fd(img, &mut fds)?;
    let size = blob.map_size(crate::sys::mm::page_size())
        + size_needed(img, vmas.len(), runs.len(), &specials, shared_shmem);
    let mut l = Layout::new(&blob, size, &img.mm.vmas)?;
    for s in &mut specials {
        s.park = l.alloc_pages(s.len as usize)?;
    }
    let shmem = mem::plan_shmem(
        &mut l,
        &img.mm.vmas,
        &img.shmem,
        &mut fds,
        &img.dir,
        shared_shmem,
    )?;
    let results = l.alloc(size_of::<PlanResults>(), 64)?;
    l.put(results, &PlanResults::default());
    let plan_addr = l.alloc(size_of::<RestorePlan>(), 64)?;
    let mut plan = empty_plan(results);
    plan_threads(img, &mut l, &mut plan, plan_addr)?;
    plan.vmas = l.put_slice(&vmas)?;
    plan.nr_vmas = vmas.len() as u64;
    plan.runs = l.put_slice(&runs)?;
    plan.nr_runs = runs.len() as u64;
    plan.pages_fd = pages_fd;
    plan.shmem = l.put_slice(&shmem)?;
    plan.nr_shmem = shmem.len() as u64;
    plan.nr_special = specials.len() as u32;
    plan.special[..specials.len()].copy_from_slice(&specials);
    plan.close_from = fds.base();
    let (addr, n) = put_sigs(&mut l, &img.task.shared_signals.pending)?;
    (plan.shared_sigs, plan.nr_shared_sigs) = (addr, n);
    plan_process_state(img, &mut l, &mut plan)?;
    plan_mm(img, &mut l, &mut plan, exe_fd)?;
    plan.creds = plan_creds(&img.task.creds, &mut l)?;
    plan.no_new_privs = u32::from(img.task.creds.no_new_privs);
    plan.fault_step = fault_step;
    if let Some(f) = ns_last_pid {
        let dup = f
            .try_clone()
            .map_err(|e| crate::Error::io("dup", NS_LAST_PID, e))?;
        plan.ns_last_pid_fd = fds.keep(dup.into(), b"", true)?;
    }
    l.put(plan_addr, &plan);
    Ok(Built {
        layout: l,
        fds,
        plan: plan_addr,
        results,
    })
}

fn empty_plan(results: u64) -> RestorePlan {
    RestorePlan {
        results,
        vmas: 0,
        nr_vmas: 0,
        runs: 0,
        nr_runs: 0,
        threads: 0,
        nr_threads: 0,
        timers: 0,
        nr_timers: 0,
        shmem: 0,
        nr_shmem: 0,
        shared_sigs: 0,
        nr_shared_sigs: 0,
        pages_fd: -1,
        nr_special: 0,
        special: [PlanSpecial::default(); MAX_SPECIAL],
        close_from: i32::MAX,
        timer_ids_by_prctl: 0,
        sigactions: [KSigaction::default(); NSIG],
        itimers: ItimersReply::default(),
        rlimits: [PlanRlimit::default(); 16],
        nr_rlimits: 0,
        personality: 0,
        umask: 0,
        dumpable: 0,
        pdeath_signal: 0,
        child_subreaper: 0,
        thp_disable: 0,
        no_new_privs: 0,
        mm: MmMap::default(),
        creds: PlanCreds::default(),
        fault_step: NO_FAULT,
        ns_last_pid_fd: -1,
    }
}

/// Copies the queueable siginfos; returns their address and count.
fn put_sigs(l: &mut Layout, sigs: &[Siginfo]) -> Result<(u64, u64)> {
    let keep: Vec<[u8; SIGINFO_SIZE]> = sigs
        .iter()
        .filter(|s| !UNQUEUEABLE.contains(&s.signo()))
        .map(|s| s.0)
        .collect();
    Ok((l.put_slice(&keep)?, keep.len() as u64))
}

fn plan_threads(
    img: &Images,
    l: &mut Layout,
    plan: &mut RestorePlan,
    plan_addr: u64,
) -> Result<()> {
    let mut list = Vec::new();
    for t in &img.task.threads {
        let stack = l.alloc_pages(THREAD_STACK_SIZE as usize)?;
        let ready = l.alloc(4, 4)?;
        l.put(ready, &0u32);
        let (sigs, nr_sigs) = put_sigs(l, &t.pending)?;
        let mut comm = [0u8; 16];
        let n = t.comm.len().min(15);
        comm[..n].copy_from_slice(&t.comm[..n]);
        list.push(PlanThread {
            tid: t.tid as i32,
            pad: 0,
            clear_tid: t.clear_tid,
            altstack: StackT {
                sp: t.altstack.sp,
                flags: t.altstack.flags,
                pad: 0,
                size: t.altstack.size,
            },
            rseq_addr: t.rseq.addr,
            rseq_len: t.rseq.len,
            rseq_sig: t.rseq.sig,
            stack_top: stack + THREAD_STACK_SIZE,
            sigs,
            nr_sigs,
            comm,
            plan: plan_addr,
            ready,
        });
    }
    plan.threads = l.put_slice(&list)?;
    plan.nr_threads = list.len() as u64;
    Ok(())
}

fn timeval(ns: u64) -> Timeval {
    Timeval {
        sec: (ns / 1_000_000_000) as i64,
        usec: ((ns % 1_000_000_000) / 1000) as i64,
    }
}

fn timespec(ns: u64) -> Timespec {
    Timespec {
        sec: (ns / 1_000_000_000) as i64,
        nsec: (ns % 1_000_000_000) as i64,
    }
}

/// An interval timer as setitimer takes it. A periodic ITIMER_REAL that
/// had just fired reads 0 left until its SIGALRM is taken (the kernel
/// re-arms it then), and 0 would disarm it for good: it gets 1 µs instead,
/// so it fires at once and its SIGALRM merges with the one restored as
/// pending.
fn itimerval(t: &TimerSpec) -> Itimerval {
    let value_ns = if t.value_ns == 0 && t.interval_ns != 0 {
        1000
    } else {
        t.value_ns
    };
    Itimerval {
        interval: timeval(t.interval_ns),
        value: timeval(value_ns),
    }
}

/// Signal actions, timers, limits, personality, umask, prctl values.
fn plan_process_state(img: &Images, l: &mut Layout, plan: &mut RestorePlan) -> Result<()> {
    let t = &img.task;
    for a in &t.sigactions.actions {
        if let Some(slot) = (a.signo as usize)
            .checked_sub(1)
            .and_then(|i| plan.sigactions.get_mut(i))
        {
            *slot = KSigaction {
                handler: a.handler,
                flags: a.flags,
                restorer: a.restorer,
                mask: a.mask,
            };
        }
    }
    plan.itimers.timers = [
        itimerval(&t.itimers.real),
        itimerval(&t.itimers.virt),
        itimerval(&t.itimers.prof),
    ];
    let mut timers: Vec<PlanTimer> = t
        .posix_timers
        .iter()
        .map(|p| PlanTimer {
            id: p.id,
            clock: p.clock_id,
            notify: p.sigev_notify,
            signo: p.sigev_signo,
            value: p.sigev_value,
            tid: p.notify_tid as i32,
            pad: 0,
            interval: timespec(p.spec.interval_ns),
            left: timespec(p.spec.value_ns),
        })
        .collect();
    timers.sort_by_key(|p| p.id);
    plan.timers = l.put_slice(&timers)?;
    plan.nr_timers = timers.len() as u64;
    plan.timer_ids_by_prctl = u32::from(timer_ids_by_prctl());
    let n = t.rlimits.limits.len().min(plan.rlimits.len());
    for (slot, r) in plan.rlimits.iter_mut().zip(&t.rlimits.limits) {
        *slot = PlanRlimit {
            cur: r.cur,
            max: r.max,
        };
    }
    plan.nr_rlimits = n as u32;
    let m = &t.misc;
    plan.personality = m.personality;
    plan.umask = m.umask;
    plan.dumpable = u32::from(m.dumpable);
    plan.pdeath_signal = m.pdeath_signal;
    plan.child_subreaper = u32::from(m.child_subreaper);
    plan.thp_disable = u32::from(m.thp_disable);
    Ok(())
}

/// Whether timer_create takes the id to use (PR_TIMER_CREATE_RESTORE_IDS,
/// asked with PR_TIMER_CREATE_RESTORE_IDS_GET).
fn timer_ids_by_prctl() -> bool {
    crate::sys::process::prctl(crate::sys::process::PR_TIMER_CREATE_RESTORE_IDS, 2, 0, 0, 0).is_ok()
}

/// The exe for PR_SET_MM_MAP, or -1 to keep the task's (crest's): when
/// the image's exe is crest's own binary the task already has it, and the
/// kernel refuses (EBUSY) to replace an exe by the same file while the
/// restored mappings map it.
fn exe_fd(img: &Images, fds: &mut HelperFds) -> Result<i32> {
    use std::os::unix::fs::MetadataExt;
    let mm = &img.mm.mm;
    if mm.exe.is_empty() {
        return Ok(-1);
    }
    if let Ok(own) = std::fs::metadata("/proc/self/exe")
        && (own.dev(), own.ino()) == (mm.exe_id.dev, mm.exe_id.ino)
    {
        return Ok(-1);
    }
    fds.file(&mm.exe, &mm.exe_id, false, "the executable")
}

fn plan_mm(img: &Images, l: &mut Layout, plan: &mut RestorePlan, exe_fd: i32) -> Result<()> {
    let m = &img.mm.mm;
    let flat: Vec<u64> = m.auxv.iter().flat_map(|&(k, v)| [k, v]).collect();
    plan.mm = MmMap {
        fields: [
            m.code.0,
            m.code.1,
            m.data.0,
            m.data.1,
            m.brk.0,
            m.brk.1,
            m.start_stack,
            m.arg.0,
            m.arg.1,
            m.env.0,
            m.env.1,
        ],
        auxv: l.put_slice(&flat)?,
        auxv_size: (flat.len() * 8) as u32,
        exe_fd: exe_fd as u32,
    };
    Ok(())
}

/// The credentials; marked unchanged when they are crest's own, which
/// spares the restorer the whole sequence in the common case.
fn plan_creds(c: &Creds, l: &mut Layout) -> Result<PlanCreds> {
    let own_pid = crate::sys::process::getpid() as u32;
    let own = crate::dump::task::collect_creds(&crate::dump::task::status(own_pid)?);
    let own_bits = crate::sys::process::prctl(27, 0, 0, 0, 0).unwrap_or(0) as u32;
    let same = own.uids == c.uids
        && own.gids == c.gids
        && own.groups == c.groups
        && (own.cap_effective, own.cap_permitted, own.cap_inheritable)
            == (c.cap_effective, c.cap_permitted, c.cap_inheritable)
        && (own.cap_bounding, own.cap_ambient) == (c.cap_bounding, c.cap_ambient)
        && own_bits == c.securebits;
    let cap_last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    Ok(PlanCreds {
        uids: c.uids,
        gids: c.gids,
        groups: l.put_slice(&c.groups)?,
        nr_groups: c.groups.len() as u32,
        securebits: c.securebits,
        cap_effective: c.cap_effective,
        cap_permitted: c.cap_permitted,
        cap_inheritable: c.cap_inheritable,
        cap_bounding: c.cap_bounding,
        cap_ambient: c.cap_ambient,
        cap_last,
        unchanged: u32::from(same),
    })
}

/// Where the restorer went and where crest's fds start (for the log).
pub fn describe(b: &Built) -> String {
    format!(
        "restorer at {:#x}+{:#x}, helper fds from {}",
        b.layout.base(),
        b.layout.len(),
        b.fds.base()
    )
}
