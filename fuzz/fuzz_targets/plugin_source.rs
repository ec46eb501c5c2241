//! libFuzzer entry for `plugin_source`; the body is in `fuzz/targets/plugin_source.rs`, shared with the stable
//! corpus replay (`host/tests/fuzz_corpora.rs`).
#![no_main]

#[path = "../targets/plugin_source.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::check(data));
