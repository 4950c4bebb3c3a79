//! The new tasks' first steps, still in crest's code: each takes its
//! session and group, creates its own children (so each has its dumped
//! parent), waits until the whole tree exists, joins its process group,
//! puts its files back, blocks all signals and jumps into its restorer with
//! the list of crest's mappings to remove.
//!
//! Nothing here returns to crest's main: on failure a task writes the
//! reason into its restorer mapping, where crest reads it, and exits.
//!
//! # Safety
//! The restorer glue: the one unsafe step is the jump into the blob, which
//! crest copied into the task's layout mapping and whose args it just wrote.
#![allow(unsafe_code)]

use super::files::{FilesPlan, install_files};
use super::helpers::Helper;
use super::layout::Layout;
use super::tree::PidSource;
use crate::blob::proto::{self, MemRange, RestorerArgs};
use crate::blob::regs::UserRegs;
use crate::blob::sigframe::RtSigframe;
use crate::error::{Error, Result};
use crate::image::pstree::{Process, TaskState};
use crate::sys::mm::Mapping;
use crate::sys::process::{PR_SET_PDEATHSIG, SIGKILL, exit_group, prctl};

/// `PR_SET_NAME`.
const PR_SET_NAME: i32 = 15;
use crate::sys::spawn;

/// What a live task needs from crest.
pub struct LiveSetup<'a> {
    /// Its files.
    pub files: &'a FilesPlan,
    /// crest's helper fds for its restorer, which stay open.
    pub keep: &'a [i32],
    /// Its restorer mapping.
    pub layout: &'a Layout,
    /// Its plan's address.
    pub plan: u64,
    /// Where to leave an error message (`msg_len` bytes).
    pub msg: u64,
    /// Bytes of the message area.
    pub msg_len: usize,
}

/// One process of the tree as the tasks see it.
pub struct Node<'a> {
    /// The process as dumped.
    pub process: &'a Process,
    /// Its setup; None for a zombie.
    pub live: Option<LiveSetup<'a>>,
    /// Its name at dump time, when the image has it (a zombie takes it).
    pub comm: Option<&'a [u8]>,
}

/// What every task shares: the nodes, how pids are made, and the barrier
/// (a shared page: a counter of live tasks that created their children).
pub struct Shared<'a> {
    /// Every process, parents first.
    pub nodes: &'a [Node<'a>],
    /// clone3 set_tid or ns_last_pid.
    pub pids: &'a PidSource,
    /// The barrier's page.
    pub barrier: &'a Mapping,
    /// The temporary tasks for dead session and group leaders.
    pub helpers: &'a [Helper],
}

/// Runs in the new task of live node `i`; never returns.
pub fn main(sh: &Shared<'_>, i: usize) -> ! {
    let node = &sh.nodes[i];
    let Some(live) = &node.live else {
        exit_as_zombie(node.process, node.comm)
    };
    let err = match prepare(sh, i) {
        Ok(entry) => {
            // SAFETY: `entry` is the head of the restorer blob, copied into
            // this task's layout mapping, whose args were just filled in.
            unsafe { spawn::jump_to_blob(entry) }
        }
        Err(e) => e,
    };
    let mut text = err.to_string().into_bytes();
    text.truncate(live.msg_len - 1);
    text.push(0);
    live.layout.put_bytes(live.msg, &text);
    exit_group(1)
}

/// A zombie ends at once the way it ended: by its signal (without a core
/// dump) or with its exit code, for its parent to find.
fn exit_as_zombie(p: &Process, comm: Option<&[u8]>) -> ! {
    set_name(comm);
    let status = match p.state {
        TaskState::Zombie { exit_code } => exit_code,
        _ => 0,
    };
    let sig = status & 0x7f;
    if sig != 0 {
        let _ = prctl(crate::sys::process::PR_SET_DUMPABLE, 0, 0, 0, 0);
        let _ = crate::sys::process::kill(crate::sys::process::getpid(), sig);
    }
    exit_group((status >> 8) & 0xff)
}

/// Gives the task its dumped name, when the image has it.
fn set_name(comm: Option<&[u8]>) {
    if let Some(comm) = comm {
        let mut name = [0u8; crate::image::pstree::COMM_LEN];
        let n = comm.len().min(name.len() - 1);
        name[..n].copy_from_slice(&comm[..n]);
        // The kernel copies the NUL-terminated name from `name`.
        let _ = prctl(PR_SET_NAME, name.as_ptr() as u64, 0, 0, 0);
    }
}

fn prepare(sh: &Shared<'_>, i: usize) -> Result<usize> {
    let node = &sh.nodes[i];
    let p = node.process;
    let Some(live) = &node.live else {
        unreachable!("zombies exit in main")
    };
    // If crest dies now, the half-made task must not live on. A helper's
    // child waits until the helper is gone (its death would be the signal).
    let by_helper = sh.helpers.iter().any(|h| h.kids.contains(&i));
    if !by_helper {
        prctl(PR_SET_PDEATHSIG, SIGKILL as u64, 0, 0, 0)
            .map_err(|e| Error::sys("prctl", "PDEATHSIG", e))?;
    }
    if p.sid == p.pid {
        spawn::setsid().map_err(|e| Error::sys("setsid", format!("pid {}", p.pid), e))?;
        // Before any child: those born in the session inherit it.
        live.files.take_ctty()?;
    } else if p.pgid == p.pid {
        spawn::setpgid(0, 0).map_err(|e| Error::sys("setpgid", format!("pid {}", p.pid), e))?;
    }
    create_children(sh, p.pid)?;
    wait_for_tree(sh);
    if by_helper {
        prctl(PR_SET_PDEATHSIG, SIGKILL as u64, 0, 0, 0)
            .map_err(|e| Error::sys("prctl", "PDEATHSIG", e))?;
    }
    join_group(sh, p)?;
    live.files.set_foreground()?;
    // Before the files (the restorer names the threads again): a reopened
    // /proc/PID/stat that is read from past byte 0 shows the line of its
    // open, name included.
    set_name(node.comm);
    install_files(live.files, live.keep)?;
    crate::dump::run::fault_point(p.pid as i32, "restore-files")?;
    let unmap = own_mappings_but(live.layout)?;
    crate::sys::signal::rt_sigprocmask_setmask(!0)
        .map_err(|e| Error::sys("rt_sigprocmask", "blocking signals", e))?;
    write_args(live, &unmap);
    Ok(live.layout.base() + crate::blob::restorer().entry)
}

