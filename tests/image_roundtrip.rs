//! Round trips through the image format: every record kind, the framing's
//! compatibility rules, the page store, image directories and `crest show`.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;

use crest::image::codec::Writer;
use crest::image::dir::{self, ImageDir};
use crest::image::header::{Arch, FileKind, Header};
use crest::image::pagemap::{RunKind, Space};
use crest::image::pages::{Located, PageIndex, PageWriter, locate};
use crest::image::record::{self, AnyRecord};
use crest::image::sample;
use crest::image::stream::{MUST_UNDERSTAND, RecordReader, RecordWriter};
use crest::image::{crc::crc32c, show};

/// A fresh directory under the temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("crest-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn header(kind: FileKind) -> Header {
    Header::new(kind, Arch::host(), 4096)
}

/// Writes `records` to an in-memory file and reads them back.
fn through_stream(records: &[AnyRecord]) -> Vec<AnyRecord> {
    let mut w = RecordWriter::new(Vec::new(), "mem.img", header(FileKind::Task)).unwrap();
    for r in records {
        let mut p = Writer::new();
        r.encode(&mut p);
        w.write_raw(r.kind(), 0, p.as_bytes()).unwrap();
    }
    let bytes = w.finish().unwrap();
    let mut rr = RecordReader::new(&bytes[..], "mem.img").unwrap();
    let mut out = Vec::new();
    while let Some(raw) = rr.next_known().unwrap() {
        out.push(AnyRecord::decode(&raw, "mem.img").unwrap());
    }
    rr.expect_eof().unwrap();
    assert_eq!(rr.end().unwrap().records, records.len() as u64);
    out
}

#[test]
fn every_record_kind_round_trips() {
    let all = sample::every_record();
    let kinds: std::collections::BTreeSet<u16> = all.iter().map(AnyRecord::kind).collect();
    let known: std::collections::BTreeSet<u16> = record::known_kinds().collect();
    assert_eq!(kinds, known, "the sample must cover every kind");
    assert_eq!(through_stream(&all), all);
    for r in &all {
        let mut p = Writer::new();
        r.encode(&mut p);
        assert_eq!(&record::decode_payload(r.kind(), p.as_bytes()).unwrap(), r);
    }
}

#[test]
fn trailing_fields_and_unknown_kinds_are_skipped() {
    let all = sample::every_record();
    let mut w = RecordWriter::new(Vec::new(), "m", header(FileKind::Task)).unwrap();
    for r in &all {
        let mut p = Writer::new();
        r.encode(&mut p);
        p.raw(b"field added by crest 1.7");
        w.write_raw(r.kind(), 0, p.as_bytes()).unwrap();
        w.write_raw(900, 0, b"a record kind from the future")
            .unwrap();
    }
    let bytes = w.finish().unwrap();
    let mut rr = RecordReader::new(&bytes[..], "m").unwrap();
    let mut got = Vec::new();
    while let Some(raw) = rr.next_known().unwrap() {
        got.push(AnyRecord::decode(&raw, "m").unwrap());
    }
    assert_eq!(got, all);
}

#[test]
fn an_unknown_kind_marked_must_understand_is_refused() {
    let mut w = RecordWriter::new(Vec::new(), "m", header(FileKind::Mm)).unwrap();
    w.write_raw(901, MUST_UNDERSTAND, b"x").unwrap();
    let bytes = w.finish().unwrap();
    let mut rr = RecordReader::new(&bytes[..], "m").unwrap();
    let e = rr.next_known().unwrap_err();
    assert_eq!(e.offset, 32);
    assert!(e.problem.contains("901"), "{e}");
}

#[test]
fn a_cut_or_padded_file_is_never_complete() {
    let all = sample::every_record();
    let mut w = RecordWriter::new(Vec::new(), "m", header(FileKind::Task)).unwrap();
    for r in &all {
        let mut p = Writer::new();
        r.encode(&mut p);
        w.write_raw(r.kind(), 0, p.as_bytes()).unwrap();
    }
    let bytes = w.finish().unwrap();
    // Cut exactly at the start of the end record: every record is sound but
    // the file must still be refused.
    let end_at = bytes.len() - (8 + 16 + 4);
    let mut rr = RecordReader::new(&bytes[..end_at], "m").unwrap();
    let mut n = 0;
    let e = loop {
        match rr.next_known() {
            Ok(Some(_)) => n += 1,
            Ok(None) => panic!("a cut file was taken as complete"),
            Err(e) => break e,
        }
    };
    assert_eq!((n, e.offset), (all.len(), end_at as u64));
    assert!(e.problem.contains("end record"), "{e}");
    let mut padded = bytes.clone();
    padded.push(0);
    let mut rr = RecordReader::new(&padded[..], "m").unwrap();
    while rr.next_known().unwrap().is_some() {}
    assert!(rr.expect_eof().is_err());
}

