//! The restorer blob: code that takes over a process crest prepared for
//! restore and turns it into the dumped one. It must run from memory no
//! dumped mapping overlaps, since it replaces the whole address space,
//! crest's own code included.
//!
//! This stage has the first and the last step: drop the inherited rseq
//! registration, unmap the ranges crest lists
//! (its own code, heap, stacks, the vdso...) so only the restorer remains,
//! then trap, or rt_sigreturn into the registers and signal mask of the
//! task. Mapping the dumped VMAs, filling pages, credentials and threads
//! come in the restore stage, between the two; they extend
//! [`restorer_main`].
//!
//! A freestanding crate (`no_std`, no libc, panic = abort) that build.rs
//! compiles for the target architecture, links into one flat position
//! independent image and embeds in crest (`crest::blob::restorer()`).
//!
//! # Safety
//! The args area is valid, 64-aligned and `RESTORER_ARGS_SIZE` bytes: the
//! head hands over the address of the blob's own `__crest_args`. Crest
//! guarantees that no listed range covers the restorer's mapping; after the
//! unmapping the blob touches nothing outside its own image, args and stack.
#![no_std]
#![no_main]
#![no_builtins]

#[macro_use]
#[cfg_attr(target_arch = "x86_64", path = "../arch/x86_64/entry.rs")]
#[cfg_attr(target_arch = "aarch64", path = "../arch/aarch64/entry.rs")]
mod entry;
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
mod plan;
#[allow(dead_code)]
mod proto;
#[path = "restore/mod.rs"]
mod restore;
// Shared by both blobs; each uses its part.
#[allow(dead_code)]
mod rt;

use core::ptr::{read_volatile, write_volatile};
use proto::{FAILED_RSEQ, NO_FAILURE, RESTORE_SIGRETURN, RESTORER_MAX_UNMAP, RestorerArgs};
use sigframe::RtSigframe;

blob_head!(
    restorer_main,
    proto::RESTORER_ARGS_SIZE,
    proto::RESTORER_STACK_SIZE
);

/// The Rust entry, called by the head with the blob's args area. Every
/// access to the area is volatile: crest reads the results through its own
/// view of the same memory.
extern "C" fn restorer_main(args: *mut u8) {
    let a = args.cast::<RestorerArgs>();
    // SAFETY: args is the blob's own args area (the crate's Safety note),
    // large enough and aligned for RestorerArgs (assertion in proto.rs).
    let (n, rseq_addr, rseq_len, rseq_sig) = unsafe {
        (
            read_volatile(&raw const (*a).nr_unmap) as usize,
            read_volatile(&raw const (*a).rseq_addr),
            read_volatile(&raw const (*a).rseq_len),
            read_volatile(&raw const (*a).rseq_sig),
        )
    };
    let (mut ret, mut failed) = (0, NO_FAILURE);
    if rseq_addr != 0 {
        ret = rt::rseq_unregister(rseq_addr, rseq_len, rseq_sig);
        if ret < 0 {
            failed = FAILED_RSEQ;
        }
    }
    for i in (0..n.min(RESTORER_MAX_UNMAP)).take_while(|_| ret == 0) {
        // SAFETY: i < RESTORER_MAX_UNMAP, inside the area.
        let r = unsafe { read_volatile(&raw const (*a).unmap[i]) };
        // SAFETY: crest lists only ranges outside the restorer (Safety note).
        let rc = unsafe { rt::munmap(r.start, r.len) };
        if rc < 0 {
            (ret, failed) = (rc, i as u32);
            break;
        }
    }
    // SAFETY: as for the first read.
    let flags = unsafe {
        write_volatile(&raw mut (*a).failed, failed);
        write_volatile(&raw mut (*a).ret, ret);
        read_volatile(&raw const (*a).flags)
    };
    // SAFETY: as for the first read.
    let plan = unsafe { read_volatile(&raw const (*a).plan) };
    if ret == 0 && plan != 0 {
        // SAFETY: crest built the plan in this mapping before the task was
        // created, and never writes it afterwards.
        restore::run(unsafe { &*(plan as *const plan::RestorePlan) })
    }
    if ret == 0 && flags & RESTORE_SIGRETURN != 0 {
        // SAFETY: the frame lies in the args area, 16-aligned, and crest
        // built it with RtSigframe::new; the args area stays mapped.
        unsafe {
            let frame = (&raw const (*a).frame) as usize;
            syscall::rt_sigreturn(frame + RtSigframe::SP_OFFSET)
        }
    }
}
