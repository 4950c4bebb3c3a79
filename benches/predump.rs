//! Incremental dumps, measured in one run: a target of N MiB (1024 by
//! default) whose every page holds data, and which keeps rewriting 1% of
//! its pages (every 100th page, one pass per millisecond). For each run:
//!
//! - a full `crest dump` of one such target: its image bytes and its
//!   freeze time (seize to kill, as crest logs it);
//! - `crest pre-dump` of a second target, one second of writing, then the
//!   final `crest dump --prev-images-dir ../pre --track-mem`: the final
//!   image's bytes against the dirty bytes (the hot pages the target
//!   wrote) plus the image's metadata (every byte that is not stored page
//!   data), and its freeze time against the full dump's.
//!
//! Run: `cargo bench --bench predump` (as root). `CREST_BENCH_MIB` sets
//! the size, `CREST_TRACK` the tracker (default: what the kernel offers),
//! `CREST_BENCH_RUNS` the number of measured runs, `CREST_BENCH_BIN`
//! another crest binary to measure. In a qemu lane:
//! `CREST_VM_BENCH=predump` (tests/vm/lanes.sh).
//! Images go to tmpfs (/dev/shm); medians of RUNS after a warm-up run.
//! Memory is warm (every page touched just before). THP is off in the
//! target: a write to a huge page dirties its whole 2 MiB.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Measured runs (after a warm-up run); `CREST_BENCH_RUNS` overrides.
const RUNS: usize = 5;
/// One page in HOT_STRIDE is rewritten all the time.
const HOT_STRIDE: usize = 100;
const PAGE: usize = 4096;

