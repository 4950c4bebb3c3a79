//! `/proc/PID/status` (and `/proc/PID/task/TID/status`): "Key:\tvalue" lines.
//!
//! crest reads the fields that ptrace and the parasite cannot give it, or
//! that it uses to cross-check them: ids in every pid namespace (NSpid), the
//! four uids and gids, supplementary groups, capability sets, signal sets,
//! no_new_privs and seccomp mode. Unknown keys are ignored so newer kernels
//! parse; a known key with a malformed value is an error.

use super::{ParseError, dec, fields, hex, lines, udec};

/// The fields of a status file that crest uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// `Name`: the comm, up to 15 bytes.
    pub name: Vec<u8>,
    /// `State`: the one-letter state (R, S, D, T, t, Z, X, I).
    pub state: u8,
    /// `Umask`, when the kernel shows it.
    pub umask: Option<u32>,
    /// `Tgid`.
    pub tgid: i32,
    /// `Pid` (the thread id).
    pub pid: i32,
    /// `PPid`.
    pub ppid: i32,
    /// `TracerPid`: non-zero when someone already ptraces the task.
    pub tracer_pid: i32,
    /// `Uid`: real, effective, saved, filesystem.
    pub uids: [u32; 4],
    /// `Gid`: real, effective, saved, filesystem.
    pub gids: [u32; 4],
    /// `Groups`: supplementary groups.
    pub groups: Vec<u32>,
    /// `NSpid`: the pid in each pid namespace, outermost first.
    pub ns_pid: Vec<i32>,
    /// `NSpgid`, outermost first.
    pub ns_pgid: Vec<i32>,
    /// `NSsid`, outermost first.
    pub ns_sid: Vec<i32>,
    /// `Threads`.
    pub threads: u32,
    /// `SigPnd`: signals pending for this thread.
    pub sig_pending: u64,
    /// `ShdPnd`: signals pending for the whole process.
    pub shared_pending: u64,
    /// `SigBlk`: the blocked mask.
    pub sig_blocked: u64,
    /// `SigIgn`: signals set to SIG_IGN.
    pub sig_ignored: u64,
    /// `SigCgt`: signals with a handler.
    pub sig_caught: u64,
    /// `CapInh`.
    pub cap_inheritable: u64,
    /// `CapPrm`.
    pub cap_permitted: u64,
    /// `CapEff`.
    pub cap_effective: u64,
    /// `CapBnd`.
    pub cap_bounding: u64,
    /// `CapAmb`.
    pub cap_ambient: u64,
    /// `NoNewPrivs`.
    pub no_new_privs: bool,
    /// `Seccomp`: 0 off, 1 strict, 2 filter.
    pub seccomp: u32,
    /// `THP_enabled`: false after PR_SET_THP_DISABLE; `None` on kernels
    /// before 5.0, which do not show it.
    pub thp_enabled: Option<bool>,
}

/// Parses a whole status file.
pub fn parse(text: &[u8]) -> Result<Status, ParseError> {
    let mut s = Status::default();
    for (n, line) in lines(text) {
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let (key, value) = (&line[..colon], &line[colon + 1..]);
        apply(&mut s, key, value).ok_or_else(|| {
            ParseError::new(n, format!("bad value for {}", String::from_utf8_lossy(key)))
        })?;
    }
    if s.pid == 0 || s.tgid == 0 {
        return Err(ParseError::new(0, "no Pid or Tgid line"));
    }
    Ok(s)
}

