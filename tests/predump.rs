//! Incremental dumps end to end: `crest pre-dump` chains of 1, 2 and 5
//! levels, each followed by changes in the victim (pages rewritten, pages
//! dropped back to zero, and mappings that appear, grow, shrink or go),
//! then the final `crest dump --prev-images-dir --track-mem`, and a
//! restore that must follow every parent: the victim checks each page
//! against its whole history. The final image is checked to be
//! incremental (parent runs, few stored pages) where the kernel can track
//! (soft-dirty here or uffd-wp; the qemu lanes run the other one), and a
//! failing pre-dump must leave the victim running and untracked: no
//! userfaultfd in its fd table, no `uw` VMA, no tracker socket.

#![allow(clippy::result_large_err)]

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(crate::common::victim::Msg::new(format_args!($($fmt)+)));
        }
    };
}

mod common;
#[path = "predump/victim.rs"]
mod victim;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::victim::{Victim, pid_gone, proc_state, scratch};
use crest::dump::track::Mechanism;
use crest::image::ImageDir;
use crest::image::pages::PageIndex;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn crest_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crest"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run crest")
}

fn pre_dump(v: &Victim, level: usize, env: &[(&str, &str)]) -> Output {
    let img = v.dir.join(format!("img-{level}"));
    let pid = v.pid.to_string();
    let prev = format!("../img-{}", level - 1);
    let mut args = vec!["pre-dump", "-t", &pid, "-D", img.to_str().unwrap()];
    if level > 1 {
        args.extend(["--prev-images-dir", &prev]);
    }
    crest_env(&args, env)
}

