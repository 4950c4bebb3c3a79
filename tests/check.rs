//! `crest check` against independent ground truth: the kernel's own config
//! (/proc/config.gz through zcat), direct libc syscalls made here, /proc/sys,
//! CPUID and the auxiliary vector. Also: the JSON parses and agrees with the
//! text, feature selection, usage errors, and that nothing is left behind.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use common::Json;

/// Serializes the tests that run crest, so the leak test sees only its own.
static LOCK: Mutex<()> = Mutex::new(());

fn lock() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn crest_locked(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_crest"))
        .args(args)
        .output()
        .expect("run crest");
    Run {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8(out.stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(out.stderr).expect("utf-8 stderr"),
    }
}

fn crest(args: &[&str]) -> Run {
    let _g = lock();
    crest_locked(args)
}

/// The running kernel's config: /proc/config.gz via zcat where the kernel
/// has CONFIG_IKCONFIG_PROC, else /boot/config-RELEASE as distributions
/// (Debian among them) ship it.
fn config() -> &'static HashMap<String, String> {
    static CONFIG: OnceLock<HashMap<String, String>> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let _g = lock();
        let text = if std::path::Path::new("/proc/config.gz").exists() {
            let out = Command::new("zcat")
                .arg("/proc/config.gz")
                .output()
                .expect("zcat /proc/config.gz");
            assert!(out.status.success(), "zcat /proc/config.gz failed");
            out.stdout
        } else {
            let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
            let path = format!("/boot/config-{}", release.trim());
            std::fs::read(&path).unwrap_or_else(|e| panic!("no /proc/config.gz and no {path}: {e}"))
        };
        String::from_utf8_lossy(&text)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    })
}

fn cfg_on(opt: &str) -> bool {
    matches!(config().get(opt).map(String::as_str), Some("y" | "m"))
}

/// `crest check --all --json`, run once, as name -> feature object.
fn all() -> &'static (Json, HashMap<String, Json>) {
    static ALL: OnceLock<(Json, HashMap<String, Json>)> = OnceLock::new();
    ALL.get_or_init(|| {
        let r = crest(&["check", "--all", "--json"]);
        let doc = common::parse(&r.stdout).expect("--json output parses");
        let map = doc
            .get("features")
            .and_then(Json::arr)
            .expect("features array")
            .iter()
            .map(|f| {
                (
                    f.get("name").and_then(Json::str).expect("name").to_string(),
                    f.clone(),
                )
            })
            .collect();
        (doc, map)
    })
}

fn field(name: &str, key: &str) -> String {
    let f = all()
        .1
        .get(name)
        .unwrap_or_else(|| panic!("feature {name} not in --all --json"));
    f.get(key)
        .and_then(Json::str)
        .unwrap_or_else(|| panic!("{name}.{key}"))
        .to_string()
}

fn status(name: &str) -> String {
    field(name, "status")
}

fn assert_status(name: &str, expect_ok: bool, truth: &str) {
    let s = status(name);
    let want = if expect_ok { "ok" } else { "missing" };
    assert_eq!(
        s,
        want,
        "{name}: crest says {s} ({}), {truth}",
        field(name, "reason")
    );
}

/// Rows of the text table: name -> (category, status).
fn text_rows(text: &str) -> Vec<(String, String, String)> {
    text.lines()
        .skip(1)
        .take_while(|l| !l.is_empty())
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w[0].to_string(), w[1].to_string(), w[2].to_string())
        })
        .collect()
}

