#![no_main]
//! Fuzz target `record_rlimits`: see fuzz/src/lib.rs.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    crest_fuzz::payload(6, data);
});
