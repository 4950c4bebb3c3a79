//! ptrace(2) requests crest's dump relies on: SEIZE, INTERRUPT, LISTEN,
//! GETREGSET/SETREGSET, GET/SETSIGMASK, PEEKSIGINFO, SECCOMP_GET_FILTER and
//! GET_RSEQ_CONFIGURATION.
//!
//! Each request gets its own wrapper so the data argument is typed: the
//! kernel writes into a Rust buffer of the size it was told, never further.

use syscalls::{Sysno, syscall};

use super::signal::SigInfo;
use super::{Pid, SysResult};

/// `PTRACE_DETACH`.
pub const PTRACE_DETACH: u64 = 17;
/// `PTRACE_CONT`.
pub const PTRACE_CONT: u64 = 7;
/// `PTRACE_SYSCALL`.
pub const PTRACE_SYSCALL: u64 = 24;
/// `PTRACE_O_TRACESYSGOOD`: system-call stops report SIGTRAP | 0x80.
pub const PTRACE_O_TRACESYSGOOD: u64 = 1;
/// `PTRACE_GETREGSET`.
pub const PTRACE_GETREGSET: u64 = 0x4204;
/// `PTRACE_SETREGSET`.
pub const PTRACE_SETREGSET: u64 = 0x4205;
/// `PTRACE_SEIZE`.
pub const PTRACE_SEIZE: u64 = 0x4206;
/// `PTRACE_INTERRUPT`.
pub const PTRACE_INTERRUPT: u64 = 0x4207;
/// `PTRACE_LISTEN`.
pub const PTRACE_LISTEN: u64 = 0x4208;
/// `PTRACE_PEEKSIGINFO`.
pub const PTRACE_PEEKSIGINFO: u64 = 0x4209;
/// `PTRACE_GETSIGMASK`.
pub const PTRACE_GETSIGMASK: u64 = 0x420a;
/// `PTRACE_SETSIGMASK`.
pub const PTRACE_SETSIGMASK: u64 = 0x420b;
/// `PTRACE_SECCOMP_GET_FILTER`.
pub const PTRACE_SECCOMP_GET_FILTER: u64 = 0x420c;
/// `PTRACE_GET_RSEQ_CONFIGURATION`.
pub const PTRACE_GET_RSEQ_CONFIGURATION: u64 = 0x420f;
/// `PTRACE_PEEKSIGINFO_SHARED`: peek the process-wide queue.
pub const PTRACE_PEEKSIGINFO_SHARED: u32 = 1;
/// `PTRACE_O_EXITKILL`: the tracee dies if the tracer does.
pub const PTRACE_O_EXITKILL: u64 = 1 << 20;
/// `PTRACE_O_SUSPEND_SECCOMP`.
pub const PTRACE_O_SUSPEND_SECCOMP: u64 = 1 << 21;
/// `PTRACE_EVENT_STOP`: the event of an INTERRUPT- or group-stop under SEIZE.
pub const PTRACE_EVENT_STOP: i32 = 128;
/// `NT_PRSTATUS`: general purpose registers.
pub const NT_PRSTATUS: u32 = 1;
/// `NT_PRFPREG`: FP registers (FP/SIMD on aarch64).
pub const NT_PRFPREG: u32 = 2;
/// `NT_X86_XSTATE`: the XSAVE area.
pub const NT_X86_XSTATE: u32 = 0x202;

fn ptrace(req: u64, pid: Pid, addr: u64, data: u64) -> SysResult<usize> {
    // SAFETY: every caller in this module passes as `addr`/`data` either an
    // integer or a pointer to a buffer of the size the request accesses.
    unsafe { syscall!(Sysno::ptrace, req, pid, addr, data) }
}

/// PTRACE_SEIZE with `options`: attaches without stopping the task.
pub fn ptrace_seize(pid: Pid, options: u64) -> SysResult<()> {
    ptrace(PTRACE_SEIZE, pid, 0, options).map(drop)
}

/// PTRACE_INTERRUPT: asks a seized task to stop (reported as PTRACE_EVENT_STOP).
pub fn ptrace_interrupt(pid: Pid) -> SysResult<()> {
    ptrace(PTRACE_INTERRUPT, pid, 0, 0).map(drop)
}

