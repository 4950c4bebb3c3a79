//! The restorer: unmap everything but itself, then trap or rt_sigreturn.

use crate::harness::{End, Loaded, TraceFlag, own_rseq, run_in_child};
use crest::blob::proto::{self, MemRange, RestorerArgs};
use crest::blob::regs::UserRegs;
use crest::blob::sigframe::RtSigframe;
use crest::blob::{self, infect};

#[cfg(target_arch = "x86_64")]
const SYS_GETPID: u64 = 39;
#[cfg(target_arch = "x86_64")]
const SYS_EXIT_GROUP: u64 = 231;
#[cfg(target_arch = "aarch64")]
const SYS_GETPID: u64 = 172;
#[cfg(target_arch = "aarch64")]
const SYS_EXIT_GROUP: u64 = 94;

/// The address ranges in `maps` (a /proc/PID/maps text), adjacent ones
/// merged, without the one that starts at `keep` and without [vsyscall]
/// (above the user address space; munmap cannot remove it).
fn ranges_except(maps: &str, keep: u64) -> Vec<MemRange> {
    let mut out: Vec<MemRange> = Vec::new();
    for line in maps.lines().filter(|l| !l.ends_with("[vsyscall]")) {
        let (start, end) = line.split_once(' ').unwrap().0.split_once('-').unwrap();
        let start = u64::from_str_radix(start, 16).unwrap();
        let len = u64::from_str_radix(end, 16).unwrap() - start;
        match out.last_mut() {
            _ if start == keep => {}
            Some(last) if last.start + last.len == start => last.len += len,
            _ => out.push(MemRange { start, len }),
        }
    }
    out
}

/// Every mapping of this process but the loaded blob, as unmap ranges.
fn all_but(loaded: &Loaded) -> Vec<MemRange> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let ranges = ranges_except(&maps, loaded.base as u64);
    assert!(ranges.len() <= proto::RESTORER_MAX_UNMAP, "{ranges:?}");
    ranges
}

/// Fills the args area: unmap `unmap`, then trap or, with a frame,
/// sigreturn through it. Returns the area for reading the results.
fn set_args(loaded: &Loaded, unmap: &[MemRange], frame: Option<RtSigframe>) -> *mut RestorerArgs {
    // The child inherits this thread's rseq area, which is about to be
    // unmapped: the restorer must unregister it first.
    let (rseq_addr, rseq_len, rseq_sig) = own_rseq();
    let mut args = RestorerArgs {
        ret: proto::RET_PENDING,
        nr_unmap: unmap.len() as u32,
        failed: 0,
        flags: if frame.is_some() {
            proto::RESTORE_SIGRETURN
        } else {
            0
        },
        rseq_addr,
        rseq_len,
        rseq_sig,
        unmap: [MemRange::default(); proto::RESTORER_MAX_UNMAP],
        frame: frame.unwrap_or_else(|| RtSigframe::new(&UserRegs::default(), 0)),
        plan: 0,
    };
    args.unmap[..unmap.len()].copy_from_slice(unmap);
    let area = loaded.args::<RestorerArgs>(0);
    // SAFETY: the args area is inside the mapping, 64-aligned, big enough.
    unsafe { area.write_volatile(args) };
    area
}

/// Reads the restorer's results once the child is gone.
fn results(area: *mut RestorerArgs) -> (i32, u32) {
    // SAFETY: the area returned by set_args; nobody writes it any more.
    let done = unsafe { area.read_volatile() };
    (done.ret, done.failed)
}

