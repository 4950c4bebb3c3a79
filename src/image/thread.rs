//! The thread-core record (task-PID.img): everything one thread needs to
//! resume where it stopped.
//!
//! Registers are stored as the bytes of the kernel's regsets (PTRACE_GETREGSET)
//! because restore hands them back to the kernel (through the rt_sigframe) in
//! the same layout: NT_PRSTATUS for the general registers (216 bytes on
//! x86_64, 272 on aarch64), and the FP/SIMD state, whose size only the running
//! kernel knows (NT_X86_XSTATE, 2432 bytes with AVX-512; NT_PRFPREG, 528 bytes
//! on aarch64). Other regsets (aarch64 NT_ARM_TLS, NT_ARM_SVE, pointer
//! authentication keys...) go into `extra_regsets` by note type.
//!
//! ```text
//!  u32 tid | u16 arch | bytes gpregs | bytes fpregs | list<(u32 note, bytes)> extra
//!  u64 tls (x86_64 fs_base, aarch64 tpidr_el0) | u64 sigmask (blocked)
//!  list<siginfo> pending | u64 ss_sp | i32 ss_flags | u64 ss_size
//!  u64 rseq_addr | u32 rseq_len | u32 rseq_sig | u64 clear_tid | bytes comm
//! ```

use super::ImageError;
use super::codec::{Reader, Writer};
use super::header::Arch;
use super::record::Record;
use super::signals::{Siginfo, decode_list};
use super::value::Value;

/// NT_PRSTATUS size on x86_64 (struct user_regs_struct).
pub const X86_64_GPREGS: usize = 216;
/// NT_PRSTATUS size on aarch64 (struct user_pt_regs).
pub const AARCH64_GPREGS: usize = 272;
/// NT_PRFPREG size on aarch64 (struct user_fpsimd_state).
pub const AARCH64_FPREGS: usize = 528;
/// The legacy FXSAVE area that starts every x86_64 XSAVE area.
pub const X86_64_FXSAVE: usize = 512;
/// The largest regset stored (SME's ZA at the largest vector length fits).
pub const MAX_REGSET: usize = 1 << 20;

/// A regset by its ELF note type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Regset {
    /// NT_* note type.
    pub note: u32,
    /// The regset's bytes.
    pub data: Vec<u8>,
}

/// sigaltstack(2) state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AltStack {
    /// ss_sp.
    pub sp: u64,
    /// ss_flags (SS_DISABLE, SS_AUTODISARM).
    pub flags: i32,
    /// ss_size.
    pub size: u64,
}

/// The rseq registration (PTRACE_GET_RSEQ_CONFIGURATION); len 0 means none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rseq {
    /// Address of struct rseq.
    pub addr: u64,
    /// Its registered length.
    pub len: u32,
    /// The abort signature.
    pub sig: u32,
}

/// One thread's CPU and signal state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadCore {
    /// Thread id.
    pub tid: u32,
    /// The register layout.
    pub arch: Arch,
    /// NT_PRSTATUS bytes.
    pub gpregs: Vec<u8>,
    /// FP/SIMD state bytes (NT_X86_XSTATE / NT_PRFPREG).
    pub fpregs: Vec<u8>,
    /// Other regsets.
    pub extra_regsets: Vec<Regset>,
    /// The thread pointer.
    pub tls: u64,
    /// Blocked signals.
    pub sigmask: u64,
    /// Signals pending for this thread.
    pub pending: Vec<Siginfo>,
    /// The alternate signal stack.
    pub altstack: AltStack,
    /// The rseq registration.
    pub rseq: Rseq,
    /// set_tid_address / CLONE_CHILD_CLEARTID address.
    pub clear_tid: u64,
    /// The thread's name (/proc/PID/task/TID/comm).
    pub comm: Vec<u8>,
}

impl ThreadCore {
    /// The instruction and stack pointers, read from the general registers.
    pub fn ip_sp(&self) -> Option<(u64, u64)> {
        let word = |i: usize| {
            let b = self.gpregs.get(i * 8..i * 8 + 8)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            Some(u64::from_le_bytes(a))
        };
        match self.arch {
            // user_regs_struct: rip is word 16, rsp word 19.
            Arch::X86_64 => Some((word(16)?, word(19)?)),
            // user_pt_regs: regs[31], then sp (31), pc (32).
            Arch::Aarch64 => Some((word(32)?, word(31)?)),
            Arch::Other(_) => None,
        }
    }

