//! The x86_64 head of a blob: the first instructions that run when crest (or
//! the parasite loader) jumps into a blob, before any Rust code.
//!
//! The head takes no register input. It finds the blob's own stack and args
//! area with RIP-relative `lea`, so the blob runs at whatever address it was
//! mapped and carries no relocation (a static holding an address would need
//! one). It then calls the blob's Rust entry with the args pointer in rdi and,
//! when that returns, stops on `int3`: the tracer sees SIGTRAP with rip one
//! byte past the trap label, which tells it the command finished.
//!
//! ```text
//!   head:   lea  rsp, [rip + __crest_stack_top]   ; 16-aligned top
//!           lea  rdi, [rip + __crest_args]
//!           xor  ebp, ebp                         ; end of frame chain
//!           call main
//!   trap:   int3                                  ; SIGTRAP, rip = trap + 1
//! ```
//!
//! # Safety
//! Only blobs include this file. The head runs with whatever registers the
//! starter left and replaces sp, so it must be entered by a jump or call
//! that never expects to return; [`trap_abort`]'s asm only raises SIGILL.

/// Emits the blob head `__crest_head` (trap label `__crest_trap`) and the
/// blob's args area `__crest_args` (`$args_size` bytes) and stack
/// `__crest_stack` (`$stack_size` bytes, top `__crest_stack_top`), both
/// zero-filled (`@nobits`, no bytes in the image). `$main` is
/// `extern "C" fn(*mut u8)`. Both sizes are multiples of 16, which keeps the
/// stack top aligned for the call as the psABI requires.
macro_rules! blob_head {
    ($main:path, $args_size:expr, $stack_size:expr) => {
        const _: () = assert!($args_size % 16 == 0 && $stack_size % 16 == 0);
        core::arch::global_asm!(
            ".pushsection .text.crest_head,\"ax\",@progbits",
            ".globl __crest_head",
            ".type __crest_head,@function",
            "__crest_head:",
            "lea rsp, [rip + __crest_stack_top]",
            "lea rdi, [rip + __crest_args]",
            "xor ebp, ebp",
            "call {main}",
            ".globl __crest_trap",
            "__crest_trap:",
            "int3",
            ".size __crest_head, . - __crest_head",
            ".popsection",
            ".pushsection .crest.area,\"aw\",@nobits",
            ".balign 64",
            ".globl __crest_args",
            ".type __crest_args,@object",
            ".size __crest_args, {args_size}",
            "__crest_args:",
            ".skip {args_size}",
            ".globl __crest_stack",
            ".type __crest_stack,@object",
            ".size __crest_stack, {stack_size}",
            "__crest_stack:",
            ".skip {stack_size}",
            ".globl __crest_stack_top",
            "__crest_stack_top:",
            ".popsection",
            main = sym $main,
            args_size = const $args_size,
            stack_size = const $stack_size,
        );
    };
}

/// Stops the blob on an illegal instruction (`ud2`, SIGILL): what a panic
/// does. The tracer tells it apart from the SIGTRAP of a finished command and
/// cures the task instead of letting the blob run on in a broken state.
#[inline(always)]
pub fn trap_abort() -> ! {
    // SAFETY: `ud2` only raises SIGILL; it touches no memory or register.
    unsafe { core::arch::asm!("ud2", options(noreturn, nomem, nostack)) }
}
