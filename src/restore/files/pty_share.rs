//! Pseudo-terminal pairs whose fds are in several processes of the tree
//! (a master in one, a slave in another; [`super::split`] names such
//! slaves): crest makes the pair once before the tree forks, as install
//! does for a pair inside one process ([`super::pty`]: a new /dev/ptmx
//! with the dumped termios, window size and packet mode, then the slaves,
//! then the lock), and every fd of the pair becomes an inherited one. All
//! masters of a pair share its one open file (there is one per /dev/ptmx
//! open); slaves that shared an open file (fd-desc) share one again, the
//! others each get their own open of /dev/pts/N.
//!
//! A pair that is a session's controlling terminal or holds queued bytes
//! (tty.img) is made here too, even when one process holds all its fds:
//! its bytes go back before any process exists, and the session leader
//! needs it right after setsid ([`super::ctty`]).

use super::{FilesPlan, How, SharedFiles};
use crate::error::{Error, Result};
use crate::image::files::{FdFile, PtyState};
use crate::image::tty::{PtyQueue, TtyImage};
use crate::restore::images::Images;

/// A made pair's dumped state, its fd in the image and crest's slot of
/// its master: what locking it again needs.
type Relock = (PtyState, i32, i32);

/// One fd of a pair: (plan, fd index, is the master).
type User = (usize, usize, bool);

/// The fds of every pair, by index, as the images name them.
fn pairs(imgs: &[&Images], plans: &[&mut FilesPlan]) -> Vec<(u32, Vec<User>)> {
    let mut out: Vec<(u32, Vec<User>)> = Vec::new();
    for (p, plan) in plans.iter().enumerate() {
        for (i, f) in plan.fds.iter().enumerate() {
            let record = imgs[p].files.fds.iter().find(|r| r.fd == f.fd);
            let (index, master) = match record.map(|r| &r.file) {
                Some(FdFile::PtyMaster { index, .. }) => (*index, true),
                Some(FdFile::PtySlave { index, .. }) => (*index, false),
                _ => continue,
            };
            match out.iter_mut().find(|(n, _)| *n == index) {
                Some((_, users)) => users.push((p, i, master)),
                None => out.push((index, vec![(p, i, master)])),
            }
        }
    }
    out
}

/// Makes every pair with fds in two processes or more once, at `base` or
/// above, and points its fds at it (`keep`: per plan, the inherited
/// numbers it keeps). `imgs[n]` is the image of `plans[n]`.
pub fn share_ptys(
    imgs: &[&Images],
    plans: &mut [&mut FilesPlan],
    base: i32,
    out: &mut SharedFiles,
    keep: &mut [Vec<i32>],
) -> Result<()> {
    let ttys = match imgs.first() {
        Some(img) => TtyImage::load(&img.dir)?,
        None => TtyImage::default(),
    };
    let mut masters: Vec<(u32, i32)> = Vec::new();
    // Locked again only once every slave, a session leader's too, is open.
    let mut relocks: Vec<Relock> = Vec::new();
    for (index, users) in pairs(imgs, plans) {
        let first = users[0].0;
        let in_tty = ttys.cttys.iter().any(|c| c.index == index)
            || ttys.queues.iter().any(|q| q.index == index);
        if users.iter().all(|u| u.0 == first) && !in_tty {
            continue;
        }
        let queue = ttys.queues.iter().find(|q| q.index == index);
        let (slots, relock) = make_pair(plans, index, &users, base, out, queue)?;
        relocks.push(relock);
        if let Some(m) = users.iter().zip(&slots).find(|(u, _)| u.2) {
            masters.push((index, *m.1));
        }
        for (&(p, i, _), slot) in users.iter().zip(slots) {
            plans[p].fds[i].how = How::Inherited(slot);
            if !keep[p].contains(&slot) {
                keep[p].push(slot);
            }
        }
    }
    for plan in plans.iter() {
        let lost = plan.fds.iter().find(
            |f| matches!(f.how, How::PtySlave { master, .. } if master == super::pty::ELSEWHERE),
        );
        if let Some(f) = lost {
            return Err(Error::Unsupported(format!(
                "fd {} in the image is a pseudo-terminal slave whose master no process of the image holds; the image is damaged",
                f.fd
            )));
        }
    }
    super::ctty::plan_cttys(imgs, plans, &ttys.cttys, &masters, base, out)?;
    for (state, mfd, mslot) in &relocks {
        super::pty::relock(state, *mfd, *mslot)?;
    }
    Ok(())
}

/// Pair `index` made in crest: the slot of each of `users`, in order,
/// and what [`super::pty::relock`] needs once every slave is open.
fn make_pair(
    plans: &[&mut FilesPlan],
    index: u32,
    users: &[User],
    base: i32,
    out: &mut SharedFiles,
    queue: Option<&PtyQueue>,
) -> Result<(Vec<i32>, Relock)> {
    let master = users
        .iter()
        .find_map(|&(p, i, m)| match &plans[p].fds[i].how {
            How::PtyMaster { flags, state } if m => Some((*flags, *state, plans[p].fds[i].fd)),
            _ => None,
        });
    let Some((flags, state, mfd)) = master else {
        return Err(Error::Unsupported(format!(
            "pseudo-terminal {index}: its slaves are in the image but not its master; the image is damaged"
        )));
    };
    let mslot = out.reserve(base)?;
    super::pty::open_master(flags, &state, mfd, mslot)?;
    let mut descs: Vec<(u64, i32)> = Vec::new();
    let mut slots = Vec::with_capacity(users.len());
    for &(p, i, is_master) in users {
        let f = &plans[p].fds[i];
        let slot = match (is_master, f.desc, &f.how) {
            (true, ..) => mslot,
            (false, Some(d), _) if descs.iter().any(|(x, _)| *x == d) => descs
                .iter()
                .find(|(x, _)| *x == d)
                .map_or(mslot, |(_, s)| *s),
            (false, desc, How::PtySlave { flags, .. }) => {
                let slot = out.reserve(base)?;
                super::pty::open_slave(mslot, *flags, f.fd, slot)?;
                descs.extend(desc.map(|d| (d, slot)));
                slot
            }
            _ => {
                return Err(Error::Unsupported(format!(
                    "fd {}: pseudo-terminal {index} is planned as another kind; this is a bug in crest",
                    f.fd
                )));
            }
        };
        slots.push(slot);
    }
    if let Some(q) = queue {
        super::ctty::requeue(q, &state, mslot)?;
    }
    crate::debug!("pseudo-terminal {index}: shared by several processes, master fd {mslot}");
    Ok((slots, (state, mfd, mslot)))
}
