//! `crest show DIR|FILE [--json]`: decodes any image for people or programs.
//!
//! Each file is decoded record by record until its end or the first damage;
//! everything sound is printed, then the damage is named (file, offset, what
//! is wrong) and the exit status is 1. For a directory, every file is shown
//! and the page store is cross-checked: each pages file must have the size
//! its index states and every stored run's data must match its CRC32C.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::Path;

use super::header::{FileKind, Header};
use super::pagemap::RunKind;
use super::pages::{PageIndex, PageTotals};
use super::record::AnyRecord;
use super::stream::RecordReader;
use super::value::{Value, json_str};
use super::{ImageDir, ImageError};
use crate::error::{Error, Result};

/// What was read from one file.
#[derive(Debug)]
pub struct FileReport {
    /// The file name.
    pub name: String,
    /// The header, if it was sound.
    pub header: Option<Header>,
    /// Sound records with their offsets.
    pub records: Vec<(u64, AnyRecord)>,
    /// For a pages file: how many pages it holds.
    pub pages: Option<u64>,
    /// The first damage found.
    pub error: Option<ImageError>,
}

impl FileReport {
    /// An empty report for `name`.
    pub fn new(name: &str) -> FileReport {
        FileReport {
            name: name.to_string(),
            header: None,
            records: Vec::new(),
            pages: None,
            error: None,
        }
    }

    /// Page counts of a pagemap file's runs.
    pub fn page_totals(&self) -> PageTotals {
        let mut t = PageTotals::default();
        for (_, r) in &self.records {
            if let AnyRecord::PageRun(run) = r {
                t.add(run);
            }
        }
        t
    }
}

/// Runs `crest show` on `path`; returns the exit status.
pub fn run(path: &Path, json: bool, out: &mut dyn Write) -> Result<i32> {
    if !path.exists() {
        let e = std::io::Error::from(std::io::ErrorKind::NotFound);
        return Err(Error::io("open", path, e));
    }
    let reports = if path.is_dir() {
        let d = ImageDir::open(path)?;
        let mut reports: Vec<FileReport> = d
            .list()?
            .iter()
            .map(|name| read_file(&path.join(name), name))
            .collect();
        for (name, why) in missing_files(&reports) {
            let mut missing = FileReport::new(&name);
            let problem =
                format!("file is missing: {why} (the dump did not finish, or it was lost)");
            missing.error = Some(ImageError::new(&name, 0, problem));
            reports.push(missing);
        }
        cross_check(&d, &mut reports);
        reports
    } else {
        vec![read_file(path, &path.display().to_string())]
    };
    let text = if json {
        render_json(path, &reports)
    } else {
        super::show_text::render(path, &reports)
    };
    // A closed stdout (`crest show DIR | head`) is not worth an error.
    let _ = out.write_all(text.as_bytes());
    match reports.into_iter().find_map(|r| r.error) {
        Some(e) => Err(Error::Image(e)),
        None => Ok(0),
    }
}

/// Files the sound records say must exist but are not in `reports`.
fn missing_files(reports: &[FileReport]) -> Vec<(String, String)> {
    use super::dir::{self as names, INVENTORY, PSTREE};
    let records = || {
        reports
            .iter()
            .flat_map(|r| r.records.iter().map(|(_, rec)| rec))
    };
    let mut need: Vec<(String, String)> = vec![(INVENTORY.into(), "every image has one".into())];
    let full = records().any(
        |r| matches!(r, AnyRecord::Inventory(i) if i.kind == super::inventory::ImageKind::Dump),
    );
    if full {
        need.push((PSTREE.into(), "a full dump has one".into()));
    }
    for r in records() {
        match r {
            AnyRecord::Process(p) if full && !p.threads.is_empty() => {
                let why = format!("process {} needs it", p.pid);
                for n in [
                    names::task_file(p.pid),
                    names::mm_file(p.pid),
                    names::files_file(p.pid),
                ] {
                    need.push((n, why.clone()));
                }
                need.push((names::pagemap_file(p.pid), why));
            }
            AnyRecord::Vma(v) => {
                if let super::vma::Backing::AnonShared { shmid } = v.backing {
                    let why = format!("the shared mapping at {:#x} needs it", v.start);
                    need.push((names::shmem_pagemap_file(shmid), why));
                }
            }
            AnyRecord::PagemapHead(h) => {
                need.push((h.pages_file.clone(), "its page index needs it".into()));
            }
            _ => {}
        }
    }
    let mut out: Vec<(String, String)> = Vec::new();
    for (n, why) in need {
        if !reports.iter().any(|r| r.name == n) && !out.iter().any(|(m, _)| *m == n) {
            out.push((n, why));
        }
    }
    out
}

