//! The aarch64 general registers as ptrace returns them: the kernel's
//! `struct user_pt_regs` (arch/arm64/include/uapi/asm/ptrace.h), read and
//! written with PTRACE_GETREGSET/SETREGSET and NT_PRSTATUS (272 bytes).
//!
//! Crest saves these before it makes a task run a system call or the
//! parasite, and puts them back byte for byte when it cures the task; the
//! accessors name the roles (instruction pointer, stack pointer, return
//! value, syscall number and arguments) so arch-neutral code never spells a
//! register name. Plain data, `core` only: compiled into crest and the blobs.
//!
//! ```text
//!   0 x0   8 x1  ...  240 x30 (lr)   248 sp   256 pc   264 pstate = 272 bytes
//! ```
//!
//! The syscall number lives in x8; the number the task entered a system call
//! with is a separate regset (NT_ARM_SYSTEM_CALL), not part of this struct.

/// `struct user_pt_regs`, field for field.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserRegs {
    /// x0..x30; x30 is the link register.
    pub regs: [u64; 31],
    /// The stack pointer.
    pub sp: u64,
    /// The program counter.
    pub pc: u64,
    /// The processor state (NZCV flags, exception level bits...).
    pub pstate: u64,
}

/// Size of [`UserRegs`]: what NT_PRSTATUS transfers.
pub const USER_REGS_SIZE: usize = 272;
const _: () = assert!(core::mem::size_of::<UserRegs>() == USER_REGS_SIZE);

impl UserRegs {
    /// The instruction pointer.
    pub fn ip(&self) -> u64 {
        self.pc
    }

    /// Sets the instruction pointer.
    pub fn set_ip(&mut self, ip: u64) {
        self.pc = ip;
    }

    /// The stack pointer.
    pub fn sp(&self) -> u64 {
        self.sp
    }

    /// Sets the stack pointer.
    pub fn set_sp(&mut self, sp: u64) {
        self.sp = sp;
    }

    /// The return value of the last system call or function (x0).
    pub fn ret(&self) -> u64 {
        self.regs[0]
    }

    /// The six system call arguments, in order (x0..x5).
    pub fn syscall_args(&self) -> [u64; 6] {
        let mut args = [0; 6];
        args.copy_from_slice(&self.regs[..6]);
        args
    }

    /// Prepares the registers for `svc #0`: number in x8, arguments in x0..x5.
    pub fn set_syscall(&mut self, nr: u64, args: [u64; 6]) {
        self.regs[8] = nr;
        self.regs[..6].copy_from_slice(&args);
    }
}
