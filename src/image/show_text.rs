//! The text form of `crest show`: the process tree drawn as a tree, VMAs as
//! a table, one line per fd, page totals per index, one line per other
//! record, and a summary; damage is printed where it was found.

use std::fmt::Write as _;
use std::path::Path;

use super::record::AnyRecord;
use super::show::FileReport;
use super::value::{Value, text_str};
use super::vma::prot_str;
use super::{files::FdFile, pstree::Process};

/// Renders every report.
pub fn render(path: &Path, reports: &[FileReport]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "image {}", path.display());
    for rep in reports {
        file(&mut s, rep);
    }
    s.push_str("summary:");
    if let Value::Obj(fields) = summary(reports) {
        for (k, v) in fields {
            s.push(' ');
            let _ = write!(s, "{k}=");
            v.text(&mut s);
        }
    }
    s.push('\n');
    s
}

fn file(s: &mut String, rep: &FileReport) {
    let _ = write!(s, "\n{}", rep.name);
    if let Some(h) = &rep.header {
        let _ = write!(
            s,
            " ({}, format {}.{}, {}, page size {})",
            h.kind.name(),
            h.major,
            h.minor,
            h.arch.name(),
            h.page_size
        );
    }
    s.push('\n');
    if let Some(p) = rep.pages {
        let ps = rep.header.map_or(4096, |h| h.page_size as u64);
        let _ = writeln!(s, "  {p} pages ({})", size(p * ps));
    }
    let procs: Vec<&Process> = rep
        .records
        .iter()
        .filter_map(|(_, r)| match r {
            AnyRecord::Process(p) => Some(p),
            _ => None,
        })
        .collect();
    tree(s, &procs);
    let mut vma_header = false;
    for (_, r) in &rep.records {
        record(s, r, &mut vma_header);
    }
    pagemap_totals(s, rep);
    if let Some(e) = &rep.error {
        let _ = writeln!(s, "  !! {e}");
    }
}

fn record(s: &mut String, r: &AnyRecord, vma_header: &mut bool) {
    match r {
        AnyRecord::Process(_) | AnyRecord::PageRun(_) | AnyRecord::PagemapHead(_) => {}
        AnyRecord::Inventory(i) => {
            let _ = writeln!(
                s,
                "  crest {} on Linux {} ({}), {} of pid {} at {}",
                i.crest_version,
                i.kernel_release,
                i.arch.name(),
                if i.kind == super::inventory::ImageKind::Dump {
                    "dump"
                } else {
                    "pre-dump"
                },
                i.root_pid,
                utc(i.dump_time_ns)
            );
            let _ = writeln!(s, "  options: {}", i.options.join(" "));
            if let Some(p) = &i.parent {
                let _ = writeln!(s, "  parent image: {p}");
            }
        }
        AnyRecord::ThreadCore(t) => {
            let (ip, sp) = t.ip_sp().unwrap_or((0, 0));
            let _ = write!(s, "  thread {} ", t.tid);
            text_str(s, &String::from_utf8_lossy(&t.comm));
            let _ = writeln!(
                s,
                ": ip={ip:#x} sp={sp:#x} tls={:#x} sigmask={:#x} fp={} bytes pending={} rseq={:#x}",
                t.tls,
                t.sigmask,
                t.fpregs.len(),
                t.pending.len(),
                t.rseq.addr
            );
        }
        AnyRecord::Vma(v) => {
            if !*vma_header {
                let _ = writeln!(
                    s,
                    "  {:<18} {:<18} {:<4} {:<12} {:>8}  NAME",
                    "START", "END", "PROT", "BACKING", "PGOFF"
                );
                *vma_header = true;
            }
            let _ = write!(
                s,
                "  {:#018x} {:#018x} {:<4} {:<12} {:>8}  ",
                v.start,
                v.end,
                prot_str(v.prot),
                v.backing.word(),
                v.pgoff
            );
            let name = match &v.backing {
                super::vma::Backing::FilePrivate { path, .. }
                | super::vma::Backing::FileShared { path, .. } => path,
                _ => &v.name,
            };
            text_str(s, &String::from_utf8_lossy(name));
            s.push('\n');
        }
        AnyRecord::Fd(f) => fd(s, f),
        other => {
            let _ = write!(s, "  {}: ", other.name());
            other.to_value().text(s);
            s.push('\n');
        }
    }
}