/// Decodes one file as far as it is sound.
pub fn read_file(path: &Path, name: &str) -> FileReport {
    let mut rep = FileReport::new(name);
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            rep.error = Some(ImageError::new(name, 0, format!("cannot open: {e}")));
            return rep;
        }
    };
    if let Err(e) = decode_into(BufReader::with_capacity(64 << 10, file), &mut rep) {
        rep.error = Some(e);
    }
    rep
}

/// Decodes a stream into `rep`, keeping every sound record.
pub fn decode_into(input: impl Read, rep: &mut FileReport) -> Result<(), ImageError> {
    let name = rep.name.clone();
    let mut input = input;
    let header = Header::read(&mut input, &name)?;
    rep.header = Some(header);
    if header.kind == FileKind::Pages {
        rep.pages = Some(read_pages(input, &header, &name)?);
        return Ok(());
    }
    let mut rr = RecordReader::with_header(input, &name, header);
    while let Some(raw) = rr.next_known()? {
        let rec = AnyRecord::decode(&raw, &name)?;
        rep.records.push((raw.offset, rec));
    }
    rr.expect_eof()
}

/// Checks a pages file's padding and size; returns its page count.
fn read_pages(mut input: impl Read, h: &Header, name: &str) -> Result<u64, ImageError> {
    let ps = h.page_size as u64;
    let mut pad = vec![0u8; ps as usize - h.len];
    super::header::read_full(&mut input, &mut pad, name, h.len as u64)?;
    if let Some(i) = pad.iter().position(|b| *b != 0) {
        return Err(ImageError::new(
            name,
            (h.len + i) as u64,
            "header padding is not zero",
        ));
    }
    let mut total = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(ImageError::new(
                    name,
                    ps + total,
                    format!("read failed: {e}"),
                ));
            }
        }
    }
    if total % ps != 0 {
        return Err(ImageError::new(
            name,
            ps + total - total % ps,
            format!("pages file ends inside a page ({} stray bytes)", total % ps),
        ));
    }
    Ok(total / ps)
}

/// Checks every sound pagemap against itself, its pages file (size and
/// CRCs) and, for an incremental image, its parent's index.
fn cross_check(d: &ImageDir, reports: &mut [FileReport]) {
    let parent = reports.iter().find_map(|r| {
        r.records.iter().find_map(|(_, rec)| match rec {
            AnyRecord::Inventory(inv) => inv.parent.clone(),
            _ => None,
        })
    });
    for i in 0..reports.len() {
        let is_pagemap = reports[i]
            .header
            .is_some_and(|h| h.kind == FileKind::Pagemap);
        if reports[i].error.is_some() || !is_pagemap {
            continue;
        }
        let name = reports[i].name.clone();
        let result = PageIndex::load(d, &name).and_then(|idx| {
            check_crcs(d, &idx)?;
            match &parent {
                Some(rel) => Ok(check_parent(d, rel, &name, &idx)?),
                None => Ok(()),
            }
        });
        let Err(e) = result else { continue };
        let e = match e {
            Error::Image(e) => e,
            other => ImageError::new(&name, 0, other.to_string()),
        };
        let j = reports.iter().position(|r| r.name == e.file).unwrap_or(i);
        if reports[j].error.is_none() {
            reports[j].error = Some(e);
        }
    }
}

