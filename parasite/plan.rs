//! The restore plan: what crest tells the restorer blob to build, and where
//! the blob reports how far it got. Compiled into crest (`blob::plan`) and
//! the restorer (`crate::plan`) through `#[path]`, like proto.rs.
//!
//! Unlike the parasite's args, the plan is read at the same address on both
//! sides: crest writes it into the restorer's memfd mapping and then forks
//! the task that runs the blob, which inherits the mapping where it was. So
//! the variable-length tables (VMAs, page runs, threads, signals...) follow
//! [`RestorePlan`] in that mapping and the plan points at them with plain
//! addresses (`u64`), and so does the blob.
//!
//! ```text
//!   restorer mapping
//!   +------+------+-------+-------------+--------+------+-------+---------+------+
//!   | blob | args | stack | RestorePlan | vmas.. | runs | tids  | siginfo | park |
//!   +------+------+-------+-------------+--------+------+-------+---------+------+
//!                   RestorerArgs::plan ^   (tables at addresses the plan holds)
//! ```
//!
//! The results ([`PlanResults`]) are written by the blob and read by crest
//! through its own view of the shared mapping; `done` and each thread's
//! `ready` are futex words (shared, not private: two processes wait on
//! `done`). The blob uses no atomic read-modify-write (each word has one
//! writer), only volatile accesses and fences, so it needs no atomics
//! runtime on any CPU.

use super::proto::{ItimersReply, KSigaction, NSIG, StackT, Timespec};

/// [`RestorePlan::done`] while the restorer works.
pub const DONE_PENDING: u32 = 0;
/// [`RestorePlan::done`]: every step succeeded, every thread is parked.
pub const DONE_OK: u32 = 1;
/// [`RestorePlan::done`]: `step` failed with `err` at item `index`.
pub const DONE_FAILED: u32 = 2;

/// Steps, in the order the restorer runs them (named in crest's errors).
pub const STEP_START: u32 = 0;
/// Moving vdso/vvar out of the way.
pub const STEP_PARK: u32 = 1;
/// Creating and filling the shared memory objects (`index`: the object).
pub const STEP_SHMEM: u32 = 17;
/// Mapping the VMAs (`index`: the VMA).
pub const STEP_MAP: u32 = 2;
/// Reading pages into place (`index`: the run).
pub const STEP_FILL: u32 = 3;
/// Final protections and madvise (`index`: the VMA).
pub const STEP_PROTECT: u32 = 4;
/// vdso/vvar to their dumped addresses (`index`: the mapping).
pub const STEP_PLACE: u32 = 5;
/// PR_SET_MM_MAP.
pub const STEP_MM: u32 = 6;
/// rt_sigaction (`index`: the signal).
pub const STEP_SIGACTIONS: u32 = 7;
/// setitimer (`index`: ITIMER_*).
pub const STEP_ITIMERS: u32 = 8;
/// POSIX timers (`index`: the timer).
pub const STEP_TIMERS: u32 = 9;
/// prlimit64 (`index`: the resource).
pub const STEP_RLIMITS: u32 = 10;
/// personality, umask, prctl values.
pub const STEP_MISC: u32 = 11;
/// Closing crest's helper fds.
pub const STEP_CLOSE: u32 = 12;
/// Creating a thread (`index`: the thread).
pub const STEP_CLONE: u32 = 13;
/// A thread's own state: tid address, sigaltstack, rseq (`index`: the thread).
pub const STEP_THREAD: u32 = 14;
/// Queueing pending signals (`index`: the signal's place in its list).
pub const STEP_SIGNALS: u32 = 15;
/// Credentials (`index`: the thread).
pub const STEP_CREDS: u32 = 16;

/// How many special mappings (vdso, vvar, vvar_vclock) the plan moves.
pub const MAX_SPECIAL: usize = 4;

/// One mapping to create.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanVma {
    /// First byte.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// File offset in bytes.
    pub offset: u64,
    /// Final PROT_* bits.
    pub prot: u32,
    /// mmap flags (MAP_PRIVATE/MAP_SHARED, MAP_ANONYMOUS, MAP_GROWSDOWN...),
    /// MAP_FIXED added by the blob.
    pub flags: u32,
    /// The file's fd in the task, -1 for anonymous memory.
    pub fd: i32,
    /// [`VMA_FILL`] when runs write into it (mapped writable first).
    pub fill: u32,
    /// madvise advice values to apply, one per byte (0 = none), low first.
    pub advice: u64,
}

/// [`PlanVma::fill`]: the VMA receives pages.
pub const VMA_FILL: u32 = 1;
/// [`PlanVma::fill`]: shared anonymous memory; `fd` is the index of its
/// [`PlanShmem`], whose fd the restorer opened.
pub const VMA_SHMEM: u32 = 2;

