//! The self-test's workload: crest re-executed as `crest selftest
//! --workload DIR`, a small process holding a sample of everything a
//! restore must bring back, which checks that sample itself afterwards.
//!
//! ```text
//!  main thread                       3 workers
//!  close fds >2, chdir DIR           record own tid
//!  block SIGWINCH, SIGURG            count (one counter each, ~1 kHz)
//!  4 MiB heap pattern, 1 MiB zeros,  on "verify": tid unchanged?
//!  1 MiB mapping (every other page)    unblock signals, report
//!  2 POSIX timers, DIR/data open
//!  queue SIGWINCH (process), SIGURG (worker 0)
//!  write DIR/ready ── crest dumps, kills, restores ── DIR/go appears
//!  verify everything, write DIR/report ("ok ..." lines, then "pass"
//!  or "fail: REASON"), exit 0 or 1
//! ```
//!
//! SIGWINCH and SIGURG are ignored by default: once the workload unblocks
//! them they are delivered and vanish from the pending sets without a
//! handler (installing one would need unsafe code outside src/sys). The
//! read-only pages checked are the relocated constants of crest's own
//! binary (`.data.rel.ro` in a PIE: written by the loader, then made
//! read-only), whose content differs from the file.
//!
//! With `CREST_FAULT=selftest-verify` in the environment (read before the
//! dump), one word of the heap pattern is flipped after the restore, so the
//! verification fails the way a restore that lost a page would.

use std::fs::File;
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::inspect::{self, bit};
use super::{DATA, GO, READY, REPORT};
use crate::sys::mm::Mapping;
use crate::sys::process::{CLOCK_MONOTONIC, PR_SET_PDEATHSIG, SIGKILL, prctl, timer_create_none};
use crate::sys::signal::{SigInfo, rt_sigprocmask_setmask, rt_sigqueueinfo, rt_tgsigqueueinfo};

/// Worker threads besides the main one.
pub const THREADS: usize = 3;
/// SIGWINCH: queued to the whole process while every thread blocks it.
const SHARED_SIGNAL: i32 = 28;
/// SIGURG: queued to worker 0 only.
const THREAD_SIGNAL: i32 = 23;
const HEAP_WORDS: usize = (4 << 20) / 8;
const ZERO_BYTES: usize = 1 << 20;
const MAP_BYTES: usize = 1 << 20;
const DATA_BYTES: usize = 1000;
const CLOCK_REALTIME: i32 = 0;
/// How long the workload waits for its go file before giving up.
const GO_TIMEOUT: Duration = Duration::from_secs(60);

/// Relocated pointers in a read-only mapping (see the module doc).
static WORDS: [&str; 6] = [
    "checkpoint",
    "restore",
    "crest",
    "pages",
    "threads",
    "signals",
];

/// What the workers and the main thread share.
struct Shared {
    counters: [AtomicU64; THREADS],
    tids: [AtomicI32; THREADS],
    verify: AtomicBool,
    /// Per worker after `verify`: 0 pending, 1 ok, 2 tid changed, 3 unblock failed.
    results: [AtomicU8; THREADS],
}

/// Everything recorded before the dump.
struct Before {
    pid: u32,
    dir: PathBuf,
    shared: Arc<Shared>,
    heap: Vec<u64>,
    zeros: Vec<u8>,
    map: Mapping,
    relro: (usize, String, u64),
    timers: Vec<(i32, i32)>,
    data: File,
    tids: Vec<i32>,
    counters: [u64; THREADS],
    fault: bool,
}

/// Runs the workload in `dir`; the process exit status (0 pass, 1 fail).
pub fn run(dir: &Path) -> i32 {
    let mut lines = Vec::new();
    let verdict = setup(dir).and_then(|mut b| {
        wait_go(&mut b)?;
        verify(&mut b, &mut lines)
    });
    let (text, code) = match verdict {
        Ok(()) => ("pass".to_string(), 0),
        Err(why) => (format!("fail: {why}"), 1),
    };
    lines.push(text);
    let _ = publish(dir, REPORT, &(lines.join("\n") + "\n"));
    code
}

