//! The credentials record (task-PID.img): ids, supplementary groups,
//! capability sets, securebits and no_new_privs, as /proc/PID/status and
//! prctl report them. Restore sets them last, since dropping privileges first
//! would forbid the rest.
//!
//! ```text
//!  u32 uid euid suid fsuid | u32 gid egid sgid fsgid | list<u32> groups
//!  u64 cap_inheritable permitted effective bounding ambient
//!  u32 securebits | u8 no_new_privs
//! ```

use super::ImageError;
use super::codec::{Reader, Writer};
use super::record::Record;
use super::value::Value;

/// The kernel's NGROUPS_MAX.
pub const NGROUPS_MAX: usize = 65536;

/// A process's credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Creds {
    /// Real, effective, saved and filesystem user ids.
    pub uids: [u32; 4],
    /// Real, effective, saved and filesystem group ids.
    pub gids: [u32; 4],
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// CapInh.
    pub cap_inheritable: u64,
    /// CapPrm.
    pub cap_permitted: u64,
    /// CapEff.
    pub cap_effective: u64,
    /// CapBnd.
    pub cap_bounding: u64,
    /// CapAmb.
    pub cap_ambient: u64,
    /// PR_GET_SECUREBITS.
    pub securebits: u32,
    /// PR_GET_NO_NEW_PRIVS.
    pub no_new_privs: bool,
}

impl Record for Creds {
    const KIND: u16 = 5;
    const NAME: &'static str = "creds";

    fn encode(&self, w: &mut Writer) {
        self.uids.iter().for_each(|v| w.u32(*v));
        self.gids.iter().for_each(|v| w.u32(*v));
        w.list(&self.groups, |w, g| w.u32(*g));
        w.u64(self.cap_inheritable);
        w.u64(self.cap_permitted);
        w.u64(self.cap_effective);
        w.u64(self.cap_bounding);
        w.u64(self.cap_ambient);
        w.u32(self.securebits);
        w.u8(self.no_new_privs as u8);
    }

    fn decode(r: &mut Reader) -> Result<Self, ImageError> {
        let uids = [r.u32()?, r.u32()?, r.u32()?, r.u32()?];
        let gids = [r.u32()?, r.u32()?, r.u32()?, r.u32()?];
        Ok(Creds {
            uids,
            gids,
            groups: r.list("groups", NGROUPS_MAX, 4, |r| r.u32())?,
            cap_inheritable: r.u64()?,
            cap_permitted: r.u64()?,
            cap_effective: r.u64()?,
            cap_bounding: r.u64()?,
            cap_ambient: r.u64()?,
            securebits: r.u32()?,
            no_new_privs: r.bool()?,
        })
    }

    fn to_value(&self) -> Value {
        let ids = |a: &[u32; 4]| Value::List(a.iter().map(|v| Value::U(*v as u64)).collect());
        Value::Obj(vec![
            ("uids", ids(&self.uids)),
            ("gids", ids(&self.gids)),
            (
                "groups",
                Value::List(self.groups.iter().map(|g| Value::U(*g as u64)).collect()),
            ),
            ("cap_inheritable", Value::Hex(self.cap_inheritable)),
            ("cap_permitted", Value::Hex(self.cap_permitted)),
            ("cap_effective", Value::Hex(self.cap_effective)),
            ("cap_bounding", Value::Hex(self.cap_bounding)),
            ("cap_ambient", Value::Hex(self.cap_ambient)),
            ("securebits", Value::Hex(self.securebits as u64)),
            ("no_new_privs", Value::Bool(self.no_new_privs)),
        ])
    }
}
