//! The blobs' protocol: fixed-layout `#[repr(C)]` structs that crest writes
//! into a blob's args area and the blob answers in place. Compiled into both
//! sides through `#[path]` (crest as `crest::blob::proto`, the blobs as
//! `crate::proto`), so the layout cannot drift; only fixed-width fields,
//! `core` only, no pointers (the two sides see the area at different
//! addresses).
//!
//! A parasite command is one [`CmdHeader`] plus its payload: the layout of
//! the blob's args area, and also of every message on the daemon's socket.
//!
//! ```text
//!   args area = one socket message (PARASITE_ARGS_SIZE bytes, 64-aligned)
//!   0        4        8                                      4096
//!   +--------+--------+---------------------------------------+
//!   | cmd    | ret    | payload: the command's struct         |
//!   | u32    | i32    | (GetPid, ...), PAYLOAD_OFFSET onwards |
//!   +--------+--------+---------------------------------------+
//! ```
//!
//! Two transports carry it:
//!
//! - Trap mode, one command per start: crest writes the header (`ret` =
//!   [`RET_PENDING`]) and payload into an args area, starts the blob, and
//!   waits for its trap; the blob has then replaced `ret` with 0 or a
//!   negative errno and filled the payload with the reply. Used once in the
//!   leader to start the daemon ([`CMD_DAEMON`]) and for every per-thread
//!   command (in the thread area crest maps after the blob, entered at
//!   [`DaemonHello::thread_entry`]).
//! - Daemon mode, in the leader: [`CMD_DAEMON`] makes the blob loop on its
//!   end of a `SOCK_SEQPACKET` socketpair. Each request and each reply is
//!   one message of exactly [`DAEMON_MSG_SIZE`] bytes, laid out as above;
//!   the reply carries the whole payload area, so what a failed command
//!   recorded (e.g. [`PosixTimersArgs::failed`]) reaches crest too.
//!
//! ```text
//!   crest                                 parasite (leader, CMD_DAEMON)
//!     |  <------ CMD_DAEMON, 0, DaemonHello ----  first message
//!     |  ------- cmd, RET_PENDING, payload ---->  dispatch(cmd, payload)
//!     |  <------ cmd, ret, reply payload -------
//!     |  ...                                      (as many as needed)
//!     |  ------- CMD_FINI ---------------------->
//!     |  <------ CMD_FINI, 0 --------------------  close(sock), return:
//!     |                                           the head traps, and
//!     |                                           CMD_DAEMON's ret in the
//!     |                                           args area = close's result
//! ```
//!
//! EOF or an error on the socket also ends the loop the same way, so a
//! crest that goes away leaves a parasite stopped on its trap, not spinning.

use super::sigframe::RtSigframe;

/// Bytes of the parasite's args area: the header and the largest payload.
pub const PARASITE_ARGS_SIZE: usize = 4096;
/// Bytes of the parasite's own stack, inside its mapping. Enough for the
/// commands' frames plus a signal frame with full xsave state.
pub const PARASITE_STACK_SIZE: usize = 16384;

/// Command: report the pid and tid the parasite runs as ([`GetPid`]).
pub const CMD_GETPID: u32 = 1;
/// Command: the last one before cure; the parasite undoes what it set up
/// (the daemon answers it, closes its socket and returns to its trap).
pub const CMD_FINI: u32 = 2;
/// Command: crash on purpose through the panic handler (SIGILL), so tests
/// can prove crest cures a parasite that failed inside the target.
pub const CMD_ABORT: u32 = 3;

/// What crest stores in [`CmdHeader::ret`] before it starts a command: a
/// value no command returns, so a blob that never reached its dispatcher is
/// told apart from one that ran the command.
pub const RET_PENDING: i32 = i32::MIN;
/// `EINVAL`: the answer to an unknown command (same value on every Linux
/// arch crest supports).
pub const EINVAL: i32 = 22;