/// Creates every child of `pid` with its pid (each runs [`main`]), first
/// the helpers it makes and, through them, their children.
fn create_children(sh: &Shared<'_>, pid: u32) -> Result<()> {
    for h in sh.helpers.iter().filter(|h| h.parent == pid) {
        run_helper(sh, h)?;
    }
    for (j, child) in sh.nodes.iter().enumerate() {
        let by_helper = sh.helpers.iter().any(|h| h.kids.contains(&j));
        if child.process.ppid != pid || j == 0 || by_helper {
            continue;
        }
        if sh.pids.create(child.process.pid as i32)? == 0 {
            main(sh, j)
        }
    }
    Ok(())
}

/// Creates helper `h`, which makes its session or group and its children
/// and exits; reaps it. This task is a child subreaper meanwhile, so the
/// helper's children become its own. (The restorer sets the dumped
/// subreaper flag later.)
fn run_helper(sh: &Shared<'_>, h: &Helper) -> Result<()> {
    const PR_SET_CHILD_SUBREAPER: i32 = 36;
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        .map_err(|e| Error::sys("prctl", "PR_SET_CHILD_SUBREAPER", e))?;
    if sh.pids.create(h.pid as i32)? == 0 {
        helper_main(sh, h)
    }
    let (_, status) = crate::sys::process::wait4(h.pid as i32, crate::sys::process::__WALL)
        .map_err(|e| Error::sys("wait4", format!("helper {}", h.pid), e))?;
    let _ = prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
    if status != 0 {
        let what = if h.session {
            "session"
        } else {
            "process group"
        };
        return Err(Error::Target {
            pid: h.pid as i32,
            problem: format!(
                "the helper task recreating {what} {} failed (wait status {status:#x})",
                h.pid
            ),
        });
    }
    Ok(())
}

/// The helper: makes the dead leader's session or group, creates its
/// children in it, exits.
fn helper_main(sh: &Shared<'_>, h: &Helper) -> ! {
    let made = if h.session {
        spawn::setsid().map(|_| ())
    } else {
        spawn::setpgid(0, 0)
    };
    if made.is_err() {
        exit_group(1)
    }
    for &k in &h.kids {
        match sh.pids.create(sh.nodes[k].process.pid as i32) {
            Ok(0) => main(sh, k),
            Ok(_) => {}
            Err(_) => exit_group(2),
        }
    }
    exit_group(0)
}

/// Counts this task in and waits until every live task has created its
/// children, so that every process group leader exists.
fn wait_for_tree(sh: &Shared<'_>) {
    let live = sh.nodes.iter().filter(|n| n.live.is_some()).count() as u32;
    let mut seen = sh.barrier.fetch_add_u32(0, 1) + 1;
    if seen >= live {
        spawn::futex_wake_shared(sh.barrier.addr());
    }
    while seen < live {
        spawn::futex_wait_shared(
            sh.barrier.addr(),
            seen,
            std::time::Duration::from_millis(50),
        );
        seen = sh.barrier.read_u32(0);
    }
}

/// Joins the dumped process group when it is another process's (its
/// leader exists now).
fn join_group(sh: &Shared<'_>, p: &Process) -> Result<()> {
    let leader_here = sh.nodes.iter().any(|n| n.process.pid == p.pgid)
        || sh.helpers.iter().any(|h| h.pid == p.pgid);
    if p.pgid != p.pid && leader_here {
        spawn::setpgid(0, p.pgid as i32).map_err(|e| {
            Error::sys(
                "setpgid",
                format!("pid {} joining group {}", p.pid, p.pgid),
                e,
            )
        })?;
    }
    Ok(())
}

fn write_args(live: &LiveSetup<'_>, unmap: &[MemRange]) {
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
        plan: live.plan,
    };
    args.unmap[..unmap.len()].copy_from_slice(unmap);
    let base = live.layout.base();
    live.layout
        .put((base + crate::blob::restorer().args_offset) as u64, &args);
}

/// Every mapping of this task but its restorer's and the kernel's special
/// ones (moved by the plan, or above the user address space), as few
/// ranges as possible: munmap of a range with holes in it unmaps what is
/// there, so the mappings between two that stay become one range, however
/// many there are (other tasks' restorer mappings, inherited from crest,
/// go too). Only the restorer and the specials split the list.
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
    let mut split = true;
    for e in &entries {
        if e.is_special() || (e.end > lo && e.start < hi) {
            split = true;
            continue;
        }
        match out.last_mut() {
            Some(last) if !split => last.len = e.end - last.start,
            _ => out.push(MemRange {
                start: e.start,
                len: e.len(),
            }),
        }
        split = false;
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
