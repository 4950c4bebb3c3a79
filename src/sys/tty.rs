//! Pseudo-terminal ioctls: the pair's index (TIOCGPTN), its slave lock
//! (TIOCGPTLCK/TIOCSPTLCK), packet mode (TIOCGPKT/TIOCPKT), termios
//! (TCGETS/TCSETS) and window size (TIOCGWINSZ/TIOCSWINSZ).
//!
//! A dump reads them on a copy of the process's master (pidfd_getfd); a
//! restore sets them on a new master in the new task, before the restorer
//! blob, so these take raw fd numbers, make one syscall each and allocate
//! nothing. On a master, termios and window size are the pair's (the
//! kernel applies them to the slave). The numbers are those of
//! asm-generic, which x86_64 and aarch64 share.

use std::os::fd::RawFd;

use syscalls::{Sysno, syscall};

use super::SysResult;

/// `TCGETS`.
pub const TCGETS: u32 = 0x5401;
/// `TCSETS`.
pub const TCSETS: u32 = 0x5402;
/// `TIOCGWINSZ`.
pub const TIOCGWINSZ: u32 = 0x5413;
/// `TIOCSWINSZ`.
pub const TIOCSWINSZ: u32 = 0x5414;
/// `TIOCPKT`.
pub const TIOCPKT: u32 = 0x5420;
/// `TIOCGPTN`: _IOR('T', 0x30, unsigned int).
pub const TIOCGPTN: u32 = 0x8004_5430;
/// `TIOCSPTLCK`: _IOW('T', 0x31, int).
pub const TIOCSPTLCK: u32 = 0x4004_5431;
/// `TIOCGPKT`: _IOR('T', 0x38, int).
pub const TIOCGPKT: u32 = 0x8004_5438;
/// `TIOCGPTLCK`: _IOR('T', 0x39, int).
pub const TIOCGPTLCK: u32 = 0x8004_5439;
/// The bytes of the kernel's `struct termios` (TCGETS).
pub const TERMIOS_LEN: usize = 36;

/// An ioctl that writes one int.
fn get_int(fd: RawFd, req: u32) -> SysResult<u32> {
    let mut v: u32 = 0;
    // SAFETY: the request writes one int into `v`, which outlives the call.
    unsafe { syscall!(Sysno::ioctl, fd, req, &mut v as *mut u32) }?;
    Ok(v)
}

/// An ioctl that reads one int.
fn set_int(fd: RawFd, req: u32, v: u32) -> SysResult<()> {
    // SAFETY: the request reads one int from `v`, which outlives the call.
    unsafe { syscall!(Sysno::ioctl, fd, req, &v as *const u32) }.map(drop)
}

/// TIOCGPTN: the index N of the master's /dev/pts/N.
pub fn pty_index(master: RawFd) -> SysResult<u32> {
    get_int(master, TIOCGPTN)
}

/// TIOCGPTLCK: whether the slave is locked.
pub fn pty_locked(master: RawFd) -> SysResult<bool> {
    get_int(master, TIOCGPTLCK).map(|v| v != 0)
}

/// TIOCSPTLCK.
pub fn set_pty_locked(master: RawFd, locked: bool) -> SysResult<()> {
    set_int(master, TIOCSPTLCK, u32::from(locked))
}

/// TIOCGPKT: whether packet mode is on.
pub fn pty_packet(master: RawFd) -> SysResult<bool> {
    get_int(master, TIOCGPKT).map(|v| v != 0)
}

/// TIOCPKT.
pub fn set_pty_packet(master: RawFd, on: bool) -> SysResult<()> {
    set_int(master, TIOCPKT, u32::from(on))
}

/// TCGETS.
pub fn termios(fd: RawFd) -> SysResult<[u8; TERMIOS_LEN]> {
    let mut t = [0u8; TERMIOS_LEN];
    // SAFETY: TCGETS writes a struct termios of TERMIOS_LEN bytes into `t`.
    unsafe { syscall!(Sysno::ioctl, fd, TCGETS, t.as_mut_ptr()) }?;
    Ok(t)
}

/// TCSETS.
pub fn set_termios(fd: RawFd, t: &[u8; TERMIOS_LEN]) -> SysResult<()> {
    // SAFETY: TCSETS reads a struct termios of TERMIOS_LEN bytes from `t`.
    unsafe { syscall!(Sysno::ioctl, fd, TCSETS, t.as_ptr()) }.map(drop)
}

/// TIOCGWINSZ: rows, cols, xpixel, ypixel.
pub fn winsize(fd: RawFd) -> SysResult<[u16; 4]> {
    let mut w = [0u16; 4];
    // SAFETY: TIOCGWINSZ writes a struct winsize (4 u16) into `w`.
    unsafe { syscall!(Sysno::ioctl, fd, TIOCGWINSZ, w.as_mut_ptr()) }?;
    Ok(w)
}