/// The start of the args area: which command, and how it went.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CmdHeader {
    /// One of the `CMD_*` constants.
    pub cmd: u32,
    /// [`RET_PENDING`] while the command runs, then 0 or a negative errno.
    pub ret: i32,
}

/// Where a command's payload starts in the args area.
pub const PAYLOAD_OFFSET: usize = 8;
/// How many payload bytes the args area holds.
pub const PAYLOAD_SIZE: usize = PARASITE_ARGS_SIZE - PAYLOAD_OFFSET;

/// Reply of [`CMD_GETPID`], as the parasite saw it from inside the task.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GetPid {
    /// `getpid()`: the thread group id in the task's pid namespace.
    pub pid: i32,
    /// `gettid()`: the thread that runs the parasite.
    pub tid: i32,
}

/// Command: become the socket daemon ([`DaemonArgs`]). Trap mode, in the
/// leader only; it returns (and the head traps) when the daemon ends, with
/// `ret` the result of closing its socket.
pub const CMD_DAEMON: u32 = 4;

/// Bytes of every message on the daemon's socket, both ways: one whole
/// args area (header and payload), so each side needs one fixed buffer.
pub const DAEMON_MSG_SIZE: usize = PARASITE_ARGS_SIZE;
/// Bytes of the args area of per-thread commands, in the thread area
/// crest maps right after the blob (the blob's own args area and stack
/// belong to the daemon while it runs).
pub const THREAD_ARGS_SIZE: usize = PARASITE_ARGS_SIZE;
/// Bytes of the per-thread commands' stack, after their args area.
pub const THREAD_STACK_SIZE: usize = PARASITE_STACK_SIZE;

/// Payload of [`CMD_DAEMON`].
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DaemonArgs {
    /// The daemon's end of the socketpair, in the task's fd table.
    pub sock_fd: i32,
    /// Padding.
    pub pad: u32,
}

/// Payload of the daemon's first message (header `CMD_DAEMON`, ret 0):
/// proof that it runs, and where per-thread commands enter.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DaemonHello {
    /// Address (in the task) of the blob's per-thread entry,
    /// `extern "C" fn(args: *mut u8, trap: u64) -> !`: runs the command in
    /// `args` like the head does, then jumps to `trap` (the head's trap
    /// instruction). crest enters it with its own sp and args, so a thread
    /// never touches the stack the daemon is using.
    pub thread_entry: u64,
}

const _: () = {
    assert!(core::mem::size_of::<DaemonArgs>() <= PAYLOAD_SIZE);
    assert!(core::mem::size_of::<DaemonHello>() <= PAYLOAD_SIZE);
    assert!(THREAD_ARGS_SIZE % 64 == 0 && THREAD_STACK_SIZE % 16 == 0);
};

/// Bytes of the restorer's args area.
pub const RESTORER_ARGS_SIZE: usize = 8192;
/// Bytes of the restorer's own stack, inside its mapping.
pub const RESTORER_STACK_SIZE: usize = 16384;
/// How many ranges one [`RestorerArgs`] can ask the restorer to unmap.
pub const RESTORER_MAX_UNMAP: usize = 64;
/// [`RestorerArgs::failed`] when no step failed.
pub const NO_FAILURE: u32 = u32::MAX;
/// [`RestorerArgs::failed`] when unregistering rseq failed.
pub const FAILED_RSEQ: u32 = u32::MAX - 1;
/// [`RestorerArgs::flags`]: finish with rt_sigreturn through
/// [`RestorerArgs::frame`] instead of trapping.
pub const RESTORE_SIGRETURN: u32 = 1;

/// A range of the task's address space.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemRange {
    /// First byte, page-aligned.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
}

