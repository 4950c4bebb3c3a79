//! The embedded blobs, run for real: each test loads the parasite the way
//! crest will (memfd, shared executable mapping), forks, jumps into it in the
//! child with a command in its args area, and checks from the parent how
//! the child ended and what the blob wrote back. The child's pid from fork()
//! is the independent ground truth for what the blob reports.
//!
//! The build-time ELF gate (parasite/build/elf.rs) is tested here too,
//! against the real linked blob and damaged copies of it.

use crest::blob::regs::{USER_REGS_SIZE, UserRegs};
use crest::blob::sigframe::RtSigframe;
use crest::blob::{self, Blob, infect, proto};
use std::ptr;

#[path = "../parasite/build/elf.rs"]
#[allow(dead_code)]
mod elf;

/// The blob copied into a fresh memfd and mapped shared, read, write and
/// execute, so the parent sees what the child's blob writes.
struct Loaded {
    base: *mut u8,
    len: usize,
}

impl Loaded {
    fn new(blob: &Blob) -> Loaded {
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
        assert_ne!(
            base,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: the mapping keeps the file alive; fd is ours to close.
        unsafe { libc::close(fd) };
        Loaded {
            base: base.cast(),
            len,
        }
    }

    fn header(&self, blob: &Blob) -> *mut proto::CmdHeader {
        // SAFETY: args_offset lies inside the mapping (checked by unit tests).
        unsafe { self.base.add(blob.args_offset).cast() }
    }

    fn payload<T>(&self, blob: &Blob) -> *mut T {
        // SAFETY: the payload lies inside the args area, inside the mapping.
        unsafe {
            self.base
                .add(blob.args_offset + proto::PAYLOAD_OFFSET)
                .cast()
        }
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        // SAFETY: base/len is the mapping made in new(); no reference into it
        // outlives self.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// How the child that ran the blob ended, or where it stopped if traced.
#[derive(Debug, PartialEq, Eq)]
enum End {
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
struct TraceFlag(*mut u32);

impl TraceFlag {
    fn new() -> TraceFlag {
        let (prot, flags) = (
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
        );
        // SAFETY: a new anonymous shared page at an address the kernel picks.
        let p = unsafe { libc::mmap(ptr::null_mut(), 4096, prot, flags, -1, 0) };
        assert_ne!(p, libc::MAP_FAILED);
        TraceFlag(p.cast())
    }

    fn traced(&self) -> bool {
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
fn child(loaded: &Loaded, blob: &Blob, trace: Option<&TraceFlag>) -> ! {
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
        // SAFETY: TRACEME has no pointer arguments; the flag page is mapped.
        let ok = unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) } == 0;
        // SAFETY: the flag page is shared with the parent and mapped.
        unsafe { flag.0.write_volatile(u32::from(ok)) };
    }
    // SAFETY: base + entry is the blob's head in an executable mapping;
    // the head sets up its own stack and never returns (it traps).
    let head: extern "C" fn() = unsafe { std::mem::transmute(loaded.base.add(blob.entry)) };
    head();
    // SAFETY: only reached if the head returned, which is a failure.
    unsafe { libc::_exit(99) }
}

/// Forks a child that jumps into the loaded blob; returns its pid and end.
/// With `trace`, the child asks to be traced, and a traced stop is reported
/// with the child's maps, after which the child is killed.
fn run_in_child(loaded: &Loaded, blob: &Blob, trace: Option<&TraceFlag>) -> (libc::pid_t, End) {
    // SAFETY: the child only makes raw system calls and jumps into the blob;
    // it never returns into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        child(loaded, blob, trace);
    }
    let mut status = 0;
    // SAFETY: pid is our child; status is a valid out pointer.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    let end = if libc::WIFSTOPPED(status) {
        let read = |f: &str| std::fs::read_to_string(format!("/proc/{pid}/{f}")).unwrap();
        let (maps, proc_status, regs) = (read("maps"), read("status"), Box::new(getregs(pid)));
        // SAFETY: pid is our stopped child; reap it after the kill.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, ptr::null_mut(), 0);
        }
        let sig = libc::WSTOPSIG(status);
        End::Stopped {
            sig,
            maps,
            status: proc_status,
            regs,
        }
    } else if libc::WIFSIGNALED(status) {
        End::Signal(libc::WTERMSIG(status))
    } else {
        End::Exit(libc::WEXITSTATUS(status))
    };
    (pid, end)
}