/// PTRACE_LISTEN: lets a group-stopped task wait for SIGCONT while traced.
pub fn ptrace_listen(pid: Pid) -> SysResult<()> {
    ptrace(PTRACE_LISTEN, pid, 0, 0).map(drop)
}

/// PTRACE_CONT, delivering `sig` (0 for none).
pub fn ptrace_cont(pid: Pid, sig: i32) -> SysResult<()> {
    ptrace(PTRACE_CONT, pid, 0, sig as u64).map(drop)
}

/// PTRACE_SYSCALL: resume until the next system-call entry or exit stop.
pub fn ptrace_syscall(pid: Pid) -> SysResult<()> {
    ptrace(PTRACE_SYSCALL, pid, 0, 0).map(drop)
}

/// PTRACE_DETACH.
pub fn ptrace_detach(pid: Pid) -> SysResult<()> {
    ptrace_detach_signal(pid, 0)
}

/// PTRACE_DETACH from a signal-delivery stop, delivering `sig` (0 for none)
/// as the thread goes.
pub fn ptrace_detach_signal(pid: Pid, sig: i32) -> SysResult<()> {
    ptrace(PTRACE_DETACH, pid, 0, sig as u64).map(drop)
}

/// PTRACE_GETREGSET of note type `nt` into `buf`; returns the size the
/// kernel filled (the regset's real size when `buf` is large enough).
pub fn ptrace_getregset(pid: Pid, nt: u32, buf: &mut [u8]) -> SysResult<usize> {
    let mut iov = [buf.as_mut_ptr() as u64, buf.len() as u64];
    ptrace(
        PTRACE_GETREGSET,
        pid,
        u64::from(nt),
        iov.as_mut_ptr() as u64,
    )?;
    Ok(iov[1] as usize)
}

/// PTRACE_SETREGSET of note type `nt` from `buf`.
pub fn ptrace_setregset(pid: Pid, nt: u32, buf: &[u8]) -> SysResult<()> {
    let iov = [buf.as_ptr() as u64, buf.len() as u64];
    ptrace(PTRACE_SETREGSET, pid, u64::from(nt), iov.as_ptr() as u64).map(drop)
}

/// PTRACE_GETSIGMASK: the blocked set (bit n-1 for signal n).
pub fn ptrace_getsigmask(pid: Pid) -> SysResult<u64> {
    let mut mask = 0u64;
    ptrace(PTRACE_GETSIGMASK, pid, 8, &mut mask as *mut u64 as u64)?;
    Ok(mask)
}

/// PTRACE_SETSIGMASK.
pub fn ptrace_setsigmask(pid: Pid, mask: u64) -> SysResult<()> {
    ptrace(PTRACE_SETSIGMASK, pid, 8, &mask as *const u64 as u64).map(drop)
}

/// PTRACE_PEEKSIGINFO: copies pending signals starting at `off` from the
/// private queue (or the shared one with PTRACE_PEEKSIGINFO_SHARED) into
/// `out`; returns how many were copied.
pub fn ptrace_peeksiginfo(pid: Pid, off: u64, flags: u32, out: &mut [SigInfo]) -> SysResult<usize> {
    // struct ptrace_peeksiginfo_args { u64 off; u32 flags; s32 nr; }
    let mut args = [0u8; 16];
    args[0..8].copy_from_slice(&off.to_ne_bytes());
    args[8..12].copy_from_slice(&flags.to_ne_bytes());
    args[12..16].copy_from_slice(&(out.len() as i32).to_ne_bytes());
    ptrace(
        PTRACE_PEEKSIGINFO,
        pid,
        args.as_ptr() as u64,
        out.as_mut_ptr() as u64,
    )
}

