//! Restore throughput and latency: how long `crest restore -d` needs to
//! bring back a process holding N MiB of touched anonymous memory from a
//! tmpfs image, next to `dd` reading the same pages file to /dev/null in
//! the same run (the bytes every restore must read) and to reading it into
//! fresh anonymous memory (what a restore must also do: populate memory);
//! and the restore time of a tiny process (goal: under 10 ms).
//!
//! Run: `cargo bench --bench restore` (as root). Sizes 64, 512, 2048 MiB
//! (`CREST_BENCH_MIB=64,512` picks others), then the tiny process; medians
//! of RUNS restores of one dump after a warm-up restore. The time is the
//! whole `crest restore -d` command, process start to exit (the restored
//! process runs by then).
//!
//! The victim is this benchmark binary run again with CREST_BENCH_VICTIM=N:
//! it drops every inherited fd but /dev/null on 0-2, touches N MiB, says
//! ready through a file and sleeps.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 5;
const TINY_RUNS: usize = 21;
const SIZES_MIB: [u64; 3] = [64, 512, 2048];

fn victim(mib: u64, ready: &Path) -> ! {
    // SAFETY: close_range and setsid take no pointers.
    unsafe {
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        libc::setsid();
    }
    let len = (mib as usize) << 20;
    let mut mem = vec![0u8; len.max(1)];
    for (i, page) in mem.chunks_mut(4096).enumerate() {
        page[0] = i as u8 | 1;
    }
    std::fs::write(ready, b"ready").unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(3600));
        std::hint::black_box(&mem);
    }
}

fn crest(args: &[&str]) -> Duration {
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_crest"))
        .args(args)
        .output()
        .unwrap();
    let t = start.elapsed();
    assert!(
        out.status.success(),
        "crest {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t
}

/// Starts a victim of `mib` MiB, dumps it (killing it) into `dir`.
fn dumped(mib: u64, dir: &Path) -> i32 {
    let ready = dir.with_extension("ready");
    let _ = std::fs::remove_file(&ready);
    let _ = std::fs::remove_dir_all(dir);
    let mut child = Command::new(std::env::current_exe().unwrap())
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
    let pid = child.id() as i32;
    crest(&["dump", "-t", &pid.to_string(), "-D", dir.to_str().unwrap()]);
    child.wait().unwrap();
    pid
}

/// Kills the restored process and waits until its pid is free again.
fn kill_restored(pid: i32) {
    // SAFETY: kill takes no pointers.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let proc = PathBuf::from(format!("/proc/{pid}"));
    while proc.exists() {
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn restore(dir: &Path, pid: i32) -> Duration {
    let t = crest(&["restore", "-d", "-D", dir.to_str().unwrap()]);
    kill_restored(pid);
    t
}

fn dd_read(file: &Path) -> Duration {
    let start = Instant::now();
    let status = Command::new("dd")
        .args([&format!("if={}", file.display()), "of=/dev/null", "bs=1M"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    start.elapsed()
}

/// Reads `file` into fresh anonymous memory, 1 MiB per pread, and frees
/// it: the floor of any restore, which must populate memory as it reads.
fn read_fresh(file: &Path) -> Duration {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(file).unwrap();
    let len = f.metadata().unwrap().len() as usize;
    let start = Instant::now();
    // SAFETY: a fresh private anonymous mapping, unmapped below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len.max(1),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    // SAFETY: the mapping is len bytes, ours alone until munmap.
    let mem = unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), len) };
    for (i, chunk) in mem.chunks_mut(1 << 20).enumerate() {
        f.read_exact_at(chunk, (i << 20) as u64).unwrap();
    }
    let t = start.elapsed();
    // SAFETY: unmaps the mapping made above; mem is not used after.
    unsafe { libc::munmap(p, len.max(1)) };
    t
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn sizes() -> Vec<u64> {
    match std::env::var("CREST_BENCH_MIB") {
        Ok(s) => s.split(',').map(|v| v.trim().parse().unwrap()).collect(),
        Err(_) => SIZES_MIB.to_vec(),
    }
}

fn main() {
    if let Ok(mib) = std::env::var("CREST_BENCH_VICTIM") {
        victim(
            mib.parse().unwrap(),
            Path::new(&std::env::var("CREST_BENCH_READY").unwrap()),
        );
    }
    let base = Path::new("/dev/shm").join(format!("crest-bench-restore-{}", std::process::id()));
    std::fs::create_dir_all(&base).unwrap();
    let dir = base.join("images");
    println!(
        "| MiB | dd read | read into fresh memory | crest restore | dd MB/s | fresh MB/s | crest MB/s | vs dd | vs fresh |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for mib in sizes() {
        let pid = dumped(mib, &dir);
        let pages = dir.join(format!("pages-{pid}.img"));
        restore(&dir, pid);
        dd_read(&pages);
        let (mut dd, mut fresh, mut rs) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..RUNS {
            dd.push(dd_read(&pages));
            fresh.push(read_fresh(&pages));
            rs.push(restore(&dir, pid));
        }
        let (dd, fresh, rs) = (median(dd), median(fresh), median(rs));
        let mb = (mib << 20) as f64 / 1e6;
        let rate = |d: Duration| mb / d.as_secs_f64();
        println!(
            "| {mib} | {:.1} ms | {:.1} ms | {:.1} ms | {:.0} | {:.0} | {:.0} | {:.2}x | {:.2}x |",
            ms(dd),
            ms(fresh),
            ms(rs),
            rate(dd),
            rate(fresh),
            rate(rs),
            dd.as_secs_f64() / rs.as_secs_f64(),
            fresh.as_secs_f64() / rs.as_secs_f64()
        );
    }
    let pid = dumped(0, &dir);
    restore(&dir, pid);
    let start = Instant::now();
    let version = (0..TINY_RUNS)
        .map(|_| {
            let t = Instant::now();
            crest(&["--version"]);
            t.elapsed()
        })
        .collect();
    let floor = median(version);
    let tiny = median((0..TINY_RUNS).map(|_| restore(&dir, pid)).collect());
    println!(
        "\ntiny process: restore {:.1} ms (crest --version {:.1} ms; budget 10 ms: {:.2}x); {:.1} s in all",
        ms(tiny),
        ms(floor),
        ms(tiny) / 10.0,
        start.elapsed().as_secs_f64()
    );
    std::fs::remove_dir_all(&base).unwrap();
}
