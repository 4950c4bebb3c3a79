//! Signals: the blocked mask, siginfo, and queueing a signal with its
//! payload (rt_sigqueueinfo), which is how restore re-creates pending
//! signals and how the check proves PTRACE_PEEKSIGINFO reads them back.

use syscalls::{Sysno, syscall};

use super::{Pid, SysResult};

/// `SIG_SETMASK` for rt_sigprocmask.
pub const SIG_SETMASK: i32 = 2;
/// `SI_QUEUE`: the si_code of a signal queued by sigqueue().
pub const SI_QUEUE: i32 = -1;

/// rt_sigprocmask(SIG_SETMASK): sets the blocked set to `mask` (bit n-1 for
/// signal n).
pub fn rt_sigprocmask_setmask(mask: u64) -> SysResult<()> {
    // SAFETY: the kernel reads one 8-byte sigset; oldset is NULL.
    unsafe {
        syscall!(
            Sysno::rt_sigprocmask,
            SIG_SETMASK,
            &mask as *const u64,
            0,
            8
        )
    }
    .map(drop)
}

/// A 128-byte `siginfo_t`, with accessors for the fields crest uses.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct SigInfo(pub [u8; 128]);

impl SigInfo {
    /// A queued (SI_QUEUE) siginfo for `signo` carrying `value` from `pid`.
    pub fn queued(signo: i32, pid: Pid, uid: u32, value: u64) -> Self {
        let mut b = [0u8; 128];
        b[0..4].copy_from_slice(&signo.to_ne_bytes());
        b[8..12].copy_from_slice(&SI_QUEUE.to_ne_bytes());
        b[16..20].copy_from_slice(&pid.to_ne_bytes());
        b[20..24].copy_from_slice(&uid.to_ne_bytes());
        b[24..32].copy_from_slice(&value.to_ne_bytes());
        SigInfo(b)
    }
    /// si_signo.
    pub fn signo(&self) -> i32 {
        i32::from_ne_bytes([self.0[0], self.0[1], self.0[2], self.0[3]])
    }
    /// si_code.
    pub fn code(&self) -> i32 {
        i32::from_ne_bytes([self.0[8], self.0[9], self.0[10], self.0[11]])
    }
    /// si_value (as the 64-bit union) of an SI_QUEUE signal.
    pub fn value(&self) -> u64 {
        let mut v = [0u8; 8];
        v.copy_from_slice(&self.0[24..32]);
        u64::from_ne_bytes(v)
    }
}

/// rt_sigqueueinfo(2): queues a signal on the process-wide (shared) queue.
pub fn rt_sigqueueinfo(pid: Pid, sig: i32, info: &SigInfo) -> SysResult<()> {
    // SAFETY: the kernel reads one 128-byte siginfo.
    unsafe { syscall!(Sysno::rt_sigqueueinfo, pid, sig, info as *const SigInfo) }.map(drop)
}

/// rt_tgsigqueueinfo(2): queues a signal on one thread's private queue.
pub fn rt_tgsigqueueinfo(tgid: Pid, tid: Pid, sig: i32, info: &SigInfo) -> SysResult<()> {
    // SAFETY: the kernel reads one 128-byte siginfo.
    unsafe {
        syscall!(
            Sysno::rt_tgsigqueueinfo,
            tgid,
            tid,
            sig,
            info as *const SigInfo
        )
    }
    .map(drop)
}