#[test]
fn default_check_passes_and_picks_the_dirty_tracker_by_behaviour() {
    let r = crest(&["check"]);
    assert_eq!(r.code, 0, "crest check failed:\n{}{}", r.stdout, r.stderr);
    let rows = text_rows(&r.stdout);
    let get = |n: &str| rows.iter().find(|r| r.0 == n).map(|r| r.2.clone());
    let soft = cfg_on("CONFIG_MEM_SOFT_DIRTY");
    assert_eq!(
        get("mem_dirty_track").as_deref(),
        Some(if soft { "ok" } else { "missing" })
    );
    let (scan, wp) = direct_scan_and_wp();
    let ok = |b: bool| Some(if b { "ok" } else { "missing" });
    assert_eq!(get("uffd_wp_async").as_deref(), ok(scan && wp));
    assert_eq!(get("pagemap_scan").as_deref(), ok(scan));
    assert!(
        rows.iter().all(|r| r.1 != "optional"),
        "optional features probed without --all"
    );
    let dirty = r
        .stdout
        .lines()
        .find(|l| l.starts_with("dirty tracking:"))
        .expect("dirty line");
    // Soft-dirty is preferred where both work: it needs nothing in the target.
    let want = if soft {
        "will use soft-dirty"
    } else if scan && wp {
        "will use uffd-wp + PAGEMAP_SCAN"
    } else {
        "dirty tracking: none"
    };
    assert!(dirty.contains(want), "{dirty}");
    assert!(
        r.stdout
            .lines()
            .last()
            .expect("verdict")
            .starts_with("verdict: READY")
    );
}

#[test]
fn probes_agree_with_the_kernel_config() {
    let table: &[(&str, &[&str])] = &[
        ("mem_dirty_track", &["CONFIG_MEM_SOFT_DIRTY"]),
        ("uffd", &["CONFIG_USERFAULTFD"]),
        ("uffd-noncoop", &["CONFIG_USERFAULTFD"]),
        ("timens", &["CONFIG_TIME_NS"]),
        ("kcmp", &["CONFIG_KCMP"]),
        ("kcmp_epoll", &["CONFIG_KCMP", "CONFIG_EPOLL"]),
        ("map_files", &["CONFIG_CHECKPOINT_RESTORE"]),
        ("prctl_mm_map", &["CONFIG_CHECKPOINT_RESTORE"]),
        ("ns_last_pid", &["CONFIG_CHECKPOINT_RESTORE"]),
        ("memfd", &["CONFIG_MEMFD_CREATE"]),
        ("sock_diag", &["CONFIG_UNIX_DIAG", "CONFIG_INET_DIAG"]),
        ("process_vm_readv", &["CONFIG_CROSS_MEMORY_ATTACH"]),
        ("get_rseq_conf", &["CONFIG_RSEQ"]),
        (
            "seccomp_suspend",
            &["CONFIG_SECCOMP", "CONFIG_CHECKPOINT_RESTORE"],
        ),
        (
            "seccomp_filters",
            &["CONFIG_SECCOMP_FILTER", "CONFIG_CHECKPOINT_RESTORE"],
        ),
    ];
    for (name, opts) in table {
        let on = opts.iter().all(|o| cfg_on(o));
        assert_status(name, on, &format!("config has {opts:?} = {on}"));
    }
}

#[test]
fn ptrace_seize_agrees_with_a_direct_seize() {
    let ok = {
        let _g = lock(); // the leak tests count our children
        let mut child = Command::new("sleep").arg("5").spawn().expect("spawn sleep");
        let pid = child.id() as libc::pid_t;
        // SAFETY: PTRACE_SEIZE and PTRACE_INTERRUPT take no pointers.
        let ok =
            unsafe { libc::ptrace(0x4206, pid, 0, 0) == 0 && libc::ptrace(0x4207, pid, 0, 0) == 0 };
        let _ = child.kill();
        let _ = child.wait();
        ok
    };
    for f in [
        "ptrace_seize",
        "ptrace_regsets",
        "ptrace_sigmask",
        "ptrace_peeksiginfo",
    ] {
        assert_status(
            f,
            ok,
            &format!("a direct PTRACE_SEIZE + INTERRUPT gave {ok}"),
        );
    }
}

