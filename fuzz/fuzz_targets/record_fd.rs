#![no_main]
//! Fuzz target `record_fd`: see fuzz/src/lib.rs.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    crest_fuzz::payload(13, data);
});
