//! Timer records (task-PID.img): the three interval timers (getitimer) and
//! one record per POSIX timer (timer_create), with its id kept so restore can
//! create it with the same one.
//!
//! Times are nanoseconds; `value` is the time left until the next expiry at
//! dump time, so restore re-arms relative to its own clock.
//!
//! ```text
//!  itimers:      (u64 interval_ns, u64 value_ns) x 3: ITIMER_REAL, VIRTUAL, PROF
//!  posix-timer:  i32 id | i32 clock_id | i32 sigev_notify | i32 sigev_signo
//!                u64 sigev_value | u32 notify_tid | u64 interval_ns
//!                u64 value_ns | i32 overrun
//! ```

use super::ImageError;
use super::codec::{Reader, Writer};
use super::record::Record;
use super::value::Value;

/// One timer's period and time to expiry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimerSpec {
    /// The period, 0 for one-shot.
    pub interval_ns: u64,
    /// Time left until the next expiry, 0 if disarmed.
    pub value_ns: u64,
}

impl TimerSpec {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.interval_ns);
        w.u64(self.value_ns);
    }
    fn decode(r: &mut Reader) -> Result<TimerSpec, ImageError> {
        Ok(TimerSpec {
            interval_ns: r.u64()?,
            value_ns: r.u64()?,
        })
    }
    fn to_value(self) -> Value {
        Value::Obj(vec![
            ("interval_ns", Value::U(self.interval_ns)),
            ("value_ns", Value::U(self.value_ns)),
        ])
    }
}

/// ITIMER_REAL, ITIMER_VIRTUAL and ITIMER_PROF.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Itimers {
    /// ITIMER_REAL.
    pub real: TimerSpec,
    /// ITIMER_VIRTUAL.
    pub virt: TimerSpec,
    /// ITIMER_PROF.
    pub prof: TimerSpec,
}

impl Record for Itimers {
    const KIND: u16 = 8;
    const NAME: &'static str = "itimers";

    fn encode(&self, w: &mut Writer) {
        self.real.encode(w);
        self.virt.encode(w);
        self.prof.encode(w);
    }

    fn decode(r: &mut Reader) -> Result<Self, ImageError> {
        Ok(Itimers {
            real: TimerSpec::decode(r)?,
            virt: TimerSpec::decode(r)?,
            prof: TimerSpec::decode(r)?,
        })
    }

    fn to_value(&self) -> Value {
        Value::Obj(vec![
            ("real", self.real.to_value()),
            ("virtual", self.virt.to_value()),
            ("prof", self.prof.to_value()),
        ])
    }
}

/// One POSIX timer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PosixTimer {
    /// The timer id timer_create returned.
    pub id: i32,
    /// CLOCK_* id.
    pub clock_id: i32,
    /// SIGEV_SIGNAL, SIGEV_THREAD_ID, SIGEV_NONE...
    pub sigev_notify: i32,
    /// The signal sent on expiry.
    pub sigev_signo: i32,
    /// sigev_value, delivered in the siginfo.
    pub sigev_value: u64,
    /// The thread notified with SIGEV_THREAD_ID.
    pub notify_tid: u32,
    /// Period and time left.
    pub spec: TimerSpec,
    /// Overruns not yet delivered.
    pub overrun: i32,
}

impl Record for PosixTimer {
    const KIND: u16 = 9;
    const NAME: &'static str = "posix-timer";

    fn encode(&self, w: &mut Writer) {
        w.i32(self.id);
        w.i32(self.clock_id);
        w.i32(self.sigev_notify);
        w.i32(self.sigev_signo);
        w.u64(self.sigev_value);
        w.u32(self.notify_tid);
        self.spec.encode(w);
        w.i32(self.overrun);
    }

    fn decode(r: &mut Reader) -> Result<Self, ImageError> {
        let t = PosixTimer {
            id: r.i32()?,
            clock_id: r.i32()?,
            sigev_notify: r.i32()?,
            sigev_signo: r.i32()?,
            sigev_value: r.u64()?,
            notify_tid: r.u32()?,
            spec: TimerSpec::decode(r)?,
            overrun: r.i32()?,
        };
        if t.id < 0 {
            return Err(r.error(format!("POSIX timer id {} is negative", t.id)));
        }
        Ok(t)
    }

    fn to_value(&self) -> Value {
        Value::Obj(vec![
            ("id", Value::I(self.id as i64)),
            ("clock_id", Value::I(self.clock_id as i64)),
            ("sigev_notify", Value::I(self.sigev_notify as i64)),
            ("sigev_signo", Value::I(self.sigev_signo as i64)),
            ("sigev_value", Value::Hex(self.sigev_value)),
            ("notify_tid", Value::U(self.notify_tid as u64)),
            ("spec", self.spec.to_value()),
            ("overrun", Value::I(self.overrun as i64)),
        ])
    }
}