/// Writes `cmd` with ret = RET_PENDING, runs the blob, returns the header.
fn run_command(loaded: &Loaded, blob: &Blob, cmd: u32) -> (libc::pid_t, End, proto::CmdHeader) {
    let hdr = loaded.header(blob);
    let fresh = proto::CmdHeader {
        cmd,
        ret: proto::RET_PENDING,
    };
    // SAFETY: hdr points into our shared mapping, aligned (args is 64-aligned).
    unsafe { hdr.write_volatile(fresh) };
    let (pid, end) = run_in_child(loaded, blob, None);
    // SAFETY: as above; the child is gone, nobody writes concurrently.
    (pid, end, unsafe { hdr.read_volatile() })
}

#[test]
fn parasite_getpid_reports_the_child_and_traps() {
    let blob = blob::parasite();
    let loaded = Loaded::new(&blob);
    let sentinel = proto::GetPid { pid: -7, tid: -7 };
    // SAFETY: the payload pointer is inside the mapping and 8-aligned.
    unsafe {
        loaded
            .payload::<proto::GetPid>(&blob)
            .write_volatile(sentinel)
    };
    let (pid, end, hdr) = run_command(&loaded, &blob, proto::CMD_GETPID);
    assert_eq!(
        end,
        End::Signal(libc::SIGTRAP),
        "the blob must end on its trap"
    );
    assert_eq!(
        hdr,
        proto::CmdHeader {
            cmd: proto::CMD_GETPID,
            ret: 0
        }
    );
    // SAFETY: as above; the child is gone.
    let reply = unsafe { loaded.payload::<proto::GetPid>(&blob).read_volatile() };
    assert_eq!(reply, proto::GetPid { pid, tid: pid });
}

#[test]
fn parasite_runs_again_in_the_same_mapping() {
    let blob = blob::parasite();
    let loaded = Loaded::new(&blob);
    let (first, end1, _) = run_command(&loaded, &blob, proto::CMD_GETPID);
    let (second, end2, hdr) = run_command(&loaded, &blob, proto::CMD_GETPID);
    assert_eq!(
        (end1, end2),
        (End::Signal(libc::SIGTRAP), End::Signal(libc::SIGTRAP))
    );
    assert_eq!(hdr.ret, 0);
    assert_ne!(first, second);
    // SAFETY: the payload pointer is inside the mapping; the child is gone.
    let reply = unsafe { loaded.payload::<proto::GetPid>(&blob).read_volatile() };
    assert_eq!(
        reply.pid, second,
        "the reply is the second child's, not stale"
    );
}

#[test]
fn parasite_fini_succeeds() {
    let blob = blob::parasite();
    let loaded = Loaded::new(&blob);
    let (_, end, hdr) = run_command(&loaded, &blob, proto::CMD_FINI);
    assert_eq!(end, End::Signal(libc::SIGTRAP));
    assert_eq!(
        hdr,
        proto::CmdHeader {
            cmd: proto::CMD_FINI,
            ret: 0
        }
    );
}

#[test]
fn parasite_refuses_an_unknown_command() {
    let blob = blob::parasite();
    let loaded = Loaded::new(&blob);
    let (_, end, hdr) = run_command(&loaded, &blob, 0xdead);
    assert_eq!(end, End::Signal(libc::SIGTRAP));
    assert_eq!(hdr.ret, -proto::EINVAL);
}

/// The address ranges in `maps` (a /proc/PID/maps text), adjacent ones
/// merged, without the one that starts at `keep` and without [vsyscall]
/// (above the user address space; munmap cannot remove it).
fn ranges_except(maps: &str, keep: u64) -> Vec<proto::MemRange> {
    let mut out: Vec<proto::MemRange> = Vec::new();
    for line in maps.lines().filter(|l| !l.ends_with("[vsyscall]")) {
        let (start, end) = line.split_once(' ').unwrap().0.split_once('-').unwrap();
        let start = u64::from_str_radix(start, 16).unwrap();
        let end = u64::from_str_radix(end, 16).unwrap();
        match out.last_mut() {
            _ if start == keep => {}
            Some(last) if last.start + last.len == start => last.len += end - start,
            _ => out.push(proto::MemRange {
                start,
                len: end - start,
            }),
        }
    }
    out
}

