//! CRC32C (Castagnoli), the checksum of every image record and page run.
//!
//! CRC32C rather than zlib's CRC32 because both architectures crest runs on
//! compute it in hardware: SSE4.2's `crc32` instruction on x86_64 and the
//! ARMv8 CRC extension's `crc32c*` instructions on aarch64, 8 bytes per
//! instruction. A table-driven (slicing-by-8) fallback serves CPUs without
//! them; all paths are tested against each other and against known vectors.
//!
//! # Safety
//!
//! The hardware paths call `#[target_feature]` functions, which is unsafe
//! because executing an instruction the CPU lacks is undefined behaviour.
//! Each call is guarded by the run-time feature detection macro of std for
//! exactly the feature the function enables; that is the only unsafe here.
#![allow(unsafe_code)]

/// The reflected Castagnoli polynomial.
const POLY: u32 = 0x82F6_3B78;

/// Eight 256-entry tables for slicing-by-8, built at compile time.
static TABLES: [[u32; 256]; 8] = build_tables();

const fn build_tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut i = 0;
    while i < 256 {
        let mut s = 1;
        while s < 8 {
            let prev = t[s - 1][i];
            t[s][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            s += 1;
        }
        i += 1;
    }
    t
}

/// CRC32C of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    !update(!0, data)
}

/// Continues a raw (pre-inverted) CRC state over `data`; start from `!0` and
/// invert the end result, or use [`Crc32c`].
pub fn update(state: u32, data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU has SSE4.2, the only feature `update_sse42` enables.
        return unsafe { update_sse42(state, data) };
    }
    #[cfg(target_arch = "aarch64")]
    if std::arch::is_aarch64_feature_detected!("crc") {
        // SAFETY: the CPU has the CRC extension, the only feature `update_armv8` enables.
        return unsafe { update_armv8(state, data) };
    }
    update_table(state, data)
}

/// An incremental CRC32C, for data that arrives in pieces.
#[derive(Debug, Clone, Copy)]
pub struct Crc32c(u32);

impl Default for Crc32c {
    fn default() -> Self {
        Crc32c(!0)
    }
}

impl Crc32c {
    /// Adds `data`.
    pub fn update(&mut self, data: &[u8]) {
        self.0 = update(self.0, data);
    }

    /// The CRC32C of everything added so far.
    pub fn finish(&self) -> u32 {
        !self.0
    }
}

/// The portable path: slicing-by-8 over the compile-time tables.
pub fn update_table(mut crc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let lo = crc ^ u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        crc = TABLES[7][(lo & 0xff) as usize]
            ^ TABLES[6][((lo >> 8) & 0xff) as usize]
            ^ TABLES[5][((lo >> 16) & 0xff) as usize]
            ^ TABLES[4][(lo >> 24) as usize]
            ^ TABLES[3][c[4] as usize]
            ^ TABLES[2][c[5] as usize]
            ^ TABLES[1][c[6] as usize]
            ^ TABLES[0][c[7] as usize];
    }
    for &b in chunks.remainder() {
        crc = (crc >> 8) ^ TABLES[0][((crc ^ b as u32) & 0xff) as usize];
    }
    crc
}

/// The SSE4.2 path; `None` when the CPU lacks the instruction.
#[cfg(target_arch = "x86_64")]
pub fn update_hw(state: u32, data: &[u8]) -> Option<u32> {
    if !std::arch::is_x86_feature_detected!("sse4.2") {
        return None;
    }
    // SAFETY: SSE4.2 was detected just above.
    Some(unsafe { update_sse42(state, data) })
}

/// The ARMv8 CRC path; `None` when the CPU lacks the extension.
#[cfg(target_arch = "aarch64")]
pub fn update_hw(state: u32, data: &[u8]) -> Option<u32> {
    if !std::arch::is_aarch64_feature_detected!("crc") {
        return None;
    }
    // SAFETY: the CRC extension was detected just above.
    Some(unsafe { update_armv8(state, data) })
}

/// No hardware path on other architectures.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub fn update_hw(_state: u32, _data: &[u8]) -> Option<u32> {
    None
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
unsafe fn update_sse42(crc: u32, data: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u8, _mm_crc32_u64};
    let mut crc64 = crc as u64;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(c);
        crc64 = _mm_crc32_u64(crc64, u64::from_le_bytes(word));
    }
    // The instruction zero-extends a 32-bit CRC into the 64-bit register.
    let mut crc = crc64 as u32;
    for &b in chunks.remainder() {
        crc = _mm_crc32_u8(crc, b);
    }
    crc
}

#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "crc")]
unsafe fn update_armv8(mut crc: u32, data: &[u8]) -> u32 {
    use std::arch::aarch64::{__crc32cb, __crc32cd};
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(c);
        crc = __crc32cd(crc, u64::from_le_bytes(word));
    }
    for &b in chunks.remainder() {
        crc = __crc32cb(crc, b);
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bit-at-a-time CRC32C: the definition, as the oracle for the fast paths.
    fn naive(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ POLY
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn known_vectors() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        // RFC 3720 (iSCSI) B.4: 32 bytes of zeros, of 0xff, and ascending.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62A8_AB43);
        let inc: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&inc), 0x46DD_794E);
    }

    #[test]
    fn table_hardware_and_naive_agree_on_every_length_and_alignment() {
        let data: Vec<u8> = (0..1000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for start in 0..9 {
            for len in [0, 1, 3, 7, 8, 9, 15, 16, 63, 64, 65, 255, 500, 991 - start] {
                let s = &data[start..start + len];
                let want = naive(s);
                assert_eq!(!update_table(!0, s), want, "table, len {len}");
                if let Some(hw) = update_hw(!0, s) {
                    assert_eq!(!hw, want, "hardware, len {len}");
                }
                assert_eq!(crc32c(s), want);
            }
        }
    }

    #[test]
    fn incremental_equals_one_shot() {
        let data: Vec<u8> = (0..4099u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut c = Crc32c::default();
        for piece in data.chunks(333) {
            c.update(piece);
        }
        assert_eq!(c.finish(), crc32c(&data));
    }

    #[test]
    fn the_hardware_path_exists_where_the_cpu_has_it() {
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            update_hw(!0, b"x").is_some(),
            std::arch::is_x86_feature_detected!("sse4.2")
        );
        #[cfg(target_arch = "aarch64")]
        assert_eq!(
            update_hw(!0, b"x").is_some(),
            std::arch::is_aarch64_feature_detected!("crc")
        );
    }
}
