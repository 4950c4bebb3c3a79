//! The terminals of a frozen tree beyond its fds (tty.img): the
//! controlling terminal of each session a process of the tree leads
//! (/proc/PID/stat tty_nr; on a copy of the pair's master, TIOCGPGRP
//! gives its foreground group and TIOCGSID its session), and the bytes
//! queued inside each pseudo-terminal pair whose master the tree holds.
//!
//! A controlling terminal comes back only when it is a pair of the tree
//! (its master is an fd of a process of the tree). Another one is
//! refused, since the session would come back without it, except for the
//! root of a shell job (`--shell-job`, or a dump of one process), which
//! restore puts into crest's session anyway: it comes back without a
//! controlling terminal of its own, with a warning.
//!
//! Queued bytes are read without loss: crest opens its own slave of the
//! pair (TIOCGPTPEER, O_NONBLOCK), switches the pair to non-canonical
//! mode just long enough to read every byte the slave would read
//! (including a canonical line still without its newline), and reads the
//! master through its copy while poll says there is something. Then it
//! puts both back at once, byte by byte with TIOCSTI, which feeds the
//! line discipline synchronously: the master's bytes into the master
//! (always raw), the slave's into the slave with the dumped termios minus
//! echo, signals and input translation (those were applied when the bytes
//! first arrived), which rebuilds canonical lines as they were. So a dump
//! with --leave-running, or one that fails later, leaves the pair as it
//! found it. Limits: at most 4095 bytes per direction (the line
//! discipline's buffer; a full buffer is refused before any byte is
//! read, as more may wait behind it and could not be put back), unread
//! master-side bytes in packet mode refused (a read there would consume
//! the packet status), a locked pair unlocked while its slave side is
//! read, none to the slave of a pair whose slave is open only outside the tree or was
//! never opened (crest's slave must be neither the first to open nor the
//! last to close: the master sees the last close as a hangup), and an
//! end-of-file (VEOF) or an escaped (VLNEXT) erase or kill character
//! waiting in a canonical line is not rebuilt as it was. A pair whose
//! slaves were all closed is recorded so (restore closes a slave of its
//! own, and the master sees the hangup again).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::error::{Errno, Error, Result};
use crate::image::ImageDir;
use crate::image::files::FdFile;
use crate::image::load::FilesImage;
use crate::image::pstree::{Process, TaskState};
use crate::image::tty::{Ctty, PtyQueue, TtyImage};
use crate::sys::process::{pidfd_getfd, pidfd_open};
use crate::sys::tty;

/// The most bytes the line discipline holds (N_TTY_BUF_SIZE - 1).
const N_TTY_MAX: usize = 4095;

/// `O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC`.
const PEER_FLAGS: u32 = 0o2 | 0o400 | 0o4000 | 0o2000000;

/// Offsets in `struct termios`: the flag words and c_cc.
const IFLAG: usize = 0;
const LFLAG: usize = 12;
const CC: usize = 17;
const VTIME: usize = 5;
const VMIN: usize = 6;
/// c_lflag bits.
const ISIG: u32 = 0o1;
const ICANON: u32 = 0o2;
const ECHO: u32 = 0o10;
const ECHONL: u32 = 0o100;
const IEXTEN: u32 = 0o100000;
/// c_iflag bits that translate input.
const INPUT_MAPS: u32 = 0o40 | 0o100 | 0o200 | 0o400 | 0o1000 | 0o2000;

/// One master of the tree: (pair index, pid, fd).
type Master = (u32, u32, i32);

/// The masters of the tree, and the indexes of the pairs one of whose
/// slaves the tree holds.
struct Pairs {
    masters: Vec<Master>,
    slaves: Vec<u32>,
}

