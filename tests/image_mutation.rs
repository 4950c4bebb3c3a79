//! Deterministic mutation test of the image decoders: every file of a
//! realistic synthesized image is flipped, overwritten, truncated and
//! extended, and record payloads are damaged *behind a recomputed checksum*
//! so the field decoders themselves see the garbage. Decoding must return an
//! error or a value, never panic, never hang (a watchdog bounds the whole
//! run) and never allocate more than a small multiple of its input, measured
//! by a counting global allocator, independently of the decoders' own budget.
//!
//! The allocator is the only unsafe code in the tests: `GlobalAlloc` is an
//! unsafe trait, and each method forwards to `System` unchanged.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::Duration;

use crest::image::crc::crc32c;
use crest::image::dir::{self, ImageDir};
use crest::image::pages::PageIndex;
use crest::image::sample;
use crest::image::show::{self, FileReport, decode_into};
use crest::image::stream::{FRAME_LEN, RecordReader};

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

/// Counts this thread's live heap bytes and their peak.
struct Counting;

fn track(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

// SAFETY: every method forwards to the system allocator with the caller's
// arguments unchanged; the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as our caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            track(layout.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc`/`realloc` above, i.e. from System.
        unsafe { System.dealloc(ptr, layout) };
        track(-(layout.size() as isize));
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        // SAFETY: `ptr` came from System with `layout`; same contract as ours.
        let q = unsafe { System.realloc(ptr, layout, new) };
        if !q.is_null() {
            track(new as isize - layout.size() as isize);
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Heap bytes a decode of `input_len` bytes may use at its peak: decoded
/// structures are a bounded multiple of what was read, plus fixed buffers.
fn allowed(input_len: usize) -> isize {
    (64 * input_len + (1 << 20)) as isize
}

#[derive(Default)]
struct Stats {
    decodes: u64,
    errors: u64,
    worst_ratio: f64,
}

/// Decodes `bytes` both as a whole file and (for page indexes) as an index,
/// checking the allocation peak; returns whether decoding failed.
fn decode(name: &str, bytes: &[u8], what: &str, stats: &mut Stats) -> bool {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut rep = FileReport::new(name);
        let whole = decode_into(bytes, &mut rep);
        let index =
            RecordReader::new(bytes, name).and_then(|mut rr| PageIndex::read(&mut rr).map(|_| ()));
        (whole.is_err(), index.is_err())
    }));
    let peak = PEAK.with(Cell::get) - base;
    let (bad, _) = result.unwrap_or_else(|_| panic!("decoder panicked on {name} {what}"));
    assert!(
        peak <= allowed(bytes.len()),
        "{name} {what}: decoding {} bytes peaked at {peak} heap bytes",
        bytes.len()
    );
    stats.decodes += 1;
    stats.errors += bad as u64;
    stats.worst_ratio = stats
        .worst_ratio
        .max(peak as f64 / bytes.len().max(1) as f64);
    bad
}

