#![no_main]
//! Fuzz target `header`: see fuzz/src/lib.rs.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    crest_fuzz::header(data);
});