fn fd(s: &mut String, f: &super::files::Fd) {
    let _ = write!(s, "  fd {:<4} ", f.fd);
    match &f.file {
        FdFile::Reg {
            path, flags, pos, ..
        } => {
            s.push_str("reg  ");
            text_str(s, &String::from_utf8_lossy(path));
            let _ = write!(s, " flags={flags:#o} pos={pos}");
        }
        FdFile::Pipe { pipe_id, flags } => {
            let _ = write!(s, "pipe id={pipe_id} flags={flags:#o}");
        }
        FdFile::Chr {
            path, flags, rdev, ..
        } => {
            s.push_str("chr  ");
            text_str(s, &String::from_utf8_lossy(path));
            let _ = write!(s, " flags={flags:#o} rdev={rdev:#x}");
        }
        FdFile::Unknown(k) => {
            let _ = write!(s, "unknown kind {k} (written by a newer crest)");
        }
        other => anon_fd(s, other),
    }
    if f.fd_flags & 1 != 0 {
        s.push_str(" cloexec");
    }
    s.push('\n');
}

/// One line for an eventfd, signalfd, timerfd, epoll or inotify fd.
fn anon_fd(s: &mut String, file: &FdFile) {
    match file {
        FdFile::EventFd {
            flags,
            count,
            semaphore,
        } => {
            let sem = match semaphore {
                Some(true) => " semaphore",
                Some(false) => "",
                None => " semaphore=unknown",
            };
            let _ = write!(s, "eventfd count={count}{sem} flags={flags:#o}");
        }
        FdFile::SignalFd { flags, sigmask } => {
            let _ = write!(s, "signalfd sigmask={sigmask:#x} flags={flags:#o}");
        }
        FdFile::TimerFd {
            flags,
            clockid,
            settime_flags,
            ticks,
            value_ns,
            interval_ns,
        } => {
            let _ = write!(
                s,
                "timerfd clock={clockid} value={value_ns}ns interval={interval_ns}ns ticks={ticks} settime_flags={settime_flags:#x} flags={flags:#o}"
            );
        }
        FdFile::Epoll { flags, targets } => {
            let _ = write!(s, "epoll flags={flags:#o} targets:");
            for t in targets {
                let _ = write!(s, " fd{}/{:#x}/{:#x}", t.fd, t.events, t.data);
            }
        }
        FdFile::Inotify { flags, watches } => {
            let _ = write!(s, "inotify flags={flags:#o} watches:");
            for w in watches {
                let _ = write!(s, " wd{}/{:#x}/", w.wd, w.mask);
                text_str(s, &String::from_utf8_lossy(&w.path));
            }
        }
        FdFile::Unix(u) => {
            let name = crate::image::files::unix::show_name(&u.name);
            let _ = write!(
                s,
                "unix socket:[{}] type={} state={} name={name:?} peer={:?} shutdown={} flags={:#o}",
                u.ino, u.kind, u.state, u.peer, u.shutdown, u.flags
            );
        }
        FdFile::Reg { .. } | FdFile::Pipe { .. } | FdFile::Chr { .. } | FdFile::Unknown(_) => {}
        other => {
            if let Some(t) = super::files::kinds::text(other) {
                s.push_str(&t);
            }
        }
    }
}

