//! Typed wrappers of the parasite's dump commands (CMD_DUMP_*): they ask,
//! inside the target, for what only the task can tell (signal actions,
//! interval and POSIX timer values, umask, prctl flags, exact brk, and per
//! thread the sigaltstack and clear_child_tid address), and decode the
//! reply into the protocol's structs.
//!
//! Replies are decoded field by field at `offset_of!` positions of the
//! shared `#[repr(C)]` structs, so crest needs no `unsafe` cast of bytes
//! and the layout still comes from one definition (parasite/proto.rs).

use std::mem::offset_of;

use super::Parasite;
use crate::blob::proto::{
    CMD_DUMP_ITIMERS, CMD_DUMP_MISC, CMD_DUMP_POSIX_TIMERS, CMD_DUMP_SIGACTIONS, CMD_DUMP_THREAD,
    ItimersReply, Itimerval, KSigaction, MAX_POSIX_TIMERS, MiscReply, NO_FAILURE, NSIG,
    PosixTimerValue, PosixTimersArgs, SigactionsReply, StackT, ThreadReply, Timespec, Timeval,
};
use crate::error::{Error, Result};
use crate::infect::target_error;
use crate::sys::Pid;

/// A reply's bytes, read at fixed offsets. The parasite's reply is always
/// `reply_len` bytes long (the size of the struct asked for), so the
/// offsets below stay inside it; a short slice reads as zeros rather than
/// panicking.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn get<const N: usize>(&self, off: usize) -> [u8; N] {
        let mut a = [0u8; N];
        if let Some(b) = self.0.get(off..off + N) {
            a.copy_from_slice(b);
        }
        a
    }
    fn u64(&self, off: usize) -> u64 {
        u64::from_ne_bytes(self.get(off))
    }
    fn i64(&self, off: usize) -> i64 {
        i64::from_ne_bytes(self.get(off))
    }
    fn i32(&self, off: usize) -> i32 {
        i32::from_ne_bytes(self.get(off))
    }
    fn u32(&self, off: usize) -> u32 {
        u32::from_ne_bytes(self.get(off))
    }

    fn sigaction(&self, off: usize) -> KSigaction {
        KSigaction {
            handler: self.u64(off + offset_of!(KSigaction, handler)),
            flags: self.u64(off + offset_of!(KSigaction, flags)),
            restorer: self.u64(off + offset_of!(KSigaction, restorer)),
            mask: self.u64(off + offset_of!(KSigaction, mask)),
        }
    }
    fn timeval(&self, off: usize) -> Timeval {
        Timeval {
            sec: self.i64(off + offset_of!(Timeval, sec)),
            usec: self.i64(off + offset_of!(Timeval, usec)),
        }
    }
    fn timespec(&self, off: usize) -> Timespec {
        Timespec {
            sec: self.i64(off + offset_of!(Timespec, sec)),
            nsec: self.i64(off + offset_of!(Timespec, nsec)),
        }
    }
    fn posix_timer(&self, off: usize) -> PosixTimerValue {
        PosixTimerValue {
            id: self.i32(off + offset_of!(PosixTimerValue, id)),
            overrun: self.i32(off + offset_of!(PosixTimerValue, overrun)),
            interval: self.timespec(off + offset_of!(PosixTimerValue, interval)),
            value: self.timespec(off + offset_of!(PosixTimerValue, value)),
        }
    }
}