/// A shared anonymous memory object: created at `tmp` (inside the
/// restorer mapping) with MAP_SHARED|MAP_ANONYMOUS, filled from its own
/// pages file, then reopened through /proc/self/map_files so every VMA of
/// it maps the same object (and shows as `/dev/zero (deleted)`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanShmem {
    /// Where the object is first mapped, whole.
    pub tmp: u64,
    /// Its size in bytes.
    pub size: u64,
    /// Its runs: `nr_runs` [`PlanRun`]s, addresses already at `tmp`.
    pub runs: u64,
    /// How many.
    pub nr_runs: u64,
    /// Its pages file's fd.
    pub pages_fd: i32,
    /// The object's fd when crest created it already (an object several
    /// processes share, inherited by all of them): the restorer then only
    /// maps it. -1 when the restorer creates it.
    pub inherited_fd: i32,
    /// A u32 where the restorer leaves the object's fd.
    pub fd_slot: u64,
    /// `/proc/self/map_files/TMP-END`, NUL-terminated.
    pub path: [u8; 64],
}

/// A run of pages to put in place.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanRun {
    /// First byte.
    pub addr: u64,
    /// Length in bytes.
    pub len: u64,
    /// Offset in the pages file, or [`RUN_ZERO`] for pages to clear.
    pub file_off: u64,
    /// The pages file's fd in the task: each image of a chain of parents
    /// (incremental dumps) has its own.
    pub fd: i32,
    /// Padding.
    pub pad: u32,
}

/// [`PlanRun::file_off`] of a run of zero pages over file contents.
pub const RUN_ZERO: u64 = u64::MAX;

/// A special mapping the kernel made (vdso, vvar...): where it is in the new
/// task, where it waits while the VMAs are mapped, where it goes.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanSpecial {
    /// Its address now.
    pub cur: u64,
    /// Its length.
    pub len: u64,
    /// A free place inside the restorer mapping.
    pub park: u64,
    /// Its address in the dumped process; 0: it had none, unmap it.
    pub dst: u64,
}

/// One thread of the task, the leader first.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanThread {
    /// Its tid.
    pub tid: i32,
    /// Padding.
    pub pad: i32,
    /// set_tid_address value.
    pub clear_tid: u64,
    /// Its sigaltstack.
    pub altstack: StackT,
    /// Registered rseq area, 0 for none.
    pub rseq_addr: u64,
    /// rseq length.
    pub rseq_len: u32,
    /// rseq signature.
    pub rseq_sig: u32,
    /// Top of the restorer stack it runs on (not for the leader).
    pub stack_top: u64,
    /// Its pending signals: `nr_sigs` siginfos of [`SIGINFO_SIZE`] bytes.
    pub sigs: u64,
    /// How many.
    pub nr_sigs: u64,
    /// Its name (PR_SET_NAME), NUL-padded.
    pub comm: [u8; 16],
    /// The plan (a new thread gets only this entry's address).
    pub plan: u64,
    /// Its futex word in the mapping, set to 1 when the thread is done.
    pub ready: u64,
}

/// Bytes of a siginfo.
pub const SIGINFO_SIZE: usize = 128;

/// Credentials, set by every thread for itself.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanCreds {
    /// real, effective, saved, fs uid.
    pub uids: [u32; 4],
    /// real, effective, saved, fs gid.
    pub gids: [u32; 4],
    /// Supplementary groups: `nr_groups` u32s.
    pub groups: u64,
    /// How many.
    pub nr_groups: u32,
    /// PR_SET_SECUREBITS value.
    pub securebits: u32,
    /// Capability sets.
    pub cap_effective: u64,
    /// Permitted.
    pub cap_permitted: u64,
    /// Inheritable.
    pub cap_inheritable: u64,
    /// Bounding.
    pub cap_bounding: u64,
    /// Ambient.
    pub cap_ambient: u64,
    /// Highest capability number the kernel knows (CAP_LAST_CAP).
    pub cap_last: u32,
    /// 1: crest's own creds already match; skip the whole step.
    pub unchanged: u32,
}

/// A POSIX timer to recreate.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanTimer {
    /// Its id.
    pub id: i32,
    /// Its clock.
    pub clock: i32,
    /// sigev_notify.
    pub notify: i32,
    /// sigev_signo.
    pub signo: i32,
    /// sigev_value.
    pub value: u64,
    /// SIGEV_THREAD_ID target.
    pub tid: i32,
    /// Padding.
    pub pad: i32,
    /// Period.
    pub interval: Timespec,
    /// Time left (relative), zero when disarmed.
    pub left: Timespec,
}

/// A resource limit.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanRlimit {
    /// Soft limit.
    pub cur: u64,
    /// Hard limit.
    pub max: u64,
}

