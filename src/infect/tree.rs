//! Seizing a whole process tree: the root, its children, theirs..., each
//! with every thread, through PTRACE_SEIZE per process ([`super::seize`])
//! and `/proc/PID/task/TID/children` (CONFIG_PROC_CHILDREN) per thread.
//!
//! # Why no fork escapes (without PTRACE_O_TRACEFORK)
//!
//! A process's children are read only once every one of its threads is in
//! a ptrace stop, and a stopped task cannot fork: a clone already under way
//! finishes (the child is on the parent's list) before the parent reaches
//! the stop. So the list read after the freeze is final, and each child
//! found is itself frozen before *its* list is read. By induction every
//! process that descends from the root when the last member freezes is
//! found, whatever the running members fork meanwhile: a child forked by a
//! not-yet-frozen process is on that process's list when crest reads it.
//!
//! Three things can still change a frozen parent's list, and a second pass
//! over every member's list, repeated until one finds nothing new, catches
//! them: a running child that exits while the list is being read (the
//! kernel's seq_file may then skip a neighbour), a child that exits and
//! whose own children are reparented to a frozen subreaper member, and a
//! zombie in place of a child that was running at the first read. Once a
//! pass is clean every listed child is frozen or a zombie of a frozen
//! parent, so nothing on any list can change any more.
//!
//! A child that exits before crest seizes it becomes a zombie member (its
//! frozen parent cannot reap it), or vanishes if its parent reaps
//! automatically (SIGCHLD ignored); its children then belong to another
//! tree. A vfork parent waits uninterruptibly for its child and cannot be
//! stopped until that child execs or exits.
//!
//! Release: every member is let go on every path. [`SeizedTree`] detaches
//! (or kills) the processes children first, and its Drop detaches all of
//! them, so an error anywhere leaves the tree running as it was.

use std::collections::HashSet;
use std::io::Read;

use super::seize::{Release, Seized, seize};
use crate::error::{Error, Result};
use crate::sys::Pid;
use crate::{debug, info, warn};

/// How many passes over the members' child lists before crest gives up on
/// a tree that keeps changing (see the module doc for why it settles).
const MAX_PASSES: usize = 16;

/// One process of a seized tree.
#[derive(Debug)]
pub enum Member {
    /// A live process, every thread stopped.
    Seized(Seized),
    /// A zombie child of a member: nothing to seize, its frozen parent
    /// keeps it as it is.
    Zombie(Pid),
}

impl Member {
    /// The process id.
    pub fn pid(&self) -> Pid {
        match self {
            Member::Seized(s) => s.pid(),
            Member::Zombie(p) => *p,
        }
    }
}

/// Every process of the tree under a root, parents before children.
#[derive(Debug)]
pub struct SeizedTree {
    members: Vec<Member>,
}

impl SeizedTree {
    /// The members in discovery order: the root first, each parent before
    /// its children.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The root's pid.
    pub fn root(&self) -> Pid {
        self.members.first().map_or(0, Member::pid)
    }

