//! File descriptors, cwd and root of a restored task (files-PID.img and the
//! task-misc record).
//!
//! Restore of the files is two steps. [`plan_files`] runs in crest before any
//! process exists and checks every fd against the file system as it is now:
//! a regular file must still have the size and mtime it had at the dump, a
//! directory must still be a directory, a character device must have the
//! dumped device number, a terminal needs `--shell-job`, and cwd and root
//! must be directories. Each refusal is one sentence naming the fd, the path,
//! what changed and the fix. The plan it returns holds everything
//! [`install_files`] needs as ready-made C strings and bytes, so that
//! install, which runs in the new task before the restorer blob, does no
//! allocation and makes one raw syscall after another.
//!
//! Install opens every file (flags as dumped, without O_CREAT, O_EXCL and
//! O_TRUNC; O_NOCTTY for devices) and recreates every pipe (its queued bytes
//! written back, each end's O_NONBLOCK as dumped) at temporary numbers above
//! every fd crest keeps, then dup3s each into its place with its FD_CLOEXEC,
//! which also closes whatever crest held at that number; then it closes all
//! other fds, chdirs to cwd and chroots to root (paths are as crest saw them,
//! so chdir comes first). A terminal becomes a dup of crest's own terminal
//! (the first of its stdin, stdout and stderr that is one), as CRIU's
//! `--shell-job`. Two fds on the same pipe end share one open file, as
//! almost always at dump; fds whose fd-desc records name one open file
//! description (in this process or others of the tree) share one, which
//! crest opens before the tree forks ([`shared`]); without those records
//! (older images) two fds on a regular file get one open file each. A pipe
//! with ends in several processes is made once the same way. A pipe end no
//! process of the image held is closed after install: its reader sees end
//! of file after the queued bytes, its writer gets EPIPE.
//!
//! The kinds whose object crest makes from the image: memfds ([`memfd`])
//! and deleted files ([`ghost`]) are made in crest by the restorer's plan
//! (they are mapped too) and kept as helper fds, which
//! [`FilesPlan::set_objects`] hands to this plan so each fd reopens its
//! object; named FIFOs ([`fifo`]) and pseudo-terminal pairs ([`pty`]) are
//! opened by install; file locks ([`lock`]) are re-taken last. Objects
//! processes of a tree share are made once by crest: memfds and deleted
//! files ([`tree_objects`]), FIFO open files ([`fifo`]), pseudo-terminal
//! pairs split between processes ([`split`], [`pty_share`]), and pairs
//! that are a session's controlling terminal or hold queued bytes
//! ([`ctty`], which also reopens /dev/tty fds).
//! Unix sockets that span processes are made once by crest ([`unix_tree`])
//! and inherited, like shared open files.

mod anon;
pub(super) mod check;
mod ctty;
mod fifo;
mod ghost;
mod install;
mod lock;
mod memfd;
mod pty;
mod pty_share;
mod shared;
mod split;
mod tree_objects;
mod unix;
mod unix_flight;
mod unix_make;
mod unix_send;
mod unix_tree;

use std::ffi::CString;

use crate::error::{Error, Result};
use crate::image::files::{Fd, FdFile};
use crate::image::load::FilesImage;
use crate::image::task::TaskMisc;

pub use ghost::create_ghosts;
pub use install::install_files;
pub use memfd::create_memfds;
pub use pty_share::share_ptys;
pub use shared::{SharedFiles, share};
pub use split::check_tree as check_kinds_sharing;
pub use tree_objects::{TreeObjects, create_tree_objects};
pub use unix_tree::{TreeSockets, create_tree as create_tree_sockets};

