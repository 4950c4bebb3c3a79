//! Thread cores: the CPU and signal state of each seized, stopped thread,
//! read with ptrace (PTRACE_GETREGSET, PTRACE_GETSIGMASK,
//! PTRACE_GET_RSEQ_CONFIGURATION, PTRACE_PEEKSIGINFO) into the image's
//! thread-core records.
//!
//! Registers stay the kernel's regset bytes (NT_PRSTATUS; NT_X86_XSTATE or
//! NT_PRFPREG), because restore hands them back in the same layout. The
//! XSAVE area's size comes from the kernel (the returned iov_len) and its
//! feature mask (XCR0 as the kernel exposes it to user space) travels inside
//! those bytes, in the FXSAVE area's `sw_reserved` words (the image's
//! thread-core has no separate field for it); [`xsave_features`] reads it so
//! restore can refuse a CPU that lacks a saved feature, and it must be a
//! subset of the inventory's `xsave_mask`. On aarch64 NT_PRFPREG holds the
//! V registers; a thread with live SVE state also gets its NT_ARM_SVE regset
//! in `extra_regsets`, after NT_ARM_TLS (pointer-authentication keys are not
//! collected yet).
//!
//! # A thread stopped inside a system call
//!
//! PTRACE_INTERRUPT stops a thread on its way back to user space. If it was
//! blocked in a system call, the call has been cut short with one of the
//! kernel-internal restart codes in the return register, and the kernel
//! decides what to do with it only when the thread resumes:
//!
//! - x86_64: the stop happens before the restart logic runs. `rax` holds
//!   -ERESTARTSYS / -ERESTARTNOINTR / -ERESTARTNOHAND / -ERESTART_RESTARTBLOCK,
//!   `orig_rax` the system call number (-1 when the thread was not in a
//!   system call; it is how the kernel knows that a restart applies at all),
//!   `rip` points after the 2-byte `syscall` instruction. A restored thread
//!   is a new task whose `orig_rax` the kernel ignores (rt_sigreturn sets it
//!   to -1), so crest applies the restart itself and stores the registers
//!   ready to run: for the first three codes `rax = orig_rax` and `rip -= 2`
//!   (the call is issued again with its original arguments, which are still
//!   in rdi, rsi, rdx, r10, r8, r9); for -ERESTART_RESTARTBLOCK (nanosleep,
//!   poll with a timeout...) the kernel's restart block with the remaining
//!   time does not survive a restore, so the call returns -EINTR (the kernel
//!   already wrote the remaining time where the call asked for it). In both
//!   cases `orig_rax` is stored as -1: nothing is left to restart. Any other
//!   value (a finished call's result) is kept as it is.
//! - aarch64: the kernel rewrites the registers for a restart *before* the
//!   stop (x0 = orig_x0, pc -= 4 back onto the `svc`, x8 still the number),
//!   so the registers are already ready to run and crest stores them as read.

use super::ProcessState;
use super::signals::{check_against_proc, collect_shared_pending, collect_thread_pending};
use crate::error::{Error, Result};
use crate::image::header::Arch;
use crate::image::thread::{AltStack, Regset, Rseq, ThreadCore};
use crate::infect::Seized;
use crate::sys::Pid;
use crate::sys::ptrace::{self as pt, NT_PRSTATUS};

/// The largest FP/SIMD regset crest accepts (AMX tile data is about 11 KiB).
const MAX_FPREGS: usize = 1 << 20;

/// The FXSAVE area's `sw_reserved` bytes start at byte 464.
const SW_RESERVED: usize = 464;
/// `XFEATURE_MASK_FPSSE`: x87 and SSE state, present in every XCR0.
const XFEATURE_MASK_FPSSE: u64 = 0b11;

/// `SVE_PT_REGS_SVE`: the SVE regset holds Z/P/FFR, not only FP/SIMD.
#[cfg(target_arch = "aarch64")]
const SVE_PT_REGS_SVE: u8 = 1;

