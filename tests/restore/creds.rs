//! The credentials victim: starting as root, it drops to distinct real,
//! effective and saved uids and gids, takes supplementary groups, keeps a
//! chosen set of capabilities (effective, permitted, inheritable, one
//! ambient), drops one capability from the bounding set and sets
//! no_new_privs. After go it checks that /proc/self/status reports every
//! one of them exactly as before, and the ids through the syscalls too.

use std::path::Path;

use crate::common::victim::{Child, Verdict, read_file};

const UIDS: [u32; 3] = [1000, 1001, 1002];
const GIDS: [u32; 3] = [1100, 1101, 1102];
const GROUPS: [u32; 2] = [1200, 1201];
const CAP_CHOWN: u32 = 0;
const CAP_KILL: u32 = 5;
const CAP_NET_BIND_SERVICE: u32 = 10;
const CAP_SYS_BOOT: u32 = 22;
/// The status lines that must read the same after restore.
const LINES: [&[u8]; 10] = [
    b"Uid:",
    b"Gid:",
    b"Groups:",
    b"CapInh:",
    b"CapPrm:",
    b"CapEff:",
    b"CapBnd:",
    b"CapAmb:",
    b"NoNewPrivs:",
    b"Umask:",
];

/// The victim drops root: its directory must be writable for its reports.
pub fn prepare(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
}

/// The kernel's capability header and data (version 3: two 32-bit halves).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn bit(cap: u32) -> u32 {
    1 << cap
}

/// Takes the credentials described in the module doc.
fn drop_privileges() -> Verdict {
    // SAFETY: credential syscalls of this victim, plain values or pointers
    // to locals.
    unsafe {
        ensure!(
            libc::prctl(libc::PR_CAPBSET_DROP, CAP_SYS_BOOT as libc::c_ulong) == 0,
            "PR_CAPBSET_DROP"
        );
        ensure!(
            libc::setgroups(GROUPS.len(), GROUPS.as_ptr()) == 0,
            "setgroups"
        );
        ensure!(
            libc::prctl(libc::PR_SET_KEEPCAPS, 1) == 0,
            "PR_SET_KEEPCAPS"
        );
        ensure!(libc::setresgid(GIDS[0], GIDS[1], GIDS[2]) == 0, "setresgid");
        ensure!(libc::setresuid(UIDS[0], UIDS[1], UIDS[2]) == 0, "setresuid");
        let mut head = CapHeader {
            version: 0x2008_0522,
            pid: 0,
        };
        let keep = bit(CAP_CHOWN) | bit(CAP_NET_BIND_SERVICE);
        let data = [
            CapData {
                effective: keep,
                permitted: keep | bit(CAP_KILL),
                inheritable: bit(CAP_NET_BIND_SERVICE),
            },
            CapData {
                effective: 0,
                permitted: 0,
                inheritable: 0,
            },
        ];
        let set = libc::syscall(libc::SYS_capset, &mut head as *mut CapHeader, data.as_ptr());
        ensure!(set == 0, "capset");
        let raise = libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
            CAP_NET_BIND_SERVICE as libc::c_ulong,
            0,
            0,
        );
        ensure!(raise == 0, "PR_CAP_AMBIENT_RAISE");
        ensure!(
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0,
            "no_new_privs"
        );
    }
    Ok(())
}

/// The line starting with `key` in a status text.
fn line<'a>(text: &'a [u8], key: &[u8]) -> &'a [u8] {
    text.split(|&b| b == b'\n')
        .find(|l| l.starts_with(key))
        .unwrap_or(b"(missing)")
}

fn ids(get: unsafe extern "C" fn(*mut u32, *mut u32, *mut u32) -> i32) -> [u32; 3] {
    let mut v = [u32::MAX; 3];
    // SAFETY: the call writes three u32s.
    unsafe { get(&mut v[0], &mut v[1], &mut v[2]) };
    v
}

pub fn victim(c: &Child) -> Verdict {
    drop_privileges()?;
    let mut before = [0u8; 4096];
    let before = read_file(c"/proc/self/status", &mut before);
    ensure!(
        line(before, b"CapAmb:") != b"CapAmb:\t0000000000000000",
        "no ambient set"
    );
    c.ready(b"creds\n");
    c.wait_go();
    let mut after = [0u8; 4096];
    let after = read_file(c"/proc/self/status", &mut after);
    for key in LINES {
        let (was, now) = (line(before, key), line(after, key));
        ensure!(
            was == now,
            "{} became {}",
            std::str::from_utf8(was).unwrap_or("?"),
            std::str::from_utf8(now).unwrap_or("?")
        );
    }
    ensure!(
        ids(libc::getresuid) == UIDS,
        "getresuid {:?}",
        ids(libc::getresuid)
    );
    ensure!(
        ids(libc::getresgid) == GIDS,
        "getresgid {:?}",
        ids(libc::getresgid)
    );
    Ok(())
}
