//! The pre-dump victim: a 4 MiB anonymous region whose pages change at
//! every level of a pre-dump chain (some rewritten with the level's
//! pattern, some dropped with MADV_DONTNEED so they read zero again), and,
//! when the test asks (a `vma` file), a mapping that appears, one that
//! grows with mremap, one that shrinks and one that is unmapped between
//! the levels. The test writes `step-K` after the K-th pre-dump; the
//! victim applies change K and answers `stepped-K`. After the final dump
//! and the restore it checks every page against the expected history and
//! every mapping against /proc/self/maps.

use crate::common::victim::{Child, Msg, Verdict, maps_perms, read_file, sleep_ms, write_file};

pub const PAGE: usize = 4096;
/// Pages of the main region.
pub const MAIN_PAGES: usize = 1024;
/// Pages of each of the mappings that change shape.
const SHAPE_PAGES: usize = 16;

/// Word `i` of page `page` as written at level `level` in region `tag`.
fn word(tag: u64, level: u64, page: usize, i: usize) -> u64 {
    (tag << 56) ^ (level << 48) ^ ((page as u64) << 20) ^ (i as u64).wrapping_mul(0x9e37_79b9)
}

/// Level 0 leaves every 11th page untouched.
fn written_at_start(page: usize) -> bool {
    page % 11 != 10
}

/// Change `level` (1..) rewrites these pages of the main region...
pub fn rewritten(page: usize, level: usize) -> bool {
    (page * 7 + level * 13) % 5 == 0
}

/// ... after dropping these (MADV_DONTNEED: they read zero afterwards).
fn dropped(page: usize, level: usize) -> bool {
    (page + level) % 17 == 0
}

/// The level whose pattern page `page` holds after `levels` changes
/// (None: zero).
pub fn expected(page: usize, levels: usize) -> Option<u64> {
    let mut last = written_at_start(page).then_some(0);
    for level in 1..=levels {
        if dropped(page, level) {
            last = None;
        }
        if rewritten(page, level) {
            last = Some(level as u64);
        }
    }
    last
}

fn fill(p: *mut u64, tag: u64, level: u64, page: usize) {
    for i in 0..PAGE / 8 {
        // SAFETY: callers pass a page inside their writable mapping.
        unsafe {
            p.add(page * PAGE / 8 + i)
                .write_volatile(word(tag, level, page, i))
        };
    }
}

/// The first word of `page` that differs from `level`'s pattern (or zero).
fn check_page(p: *const u64, tag: u64, level: Option<u64>, page: usize) -> bool {
    (0..PAGE / 8).all(|i| {
        // SAFETY: callers pass a readable page inside their mapping.
        let got = unsafe { p.add(page * PAGE / 8 + i).read_volatile() };
        got == level.map_or(0, |l| word(tag, l, page, i))
    })
}

fn anon(pages: usize) -> Result<*mut u64, Msg> {
    // SAFETY: a fresh mapping chosen by the kernel.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            pages * PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    ensure!(p != libc::MAP_FAILED, "mmap of {pages} pages");
    // Base pages only: a huge page would make every write dirty 2 MiB.
    // SAFETY: advice on the mapping just made.
    unsafe { libc::madvise(p, pages * PAGE, libc::MADV_NOHUGEPAGE) };
    Ok(p.cast())
}

fn exists(c: &Child, name: &str) -> bool {
    // SAFETY: access only reads the path.
    unsafe { libc::access(c.path(name).as_ptr(), libc::F_OK) == 0 }
}