/// Every run marked as in the parent must be covered by the parent's index
/// of the same address space.
fn check_parent(d: &ImageDir, rel: &str, name: &str, idx: &PageIndex) -> Result<(), ImageError> {
    let broken = |why: String| ImageError::new(name, 0, why);
    let pdir = d
        .parent(rel)
        .map_err(|e| broken(format!("the parent image {rel} cannot be opened: {e}")))?;
    let pidx = PageIndex::load(&pdir, name)
        .map_err(|e| broken(format!("the parent's index cannot be used: {e}")))?;
    for run in idx.runs.iter().filter(|r| r.kind == RunKind::Parent) {
        // Runs were checked not to wrap when the index was read.
        let end = run.vaddr + run.nr_pages * idx.page_size;
        let mut at = run.vaddr;
        while at < end {
            let Some((prun, _)) = pidx.find(at) else {
                return Err(broken(format!(
                    "page {at:#x} is marked as in the parent image {rel}, which does not have it"
                )));
            };
            at = prun.vaddr + prun.nr_pages * pidx.page_size;
        }
    }
    Ok(())
}

/// Reads every stored run that has a CRC, a page at a time, and checks it.
fn check_crcs(d: &ImageDir, idx: &PageIndex) -> Result<()> {
    let name = &idx.head.pages_file;
    let file = d.open_file(name)?;
    let mut buf = vec![0u8; idx.page_size as usize];
    for run in idx.runs.iter().filter(|r| r.kind == RunKind::Present) {
        let Some(crc) = run.crc else { continue };
        let mut c = super::crc::Crc32c::default();
        for k in 0..run.nr_pages {
            let off = idx.data_offset(run, k);
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf, off)
                .map_err(|e| ImageError::new(name, off, format!("cannot read page data: {e}")))?;
            c.update(&buf);
        }
        if c.finish() != crc {
            return Err(Error::Image(ImageError::new(
                name,
                idx.data_offset(run, 0),
                format!(
                    "page data of the run at {:#x} fails its checksum",
                    run.vaddr
                ),
            )));
        }
    }
    Ok(())
}

fn render_json(path: &Path, reports: &[FileReport]) -> String {
    let mut s = String::from("{\"path\":");
    json_str(&mut s, &path.display().to_string());
    s.push_str(",\"files\":[");
    for (i, rep) in reports.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        file_json(rep).json(&mut s);
    }
    s.push_str("],\"summary\":");
    super::show_text::summary(reports).json(&mut s);
    s.push_str(",\"ok\":");
    s.push_str(if reports.iter().all(|r| r.error.is_none()) {
        "true"
    } else {
        "false"
    });
    s.push_str("}\n");
    s
}

fn file_json(rep: &FileReport) -> Value {
    let mut v = vec![("file", Value::Str(rep.name.clone()))];
    if let Some(h) = &rep.header {
        v.push(("kind", Value::Str(h.kind.name())));
        v.push(("format", Value::Str(format!("{}.{}", h.major, h.minor))));
        v.push(("arch", Value::Str(h.arch.name())));
        v.push(("page_size", Value::U(h.page_size as u64)));
    }
    if let Some(p) = rep.pages {
        v.push(("pages", Value::U(p)));
    }
    let records = rep
        .records
        .iter()
        .map(|(off, r)| {
            let mut fields = vec![
                ("record", Value::Str(r.name().into())),
                ("offset", Value::U(*off)),
            ];
            if let Value::Obj(f) = r.to_value() {
                fields.extend(f);
            }
            Value::Obj(fields)
        })
        .collect();
    v.push(("records", Value::List(records)));
    let err = rep.error.as_ref().map_or(Value::Null, |e| {
        Value::Obj(vec![
            ("file", Value::Str(e.file.clone())),
            ("offset", Value::U(e.offset)),
            ("problem", Value::Str(e.problem.clone())),
            ("message", Value::Str(e.to_string())),
        ])
    });
    v.push(("error", err));
    Value::Obj(v)
}
