//! The checks of [`plan_files`](super::plan_files): stat(2) of each path the
//! image names, compared with what the dump recorded, and the open flags a
//! restore uses.
//!
//! A file is accepted when its type is the dumped one and, for a regular
//! file, its size and mtime are the dumped ones: the process will read at
//! its saved position, so a file that changed would silently feed it other
//! bytes. Files on procfs are the exception: their size and mtime mean
//! nothing, and a file under /proc/PID/ may belong to a process this
//! restore is about to make, so it need not exist yet. Inode and device
//! numbers are not compared, so an image restores on another machine or
//! after a backup put the files back with their times.

use std::ffi::CString;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use crate::error::{Error, Result};
use crate::image::files::FileId;
use crate::sys::fdtable::isatty;

/// `O_ACCMODE`.
pub const O_ACCMODE: u32 = 3;
/// `O_CREAT`.
const O_CREAT: u32 = 0o100;
/// `O_EXCL`.
const O_EXCL: u32 = 0o200;
/// `O_NOCTTY`.
pub const O_NOCTTY: u32 = 0o400;
/// `O_TRUNC`.
const O_TRUNC: u32 = 0o1000;
/// `S_IFMT`.
const S_IFMT: u32 = 0o170000;
/// `S_IFDIR`.
const S_IFDIR: u32 = 0o040000;

/// The flags to reopen a file with: as dumped, without what would create or
/// truncate it, and close-on-exec while it sits at its temporary number.
pub fn open_flags(dumped: u32) -> u32 {
    (dumped & !(O_CREAT | O_EXCL | O_TRUNC)) | crate::sys::fd::O_CLOEXEC
}

fn show(path: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(path)
}

fn c_path(what: &str, path: &[u8]) -> Result<CString> {
    CString::new(path).map_err(|_| {
        Error::Unsupported(format!(
            "{what} `{}` in the image contains a NUL byte; the image is damaged",
            show(path)
        ))
    })
}

/// stat(2) of `path`, or the refusal saying it is gone.
fn stat(what: &str, path: &[u8]) -> Result<std::fs::Metadata> {
    let p = std::path::Path::new(std::ffi::OsStr::from_bytes(path));
    std::fs::metadata(p).map_err(|e| {
        Error::Unsupported(format!(
            "{what} `{}` cannot be found now ({e}); put it back where it was at the dump, then restore",
            show(path)
        ))
    })
}

/// `path` is a directory now (cwd, root).
pub fn directory(what: &str, path: &[u8]) -> Result<CString> {
    let meta = stat(what, path)?;
    if !meta.is_dir() {
        return Err(Error::Unsupported(format!(
            "{what} `{}` of the dumped process is no longer a directory; put the directory back, then restore",
            show(path)
        )));
    }
    c_path(what, path)
}

/// Fd `fd`'s regular file or directory is still the one dumped.
pub fn regular(fd: i32, path: &[u8], id: &FileId) -> Result<CString> {
    let what = format!("fd {fd}: the file");
    let procfs = on_procfs(path);
    if procfs
        && of_a_process(path)
        && std::fs::symlink_metadata(std::ffi::OsStr::from_bytes(path)).is_err()
    {
        // The process may be one this restore makes: the task opens the
        // path itself once its pid exists, and fails naming it if not.
        return c_path(&what, path);
    }
    let meta = stat(&what, path)?;
    let was_dir = id.mode & S_IFMT == S_IFDIR;
    if was_dir != meta.is_dir() || !(was_dir || meta.is_file()) {
        let was = if was_dir {
            "a directory"
        } else {
            "a regular file"
        };
        return Err(Error::Unsupported(format!(
            "fd {fd}: `{}` was {was} at the dump and is not one now; put back what was there, then restore",
            show(path)
        )));
    }
    // A procfs file's size (0) and mtime (when the kernel made the inode)
    // say nothing of what it shows.
    if !was_dir && !procfs {
        same_file(&format!("fd {fd}"), path, id, &meta)?;
    }
    c_path(&what, path)
}

/// Whether `path` names a file on the procfs mounted at /proc.
fn on_procfs(path: &[u8]) -> bool {
    path.starts_with(b"/proc/") && crate::sys::fd::is_procfs(c"/proc").unwrap_or(false)
}

/// Whether `path` is under /proc/PID/ (or is /proc/PID).
fn of_a_process(path: &[u8]) -> bool {
    let pid = path[b"/proc/".len()..].split(|&c| c == b'/').next();
    pid.is_some_and(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit))
}

/// The regular file at `path`, for `what` (an fd, a mapping, the
/// executable), whose metadata now is `meta`, is the one dumped: same size
/// and mtime.
pub fn same_file(what: &str, path: &[u8], id: &FileId, meta: &std::fs::Metadata) -> Result<()> {
    if meta.size() != id.size {
        return Err(Error::Unsupported(format!(
            "{what}: `{}` is {} bytes long now but was {} at the dump; put back the file as it was at the dump, then restore",
            show(path),
            meta.size(),
            id.size
        )));
    }
    let mtime_ns = meta.mtime() * 1_000_000_000 + meta.mtime_nsec();
    if mtime_ns != id.mtime_ns {
        return Err(Error::Unsupported(format!(
            "{what}: `{}` was modified since the dump (mtime {mtime_ns} ns now, {} ns then); put back the file as it was at the dump, then restore",
            show(path),
            id.mtime_ns
        )));
    }
    Ok(())
}

