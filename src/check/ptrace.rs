//! Probes of the ptrace requests dump uses, each on a freshly forked tracee.
//!
//! Dump seizes every task, interrupts it, reads its registers (general and
//! FPU/vector state), its blocked mask and its pending signals, and suspends
//! seccomp while the parasite runs. Each probe performs exactly that on a
//! child and checks the answer against what the child set up.

use std::sync::OnceLock;

use crate::sys::Errno;
use crate::sys::process::{self, SIGSTOP, SIGUSR1, SIGUSR2, kill};
use crate::sys::ptrace::{self as pt, RseqConfiguration};
use crate::sys::signal::{self, SI_QUEUE, SigInfo, rt_sigqueueinfo, rt_tgsigqueueinfo};

use super::child::{Tracee, stopped};
use super::probe::{Fail, ProbeResult, SysExt, expect};

/// Size of NT_PRSTATUS: struct user_regs_struct (27 u64) / user_pt_regs (34 u64).
#[cfg(target_arch = "x86_64")]
const PRSTATUS_SIZE: usize = 27 * 8;
#[cfg(target_arch = "aarch64")]
const PRSTATUS_SIZE: usize = 34 * 8;

/// The FPU/vector regset dump saves: the XSAVE area on x86_64, FP/SIMD on aarch64.
#[cfg(target_arch = "x86_64")]
const FPU_NT: (u32, &str) = (pt::NT_X86_XSTATE, "NT_X86_XSTATE");
#[cfg(target_arch = "aarch64")]
const FPU_NT: (u32, &str) = (pt::NT_PRFPREG, "NT_PRFPREG");

fn sigbit(sig: i32) -> u64 {
    1 << (sig - 1)
}

/// Setup for a child whose mask blocks SIGUSR1 and SIGUSR2: returns 0 or the errno.
fn block_usr() -> u8 {
    match signal::rt_sigprocmask_setmask(sigbit(SIGUSR1) | sigbit(SIGUSR2)) {
        Ok(()) => 0,
        Err(e) => e.into_raw() as u8,
    }
}

fn setup_ok(t: &Tracee, what: &str) -> Result<(), Fail> {
    match t.setup_code {
        0 => Ok(()),
        e => Err(Fail::from_errno(what, Errno::new(i32::from(e)))),
    }
}

/// SEIZE, INTERRUPT of a running task, then group-stop and LISTEN.
pub fn seize() -> ProbeResult {
    let mut t = Tracee::start(|| 0, 0)?;
    let pid = t.pid();
    // Put the tracee into a group stop the way a SIGSTOP-ed target would be.
    kill(pid, SIGSTOP).ctx("kill(SIGSTOP)")?;
    pt::ptrace_cont(pid, 0).ctx("PTRACE_CONT")?;
    let status = t.child().wait()?;
    expect(stopped(status) == Some((SIGSTOP, 0)), || {
        format!("expected the SIGSTOP signal-delivery stop, got wait status {status:#x}")
    })?;
    pt::ptrace_cont(pid, SIGSTOP).ctx("PTRACE_CONT(SIGSTOP)")?;
    let sig = t.expect_event_stop()?;
    expect(sig == SIGSTOP, || {
        format!("group stop reported signal {sig}, not SIGSTOP")
    })?;
    pt::ptrace_listen(pid).ctx("PTRACE_LISTEN")?;
    pt::ptrace_interrupt(pid).ctx("PTRACE_INTERRUPT after PTRACE_LISTEN")?;
    t.expect_event_stop()?;
    Ok("SEIZE, INTERRUPT, group stop and LISTEN on a forked child".into())
}

/// GETREGSET/SETREGSET of the general registers and the FPU regset.
pub fn regsets() -> ProbeResult {
    let t = Tracee::start(|| 0, 0)?;
    let mut gp = vec![0u8; 4096];
    let n = pt::ptrace_getregset(t.pid(), pt::NT_PRSTATUS, &mut gp).ctx("PTRACE_GETREGSET")?;
    expect(n == PRSTATUS_SIZE, || {
        format!("NT_PRSTATUS is {n} bytes, expected {PRSTATUS_SIZE}")
    })?;
    pt::ptrace_setregset(t.pid(), pt::NT_PRSTATUS, &gp[..n]).ctx("PTRACE_SETREGSET")?;
    let fpu = fpu_regset(&t)?;
    Ok(format!(
        "NT_PRSTATUS {n} bytes, {} {fpu} bytes, read and written back",
        FPU_NT.1
    ))
}

