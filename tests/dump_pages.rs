//! The page dump against real victims (tests/dump_pages/victim.rs). Ground
//! truth is the victim's pattern function and its own self-check, plus
//! /proc/PID/maps and /proc/PID/fd read around the dump; the image is read
//! back through `PageIndex` and every stored byte compared with the pattern.

#[path = "dump_pages/victim.rs"]
mod victim;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;

use crest::dump::pages::{PageStats, dump_pages};
use crest::dump::vma::collect_vmas;
use crest::image::ImageDir;
use crest::image::dir::{pagemap_file, pages_file};
use crest::image::pagemap::RunKind;
use crest::image::pages::PageIndex;
use crest::infect::{Parasite, Release, seize};
use victim::*;

fn scratch(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("crest-dump-pages-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

fn maps(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap()
}

fn fds(pid: i32) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// Seize, inject, dump the pages, cure, resume.
fn dump(pid: i32, dir: &ImageDir) -> PageStats {
    let seized = seize(pid).expect("seize");
    let vmas = collect_vmas(pid as u32).expect("collect vmas");
    let mut p = Parasite::inject(&seized).expect("inject");
    let stats = dump_pages(&seized, &mut p, &vmas, dir).expect("dump pages");
    p.cure().expect("cure");
    seized.release(Release::Resume).expect("release");
    stats
}

/// Every page of the image: address -> stored bytes (None for a zero run).
fn image_pages(dir: &ImageDir, pid: i32) -> BTreeMap<u64, Option<Vec<u8>>> {
    let idx = PageIndex::load(dir, &pagemap_file(pid as u32)).expect("load the index");
    let data = dir.open_file(&idx.head.pages_file).unwrap();
    let ps = idx.page_size;
    let mut pages = BTreeMap::new();
    for run in &idx.runs {
        let mut buf = vec![0u8; (run.nr_pages * ps) as usize];
        match run.kind {
            RunKind::Present => idx.read_run(&data, run, &mut buf).expect("read a run"),
            RunKind::Zero => {}
            RunKind::Parent => panic!("a full dump has no parent runs"),
        }
        for (i, page) in buf.chunks(ps as usize).enumerate() {
            let v = (run.kind == RunKind::Present).then(|| page.to_vec());
            pages.insert(run.vaddr + i as u64 * ps, v);
        }
    }
    pages
}

fn check_region(
    pages: &BTreeMap<u64, Option<Vec<u8>>>,
    base: u64,
    n: u64,
    expect: impl Fn(u64) -> Expect,
) {
    let ps = page_size();
    for p in 0..n {
        let got = pages.get(&(base + p * ps));
        match (expect(p), got) {
            (Expect::Absent, None) | (Expect::Zero, Some(None)) => {}
            (Expect::Zeroes, Some(Some(b))) => {
                assert!(
                    b.iter().all(|&x| x == 0),
                    "page {p} at {base:#x} is not zero"
                )
            }
            (Expect::Pattern(r, q), Some(Some(b))) => {
                assert!(
                    *b == pattern_page(r, q),
                    "page {p} at {base:#x}: wrong bytes"
                )
            }
            (e, g) => panic!(
                "page {p} at {base:#x}: expected {e:?}, image has {:?}",
                g.map(|v| v.as_ref().map(|_| "data"))
            ),
        }
    }
}

/// The file the victim maps private; removed on drop (after the victim,
/// which must be declared after it): a deleted file cannot be dumped yet.
struct Backing(PathBuf);

impl Drop for Backing {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn backing_file(name: &str) -> (Backing, std::fs::File) {
    let path = scratch(name);
    let mut f = std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    for p in 0..FILE_PAGES {
        f.write_all(&pattern_page(R_FILE_DISK, p)).unwrap();
    }
    (Backing(path), f)
}

#[test]
fn dump_pages_stores_exactly_the_private_pages_with_their_bytes() {
    let (_keep, file) = backing_file("file");
    let v = Victim::spawn(Mode::Patterns(file.as_raw_fd()));
    drop(file);
    let (maps0, fds0) = (maps(v.pid), fds(v.pid));
    let path = scratch("patterns");
    let dir = ImageDir::create(&path).unwrap();
    let stats = dump(v.pid, &dir);
    assert_eq!(maps(v.pid), maps0, "maps as before the dump");
    assert_eq!(fds(v.pid), fds0, "fds as before: the page pipe is closed");
    let pages = image_pages(&dir, v.pid);
    check_region(&pages, v.get(ANON), ANON_PAGES, anon_expect);
    check_region(&pages, v.get(FILE), FILE_PAGES, file_expect);
    check_region(&pages, v.get(RO), RO_PAGES, |p| Expect::Pattern(R_RO, p));
    check_region(&pages, v.get(NONE), NONE_PAGES, |p| {
        Expect::Pattern(R_NONE, p)
    });
    // THP maps the huge zero page on a read when it may (sysfs), else
    // the read maps the small one for that page only.
    let thp = |f: &str| std::fs::read_to_string(format!("/sys/kernel/mm/transparent_hugepage/{f}"));
    let huge_zero = !thp("enabled").unwrap_or_default().contains("[never]")
        && thp("use_zero_page").unwrap_or_default().trim() == "1";
    check_region(&pages, v.get(HUGE), pmd_size() / page_size(), |p| {
        if p == 0 || huge_zero {
            Expect::Zero
        } else {
            Expect::Absent
        }
    });
    let stored = pages.values().filter(|p| p.is_some()).count() as u64;
    assert_eq!(stats.stored, stored);
    assert_eq!(stats.zero, pages.len() as u64 - stored);
    assert_eq!(stats.bytes, stored * page_size());
    assert!(
        stats.zero >= ANON_PAGES / 8,
        "the read-only pages are zero runs"
    );
    // Spliced runs carry no CRC (crest never saw the bytes); the PROT_NONE
    // region's, copied through /proc/PID/mem, do.
    let idx = PageIndex::load(&dir, &pagemap_file(v.pid as u32)).unwrap();
    assert!(idx.find(v.get(ANON)).unwrap().0.crc.is_none());
    assert!(idx.find(v.get(RO)).unwrap().0.crc.is_none());
    assert!(idx.find(v.get(NONE)).unwrap().0.crc.is_some());
    for name in [pagemap_file(v.pid as u32), pages_file(v.pid as u32)] {
        let mut out = Vec::new();
        let code = crest::image::show::run(&path.join(&name), false, &mut out).unwrap();
        assert_eq!(
            code,
            0,
            "crest show {name}: {}",
            String::from_utf8_lossy(&out)
        );
    }
    // The victim runs on and its memory still checks out.
    let checks = v.get(CHECKS);
    v.wait_for(CHECKS, checks + 3, Duration::from_secs(10));
    assert_eq!(v.get(FAILURES), 0, "the victim's self-check failed");
    std::fs::remove_dir_all(&path).unwrap();
}

#[test]
fn dump_pages_twice_gives_the_same_pages() {
    let (_keep, file) = backing_file("twice-file");
    let v = Victim::spawn(Mode::Patterns(file.as_raw_fd()));
    drop(file);
    let (a, b) = (scratch("twice-a"), scratch("twice-b"));
    let (da, db) = (ImageDir::create(&a).unwrap(), ImageDir::create(&b).unwrap());
    dump(v.pid, &da);
    dump(v.pid, &db);
    let (pa, pb) = (image_pages(&da, v.pid), image_pages(&db, v.pid));
    let anon = v.get(ANON)..v.get(ANON) + ANON_PAGES * page_size();
    let region = |m: &BTreeMap<u64, Option<Vec<u8>>>| -> Vec<(u64, Option<Vec<u8>>)> {
        m.range(anon.clone())
            .map(|(k, v)| (*k, v.clone()))
            .collect()
    };
    assert_eq!(region(&pa), region(&pb));
    assert_eq!(v.get(FAILURES), 0);
    std::fs::remove_dir_all(&a).unwrap();
    std::fs::remove_dir_all(&b).unwrap();
}

const BIG_PAGES: u64 = 256 << 20 >> 12;
const PROBE_ENV: &str = "CREST_DUMP_PAGES_PROBE";

/// Run in a child process by the RSS test: dumps the pid and dir named in
/// the environment and writes its peak RSS (VmHWM, KiB) into the dir.
#[test]
#[ignore = "run by dump_pages_streams_256_mib_in_small_rss in its own process"]
fn rss_probe() {
    let Ok(arg) = std::env::var(PROBE_ENV) else {
        return;
    };
    let (pid, path) = arg.split_once(':').unwrap();
    let dir = ImageDir::open(path).unwrap();
    // Reset the peak to what the process uses now (clear_refs 5).
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let stats = dump(pid.parse().unwrap(), &dir);
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hwm = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = hwm.split_whitespace().nth(1).unwrap().parse().unwrap();
    std::fs::write(format!("{path}/probe"), format!("{kib} {}", stats.stored)).unwrap();
}

#[test]
fn dump_pages_streams_256_mib_in_small_rss() {
    let v = Victim::spawn(Mode::Big(BIG_PAGES));
    let path = scratch("big");
    ImageDir::create(&path).unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "rss_probe", "--ignored", "--test-threads=1"])
        .env(PROBE_ENV, format!("{}:{}", v.pid, path.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "probe: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let probe = std::fs::read_to_string(path.join("probe")).unwrap();
    let (kib, stored) = probe.split_once(' ').unwrap();
    let (kib, stored): (u64, u64) = (kib.parse().unwrap(), stored.parse().unwrap());
    assert!(
        stored >= BIG_PAGES,
        "all {BIG_PAGES} pages stored, got {stored}"
    );
    assert!(
        kib < 16 * 1024,
        "crest's peak RSS was {kib} KiB for a 256 MiB dump"
    );
    let dir = ImageDir::open(&path).unwrap();
    let idx = PageIndex::load(&dir, &pagemap_file(v.pid as u32)).unwrap();
    let data = dir.open_file(&idx.head.pages_file).unwrap();
    let big = v.get(BIG);
    for p in [0, 1, BIG_PAGES / 2, BIG_PAGES - 1] {
        let (run, i) = idx.find(big + p * page_size()).expect("page stored");
        let mut w = [0u8; 8];
        std::os::unix::fs::FileExt::read_exact_at(&data, &mut w, idx.data_offset(run, i)).unwrap();
        assert_eq!(u64::from_ne_bytes(w), p, "first word of page {p}");
    }
    assert_eq!(v.get(FAILURES), 0);
    std::fs::remove_dir_all(&path).unwrap();
}

#[test]
fn dump_pages_failing_midway_closes_its_pipe_and_leaves_the_victim_intact() {
    let (_keep, file) = backing_file("fail-file");
    let v = Victim::spawn(Mode::Patterns(file.as_raw_fd()));
    drop(file);
    let (maps0, fds0) = (maps(v.pid), fds(v.pid));
    let path = scratch("fail");
    let dir = ImageDir::create(&path).unwrap();
    let seized = seize(v.pid).expect("seize");
    let mut vmas = collect_vmas(v.pid as u32).expect("collect vmas");
    // Claim the PROT_NONE region is readable: the parasite's vmsplice of
    // it fails (EFAULT) after the pages before it went through the pipe.
    let none = vmas.iter_mut().find(|m| m.start == v.get(NONE)).unwrap();
    none.prot = 1;
    let mut p = Parasite::inject(&seized).expect("inject");
    let err = dump_pages(&seized, &mut p, &vmas, &dir).expect_err("the dump fails");
    let msg = err.to_string();
    assert!(msg.contains("vmsplice") && msg.contains("EFAULT"), "{msg}");
    p.cure()
        .expect("cure: fds and maps as before the injection");
    seized.release(Release::Resume).expect("release");
    assert_eq!(maps(v.pid), maps0);
    assert_eq!(fds(v.pid), fds0);
    assert!(
        PageIndex::load(&dir, &pagemap_file(v.pid as u32)).is_err(),
        "a failed dump leaves no complete page index"
    );
    let checks = v.get(CHECKS);
    v.wait_for(CHECKS, checks + 3, Duration::from_secs(10));
    assert_eq!(v.get(FAILURES), 0);
    std::fs::remove_dir_all(&path).unwrap();
}