/// The kernel-internal restart codes a cut-short system call returns.
const ERESTARTSYS: i64 = 512;
const ERESTARTNOINTR: i64 = 513;
const ERESTARTNOHAND: i64 = 514;
const ERESTART_RESTARTBLOCK: i64 = 516;
const EINTR: i64 = 4;

/// user_regs_struct word indices (x86_64).
const RAX: usize = 10;
const ORIG_RAX: usize = 15;
const RIP: usize = 16;
#[cfg(target_arch = "x86_64")]
const FS_BASE: usize = 21;
/// The length of x86_64's `syscall` instruction.
const SYSCALL_INSN: u64 = 2;

/// The core of every seized thread, the leader first.
pub fn collect_cores(seized: &Seized) -> Result<Vec<ThreadCore>> {
    seized
        .threads()
        .iter()
        .map(|&tid| collect_thread_core(tid))
        .collect()
}

/// Puts the thread cores and the process-wide pending signals of `seized`
/// into `state` (task-PID.img's thread-core and shared-signals records),
/// warning about signals /proc saw pending (`state.threads`,
/// `state.shared_pending`) that have no siginfo to dump.
///
/// Call it while no `Remote` or `Parasite` holds a thread: they plant their
/// own registers and mask, which would be recorded instead of the thread's.
/// Nothing here changes the target (the syscall-restart rewrite applies to
/// the recorded copy only).
pub fn fill_cores(state: &mut ProcessState, seized: &Seized) -> Result<()> {
    let cores = collect_cores(seized)?;
    for core in &cores {
        if let Some(t) = state.threads.iter().find(|t| t.tid == core.tid) {
            let what = format!("thread {}", core.tid);
            check_against_proc(&what, &core.pending, t.pending);
        }
    }
    let shared = collect_shared_pending(seized.pid())?;
    let what = format!("pid {}", seized.pid());
    check_against_proc(&what, &shared.pending, state.shared_pending);
    state.task.threads = cores;
    state.task.shared_signals = shared;
    Ok(())
}

/// Everything ptrace tells about one seized, stopped thread. The fields
/// only the parasite can see (sigaltstack, clear_tid) stay at their
/// defaults.
pub fn collect_thread_core(tid: Pid) -> Result<ThreadCore> {
    let arch = Arch::host();
    let mut gpregs = get_regset(tid, NT_PRSTATUS, gpregs_size(), "general registers")?;
    if gpregs.len() != gpregs_size() {
        return Err(size_error(tid, "NT_PRSTATUS", gpregs.len()));
    }
    if arch == Arch::X86_64 {
        resolve_syscall_restart(&mut gpregs);
    }
    let (fpregs, extra_regsets, tls) = collect_fp_tls(tid, &gpregs)?;
    let sigmask = pt::ptrace_getsigmask(tid)
        .map_err(|e| Error::sys("PTRACE_GETSIGMASK", format!("thread {tid}"), e))?;
    Ok(ThreadCore {
        tid: tid as u32,
        arch,
        gpregs,
        fpregs,
        extra_regsets,
        tls,
        sigmask,
        pending: collect_thread_pending(tid)?,
        altstack: AltStack::default(),
        rseq: collect_rseq(tid)?,
        clear_tid: 0,
        comm: thread_comm(tid)?,
    })
}

/// The NT_PRSTATUS size of the architecture crest runs on.
pub fn gpregs_size() -> usize {
    use crate::image::thread::{AARCH64_GPREGS, X86_64_GPREGS};
    if cfg!(target_arch = "aarch64") {
        AARCH64_GPREGS
    } else {
        X86_64_GPREGS
    }
}

fn get_regset(tid: Pid, nt: u32, size: usize, what: &str) -> Result<Vec<u8>> {
    pt::ptrace_getregset_vec(tid, nt, size, MAX_FPREGS).map_err(|e| Error::Sys {
        call: "PTRACE_GETREGSET",
        context: format!("reading the {what} (note {nt:#x}) of thread {tid}"),
        errno: e,
        hint: "the thread must be seized and stopped by crest",
    })
}