/// Everything about the files, checked in the parent before any process exists.
#[derive(Debug)]
pub struct FilesPlan {
    /// One entry per fd of the image, in increasing fd order.
    fds: Vec<PlannedFd>,
    /// One entry per pipe id the fds use.
    pipes: Vec<PlannedPipe>,
    /// The working directory, as crest sees it.
    cwd: CString,
    /// The root directory, when it is not "/".
    root: Option<CString>,
    /// The lowest number above every fd of the image.
    first_free: i32,
    /// crest's terminal fd (0, 1 or 2) when a tty fd is restored with
    /// `--shell-job`.
    tty_source: Option<i32>,
    /// The unix sockets and the steps that make them.
    unix: unix::UnixPlan,
    /// The recreated memfds as (id, helper fd), set by [`FilesPlan::set_objects`].
    memfds: Vec<(u64, i32)>,
    /// The recreated deleted files as ((dev, ino), helper fd), likewise.
    ghosts: Vec<((u64, u64), i32)>,
    /// The named FIFOs the fds open.
    fifos: Vec<fifo::PlannedFifo>,
    /// The file locks to re-take once the fds are in place.
    locks: Vec<crate::image::files::FileLock>,
    /// The controlling terminal a session leader takes (see [`ctty`]).
    ctty: Option<ctty::CttyPlan>,
}

/// One fd to install.
#[derive(Debug)]
struct PlannedFd {
    /// Its number.
    fd: i32,
    /// FD_CLOEXEC as dumped.
    cloexec: bool,
    /// Where its open file comes from.
    how: How,
    /// Its open file description's id (fd-desc record), when the image
    /// has one: fds with the same id share one open file.
    desc: Option<u64>,
}

/// How an fd's open file is made.
#[derive(Debug)]
enum How {
    /// openat(path, flags), then lseek to `pos` unless 0.
    Open { path: CString, flags: u32, pos: u64 },
    /// An end of `pipes[pipe]`.
    Pipe { pipe: usize, write: bool },
    /// A dup of crest's terminal (`--shell-job`).
    Tty,
    /// An eventfd, signalfd, timerfd, epoll or inotify object made anew.
    Anon(anon::PlannedAnon),
    /// Unix socket slot `n` of the plan's sockets.
    Unix(usize),
    /// A new open of memfd `id` (recreated in crest, see [`memfd`]).
    Memfd { id: u64, flags: u32, pos: u64 },
    /// A new open of the deleted file `key` (dev, ino; see [`ghost`]).
    Ghost {
        key: (u64, u64),
        flags: u32,
        pos: u64,
    },
    /// An open of `fifos[fifo]` with `flags` (see [`fifo`]).
    Fifo { fifo: usize, flags: u32 },
    /// A new pseudo-terminal pair's master (see [`pty`]).
    PtyMaster {
        flags: u32,
        state: crate::image::files::PtyState,
    },
    /// The slave of the pair whose master is `fds[master]`.
    PtySlave { master: usize, flags: u32 },
    /// An open file crest made for several fds (shared.rs), inherited at
    /// this number.
    Inherited(i32),
}

/// A pipe to recreate.
#[derive(Debug)]
struct PlannedPipe {
    /// Its id in the image, for messages.
    id: u64,
    /// Bytes to queue back into it.
    data: Vec<u8>,
    /// File status flags of the read end and of the write end, for the
    /// ends the image has.
    flags: [Option<u32>; 2],
    /// The read and write ends' numbers when crest made the pipe for
    /// several processes (shared.rs): inherited, not made by install.
    inherited: Option<[i32; 2]>,
}

impl FilesPlan {
    /// The lowest fd number above every fd of the image: the lead moves its own helper
    /// fds (pages file, mapping files) to numbers >= this before install_files.
    pub fn first_free_fd(&self) -> i32 {
        self.first_free
    }

    /// The fd numbers install_files puts in place, in increasing order.
    pub fn fd_numbers(&self) -> impl Iterator<Item = i32> + '_ {
        self.fds.iter().map(|f| f.fd)
    }

    /// Gives the plan the memfds and deleted files crest recreated as the
    /// task's helper fds, which their fds reopen; refuses an fd without one.
    pub fn set_objects(&mut self, helpers: &crate::restore::mem::HelperFds) -> Result<()> {
        let (memfds, ghosts) = (helpers.memfds(), helpers.ghosts());
        for f in &self.fds {
            let found = match f.how {
                How::Memfd { id, .. } => memfds.iter().any(|(m, _)| *m == id),
                How::Ghost { key, .. } => ghosts.iter().any(|(k, _)| *k == key),
                _ => true,
            };
            if !found {
                return Err(memfd::missing(f.fd));
            }
        }
        self.memfds = memfds.to_vec();
        self.ghosts = ghosts.to_vec();
        Ok(())
    }

    /// How many temporary fds install_files uses above the kept ones (the
    /// task's RLIMIT_NOFILE must leave room for them).
    pub fn temp_fds(&self) -> usize {
        self.fds.len() + 2 * self.pipes.len() + 1 + self.unix.slots + self.fifos.len()
    }
}

