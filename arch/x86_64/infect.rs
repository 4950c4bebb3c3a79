//! x86_64 instructions crest plants in a stopped task to make it run one
//! system call and stop again (the first step of injecting the parasite).
//!
//! The tracer writes [`SYSCALL_TRAP`] as one 8-byte word at an executable
//! address, points rip at it with the syscall number in rax and the
//! arguments in rdi, rsi, rdx, r10, r8, r9, and resumes the task: the kernel
//! runs the call, then `int3` raises SIGTRAP and the tracer reads rax.
//! Plain data, `core` only: compiled into crest and into the blobs.
//!
//! ```text
//!   offset  0    1    2    3 .. 7
//!           0f   05   cc   cc .. cc
//!           syscall   int3 int3 padding (never reached)
//! ```

/// The `syscall` instruction.
pub const SYSCALL_INSN: [u8; 2] = [0x0f, 0x05];
/// The trap instruction, `int3`.
pub const TRAP_INSN: [u8; 1] = [0xcc];
/// `syscall; int3` padded with `int3` to one word, as written by one
/// `PTRACE_POKEDATA` or `process_vm_writev`.
pub const SYSCALL_TRAP: [u8; 8] = [0x0f, 0x05, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc];
/// Where the instruction pointer is, relative to the start of
/// [`SYSCALL_TRAP`], when the trap after the system call stops the task:
/// x86 reports the address after `int3`.
pub const IP_AFTER_SYSCALL_TRAP: u64 = 3;
/// What x86 adds to the address of a trap instruction when it reports the
/// trap: `int3` is one byte and rip points past it.
pub const TRAP_IP_ADJUST: u64 = 1;
