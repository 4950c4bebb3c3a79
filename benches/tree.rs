//! Large trees: seize, dump and restore times of a tree of 100 processes
//! (a root and 99 sleeping children) and of one process with 1,000
//! threads (issue #7).
//!
//! - seize: from crest's "seizing every process" log line to its "seized
//!   a tree" line (crest run with -v; each stderr line timestamped as it
//!   arrives);
//! - dump: the whole `crest dump -t` command, process start to exit (the
//!   tree is killed at the end, as without -R);
//! - restore: the whole `crest restore -d` command, until the tree runs.
//!
//! Run: `cargo bench --bench tree` (as root). Medians of RUNS runs;
//! `CREST_BENCH_TREE=100,1000` sets the process and thread counts.
//!
//! The victims are forked from this binary (tests/dump_tree/victim.rs:
//! Shape::Many and Shape::Threads); the benchmark is a child subreaper, so
//! every process of a killed tree is reaped here before its pid is reused.

#[path = "../tests/dump_tree/victim.rs"]
#[allow(dead_code)]
mod victim;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use victim::{Shape, Victim};

const RUNS: usize = 3;

/// One run's times.
#[derive(Debug, Clone, Copy)]
struct Times {
    seize: Duration,
    dump: Duration,
    restore: Duration,
}

/// Runs crest with `args`; its wall time and each stderr line with the
/// time it arrived.
fn crest(args: &[&str]) -> (Duration, Vec<(Duration, String)>) {
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_crest"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(child.stderr.take().unwrap()).lines() {
        lines.push((start.elapsed(), line.unwrap_or_default()));
    }
    let status = child.wait().unwrap();
    let t = start.elapsed();
    assert!(status.success(), "crest {args:?}: {lines:?}");
    (t, lines)
}

fn at(lines: &[(Duration, String)], what: &str) -> Duration {
    lines
        .iter()
        .find(|(_, l)| l.contains(what))
        .unwrap_or_else(|| panic!("no `{what}` in {lines:?}"))
        .0
}

/// Reaps every child until the pids of `pids` are all gone.
fn reap_all(pids: &[u32]) {
    let start = Instant::now();
    while pids
        .iter()
        .any(|p| Path::new(&format!("/proc/{p}")).exists())
    {
        // SAFETY: reaps children of this process only.
        while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG | libc::__WALL) } > 0 {
        }
        assert!(start.elapsed() < Duration::from_secs(60), "tree not gone");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn one_run(name: &str, shape: Shape, dir: &Path) -> Times {
    let _ = std::fs::remove_dir_all(dir);
    let v = Victim::spawn(name, shape);
    let img = dir.to_str().unwrap();
    let (dump, lines) = crest(&["dump", "-v", "-t", &v.pid.to_string(), "-D", img]);
    let seize = at(&lines, "seized a tree") - at(&lines, "seizing every process");
    let tree =
        crest::image::load::load_pstree(&crest::image::ImageDir::open(dir).unwrap()).unwrap();
    let pids: Vec<u32> = tree.iter().map(|p| p.pid).collect();
    reap_all(&pids);
    let (restore, _) = crest(&["restore", "-d", "-D", img]);
    for p in &pids {
        // SAFETY: the restored tree, which this run made.
        unsafe { libc::kill(*p as i32, libc::SIGKILL) };
    }
    reap_all(&pids);
    Times {
        seize,
        dump,
        restore,
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn bench(label: &str, name: &str, shape: Shape, dir: &Path) {
    let runs: Vec<Times> = (0..RUNS).map(|_| one_run(name, shape, dir)).collect();
    let ms = |f: fn(&Times) -> Duration| median(runs.iter().map(f).collect()).as_secs_f64() * 1e3;
    println!(
        "{label:<24} seize {:>8.1} ms   dump {:>8.1} ms   restore {:>8.1} ms",
        ms(|t| t.seize),
        ms(|t| t.dump),
        ms(|t| t.restore)
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // SAFETY: a flag of this process.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    let counts = std::env::var("CREST_BENCH_TREE").unwrap_or_else(|_| "100,1000".into());
    let mut it = counts
        .split(',')
        .map(|n| n.trim().parse::<usize>().unwrap());
    let (procs, threads) = (it.next().unwrap_or(100), it.next().unwrap_or(1000));
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("crest-bench-tree");
    println!("crest tree benchmark: medians of {RUNS} runs");
    bench(
        &format!("{procs} processes"),
        "bench-many",
        Shape::Many(procs),
        &dir,
    );
    bench(
        &format!("{threads} threads"),
        "bench-threads",
        Shape::Threads(threads),
        &dir,
    );
}