/// Writes tty.img for the frozen tree `procs` (root first) whose
/// files-PID.img are in `d`; refuses a controlling terminal restore
/// could not give back (see the module doc).
pub fn dump_ttys(d: &ImageDir, procs: &[Process], shell_job: bool) -> Result<()> {
    let live: Vec<&Process> = procs
        .iter()
        .filter(|p| !matches!(p.state, TaskState::Zombie { .. }))
        .collect();
    let pairs = pairs(d, &live)?;
    let masters = &pairs.masters;
    let job = shell_job || procs.len() == 1;
    let mut img = TtyImage::default();
    for p in live.iter().filter(|p| p.sid == p.pid) {
        let root_of_job = job && p.pid == procs[0].pid;
        if let Some(mut c) = ctty(p, masters, root_of_job)? {
            if !live.iter().any(|q| q.pgid == c.fg_pgrp) {
                crate::warn!(
                    "session {}: the foreground group {} of its terminal has no live process; it comes back with the leader's group in the foreground",
                    c.sid,
                    c.fg_pgrp
                );
                c.fg_pgrp = 0;
            }
            img.cttys.push(c);
        }
    }
    for &(index, pid, fd) in masters {
        let q = queued(index, pid, fd, pairs.slaves.contains(&index))?;
        if !q.to_slave.is_empty() || !q.to_master.is_empty() || q.slave_closed {
            crate::debug!(
                "pseudo-terminal {index}: {} byte(s) queued to the slave, {} to the master",
                q.to_slave.len(),
                q.to_master.len()
            );
            img.queues.push(q);
        }
    }
    img.write(d)
}

/// Every pair whose master a process of `live` holds, once, and the
/// pairs of the slaves they hold.
fn pairs(d: &ImageDir, live: &[&Process]) -> Result<Pairs> {
    let mut out = Pairs {
        masters: Vec::new(),
        slaves: Vec::new(),
    };
    for p in live {
        for f in FilesImage::load(d, p.pid)?.fds {
            let slave = match f.file {
                FdFile::PtyMaster { index, .. } => {
                    if !out.masters.iter().any(|m| m.0 == index) {
                        out.masters.push((index, p.pid, f.fd));
                    }
                    None
                }
                FdFile::PtySlave { index, .. } => Some(index),
                FdFile::Chr { rdev, .. } => super::pty::slave_index(rdev),
                _ => None,
            };
            out.slaves.extend(slave);
        }
    }
    Ok(out)
}

/// A copy of fd `fd` of `pid` (the same open file).
fn copy_of(pid: u32, fd: i32) -> Result<OwnedFd> {
    let what = format!("reading the pseudo-terminal master at fd {fd} of pid {pid}");
    let fail = |call, e| super::gone_or(pid, Error::sys(call, what.clone(), e));
    let pidfd = pidfd_open(pid as i32).map_err(|e| fail("pidfd_open", e))?;
    pidfd_getfd(pidfd.as_fd(), fd).map_err(|e| fail("pidfd_getfd", e))
}

/// The controlling terminal of session leader `p`, when it has one.
fn ctty(p: &Process, masters: &[Master], root_of_job: bool) -> Result<Option<Ctty>> {
    let stat = super::super::read_proc(p.pid, "stat")?;
    let stat = crate::proc::stat::parse(&stat).map_err(|e| Error::Proc {
        path: format!("/proc/{}/stat", p.pid),
        line: 0,
        problem: format!("{e:?}"),
    })?;
    if stat.tty_nr == 0 {
        return Ok(None);
    }
    let dev = stat.tty_nr as u32 as u64;
    let pair =
        super::pty::slave_index(dev).and_then(|i| masters.iter().find(|m| m.0 == i).copied());
    let Some((index, mpid, mfd)) = pair else {
        return outside(p, dev, root_of_job).map(|()| None);
    };
    let master = copy_of(mpid, mfd)?;
    let m = master.as_raw_fd();
    let what = format!("the controlling terminal of session {}", p.sid);
    let sid = tty::session_of(m).map_err(|e| Error::sys("ioctl(TIOCGSID)", what.clone(), e))?;
    let fg_pgrp = tty::fg_pgrp(m).map_err(|e| Error::sys("ioctl(TIOCGPGRP)", what, e))?;
    if sid != p.sid {
        return Err(Error::Unsupported(format!(
            "pid {}: /dev/pts/{index} is its controlling terminal by /proc but the terminal says session {sid}; dump again",
            p.pid
        )));
    }
    crate::debug!(
        "session {}: controlling terminal /dev/pts/{index}, foreground group {fg_pgrp}",
        p.sid
    );
    Ok(Some(Ctty {
        sid,
        index,
        fg_pgrp,
    }))
}

