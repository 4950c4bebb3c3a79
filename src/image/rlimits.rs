//! The rlimits record (task-PID.img): every resource limit, indexed by its
//! RLIMIT_* number (prlimit64 order), soft and hard.
//!
//! ```text
//!  list<(u64 cur, u64 max)>      RLIM_INFINITY is u64::MAX
//! ```

use super::ImageError;
use super::codec::{Reader, Writer};
use super::record::Record;
use super::value::Value;

/// More than the kernel's RLIM_NLIMITS (16), for future limits.
pub const MAX_RLIMITS: usize = 64;

/// One limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rlimit {
    /// Soft limit.
    pub cur: u64,
    /// Hard limit.
    pub max: u64,
}

/// All limits of a process, index = RLIMIT_* number.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rlimits {
    /// The limits.
    pub limits: Vec<Rlimit>,
}

impl Record for Rlimits {
    const KIND: u16 = 6;
    const NAME: &'static str = "rlimits";

    fn encode(&self, w: &mut Writer) {
        w.list(&self.limits, |w, l| {
            w.u64(l.cur);
            w.u64(l.max);
        });
    }

    fn decode(r: &mut Reader) -> Result<Self, ImageError> {
        let limits = r.list("rlimits", MAX_RLIMITS, 16, |r| {
            let l = Rlimit {
                cur: r.u64()?,
                max: r.u64()?,
            };
            if l.cur > l.max {
                return Err(r.error(format!("soft limit {} above hard limit {}", l.cur, l.max)));
            }
            Ok(l)
        })?;
        Ok(Rlimits { limits })
    }

    fn to_value(&self) -> Value {
        let n = |v: u64| {
            if v == u64::MAX {
                Value::Str("unlimited".into())
            } else {
                Value::U(v)
            }
        };
        Value::Obj(vec![(
            "limits",
            Value::List(
                self.limits
                    .iter()
                    .map(|l| Value::Obj(vec![("cur", n(l.cur)), ("max", n(l.max))]))
                    .collect(),
            ),
        )])
    }
}
