//! libFuzzer entry for `cron`; the body is in `fuzz/targets/cron.rs`, shared with the stable
//! corpus replay (`host/tests/fuzz_corpora.rs`).
#![no_main]

#[path = "../targets/cron.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::check(data));
