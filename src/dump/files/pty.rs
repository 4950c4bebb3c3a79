//! Pseudo-terminal pairs inside a process: a master (/dev/ptmx, 5:2) and
//! the slaves of the same pair (/dev/pts/N, majors 136-143) become
//! pty-master and pty-slave records, so restore can make a new pair with
//! the same termios, window size, lock and packet mode. crest reads those
//! on a copy of the master (pidfd_getfd), which only reads.
//!
//! A slave whose master is not in the process (the terminal of a shell
//! job, a controlling terminal) stays a character device record, restored
//! as crest's terminal with --shell-job. Bytes queued in a pair's buffers
//! and the controlling terminals of sessions are dumped once for the tree
//! ([`super::tty`]).

use std::os::fd::{AsFd, AsRawFd};

use crate::error::{Error, Result};
use crate::image::files::{Fd, FdFile, PtyState};
use crate::sys::process::{pidfd_getfd, pidfd_open};
use crate::sys::tty;

/// The major and minor numbers of a Linux dev_t.
fn major_minor(dev: u64) -> (u64, u64) {
    (
        ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff),
        (dev & 0xff) | ((dev >> 12) & !0xff),
    )
}

/// The pair index of a pty slave device number (majors 136-143 hold
/// 256 minors each), or None for another device.
pub fn slave_index(rdev: u64) -> Option<u32> {
    match major_minor(rdev) {
        (ma @ 136..=143, mi) if mi < 256 => Some(((ma - 136) * 256 + mi) as u32),
        (136, mi) => u32::try_from(mi).ok(),
        _ => None,
    }
}

/// Whether `rdev` is /dev/ptmx (5:2).
fn is_ptmx(rdev: u64) -> bool {
    major_minor(rdev) == (5, 2)
}

/// Turns the masters among `fds` of `pid`, and the slaves of their pairs,
/// into pty records.
pub fn pair(pid: u32, fds: &mut [Fd]) -> Result<()> {
    let mut masters: Vec<u32> = Vec::new();
    for f in fds.iter_mut() {
        if let FdFile::Chr { flags, rdev, .. } = f.file
            && is_ptmx(rdev)
        {
            let (index, state) = read_master(pid, f.fd)?;
            masters.push(index);
            f.file = FdFile::PtyMaster {
                flags,
                index,
                state,
            };
        }
    }
    for f in fds.iter_mut() {
        if let FdFile::Chr { flags, rdev, .. } = f.file
            && let Some(index) = slave_index(rdev)
            && masters.contains(&index)
        {
            f.file = FdFile::PtySlave { flags, index };
        }
    }
    Ok(())
}

/// The index and state of the pair whose master is fd `fd` of `pid`.
fn read_master(pid: u32, fd: i32) -> Result<(u32, PtyState)> {
    let what = format!("reading the pseudo-terminal master at fd {fd} of pid {pid}");
    let fail = |call, e| super::gone_or(pid, Error::sys(call, what.clone(), e));
    let pidfd = pidfd_open(pid as i32).map_err(|e| fail("pidfd_open", e))?;
    let master = pidfd_getfd(pidfd.as_fd(), fd).map_err(|e| fail("pidfd_getfd", e))?;
    let m = master.as_raw_fd();
    let index = tty::pty_index(m).map_err(|e| fail("ioctl(TIOCGPTN)", e))?;
    let state = PtyState {
        termios: tty::termios(m).map_err(|e| fail("ioctl(TCGETS)", e))?,
        winsize: tty::winsize(m).map_err(|e| fail("ioctl(TIOCGWINSZ)", e))?,
        locked: tty::pty_locked(m).map_err(|e| fail("ioctl(TIOCGPTLCK)", e))?,
        packet: tty::pty_packet(m).map_err(|e| fail("ioctl(TIOCGPKT)", e))?,
    };
    Ok((index, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slave_indexes_follow_the_device_numbers() {
        assert_eq!(slave_index(0x8803), Some(3));
        assert_eq!(slave_index((137 << 8) | 4), Some(260));
        assert_eq!(slave_index((136 << 8) | (0x10 << 20) | 5), Some(0x1005));
        assert_eq!(slave_index(0x103), None);
        assert!(is_ptmx(0x502) && !is_ptmx(0x500));
    }
}
