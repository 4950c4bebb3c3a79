//! The FP/SIMD registers of a thread crest runs its own code in, saved
//! before and written back after (PTRACE_GETREGSET / SETREGSET).
//!
//! The parasite is ordinary compiled code: it uses vector registers freely
//! (zeroing or copying a reply goes through xmm0/xmm1 or q0/q1), as the C
//! ABI lets any callee do. But the thread was stopped at an arbitrary
//! instruction, not at a call, so any of those registers may hold a live
//! value; a thread that runs on after the cure (`dump -R`, `pre-dump`)
//! must find them as they were.
//!
//! - x86_64: the whole XSAVE area (NT_X86_XSTATE), or the FXSAVE area
//!   (NT_PRFPREG) on a CPU without XSAVE.
//! - aarch64: the FP/SIMD registers (NT_PRFPREG) and, when the thread's
//!   SVE state is live, the SVE registers (NT_ARM_SVE) too: the parasite's
//!   system calls discard the upper bits of the Z registers, and writing
//!   the SVE regset back makes them live again.

use crate::error::{Error, Result};
use crate::sys::ptrace as pt;
use crate::sys::{Errno, Pid};

/// A sanity bound on a regset's size (AMX tiles make XSAVE areas ~11 KiB,
/// the largest SVE vector length ~9 KiB).
const MAX_REGSET: usize = 1 << 20;

/// `SVE_PT_REGS_SVE`, in the flags of `struct user_sve_header` (byte 12):
/// the regset holds the Z/P/FFR registers, not only FP/SIMD.
#[cfg(target_arch = "aarch64")]
const SVE_PT_REGS_SVE: u8 = 1;

/// The regsets read from one thread, in the order they are written back.
#[derive(Debug)]
pub struct FpState {
    regsets: Vec<(u32, Vec<u8>)>,
}

fn sys(call: &'static str, tid: Pid, nt: u32, e: Errno) -> Error {
    Error::sys(call, format!("thread {tid}: FP/SIMD regset {nt:#x}"), e)
}

fn read(tid: Pid, nt: u32, hint: usize) -> std::result::Result<Vec<u8>, Errno> {
    pt::ptrace_getregset_vec(tid, nt, hint, MAX_REGSET)
}

/// The kernel has no such regset for this CPU.
fn absent(e: Errno) -> bool {
    matches!(e, Errno::ENODEV | Errno::EINVAL)
}

impl FpState {
    /// Reads the FP/SIMD state of the stopped thread `tid`.
    #[cfg(target_arch = "x86_64")]
    pub fn save(tid: Pid) -> Result<FpState> {
        let regset = match read(tid, pt::NT_X86_XSTATE, 4096) {
            Ok(data) => (pt::NT_X86_XSTATE, data),
            Err(e) if absent(e) => (
                pt::NT_PRFPREG,
                read(tid, pt::NT_PRFPREG, 512)
                    .map_err(|e| sys("PTRACE_GETREGSET", tid, pt::NT_PRFPREG, e))?,
            ),
            Err(e) => return Err(sys("PTRACE_GETREGSET", tid, pt::NT_X86_XSTATE, e)),
        };
        Ok(FpState {
            regsets: vec![regset],
        })
    }

    /// Reads the FP/SIMD state of the stopped thread `tid`.
    #[cfg(target_arch = "aarch64")]
    pub fn save(tid: Pid) -> Result<FpState> {
        let fp = read(tid, pt::NT_PRFPREG, 528)
            .map_err(|e| sys("PTRACE_GETREGSET", tid, pt::NT_PRFPREG, e))?;
        let mut regsets = vec![(pt::NT_PRFPREG, fp)];
        match read(tid, pt::NT_ARM_SVE, 1024) {
            Ok(sve) if sve.get(12).is_some_and(|f| f & SVE_PT_REGS_SVE != 0) => {
                regsets.push((pt::NT_ARM_SVE, sve));
            }
            Ok(_) => {}
            Err(e) if absent(e) => {}
            Err(e) => return Err(sys("PTRACE_GETREGSET", tid, pt::NT_ARM_SVE, e)),
        }
        Ok(FpState { regsets })
    }

    /// Writes the saved state back into the stopped thread `tid`.
    pub fn restore(&self, tid: Pid) -> Result<()> {
        for (nt, data) in &self.regsets {
            pt::ptrace_setregset(tid, *nt, data)
                .map_err(|e| sys("PTRACE_SETREGSET", tid, *nt, e))?;
        }
        Ok(())
    }
}
