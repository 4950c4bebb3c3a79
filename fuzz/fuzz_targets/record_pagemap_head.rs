#![no_main]
//! Fuzz target `record_pagemap_head`: see fuzz/src/lib.rs.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    crest_fuzz::payload(15, data);
});