fn apply(s: &mut Status, key: &[u8], value: &[u8]) -> Option<()> {
    let first = || fields(value).next();
    match key {
        b"Name" => s.name = value.strip_prefix(b"\t").unwrap_or(value).to_vec(),
        b"State" => s.state = *first()?.first()?,
        b"Umask" => {
            s.umask = Some(u32::from_str_radix(std::str::from_utf8(first()?).ok()?, 8).ok()?)
        }
        b"Tgid" => s.tgid = int(first()?)?,
        b"Pid" => s.pid = int(first()?)?,
        b"PPid" => s.ppid = int(first()?)?,
        b"TracerPid" => s.tracer_pid = int(first()?)?,
        b"Uid" => s.uids = four(value)?,
        b"Gid" => s.gids = four(value)?,
        b"Groups" => s.groups = list(value)?,
        b"NSpid" => s.ns_pid = list(value)?,
        b"NSpgid" => s.ns_pgid = list(value)?,
        b"NSsid" => s.ns_sid = list(value)?,
        b"Threads" => s.threads = u32::try_from(udec(first()?)?).ok()?,
        b"SigPnd" => s.sig_pending = hex(first()?)?,
        b"ShdPnd" => s.shared_pending = hex(first()?)?,
        b"SigBlk" => s.sig_blocked = hex(first()?)?,
        b"SigIgn" => s.sig_ignored = hex(first()?)?,
        b"SigCgt" => s.sig_caught = hex(first()?)?,
        b"CapInh" => s.cap_inheritable = hex(first()?)?,
        b"CapPrm" => s.cap_permitted = hex(first()?)?,
        b"CapEff" => s.cap_effective = hex(first()?)?,
        b"CapBnd" => s.cap_bounding = hex(first()?)?,
        b"CapAmb" => s.cap_ambient = hex(first()?)?,
        b"NoNewPrivs" => s.no_new_privs = udec(first()?)? != 0,
        b"Seccomp" => s.seccomp = u32::try_from(udec(first()?)?).ok()?,
        b"THP_enabled" => s.thp_enabled = Some(udec(first()?)? != 0),
        _ => {}
    }
    Some(())
}

fn int(field: &[u8]) -> Option<i32> {
    i32::try_from(dec(field)?).ok()
}

fn list<T: TryFrom<i64>>(value: &[u8]) -> Option<Vec<T>> {
    fields(value).map(|f| T::try_from(dec(f)?).ok()).collect()
}

fn four(value: &[u8]) -> Option<[u32; 4]> {
    let v: Vec<u32> = list(value)?;
    v.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = b"Name:\tmy prog\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t5025\nNgid:\t0\n\
Pid:\t5026\nPPid:\t5019\nTracerPid:\t0\nUid:\t1000\t1001\t1002\t1003\nGid:\t0\t0\t0\t0\n\
FDSize:\t256\nGroups:\t4 24 27 \nNStgid:\t5025\t1\nNSpid:\t5026\t2\nNSpgid:\t5019\t1\nNSsid:\t1048\t1\n\
Threads:\t3\nSigQ:\t0/96364\nSigPnd:\t0000000000000100\nShdPnd:\t0000000000004000\n\
SigBlk:\t0000000000010000\nSigIgn:\t0000000000001000\nSigCgt:\t0000000180000000\n\
CapInh:\t0000000000000000\nCapPrm:\t000001fffeffffff\nCapEff:\t000001fffeffffff\n\
CapBnd:\t000001fffeffffff\nCapAmb:\t0000000000000400\nNoNewPrivs:\t1\nSeccomp:\t2\n\
THP_enabled:\t0\nCpus_allowed_list:\t0-1\n";

    #[test]
    fn parses_a_real_sample() {
        let s = parse(SAMPLE).unwrap();
        assert_eq!(s.name, b"my prog");
        assert_eq!(s.umask, Some(0o022));
        assert_eq!(s.state, b'S');
        assert_eq!((s.tgid, s.pid, s.ppid), (5025, 5026, 5019));
        assert_eq!(s.uids, [1000, 1001, 1002, 1003]);
        assert_eq!(s.groups, [4, 24, 27]);
        assert_eq!(s.ns_pid, [5026, 2]);
        assert_eq!(s.ns_sid, [1048, 1]);
        assert_eq!(s.threads, 3);
        assert_eq!(s.sig_pending, 1 << 8);
        assert_eq!(s.shared_pending, 1 << 14);
        assert_eq!(s.sig_caught, 0x1_8000_0000);
        assert_eq!(s.cap_effective, 0x1ff_feff_ffff);
        assert_eq!(s.cap_ambient, 1 << 10);
        assert!(s.no_new_privs);
        assert_eq!(s.seccomp, 2);
        assert_eq!(s.thp_enabled, Some(false));
    }

    #[test]
    fn agrees_with_the_kernel_for_this_process() {
        let s = parse(&std::fs::read("/proc/self/status").unwrap()).unwrap();
        assert_eq!(s.tgid as u32, std::process::id());
        assert_eq!(s.ns_pid.last().copied(), Some(s.pid));
        assert!(s.threads >= 1);
    }

    #[test]
    fn refuses_malformed_values() {
        assert_eq!(
            parse(b"Pid:\t1\nTgid:\t1\nUid:\t1 2 3\n").unwrap_err().line,
            3
        );
        assert_eq!(parse(b"Pid:\tx\n").unwrap_err().line, 1);
        assert!(parse(b"Name:\tx\n").is_err());
    }
}