fn size_error(tid: Pid, what: &str, len: usize) -> Error {
    crate::infect::target_error(
        tid,
        format!(
            "the kernel returned {len} bytes of {what}, which is not this architecture's layout"
        ),
    )
}

/// The FP/SIMD state, the extra regsets and the thread pointer.
#[cfg(target_arch = "x86_64")]
fn collect_fp_tls(tid: Pid, gpregs: &[u8]) -> Result<(Vec<u8>, Vec<Regset>, u64)> {
    use crate::image::thread::X86_64_FXSAVE;
    // A CPU without XSAVE has only the legacy FXSAVE area (NT_PRFPREG), which
    // is the first 512 bytes of an XSAVE area.
    let fp = match pt::ptrace_getregset_vec(tid, pt::NT_X86_XSTATE, 4096, MAX_FPREGS) {
        Err(crate::sys::Errno::ENODEV | crate::sys::Errno::EINVAL) => {
            get_regset(tid, pt::NT_PRFPREG, X86_64_FXSAVE, "FXSAVE area")?
        }
        r => r.map_err(|e| {
            Error::sys(
                "PTRACE_GETREGSET",
                format!("reading the XSAVE area of thread {tid}"),
                e,
            )
        })?,
    };
    if fp.len() < X86_64_FXSAVE {
        return Err(size_error(tid, "NT_X86_XSTATE", fp.len()));
    }
    Ok((fp, Vec::new(), word(gpregs, FS_BASE)))
}

/// The FP/SIMD state, the extra regsets and the thread pointer.
#[cfg(target_arch = "aarch64")]
fn collect_fp_tls(tid: Pid, _gpregs: &[u8]) -> Result<(Vec<u8>, Vec<Regset>, u64)> {
    use crate::image::thread::AARCH64_FPREGS;
    let fp = get_regset(tid, pt::NT_PRFPREG, AARCH64_FPREGS, "FP/SIMD registers")?;
    if fp.len() != AARCH64_FPREGS {
        return Err(size_error(tid, "NT_PRFPREG", fp.len()));
    }
    // tpidr_el0 first; kernels with SME add tpidr2_el0 after it.
    let tls = get_regset(tid, pt::NT_ARM_TLS, 16, "TLS register")?;
    if tls.len() < 8 {
        return Err(size_error(tid, "NT_ARM_TLS", tls.len()));
    }
    let tp = word(&tls, 0);
    let mut extra = vec![Regset {
        note: pt::NT_ARM_TLS,
        data: tls,
    }];
    extra.extend(collect_sve(tid)?);
    Ok((fp, extra, tp))
}

/// A thread's live SVE state (NT_ARM_SVE), None when the CPU has no SVE or
/// the thread's state is only FP/SIMD (then NT_PRFPREG holds all of it).
/// The regset starts with `struct user_sve_header`: u32 size, u32
/// max_size, u16 vl, u16 max_vl, u16 flags (bit 0: SVE_PT_REGS_SVE).
#[cfg(target_arch = "aarch64")]
fn collect_sve(tid: Pid) -> Result<Option<Regset>> {
    let mut head = [0u8; 16];
    match pt::ptrace_getregset(tid, pt::NT_ARM_SVE, &mut head) {
        Err(crate::sys::Errno::EINVAL | crate::sys::Errno::ENODEV) => return Ok(None),
        r => r.map_err(|e| {
            Error::sys(
                "PTRACE_GETREGSET",
                format!("reading the SVE header of thread {tid}"),
                e,
            )
        })?,
    };
    let size = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if head[12] & SVE_PT_REGS_SVE == 0 {
        return Ok(None);
    }
    if !(16..=MAX_FPREGS).contains(&size) {
        return Err(size_error(tid, "NT_ARM_SVE", size));
    }
    let mut data = vec![0u8; size];
    let got = pt::ptrace_getregset(tid, pt::NT_ARM_SVE, &mut data).map_err(|e| {
        Error::sys(
            "PTRACE_GETREGSET",
            format!("reading the SVE state of thread {tid}"),
            e,
        )
    })?;
    data.truncate(got);
    Ok(Some(Regset {
        note: pt::NT_ARM_SVE,
        data,
    }))
}

