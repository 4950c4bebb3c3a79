//! The sends that refill a receive queue, each message with its files in
//! flight: regular files and devices opened (or, when a held fd had the
//! same open file, a copy of the one crest made for both: `lent`), unix
//! sockets taken from the plan's sockets, pipe ends from the process's
//! own pipes (borrowed by install) or from a pipe made for them with its
//! bytes.

use super::unix::{Op, Planner};
use crate::error::{Error, Result};
use crate::image::files::{FdFile, UnixQueue};

impl Planner<'_> {
    /// One send per message of `q` from slot `from`.
    pub(super) fn sends(&mut self, from: usize, q: &UnixQueue) -> Result<()> {
        for (i, m) in q.messages.iter().enumerate() {
            let mut slots = Vec::with_capacity(m.fds.len());
            let mut opened = Vec::new();
            for (j, f) in m.fds.iter().enumerate() {
                let key = (q.ino, i as u32, j as u32);
                let lent = self.lent.iter().find(|(k, _)| *k == key).map(|(_, n)| *n);
                let (k, close) = match lent {
                    // The open file a held fd has too, made by crest.
                    Some(n) if matches!(f, FdFile::Reg { .. } | FdFile::Chr { .. }) => {
                        let k = self.helper();
                        self.p.ops.push(Op::Dup(k, n));
                        (k, true)
                    }
                    _ => self.in_flight(q.ino, f)?,
                };
                slots.push(k);
                if close {
                    opened.push(k);
                }
            }
            self.p.ops.push(Op::Send(from, m.data.clone(), slots));
            for k in opened {
                self.p.ops.push(Op::Close(k));
            }
        }
        Ok(())
    }

    /// The slot holding file `f` in flight in the queue of socket `ino`,
    /// and whether to close it right after the send.
    fn in_flight(&mut self, ino: u64, f: &FdFile) -> Result<(usize, bool)> {
        let (path, flags, pos) = match f {
            FdFile::Unix(s) => {
                // Made with the other sockets; install closes its slot.
                let k = self.p.slot_of(s.ino).ok_or_else(|| {
                    Error::Unsupported(format!(
                        "socket:[{}] in flight is missing from the plan; this is a bug in crest",
                        s.ino
                    ))
                })?;
                return Ok((k, false));
            }
            FdFile::Pipe { pipe_id, flags } => return Ok((self.pipe_end(*pipe_id, *flags), false)),
            FdFile::Reg {
                path,
                flags,
                pos,
                id,
            } => (
                super::check::regular(-1, path, id)?,
                super::check::open_flags(*flags),
                *pos,
            ),
            FdFile::Chr {
                path,
                flags,
                rdev,
                pos,
            } => (
                super::check::char_device(-1, path, *rdev)?,
                super::check::open_flags(*flags) | super::check::O_NOCTTY,
                *pos,
            ),
            _ => {
                return Err(Error::Unsupported(format!(
                    "socket:[{ino}] in the image has a file in flight of a kind crest does not restore in flight"
                )));
            }
        };
        let k = self.helper();
        self.p.ops.push(Op::Open(k, path, flags, pos));
        Ok((k, true))
    }

    /// A slot holding the end of pipe `id` that `flags` names: a copy of
    /// the process's own end, or an end of a pipe made for the flight.
    /// Install closes these slots at its end.
    fn pipe_end(&mut self, id: u64, flags: u32) -> usize {
        let write = flags & super::check::O_ACCMODE == crate::sys::fd::O_WRONLY;
        if self.held_pipes.contains(&id) {
            if let Some(&(_, _, k)) = self.p.borrowed.iter().find(|b| b.0 == id && b.1 == write) {
                return k;
            }
            let k = self.helper();
            self.p.borrowed.push((id, write, k));
            return k;
        }
        let (r, w) = match self.flight_pipes.iter().find(|p| p.0 == id) {
            Some(&(_, r, w)) => (r, w),
            None => {
                let (r, w) = (self.helper(), self.helper());
                let data = self
                    .pipes
                    .iter()
                    .filter(|p| p.pipe_id == id)
                    .flat_map(|p| p.data.iter().copied())
                    .collect();
                self.p.ops.push(Op::Pipe(r, w, data));
                self.flight_pipes.push((id, r, w));
                (r, w)
            }
        };
        let k = if write { w } else { r };
        self.p.ops.push(Op::Flags(k, flags));
        k
    }
}
