//! prlimit64(2) on another process.
//!
//! prlimit64 with a NULL new limit only reads, and it is the one interface
//! that gives the resource limits of *another* process as numbers the kernel
//! takes back unchanged (/proc/PID/limits prints "unlimited" and units).
//!
//! # Safety
//! prlimit64 gets a pointer to a `struct rlimit64` (two u64) owned by this
//! function, and NULL for the new value, so the kernel writes only there.
#![allow(unsafe_code)]

use syscalls::{Sysno, syscall};

use super::{Pid, SysResult};

/// RLIM_NLIMITS: the number of RLIMIT_* resources (RLIMIT_CPU 0 to RLIMIT_RTTIME 15).
pub const RLIM_NLIMITS: u32 = 16;

/// prlimit64(pid, resource, NULL, &old): the (soft, hard) limit of `resource`.
pub fn prlimit64_get(pid: Pid, resource: u32) -> SysResult<(u64, u64)> {
    let mut old = [0u64; 2];
    // SAFETY: `old` is a struct rlimit64 (rlim_cur, rlim_max) the kernel
    // writes; the new-limit pointer is NULL, so nothing is changed.
    unsafe { syscall!(Sysno::prlimit64, pid, resource, 0, old.as_mut_ptr()) }?;
    Ok((old[0], old[1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_limits_like_getrlimit() {
        let pid = super::super::process::getpid();
        let mut want = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one struct rlimit into `want`.
        let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut want) };
        assert_eq!(rc, 0);
        let resource = 7; // RLIMIT_NOFILE on x86_64 and aarch64
        let got = prlimit64_get(pid, resource).unwrap();
        assert_eq!(got, (want.rlim_cur, want.rlim_max));
        assert_eq!(prlimit64_get(pid, 99), Err(syscalls::Errno::EINVAL));
    }
}
