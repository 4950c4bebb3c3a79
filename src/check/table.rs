//! The feature table: every kernel facility crest relies on, who needs it,
//! what brings it, and the experiment that proves it.
//!
//! Names follow CRIU's `criu check --feature` where CRIU has one
//! (mem_dirty_track, uffd, uffd-noncoop, kcmp_epoll, seccomp_suspend,
//! seccomp_filters, timens, clone3_set_tid, pidfd_store, get_rseq_conf,
//! tcp_half_closed); the rest are crest's own. Required features in the same
//! `any_of` group are alternatives: one of them is enough.

use super::probe::ProbeResult;
use super::{diag, memory, net, ptrace, task, tracking};

/// How much crest depends on a feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Category {
    /// Dump or restore cannot work without it.
    Required,
    /// Some common process trees or commands need it.
    Recommended,
    /// Needed only for particular resources or modes; probed with --all.
    Optional,
}

impl Category {
    /// The word printed in the table and the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Required => "required",
            Category::Recommended => "recommended",
            Category::Optional => "optional",
        }
    }
}

/// One row of the table.
#[derive(Debug)]
pub struct Feature {
    /// The name `--feature` takes.
    pub name: &'static str,
    /// How much crest depends on it.
    pub category: Category,
    /// Alternatives: a required feature is satisfied if any feature of its
    /// group is ok.
    pub any_of: Option<&'static str>,
    /// The crest commands or modes that use it.
    pub needed_by: &'static [&'static str],
    /// The kernel version, CONFIG_ option or sysctl that brings it.
    pub provided_by: &'static str,
    /// The experiment.
    pub probe: fn() -> ProbeResult,
}

const DUMP: &[&str] = &["dump"];
const DUMP_PRE: &[&str] = &["dump", "pre-dump"];
const DUMP_RESTORE: &[&str] = &["dump", "restore"];
const RESTORE: &[&str] = &["restore"];
const TRACKING: &[&str] = &["pre-dump", "dump"];

macro_rules! feature {
    ($name:expr, $cat:ident, $any:expr, $needed:expr, $by:expr, $probe:path) => {
        Feature {
            name: $name,
            category: Category::$cat,
            any_of: $any,
            needed_by: $needed,
            provided_by: $by,
            probe: $probe,
        }
    };
}

#[cfg(target_arch = "x86_64")]
#[rustfmt::skip]
const FPU: Feature = feature!("xsave_size", Required, None, DUMP_RESTORE,
        "an XSAVE CPU; the size follows CPUID leaf 0xD for the XCR0 features enabled", ptrace::fpu_size);
#[cfg(target_arch = "aarch64")]
#[rustfmt::skip]
const FPU: Feature = feature!("fpsimd_size", Required, None, DUMP_RESTORE,
        "every arm64 kernel (NT_PRFPREG regset)", ptrace::fpu_size);

