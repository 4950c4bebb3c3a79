//! The dirty tracker's commands (48..=55, see proto.rs): a userfaultfd
//! created by the task, so that it watches the task's own mm, and its
//! close once crest holds a copy. Registration and the scans run in crest
//! on that copy: a uffd always acts on the mm of the task that made it.

use core::ptr::{read_volatile, write_volatile};

use crate::proto::{CMD_FD_CLOSE, CMD_UFFD_OPEN, EINVAL, UffdReply};
use crate::syscall::{nr, syscall1};

/// `O_CLOEXEC | O_NONBLOCK`: the uffd must not survive an exec of the
/// task, and nobody reads fault messages from it (WP_ASYNC needs none).
const UFFD_FLAGS: usize = 0o2000000 | 0o4000;
/// `UFFD_USER_MODE_ONLY`: what an unprivileged task may create when
/// vm.unprivileged_userfaultfd is 0.
const UFFD_USER_MODE_ONLY: usize = 1;
/// `EPERM`.
const EPERM: isize = 1;

/// Runs one of the tracker's commands; 0 or a negative errno.
pub fn dispatch(cmd: u32, payload: *mut u8) -> i32 {
    match cmd {
        CMD_UFFD_OPEN => uffd_open(payload.cast()),
        CMD_FD_CLOSE => fd_close(payload.cast()),
        _ => -EINVAL,
    }
}

fn uffd_open(reply: *mut UffdReply) -> i32 {
    // SAFETY: userfaultfd takes only flags.
    let mut fd = unsafe { syscall1(nr::SYS_userfaultfd, UFFD_FLAGS) };
    let mut user_only = 0;
    if fd == -EPERM {
        // SAFETY: as above.
        fd = unsafe { syscall1(nr::SYS_userfaultfd, UFFD_FLAGS | UFFD_USER_MODE_ONLY) };
        user_only = 1;
    }
    if fd < 0 {
        return fd as i32;
    }
    let r = UffdReply {
        fd: fd as i32,
        user_mode_only: user_only,
    };
    // SAFETY: the payload holds a UffdReply (asserted in proto.rs).
    unsafe { write_volatile(reply, r) };
    0
}

fn fd_close(arg: *mut UffdReply) -> i32 {
    // SAFETY: the payload holds the UffdReply crest sent back.
    let r = unsafe { read_volatile(arg) };
    // SAFETY: closes the fd CMD_UFFD_OPEN made; crest sends only that one.
    unsafe { syscall1(nr::SYS_close, r.fd as usize) as i32 }
}
