//! Test guest: a classifier that always answers `cold("v2")`. Used as a second version for swap
//! and shadow tests: it disagrees with `skill-classifier` whenever that one answers hot, and
//! its answer says which version produced it.

use molecule_guest::{Classifier, FileChange, Reload};

/// The reason every answer carries.
pub const ANSWER: &str = "v2";

#[derive(Debug)]
pub struct AnswerClassifier;

impl Classifier for AnswerClassifier {
    fn classify(_changes: &[FileChange]) -> Reload {
        Reload::cold(ANSWER)
    }
}

molecule_guest::export_classifier!(AnswerClassifier);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_is_fixed() {
        assert_eq!(AnswerClassifier::classify(&[]), Reload::cold("v2"));
        let changes = [FileChange::modified("SKILL.md", "sha256:1", "sha256:2")];
        assert_eq!(AnswerClassifier::classify(&changes), Reload::cold("v2"));
    }
}