/// `dev` (the tty_nr encoding) as major and minor.
fn major_minor(dev: u64) -> (u64, u64) {
    ((dev >> 8) & 0xfff, (dev & 0xff) | ((dev >> 12) & !0xff))
}

/// A controlling terminal outside the tree: refused, or (the root of a
/// shell job) left behind with a warning.
fn outside(p: &Process, dev: u64, root_of_job: bool) -> Result<()> {
    if root_of_job {
        let (ma, mi) = major_minor(dev);
        crate::warn!(
            "pid {}: its controlling terminal (device {ma}:{mi}) is outside the tree; as a shell job it comes back in crest's session, without it",
            p.pid
        );
        return Ok(());
    }
    refuse_outside(p, dev)
}

/// The refusal of session leader `p`'s controlling terminal `dev`.
pub(super) fn refuse_outside(p: &Process, dev: u64) -> Result<()> {
    let (ma, mi) = major_minor(dev);
    Err(Error::Unsupported(format!(
        "pid {} leads session {} whose controlling terminal (device {ma}:{mi}) is not a pseudo-terminal whose master the tree holds, so restore could not give it back; dump the process holding its master with it, or end the session's use of that terminal",
        p.pid, p.sid
    )))
}

/// Reads the bytes queued in pair `index` (master at fd `fd` of `pid`;
/// `slave_held`: a process of the tree holds one of its slaves) and puts
/// them back (see the module doc).
fn queued(index: u32, pid: u32, fd: i32, slave_held: bool) -> Result<PtyQueue> {
    let master = copy_of(pid, fd)?;
    let m = master.as_raw_fd();
    let what = format!("the bytes queued in pseudo-terminal {index} (fd {fd} of pid {pid})");
    let fail = |call, e| Error::sys(call, what.clone(), e);
    let mut q = PtyQueue {
        index,
        ..PtyQueue::default()
    };
    let too_many = || {
        Error::Unsupported(format!(
            "pseudo-terminal {index} (fd {fd} of pid {pid}) holds more than {N_TTY_MAX} unread bytes in one direction, more than crest can queue back; let the program read them and dump again"
        ))
    };
    if tty::pty_packet(m).map_err(|e| fail("ioctl(TIOCGPKT)", e))? {
        if tty::readable(m).map_err(|e| fail("ioctl(FIONREAD)", e))? > 0 {
            return Err(Error::Unsupported(format!(
                "pseudo-terminal {index} (fd {fd} of pid {pid}) is in packet mode with bytes its master has not read, which crest cannot read without taking the packet status; let the program read them and dump again"
            )));
        }
    } else {
        // Refused before any byte is read: the line discipline takes back
        // at most N_TTY_MAX, so reading more would lose the rest.
        if full(m).map_err(|e| fail("ioctl(FIONREAD)", e))? {
            return Err(too_many());
        }
        q.to_master = drain_master(master.as_fd()).map_err(|e| fail("read", e))?;
        put_back(m, &q.to_master).map_err(|e| fail("ioctl(TIOCSTI)", e))?;
    }
    // crest's slave must not be the first, nor the last to close, unless
    // the master already saw the last one close: the last close of a
    // slave is seen by the master (a hangup).
    q.slave_closed = !slave_held && tty::hung_up(m).map_err(|e| fail("ppoll", e))?;
    if slave_held || q.slave_closed {
        // A locked pair opens no slave: unlocked for the read (the tree
        // is frozen, so none of its processes can open one meanwhile).
        let locked = tty::pty_locked(m).map_err(|e| fail("ioctl(TIOCGPTLCK)", e))?;
        let lock = |on| tty::set_pty_locked(m, on).map_err(|e| fail("ioctl(TIOCSPTLCK)", e));
        if locked {
            lock(false)?;
        }
        let got = slave_queue(m);
        if locked {
            lock(true)?;
        }
        q.to_slave = got
            .map_err(|(call, e)| fail(call, e))?
            .ok_or_else(too_many)?;
    }
    if q.to_master.len() > N_TTY_MAX || q.to_slave.len() > N_TTY_MAX {
        return Err(too_many());
    }
    Ok(q)
}

