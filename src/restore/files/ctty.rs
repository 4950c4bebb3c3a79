//! Controlling terminals and queued bytes of pseudo-terminal pairs
//! (tty.img): the restore side of dump's `files::tty`.
//!
//! A session whose controlling terminal was a pair of the tree gets it
//! back the way a login does it: crest makes the pair before the tree
//! forks ([`super::pty_share`]) and opens one more slave for the session
//! leader (O_NOCTTY, so crest's own session is untouched). The leader,
//! right after setsid and before it creates any child, makes it its
//! controlling terminal with TIOCSCTTY ([`FilesPlan::take_ctty`]), so
//! every process later born in the session inherits it. Once every task
//! has created its children (all process groups exist), the leader
//! brings the dumped foreground group to the front with TIOCSPGRP
//! ([`FilesPlan::set_foreground`]); install then closes that extra slave.
//! The fds of the tree that were /dev/tty (5:0) in such a session become
//! dev-tty fds ([`check_tree`]), which install opens as /dev/tty in the
//! task, after the terminal is its own. Each process opens its own: two
//! fds sharing one open of /dev/tty come back as two opens.
//!
//! Queued bytes go back into the new pair before any process exists
//! ([`requeue`]): the master's with TIOCSTI on the master (always raw),
//! the slave's with TIOCSTI on a slave of crest's under the dumped termios
//! minus echo, signals and input translation, so canonical lines (and a
//! line still without its newline) are rebuilt as they were.

use std::os::fd::{AsRawFd, RawFd};

use super::FilesPlan;
use crate::error::{Error, Result};
use crate::image::files::{FdFile, PtyState};
use crate::image::pstree::TaskState;
use crate::image::tty::{Ctty, PtyQueue, TtyImage};
use crate::restore::images::{Images, Tree};
use crate::sys::tty;

/// A session leader's controlling terminal: a slave crest opened and the
/// group to bring to the foreground.
#[derive(Debug, Clone, Copy)]
pub struct CttyPlan {
    /// The inherited slave's number.
    slot: RawFd,
    /// The dumped foreground process group.
    fg_pgrp: u32,
    /// The session (the leader's pid), for messages.
    sid: u32,
}

/// `O_RDWR | O_NOCTTY | O_CLOEXEC`.
const SLAVE_FLAGS: u32 = 0o2 | 0o400 | 0o2000000;

impl FilesPlan {
    /// In the session leader, right after setsid: makes its dumped
    /// controlling terminal its own (TIOCSCTTY), when it had one.
    pub fn take_ctty(&self) -> Result<()> {
        let Some(c) = &self.ctty else { return Ok(()) };
        tty::set_ctty(c.slot).map_err(|e| {
            Error::sys(
                "ioctl(TIOCSCTTY)",
                format!("session {}: taking its controlling terminal", c.sid),
                e,
            )
        })
    }

    /// In the session leader, once every process group exists: gives the
    /// terminal its dumped foreground group (TIOCSPGRP).
    pub fn set_foreground(&self) -> Result<()> {
        let Some(c) = &self.ctty else { return Ok(()) };
        if c.fg_pgrp == 0 {
            return Ok(());
        }
        tty::set_fg_pgrp(c.slot, c.fg_pgrp).map_err(|e| {
            Error::sys(
                "ioctl(TIOCSPGRP)",
                format!(
                    "session {}: making group {} the foreground of its terminal",
                    c.sid, c.fg_pgrp
                ),
                e,
            )
        })
    }
}

/// Checks tty.img against the loaded tree and turns the /dev/tty fds of
/// sessions whose terminal comes back into dev-tty fds.
pub fn check_tree(tree: &mut Tree) -> Result<()> {
    let Some(first) = tree.live().next() else {
        return Ok(());
    };
    let ttys = TtyImage::load(&first.dir)?;
    for c in &ttys.cttys {
        check_ctty(tree, c)?;
    }
    for (_, img) in tree.procs.iter_mut() {
        let Some(img) = img.as_mut() else { continue };
        if !ttys.cttys.iter().any(|c| c.sid == img.process.sid) {
            continue;
        }
        for f in img.files.fds.iter_mut() {
            if let FdFile::Chr { flags, rdev, .. } = f.file
                && rdev == DEV_TTY
            {
                f.file = FdFile::DevTty { flags };
            }
        }
    }
    Ok(())
}

