//! The x86_64 signal frame that `rt_sigreturn(2)` consumes: the restorer's
//! last step builds one per thread and returns through it, which loads every
//! general register, the signal mask and the alternate stack in one system
//! call (the kernel's arch/x86/kernel/signal_64.c; layouts from
//! arch/x86/include/uapi/asm/sigcontext.h and asm/ucontext.h).
//!
//! rt_sigreturn takes the frame from rsp - 8, where a signal handler's
//! `ret` would have popped `pretcode`, so the caller points rsp at
//! [`RtSigframe::SP_OFFSET`] into the frame. Plain data, `core` only:
//! compiled into crest (which fills frames) and the restorer (which
//! returns through them).
//!
//! ```text
//!   0    pretcode            (unused here)
//!   8    uc_flags            UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS
//!   16   uc_link
//!   24   uc_stack            ss_sp, ss_flags, ss_size (24 bytes)
//!   48   uc_mcontext         sigcontext: r8..r15 rdi rsi rbp rbx rdx rax rcx
//!                            rsp rip eflags, cs gs fs ss (u16), err trapno
//!                            oldmask cr2, fpstate, reserved (256 bytes)
//!   304  uc_sigmask          (8 bytes)
//!   312  siginfo             (128 bytes)                    = 440 bytes
//! ```
//!
//! `fpstate` stays 0 for now: the kernel then resets the FPU to its initial
//! state. Restoring the dumped FP/xsave state comes with the restore stage.

use super::regs::UserRegs;

/// `UC_SIGCONTEXT_SS`: the frame's `ss` field is meaningful.
pub const UC_SIGCONTEXT_SS: u64 = 0x2;
/// `UC_STRICT_RESTORE_SS`: restore `ss` exactly as given.
pub const UC_STRICT_RESTORE_SS: u64 = 0x4;
/// `SS_DISABLE`: no alternate signal stack.
pub const SS_DISABLE: i32 = 2;

/// `stack_t`: the alternate signal stack rt_sigreturn installs.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SigAltStack {
    /// Base of the stack.
    pub ss_sp: u64,
    /// `SS_DISABLE`, `SS_AUTODISARM` or 0.
    pub ss_flags: i32,
    /// Padding of the C layout; zero.
    pub pad: i32,
    /// Size of the stack.
    pub ss_size: u64,
}

/// `struct sigcontext` (64-bit): the registers rt_sigreturn loads.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SigContext {
    /// r8 .. r15, then rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp, rip, eflags.
    pub gregs: [u64; 18],
    /// Code segment selector.
    pub cs: u16,
    /// GS selector.
    pub gs: u16,
    /// FS selector.
    pub fs: u16,
    /// Stack segment selector.
    pub ss: u16,
    /// Error code of the fault that raised the signal.
    pub err: u64,
    /// Trap number of that fault.
    pub trapno: u64,
    /// Unused by rt_sigreturn (the mask is `uc_sigmask`).
    pub oldmask: u64,
    /// Page fault address.
    pub cr2: u64,
    /// Address of the FP/xsave state, or 0 to reset the FPU.
    pub fpstate: u64,
    /// Reserved; zero.
    pub reserved1: [u64; 8],
}

/// `struct rt_sigframe` with its `struct ucontext`.
#[repr(C, align(16))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtSigframe {
    /// Where a handler's `ret` would go; unused by rt_sigreturn.
    pub pretcode: u64,
    /// `UC_*` flags.
    pub uc_flags: u64,
    /// Unused; zero.
    pub uc_link: u64,
    /// The alternate signal stack to install.
    pub uc_stack: SigAltStack,
    /// The registers to load.
    pub uc_mcontext: SigContext,
    /// The blocked signal mask to install (bit n-1 = signal n).
    pub uc_sigmask: u64,
    /// `siginfo_t`; unused by rt_sigreturn.
    pub info: [u64; 16],
}

const _: () = assert!(core::mem::size_of::<SigContext>() == 256);
const _: () = assert!(core::mem::offset_of!(RtSigframe, uc_sigmask) == 304);

impl RtSigframe {
    /// Where rsp must point when rt_sigreturn is called: just past pretcode.
    pub const SP_OFFSET: usize = 8;

    /// A frame that returns to `regs` with `sigmask` blocked, no alternate
    /// signal stack and a freshly reset FPU.
    pub fn new(regs: &UserRegs, sigmask: u64) -> RtSigframe {
        let r = regs;
        let gregs = [
            r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15, r.rdi, r.rsi, r.rbp, r.rbx,
            r.rdx, r.rax, r.rcx, r.rsp, r.rip, r.eflags,
        ];
        RtSigframe {
            pretcode: 0,
            uc_flags: UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS,
            uc_link: 0,
            uc_stack: SigAltStack {
                ss_flags: SS_DISABLE,
                ..SigAltStack::default()
            },
            uc_mcontext: SigContext {
                gregs,
                cs: r.cs as u16,
                gs: r.gs as u16,
                fs: r.fs as u16,
                ss: r.ss as u16,
                ..SigContext::default()
            },
            uc_sigmask: sigmask,
            info: [0; 16],
        }
    }
}
