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
//! # Safety
//! The blob runs in a process that is not crest, on memory crest mapped for
//! it: the args area is valid, 64-aligned and `PARASITE_ARGS_SIZE` bytes,
//! because the head hands over the address of the blob's own
//! `__crest_args`. Nothing else is assumed about the host process.
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
use proto::{CMD_ABORT, CMD_FINI, CMD_GETPID, CmdHeader, EINVAL, GetPid, PAYLOAD_OFFSET};

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
    let ret = dispatch(cmd, payload);
    // SAFETY: as for the read above.
    unsafe { write_volatile(&raw mut (*hdr).ret, ret) };
}

/// Runs one command on its payload; returns 0 or a negative errno. The
/// socket daemon of a later stage calls this for every command it receives.
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
        // Nothing to undo yet: trap mode sets nothing up in the task.
        CMD_FINI => 0,
        CMD_ABORT => panic!(),
        _ => -EINVAL,
    }
}
