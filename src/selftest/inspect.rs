//! What the workload asks the kernel about itself, through /proc/self:
//! its thread ids (/proc/thread-self, /proc/self/task), pending signals
//! (ShdPnd, SigPnd), POSIX timers (/proc/self/timers) and the protection
//! of a mapping (/proc/self/maps).
//!
//! The workload verifies what came back after a restore against the
//! kernel's view, not against its own memory only: memory is what the
//! restore copied, the kernel's tables are what it rebuilt.

use crate::proc;

/// The calling thread's id, from the /proc/thread-self link (`PID/task/TID`).
pub fn own_tid() -> Option<i32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

/// The thread ids of this process, sorted.
pub fn task_ids() -> Result<Vec<i32>, String> {
    let dir = std::fs::read_dir("/proc/self/task").map_err(|e| format!("/proc/self/task: {e}"))?;
    let mut tids: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    Ok(tids)
}

fn status(path: &str) -> Result<proc::status::Status, String> {
    let text = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    proc::status::parse(&text).map_err(|e| format!("{path}: {e:?}"))
}

/// The signals pending for the whole process (ShdPnd), bit n-1 for signal n.
pub fn shared_pending() -> Result<u64, String> {
    Ok(status("/proc/self/status")?.shared_pending)
}

/// The signals pending for thread `tid` only (its SigPnd).
pub fn thread_pending(tid: i32) -> Result<u64, String> {
    Ok(status(&format!("/proc/self/task/{tid}/status"))?.sig_pending)
}

/// The POSIX timers of this process as (id, clock), sorted.
pub fn timers() -> Result<Vec<(i32, i32)>, String> {
    let text = std::fs::read("/proc/self/timers").map_err(|e| format!("/proc/self/timers: {e}"))?;
    let parsed = proc::timers::parse(&text).map_err(|e| format!("/proc/self/timers: {e:?}"))?;
    let mut out: Vec<(i32, i32)> = parsed.iter().map(|t| (t.id, t.clock_id)).collect();
    out.sort_unstable();
    Ok(out)
}

/// The protection of the mapping holding `addr`, as maps shows it ("r--p").
pub fn perms_at(addr: usize) -> Result<String, String> {
    let text = std::fs::read("/proc/self/maps").map_err(|e| format!("/proc/self/maps: {e}"))?;
    let entries = proc::maps::parse(&text).map_err(|e| format!("/proc/self/maps: {e:?}"))?;
    let e = entries
        .iter()
        .find(|e| e.start <= addr as u64 && (addr as u64) < e.end)
        .ok_or_else(|| format!("no mapping holds {addr:#x}"))?;
    let flag = |on: bool, c: char| if on { c } else { '-' };
    Ok([
        flag(e.read, 'r'),
        flag(e.write, 'w'),
        flag(e.exec, 'x'),
        if e.shared { 's' } else { 'p' },
    ]
    .iter()
    .collect())
}

/// Bit of signal `sig` in a /proc signal mask.
pub fn bit(sig: i32) -> u64 {
    1u64 << (sig - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_answers_about_this_process() {
        let tid = own_tid().expect("a tid");
        assert!(task_ids().unwrap().contains(&tid));
        assert!(thread_pending(tid).is_ok());
        assert!(shared_pending().is_ok());
        static RO: [u8; 64] = [7; 64];
        let p = perms_at(std::hint::black_box(&RO).as_ptr() as usize).unwrap();
        assert!(p.starts_with("r-"), "{p}");
        let heap = vec![1u8; 4096];
        assert_eq!(&perms_at(heap.as_ptr() as usize).unwrap()[..2], "rw");
        assert_eq!(bit(1), 1);
        assert_eq!(bit(28), 1 << 27);
    }
}