/// Restorer args that unmap `unmap`, then trap or, with a frame, sigreturn.
fn restorer_args(unmap: &[proto::MemRange], frame: Option<RtSigframe>) -> proto::RestorerArgs {
    let mut args = proto::RestorerArgs {
        ret: proto::RET_PENDING,
        nr_unmap: unmap.len() as u32,
        failed: 0,
        flags: if frame.is_some() {
            proto::RESTORE_SIGRETURN
        } else {
            0
        },
        unmap: [proto::MemRange::default(); proto::RESTORER_MAX_UNMAP],
        frame: frame.unwrap_or_else(|| RtSigframe::new(&UserRegs::default(), 0)),
    };
    args.unmap[..unmap.len()].copy_from_slice(unmap);
    args
}

/// Every mapping of this process but the loaded blob, as unmap ranges.
fn all_but(loaded: &Loaded) -> Vec<proto::MemRange> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let ranges = ranges_except(&maps, loaded.base as u64);
    assert!(ranges.len() <= proto::RESTORER_MAX_UNMAP, "{ranges:?}");
    ranges
}

#[test]
fn restorer_unmaps_everything_but_itself() {
    let blob = blob::restorer();
    let loaded = Loaded::new(&blob);
    let flag = TraceFlag::new();
    let base = loaded.base as u64;
    let ranges = all_but(&loaded);
    let args = loaded.header(&blob).cast::<proto::RestorerArgs>();
    // SAFETY: the args area is inside the mapping, 64-aligned, big enough.
    unsafe { args.write_volatile(restorer_args(&ranges, None)) };
    let (_, end) = run_in_child(&loaded, &blob, Some(&flag));
    // SAFETY: as above; the child is gone.
    let done = unsafe { args.read_volatile() };
    assert_eq!((done.ret, done.failed), (0, proto::NO_FAILURE));
    match end {
        End::Stopped { sig, maps, .. } => {
            assert_eq!(sig, libc::SIGTRAP);
            let left = ranges_except(&maps, u64::MAX);
            let blob_range = proto::MemRange {
                start: base,
                len: loaded.len as u64,
            };
            assert!(
                left.contains(&blob_range),
                "the restorer's own mapping stays: {maps}"
            );
            for gone in &ranges {
                let overlaps = |r: &proto::MemRange| {
                    r.start < gone.start + gone.len && gone.start < r.start + r.len
                };
                assert!(
                    !left.iter().any(overlaps),
                    "{gone:?} is still mapped: {maps}"
                );
            }
        }
        // qemu-user cannot trace: the trap then ends the child.
        End::Signal(sig) if !flag.traced() => assert_eq!(sig, libc::SIGTRAP),
        other => panic!("unexpected end of the restorer: {other:?}"),
    }
}

#[test]
fn restorer_reports_the_range_it_could_not_unmap() {
    let blob = blob::restorer();
    let loaded = Loaded::new(&blob);
    let hole = proto::MemRange {
        start: 4096,
        len: 4096,
    }; // nothing mapped: munmap succeeds
    let unaligned = proto::MemRange {
        start: 1,
        len: 4096,
    }; // EINVAL
    let args = loaded.header(&blob).cast::<proto::RestorerArgs>();
    // SAFETY: the args area is inside the mapping, 64-aligned, big enough.
    unsafe { args.write_volatile(restorer_args(&[hole, unaligned, hole], None)) };
    let (_, end) = run_in_child(&loaded, &blob, None);
    assert_eq!(end, End::Signal(libc::SIGTRAP));
    // SAFETY: as above; the child is gone.
    let done = unsafe { args.read_volatile() };
    assert_eq!((done.ret, done.failed), (-proto::EINVAL, 1));
}

#[cfg(target_arch = "x86_64")]
const SYS_GETPID_EXIT: (u64, u64) = (39, 231);
#[cfg(target_arch = "aarch64")]
const SYS_GETPID_EXIT: (u64, u64) = (172, 94);

