//! Unix sockets that span processes of a tree: a pair whose ends sit in
//! two processes, a socket inherited across fork, a listener whose
//! accepted or pending connections another process holds. Each process
//! making its own copy would break them, so crest makes them once, before
//! the tree forks, with the same [`unix::plan`](super::unix::plan) and
//! [`create`](super::unix::create) a single process uses, at fd numbers it
//! reserves above every fd of the image; every task inherits them and
//! [`How::Inherited`](super::How) dups each into place, as shared.rs does
//! for open files.
//!
//! What spans is decided per group of connected sockets: sockets linked by
//! a peer, by a listener's name (accepted or pending) or by travelling in
//! another's queue (SCM_RIGHTS) form a group, and a group held by fds of
//! two processes or more is made here whole, queues and files in flight
//! included; the other groups stay with their process. A queue held by
//! several processes was stored by each: it is sent once.
//!
//! A pipe in flight in such a queue that a process of the tree holds too
//! is one pipe: crest makes it once, with its bytes, sends its ends from
//! there and the holders inherit the same ends (their plan's pipe is
//! [`inherited`](super::PlannedPipe)). A pipe also links the sockets whose
//! queues carry it and counts its holders among their group's, so a
//! socket whose queue carries a pipe another process holds spans too.
//! The regular files and devices in flight that are a held fd's open file
//! are opened first, for the whole tree ([`super::unix_flight`]).

use std::os::fd::{AsRawFd, RawFd};

use super::shared::SharedFiles;
use super::unix::Lent;
use crate::error::Result;
use crate::image::files::{Fd, FdFile, PipeData, UnixPeer, UnixQueue, UnixSocket};
use crate::image::load::FilesImage;
use crate::sys::unix_diag::TCP_LISTEN;

/// The sockets crest made for the tree: each socket's inode and fd number
/// here, kept open until the tree has forked.
#[derive(Debug, Default)]
pub struct TreeSockets {
    open: SharedFiles,
    at: Vec<(u64, RawFd)>,
    /// Pipes in flight that processes hold too: (pipe id, [read, write]).
    pipes: Vec<(u64, [RawFd; 2])>,
    /// Open files that are in flight and held too: (description id, fd).
    files: Vec<(u64, RawFd)>,
    /// Each such file in flight, by where it is in its queue.
    lent: Vec<Lent>,
}

impl TreeSockets {
    /// The fd number crest holds socket `ino` at, when it made it.
    pub fn fd_of(&self, ino: u64) -> Option<RawFd> {
        self.at.iter().find(|(i, _)| *i == ino).map(|(_, fd)| *fd)
    }

    /// The read and write ends crest holds pipe `id` at, when it made it.
    pub fn pipe_of(&self, id: u64) -> Option<[RawFd; 2]> {
        self.pipes.iter().find(|(i, _)| *i == id).map(|(_, e)| *e)
    }

    /// The fd number crest holds the open file with description id `desc`
    /// at, when a file in flight is that open file too.
    pub fn desc_fd(&self, desc: u64) -> Option<RawFd> {
        self.files
            .iter()
            .find(|(d, _)| *d == desc)
            .map(|(_, fd)| *fd)
    }

    /// The files in flight crest opened (for [`super::unix::plan_lent`]).
    pub fn lent(&self) -> &[Lent] {
        &self.lent
    }

    /// The inherited numbers `files`' fds and files in flight use (each once).
    pub fn used_by(&self, files: &FilesImage) -> Vec<RawFd> {
        let mut out: Vec<RawFd> = Vec::new();
        let lent = files.flight_files.iter().filter_map(|e| {
            let key = (e.ino, e.message, e.index);
            self.lent
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, n)| vec![*n])
        });
        let descs = files
            .descs
            .iter()
            .filter_map(|d| self.desc_fd(d.desc_id).map(|n| vec![n]));
        let held = files.fds.iter().filter_map(|f| match &f.file {
            FdFile::Unix(s) => self.fd_of(s.ino).map(|n| vec![n]),
            FdFile::Pipe { pipe_id, .. } => self.pipe_of(*pipe_id).map(|e| e.to_vec()),
            _ => None,
        });
        for nums in held.chain(descs).chain(lent) {
            for n in nums {
                if !out.contains(&n) {
                    out.push(n);
                }
            }
        }
        out
    }

    /// How many sockets crest holds for the tasks.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// Whether it made none.
    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }
}

