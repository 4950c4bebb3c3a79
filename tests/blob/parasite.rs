//! The parasite in trap mode (one command per start, answered in place)
//! and in daemon mode (commands over a socket, one start).

use crate::harness::{End, Loaded, run_in_child};
use crest::blob::{self, proto};
use proto::{CMD_FINI, CMD_GETPID, CmdHeader, GetPid, PAYLOAD_OFFSET};

/// Writes `cmd` with ret = RET_PENDING, runs the blob, returns the child's
/// pid, its end and the header the blob left.
fn run_command(loaded: &Loaded, cmd: u32) -> (libc::pid_t, End, CmdHeader) {
    let hdr = loaded.args::<CmdHeader>(0);
    // SAFETY: hdr points into our shared mapping, aligned (64-aligned area).
    unsafe {
        hdr.write_volatile(CmdHeader {
            cmd,
            ret: proto::RET_PENDING,
        })
    };
    let (pid, end) = run_in_child(loaded, None);
    // SAFETY: as above; the child is gone, nobody writes concurrently.
    (pid, end, unsafe { hdr.read_volatile() })
}

#[test]
fn getpid_reports_the_child_and_traps() {
    let loaded = Loaded::new(blob::parasite());
    let reply = loaded.args::<GetPid>(PAYLOAD_OFFSET);
    // SAFETY: the payload lies in the mapping, 8-aligned.
    unsafe { reply.write_volatile(GetPid { pid: -7, tid: -7 }) };
    let (pid, end, hdr) = run_command(&loaded, CMD_GETPID);
    assert_eq!(
        end,
        End::Signal(libc::SIGTRAP),
        "the blob must end on its trap"
    );
    assert_eq!(
        hdr,
        CmdHeader {
            cmd: CMD_GETPID,
            ret: 0
        }
    );
    // SAFETY: as above; the child is gone.
    assert_eq!(unsafe { reply.read_volatile() }, GetPid { pid, tid: pid });
}

#[test]
fn runs_again_in_the_same_mapping() {
    let loaded = Loaded::new(blob::parasite());
    let (first, end1, _) = run_command(&loaded, CMD_GETPID);
    let (second, end2, hdr) = run_command(&loaded, CMD_GETPID);
    let trapped = End::Signal(libc::SIGTRAP);
    assert!(end1 == trapped && end2 == trapped, "{end1:?} {end2:?}");
    assert_eq!(hdr.ret, 0);
    assert_ne!(first, second);
    // SAFETY: the payload lies in the mapping; the child is gone.
    let reply = unsafe { loaded.args::<GetPid>(PAYLOAD_OFFSET).read_volatile() };
    assert_eq!(
        reply.pid, second,
        "the reply is the second child's, not stale"
    );
}

#[test]
fn fini_succeeds() {
    let loaded = Loaded::new(blob::parasite());
    let (_, end, hdr) = run_command(&loaded, CMD_FINI);
    assert_eq!(end, End::Signal(libc::SIGTRAP));
    assert_eq!(
        hdr,
        CmdHeader {
            cmd: CMD_FINI,
            ret: 0
        }
    );
}

#[test]
fn refuses_an_unknown_command() {
    let loaded = Loaded::new(blob::parasite());
    let (_, end, hdr) = run_command(&loaded, 0xdead);
    assert_eq!(end, End::Signal(libc::SIGTRAP));
    assert_eq!(hdr.ret, -proto::EINVAL);
}

/// One message for the daemon: `cmd`, RET_PENDING, zero payload.
fn message(cmd: u32) -> Vec<u8> {
    let mut m = vec![0u8; proto::DAEMON_MSG_SIZE];
    m[..4].copy_from_slice(&cmd.to_ne_bytes());
    m[4..8].copy_from_slice(&proto::RET_PENDING.to_ne_bytes());
    m
}

/// Receives one daemon message; returns (cmd, ret, payload).
fn receive(fd: std::os::fd::BorrowedFd<'_>) -> (u32, i32, Vec<u8>) {
    let mut m = vec![0u8; proto::DAEMON_MSG_SIZE];
    let n = crest::sys::unix::recv(fd, &mut m, 0).unwrap();
    assert_eq!(n, proto::DAEMON_MSG_SIZE, "one whole message");
    let cmd = u32::from_ne_bytes(m[..4].try_into().unwrap());
    let ret = i32::from_ne_bytes(m[4..8].try_into().unwrap());
    (cmd, ret, m.split_off(PAYLOAD_OFFSET))
}

/// CMD_DAEMON in a child: a hello naming an entry inside the blob, then
/// commands answered over the socket, and after CMD_FINI the trap with
/// CMD_DAEMON's ret = 0 (its socket closed).
#[test]
fn daemon_serves_commands_over_its_socket_and_traps_after_fini() {
    let loaded = Loaded::new(blob::parasite());
    let entry = run_daemon(&loaded);
    assert!(entry != 0);
}

