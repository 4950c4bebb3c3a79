//! One benchmark for the whole round trip, each number next to this
//! machine's own limit measured in the same run:
//!
//! - `crest dump` of a process holding N MiB of touched anonymous memory
//!   into tmpfs, next to `dd if=/dev/zero` writing the same bytes there, and
//!   the dump's peak RSS (ru_maxrss of the crest process), which must not
//!   grow with N;
//! - `crest restore -d` of that image, next to `dd` reading the pages file
//!   to /dev/null (the same bytes from the same place) and to a pread loop
//!   into fresh anonymous memory (what a restore must do at least:
//!   allocate, zero and fill the pages), and to memcpy of N MiB;
//! - the dump and restore times of a tiny process (restore goal: 10 ms).
//!
//! Each dump's dd reference runs once its victim is ready, right before
//! crest, so both write into memory freed moments before.
//!
//! Run: `cargo bench --bench roundtrip` (as root). Sizes 64, 512, 2048 MiB
//! (`CREST_BENCH_MIB=64,512` picks others); medians of RUNS after a warm-up.
//! Times are whole crest commands, process start to exit.
//!
//! The victim is this benchmark binary run again with CREST_BENCH_VICTIM=N:
//! it drops every inherited fd but /dev/null on 0-2, touches N MiB, says
//! ready through a file and sleeps.

use std::os::unix::process::ExitStatusExt;
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

/// Runs crest with `args`; its wall time and peak RSS in KiB. The child is
/// reaped with wait4 directly (Child::wait cannot return its rusage).
#[allow(clippy::zombie_processes)]
fn crest(args: &[&str]) -> (Duration, u64) {
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_crest"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let stderr = child.stderr.take().unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, writing status and usage.
    let got = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let t = start.elapsed();
    assert_eq!(got, pid);
    let ok = std::process::ExitStatus::from_raw(status).success();
    let err = std::io::read_to_string(stderr).unwrap_or_default();
    assert!(ok, "crest {args:?}: {err}");
    (t, usage.ru_maxrss as u64)
}

/// Starts a victim of `mib` MiB; its pid, once it is ready.
fn start_victim(mib: u64, dir: &Path) -> std::process::Child {
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
    child
}

/// Dumps (and so kills) a fresh victim into `dir`; pid, time, peak RSS.
fn dump(mib: u64, dir: &Path) -> (i32, Duration, u64) {
    dump_after(mib, dir, || ()).0
}

/// Like [`dump`], running `before` once the victim is ready, right before
/// crest: the dd reference then writes into memory in the same state as
/// crest's dump (freed moments before; memory idle for seconds is handed
/// back to the host and several times slower to touch again).
fn dump_after<T>(mib: u64, dir: &Path, before: impl FnOnce() -> T) -> ((i32, Duration, u64), T) {
    let _ = std::fs::remove_dir_all(dir);
    let mut child = start_victim(mib, dir);
    let pid = child.id() as i32;
    let reference = before();
    let (t, rss) = crest(&["dump", "-t", &pid.to_string(), "-D", dir.to_str().unwrap()]);
    child.wait().unwrap();
    ((pid, t, rss), reference)
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
    let (t, _) = crest(&["restore", "-d", "-D", dir.to_str().unwrap()]);
    kill_restored(pid);
    t
}

fn dd(args: &[&str]) -> Duration {
    let start = Instant::now();
    let status = Command::new("dd")
        .args(args)
        .arg("bs=1M")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "dd {args:?}");
    start.elapsed()
}

fn dd_write(file: &Path, mib: u64) -> Duration {
    let t = dd(&[
        "if=/dev/zero",
        &format!("of={}", file.display()),
        &format!("count={mib}"),
    ]);
    std::fs::remove_file(file).unwrap();
    t
}

fn dd_read(file: &Path) -> Duration {
    dd(&[&format!("if={}", file.display()), "of=/dev/null"])
}

/// Fresh anonymous memory of `len` bytes, unmapped on drop.
struct Fresh(*mut libc::c_void, usize);

impl Fresh {
    fn new(len: usize) -> Fresh {
        // SAFETY: a fresh private anonymous mapping, unmapped on drop.
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
        Fresh(p, len.max(1))
    }

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is ours alone and self.1 bytes long.
        unsafe { std::slice::from_raw_parts_mut(self.0.cast::<u8>(), self.1) }
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping made in new; no slice outlives self.
        unsafe { libc::munmap(self.0, self.1) };
    }
}

/// Reads `file` into fresh anonymous memory, 1 MiB per pread: the floor of
/// any restore, which must populate memory as it reads.
fn read_fresh(file: &Path) -> Duration {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(file).unwrap();
    let len = f.metadata().unwrap().len() as usize;
    let start = Instant::now();
    let mut mem = Fresh::new(len);
    for (i, chunk) in mem.bytes().chunks_mut(1 << 20).enumerate() {
        f.read_exact_at(chunk, (i << 20) as u64).unwrap();
    }
    let t = start.elapsed();
    drop(mem);
    t
}

