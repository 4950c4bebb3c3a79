//! The inotify victim: watches on files `a` (wd 1), `b` (wd 2, removed
//! before the dump, so the wds have a gap) and `c` (wd 3, IN_MODIFY) and on
//! the directory `d` (wd 4, IN_CREATE), non-blocking. After go: no event is
//! pending; a write to `c`, a file created in `d` and a write to `a` are
//! reported in order under wds 3, 4 (with the name) and 1; a new watch gets
//! wd 5, as it would have without a checkpoint.
//!
//! [`deleted_victim`] watches a file it then unlinks (held open, so the
//! watch lives on): the watch has no path, which dump refuses.

use std::ffi::CStr;
use std::path::Path;

use crate::common::victim::{Child, Msg, Verdict};
use crate::raw::{check_flags, errno, place};

const IN: i32 = 10;

pub fn prepare(dir: &Path) {
    for f in ["a", "b", "c", "gone"] {
        std::fs::write(dir.join(f), b"x").unwrap();
    }
    std::fs::create_dir(dir.join("d")).unwrap();
}

fn watch(path: &CStr, mask: u32) -> Result<i32, Msg> {
    // SAFETY: a live C string.
    let wd = unsafe { libc::inotify_add_watch(IN, path.as_ptr(), mask) };
    ensure!(wd > 0, "watching {path:?}: errno {}", errno());
    Ok(wd)
}

/// The next event: (wd, mask, name), or the errno.
fn next_event(buf: &mut [u8; 512]) -> Result<(i32, u32, &[u8]), i32> {
    // SAFETY: a live buffer.
    let n = unsafe { libc::read(IN, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 16 {
        return Err(if n < 0 { errno() } else { -1 });
    }
    let word = |i: usize| u32::from_ne_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
    let (wd, mask, len) = (word(0) as i32, word(4), word(12) as usize);
    let name = &buf[16..16 + len.min(n as usize - 16)];
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Ok((wd, mask, &name[..end]))
}

fn append(c: &Child, name: &str) -> Verdict {
    // SAFETY: raw file calls on a live path.
    let ok = unsafe {
        let fd = libc::open(c.path(name).as_ptr(), libc::O_WRONLY | libc::O_APPEND);
        fd >= 0 && libc::write(fd, b"y".as_ptr().cast(), 1) == 1 && libc::close(fd) == 0
    };
    ensure!(ok, "writing {name}");
    Ok(())
}

fn setup(c: &Child) -> Verdict {
    // SAFETY: raw object creation.
    place(unsafe { libc::inotify_init1(libc::IN_NONBLOCK) }, IN, false)?;
    ensure!(watch(&c.path("a"), libc::IN_MODIFY)? == 1, "wd of a");
    ensure!(watch(&c.path("b"), libc::IN_MODIFY)? == 2, "wd of b");
    ensure!(watch(&c.path("c"), libc::IN_MODIFY)? == 3, "wd of c");
    ensure!(watch(&c.path("d"), libc::IN_CREATE)? == 4, "wd of d");
    // SAFETY: integer call.
    ensure!(unsafe { libc::inotify_rm_watch(IN, 2) } == 0, "rm wd 2");
    let mut buf = [0u8; 512];
    let ev = next_event(&mut buf);
    ensure!(
        matches!(ev, Ok((2, m, _)) if m & libc::IN_IGNORED != 0),
        "IN_IGNORED of wd 2: {ev:?}"
    );
    Ok(())
}

pub fn victim(c: &Child) -> Verdict {
    setup(c)?;
    c.ready(b"");
    c.wait_go();
    check_flags(IN, true, false)?;
    let mut buf = [0u8; 512];
    let ev = next_event(&mut buf);
    ensure!(
        ev == Err(libc::EAGAIN),
        "an event before any change: {ev:?}"
    );
    append(c, "c")?;
    let ev = next_event(&mut buf);
    ensure!(
        ev == Ok((3, libc::IN_MODIFY, &b""[..])),
        "write to c: {ev:?}"
    );
    // SAFETY: a live path.
    let fd = unsafe {
        libc::open(
            c.path("d/new").as_ptr(),
            libc::O_CREAT | libc::O_WRONLY,
            0o600,
        )
    };
    ensure!(fd >= 0, "creating d/new");
    // SAFETY: our own fd.
    unsafe { libc::close(fd) };
    let ev = next_event(&mut buf);
    ensure!(
        ev == Ok((4, libc::IN_CREATE, &b"new"[..])),
        "create in d: {ev:?}"
    );
    append(c, "a")?;
    let ev = next_event(&mut buf);
    ensure!(
        ev == Ok((1, libc::IN_MODIFY, &b""[..])),
        "write to a: {ev:?}"
    );
    let wd = watch(&c.path("b"), libc::IN_MODIFY)?;
    ensure!(wd == 5, "a new watch got wd {wd}, not 5");
    Ok(())
}

/// A watch on a file unlinked after (held open at fd 11, above the
/// inotify fd, so the watch is what dump meets first).
pub fn deleted_victim(c: &Child) -> Verdict {
    let gone = c.path("gone");
    // SAFETY: a live path.
    let fd = unsafe { libc::open(gone.as_ptr(), libc::O_WRONLY | libc::O_CREAT, 0o600) };
    place(fd, 11, false)?;
    // SAFETY: raw object creation.
    place(unsafe { libc::inotify_init1(libc::IN_NONBLOCK) }, IN, false)?;
    ensure!(watch(&gone, libc::IN_MODIFY)? == 1, "wd of gone");
    // SAFETY: a live path.
    ensure!(unsafe { libc::unlink(gone.as_ptr()) } == 0, "unlink");
    c.ready(b"");
    c.wait_go();
    // SAFETY: one byte from a live buffer.
    let wrote = unsafe { libc::write(11, b"y".as_ptr().cast(), 1) };
    ensure!(wrote == 1, "write");
    let mut buf = [0u8; 512];
    let ev = next_event(&mut buf);
    ensure!(
        ev == Ok((1, libc::IN_MODIFY, &b""[..])),
        "the deleted file's watch: {ev:?}"
    );
    Ok(())
}
