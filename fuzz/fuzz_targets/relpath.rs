//! libFuzzer entry for `relpath`; the body is in `fuzz/targets/relpath.rs`, shared with the stable
//! corpus replay (`host/tests/fuzz_corpora.rs`).
#![no_main]

#[path = "../targets/relpath.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::check(data));