    fn check_regs(&self, r: &Reader) -> Result<(), ImageError> {
        let (gp, fp) = (self.gpregs.len(), self.fpregs.len());
        let ok = match self.arch {
            Arch::X86_64 => gp == X86_64_GPREGS && fp >= X86_64_FXSAVE,
            Arch::Aarch64 => gp == AARCH64_GPREGS && fp == AARCH64_FPREGS,
            Arch::Other(_) => true,
        };
        if !ok {
            return Err(r.error(format!(
                "thread {}: {} registers of {gp} and FP state of {fp} bytes have the wrong size",
                self.tid,
                self.arch.name()
            )));
        }
        Ok(())
    }
}

impl Record for ThreadCore {
    const KIND: u16 = 3;
    const NAME: &'static str = "thread-core";

    fn encode(&self, w: &mut Writer) {
        w.u32(self.tid);
        w.u16(self.arch.code());
        w.bytes(&self.gpregs);
        w.bytes(&self.fpregs);
        w.list(&self.extra_regsets, |w, s| {
            w.u32(s.note);
            w.bytes(&s.data);
        });
        w.u64(self.tls);
        w.u64(self.sigmask);
        w.list(&self.pending, |w, s| s.encode(w));
        w.u64(self.altstack.sp);
        w.i32(self.altstack.flags);
        w.u64(self.altstack.size);
        w.u64(self.rseq.addr);
        w.u32(self.rseq.len);
        w.u32(self.rseq.sig);
        w.u64(self.clear_tid);
        w.bytes(&self.comm);
    }

    fn decode(r: &mut Reader) -> Result<Self, ImageError> {
        let tid = r.u32()?;
        let arch = Arch::from_code(r.u16()?);
        let gpregs = r.bytes("general registers", 4096)?;
        let fpregs = r.bytes("FP state", MAX_REGSET)?;
        let extra_regsets = r.list("extra regsets", 64, 8, |r| {
            Ok(Regset {
                note: r.u32()?,
                data: r.bytes("regset", MAX_REGSET)?,
            })
        })?;
        let (tls, sigmask) = (r.u64()?, r.u64()?);
        let pending = decode_list(r)?;
        let altstack = AltStack {
            sp: r.u64()?,
            flags: r.i32()?,
            size: r.u64()?,
        };
        let rseq = Rseq {
            addr: r.u64()?,
            len: r.u32()?,
            sig: r.u32()?,
        };
        let clear_tid = r.u64()?;
        let comm = r.bytes("thread name", 64)?;
        let core = ThreadCore {
            tid,
            arch,
            gpregs,
            fpregs,
            extra_regsets,
            tls,
            sigmask,
            pending,
            altstack,
            rseq,
            clear_tid,
            comm,
        };
        core.check_regs(r)?;
        Ok(core)
    }

    fn to_value(&self) -> Value {
        let (ip, sp) = self.ip_sp().unwrap_or((0, 0));
        Value::Obj(vec![
            ("tid", Value::U(self.tid as u64)),
            ("arch", Value::Str(self.arch.name())),
            ("comm", Value::path(&self.comm)),
            ("ip", Value::Hex(ip)),
            ("sp", Value::Hex(sp)),
            ("gpregs", Value::Bytes(self.gpregs.clone())),
            ("fpregs_size", Value::U(self.fpregs.len() as u64)),
            ("fpregs", Value::Bytes(self.fpregs.clone())),
            (
                "extra_regsets",
                Value::List(
                    self.extra_regsets
                        .iter()
                        .map(|s| {
                            Value::Obj(vec![
                                ("note", Value::Hex(s.note as u64)),
                                ("data", Value::Bytes(s.data.clone())),
                            ])
                        })
                        .collect(),
                ),
            ),
            ("tls", Value::Hex(self.tls)),
            ("sigmask", Value::Hex(self.sigmask)),
            (
                "pending",
                Value::List(self.pending.iter().map(Siginfo::to_value).collect()),
            ),
            (
                "altstack",
                Value::Obj(vec![
                    ("sp", Value::Hex(self.altstack.sp)),
                    ("flags", Value::I(self.altstack.flags as i64)),
                    ("size", Value::U(self.altstack.size)),
                ]),
            ),
            (
                "rseq",
                Value::Obj(vec![
                    ("addr", Value::Hex(self.rseq.addr)),
                    ("len", Value::U(self.rseq.len as u64)),
                    ("sig", Value::Hex(self.rseq.sig as u64)),
                ]),
            ),
            ("clear_tid", Value::Hex(self.clear_tid)),
        ])
    }
}