/// Offsets and lengths of each record frame of a sound record file.
fn frames(bytes: &[u8], name: &str) -> Vec<(usize, usize)> {
    let mut rr = RecordReader::new(bytes, name).unwrap();
    let mut v = Vec::new();
    while let Some(raw) = rr.next_raw().unwrap() {
        v.push((raw.offset as usize, raw.payload.len()));
    }
    v.push((rr.offset() as usize - (FRAME_LEN + 16 + 4), 16));
    v
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn mutate_file(name: &str, good: &[u8], rng: &mut Rng, stats: &mut Stats) {
    let is_pages = name.starts_with("pages-");
    assert!(
        !decode(name, good, "unmodified", stats),
        "{name} must decode"
    );
    // Only the first page of a pages file is structure; the rest is data.
    let structural = if is_pages {
        4096.min(good.len())
    } else {
        good.len()
    };
    for pos in 0..structural {
        let stride_ok = pos % 5 == 0 || pos < 64;
        for (k, m) in [0x01u8 << (pos % 8), 0xff, 0x80].into_iter().enumerate() {
            if k > 0 && !stride_ok {
                continue;
            }
            let mut b = good.to_vec();
            b[pos] ^= m;
            let bad = decode(name, &b, &format!("xor {m:#x} at {pos}"), stats);
            // A record file protects every byte with a CRC; a pages file's
            // header page is checked for its CRC and its zero padding.
            assert!(bad, "{name}: xor {m:#x} at {pos} went unnoticed");
        }
    }
    let cut_step = if is_pages { 97 } else { 1 };
    for len in (0..good.len()).step_by(cut_step) {
        let bad = decode(name, &good[..len], &format!("cut to {len}"), stats);
        assert!(
            bad || (is_pages && len % 4096 == 0 && len > 0),
            "{name}: cut to {len} went unnoticed"
        );
    }
    for n in [1usize, 3, 8, 12, 64, 4096] {
        let mut b = good.to_vec();
        b.extend((0..n).map(|_| rng.next() as u8));
        let bad = decode(name, &b, &format!("extended by {n}"), stats);
        assert!(
            bad || (is_pages && n % 4096 == 0),
            "{name}: {n} extra bytes went unnoticed"
        );
    }
    if !is_pages {
        mutate_payloads(name, good, rng, stats);
    }
}

/// Damages record payloads and fixes up their CRC, so the field decoders,
/// not the checksum, must cope.
fn mutate_payloads(name: &str, good: &[u8], rng: &mut Rng, stats: &mut Stats) {
    for (off, len) in frames(good, name) {
        let refix = |b: &mut Vec<u8>, new_len: usize| {
            b[off + 4..off + 8].copy_from_slice(&(new_len as u32).to_le_bytes());
            let end = off + FRAME_LEN + new_len;
            let crc = crc32c(&b[off..end]);
            b[end..end + 4].copy_from_slice(&crc.to_le_bytes());
        };
        let step = (len / 200).max(1);
        for pos in (0..len).step_by(step) {
            for m in [0x01u8 << (pos % 8), 0xff, rng.next() as u8 | 1] {
                let mut b = good.to_vec();
                b[off + FRAME_LEN + pos] ^= m;
                refix(&mut b, len);
                decode(
                    name,
                    &b,
                    &format!("payload xor {m:#x} at {off}+{pos}"),
                    stats,
                );
            }
        }
        // Shorter payloads (trailing fields missing) behind a valid frame.
        for cut in (0..len).step_by(step) {
            let mut b = good[..off + FRAME_LEN + cut].to_vec();
            b.extend_from_slice(&[0; 4]);
            b.extend_from_slice(&good[off + FRAME_LEN + len + 4..]);
            refix(&mut b, cut);
            decode(name, &b, &format!("payload cut to {cut} at {off}"), stats);
        }
    }
}

fn sample_dir(tag: &str) -> (PathBuf, Vec<String>) {
    let base = std::env::temp_dir().join(format!("crest-mutation-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let d = ImageDir::create(&base).unwrap();
    let parent = ImageDir::create(base.join("parent")).unwrap();
    sample::write_image(&parent, None, 1).unwrap();
    let child = ImageDir::create(base.join("child")).unwrap();
    let mut info = sample::write_image(&child, Some("../parent"), 2).unwrap();
    info.files.sort();
    let _ = d;
    (base, info.files)
}

#[test]
fn mutated_images_are_refused_without_panic_hang_or_excess_allocation() {
    let (base, files) = sample_dir("decode");
    let dir = base.join("child");
    let inputs: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|f| (f.clone(), std::fs::read(dir.join(f)).unwrap()))
        .collect();
    assert!(inputs.iter().any(|(n, _)| n == dir::INVENTORY));
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let mut stats = Stats::default();
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        for (name, bytes) in &inputs {
            mutate_file(name, bytes, &mut rng, &mut stats);
        }
        let _ = tx.send(());
        stats
    });
    // A hang anywhere shows up here instead of stalling the test run.
    let finished = rx.recv_timeout(Duration::from_secs(300));
    let _ = std::fs::remove_dir_all(&base);
    assert!(
        finished.is_ok(),
        "mutation decoding did not finish in 300 s (hang?)"
    );
    let stats = worker
        .join()
        .unwrap_or_else(|_| panic!("the mutation worker panicked"));
    assert!(stats.decodes > 20_000, "only {} decodes", stats.decodes);
    assert!(
        stats.errors > stats.decodes / 2,
        "{} errors in {} decodes",
        stats.errors,
        stats.decodes
    );
    eprintln!(
        "{} mutated decodes, {} refused, worst heap peak {:.1}x the input",
        stats.decodes, stats.errors, stats.worst_ratio
    );
}

#[test]
fn a_lying_length_allocates_only_what_arrives() {
    // A frame claiming a 60 MiB payload followed by 10 bytes: the reader must
    // not reserve 60 MiB for it.
    let mut b = crest::image::header::Header::new(
        crest::image::header::FileKind::Files,
        crest::image::header::Arch::host(),
        4096,
    )
    .encode()
    .to_vec();
    b.extend_from_slice(&14u16.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&(60u32 << 20).to_le_bytes());
    b.extend_from_slice(&[0xab; 10]);
    let mut stats = Stats::default();
    assert!(decode("lying.img", &b, "60 MiB claim", &mut stats));
    assert!(
        stats.worst_ratio * (b.len() as f64) < (1 << 20) as f64,
        "peak {}x",
        stats.worst_ratio
    );
}

/// `crest show DIR` cross-checks files against each other (index against
/// pages file, child against parent): damage behind valid checksums and
/// missing files must give an error naming a file, never a panic.
#[test]
fn show_survives_damaged_and_missing_files_in_a_directory() {
    let (base, files) = sample_dir("show");
    let child = base.join("child");
    let mut rng = Rng(0xfeed_0002);
    let mut runs = 0;
    for name in files
        .iter()
        .filter(|f| f.starts_with("pagemap-") || *f == dir::INVENTORY)
    {
        let path = child.join(name);
        let good = std::fs::read(&path).unwrap();
        for (off, len) in frames(&good, name) {
            for pos in 0..len {
                let mut b = good.clone();
                b[off + FRAME_LEN + pos] ^= rng.next() as u8 | 1;
                let end = off + FRAME_LEN + len;
                let crc = crc32c(&b[off..end]);
                b[end..end + 4].copy_from_slice(&crc.to_le_bytes());
                std::fs::write(&path, &b).unwrap();
                let mut out = Vec::new();
                let r = catch_unwind(AssertUnwindSafe(|| {
                    show::run(&child, pos % 2 == 0, &mut out)
                }));
                let r =
                    r.unwrap_or_else(|_| panic!("show panicked: {name} payload byte {off}+{pos}"));
                if let Err(e) = r {
                    assert!(e.to_string().contains(".img"), "{e}");
                }
                runs += 1;
            }
        }
        std::fs::write(&path, &good).unwrap();
    }
    for name in &files {
        let path = child.join(name);
        let good = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let mut out = Vec::new();
        let e = show::run(&child, false, &mut out).unwrap_err().to_string();
        let text = String::from_utf8(out).unwrap();
        assert!(
            e.contains(".img") && text.contains("!! "),
            "{name} missing: {e}\n{text}"
        );
        std::fs::write(&path, &good).unwrap();
    }
    let _ = std::fs::remove_dir_all(&base);
    assert!(runs > 300, "{runs}");
}