/// The restorer's args area. Its steps so far: unregister the rseq area
/// the task inherited (the kernel writes into it on every preemption, and
/// it is about to be unmapped: a write into a hole is a SIGSEGV), clear the
/// address space of everything but the restorer (crest's own code, heap
/// and stacks) so the dumped mappings can go back in their places, then
/// either trap or, with [`RESTORE_SIGRETURN`], return through `frame` into
/// the task's registers.
///
/// ```text
///   0      4          8        12      16          24         28         32                  1056
///   | ret  | nr_unmap | failed | flags | rseq_addr | rseq_len | rseq_sig | unmap[0] .. [63]  | frame
///                                                                         (16 B each)         (RtSigframe)
/// ```
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestorerArgs {
    /// [`RET_PENDING`] until the restorer finished its steps, then 0 or the
    /// negative errno of the step that failed (written before sigreturn).
    pub ret: i32,
    /// How many entries of `unmap` are used.
    pub nr_unmap: u32,
    /// Index of the range whose munmap failed, or [`NO_FAILURE`].
    pub failed: u32,
    /// [`RESTORE_SIGRETURN`] or 0.
    pub flags: u32,
    /// The task's registered rseq area, 0 when it has none.
    pub rseq_addr: u64,
    /// The length it was registered with.
    pub rseq_len: u32,
    /// The signature it was registered with.
    pub rseq_sig: u32,
    /// The ranges to unmap, in order; none may cover the restorer itself.
    pub unmap: [MemRange; RESTORER_MAX_UNMAP],
    /// The frame rt_sigreturn returns through, built by
    /// [`RtSigframe::new`] from the task's registers.
    pub frame: RtSigframe,
    /// Address of a restore plan (plan.rs) to run after the unmapping, or 0.
    pub plan: u64,
}

const _: () = {
    assert!(core::mem::size_of::<RestorerArgs>() <= RESTORER_ARGS_SIZE);
    assert!(core::mem::size_of::<CmdHeader>() == PAYLOAD_OFFSET);
    assert!(core::mem::size_of::<GetPid>() <= PAYLOAD_SIZE);
};

// ---- page dump: commands 32..=47 ----------------------------------------
//
// The parasite moves the task's pages into a pipe with vmsplice, crest
// splices the pipe into the pages file. The pipe lives in the task (only
// the task can vmsplice its own memory): CMD_PIPE_OPEN creates it, crest
// takes a copy of the read end with pidfd_getfd, CMD_VMSPLICE fills it,
// CMD_PIPE_CLOSE closes both ends so the task's fd table is as before.

/// Command: `pipe2(O_CLOEXEC)` in the task; replies [`PipeFds`].
pub const CMD_PIPE_OPEN: u32 = 32;
/// Command: vmsplice the ranges of a [`VmspliceArgs`] into its pipe.
pub const CMD_VMSPLICE: u32 = 33;
/// Command: close both fds of a [`PipeFds`] (the payload).
pub const CMD_PIPE_CLOSE: u32 = 34;

/// How many ranges one [`CMD_VMSPLICE`] carries (fills the payload).
pub const VMSPLICE_MAX_IOV: usize = 250;

/// The pipe CMD_PIPE_OPEN made, as the task's fd numbers.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipeFds {
    /// The read end.
    pub read_fd: i32,
    /// The write end.
    pub write_fd: i32,
}

/// Payload of [`CMD_VMSPLICE`]. The ranges are `struct iovec`s (same
/// layout as [`MemRange`] on 64-bit: base, length) in the task's address
/// space; their total must fit in the pipe, which crest sized. The
/// parasite vmsplices without blocking, so a pipe that fills up early
/// ends the command instead of hanging the task; `done` tells crest how
/// many bytes went in (crest treats anything short as an error).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmspliceArgs {
    /// The pipe's write end in the task.
    pub pipe_fd: i32,
    /// How many entries of `iov` are used.
    pub nr_iov: u32,
    /// Reply: bytes now in the pipe.
    pub done: u64,
    /// The ranges, page-aligned, in order.
    pub iov: [MemRange; VMSPLICE_MAX_IOV],
}

const _: () = {
    assert!(core::mem::size_of::<VmspliceArgs>() <= PAYLOAD_SIZE);
    assert!(core::mem::size_of::<PipeFds>() <= PAYLOAD_SIZE);
};

