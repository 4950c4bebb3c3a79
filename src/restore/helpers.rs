//! Temporary tasks for sessions and process groups whose leader is dead
//! (CRIU's helpers). A session or group exists only while a process is in
//! it, and only its leader can create it: when the leader exited before
//! the dump, restore creates a helper with the leader's pid, which makes
//! the session (setsid) or the group (setpgid) and creates the members
//! that are its parent's children in the image, so they are born in it.
//! Then the helper exits; its parent, a child subreaper for that moment,
//! reaps it and inherits the members, as their dumped parent. Nothing of
//! the helper remains; later members of a helper's group join it with
//! setpgid as members of any group do.

use crate::error::{Error, Result};
use crate::image::pstree::Process;

/// One helper task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Helper {
    /// The dead leader's pid, which the helper takes.
    pub pid: u32,
    /// The process that creates it and inherits its children.
    pub parent: u32,
    /// setsid (a dead session leader) or setpgid (a dead group leader).
    pub session: bool,
    /// The processes it creates (indices in pstree order).
    pub kids: Vec<usize>,
}

/// The helpers `procs` (pstree order, the root first) needs; refuses a
/// shape no helper can build.
pub fn plan(procs: &[Process]) -> Result<Vec<Helper>> {
    let in_tree = |pid: u32| procs.iter().any(|q| q.pid == pid);
    let mut out: Vec<Helper> = Vec::new();
    for (i, p) in procs.iter().enumerate().skip(1) {
        let Some(parent) = procs.iter().find(|q| q.pid == p.ppid) else {
            continue;
        };
        if p.sid != parent.sid && p.sid != p.pid {
            if in_tree(p.sid) {
                return Err(refusal(
                    p,
                    "session",
                    p.sid,
                    "led by a process of the tree that is not its ancestor",
                ));
            }
            add(&mut out, p, parent, true, i)?;
            continue;
        }
        let leader_here = procs.iter().any(|q| q.pid == p.pgid && q.sid == p.sid);
        if p.pgid == p.pid || p.pgid == parent.pgid || leader_here {
            continue;
        }
        match out.iter_mut().find(|h| h.pid == p.pgid) {
            Some(h) if h.parent == parent.pid && !h.session => h.kids.push(i),
            // Its group exists through the helper's children: it joins.
            Some(_) => {}
            None if in_tree(p.pgid) => {
                return Err(refusal(
                    p,
                    "process group",
                    p.pgid,
                    "led by a process of another session",
                ));
            }
            None => add(&mut out, p, parent, false, i)?,
        }
    }
    Ok(out)
}

/// Gives `p` (index `i`) to the helper for its dead leader, made by its
/// parent.
fn add(
    out: &mut Vec<Helper>,
    p: &Process,
    parent: &Process,
    session: bool,
    i: usize,
) -> Result<()> {
    let id = if session { p.sid } else { p.pgid };
    match out.iter_mut().find(|h| h.pid == id) {
        Some(h) if h.parent == parent.pid && h.session == session => h.kids.push(i),
        Some(h) => {
            return Err(refusal(
                p,
                if session { "session" } else { "process group" },
                id,
                &format!(
                    "whose leader is dead and whose other members are children of pid {}, not of its parent {}",
                    h.parent, parent.pid
                ),
            ));
        }
        None => out.push(Helper {
            pid: id,
            parent: parent.pid,
            session,
            kids: vec![i],
        }),
    }
    Ok(())
}

fn refusal(p: &Process, what: &str, id: u32, why: &str) -> Error {
    Error::Unsupported(format!(
        "process {} is in {what} {id}, {why}; crest cannot recreate that {what}",
        p.pid
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::pstree::TaskState;

    fn p(pid: u32, ppid: u32, pgid: u32, sid: u32) -> Process {
        Process {
            pid,
            ppid,
            pgid,
            sid,
            state: TaskState::Running,
            threads: vec![pid],
        }
    }

    #[test]
    fn a_dead_session_leader_gets_a_helper_made_by_the_orphans_parent() {
        let tree = [
            p(10, 1, 10, 10),
            p(12, 10, 11, 11),
            p(13, 12, 11, 11),
            p(14, 10, 14, 10),
        ];
        let h = plan(&tree).unwrap();
        assert_eq!(
            h,
            vec![Helper {
                pid: 11,
                parent: 10,
                session: true,
                kids: vec![1],
            }]
        );
    }

    #[test]
    fn a_dead_group_leader_gets_a_helper_and_later_members_join() {
        let tree = [
            p(10, 1, 10, 10),
            p(12, 10, 11, 10),
            p(13, 10, 11, 10),
            p(14, 13, 11, 10),
        ];
        let h = plan(&tree).unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!((h[0].pid, h[0].parent, h[0].session), (11, 10, false));
        assert_eq!(h[0].kids, vec![1, 2]);
    }

    #[test]
    fn a_live_tree_needs_no_helper_and_a_split_dead_session_is_refused() {
        let tree = [p(10, 1, 10, 10), p(12, 10, 12, 10), p(13, 12, 12, 10)];
        assert!(plan(&tree).unwrap().is_empty());
        let split = [
            p(10, 1, 10, 10),
            p(12, 10, 12, 10),
            p(13, 10, 11, 11),
            p(14, 12, 11, 11),
        ];
        let e = plan(&split).unwrap_err().to_string();
        assert!(e.contains("session 11"), "{e}");
    }
}
