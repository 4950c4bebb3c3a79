//! Page dump throughput: how long crest needs to dump N MiB of touched
//! anonymous memory of a running process into a tmpfs image directory,
//! next to how long `dd if=/dev/zero of=SAME_TMPFS/file bs=1M count=N`
//! needs to write as many bytes to the same tmpfs in the same run; and
//! crest's peak RSS during the dump (VmHWM after resetting it with
//! `clear_refs`), which must not grow with N (streaming).
//!
//! Run: `cargo bench --bench dump_pages` (as root: it seizes its victim and
//! reads PFNs). Sizes: 64 MiB, 512 MiB, 2 GiB; medians of RUNS runs after a
//! warm-up of each. The timed dump is seize + inject + collect VMAs + page
//! dump + cure + resume; the page dump alone is printed too.
//! `CREST_BENCH_MIB=64,512` picks other sizes.

#[path = "../tests/dump_pages/victim.rs"]
mod victim;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crest::dump::pages::dump_pages;
use crest::dump::vma::collect_vmas;
use crest::image::ImageDir;
use crest::infect::{Parasite, Release, seize};
use victim::{Mode, Victim};

const RUNS: usize = 5;
const SIZES_MIB: [u64; 3] = [64, 512, 2048];

fn dd(dir: &Path, mib: u64) -> Duration {
    let of = dir.join("dd.img");
    let start = Instant::now();
    let status = Command::new("dd")
        .args(["if=/dev/zero", &format!("of={}", of.display()), "bs=1M"])
        .arg(format!("count={mib}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("dd runs");
    let t = start.elapsed();
    assert!(status.success(), "dd failed");
    std::fs::remove_file(&of).unwrap();
    t
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// One dump: (total time, page dump time, peak RSS in KiB).
fn dump(pid: i32, dir: &Path) -> (Duration, Duration, u64) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let start = Instant::now();
    let images = ImageDir::create(dir).unwrap();
    let seized = seize(pid).expect("seize");
    let vmas = collect_vmas(pid as u32).expect("vmas");
    let mut p = Parasite::inject(&seized).expect("inject");
    let t0 = Instant::now();
    dump_pages(&seized, &mut p, &vmas, &images).expect("dump pages");
    let pages = t0.elapsed();
    p.cure().expect("cure");
    seized.release(Release::Resume).expect("release");
    let total = start.elapsed();
    let rss = peak_rss_kib();
    std::fs::remove_dir_all(dir).unwrap();
    (total, pages, rss)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let base = Path::new("/dev/shm").join(format!("crest-bench-{}", std::process::id()));
    std::fs::create_dir_all(&base).unwrap();
    let images = base.join("images");
    println!("command: cargo bench --bench dump_pages");
    println!(
        "target dir: {} (tmpfs); medians of {RUNS} runs after a warm-up",
        base.display()
    );
    println!(
        "{:>6}  {:>9} {:>9} {:>9}  {:>9} {:>9} {:>9}  {:>7}  {:>9}",
        "MiB",
        "dd ms",
        "dump ms",
        "pages ms",
        "dd MB/s",
        "dump MB/s",
        "pages MB/s",
        "ratio",
        "peak RSS"
    );
    let sizes: Vec<u64> = match std::env::var("CREST_BENCH_MIB") {
        Ok(list) => list
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect(),
        Err(_) => SIZES_MIB.to_vec(),
    };
    for mib in sizes {
        let v = Victim::spawn(Mode::Big(mib << 20 >> 12));
        dd(&base, mib);
        dump(v.pid, &images);
        let (mut dds, mut totals, mut pages, mut rss) = (vec![], vec![], vec![], 0);
        for _ in 0..RUNS {
            dds.push(dd(&base, mib));
            let (t, p, r) = dump(v.pid, &images);
            totals.push(t);
            pages.push(p);
            rss = rss.max(r);
        }
        assert_eq!(v.get(victim::FAILURES), 0, "the victim's memory changed");
        let (d, t, p) = (median(dds), median(totals), median(pages));
        let rate = |x: Duration| (mib << 20) as f64 / x.as_secs_f64() / 1e6;
        let ms = |x: Duration| x.as_secs_f64() * 1e3;
        println!(
            "{mib:>6}  {:>9.1} {:>9.1} {:>9.1}  {:>9.0} {:>9.0} {:>9.0}  {:>6.2}x  {:>6} KiB",
            ms(d),
            ms(t),
            ms(p),
            rate(d),
            rate(t),
            rate(p),
            rate(t) / rate(d),
            rss
        );
    }
    println!("ratio = dump throughput (seize to resume) / dd throughput; goal >= 0.7x");
    std::fs::remove_dir_all(&base).unwrap();
}