/// Every socket of the tree once: (inode, the socket, the processes whose
/// fds hold it). Sockets only in flight have no holder.
fn all_sockets<'a>(procs: &[&'a FilesImage]) -> Vec<(&'a UnixSocket, Vec<usize>)> {
    let mut out: Vec<(&UnixSocket, Vec<usize>)> = Vec::new();
    for (p, files) in procs.iter().enumerate() {
        let held = files.fds.iter().map(|f| (Some(p), &f.file));
        let carried = files
            .unix_queues
            .iter()
            .flat_map(|q| q.messages.iter().flat_map(|m| m.fds.iter()))
            .map(|f| (None, f));
        for (holder, file) in held.chain(carried) {
            let FdFile::Unix(s) = file else { continue };
            let i = match out.iter().position(|(o, _)| o.ino == s.ino) {
                Some(i) => i,
                None => {
                    out.push((s, Vec::new()));
                    out.len() - 1
                }
            };
            if let Some(p) = holder
                && !out[i].1.contains(&p)
            {
                out[i].1.push(p);
            }
        }
    }
    // A queue carrying a pipe: the pipe's holders count as its socket's.
    for q in procs.iter().flat_map(|f| f.unix_queues.iter()) {
        let Some(i) = out.iter().position(|(s, _)| s.ino == q.ino) else {
            continue;
        };
        for id in pipes_in(q) {
            for p in pipe_holders(procs, id) {
                if !out[i].1.contains(&p) {
                    out[i].1.push(p);
                }
            }
        }
    }
    out
}

/// The ids of the pipes in flight in queue `q`.
pub(super) fn pipes_in(q: &UnixQueue) -> impl Iterator<Item = u64> + '_ {
    q.messages
        .iter()
        .flat_map(|m| m.fds.iter())
        .filter_map(|f| match f {
            FdFile::Pipe { pipe_id, .. } => Some(*pipe_id),
            _ => None,
        })
}

/// The processes whose fds hold an end of pipe `id`.
pub(super) fn pipe_holders(procs: &[&FilesImage], id: u64) -> Vec<usize> {
    (0..procs.len())
        .filter(|&p| {
            procs[p]
                .fds
                .iter()
                .any(|f| matches!(f.file, FdFile::Pipe { pipe_id, .. } if pipe_id == id))
        })
        .collect()
}

/// The group (smallest index of a linked socket) of each socket.
fn groups(socks: &[(&UnixSocket, Vec<usize>)], procs: &[&FilesImage]) -> Vec<usize> {
    let mut g: Vec<usize> = (0..socks.len()).collect();
    let find = |g: &[usize], mut i: usize| {
        while g[i] != i {
            i = g[i];
        }
        i
    };
    let pos = |ino: u64| socks.iter().position(|(s, _)| s.ino == ino);
    let mut links: Vec<(usize, usize)> = Vec::new();
    for (i, (s, _)) in socks.iter().enumerate() {
        if let UnixPeer::Socket(p) | UnixPeer::Pending(p) = s.peer
            && let Some(j) = pos(p)
        {
            links.push((i, j));
        }
        let listener = socks.iter().position(|(l, _)| {
            l.state == TCP_LISTEN && !s.name.is_empty() && l.name == s.name && l.kind == s.kind
        });
        if let Some(j) = listener {
            links.push((i, j));
        }
    }
    for q in procs.iter().flat_map(|f| f.unix_queues.iter()) {
        let carried = q.messages.iter().flat_map(|m| m.fds.iter());
        for f in carried {
            if let (FdFile::Unix(s), Some(i)) = (f, pos(q.ino))
                && let Some(j) = pos(s.ino)
            {
                links.push((i, j));
            }
        }
    }
    // Two queues carrying one pipe: one group, so the pipe is made once.
    let mut carriers: Vec<(u64, usize)> = Vec::new();
    for q in procs.iter().flat_map(|f| f.unix_queues.iter()) {
        let Some(i) = pos(q.ino) else { continue };
        for id in pipes_in(q) {
            match carriers.iter().find(|(c, _)| *c == id) {
                Some(&(_, j)) => links.push((i, j)),
                None => carriers.push((id, i)),
            }
        }
    }
    for (a, b) in links {
        let (ra, rb) = (find(&g, a), find(&g, b));
        g[ra.max(rb)] = ra.min(rb);
    }
    (0..socks.len()).map(|i| find(&g, i)).collect()
}

