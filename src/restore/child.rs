//! The new task's first steps, still in crest's code: its session and
//! group, its files, all signals blocked, then the jump into the restorer
//! with the list of crest's own mappings to remove.
//!
//! Nothing here can return to crest's main: on failure the task writes the
//! reason into the restorer mapping, where crest reads it, and exits.
//!
//! # Safety
//! The restorer glue: the one unsafe step is the jump into the blob, which
//! crest copied into the layout mapping and whose args it just wrote.
#![allow(unsafe_code)]

use super::files::{FilesPlan, install_files};
use super::layout::Layout;
use crate::blob::proto::{self, MemRange, RestorerArgs};
use crate::blob::regs::UserRegs;
use crate::blob::sigframe::RtSigframe;
use crate::error::{Error, Result};
use crate::image::pstree::Process;
use crate::sys::process::{PR_SET_PDEATHSIG, SIGKILL, exit_group, prctl};
use crate::sys::spawn;

/// What the task needs from crest.
pub struct ChildSetup<'a> {
    /// The process as dumped (pid, sid, pgid).
    pub process: &'a Process,
    /// Its files.
    pub files: &'a FilesPlan,
    /// crest's helper fds, which stay open for the restorer.
    pub keep: &'a [i32],
    /// The restorer mapping.
    pub layout: &'a Layout,
    /// The plan's address.
    pub plan: u64,
    /// Where to leave an error message (`msg_len` bytes).
    pub msg: u64,
    /// Bytes of the message area.
    pub msg_len: usize,
}

/// Runs in the new task; never returns.
pub fn main(s: &ChildSetup<'_>) -> ! {
    let err = match prepare(s) {
        Ok(entry) => {
            // SAFETY: `entry` is the head of the restorer blob, copied into
            // the layout mapping, whose args were just filled in.
            unsafe { spawn::jump_to_blob(entry) }
        }
        Err(e) => e,
    };
    let mut text = err.to_string().into_bytes();
    text.truncate(s.msg_len - 1);
    text.push(0);
    s.layout.put_bytes(s.msg, &text);
    exit_group(1)
}

fn prepare(s: &ChildSetup<'_>) -> Result<usize> {
    // If crest dies now, the half-made task must not live on.
    prctl(PR_SET_PDEATHSIG, SIGKILL as u64, 0, 0, 0)
        .map_err(|e| Error::sys("prctl", "PDEATHSIG", e))?;
    let p = s.process;
    if p.sid == p.pid {
        spawn::setsid().map_err(|e| Error::sys("setsid", format!("pid {}", p.pid), e))?;
    } else if p.pgid == p.pid {
        spawn::setpgid(0, 0).map_err(|e| Error::sys("setpgid", format!("pid {}", p.pid), e))?;
    }
    install_files(s.files, s.keep)?;
    crate::dump::run::fault_point(p.pid as i32, "restore-files")?;
    let unmap = own_mappings_but(s.layout)?;
    crate::sys::signal::rt_sigprocmask_setmask(!0)
        .map_err(|e| Error::sys("rt_sigprocmask", "blocking signals", e))?;
    let (rseq_addr, rseq_len, rseq_sig) = spawn::own_rseq();
    let mut args = RestorerArgs {
        ret: proto::RET_PENDING,
        nr_unmap: unmap.len() as u32,
        failed: 0,
        flags: 0,
        rseq_addr,
        rseq_len,
        rseq_sig,
        unmap: [MemRange::default(); proto::RESTORER_MAX_UNMAP],
        frame: RtSigframe::new(&UserRegs::default(), 0),
        plan: s.plan,
    };
    args.unmap[..unmap.len()].copy_from_slice(&unmap);
    let blob = crate::blob::restorer();
    let base = s.layout.base();
    s.layout.put((base + blob.args_offset) as u64, &args);
    Ok(base + blob.entry)
}

/// Every mapping of this task but the restorer's and the kernel's special
/// ones (moved by the plan, or above the user address space), merged.
fn own_mappings_but(layout: &Layout) -> Result<Vec<MemRange>> {
    let text =
        std::fs::read("/proc/self/maps").map_err(|e| Error::io("read", "/proc/self/maps", e))?;
    let entries = crate::proc::maps::parse(&text).map_err(|e| Error::Proc {
        path: "/proc/self/maps".into(),
        line: 0,
        problem: format!("{e:?}"),
    })?;
    let (lo, hi) = (layout.base() as u64, (layout.base() + layout.len()) as u64);
    let mut out: Vec<MemRange> = Vec::new();
    for e in entries
        .iter()
        .filter(|e| !e.is_special() && (e.end <= lo || e.start >= hi))
    {
        match out.last_mut() {
            Some(last) if last.start + last.len == e.start => last.len += e.len(),
            _ => out.push(MemRange {
                start: e.start,
                len: e.len(),
            }),
        }
    }
    if out.len() > proto::RESTORER_MAX_UNMAP {
        return Err(Error::Unsupported(format!(
            "crest has {} separate mappings, more than the restorer can remove ({})",
            out.len(),
            proto::RESTORER_MAX_UNMAP
        )));
    }
    Ok(out)
}
