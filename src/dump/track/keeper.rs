//! The keeper: a small process that holds a target's userfaultfd between
//! two crest runs (a uffd's registration lives only while some copy of it
//! is open, and crest exits after each pre-dump).
//!
//! ```text
//!   crest pre-dump (first)      fork ─► keeper: setsid, stdio on /dev/null,
//!     binds @crest-track-PID-START        holds uffd + pidfd of the target,
//!                                         remembers the last image's path
//!   crest pre-dump / dump       connect @crest-track-PID-START
//!     <── 'U' + uffd (SCM_RIGHTS), u32 len, last image path
//!     ──> 'k', u32 len, new image path   (success: keep tracking)
//!     ──> 'q' or EOF                     (failure, final dump: the keeper exits)
//!   target exits                pidfd readable ─► the keeper exits
//! ```
//!
//! The abstract socket name carries the target's pid and start time (field
//! 22 of /proc/PID/stat), so a new process that reuses the pid never finds
//! an old keeper. Only a peer with the keeper's own uid, or root, is served
//! (SO_PEERCRED): the uffd gives power over the target's memory. A keeper
//! that loses its crest mid-run exits rather than keep a state crest may
//! have consumed (a scan re-protects the pages it reports): the next run
//! then finds no keeper and dumps everything.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::Path;

use crate::error::{Error, Result};
use crate::sys::scm::{close_all_except, peer_cred, poll_ready, recv_fd, send_fd};
use crate::{debug, info};

/// The longest image path a keeper remembers.
const MAX_PATH: u32 = 4096;

/// The keeper's socket name for `pid`.
pub fn socket_name(pid: u32) -> Result<String> {
    let text = crate::dump::read_proc(pid, "stat")?;
    let st = crate::dump::parsed(pid, "stat", crate::proc::stat::parse(&text))?;
    Ok(format!("crest-track-{pid}-{}", st.start_time))
}

fn address(name: &str) -> Result<SocketAddr> {
    SocketAddr::from_abstract_name(name.as_bytes())
        .map_err(|e| Error::io("name the socket", format!("@{name}"), e))
}

/// A connection to a running keeper; dropping it without [`Session::keep`]
/// ends the keeper.
#[derive(Debug)]
pub struct Session {
    stream: UnixStream,
    /// The image the keeper's tracking state belongs to.
    pub last_image: String,
}

/// Connects to `pid`'s keeper: its copy of the uffd and the session, or
/// None if no keeper runs for this process.
pub fn connect(pid: u32) -> Result<Option<(OwnedFd, Session)>> {
    let name = socket_name(pid)?;
    let Ok(stream) = UnixStream::connect_addr(&address(&name)?) else {
        return Ok(None);
    };
    let io = |e| Error::io("talk to the tracker", format!("@{name}"), e);
    let (tag, fd) = match recv_fd(stream.as_fd()) {
        Ok(Some((tag, Some(fd)))) => (tag, fd),
        _ => {
            return Err(Error::Target {
                pid: pid as i32,
                problem: format!(
                    "its tracker @{name} answered without a userfaultfd; it exits now, \
                     so the next dump is a full one"
                ),
            });
        }
    };
    debug!(
        "pid {pid}: tracker @{name} handed over its uffd ({})",
        tag as char
    );
    let mut len = [0u8; 4];
    (&stream).read_exact(&mut len).map_err(io)?;
    let len = u32::from_le_bytes(len).min(MAX_PATH);
    let mut path = vec![0u8; len as usize];
    (&stream).read_exact(&mut path).map_err(io)?;
    let last_image = String::from_utf8_lossy(&path).into_owned();
    Ok(Some((fd, Session { stream, last_image })))
}

fn send_path(mut w: impl Write, tag: u8, path: &Path) -> std::io::Result<()> {
    let bytes = path.as_os_str().as_encoded_bytes();
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX).min(MAX_PATH);
    w.write_all(&[tag])?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(&bytes[..len as usize])
}

impl Session {
    /// Tells the keeper to go on tracking, `image` now being the last one.
    pub fn keep(self, image: &Path) -> Result<()> {
        send_path(&self.stream, b'k', image)
            .map_err(|e| Error::io("talk to the tracker", "its socket", e))
    }

