//! Victims holding an fd of a kind crest cannot dump (io_uring, perf
//! event, userfaultfd, pidfd, fanotify, bpf map), each at fd 30. After go
//! (the dump refused, the victim left running) fd 30 must still be the same
//! kind of object.

use crate::common::victim::{Child, Verdict};
use crate::raw::{errno, place};

pub const FD: i32 = 30;

fn hold(c: &Child, made: i64, link: &[u8]) -> Verdict {
    ensure!(made >= 0, "creating the object: errno {}", errno());
    place(made as i32, FD, false)?;
    c.ready(b"");
    c.wait_go();
    let mut buf = [0u8; 64];
    // SAFETY: a NUL-terminated path and a buffer of its size.
    let n = unsafe { libc::readlink(c"/proc/self/fd/30".as_ptr(), buf.as_mut_ptr().cast(), 64) };
    ensure!(
        n > 0 && &buf[..n as usize] == link,
        "fd 30 is no longer {:?}",
        std::str::from_utf8(link)
    );
    Ok(())
}

pub fn io_uring(c: &Child) -> Verdict {
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup writes at most the 120-byte params.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4, params.as_mut_ptr()) };
    hold(c, fd, b"anon_inode:[io_uring]")
}

pub fn perf_event(c: &Child) -> Verdict {
    // struct perf_event_attr: type, size, config (PERF_COUNT_SW_CPU_CLOCK).
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&1u32.to_ne_bytes());
    attr[4..8].copy_from_slice(&128u32.to_ne_bytes());
    // SAFETY: the kernel reads `size` bytes of attr.
    let fd = unsafe { libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), 0, -1, -1, 0) };
    hold(c, fd, b"anon_inode:[perf_event]")
}

pub fn userfaultfd(c: &Child) -> Verdict {
    // SAFETY: integers only.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, 0) };
    hold(c, fd, b"anon_inode:[userfaultfd]")
}

pub fn pidfd(c: &Child) -> Verdict {
    // SAFETY: integers only.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
    hold(c, fd, b"anon_inode:[pidfd]")
}

pub fn fanotify(c: &Child) -> Verdict {
    // SAFETY: integers only.
    let fd = unsafe { libc::syscall(libc::SYS_fanotify_init, 0, 0) };
    hold(c, fd, b"anon_inode:[fanotify]")
}

pub fn bpf_map(c: &Child) -> Verdict {
    // union bpf_attr for BPF_MAP_CREATE: map_type ARRAY, key 4, value 4, 1 entry.
    let mut attr = [0u8; 128];
    for (i, v) in [2u32, 4, 4, 1].iter().enumerate() {
        attr[4 * i..4 * i + 4].copy_from_slice(&v.to_ne_bytes());
    }
    // SAFETY: the kernel reads 128 bytes of attr.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 0, attr.as_ptr(), 128) };
    hold(c, fd, b"anon_inode:bpf-map")
}

pub fn hugetlb_memfd(c: &Child) -> Verdict {
    // SAFETY: a NUL-terminated name.
    let fd = unsafe { libc::memfd_create(c"huge".as_ptr(), libc::MFD_HUGETLB) };
    hold(c, fd as i64, b"/memfd:huge (deleted)")
}