impl Parasite<'_> {
    /// CMD_DUMP_SIGACTIONS: every signal's action (SIGKILL's and SIGSTOP's
    /// are SIG_DFL).
    pub fn dump_sigactions(&mut self) -> Result<SigactionsReply> {
        let r = self.command(CMD_DUMP_SIGACTIONS, &[], size_of::<SigactionsReply>())?;
        let b = Bytes(&r);
        let mut reply = SigactionsReply {
            actions: [KSigaction::default(); NSIG],
        };
        for (i, a) in reply.actions.iter_mut().enumerate() {
            *a = b.sigaction(i * size_of::<KSigaction>());
        }
        Ok(reply)
    }

    /// CMD_DUMP_ITIMERS: ITIMER_REAL, ITIMER_VIRTUAL and ITIMER_PROF.
    pub fn dump_itimers(&mut self) -> Result<ItimersReply> {
        let r = self.command(CMD_DUMP_ITIMERS, &[], size_of::<ItimersReply>())?;
        let b = Bytes(&r);
        let mut reply = ItimersReply::default();
        for (i, t) in reply.timers.iter_mut().enumerate() {
            let off = i * size_of::<Itimerval>();
            *t = Itimerval {
                interval: b.timeval(off + offset_of!(Itimerval, interval)),
                value: b.timeval(off + offset_of!(Itimerval, value)),
            };
        }
        Ok(reply)
    }

    /// CMD_DUMP_POSIX_TIMERS for the timers `ids` (the kernel's ids, from
    /// /proc/PID/timers), [`MAX_POSIX_TIMERS`] per command; the values in
    /// the order of `ids`.
    pub fn dump_posix_timers(&mut self, ids: &[i32]) -> Result<Vec<PosixTimerValue>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_POSIX_TIMERS) {
            out.extend(self.posix_timers_chunk(chunk)?);
        }
        Ok(out)
    }

    fn posix_timers_chunk(&mut self, ids: &[i32]) -> Result<Vec<PosixTimerValue>> {
        let timers = offset_of!(PosixTimersArgs, timers);
        let entry = |i: usize| timers + i * size_of::<PosixTimerValue>();
        let mut payload = vec![0u8; size_of::<PosixTimersArgs>()];
        // At most MAX_POSIX_TIMERS (64) ids: the count fits a u32.
        let nr = ids.len() as u32;
        let put = |p: &mut [u8], off: usize, v: [u8; 4]| p[off..off + 4].copy_from_slice(&v);
        put(
            &mut payload,
            offset_of!(PosixTimersArgs, nr),
            nr.to_ne_bytes(),
        );
        for (i, id) in ids.iter().enumerate() {
            let off = entry(i) + offset_of!(PosixTimerValue, id);
            put(&mut payload, off, id.to_ne_bytes());
        }
        let len = payload.len();
        let r = match self.command(CMD_DUMP_POSIX_TIMERS, &payload, len) {
            Ok(r) => r,
            Err(e) => return Err(self.timer_error(ids, e)),
        };
        let b = Bytes(&r);
        let values: Vec<PosixTimerValue> =
            (0..ids.len()).map(|i| b.posix_timer(entry(i))).collect();
        match values.iter().zip(ids).find(|(v, id)| v.id != **id) {
            Some((v, id)) => Err(target_error(
                self.seized.pid(),
                format!(
                    "the parasite answered for POSIX timer {} instead of {id}",
                    v.id
                ),
            )),
            None => Ok(values),
        }
    }

    /// Names the timer whose query failed, which the parasite recorded in
    /// the args area before it returned the errno.
    fn timer_error(&mut self, ids: &[i32], e: Error) -> Error {
        let failed = self
            .read_payload(size_of::<PosixTimersArgs>())
            .map(|r| Bytes(&r).u32(offset_of!(PosixTimersArgs, failed)));
        match failed {
            Ok(i) if i != NO_FAILURE => match ids.get(i as usize) {
                Some(id) => target_error(
                    self.seized.pid(),
                    format!("reading POSIX timer {id} inside the target: {e}"),
                ),
                None => e,
            },
            _ => e,
        }
    }

    /// CMD_DUMP_MISC: umask, personality, prctl flags and the exact brk.
    pub fn dump_misc(&mut self) -> Result<MiscReply> {
        let r = self.command(CMD_DUMP_MISC, &[], size_of::<MiscReply>())?;
        let b = Bytes(&r);
        Ok(MiscReply {
            umask: b.u32(offset_of!(MiscReply, umask)),
            personality: b.u32(offset_of!(MiscReply, personality)),
            dumpable: b.i32(offset_of!(MiscReply, dumpable)),
            securebits: b.i32(offset_of!(MiscReply, securebits)),
            pdeath_signal: b.i32(offset_of!(MiscReply, pdeath_signal)),
            child_subreaper: b.i32(offset_of!(MiscReply, child_subreaper)),
            thp_disable: b.i32(offset_of!(MiscReply, thp_disable)),
            no_new_privs: b.i32(offset_of!(MiscReply, no_new_privs)),
            brk: b.u64(offset_of!(MiscReply, brk)),
        })
    }

    /// CMD_DUMP_THREAD run in thread `tid`: its sigaltstack and
    /// clear_child_tid address. Refuses an answer from another thread.
    pub fn dump_thread(&mut self, tid: Pid) -> Result<ThreadReply> {
        let r = self.command_in(tid, CMD_DUMP_THREAD, &[], size_of::<ThreadReply>())?;
        let b = Bytes(&r);
        let ss = offset_of!(ThreadReply, altstack);
        let reply = ThreadReply {
            tid: b.i32(offset_of!(ThreadReply, tid)),
            pad: 0,
            altstack: StackT {
                sp: b.u64(ss + offset_of!(StackT, sp)),
                flags: b.i32(ss + offset_of!(StackT, flags)),
                pad: 0,
                size: b.u64(ss + offset_of!(StackT, size)),
            },
            clear_tid: b.u64(offset_of!(ThreadReply, clear_tid)),
        };
        if reply.tid != tid {
            return Err(target_error(
                self.seized.pid(),
                format!(
                    "CMD_DUMP_THREAD for thread {tid} ran in thread {}",
                    reply.tid
                ),
            ));
        }
        Ok(reply)
    }
}
