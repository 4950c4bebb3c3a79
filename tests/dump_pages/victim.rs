//! A victim with known memory for the page dump tests and benchmark: a
//! forked child that fills regions with a pattern computed from (region,
//! page, word), reports the regions' addresses through a shared page, and
//! keeps checking its own memory against the pattern while it runs.
//!
//! ```text
//!   slot 0 ready   1 self-check failures   2 self-checks done
//!        3 anon    4 file    5 read-only    6 PROT_NONE    7 big
//!        8 huge (a PMD-aligned, MADV_HUGEPAGE range only read: THP maps
//!          the huge zero page there)                          (addresses)
//! ```
//!
//! The anon region's page `p` is, by `p % 8`: 7 never touched, 6 only read
//! (the kernel maps its zero page), 5 written then zeroed, else the pattern.
//! The private file mapping's even pages of the first half are written
//! (copied on write), its odd ones only read (page cache), the rest never
//! touched. The child runs after a fork from the threaded test harness, so
//! it keeps to raw libc calls and never allocates.

#![allow(dead_code)]

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

pub const READY: usize = 0;
pub const FAILURES: usize = 1;
pub const CHECKS: usize = 2;
pub const ANON: usize = 3;
pub const FILE: usize = 4;
pub const RO: usize = 5;
pub const NONE: usize = 6;
pub const BIG: usize = 7;
/// A PMD-aligned range advised MADV_HUGEPAGE and only read.
pub const HUGE: usize = 8;

pub const ANON_PAGES: u64 = 1024;
pub const FILE_PAGES: u64 = 16;
pub const RO_PAGES: u64 = 8;
pub const NONE_PAGES: u64 = 4;

/// Region numbers in the pattern.
pub const R_ANON: u64 = 1;
pub const R_FILE: u64 = 2;
pub const R_RO: u64 = 3;
pub const R_NONE: u64 = 4;
/// The file's own content (what the page cache holds).
pub const R_FILE_DISK: u64 = 5;

/// What the dump must find at a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Not in the image.
    Absent,
    /// A zero run.
    Zero,
    /// Stored, with the pattern of (region, page).
    Pattern(u64, u64),
    /// Stored, all zero bytes.
    Zeroes,
}

pub enum Mode {
    /// The regions above; the file (FILE_PAGES long, R_FILE_DISK content)
    /// is mapped private from this fd.
    Patterns(RawFd),
    /// `pages` touched anonymous pages (the page index in each first word).
    Big(u64),
}

