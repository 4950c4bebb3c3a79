//! The anonymous-inode fds of an event loop, read from
//! `/proc/PID/fdinfo/N`: eventfd (counter, EFD_SEMAPHORE when the kernel
//! shows it), signalfd (mask), timerfd (clock, settime flags, time left,
//! period, unread ticks), epoll (targets) and inotify (watches).
//!
//! Two of them name other files and need more than fdinfo:
//! - an epoll target is shown by the fd number it was added with; kcmp
//!   (KCMP_EPOLL_TFD) proves that number still holds the registered file,
//!   so restore can add the target back by number. A target closed (or
//!   replaced) since it was added is refused.
//! - an inotify watch is shown by inode, device and file handle; crest opens
//!   the handle (open_by_handle_at on a mount of that device from
//!   /proc/PID/mountinfo) and reads the path back from /proc/self/fd,
//!   checking the inode. No handle (a kernel without CONFIG_FHANDLE), or a
//!   file no longer reachable by a path, is refused: crest does not search
//!   the file system for an inode.

use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

use super::super::{parsed, read_proc};
use crate::error::{Error, Result};
use crate::image::codec::Writer;
use crate::image::files::{EpollTarget, Fd, FdFile, InotifyWatch, MAX_FD_ITEMS};
use crate::image::record::Record;
use crate::proc::fdinfo::{FdInfo, anon};
use crate::sys::anonfd::{O_PATH, open_by_handle_at};
use crate::sys::process::kcmp_epoll_tfd;

/// The fd record of an eventfd, signalfd, timerfd, epoll or inotify fd, or
/// None when `target` is none of those.
pub fn collect(
    pid: u32,
    fd: i32,
    target: &[u8],
    info: &FdInfo<'_>,
    flags: u32,
) -> Result<Option<FdFile>> {
    let what = format!("fdinfo/{fd}");
    let file = match target {
        b"anon_inode:[eventfd]" => {
            let (count, semaphore) = parsed(pid, &what, anon::eventfd(info))?;
            if semaphore.is_none() {
                crate::warn!(
                    "pid {pid}: fd {fd} is an eventfd and this kernel does not show whether it is EFD_SEMAPHORE (kernels newer than 6.1 do); it is restored as a plain counter"
                );
            }
            FdFile::EventFd {
                flags,
                count,
                semaphore,
            }
        }
        b"anon_inode:[signalfd]" => FdFile::SignalFd {
            flags,
            sigmask: parsed(pid, &what, anon::signalfd(info))?,
        },
        b"anon_inode:[timerfd]" => {
            let t = parsed(pid, &what, anon::timerfd(info))?;
            FdFile::TimerFd {
                flags,
                clockid: t.clockid,
                settime_flags: t.settime_flags,
                ticks: t.ticks,
                value_ns: t.value_ns,
                interval_ns: t.interval_ns,
            }
        }
        b"anon_inode:[eventpoll]" => epoll(pid, fd, info, flags)?,
        b"anon_inode:inotify" => inotify(pid, fd, info, flags)?,
        _ => return Ok(None),
    };
    fits(pid, fd, file).map(Some)
}

/// `file` fits in one fd record (many long inotify paths may not): refused
/// here, before the process is touched, rather than when the image is written.
fn fits(pid: u32, fd: i32, file: FdFile) -> Result<FdFile> {
    let rec = Fd {
        fd,
        fd_flags: 0,
        file,
    };
    let mut w = Writer::new();
    rec.encode(&mut w);
    let limit = crate::image::record::max_len(Fd::KIND);
    if w.as_bytes().len() > limit as usize {
        return Err(Error::Unsupported(format!(
            "fd {fd} of pid {pid} needs {} bytes in the image (its epoll targets or inotify watch paths), more than an fd record holds ({limit}); reduce them before the dump",
            w.as_bytes().len()
        )));
    }
    Ok(rec.file)
}

fn too_many(pid: u32, fd: i32, kind: &str, n: usize) -> Error {
    Error::Unsupported(format!(
        "fd {fd} of pid {pid} is {kind} with {n} entries, more than the {MAX_FD_ITEMS} an image record holds; reduce them before the dump"
    ))
}

/// An epoll instance whose every target still sits at its registered number.
fn epoll(pid: u32, fd: i32, info: &FdInfo<'_>, flags: u32) -> Result<FdFile> {
    let tfds = parsed(pid, &format!("fdinfo/{fd}"), anon::epoll(info))?;
    if tfds.len() > MAX_FD_ITEMS {
        return Err(too_many(pid, fd, "an epoll instance", tfds.len()));
    }
    let mut targets: Vec<EpollTarget> = Vec::with_capacity(tfds.len());
    for t in tfds {
        if targets.iter().any(|o| o.fd == t.tfd) {
            return Err(Error::Unsupported(format!(
                "fd {fd} of pid {pid} is an epoll instance holding two registrations under fd number {}, one of them for a file since closed; crest cannot recreate that; close the epoll's stale registration (re-add the fd) before the dump",
                t.tfd
            )));
        }
        let same = kcmp_epoll_tfd(pid as i32, pid as i32, t.tfd, fd as u32, t.tfd as u32);
        if same != Ok(0) {
            return Err(Error::Unsupported(format!(
                "fd {fd} of pid {pid} is an epoll instance watching a file added as fd {}, but fd {} no longer holds that file (closed or replaced after it was added); crest restores epoll targets by fd number, so remove the stale target (EPOLL_CTL_DEL) before the dump",
                t.tfd, t.tfd
            )));
        }
        targets.push(EpollTarget {
            fd: t.tfd,
            events: t.events,
            data: t.data,
        });
    }
    Ok(FdFile::Epoll { flags, targets })
}