/// The line discipline's read buffer at `fd` is full: more bytes may
/// wait behind it than crest could feed back.
fn full(fd: RawFd) -> std::result::Result<bool, Errno> {
    Ok(tty::readable(fd)? as usize >= N_TTY_MAX)
}

/// What the master would read, read while poll says there is more.
fn drain_master(m: BorrowedFd<'_>) -> std::result::Result<Vec<u8>, Errno> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.len() <= 2 * N_TTY_MAX && crate::sys::fd::ppoll_readable(m, Duration::ZERO)? {
        let n = match crate::sys::fd::read(m, &mut buf) {
            Ok(n) => n,
            // No slave open any more, and nothing left to read.
            Err(Errno::EIO) => 0,
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    Ok(out)
}

/// Feeds `bytes` back into the line discipline of the tty at `fd`.
fn put_back(fd: RawFd, bytes: &[u8]) -> std::result::Result<(), Errno> {
    bytes.iter().try_for_each(|&b| tty::push_input(fd, b))
}

type Failed = (&'static str, Errno);

/// What the slave of master `m` would read, read and put back; None (and
/// nothing read) when there is more than crest could put back.
fn slave_queue(m: RawFd) -> std::result::Result<Option<Vec<u8>>, Failed> {
    let slave = tty::open_peer(m, PEER_FLAGS).map_err(|e| ("ioctl(TIOCGPTPEER)", e))?;
    let s = slave.as_raw_fd();
    let dumped = tty::termios(s).map_err(|e| ("ioctl(TCGETS)", e))?;
    let mut raw_mode = dumped;
    set_flags(&mut raw_mode, LFLAG, 0, ICANON);
    raw_mode[CC + VMIN] = 0;
    raw_mode[CC + VTIME] = 0;
    tty::set_termios(s, &raw_mode).map_err(|e| ("ioctl(TCSETS)", e))?;
    match full(s) {
        Ok(false) => {}
        other => {
            tty::set_termios(s, &dumped).map_err(|e| ("ioctl(TCSETS)", e))?;
            return other.map(|_| None).map_err(|e| ("ioctl(FIONREAD)", e));
        }
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let read = loop {
        match crate::sys::fd::read(slave.as_fd(), &mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e == Errno::EAGAIN => break Ok(()),
            Err(e) => break Err(("read", e)),
        }
        if out.len() > 2 * N_TTY_MAX {
            break Ok(());
        }
    };
    let requeued = requeue_input(s, &dumped, &out);
    tty::set_termios(s, &dumped).map_err(|e| ("ioctl(TCSETS)", e))?;
    read.and(requeued).map(|()| Some(out))
}

/// Feeds `bytes` into the slave at `s` as input again under termios
/// `dumped` minus echo, signals and input translation.
pub fn requeue_input(
    s: RawFd,
    dumped: &[u8; tty::TERMIOS_LEN],
    bytes: &[u8],
) -> std::result::Result<(), Failed> {
    if bytes.is_empty() {
        return Ok(());
    }
    let mut quiet = *dumped;
    set_flags(&mut quiet, LFLAG, 0, ECHO | ECHONL | ISIG | IEXTEN);
    set_flags(&mut quiet, IFLAG, 0, INPUT_MAPS);
    tty::set_termios(s, &quiet).map_err(|e| ("ioctl(TCSETS)", e))?;
    put_back(s, bytes).map_err(|e| ("ioctl(TIOCSTI)", e))
}

/// Sets `on` and clears `off` in the flag word at `at` of termios `t`.
fn set_flags(t: &mut [u8; tty::TERMIOS_LEN], at: usize, on: u32, off: u32) {
    let mut w = [0u8; 4];
    w.copy_from_slice(&t[at..at + 4]);
    let v = (u32::from_ne_bytes(w) | on) & !off;
    t[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}
