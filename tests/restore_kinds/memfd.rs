//! The memfd victim: memfd `crest-buf` (fd 20, O_RDWR, position 7) of
//! 1 MiB + 100 bytes holding "hello" at 0 and a pattern at 512 KiB with
//! holes between, sealed against growing and shrinking, mapped shared at
//! one address; a second open of it (fd 21, O_RDONLY, position 3, close-on-
//! exec); and memfd `only-mapped`, whose fd is closed, mapped shared with
//! bytes written through the mapping.
//!
//! After go: names (links), size, seals, holes (SEEK_DATA), contents,
//! flags and positions are as before; a write through fd 20 shows in the
//! mapping and a write to the mapping is read through fd 21 (one object);
//! growing is refused by the seal; the only-mapped memfd keeps its bytes
//! and its name in /proc/self/maps.

use std::path::Path;

use crate::common::victim::{Child, Verdict, read_file};
use crate::raw::{check_flags, errno, place};

const BUF: i32 = 20;
const RO: i32 = 21;
const SIZE: usize = (1 << 20) + 100;
const FAR: usize = 512 << 10;
const SEALS: i32 = libc::F_SEAL_GROW | libc::F_SEAL_SHRINK;

pub fn prepare(_dir: &Path) {}

fn pattern(i: usize) -> u8 {
    (i * 7 + 3) as u8
}

/// The two memfds, their mappings and fds; returns (buf map, only map).
fn setup() -> Result<(*mut u8, *mut u8), crate::common::victim::Msg> {
    // SAFETY: raw calls on our own fds and fresh mappings.
    unsafe {
        let m = libc::memfd_create(c"crest-buf".as_ptr(), libc::MFD_ALLOW_SEALING);
        place(m, BUF, false)?;
        ensure!(libc::ftruncate(BUF, SIZE as i64) == 0, "ftruncate");
        ensure!(
            libc::pwrite(BUF, c"hello".as_ptr().cast(), 5, 0) == 5,
            "write"
        );
        let mut far = [0u8; 5000];
        for (i, b) in far.iter_mut().enumerate() {
            *b = pattern(i);
        }
        let n = libc::pwrite(BUF, far.as_ptr().cast(), far.len(), FAR as i64);
        ensure!(n == far.len() as isize, "write far");
        ensure!(libc::fcntl(BUF, libc::F_ADD_SEALS, SEALS) == 0, "seal");
        ensure!(libc::lseek(BUF, 7, libc::SEEK_SET) == 7, "seek");
        let map = libc::mmap(
            std::ptr::null_mut(),
            SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            BUF,
            0,
        );
        ensure!(map != libc::MAP_FAILED, "mmap: errno {}", errno());
        let ro = libc::open(c"/proc/self/fd/20".as_ptr(), libc::O_RDONLY);
        place(ro, RO, true)?;
        ensure!(libc::lseek(RO, 3, libc::SEEK_SET) == 3, "seek ro");
        let only = libc::memfd_create(c"only-mapped".as_ptr(), 0);
        ensure!(only >= 0 && libc::ftruncate(only, 8192) == 0, "only");
        let omap = libc::mmap(
            std::ptr::null_mut(),
            8192,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            only,
            0,
        );
        ensure!(
            omap != libc::MAP_FAILED && libc::close(only) == 0,
            "only map"
        );
        let omap = omap.cast::<u8>();
        *omap.add(4100) = 0x5a;
        Ok((map.cast(), omap))
    }
}

fn check_link(fd: i32, want: &[u8]) -> Verdict {
    let mut buf = [0u8; 64];
    let path = [b"/proc/self/fd/20\0", b"/proc/self/fd/21\0"][(fd - BUF) as usize];
    // SAFETY: a NUL-terminated path and a buffer of its size.
    let n = unsafe { libc::readlink(path.as_ptr().cast(), buf.as_mut_ptr().cast(), 64) };
    ensure!(
        n > 0 && &buf[..n as usize] == want,
        "fd {fd} link: {:?}",
        std::str::from_utf8(&buf[..n.max(0) as usize])
    );
    Ok(())
}

fn check_object() -> Verdict {
    check_link(BUF, b"/memfd:crest-buf (deleted)")?;
    check_link(RO, b"/memfd:crest-buf (deleted)")?;
    check_flags(BUF, false, false)?;
    check_flags(RO, false, true)?;
    // SAFETY: raw calls on our own fds, buffers of the sizes given.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        ensure!(libc::fstat(BUF, &mut st) == 0, "fstat");
        ensure!(st.st_size == SIZE as i64, "size {}", st.st_size);
        let seals = libc::fcntl(BUF, libc::F_GET_SEALS);
        ensure!(seals == SEALS, "seals {seals:#x}");
        ensure!(
            libc::fcntl(RO, libc::F_GETFL) & libc::O_ACCMODE == 0,
            "fd 21 not O_RDONLY"
        );
        ensure!(
            libc::lseek(BUF, 0, libc::SEEK_CUR) == 7,
            "position of fd 20"
        );
        ensure!(libc::lseek(RO, 0, libc::SEEK_CUR) == 3, "position of fd 21");
        let data = libc::lseek(BUF, 4096, libc::SEEK_DATA);
        ensure!(data == FAR as i64, "the hole after page 0 ends at {data}");
        let mut head = [0u8; 5];
        ensure!(
            libc::pread(RO, head.as_mut_ptr().cast(), 5, 0) == 5,
            "read head"
        );
        ensure!(&head == b"hello", "head {head:?}");
        let mut far = [0u8; 5000];
        let n = libc::pread(RO, far.as_mut_ptr().cast(), far.len(), FAR as i64);
        ensure!(n == far.len() as isize, "read far");
        for (i, b) in far.iter().enumerate() {
            ensure!(*b == pattern(i), "byte {i} after 512 KiB is {b}");
        }
        ensure!(
            libc::ftruncate(BUF, 2 << 20) != 0,
            "grew despite F_SEAL_GROW"
        );
        libc::lseek(BUF, 7, libc::SEEK_SET);
    }
    Ok(())
}

fn check_coherence(map: *mut u8, only: *mut u8) -> Verdict {
    // SAFETY: both mappings are ours, of the sizes set up.
    unsafe {
        ensure!(
            *map == b'h' && *map.add(FAR + 1) == pattern(1),
            "mapping contents"
        );
        ensure!(
            libc::pwrite(BUF, c"XYZ".as_ptr().cast(), 3, 100) == 3,
            "pwrite"
        );
        ensure!(
            *map.add(100) == b'X' && *map.add(102) == b'Z',
            "a write through fd 20 does not show in the mapping: two objects"
        );
        *map.add(200) = b'Q';
        let mut b = [0u8; 1];
        ensure!(libc::pread(RO, b.as_mut_ptr().cast(), 1, 200) == 1, "pread");
        ensure!(
            b[0] == b'Q',
            "a write to the mapping does not show in fd 21"
        );
        ensure!(
            *only.add(4100) == 0x5a && *only == 0,
            "only-mapped contents"
        );
    }
    let mut maps = [0u8; 16384];
    let text = read_file(c"/proc/self/maps", &mut maps);
    let want = b"/memfd:only-mapped (deleted)";
    ensure!(
        text.windows(want.len()).any(|w| w == want),
        "only-mapped memfd lost its name"
    );
    Ok(())
}

pub fn victim(c: &Child) -> Verdict {
    let (map, only) = setup()?;
    c.ready(b"");
    c.wait_go();
    check_object()?;
    check_coherence(map, only)
}
