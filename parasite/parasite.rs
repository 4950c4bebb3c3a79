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
//! crest starts the head once, in the leader, with `CMD_DAEMON`: the blob
//! then serves commands from a unix socket (cmds/daemon.rs) until
//! `CMD_FINI` or EOF, and only then returns to the trap. Per-thread
//! commands run in other threads at the same time, entered at
//! [`thread_main`] with the stack and args area crest gives them (the
//! head's stack is the daemon's), and stop on the head's trap too.
//!
//! # Safety
//! The blob runs in a process that is not crest, on memory crest mapped for
//! it: the args area is valid, 64-aligned and `PARASITE_ARGS_SIZE` bytes,
//! because the head hands over the address of the blob's own
//! `__crest_args`, and crest enters [`thread_main`] only with the thread
//! area it mapped after the blob (`THREAD_ARGS_SIZE` bytes of args, then
//! the stack) and the address of the head's trap. Nothing else is assumed
//! about the host process.
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
use proto::{
    CMD_ABORT, CMD_DAEMON, CMD_FINI, CMD_GETPID, CmdHeader, EINVAL, GetPid, PAYLOAD_OFFSET,
};

#[path = "cmds/daemon.rs"]
mod daemon;
#[path = "cmds/dump_state.rs"]
mod dump_state;
#[path = "cmds/page_dump.rs"]
mod page_dump;
#[path = "cmds/track.rs"]
mod track;

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
    let ret = match cmd {
        CMD_DAEMON => daemon::run(args),
        _ => dispatch(cmd, payload),
    };
    // SAFETY: as for the read above.
    unsafe { write_volatile(&raw mut (*hdr).ret, ret) };
}

/// The per-thread entry: runs the command in `args` (the thread area's
/// args, see [`proto::DaemonHello::thread_entry`]) and stops on the trap.
/// crest enters it with sp at the top of the thread area's stack, so it
/// can run while the daemon waits on the head's stack in the leader.
///
/// `trap` is the address of the head's trap instruction, passed by crest:
/// calling it stops the thread with the same ip as a command started at
/// the head. Naming `__crest_trap` here instead would go through a GOT
/// entry, a relocation build.rs rightly refuses.
extern "C" fn thread_main(args: *mut u8, trap: unsafe extern "C" fn() -> !) -> ! {
    let hdr = args.cast::<CmdHeader>();
    // SAFETY: args is the thread area's args (crate Safety note).
    let cmd = unsafe { read_volatile(&raw const (*hdr).cmd) };
    // SAFETY: the payload starts PAYLOAD_OFFSET bytes into the same area.
    let ret = dispatch(cmd, unsafe { args.add(PAYLOAD_OFFSET) });
    // SAFETY: as for the read above.
    unsafe { write_volatile(&raw mut (*hdr).ret, ret) };
    // SAFETY: `trap` is the head's trap (crate Safety note): it only stops
    // the thread, and crest restores its registers.
    unsafe { trap() }
}

/// Runs one command on its payload; returns 0 or a negative errno. The
/// same for a trap-mode start and for every command the daemon receives.
/// CMD_DAEMON is not among them: a daemon runs only from the head.
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
        // Nothing to undo: the daemon closes its socket itself, after its
        // answer to CMD_FINI.
        CMD_FINI => 0,
        CMD_ABORT => panic!(),
        proto::CMD_PIPE_OPEN..=47 => page_dump::dispatch(cmd, payload),
        proto::CMD_UFFD_OPEN..=55 => track::dispatch(cmd, payload),
        16..=31 => dump_state::dispatch(cmd, payload),
        _ => -EINVAL,
    }
}