/// The kernel's `struct prctl_mm_map`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MmMap {
    /// start_code, end_code, start_data, end_data, start_brk, brk,
    /// start_stack, arg_start, arg_end, env_start, env_end.
    pub fields: [u64; 11],
    /// Pointer to the saved auxv.
    pub auxv: u64,
    /// Its size in bytes.
    pub auxv_size: u32,
    /// The exe file's fd in the task.
    pub exe_fd: u32,
}

/// What the blob reports while it works; crest reads it through its view of
/// the mapping.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanResults {
    /// Futex word: [`DONE_PENDING`], [`DONE_OK`] or [`DONE_FAILED`].
    pub done: u32,
    /// The step running, or the one that failed.
    pub step: u32,
    /// The failed step's negative errno.
    pub err: i32,
    /// Which item of the step failed.
    pub index: u32,
    /// Futex word nobody changes: parked threads wait on it.
    pub park: u32,
    /// Padding.
    pub pad: u32,
}

/// Everything the restorer does after it cleared crest away. See the
/// module doc for where it lives.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RestorePlan {
    /// Where the blob reports: a [`PlanResults`] (apart, so the plan
    /// itself is never written after crest built it).
    pub results: u64,
    /// VMAs: `nr_vmas` [`PlanVma`]s, sorted.
    pub vmas: u64,
    /// How many.
    pub nr_vmas: u64,
    /// Page runs: `nr_runs` [`PlanRun`]s.
    pub runs: u64,
    /// How many.
    pub nr_runs: u64,
    /// Threads: `nr_threads` [`PlanThread`]s, the leader first.
    pub threads: u64,
    /// How many.
    pub nr_threads: u64,
    /// POSIX timers: `nr_timers` [`PlanTimer`]s, by increasing id.
    pub timers: u64,
    /// How many.
    pub nr_timers: u64,
    /// Shared memory objects: `nr_shmem` [`PlanShmem`]s.
    pub shmem: u64,
    /// How many.
    pub nr_shmem: u64,
    /// Process-wide pending signals: siginfos.
    pub shared_sigs: u64,
    /// How many.
    pub nr_shared_sigs: u64,
    /// The pages file's fd in the task.
    pub pages_fd: i32,
    /// How many entries of `special` are used.
    pub nr_special: u32,
    /// vdso, vvar...
    pub special: [PlanSpecial; MAX_SPECIAL],
    /// Every fd from this number up is crest's (pages file, mapped files,
    /// exe): closed before reporting.
    pub close_from: i32,
    /// 1: timer_create takes the id to use (PR_TIMER_CREATE_RESTORE_IDS).
    pub timer_ids_by_prctl: u32,
    /// Every signal's action (`actions[signo - 1]`).
    pub sigactions: [KSigaction; NSIG],
    /// ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF.
    pub itimers: ItimersReply,
    /// RLIMIT_* 0..nr_rlimits.
    pub rlimits: [PlanRlimit; 16],
    /// How many.
    pub nr_rlimits: u32,
    /// personality(2).
    pub personality: u32,
    /// umask(2).
    pub umask: u32,
    /// PR_SET_DUMPABLE.
    pub dumpable: u32,
    /// PR_SET_PDEATHSIG.
    pub pdeath_signal: u32,
    /// PR_SET_CHILD_SUBREAPER.
    pub child_subreaper: u32,
    /// PR_SET_THP_DISABLE.
    pub thp_disable: u32,
    /// PR_SET_NO_NEW_PRIVS.
    pub no_new_privs: u32,
    /// PR_SET_MM_MAP.
    pub mm: MmMap,
    /// Credentials.
    pub creds: PlanCreds,
    /// Fault injection for tests: the step (`STEP_*`) to fail on purpose
    /// with ECANCELED, or [`NO_FAULT`].
    pub fault_step: u32,
    /// -1: threads get their ids from clone3's set_tid. Otherwise the fd of
    /// /proc/sys/kernel/ns_last_pid: on kernels without set_tid (before
    /// 5.5) the restorer writes `tid - 1` there and creates the thread with
    /// clone(2), which then takes the next id.
    pub ns_last_pid_fd: i32,
}

/// [`RestorePlan::fault_step`] when no fault is injected.
pub const NO_FAULT: u32 = u32::MAX;
/// The errno an injected fault reports (ECANCELED, the same on x86_64 and
/// aarch64).
pub const FAULT_ERRNO: isize = 125;

const _: () = {
    assert!(core::mem::size_of::<PlanVma>() == 48);
    assert!(core::mem::size_of::<PlanRun>() == 32);
    assert!(core::mem::size_of::<PlanThread>() == 112);
    assert!(core::mem::size_of::<MmMap>() == 104);
    assert!(core::mem::size_of::<PlanTimer>() == 64);
    assert!(core::mem::size_of::<RestorePlan>() % 8 == 0);
};

/// Bytes of each thread's restorer stack (clone3's stack, in the mapping):
/// enough for the few frames a thread's own steps need.
pub const THREAD_STACK_SIZE: u64 = 16384;