/// Writes `name` in one rename, so the reader never sees half of it.
fn publish(dir: &Path, name: &str, text: &str) -> Result<(), String> {
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, text).map_err(|e| format!("write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(name)).map_err(|e| format!("rename {name}: {e}"))
}

fn pattern(seed: u64, i: usize) -> u64 {
    // splitmix64: every word differs, so a misplaced page shows.
    let mut z = seed.wrapping_add((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn sys_err(what: &str, e: crate::sys::Errno) -> String {
    format!("{what}: {e}")
}

fn setup(dir: &Path) -> Result<Before, String> {
    prepare_process(dir)?;
    let pid = std::process::id();
    let seed = u64::from(pid) << 32 | 0x5e1f;
    let heap: Vec<u64> = (0..HEAP_WORDS).map(|i| pattern(seed, i)).collect();
    let map = Mapping::anonymous(MAP_BYTES).map_err(|e| sys_err("mmap", e))?;
    for page in (0..MAP_BYTES / 4096).step_by(2) {
        map.write_bytes(page * 4096, &pattern(seed, page).to_le_bytes());
    }
    let shared = Arc::new(Shared {
        counters: Default::default(),
        tids: Default::default(),
        verify: AtomicBool::new(false),
        results: Default::default(),
    });
    start_workers(&shared)?;
    let timers = create_timers()?;
    let data = open_data(dir)?;
    let relro = relro()?;
    queue_signals(pid, &shared)?;
    let b = Before {
        pid,
        dir: dir.to_path_buf(),
        counters: counters(&shared),
        tids: inspect::task_ids()?,
        shared,
        heap,
        zeros: vec![0u8; ZERO_BYTES],
        map,
        relro,
        timers,
        data,
        fault: std::env::var_os("CREST_FAULT").is_some_and(|v| v == "selftest-verify"),
    };
    let tids: Vec<String> = b.tids.iter().map(i32::to_string).collect();
    publish(dir, READY, &format!("pid {pid}\ntids {}\n", tids.join(" ")))?;
    Ok(b)
}

/// Holds only what crest can dump: /dev/null on 0-2 (crest's doing), no
/// inherited pipes or sockets; dies with crest; the signals to queue
/// blocked in every thread (the workers inherit the mask).
fn prepare_process(dir: &Path) -> Result<(), String> {
    crate::sys::fdtable::close_range(3, u32::MAX).map_err(|e| sys_err("close_range", e))?;
    prctl(PR_SET_PDEATHSIG, SIGKILL as u64, 0, 0, 0).map_err(|e| sys_err("prctl", e))?;
    std::env::set_current_dir(dir).map_err(|e| format!("chdir {}: {e}", dir.display()))?;
    let mask = bit(SHARED_SIGNAL) | bit(THREAD_SIGNAL);
    rt_sigprocmask_setmask(mask).map_err(|e| sys_err("rt_sigprocmask", e))
}

fn start_workers(shared: &Arc<Shared>) -> Result<(), String> {
    for n in 0..THREADS {
        let s = Arc::clone(shared);
        std::thread::Builder::new()
            .name(format!("selftest-{n}"))
            .stack_size(128 << 10)
            .spawn(move || worker(n, &s))
            .map_err(|e| format!("starting a thread: {e}"))?;
    }
    let start = Instant::now();
    while shared.tids.iter().any(|t| t.load(Ordering::SeqCst) == 0) {
        if start.elapsed() > Duration::from_secs(10) {
            return Err("a worker thread did not start".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

fn worker(n: usize, s: &Shared) {
    s.tids[n].store(inspect::own_tid().unwrap_or(-1), Ordering::SeqCst);
    loop {
        s.counters[n].fetch_add(1, Ordering::SeqCst);
        if s.verify.load(Ordering::SeqCst) && s.results[n].load(Ordering::SeqCst) == 0 {
            let r = if inspect::own_tid() != Some(s.tids[n].load(Ordering::SeqCst)) {
                2
            } else if rt_sigprocmask_setmask(0).is_err() {
                3
            } else {
                1
            };
            s.results[n].store(r, Ordering::SeqCst);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn create_timers() -> Result<Vec<(i32, i32)>, String> {
    for clock in [CLOCK_MONOTONIC, CLOCK_REALTIME] {
        let mut id = 0;
        timer_create_none(clock, &mut id).map_err(|e| format!("timer_create: {e}"))?;
    }
    let timers = inspect::timers()?;
    if timers.len() != 2 {
        return Err(format!(
            "created 2 timers, /proc/self/timers shows {timers:?}"
        ));
    }
    Ok(timers)
}

fn data_byte(i: usize) -> u8 {
    b"crest selftest data\n"[i % 20]
}

fn open_data(dir: &Path) -> Result<File, String> {
    let path = dir.join(DATA);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| format!("create {}: {e}", path.display()))?;
    let bytes: Vec<u8> = (0..DATA_BYTES).map(data_byte).collect();
    f.write_all(&bytes)
        .map_err(|e| format!("write {}: {e}", path.display()))?;
    Ok(f)
}

/// The address, protection and a hash of [`WORDS`] as seen now.
fn relro() -> Result<(usize, String, u64), String> {
    let words = std::hint::black_box(&WORDS);
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for w in words {
        for b in (w.as_ptr() as usize)
            .to_le_bytes()
            .iter()
            .chain(w.as_bytes())
        {
            h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    let addr = words.as_ptr() as usize;
    Ok((addr, inspect::perms_at(addr)?, h))
}

fn queue_signals(pid: u32, s: &Shared) -> Result<(), String> {
    let me = pid as i32;
    let info = SigInfo::queued(SHARED_SIGNAL, me, 0, 0x5e1f);
    rt_sigqueueinfo(me, SHARED_SIGNAL, &info).map_err(|e| format!("rt_sigqueueinfo: {e}"))?;
    let tid = s.tids[0].load(Ordering::SeqCst);
    let info = SigInfo::queued(THREAD_SIGNAL, me, 0, 0x7e57);
    rt_tgsigqueueinfo(me, tid, THREAD_SIGNAL, &info)
        .map_err(|e| format!("rt_tgsigqueueinfo: {e}"))?;
    check_pending(tid, true)
}

/// Polls for the go file, noting the counters each time: the last note
/// before the dump is what they must have kept.
fn wait_go(b: &mut Before) -> Result<(), String> {
    let start = Instant::now();
    while !b.dir.join(GO).exists() {
        b.counters = counters(&b.shared);
        if start.elapsed() > GO_TIMEOUT {
            return Err(format!("no go file within {} s", GO_TIMEOUT.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// Every check after the restore; each success adds a line to `ok`.
fn verify(b: &mut Before, ok: &mut Vec<String>) -> Result<(), String> {
    // First, before the slower checks let the workers count on.
    let resumed = counters(&b.shared);
    if b.fault {
        b.heap[HEAP_WORDS / 3] ^= 1 << 17;
    }
    ok.push(format!("ok {}", check_ids(b)?));
    ok.push(format!("ok {}", check_memory(b)?));
    ok.push(format!("ok {}", check_relro(b)?));
    ok.push(format!("ok {}", check_counters(b, resumed)?));
    ok.push(format!("ok {}", check_signals(b)?));
    ok.push(format!("ok {}", check_timers(b)?));
    ok.push(format!("ok {}", check_files(b)?));
    Ok(())
}

fn check_ids(b: &Before) -> Result<String, String> {
    let pid = std::process::id();
    if pid != b.pid {
        return Err(format!("getpid() is {pid}, it was {}", b.pid));
    }
    let now = inspect::task_ids()?;
    if now != b.tids {
        return Err(format!("thread ids are {now:?}, they were {:?}", b.tids));
    }
    Ok(format!("pid {pid} and thread ids {now:?} unchanged"))
}

fn check_memory(b: &Before) -> Result<String, String> {
    let seed = u64::from(b.pid) << 32 | 0x5e1f;
    if let Some(i) = (0..HEAP_WORDS).find(|&i| b.heap[i] != pattern(seed, i)) {
        return Err(format!(
            "heap pattern word {i} (page {}) is {:#x}, expected {:#x}",
            i * 8 / 4096,
            b.heap[i],
            pattern(seed, i)
        ));
    }
    if let Some(i) = b.zeros.iter().position(|&x| x != 0) {
        return Err(format!(
            "byte {i} of the zero-filled MiB is {:#x}",
            b.zeros[i]
        ));
    }
    for off in 0..MAP_BYTES {
        let page = off / 4096;
        let want = match (page % 2, off % 4096) {
            (0, o) if o < 8 => pattern(seed, page).to_le_bytes()[o],
            _ => 0,
        };
        if b.map.read_byte(off) != want {
            return Err(format!("mapping byte {off:#x} is not {want:#x}"));
        }
    }
    Ok("memory: 4 MiB heap pattern, 1 MiB of zeros, a 1 MiB mapping with every other page untouched".into())
}

fn check_relro(b: &Before) -> Result<String, String> {
    let now = relro()?;
    if now != b.relro {
        return Err(format!(
            "read-only data changed: {:#x} {} hash {:#x}, was {:#x} {} hash {:#x}",
            now.0, now.1, now.2, b.relro.0, b.relro.1, b.relro.2
        ));
    }
    // A static PIE built with musl relocates itself but applies no RELRO
    // (the aarch64 build): its relocated data stays writable, and only its
    // content can be checked.
    if b.relro.1.contains('w') {
        return Ok(format!(
            "relocated data at {:#x} intact (this build has no RELRO: it was and is {})",
            now.0, now.1
        ));
    }
    Ok(format!(
        "read-only data (pointers, relocated in a PIE) at {:#x} intact and still {}",
        now.0, now.1
    ))
}

fn counters(s: &Shared) -> [u64; THREADS] {
    std::array::from_fn(|i| s.counters[i].load(Ordering::SeqCst))
}

fn check_counters(b: &Before, first: [u64; THREADS]) -> Result<String, String> {
    if let Some(n) = (0..THREADS).find(|&n| first[n] < b.counters[n]) {
        return Err(format!(
            "thread {n}'s counter is {}, it was {} just before the dump",
            first[n], b.counters[n]
        ));
    }
    // Each must move on; polled, so a slow (emulated) machine is no failure.
    let start = Instant::now();
    let mut now = counters(&b.shared);
    while (0..THREADS).any(|n| now[n] <= first[n]) {
        if start.elapsed() > Duration::from_secs(5) {
            return Err(format!(
                "thread counters stopped: {first:?} then {now:?} 5 s later"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
        now = counters(&b.shared);
    }
    Ok(format!(
        "{THREADS} thread counters kept their values and keep increasing ({:?} just before the dump, {first:?} -> {now:?} after the restore)",
        b.counters
    ))
}

/// Both queued signals pending (`want`) or both gone.
fn check_pending(worker0: i32, want: bool) -> Result<(), String> {
    let shared = inspect::shared_pending()? & bit(SHARED_SIGNAL) != 0;
    let thread = inspect::thread_pending(worker0)? & bit(THREAD_SIGNAL) != 0;
    if shared != want || thread != want {
        return Err(format!(
            "expected SIGWINCH {} for the process and SIGURG for thread {worker0}, found {shared} and {thread}",
            if want { "pending" } else { "delivered" }
        ));
    }
    Ok(())
}

fn check_signals(b: &Before) -> Result<String, String> {
    let worker0 = b.shared.tids[0].load(Ordering::SeqCst);
    check_pending(worker0, true)?;
    b.shared.verify.store(true, Ordering::SeqCst);
    let start = Instant::now();
    while b
        .shared
        .results
        .iter()
        .any(|r| r.load(Ordering::SeqCst) == 0)
    {
        if start.elapsed() > Duration::from_secs(10) {
            return Err("a worker thread stopped running after the restore".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    for (n, r) in b.shared.results.iter().enumerate() {
        match r.load(Ordering::SeqCst) {
            1 => {}
            2 => return Err(format!("worker {n} found its thread id changed")),
            _ => return Err(format!("worker {n} could not unblock its signals")),
        }
    }
    rt_sigprocmask_setmask(0).map_err(|e| format!("rt_sigprocmask: {e}"))?;
    check_pending(worker0, false)?;
    Ok(format!(
        "blocked SIGWINCH (process) and SIGURG (thread {worker0}) still pending, delivered once unblocked; workers kept their tids"
    ))
}

fn check_timers(b: &Before) -> Result<String, String> {
    let now = inspect::timers()?;
    if now != b.timers {
        return Err(format!(
            "POSIX timers (id, clock) are {now:?}, were {:?}",
            b.timers
        ));
    }
    Ok(format!("POSIX timers (id, clock) {now:?} unchanged"))
}

fn check_files(b: &mut Before) -> Result<String, String> {
    let cwd = std::env::current_dir().map_err(|e| format!("getcwd: {e}"))?;
    if cwd != b.dir {
        return Err(format!("cwd is {}, was {}", cwd.display(), b.dir.display()));
    }
    let pos = b
        .data
        .stream_position()
        .map_err(|e| format!("lseek: {e}"))?;
    if pos != DATA_BYTES as u64 {
        return Err(format!("the data file's offset is {pos}, was {DATA_BYTES}"));
    }
    b.data
        .write_all(b"after restore\n")
        .map_err(|e| format!("write to the data file: {e}"))?;
    let text = std::fs::read(b.dir.join(DATA)).map_err(|e| format!("read the data file: {e}"))?;
    let want: Vec<u8> = (0..DATA_BYTES)
        .map(data_byte)
        .chain(b"after restore\n".iter().copied())
        .collect();
    if text != want {
        return Err("the data file does not hold its 1000 bytes then the new line".into());
    }
    Ok(format!(
        "cwd, and the open data file at offset {DATA_BYTES}, written on after restore"
    ))
}
