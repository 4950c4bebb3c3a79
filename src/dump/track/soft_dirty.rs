//! The soft-dirty tracker: the kernel sets bit 55 of a page's
//! /proc/PID/pagemap entry on every write (and on every page of a VMA it
//! created or changed since, through VM_SOFTDIRTY); writing "4" to
//! /proc/PID/clear_refs clears them all. Nothing lives in the target and
//! nothing must survive between two crest runs: the bits themselves are
//! the state. The bits are read by the page dump's own pagemap walk
//! ([`super::DirtyMap`] with no written list), and cleared once the pages
//! are copied, while the process is still frozen.

use std::io::Write;

use super::{ParentOf, dumped, unchanged};
use crate::error::{Error, Result};
use crate::image::vma::Vma;

/// The VMAs dumped whole: every dumped VMA that differs from the parent's.
pub fn whole(vmas: &[Vma], parent: Option<&ParentOf>) -> Vec<(u64, u64)> {
    vmas.iter()
        .filter(|v| dumped(v) && !parent.is_some_and(|p| unchanged(v, &p.vmas)))
        .map(|v| (v.start, v.end))
        .collect()
}

/// clear_refs "4": the soft-dirty bits of every page of `pid` start over.
pub fn reset(pid: u32) -> Result<()> {
    let path = format!("/proc/{pid}/clear_refs");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut f| f.write_all(b"4"))
        .map_err(|e| Error::io("write \"4\" to", &path, e))
}