/// The 64-bit word `i` of a register block (little-endian on both arches).
fn word(regs: &[u8], i: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(b) = regs.get(i * 8..i * 8 + 8) {
        a.copy_from_slice(b);
    }
    u64::from_le_bytes(a)
}

fn set_word(regs: &mut [u8], i: usize, v: u64) {
    if let Some(b) = regs.get_mut(i * 8..i * 8 + 8) {
        b.copy_from_slice(&v.to_le_bytes());
    }
}

/// Applies x86_64's system call restart to a stopped thread's
/// user_regs_struct (see the module documentation); returns whether the
/// thread was cut short in a system call.
pub fn resolve_syscall_restart(regs: &mut [u8]) -> bool {
    let (nr, ret) = (word(regs, ORIG_RAX) as i64, word(regs, RAX) as i64);
    if nr < 0 {
        return false;
    }
    match -ret {
        ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND => {
            set_word(regs, RAX, nr as u64);
            set_word(regs, RIP, word(regs, RIP).wrapping_sub(SYSCALL_INSN));
        }
        ERESTART_RESTARTBLOCK => set_word(regs, RAX, (-EINTR) as u64),
        _ => return false,
    }
    set_word(regs, ORIG_RAX, u64::MAX);
    true
}

/// The XSAVE feature mask (XCR0 as the kernel exposes it to user space)
/// recorded in an x86_64 NT_X86_XSTATE area, or None if the area has none.
///
/// For ptrace the kernel fills the FXSAVE area's `sw_reserved` bytes with
/// its `xstate_fx_sw_bytes`, whose first word is the user feature mask
/// (`USER_XSTATE_XCR0_WORD`, the offset debuggers read XCR0 from). The
/// x87 and SSE bits are always in it, which tells an area without one.
pub fn xsave_features(fpregs: &[u8]) -> Option<u64> {
    let mask = word(fpregs.get(..SW_RESERVED + 8)?, SW_RESERVED / 8);
    (mask & XFEATURE_MASK_FPSSE == XFEATURE_MASK_FPSSE).then_some(mask)
}

/// The thread's rseq registration. Kernels without
/// PTRACE_GET_RSEQ_CONFIGURATION (before 5.13) have no way to say, and
/// report EIO: recorded as none.
fn collect_rseq(tid: Pid) -> Result<Rseq> {
    let conf = match pt::ptrace_get_rseq_configuration(tid) {
        Ok(c) => c,
        Err(crate::sys::Errno::EIO) => return Ok(Rseq::default()),
        Err(e) => {
            return Err(Error::sys(
                "PTRACE_GET_RSEQ_CONFIGURATION",
                format!("thread {tid}"),
                e,
            ));
        }
    };
    // rseq(2) accepts no flags at registration, so the kernel reports 0;
    // anything else is a registration the image cannot describe.
    if conf.flags != 0 {
        return Err(Error::Unsupported(format!(
            "thread {tid} registered rseq with flags {:#x}, which crest cannot restore",
            conf.flags
        )));
    }
    Ok(Rseq {
        addr: conf.rseq_abi_pointer,
        len: conf.rseq_abi_size,
        sig: conf.signature,
    })
}

/// /proc/TID/comm without its newline (a tid is a valid /proc entry even
/// though it is not listed).
fn thread_comm(tid: Pid) -> Result<Vec<u8>> {
    let mut comm = super::read_proc(tid as u32, "comm")?;
    if comm.last() == Some(&b'\n') {
        comm.pop();
    }
    Ok(comm)
}
