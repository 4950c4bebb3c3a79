#![no_main]
//! Fuzz target `file`: see fuzz/src/lib.rs.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    crest_fuzz::file(data);
});
