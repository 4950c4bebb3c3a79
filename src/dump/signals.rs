//! Pending signals with their full siginfo, read with PTRACE_PEEKSIGINFO
//! from a seized, stopped thread: its private queue (flags 0) and the
//! process-wide queue (PTRACE_PEEKSIGINFO_SHARED).
//!
//! PEEKSIGINFO copies queue entries from an offset without dequeuing them,
//! so the target still receives every signal after crest lets it go (a
//! dump with --leave-running must not eat a signal). The queue is read in
//! batches until the kernel returns fewer than asked. /proc's SigPnd/ShdPnd
//! masks say which signals are pending without their payloads; they serve
//! here only as a cross-check.

use crate::error::{Error, Result};
use crate::image::signals::{SharedSignals, Siginfo};
use crate::sys::Pid;
use crate::sys::ptrace::{PTRACE_PEEKSIGINFO_SHARED, ptrace_peeksiginfo};
use crate::sys::signal::SigInfo;
use crate::warn;

/// How many siginfos one PTRACE_PEEKSIGINFO copies (4 KiB of buffer).
const BATCH: usize = 32;

/// The signals queued to thread `tid` alone, in queue order.
pub fn collect_thread_pending(tid: Pid) -> Result<Vec<Siginfo>> {
    peek_all(tid, 0, "its own")
}

/// The signals queued to the whole process, read through any of its seized
/// threads (`tid`), in queue order.
pub fn collect_shared_pending(tid: Pid) -> Result<SharedSignals> {
    Ok(SharedSignals {
        pending: peek_all(tid, PTRACE_PEEKSIGINFO_SHARED, "the process-wide")?,
    })
}

fn peek_all(tid: Pid, flags: u32, queue: &str) -> Result<Vec<Siginfo>> {
    let mut out = Vec::new();
    let mut buf = [SigInfo([0; 128]); BATCH];
    loop {
        let n = ptrace_peeksiginfo(tid, out.len() as u64, flags, &mut buf).map_err(|e| {
            Error::sys(
                "PTRACE_PEEKSIGINFO",
                format!("reading {queue} pending signal queue of thread {tid}"),
                e,
            )
        })?;
        out.extend(buf[..n.min(BATCH)].iter().map(|s| Siginfo(s.0)));
        if n < BATCH {
            return Ok(out);
        }
    }
}

/// The set of signal numbers in `pending` as a mask (bit n-1 for signal n).
pub fn signal_mask(pending: &[Siginfo]) -> u64 {
    pending
        .iter()
        .filter(|s| (1..=64).contains(&s.signo()))
        .fold(0, |m, s| m | 1u64 << (s.signo() - 1))
}

/// Warns when the queue read with ptrace lacks a signal /proc reported
/// pending (`proc_mask`): such a signal has no queue entry (the kernel
/// could not allocate one) and a restore cannot re-create its siginfo.
pub fn check_against_proc(what: &str, pending: &[Siginfo], proc_mask: u64) {
    let missing = proc_mask & !signal_mask(pending);
    if missing != 0 {
        warn!("{what}: signals {missing:#x} are pending without a siginfo; they are not dumped");
    }
}
