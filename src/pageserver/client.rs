//! The dump's side of the page server: one TCP connection per dump, page
//! files opened on it by name, page data spliced from the page pipe
//! straight into the socket, and a COMMIT the dump waits for before it
//! counts as complete (before the target is killed or resumed).

use std::cell::Cell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Mutex;

use super::proto::{ACK, CLOSE, COMMIT, DATA, DATA_CRC, Frame, HEADER_LEN, HELLO, OPEN, VERSION};
use crate::error::{Error, Result};
use crate::image::crc::crc32c;
use crate::sys::Errno;
use crate::sys::splice::{SPLICE_F_MOVE, splice};

/// A connection to a page server.
#[derive(Debug)]
pub struct Client {
    sock: TcpStream,
    peer: String,
    opened: Cell<u32>,
    closed: Cell<u32>,
}

/// The connection `crest dump --page-server` made, used by every page dump
/// of the run and committed before the tree is killed or resumed.
static ACTIVE: Mutex<Option<Client>> = Mutex::new(None);

/// Makes `client` the connection page dumps send to.
pub fn install(client: Client) {
    *ACTIVE.lock().unwrap_or_else(|p| p.into_inner()) = Some(client);
}

/// Runs `f` with the installed connection, if any.
pub fn with_active<T>(f: impl FnOnce(Option<&Client>) -> T) -> T {
    let guard = ACTIVE.lock().unwrap_or_else(|p| p.into_inner());
    f(guard.as_ref())
}

/// Commits and drops the installed connection; nothing when none is.
pub fn commit_active() -> Result<()> {
    let client = ACTIVE.lock().unwrap_or_else(|p| p.into_inner()).take();
    match client {
        Some(c) => c.commit(),
        None => Ok(()),
    }
}

impl Client {
    /// Connects to `address:port` and says HELLO.
    pub fn connect(address: &str, port: u16) -> Result<Client> {
        let peer = format!("{address}:{port}");
        let sock = TcpStream::connect((address, port)).map_err(|e| {
            Error::io(
                "connect to the page server at",
                &peer,
                std::io::Error::new(e.kind(), format!("{e}; is `crest page-server` running?")),
            )
        })?;
        let _ = sock.set_nodelay(true);
        let c = Client {
            sock,
            peer,
            opened: Cell::new(0),
            closed: Cell::new(0),
        };
        let mut hello = VERSION.to_le_bytes().to_vec();
        hello.extend_from_slice(&(crate::sys::mm::page_size() as u32).to_le_bytes());
        c.frame(HELLO, 0, 0, &hello)?;
        Ok(c)
    }

    fn send(&self, bytes: &[u8]) -> Result<()> {
        (&self.sock)
            .write_all(bytes)
            .map_err(|e| Error::io("send to the page server at", &self.peer, e))
    }

    fn frame(&self, kind: u16, flags: u16, file: u32, payload: &[u8]) -> Result<()> {
        let f = Frame {
            kind,
            flags,
            file,
            len: payload.len() as u64,
        };
        let mut msg = f.encode().to_vec();
        msg.extend_from_slice(payload);
        self.send(&msg)
    }

    /// Opens file `name` on the server.
    pub fn open(&self, name: &str) -> Result<RemoteFile<'_>> {
        let id = self.opened.get() + 1;
        self.frame(OPEN, 0, id, name.as_bytes())?;
        self.opened.set(id);
        Ok(RemoteFile {
            client: self,
            id,
            sent: 0,
        })
    }

    /// COMMIT: every opened file must be closed; waits for the server's
    /// ACK, after which the files are in place there.
    pub fn commit(self) -> Result<()> {
        if self.opened.get() != self.closed.get() {
            return Err(Error::Usage(format!(
                "page server commit with {} of {} files closed",
                self.closed.get(),
                self.opened.get()
            )));
        }
        self.frame(COMMIT, 0, 0, &self.opened.get().to_le_bytes())?;
        let mut ack = [0u8; HEADER_LEN + 4];
        (&self.sock).read_exact(&mut ack).map_err(|e| {
            Error::io(
                "read the commit's answer from the page server at",
                &self.peer,
                e,
            )
        })?;
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(&ack[..HEADER_LEN]);
        match Frame::decode(&h) {
            Ok(f) if f.kind == ACK && ack[HEADER_LEN..] == [0; 4] => Ok(()),
            _ => Err(Error::io(
                "commit the pages on the page server at",
                &self.peer,
                std::io::Error::other("the server did not acknowledge the commit"),
            )),
        }
    }
}

/// One file being sent; Write sends DATA frames with a CRC.
#[derive(Debug)]
pub struct RemoteFile<'c> {
    client: &'c Client,
    id: u32,
    sent: u64,
}

impl RemoteFile<'_> {
    /// Moves `bytes` from `pipe` into the socket with splice(2): crest
    /// never sees them, so the frame has no CRC (the sizes are checked).
    pub fn splice_from(&mut self, pipe: BorrowedFd<'_>, bytes: u64) -> std::io::Result<u64> {
        let f = Frame {
            kind: DATA,
            flags: 0,
            file: self.id,
            len: bytes,
        };
        (&self.client.sock).write_all(&f.encode())?;
        let mut moved = 0;
        while moved < bytes {
            let left = (bytes - moved) as usize;
            match splice(pipe, self.client.sock.as_fd(), left, SPLICE_F_MOVE) {
                Ok(0) => break,
                Ok(n) => moved += n as u64,
                Err(Errno::EINTR) => {}
                Err(e) => return Err(std::io::Error::from_raw_os_error(e.into_raw())),
            }
        }
        self.sent += moved;
        Ok(moved)
    }

    /// CLOSE with the total size sent.
    pub fn close(self) -> Result<()> {
        self.client
            .frame(CLOSE, 0, self.id, &self.sent.to_le_bytes())?;
        self.client.closed.set(self.client.closed.get() + 1);
        Ok(())
    }
}

impl Write for RemoteFile<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let f = Frame {
            kind: DATA,
            flags: DATA_CRC,
            file: self.id,
            len: buf.len() as u64 + 4,
        };
        let mut msg = Vec::with_capacity(HEADER_LEN + buf.len() + 4);
        msg.extend_from_slice(&f.encode());
        msg.extend_from_slice(buf);
        msg.extend_from_slice(&crc32c(buf).to_le_bytes());
        (&self.client.sock).write_all(&msg)?;
        self.sent += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