/// The number in the test's `levels` file.
fn levels(c: &Child) -> usize {
    let mut buf = [0u8; 16];
    let text = read_file(&c.path("levels"), &mut buf);
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// The mappings that change shape (test `vma`).
struct Shapes {
    appears: *mut u64,
    grows: *mut u64,
    grows_pages: usize,
    shrinks: *mut u64,
    goes: *mut u64,
}

fn change_shape(s: &mut Shapes, level: usize) -> Result<(), Msg> {
    match level {
        1 => {
            s.appears = anon(SHAPE_PAGES)?;
            (0..SHAPE_PAGES).for_each(|p| fill(s.appears, 2, 1, p));
        }
        2 => {
            let new = 2 * SHAPE_PAGES;
            // SAFETY: this victim's own mapping, moved if it cannot grow.
            let p = unsafe {
                libc::mremap(
                    s.grows.cast(),
                    SHAPE_PAGES * PAGE,
                    new * PAGE,
                    libc::MREMAP_MAYMOVE,
                )
            };
            ensure!(p != libc::MAP_FAILED, "mremap to grow");
            s.grows = p.cast();
            s.grows_pages = new;
            (SHAPE_PAGES..new).for_each(|p| fill(s.grows, 3, 2, p));
        }
        3 => {
            // SAFETY: the upper half of this victim's own mapping.
            let r = unsafe {
                libc::munmap(
                    s.shrinks.add(SHAPE_PAGES / 2 * PAGE / 8).cast(),
                    SHAPE_PAGES / 2 * PAGE,
                )
            };
            ensure!(r == 0, "munmap to shrink");
        }
        4 => {
            // SAFETY: this victim's own mapping.
            let r = unsafe { libc::munmap(s.goes.cast(), SHAPE_PAGES * PAGE) };
            ensure!(r == 0, "munmap");
        }
        _ => {}
    }
    Ok(())
}

fn check_shapes(s: &Shapes, levels: usize) -> Result<(), Msg> {
    if levels >= 1 {
        let bad = (0..SHAPE_PAGES).find(|&p| !check_page(s.appears, 2, Some(1), p));
        ensure!(bad.is_none(), "new mapping page {bad:?} differs");
    }
    let bad = (0..s.grows_pages).find(|&p| {
        let (tag, level) = if p < SHAPE_PAGES { (3, 0) } else { (3, 2) };
        !check_page(s.grows, tag, Some(level), p)
    });
    ensure!(
        bad.is_none(),
        "grown mapping page {bad:?} of {} differs",
        s.grows_pages
    );
    let kept = if levels >= 3 {
        SHAPE_PAGES / 2
    } else {
        SHAPE_PAGES
    };
    let bad = (0..kept).find(|&p| !check_page(s.shrinks, 4, Some(0), p));
    ensure!(bad.is_none(), "shrunk mapping page {bad:?} differs");
    let tail = s.shrinks as usize + kept * PAGE;
    ensure!(
        levels < 3 || maps_perms(tail).is_none(),
        "the shrunk mapping's tail is mapped again"
    );
    ensure!(
        (levels >= 4) == maps_perms(s.goes as usize).is_none(),
        "the unmapped mapping is back (or the kept one is gone)"
    );
    if levels < 4 {
        let bad = (0..SHAPE_PAGES).find(|&p| !check_page(s.goes, 5, Some(0), p));
        ensure!(bad.is_none(), "mapping page {bad:?} differs");
    }
    Ok(())
}

fn shapes() -> Result<Shapes, Msg> {
    let s = Shapes {
        appears: std::ptr::null_mut(),
        grows: anon(SHAPE_PAGES)?,
        grows_pages: SHAPE_PAGES,
        shrinks: anon(SHAPE_PAGES)?,
        goes: anon(SHAPE_PAGES)?,
    };
    for p in 0..SHAPE_PAGES {
        fill(s.grows, 3, 0, p);
        fill(s.shrinks, 4, 0, p);
        fill(s.goes, 5, 0, p);
    }
    Ok(s)
}

fn wait_for(c: &Child, name: &str) {
    while !exists(c, name) {
        sleep_ms(1);
    }
}

fn step(c: &Child, main: *mut u64, shapes: Option<&mut Shapes>, level: usize) -> Result<(), Msg> {
    for page in (0..MAIN_PAGES).filter(|&p| dropped(p, level)) {
        // SAFETY: one page of this victim's own main region.
        let r =
            unsafe { libc::madvise(main.add(page * PAGE / 8).cast(), PAGE, libc::MADV_DONTNEED) };
        ensure!(r == 0, "madvise(MADV_DONTNEED)");
    }
    for page in (0..MAIN_PAGES).filter(|&p| rewritten(p, level)) {
        fill(main, 1, level as u64, page);
    }
    if let Some(s) = shapes {
        change_shape(s, level)?;
    }
    write_file(&c.path(&format!("stepped-{level}")), b"");
    Ok(())
}

pub fn victim(c: &Child) -> Verdict {
    let levels = levels(c);
    let main = anon(MAIN_PAGES)?;
    for page in (0..MAIN_PAGES).filter(|&p| written_at_start(p)) {
        fill(main, 1, 0, page);
    }
    let mut shapes = if exists(c, "vma") {
        Some(shapes()?)
    } else {
        None
    };
    c.ready(format!("main={:x}", main as usize).as_bytes());
    for level in 1..=levels {
        wait_for(c, &format!("step-{level}"));
        step(c, main, shapes.as_mut(), level)?;
    }
    c.wait_go();
    let bad = (0..MAIN_PAGES).find(|&p| !check_page(main, 1, expected(p, levels), p));
    ensure!(
        bad.is_none(),
        "main page {bad:?} differs: expected level {:?}",
        bad.map(|p| expected(p, levels))
    );
    if let Some(s) = &shapes {
        check_shapes(s, levels)?;
    }
    Ok(())
}

/// Pages of the region the uffd victim registers with its own userfaultfd.
pub const OWN_UFFD_PAGES: usize = 64;

/// A victim that uses userfaultfd itself: a region registered (missing
/// mode) with its own uffd. crest cannot register it for tracking (EBUSY)
/// and must store it whole at every pass, leaving the victim's
/// registration as it was: after go the victim unregisters it itself.
pub fn uffd_victim(c: &Child) -> Verdict {
    let region = anon(OWN_UFFD_PAGES)?;
    (0..OWN_UFFD_PAGES).for_each(|p| fill(region, 6, 0, p));
    // SAFETY: userfaultfd takes flags only.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC) } as i32;
    ensure!(fd >= 0, "userfaultfd");
    let mut api = [0xAAu64, 0, 0];
    // SAFETY: UFFDIO_API takes a struct uffdio_api of three u64 (a raw
    // syscall: glibc and musl type the request differently).
    let r = unsafe { libc::syscall(libc::SYS_ioctl, fd, 0xC018_AA3Fu64, api.as_mut_ptr()) };
    ensure!(r == 0, "UFFDIO_API");
    let len = (OWN_UFFD_PAGES * PAGE) as u64;
    let mut reg = [region as u64, len, 1, 0];
    // SAFETY: UFFDIO_REGISTER takes a struct uffdio_register of four u64.
    let r = unsafe { libc::syscall(libc::SYS_ioctl, fd, 0xC020_AA00u64, reg.as_mut_ptr()) };
    ensure!(r == 0, "UFFDIO_REGISTER");
    c.ready(format!("region={:x}", region as usize).as_bytes());
    wait_for(c, "step-1");
    write_file(&c.path("stepped-1"), b"");
    c.wait_go();
    let bad = (0..OWN_UFFD_PAGES).find(|&p| !check_page(region, 6, Some(0), p));
    ensure!(bad.is_none(), "region page {bad:?} differs");
    let mut range = [region as u64, len];
    // SAFETY: UFFDIO_UNREGISTER takes a struct uffdio_range of two u64.
    let r = unsafe { libc::syscall(libc::SYS_ioctl, fd, 0x8010_AA01u64, range.as_mut_ptr()) };
    ensure!(r == 0, "UFFDIO_UNREGISTER of its own registration failed");
    Ok(())
}
