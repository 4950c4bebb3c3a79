//! plan_files and install_files refuse, with one sentence naming the fd,
//! the path, what changed and the fix.

use super::*;

/// plan_files' error for `img` (cwd `dir`), as the user reads it.
fn refusal(img: &FilesImage, dir: &Path, shell_job: bool) -> String {
    let e = plan_files(img, &misc(dir), shell_job).expect_err("plan_files must refuse");
    let text = e.to_string();
    assert_eq!(text.lines().count(), 1, "one sentence: {text}");
    text
}

fn one(fd: Fd) -> FilesImage {
    FilesImage {
        fds: vec![fd],
        pipes: Vec::new(),
        descs: Vec::new(),
    }
}

#[test]
fn plan_refuses_a_file_that_changed_or_went_since_the_dump() {
    let dir = scratch("changed");
    let path = dir.join("f");
    std::fs::write(&path, b"0123456789").unwrap();
    let img = one(reg(4, 0, &path, RDONLY, 3));
    plan_files(&img, &misc(&dir), false).expect("unchanged: accepted");
    let shown = path.to_str().unwrap();

    std::fs::write(&path, b"0123456789 and more").unwrap();
    let e = refusal(&img, &dir, false);
    assert!(e.contains("fd 4") && e.contains(shown), "{e}");
    assert!(e.contains("19 bytes") && e.contains("was 10"), "{e}");
    assert!(e.contains("put back the file"), "{e}");

    // Same size, other mtime.
    std::fs::write(&path, b"9876543210").unwrap();
    let f = std::fs::File::options().write(true).open(&path).unwrap();
    let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    f.set_modified(old).unwrap();
    let e = refusal(&img, &dir, false);
    assert!(
        e.contains("fd 4") && e.contains("modified since the dump"),
        "{e}"
    );

    std::fs::remove_file(&path).unwrap();
    let e = refusal(&img, &dir, false);
    assert!(e.contains("fd 4") && e.contains(shown), "{e}");
    assert!(
        e.contains("cannot be found") && e.contains("put it back"),
        "{e}"
    );

    // A directory where a file was.
    std::fs::create_dir(&path).unwrap();
    let e = refusal(&img, &dir, false);
    assert!(
        e.contains("was a regular file") && e.contains("not one now"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn plan_refuses_a_changed_device_a_missing_cwd_and_an_unknown_kind() {
    let dir = scratch("device");
    let mut null = chr(6, 0, "/dev/null", RDWR);
    if let FdFile::Chr { path, .. } = &mut null.file {
        *path = b"/dev/zero".to_vec();
    }
    let e = refusal(&one(null), &dir, false);
    assert!(e.contains("fd 6") && e.contains("/dev/zero"), "{e}");
    assert!(e.contains("character device 1:3"), "{e}");

    let e = refusal(&one(chr(7, 0, "/dev/ptmx", RDWR)), &dir, true);
    assert!(
        e.contains("fd 7") && e.contains("pseudo-terminal master"),
        "{e}"
    );

    let unknown = Fd {
        fd: 8,
        fd_flags: 0,
        file: FdFile::Unknown(42),
    };
    let e = refusal(&one(unknown), &dir, false);
    assert!(e.contains("fd 8") && e.contains("kind 42"), "{e}");

    let gone = dir.join("gone");
    let e = refusal(&FilesImage::default(), &gone, false);
    assert!(
        e.contains("working directory") && e.contains(gone.to_str().unwrap()),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn install_refuses_a_kept_fd_among_the_images_fds() {
    let dir = scratch("keep");
    let img = one(chr(9, 0, "/dev/null", RDWR));
    let plan = plan_files(&img, &misc(&dir), false).unwrap();
    assert_eq!(plan.first_free_fd(), 10);
    // Refused before any fd is touched, so the test process is unharmed.
    let e = install_files(&plan, &[20, 4]).expect_err("fd 4 is below 10");
    assert!(e.to_string().contains("kept fd 4"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A new pseudo-terminal: (master, slave path, slave rdev).
fn pty() -> (std::os::fd::OwnedFd, String, u64) {
    use std::os::fd::FromRawFd;
    // SAFETY: posix_openpt returns a new fd or -1; ptsname_r writes into buf.
    unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(m >= 0 && libc::grantpt(m) == 0 && libc::unlockpt(m) == 0);
        let mut buf = [0 as libc::c_char; 64];
        assert_eq!(libc::ptsname_r(m, buf.as_mut_ptr(), buf.len()), 0);
        let path = std::ffi::CStr::from_ptr(buf.as_ptr())
            .to_str()
            .unwrap()
            .to_string();
        let rdev = std::os::unix::fs::MetadataExt::rdev(&std::fs::metadata(&path).unwrap());
        (std::os::fd::OwnedFd::from_raw_fd(m), path, rdev)
    }
}

#[test]
fn a_terminal_needs_shell_job_and_then_shares_crests_terminal() {
    let dir = scratch("tty");
    let (_master, path, rdev) = pty();
    let tty = |fd| Fd {
        fd,
        fd_flags: 0,
        file: FdFile::Chr {
            path: path.as_bytes().to_vec(),
            flags: RDWR,
            rdev,
            pos: 0,
        },
    };
    let img = FilesImage {
        fds: vec![tty(0), tty(1), tty(2), chr(4, CLOEXEC, "/dev/null", RDWR)],
        pipes: Vec::new(),
        descs: Vec::new(),
    };
    let e = refusal(&img, &dir, false);
    assert!(e.contains("fd 0") && e.contains(&path), "{e}");
    assert!(e.contains("--shell-job"), "{e}");
    // crest's terminal: the child's stdout is the pty slave, its stdin and
    // stderr are not terminals. Planning happens there, where it can see it.
    let slave = CString::new(path.clone()).unwrap();
    let on_terminal = || {
        // SAFETY: raw fd syscalls in the forked child.
        unsafe {
            let s = libc::open(slave.as_ptr(), libc::O_RDWR | libc::O_NOCTTY);
            let n = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            libc::dup2(n, 0);
            libc::dup2(s, 1);
            libc::dup2(n, 2);
        }
    };
    let m = misc(&dir);
    let inst = install_in_child(
        &on_terminal,
        &|keep| install_files(&plan_files(&img, &m, true)?, keep),
        &|| 0,
    )
    .expect("install");
    assert_matches(&inst, &img);
    assert_eq!(inst.go(), 0);
    // Without a terminal on crest's stdin/stdout/stderr: refused, naming why.
    let no_terminal = || {
        // SAFETY: raw fd syscalls in the forked child.
        unsafe {
            let n = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            for fd in 0..3 {
                libc::dup2(n, fd);
            }
        }
    };
    let e = install_in_child(
        &no_terminal,
        &|keep| install_files(&plan_files(&img, &m, true)?, keep),
        &|| 0,
    )
    .err()
    .expect("refused without a terminal");
    assert!(
        e.contains("fd 0") && e.contains("none of crest's stdin"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sets this process's RLIMIT_NOFILE (raw, for the forked child).
fn set_nofile(soft: u64, hard: u64) {
    let l = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads one struct rlimit.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &l) };
}

#[test]
fn install_raises_a_low_fd_limit_and_refuses_one_it_cannot_raise() {
    let dir = scratch("nofile");
    let img = FilesImage {
        fds: vec![
            chr(100, 0, "/dev/null", RDWR),
            pipe_end(120, 0, 7, RDONLY),
            pipe_end(121, CLOEXEC, 7, WRONLY),
        ],
        pipes: vec![PipeData {
            pipe_id: 7,
            data: b"over the limit".to_vec(),
        }],
        descs: Vec::new(),
    };
    let plan = plan_files(&img, &misc(&dir), false).unwrap();
    // fds 100-121 and the slots above the kept 500/501 are all above 64.
    let inst = install_in_child(
        &|| set_nofile(64, 20_000),
        &|keep| install_files(&plan, keep),
        &|| 0,
    )
    .expect("install raises the soft limit");
    assert_matches(&inst, &img);
    assert_eq!(inst.go(), 0);
    let e = install_in_child(
        &|| set_nofile(64, 505),
        &|keep| install_files(&plan, keep),
        &|| 0,
    )
    .err()
    .expect("a hard limit below the slots is refused");
    assert!(e.contains("RLIMIT_NOFILE") && e.contains("505"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
