//! The process record (pstree.img): one per dumped process, parents before
//! children, as /proc/PID/stat and /proc/PID/task list them.
//!
//! ```text
//!  u32 pid | u32 ppid | u32 pgid | u32 sid
//!  u8 state (1 running, 2 stopped, 3 zombie) | i32 state_arg
//!  list<u32> threads (the first is the thread-group leader, tid == pid)
//! ```
//!
//! `state_arg` is the stop signal of a stopped task (SIGSTOP, SIGTSTP,
//! SIGTTIN or SIGTTOU, since restore must stop it again with the same one) and
//! the wait status of a zombie (field 52 of /proc/PID/stat), 0 otherwise.

use super::ImageError;
use super::codec::{Reader, Writer};
use super::record::Record;
use super::value::Value;

/// The most threads a process record may list (the kernel's threads-max is
/// far lower on any real machine).
pub const MAX_THREADS: usize = 1 << 22;

/// How a task was found at dump time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// Running or sleeping: resumed after restore.
    Running,
    /// Group-stopped by `signal`: restored stopped.
    Stopped {
        /// The stop signal.
        signal: u32,
    },
    /// A zombie whose parent had not reaped it.
    Zombie {
        /// The wait status the parent will see.
        exit_code: i32,
    },
}

/// One process of the dumped tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// Process id (in the dumped pid namespace).
    pub pid: u32,
    /// Parent process id (0 for the root of the dump).
    pub ppid: u32,
    /// Process group id.
    pub pgid: u32,
    /// Session id.
    pub sid: u32,
    /// Running, stopped or zombie.
    pub state: TaskState,
    /// Thread ids, the leader first.
    pub threads: Vec<u32>,
}

impl Record for Process {
    const KIND: u16 = 2;
    const NAME: &'static str = "process";

    fn encode(&self, w: &mut Writer) {
        w.u32(self.pid);
        w.u32(self.ppid);
        w.u32(self.pgid);
        w.u32(self.sid);
        let (tag, arg) = match self.state {
            TaskState::Running => (1, 0),
            TaskState::Stopped { signal } => (2, signal as i32),
            TaskState::Zombie { exit_code } => (3, exit_code),
        };
        w.u8(tag);
        w.i32(arg);
        w.list(&self.threads, |w, t| w.u32(*t));
    }

    fn decode(r: &mut Reader) -> Result<Self, ImageError> {
        let (pid, ppid, pgid, sid) = (r.u32()?, r.u32()?, r.u32()?, r.u32()?);
        let (tag, arg) = (r.u8()?, r.i32()?);
        let state = match tag {
            1 => TaskState::Running,
            2 if (1..=64).contains(&arg) => TaskState::Stopped { signal: arg as u32 },
            2 => return Err(r.error(format!("stop signal {arg} is not a signal"))),
            3 => TaskState::Zombie { exit_code: arg },
            t => return Err(r.error(format!("unknown task state {t}"))),
        };
        let threads = r.list("threads", MAX_THREADS, 4, |r| r.u32())?;
        if pid == 0 {
            return Err(r.error("process id 0"));
        }
        if !matches!(state, TaskState::Zombie { .. }) && threads.first() != Some(&pid) {
            return Err(r.error(format!(
                "process {pid} does not list itself as its first thread"
            )));
        }
        Ok(Process {
            pid,
            ppid,
            pgid,
            sid,
            state,
            threads,
        })
    }

    fn to_value(&self) -> Value {
        let state = match self.state {
            TaskState::Running => Value::Obj(vec![("state", Value::Str("running".into()))]),
            TaskState::Stopped { signal } => Value::Obj(vec![
                ("state", Value::Str("stopped".into())),
                ("signal", Value::U(signal as u64)),
            ]),
            TaskState::Zombie { exit_code } => Value::Obj(vec![
                ("state", Value::Str("zombie".into())),
                ("exit_code", Value::I(exit_code as i64)),
            ]),
        };
        Value::Obj(vec![
            ("pid", Value::U(self.pid as u64)),
            ("ppid", Value::U(self.ppid as u64)),
            ("pgid", Value::U(self.pgid as u64)),
            ("sid", Value::U(self.sid as u64)),
            ("state", state),
            (
                "threads",
                Value::List(self.threads.iter().map(|t| Value::U(*t as u64)).collect()),
            ),
        ])
    }
}

impl TaskState {
    /// A short word for `crest show`.
    pub fn describe(&self) -> String {
        match self {
            TaskState::Running => "running".into(),
            TaskState::Stopped { signal } => format!("stopped by signal {signal}"),
            TaskState::Zombie { exit_code } => format!("zombie, exit status {exit_code:#x}"),
        }
    }
}

/// A process's name (comm) at dump time, in pstree.img after the process
/// records (kind 21, added in format 1.0 without a version bump: an older
/// crest skips it). A live process's threads carry their names in their
/// thread-core records; this one is what a zombie, which has no other
/// record, comes back named.
///
/// ```text
///  u32 pid | bytes comm (at most 16)
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessComm {
    /// The process.
    pub pid: u32,
    /// Its comm, without the NUL.
    pub comm: Vec<u8>,
}

/// The longest comm the kernel keeps (TASK_COMM_LEN with its NUL).
pub const COMM_LEN: usize = 16;

impl Record for ProcessComm {
    const KIND: u16 = 21;
    const NAME: &'static str = "process-comm";

    fn encode(&self, w: &mut Writer) {
        w.u32(self.pid);
        w.bytes(&self.comm);
    }

    fn decode(r: &mut Reader) -> Result<Self, ImageError> {
        Ok(ProcessComm {
            pid: r.u32()?,
            comm: r.bytes("comm", COMM_LEN)?,
        })
    }

    fn to_value(&self) -> Value {
        Value::Obj(vec![
            ("pid", Value::U(self.pid as u64)),
            ("comm", Value::path(&self.comm)),
        ])
    }
}
