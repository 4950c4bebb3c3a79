//! The blobs crest runs inside other processes, embedded at build time.
//!
//! build.rs compiles parasite/ (freestanding `no_std` Rust) and the head in
//! `arch/<arch>/entry.rs` for the architecture crest is built for, links each
//! blob into one position independent segment at address 0, refuses it
//! unless it has no relocation and fits its budget, and writes its flat
//! image and layout into `$OUT_DIR`. This module exposes them, together with
//! the parts shared with the blobs through `#[path]`: the command protocol
//! ([`proto`]), the register layout ([`regs`]), the instructions planted
//! to run a system call in a stopped task ([`infect`]) and the signal frame
//! the restorer returns through ([`sigframe`]).
//!
//! A blob is copied as is to any page-aligned address (aarch64 code reaches
//! its data with `adrp`, which keeps the offset within a 4 KiB page) and
//! entered at `entry`. It needs `mem_size` bytes of writable, executable
//! memory, zero beyond `bytes.len()` (a fresh anonymous or memfd mapping is):
//!
//! ```text
//!   0                                 bytes.len()                   mem_size
//!   +-------------+-------------------+------+-----------+--------------+
//!   | head + trap | code, rodata,     | bss  | args area |    <- stack  |
//!   |             | data              |      |           |              |
//!   +-------------+-------------------+------+-----------+--------------+
//!   ^ entry       <- the embedded bytes ->   ^           ^              ^
//!     (0 today)                    args_offset  stack_offset    stack_top
//! ```
//!
//! The head needs no register input: it loads sp = `stack_top` and the args
//! pointer = `args_offset` relative to its own address, calls the blob's
//! Rust entry, and stops on the trap at `trap` (SIGTRAP). A panic stops on
//! an illegal instruction instead (SIGILL). Whoever starts a blob writes the
//! command into the args area first and reads the reply there afterwards
//! (see [`proto`]).

#[cfg_attr(target_arch = "x86_64", path = "../arch/x86_64/infect.rs")]
#[cfg_attr(target_arch = "aarch64", path = "../arch/aarch64/infect.rs")]
pub mod infect;
#[path = "../parasite/plan.rs"]
pub mod plan;
#[path = "../parasite/proto.rs"]
pub mod proto;
#[cfg_attr(target_arch = "x86_64", path = "../arch/x86_64/regs.rs")]
#[cfg_attr(target_arch = "aarch64", path = "../arch/aarch64/regs.rs")]
pub mod regs;
#[cfg_attr(target_arch = "x86_64", path = "../arch/x86_64/sigframe.rs")]
#[cfg_attr(target_arch = "aarch64", path = "../arch/aarch64/sigframe.rs")]
pub mod sigframe;

/// A blob's flat image and where its parts are, in bytes from its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blob {
    /// The image: code and initialised data, to copy to the blob's start.
    pub bytes: &'static [u8],
    /// Where to jump to start the blob (its head).
    pub entry: usize,
    /// The trap instruction the blob stops on when it finished.
    pub trap: usize,
    /// Start of the args area, 64-aligned.
    pub args_offset: usize,
    /// Size of the args area.
    pub args_size: usize,
    /// Lowest byte of the blob's stack.
    pub stack_offset: usize,
    /// Initial stack pointer (the stack grows down from here), 16-aligned.
    pub stack_top: usize,
    /// Bytes the blob occupies in memory: image, zero-filled data, args
    /// area and stack.
    pub mem_size: usize,
}

include!(concat!(env!("OUT_DIR"), "/blobs.rs"));

impl Blob {
    /// The instruction pointer, as an offset from the blob's start, of a
    /// task stopped by the blob's final trap; anything else is not the
    /// blob having finished.
    pub fn trap_ip(&self) -> usize {
        self.trap + infect::TRAP_IP_ADJUST as usize
    }

    /// `mem_size` rounded up to whole pages of `page_size` bytes (a power of
    /// two): how much to map for the blob.
    pub fn map_size(&self, page_size: usize) -> usize {
        self.mem_size.next_multiple_of(page_size)
    }
}

/// The parasite for the architecture crest was built for: runs [`proto`]
/// commands inside a seized task, as a daemon over a unix socket in the
/// leader or one per start in another thread.
pub fn parasite() -> Blob {
    PARASITE
}