/// Whether PAGEMAP_SCAN and uffd WP_ASYNC work here, asked of the kernel
/// directly: (scan, wp_async).
fn direct_scan_and_wp() -> (bool, bool) {
    // SAFETY: raw syscalls on memory and descriptors owned by this test; the
    // ioctl arguments are the kernel's structs laid out as u64 arrays.
    unsafe {
        let page = libc::mmap(
            std::ptr::null_mut(),
            4096,
            3,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(page, libc::MAP_FAILED);
        *(page as *mut u8) = 1;
        let pm = libc::open(c"/proc/self/pagemap".as_ptr(), libc::O_RDONLY);
        let mut regions = [0u64; 3 * 4];
        let a = page as u64;
        let mut arg = [
            96,
            0,
            a,
            a + 4096,
            0,
            regions.as_mut_ptr() as u64,
            4,
            0,
            0,
            8,
            0,
            8u64,
        ];
        let scan = libc::ioctl(pm, 0xC060_6610u32 as _, arg.as_mut_ptr()) == 1 && regions[0] == a;
        libc::close(pm);
        libc::munmap(page, 4096);
        let uffd = libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) as i32;
        let mut api = [0xAAu64, 1 << 15, 0];
        let wp = uffd >= 0 && libc::ioctl(uffd, 0xC018_AA3Fu32 as _, api.as_mut_ptr()) == 0;
        libc::close(uffd);
        (scan, wp)
    }
}

#[test]
fn pagemap_scan_and_uffd_wp_async_agree_with_direct_syscalls() {
    let (scan_ok, wp_ok) = direct_scan_and_wp();
    assert_status(
        "pagemap_scan",
        scan_ok,
        &format!("a direct PAGEMAP_SCAN gave {scan_ok}"),
    );
    let both = scan_ok && wp_ok;
    assert_status(
        "uffd_wp_async",
        both,
        &format!("direct WP_ASYNC handshake and scan gave {both}"),
    );
}

#[test]
fn clone3_set_tid_agrees_with_a_direct_clone3() {
    let tid: [libc::pid_t; 1] = [-1];
    // struct clone_args with set_tid = {-1}: a kernel with set_tid refuses
    // the pid with EINVAL before creating anything; older ones say E2BIG/ENOSYS.
    let mut args = [0u64; 11];
    args[4] = libc::SIGCHLD as u64;
    args[8] = tid.as_ptr() as u64;
    args[9] = 1;
    // SAFETY: clone3 reads `args` (88 bytes) and the one pid; it fails here.
    let r = unsafe { libc::syscall(libc::SYS_clone3, args.as_ptr(), 88) };
    let errno = std::io::Error::last_os_error().raw_os_error();
    assert_eq!(r, -1, "clone3 with set_tid -1 created a process");
    let ok = errno == Some(libc::EINVAL);
    assert_status(
        "clone3_set_tid",
        ok,
        &format!("a direct clone3(set_tid = -1) gave errno {errno:?}"),
    );
}

#[test]
fn pidfd_and_timer_ids_agree_with_direct_syscalls() {
    // SAFETY: syscalls with integer arguments on this process.
    let (pidfd_ok, timer_ok) = unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) as i32;
        let got = libc::syscall(libc::SYS_pidfd_getfd, pidfd, 1, 0) as i32;
        let ok = pidfd >= 0 && got >= 0;
        libc::close(got);
        libc::close(pidfd);
        // PR_TIMER_CREATE_RESTORE_IDS_GET
        (ok, libc::prctl(77, 2, 0, 0, 0) >= 0)
    };
    assert_status("pidfd_store", pidfd_ok, "direct pidfd_open + pidfd_getfd");
    assert_status(
        "timer_restore_ids",
        timer_ok,
        "direct prctl(PR_TIMER_CREATE_RESTORE_IDS_GET)",
    );
}

