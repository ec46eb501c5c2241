//! Test guest: a classifier whose every call panics, which reaches the host as a trap. The
//! host must answer `cold`, count the trap and keep serving.

use molecule_guest::{Classifier, FileChange, Reload};

#[derive(Debug)]
pub struct TrapClassifier;

impl Classifier for TrapClassifier {
    fn classify(changes: &[FileChange]) -> Reload {
        panic!(
            "trap-classifier panics on purpose ({} change(s))",
            changes.len()
        )
    }
}

molecule_guest::export_classifier!(TrapClassifier);
