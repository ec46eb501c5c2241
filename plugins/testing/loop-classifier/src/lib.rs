//! Test guest: a classifier that never returns. Only the host's per-call deadline (epoch
//! interruption) can stop it.

use std::hint::black_box;

use molecule_guest::{Classifier, FileChange, Reload};

#[derive(Debug)]
pub struct LoopClassifier;

impl Classifier for LoopClassifier {
    fn classify(changes: &[FileChange]) -> Reload {
        let mut spins = changes.len() as u64;
        loop {
            // black_box keeps the optimiser from proving the loop has no effect.
            spins = black_box(spins.wrapping_add(1));
        }
    }
}

molecule_guest::export_classifier!(LoopClassifier);
