//! The fd-desc record (kind 20) of files-PID.img: which open file
//! description an fd refers to, as an id unique within the whole dump.
//!
//! Two fds with the same description id, in one process or in several,
//! share one open file (one offset, one set of status flags): made by
//! dup(2), or inherited across fork. The dump finds them with
//! kcmp(KCMP_FILE); a restore opens each shared description once and gives
//! every fd a copy of it. An image without these records (older crest)
//! restores each fd on an open file of its own, as before.
//!
//! ```text
//!  fd-desc:  i32 fd | u64 desc_id
//! ```

use crate::image::ImageError;
use crate::image::codec::{Reader, Writer};
use crate::image::record::Record;
use crate::image::value::Value;

/// The description id of one fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdDesc {
    /// The fd number (an fd record of the same file has it).
    pub fd: i32,
    /// Its open file description, unique in the dump.
    pub desc_id: u64,
}

impl Record for FdDesc {
    const KIND: u16 = 20;
    const NAME: &'static str = "fd-desc";

    fn encode(&self, w: &mut Writer) {
        w.i32(self.fd);
        w.u64(self.desc_id);
    }

    fn decode(r: &mut Reader) -> Result<Self, ImageError> {
        let fd = r.i32()?;
        if fd < 0 {
            return Err(r.error(format!("fd number {fd} is negative")));
        }
        Ok(FdDesc {
            fd,
            desc_id: r.u64()?,
        })
    }

    fn to_value(&self) -> Value {
        Value::Obj(vec![
            ("fd", Value::I(self.fd as i64)),
            ("desc_id", Value::U(self.desc_id)),
        ])
    }
}
