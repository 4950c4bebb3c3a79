//! The parasite's command daemon: started once in the leader (CMD_DAEMON,
//! trap mode), it serves commands from its end of a `SOCK_SEQPACKET`
//! socketpair until crest sends CMD_FINI, closes its end, or the socket
//! fails; then it closes its fd and returns, and the head traps.
//!
//! One message = one args area (`DAEMON_MSG_SIZE` bytes: `CmdHeader` +
//! payload, see proto.rs). The daemon receives straight into the blob's
//! own args area, runs the same dispatcher as trap mode on it in place,
//! and sends the whole area back: no second buffer, no copy. SEQPACKET
//! keeps message boundaries, so a message is never split or merged.
//!
//! Sends use `MSG_NOSIGNAL`: every signal is blocked in the leader while
//! crest runs it, so a SIGPIPE for a closed peer would stay pending and be
//! delivered to the task after the cure.

use core::ptr::{read_volatile, write_volatile};

use crate::proto::{
    CMD_DAEMON, CMD_FINI, CmdHeader, DAEMON_MSG_SIZE, DaemonArgs, DaemonHello, EINVAL,
    PAYLOAD_OFFSET,
};
use crate::syscall::{nr, syscall1, syscall6};

/// `MSG_NOSIGNAL`: EPIPE instead of SIGPIPE (see the module docs).
const MSG_NOSIGNAL: usize = 0x4000;
/// `EINTR`: a stop (crest's PTRACE_INTERRUPT, a group stop) interrupted
/// recvfrom; waiting again is right.
const EINTR: isize = 4;

/// Runs the daemon on the args area `args`, whose payload is a
/// [`DaemonArgs`]; returns the result of closing the socket (0, or a
/// negative errno), which becomes CMD_DAEMON's `ret`.
pub fn run(args: *mut u8) -> i32 {
    // SAFETY: the payload of the blob's args area holds a DaemonArgs
    // (asserted in proto.rs).
    let sock = unsafe { read_volatile(args.add(PAYLOAD_OFFSET).cast::<DaemonArgs>()) }.sock_fd;
    let sock = sock as usize;
    if hello(sock, args) {
        serve(sock, args);
    }
    let hdr = args.cast::<CmdHeader>();
    // SAFETY: the args area holds a CmdHeader; leave it saying which
    // command ends here, as a trap-mode start expects.
    unsafe { write_volatile(&raw mut (*hdr).cmd, CMD_DAEMON) };
    // SAFETY: closing the daemon's own socket fd, which crest handed over.
    unsafe { syscall1(nr::SYS_close, sock) as i32 }
}

/// Sends the first message: CMD_DAEMON, 0 and a [`DaemonHello`].
fn hello(sock: usize, args: *mut u8) -> bool {
    let hello = DaemonHello {
        thread_entry: crate::thread_main as *const () as usize as u64,
    };
    let hdr = CmdHeader {
        cmd: CMD_DAEMON,
        ret: 0,
    };
    // SAFETY: the args area starts with a CmdHeader and its payload holds
    // a DaemonHello (asserted in proto.rs); both are 8-aligned.
    unsafe {
        write_volatile(args.cast::<CmdHeader>(), hdr);
        write_volatile(args.add(PAYLOAD_OFFSET).cast::<DaemonHello>(), hello);
    }
    send(sock, args)
}

/// The loop: receive, dispatch, answer, until CMD_FINI or a socket error.
fn serve(sock: usize, args: *mut u8) {
    let hdr = args.cast::<CmdHeader>();
    loop {
        // Anything but a whole message is EOF (crest closed its end), an
        // error, or a broken peer: the daemon ends in every such case.
        if recv(sock, args) != DAEMON_MSG_SIZE as isize {
            return;
        }
        // SAFETY: the args area holds a CmdHeader.
        let cmd = unsafe { read_volatile(&raw const (*hdr).cmd) };
        let ret = match cmd {
            CMD_DAEMON => -EINVAL,
            // SAFETY: the payload starts PAYLOAD_OFFSET bytes into the area.
            _ => crate::dispatch(cmd, unsafe { args.add(PAYLOAD_OFFSET) }),
        };
        // SAFETY: as above.
        unsafe { write_volatile(&raw mut (*hdr).ret, ret) };
        if !send(sock, args) || cmd == CMD_FINI {
            return;
        }
    }
}

/// `recvfrom(sock, args, DAEMON_MSG_SIZE, 0, NULL, NULL)`, again after
/// EINTR; the byte count or -errno.
fn recv(sock: usize, args: *mut u8) -> isize {
    loop {
        // SAFETY: the kernel writes at most DAEMON_MSG_SIZE bytes into the
        // args area, which is that large.
        let n = unsafe {
            syscall6(
                nr::SYS_recvfrom,
                sock,
                args as usize,
                DAEMON_MSG_SIZE,
                0,
                0,
                0,
            )
        };
        if n != -EINTR {
            return n;
        }
    }
}

/// Sends the whole args area as one message; whether it all went.
fn send(sock: usize, args: *mut u8) -> bool {
    loop {
        // SAFETY: the kernel reads DAEMON_MSG_SIZE bytes of the args area.
        let n = unsafe {
            syscall6(
                nr::SYS_sendto,
                sock,
                args as usize,
                DAEMON_MSG_SIZE,
                MSG_NOSIGNAL,
                0,
                0,
            )
        };
        if n != -EINTR {
            return n == DAEMON_MSG_SIZE as isize;
        }
    }
}
