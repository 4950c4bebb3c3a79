//! The parasite in trap mode: one command per start, answered in place.

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
