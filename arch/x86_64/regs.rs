//! The x86_64 general registers as ptrace returns them: the kernel's
//! `struct user_regs_struct` (arch/x86/include/asm/user_64.h), read and written
//! with PTRACE_GETREGSET/SETREGSET and NT_PRSTATUS (216 bytes).
//!
//! Crest saves these before it makes a task run a system call or the
//! parasite, and puts them back byte for byte when it cures the task; the
//! accessors name the roles (instruction pointer, stack pointer, return
//! value, syscall number and arguments) so arch-neutral code never spells a
//! register name. Plain data, `core` only: compiled into crest and the blobs.
//!
//! ```text
//!   0 r15   8 r14  16 r13  24 r12  32 rbp  40 rbx  48 r11  56 r10
//!  64 r9   72 r8   80 rax  88 rcx  96 rdx 104 rsi 112 rdi 120 orig_rax
//! 128 rip 136 cs  144 eflags 152 rsp 160 ss 168 fs_base 176 gs_base
//! 184 ds  192 es  200 fs  208 gs                              = 216 bytes
//! ```

/// `struct user_regs_struct`, field for field.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserRegs {
    /// r15.
    pub r15: u64,
    /// r14.
    pub r14: u64,
    /// r13.
    pub r13: u64,
    /// r12.
    pub r12: u64,
    /// rbp.
    pub rbp: u64,
    /// rbx.
    pub rbx: u64,
    /// r11 (rflags after a `syscall`).
    pub r11: u64,
    /// r10 (fourth syscall argument).
    pub r10: u64,
    /// r9 (sixth syscall argument).
    pub r9: u64,
    /// r8 (fifth syscall argument).
    pub r8: u64,
    /// rax (syscall number on entry, result on exit).
    pub rax: u64,
    /// rcx (return address after a `syscall`).
    pub rcx: u64,
    /// rdx (third syscall argument).
    pub rdx: u64,
    /// rsi (second syscall argument).
    pub rsi: u64,
    /// rdi (first syscall argument).
    pub rdi: u64,
    /// The syscall number the task entered with, or -1 outside a syscall;
    /// the kernel's syscall-restart logic looks at it.
    pub orig_rax: u64,
    /// The instruction pointer.
    pub rip: u64,
    /// Code segment selector.
    pub cs: u64,
    /// Flags.
    pub eflags: u64,
    /// The stack pointer.
    pub rsp: u64,
    /// Stack segment selector.
    pub ss: u64,
    /// FS base (the thread pointer of x86_64 TLS).
    pub fs_base: u64,
    /// GS base.
    pub gs_base: u64,
    /// DS selector.
    pub ds: u64,
    /// ES selector.
    pub es: u64,
    /// FS selector.
    pub fs: u64,
    /// GS selector.
    pub gs: u64,
}

/// Size of [`UserRegs`]: what NT_PRSTATUS transfers.
pub const USER_REGS_SIZE: usize = 216;
const _: () = assert!(core::mem::size_of::<UserRegs>() == USER_REGS_SIZE);

impl UserRegs {
    /// The instruction pointer.
    pub fn ip(&self) -> u64 {
        self.rip
    }

    /// Sets the instruction pointer.
    pub fn set_ip(&mut self, ip: u64) {
        self.rip = ip;
    }

    /// The stack pointer.
    pub fn sp(&self) -> u64 {
        self.rsp
    }

    /// Sets the stack pointer.
    pub fn set_sp(&mut self, sp: u64) {
        self.rsp = sp;
    }

    /// The return value of the last system call or function (rax).
    pub fn ret(&self) -> u64 {
        self.rax
    }

    /// The six system call arguments, in order.
    pub fn syscall_args(&self) -> [u64; 6] {
        [self.rdi, self.rsi, self.rdx, self.r10, self.r8, self.r9]
    }

    /// Prepares the registers for `syscall`: number in rax, arguments in
    /// rdi, rsi, rdx, r10, r8, r9. orig_rax becomes -1 so that, if the task
    /// was stopped inside an interrupted system call, the kernel's restart
    /// logic sees no system call in progress and leaves rip and rax alone.
    pub fn set_syscall(&mut self, nr: u64, args: [u64; 6]) {
        self.rax = nr;
        self.orig_rax = u64::MAX;
        [self.rdi, self.rsi, self.rdx, self.r10, self.r8, self.r9] = args;
    }
}
