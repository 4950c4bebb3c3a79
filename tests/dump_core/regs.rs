//! The register victim: inline asm loads known patterns into callee-saved
//! general registers and every SIMD register, reports ready from asm (so
//! no compiled code runs in between), and spins. The constants below are
//! the ground truth the collected core must hold.

use super::victim::READY;

/// Patterns for x86_64 rbx, rbp, r12, r13, r14, r15 / aarch64 x19..x28.
pub const GP: [u64; 10] = [
    0x1111_2222_3333_4444,
    0x0123_4567_89ab_cdef,
    0x5555_6666_7777_0c12,
    0x7eed_beef_0000_0d13,
    0x0a0b_0c0d_0e0f_0e14,
    0x3141_5926_5358_0f15,
    0x2718_2818_2845_9045,
    0x1618_0339_8874_9894,
    0x1414_2135_6237_3095,
    0x1732_0508_0756_8877,
];

/// 512 bytes: 16 ymm registers of 32 bytes, or 32 v registers of 16.
#[repr(C, align(64))]
pub struct Simd(pub [u8; 512]);

pub static SIMD: Simd = Simd(simd_pattern());

const fn simd_pattern() -> [u8; 512] {
    let mut a = [0u8; 512];
    let mut i = 0;
    while i < 512 {
        a[i] = (i as u8).wrapping_mul(37).wrapping_add((i / 256) as u8 + 1);
        i += 1;
    }
    a
}

#[cfg(target_arch = "x86_64")]
pub fn child(page: *mut u64) -> ! {
    let ready = page.wrapping_add(READY);
    // SAFETY: the asm only reads SIMD (512 bytes) and writes the ready slot
    // of the shared page, then spins forever; it never returns, so every
    // register it overwrites is its own.
    unsafe {
        std::arch::asm!(
            "vmovdqu ymm0, [rsi]",
            "vmovdqu ymm1, [rsi + 32]",
            "vmovdqu ymm2, [rsi + 64]",
            "vmovdqu ymm3, [rsi + 96]",
            "vmovdqu ymm4, [rsi + 128]",
            "vmovdqu ymm5, [rsi + 160]",
            "vmovdqu ymm6, [rsi + 192]",
            "vmovdqu ymm7, [rsi + 224]",
            "vmovdqu ymm8, [rsi + 256]",
            "vmovdqu ymm9, [rsi + 288]",
            "vmovdqu ymm10, [rsi + 320]",
            "vmovdqu ymm11, [rsi + 352]",
            "vmovdqu ymm12, [rsi + 384]",
            "vmovdqu ymm13, [rsi + 416]",
            "vmovdqu ymm14, [rsi + 448]",
            "vmovdqu ymm15, [rsi + 480]",
            "movabs rbx, {b}",
            "movabs rbp, {bp}",
            "movabs r12, {r12}",
            "movabs r13, {r13}",
            "movabs r14, {r14}",
            "movabs r15, {r15}",
            "mov qword ptr [rax], 1",
            "2:",
            "pause",
            "jmp 2b",
            in("rax") ready,
            in("rsi") SIMD.0.as_ptr(),
            b = const GP[0],
            bp = const GP[1],
            r12 = const GP[2],
            r13 = const GP[3],
            r14 = const GP[4],
            r15 = const GP[5],
            options(noreturn)
        )
    }
}

#[cfg(target_arch = "aarch64")]
pub fn child(page: *mut u64) -> ! {
    let ready = page.wrapping_add(READY);
    // SAFETY: as on x86_64: reads GP and SIMD, writes the ready slot, spins
    // forever.
    unsafe {
        std::arch::asm!(
            "ldp x19, x20, [x1]",
            "ldp x21, x22, [x1, #16]",
            "ldp x23, x24, [x1, #32]",
            "ldp x25, x26, [x1, #48]",
            "ldp x27, x28, [x1, #64]",
            "ld1 {{v0.16b, v1.16b, v2.16b, v3.16b}}, [x2], #64",
            "ld1 {{v4.16b, v5.16b, v6.16b, v7.16b}}, [x2], #64",
            "ld1 {{v8.16b, v9.16b, v10.16b, v11.16b}}, [x2], #64",
            "ld1 {{v12.16b, v13.16b, v14.16b, v15.16b}}, [x2], #64",
            "ld1 {{v16.16b, v17.16b, v18.16b, v19.16b}}, [x2], #64",
            "ld1 {{v20.16b, v21.16b, v22.16b, v23.16b}}, [x2], #64",
            "ld1 {{v24.16b, v25.16b, v26.16b, v27.16b}}, [x2], #64",
            "ld1 {{v28.16b, v29.16b, v30.16b, v31.16b}}, [x2], #64",
            "mov x3, #1",
            "str x3, [x0]",
            "1:",
            "yield",
            "b 1b",
            in("x0") ready,
            in("x1") GP.as_ptr(),
            in("x2") SIMD.0.as_ptr(),
            options(noreturn)
        )
    }
}