/// PTRACE_SECCOMP_GET_FILTER: with an empty `out`, the number of
/// instructions of filter `index`; otherwise copies them (8 bytes each).
pub fn ptrace_seccomp_get_filter(pid: Pid, index: u64, out: &mut [u64]) -> SysResult<usize> {
    let data = if out.is_empty() {
        0
    } else {
        out.as_mut_ptr() as u64
    };
    // The kernel copies the whole filter: refuse a buffer that is too short.
    let len = ptrace(PTRACE_SECCOMP_GET_FILTER, pid, index, 0)?;
    if !out.is_empty() && out.len() < len {
        return Err(super::Errno::ENOSPC);
    }
    if data == 0 {
        return Ok(len);
    }
    ptrace(PTRACE_SECCOMP_GET_FILTER, pid, index, data)
}

/// The kernel's `struct ptrace_rseq_configuration`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RseqConfiguration {
    /// Address of the registered struct rseq, 0 if none.
    pub rseq_abi_pointer: u64,
    /// The size the task registered.
    pub rseq_abi_size: u32,
    /// The abort-handler signature.
    pub signature: u32,
    /// Registration flags.
    pub flags: u32,
    /// Padding.
    pub pad: u32,
}

/// PTRACE_GET_RSEQ_CONFIGURATION.
pub fn ptrace_get_rseq_configuration(pid: Pid) -> SysResult<RseqConfiguration> {
    let mut conf = RseqConfiguration::default();
    let size = size_of::<RseqConfiguration>() as u64;
    ptrace(
        PTRACE_GET_RSEQ_CONFIGURATION,
        pid,
        size,
        &mut conf as *mut _ as u64,
    )?;
    Ok(conf)
}

/// PTRACE_GETREGSET of NT_PRSTATUS into the typed register struct; fails
/// with EIO if the kernel's regset is not exactly [`UserRegs`] in size.
///
/// [`UserRegs`]: crate::blob::regs::UserRegs
pub fn ptrace_getregs(pid: Pid) -> SysResult<crate::blob::regs::UserRegs> {
    use crate::blob::regs::{USER_REGS_SIZE, UserRegs};
    let mut regs = UserRegs::default();
    let mut iov = [&raw mut regs as u64, USER_REGS_SIZE as u64];
    // SAFETY: the iovec covers exactly `regs` (USER_REGS_SIZE bytes, checked
    // at compile time in regs.rs); UserRegs is plain u64 fields, so any
    // bytes the kernel writes form a valid value.
    unsafe {
        syscall!(
            Sysno::ptrace,
            PTRACE_GETREGSET,
            pid,
            u64::from(NT_PRSTATUS),
            iov.as_mut_ptr()
        )
    }?;
    if iov[1] as usize != USER_REGS_SIZE {
        return Err(super::Errno::EIO);
    }
    Ok(regs)
}

/// PTRACE_SETREGSET of NT_PRSTATUS from the typed register struct.
pub fn ptrace_setregs(pid: Pid, regs: &crate::blob::regs::UserRegs) -> SysResult<()> {
    use crate::blob::regs::USER_REGS_SIZE;
    let iov = [regs as *const _ as u64, USER_REGS_SIZE as u64];
    ptrace(
        PTRACE_SETREGSET,
        pid,
        u64::from(NT_PRSTATUS),
        iov.as_ptr() as u64,
    )
    .map(drop)
}

/// `NT_ARM_TLS`: aarch64 tpidr_el0 (and tpidr2_el0 where SME exists).
pub const NT_ARM_TLS: u32 = 0x401;
/// `NT_ARM_SVE`: aarch64 SVE state (struct user_sve_header, then the data).
pub const NT_ARM_SVE: u32 = 0x405;

/// PTRACE_GETREGSET of note type `nt` into a fresh buffer sized by the
/// kernel: starts at `hint` bytes and doubles (up to `max`) while the kernel
/// fills the whole buffer, which may mean the regset was cut short.
pub fn ptrace_getregset_vec(pid: Pid, nt: u32, hint: usize, max: usize) -> SysResult<Vec<u8>> {
    let mut size = hint.max(8);
    loop {
        let mut buf = vec![0u8; size];
        let got = ptrace_getregset(pid, nt, &mut buf)?;
        if got < size || size >= max {
            buf.truncate(got);
            return Ok(buf);
        }
        size = (size * 2).min(max);
    }
}