/// An inotify instance with a path for each watch.
fn inotify(pid: u32, fd: i32, info: &FdInfo<'_>, flags: u32) -> Result<FdFile> {
    let marks = parsed(pid, &format!("fdinfo/{fd}"), anon::inotify(info))?;
    if marks.len() > MAX_FD_ITEMS {
        return Err(too_many(pid, fd, "an inotify instance", marks.len()));
    }
    let mountinfo = read_proc(pid, "mountinfo")?;
    let mut watches = Vec::with_capacity(marks.len());
    for m in &marks {
        let path = watch_path(&mountinfo, m).map_err(|why| {
            Error::Unsupported(format!(
                "fd {fd} of pid {pid} is an inotify instance whose watch {} (inode {} on device {}:{}) {why}; crest restores watches by path, so remove that watch before the dump",
                m.wd,
                m.ino,
                m.sdev >> 20,
                m.sdev & 0xf_ffff
            ))
        })?;
        watches.push(InotifyWatch {
            wd: m.wd,
            mask: m.mask,
            path,
        });
    }
    Ok(FdFile::Inotify { flags, watches })
}

/// The path of a watched inode, through its file handle.
fn watch_path(mountinfo: &[u8], m: &anon::InotifyMark) -> Result<Vec<u8>, String> {
    let Some((htype, handle)) = &m.handle else {
        return Err("has no file handle in fdinfo (a kernel without CONFIG_FHANDLE)".into());
    };
    let (major, minor) = (m.sdev >> 20, m.sdev & 0xf_ffff);
    let mnt = mount_point(mountinfo, major, minor)
        .ok_or_else(|| "is on a device with no mount visible to crest".to_string())?;
    let dir = std::fs::File::open(std::ffi::OsStr::from_bytes_compat(&mnt))
        .map_err(|e| format!("is on a mount crest cannot open ({e})"))?;
    let file = open_by_handle_at(std::os::fd::AsFd::as_fd(&dir), *htype, handle, O_PATH)
        .map_err(|e| format!("cannot be opened by its file handle ({e})"))?;
    let link = format!("/proc/self/fd/{}", file.as_raw_fd());
    let path = std::fs::read_link(&link)
        .map_err(|e| format!("has no name crest can read ({e})"))?
        .into_os_string()
        .into_encoded_bytes();
    if path.ends_with(b" (deleted)") || !path.starts_with(b"/") {
        return Err("is a deleted file or not reachable by a path".into());
    }
    let meta = std::fs::metadata(std::ffi::OsStr::from_bytes_compat(&path)).map_err(|e| {
        format!(
            "was found at `{}` but cannot be stat'ed ({e})",
            lossy(&path)
        )
    })?;
    if meta.ino() != m.ino {
        return Err(format!(
            "was found at `{}`, which is now another file",
            lossy(&path)
        ));
    }
    Ok(path)
}

fn lossy(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b)
}

/// The mount point of a mount of device `major:minor`, preferring one that
/// mounts the file system's root (so every inode on it has a path there).
fn mount_point(mountinfo: &[u8], major: u64, minor: u64) -> Option<Vec<u8>> {
    let want = format!("{major}:{minor}");
    let mut found = None;
    for line in mountinfo.split(|&c| c == b'\n') {
        let f: Vec<&[u8]> = line.split(|&c| c == b' ').collect();
        if f.len() < 5 || f[2] != want.as_bytes() {
            continue;
        }
        let point = unescape(f[4]);
        if f[3] == b"/" {
            return Some(point);
        }
        found.get_or_insert(point);
    }
    found
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let oct = s.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|t| u8::from_str_radix(t, 8).ok())
        });
        match (s[i], oct) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// `OsStr::from_bytes` under a name that does not clash with the prelude.
trait FromBytesCompat {
    fn from_bytes_compat(b: &[u8]) -> &Self;
}

impl FromBytesCompat for std::ffi::OsStr {
    fn from_bytes_compat(b: &[u8]) -> &Self {
        std::os::unix::ffi::OsStrExt::from_bytes(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_root_mount_of_a_device() {
        let mi = b"22 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
                   30 22 254:0 /srv/x /mnt/my\\040dir rw - ext4 /dev/vda rw\n\
                   31 22 0:5 / /dev rw - devtmpfs udev rw\n";
        assert_eq!(mount_point(mi, 254, 0).unwrap(), b"/");
        assert_eq!(mount_point(mi, 0, 5).unwrap(), b"/dev");
        assert_eq!(mount_point(&mi[47..], 254, 0).unwrap(), b"/mnt/my dir");
        assert!(mount_point(mi, 8, 1).is_none());
    }
}
