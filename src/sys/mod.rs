//! Typed wrappers over raw system calls, named after the syscall.
//!
//! crest talks to the kernel through interfaces libc does not wrap or wraps
//! differently on glibc and musl (ptrace requests added after 3.4, clone3,
//! userfaultfd, PAGEMAP_SCAN, kcmp, pidfd_getfd, rseq...). Every wrapper here
//! issues the syscall directly through the `syscalls` crate, so the same code
//! behaves the same on both libcs and both architectures, and returns
//! `Result<T, Errno>`. Descriptors come back as [`OwnedFd`](std::os::fd::OwnedFd)
//! so they close on drop, and mappings as [`mm::Mapping`], unmapped on drop.
//!
//! Constants are named verbatim after the kernel's uapi headers and defined here
//! because Debian 12's headers (and the libc crate) predate many of them.
//!
//! # Safety
//! This is one of the few modules allowed to use `unsafe`. The rule that keeps it
//! sound: a wrapper is a safe `fn` only when every pointer it hands the kernel
//! comes from a Rust reference or slice of the size the kernel will access, so
//! the kernel can never write outside memory the caller owns. Requests that
//! take addresses in another process take them as plain `u64`, never as
//! references. Wrappers that cannot promise this are `unsafe fn` with a
//! `# Safety` section.
#![allow(unsafe_code)]

pub mod anonfd;
pub mod cpu;
pub mod fd;
pub mod fdtable;
pub mod lock;
pub mod memfd;
pub mod mm;
pub mod net;
pub mod pipe;
pub mod process;
pub mod ptrace;
pub mod rlimit;
pub mod scm;
pub mod signal;
pub mod spawn;
pub mod splice;
pub mod tty;
pub mod uffd;
pub mod unix;
pub mod unix_diag;
pub mod unix_sock;

pub use syscalls::Errno;

/// A process or thread id as the kernel sees it.
pub type Pid = i32;

/// The result of a system call.
pub type SysResult<T> = Result<T, Errno>;
