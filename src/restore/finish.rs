//! The last stage of a restore, done by crest with ptrace once the
//! restorer reported that every thread is parked: seize each thread, have
//! the leader unmap the restorer (a system call crest runs in it, stopped
//! at the call's exit so no instruction of the vanished blob runs), load
//! each thread's registers, FP/SIMD state and signal mask as dumped, and
//! detach. A task dumped stopped gets SIGSTOP before the detach and stops
//! as a whole before it runs a single instruction.
//!
//! Registers are loaded at a PTRACE_INTERRUPT stop, never at a system-call
//! stop: on aarch64 the kernel restores x7 after a system-call stop,
//! whatever the tracer wrote. The leader therefore gets one more interrupt
//! after the munmap.

use crate::blob::infect::SYSCALL_TRAP;
use crate::error::{Error, Result};
use crate::image::thread::ThreadCore;
use crate::infect::{Stop, wait_stop};
use crate::sys::Pid;
use crate::sys::ptrace::{self as pt, NT_PRFPREG, NT_PRSTATUS};

/// `SIGTRAP | 0x80`: a system-call stop under PTRACE_O_TRACESYSGOOD.
const SYSCALL_STOP: i32 = 5 | 0x80;
/// munmap's number.
#[cfg(target_arch = "x86_64")]
const SYS_MUNMAP: u64 = 11;
#[cfg(target_arch = "aarch64")]
const SYS_MUNMAP: u64 = 215;

fn fail(tid: Pid, problem: String) -> Error {
    Error::Target { pid: tid, problem }
}

fn expect(tid: Pid, got: Stop, want: &str, ok: bool) -> Result<()> {
    if ok {
        return Ok(());
    }
    Err(fail(
        tid,
        format!("the restored thread reported {got:?} where crest expected {want}"),
    ))
}

/// Seizes `tid` and stops it at a PTRACE_INTERRUPT stop.
fn seize_stopped(tid: Pid) -> Result<()> {
    let opts = pt::PTRACE_O_TRACESYSGOOD | pt::PTRACE_O_EXITKILL;
    pt::ptrace_seize(tid, opts)
        .map_err(|e| Error::sys("PTRACE_SEIZE", format!("restored thread {tid}"), e))?;
    interrupt(tid)
}

fn interrupt(tid: Pid) -> Result<()> {
    pt::ptrace_interrupt(tid)
        .map_err(|e| Error::sys("PTRACE_INTERRUPT", format!("restored thread {tid}"), e))?;
    let s = wait_stop(tid)?;
    expect(tid, s, "an interrupt stop", matches!(s, Stop::Event(_)))
}

/// Loads the dumped registers, FP/SIMD state, extra regsets and mask.
fn load_thread(core: &ThreadCore) -> Result<()> {
    let tid = core.tid as Pid;
    let set = |nt: u32, data: &[u8], what: &str| {
        pt::ptrace_setregset(tid, nt, data).map_err(|e| {
            Error::sys(
                "PTRACE_SETREGSET",
                format!("loading the {what} of thread {tid}"),
                e,
            )
        })
    };
    set(NT_PRSTATUS, &core.gpregs, "registers")?;
    if !core.fpregs.is_empty() {
        let nt = if cfg!(target_arch = "x86_64")
            && core.fpregs.len() > crate::image::thread::X86_64_FXSAVE
        {
            pt::NT_X86_XSTATE
        } else {
            NT_PRFPREG
        };
        set(nt, &core.fpregs, "FP/SIMD state")?;
    }
    for r in &core.extra_regsets {
        set(r.note, &r.data, "extra register set")?;
    }
    pt::ptrace_setsigmask(tid, core.sigmask)
        .map_err(|e| Error::sys("PTRACE_SETSIGMASK", format!("thread {tid}"), e))
}

/// Runs munmap(base, len) in the stopped leader from the planted syscall
/// instruction at `code` and stops it again at an interrupt stop.
fn unmap_restorer(tid: Pid, code: u64, base: u64, len: u64) -> Result<()> {
    let mut regs = pt::ptrace_getregs(tid)
        .map_err(|e| Error::sys("PTRACE_GETREGS", format!("thread {tid}"), e))?;
    regs.set_syscall(SYS_MUNMAP, [base, len, 0, 0, 0, 0]);
    regs.set_ip(code);
    pt::ptrace_setregs(tid, &regs)
        .map_err(|e| Error::sys("PTRACE_SETREGS", format!("thread {tid}"), e))?;
    for stage in ["entry", "exit"] {
        pt::ptrace_syscall(tid)
            .map_err(|e| Error::sys("PTRACE_SYSCALL", format!("thread {tid}"), e))?;
        let s = wait_stop(tid)?;
        expect(
            tid,
            s,
            &format!("the munmap {stage} stop"),
            s == Stop::Signal(SYSCALL_STOP),
        )?;
    }
    let ret = pt::ptrace_getregs(tid)
        .map_err(|e| Error::sys("PTRACE_GETREGS", format!("thread {tid}"), e))?
        .ret() as i64;
    if ret != 0 {
        return Err(fail(
            tid,
            format!("unmapping the restorer failed with errno {}", -ret),
        ));
    }
    pt::ptrace_interrupt(tid)
        .map_err(|e| Error::sys("PTRACE_INTERRUPT", format!("thread {tid}"), e))?;
    pt::ptrace_cont(tid, 0).map_err(|e| Error::sys("PTRACE_CONT", format!("thread {tid}"), e))?;
    let s = wait_stop(tid)?;
    expect(
        tid,
        s,
        "an interrupt stop after munmap",
        matches!(s, Stop::Event(_)),
    )
}

/// One restored process for the takeover.
pub struct Restored<'a> {
    /// Its threads' cores, the leader first.
    pub threads: &'a [ThreadCore],
    /// Its restorer mapping (crest's view, same address in the task).
    pub layout: &'a super::layout::Layout,
    /// Spare bytes inside it for the leader's last system call.
    pub code: u64,
    /// Its stop signal if it was dumped stopped.
    pub stopped: Option<u32>,
}

/// Takes over every parked thread of every process and lets them go as
/// dumped: all are seized first (so a failure can still kill the whole
/// tree before anything runs), `fault` runs (fault injection for tests),
/// then each process gets its registers and loses its restorer.
pub fn take_over(procs: &[Restored<'_>], fault: impl FnOnce() -> Result<()>) -> Result<()> {
    for p in procs {
        for t in p.threads {
            seize_stopped(t.tid as Pid)?;
        }
    }
    fault()?;
    for p in procs {
        for core in &p.threads[1..] {
            load_thread(core)?;
        }
        p.layout.put_bytes(p.code, &SYSCALL_TRAP);
        let (base, len) = (p.layout.base() as u64, p.layout.len() as u64);
        let leader = p.threads[0].tid as Pid;
        unmap_restorer(leader, p.code, base, len)?;
        load_thread(&p.threads[0])?;
        if let Some(sig) = p.stopped {
            crate::sys::process::kill(leader, sig as i32)
                .map_err(|e| Error::sys("kill", format!("stopping restored pid {leader}"), e))?;
        }
    }
    for p in procs {
        for t in p.threads {
            let tid = t.tid as Pid;
            pt::ptrace_detach(tid)
                .map_err(|e| Error::sys("PTRACE_DETACH", format!("thread {tid}"), e))?;
        }
    }
    Ok(())
}
