//! The controlling-terminal refusal of [`super::tty`], made before the
//! tree is seized, from /proc alone: a session leader of the tree whose
//! controlling terminal (/proc/PID/stat tty_nr) is not the slave of a
//! pair whose master a process of the tree holds. A master is found by
//! the `tty-index:` line the kernel prints in /proc/PID/fdinfo/N of a
//! /dev/ptmx fd. A process that exits meanwhile is skipped: the frozen
//! pass ([`super::tty::dump_ttys`]) decides again on the frozen tree.

use crate::error::Result;
use crate::image::pstree::{Process, TaskState};

/// Refuses the tree `procs` (root first, not frozen) when a session
/// leader's controlling terminal could not come back (see the module
/// doc); the root of a shell job is left to the frozen pass's warning.
pub fn precheck(procs: &[Process], shell_job: bool) -> Result<()> {
    let job = shell_job || procs.len() == 1;
    let live: Vec<&Process> = procs
        .iter()
        .filter(|p| !matches!(p.state, TaskState::Zombie { .. }))
        .collect();
    let mut masters: Option<Vec<u32>> = None;
    for p in live.iter().filter(|p| p.sid == p.pid) {
        if job && p.pid == procs[0].pid {
            continue;
        }
        let Some(dev) = tty_nr(p.pid).filter(|&d| d != 0) else {
            continue;
        };
        let index = super::pty::slave_index(dev);
        let held = masters.get_or_insert_with(|| held_masters(&live));
        if !index.is_some_and(|i| held.contains(&i)) {
            super::tty::refuse_outside(p, dev)?;
        }
    }
    Ok(())
}

/// tty_nr of `pid`, None when it cannot be read.
fn tty_nr(pid: u32) -> Option<u64> {
    let text = crate::proc::read(&pid.to_string(), "stat").ok()?;
    let stat = crate::proc::stat::parse(&text).ok()?;
    Some(stat.tty_nr as u32 as u64)
}

/// The pair index of every /dev/ptmx fd of `live`.
fn held_masters(live: &[&Process]) -> Vec<u32> {
    let mut out = Vec::new();
    for p in live {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{}/fdinfo", p.pid)) else {
            continue;
        };
        for entry in dir.flatten() {
            let Ok(text) = std::fs::read(entry.path()) else {
                continue;
            };
            out.extend(tty_index(&text));
        }
    }
    out
}

/// The `tty-index:` of an fdinfo text (a pty master's).
fn tty_index(fdinfo: &[u8]) -> Option<u32> {
    fdinfo.split(|&b| b == b'\n').find_map(|line| {
        let rest = line.strip_prefix(b"tty-index:")?;
        std::str::from_utf8(rest).ok()?.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_comes_from_the_fdinfo_line() {
        let text = b"pos:\t0\nflags:\t02100002\nmnt_id:\t24\nino:\t91\ntty-index:\t17\n";
        assert_eq!(tty_index(text), Some(17));
        assert_eq!(tty_index(b"pos:\t0\nflags:\t02\n"), None);
    }
}