#[test]
fn measured_values_match_proc_auxv_and_cpuid() {
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max").expect("pid_max");
    assert_eq!(field("pid_max", "detail"), pid_max.trim());
    // SAFETY: getauxval reads this process's auxv.
    let feature = unsafe { libc::getauxval(27) }; // AT_RSEQ_FEATURE_SIZE
    let rseq = field("rseq_abi_size", "detail");
    // Kernels before 6.3 do not report the feature size at all.
    let expected = match feature {
        0 => "kernel feature size not reported".to_string(),
        n => format!("kernel feature size {n} "),
    };
    assert!(rseq.contains(&expected), "{rseq} vs {feature}");
    let maps = std::fs::read_to_string("/proc/self/maps").expect("maps");
    let layout = field("vdso_layout", "detail");
    for name in ["[vvar]", "[vvar_vclock]", "[vdso]"] {
        if let Some(l) = maps.lines().find(|l| l.ends_with(name)) {
            let (a, b) = l
                .split_whitespace()
                .next()
                .expect("range")
                .split_once('-')
                .expect("dash");
            let kib = (u64::from_str_radix(b, 16).expect("hex")
                - u64::from_str_radix(a, 16).expect("hex"))
                / 1024;
            assert!(
                layout.contains(&format!("{name} {kib} KiB")),
                "{layout} lacks {name} {kib} KiB"
            );
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        // CPUID.(EAX=0DH,ECX=0):EBX is the XSAVE area size for the features
        // enabled in XCR0: what the kernel exposes through NT_X86_XSTATE.
        let ebx = std::arch::x86_64::__cpuid_count(0xd, 0).ebx;
        assert_eq!(
            field("xsave_size", "detail"),
            format!("NT_X86_XSTATE is {ebx} bytes")
        );
    }
}

#[test]
fn json_agrees_with_text() {
    let text = crest(&["check", "--all"]);
    let (doc, map) = all();
    let rows = text_rows(&text.stdout);
    assert_eq!(rows.len(), map.len());
    for (name, category, st) in &rows {
        let f = &map[name];
        assert_eq!(
            f.get("category").and_then(Json::str),
            Some(category.as_str()),
            "{name}"
        );
        assert_eq!(
            f.get("status").and_then(Json::str),
            Some(st.as_str()),
            "{name}"
        );
        for key in ["reason", "detail", "provided_by"] {
            assert!(f.get(key).and_then(Json::str).is_some(), "{name}.{key}");
        }
        assert!(
            !f.get("needed_by")
                .and_then(Json::arr)
                .expect("needed_by")
                .is_empty()
        );
    }
    let dirty = doc
        .get("dirty_tracking")
        .and_then(Json::str)
        .expect("dirty_tracking");
    let line = text
        .stdout
        .lines()
        .find(|l| l.starts_with("dirty tracking:"))
        .expect("line");
    let phrase = match dirty {
        "soft-dirty" => "will use soft-dirty",
        "uffd-wp" => "will use uffd-wp",
        other => panic!("unexpected dirty_tracking {other}"),
    };
    assert!(line.contains(phrase), "{line} vs {dirty}");
    let verdict = doc.get("verdict").and_then(Json::str).expect("verdict");
    assert_eq!(
        text.stdout.lines().last(),
        Some(format!("verdict: {verdict}").as_str())
    );
    assert_eq!(doc.get("ready"), Some(&Json::Bool(text.code == 0)));
}

#[test]
fn feature_flags_probe_only_the_named_features() {
    let r = crest(&["check", "--feature", "uffd", "--feature", "timens"]);
    let names: Vec<String> = text_rows(&r.stdout).into_iter().map(|r| r.0).collect();
    assert_eq!(names, ["uffd", "timens"]);
    assert_eq!(r.code, 0);
    let j = crest(&[
        "check",
        "--json",
        "--feature",
        "timens",
        "--feature",
        "timens",
    ]);
    let doc = common::parse(&j.stdout).expect("json");
    assert_eq!(
        doc.get("features").and_then(Json::arr).map(<[Json]>::len),
        Some(1)
    );
}

#[test]
fn unknown_feature_is_a_usage_error_listing_the_names() {
    let r = crest(&["check", "--feature", "uffd", "--feature", "no_such_thing"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stdout.is_empty(),
        "probed despite the usage error: {}",
        r.stdout
    );
    assert!(r.stderr.contains("no_such_thing"), "{}", r.stderr);
    for name in [
        "ptrace_seize",
        "uffd_wp_async",
        "mem_dirty_track",
        "uffd-noncoop",
    ] {
        assert!(r.stderr.contains(name), "{name} missing from: {}", r.stderr);
    }
}

/// Pids of live or zombie processes whose parent is `ppid`.
fn children_of(ppid: u32) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let pp = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .map(str::trim);
        if pp == Some(ppid.to_string().as_str()) {
            out.insert(pid);
        }
    }
    out
}

