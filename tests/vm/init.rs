//! PID 1 of the qemu lanes' initramfs (see tests/vm/README.md).
//!
//! The kernel runs it from a cpio newc initramfs with nothing else around: no
//! shell, no busybox, no libraries. It mounts the pseudo file systems a test
//! needs (proc, sysfs, devtmpfs, tmpfs), then runs every entry of /vm/plan in
//! order with a deadline each, and prints machine-readable markers on the
//! console so the host can tell which program passed:
//!
//! ```text
//! @@CREST-VM KERNEL <release> <arch> cpus=<n> uptime=<secs>
//! @@CREST-VM BEGIN <name>
//! @@CREST-VM END <name> exit=<code>|signal=<n>|timeout secs=<wall time>
//! @@CREST-VM LEFT <pid> <state> <comm>   (a process that survived SIGKILL)
//! @@CREST-VM DONE uptime=<secs>
//! ```
//!
//! The uptimes place a lane's time: boot before /init, the plan, and (by the
//! host's clock) the power-off after DONE.
//!
//! Being PID 1 it also reaps every orphan at once (tests wait for /proc/PID
//! of a killed victim to vanish, zombies included) and, after each program,
//! kills whatever that program left behind, so one test binary cannot leak
//! into the next. Finally it powers the machine off; qemu runs with
//! `-no-reboot`, so even a crash of this program (kernel panic, `panic=-1`)
//! ends qemu instead of hanging the lane.
//!
//! It is built by `rustc` alone (no cargo, no crates) for the lane's musl
//! target; the few libc calls std lacks (mount, waitpid, kill, reboot) are
//! declared here and resolved by the static musl libc that std links anyway.
//!
//! It also brings the loopback interface up and loads the kernel modules the
//! plan names (the socket-diag ones are modules in Debian kernels and there is
//! no modprobe here to autoload them), so the VM looks like an ordinary system.
//!
//! Plan format, one tab-separated record a line, run in order:
//! `env KEY VALUE`, `cwd DIR`, `tmpfs DIR` (mount one there), `insmod FILE`,
//! `prep TIMEOUT_SECS PATH [ARG]...` (run quietly, note only a failure) or
//! `run NAME TIMEOUT_SECS PATH [ARG]...`. /tmp is a plan entry, not a fixed
//! mount, because a checkout under /tmp puts the binaries there.

use std::ffi::{CString, c_char, c_int, c_ulong, c_void};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

// Kernel constants, named as in include/uapi/linux/{mount,reboot,wait,
// sockios,if}.h.
const MS_NOSUID: c_ulong = 2;
const MS_NODEV: c_ulong = 4;
const MS_NOEXEC: c_ulong = 8;
const WNOHANG: c_int = 1;
const SIGKILL: c_int = 9;
const LINUX_REBOOT_CMD_POWER_OFF: c_int = 0x4321_fedc;
const SIOCGIFFLAGS: c_int = 0x8913;
const SIOCSIFFLAGS: c_int = 0x8914;
const IFF_UP: u16 = 0x1;
/// `struct ifreq`: a 16-byte name, then a union whose `short` flags we use.
const IFREQ_SIZE: usize = 40;
const IFNAMSIZ: usize = 16;

unsafe extern "C" {
    fn mount(
        src: *const c_char,
        target: *const c_char,
        fstype: *const c_char,
        flags: c_ulong,
        data: *const c_void,
    ) -> c_int;
    fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
    fn init_module(image: *const c_void, len: c_ulong, params: *const c_char) -> c_int;
    fn ioctl(fd: c_int, request: c_int, ...) -> c_int;
    safe fn kill(pid: c_int, sig: c_int) -> c_int;
    safe fn reboot(cmd: c_int) -> c_int;
    safe fn sync();
}

fn say(line: &str) {
    // A leading newline keeps the marker at the start of a line even when the
    // program before it ended without one.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "\n{line}");
    let _ = out.flush();
}