fn step(v: &Victim, level: usize) {
    std::fs::write(v.dir.join(format!("step-{level}")), b"").unwrap();
    let start = Instant::now();
    while !v.dir.join(format!("stepped-{level}")).exists() {
        assert!(v.report().is_none(), "victim ended: {:?}", v.report());
        assert!(start.elapsed() < Duration::from_secs(20), "no step {level}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The tracker mechanism this kernel gives crest.
fn mechanism() -> Mechanism {
    crest::dump::track::choose().unwrap()
}

/// Whether a keeper for `pid` listens (/proc/net/unix lists abstract names
/// with a leading '@').
fn keeper_listens(pid: i32) -> bool {
    let text = std::fs::read_to_string("/proc/net/unix").unwrap();
    let name = format!("@crest-track-{pid}-");
    text.lines().any(|l| l.contains(&name))
}

/// The victim's fd table holds no userfaultfd (tracking is invisible to it).
fn no_uffd_fd(pid: i32) -> Result<(), String> {
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let link = std::fs::read_link(e.unwrap().path()).unwrap_or_default();
        if link.to_string_lossy().contains("userfaultfd") {
            return Err(format!(
                "fd {} of the victim is a userfaultfd",
                link.display()
            ));
        }
    }
    Ok(())
}

/// The victim holds no userfaultfd and no VMA registered for write-protect,
/// and no keeper listens for it.
fn untracked(pid: i32) -> Result<(), String> {
    no_uffd_fd(pid)?;
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    if let Some(l) = smaps
        .lines()
        .find(|l| l.starts_with("VmFlags:") && l.contains(" uw"))
    {
        return Err(format!("a VMA is still registered: {l}"));
    }
    untracked_keeper(pid)
}

/// No keeper listens for `pid`: crest waits for a keeper it ends.
fn untracked_keeper(pid: i32) -> Result<(), String> {
    if keeper_listens(pid) {
        let text = std::fs::read_to_string("/proc/net/unix").unwrap();
        let line = text
            .lines()
            .find(|l| l.contains(&format!("@crest-track-{pid}-")));
        let inode = line
            .and_then(|l| l.split_whitespace().nth(6))
            .unwrap_or("?")
            .to_string();
        let want = format!("socket:[{inode}]");
        let crests: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| {
                let p = e.ok()?.path();
                let fds = std::fs::read_dir(p.join("fd")).ok()?;
                let holds = fds.filter_map(|f| f.ok()).any(|f| {
                    std::fs::read_link(f.path()).is_ok_and(|l| l.to_string_lossy() == want)
                });
                let stat = std::fs::read_to_string(p.join("stat")).ok()?;
                holds.then_some(stat)
            })
            .collect();
        return Err(format!(
            "a tracker still listens for the victim: {line:?} {crests:?}"
        ));
    }
    Ok(())
}

fn wait_gone(pid: i32) {
    let start = Instant::now();
    while !pid_gone(pid) || Path::new(&format!("/proc/{pid}")).exists() {
        assert!(start.elapsed() < Duration::from_secs(10), "pid {pid} stays");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The final image's page index of the victim.
fn final_index(img: &Path, pid: i32) -> PageIndex {
    let d = ImageDir::open(img).unwrap();
    PageIndex::load(&d, &format!("pagemap-{pid}.img")).unwrap()
}

/// Restores `img` with crest as the parent and lets the victim check.
fn restore_and_check(v: &mut Victim, img: &Path) {
    let err = img.with_file_name("restore.stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_crest"))
        .args(["restore", "-D", img.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    v.adopt();
    v.go();
    let report = v.wait_report(|| match child.try_wait().unwrap() {
        Some(s) if !s.success() => Some(format!(
            "crest restore {s}: {}",
            std::fs::read_to_string(&err).unwrap_or_default()
        )),
        _ => None,
    });
    assert_eq!(report.trim(), "pass", "restored victim");
    let status = child.wait().unwrap();
    assert!(status.success(), "crest restore: {status}");
    v.forget();
}

/// `levels` pre-dumps with changes after each, the final dump, restore.
fn chain(name: &str, levels: usize, vma: bool) -> PathBuf {
    chain_with(name, levels, vma, None)
}

/// [`chain`] with `CREST_TRACK=mech` for every crest run, if given.
fn chain_with(name: &str, levels: usize, vma: bool, mech: Option<Mechanism>) -> PathBuf {
    let env: Vec<(&str, &str)> = mech.iter().map(|m| ("CREST_TRACK", m.name())).collect();
    let dir = scratch(name);
    std::fs::write(dir.join("levels"), levels.to_string()).unwrap();
    if vma {
        std::fs::write(dir.join("vma"), b"").unwrap();
    }
    let mut v = Victim::spawn(&dir, victim::victim);
    for level in 1..=levels {
        let out = pre_dump(&v, level, &env);
        assert!(out.status.success(), "pre-dump {level}: {}", stderr(&out));
        assert!(
            proc_state(v.pid).is_some_and(|s| s != 'Z'),
            "the victim runs on"
        );
        no_uffd_fd(v.pid).unwrap();
        step(&v, level);
    }
    let fin = dir.join("final");
    let prev = format!("../img-{levels}");
    let pid = v.pid.to_string();
    let args = [
        "dump",
        "-t",
        &pid,
        "-D",
        fin.to_str().unwrap(),
        "--prev-images-dir",
        &prev,
        "--track-mem",
    ];
    let out = crest_env(&args, &env);
    assert!(out.status.success(), "final dump: {}", stderr(&out));
    assert!(libc::WIFSIGNALED(v.reap()), "the final dump kills");
    wait_gone(v.pid);
    untracked_keeper(v.pid).unwrap();
    check_incremental(&fin, v.pid, levels, mech.unwrap_or_else(mechanism), vma);
    check_zero_pages_absent(&fin, v.pid, &v.ready_text(), levels);
    restore_and_check(&mut v, &fin);
    dir
}

/// Where tracking works, the final image stores about the pages of the
/// last change and finds the rest in its parents. When mappings changed
/// shape in the last step (`vma`, level 2 to 4) a changed VMA is stored
/// whole, and the kernel may merge the main region with a neighbour that
/// moved next to it (soft-dirty: it is then whole too): only some parent
/// runs are required then.
fn check_incremental(fin: &Path, pid: i32, levels: usize, mech: Mechanism, vma: bool) {
    let idx = final_index(fin, pid);
    eprintln!("final image of {levels} level(s): {:?}", idx.totals);
    if mech == Mechanism::None {
        assert_eq!(idx.totals.parent, 0, "no tracker: a full image");
        return;
    }
    if vma && (2..=4).contains(&levels) {
        assert!(idx.totals.parent > 0, "nothing found in the parents");
        return;
    }
    let changed = (0..victim::MAIN_PAGES)
        .filter(|&p| victim::rewritten(p, levels))
        .count() as u64;
    // The victim's stack, the harness's heap and libc data are written
    // too while it waits; the 1024-page region dominates.
    assert!(
        idx.totals.present <= changed + 150,
        "final image stores {} pages; {changed} were rewritten since the last pre-dump",
        idx.totals.present
    );
    assert!(
        idx.totals.parent >= (victim::MAIN_PAGES as u64) / 2,
        "only {} pages are found in the parents",
        idx.totals.parent
    );
}

/// The pages of the victim's main region that read zero after the last
/// change (dropped with MADV_DONTNEED and not written since, or never
/// written) are not in the final image: neither stored nor left to a
/// parent, which would bring their old contents back (restore leaves a
/// page the image lacks zero). A uffd-wp tracker leaves a pte marker where
/// a dropped page was; pagemap shows it as a swapped page, and storing it
/// as one made the image carry zero pages it does not need.
fn check_zero_pages_absent(fin: &Path, pid: i32, ready: &str, levels: usize) {
    let main = u64::from_str_radix(ready.trim().strip_prefix("main=").unwrap(), 16).unwrap();
    let idx = final_index(fin, pid);
    let zero: Vec<usize> = (0..victim::MAIN_PAGES)
        .filter(|&p| victim::expected(p, levels).is_none())
        .collect();
    assert!(zero.len() > 50, "the victim drops pages: {}", zero.len());
    for p in zero {
        let at = main + (p * victim::PAGE) as u64;
        if let Some((run, _)) = idx.find(at) {
            assert_eq!(
                run.kind,
                crest::image::pagemap::RunKind::Zero,
                "main page {p} reads zero but the final image has it as {:?}",
                run.kind
            );
        }
    }
}

#[test]
fn victim_baseline_passes_without_checkpoints() {
    let dir = scratch("predump-base");
    std::fs::write(dir.join("levels"), b"4").unwrap();
    std::fs::write(dir.join("vma"), b"").unwrap();
    let mut v = Victim::spawn(&dir, victim::victim);
    for level in 1..=4 {
        step(&v, level);
    }
    v.go();
    assert_eq!(v.wait_report(|| None).trim(), "pass");
    assert_eq!(libc::WEXITSTATUS(v.reap()), 0);
}

#[test]
fn victim_detects_a_page_that_missed_its_change() {
    let dir = scratch("predump-neg");
    std::fs::write(dir.join("levels"), b"1").unwrap();
    let mut v = Victim::spawn(&dir, victim::victim);
    step(&v, 1);
    let ready = v.ready_text();
    let main = usize::from_str_radix(ready.trim().strip_prefix("main=").unwrap(), 16).unwrap();
    // A page rewritten at level 1, put back to its level-0 first word.
    let page = (0..victim::MAIN_PAGES)
        .find(|&p| victim::rewritten(p, 1))
        .unwrap();
    let mem = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{}/mem", v.pid))
        .unwrap();
    std::os::unix::fs::FileExt::write_at(&mem, &[0x5a; 8], (main + page * victim::PAGE) as u64)
        .unwrap();
    v.go();
    let report = v.wait_report(|| None);
    assert!(report.starts_with("fail: main page"), "{report}");
    assert_eq!(libc::WEXITSTATUS(v.reap()), 1);
}

/// Every tracker this kernel has (and none), forced in turn: the 6.12
/// x86_64 qemu lane runs both soft-dirty and uffd-wp here.
#[test]
fn chain_of_two_with_every_available_tracker_restores() {
    let mut mechs = crest::dump::track::available();
    mechs.push(Mechanism::None);
    for m in mechs {
        let dir = chain_with(&format!("predump-{}", m.name()), 2, true, Some(m));
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A tracker the kernel lacks is refused, not used blindly.
#[test]
fn forcing_a_missing_tracker_is_refused() {
    let have = crest::dump::track::available();
    let dir = scratch("predump-force");
    std::fs::write(dir.join("levels"), b"0").unwrap();
    let v = Victim::spawn(&dir, victim::victim);
    for m in [Mechanism::SoftDirty, Mechanism::UffdWp] {
        let out = pre_dump(&v, 1, &[("CREST_TRACK", m.name())]);
        assert_eq!(
            out.status.success(),
            have.contains(&m),
            "{m:?}: {}",
            stderr(&out)
        );
        if !have.contains(&m) {
            assert!(stderr(&out).contains("lacks"), "{}", stderr(&out));
        }
        let _ = std::fs::remove_dir_all(v.dir.join("img-1"));
    }
    drop(v);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn chain_of_one_pre_dump_restores() {
    let dir = chain("predump-1", 1, false);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn chain_of_two_pre_dumps_restores() {
    let dir = chain("predump-2", 2, false);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn chain_of_five_pre_dumps_restores() {
    let dir = chain("predump-5", 5, false);
    let _ = std::fs::remove_dir_all(dir);
}

/// Between the levels a mapping appears (1), grows with mremap (2),
/// shrinks (3) and is unmapped (4); level 5 changes pages only.
#[test]
fn mappings_that_appear_grow_shrink_and_go_between_levels_restore() {
    let dir = chain("predump-vma", 5, true);
    let _ = std::fs::remove_dir_all(dir);
}

/// A pre-dump failing at any step leaves the victim running, unchanged
/// and untracked, whether it was the first pass or a later one.
#[test]
fn failed_pre_dump_leaves_the_target_running_and_untracked() {
    let steps = [
        "seize", "collect", "inject", "track", "pages", "cure", "metadata",
    ];
    let dir = scratch("predump-fault");
    std::fs::write(dir.join("levels"), b"2").unwrap();
    let mut v = Victim::spawn(&dir, victim::victim);
    for s in steps {
        let out = pre_dump(&v, 1, &[("CREST_FAULT", s)]);
        assert_eq!(out.status.code(), Some(1), "{s}: {}", stderr(&out));
        assert!(stderr(&out).contains(s), "{s}: {}", stderr(&out));
        assert!(
            proc_state(v.pid).is_some_and(|c| c != 'Z'),
            "{s}: victim runs"
        );
        untracked(v.pid).unwrap_or_else(|e| panic!("first pass, {s}: {e}"));
        let _ = std::fs::remove_dir_all(v.dir.join("img-1"));
    }
    let out = pre_dump(&v, 1, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    step(&v, 1);
    for s in ["track", "pages", "metadata"] {
        let out = pre_dump(&v, 2, &[("CREST_FAULT", s)]);
        assert_eq!(out.status.code(), Some(1), "{s}: {}", stderr(&out));
        untracked(v.pid).unwrap_or_else(|e| panic!("second pass, {s}: {e}"));
        let _ = std::fs::remove_dir_all(v.dir.join("img-2"));
    }
    step(&v, 2);
    v.go();
    assert_eq!(v.wait_report(|| None).trim(), "pass");
    assert_eq!(libc::WEXITSTATUS(v.reap()), 0);
    let _ = std::fs::remove_dir_all(dir);
}

/// An application's own userfaultfd keeps its region: crest cannot track
/// it, so each pass stores it whole, and the application's registration
/// is still its own afterwards.
#[test]
fn a_region_of_the_applications_own_userfaultfd_is_stored_whole() {
    if !crest::dump::track::available().contains(&Mechanism::UffdWp) {
        return;
    }
    let dir = scratch("predump-own-uffd");
    let mut v = Victim::spawn(&dir, victim::uffd_victim);
    let ready = v.ready_text();
    let hex = ready.trim().strip_prefix("region=").unwrap();
    let region = u64::from_str_radix(hex, 16).unwrap();
    let env = [("CREST_TRACK", "uffd-wp")];
    let out = pre_dump(&v, 1, &env);
    assert!(out.status.success(), "{}", stderr(&out));
    step(&v, 1);
    let out = pre_dump(&v, 2, &env);
    assert!(out.status.success(), "{}", stderr(&out));
    let idx = final_index(&v.dir.join("img-2"), v.pid);
    let end = region + (victim::OWN_UFFD_PAGES * victim::PAGE) as u64;
    let stored: u64 = idx
        .runs
        .iter()
        .filter(|r| r.vaddr < end && r.vaddr + r.nr_pages * victim::PAGE as u64 > region)
        .map(|r| {
            assert_eq!(r.kind, crest::image::pagemap::RunKind::Present, "{r:?}");
            // A run may go on past the region into a neighbour written too.
            let from = r.vaddr.max(region);
            let to = (r.vaddr + r.nr_pages * victim::PAGE as u64).min(end);
            (to - from) / victim::PAGE as u64
        })
        .sum();
    assert_eq!(
        stored,
        victim::OWN_UFFD_PAGES as u64,
        "the region is stored whole"
    );
    v.go();
    assert_eq!(v.wait_report(|| None).trim(), "pass");
    assert_eq!(libc::WEXITSTATUS(v.reap()), 0);
    let _ = std::fs::remove_dir_all(dir);
}
