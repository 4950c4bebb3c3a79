//! The CPU facts an image records so that a restore can refuse a machine
//! whose CPU cannot hold the dumped FP state: XCR0 (XGETBV) and the XSAVE
//! area size (CPUID leaf 0xD) on x86_64.
//!
//! # Safety
//! XGETBV is executed only after the CPU and the kernel say it exists
//! (CPUID.1:ECX.XSAVE and OSXSAVE).
#![allow(unsafe_code)]

/// XCR0, the XSAVE features the kernel enabled, and the XSAVE area size for
/// them (CPUID.(EAX=0DH,ECX=0):EBX); (0, 0) on a CPU without OSXSAVE.
#[cfg(target_arch = "x86_64")]
pub fn xsave_features() -> (u64, u32) {
    if !std::arch::is_x86_feature_detected!("xsave") {
        return (0, 0);
    }
    // SAFETY: the xsave feature (CPUID.1:ECX.XSAVE and OSXSAVE, which std
    // checks before it reports xsave) means XGETBV with ECX=0 is defined.
    let xcr0 = unsafe { xgetbv0() };
    (xcr0, std::arch::x86_64::__cpuid_count(0xd, 0).ebx)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "xsave")]
fn xgetbv0() -> u64 {
    // SAFETY: the target feature is enabled on this function, and its only
    // caller has checked the CPU for it.
    unsafe { std::arch::x86_64::_xgetbv(0) }
}

/// No XSAVE outside x86_64.
#[cfg(not(target_arch = "x86_64"))]
pub fn xsave_features() -> (u64, u32) {
    (0, 0)
}
