//! `crest check`: can this kernel checkpoint and restore?
//!
//! Every facility dump, restore, pre-dump, page-server and lazy restore rely
//! on is probed by a small real experiment (seize a forked child, scan a
//! uffd-protected region, clone3 with a chosen pid...), never guessed from
//! the kernel version. The table lives in `table`, the experiments in
//! `ptrace`, `memory`, `tracking`, `task` and `net`, the output in
//! `report`. Nothing is left behind: children are killed and reaped (and
//! die with crest through PR_SET_PDEATHSIG), memory is anonymous or memfd,
//! and no sysctl of the host changes (ns_last_pid is written only inside a
//! throwaway pid namespace).

mod child;
mod diag;
mod memory;
mod net;
mod probe;
mod ptrace;
mod report;
mod table;
mod task;
mod tracking;

use crate::error::{Error, Result};

pub use probe::Status;
pub use table::{Category, FEATURES, Feature};

/// What `crest check` was asked for.
#[derive(Debug, Default, Clone)]
pub struct CheckOptions {
    /// Probe optional features too.
    pub all: bool,
    /// Probe only these features (CRIU's names).
    pub features: Vec<String>,
    /// Print JSON instead of text.
    pub json: bool,
}

/// One probed feature.
#[derive(Debug)]
pub struct Row {
    /// The feature.
    pub feature: &'static Feature,
    /// Its verdict.
    pub status: Status,
    /// What was measured (ok) or why not (missing, error).
    pub text: String,
}

/// Which dirty-page tracker incremental dumps will use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirtyTracking {
    /// clear_refs + pagemap bit 55.
    SoftDirty,
    /// userfaultfd WP_ASYNC + PAGEMAP_SCAN.
    UffdWp,
    /// Neither works: every pre-dump copies all memory.
    None,
    /// The features that decide it were not probed.
    NotProbed,
}

/// The outcome of a check.
#[derive(Debug)]
pub struct Report {
    /// The probed features, in table order.
    pub rows: Vec<Row>,
    /// The dirty-tracking verdict.
    pub dirty: DirtyTracking,
    /// Required features that failed (alternatives taken into account).
    pub failed_required: Vec<&'static str>,
    /// Recommended and optional features that are not ok.
    pub unavailable: Vec<&'static str>,
    /// Whether only some features were asked for.
    pub filtered: bool,
}

/// Runs the probes and prints the table; returns the exit status: 0 when
/// every probed required feature is ok, 1 otherwise.
pub fn run(opts: &CheckOptions, out: &mut dyn std::io::Write) -> Result<i32> {
    let selected = select(opts)?;
    let report = probe_all(&selected, !opts.features.is_empty());
    let text = if opts.json {
        report::json(&report)
    } else {
        report::text(&report)
    };
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("write", "standard output", e))?;
    Ok(if report.failed_required.is_empty() {
        0
    } else {
        1
    })
}

/// The features to probe: the named ones, or required + recommended (+
/// optional with --all).
pub fn select(opts: &CheckOptions) -> Result<Vec<&'static Feature>> {
    if opts.features.is_empty() {
        let max = if opts.all {
            Category::Optional
        } else {
            Category::Recommended
        };
        return Ok(FEATURES.iter().filter(|f| f.category <= max).collect());
    }
    let mut out: Vec<&'static Feature> = Vec::new();
    for name in &opts.features {
        let f = table::find(name).ok_or_else(|| {
            Error::Usage(format!(
                "unknown feature `{name}`; valid names: {}",
                table::names()
            ))
        })?;
        if !out.iter().any(|g| std::ptr::eq(*g, f)) {
            out.push(f);
        }
    }
    Ok(out)
}

