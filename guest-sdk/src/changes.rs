//! Helpers for classifiers: questions about the list of changed files.

use crate::types::{ChangeKind, FileChange};

/// The last `/`-separated segment of a plugin-relative path.
pub fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Whether `path` names a skill definition: a file called exactly `SKILL.md`, at any depth.
///
/// The match is case-sensitive, as agents load `SKILL.md` by that exact name.
pub fn is_skill_md(path: &str) -> bool {
    file_name(path) == "SKILL.md"
}

/// Whether every change modifies a file that exists on both sides (nothing added or removed).
/// True for an empty list.
pub fn all_modified(changes: &[FileChange]) -> bool {
    changes.iter().all(|c| c.kind == ChangeKind::Modified)
}

/// The first change that does not satisfy `ok`, if any. Classifiers use it to name the file
/// that forces a restart.
pub fn first_offending(
    changes: &[FileChange],
    mut ok: impl FnMut(&FileChange) -> bool,
) -> Option<&FileChange> {
    changes.iter().find(|c| !ok(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skill_md_is_matched_by_exact_file_name_at_any_depth() {
        assert!(is_skill_md("SKILL.md"));
        assert!(is_skill_md("skills/review/SKILL.md"));
        assert!(!is_skill_md("skills/review/skill.md"));
        assert!(!is_skill_md("skills/review/SKILL.md.bak"));
        assert!(!is_skill_md("skills/SKILL.md/run.py"));
        assert!(!is_skill_md("NOTSKILL.md"));
        assert!(!is_skill_md(""));
    }

    #[test]
    fn file_name_is_the_last_segment() {
        assert_eq!(file_name("a/b/c.txt"), "c.txt");
        assert_eq!(file_name("c.txt"), "c.txt");
        assert_eq!(file_name("a/b/"), "");
    }

    #[test]
    fn all_modified_rejects_added_and_removed_files() {
        let modified = FileChange::modified("a", "sha256:1", "sha256:2");
        assert!(all_modified(&[]));
        assert!(all_modified(std::slice::from_ref(&modified)));
        assert!(!all_modified(&[
            modified.clone(),
            FileChange::added("b", "sha256:3")
        ]));
        assert!(!all_modified(&[
            FileChange::removed("c", "sha256:4"),
            modified
        ]));
    }

    #[test]
    fn first_offending_names_the_first_change_that_fails_the_predicate() {
        let changes = [
            FileChange::modified("skills/a/SKILL.md", "sha256:1", "sha256:2"),
            FileChange::modified("plugin.yaml", "sha256:3", "sha256:4"),
            FileChange::added("hooks/run.sh", "sha256:5"),
        ];
        let offending = first_offending(&changes, |c| is_skill_md(&c.path));
        assert_eq!(offending.map(|c| c.path.as_str()), Some("plugin.yaml"));
        assert!(first_offending(&changes[..1], |c| is_skill_md(&c.path)).is_none());
    }
}