/// /dev/tty's device number, 5:0.
const DEV_TTY: u64 = 0x500;

/// A ctty record must name a live session leader of the tree and a pair
/// whose master the tree holds.
fn check_ctty(tree: &Tree, c: &Ctty) -> Result<()> {
    let leader = tree.procs.iter().find(|(p, _)| p.pid == c.sid);
    let leads = leader.is_some_and(|(p, img)| {
        p.sid == p.pid && img.is_some() && !matches!(p.state, TaskState::Zombie { .. })
    });
    let has_master = tree.live().any(|i| {
        i.files
            .fds
            .iter()
            .any(|f| matches!(f.file, FdFile::PtyMaster { index, .. } if index == c.index))
    });
    if leads && has_master {
        return Ok(());
    }
    Err(Error::Unsupported(format!(
        "tty.img gives session {} the controlling terminal /dev/pts/{}, but the image has {}; the image is damaged",
        c.sid,
        c.index,
        if leads {
            "no master of that pair"
        } else {
            "no live leader of that session"
        }
    )))
}

/// Gives each session leader of `cttys` a slave of its pair (the new
/// master of pair `index` is at `masters[(index, slot)]`), opened at
/// `base` or above.
pub(super) fn plan_cttys(
    imgs: &[&Images],
    plans: &mut [&mut FilesPlan],
    cttys: &[Ctty],
    masters: &[(u32, RawFd)],
    base: i32,
    out: &mut super::SharedFiles,
) -> Result<()> {
    for c in cttys {
        let leader = imgs.iter().position(|i| i.process.pid == c.sid);
        let master = masters.iter().find(|m| m.0 == c.index).map(|m| m.1);
        let (Some(p), Some(mslot)) = (leader, master) else {
            return Err(Error::Unsupported(format!(
                "session {}: its controlling terminal /dev/pts/{} was not made; this is a bug in crest",
                c.sid, c.index
            )));
        };
        let slot = out.reserve(base)?;
        let what = format!("session {}: opening its controlling terminal", c.sid);
        // Before the pair is locked again (pty_share.rs).
        let slave = tty::open_peer(mslot, SLAVE_FLAGS)
            .map_err(|e| Error::sys("ioctl(TIOCGPTPEER)", what.clone(), e))?;
        crate::sys::fdtable::dup3(slave.as_raw_fd(), slot, crate::sys::fd::O_CLOEXEC)
            .map_err(|e| Error::sys("dup3", what, e))?;
        crate::debug!(
            "session {}: controlling terminal /dev/pts/{} at fd {slot}, foreground group {}",
            c.sid,
            c.index,
            c.fg_pgrp
        );
        plans[p].ctty = Some(CttyPlan {
            slot,
            fg_pgrp: c.fg_pgrp,
            sid: c.sid,
        });
    }
    Ok(())
}

/// Queues `q`'s bytes into the new pair whose master is at `mslot` (its
/// dumped state `state` already set, still unlocked).
pub(super) fn requeue(q: &PtyQueue, state: &PtyState, mslot: RawFd) -> Result<()> {
    let what = format!("pseudo-terminal {}: queuing its dumped bytes", q.index);
    for &b in &q.to_master {
        tty::push_input(mslot, b).map_err(|e| Error::sys("ioctl(TIOCSTI)", what.clone(), e))?;
    }
    if q.to_slave.is_empty() && !q.slave_closed {
        return Ok(());
    }
    // Closed at the end: the master then sees the hangup it saw, when no
    // process holds a slave.
    let slave = tty::open_peer(mslot, SLAVE_FLAGS)
        .map_err(|e| Error::sys("ioctl(TIOCGPTPEER)", what.clone(), e))?;
    let s = slave.as_raw_fd();
    let put = crate::dump::files::tty::requeue_input(s, &state.termios, &q.to_slave);
    let back = tty::set_termios(s, &state.termios);
    put.map_err(|(call, e)| Error::sys(call, what.clone(), e))?;
    back.map_err(|e| Error::sys("ioctl(TCSETS)", what, e))?;
    crate::debug!(
        "pseudo-terminal {}: {} byte(s) queued to the slave, {} to the master",
        q.index,
        q.to_slave.len(),
        q.to_master.len()
    );
    Ok(())
}