/// Every feature, in the order they are printed.
#[rustfmt::skip]
pub static FEATURES: &[Feature] = &[
    feature!("ptrace_seize", Required, None, DUMP_PRE,
        "Linux 3.4 (PTRACE_SEIZE, INTERRUPT, LISTEN)", ptrace::seize),
    feature!("ptrace_regsets", Required, None, DUMP,
        "Linux 2.6.34 (PTRACE_GETREGSET)", ptrace::regsets),
    FPU,
    feature!("ptrace_sigmask", Required, None, DUMP,
        "Linux 3.11 (PTRACE_GETSIGMASK/SETSIGMASK)", ptrace::sigmask),
    feature!("ptrace_peeksiginfo", Required, None, DUMP,
        "Linux 3.10 (PTRACE_PEEKSIGINFO)", ptrace::peeksiginfo),
    feature!("process_vm_readv", Required, None, DUMP,
        "Linux 3.2, CONFIG_CROSS_MEMORY_ATTACH", memory::process_vm_readv),
    feature!("memfd", Required, None, DUMP_RESTORE,
        "Linux 3.17, CONFIG_MEMFD_CREATE", memory::memfd),
    feature!("map_files", Required, None, DUMP,
        "Linux 3.3, CONFIG_CHECKPOINT_RESTORE; opening needs CAP_SYS_ADMIN", memory::map_files),
    feature!("kcmp", Required, None, DUMP,
        "Linux 3.5, CONFIG_KCMP (CONFIG_CHECKPOINT_RESTORE before 5.12)", task::kcmp),
    feature!("prctl_mm_map", Required, None, RESTORE,
        "Linux 3.18, CONFIG_CHECKPOINT_RESTORE; CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE", task::prctl_mm_map),
    feature!("clone3_set_tid", Required, Some("pid"), RESTORE,
        "Linux 5.5 (clone3 set_tid); CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN", task::clone3_set_tid),
    feature!("ns_last_pid", Required, Some("pid"), RESTORE,
        "Linux 3.3, CONFIG_CHECKPOINT_RESTORE; writing kernel.ns_last_pid needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE", task::ns_last_pid),
    feature!("sock_diag", Recommended, None, DUMP,
        "Linux 3.3, CONFIG_UNIX_DIAG, CONFIG_INET_DIAG (built in, or modules unix_diag and tcp_diag loaded)", diag::sock_diag),
    feature!("mem_dirty_track", Recommended, None, TRACKING,
        "CONFIG_MEM_SOFT_DIRTY (x86_64, ppc64, s390, riscv; not arm64)", memory::mem_dirty_track),
    feature!("pagemap_scan", Recommended, None, TRACKING,
        "Linux 6.7 (ioctl PAGEMAP_SCAN), CONFIG_PROC_PAGE_MONITOR", tracking::pagemap_scan),
    feature!("uffd_wp_async", Recommended, None, TRACKING,
        "Linux 6.7, CONFIG_USERFAULTFD, CONFIG_HAVE_ARCH_USERFAULTFD_WP", tracking::uffd_wp_async),
    feature!("uffd", Recommended, None, &["lazy-pages", "pre-dump"],
        "Linux 4.3, CONFIG_USERFAULTFD; sysctl vm.unprivileged_userfaultfd for non-root", tracking::uffd),
    feature!("pidfd_store", Recommended, None, TRACKING,
        "Linux 5.6 (pidfd_open 5.3, pidfd_getfd 5.6)", task::pidfd_store),
    feature!("vmsplice", Recommended, None, &["dump", "pre-dump", "page-server"],
        "Linux 2.6.17", memory::vmsplice),
    feature!("vdso_layout", Recommended, None, RESTORE,
        "[vdso] unless booted with vdso=0; [vvar_vclock] split out on x86_64 since Linux 6.13", memory::vdso_layout),
    feature!("get_rseq_conf", Recommended, None, DUMP,
        "Linux 5.13 (PTRACE_GET_RSEQ_CONFIGURATION), CONFIG_RSEQ", ptrace::get_rseq_conf),
    feature!("rseq_abi_size", Recommended, None, DUMP_RESTORE,
        "Linux 4.18 (rseq), CONFIG_RSEQ; AT_RSEQ_FEATURE_SIZE since 6.3", ptrace::rseq_abi_size),
    feature!("seccomp_suspend", Recommended, None, DUMP,
        "Linux 4.3 (PTRACE_O_SUSPEND_SECCOMP), CONFIG_SECCOMP, CONFIG_CHECKPOINT_RESTORE", ptrace::seccomp_suspend),
    feature!("seccomp_filters", Recommended, None, DUMP_RESTORE,
        "Linux 4.4 (PTRACE_SECCOMP_GET_FILTER), CONFIG_SECCOMP_FILTER, CONFIG_CHECKPOINT_RESTORE", ptrace::seccomp_filters),
    feature!("timens", Recommended, None, RESTORE,
        "Linux 5.6, CONFIG_TIME_NS", task::timens),
    feature!("timer_restore_ids", Recommended, None, RESTORE,
        "Linux 6.15 (PR_TIMER_CREATE_RESTORE_IDS)", task::timer_restore_ids),
    feature!("pid_max", Recommended, None, RESTORE,
        "sysctl kernel.pid_max (pids at or above it cannot be restored)", task::pid_max),
    feature!("tcp_repair", Recommended, None, DUMP_RESTORE,
        "Linux 4.8 (TCP_REPAIR 3.5, TCP_REPAIR_WINDOW 4.8); CAP_NET_ADMIN", net::tcp_repair),
    feature!("uffd-noncoop", Optional, None, &["lazy-pages"],
        "Linux 4.11 (fork, remap, remove, unmap events), CONFIG_USERFAULTFD", tracking::uffd_noncoop),
    feature!("kcmp_epoll", Optional, None, DUMP,
        "Linux 4.13 (KCMP_EPOLL_TFD), CONFIG_KCMP, CONFIG_EPOLL", task::kcmp_epoll),
    feature!("tcp_half_closed", Optional, None, DUMP_RESTORE,
        "Linux 4.10 (TCP_REPAIR outside ESTABLISHED); CAP_NET_ADMIN", net::tcp_half_closed),
];

/// The feature called `name`.
pub fn find(name: &str) -> Option<&'static Feature> {
    FEATURES.iter().find(|f| f.name == name)
}

/// All names, comma-separated, for error messages and help.
pub fn names() -> String {
    FEATURES
        .iter()
        .map(|f| f.name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_lookup_works() {
        for (i, f) in FEATURES.iter().enumerate() {
            assert!(
                FEATURES[i + 1..].iter().all(|g| g.name != f.name),
                "{} twice",
                f.name
            );
            assert!(std::ptr::eq(find(f.name).expect("found"), f));
        }
        assert!(find("no_such_feature").is_none());
    }

    #[test]
    fn alternatives_are_required_and_paired() {
        for f in FEATURES.iter().filter(|f| f.any_of.is_some()) {
            assert_eq!(f.category, Category::Required);
            assert!(FEATURES.iter().filter(|g| g.any_of == f.any_of).count() >= 2);
        }
    }
}
