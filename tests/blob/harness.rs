//! Loading a blob into a shared mapping and running it in a forked child.

use crest::blob::Blob;
use crest::blob::regs::{USER_REGS_SIZE, UserRegs};
use std::ptr;

/// A blob copied into a fresh memfd and mapped shared, read, write and
/// execute, so the parent sees what the child's blob writes.
pub struct Loaded {
    pub blob: Blob,
    pub base: *mut u8,
    pub len: usize,
}

impl Loaded {
    pub fn new(blob: Blob) -> Loaded {
        // SAFETY: sysconf has no memory effects.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let len = blob.map_size(page);
        // SAFETY: the name is a NUL-terminated literal.
        let fd = unsafe { libc::memfd_create(c"crest-blob-test".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
        // SAFETY: fd is the memfd just created; the buffer is the blob's bytes.
        let n = unsafe { libc::write(fd, blob.bytes.as_ptr().cast(), blob.bytes.len()) };
        assert_eq!(n as usize, blob.bytes.len());
        // SAFETY: fd is a memfd we own; growing it zero-fills the tail.
        assert_eq!(unsafe { libc::ftruncate(fd, len as libc::off_t) }, 0);
        let prot = libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC;
        // SAFETY: a new shared mapping of our own memfd, at an address the
        // kernel picks; nothing else refers to that range.
        let base = unsafe { libc::mmap(ptr::null_mut(), len, prot, libc::MAP_SHARED, fd, 0) };
        let err = std::io::Error::last_os_error();
        assert_ne!(base, libc::MAP_FAILED, "mmap: {err}");
        // SAFETY: the mapping keeps the file alive; fd is ours to close.
        unsafe { libc::close(fd) };
        let base = base.cast();
        Loaded { blob, base, len }
    }

    /// The args area seen as a `T` at byte `offset` into it.
    pub fn args<T>(&self, offset: usize) -> *mut T {
        assert!(offset + size_of::<T>() <= self.blob.args_size);
        // SAFETY: the args area lies inside the mapping (unit-tested
        // layout), and the assertion keeps the T inside the area.
        unsafe { self.base.add(self.blob.args_offset + offset).cast() }
    }

    /// The address of byte `offset` of the blob.
    pub fn addr(&self, offset: usize) -> u64 {
        self.base as u64 + offset as u64
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        // SAFETY: base/len is the mapping made in new(); no reference into
        // it outlives self.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// The rseq registration of the calling thread, which a forked child
/// inherits (crest's own helper, used by restore too).
pub use crest::sys::spawn::own_rseq;

/// How the child that ran the blob ended, or where it stopped if traced.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    Signal(i32),
    Exit(i32),
    /// Stopped under ptrace by `sig`; its /proc/PID/maps, /proc/PID/status
    /// and registers at that moment.
    Stopped {
        sig: i32,
        maps: String,
        status: String,
        regs: Box<UserRegs>,
    },
}

/// One shared page the child uses to tell the parent whether it could
/// become traced (qemu-user has no ptrace).
pub struct TraceFlag(*mut u32);

impl TraceFlag {
    pub fn new() -> TraceFlag {
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        let flags = libc::MAP_SHARED | libc::MAP_ANONYMOUS;
        // SAFETY: a new anonymous shared page at an address the kernel picks.
        let p = unsafe { libc::mmap(ptr::null_mut(), 4096, prot, flags, -1, 0) };
        assert_ne!(p, libc::MAP_FAILED);
        TraceFlag(p.cast())
    }

    pub fn traced(&self) -> bool {
        // SAFETY: the page is mapped until drop; the child is gone by now.
        unsafe { self.0.read_volatile() == 1 }
    }
}

impl Drop for TraceFlag {
    fn drop(&mut self) {
        // SAFETY: the page mapped in new().
        unsafe { libc::munmap(self.0.cast(), 4096) };
    }
}

/// The child's side: no core dump, optionally PTRACE_TRACEME, then the
/// blob. Never returns.
fn child(loaded: &Loaded, trace: Option<&TraceFlag>) -> ! {
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on the child itself: the expected SIGTRAP
    // must not leave a core dump behind.
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
        libc::prctl(libc::PR_SET_DUMPABLE, 0);
    }
    if let Some(flag) = trace {
        // SAFETY: TRACEME has no pointer arguments.
        let ok = unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) } == 0;
        // SAFETY: the flag page is shared with the parent and mapped.
        unsafe { flag.0.write_volatile(u32::from(ok)) };
    }
    // SAFETY: base + entry is the blob's head in an executable mapping;
    // the head sets up its own stack and never returns (it traps).
    let head: extern "C" fn() = unsafe { std::mem::transmute(loaded.base.add(loaded.blob.entry)) };
    head();
    // SAFETY: only reached if the head returned, which is a failure.
    unsafe { libc::_exit(99) }
}

/// The registers of the stopped, traced `pid`, through NT_PRSTATUS.
fn getregs(pid: libc::pid_t) -> UserRegs {
    let mut regs = UserRegs::default();
    let iov_base = (&raw mut regs).cast();
    let mut iov = libc::iovec {
        iov_base,
        iov_len: USER_REGS_SIZE,
    };
    // SAFETY: pid is our traced child in a stop; iov covers `regs`.
    let rc = unsafe { libc::ptrace(libc::PTRACE_GETREGSET, pid, 1 as libc::c_long, &mut iov) };
    assert_eq!((rc, iov.iov_len), (0, USER_REGS_SIZE), "NT_PRSTATUS");
    regs
}

/// What a traced child looks like at its stop; then kills and reaps it.
fn inspect_and_kill(pid: libc::pid_t, sig: i32) -> End {
    let read = |f: &str| std::fs::read_to_string(format!("/proc/{pid}/{f}")).unwrap();
    let (maps, status, regs) = (read("maps"), read("status"), Box::new(getregs(pid)));
    // SAFETY: pid is our stopped child; reap it after the kill.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, ptr::null_mut(), 0);
    }
    End::Stopped {
        sig,
        maps,
        status,
        regs,
    }
}

/// Forks a child that jumps into the loaded blob; returns its pid and end.
/// With `trace`, the child asks to be traced, and a traced stop is reported
/// with the child's maps, status and registers, after which it is killed.
pub fn run_in_child(loaded: &Loaded, trace: Option<&TraceFlag>) -> (libc::pid_t, End) {
    // SAFETY: the child only makes raw system calls and jumps into the blob;
    // it never returns into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        child(loaded, trace);
    }
    let mut status = 0;
    // SAFETY: pid is our child; status is a valid out pointer.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    let end = if libc::WIFSTOPPED(status) {
        inspect_and_kill(pid, libc::WSTOPSIG(status))
    } else if libc::WIFSIGNALED(status) {
        End::Signal(libc::WTERMSIG(status))
    } else {
        End::Exit(libc::WEXITSTATUS(status))
    };
    (pid, end)
}
