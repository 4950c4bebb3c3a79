//! The sealed-memfd victim: two memfds whose fds are closed, each only
//! mapped shared. `sealed-ro` (8 KiB, "sealed bytes" at 0, 0xa5 at 5000)
//! is sealed against writing, growing, shrinking and more seals, then
//! mapped read-only; `sealed-rw` (10000 bytes, not a page multiple, mode
//! 0600) is sealed against growing and shrinking and mapped read-write
//! over 12 KiB, with bytes written through the mapping.
//!
//! After go, through a file opened on each mapping's
//! `/proc/self/map_files/START-END`: the seals (F_GET_SEALS), the size and
//! mode are as before; the seals still act (mprotect to PROT_WRITE of the
//! write-sealed mapping fails, ftruncate larger of `sealed-rw` fails); the
//! contents are as before, and a write to the read-write mapping is read
//! through the reopened file (one object).

use std::path::Path;

use crate::common::victim::{Child, Msg, Verdict};
use crate::raw::errno;

const PAGE: usize = 4096;
const RO_LEN: usize = 2 * PAGE;
const RW_SIZE: i64 = 10_000;
const RW_LEN: usize = 3 * PAGE;
const RO_SEALS: i32 =
    libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
const RW_SEALS: i32 = libc::F_SEAL_GROW | libc::F_SEAL_SHRINK;

pub fn prepare(_dir: &Path) {}

/// A memfd named `name` of `size` bytes, mode 0600, holding "sealed
/// bytes" at 0 and 0xa5 at 5000, sealed with `seals`, mapped shared with
/// `prot` over `len` bytes; its fd closed.
fn sealed(
    name: &std::ffi::CStr,
    size: i64,
    seals: i32,
    prot: i32,
    len: usize,
) -> Result<*mut u8, Msg> {
    // SAFETY: raw calls on a fresh fd of ours and a fresh mapping.
    unsafe {
        let fd = libc::memfd_create(name.as_ptr(), libc::MFD_ALLOW_SEALING);
        ensure!(fd >= 0, "memfd_create: errno {}", errno());
        ensure!(libc::ftruncate(fd, size) == 0, "ftruncate");
        ensure!(
            libc::pwrite(fd, c"sealed bytes".as_ptr().cast(), 12, 0) == 12,
            "write"
        );
        ensure!(
            libc::pwrite(fd, [0xa5u8].as_ptr().cast(), 1, 5000) == 1,
            "write far"
        );
        ensure!(libc::fchmod(fd, 0o600) == 0, "fchmod");
        ensure!(
            libc::fcntl(fd, libc::F_ADD_SEALS, seals) == 0,
            "seal: errno {}",
            errno()
        );
        let map = libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd, 0);
        ensure!(map != libc::MAP_FAILED, "mmap: errno {}", errno());
        ensure!(libc::close(fd) == 0, "close");
        Ok(map.cast())
    }
}

/// Opens the object behind the mapping at `map` of `len` bytes.
fn reopen(map: *mut u8, len: usize, flags: i32) -> Result<i32, Msg> {
    let (start, end) = (map as usize, map as usize + len);
    let path = Msg::new(format_args!("/proc/self/map_files/{start:x}-{end:x}\0"));
    // SAFETY: a NUL-terminated path.
    let fd = unsafe { libc::open(path.bytes().as_ptr().cast(), flags | libc::O_CLOEXEC) };
    ensure!(fd >= 0, "open {}: errno {}", path.as_str(), errno());
    Ok(fd)
}

/// The seals, size and mode of the file `fd`.
fn check_file(fd: i32, what: &str, seals: i32, size: i64) -> Verdict {
    // SAFETY: fcntl and fstat on our own fd into a local.
    unsafe {
        let got = libc::fcntl(fd, libc::F_GET_SEALS);
        ensure!(got == seals, "{what}: seals {got:#x}, not {seals:#x}");
        let mut st: libc::stat = std::mem::zeroed();
        ensure!(libc::fstat(fd, &mut st) == 0, "fstat");
        ensure!(st.st_size == size, "{what}: size {}", st.st_size);
        ensure!(
            st.st_mode & 0o7777 == 0o600,
            "{what}: mode {:o}",
            st.st_mode
        );
    }
    Ok(())
}

fn check_ro(map: *mut u8) -> Verdict {
    let fd = reopen(map, RO_LEN, libc::O_RDONLY)?;
    check_file(fd, "sealed-ro", RO_SEALS, RO_LEN as i64)?;
    // SAFETY: our own mapping of RO_LEN bytes and our own fd.
    unsafe {
        let head = std::slice::from_raw_parts(map, 12);
        ensure!(head == b"sealed bytes", "sealed-ro contents");
        ensure!(*map.add(5000) == 0xa5, "sealed-ro byte 5000");
        let r = libc::mprotect(map.cast(), RO_LEN, libc::PROT_READ | libc::PROT_WRITE);
        ensure!(r != 0, "the write-sealed mapping became writable");
        libc::close(fd);
    }
    Ok(())
}

fn check_rw(map: *mut u8) -> Verdict {
    let fd = reopen(map, RW_LEN, libc::O_RDWR)?;
    check_file(fd, "sealed-rw", RW_SEALS, RW_SIZE)?;
    // SAFETY: our own mapping of RW_LEN bytes (written below the size
    // only) and our own fd.
    unsafe {
        ensure!(
            *map.add(6000) == 0x3c && *map.add(5000) == 0xa5,
            "sealed-rw contents"
        );
        ensure!(
            libc::ftruncate(fd, 2 * RW_SIZE) != 0,
            "sealed-rw grew despite F_SEAL_GROW"
        );
        *map.add(7000) = 0x77;
        let mut b = [0u8; 1];
        ensure!(
            libc::pread(fd, b.as_mut_ptr().cast(), 1, 7000) == 1,
            "pread"
        );
        ensure!(
            b[0] == 0x77,
            "a write to the mapping is not in the reopened file"
        );
        libc::close(fd);
    }
    Ok(())
}

pub fn victim(c: &Child) -> Verdict {
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    let ro = sealed(
        c"sealed-ro",
        RO_LEN as i64,
        RO_SEALS,
        libc::PROT_READ,
        RO_LEN,
    )?;
    let rw = sealed(c"sealed-rw", RW_SIZE, RW_SEALS, prot, RW_LEN)?;
    // SAFETY: inside the first page past byte 5000, below the size.
    unsafe { *rw.add(6000) = 0x3c };
    c.ready(b"");
    c.wait_go();
    check_ro(ro)?;
    check_rw(rw)
}