fn mount_fs(fstype: &str, target: &str, flags: c_ulong, data: &str) {
    let _ = std::fs::create_dir_all(target);
    let c = |s: &str| CString::new(s).unwrap_or_default();
    let (src, dir, ty, opts) = (c(fstype), c(target), c(fstype), c(data));
    // SAFETY: every pointer is a NUL-terminated CString alive for the call.
    let rc = unsafe {
        mount(
            src.as_ptr(),
            dir.as_ptr(),
            ty.as_ptr(),
            flags,
            opts.as_ptr().cast(),
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        say(&format!(
            "@@CREST-VM NOTE mount {fstype} on {target} failed: {err}"
        ));
    }
}

/// One `waitpid` without blocking: `Some((pid, status))` when a child ended.
fn reap_one() -> Option<(c_int, c_int)> {
    let mut status: c_int = 0;
    // SAFETY: status is a valid, writable c_int for the duration of the call.
    let pid = unsafe { waitpid(-1, &raw mut status, WNOHANG) };
    (pid > 0).then_some((pid, status))
}

/// Kills everything but PID 1 and reaps it, so the next program starts clean.
fn kill_all_and_reap() {
    kill(-1, SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        while reap_one().is_some() {}
        let mut status: c_int = 0;
        // SAFETY: as in reap_one; an error (ECHILD) means nothing is left.
        if unsafe { waitpid(-1, &raw mut status, WNOHANG) } < 0 {
            return;
        }
        if Instant::now() > deadline {
            return say_survivors();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Names the processes SIGKILL did not end in 10 s (stuck in the kernel):
/// they would otherwise only show as a slow lane or a hung power-off.
fn say_survivors() {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    for pid in dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map_or("", |(_, c)| c);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // Kernel threads are children of kthreadd (pid 2), or kthreadd itself.
        let is_user = pid > 2 && fields.get(1).is_some_and(|ppid| *ppid != "2");
        if is_user {
            let state = fields.first().unwrap_or(&"?");
            say(&format!("@@CREST-VM LEFT {pid} {state} {comm}"));
        }
    }
}

/// Seconds since boot, as /proc/uptime gives them.
fn uptime() -> String {
    let text = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
    text.split_whitespace().next().unwrap_or("?").to_string()
}

fn describe(status: c_int) -> String {
    // WIFEXITED: no signal number in the low 7 bits.
    if status.trailing_zeros() >= 7 {
        format!("exit={}", (status >> 8) & 0xff)
    } else {
        format!("signal={}", status & 0x7f)
    }
}

/// What a program runs with: the plan's environment and working directory.
struct Ctx {
    env: Vec<(String, String)>,
    cwd: String,
}

/// Runs `argv` to its end or `timeout`, then clears up whatever it left;
/// returns its outcome as the END marker shows it.
fn run(argv: &[&str], timeout: Duration, ctx: &Ctx) -> String {
    let start = Instant::now();
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(ctx.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&ctx.cwd)
        .process_group(0);
    let outcome = match cmd.spawn() {
        Err(e) => format!("exit=127 spawn-error=\"{}: {e}\"", argv[0]),
        // A pid always fits pid_t; 0 would only make the wait time out.
        Ok(child) => wait_for(c_int::try_from(child.id()).unwrap_or(0), start + timeout),
    };
    kill_all_and_reap();
    outcome
}

fn run_marked(name: &str, argv: &[&str], timeout: Duration, ctx: &Ctx) {
    say(&format!("@@CREST-VM BEGIN {name}"));
    let start = Instant::now();
    let outcome = run(argv, timeout, ctx);
    let secs = start.elapsed().as_secs_f64();
    say(&format!("@@CREST-VM END {name} {outcome} secs={secs:.2}"));
}

/// Loads one kernel module from an (uncompressed) .ko file.
fn insmod(path: &str) {
    let image = match std::fs::read(path) {
        Ok(image) => image,
        Err(e) => return say(&format!("@@CREST-VM NOTE insmod {path}: {e}")),
    };
    // SAFETY: image is a live buffer of image.len() bytes and the parameter
    // string is a NUL-terminated literal; the kernel copies both.
    let rc = unsafe { init_module(image.as_ptr().cast(), image.len() as c_ulong, c"".as_ptr()) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        say(&format!("@@CREST-VM NOTE insmod {path}: {err}"));
    }
}

/// Sets `IFF_UP` on `lo`: the kernel creates it down, an init normally raises it.
fn loopback_up() -> std::io::Result<()> {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
    let mut ifr = [0u8; IFREQ_SIZE];
    ifr[..2].copy_from_slice(b"lo");
    // SAFETY: ifr is a writable, zeroed struct ifreq of the kernel's size.
    if unsafe { ioctl(sock.as_raw_fd(), SIOCGIFFLAGS, ifr.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let flags = u16::from_ne_bytes([ifr[IFNAMSIZ], ifr[IFNAMSIZ + 1]]) | IFF_UP;
    ifr[IFNAMSIZ..IFNAMSIZ + 2].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: as above; the kernel only reads the name and the flags.
    if unsafe { ioctl(sock.as_raw_fd(), SIOCSIFFLAGS, ifr.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Waits for `pid`, reaping orphans meanwhile; kills its group at `deadline`.
fn wait_for(pid: c_int, deadline: Instant) -> String {
    loop {
        while let Some((done, status)) = reap_one() {
            if done == pid {
                return describe(status);
            }
        }
        if Instant::now() > deadline {
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
            return "timeout".to_string();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn main() {
    mount_fs("proc", "/proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "");
    mount_fs("sysfs", "/sys", MS_NOSUID | MS_NODEV | MS_NOEXEC, "");
    mount_fs("devtmpfs", "/dev", MS_NOSUID, "mode=0755");
    mount_fs(
        "devpts",
        "/dev/pts",
        MS_NOSUID | MS_NOEXEC,
        "gid=5,mode=620",
    );
    mount_fs("tmpfs", "/dev/shm", MS_NOSUID | MS_NODEV, "mode=1777");
    mount_fs(
        "cgroup2",
        "/sys/fs/cgroup",
        MS_NOSUID | MS_NODEV | MS_NOEXEC,
        "",
    );
    if let Err(e) = loopback_up() {
        say(&format!("@@CREST-VM NOTE bringing lo up failed: {e}"));
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    say(&format!(
        "@@CREST-VM KERNEL {} {} cpus={} uptime={}",
        release.trim(),
        std::env::consts::ARCH,
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        uptime()
    ));

    let plan = std::fs::read_to_string("/vm/plan").unwrap_or_default();
    let mut ctx = Ctx {
        env: Vec::new(),
        cwd: "/".to_string(),
    };
    let secs = |s: &str| Duration::from_secs(s.parse().unwrap_or(300));
    for line in plan.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f.as_slice() {
            ["env", k, v] => ctx.env.push((k.to_string(), v.to_string())),
            ["cwd", dir] => ctx.cwd = dir.to_string(),
            ["tmpfs", dir] => mount_fs("tmpfs", dir, MS_NOSUID | MS_NODEV, "mode=1777"),
            ["insmod", path] => insmod(path),
            ["prep", t, argv @ ..] if !argv.is_empty() => {
                let outcome = run(argv, secs(t), &ctx);
                if !outcome.starts_with("exit=0") {
                    say(&format!("@@CREST-VM NOTE {argv:?}: {outcome}"));
                }
            }
            ["run", name, t, argv @ ..] if !argv.is_empty() => {
                run_marked(name, argv, secs(t), &ctx);
            }
            [""] => {}
            _ => say(&format!("@@CREST-VM NOTE bad plan line: {line:?}")),
        }
    }
    say(&format!("@@CREST-VM DONE uptime={}", uptime()));
    sync();
    reboot(LINUX_REBOOT_CMD_POWER_OFF);
    // Only reached if power-off failed: exiting PID 1 panics the kernel, and
    // with panic=-1 and qemu's -no-reboot that still ends the VM.
}