/// The inodes of the sockets whose group two processes or more hold.
pub fn spanning(procs: &[&FilesImage]) -> Vec<u64> {
    let socks = all_sockets(procs);
    let g = groups(&socks, procs);
    let mut holders: Vec<(usize, Vec<usize>)> = Vec::new();
    for (i, (_, h)) in socks.iter().enumerate() {
        match holders.iter_mut().find(|(r, _)| *r == g[i]) {
            Some((_, all)) => {
                for p in h {
                    if !all.contains(p) {
                        all.push(*p);
                    }
                }
            }
            None => holders.push((g[i], h.clone())),
        }
    }
    let spans = |root: usize| holders.iter().any(|(r, h)| *r == root && h.len() > 1);
    (0..socks.len())
        .filter(|&i| spans(g[i]))
        .map(|i| socks[i].0.ino)
        .collect()
}

/// Makes the sockets that span processes of `procs` (whose pids are
/// `pids`) once, at numbers >= `base`, with their queues (each sent
/// once); and the open files that are in flight and held too.
pub fn create_tree(procs: &[&FilesImage], pids: &[u32], base: i32) -> Result<TreeSockets> {
    let mut open = SharedFiles::default();
    let (files, lent) = super::unix_flight::open_flight_files(procs, pids, &mut open, base)?;
    let inos = spanning(procs);
    if inos.is_empty() {
        return Ok(TreeSockets {
            open,
            files,
            lent,
            ..TreeSockets::default()
        });
    }
    let mut fds: Vec<&Fd> = Vec::new();
    for f in procs.iter().flat_map(|p| p.fds.iter()) {
        if let FdFile::Unix(s) = &f.file
            && inos.contains(&s.ino)
            && !fds
                .iter()
                .any(|o| matches!(&o.file, FdFile::Unix(x) if x.ino == s.ino))
        {
            fds.push(f);
        }
    }
    let mut queues: Vec<UnixQueue> = Vec::new();
    for q in procs.iter().flat_map(|p| p.unix_queues.iter()) {
        if inos.contains(&q.ino) && !queues.iter().any(|o| o.ino == q.ino) {
            queues.push(q.clone());
        }
    }
    let pipes: Vec<PipeData> = procs.iter().flat_map(|p| p.pipes.clone()).collect();
    let held_pipes = super::unix_flight::make_held_pipes(procs, &queues, &pipes, &mut open, base)?;
    // The planner borrows the ends of the pipes a process holds: one fd
    // record per such pipe tells it which.
    for (id, _) in &held_pipes {
        let holder = procs
            .iter()
            .flat_map(|p| p.fds.iter())
            .find(|f| matches!(f.file, FdFile::Pipe { pipe_id, .. } if pipe_id == *id));
        fds.extend(holder);
    }
    let mut plan = super::unix::plan_lent(&fds, &queues, &pipes, &lent)?;
    // Helper slots are closed below, once every step ran: closing them
    // here by number would leave crest's owned copies dangling.
    plan.ops.retain(|o| !matches!(o, super::unix::Op::Close(_)));
    let slots: Vec<RawFd> = (0..plan.slots)
        .map(|_| open.reserve(base))
        .collect::<Result<_>>()?;
    super::unix_flight::lend_pipe_ends(&plan, &held_pipes, &slots)?;
    super::unix::create(&plan, |k| slots[k])?;
    let at: Vec<(u64, RawFd)> = plan
        .inos
        .iter()
        .copied()
        .zip(slots.iter().copied())
        .collect();
    let held: Vec<RawFd> = at
        .iter()
        .filter(|(i, _)| {
            fds.iter()
                .any(|f| matches!(&f.file, FdFile::Unix(s) if s.ino == *i))
        })
        .map(|(_, fd)| *fd)
        .collect();
    let mut keep: Vec<RawFd> = held_pipes.iter().flat_map(|(_, e)| *e).collect();
    keep.extend(files.iter().map(|(_, fd)| *fd));
    keep.extend(&held);
    open.retain(|fd| keep.contains(&fd.as_raw_fd()));
    crate::debug!(
        "{} unix socket(s) shared between processes, {} made in all, {} pipe(s) in flight held too",
        held.len(),
        plan.slots,
        held_pipes.len()
    );
    Ok(TreeSockets {
        open,
        at: at.into_iter().filter(|(_, fd)| held.contains(fd)).collect(),
        pipes: held_pipes,
        files,
        lent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::files::UnixMessage;
    use std::os::fd::AsFd;

    fn sock(fd: i32, ino: u64, kind: u8, state: u8, name: &[u8], peer: UnixPeer) -> Fd {
        super::super::unix::tests::socket_fd(fd, ino, kind, state, name, peer, 65536)
    }

    fn files(fds: Vec<Fd>, queues: Vec<UnixQueue>) -> FilesImage {
        FilesImage {
            fds,
            unix_queues: queues,
            ..FilesImage::default()
        }
    }

    fn queue(ino: u64, data: &[u8], fds: Vec<FdFile>) -> UnixQueue {
        UnixQueue {
            ino,
            messages: vec![UnixMessage {
                data: data.to_vec(),
                fds,
            }],
        }
    }

    #[test]
    fn groups_held_by_two_processes_span_and_the_others_stay() {
        let name = b"\0xunix-span";
        let carried = sock(-1, 9, 1, 1, b"", UnixPeer::Gone).file;
        let p0 = files(
            vec![
                sock(3, 1, 1, 1, b"", UnixPeer::Socket(2)),
                sock(4, 5, 1, 10, name, UnixPeer::None),
                sock(5, 6, 1, 1, b"", UnixPeer::Socket(7)),
                sock(6, 20, 2, 1, b"", UnixPeer::Socket(21)),
                sock(7, 21, 2, 1, b"", UnixPeer::Socket(20)),
            ],
            vec![queue(1, b"x", vec![carried])],
        );
        let p1 = files(
            vec![
                sock(3, 2, 1, 1, b"", UnixPeer::Socket(1)),
                sock(4, 7, 1, 1, name, UnixPeer::Socket(6)),
                sock(5, 30, 1, 1, b"", UnixPeer::None),
            ],
            Vec::new(),
        );
        let mut got = spanning(&[&p0, &p1]);
        got.sort_unstable();
        // The split pair with the socket in flight in its queue; the
        // listener with its accepted connection (in p1) and its client.
        assert_eq!(got, [1, 2, 5, 6, 7, 9]);
        assert!(spanning(&[&p0]).is_empty(), "one process: nothing spans");
    }

    #[test]
    fn a_socket_two_processes_hold_is_made_once_with_its_queue_sent_once() {
        let a = || sock(3, 100, 2, 1, b"", UnixPeer::Socket(101));
        let b = sock(4, 101, 2, 1, b"", UnixPeer::Socket(100));
        let q = || vec![queue(100, b"once", Vec::new())];
        let p0 = files(vec![a(), b], q());
        let p1 = files(vec![a()], q());
        let made = create_tree(&[&p0, &p1], &[1, 2], 200).unwrap();
        assert_eq!(made.len(), 2);
        let (fa, fb) = (made.fd_of(100).unwrap(), made.fd_of(101).unwrap());
        assert!(fa >= 200 && fb >= 200 && fa != fb);
        assert_eq!(made.used_by(&p1), [fa]);
        let copy = crate::sys::fdtable::dup_at_least(fa, 300).unwrap();
        let copy = crate::sys::fd::own(copy as usize);
        let fa = copy.as_fd();
        let mut buf = [0u8; 16];
        let n = crate::sys::fd::read(fa, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"once");
        crate::sys::fdtable::set_status_flags(copy.as_raw_fd(), crate::sys::fd::O_NONBLOCK)
            .unwrap();
        assert!(crate::sys::fd::read(fa, &mut buf).is_err(), "sent once");
    }

    #[test]
    fn a_held_pipe_in_flight_in_a_shared_socket_is_that_pipe() {
        let pipe = |flags| FdFile::Pipe { pipe_id: 77, flags };
        let q = vec![queue(100, b"p", vec![pipe(0)])];
        let mut p0 = files(
            vec![
                sock(3, 100, 2, 1, b"", UnixPeer::Socket(101)),
                sock(4, 101, 2, 1, b"", UnixPeer::Socket(100)),
            ],
            q,
        );
        p0.pipes.push(PipeData {
            pipe_id: 77,
            data: b"queued".to_vec(),
        });
        // The pipe's write end is in a third process only.
        let p1 = files(
            vec![sock(3, 100, 2, 1, b"", UnixPeer::Socket(101))],
            Vec::new(),
        );
        let mut p2 = files(Vec::new(), Vec::new());
        p2.fds.push(Fd {
            fd: 5,
            fd_flags: 0,
            file: pipe(1),
        });
        assert_eq!(spanning(&[&p0, &p2]), [100, 101], "the pipe's holder");
        let made = create_tree(&[&p0, &p1, &p2], &[1, 2, 3], 200).unwrap();
        let [_, w] = made.pipe_of(77).unwrap();
        assert_eq!(made.used_by(&p2), made.pipe_of(77).unwrap());
        // The end in flight reads the pipe's bytes, then what the holder
        // writes into the pipe crest made: one pipe.
        let fa = made.fd_of(100).unwrap();
        let mut buf = [0u8; 16];
        let got = crate::sys::unix_sock::recvmsg_peek(fa, &mut buf, 0).unwrap();
        assert_eq!((got.len, got.fds.len()), (1, 1));
        let w = crate::sys::fdtable::dup_at_least(w, 300).unwrap();
        let w = crate::sys::fd::own(w as usize);
        crate::sys::fd::write(w.as_fd(), b"+more").unwrap();
        let n = crate::sys::fd::read(got.fds[0].as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"queued+more");
    }

    #[test]
    fn a_held_file_in_flight_is_opened_once_for_every_holder() {
        use std::os::unix::fs::MetadataExt;
        let rdev = std::fs::metadata("/dev/null").unwrap().rdev();
        let null = |fd| Fd {
            fd,
            fd_flags: 0,
            file: FdFile::Chr {
                path: b"/dev/null".to_vec(),
                flags: 2,
                rdev,
                pos: 0,
            },
        };
        let desc = |fd| crate::image::files::FdDesc { fd, desc_id: 9 };
        let mut p0 = files(vec![null(5)], Vec::new());
        p0.descs.push(desc(5));
        p0.flight_files.push(crate::image::files::UnixFlightFile {
            ino: 100,
            message: 1,
            index: 0,
            pid: 20,
            fd: 7,
        });
        let mut p1 = files(vec![null(7)], Vec::new());
        p1.descs.push(desc(7));
        let made = create_tree(&[&p0, &p1], &[10, 20], 200).unwrap();
        let n = made.desc_fd(9).unwrap();
        assert!(n >= 200);
        assert_eq!(made.lent(), [((100, 1, 0), n)]);
        assert_eq!(made.used_by(&p0), [n]);
        assert_eq!(made.used_by(&p1), [n]);
        let flags = crate::sys::fdtable::get_status_flags(n).unwrap();
        assert_eq!(flags & 3, 2, "opened read-write as dumped");
    }
}
