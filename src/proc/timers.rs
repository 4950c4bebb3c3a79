//! `/proc/PID/timers`: the POSIX timers (timer_create) of a process, one
//! block of four lines per timer:
//!
//! ```text
//! ID: 0
//! signal: 14/00007ffd12345678        signo / sigev_value (%px, 16 hex digits)
//! notify: signal/pid.4242            none|signal|thread / pid|tid . id
//! ClockID: 1
//! ```
//!
//! This gives what timer_create needs at restore (id, clock, sigevent) without
//! entering the process; the time left and the overrun count need
//! timer_gettime and timer_getoverrun, which only the process itself (the
//! parasite) can call.

use super::{ParseError, dec, fields, hex, lines};

/// SIGEV_SIGNAL.
pub const SIGEV_SIGNAL: i32 = 0;
/// SIGEV_NONE.
pub const SIGEV_NONE: i32 = 1;
/// SIGEV_THREAD.
pub const SIGEV_THREAD: i32 = 2;
/// SIGEV_THREAD_ID: ORed in when the signal goes to one thread.
pub const SIGEV_THREAD_ID: i32 = 4;

/// One POSIX timer as /proc shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimerInfo {
    /// The timer id.
    pub id: i32,
    /// The signal it sends.
    pub signo: i32,
    /// sigev_value.
    pub sigev_value: u64,
    /// SIGEV_* (with SIGEV_THREAD_ID when aimed at one thread).
    pub notify: i32,
    /// The pid or tid the signal goes to.
    pub notify_pid: u32,
    /// The clock id.
    pub clock_id: i32,
}

/// Parses a whole timers file.
pub fn parse(text: &[u8]) -> Result<Vec<TimerInfo>, ParseError> {
    let mut out: Vec<TimerInfo> = Vec::new();
    for (n, line) in lines(text) {
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let (key, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if key == b"ID" {
            out.push(TimerInfo::default());
        }
        let bad = || ParseError::new(n, format!("bad {} line", String::from_utf8_lossy(key)));
        let t = out
            .last_mut()
            .ok_or_else(|| ParseError::new(n, "a timer field before the first ID"))?;
        apply(t, key, value).ok_or_else(bad)?;
    }
    Ok(out)
}

fn apply(t: &mut TimerInfo, key: &[u8], value: &[u8]) -> Option<()> {
    let int = |f: &[u8]| i32::try_from(dec(f)?).ok();
    match key {
        b"ID" => t.id = int(value)?,
        b"ClockID" => t.clock_id = int(fields(value).next()?)?,
        b"signal" => {
            let slash = memchr::memchr(b'/', value)?;
            t.signo = int(&value[..slash])?;
            t.sigev_value = hex(value[slash + 1..]
                .strip_prefix(b"0x")
                .unwrap_or(&value[slash + 1..]))?;
        }
        b"notify" => {
            let slash = memchr::memchr(b'/', value)?;
            let how = match &value[..slash] {
                b"signal" => SIGEV_SIGNAL,
                b"none" => SIGEV_NONE,
                b"thread" => SIGEV_THREAD,
                _ => return None,
            };
            let (whom, id) =
                value[slash + 1..].split_at(memchr::memchr(b'.', &value[slash + 1..])?);
            t.notify = match whom {
                b"tid" => how | SIGEV_THREAD_ID,
                b"pid" => how,
                _ => return None,
            };
            t.notify_pid = u32::try_from(dec(&id[1..])?).ok()?;
        }
        _ => {}
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_real_sample() {
        let text = b"ID: 0\nsignal: 14/0000000000000000\nnotify: signal/pid.4242\nClockID: 1\n\
ID: 3\nsignal: 12/00007ffd0000beef\nnotify: signal/tid.4243\nClockID: 0\n";
        let v = parse(text).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!((v[0].id, v[0].signo, v[0].clock_id), (0, 14, 1));
        assert_eq!((v[0].notify, v[0].notify_pid), (SIGEV_SIGNAL, 4242));
        assert_eq!(v[1].sigev_value, 0x7ffd_0000_beef);
        assert_eq!(v[1].notify, SIGEV_SIGNAL | SIGEV_THREAD_ID);
        assert_eq!(v[1].notify_pid, 4243);
        assert!(parse(b"").unwrap().is_empty());
    }

    #[test]
    fn refuses_damage() {
        assert_eq!(parse(b"signal: 1/0\n").unwrap_err().line, 1);
        assert_eq!(parse(b"ID: 0\nnotify: bogus/pid.1\n").unwrap_err().line, 2);
        assert!(parse(b"ID: x\n").is_err());
    }
}
