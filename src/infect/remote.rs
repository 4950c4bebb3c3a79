//! Running system calls inside a seized thread: the first step of every
//! injection, and how the parasite's memory gets mapped and unmapped.
//!
//! [`Remote::new`] saves what it is about to change: the thread's general
//! registers (NT_PRSTATUS), its FP/SIMD registers (see `fpstate`: crest's
//! code uses them too), its blocked-signal mask, and 16 bytes at an
//! executable address (the start of `[vdso]`: its ELF header, which no
//! thread ever executes; the first private r-x mapping if there is no
//! vdso). It then blocks every signal in the thread and writes
//! `SYSCALL_TRAP` plus a short name string there through `/proc/PID/mem`,
//! which (unlike process_vm_writev) may write to read-only text: the kernel
//! breaks copy-on-write for the tracer, as for a debugger's breakpoint.
//!
//! ```text
//!   code_addr  +0             +8
//!              | syscall;trap | "crest\0" |   (the memfd name)
//! ```
//!
//! Signals: with all of them blocked, one that arrives while the thread
//! runs crest's code stays pending and is delivered after the cure, as if
//! crest had not been there. SIGSTOP cannot be blocked: it is delivered
//! (PTRACE_CONT with the signal) so the group stop it asks for begins, that
//! stop is noted on the [`Seized`] (so release leaves the process stopped),
//! and the thread is continued with crest's code. A fault (SIGSEGV, SIGILL...) is an error; the
//! thread stays in its signal-delivery stop and the cure suppresses it.
//!
//! Interrupted system calls: the saved registers are put back untouched,
//! so the kernel's restart logic sees exactly what it saw at the seize. On
//! x86_64, each injected call runs with `orig_rax = -1` so that restart
//! logic cannot rewind into crest's code, and the restored
//! `orig_rax`/`rax` (e.g. nanosleep's -ERESTART_RESTARTBLOCK) restart the
//! original call when the thread resumes. On aarch64 the kernel rewinds pc
//! before the stop, so the saved registers already point at the `svc`;
//! a restart_syscall-style restart becomes a plain restart of the call.
//!
//! Code that keeps running while crest does other work (the parasite
//! daemon) is started with `Remote::start` and watched with
//! `Remote::poll` (wait4 with WNOHANG), which treats every stop exactly
//! as the blocking `Remote::run` does; `Remote::halt` interrupts it
//! when crest gives up on it.
//!
//! rseq: resuming a thread at crest's code is, for the kernel, a return to
//! user space like any other; if the thread was inside an rseq critical
//! section it is aborted exactly as a signal would abort it (glibc
//! registers rseq but runs no critical sections).

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::fpstate::FpState;
use super::seize::Seized;
use super::stop::{Stop, is_stop_signal, wait_stop};
use super::target_error;
use crate::blob::infect::{IP_AFTER_SYSCALL_TRAP, SYSCALL_TRAP};
use crate::blob::regs::UserRegs;
use crate::error::{Error, Result};
use crate::sys::process::{__WALL, SIGTRAP, WNOHANG, wait4};
use crate::sys::ptrace as pt;
use crate::sys::{Errno, Pid};
use crate::{debug, warn};

/// Bytes crest plants (and saves) at the code address.
const CODE_LEN: usize = 16;
/// Offset of the NUL-terminated name after the syscall word.
pub const NAME_OFFSET: u64 = 8;

/// One seized thread prepared to run crest's code; restores it on drop.
#[derive(Debug)]
pub struct Remote<'a> {
    seized: &'a Seized,
    tid: Pid,
    mem: File,
    code_addr: u64,
    saved_code: [u8; CODE_LEN],
    saved_regs: UserRegs,
    saved_fp: FpState,
    saved_sigmask: u64,
    /// The thread was continued and has not reported a stop since.
    running: bool,
    restored: bool,
}

fn sys(call: &'static str, tid: Pid, what: &str, e: Errno) -> Error {
    Error::sys(call, format!("thread {tid}: {what}"), e)
}

