//! The memory victim: a 32 MiB anonymous region (pattern pages, pages never
//! touched, pages written and zeroed again), a read-only region, a PROT_NONE
//! region holding data, a private file mapping with changed pages, a shared
//! file mapping whose writes reach the file, a malloc'd buffer, the program
//! break and a stack array. After go it checks every byte against the
//! pattern functions and the protections against /proc/self/maps.

use std::ffi::CStr;
use std::path::Path;

use crate::common::victim::{Child, Msg, Verdict, maps_perms};

const PAGE: usize = 4096;
const BIG_PAGES: usize = 8192;
const RO_PAGES: usize = 16;
const NONE_PAGES: usize = 8;
const FILE_PAGES: usize = 4;
const HEAP_BYTES: usize = 64 * 1024;
const STACK_WORDS: usize = 1024;
const PRIVATE: &str = "private.bin";
const SHARED: &str = "shared.bin";

/// Word `i` of page `page` of the region tagged `tag`.
fn word(tag: u64, page: usize, i: usize) -> u64 {
    (tag << 56) ^ ((page as u64) << 20) ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// The byte at `off` of the files the test writes.
fn file_byte(off: usize) -> u8 {
    (off.wrapping_mul(7) + 3) as u8
}

/// Big-region pages of class 5 are never touched, of class 6 zeroed again.
fn big_class(page: usize) -> usize {
    page % 8
}

pub fn prepare(dir: &Path) {
    let bytes: Vec<u8> = (0..FILE_PAGES * PAGE).map(file_byte).collect();
    std::fs::write(dir.join(PRIVATE), &bytes).unwrap();
    std::fs::write(dir.join(SHARED), vec![0u8; 2 * PAGE]).unwrap();
}

/// The big region's address from the victim's ready text.
pub fn big_region(ready: &str) -> usize {
    let hex = ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("big="));
    usize::from_str_radix(hex.expect("big= in the ready text"), 16).unwrap()
}

fn map(len: usize, prot: i32, flags: i32, fd: i32) -> Result<*mut u64, Msg> {
    // SAFETY: a fresh mapping chosen by the kernel.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, 0) };
    ensure!(p != libc::MAP_FAILED, "mmap of {len} bytes");
    Ok(p.cast())
}

fn anon(len: usize) -> Result<*mut u64, Msg> {
    map(
        len,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
    )
}

/// Fills `pages` pages at `p` with the pattern of `tag`.
fn fill(p: *mut u64, tag: u64, pages: std::ops::Range<usize>) {
    for page in pages {
        for i in 0..PAGE / 8 {
            // SAFETY: the callers pass pages inside their mapping.
            unsafe {
                p.add(page * PAGE / 8 + i)
                    .write_volatile(word(tag, page, i))
            };
        }
    }
}

/// The first page in `pages` at `p` that differs from the pattern of `tag`.
fn bad_page(p: *const u64, tag: u64, pages: std::ops::Range<usize>) -> Option<usize> {
    pages.into_iter().find(|&page| {
        (0..PAGE / 8).any(|i| {
            // SAFETY: the callers pass readable pages inside their mapping.
            unsafe { p.add(page * PAGE / 8 + i).read_volatile() != word(tag, page, i) }
        })
    })
}

fn zero_page(p: *const u64, page: usize) -> bool {
    // SAFETY: the page is inside the caller's readable mapping.
    (0..PAGE / 8).all(|i| unsafe { p.add(page * PAGE / 8 + i).read_volatile() } == 0)
}

fn open(path: &CStr, flags: i32) -> Result<i32, Msg> {
    // SAFETY: a live path.
    let fd = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) };
    ensure!(fd >= 0, "open {path:?}");
    Ok(fd)
}

fn pread_page(fd: i32, page: usize, buf: &mut [u8; PAGE]) -> bool {
    // SAFETY: buf is a live page-sized buffer.
    let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), PAGE, (page * PAGE) as i64) };
    n == PAGE as isize
}

/// Everything the victim mapped, by address.
struct Regions {
    big: *mut u64,
    ro: *mut u64,
    none: *mut u64,
    private: *mut u64,
    shared: *mut u64,
    shared_fd: i32,
    private_fd: i32,
    heap: *mut u64,
    brk: usize,
    anon_shared: *mut u64,
    alias: *mut u64,
}

/// Pages of the shared anonymous object (the last one never touched).
const SHM_PAGES: usize = 4;

