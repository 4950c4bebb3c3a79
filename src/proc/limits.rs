//! `/proc/PID/limits`: the resource limits as a table, one line per
//! RLIMIT_* in resource-number order.
//!
//! ```text
//! Limit                     Soft Limit           Hard Limit           Units
//! Max cpu time              unlimited            unlimited            seconds
//! Max open files            1024                 524288               files
//! └─ name, 25 columns ────┘ └─ soft ───────────┘ └─ hard ───────────┘
//! ```
//!
//! crest reads limits with prlimit64, which the kernel refuses (EPERM)
//! unless the caller has the target's ids or CAP_SYS_RESOURCE; this file has
//! the same values for anyone allowed to ptrace the process, so it is the
//! fallback. Values are the raw rlimit numbers; `unlimited` is RLIM_INFINITY.

use super::{ParseError, fields, lines, udec};

/// Width of the name column (`%-25s `).
const NAME_COLUMNS: usize = 26;

/// Parses the table into (soft, hard) pairs indexed by RLIMIT_* number.
pub fn parse(text: &[u8]) -> Result<Vec<(u64, u64)>, ParseError> {
    let mut out = Vec::new();
    for (n, line) in lines(text).skip(1) {
        if line.is_empty() {
            continue;
        }
        let bad = || ParseError::new(n, "malformed limits line");
        let rest = line.get(NAME_COLUMNS..).ok_or_else(bad)?;
        let mut it = fields(rest);
        let mut value = || match it.next() {
            Some(b"unlimited") => Some(u64::MAX),
            Some(f) => udec(f),
            None => None,
        };
        let (soft, hard) = (value().ok_or_else(bad)?, value().ok_or_else(bad)?);
        out.push((soft, hard));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = b"\
Limit                     Soft Limit           Hard Limit           Units     
Max cpu time              unlimited            unlimited            seconds   
Max file size             unlimited            unlimited            bytes     
Max data size             unlimited            unlimited            bytes     
Max stack size            8388608              unlimited            bytes     
Max core file size        0                    unlimited            bytes     
Max resident set          unlimited            unlimited            bytes     
Max processes             95953                95953                processes 
Max open files            1024                 524288               files     
Max locked memory         8388608              8388608              bytes     
Max address space         unlimited            unlimited            bytes     
Max file locks            unlimited            unlimited            locks     
Max pending signals       95953                95953                signals   
Max msgqueue size         819200               819200               bytes     
Max nice priority         0                    0                    
Max realtime priority     0                    0                    
Max realtime timeout      unlimited            unlimited            us        
";

    #[test]
    fn parses_a_real_sample() {
        let v = parse(SAMPLE).unwrap();
        assert_eq!(v.len(), 16);
        assert_eq!(v[0], (u64::MAX, u64::MAX));
        assert_eq!(v[3], (8 << 20, u64::MAX));
        assert_eq!(v[7], (1024, 524288));
        assert_eq!(v[13], (0, 0));
    }

    #[test]
    fn agrees_with_getrlimit_for_this_process() {
        let v = parse(&std::fs::read("/proc/self/limits").unwrap()).unwrap();
        let pid = crate::sys::process::getpid();
        for (r, pair) in v.iter().enumerate() {
            let got = crate::sys::rlimit::prlimit64_get(pid, r as u32).unwrap();
            assert_eq!(*pair, got, "resource {r}");
        }
        assert!(parse(b"Limit\nMax cpu time              x  1\n").is_err());
    }
}