/// Checks every fd of the image and cwd/root against the file system now: each path
/// exists; regular files still have the dumped size and mtime (FileId in the image), dirs
/// are dirs, char devices have the dumped rdev; ttys need `shell_job`. Errors are one
/// sentence naming fd, path, what changed, and the fix.
pub fn plan_files(files: &FilesImage, misc: &TaskMisc, shell_job: bool) -> Result<FilesPlan> {
    plan_files_in_tree(files, misc, shell_job, &TreeSockets::default())
}

/// [`plan_files`] for a process of a tree: the unix sockets crest made for
/// the tree (`tree`, see [`unix_tree`]) are inherited, the others planned
/// for the process alone.
pub fn plan_files_in_tree(
    files: &FilesImage,
    misc: &TaskMisc,
    shell_job: bool,
    tree: &TreeSockets,
) -> Result<FilesPlan> {
    let mut fds: Vec<&Fd> = files.fds.iter().collect();
    fds.sort_by_key(|f| f.fd);
    let in_tree = |f: &&Fd| match &f.file {
        FdFile::Unix(s) => tree.fd_of(s.ino),
        _ => None,
    };
    let own: Vec<&Fd> = fds
        .iter()
        .copied()
        .filter(|f| in_tree(f).is_none())
        .collect();
    let shared_queues: Vec<crate::image::files::UnixQueue>;
    let queues = if tree.is_empty() {
        &files.unix_queues[..]
    } else {
        shared_queues = files
            .unix_queues
            .iter()
            .filter(|q| tree.fd_of(q.ino).is_none())
            .cloned()
            .collect();
        &shared_queues[..]
    };
    let mut plan = FilesPlan {
        fds: Vec::with_capacity(fds.len()),
        pipes: Vec::new(),
        cwd: check::directory("the working directory", &misc.cwd)?,
        root: match misc.root.as_slice() {
            b"/" => None,
            r => Some(check::directory("the root directory", r)?),
        },
        first_free: fds.last().map_or(0, |f| f.fd + 1),
        tty_source: None,
        unix: unix::plan_lent(&own, queues, &files.pipes, tree.lent())?,
        memfds: Vec::new(),
        ghosts: Vec::new(),
        fifos: Vec::new(),
        locks: files.locks.clone(),
        ctty: None,
    };
    lock::check(&files.locks, &fds)?;
    for f in &fds {
        // Each process opens /dev/tty itself (ctty.rs).
        let desc = files
            .descs
            .iter()
            .find(|d| d.fd == f.fd && !matches!(f.file, FdFile::DevTty { .. }))
            .map(|d| d.desc_id);
        // An open file in flight too: crest opened it (unix_flight.rs).
        let in_flight = desc.and_then(|d| tree.desc_fd(d));
        let how = match (&f.file, anon::plan(f, &fds)?) {
            _ if in_flight.is_some() => How::Inherited(in_flight.unwrap_or(-1)),
            (FdFile::Unix(_), _) if in_tree(f).is_some() => {
                How::Inherited(in_tree(f).unwrap_or(-1))
            }
            (_, Some(a)) => How::Anon(a),
            (FdFile::PtyMaster { flags, state, .. }, _) => How::PtyMaster {
                flags: check::open_flags(*flags),
                state: *state,
            },
            (FdFile::PtySlave { flags, index }, _) => How::PtySlave {
                master: pty::master_of(&fds, *index),
                flags: check::open_flags(*flags),
            },
            _ => plan_fd(&mut plan, files, f, shell_job)?,
        };
        plan.fds.push(PlannedFd {
            fd: f.fd,
            cloexec: f.fd_flags & crate::sys::fdtable::FD_CLOEXEC != 0,
            how,
            desc,
        });
    }
    // A pipe also in flight in a socket crest made for the tree: that pipe.
    for p in &mut plan.pipes {
        p.inherited = p.inherited.or(tree.pipe_of(p.id));
    }
    Ok(plan)
}