/// Runs the daemon in a child (see the test above); returns the
/// per-thread entry its hello named.
fn run_daemon(loaded: &Loaded) -> u64 {
    use crest::sys::unix::{MSG_NOSIGNAL, SOCK_SEQPACKET, send, socketpair};
    use std::os::fd::{AsFd, AsRawFd};
    let (ours, theirs) = socketpair(SOCK_SEQPACKET).unwrap();
    let args = proto::DaemonArgs {
        sock_fd: theirs.as_raw_fd(),
        pad: 0,
    };
    // SAFETY: the header and payload lie in the mapping, 8-aligned.
    unsafe {
        loaded.args::<CmdHeader>(0).write_volatile(CmdHeader {
            cmd: proto::CMD_DAEMON,
            ret: proto::RET_PENDING,
        });
        loaded
            .args::<proto::DaemonArgs>(PAYLOAD_OFFSET)
            .write_volatile(args);
    }
    let code = loaded.addr(0)..loaded.addr(loaded.blob.bytes.len());
    let crest_side = std::thread::spawn(move || {
        let (cmd, ret, hello) = receive(ours.as_fd());
        assert_eq!((cmd, ret), (proto::CMD_DAEMON, 0), "the hello");
        let entry = u64::from_ne_bytes(hello[..8].try_into().unwrap());
        assert!(
            code.contains(&entry),
            "thread entry {entry:#x} in {code:x?}"
        );
        let mut pids = vec![entry as i64];
        for cmd in [CMD_GETPID, 0xdead, CMD_GETPID, CMD_FINI] {
            assert_eq!(send(ours.as_fd(), &message(cmd), MSG_NOSIGNAL), Ok(4096));
            let (got, ret, payload) = receive(ours.as_fd());
            assert_eq!(got, cmd);
            match cmd {
                CMD_GETPID => {
                    assert_eq!(ret, 0);
                    let pid = i32::from_ne_bytes(payload[..4].try_into().unwrap());
                    pids.push(i64::from(pid));
                }
                CMD_FINI => assert_eq!(ret, 0),
                _ => assert_eq!(ret, -proto::EINVAL),
            }
        }
        pids
    });
    let (pid, end) = run_in_child(loaded, None);
    assert_eq!(
        end,
        End::Signal(libc::SIGTRAP),
        "the daemon ends on its trap"
    );
    let answers = crest_side.join().unwrap();
    assert_eq!(answers[1..], [i64::from(pid), i64::from(pid)]);
    // SAFETY: the child is gone; nobody writes the area concurrently.
    let hdr = unsafe { loaded.args::<CmdHeader>(0).read_volatile() };
    assert_eq!(
        hdr,
        CmdHeader {
            cmd: proto::CMD_DAEMON,
            ret: 0
        },
        "CMD_DAEMON returned close()'s 0"
    );
    drop(theirs);
    answers[0] as u64
}

/// The per-thread entry the hello names, called in a child with an args
/// area and the head's trap (as crest enters it in a thread): it runs the
/// command and stops on that trap.
#[test]
fn the_thread_entry_runs_one_command_and_traps() {
    let loaded = Loaded::new(blob::parasite());
    let entry = run_daemon(&loaded);
    let hdr = loaded.args::<CmdHeader>(0);
    // SAFETY: the header lies in the mapping, aligned; no child runs.
    unsafe {
        hdr.write_volatile(CmdHeader {
            cmd: CMD_GETPID,
            ret: proto::RET_PENDING,
        })
    };
    let args = loaded.addr(loaded.blob.args_offset) as usize;
    let trap = loaded.addr(loaded.blob.trap) as usize;
    // SAFETY: the child only calls into the blob and never returns.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: entry is the blob's thread_main (checked inside the
        // blob's code by run_daemon), `extern "C" fn(*mut u8, fn) -> !`;
        // args and trap are the loaded blob's; the expected SIGTRAP must
        // leave no core dump.
        unsafe {
            libc::setrlimit(libc::RLIMIT_CORE, &no_core);
            let f: extern "C" fn(usize, usize) -> ! = std::mem::transmute(entry as usize);
            f(args, trap)
        }
    }
    let mut status = 0;
    // SAFETY: reaping our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGTRAP,
        "status {status:#x}"
    );
    // SAFETY: the child is gone.
    let (hdr, reply) = unsafe {
        (
            hdr.read_volatile(),
            loaded.args::<GetPid>(PAYLOAD_OFFSET).read_volatile(),
        )
    };
    assert_eq!(hdr.ret, 0);
    assert_eq!(reply, GetPid { pid, tid: pid });
}
