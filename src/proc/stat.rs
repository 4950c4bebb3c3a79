//! /proc/PID/stat: the layout fields of the mm that PR_SET_MM_MAP takes.
//!
//! The second field (comm) is in parentheses and may contain spaces and
//! parentheses itself, so parsing starts after the LAST `)` of the line.
//! Field numbers below are the 1-based ones of proc(5).

/// The mm layout fields of /proc/PID/stat.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MmLayout {
    /// Field 26 startcode.
    pub start_code: u64,
    /// Field 27 endcode.
    pub end_code: u64,
    /// Field 28 startstack.
    pub start_stack: u64,
    /// Field 45 start_data.
    pub start_data: u64,
    /// Field 46 end_data.
    pub end_data: u64,
    /// Field 47 start_brk.
    pub start_brk: u64,
    /// Field 48 arg_start.
    pub arg_start: u64,
    /// Field 49 arg_end.
    pub arg_end: u64,
    /// Field 50 env_start.
    pub env_start: u64,
    /// Field 51 env_end.
    pub env_end: u64,
}

/// Parses the mm layout out of one read of /proc/PID/stat.
pub fn parse_mm_layout(buf: &[u8]) -> Option<MmLayout> {
    let close = memchr::memrchr(b')', buf)?;
    // After ") " comes field 3 (state); collect fields 3..=51.
    let rest = buf.get(close + 1..)?;
    let mut f = [0u64; 52];
    let mut n = 3;
    for word in rest
        .split(|&b| b == b' ' || b == b'\n')
        .filter(|w| !w.is_empty())
    {
        if n > 51 {
            break;
        }
        // Field 3 is the state letter; every later field is a number (some
        // may be negative, which no field needed here is).
        f[n] = if n == 3 {
            0
        } else {
            super::parse_dec(word).unwrap_or(0)
        };
        n += 1;
    }
    if n <= 51 {
        return None;
    }
    Some(MmLayout {
        start_code: f[26],
        end_code: f[27],
        start_stack: f[28],
        start_data: f[45],
        end_data: f[46],
        start_brk: f[47],
        arg_start: f[48],
        arg_end: f[49],
        env_start: f[50],
        env_end: f[51],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // A real line of `cat /proc/self/stat`, its comm replaced by one holding ") (".
    const SAMPLE: &[u8] = b"10242 (a) (b c) R 10240 10240 2913 0 -1 4194304 98 0 0 0 0 0 0 0 20 0 1 0 \
849307 3133440 362 18446744073709551615 94350150270976 94350150290857 140733130902880 0 0 0 0 0 0 0 0 \
0 17 1 0 0 0 0 0 94350150306864 94350150308480 94350543233024 140733130910434 140733130910454 \
140733130910454 140733130911723 0\n";

    #[test]
    fn parses_fields_after_last_paren() {
        let l = parse_mm_layout(SAMPLE).expect("parses");
        assert_eq!(l.start_code, 94350150270976);
        assert_eq!(l.end_code, 94350150290857);
        assert_eq!(l.start_stack, 140733130902880);
        assert_eq!(l.start_data, 94350150306864);
        assert_eq!(l.end_data, 94350150308480);
        assert_eq!(l.start_brk, 94350543233024);
        assert_eq!(l.arg_start, 140733130910434);
        assert_eq!(l.arg_end, 140733130910454);
        assert_eq!(l.env_end, 140733130911723);
    }

    #[test]
    fn refuses_truncated() {
        assert_eq!(parse_mm_layout(b"1 (x) R 0 1 2"), None);
        assert_eq!(parse_mm_layout(b"no paren"), None);
    }
}
