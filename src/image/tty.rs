//! tty.img: the terminals of a dumped tree that are not fds of one
//! process: each session's controlling terminal (ctty record, kind 50)
//! and the bytes queued inside each pseudo-terminal pair (pty-queue
//! record, kind 51). Written once per dump, after every process's
//! files-PID.img, in the "files" file kind; an image without it (older
//! crest, or nothing to say) has no controlling terminal and no queued
//! bytes to restore.
//!
//! A pair is named by its index at the dump (/dev/pts/INDEX), as the
//! pty-master and pty-slave fd records of files-PID.img name it.
//!
//! ```text
//!  ctty:      u32 sid (the session leader's pid) | u32 index (its pair)
//!             | u32 fg_pgrp (the terminal's foreground process group)
//!  pty-queue: u32 index | bytes to_slave (written on the master, not yet
//!             read on the slave: the slave's input, after its input
//!             processing) | bytes to_master (written on the slave, not
//!             yet read on the master, after output processing)
//!             | u8 slave_closed (1: every slave was closed, the master
//!             sees a hangup)
//! ```

use super::codec::{Reader, Writer};
use super::header::FileKind;
use super::load::read_records;
use super::record::{AnyRecord, Record};
use super::value::Value;
use super::{ImageDir, ImageError};
use crate::error::Result;

/// The file's name in the image directory.
pub const TTY: &str = "tty.img";

/// The most bytes one direction of a pair holds in its line discipline
/// (N_TTY_BUF_SIZE), with room for what waits before it.
pub const MAX_QUEUE: usize = 64 << 10;

/// A session whose controlling terminal is a pair inside the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ctty {
    /// The session id (its leader's pid).
    pub sid: u32,
    /// The pair's index at the dump.
    pub index: u32,
    /// The foreground process group (TIOCGPGRP).
    pub fg_pgrp: u32,
}

impl Record for Ctty {
    const KIND: u16 = 50;
    const NAME: &'static str = "ctty";

    fn encode(&self, w: &mut Writer) {
        w.u32(self.sid);
        w.u32(self.index);
        w.u32(self.fg_pgrp);
    }

    fn decode(r: &mut Reader) -> Result<Self, ImageError> {
        Ok(Ctty {
            sid: r.u32()?,
            index: r.u32()?,
            fg_pgrp: r.u32()?,
        })
    }

    fn to_value(&self) -> Value {
        Value::Obj(vec![
            ("sid", Value::U(self.sid as u64)),
            ("index", Value::U(self.index as u64)),
            ("fg_pgrp", Value::U(self.fg_pgrp as u64)),
        ])
    }
}

/// The bytes queued in both directions of one pair.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PtyQueue {
    /// The pair's index at the dump.
    pub index: u32,
    /// What the slave will read (the master wrote it).
    pub to_slave: Vec<u8>,
    /// What the master will read (the slave wrote it, or its echo).
    pub to_master: Vec<u8>,
    /// Every slave was closed: the master reads end of file (EIO) after
    /// its bytes, and poll says hangup.
    pub slave_closed: bool,
}

impl Record for PtyQueue {
    const KIND: u16 = 51;
    const NAME: &'static str = "pty-queue";

    fn encode(&self, w: &mut Writer) {
        w.u32(self.index);
        w.bytes(&self.to_slave);
        w.bytes(&self.to_master);
        w.u8(u8::from(self.slave_closed));
    }

    fn decode(r: &mut Reader) -> Result<Self, ImageError> {
        Ok(PtyQueue {
            index: r.u32()?,
            to_slave: r.bytes("queued terminal input", MAX_QUEUE)?,
            to_master: r.bytes("queued terminal output", MAX_QUEUE)?,
            slave_closed: r.u8()? != 0,
        })
    }

    fn to_value(&self) -> Value {
        Value::Obj(vec![
            ("index", Value::U(self.index as u64)),
            ("to_slave", Value::Bytes(self.to_slave.clone())),
            ("to_master", Value::Bytes(self.to_master.clone())),
            ("slave_closed", Value::Bool(self.slave_closed)),
        ])
    }
}

/// Everything tty.img holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TtyImage {
    /// One per session with a controlling terminal in the tree.
    pub cttys: Vec<Ctty>,
    /// One per pair with bytes queued.
    pub queues: Vec<PtyQueue>,
}

impl TtyImage {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.cttys.is_empty() && self.queues.is_empty()
    }

    /// Writes tty.img (nothing when empty).
    pub fn write(&self, d: &ImageDir) -> Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        let mut w = d.writer(TTY, FileKind::Files)?;
        for c in &self.cttys {
            w.write(c)?;
        }
        for q in &self.queues {
            w.write(q)?;
        }
        w.finish()?;
        Ok(())
    }

    /// Loads tty.img; empty when the image has none.
    pub fn load(d: &ImageDir) -> Result<TtyImage> {
        let mut img = TtyImage::default();
        if !d.exists(TTY) {
            return Ok(img);
        }
        for (off, r) in read_records(d, TTY, FileKind::Files)? {
            match r {
                AnyRecord::Ctty(c) if img.cttys.iter().any(|x| x.sid == c.sid) => {
                    let why = format!("session {} has two controlling terminals", c.sid);
                    return Err(ImageError::new(TTY, off, why).into());
                }
                AnyRecord::Ctty(c) => img.cttys.push(c),
                AnyRecord::PtyQueue(q) => img.queues.push(q),
                _ => {}
            }
        }
        Ok(img)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_records_round_trip() {
        let c = Ctty {
            sid: 41,
            index: 7,
            fg_pgrp: 43,
        };
        let q = PtyQueue {
            index: 7,
            to_slave: b"line\npart".to_vec(),
            to_master: b"out\r\n".to_vec(),
            slave_closed: true,
        };
        let mut w = Writer::new();
        c.encode(&mut w);
        let back = super::super::record::decode_payload(Ctty::KIND, w.as_bytes()).unwrap();
        assert_eq!(back, AnyRecord::Ctty(c));
        let mut w = Writer::new();
        q.encode(&mut w);
        let back = super::super::record::decode_payload(PtyQueue::KIND, w.as_bytes()).unwrap();
        assert_eq!(back, AnyRecord::PtyQueue(q));
    }
}
