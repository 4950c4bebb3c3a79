//! Pseudo-terminal pairs: every master is a new pair from /dev/ptmx
//! ([`open_master`], before any other fd, so each slave finds its master
//! whatever their numbers), unlocked, given the dumped termios, window size
//! and packet mode; every slave opens /dev/pts/N of its new master
//! ([`open_slave`]); then a master that was locked is locked again
//! ([`relock`]). The new pair's index is the kernel's choice, so it may
//! differ from the dumped one (/dev/pts/N in /proc changes with it). No
//! slave opened here becomes a controlling terminal (O_NOCTTY). A pair
//! that was a controlling terminal or held queued bytes is made by crest
//! instead ([`super::pty_share`], [`super::ctty`]).

use std::os::fd::RawFd;

use crate::error::{Errno, Error, Result};
use crate::image::files::{Fd, FdFile, PtyState};
use crate::sys::fdtable::open_raw;
use crate::sys::tty;

fn fail(call: &'static str, fd: RawFd, e: Errno) -> Error {
    Error::sys(call, format!("restoring fd {fd} (a pseudo-terminal)"), e)
}

/// `master_of` for a slave whose master is in another process of the tree
/// (crest makes that pair, see [`super::pty_share`]).
pub const ELSEWHERE: usize = usize::MAX;

/// The position, among the image's fds in increasing order, of the master
/// of pair `index`, for a slave at fd `fd`; [`ELSEWHERE`] when this process
/// does not hold it.
pub fn master_of(fds: &[&Fd], index: u32) -> usize {
    fds.iter()
        .position(|f| matches!(f.file, FdFile::PtyMaster { index: i, .. } if i == index))
        .unwrap_or(ELSEWHERE)
}

/// A new master at `slot` with the pair's dumped state (unlocked until
/// [`relock`]).
pub fn open_master(flags: u32, state: &PtyState, fd: RawFd, slot: RawFd) -> Result<()> {
    let low = open_raw(c"/dev/ptmx", flags | super::check::O_NOCTTY)
        .map_err(|e| fail("open /dev/ptmx", fd, e))?;
    super::install::to_slot(low, slot).map_err(|e| fail("dup3", fd, e))?;
    tty::set_pty_locked(slot, false).map_err(|e| fail("ioctl(TIOCSPTLCK)", fd, e))?;
    tty::set_termios(slot, &state.termios).map_err(|e| fail("ioctl(TCSETS)", fd, e))?;
    tty::set_winsize(slot, &state.winsize).map_err(|e| fail("ioctl(TIOCSWINSZ)", fd, e))?;
    if state.packet {
        tty::set_pty_packet(slot, true).map_err(|e| fail("ioctl(TIOCPKT)", fd, e))?;
    }
    Ok(())
}

/// `/dev/pts/N` as a C string in `buf`, without allocating.
fn pts_path(buf: &mut [u8; 32], n: u32) -> &std::ffi::CStr {
    super::anon::numbered_path(buf, b"/dev/pts/", n)
}

/// The slave of the new master at `master_slot`, with `flags`, at `slot`.
pub fn open_slave(master_slot: RawFd, flags: u32, fd: RawFd, slot: RawFd) -> Result<()> {
    let n = tty::pty_index(master_slot).map_err(|e| fail("ioctl(TIOCGPTN)", fd, e))?;
    let mut buf = [0u8; 32];
    let path = pts_path(&mut buf, n);
    let low =
        open_raw(path, flags | super::check::O_NOCTTY).map_err(|e| fail("open /dev/pts", fd, e))?;
    super::install::to_slot(low, slot).map_err(|e| fail("dup3", fd, e))
}

/// Locks the master at `slot` again when it was locked at the dump.
pub fn relock(state: &PtyState, fd: RawFd, slot: RawFd) -> Result<()> {
    if state.locked {
        tty::set_pty_locked(slot, true).map_err(|e| fail("ioctl(TIOCSPTLCK)", fd, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pts_paths() {
        let mut b = [0u8; 32];
        assert_eq!(pts_path(&mut b, 0).to_bytes(), b"/dev/pts/0");
        assert_eq!(pts_path(&mut b, 4096).to_bytes(), b"/dev/pts/4096");
        assert_eq!(
            pts_path(&mut b, u32::MAX).to_bytes(),
            b"/dev/pts/4294967295"
        );
    }
}