fn dir_names(path: &str) -> BTreeSet<String> {
    std::fs::read_dir(path)
        .expect("read dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

const SYSCTLS: &[&str] = &[
    "/proc/sys/kernel/pid_max",
    "/proc/sys/vm/unprivileged_userfaultfd",
    "/proc/sys/kernel/yama/ptrace_scope",
    "/proc/sys/vm/overcommit_memory",
    "/proc/sys/net/ipv4/tcp_fin_timeout",
];

fn sysctls() -> Vec<Option<String>> {
    SYSCTLS
        .iter()
        .map(|p| std::fs::read_to_string(p).ok())
        .collect()
}

/// Loopback TCP connections in TIME_WAIT (state 06 in /proc/net/tcp).
fn loopback_time_wait() -> BTreeSet<String> {
    let tcp = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    tcp.lines()
        .skip(1)
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() > 3 && w[3] == "06" && w[1].starts_with("0100007F"))
                .then(|| format!("{} {}", w[1], w[2]))
        })
        .collect()
}

/// This test process adopts orphans (PR_SET_CHILD_SUBREAPER), so anything
/// crest leaks would show up as our child after crest exits.
fn become_subreaper() {
    // SAFETY: prctl with integer arguments.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(r, 0);
}

#[test]
fn check_leaves_no_process_file_or_sysctl_change_behind() {
    let _g = lock();
    become_subreaper();
    let me = std::process::id();
    let time_wait = loopback_time_wait();
    let before = (
        children_of(me),
        dir_names("/tmp"),
        dir_names("/dev/shm"),
        sysctls(),
    );
    for _ in 0..3 {
        let r = crest_locked(&["check", "--all"]);
        assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    }
    assert_eq!(children_of(me), before.0, "a process outlived crest check");
    assert_eq!(dir_names("/tmp"), before.1, "/tmp changed");
    assert_eq!(dir_names("/dev/shm"), before.2, "/dev/shm changed");
    assert_eq!(sysctls(), before.3, "a sysctl changed");
    let new: Vec<String> = loopback_time_wait()
        .difference(&time_wait)
        .cloned()
        .collect();
    assert!(
        new.is_empty(),
        "loopback connections left in TIME_WAIT: {new:?}"
    );
}

/// Whether `pid` has exited (a zombie waiting for us, or already gone).
fn is_zombie(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.is_empty()
        || stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
}

#[test]
fn an_interrupted_check_leaves_no_process_behind() {
    let _g = lock();
    become_subreaper();
    let me = std::process::id();
    let before = children_of(me);
    for delay_us in [0, 300, 1000, 2000, 4000, 8000] {
        let mut c = Command::new(env!("CARGO_BIN_EXE_crest"))
            .args(["check", "--all"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(Duration::from_micros(delay_us));
        c.kill().expect("kill crest");
        c.wait().expect("reap crest");
        // Orphans are reparented to us; PDEATHSIG must have killed them.
        // Kill and reap whatever is there (they are our children now, and a
        // live one would keep cargo's output pipe open), then insist that
        // none was still alive.
        // A child killed by PDEATHSIG may take a while to die on a loaded
        // machine: give each up to two seconds to become a zombie before
        // calling it a survivor.
        let leftover: Vec<u32> = children_of(me).difference(&before).copied().collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        let mut alive = Vec::new();
        for &pid in &leftover {
            while !is_zombie(pid) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if !is_zombie(pid) {
                alive.push(pid);
            }
            // SAFETY: signalling and reaping a child of this process.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
                libc::waitpid(pid as i32, std::ptr::null_mut(), 0);
            }
        }
        assert!(
            alive.is_empty(),
            "{alive:?} still running after crest died ({delay_us} us)"
        );
    }
}
