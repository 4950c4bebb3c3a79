//! `/proc/PID/stat`: one line of space-separated fields.
//!
//! The comm in field 2 is in parentheses and may itself hold spaces and
//! parentheses, so parsing starts after the LAST `)`. crest takes the tree
//! identity (ppid, pgrp, session, tty), the task flags (kernel thread,
//! exiting), the start time (to tell a reused pid
//! from the original), and the mm layout fields that PR_SET_MM_MAP needs.

use super::{ParseError, dec};

/// The fields of stat that crest uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stat {
    /// Field 1.
    pub pid: i32,
    /// Field 2, without the parentheses.
    pub comm: Vec<u8>,
    /// Field 3: R, S, D, T, t, Z, X, I.
    pub state: u8,
    /// Field 4.
    pub ppid: i32,
    /// Field 5: process group.
    pub pgrp: i32,
    /// Field 6.
    pub session: i32,
    /// Field 7: the controlling terminal's device number, 0 for none.
    pub tty_nr: i32,
    /// Field 9: the kernel's PF_* task flags.
    pub flags: u64,
    /// Field 19.
    pub nice: i64,
    /// Field 20.
    pub num_threads: i64,
    /// Field 22: start time in clock ticks after boot.
    pub start_time: u64,
    /// Field 26.
    pub start_code: u64,
    /// Field 27.
    pub end_code: u64,
    /// Field 28.
    pub start_stack: u64,
    /// Field 38: the signal sent to the parent at exit.
    pub exit_signal: i32,
    /// Field 45.
    pub start_data: u64,
    /// Field 46.
    pub end_data: u64,
    /// Field 47.
    pub start_brk: u64,
    /// Field 48.
    pub arg_start: u64,
    /// Field 49.
    pub arg_end: u64,
    /// Field 50.
    pub env_start: u64,
    /// Field 51.
    pub env_end: u64,
    /// Field 52: the exit code as waitpid would report it (zombies).
    pub exit_code: i32,
}

/// PF_EXITING: the task is past the start of exit (its address space may
/// already be gone) but not yet a zombie.
const PF_EXITING: u64 = 0x4;
/// PF_KTHREAD: a kernel thread. Unlike empty maps, which an exiting process
/// shows too, this flag is set for kernel threads only.
const PF_KTHREAD: u64 = 0x0020_0000;

impl Stat {
    /// Whether the task is a kernel thread.
    pub fn is_kernel_thread(&self) -> bool {
        self.flags & PF_KTHREAD != 0
    }

    /// Whether the task has started to exit.
    pub fn is_exiting(&self) -> bool {
        self.flags & PF_EXITING != 0
    }
}

