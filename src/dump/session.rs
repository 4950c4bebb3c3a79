//! Sessions and process groups of a dumped tree, from /proc/PID/stat of
//! every process on the machine: which of them the tree may share with
//! processes outside it.
//!
//! Session and process group ids are pids. An outsider in a session or
//! group whose id is a tree member's pid keeps that pid in use after the
//! tree is killed, so restore could not give the member its pid back, and
//! could not put the outsider back in the group either: always refused.
//! A session or group led from outside the tree (its id is no member's
//! pid) cannot be recreated by restore at all; the one exception is the
//! root's own session and group when the tree is a job of a shell: with
//! `--shell-job` restore puts the tree into crest's session and group
//! (CRIU's semantics), so the shell and its other jobs may share them.
//!
//! Without `--shell-job` the root of a tree of several processes must lead
//! its session (CRIU's rule: then every session and group of the tree was
//! created inside it). A dump of a single process keeps the behaviour it
//! had before trees: it is always treated as a shell job, restore putting
//! it into crest's session and group.

use crate::error::{Error, Result};
use crate::image::pstree::Process;

/// What crest knows about a process outside the tree.
#[derive(Clone)]
struct Outsider {
    pid: u32,
    ppid: i32,
    comm: String,
    pgid: u32,
    sid: u32,
    zombie: bool,
}

/// Every process on the machine as /proc shows it at one moment: what
/// [`check_sessions`] compares a tree with. The scan needs no member, so
/// it can run on another thread while crest walks the tree itself.
pub struct Machine(Vec<Outsider>);

impl Machine {
    /// Scans /proc/PID/stat of every process on the machine.
    pub fn scan() -> Result<Machine> {
        processes().map(Machine)
    }
}

/// Refuses a tree (`procs`, the root first) whose sessions or groups are
/// shared with outsiders beyond what the module doc allows.
pub fn check_sessions(procs: &[Process], shell_job: bool) -> Result<()> {
    check_sessions_in(procs, shell_job, &Machine::scan()?)
}

/// [`check_sessions`] against a scan of the machine taken before (while
/// the tree was walked, or once it was frozen).
pub fn check_sessions_in(procs: &[Process], shell_job: bool, machine: &Machine) -> Result<()> {
    let members: Vec<u32> = procs.iter().map(|p| p.pid).collect();
    let me = std::process::id();
    let others: Vec<Outsider> = outsiders(&machine.0, &members)
        .into_iter()
        .filter(|o| o.pid != me)
        .collect();
    match conflict(procs, &others, shell_job) {
        Some(why) => Err(Error::Unsupported(why)),
        None => Ok(()),
    }
}

/// Why the tree `procs` cannot be dumped beside the processes `others`
/// (none of which is a member), or None.
fn conflict(procs: &[Process], others: &[Outsider], shell_job: bool) -> Option<String> {
    let root = procs.first()?;
    let members: Vec<u32> = procs.iter().map(|p| p.pid).collect();
    let job = shell_job || procs.len() == 1;
    if !job && root.sid != root.pid {
        return Some(format!(
            "pid {} is not a session leader: its session {} is led from outside its tree; dump it with --shell-job (-j) to restore the tree into crest's session, or start its root with setsid",
            root.pid, root.sid
        ));
    }
    // The root's session and group when led from outside the tree: a
    // shell job shares them.
    let outside = |id: u32| job && id != 0 && !members.contains(&id);
    let sids: Vec<u32> = procs
        .iter()
        .map(|p| p.sid)
        .filter(|&s| s != 0 && !(outside(s) && s == root.sid))
        .collect();
    let pgids: Vec<u32> = procs
        .iter()
        .map(|p| p.pgid)
        .filter(|&g| g != 0 && !(outside(g) && g == root.pgid))
        .collect();
    others.iter().find_map(|o| {
        let (what, id) = if sids.contains(&o.sid) {
            ("session", o.sid)
        } else if pgids.contains(&o.pgid) {
            ("process group", o.pgid)
        } else {
            return None;
        };
        Some(refusal(o, what, id, root, &members))
    })
}

fn refusal(o: &Outsider, what: &str, id: u32, root: &Process, members: &[u32]) -> String {
    let zombie = if o.zombie { ", a zombie," } else { "" };
    let (o_pid, r) = (o.pid, root.pid);
    let o_comm = format!("{}, child of pid {}", o.comm, o.ppid);
    if members.contains(&id) {
        format!(
            "pid {o_pid} (`{o_comm}`){zombie} outside the tree of pid {r} is in the {what} {id} led by a process of the tree; restore could not give that process its pid back: end pid {o_pid} or dump a tree that holds it"
        )
    } else {
        let roots = if what == "session" {
            root.sid
        } else {
            root.pgid
        };
        let hint = if id == roots {
            "; if the tree is a job of a shell, dump it with --shell-job (-j)"
        } else {
            ""
        };
        format!(
            "pid {o_pid} (`{o_comm}`){zombie} outside the tree of pid {r} shares the {what} {id} with it, which restore could not recreate{hint}"
        )
    }
}

