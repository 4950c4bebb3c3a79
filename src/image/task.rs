//! The task-misc record (task-PID.img): per-process settings that are not
//! credentials, limits, signals or memory: personality, umask, name, working
//! and root directories, and the prctl flags restore must set again.
//!
//! ```text
//!  u32 personality | u32 umask | bytes comm | path cwd | path root
//!  u8 dumpable (PR_GET_DUMPABLE) | u8 thp_disable (PR_GET_THP_DISABLE)
//!  u32 pdeath_signal (PR_GET_PDEATHSIG) | u8 child_subreaper
//! ```

use super::codec::{Reader, Writer};
use super::record::Record;
use super::value::Value;
use super::{ImageError, PATH_MAX};

/// Per-process settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskMisc {
    /// personality(2) flags.
    pub personality: u32,
    /// The file creation mask.
    pub umask: u32,
    /// /proc/PID/comm of the leader.
    pub comm: Vec<u8>,
    /// The working directory.
    pub cwd: Vec<u8>,
    /// The root directory.
    pub root: Vec<u8>,
    /// PR_GET_DUMPABLE.
    pub dumpable: u8,
    /// PR_GET_THP_DISABLE.
    pub thp_disable: bool,
    /// PR_GET_PDEATHSIG.
    pub pdeath_signal: u32,
    /// PR_GET_CHILD_SUBREAPER.
    pub child_subreaper: bool,
}

impl Record for TaskMisc {
    const KIND: u16 = 4;
    const NAME: &'static str = "task-misc";

    fn encode(&self, w: &mut Writer) {
        w.u32(self.personality);
        w.u32(self.umask);
        w.bytes(&self.comm);
        w.bytes(&self.cwd);
        w.bytes(&self.root);
        w.u8(self.dumpable);
        w.u8(self.thp_disable as u8);
        w.u32(self.pdeath_signal);
        w.u8(self.child_subreaper as u8);
    }

    fn decode(r: &mut Reader) -> Result<Self, ImageError> {
        let misc = TaskMisc {
            personality: r.u32()?,
            umask: r.u32()?,
            comm: r.bytes("comm", 64)?,
            cwd: r.bytes("cwd", PATH_MAX as usize)?,
            root: r.bytes("root", PATH_MAX as usize)?,
            dumpable: r.u8()?,
            thp_disable: r.bool()?,
            pdeath_signal: r.u32()?,
            child_subreaper: r.bool()?,
        };
        if misc.umask > 0o777 {
            return Err(r.error(format!("umask {:#o} is not a mode", misc.umask)));
        }
        Ok(misc)
    }

    fn to_value(&self) -> Value {
        Value::Obj(vec![
            ("comm", Value::path(&self.comm)),
            ("personality", Value::Hex(self.personality as u64)),
            ("umask", Value::Str(format!("{:04o}", self.umask))),
            ("cwd", Value::path(&self.cwd)),
            ("root", Value::path(&self.root)),
            ("dumpable", Value::U(self.dumpable as u64)),
            ("thp_disable", Value::Bool(self.thp_disable)),
            ("pdeath_signal", Value::U(self.pdeath_signal as u64)),
            ("child_subreaper", Value::Bool(self.child_subreaper)),
        ])
    }
}
