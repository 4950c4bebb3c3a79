//! `crest page-server`: receives the page files of a dump over TCP into an
//! image directory. Each file is written under a temporary name (`.NAME.part`)
//! and renamed to NAME only when the client's COMMIT arrives with every
//! file closed at the size it announced; a stream that is malformed, cut
//! short or inconsistent is refused and every file it created is removed,
//! so a directory never shows a half-received file as complete.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::proto::{
    ACK, CLOSE, COMMIT, DATA, DATA_CRC, Frame, HEADER_LEN, HELLO, MAX_DATA, OPEN, VERSION,
    valid_name,
};
use crate::error::{Error, Result};
use crate::image::crc::Crc32c;
use crate::info;

/// How long the server waits for the next bytes of a connection.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes per read of a DATA payload.
const CHUNK: usize = 1 << 20;

/// What one connection delivered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Received {
    /// The files now in the directory, in the order they were opened.
    pub files: Vec<String>,
    /// Bytes written into them.
    pub bytes: u64,
}

/// Listens on `address:port`.
pub fn listen(address: &str, port: u16) -> Result<TcpListener> {
    TcpListener::bind((address, port)).map_err(|e| {
        Error::io(
            "listen on",
            format!("{address}:{port} (give a free --port and a local --address)"),
            e,
        )
    })
}

/// Accepts one client on `listener` and receives its files into `dir`.
pub fn serve_one(listener: &TcpListener, dir: &Path) -> Result<Received> {
    let (stream, peer) = listener
        .accept()
        .map_err(|e| Error::io("accept a client on", "the page server's socket", e))?;
    info!("page server: client {peer}");
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .map_err(|e| Error::io("set a timeout on", "the client's connection", e))?;
    receive(stream, dir)
}

/// One file being received.
struct Slot {
    id: u32,
    name: String,
    tmp: PathBuf,
    file: Option<File>,
    written: u64,
}

/// Receives one client's stream from `conn` into `dir`; on any failure
/// every file it created is removed before the error is returned.
pub fn receive<S: Read + Write>(mut conn: S, dir: &Path) -> Result<Received> {
    let mut slots = Vec::new();
    let result = run(&mut conn, dir, &mut slots);
    if result.is_err() {
        for s in &slots {
            let _ = std::fs::remove_file(&s.tmp);
            let _ = std::fs::remove_file(dir.join(&s.name)).map(|_| ());
        }
    }
    let bytes = slots.iter().map(|s| s.written).sum();
    result?;
    Ok(Received {
        files: slots.into_iter().map(|s| s.name).collect(),
        bytes,
    })
}

fn refused(problem: impl std::fmt::Display) -> Error {
    Error::Image(crate::image::ImageError::new(
        "the page server's stream",
        0,
        format!("refused: {problem}; nothing of it is kept"),
    ))
}

fn run<S: Read + Write>(conn: &mut S, dir: &Path, slots: &mut Vec<Slot>) -> Result<()> {
    let hello = next_frame(conn)?;
    if hello.kind != HELLO || hello.len != 8 {
        return Err(refused("it does not start with HELLO"));
    }
    let mut v = [0u8; 8];
    read_exact(conn, &mut v)?;
    let version = u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
    if version != VERSION {
        return Err(refused(format!(
            "protocol version {version}, this server speaks {VERSION}"
        )));
    }
    loop {
        let f = next_frame(conn)?;
        match f.kind {
            OPEN => open(conn, dir, f, slots)?,
            DATA => data(conn, f, slots)?,
            CLOSE => close(conn, f, slots)?,
            COMMIT => return commit(conn, dir, f, slots),
            k => return Err(refused(format!("unknown frame kind {k}"))),
        }
    }
}

fn next_frame<S: Read>(conn: &mut S) -> Result<Frame> {
    let mut h = [0u8; HEADER_LEN];
    read_exact(conn, &mut h)?;
    Frame::decode(&h).map_err(refused)
}

fn read_exact<S: Read>(conn: &mut S, buf: &mut [u8]) -> Result<()> {
    conn.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => refused("it ended before COMMIT"),
        _ => refused(format!("reading it failed: {e}")),
    })
}