/// Plants `syscall; trap` at the end of the restorer's args area (inside the
/// mapping the restorer keeps) and returns registers that run it as system
/// call `nr` with `args`, every other register holding a distinct pattern.
fn regs_at_planted_syscall(loaded: &Loaded, blob: &Blob, nr: u64, args: [u64; 6]) -> UserRegs {
    let code = blob.args_offset + blob.args_size - 16;
    // SAFETY: code..code+8 lies in the args area, after RestorerArgs.
    unsafe {
        loaded
            .base
            .add(code)
            .cast::<[u8; 8]>()
            .write_unaligned(infect::SYSCALL_TRAP)
    };
    let mut r = UserRegs::default();
    #[cfg(target_arch = "x86_64")]
    {
        let pattern = |i: u64| 0x5a5a_0000_0000_0000 | (i << 32) | i;
        (r.r8, r.r9, r.r12, r.r13, r.r14, r.r15) = (
            pattern(8),
            pattern(9),
            pattern(12),
            pattern(13),
            pattern(14),
            pattern(15),
        );
        (r.rbx, r.rbp) = (pattern(3), pattern(5));
        // The user code and stack selectors of every x86_64 Linux task.
        (r.cs, r.ss, r.eflags) = (0x33, 0x2b, 0x202);
    }
    #[cfg(target_arch = "aarch64")]
    for (i, x) in r.regs.iter_mut().enumerate().skip(6) {
        *x = 0x5a5a_0000_0000_0000 | ((i as u64) << 32) | i as u64;
    }
    r.set_syscall(nr, args);
    r.set_ip(loaded.base as u64 + code as u64);
    r.set_sp(loaded.base as u64 + blob.stack_top as u64 - 64);
    r
}

#[test]
fn restorer_sigreturns_into_the_given_registers() {
    let blob = blob::restorer();
    let loaded = Loaded::new(&blob);
    let regs = regs_at_planted_syscall(&loaded, &blob, SYS_GETPID_EXIT.1, [42, 0, 0, 0, 0, 0]);
    let args = loaded.header(&blob).cast::<proto::RestorerArgs>();
    let frame = RtSigframe::new(&regs, 0);
    // SAFETY: the args area is inside the mapping, 64-aligned, big enough.
    unsafe { args.write_volatile(restorer_args(&all_but(&loaded), Some(frame))) };
    let (_, end) = run_in_child(&loaded, &blob, None);
    // Only the frame's registers make the child call exit_group(42).
    assert_eq!(end, End::Exit(42));
    // SAFETY: as above; the child is gone.
    assert_eq!(unsafe { args.read_volatile() }.ret, 0);
}

/// The registers of the stopped, traced `pid`.
fn getregs(pid: libc::pid_t) -> UserRegs {
    let mut regs = UserRegs::default();
    let mut iov = libc::iovec {
        iov_base: (&raw mut regs).cast(),
        iov_len: USER_REGS_SIZE,
    };
    // SAFETY: pid is our traced child in a stop; iov covers `regs`.
    let rc = unsafe { libc::ptrace(libc::PTRACE_GETREGSET, pid, 1 as libc::c_long, &mut iov) };
    assert_eq!((rc, iov.iov_len), (0, USER_REGS_SIZE), "NT_PRSTATUS");
    regs
}

