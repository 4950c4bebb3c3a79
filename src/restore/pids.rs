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