/// Probes `features` one after the other and judges the result.
pub fn probe_all(features: &[&'static Feature], filtered: bool) -> Report {
    let rows: Vec<Row> = features.iter().map(|&f| probe_one(f)).collect();
    let group_ok = |g: Option<&str>| {
        g.is_some()
            && rows
                .iter()
                .any(|r| r.feature.any_of == g && r.status == Status::Ok)
    };
    let (mut failed_required, mut unavailable) = (Vec::new(), Vec::new());
    for r in rows.iter().filter(|r| r.status != Status::Ok) {
        let f = r.feature;
        if f.category == Category::Required && !group_ok(f.any_of) {
            failed_required.push(f.name);
        } else {
            unavailable.push(f.name);
        }
    }
    let dirty = dirty_tracking(&rows);
    Report {
        rows,
        dirty,
        failed_required,
        unavailable,
        filtered,
    }
}

fn probe_one(f: &'static Feature) -> Row {
    let start = std::time::Instant::now();
    let (status, text) = match (f.probe)() {
        Ok(detail) => (Status::Ok, detail),
        Err(fail) => (fail.status, fail.reason),
    };
    let us = start.elapsed().as_micros();
    crate::debug!("check: {} is {} ({us} us): {text}", f.name, status.as_str());
    Row {
        feature: f,
        status,
        text,
    }
}

/// Soft-dirty is preferred where it works: it covers every kind of mapping
/// and leaves nothing in the target, while uffd-wp needs a userfaultfd
/// registered inside the target's mm.
fn dirty_tracking(rows: &[Row]) -> DirtyTracking {
    let status = |name: &str| {
        rows.iter()
            .find(|r| r.feature.name == name)
            .map(|r| r.status)
    };
    match (status("mem_dirty_track"), status("uffd_wp_async")) {
        (Some(Status::Ok), _) => DirtyTracking::SoftDirty,
        (_, Some(Status::Ok)) => DirtyTracking::UffdWp,
        (Some(_), Some(_)) => DirtyTracking::None,
        _ => DirtyTracking::NotProbed,
    }
}

#[cfg(test)]
mod tests {
    use super::probe::{Fail, ProbeResult};
    use super::*;

    fn good() -> ProbeResult {
        Ok("fine".into())
    }
    fn absent() -> ProbeResult {
        Err(Fail::missing("not here".into()))
    }

    const fn feat(
        name: &'static str,
        category: Category,
        any_of: Option<&'static str>,
        ok: bool,
    ) -> Feature {
        Feature {
            name,
            category,
            any_of,
            needed_by: &["dump"],
            provided_by: "test",
            probe: if ok { good } else { absent },
        }
    }

    static ALT_BAD: Feature = feat("alt_bad", Category::Required, Some("g"), false);
    static ALT_OK: Feature = feat("alt_ok", Category::Required, Some("g"), true);
    static REQ_BAD: Feature = feat("req_bad", Category::Required, None, false);
    static REC_BAD: Feature = feat("mem_dirty_track", Category::Recommended, None, false);
    static REC_OK: Feature = feat("uffd_wp_async", Category::Recommended, None, true);

    #[test]
    fn alternatives_satisfy_a_requirement_and_failures_are_sorted() {
        let r = probe_all(&[&ALT_BAD, &ALT_OK, &REC_BAD, &REC_OK], false);
        assert!(r.failed_required.is_empty());
        assert_eq!(r.unavailable, ["alt_bad", "mem_dirty_track"]);
        assert_eq!(r.dirty, DirtyTracking::UffdWp);
        assert!(report::verdict(&r).starts_with("READY"));

        let r = probe_all(&[&ALT_BAD, &REQ_BAD, &REC_BAD], true);
        assert_eq!(r.failed_required, ["alt_bad", "req_bad"]);
        assert_eq!(r.dirty, DirtyTracking::NotProbed);
        assert!(report::verdict(&r).starts_with("NOT READY"));
    }

    #[test]
    fn selection_defaults_all_and_unknown_names() {
        let default = select(&CheckOptions::default()).expect("default");
        assert!(default.iter().all(|f| f.category != Category::Optional));
        let all = select(&CheckOptions {
            all: true,
            ..Default::default()
        })
        .expect("all");
        assert_eq!(all.len(), FEATURES.len());
        let named = CheckOptions {
            features: vec!["uffd".into(), "uffd".into()],
            ..Default::default()
        };
        assert_eq!(select(&named).expect("named").len(), 1);
        let bad = CheckOptions {
            features: vec!["nope".into()],
            ..Default::default()
        };
        match select(&bad) {
            Err(Error::Usage(m)) => {
                assert!(m.contains("nope") && m.contains("uffd_wp_async"), "{m}")
            }
            other => panic!("expected a usage error, got {other:?}"),
        }
    }
}
