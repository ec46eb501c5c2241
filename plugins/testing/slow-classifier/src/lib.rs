//! Test guest: a classifier that keeps the CPU busy for about 10 ms per change, then answers
//! `cold("slow")`. Swap tests use it to hold a call in flight while a new version is activated.
//!
//! Classifiers get no clock, so the delay is a calibrated amount of work, not a measured time:
//! [`ITERATIONS_PER_MS`] was measured under wasmtime 48 (cranelift) on this project's 2-core
//! machine (1 change took 10.6 ms, 10 changes 98-105 ms, 30 changes 293 ms), and the real delay
//! moves with the CPU's speed.

use std::hint::black_box;

use molecule_guest::{Classifier, FileChange, Reload};

/// Milliseconds of work per change in the input.
pub const MS_PER_CHANGE: u64 = 10;

/// Spin iterations that take about one millisecond under wasmtime on the reference machine.
pub const ITERATIONS_PER_MS: u64 = 700_000;

/// The reason every answer carries.
pub const ANSWER: &str = "slow";

#[derive(Debug)]
pub struct SlowClassifier;

impl Classifier for SlowClassifier {
    fn classify(changes: &[FileChange]) -> Reload {
        spin(changes.len() as u64 * MS_PER_CHANGE * ITERATIONS_PER_MS);
        Reload::cold(ANSWER)
    }
}

molecule_guest::export_classifier!(SlowClassifier);

/// A dependent chain of multiply-xor steps the optimiser cannot shorten.
pub fn spin(iterations: u64) -> u64 {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..iterations {
        x = black_box(x.rotate_left(5) ^ 0x2545_f491_4f6c_dd1d).wrapping_mul(0x0100_0000_01b3);
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_changes_answers_at_once() {
        assert_eq!(SlowClassifier::classify(&[]), Reload::cold(ANSWER));
    }

    #[test]
    fn the_work_is_not_optimised_away() {
        assert_ne!(spin(1_000), spin(1_001));
    }
}
