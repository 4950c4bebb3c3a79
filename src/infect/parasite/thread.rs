//! Per-thread commands: trap mode in a thread other than the leader, while
//! the daemon runs in the leader.
//!
//! The daemon owns the blob's own args area and stack (it is waiting in
//! recvfrom on that stack), so a thread command uses the thread area crest
//! mapped after the blob and enters the blob at its per-thread entry (from
//! the daemon's hello) rather than at the head, which would reset sp to
//! the daemon's stack:
//!
//! ```text
//!   ip   = thread_entry             arg0 = thread args   (C ABI: rdi / x0)
//!   sp   = thread stack top         arg1 = the head's trap (rsi / x1)
//! ```
//!
//! The first two C arguments are the first two system call argument
//! registers on both architectures, so `UserRegs::set_syscall` sets them.
//! The entry calls the trap when the command is done: the thread stops
//! with the same ip as after a start at the head. Thread commands run one
//! at a time (crest waits for each), so they all share the thread area.

use std::os::unix::fs::FileExt;

use super::Parasite;
use crate::blob::proto::{
    PAYLOAD_OFFSET, PAYLOAD_SIZE, RET_PENDING, THREAD_ARGS_SIZE, THREAD_STACK_SIZE,
};
use crate::error::{Error, Result};
use crate::infect::remote::Remote;
use crate::infect::target_error;
use crate::sys::Pid;
use crate::warn;

/// What sp is below a 16-aligned stack top at a function's first
/// instruction: x86_64's `call` has pushed a return address (8 bytes),
/// aarch64's `bl` pushes nothing.
#[cfg(target_arch = "x86_64")]
const ENTRY_SP_BIAS: u64 = 8;
#[cfg(target_arch = "aarch64")]
const ENTRY_SP_BIAS: u64 = 0;

impl Parasite<'_> {
    /// Runs command `cmd` like [`command`](Self::command), but in thread
    /// `tid` of the seized process. The thread's registers and signal mask
    /// are saved before and restored (and verified) after, whatever the
    /// command did, as the leader's are by the cure.
    pub fn command_in(
        &mut self,
        tid: Pid,
        cmd: u32,
        payload: &[u8],
        reply_len: usize,
    ) -> Result<Vec<u8>> {
        if tid == self.remote.tid() {
            return self.command(cmd, payload, reply_len);
        }
        self.check_sizes(cmd, payload, reply_len)?;
        if self.thread_entry == 0 {
            return Err(target_error(
                self.seized.pid(),
                format!(
                    "thread {tid}: command {cmd} needs the parasite daemon's entry, and it never started"
                ),
            ));
        }
        let mut remote = Remote::new_at(self.seized, tid, self.remote.code_addr())?;
        let ret = self.run_in(&mut remote, cmd, payload);
        match (ret, remote.restore()) {
            (Ok(ret), Ok(())) => self.answer(tid, cmd, ret, reply_len),
            (Ok(_), Err(e)) => Err(e),
            (Err(e), restored) => {
                if let Err(r) = restored {
                    warn!("thread {tid}: restoring after command {cmd} failed: {r}");
                }
                Err(e)
            }
        }
    }

    /// The thread area's offset from the blob's start: right after the
    /// blob's own pages.
    fn thread_area(&self) -> u64 {
        self.map_size - (THREAD_ARGS_SIZE + THREAD_STACK_SIZE) as u64
    }

    /// Writes the command to the thread area, runs the blob's per-thread
    /// entry in `remote`'s thread until its trap, and reads the answer;
    /// returns the command's `ret`.
    fn run_in(&mut self, remote: &mut Remote, cmd: u32, payload: &[u8]) -> Result<i32> {
        let off = self.thread_area();
        let mut area = vec![0u8; PAYLOAD_OFFSET + payload.len()];
        area[..4].copy_from_slice(&cmd.to_ne_bytes());
        area[4..8].copy_from_slice(&RET_PENDING.to_ne_bytes());
        area[PAYLOAD_OFFSET..].copy_from_slice(payload);
        self.memfd_io(|f, path| {
            f.write_all_at(&area, off)
                .map_err(|e| Error::io("write", path, e))
        })?;
        let args = self.base + off;
        let top = args + (THREAD_ARGS_SIZE + THREAD_STACK_SIZE) as u64;
        let trap = self.base + self.blob.trap as u64;
        let mut regs = *remote.saved_regs();
        regs.set_syscall(0, [args, trap, 0, 0, 0, 0]);
        regs.set_ip(self.thread_entry);
        regs.set_sp(top - ENTRY_SP_BIAS);
        let what = format!("running parasite command {cmd}");
        self.starts += 1;
        let after = remote.run(regs, &what)?;
        if after.ip() != self.base + self.blob.trap_ip() as u64 {
            return Err(remote.stray_trap(after.ip(), &what));
        }
        let mut reply = vec![0u8; PAYLOAD_OFFSET + PAYLOAD_SIZE];
        self.memfd_io(|f, path| {
            f.read_exact_at(&mut reply, off)
                .map_err(|e| Error::io("read", path, e))
        })?;
        let ret = i32::from_ne_bytes([reply[4], reply[5], reply[6], reply[7]]);
        self.last_payload = reply.split_off(PAYLOAD_OFFSET);
        Ok(ret)
    }
}