fn fpu_regset(t: &Tracee) -> Result<usize, Fail> {
    // XSAVE areas with AMX state exceed 11 KiB; 64 KiB leaves room.
    let mut buf = vec![0u8; 64 * 1024];
    let call = format!("PTRACE_GETREGSET({})", FPU_NT.1);
    let n = pt::ptrace_getregset(t.pid(), FPU_NT.0, &mut buf).ctx(&call)?;
    pt::ptrace_setregset(t.pid(), FPU_NT.0, &buf[..n]).ctx("PTRACE_SETREGSET")?;
    Ok(n)
}

/// The size of the FPU regset (the XSAVE area on x86_64) of a seized task.
pub fn fpu_size() -> ProbeResult {
    let t = Tracee::start(|| 0, 0)?;
    let n = fpu_regset(&t)?;
    Ok(format!("{} is {n} bytes", FPU_NT.1))
}

/// GETSIGMASK returns what the child blocked; SETSIGMASK changes it.
pub fn sigmask() -> ProbeResult {
    let t = Tracee::start(block_usr, 0)?;
    setup_ok(&t, "rt_sigprocmask")?;
    let want = sigbit(SIGUSR1) | sigbit(SIGUSR2);
    let got = pt::ptrace_getsigmask(t.pid()).ctx("PTRACE_GETSIGMASK")?;
    expect(got == want, || {
        format!("PTRACE_GETSIGMASK gave {got:#x}, expected {want:#x}")
    })?;
    pt::ptrace_setsigmask(t.pid(), sigbit(SIGUSR2)).ctx("PTRACE_SETSIGMASK")?;
    let got = pt::ptrace_getsigmask(t.pid()).ctx("PTRACE_GETSIGMASK")?;
    expect(got == sigbit(SIGUSR2), || {
        format!("PTRACE_SETSIGMASK left {got:#x}")
    })?;
    Ok("GETSIGMASK and SETSIGMASK round-trip".into())
}

/// PEEKSIGINFO sees a queued signal with its payload on each queue.
pub fn peeksiginfo() -> ProbeResult {
    let t = Tracee::start(block_usr, 0)?;
    setup_ok(&t, "rt_sigprocmask")?;
    let (pid, me) = (t.pid(), process::getpid());
    let private = SigInfo::queued(SIGUSR1, me, 0, 0x5eed_0001);
    rt_tgsigqueueinfo(pid, pid, SIGUSR1, &private).ctx("rt_tgsigqueueinfo")?;
    let shared = SigInfo::queued(SIGUSR2, me, 0, 0x5eed_0002);
    rt_sigqueueinfo(pid, SIGUSR2, &shared).ctx("rt_sigqueueinfo")?;
    for (flags, sig, value, queue) in [
        (0, SIGUSR1, 0x5eed_0001, "private"),
        (
            pt::PTRACE_PEEKSIGINFO_SHARED,
            SIGUSR2,
            0x5eed_0002,
            "shared",
        ),
    ] {
        let mut out = [SigInfo([0; 128]); 4];
        let n = pt::ptrace_peeksiginfo(pid, 0, flags, &mut out).ctx("PTRACE_PEEKSIGINFO")?;
        let s = &out[0];
        expect(
            n == 1 && s.signo() == sig && s.code() == SI_QUEUE && s.value() == value,
            || {
                format!(
                    "PTRACE_PEEKSIGINFO on the {queue} queue returned {n} signals, not the queued one"
                )
            },
        )?;
    }
    Ok("private and shared queues, rt_sigqueueinfo payload intact".into())
}