/// A MAP_SHARED|MAP_ANONYMOUS object and a second mapping of the same
/// object (mremap with old size 0 duplicates a shared mapping): a write
/// through one must show through the other.
fn shared_anon() -> Result<(*mut u64, *mut u64), Msg> {
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let a = map(
        SHM_PAGES * PAGE,
        rw,
        libc::MAP_SHARED | libc::MAP_ANONYMOUS,
        -1,
    )?;
    fill(a, 9, 0..SHM_PAGES - 1);
    // SAFETY: duplicates this victim's own shared mapping elsewhere.
    let b = unsafe { libc::mremap(a.cast(), 0, SHM_PAGES * PAGE, libc::MREMAP_MAYMOVE) };
    ensure!(b != libc::MAP_FAILED, "mremap alias");
    Ok((a, b.cast()))
}

fn check_shared_anon(r: &Regions) -> Verdict {
    for p in [r.anon_shared, r.alias] {
        let perms = maps_perms(p as usize);
        ensure!(
            perms == Some(*b"rw-s"),
            "shared anonymous memory maps as {perms:?}"
        );
        ensure!(
            bad_page(p, 9, 0..SHM_PAGES - 1).is_none(),
            "shared anonymous page differs"
        );
        ensure!(
            zero_page(p, SHM_PAGES - 1),
            "untouched shared anonymous page is not zero"
        );
    }
    fill(r.anon_shared, 10, SHM_PAGES - 1..SHM_PAGES);
    ensure!(
        bad_page(r.alias, 10, SHM_PAGES - 1..SHM_PAGES).is_none(),
        "the two mappings of one shared object are no longer shared"
    );
    Ok(())
}

fn setup(c: &Child) -> Result<Regions, Msg> {
    let big = anon(BIG_PAGES * PAGE)?;
    for page in 0..BIG_PAGES {
        match big_class(page) {
            5 => {}
            6 => {
                fill(big, 1, page..page + 1);
                // SAFETY: the page is inside the region.
                unsafe { std::ptr::write_bytes(big.add(page * PAGE / 8), 0, PAGE / 8) };
            }
            _ => fill(big, 1, page..page + 1),
        }
    }
    let ro = anon(RO_PAGES * PAGE)?;
    fill(ro, 2, 0..RO_PAGES);
    let none = anon(NONE_PAGES * PAGE)?;
    fill(none, 3, 0..NONE_PAGES);
    // SAFETY: protections of this victim's own fresh mappings.
    unsafe {
        ensure!(
            libc::mprotect(ro.cast(), RO_PAGES * PAGE, libc::PROT_READ) == 0,
            "mprotect ro"
        );
        ensure!(
            libc::mprotect(none.cast(), NONE_PAGES * PAGE, libc::PROT_NONE) == 0,
            "mprotect none"
        );
    }
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let private_fd = open(&c.path(PRIVATE), libc::O_RDWR)?;
    let private = map(FILE_PAGES * PAGE, rw, libc::MAP_PRIVATE, private_fd)?;
    fill(private, 4, 1..2);
    fill(private, 4, 3..4);
    let shared_fd = open(&c.path(SHARED), libc::O_RDWR)?;
    let shared = map(2 * PAGE, rw, libc::MAP_SHARED, shared_fd)?;
    fill(shared, 5, 0..1);
    // SAFETY: a plain allocation, checked for null.
    let heap = unsafe { libc::malloc(HEAP_BYTES) }.cast::<u64>();
    ensure!(!heap.is_null(), "malloc");
    fill(heap, 6, 0..HEAP_BYTES / PAGE);
    // SAFETY: brk(0) only queries the break.
    let brk = unsafe { libc::syscall(libc::SYS_brk, 0usize) } as usize;
    let (anon_shared, alias) = shared_anon()?;
    Ok(Regions {
        big,
        ro,
        none,
        private,
        shared,
        shared_fd,
        private_fd,
        heap,
        brk,
        anon_shared,
        alias,
    })
}

fn check_big(r: &Regions) -> Verdict {
    for page in 0..BIG_PAGES {
        let ok = match big_class(page) {
            5 | 6 => zero_page(r.big, page),
            _ => bad_page(r.big, 1, page..page + 1).is_none(),
        };
        ensure!(
            ok,
            "big region page {page} (class {}) differs",
            big_class(page)
        );
    }
    Ok(())
}

