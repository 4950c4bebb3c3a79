//! The sigactions record (task-PID.img): the disposition of every signal
//! whose handler is not SIG_DFL, as rt_sigaction's struct (kernel layout,
//! 64-bit fields).
//!
//! ```text
//!  list<(u32 signo, u64 handler, u64 flags, u64 restorer, u64 mask)>
//! ```
//!
//! `handler` is an address in the target, or SIG_DFL (0) / SIG_IGN (1).

use super::ImageError;
use super::codec::{Reader, Writer};
use super::record::Record;
use super::value::Value;

/// One signal's action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sigaction {
    /// The signal number, 1..=64.
    pub signo: u32,
    /// sa_handler.
    pub handler: u64,
    /// sa_flags (SA_SIGINFO, SA_RESTORER, SA_ONSTACK...).
    pub flags: u64,
    /// sa_restorer.
    pub restorer: u64,
    /// sa_mask.
    pub mask: u64,
}

/// The actions of a process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sigactions {
    /// One per signal with a non-default action, by increasing signal.
    pub actions: Vec<Sigaction>,
}

impl Record for Sigactions {
    const KIND: u16 = 7;
    const NAME: &'static str = "sigactions";

    fn encode(&self, w: &mut Writer) {
        w.list(&self.actions, |w, a| {
            w.u32(a.signo);
            w.u64(a.handler);
            w.u64(a.flags);
            w.u64(a.restorer);
            w.u64(a.mask);
        });
    }

    fn decode(r: &mut Reader) -> Result<Self, ImageError> {
        let actions = r.list("sigactions", 64, 36, |r| {
            let a = Sigaction {
                signo: r.u32()?,
                handler: r.u64()?,
                flags: r.u64()?,
                restorer: r.u64()?,
                mask: r.u64()?,
            };
            if !(1..=64).contains(&a.signo) {
                return Err(r.error(format!("sigaction for signal {}", a.signo)));
            }
            Ok(a)
        })?;
        Ok(Sigactions { actions })
    }

    fn to_value(&self) -> Value {
        Value::Obj(vec![(
            "actions",
            Value::List(
                self.actions
                    .iter()
                    .map(|a| {
                        Value::Obj(vec![
                            ("signo", Value::U(a.signo as u64)),
                            ("handler", Value::Hex(a.handler)),
                            ("flags", Value::Hex(a.flags)),
                            ("restorer", Value::Hex(a.restorer)),
                            ("mask", Value::Hex(a.mask)),
                        ])
                    })
                    .collect(),
            ),
        )])
    }
}