    /// Lets every process go, children first: detached as it was, or
    /// killed. Every member is released even if one fails; the first
    /// error is returned.
    pub fn release(mut self, mode: Release) -> Result<()> {
        let mut first = None;
        while let Some(m) = self.members.pop() {
            if let Member::Seized(s) = m {
                let pid = s.pid();
                if let Err(e) = s.release(mode) {
                    warn!("pid {pid}: {e}");
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for SeizedTree {
    fn drop(&mut self) {
        // Children first, as release() does; each Seized detaches on drop.
        while let Some(m) = self.members.pop() {
            drop(m);
        }
    }
}

/// The children of every thread of `pid` (threads listed in `tids`).
pub fn children(pid: Pid, tids: &[Pid]) -> Result<Vec<Pid>> {
    let mut out = Vec::new();
    for &tid in tids {
        let path = format!("/proc/{pid}/task/{tid}/children");
        let mut text = Vec::with_capacity(64 << 10);
        // One large read: seq_file hands out as much as fits, so a list
        // that changes meanwhile is less likely to be read in pieces.
        let read = std::fs::File::open(&path).and_then(|mut f| f.read_to_end(&mut text));
        match read {
            Ok(_) => {}
            // The thread exited: its children went to another thread.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("read", &path, e)),
        }
        for word in text.split(|c| c.is_ascii_whitespace()) {
            if let Some(c) = std::str::from_utf8(word).ok().and_then(|w| w.parse().ok()) {
                if !out.contains(&c) {
                    out.push(c);
                }
            }
        }
    }
    Ok(out)
}

/// The state letter and thread count of `pid` from /proc/PID/stat, None
/// once it is gone or dead (`X`: being reaped).
pub fn state_of(pid: Pid) -> Option<(u8, i64)> {
    let text = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let st = crate::proc::stat::parse(&text).ok()?;
    (st.state != b'X').then_some((st.state, st.num_threads))
}

/// The state of `pid` once an exit it started is over: a process half
/// way through its exit is neither seizable nor yet a zombie.
fn state_after_exit(pid: Pid) -> Option<(u8, i64)> {
    let exiting = |pid: Pid| {
        std::fs::read(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|text| crate::proc::stat::parse(&text).ok())
            .is_some_and(|st| st.is_exiting() && st.state != b'Z')
    };
    let start = std::time::Instant::now();
    while exiting(pid) && start.elapsed() < std::time::Duration::from_secs(2) {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    state_of(pid)
}

/// Seizes `root` and every process under it; see the module doc.
pub fn seize_tree(root: Pid) -> Result<SeizedTree> {
    let mut tree = SeizedTree {
        members: vec![Member::Seized(seize(root)?)],
    };
    let mut known: HashSet<Pid> = HashSet::from([root]);
    for pass in 1..=MAX_PASSES {
        let found = sweep(&mut tree, &mut known)?;
        debug!("pid {root}: tree pass {pass} found {found} new process(es)");
        if found == 0 && pass > 1 {
            info!(
                "pid {root}: seized a tree of {} process(es) in {pass} passes",
                tree.members.len()
            );
            return Ok(tree);
        }
    }
    Err(super::target_error(
        root,
        format!(
            "cannot be seized: its tree kept changing through {MAX_PASSES} passes over its children"
        ),
    ))
}

/// One pass over every member's children (members added meanwhile
/// included); how many new processes it found.
fn sweep(tree: &mut SeizedTree, known: &mut HashSet<Pid>) -> Result<usize> {
    let mut found = 0;
    let mut i = 0;
    while i < tree.members.len() {
        let Member::Seized(s) = &tree.members[i] else {
            i += 1;
            continue;
        };
        let parent = s.pid();
        let mut kids = children(parent, s.threads())?;
        kids.retain(|c| !known.contains(c));
        for c in kids {
            // A child that vanished is not remembered: should its pid be
            // reused by a new child meanwhile, that one is adopted too.
            found += 1;
            if let Some(m) = adopt(parent, c)? {
                known.insert(c);
                tree.members.push(m);
            }
        }
        i += 1;
    }
    Ok(found)
}

/// Seizes child `c` of `parent`, or records it as a zombie; None if it
/// vanished (reaped automatically) before crest got to it.
fn adopt(parent: Pid, c: Pid) -> Result<Option<Member>> {
    match state_of(c) {
        None => return Ok(None),
        Some((b'Z', 1)) => {
            debug!("pid {parent}: child {c} is a zombie");
            return Ok(Some(Member::Zombie(c)));
        }
        Some((b'Z', _)) => {
            return Err(super::target_error(
                c,
                format!(
                    "(a child of pid {parent}) cannot be seized: its main thread exited while other threads run, which crest does not support yet"
                ),
            ));
        }
        Some(_) => {}
    }
    match seize(c) {
        Ok(s) => Ok(Some(Member::Seized(s))),
        // It may have exited between the listing and the seize.
        Err(e) => match state_after_exit(c) {
            None => Ok(None),
            Some((b'Z', 1)) => Ok(Some(Member::Zombie(c))),
            Some(_) => Err(e),
        },
    }
}