    /// Ends the keeper (the registration goes with the last copy of the
    /// uffd) and waits, up to 5 s, until it has exited: its connection,
    /// its highest fd, closes last, after the uffd.
    pub fn quit(self) {
        let _ = (&self.stream).write_all(b"q");
        let _ = self
            .stream
            .set_read_timeout(Some(std::time::Duration::from_secs(5)));
        let mut rest = Vec::new();
        let _ = (&self.stream).read_to_end(&mut rest);
    }
}

/// Starts a keeper holding `uffd` for `pid`, whose last image is `image`.
pub fn spawn(pid: u32, uffd: OwnedFd, image: &Path) -> Result<()> {
    let name = socket_name(pid)?;
    let listener = UnixListener::bind_addr(&address(&name)?)
        .map_err(|e| Error::io("listen on", format!("@{name}"), e))?;
    let pidfd = crate::sys::process::pidfd_open(pid as i32).map_err(|e| {
        Error::sys(
            "pidfd_open",
            format!("pid {pid}: watching it for its tracker"),
            e,
        )
    })?;
    let child = crate::sys::process::fork()
        .map_err(|e| Error::sys("fork", format!("pid {pid}: starting its tracker"), e))?;
    if child == 0 {
        let keep = [listener.as_fd(), uffd.as_fd(), pidfd.as_fd()]
            .map(|f| std::os::fd::AsRawFd::as_raw_fd(&f));
        detach(&keep);
        serve(
            listener,
            uffd,
            pidfd,
            image.as_os_str().as_encoded_bytes().to_vec(),
        );
        crate::sys::process::exit_group(0);
    }
    info!("pid {pid}: tracker {child} holds its userfaultfd on @{name}");
    Ok(())
}

/// In the forked keeper: its own session, stdio on /dev/null, no other
/// descriptor of crest's (a test or shell waiting for crest's pipes to
/// close must not wait for the keeper).
fn detach(keep: &[i32]) {
    let _ = crate::sys::spawn::setsid();
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            let _ = crate::sys::fdtable::dup3(std::os::fd::AsRawFd::as_raw_fd(&null), fd, 0);
        }
    }
    let mut all = keep.to_vec();
    all.extend([0, 1, 2]);
    close_all_except(&all);
}

/// The keeper's loop: one crest at a time, until the target exits or a
/// crest does not ask to keep tracking. The uffd and the listener are
/// closed before the last connection, so a crest waiting for its EOF knows
/// that tracking has ended (an exiting process would release its files in
/// no order crest could rely on).
fn serve(listener: UnixListener, uffd: OwnedFd, pidfd: OwnedFd, mut last: Vec<u8>) {
    // /proc/self belongs to the effective uid; unknown: only root is served.
    let own_uid =
        std::fs::metadata("/proc/self").map_or(0, |m| std::os::unix::fs::MetadataExt::uid(&m));
    loop {
        match poll_ready(&[listener.as_fd(), pidfd.as_fd()], None) {
            Ok(r) if r[1] => return,
            Ok(r) if r[0] => {}
            _ => continue,
        }
        let Ok((stream, _)) = listener.accept() else {
            continue;
        };
        match peer_cred(stream.as_fd()) {
            Ok((_, uid, _)) if uid == 0 || uid == own_uid => {}
            _ => continue,
        }
        match handover(&stream, &uffd, &last) {
            Some(next) => last = next,
            None => {
                drop(listener);
                drop(uffd);
                drop(stream);
                return;
            }
        }
    }
}

/// Hands the uffd to one crest; the new last image if it says keep.
fn handover(mut stream: &UnixStream, uffd: &OwnedFd, last: &[u8]) -> Option<Vec<u8>> {
    send_fd(stream.as_fd(), b'U', Some(uffd.as_fd())).ok()?;
    stream.write_all(&(last.len() as u32).to_le_bytes()).ok()?;
    stream.write_all(last).ok()?;
    let mut tag = [0u8];
    stream.read_exact(&mut tag).ok()?;
    if tag[0] != b'k' {
        return None;
    }
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).ok()?;
    let mut next = vec![0u8; u32::from_le_bytes(len).min(MAX_PATH) as usize];
    stream.read_exact(&mut next).ok()?;
    Some(next)
}
