//! The default hot-reload classifier: a plugin update is hot only when every change is an edit
//! of an existing `SKILL.md`, because agents re-read skill files on their own; anything else
//! (a file added or removed, `plugin.yaml`, hooks, scripts, rules) needs a restart.

use molecule_guest::changes::is_skill_md;
use molecule_guest::{ChangeKind, Changes, Classifier, FileChange, Reload};

/// Exported as the component's `classify`.
#[derive(Debug)]
pub struct SkillClassifier;

impl Classifier for SkillClassifier {
    fn classify(changes: &[FileChange]) -> Reload {
        classify(changes.into())
    }

    // Reads the host's packed changes in place: no copy of any path or digest.
    fn classify_changes(changes: Changes<'_>) -> Reload {
        classify(changes)
    }
}

molecule_guest::export_classifier!(SkillClassifier);

/// Hot when every change modifies a `SKILL.md` (an empty list included); otherwise cold,
/// naming the first change that is not.
pub fn classify(changes: Changes<'_>) -> Reload {
    let offending = changes
        .iter()
        .find(|c| !(c.kind == ChangeKind::Modified && is_skill_md(c.path)));
    match offending {
        None => Reload::Hot,
        Some(change) if change.kind == ChangeKind::Modified => {
            Reload::cold(format!("{} changed and is not a SKILL.md", change.path))
        }
        Some(change) => Reload::cold(format!("{} was {}", change.path, change.kind)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skill(path: &str) -> FileChange {
        FileChange::modified(path, "sha256:old", "sha256:new")
    }

    fn classify(changes: &[FileChange]) -> Reload {
        <SkillClassifier as Classifier>::classify(changes)
    }

    #[test]
    fn no_changes_is_hot() {
        assert_eq!(classify(&[]), Reload::Hot);
    }

    #[test]
    fn edits_of_skill_files_only_are_hot() {
        let changes = [skill("skills/review/SKILL.md"), skill("SKILL.md")];
        assert_eq!(classify(&changes), Reload::Hot);
    }

    #[test]
    fn an_edit_of_any_other_file_is_cold_and_named() {
        let changes = [
            skill("skills/review/SKILL.md"),
            skill("plugin.yaml"),
            skill("hooks/pre.sh"),
        ];
        assert_eq!(
            classify(&changes),
            Reload::cold("plugin.yaml changed and is not a SKILL.md")
        );
    }

    #[test]
    fn an_added_skill_file_is_cold() {
        let changes = [
            skill("skills/a/SKILL.md"),
            FileChange::added("skills/b/SKILL.md", "sha256:b"),
        ];
        assert_eq!(
            classify(&changes),
            Reload::cold("skills/b/SKILL.md was added")
        );
    }

    #[test]
    fn a_removed_skill_file_is_cold() {
        let changes = [FileChange::removed("skills/a/SKILL.md", "sha256:a")];
        assert_eq!(
            classify(&changes),
            Reload::cold("skills/a/SKILL.md was removed")
        );
    }

    #[test]
    fn names_are_matched_exactly() {
        assert!(!classify(&[skill("skills/a/skill.md")]).is_hot());
        assert!(!classify(&[skill("skills/a/SKILL.md.orig")]).is_hot());
    }

    #[test]
    fn both_entry_points_use_the_same_logic() {
        for changes in [vec![skill("rules/a.md")], vec![skill("a/SKILL.md")]] {
            assert_eq!(
                SkillClassifier::classify_changes(changes[..].into()),
                classify(&changes)
            );
        }
    }
}