fn check_protected(r: &Regions) -> Verdict {
    let perms = maps_perms(r.ro as usize);
    ensure!(
        perms == Some(*b"r--p"),
        "read-only region maps as {perms:?}"
    );
    if let Some(p) = bad_page(r.ro, 2, 0..RO_PAGES) {
        ensure!(false, "read-only region page {p} differs");
    }
    let perms = maps_perms(r.none as usize);
    ensure!(
        perms == Some(*b"---p"),
        "PROT_NONE region maps as {perms:?}"
    );
    // SAFETY: this victim's own mapping.
    let ok = unsafe { libc::mprotect(r.none.cast(), NONE_PAGES * PAGE, libc::PROT_READ) } == 0;
    ensure!(ok, "mprotect of the PROT_NONE region");
    if let Some(p) = bad_page(r.none, 3, 0..NONE_PAGES) {
        ensure!(false, "PROT_NONE region page {p} differs");
    }
    Ok(())
}

fn check_files(r: &Regions) -> Verdict {
    let mut buf = [0u8; PAGE];
    for page in [0, 2] {
        // SAFETY: inside the private mapping.
        let got = unsafe {
            std::slice::from_raw_parts(r.private.add(page * PAGE / 8).cast::<u8>(), PAGE)
        };
        let same = got
            .iter()
            .enumerate()
            .all(|(i, &b)| b == file_byte(page * PAGE + i));
        ensure!(
            same,
            "private file mapping page {page} differs from the file"
        );
    }
    ensure!(
        bad_page(r.private, 4, 1..2).is_none(),
        "private file mapping page 1 lost its change"
    );
    ensure!(
        bad_page(r.private, 4, 3..4).is_none(),
        "private file mapping page 3 lost its change"
    );
    ensure!(pread_page(r.private_fd, 1, &mut buf), "pread private.bin");
    let same = buf
        .iter()
        .enumerate()
        .all(|(i, &b)| b == file_byte(PAGE + i));
    ensure!(same, "a private mapping's change reached private.bin");
    ensure!(
        bad_page(r.shared, 5, 0..1).is_none(),
        "shared file mapping page 0 differs"
    );
    ensure!(pread_page(r.shared_fd, 0, &mut buf), "pread shared.bin");
    // SAFETY: buf is a page, read as words.
    let words = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u64>(), PAGE / 8) };
    ensure!(
        words.iter().enumerate().all(|(i, &w)| w == word(5, 0, i)),
        "shared.bin lacks the pre-dump writes"
    );
    // A write now must reach the file: the mapping is the file's, not a copy.
    fill(r.shared, 7, 1..2);
    // SAFETY: this victim's own mapping.
    unsafe { libc::msync(r.shared.cast(), 2 * PAGE, libc::MS_SYNC) };
    ensure!(pread_page(r.shared_fd, 1, &mut buf), "pread shared.bin");
    // SAFETY: as above.
    let words = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u64>(), PAGE / 8) };
    ensure!(
        words.iter().enumerate().all(|(i, &w)| w == word(7, 1, i)),
        "a write to the shared mapping did not reach shared.bin"
    );
    Ok(())
}

pub fn victim(c: &Child) -> Verdict {
    let r = setup(c)?;
    let mut stack = [0u64; STACK_WORDS];
    for (i, w) in stack.iter_mut().enumerate() {
        *w = word(8, 0, i);
    }
    std::hint::black_box(&mut stack);
    c.ready(Msg::new(format_args!("big={:x}\n", r.big as usize)).bytes());
    c.wait_go();
    check_big(&r)?;
    check_protected(&r)?;
    check_files(&r)?;
    check_shared_anon(&r)?;
    ensure!(
        bad_page(r.heap, 6, 0..HEAP_BYTES / PAGE).is_none(),
        "malloc'd buffer differs"
    );
    // SAFETY: brk(0) only queries the break.
    let brk = unsafe { libc::syscall(libc::SYS_brk, 0usize) } as usize;
    ensure!(brk == r.brk, "program break {brk:#x}, was {:#x}", r.brk);
    let stack = std::hint::black_box(&stack);
    let bad = stack
        .iter()
        .enumerate()
        .position(|(i, &w)| w != word(8, 0, i));
    ensure!(bad.is_none(), "stack array word {bad:?} differs");
    Ok(())
}
