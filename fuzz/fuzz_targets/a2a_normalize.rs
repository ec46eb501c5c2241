//! libFuzzer entry for `a2a_normalize`; the body is in `fuzz/targets/a2a_normalize.rs`, shared with the stable
//! corpus replay (`host/tests/fuzz_corpora.rs`).
#![no_main]

#[path = "../targets/a2a_normalize.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::check(data));