// ---- dirty tracking: commands 48..=55 ------------------------------------
//
// A userfaultfd registers the ranges of the mm of the task that created
// it, so the task itself must create it: CMD_UFFD_OPEN does, crest takes
// a copy with pidfd_getfd (and does UFFDIO_API, UFFDIO_REGISTER and the
// scans on its copy), CMD_FD_CLOSE closes the task's fd so its fd table
// is as before.

/// Command: `userfaultfd(O_CLOEXEC | O_NONBLOCK)` in the task (retried
/// with UFFD_USER_MODE_ONLY on EPERM); replies [`UffdReply`].
pub const CMD_UFFD_OPEN: u32 = 48;
/// Command: close the fd of a [`UffdReply`] (the payload).
pub const CMD_FD_CLOSE: u32 = 49;

/// Reply of [`CMD_UFFD_OPEN`], payload of [`CMD_FD_CLOSE`].
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UffdReply {
    /// The fd in the task.
    pub fd: i32,
    /// 1 if the kernel allowed only a user-mode-only uffd.
    pub user_mode_only: i32,
}

const _: () = {
    assert!(core::mem::size_of::<UffdReply>() <= PAYLOAD_SIZE);
};

// ---------------------------------------------------------------------------
// Dump commands: state only the task can see (command numbers 16..=31).
//
// Each reply struct has the kernel's own layout for what the syscall writes,
// so the parasite hands the kernel a pointer into the payload and copies
// nothing: rt_sigaction's `struct sigaction` (64-bit fields on both
// arches), getitimer's `struct itimerval`, timer_gettime's
// `struct itimerspec`, sigaltstack's `stack_t`.
// ---------------------------------------------------------------------------

/// Command: every signal's action, as rt_sigaction reports it
/// ([`SigactionsReply`]). Run in any thread: actions are per process.
pub const CMD_DUMP_SIGACTIONS: u32 = 16;
/// Command: the three interval timers ([`ItimersReply`]).
pub const CMD_DUMP_ITIMERS: u32 = 17;
/// Command: the time left, period and overrun of the POSIX timers whose
/// ids crest passes in ([`PosixTimersArgs`]).
pub const CMD_DUMP_POSIX_TIMERS: u32 = 18;
/// Command: umask, personality, the prctl flags and the exact brk
/// ([`MiscReply`]).
pub const CMD_DUMP_MISC: u32 = 19;
/// Command: the calling thread's sigaltstack, clear_child_tid address and
/// tid ([`ThreadReply`]); crest runs it in every thread.
pub const CMD_DUMP_THREAD: u32 = 20;

/// Signals 1..=`NSIG` (the kernel's `_NSIG` on x86_64 and aarch64).
pub const NSIG: usize = 64;
/// `SIGKILL`: its action cannot be queried or changed (same number on
/// both arches).
pub const SIGKILL: usize = 9;
/// `SIGSTOP`: likewise.
pub const SIGSTOP: usize = 19;

/// The kernel's `struct sigaction` as rt_sigaction reads it back.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KSigaction {
    /// sa_handler: an address, SIG_DFL (0) or SIG_IGN (1).
    pub handler: u64,
    /// sa_flags.
    pub flags: u64,
    /// sa_restorer.
    pub restorer: u64,
    /// sa_mask (8 bytes: the size crest passes as `sigsetsize`).
    pub mask: u64,
}

/// Reply of [`CMD_DUMP_SIGACTIONS`]: `actions[signo - 1]`; the entries of
/// SIGKILL and SIGSTOP stay zero (SIG_DFL).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SigactionsReply {
    /// One action per signal.
    pub actions: [KSigaction; NSIG],
}

/// The kernel's `struct timeval` (64-bit fields).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timeval {
    /// Seconds.
    pub sec: i64,
    /// Microseconds.
    pub usec: i64,
}

/// The kernel's `struct itimerval`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Itimerval {
    /// The period.
    pub interval: Timeval,
    /// Time left until the next expiry.
    pub value: Timeval,
}