#[test]
fn page_store_round_trip_with_a_parent_chain() {
    let tmp = TempDir::new("pages");
    ImageDir::create(&tmp.0).unwrap();
    let parent = ImageDir::create(tmp.0.join("pre")).unwrap();
    sample::write_image(&parent, None, 1).unwrap();
    let child = ImageDir::create(tmp.0.join("final")).unwrap();
    let info = sample::write_image(&child, Some("../pre"), 2).unwrap();
    let ps = dir::host_page_size() as u64;
    // Heap pages 0-3 in parent, 4-6 zero (two add_zero calls merged), 8 stored
    // with a CRC, 9-10 written by a closure (no CRC), 2 stack pages.
    assert_eq!(
        (info.pages.present, info.pages.parent, info.pages.zero),
        (5, 4, 3)
    );
    let chain = [
        PageIndex::load(&child, &dir::pagemap_file(sample::ROOT)).unwrap(),
        PageIndex::load(&parent, &dir::pagemap_file(sample::ROOT)).unwrap(),
    ];
    assert_eq!(
        chain[0].runs.len(),
        5,
        "zero runs merge, stored runs with CRCs do not"
    );
    assert_eq!(chain[0].runs[1].kind, RunKind::Zero);
    assert_eq!(chain[0].runs[1].nr_pages, 3);
    let data = [
        child.open_file(&dir::pages_file(sample::ROOT)).unwrap(),
        parent.open_file(&dir::pages_file(sample::ROOT)).unwrap(),
    ];
    let check = |vaddr: u64, want: Option<Vec<u8>>| {
        let got = match locate(&chain, vaddr).unwrap() {
            Located::Stored { level, run, page } => {
                let mut buf = vec![0u8; (run.nr_pages * ps) as usize];
                chain[level].read_run(&data[level], run, &mut buf).unwrap();
                let at = (page * ps) as usize;
                Some(buf[at..at + ps as usize].to_vec())
            }
            Located::Zero => Some(vec![0u8; ps as usize]),
            Located::Absent => None,
        };
        assert_eq!(got, want, "page {vaddr:#x}");
    };
    let pattern = |i: u64, g: u8| Some(sample::page_pattern(sample::HEAP + i * ps, g, ps as usize));
    for i in 0..4 {
        check(sample::HEAP + i * ps, pattern(i, 1));
    }
    for i in 4..7 {
        check(sample::HEAP + i * ps, Some(vec![0u8; ps as usize]));
    }
    check(sample::HEAP + 7 * ps, None);
    for i in 8..11 {
        check(sample::HEAP + i * ps, pattern(i, 2));
    }
    // A page marked as in the parent, with no parent: a clear error.
    assert!(
        locate(&chain[..1], sample::HEAP)
            .unwrap_err()
            .contains("parent")
    );
}

#[test]
fn pages_are_page_aligned_and_the_index_states_the_data_size() {
    let mut w = PageWriter::new(
        Vec::new(),
        "pm",
        Vec::new(),
        "pg",
        Arch::X86_64,
        4096,
        Space::Process(9),
    )
    .unwrap();
    w.add_pages(0x1000, &[7u8; 4096]).unwrap();
    w.add_zero(0x3000, 1).unwrap();
    w.add_pages(0x10000, &[8u8; 8192]).unwrap();
    // Out of order, unaligned and partial pages are refused at write time.
    assert!(w.add_pages(0x2000, &[0u8; 4096]).is_err());
    assert!(w.add_zero(0x20001, 1).is_err());
    assert!(w.add_pages(0x30000, &[0u8; 100]).is_err());
    let (index, data) = w.finish().unwrap();
    assert_eq!(data.len(), 4096 * 4);
    // A short fill breaks the store for good: it never gets its end record.
    let mut short = PageWriter::new(
        Vec::new(),
        "pm",
        Vec::new(),
        "pg",
        Arch::X86_64,
        4096,
        Space::Process(9),
    )
    .unwrap();
    assert!(short.add_pages_with(0x40000, 1, |_, _| Ok(10)).is_err());
    assert!(short.add_zero(0x50000, 1).is_err());
    assert!(short.finish().is_err());
    assert_eq!(&data[..8], b"CRESTIMG");
    assert_eq!(&data[4096..8192], &[7u8; 4096][..]);
    assert_eq!(&data[8192..], &[8u8; 8192][..]);
    let mut rr = RecordReader::new(&index[..], "pm").unwrap();
    let idx = PageIndex::read(&mut rr).unwrap();
    assert_eq!(idx.data_bytes, data.len() as u64);
    assert_eq!(idx.runs[2].pages_off, 1);
    assert_eq!(idx.runs[2].crc, Some(crc32c(&[8u8; 8192])));
    assert_eq!(
        idx.find(0x11000).map(|(r, p)| (r.vaddr, p)),
        Some((0x10000, 1))
    );
    assert!(idx.find(0x2000).is_none());
}