/// memcpy of `mib` MiB between two buffers already in memory.
fn memcpy(mib: u64) -> Duration {
    let len = (mib as usize) << 20;
    let (mut a, mut b) = (Fresh::new(len), Fresh::new(len));
    a.bytes().fill(1);
    b.bytes().fill(2);
    let start = Instant::now();
    b.bytes().copy_from_slice(a.bytes());
    let t = start.elapsed();
    std::hint::black_box(b.bytes()[len / 2]);
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

/// The dumps of one size, five runs; its table row and the pid of the
/// last dump, whose image stays in `dir` for the restores.
fn dump_row(mib: u64, dir: &Path, base: &Path) -> (String, i32) {
    let (mut dd_w, mut dumps, mut rss) = (Vec::new(), Vec::new(), 0);
    let mut pid = dump(mib, dir).0;
    for _ in 0..RUNS {
        let ((p, t, r), d) = dump_after(mib, dir, || dd_write(&base.join("dd.img"), mib));
        dd_w.push(d);
        (pid, rss) = (p, rss.max(r));
        dumps.push(t);
    }
    let mb = (mib << 20) as f64 / 1e6;
    let rate = |d: Duration| mb / d.as_secs_f64();
    let (dd_w, dumps) = (median(dd_w), median(dumps));
    let row = format!(
        "| {mib} | {:.1} ms | {:.1} ms | {:.0} | {:.0} | {:.2}x | {:.1} MiB |",
        ms(dd_w),
        ms(dumps),
        rate(dd_w),
        rate(dumps),
        dd_w.as_secs_f64() / dumps.as_secs_f64(),
        rss as f64 / 1024.0
    );
    (row, pid)
}

/// The restores of one size from the image in `dir`, five runs.
fn restore_row(mib: u64, dir: &Path, pid: i32) -> String {
    let pages = dir.join(format!("pages-{pid}.img"));
    restore(dir, pid);
    let (mut dd_r, mut fresh, mut copy, mut rs) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        dd_r.push(dd_read(&pages));
        fresh.push(read_fresh(&pages));
        copy.push(memcpy(mib));
        rs.push(restore(dir, pid));
    }
    let mb = (mib << 20) as f64 / 1e6;
    let (dd_r, fresh, copy, rs) = (median(dd_r), median(fresh), median(copy), median(rs));
    format!(
        "| {mib} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.0} | {:.2}x | {:.2}x | {:.2}x |",
        ms(copy),
        ms(dd_r),
        ms(fresh),
        ms(rs),
        mb / rs.as_secs_f64(),
        dd_r.as_secs_f64() / rs.as_secs_f64(),
        fresh.as_secs_f64() / rs.as_secs_f64(),
        copy.as_secs_f64() / rs.as_secs_f64()
    )
}

fn main() {
    if let Ok(mib) = std::env::var("CREST_BENCH_VICTIM") {
        victim(
            mib.parse().unwrap(),
            Path::new(&std::env::var("CREST_BENCH_READY").unwrap()),
        );
    }
    let started = Instant::now();
    let base = Path::new("/dev/shm").join(format!("crest-bench-roundtrip-{}", std::process::id()));
    std::fs::create_dir_all(&base).unwrap();
    let dir = base.join("images");
    // Every dump first: crest is started through vfork, and its peak RSS
    // starts at this process's own peak, which the restores' fresh-memory
    // and memcpy references raise.
    let dumped: Vec<(u64, String, i32, PathBuf)> = sizes()
        .into_iter()
        .map(|mib| {
            let d = base.join(format!("images-{mib}"));
            let (row, pid) = dump_row(mib, &d, &base);
            (mib, row, pid, d)
        })
        .collect();
    println!("dump (tmpfs), medians of {RUNS}");
    println!("| MiB | dd write | crest dump | dd MB/s | crest MB/s | vs dd | crest peak RSS |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    dumped.iter().for_each(|(_, row, _, _)| println!("{row}"));
    let tiny_dump = median((0..TINY_RUNS).map(|_| dump(0, &dir).1).collect());
    println!("\nrestore -d (tmpfs), medians of {RUNS}");
    println!(
        "| MiB | memcpy | dd read | read into fresh memory | crest restore | crest MB/s | vs dd | vs fresh | vs memcpy |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (mib, _, pid, d) in &dumped {
        println!("{}", restore_row(*mib, d, *pid));
        std::fs::remove_dir_all(d).unwrap();
    }
    let (pid, _, _) = dump(0, &dir);
    restore(&dir, pid);
    let floor = median((0..TINY_RUNS).map(|_| crest(&["--version"]).0).collect());
    let tiny_restore = median((0..TINY_RUNS).map(|_| restore(&dir, pid)).collect());
    println!(
        "\ntiny process, medians of {TINY_RUNS}: dump {:.1} ms, restore {:.1} ms (budget 10 ms: {:.2}x); crest --version {:.1} ms",
        ms(tiny_dump),
        ms(tiny_restore),
        ms(tiny_restore) / 10.0,
        ms(floor)
    );
    println!("{:.0} s in all", started.elapsed().as_secs_f64());
    std::fs::remove_dir_all(&base).unwrap();
}