/// Reply of [`CMD_DUMP_ITIMERS`]: ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ItimersReply {
    /// Indexed by the ITIMER_* number.
    pub timers: [Itimerval; 3],
}

/// The kernel's `struct timespec` (64-bit fields).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timespec {
    /// Seconds.
    pub sec: i64,
    /// Nanoseconds.
    pub nsec: i64,
}

/// One POSIX timer: crest writes `id`, the parasite the rest. `interval`
/// and `value` are in the order of `struct itimerspec`, which
/// timer_gettime writes in place.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PosixTimerValue {
    /// The kernel's timer id (as in /proc/PID/timers).
    pub id: i32,
    /// timer_getoverrun(id).
    pub overrun: i32,
    /// The period.
    pub interval: Timespec,
    /// Time left until the next expiry, zero if disarmed.
    pub value: Timespec,
}

/// How many timers one [`CMD_DUMP_POSIX_TIMERS`] handles; crest sends more
/// in several commands.
pub const MAX_POSIX_TIMERS: usize = 64;

/// Payload of [`CMD_DUMP_POSIX_TIMERS`], answered in place.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PosixTimersArgs {
    /// How many entries of `timers` crest filled in.
    pub nr: u32,
    /// Index of the timer whose query failed (the command's errno is that
    /// failure), or [`NO_FAILURE`].
    pub failed: u32,
    /// The timers.
    pub timers: [PosixTimerValue; MAX_POSIX_TIMERS],
}

/// Reply of [`CMD_DUMP_MISC`]. The int-sized prctl answers are kept as the
/// kernel gives them; PR_GET_PDEATHSIG and PR_GET_CHILD_SUBREAPER write
/// theirs through a pointer into this struct.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MiscReply {
    /// The file creation mask.
    pub umask: u32,
    /// personality(0xffffffff).
    pub personality: u32,
    /// PR_GET_DUMPABLE.
    pub dumpable: i32,
    /// PR_GET_SECUREBITS.
    pub securebits: i32,
    /// PR_GET_PDEATHSIG.
    pub pdeath_signal: i32,
    /// PR_GET_CHILD_SUBREAPER.
    pub child_subreaper: i32,
    /// PR_GET_THP_DISABLE.
    pub thp_disable: i32,
    /// PR_GET_NO_NEW_PRIVS.
    pub no_new_privs: i32,
    /// brk(0): the exact program break.
    pub brk: u64,
}

/// The kernel's `stack_t`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StackT {
    /// ss_sp.
    pub sp: u64,
    /// ss_flags (SS_DISABLE, SS_AUTODISARM; SS_ONSTACK never, as the
    /// parasite runs on its own stack).
    pub flags: i32,
    /// Padding of the C struct.
    pub pad: i32,
    /// ss_size.
    pub size: u64,
}

/// Reply of [`CMD_DUMP_THREAD`].
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThreadReply {
    /// gettid() of the thread that ran the command.
    pub tid: i32,
    /// Padding.
    pub pad: i32,
    /// sigaltstack(NULL, &altstack).
    pub altstack: StackT,
    /// PR_GET_TID_ADDRESS: the clear_child_tid address.
    pub clear_tid: u64,
}

const _: () = {
    assert!(core::mem::size_of::<SigactionsReply>() <= PAYLOAD_SIZE);
    assert!(core::mem::size_of::<ItimersReply>() <= PAYLOAD_SIZE);
    assert!(core::mem::size_of::<PosixTimersArgs>() <= PAYLOAD_SIZE);
    assert!(core::mem::size_of::<MiscReply>() <= PAYLOAD_SIZE);
    assert!(core::mem::size_of::<ThreadReply>() <= PAYLOAD_SIZE);
    assert!(core::mem::size_of::<KSigaction>() == 32);
    assert!(core::mem::size_of::<Itimerval>() == 32);
    assert!(core::mem::size_of::<PosixTimerValue>() == 40);
    assert!(core::mem::size_of::<StackT>() == 24);
};