/// The address crest plants its code at: `[vdso]`, else the first private
/// executable mapping.
fn code_address(pid: Pid) -> Result<u64> {
    let text = crate::proc::read(&pid.to_string(), "maps")?;
    let maps =
        crate::proc::maps::parse(&text).map_err(|e| e.in_file(&format!("/proc/{pid}/maps")))?;
    let vdso = maps.iter().find(|m| m.path == b"[vdso]");
    let text_vma = || {
        maps.iter()
            .find(|m| m.exec && m.read && !m.shared && !m.is_special())
    };
    match vdso.or_else(text_vma) {
        Some(m) => Ok(m.start),
        None => Err(target_error(
            pid,
            "has no vdso and no private executable mapping for crest's code",
        )),
    }
}

impl<'a> Remote<'a> {
    /// Saves `tid`'s state and plants crest's code; `tid` must be a stopped
    /// thread of `seized`.
    pub fn new(seized: &'a Seized, tid: Pid) -> Result<Remote<'a>> {
        Self::new_at(seized, tid, code_address(seized.pid())?)
    }

    /// [`new`](Self::new) with the code address another Remote of the same
    /// process found: reading /proc/PID/maps for each of a thousand
    /// threads, each with its own stack mappings, made a per-thread
    /// command cost time in proportion to the thread count.
    pub fn new_at(seized: &'a Seized, tid: Pid, code_addr: u64) -> Result<Remote<'a>> {
        let pid = seized.pid();
        if !seized.threads().contains(&tid) {
            return Err(target_error(pid, format!("thread {tid} is not seized")));
        }
        let path = format!("/proc/{pid}/mem");
        let mem = File::options()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        let saved_regs = pt::ptrace_getregs(tid)
            .map_err(|e| sys("PTRACE_GETREGSET", tid, "saving registers", e))?;
        let saved_fp = FpState::save(tid)?;
        let saved_sigmask = pt::ptrace_getsigmask(tid)
            .map_err(|e| sys("PTRACE_GETSIGMASK", tid, "saving the signal mask", e))?;
        let mut saved_code = [0u8; CODE_LEN];
        mem.read_exact_at(&mut saved_code, code_addr)
            .map_err(|e| Error::io("read", &path, e))?;
        let mut remote = Remote {
            seized,
            tid,
            mem,
            code_addr,
            saved_code,
            saved_regs,
            saved_fp,
            saved_sigmask,
            running: false,
            restored: false,
        };
        remote.plant()?;
        debug!("pid {pid}: thread {tid} ready for remote calls at {code_addr:#x}");
        Ok(remote)
    }

    fn plant(&mut self) -> Result<()> {
        let tid = self.tid;
        pt::ptrace_setsigmask(tid, !0)
            .map_err(|e| sys("PTRACE_SETSIGMASK", tid, "blocking signals", e))?;
        let mut code = [0u8; CODE_LEN];
        code[..SYSCALL_TRAP.len()].copy_from_slice(&SYSCALL_TRAP);
        code[NAME_OFFSET as usize..][..6].copy_from_slice(b"crest\0");
        self.write_code(&code)
    }

    fn write_code(&self, code: &[u8; CODE_LEN]) -> Result<()> {
        let path = format!("/proc/{}/mem", self.seized.pid());
        self.mem
            .write_all_at(code, self.code_addr)
            .map_err(|e| Error::io("write", path, e))
    }

    /// The thread this runs in.
    pub fn tid(&self) -> Pid {
        self.tid
    }

    /// Where crest's code (and the name string) lives in the target.
    pub fn code_addr(&self) -> u64 {
        self.code_addr
    }

    /// The registers saved before crest changed anything.
    pub fn saved_regs(&self) -> &UserRegs {
        &self.saved_regs
    }

    /// Runs system call `nr` with `args` in the thread; returns the raw
    /// result (a negative errno on failure).
    pub fn syscall(&mut self, nr: u64, args: [u64; 6]) -> Result<i64> {
        let mut regs = self.saved_regs;
        regs.set_ip(self.code_addr);
        regs.set_syscall(nr, args);
        let name = syscalls::Sysno::new(nr as usize).map_or("?", |s| s.name());
        let what = format!("running system call {nr} ({name})");
        let after = self.run(regs, &what)?;
        if after.ip() != self.code_addr + IP_AFTER_SYSCALL_TRAP {
            return Err(self.stray_trap(after.ip(), &what));
        }
        Ok(after.ret() as i64)
    }

    /// Like [`syscall`](Self::syscall), but a negative result is an error
    /// naming `call`.
    pub fn syscall_ok(&mut self, call: &'static str, nr: u64, args: [u64; 6]) -> Result<u64> {
        let ret = self.syscall(nr, args)?;
        if (-4095..0).contains(&ret) {
            let ctx = format!(
                "pid {} (thread {}): {call} run inside the target",
                self.seized.pid(),
                self.tid
            );
            return Err(Error::sys(call, ctx, Errno::new(-ret as i32)));
        }
        Ok(ret as u64)
    }

    pub(crate) fn stray_trap(&self, ip: u64, what: &str) -> Error {
        target_error(
            self.seized.pid(),
            format!(
                "thread {}: {what} stopped on a trap at {ip:#x}, not on crest's; the target's code changed under crest",
                self.tid
            ),
        )
    }

    /// Sets `regs`, continues the thread and waits for its SIGTRAP stop;
    /// returns the registers at that stop.
    pub(crate) fn run(&mut self, regs: UserRegs, what: &str) -> Result<UserRegs> {
        self.start(regs, what)?;
        loop {
            let stop = wait_stop(self.tid)?;
            if let Some(regs) = self.on_stop(stop, what)? {
                return Ok(regs);
            }
        }
    }

    /// Sets `regs` and continues the thread without waiting: for code that
    /// runs on while crest talks to it (the parasite daemon). Follow with
    /// [`poll`](Self::poll) until it reports the trap.
    pub(crate) fn start(&mut self, mut regs: UserRegs, what: &str) -> Result<()> {
        let tid = self.tid;
        leave_syscall(&mut regs);
        pt::ptrace_setregs(tid, &regs).map_err(|e| sys("PTRACE_SETREGSET", tid, what, e))?;
        self.cont(0, what)
    }

    fn cont(&mut self, sig: i32, what: &str) -> Result<()> {
        let tid = self.tid;
        pt::ptrace_cont(tid, sig).map_err(|e| sys("PTRACE_CONT", tid, what, e))?;
        self.running = true;
        Ok(())
    }

    /// Whether the thread was continued and has not stopped since.
    pub(crate) fn is_running(&self) -> bool {
        self.running
    }

    /// Checks, without blocking, whether the started thread stopped:
    /// `Ok(None)` while it runs (stops it must pass through, such as a
    /// group stop, are handled and it is continued), the registers at its
    /// SIGTRAP, or an error for a fault or its end.
    pub(crate) fn poll(&mut self, what: &str) -> Result<Option<UserRegs>> {
        let tid = self.tid;
        if !self.running {
            return Err(target_error(
                self.seized.pid(),
                format!("thread {tid} is not running crest's code while {what}"),
            ));
        }
        match wait4(tid, __WALL | WNOHANG) {
            Ok((0, _)) | Err(Errno::EINTR) => Ok(None),
            Ok((_, status)) => self.on_stop(Stop::from_status(status), what),
            Err(e) => Err(sys("wait4", tid, what, e)),
        }
    }

    /// Stops a thread still running crest's code (PTRACE_INTERRUPT), so
    /// its registers can be set again; nothing to do if it is stopped.
    /// Whatever stop comes first counts: a signal-delivery stop is
    /// suppressed by the next continue, as after a fault.
    pub(crate) fn halt(&mut self) -> Result<()> {
        if !self.running {
            return Ok(());
        }
        let tid = self.tid;
        pt::ptrace_interrupt(tid)
            .map_err(|e| sys("PTRACE_INTERRUPT", tid, "stopping crest's code", e))?;
        let stop = wait_stop(tid)?;
        self.running = false;
        self.restored = stop.is_end();
        if let Stop::Event(sig) = stop
            && is_stop_signal(sig)
        {
            self.seized.note_stop(sig);
        }
        Ok(())
    }

    /// One stop of the running thread: the registers at a SIGTRAP, `None`
    /// when the thread was continued past it, an error for a fault or the
    /// thread's end (a faulting thread stays in its signal-delivery stop,
    /// which the cure suppresses).
    fn on_stop(&mut self, stop: Stop, what: &str) -> Result<Option<UserRegs>> {
        let tid = self.tid;
        self.running = false;
        // A thread that ended has nothing left to restore.
        self.restored = stop.is_end();
        match stop {
            Stop::Signal(SIGTRAP) => pt::ptrace_getregs(tid)
                .map(Some)
                .map_err(|e| sys("PTRACE_GETREGSET", tid, what, e)),
            Stop::Event(sig) => {
                if is_stop_signal(sig) {
                    self.seized.note_stop(sig);
                } else {
                    debug!("thread {tid}: spurious event stop while {what}");
                }
                self.cont(0, what).map(|()| None)
            }
            // SIGSTOP cannot be blocked: let it start the group stop it
            // asks for (reported next as an event stop), then go on.
            Stop::Signal(sig) if is_stop_signal(sig) => self.cont(sig, what).map(|()| None),
            Stop::Signal(sig) => {
                let ip = pt::ptrace_getregs(tid).map(|r| r.ip()).unwrap_or(0);
                Err(target_error(
                    self.seized.pid(),
                    format!(
                        "thread {tid}: signal {sig} at {ip:#x} while {what}; crest cures the target and leaves it as it was"
                    ),
                ))
            }
            Stop::Exited(_) | Stop::Killed(_) => Err(target_error(
                self.seized.pid(),
                format!("thread {tid} ended ({stop:?}) while {what}"),
            )),
        }
    }

    /// Puts back the code bytes, signal mask and registers, and checks
    /// that they read back as saved.
    pub fn restore(&mut self) -> Result<()> {
        if self.restored {
            return Ok(());
        }
        let tid = self.tid;
        // A failed wait left the thread running crest's code: stop it.
        let halted = self.halt();
        if self.restored {
            // The thread ended: nothing left to restore.
            return Ok(());
        }
        self.restored = true;
        halted?;
        let saved = self.saved_code;
        self.write_code(&saved)?;
        pt::ptrace_setregs(tid, &self.saved_regs)
            .map_err(|e| sys("PTRACE_SETREGSET", tid, "restoring registers", e))?;
        self.saved_fp.restore(tid)?;
        pt::ptrace_setsigmask(tid, self.saved_sigmask)
            .map_err(|e| sys("PTRACE_SETSIGMASK", tid, "restoring the signal mask", e))?;
        self.verify()
    }

    fn verify(&self) -> Result<()> {
        let tid = self.tid;
        let regs = pt::ptrace_getregs(tid)
            .map_err(|e| sys("PTRACE_GETREGSET", tid, "verifying registers", e))?;
        let mask = pt::ptrace_getsigmask(tid)
            .map_err(|e| sys("PTRACE_GETSIGMASK", tid, "verifying the mask", e))?;
        let mut code = [0u8; CODE_LEN];
        let path = format!("/proc/{}/mem", self.seized.pid());
        self.mem
            .read_exact_at(&mut code, self.code_addr)
            .map_err(|e| Error::io("read", path, e))?;
        if regs != self.saved_regs || mask != self.saved_sigmask || code != self.saved_code {
            return Err(target_error(
                self.seized.pid(),
                format!("thread {tid}: registers, signal mask or code bytes differ after the cure"),
            ));
        }
        debug!(
            "pid {}: thread {tid} restored and verified",
            self.seized.pid()
        );
        Ok(())
    }
}

impl Drop for Remote<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.restore() {
            warn!(
                "pid {}: restoring thread {}: {e}",
                self.seized.pid(),
                self.tid
            );
        }
    }
}

/// Makes the registers say "not inside a system call", so the kernel's
/// restart logic leaves ip alone when the thread is continued from a stop
/// that interrupted a call. aarch64 rewinds before the stop: nothing to do.
fn leave_syscall(regs: &mut UserRegs) {
    #[cfg(target_arch = "x86_64")]
    {
        regs.orig_rax = u64::MAX;
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = regs;
}
