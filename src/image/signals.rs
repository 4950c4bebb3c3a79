//! Pending signals: the kernel's 128-byte siginfo, kept whole, and the
//! shared-signals record (task-PID.img) for signals queued to the whole
//! process rather than to one thread.
//!
//! The siginfo is stored exactly as PTRACE_PEEKSIGINFO returns it, because
//! restore hands it back to rt_tgsigqueueinfo unchanged: its union (timer id,
//! sender pid and uid, fault address, sigval...) is not crest's to interpret.
//!
//! ```text
//!  siginfo:         128 bytes: i32 si_signo @0 | i32 si_errno @4 | i32 si_code @8 | union
//!  shared-signals:  list<siginfo>
//! ```

use super::ImageError;
use super::codec::{Reader, Writer};
use super::record::Record;
use super::value::Value;

/// The size of the kernel's siginfo_t.
pub const SIGINFO_SIZE: usize = 128;
/// The most pending signals one record may hold (RLIMIT_SIGPENDING is per
/// user and rarely above a few hundred thousand).
pub const MAX_PENDING: usize = 1 << 20;

/// One pending signal, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Siginfo(pub [u8; SIGINFO_SIZE]);

impl Siginfo {
    /// A siginfo with only signo and code set.
    pub fn new(signo: i32, code: i32) -> Siginfo {
        let mut b = [0u8; SIGINFO_SIZE];
        b[0..4].copy_from_slice(&signo.to_le_bytes());
        b[8..12].copy_from_slice(&code.to_le_bytes());
        Siginfo(b)
    }
    /// si_signo.
    pub fn signo(&self) -> i32 {
        i32::from_le_bytes([self.0[0], self.0[1], self.0[2], self.0[3]])
    }
    /// si_code.
    pub fn code(&self) -> i32 {
        i32::from_le_bytes([self.0[8], self.0[9], self.0[10], self.0[11]])
    }
    /// Appends the fixed 128 bytes.
    pub fn encode(&self, w: &mut Writer) {
        w.raw(&self.0);
    }
    /// Reads 128 bytes; the signal number must be a real one.
    pub fn decode(r: &mut Reader) -> Result<Siginfo, ImageError> {
        let s = Siginfo(r.array()?);
        if !(1..=64).contains(&s.signo()) {
            return Err(r.error(format!(
                "pending signal number {} is not a signal",
                s.signo()
            )));
        }
        Ok(s)
    }
    /// For `crest show`.
    pub fn to_value(&self) -> Value {
        Value::Obj(vec![
            ("signo", Value::I(self.signo() as i64)),
            ("code", Value::I(self.code() as i64)),
            ("raw", Value::Bytes(self.0.to_vec())),
        ])
    }
}

/// Decodes a list of pending signals.
pub fn decode_list(r: &mut Reader) -> Result<Vec<Siginfo>, ImageError> {
    r.list(
        "pending signals",
        MAX_PENDING,
        SIGINFO_SIZE,
        Siginfo::decode,
    )
}

/// Signals pending for the whole process (PTRACE_PEEKSIGINFO_SHARED).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedSignals {
    /// In queue order.
    pub pending: Vec<Siginfo>,
}

impl Record for SharedSignals {
    const KIND: u16 = 10;
    const NAME: &'static str = "shared-signals";

    fn encode(&self, w: &mut Writer) {
        w.list(&self.pending, |w, s| s.encode(w));
    }

    fn decode(r: &mut Reader) -> Result<Self, ImageError> {
        Ok(SharedSignals {
            pending: decode_list(r)?,
        })
    }

    fn to_value(&self) -> Value {
        Value::Obj(vec![(
            "pending",
            Value::List(self.pending.iter().map(Siginfo::to_value).collect()),
        )])
    }
}