#[test]
fn image_dir_creates_0700_and_files_0600() {
    let tmp = TempDir::new("modes");
    let d = ImageDir::create(&tmp.0).unwrap();
    let info = sample::write_image(&d, None, 1).unwrap();
    assert_eq!(fs::metadata(&tmp.0).unwrap().mode() & 0o7777, 0o700);
    for f in &info.files {
        let m = fs::metadata(tmp.0.join(f)).unwrap().mode();
        assert_eq!(m & 0o7777, 0o600, "{f}");
    }
    let mut listed = d.list().unwrap();
    let mut written = info.files.clone();
    assert_eq!(listed[0], dir::INVENTORY);
    listed.sort();
    written.sort();
    assert_eq!(listed, written);
    // An existing directory keeps the mode its owner gave it.
    fs::set_permissions(&tmp.0, fs::Permissions::from_mode(0o750)).unwrap();
    ImageDir::create(&tmp.0).unwrap();
    assert_eq!(fs::metadata(&tmp.0).unwrap().mode() & 0o7777, 0o750);
}

fn show_to_string(path: &std::path::Path, json: bool) -> (Result<i32, crest::Error>, String) {
    let mut out = Vec::new();
    let r = show::run(path, json, &mut out);
    (r, String::from_utf8(out).unwrap())
}

#[test]
fn show_prints_tree_vmas_fds_and_page_totals() {
    let tmp = TempDir::new("show");
    let d = ImageDir::create(&tmp.0).unwrap();
    sample::write_image(&d, None, 1).unwrap();
    let (r, text) = show_to_string(&tmp.0, false);
    assert_eq!(r.unwrap(), 0, "{text}");
    for want in [
        "4242 (running) pgid 4242 sid 4000 threads 4242,4243",
        "└─ 4250 (stopped by signal 19)",
        "└─ 4251 (zombie, exit status 0x100)",
        "START",
        "0x0000555555700000 0x0000555555800000 rw-  anon",
        "[vvar_vclock]",
        "/usr/bin/victim",
        "fd 7    reg  /var/log/victim.log flags=0o2101 pos=12 cloexec",
        "pages of process 4242 in pages-4242.img: 5 runs, 9 stored (36.0 KiB), 0 in parent, 3 zero",
        "summary: processes=3 threads=3 vmas=18 fds=8 pages_stored=10",
        "2026-11-25 23:59:59 UTC",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    let (r, json) = show_to_string(&tmp.0, true);
    assert_eq!(r.unwrap(), 0);
    assert!(
        json.starts_with("{\"path\":") && json.ends_with("\"ok\":true}\n"),
        "{json}"
    );
    assert!(json.contains("\"record\":\"vma\""));
    assert!(json.contains("\"pages_stored\":10"));
    let single = tmp.0.join(dir::mm_file(sample::ROOT));
    let (r, text) = show_to_string(&single, false);
    assert_eq!(r.unwrap(), 0);
    assert!(
        text.contains("[stack]") && text.contains("vmas=9"),
        "{text}"
    );
}

#[test]
fn show_prints_a_damaged_image_up_to_the_damage() {
    let tmp = TempDir::new("damaged");
    let d = ImageDir::create(&tmp.0).unwrap();
    sample::write_image(&d, None, 1).unwrap();
    let mm = tmp.0.join(dir::mm_file(sample::ROOT));
    let orig = fs::read(&mm).unwrap();
    let mut bytes = orig.clone();
    // Find the 4th vma record by reading the good file, then corrupt its payload.
    let mut rr = RecordReader::new(&bytes[..], "mm").unwrap();
    let offsets: Vec<u64> =
        std::iter::from_fn(|| rr.next_raw().unwrap().map(|r| r.offset)).collect();
    let bad = offsets[4] as usize;
    bytes[bad + 20] ^= 0x40;
    fs::write(&mm, &bytes).unwrap();
    let (r, text) = show_to_string(&tmp.0, false);
    let e = match r {
        Err(crest::Error::Image(e)) => e,
        other => panic!("expected an image error, got {other:?}"),
    };
    assert_eq!((e.file.as_str(), e.offset), ("mm-4242.img", bad as u64));
    assert!(e.problem.contains("checksum"), "{e}");
    // The three sound vmas are printed, the damage is named after them.
    let section = &text[text.find("mm-4242.img (").unwrap()..];
    let section = &section[..section.find("\n\n").unwrap_or(section.len())];
    assert_eq!(section.matches("\n  0x").count(), 3, "{section}");
    assert!(section.contains(&format!("!! image mm-4242.img is damaged at offset {bad}")));
    // A flipped page breaks its run's checksum, found by show on the directory.
    let pages = tmp.0.join(dir::pages_file(sample::ROOT));
    let mut p = fs::read(&pages).unwrap();
    let ps = dir::host_page_size() as usize;
    p[ps + 5] ^= 1;
    fs::write(&pages, &p).unwrap();
    fs::write(&mm, &orig).unwrap();
    let (r, text) = show_to_string(&tmp.0, true);
    let e = match r {
        Err(crest::Error::Image(e)) => e,
        other => panic!("expected an image error, got {other:?}"),
    };
    assert_eq!((e.file.as_str(), e.offset), ("pages-4242.img", ps as u64));
    assert!(
        text.contains("fails its checksum") && text.contains("\"ok\":false"),
        "{text}"
    );
}

#[test]
fn the_cli_shows_an_image_and_exits_1_on_damage() {
    let tmp = TempDir::new("cli");
    let d = ImageDir::create(&tmp.0).unwrap();
    sample::write_image(&d, None, 1).unwrap();
    let bin = env!("CARGO_BIN_EXE_crest");
    let out = std::process::Command::new(bin)
        .arg("show")
        .arg(&tmp.0)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("threads=3"));
    let f = tmp.0.join(dir::PSTREE);
    let len = fs::metadata(&f).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let out = std::process::Command::new(bin)
        .args(["show", "--json"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pstree.img is damaged at offset") && err.contains("truncated"),
        "{err}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.matches("\"record\":\"process\"").count(),
        3,
        "{stdout}"
    );
}

