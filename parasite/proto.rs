//! The blobs' protocol: fixed-layout `#[repr(C)]` structs that crest writes
//! into a blob's args area and the blob answers in place. Compiled into both
//! sides through `#[path]` (crest as `crest::blob::proto`, the blobs as
//! `crate::proto`), so the layout cannot drift; only fixed-width fields,
//! `core` only, no pointers (the two sides see the area at different
//! addresses).
//!
//! A parasite command runs in "trap mode": crest writes a [`CmdHeader`] with
//! `ret` set to [`RET_PENDING`] and the command's payload, starts the blob at
//! its head, and waits for the trap; the blob has then replaced `ret` with 0
//! or a negative errno and filled the payload with the reply. The
//! unix-socket daemon mode of a later stage reuses the same structs.
//!
//! ```text
//!   args area (PARASITE_ARGS_SIZE bytes, 64-aligned)
//!   0        4        8                                      4096
//!   +--------+--------+---------------------------------------+
//!   | cmd    | ret    | payload: the command's struct         |
//!   | u32    | i32    | (GetPid, ...), PAYLOAD_OFFSET onwards |
//!   +--------+--------+---------------------------------------+
//! ```

use super::sigframe::RtSigframe;

/// Bytes of the parasite's args area: the header and the largest payload.
pub const PARASITE_ARGS_SIZE: usize = 4096;
/// Bytes of the parasite's own stack, inside its mapping. Enough for the
/// commands' frames plus a signal frame with full xsave state.
pub const PARASITE_STACK_SIZE: usize = 16384;

/// Command: report the pid and tid the parasite runs as ([`GetPid`]).
pub const CMD_GETPID: u32 = 1;
/// Command: the last one before cure; the parasite undoes what it set up.
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
