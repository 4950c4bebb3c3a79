//! The inventory record of a dump: crest's version, the kernel release
//! (`/proc/sys/kernel/osrelease`, what uname(2) reports), the architecture
//! and page size, the CPU features a restore must find again (XCR0 and the
//! XSAVE area size from XGETBV and CPUID leaf 0xD on x86_64; AT_HWCAP and
//! AT_HWCAP2 of crest's own auxiliary vector, which describe the same CPU,
//! on aarch64), the time and the options. The hwcaps are read from
//! `/proc/self/auxv`, not getauxval(3): glibc on x86_64 replaces AT_HWCAP
//! with bits of its own.

use crate::error::{Error, Result};
use crate::image::dir::host_page_size;
use crate::image::header::Arch;
use crate::image::inventory::{CpuFeatures, ImageKind, Inventory};
use crate::proc::auxv::{self, AT_HWCAP, AT_HWCAP2};
use crate::sys::cpu::xsave_features;

/// The inventory of a full dump rooted at `root_pid`, made with `options`.
pub fn build_inventory(root_pid: u32, options: &[String]) -> Result<Inventory> {
    const RELEASE: &str = "/proc/sys/kernel/osrelease";
    let release = std::fs::read_to_string(RELEASE).map_err(|e| Error::io("read", RELEASE, e))?;
    let dump_time_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    Ok(Inventory {
        crest_version: env!("CARGO_PKG_VERSION").into(),
        kernel_release: release.trim().into(),
        arch: Arch::host(),
        page_size: host_page_size(),
        cpu: cpu_features()?,
        dump_time_ns,
        kind: ImageKind::Dump,
        root_pid,
        options: options.to_vec(),
        parent: None,
    })
}

/// The CPU features of this machine that a restore must match.
pub fn cpu_features() -> Result<CpuFeatures> {
    let raw = crate::proc::read("self", "auxv")?;
    let pairs = auxv::parse(&raw).map_err(|e| e.in_file("/proc/self/auxv"))?;
    let find = |kind| {
        pairs
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, v)| *v)
    };
    let (xsave_mask, xsave_size) = xsave_features();
    Ok(CpuFeatures {
        xsave_mask,
        xsave_size,
        hwcap: find(AT_HWCAP),
        hwcap2: find(AT_HWCAP2),
    })
}