#[test]
fn whole_file_loaders_return_what_was_written_and_check_structure() {
    use crest::image::load::{self, FilesImage, MmImage, TaskImage};
    use crest::image::pstree::{Process, TaskState};
    let tmp = TempDir::new("load");
    let d = ImageDir::create(&tmp.0).unwrap();
    sample::write_image(&d, None, 1).unwrap();
    assert_eq!(load::load_inventory(&d).unwrap(), sample::inventory(None));
    let tree = load::load_pstree(&d).unwrap();
    assert_eq!(
        tree.iter().map(|p| p.pid).collect::<Vec<_>>(),
        [sample::ROOT, sample::STOPPED, sample::ZOMBIE]
    );
    let task = TaskImage::load(&d, sample::ROOT).unwrap();
    assert_eq!(task, sample::task_image(&tree[0]));
    assert_eq!(task.threads.len(), 2);
    assert_eq!(MmImage::load(&d, sample::ROOT).unwrap(), sample::mm_image());
    assert_eq!(
        FilesImage::load(&d, sample::ROOT).unwrap(),
        sample::files_image()
    );
    // Structure errors, each sound record by record.
    let mut bad_mm = sample::mm_image();
    bad_mm.vmas.swap(0, 1);
    bad_mm.write(&d, 1).unwrap();
    let e = MmImage::load(&d, 1).unwrap_err().to_string();
    assert!(e.contains("overlaps or precedes"), "{e}");
    let mut no_leader = sample::task_image(&tree[0]);
    no_leader.threads.reverse();
    no_leader.write(&d, sample::ROOT).unwrap();
    assert!(
        TaskImage::load(&d, sample::ROOT)
            .unwrap_err()
            .to_string()
            .contains("leader")
    );
    let orphan = Process {
        pid: 9,
        ppid: 8,
        pgid: 9,
        sid: 9,
        state: TaskState::Running,
        threads: vec![9],
    };
    load::write_file(
        &d,
        dir::PSTREE,
        FileKind::Pstree,
        &[tree[0].clone(), orphan],
    )
    .unwrap();
    assert!(
        load::load_pstree(&d)
            .unwrap_err()
            .to_string()
            .contains("before its parent")
    );
    fs::copy(
        tmp.0.join(dir::mm_file(sample::ROOT)),
        tmp.0.join(dir::files_file(7)),
    )
    .unwrap();
    let e = FilesImage::load(&d, 7).unwrap_err().to_string();
    assert!(
        e.contains("this is a mm file, a files file was expected"),
        "{e}"
    );
}
