//! The output of `crest check`: an aligned text table, or one JSON object
//! with the same content (written by hand: crest has no serde).
//!
//! ```text
//! {"features": [{"name", "category", "status", "reason", "detail",
//!                "any_of", "needed_by": [..], "provided_by"}, ...],
//!  "dirty_tracking": "soft-dirty" | "uffd-wp" | "none" | "not probed",
//!  "ready": bool, "verdict": "..."}
//! ```

use std::fmt::Write;

use super::{DirtyTracking, Report, Status};

impl DirtyTracking {
    /// The short name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            DirtyTracking::SoftDirty => "soft-dirty",
            DirtyTracking::UffdWp => "uffd-wp",
            DirtyTracking::None => "none",
            DirtyTracking::NotProbed => "not probed",
        }
    }

    fn sentence(self) -> &'static str {
        match self {
            DirtyTracking::SoftDirty => {
                "incremental dumps and pre-dump will use soft-dirty (clear_refs + pagemap bit 55)"
            }
            DirtyTracking::UffdWp => {
                "incremental dumps and pre-dump will use uffd-wp + PAGEMAP_SCAN \
                 (soft-dirty is not available)"
            }
            DirtyTracking::None => {
                "none: neither soft-dirty nor uffd-wp + PAGEMAP_SCAN works, \
                 so every pre-dump and incremental dump copies all memory"
            }
            DirtyTracking::NotProbed => {
                "not probed (needs mem_dirty_track and uffd_wp_async in the selection)"
            }
        }
    }
}

/// The one-line verdict.
pub fn verdict(r: &Report) -> String {
    let scope = if r.filtered {
        "every probed required feature"
    } else {
        "every required feature"
    };
    if !r.failed_required.is_empty() {
        return format!(
            "NOT READY: dump and restore cannot work here; required but not working: {}",
            r.failed_required.join(", ")
        );
    }
    if r.unavailable.is_empty() {
        return format!("READY: {scope} works, and so does everything else probed");
    }
    format!(
        "READY: {scope} works; not available (some process trees or modes will fail): {}",
        r.unavailable.join(", ")
    )
}

/// The text table.
pub fn text(r: &Report) -> String {
    let needed = |row: &super::Row| row.feature.needed_by.join(", ");
    let w_name = r
        .rows
        .iter()
        .map(|x| x.feature.name.len())
        .max()
        .unwrap_or(0)
        .max(7);
    let w_need = r
        .rows
        .iter()
        .map(|x| needed(x).len())
        .max()
        .unwrap_or(0)
        .max(9);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<w_name$}  {:<11}  {:<7}  {:<w_need$}  DETAIL",
        "FEATURE", "CATEGORY", "STATUS", "NEEDED BY"
    );
    for row in &r.rows {
        let f = row.feature;
        let detail = match row.status {
            Status::Ok => row.text.clone(),
            _ => format!("{}; comes with {}", row.text.trim_end(), f.provided_by),
        };
        // One feature, one line, whatever a kernel message contains.
        let detail: String = detail
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let _ = writeln!(
            s,
            "{:<w_name$}  {:<11}  {:<7}  {:<w_need$}  {detail}",
            f.name,
            f.category.as_str(),
            row.status.as_str(),
            needed(row),
        );
    }
    let _ = writeln!(s, "\ndirty tracking: {}", r.dirty.sentence());
    let _ = writeln!(s, "verdict: {}", verdict(r));
    s
}

/// The JSON object (one line per feature, newline-terminated).
pub fn json(r: &Report) -> String {
    let mut s = String::from("{\"features\": [");
    for (i, row) in r.rows.iter().enumerate() {
        let f = row.feature;
        let (reason, detail) = match row.status {
            Status::Ok => ("", row.text.as_str()),
            _ => (row.text.as_str(), ""),
        };
        let needed: Vec<String> = f.needed_by.iter().map(|n| quote(n)).collect();
        let any_of = f.any_of.map_or_else(|| "null".to_string(), quote);
        let _ = write!(
            s,
            "{}\n  {{\"name\": {}, \"category\": {}, \"status\": {}, \"reason\": {}, \
             \"detail\": {}, \"any_of\": {any_of}, \"needed_by\": [{}], \"provided_by\": {}}}",
            if i == 0 { "" } else { "," },
            quote(f.name),
            quote(f.category.as_str()),
            quote(row.status.as_str()),
            quote(reason),
            quote(detail),
            needed.join(", "),
            quote(f.provided_by),
        );
    }
    let _ = write!(
        s,
        "\n],\n\"dirty_tracking\": {},\n\"ready\": {},\n\"verdict\": {}}}\n",
        quote(r.dirty.as_str()),
        r.failed_required.is_empty(),
        quote(&verdict(r)),
    );
    s
}

/// A JSON string literal for `s` (the image printer's escaping, shared so
/// both JSON outputs escape alike).
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    crate::image::value::json_str(&mut out, s);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote("plain"), "\"plain\"");
        assert_eq!(quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(quote("l1\nl2\t\r"), "\"l1\\nl2\\t\\r\"");
        assert_eq!(quote("\u{1}\u{1f}"), "\"\\u0001\\u001f\"");
        assert_eq!(quote("é [vvar]"), "\"é [vvar]\"");
    }
}

#[cfg(test)]
mod layout_tests {
    use super::super::probe::ProbeResult;
    use super::super::{Category, Feature, Row};
    use super::*;

    fn nothing() -> ProbeResult {
        Ok(String::new())
    }

    static SHORT: Feature = Feature {
        name: "a",
        category: Category::Required,
        any_of: None,
        needed_by: &["dump"],
        provided_by: "Linux 1.0",
        probe: nothing,
    };
    static LONG: Feature = Feature {
        name: "a_much_longer_name",
        category: Category::Optional,
        any_of: None,
        needed_by: &["dump", "restore", "lazy-pages"],
        provided_by: "CONFIG_\"QUOTED\"",
        probe: nothing,
    };

    fn report() -> Report {
        let row = |feature, status, text: &str| Row {
            feature,
            status,
            text: text.into(),
        };
        Report {
            rows: vec![
                row(&SHORT, Status::Ok, "measured"),
                row(&LONG, Status::Missing, "EINVAL \"x\"\n"),
            ],
            dirty: DirtyTracking::UffdWp,
            failed_required: vec![],
            unavailable: vec!["a_much_longer_name"],
            filtered: false,
        }
    }

    #[test]
    fn text_columns_line_up() {
        let t = text(&report());
        let lines: Vec<&str> = t.lines().take(3).collect();
        for col in ["CATEGORY", "STATUS", "NEEDED BY", "DETAIL"] {
            let at = lines[0].find(col).expect("header column");
            assert!(
                lines[1..]
                    .iter()
                    .all(|l| l.as_bytes()[at - 1] == b' ' && l.as_bytes()[at] != b' '),
                "{col}:\n{t}"
            );
        }
        assert!(
            lines[2].ends_with("EINVAL \"x\"; comes with CONFIG_\"QUOTED\""),
            "{t}"
        );
        assert!(t.contains("will use uffd-wp + PAGEMAP_SCAN"));
    }

    #[test]
    fn json_escapes_details_and_reasons() {
        let j = json(&report());
        assert!(j.contains(r#""reason": "EINVAL \"x\"\n""#), "{j}");
        assert!(j.contains(r#""provided_by": "CONFIG_\"QUOTED\"""#), "{j}");
        assert!(j.contains(r#""dirty_tracking": "uffd-wp""#));
        assert!(j.contains(r#""needed_by": ["dump", "restore", "lazy-pages"]"#));
        assert!(!j.contains('\t'));
    }
}