/// TIOCSWINSZ.
pub fn set_winsize(fd: RawFd, w: &[u16; 4]) -> SysResult<()> {
    // SAFETY: TIOCSWINSZ reads a struct winsize (4 u16) from `w`.
    unsafe { syscall!(Sysno::ioctl, fd, TIOCSWINSZ, w.as_ptr()) }.map(drop)
}

/// `TIOCSCTTY`.
pub const TIOCSCTTY: u32 = 0x540e;
/// `TIOCGPGRP`.
pub const TIOCGPGRP: u32 = 0x540f;
/// `TIOCSPGRP`.
pub const TIOCSPGRP: u32 = 0x5410;
/// `TIOCSTI`.
pub const TIOCSTI: u32 = 0x5412;
/// `FIONREAD` (`TIOCINQ`).
pub const FIONREAD: u32 = 0x541b;
/// `TIOCGSID`.
pub const TIOCGSID: u32 = 0x5429;
/// `TIOCGPTPEER`: _IO('T', 0x41).
pub const TIOCGPTPEER: u32 = 0x5441;

/// TIOCSCTTY(0): makes the terminal at `fd` the controlling terminal of
/// the caller, a session leader without one (never steals it from
/// another session: the argument is 0).
pub fn set_ctty(fd: RawFd) -> SysResult<()> {
    // SAFETY: TIOCSCTTY takes an integer argument, no memory.
    unsafe { syscall!(Sysno::ioctl, fd, TIOCSCTTY, 0) }.map(drop)
}

/// TIOCGPGRP: the terminal's foreground process group (on a master: its
/// slave's).
pub fn fg_pgrp(fd: RawFd) -> SysResult<u32> {
    get_int(fd, TIOCGPGRP)
}

/// TIOCSPGRP: makes `pgrp` the foreground process group.
pub fn set_fg_pgrp(fd: RawFd, pgrp: u32) -> SysResult<()> {
    set_int(fd, TIOCSPGRP, pgrp)
}

/// TIOCGSID: the session whose controlling terminal it is (ENOTTY when
/// none).
pub fn session_of(fd: RawFd) -> SysResult<u32> {
    get_int(fd, TIOCGSID)
}

/// FIONREAD: bytes ready to read.
pub fn readable(fd: RawFd) -> SysResult<u32> {
    get_int(fd, FIONREAD)
}

/// TIOCSTI: queues `byte` into the terminal's input as if it arrived
/// from the other end, synchronously through its line discipline (needs
/// CAP_SYS_ADMIN for a terminal that is not the caller's).
pub fn push_input(fd: RawFd, byte: u8) -> SysResult<()> {
    // SAFETY: TIOCSTI reads one byte from `byte`, which outlives the call.
    unsafe { syscall!(Sysno::ioctl, fd, TIOCSTI, &byte as *const u8) }.map(drop)
}

/// Whether poll reports a hangup or an error on `fd` (for a pty master:
/// no slave is open, after one was), without waiting.
pub fn hung_up(fd: RawFd) -> SysResult<bool> {
    super::fd::ppoll_one(fd, 0, std::time::Duration::ZERO)
}

/// TIOCGPTPEER: a new open of the slave of the master at `master`, with
/// open `flags`.
pub fn open_peer(master: RawFd, flags: u32) -> SysResult<std::os::fd::OwnedFd> {
    // SAFETY: TIOCGPTPEER takes the open flags as an integer argument.
    let fd = unsafe { syscall!(Sysno::ioctl, master, TIOCGPTPEER, flags) }?;
    Ok(super::fd::own(fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_new_pair_reads_back_what_is_set() {
        let m = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/ptmx")
            .unwrap();
        let fd = m.as_raw_fd();
        assert!(pty_locked(fd).unwrap(), "a new pair starts locked");
        set_pty_locked(fd, false).unwrap();
        assert!(!pty_locked(fd).unwrap());
        let n = pty_index(fd).unwrap();
        assert!(std::path::Path::new(&format!("/dev/pts/{n}")).exists());
        set_winsize(fd, &[33, 99, 0, 0]).unwrap();
        assert_eq!(winsize(fd).unwrap(), [33, 99, 0, 0]);
        let mut t = termios(fd).unwrap();
        t[12] ^= 0x8; // c_lflag ECHO
        set_termios(fd, &t).unwrap();
        assert_eq!(termios(fd).unwrap(), t);
        assert!(!pty_packet(fd).unwrap());
        set_pty_packet(fd, true).unwrap();
        assert!(pty_packet(fd).unwrap());
    }
}