/// A pipe whose other end lived in another process (not restored with it)
/// comes back without it.
fn warn_half_pipes(plan: &FilesPlan) {
    for p in plan.pipes.iter().filter(|p| p.inherited.is_none()) {
        match p.flags {
            [Some(_), None] => crate::warn!(
                "pipe {}: its write end was not in the process; after restore its reader sees end of file after the {} queued bytes",
                p.id,
                p.data.len()
            ),
            [None, Some(_)] => crate::warn!(
                "pipe {}: its read end was not in the process; after restore its writer gets EPIPE",
                p.id
            ),
            _ => {}
        }
    }
}

/// How fd `f` will be made, after checking what it refers to.
fn plan_fd(plan: &mut FilesPlan, files: &FilesImage, f: &Fd, shell_job: bool) -> Result<How> {
    match &f.file {
        FdFile::Reg {
            path,
            flags,
            pos,
            id,
        } => {
            let path = check::regular(f.fd, path, id)?;
            Ok(How::Open {
                path,
                flags: check::open_flags(*flags),
                pos: *pos,
            })
        }
        FdFile::Chr {
            path,
            flags,
            rdev,
            pos,
        } => {
            if check::is_tty(*rdev) {
                plan.tty_source = Some(check::terminal(f.fd, path, shell_job)?);
                return Ok(How::Tty);
            }
            let cpath = check::char_device(f.fd, path, *rdev)?;
            Ok(How::Open {
                path: cpath,
                flags: check::open_flags(*flags) | check::O_NOCTTY,
                pos: *pos,
            })
        }
        FdFile::DevTty { flags } => Ok(How::Open {
            path: c"/dev/tty".into(),
            flags: check::open_flags(*flags) | check::O_NOCTTY,
            pos: 0,
        }),
        FdFile::Pipe { pipe_id, flags } => plan_pipe(plan, files, f.fd, *pipe_id, *flags),
        FdFile::Unix(s) => plan.unix.slot_of(s.ino).map(How::Unix).ok_or_else(|| {
            Error::Unsupported(format!(
                "fd {}: unix socket socket:[{}] is missing from the plan; this is a bug in crest",
                f.fd, s.ino
            ))
        }),
        FdFile::Memfd { id, flags, pos, .. } => Ok(How::Memfd {
            id: *id,
            flags: check::open_flags(*flags),
            pos: *pos,
        }),
        FdFile::Fifo { path, flags, id } => fifo::plan(plan, files, f.fd, path, *id, *flags),
        FdFile::Ghost { flags, pos, id, .. } => Ok(How::Ghost {
            key: (id.dev, id.ino),
            flags: check::open_flags(*flags),
            pos: *pos,
        }),
        FdFile::Unknown(k) => Err(Error::Unsupported(format!(
            "fd {} in the image is of kind {k}, which this crest does not know; restore with the crest that made the image",
            f.fd
        ))),
        // anon::plan took the anonymous kinds before this.
        _ => Err(Error::Unsupported(format!(
            "fd {} in the image is an anonymous-inode kind crest planned elsewhere; this is a bug in crest",
            f.fd
        ))),
    }
}

/// The pipe end fd `fd` is, creating the pipe's entry on its first end.
fn plan_pipe(
    plan: &mut FilesPlan,
    files: &FilesImage,
    fd: i32,
    id: u64,
    flags: u32,
) -> Result<How> {
    let write = match flags & check::O_ACCMODE {
        crate::sys::fd::O_RDONLY => false,
        crate::sys::fd::O_WRONLY => true,
        _ => {
            return Err(Error::Unsupported(format!(
                "fd {fd} in the image is pipe {id} opened for reading and writing, which crest cannot restore; close it before the dump"
            )));
        }
    };
    let pipe = match plan.pipes.iter().position(|p| p.id == id) {
        Some(i) => i,
        None => {
            let data = files
                .pipes
                .iter()
                .filter(|p| p.pipe_id == id)
                .flat_map(|p| p.data.iter().copied())
                .collect();
            plan.pipes.push(PlannedPipe {
                id,
                data,
                flags: [None; 2],
                inherited: None,
            });
            plan.pipes.len() - 1
        }
    };
    // Status flags belong to the open file: the first fd of an end sets them.
    plan.pipes[pipe].flags[usize::from(write)].get_or_insert(flags);
    Ok(How::Pipe { pipe, write })
}