/// The file inotify watch `wd` of fd `fd` watched is still at `path`.
pub fn watched(fd: i32, wd: i32, path: &[u8]) -> Result<CString> {
    let what = format!("fd {fd}: the file of inotify watch {wd}");
    stat(&what, path)?;
    c_path(&what, path)
}

/// The major and minor numbers of a Linux dev_t.
fn major_minor(dev: u64) -> (u64, u64) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major, minor)
}

/// A terminal a process reads and writes, as opposed to other devices:
/// virtual consoles and serial lines (major 4), /dev/tty and /dev/console
/// (5:0, 5:1), and pseudo-terminal slaves (136-143).
pub fn is_tty(rdev: u64) -> bool {
    match major_minor(rdev) {
        (4, _) | (136..=143, _) => true,
        (5, minor) => minor <= 1,
        _ => false,
    }
}

/// A pseudo-terminal master (/dev/ptmx, legacy masters): reopening it would
/// make a new terminal, not the dumped one.
fn is_pty_master(rdev: u64) -> bool {
    matches!(major_minor(rdev), (5, 2) | (128..=135, _))
}

/// Fd `fd`'s device is still at `path` with the dumped number.
pub fn char_device(fd: i32, path: &[u8], rdev: u64) -> Result<CString> {
    if is_pty_master(rdev) {
        return Err(Error::Unsupported(format!(
            "fd {fd}: `{}` is a pseudo-terminal master, which crest cannot restore; close it before the dump",
            show(path)
        )));
    }
    let what = format!("fd {fd}: the device");
    let meta = stat(&what, path)?;
    if !meta.file_type().is_char_device() || meta.rdev() != rdev {
        let (ma, mi) = major_minor(rdev);
        return Err(Error::Unsupported(format!(
            "fd {fd}: `{}` is no longer the character device {ma}:{mi} it was at the dump; recreate that device node, then restore",
            show(path)
        )));
    }
    c_path(&what, path)
}

/// The fd of crest's own terminal that terminal fd `fd` will share.
pub fn terminal(fd: i32, path: &[u8], shell_job: bool) -> Result<i32> {
    if !shell_job {
        return Err(Error::Unsupported(format!(
            "fd {fd} is the terminal `{}`, which only a shell job can get back; restore with --shell-job (-j) from a terminal",
            show(path)
        )));
    }
    let std = [
        isatty(std::io::stdin().as_fd()),
        isatty(std::io::stdout().as_fd()),
        isatty(std::io::stderr().as_fd()),
    ];
    match std.iter().position(|&t| t) {
        Some(n) => Ok(n as i32),
        None => Err(Error::Unsupported(format!(
            "fd {fd} is the terminal `{}`, but none of crest's stdin, stdout and stderr is a terminal to give it; run crest restore --shell-job from a terminal",
            show(path)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_split_like_the_kernel() {
        // /dev/pts/3 is 136:3; /dev/null 1:3; a minor above 255.
        assert_eq!(major_minor(0x8803), (136, 3));
        assert_eq!(major_minor(0x103), (1, 3));
        assert_eq!(major_minor((136 << 8) | (0x10 << 20) | 5), (136, 0x1005));
        assert!(is_tty(0x8803) && is_tty(0x500) && is_tty(0x401));
        assert!(!is_tty(0x103) && !is_tty(0x502));
        assert!(is_pty_master(0x502) && !is_pty_master(0x8803));
    }

    /// One check for every user of a file (fd, mapping, executable):
    /// the dumped size and mtime pass, another size or mtime is refused
    /// naming the user and the path.
    #[test]
    fn same_file_compares_size_and_mtime() {
        let path = std::env::temp_dir().join(format!("crest-same-{}", std::process::id()));
        std::fs::write(&path, b"12345").unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        let id = FileId {
            dev: 0,
            ino: 0,
            size: 5,
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            mode: 0o100644,
        };
        let p = path.as_os_str().as_bytes();
        assert!(same_file("fd 3", p, &id, &meta).is_ok());
        let longer = FileId { size: 6, ..id };
        let e = same_file("mapped at 0x1000", p, &longer, &meta).unwrap_err();
        assert!(e.to_string().starts_with("mapped at 0x1000: `"), "{e}");
        assert!(e.to_string().contains("5 bytes long now but was 6"), "{e}");
        let older = FileId {
            mtime_ns: id.mtime_ns - 1,
            ..id
        };
        let e = same_file("fd 3", p, &older, &meta).unwrap_err();
        assert!(e.to_string().contains("modified since the dump"), "{e}");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn paths_of_a_process_under_proc() {
        assert!(of_a_process(b"/proc/123/stat"));
        assert!(of_a_process(b"/proc/7"));
        assert!(!of_a_process(b"/proc/self/stat"));
        assert!(!of_a_process(b"/proc/meminfo"));
        assert!(!of_a_process(b"/proc//stat"));
        assert!(on_procfs(b"/proc/meminfo"), "/proc is a procfs here");
        assert!(!on_procfs(b"/procfs/x") && !on_procfs(b"/tmp/proc/1"));
    }

    #[test]
    fn reopen_flags_never_create_or_truncate() {
        let f = open_flags(O_CREAT | O_EXCL | O_TRUNC | 0o2000 | 1);
        assert_eq!(f, 0o2000 | 1 | crate::sys::fd::O_CLOEXEC);
    }
}
