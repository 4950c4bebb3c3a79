//! Whether the dumped pid and thread ids are free here, checked before any
//! process is created so a collision is refused with the name of whoever
//! holds the id (from /proc/ID/status, which exists for every task id,
//! thread or not).

use crate::error::{Error, Result};

/// Refuses when any of `ids` is in use, naming the holder.
pub fn check_free(ids: &[u32]) -> Result<()> {
    for &id in ids {
        if let Some(holder) = holder(id) {
            return Err(Error::Unsupported(format!(
                "pid {id} is in use by {holder}; stop that process or restore where the pid is free"
            )));
        }
    }
    Ok(())
}

/// `` `comm` (pid N) `` of the task with id `id`, or None when it is free.
fn holder(id: u32) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{id}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let (name, tgid) = (field("Name:"), field("Tgid:"));
    Some(if tgid == id.to_string() {
        format!("`{name}` (pid {id})")
    } else {
        format!("a thread of `{name}` (pid {tgid})")
    })
}

/// A process whose session or process group id is `id` (a pid number stays
/// taken while it names a live session or group), as `` `comm` (pid N) ``.
pub fn group_user(id: u32) -> Option<String> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp session ...
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.get(2) == Some(&id.to_string().as_str()) || f.get(3) == Some(&id.to_string().as_str())
        {
            let (pid, comm) = head.split_once(" (").unwrap_or((head, ""));
            return Some(format!("`{comm}` (pid {pid})"));
        }
    }
    None
}
