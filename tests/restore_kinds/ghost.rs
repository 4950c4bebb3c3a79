//! The ghost-file victim: `gone` (mode 0640) holds "ghost data" at 0 and a
//! pattern at 64 KiB with a hole between; fd 22 opens it O_RDWR at position
//! 4, fd 23 O_RDONLY at position 2 (close-on-exec), it is mapped shared,
//! then deleted. `mapped` (8 KiB of a pattern) is mapped private read-only,
//! deleted and its fd closed.
//!
//! After go: both fds name `DIR/gone (deleted)` and have no links, the name
//! is still free in DIR, size, mode, holes, contents, flags and positions
//! are as before, a write through fd 22 shows in the shared mapping and is
//! read through fd 23, and the private mapping of `mapped` keeps its bytes.

use std::path::Path;

use crate::common::victim::{Child, Verdict};
use crate::raw::{check_flags, errno, place};

const RW: i32 = 22;
const RO: i32 = 23;
const FAR: usize = 64 << 10;
const SIZE: usize = FAR + 100;

fn pattern(i: usize) -> u8 {
    (i * 13 + 1) as u8
}

pub fn prepare(dir: &Path) {
    let mut data = vec![0u8; SIZE];
    data[..10].copy_from_slice(b"ghost data");
    for (i, b) in data[FAR..].iter_mut().enumerate() {
        *b = pattern(i);
    }
    std::fs::write(dir.join("gone"), &data).unwrap();
    // Punch the middle so the file is sparse whatever the file system did.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("gone"))
        .unwrap();
    // SAFETY: fallocate on our own file.
    let r = unsafe {
        libc::fallocate(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            4096,
            (FAR - 4096) as i64,
        )
    };
    assert_eq!(r, 0, "punching a hole");
    let mapped: Vec<u8> = (0..8192).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join("mapped"), mapped).unwrap();
}

type Maps = (*mut u8, *const u8);

fn setup(c: &Child) -> Result<Maps, crate::common::victim::Msg> {
    let gone = c.path("gone");
    let mapped = c.path("mapped");
    // SAFETY: raw calls on our own files and fresh mappings.
    unsafe {
        place(libc::open(gone.as_ptr(), libc::O_RDWR), RW, false)?;
        place(libc::open(gone.as_ptr(), libc::O_RDONLY), RO, true)?;
        ensure!(libc::fchmod(RW, 0o640) == 0, "chmod");
        ensure!(libc::lseek(RW, 4, libc::SEEK_SET) == 4, "seek");
        ensure!(libc::lseek(RO, 2, libc::SEEK_SET) == 2, "seek ro");
        let shared = libc::mmap(
            std::ptr::null_mut(),
            SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            RW,
            0,
        );
        ensure!(shared != libc::MAP_FAILED, "mmap: errno {}", errno());
        let m = libc::open(mapped.as_ptr(), libc::O_RDONLY);
        let private = libc::mmap(
            std::ptr::null_mut(),
            8192,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            m,
            0,
        );
        ensure!(m >= 0 && private != libc::MAP_FAILED, "map `mapped`");
        ensure!(libc::close(m) == 0, "close");
        ensure!(
            libc::unlink(gone.as_ptr()) == 0 && libc::unlink(mapped.as_ptr()) == 0,
            "unlink"
        );
        Ok((shared.cast(), private.cast()))
    }
}

fn check_file(c: &Child) -> Verdict {
    let gone = c.path("gone");
    let mut want = [0u8; 512];
    let g = gone.as_bytes();
    want[..g.len()].copy_from_slice(g);
    want[g.len()..g.len() + 10].copy_from_slice(b" (deleted)");
    let want = &want[..g.len() + 10];
    for (fd, path) in [(RW, c"/proc/self/fd/22"), (RO, c"/proc/self/fd/23")] {
        let mut buf = [0u8; 512];
        // SAFETY: a NUL-terminated path and a buffer of its size.
        let n = unsafe { libc::readlink(path.as_ptr(), buf.as_mut_ptr().cast(), 512) };
        ensure!(n > 0 && &buf[..n as usize] == want, "fd {fd} link differs");
    }
    check_flags(RW, false, false)?;
    check_flags(RO, false, true)?;
    // SAFETY: raw calls on our own fds, buffers of the sizes given.
    unsafe {
        ensure!(
            libc::access(gone.as_ptr(), libc::F_OK) != 0,
            "the name came back"
        );
        let mut st: libc::stat = std::mem::zeroed();
        ensure!(libc::fstat(RW, &mut st) == 0, "fstat");
        ensure!(st.st_nlink == 0, "links: {}", st.st_nlink);
        ensure!(st.st_size == SIZE as i64, "size {}", st.st_size);
        ensure!(st.st_mode & 0o7777 == 0o640, "mode {:o}", st.st_mode);
        ensure!(
            libc::fcntl(RO, libc::F_GETFL) & libc::O_ACCMODE == 0,
            "fd 23 mode"
        );
        ensure!(
            libc::fcntl(RW, libc::F_GETFL) & libc::O_ACCMODE == 2,
            "fd 22 mode"
        );
        ensure!(libc::lseek(RW, 0, libc::SEEK_CUR) == 4, "position of fd 22");
        ensure!(libc::lseek(RO, 0, libc::SEEK_CUR) == 2, "position of fd 23");
        let data = libc::lseek(RO, 4096, libc::SEEK_DATA);
        ensure!(data == FAR as i64, "the hole ends at {data}");
        let mut head = [0u8; 10];
        ensure!(
            libc::pread(RO, head.as_mut_ptr().cast(), 10, 0) == 10,
            "read"
        );
        ensure!(&head == b"ghost data", "head {head:?}");
        let mut far = [0u8; 100];
        ensure!(
            libc::pread(RO, far.as_mut_ptr().cast(), 100, FAR as i64) == 100,
            "read far"
        );
        for (i, b) in far.iter().enumerate() {
            ensure!(*b == pattern(i), "byte {i} after 64 KiB is {b}");
        }
    }
    Ok(())
}

fn check_maps(shared: *mut u8, private: *const u8) -> Verdict {
    // SAFETY: our own mappings of the sizes set up.
    unsafe {
        ensure!(
            *shared.add(1) == b'h' && *shared.add(FAR + 2) == pattern(2),
            "shared map"
        );
        ensure!(
            libc::pwrite(RW, c"W".as_ptr().cast(), 1, 500) == 1,
            "pwrite"
        );
        ensure!(
            *shared.add(500) == b'W',
            "a write through fd 22 is not in the mapping"
        );
        *shared.add(600) = b'V';
        let mut b = [0u8; 1];
        ensure!(
            libc::pread(RO, b.as_mut_ptr().cast(), 1, 600) == 1 && b[0] == b'V',
            "map -> fd 23"
        );
        for i in [0usize, 1, 4095, 4096, 8191] {
            ensure!(*private.add(i) == (i % 251) as u8, "private map byte {i}");
        }
    }
    Ok(())
}

pub fn victim(c: &Child) -> Verdict {
    let (shared, private) = setup(c)?;
    c.ready(b"");
    c.wait_go();
    check_file(c)?;
    check_maps(shared, private)
}