/// Every process on the machine that neither is a member nor descends
/// from one. A descendant that is no member can only be a child forked
/// while the tree still ran (the check before the seize); the seize takes
/// it in.
fn outsiders(all: &[Outsider], members: &[u32]) -> Vec<Outsider> {
    let parent = |pid: u32| all.iter().find(|o| o.pid == pid).map(|o| o.ppid);
    let descends = |o: &Outsider| {
        let mut p = o.ppid;
        for _ in 0..all.len() {
            match u32::try_from(p) {
                Ok(q) if members.contains(&q) => return true,
                Ok(q) if q > 1 => p = parent(q).unwrap_or(0),
                _ => return false,
            }
        }
        false
    };
    all.iter()
        .filter(|o| !members.contains(&o.pid) && !descends(o))
        .cloned()
        .collect()
}

/// Every process on the machine.
fn processes() -> Result<Vec<Outsider>> {
    let dir = std::fs::read_dir("/proc").map_err(|e| Error::io("list", "/proc", e))?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // A process gone meanwhile shares nothing any more.
        let Some(text) = read_stat(pid, &mut buf) else {
            continue;
        };
        let Ok(st) = crate::proc::stat::parse(text) else {
            continue;
        };
        out.push(Outsider {
            pid,
            ppid: st.ppid,
            comm: String::from_utf8_lossy(&st.comm).into_owned(),
            pgid: u32::try_from(st.pgrp).unwrap_or(0),
            sid: u32::try_from(st.session).unwrap_or(0),
            zombie: st.state == b'Z',
        });
    }
    Ok(out)
}

/// /proc/PID/stat into `buf` with one open and as few reads as it takes
/// (std::fs::read would stat it and grow its buffer from 32 bytes: twice
/// the system calls, for every process on the machine, on every dump).
fn read_stat(pid: u32, buf: &mut [u8]) -> Option<&[u8]> {
    use std::io::Read;
    let mut f = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let mut len = 0;
    while len < buf.len() {
        match f.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(&buf[..len])
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

    fn o(pid: u32, pgid: u32, sid: u32) -> Outsider {
        Outsider {
            pid,
            ppid: 1,
            comm: "x".into(),
            pgid,
            sid,
            zombie: false,
        }
    }

    /// A shell (pid 10, leading session and group 10) and its job: root
    /// 100 in group 100, child 101.
    fn job() -> Vec<Process> {
        vec![p(100, 10, 100, 10), p(101, 100, 100, 10)]
    }

    #[test]
    fn a_tree_must_lead_its_session_unless_shell_job() {
        let shell = [o(10, 10, 10)];
        let why = conflict(&job(), &shell, false).unwrap();
        assert!(
            why.contains("not a session leader") && why.contains("--shell-job"),
            "{why}"
        );
        assert_eq!(conflict(&job(), &shell, true), None);
        // One process is a shell job as before trees were dumped.
        assert_eq!(conflict(&job()[..1], &shell, false), None);
    }

    #[test]
    fn an_outsider_in_a_group_or_session_led_by_a_member_is_refused_even_with_j() {
        // Another job of the shell joined the tree's group 100.
        let intruder = [o(10, 10, 10), o(200, 100, 10)];
        for j in [false, true] {
            let why = conflict(&job()[..1], &intruder, j).unwrap();
            assert!(
                why.contains("pid 200") && why.contains("process group 100"),
                "{why}"
            );
        }
        // An orphan of a tree that leads its session.
        let tree = [p(100, 1, 100, 100), p(101, 100, 101, 100)];
        let why = conflict(&tree, &[o(300, 101, 100)], true).unwrap();
        assert!(
            why.contains("pid 300") && why.contains("session 100"),
            "{why}"
        );
        assert!(why.contains("led by a process of the tree"), "{why}");
    }

    #[test]
    fn a_group_led_from_outside_other_than_the_roots_is_refused() {
        // Member 101 joined the shell's own group 10 (not the root's 100).
        let tree = [p(100, 10, 100, 10), p(101, 100, 10, 10)];
        let why = conflict(&tree, &[o(10, 10, 10)], true).unwrap();
        assert!(
            why.contains("pid 10 ") && why.contains("process group 10"),
            "{why}"
        );
    }

    #[test]
    fn unrelated_processes_do_not_matter() {
        let tree = [p(100, 1, 100, 100), p(101, 100, 101, 100)];
        let others = [o(1, 1, 1), o(10, 10, 10), o(2, 0, 0)];
        assert_eq!(conflict(&tree, &others, false), None);
    }
}