fn victim(mib: usize, ready: &Path) -> ! {
    let len = mib << 20;
    // SAFETY: close_range and setsid take no pointers; mmap makes a fresh
    // mapping that this process owns for the rest of its life.
    let mem = unsafe {
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        libc::setsid();
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        libc::madvise(p, len, libc::MADV_NOHUGEPAGE);
        p.cast::<u8>()
    };
    for page in 0..len / PAGE {
        // SAFETY: inside the mapping.
        unsafe { mem.add(page * PAGE).write_volatile(page as u8 | 1) };
    }
    std::fs::write(ready, b"ready").unwrap();
    let mut round = 0u64;
    loop {
        round += 1;
        for page in (0..len / PAGE).step_by(HOT_STRIDE) {
            // SAFETY: inside the mapping.
            unsafe { mem.add(page * PAGE + 8).cast::<u64>().write_volatile(round) };
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn start_victim(mib: usize, dir: &Path) -> std::process::Child {
    let ready = dir.with_extension("ready");
    let _ = std::fs::remove_file(&ready);
    let child = Command::new(std::env::current_exe().unwrap())
        .env("CREST_BENCH_VICTIM", mib.to_string())
        .env("CREST_BENCH_READY", &ready)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while !ready.exists() {
        std::thread::sleep(Duration::from_millis(5));
    }
    // Let it write for a while: the hot set is dirty, the rest is not.
    std::thread::sleep(Duration::from_millis(200));
    child
}

/// The crest under test: this build's, or `CREST_BENCH_BIN` (another
/// build, for an A/B comparison in the same run conditions).
fn crest_bin() -> PathBuf {
    std::env::var_os("CREST_BENCH_BIN")
        .map_or_else(|| env!("CARGO_BIN_EXE_crest").into(), PathBuf::from)
}

/// Runs crest with `args` at -v3; the freeze time it logs, in ms.
fn crest(args: &[&str]) -> f64 {
    let out = Command::new(crest_bin())
        .arg("-v3")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "crest {args:?}: {err}");
    let line = err
        .lines()
        .find(|l| l.contains("frozen for"))
        .unwrap_or_else(|| panic!("no freeze time in: {err}"));
    let ms = line.split("frozen for ").nth(1).unwrap();
    ms.split_whitespace().next().unwrap().parse().unwrap()
}

/// Bytes of every file in `dir`, and of its stored page data (pages-*
/// files without their header page).
fn sizes(dir: &Path) -> (u64, u64) {
    let (mut all, mut data) = (0, 0);
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let len = e.metadata().unwrap().len();
        all += len;
        if e.file_name().to_string_lossy().starts_with("pages-") {
            data += len.saturating_sub(PAGE as u64);
        }
    }
    (all, data)
}

fn wait_gone(child: &mut std::process::Child) {
    child.wait().unwrap();
    let proc = PathBuf::from(format!("/proc/{}", child.id()));
    while proc.exists() {
        std::thread::sleep(Duration::from_millis(2));
    }
}

struct Run {
    full_ms: f64,
    full_bytes: u64,
    pre_ms: f64,
    final_ms: f64,
    final_bytes: u64,
    final_meta: u64,
    dirty_bytes: u64,
}

fn one_run(mib: usize, base: &Path) -> Run {
    let _ = std::fs::remove_dir_all(base);
    std::fs::create_dir_all(base).unwrap();
    let full = base.join("full");
    let mut a = start_victim(mib, &full);
    let full_ms = crest(&[
        "dump",
        "-t",
        &a.id().to_string(),
        "-D",
        full.to_str().unwrap(),
    ]);
    wait_gone(&mut a);
    let (full_bytes, _) = sizes(&full);
    std::fs::remove_dir_all(&full).unwrap();

    let (pre, fin) = (base.join("pre"), base.join("final"));
    let mut b = start_victim(mib, &pre);
    let pid = b.id().to_string();
    let pre_ms = crest(&["pre-dump", "-t", &pid, "-D", pre.to_str().unwrap()]);
    std::thread::sleep(Duration::from_secs(1));
    let final_ms = crest(&[
        "dump",
        "-t",
        &pid,
        "-D",
        fin.to_str().unwrap(),
        "--prev-images-dir",
        "../pre",
        "--track-mem",
    ]);
    wait_gone(&mut b);
    let (final_bytes, final_data) = sizes(&fin);
    let hot = (mib << 20) / PAGE / HOT_STRIDE + 1;
    Run {
        full_ms,
        full_bytes,
        pre_ms,
        final_ms,
        final_bytes,
        final_meta: final_bytes - final_data,
        dirty_bytes: (hot * PAGE) as u64,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if let Ok(mib) = std::env::var("CREST_BENCH_VICTIM") {
        let ready = PathBuf::from(std::env::var("CREST_BENCH_READY").unwrap());
        victim(mib.parse().unwrap(), &ready);
    }
    let mib: usize = std::env::var("CREST_BENCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    let base = Path::new("/dev/shm").join(format!("crest-bench-predump-{}", std::process::id()));
    let tracker = std::env::var("CREST_TRACK").unwrap_or_else(|_| "probed".into());
    println!(
        "pre-dump + final dump of a {mib} MiB target rewriting 1% of its pages (tracker: {tracker}), tmpfs, warm, crest {}",
        crest_bin().display()
    );
    let n: usize = std::env::var("CREST_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(RUNS);
    one_run(mib, &base);
    let runs: Vec<Run> = (0..n).map(|_| one_run(mib, &base)).collect();
    let _ = std::fs::remove_dir_all(&base);
    let m = |f: &dyn Fn(&Run) -> f64| median(runs.iter().map(f).collect());
    let full_ms = m(&|r| r.full_ms);
    let final_ms = m(&|r| r.final_ms);
    let goal = m(&|r| (r.dirty_bytes + r.final_meta) as f64);
    let final_b = m(&|r| r.final_bytes as f64);
    let each = |f: &dyn Fn(&Run) -> f64| {
        let v: Vec<String> = runs.iter().map(|r| format!("{:.1}", f(r))).collect();
        v.join(" ")
    };
    println!(
        "each run, freeze in ms: full [{}], final [{}]",
        each(&|r| r.full_ms),
        each(&|r| r.final_ms)
    );
    println!("medians of {n}:");
    println!(
        "  full dump:   {:>10.1} MiB written, frozen {full_ms:>8.1} ms (seize to kill)",
        m(&|r| r.full_bytes as f64) / 1048576.0
    );
    println!(
        "  pre-dump:    frozen {:>8.1} ms (seize to resume)",
        m(&|r| r.pre_ms)
    );
    println!(
        "  final dump:  {:>10.2} MiB written = {:.3} x (dirty {:.2} MiB + metadata {:.2} MiB), frozen {final_ms:>8.1} ms",
        final_b / 1048576.0,
        final_b / goal,
        m(&|r| r.dirty_bytes as f64) / 1048576.0,
        m(&|r| r.final_meta as f64) / 1048576.0,
    );
    println!(
        "  freeze: final / full = {:.3} (goal < 0.1); bytes: final / (dirty + metadata) = {:.3} (goal <= 1.1)",
        final_ms / full_ms,
        final_b / goal
    );
}