/// The restorer for the architecture crest was built for: clears the
/// address space of everything but itself (see [`proto::RestorerArgs`]),
/// then rebuilds the dumped process from a [`plan::RestorePlan`].
pub fn restorer() -> Blob {
    RESTORER
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_layout(b: &Blob, args_size: usize, stack_size: usize) {
        assert!(!b.bytes.is_empty() && b.bytes.len() <= 16 * 1024);
        assert!(
            b.entry < b.trap && b.trap < b.bytes.len(),
            "the trap ends the head"
        );
        assert!(
            b.bytes.len() <= b.args_offset,
            "args area is zero-filled memory"
        );
        assert_eq!(b.args_offset % 64, 0);
        assert_eq!(b.args_size, args_size);
        assert!(b.args_offset + b.args_size <= b.stack_offset);
        assert_eq!(b.stack_top - b.stack_offset, stack_size);
        assert_eq!(b.stack_top % 16, 0);
        assert!(b.stack_top <= b.mem_size);
    }

    #[test]
    fn blob_layouts_are_inside_the_blobs() {
        let (args, stack) = (proto::PARASITE_ARGS_SIZE, proto::PARASITE_STACK_SIZE);
        assert_layout(&parasite(), args, stack);
        let (args, stack) = (proto::RESTORER_ARGS_SIZE, proto::RESTORER_STACK_SIZE);
        assert_layout(&restorer(), args, stack);
    }

    #[test]
    fn blobs_end_their_head_with_the_arch_trap() {
        let trap = infect::TRAP_INSN;
        for b in [parasite(), restorer()] {
            assert_eq!(&b.bytes[b.trap..b.trap + trap.len()], &trap[..]);
        }
    }

    #[test]
    fn syscall_trap_is_the_syscall_then_the_trap_the_assembler_emits() {
        let (sys, trap) = (&infect::SYSCALL_INSN[..], &infect::TRAP_INSN[..]);
        assert_eq!(&infect::SYSCALL_TRAP[..sys.len()], sys);
        let after = &infect::SYSCALL_TRAP[sys.len()..];
        assert_eq!(&after[..trap.len()], trap);
        assert_eq!(
            infect::IP_AFTER_SYSCALL_TRAP,
            (sys.len() as u64) + infect::TRAP_IP_ADJUST
        );
        // LLVM assembled the blob's system calls: the same bytes must be there.
        let p = parasite();
        let found = p.bytes.windows(sys.len()).any(|w| w == sys);
        assert!(found, "no {sys:02x?} in the parasite");
    }

    #[test]
    fn user_regs_match_the_libc_layout() {
        use std::mem::{offset_of, size_of};
        assert_eq!(
            size_of::<regs::UserRegs>(),
            size_of::<libc::user_regs_struct>()
        );
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(
                offset_of!(regs::UserRegs, rip),
                offset_of!(libc::user_regs_struct, rip)
            );
            assert_eq!(
                offset_of!(regs::UserRegs, rsp),
                offset_of!(libc::user_regs_struct, rsp)
            );
            assert_eq!(
                offset_of!(regs::UserRegs, orig_rax),
                offset_of!(libc::user_regs_struct, orig_rax)
            );
            assert_eq!(
                offset_of!(regs::UserRegs, gs),
                offset_of!(libc::user_regs_struct, gs)
            );
        }
        #[cfg(target_arch = "aarch64")]
        {
            assert_eq!(
                offset_of!(regs::UserRegs, sp),
                offset_of!(libc::user_regs_struct, sp)
            );
            assert_eq!(
                offset_of!(regs::UserRegs, pc),
                offset_of!(libc::user_regs_struct, pc)
            );
            assert_eq!(
                offset_of!(regs::UserRegs, pstate),
                offset_of!(libc::user_regs_struct, pstate)
            );
        }
    }

    #[test]
    fn user_regs_accessors_name_the_abi_registers() {
        let mut r = regs::UserRegs::default();
        r.set_syscall(9, [1, 2, 3, 4, 5, 6]);
        assert_eq!(r.syscall_args(), [1, 2, 3, 4, 5, 6]);
        r.set_ip(0x1000);
        r.set_sp(0x2000);
        assert_eq!((r.ip(), r.sp()), (0x1000, 0x2000));
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            (r.rax, r.rdi, r.r10, r.r9, r.rip, r.rsp),
            (9, 1, 4, 6, 0x1000, 0x2000)
        );
        #[cfg(target_arch = "aarch64")]
        assert_eq!(
            (r.regs[8], r.regs[0], r.regs[5], r.pc, r.sp),
            (9, 1, 6, 0x1000, 0x2000)
        );
        // The syscall's result comes back where the number went in on x86, in x0 on arm64.
        #[cfg(target_arch = "x86_64")]
        assert_eq!(r.ret(), 9);
        #[cfg(target_arch = "aarch64")]
        assert_eq!(r.ret(), 1);
    }

    #[test]
    fn sigframe_context_matches_the_libc_layout() {
        use sigframe::{RtSigframe, SigContext};
        use std::mem::{offset_of, size_of};
        // libc's ucontext_t is the frame's ucontext, from uc_flags on.
        let uc = offset_of!(RtSigframe, uc_flags);
        let mcontext = offset_of!(RtSigframe, uc_mcontext) - uc;
        assert_eq!(mcontext, offset_of!(libc::ucontext_t, uc_mcontext));
        let stack = offset_of!(RtSigframe, uc_stack) - uc;
        assert_eq!(stack, offset_of!(libc::ucontext_t, uc_stack));
        assert_eq!(size_of::<SigContext>(), size_of::<libc::mcontext_t>());
    }

    #[test]
    fn map_size_rounds_to_pages() {
        let p = parasite();
        assert_eq!(p.map_size(4096) % 4096, 0);
        assert!(p.map_size(4096) >= p.mem_size && p.map_size(4096) < p.mem_size + 4096);
    }
}