/// Parses a stat line. Fields from 45 on appeared in Linux 3.3 and 3.5; when
/// absent (or zeroed for a zombie) they stay 0.
pub fn parse(text: &[u8]) -> Result<Stat, ParseError> {
    let err = |what: &str| ParseError::new(1, format!("stat: {what}"));
    let open = memchr::memchr(b'(', text).ok_or_else(|| err("no `(`"))?;
    let close = memchr::memrchr(b')', text).ok_or_else(|| err("no `)`"))?;
    if close < open {
        return Err(err("`)` before `(`"));
    }
    let pid = dec(text[..open].trim_ascii()).ok_or_else(|| err("bad pid"))?;
    let rest: Vec<&[u8]> = text[close + 1..]
        .split(|&c| c == b' ' || c == b'\n')
        .filter(|f| !f.is_empty())
        .collect();
    // rest[0] is field 3.
    let num = |field: usize| -> Result<i64, ParseError> {
        match rest.get(field - 3) {
            Some(f) => dec(f).ok_or_else(|| err(&format!("field {field} is not a number"))),
            None if field >= 45 => Ok(0),
            None => Err(err(&format!("field {field} is missing"))),
        }
    };
    // Addresses above 2^63 print as unsigned; keep their bits.
    let addr = |field: usize| -> Result<u64, ParseError> {
        match rest.get(field - 3) {
            Some(f) => super::udec(f).ok_or_else(|| err(&format!("field {field} is not a number"))),
            None if field >= 45 => Ok(0),
            None => Err(err(&format!("field {field} is missing"))),
        }
    };
    let int = |field: usize| {
        num(field).and_then(|v| i32::try_from(v).map_err(|_| err("field out of range")))
    };
    Ok(Stat {
        pid: i32::try_from(pid).map_err(|_| err("pid out of range"))?,
        comm: text[open + 1..close].to_vec(),
        state: *rest
            .first()
            .and_then(|f| f.first())
            .ok_or_else(|| err("no state"))?,
        ppid: int(4)?,
        pgrp: int(5)?,
        session: int(6)?,
        tty_nr: int(7)?,
        flags: addr(9)?,
        nice: num(19)?,
        num_threads: num(20)?,
        start_time: addr(22)?,
        start_code: addr(26)?,
        end_code: addr(27)?,
        start_stack: addr(28)?,
        exit_signal: int(38)?,
        start_data: addr(45)?,
        end_data: addr(46)?,
        start_brk: addr(47)?,
        arg_start: addr(48)?,
        arg_end: addr(49)?,
        env_start: addr(50)?,
        env_end: addr(51)?,
        exit_code: int(52)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = b"5027 (a) b) (c) R 5019 5020 1048 34816 -1 4194304 99 0 0 0 0 0 0 0 20 0 1 0 814250 \
3133440 360 18446744073709551615 93957819613184 93957819633065 140725959404288 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 \
93957819649072 93957819650688 93958329860096 140725959412441 140725959412461 140725959412461 140725959413739 0\n";

    #[test]
    fn parses_a_comm_with_parentheses_and_spaces() {
        let s = parse(SAMPLE).unwrap();
        assert_eq!(s.pid, 5027);
        assert_eq!(s.comm, b"a) b) (c");
        assert_eq!(s.state, b'R');
        assert_eq!(
            (s.ppid, s.pgrp, s.session, s.tty_nr),
            (5019, 5020, 1048, 34816)
        );
        assert_eq!(s.flags, 4194304);
        assert!(!s.is_kernel_thread() && !s.is_exiting());
        assert_eq!(s.start_time, 814250);
        assert_eq!(s.start_code, 93957819613184);
        assert_eq!(s.start_stack, 140725959404288);
        assert_eq!(s.exit_signal, 17);
        assert_eq!(s.start_brk, 93958329860096);
        assert_eq!(s.env_end, 140725959413739);
        assert_eq!(s.exit_code, 0);
    }

    #[test]
    fn agrees_with_the_kernel_for_this_process() {
        let s = parse(&std::fs::read("/proc/self/stat").unwrap()).unwrap();
        assert_eq!(s.pid as u32, std::process::id());
        // The status file is an independent view of the same task.
        let status =
            super::super::status::parse(&std::fs::read("/proc/self/status").unwrap()).unwrap();
        assert_eq!(s.ppid, status.ppid);
        assert!(s.arg_start < s.arg_end && s.env_start < s.env_end);
        assert!(!s.is_kernel_thread() && !s.is_exiting());
    }

    #[test]
    fn tells_a_kernel_thread_by_its_flags() {
        // kthreadd, pid 2, is a kernel thread on every Linux; visible unless
        // /proc is mounted with hidepid or in a pid namespace.
        if let Ok(text) = std::fs::read("/proc/2/stat") {
            let s = parse(&text).unwrap();
            if s.comm == b"kthreadd" {
                assert!(s.is_kernel_thread());
            }
        }
    }

    #[test]
    fn refuses_truncated_lines() {
        assert!(parse(b"12 (x) R 1 2").is_err());
        assert!(parse(b"12 x) R").is_err());
        assert!(parse(b"").is_err());
    }
}