#[test]
fn unmaps_everything_but_itself() {
    let loaded = Loaded::new(blob::restorer());
    let flag = TraceFlag::new();
    let ranges = all_but(&loaded);
    let area = set_args(&loaded, &ranges, None);
    let (_, end) = run_in_child(&loaded, Some(&flag));
    assert_eq!(results(area), (0, proto::NO_FAILURE));
    match end {
        End::Stopped {
            sig, maps, regs, ..
        } => {
            assert_eq!(sig, libc::SIGTRAP);
            let trap = loaded.addr(loaded.blob.trap_ip());
            assert_eq!(regs.ip(), trap, "stopped on the blob's own final trap");
            let left = ranges_except(&maps, u64::MAX);
            let own = MemRange {
                start: loaded.base as u64,
                len: loaded.len as u64,
            };
            assert!(
                left.contains(&own),
                "the restorer's own mapping stays: {maps}"
            );
            for gone in &ranges {
                let overlaps =
                    |r: &MemRange| r.start < gone.start + gone.len && gone.start < r.start + r.len;
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
fn reports_the_range_it_could_not_unmap() {
    let loaded = Loaded::new(blob::restorer());
    let hole = MemRange {
        start: 4096,
        len: 4096,
    }; // nothing there: munmap succeeds
    let unaligned = MemRange {
        start: 1,
        len: 4096,
    }; // EINVAL
    let area = set_args(&loaded, &[hole, unaligned, hole], None);
    let (_, end) = run_in_child(&loaded, None);
    assert_eq!(end, End::Signal(libc::SIGTRAP));
    assert_eq!(results(area), (-proto::EINVAL, 1));
}

/// Plants `syscall; trap` at the end of the args area (inside the mapping
/// the restorer keeps) and returns registers that run it as system call
/// `nr` with `args`, the other registers holding distinct patterns.
fn regs_at_planted_syscall(loaded: &Loaded, nr: u64, args: [u64; 6]) -> UserRegs {
    let code = loaded.blob.args_size - 16;
    // SAFETY: code..code+8 lies in the args area, after RestorerArgs.
    unsafe {
        loaded
            .args::<[u8; 8]>(code)
            .write_unaligned(infect::SYSCALL_TRAP)
    };
    let pattern = |i: u64| 0x5a5a_0000_0000_0000 | (i << 32) | i;
    let mut r = UserRegs::default();
    #[cfg(target_arch = "x86_64")]
    {
        (r.r12, r.r13, r.r14, r.r15) = (pattern(12), pattern(13), pattern(14), pattern(15));
        (r.rbx, r.rbp) = (pattern(3), pattern(5));
        // The user code and stack selectors of every x86_64 Linux task.
        (r.cs, r.ss, r.eflags) = (0x33, 0x2b, 0x202);
    }
    #[cfg(target_arch = "aarch64")]
    for (i, x) in r.regs.iter_mut().enumerate().skip(6) {
        *x = pattern(i as u64);
    }
    r.set_syscall(nr, args);
    r.set_ip(loaded.addr(loaded.blob.args_offset + code));
    r.set_sp(loaded.addr(loaded.blob.stack_top - 64));
    r
}

#[test]
fn sigreturns_into_the_given_registers() {
    let loaded = Loaded::new(blob::restorer());
    let regs = regs_at_planted_syscall(&loaded, SYS_EXIT_GROUP, [42, 0, 0, 0, 0, 0]);
    let area = set_args(&loaded, &all_but(&loaded), Some(RtSigframe::new(&regs, 0)));
    let (_, end) = run_in_child(&loaded, None);
    // Only the frame's registers make the child call exit_group(42).
    assert_eq!(end, End::Exit(42));
    assert_eq!(results(area), (0, proto::NO_FAILURE));
}

#[test]
fn sigreturn_loads_every_register_and_the_mask() {
    let loaded = Loaded::new(blob::restorer());
    let flag = TraceFlag::new();
    let want = regs_at_planted_syscall(&loaded, SYS_GETPID, [1, 2, 3, 4, 5, 6]);
    let mask = (1 << (libc::SIGUSR1 - 1)) | (1 << (libc::SIGUSR2 - 1));
    set_args(&loaded, &[], Some(RtSigframe::new(&want, mask)));
    let (child, end) = run_in_child(&loaded, Some(&flag));
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

#[test]
fn refuses_to_unmap_when_rseq_cannot_be_unregistered() {
    let (addr, _, sig) = own_rseq();
    if addr == 0 {
        // musl registers no rseq: there is nothing a wrong signature could
        // fail to unregister, and the success path is covered above.
        return;
    }
    let loaded = Loaded::new(blob::restorer());
    let area = set_args(&loaded, &all_but(&loaded), None);
    // SAFETY: the area set_args returned; the child does not exist yet.
    unsafe { (*area).rseq_sig = sig ^ 1 };
    let (_, end) = run_in_child(&loaded, None);
    assert_eq!(end, End::Signal(libc::SIGTRAP));
    // The kernel refuses a mismatched signature with EPERM, and nothing
    // was unmapped: the trap still ran from an intact process.
    assert_eq!(results(area), (-libc::EPERM, proto::FAILED_RSEQ));
}