#[test]
fn restorer_sigreturn_loads_every_register_and_the_mask() {
    let blob = blob::restorer();
    let loaded = Loaded::new(&blob);
    let flag = TraceFlag::new();
    let want = regs_at_planted_syscall(&loaded, &blob, SYS_GETPID_EXIT.0, [1, 2, 3, 4, 5, 6]);
    let mask = (1 << (libc::SIGUSR1 - 1)) | (1 << (libc::SIGUSR2 - 1));
    let args = loaded.header(&blob).cast::<proto::RestorerArgs>();
    // SAFETY: the args area is inside the mapping, 64-aligned, big enough.
    unsafe { args.write_volatile(restorer_args(&[], Some(RtSigframe::new(&want, mask)))) };
    let (child, end) = run_in_child(&loaded, &blob, Some(&flag));
    if !flag.traced() {
        // qemu-user cannot trace: the planted trap then ends the child.
        return assert_eq!(end, End::Signal(libc::SIGTRAP));
    }
    let End::Stopped {
        sig,
        status,
        regs: got,
        ..
    } = end
    else {
        panic!("{end:?}")
    };
    assert_eq!(sig, libc::SIGTRAP);
    assert!(
        status.contains(&format!("SigBlk:\t{mask:016x}")),
        "{status}"
    );
    let mut expect = want;
    // The planted getpid ran: its result, and the trap's instruction pointer.
    expect.set_ip(want.ip() + infect::IP_AFTER_SYSCALL_TRAP);
    #[cfg(target_arch = "x86_64")]
    {
        // syscall leaves rflags in r11, the return address in rcx; a trap
        // stop is outside any system call (orig_rax -1); fs/gs bases and
        // data selectors are not part of the frame.
        (expect.rax, expect.orig_rax) = (child as u64, u64::MAX);
        (expect.rcx, expect.r11) = (want.rip + 2, got.r11);
        (expect.eflags, expect.ds, expect.es) = (got.eflags, got.ds, got.es);
        (expect.fs_base, expect.gs_base) = (got.fs_base, got.gs_base);
    }
    #[cfg(target_arch = "aarch64")]
    {
        expect.regs[0] = child as u64;
        expect.pstate = got.pstate;
    }
    assert_eq!(*got, expect);
}

/// The linked parasite ELF that build.rs checked and cut the image from.
const PARASITE_ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/parasite.elf"));

fn spec(budget: usize, symbols: &'static [&'static str]) -> elf::BlobSpec<'static> {
    elf::BlobSpec {
        name: "parasite",
        arch: std::env::consts::ARCH,
        budget,
        symbols,
    }
}

#[test]
fn elf_gate_accepts_the_real_parasite_and_cuts_the_embedded_image() {
    let checked = elf::check_blob(PARASITE_ELF, &spec(16 * 1024, &["__crest_head"])).unwrap();
    let blob = blob::parasite();
    assert_eq!(checked.image, blob.bytes);
    assert_eq!(checked.mem_size as usize, blob.mem_size);
    assert_eq!(checked.symbols["__crest_head"].0 as usize, blob.entry);
}

#[test]
fn elf_gate_refuses_budget_missing_symbol_and_relocations() {
    let too_small = elf::check_blob(PARASITE_ELF, &spec(8, &[])).unwrap_err();
    assert!(too_small.contains("over the budget of 8"), "{too_small}");
    let missing = elf::check_blob(PARASITE_ELF, &spec(16 * 1024, &["no_such"])).unwrap_err();
    assert!(missing.contains("symbol `no_such` is missing"), "{missing}");
    // Turn the code section's type into SHT_RELA: the gate must see entries.
    let mut damaged = PARASITE_ELF.to_vec();
    let shoff = u64::from_le_bytes(damaged[40..48].try_into().unwrap()) as usize;
    let code = shoff + 64; // section 1 is `.blob` (blob.ld puts it first)
    damaged[code + 4..code + 8].copy_from_slice(&4u32.to_le_bytes());
    let relocs = elf::check_blob(&damaged, &spec(16 * 1024, &[])).unwrap_err();
    assert!(relocs.contains("it has relocations (.blob"), "{relocs}");
}

#[test]
fn elf_gate_refuses_an_ordinary_executable() {
    let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    let err = elf::check_blob(&exe, &spec(usize::MAX, &[])).unwrap_err();
    assert!(err.contains("loadable segments, not exactly 1"), "{err}");
}

#[test]
fn elf_gate_refuses_garbage_without_panicking() {
    for len in [0, 4, 64, 200] {
        let mut junk = PARASITE_ELF[..len.min(PARASITE_ELF.len())].to_vec();
        junk.resize(len, 0xff);
        assert!(elf::check_blob(&junk, &spec(16 * 1024, &[])).is_err());
    }
    // Table offsets near u64::MAX must not overflow the arithmetic.
    for field in [32..40, 40..48] {
        let mut bad = PARASITE_ELF.to_vec();
        bad[field].copy_from_slice(&(u64::MAX - 8).to_le_bytes());
        assert!(elf::check_blob(&bad, &spec(16 * 1024, &[])).is_err());
    }
}
