//! File locks, from the `lock:` lines of /proc/PID/fdinfo/N (fs/locks.c
//! prints the locks this fd's open file owns, flock and OFD, and the POSIX
//! locks the process owns on its inode):
//!
//! ```text
//!  lock:  1: FLOCK  ADVISORY  WRITE 5616 fe:00:10011445 0 EOF
//!  lock:  1: POSIX  ADVISORY  WRITE 5616 fe:00:10011449 5 14
//!  lock:  1: OFDLCK ADVISORY  READ -1 fe:00:10011453 100 EOF
//! ```
//!
//! As CRIU, crest takes locks along only when asked (`--file-locks`): a
//! process holding one is refused otherwise, naming the fd, the lock and
//! the option, because a restored process that silently lost its lock may
//! corrupt what the lock protected. Leases and delegations are refused in
//! any case. The option is one of the dump ([`super::FileOptions`]),
//! checked once the locks are collected ([`check_allowed`]).

use crate::error::{Error, Result};
use crate::image::files::{Fd, FileLock, LockKind};

/// One parsed `lock:` line: kind, write, start, end, the dev:ino text.
type Parsed<'a> = (LockKind, bool, u64, u64, &'a [u8]);

/// Parses the value of one `lock:` line; Err names what crest cannot take.
fn parse(line: &[u8]) -> std::result::Result<Parsed<'_>, String> {
    let f: Vec<&[u8]> = line
        .split(|c| c.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
        .collect();
    let text = || String::from_utf8_lossy(line).into_owned();
    if f.len() < 8 {
        return Err(format!("a lock crest cannot read (`{}`)", text()));
    }
    let kind = match f[1] {
        b"FLOCK" => LockKind::Flock,
        b"POSIX" => LockKind::Posix,
        b"OFDLCK" => LockKind::Ofd,
        other => {
            return Err(format!(
                "a {} lock, which crest cannot take along",
                String::from_utf8_lossy(other)
            ));
        }
    };
    let write = match f[3] {
        b"WRITE" => true,
        b"READ" => false,
        _ => return Err(format!("a lock crest cannot read (`{}`)", text())),
    };
    let num = |w: &[u8]| {
        std::str::from_utf8(w)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
    };
    let start = num(f[6]).ok_or_else(|| format!("a lock crest cannot read (`{}`)", text()))?;
    let end = match f[7] {
        b"EOF" => u64::MAX,
        w => num(w).ok_or_else(|| format!("a lock crest cannot read (`{}`)", text()))?,
    };
    Ok((kind, write, start, end, f[5]))
}

/// The locks held through `fds` of `pid`, each POSIX lock once (see
/// [`check_allowed`] for `--file-locks`).
pub fn collect_locks(pid: u32, fds: &[Fd]) -> Result<Vec<FileLock>> {
    let mut out = Vec::new();
    let mut posix: Vec<(Vec<u8>, bool, u64, u64)> = Vec::new();
    for f in fds {
        let name = format!("fdinfo/{}", f.fd);
        let text = match super::read_proc(pid, &name) {
            Ok(t) => t,
            Err(_) if !std::path::Path::new(&format!("/proc/{pid}/fd/{}", f.fd)).exists() => {
                continue;
            }
            Err(e) => return Err(e),
        };
        for line in text.split(|&c| c == b'\n') {
            let Some(value) = line.strip_prefix(b"lock:") else {
                continue;
            };
            let (kind, write, start, end, inode) =
                parse(value).map_err(|what| refuse(pid, f.fd, &what))?;
            if kind == LockKind::Posix {
                let key = (inode.to_vec(), write, start, end);
                if posix.contains(&key) {
                    continue;
                }
                posix.push(key);
            }
            out.push(FileLock {
                fd: f.fd,
                kind,
                write,
                start,
                end,
            });
        }
    }
    Ok(out)
}

fn refuse(pid: u32, fd: i32, what: &str) -> Error {
    Error::Unsupported(format!(
        "fd {fd} of pid {pid} holds {what}; dump with --file-locks to take its locks along, or release the lock before the dump"
    ))
}

/// Refuses the first of `locks` (of `pid`) unless `file_locks`
/// (`--file-locks`) takes them along.
pub fn check_allowed(pid: u32, locks: &[FileLock], file_locks: bool) -> Result<()> {
    match locks.first() {
        Some(l) if !file_locks => {
            let mode = if l.write { "write" } else { "read" };
            Err(refuse(
                pid,
                l.fd,
                &format!("a {mode} {} lock", l.kind.word()),
            ))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernels_lock_lines() {
        let p = |s: &[u8]| parse(s).map(|(k, w, a, b, _)| (k, w, a, b));
        assert_eq!(
            p(b"\t1: FLOCK  ADVISORY  WRITE 5616 fe:00:10011445 0 EOF"),
            Ok((LockKind::Flock, true, 0, u64::MAX))
        );
        assert_eq!(
            p(b"\t1: POSIX  ADVISORY  WRITE 5616 fe:00:10011449 5 14"),
            Ok((LockKind::Posix, true, 5, 14))
        );
        assert_eq!(
            p(b"\t1: OFDLCK ADVISORY  READ -1 fe:00:10011453 100 EOF"),
            Ok((LockKind::Ofd, false, 100, u64::MAX))
        );
        assert!(p(b"\t1: LEASE  ACTIVE    READ 5616 fe:00:1 0 EOF").is_err());
        assert!(p(b"\t1: POSIX  ADVISORY  WRITE 5616").is_err());
    }

    #[test]
    fn a_lock_is_refused_unless_file_locks_takes_it() {
        let lock = FileLock {
            fd: 32,
            kind: LockKind::Flock,
            write: true,
            start: 0,
            end: u64::MAX,
        };
        let e = check_allowed(7, &[lock], false).unwrap_err().to_string();
        assert!(e.contains("fd 32 of pid 7 holds a write FLOCK lock"), "{e}");
        assert!(e.contains("--file-locks"), "{e}");
        assert!(check_allowed(7, &[lock], true).is_ok());
        assert!(check_allowed(7, &[], false).is_ok());
    }
}