/// Setup for a child with an allow-all seccomp filter: 0 or the errno.
fn install_filter() -> u8 {
    let r = process::prctl(process::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        .and_then(|_| process::seccomp_allow_all());
    match r {
        Ok(()) => 0,
        Err(e) => e.into_raw() as u8,
    }
}

/// PTRACE_O_SUSPEND_SECCOMP accepted when seizing a task with a filter.
pub fn seccomp_suspend() -> ProbeResult {
    let t = Tracee::start(install_filter, pt::PTRACE_O_SUSPEND_SECCOMP)?;
    setup_ok(&t, "seccomp(SECCOMP_SET_MODE_FILTER)")?;
    Ok("PTRACE_O_SUSPEND_SECCOMP on a task with a filter".into())
}

/// PTRACE_SECCOMP_GET_FILTER returns the child's one-instruction filter.
pub fn seccomp_filters() -> ProbeResult {
    let t = Tracee::start(install_filter, 0)?;
    setup_ok(&t, "seccomp(SECCOMP_SET_MODE_FILTER)")?;
    let n = pt::ptrace_seccomp_get_filter(t.pid(), 0, &mut []).ctx("PTRACE_SECCOMP_GET_FILTER")?;
    expect(n == 1, || {
        format!("the child's filter has {n} instructions, expected 1")
    })?;
    let mut insn = [0u64; 1];
    pt::ptrace_seccomp_get_filter(t.pid(), 0, &mut insn).ctx("PTRACE_SECCOMP_GET_FILTER")?;
    // BPF_RET|BPF_K (0x06) with k = SECCOMP_RET_ALLOW, as a little-endian u64.
    let want = 0x7fff_0000_0000_0006u64;
    expect(insn[0] == want, || {
        format!("filter instruction {:#x}, expected {want:#x}", insn[0])
    })?;
    Ok("the child's filter read back instruction by instruction".into())
}

/// rseq(2) signature the probe child registers with.
const RSEQ_SIG: u32 = 0x5305_3053;

/// What the child's rseq setup reported.
const RSEQ_OURS: u8 = 0;
const RSEQ_INHERITED: u8 = 1;

fn register_rseq() -> u8 {
    match process::rseq_register_static(RSEQ_SIG) {
        Ok(()) => RSEQ_OURS,
        // libc (glibc) registered its own area already and fork kept it:
        // the kernel refuses a second area with EINVAL (EBUSY for the same).
        Err(Errno::EINVAL | Errno::EBUSY) => RSEQ_INHERITED,
        Err(e) => 100u8.saturating_add(e.into_raw() as u8),
    }
}

/// Seizes a child that registered rseq and reads its configuration; shared
/// by get_rseq_conf and rseq_abi_size so the experiment runs once.
fn rseq_experiment() -> Result<RseqConfiguration, Fail> {
    static RESULT: OnceLock<Result<RseqConfiguration, Fail>> = OnceLock::new();
    RESULT
        .get_or_init(|| {
            let t = Tracee::start(register_rseq, 0)?;
            if t.setup_code >= 100 {
                let e = Errno::new(i32::from(t.setup_code - 100));
                return Err(Fail::from_errno("rseq", e));
            }
            let conf =
                pt::ptrace_get_rseq_configuration(t.pid()).ctx("PTRACE_GET_RSEQ_CONFIGURATION")?;
            let ok = match t.setup_code {
                RSEQ_OURS => {
                    conf.rseq_abi_pointer == process::rseq_static_area()
                        && conf.rseq_abi_size == 32
                        && conf.signature == RSEQ_SIG
                }
                _ if conf.rseq_abi_pointer == 0 => {
                    return Err(Fail::missing(
                        "rseq(2) refused a registration with EINVAL".into(),
                    ));
                }
                _ => conf.rseq_abi_size >= 32,
            };
            expect(ok, || {
                format!(
                    "PTRACE_GET_RSEQ_CONFIGURATION returned {conf:?}, not the child's registration"
                )
            })?;
            Ok(conf)
        })
        .clone()
}

/// PTRACE_GET_RSEQ_CONFIGURATION matches the child's registration.
pub fn get_rseq_conf() -> ProbeResult {
    let c = rseq_experiment()?;
    Ok(format!(
        "registration at {:#x}, signature {:#x}",
        c.rseq_abi_pointer, c.signature
    ))
}

/// The rseq area size a task registers and the size the kernel fills.
pub fn rseq_abi_size() -> ProbeResult {
    const AT_RSEQ_FEATURE_SIZE: u64 = 27;
    let c = rseq_experiment()?;
    let feature = process::getauxval(AT_RSEQ_FEATURE_SIZE);
    let kernel = if feature == 0 {
        "kernel feature size not reported (AT_RSEQ_FEATURE_SIZE, 6.3+)".to_string()
    } else {
        format!("kernel feature size {feature} (AT_RSEQ_FEATURE_SIZE)")
    };
    Ok(format!("{} bytes registered; {kernel}", c.rseq_abi_size))
}
