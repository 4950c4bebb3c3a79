//! aarch64 instructions crest plants in a stopped task to make it run one
//! system call and stop again (the first step of injecting the parasite).
//!
//! The tracer writes [`SYSCALL_TRAP`] as one 8-byte word at an executable
//! address, points pc at it with the syscall number in x8 and the arguments
//! in x0..x5, and resumes the task: the kernel runs the call, then `brk #0`
//! raises SIGTRAP and the tracer reads x0. Plain data, `core` only: compiled
//! into crest and into the blobs.
//!
//! ```text
//!   offset  0            4
//!           d4000001     d4200000        (little-endian words)
//!           svc #0       brk #0
//! ```

/// The `svc #0` instruction (0xd4000001), little-endian.
pub const SYSCALL_INSN: [u8; 4] = 0xd400_0001_u32.to_le_bytes();
/// The trap instruction, `brk #0` (0xd4200000), little-endian.
pub const TRAP_INSN: [u8; 4] = 0xd420_0000_u32.to_le_bytes();
/// `svc #0; brk #0`: one word, as written by one `PTRACE_POKEDATA` or
/// `process_vm_writev`.
pub const SYSCALL_TRAP: [u8; 8] = [0x01, 0x00, 0x00, 0xd4, 0x00, 0x00, 0x20, 0xd4];
/// Where the instruction pointer is, relative to the start of
/// [`SYSCALL_TRAP`], when the trap after the system call stops the task:
/// aarch64 reports the address of `brk` itself.
pub const IP_AFTER_SYSCALL_TRAP: u64 = 4;
/// What aarch64 adds to the address of a trap instruction when it reports
/// the trap: nothing, pc stays on `brk`.
pub const TRAP_IP_ADJUST: u64 = 0;
