//! The aarch64 signal frame that `rt_sigreturn(2)` consumes: the restorer's
//! last step builds one per thread and returns through it, which loads every
//! general register, the signal mask, the alternate stack and the FP/SIMD
//! registers in one system call (the kernel's arch/arm64/kernel/signal.c;
//! layouts from arch/arm64/include/uapi/asm/sigcontext.h and ucontext.h).
//!
//! rt_sigreturn takes the frame at sp, which must be 16-aligned. The
//! kernel refuses a frame without an FP/SIMD record, so one is always
//! there, followed by the terminating null record. Plain data, `core` only:
//! compiled into crest (which fills frames) and the restorer (which
//! returns through them).
//!
//! ```text
//!   0     siginfo                    (128 bytes)
//!   128   uc_flags, uc_link
//!   144   uc_stack                   ss_sp, ss_flags, ss_size (24 bytes)
//!   168   uc_sigmask                 (8 bytes + 120 unused: 1024-bit sigset)
//!   304   uc_mcontext:  fault_address, regs[31], sp, pc, pstate
//!   592     __reserved (4096 bytes, 16-aligned):
//!             fpsimd_context  magic 0x46508001, size 528, fpsr, fpcr,
//!                             vregs[32] (u128)
//!             null record     magic 0, size 0
//!   4688  end
//! ```
//!
//! The FP/SIMD record holds zeroes for now; filling it with the dumped
//! state comes with the restore stage.

use super::regs::UserRegs;

/// `FPSIMD_MAGIC`: tag of the FP/SIMD record.
pub const FPSIMD_MAGIC: u32 = 0x4650_8001;
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

/// `struct fpsimd_context`: the FP/SIMD registers.
#[repr(C, align(16))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FpsimdContext {
    /// [`FPSIMD_MAGIC`].
    pub magic: u32,
    /// Size of this record, 528.
    pub size: u32,
    /// Floating-point status register.
    pub fpsr: u32,
    /// Floating-point control register.
    pub fpcr: u32,
    /// v0..v31.
    pub vregs: [u128; 32],
}

/// `struct sigcontext`'s 4096-byte record area.
#[repr(C, align(16))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reserved {
    /// The FP/SIMD record (mandatory).
    pub fpsimd: FpsimdContext,
    /// The terminating null record (magic 0, size 0) and free space.
    pub rest: [u8; 4096 - 528],
}

/// `struct sigcontext`: the registers rt_sigreturn loads.
#[repr(C, align(16))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SigContext {
    /// Fault address of the signal; unused by rt_sigreturn.
    pub fault_address: u64,
    /// x0..x30.
    pub regs: [u64; 31],
    /// Stack pointer.
    pub sp: u64,
    /// Program counter.
    pub pc: u64,
    /// Processor state.
    pub pstate: u64,
    /// The record area.
    pub reserved: Reserved,
}

/// `struct rt_sigframe` with its `struct ucontext`.
#[repr(C, align(16))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtSigframe {
    /// `siginfo_t`; unused by rt_sigreturn.
    pub info: [u64; 16],
    /// Unused; zero.
    pub uc_flags: u64,
    /// Unused; zero.
    pub uc_link: u64,
    /// The alternate signal stack to install.
    pub uc_stack: SigAltStack,
    /// The blocked signal mask to install (bit n-1 = signal n).
    pub uc_sigmask: u64,
    /// The rest of glibc's 1024-bit sigset; zero.
    pub uc_unused: [u8; 120],
    /// The registers to load.
    pub uc_mcontext: SigContext,
}

const _: () = assert!(core::mem::size_of::<FpsimdContext>() == 528);
const _: () = assert!(core::mem::offset_of!(RtSigframe, uc_mcontext) == 304);
const _: () = assert!(core::mem::size_of::<RtSigframe>() == 4688);

impl RtSigframe {
    /// Where sp must point when rt_sigreturn is called: the frame itself.
    pub const SP_OFFSET: usize = 0;

    /// A frame that returns to `regs` with `sigmask` blocked, no alternate
    /// signal stack and zeroed FP/SIMD registers.
    pub fn new(regs: &UserRegs, sigmask: u64) -> RtSigframe {
        let fpsimd = FpsimdContext {
            magic: FPSIMD_MAGIC,
            size: core::mem::size_of::<FpsimdContext>() as u32,
            fpsr: 0,
            fpcr: 0,
            vregs: [0; 32],
        };
        RtSigframe {
            info: [0; 16],
            uc_flags: 0,
            uc_link: 0,
            uc_stack: SigAltStack {
                ss_flags: SS_DISABLE,
                ..SigAltStack::default()
            },
            uc_sigmask: sigmask,
            uc_unused: [0; 120],
            uc_mcontext: SigContext {
                fault_address: 0,
                regs: regs.regs,
                sp: regs.sp,
                pc: regs.pc,
                pstate: regs.pstate,
                reserved: Reserved {
                    fpsimd,
                    rest: [0; 4096 - 528],
                },
            },
        }
    }
}