/// The pattern's word `i` of `page` in `region` (splitmix64).
pub fn word(region: u64, page: u64, i: u64) -> u64 {
    let mut z = (region << 48 ^ page << 16 ^ i).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub fn page_size() -> u64 {
    crest::sys::mm::page_size() as u64
}

/// A whole page of the pattern, for the file's content and comparisons.
pub fn pattern_page(region: u64, page: u64) -> Vec<u8> {
    (0..page_size() / 8)
        .flat_map(|i| word(region, page, i).to_ne_bytes())
        .collect()
}

pub fn anon_expect(page: u64) -> Expect {
    match page % 8 {
        7 => Expect::Absent,
        6 => Expect::Zero,
        5 => Expect::Zeroes,
        _ => Expect::Pattern(R_ANON, page),
    }
}

pub fn file_expect(page: u64) -> Expect {
    match page {
        p if p < FILE_PAGES / 2 && p % 2 == 0 => Expect::Pattern(R_FILE, p),
        _ => Expect::Absent,
    }
}

fn words(addr: u64, page: u64) -> *mut u64 {
    (addr + page * page_size()) as *mut u64
}

fn fill(addr: u64, region: u64, page: u64) {
    let w = words(addr, page);
    for i in 0..page_size() / 8 {
        // SAFETY: the page is mapped read-write by the child.
        unsafe { w.add(i as usize).write_volatile(word(region, page, i)) };
    }
}

fn matches(addr: u64, region: u64, page: u64) -> bool {
    let w = words(addr, page);
    // SAFETY: the page is mapped readable by the child.
    (0..page_size() / 8)
        .all(|i| unsafe { w.add(i as usize).read_volatile() } == word(region, page, i))
}

fn zeroes(addr: u64, page: u64) -> bool {
    let w = words(addr, page);
    // SAFETY: as in matches().
    (0..page_size() / 8).all(|i| unsafe { w.add(i as usize).read_volatile() } == 0)
}

fn map(pages: u64, prot: i32, flags: i32, fd: RawFd) -> u64 {
    // SAFETY: a fresh mapping at a kernel-chosen address.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            (pages * page_size()) as usize,
            prot,
            flags,
            fd,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    // SAFETY: the range just mapped; no huge pages, so untouched pages stay absent.
    unsafe { libc::madvise(p, (pages * page_size()) as usize, libc::MADV_NOHUGEPAGE) };
    p as u64
}

const RW: i32 = libc::PROT_READ | libc::PROT_WRITE;
const ANON_PRIV: i32 = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;

fn setup_patterns(page: *mut u64, fd: RawFd) {
    let anon = map(ANON_PAGES, RW, ANON_PRIV, -1);
    for p in 0..ANON_PAGES {
        match anon_expect(p) {
            Expect::Zero => {
                // SAFETY: mapped; the read maps the zero page.
                let _ = unsafe { words(anon, p).read_volatile() };
            }
            Expect::Zeroes => {
                fill(anon, R_ANON, p);
                // SAFETY: mapped read-write, one page.
                unsafe {
                    std::ptr::write_bytes(words(anon, p).cast::<u8>(), 0, page_size() as usize)
                };
            }
            Expect::Pattern(r, p) => fill(anon, r, p),
            Expect::Absent => {}
        }
    }
    let file = map(FILE_PAGES, RW, libc::MAP_PRIVATE, fd);
    for p in 0..FILE_PAGES / 2 {
        if p % 2 == 0 {
            fill(file, R_FILE, p);
        } else {
            // SAFETY: mapped; the read maps the page-cache page.
            let _ = unsafe { words(file, p).read_volatile() };
        }
    }
    let ro = map(RO_PAGES, RW, ANON_PRIV, -1);
    let none = map(NONE_PAGES, RW, ANON_PRIV, -1);
    (0..RO_PAGES).for_each(|p| fill(ro, R_RO, p));
    (0..NONE_PAGES).for_each(|p| fill(none, R_NONE, p));
    // SAFETY: the regions just mapped.
    unsafe {
        libc::mprotect(
            ro as *mut _,
            (RO_PAGES * page_size()) as usize,
            libc::PROT_READ,
        );
        libc::mprotect(
            none as *mut _,
            (NONE_PAGES * page_size()) as usize,
            libc::PROT_NONE,
        );
    }
    let huge = map_huge_read();
    for (slot, v) in [
        (ANON, anon),
        (FILE, file),
        (RO, ro),
        (NONE, none),
        (HUGE, huge),
    ] {
        set(page, slot, v);
    }
}

/// Bytes one PMD maps: page_size / 8 pages.
pub fn pmd_size() -> u64 {
    page_size() * (page_size() / 8)
}

/// Maps two PMDs, advises huge pages, reads the first byte of the aligned
/// PMD inside; returns that PMD's address.
fn map_huge_read() -> u64 {
    let len = (2 * pmd_size()) as usize;
    // SAFETY: a fresh mapping at a kernel-chosen address.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, RW, ANON_PRIV, -1, 0) };
    assert_ne!(p, libc::MAP_FAILED);
    // SAFETY: the range just mapped.
    unsafe { libc::madvise(p, len, libc::MADV_HUGEPAGE) };
    let aligned = (p as u64).next_multiple_of(pmd_size());
    // SAFETY: aligned lies inside the mapping (less than a PMD above p).
    let _ = unsafe { (aligned as *const u8).read_volatile() };
    aligned
}

fn check_patterns(page: *mut u64) -> bool {
    let (anon, file, ro) = (get(page, ANON), get(page, FILE), get(page, RO));
    let anon_ok = (0..ANON_PAGES).all(|p| match anon_expect(p) {
        Expect::Pattern(r, p) => matches(anon, r, p),
        Expect::Zeroes => zeroes(anon, p),
        _ => true,
    });
    let file_ok = (0..FILE_PAGES).all(|p| match file_expect(p) {
        Expect::Pattern(r, p) => matches(file, r, p),
        _ => p >= FILE_PAGES / 2 || matches(file, R_FILE_DISK, p),
    });
    anon_ok && file_ok && (0..RO_PAGES).all(|p| matches(ro, R_RO, p))
}

fn check_big(page: *mut u64, pages: u64) -> bool {
    let big = get(page, BIG);
    // SAFETY: every page of the big region is mapped and was written.
    (0..pages).all(|p| unsafe { words(big, p).read_volatile() } == p)
}

fn child(page: *mut u64, mode: Mode) -> ! {
    // SAFETY: plain prctl: the victim dies with the test thread that forked it.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    match mode {
        Mode::Patterns(fd) => setup_patterns(page, fd),
        Mode::Big(pages) => {
            let big = map(pages, RW, ANON_PRIV, -1);
            // SAFETY: mapped read-write.
            (0..pages).for_each(|p| unsafe { words(big, p).write_volatile(p) });
            set(page, BIG, big);
        }
    }
    set(page, READY, 1);
    loop {
        let ok = match mode {
            Mode::Patterns(_) => check_patterns(page),
            Mode::Big(pages) => check_big(page, pages),
        };
        if !ok {
            set(page, FAILURES, get(page, FAILURES) + 1);
        }
        set(page, CHECKS, get(page, CHECKS) + 1);
        // A big victim checks rarely so it leaves the CPUs to what is measured.
        let pause = if matches!(mode, Mode::Big(_)) {
            100_000
        } else {
            1000
        };
        // SAFETY: plain usleep.
        unsafe { libc::usleep(pause) };
    }
}

fn get(page: *mut u64, i: usize) -> u64 {
    assert!(i < 512);
    // SAFETY: the shared page is mapped for the victim's lifetime.
    unsafe { page.add(i).read_volatile() }
}

fn set(page: *mut u64, i: usize, v: u64) {
    assert!(i < 512);
    // SAFETY: as in get().
    unsafe { page.add(i).write_volatile(v) }
}

pub struct Victim {
    pub pid: i32,
    page: *mut u64,
}

impl Victim {
    pub fn spawn(mode: Mode) -> Victim {
        // SAFETY: a fresh shared anonymous page.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                RW,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let page = p.cast::<u64>();
        // SAFETY: the child only runs the victim and never returns.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            child(page, mode);
        }
        let v = Victim { pid, page };
        v.wait_for(READY, 1, Duration::from_secs(60));
        v
    }

    pub fn get(&self, i: usize) -> u64 {
        get(self.page, i)
    }

    pub fn wait_for(&self, i: usize, v: u64, limit: Duration) {
        let t0 = Instant::now();
        while self.get(i) < v {
            assert!(
                t0.elapsed() < limit,
                "victim {}: slot {i} never reached {v}",
                self.pid
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        // SAFETY: our own child; kill and reap it, then unmap the page.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            libc::munmap(self.page.cast(), 4096);
        }
    }
}