/// Draws processes as a tree: roots are those whose parent is not listed.
fn tree(s: &mut String, procs: &[&Process]) {
    fn walk(s: &mut String, procs: &[&Process], p: &Process, depth: usize, seen: &mut Vec<u32>) {
        if seen.contains(&p.pid) || depth > 64 {
            return;
        }
        seen.push(p.pid);
        let indent = if depth == 0 {
            String::new()
        } else {
            format!("{}└─ ", "   ".repeat(depth - 1))
        };
        let mut threads: Vec<String> = p.threads.iter().map(u32::to_string).collect();
        if threads.is_empty() {
            threads.push("-".into());
        }
        let _ = writeln!(
            s,
            "  {indent}{} ({}) pgid {} sid {} threads {}",
            p.pid,
            p.state.describe(),
            p.pgid,
            p.sid,
            threads.join(",")
        );
        for c in procs.iter().filter(|c| c.ppid == p.pid && c.pid != p.pid) {
            walk(s, procs, c, depth + 1, seen);
        }
    }
    let mut seen = Vec::new();
    for p in procs
        .iter()
        .filter(|p| !procs.iter().any(|q| q.pid == p.ppid && q.pid != p.pid))
    {
        walk(s, procs, p, 0, &mut seen);
    }
    // Cycles (only in a damaged tree) are printed flat rather than lost.
    for p in procs.iter().filter(|p| !seen.contains(&p.pid)) {
        let _ = writeln!(
            s,
            "  {} (parent {} not reachable) {}",
            p.pid,
            p.ppid,
            p.state.describe()
        );
    }
}

fn pagemap_totals(s: &mut String, rep: &FileReport) {
    let Some(head) = rep.records.iter().find_map(|(_, r)| match r {
        AnyRecord::PagemapHead(h) => Some(h),
        _ => None,
    }) else {
        return;
    };
    let t = rep.page_totals();
    let ps = rep.header.map_or(4096, |h| h.page_size as u64);
    let space = match head.space {
        super::pagemap::Space::Process(p) => format!("process {p}"),
        super::pagemap::Space::Shmem(id) => format!("shared memory {id}"),
    };
    let _ = writeln!(
        s,
        "  pages of {space} in {}: {} runs, {} stored ({}), {} in parent, {} zero",
        head.pages_file,
        t.runs,
        t.present,
        size(t.present.saturating_mul(ps)),
        t.parent,
        t.zero
    );
}

/// Totals over every file.
pub fn summary(reports: &[FileReport]) -> Value {
    let (mut procs, mut threads, mut vmas, mut fds) = (0u64, 0u64, 0u64, 0u64);
    let (mut present, mut parent, mut zero, mut bytes) = (0u64, 0u64, 0u64, 0u64);
    for rep in reports {
        for (_, r) in &rep.records {
            match r {
                AnyRecord::Process(_) => procs += 1,
                AnyRecord::ThreadCore(_) => threads += 1,
                AnyRecord::Vma(_) => vmas += 1,
                AnyRecord::Fd(_) => fds += 1,
                _ => {}
            }
        }
        let t = rep.page_totals();
        let ps = rep.header.map_or(4096, |h| h.page_size as u64);
        present = present.saturating_add(t.present);
        parent = parent.saturating_add(t.parent);
        zero = zero.saturating_add(t.zero);
        bytes = bytes.saturating_add(t.present.saturating_mul(ps));
    }
    Value::Obj(vec![
        ("processes", Value::U(procs)),
        ("threads", Value::U(threads)),
        ("vmas", Value::U(vmas)),
        ("fds", Value::U(fds)),
        ("pages_stored", Value::U(present)),
        ("bytes_stored", Value::U(bytes)),
        ("pages_in_parent", Value::U(parent)),
        ("pages_zero", Value::U(zero)),
        (
            "damaged_files",
            Value::U(reports.iter().filter(|r| r.error.is_some()).count() as u64),
        ),
    ])
}

fn size(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// `YYYY-MM-DD hh:mm:ss UTC` from Unix nanoseconds (proleptic Gregorian).
pub fn utc(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Shift the epoch to 0000-03-01 so leap days fall at the end of a year.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_matches_known_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        // `date -u -d @951782400` (a leap day) and `date -u -d @1795651199`.
        assert_eq!(utc(951_782_400_000_000_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_795_651_199_000_000_000), "2026-11-25 23:59:59 UTC");
    }
}
