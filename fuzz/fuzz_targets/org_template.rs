//! libFuzzer entry for `org_template`; the body is in `fuzz/targets/org_template.rs`, shared with the stable
//! corpus replay (`host/tests/fuzz_corpora.rs`).
#![no_main]

#[path = "../targets/org_template.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::check(data));
