//! The file-lock record (42): one lock a process held at the dump, by the
//! fd it is re-taken through.
//!
//! ```text
//!  file-lock:  i32 fd | u8 kind (1 flock, 2 POSIX, 3 OFD) | u8 write (0 read/shared,
//!              1 write/exclusive) | u64 start | u64 end (inclusive; u64::MAX = to EOF)
//! ```
//!
//! A POSIX lock belongs to the process, not to one fd: it is recorded once,
//! with the first fd (in fd order) open on its file.

use crate::image::ImageError;
use crate::image::codec::{Reader, Writer};
use crate::image::record::Record;
use crate::image::value::Value;

/// What kind of lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// flock(2): owned by the open file.
    Flock,
    /// fcntl(F_SETLK): owned by the process.
    Posix,
    /// fcntl(F_OFD_SETLK): owned by the open file.
    Ofd,
}

impl LockKind {
    /// The kernel's name, as /proc/locks prints it.
    pub fn word(self) -> &'static str {
        match self {
            LockKind::Flock => "FLOCK",
            LockKind::Posix => "POSIX",
            LockKind::Ofd => "OFDLCK",
        }
    }
}

/// One lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLock {
    /// The fd it is taken through.
    pub fd: i32,
    /// Its kind.
    pub kind: LockKind,
    /// A write (exclusive) lock, else a read (shared) one.
    pub write: bool,
    /// The first byte (0 for flock).
    pub start: u64,
    /// The last byte, u64::MAX for "to the end of the file".
    pub end: u64,
}

impl Record for FileLock {
    const KIND: u16 = 42;
    const NAME: &'static str = "file-lock";

    fn encode(&self, w: &mut Writer) {
        w.i32(self.fd);
        w.u8(match self.kind {
            LockKind::Flock => 1,
            LockKind::Posix => 2,
            LockKind::Ofd => 3,
        });
        w.u8(u8::from(self.write));
        w.u64(self.start);
        w.u64(self.end);
    }

    fn decode(r: &mut Reader) -> Result<Self, ImageError> {
        let fd = r.i32()?;
        let kind = match r.u8()? {
            1 => LockKind::Flock,
            2 => LockKind::Posix,
            3 => LockKind::Ofd,
            k => return Err(r.error(format!("lock kind {k} is not 1, 2 or 3"))),
        };
        let lock = FileLock {
            fd,
            kind,
            write: r.bool()?,
            start: r.u64()?,
            end: r.u64()?,
        };
        if lock.end < lock.start {
            return Err(r.error(format!(
                "lock range {}-{} is reversed",
                lock.start, lock.end
            )));
        }
        Ok(lock)
    }

    fn to_value(&self) -> Value {
        Value::Obj(vec![
            ("fd", Value::I(self.fd as i64)),
            ("kind", Value::Str(self.kind.word().into())),
            ("write", Value::Bool(self.write)),
            ("start", Value::U(self.start)),
            ("end", Value::U(self.end)),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_files_image_marks_its_locks_must_understand() {
        let path = std::env::temp_dir().join(format!("crest-lockimg-{}", std::process::id()));
        let d = crate::image::ImageDir::create(&path).unwrap();
        let lock = FileLock {
            fd: 3,
            kind: LockKind::Flock,
            write: true,
            start: 0,
            end: u64::MAX,
        };
        let img = crate::image::load::FilesImage {
            locks: vec![lock],
            ..Default::default()
        };
        img.write(&d, 7).unwrap();
        assert_eq!(crate::image::load::FilesImage::load(&d, 7).unwrap(), img);
        let mut rr = d.reader("files-7.img").unwrap();
        let raw = rr.next_raw().unwrap().unwrap();
        assert_eq!(raw.kind, FileLock::KIND);
        assert_eq!(raw.flags & crate::image::stream::MUST_UNDERSTAND, 1);
        let _ = std::fs::remove_dir_all(&path);
    }

    #[test]
    fn locks_round_trip_and_bad_ones_are_refused() {
        for kind in [LockKind::Flock, LockKind::Posix, LockKind::Ofd] {
            let l = FileLock {
                fd: 4,
                kind,
                write: kind == LockKind::Posix,
                start: 5,
                end: u64::MAX,
            };
            let mut w = Writer::new();
            l.encode(&mut w);
            let mut r = Reader::new(w.as_bytes(), "files-1.img", 0);
            assert_eq!(FileLock::decode(&mut r).unwrap(), l);
        }
        let mut w = Writer::new();
        w.i32(4);
        w.u8(2);
        w.u8(0);
        w.u64(9);
        w.u64(3);
        let mut r = Reader::new(w.as_bytes(), "files-1.img", 0);
        assert!(FileLock::decode(&mut r).is_err(), "reversed range");
    }
}