fn slot(slots: &mut [Slot], id: u32) -> Result<&mut Slot> {
    slots
        .iter_mut()
        .find(|s| s.id == id && s.file.is_some())
        .ok_or_else(|| refused(format!("file {id} is not open")))
}

fn open<S: Read>(conn: &mut S, dir: &Path, f: Frame, slots: &mut Vec<Slot>) -> Result<()> {
    if f.len == 0 || f.len > super::proto::MAX_NAME as u64 {
        return Err(refused("an OPEN frame without a proper name"));
    }
    let mut name = vec![0u8; f.len as usize];
    read_exact(conn, &mut name)?;
    let name = String::from_utf8(name).map_err(|_| refused("a file name is not UTF-8"))?;
    if !valid_name(&name) || slots.iter().any(|s| s.id == f.file || s.name == name) {
        return Err(refused(format!(
            "file {} named {name:?}: bad or repeated",
            f.file
        )));
    }
    if dir.join(&name).exists() {
        return Err(refused(format!("{name} is already in {}", dir.display())));
    }
    let tmp = dir.join(format!(".{name}.part"));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| Error::io("create", &tmp, e))?;
    slots.push(Slot {
        id: f.file,
        name,
        tmp,
        file: Some(file),
        written: 0,
    });
    Ok(())
}

fn data<S: Read>(conn: &mut S, f: Frame, slots: &mut [Slot]) -> Result<()> {
    let with_crc = f.flags & DATA_CRC != 0;
    if f.len > MAX_DATA || (with_crc && f.len < 4) || f.flags & !DATA_CRC != 0 {
        return Err(refused(format!(
            "a DATA frame of {} bytes, flags {}",
            f.len, f.flags
        )));
    }
    let s = slot(slots, f.file)?;
    let mut left = f.len - if with_crc { 4 } else { 0 };
    let mut buf = vec![0u8; CHUNK.min(left as usize)];
    let mut crc = Crc32c::default();
    while left > 0 {
        let n = (left as usize).min(CHUNK);
        read_exact(conn, &mut buf[..n])?;
        crc.update(&buf[..n]);
        if let Some(file) = s.file.as_mut() {
            file.write_all(&buf[..n])
                .map_err(|e| Error::io("write", &s.tmp, e))?;
        }
        s.written += n as u64;
        left -= n as u64;
    }
    if with_crc {
        let mut c = [0u8; 4];
        read_exact(conn, &mut c)?;
        if u32::from_le_bytes(c) != crc.finish() {
            return Err(refused(format!("data for {} fails its CRC", s.name)));
        }
    }
    Ok(())
}

fn close<S: Read>(conn: &mut S, f: Frame, slots: &mut [Slot]) -> Result<()> {
    if f.len != 8 {
        return Err(refused("a CLOSE frame without the file's size"));
    }
    let mut b = [0u8; 8];
    read_exact(conn, &mut b)?;
    let size = u64::from_le_bytes(b);
    let s = slot(slots, f.file)?;
    if size != s.written {
        return Err(refused(format!(
            "{} was announced as {size} bytes, {} arrived",
            s.name, s.written
        )));
    }
    s.file = None;
    Ok(())
}

fn commit<S: Read + Write>(conn: &mut S, dir: &Path, f: Frame, slots: &mut [Slot]) -> Result<()> {
    if f.len != 4 {
        return Err(refused("a COMMIT frame without the file count"));
    }
    let mut b = [0u8; 4];
    read_exact(conn, &mut b)?;
    let count = u32::from_le_bytes(b) as usize;
    if count != slots.len() || slots.iter().any(|s| s.file.is_some()) {
        return Err(refused(format!(
            "COMMIT of {count} files, {} were sent and some may be open",
            slots.len()
        )));
    }
    for s in slots.iter() {
        std::fs::rename(&s.tmp, dir.join(&s.name))
            .map_err(|e| Error::io("rename into place", &s.tmp, e))?;
    }
    let ack = Frame {
        kind: ACK,
        flags: 0,
        file: 0,
        len: 4,
    };
    let mut msg = ack.encode().to_vec();
    msg.extend_from_slice(&0u32.to_le_bytes());
    conn.write_all(&msg)
        .map_err(|e| Error::io("send the commit's answer to", "the page server's client", e))?;
    info!(
        "page server: {} file(s) committed into {}",
        slots.len(),
        dir.display()
    );
    Ok(())
}
