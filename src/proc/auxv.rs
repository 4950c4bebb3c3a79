//! `/proc/PID/auxv`: the auxiliary vector the kernel gave the program at
//! exec, as raw native-endian (type, value) machine words ending with AT_NULL.
//!
//! crest keeps the pairs as they are: restore hands them back with
//! PR_SET_MM_MAP, and the values (AT_HWCAP, AT_SYSINFO_EHDR, AT_RANDOM...)
//! are the kernel's, not crest's to interpret.

use super::ParseError;

/// AT_NULL: ends the vector.
pub const AT_NULL: u64 = 0;
/// AT_PHDR: the program headers of the executable.
pub const AT_PHDR: u64 = 3;
/// AT_PAGESZ.
pub const AT_PAGESZ: u64 = 6;
/// AT_ENTRY: the program's entry point.
pub const AT_ENTRY: u64 = 9;
/// AT_HWCAP.
pub const AT_HWCAP: u64 = 16;
/// AT_SYSINFO_EHDR: the vDSO.
pub const AT_SYSINFO_EHDR: u64 = 33;
/// AT_HWCAP2.
pub const AT_HWCAP2: u64 = 26;

/// Parses an auxv file into (type, value) pairs, without the AT_NULL.
pub fn parse(raw: &[u8]) -> Result<Vec<(u64, u64)>, ParseError> {
    if raw.len() % 16 != 0 {
        return Err(ParseError::new(0, "auxv is not a whole number of pairs"));
    }
    let word = |b: &[u8]| {
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        u64::from_ne_bytes(a)
    };
    let mut out = Vec::with_capacity(raw.len() / 16);
    for pair in raw.chunks_exact(16) {
        let (kind, value) = (word(&pair[..8]), word(&pair[8..]));
        if kind == AT_NULL {
            return Ok(out);
        }
        out.push((kind, value));
    }
    Err(ParseError::new(0, "auxv has no AT_NULL entry"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(u64, u64)]) -> Vec<u8> {
        pairs
            .iter()
            .flat_map(|(k, v)| [k.to_ne_bytes(), v.to_ne_bytes()])
            .flatten()
            .collect()
    }

    #[test]
    fn stops_at_at_null_and_refuses_damage() {
        let v = parse(&raw(&[(6, 4096), (9, 0x1234), (0, 0), (7, 7)])).unwrap();
        assert_eq!(v, [(6, 4096), (9, 0x1234)]);
        assert!(parse(&raw(&[(6, 4096)])).is_err());
        assert!(parse(&[0u8; 15]).is_err());
    }

    #[test]
    fn agrees_with_getauxval_for_this_process() {
        let v = parse(&std::fs::read("/proc/self/auxv").unwrap()).unwrap();
        // Not AT_HWCAP: glibc on x86_64 replaces it with its own bits.
        for kind in [AT_PHDR, AT_PAGESZ, AT_ENTRY, AT_SYSINFO_EHDR] {
            let want = crate::sys::process::getauxval(kind);
            let got = v.iter().find(|(k, _)| *k == kind).map(|(_, v)| *v);
            assert_eq!(got, Some(want), "auxv type {kind}");
        }
    }
}
