//! Installed plugins: `plugins/<name>/` directories that the host finished installing.

use std::path::Path;

use crate::skills::{self, Skill};

/// The marker the host writes last when it installs a plugin; without it the directory may be
/// half-copied.
pub const COMPLETE_MARKER: &str = ".complete";

/// One loaded plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plugin {
    /// The directory name.
    pub name: String,
    /// `skills/*/SKILL.md`.
    pub skills: Vec<Skill>,
    /// The text of `rules/*.md`, sorted by file name.
    pub rules: Vec<String>,
}

/// Loads `<dir>/*` in name order. Dot directories (`.staging`, `.previous`, ...) are the host's
/// transient install state and are always skipped; so is any directory without [`COMPLETE_MARKER`].
pub fn load_dir(dir: &Path) -> Vec<Plugin> {
    skills::sorted_subdirs(dir)
        .into_iter()
        .filter(|(_, path)| path.join(COMPLETE_MARKER).is_file())
        .map(|(name, path)| Plugin {
            skills: skills::load_dir(&path.join("skills")),
            rules: load_rules(&path.join("rules")),
            name,
        })
        .collect()
}

fn load_rules(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|ext| ext == "md"))
        .collect();
    files.sort();
    files
        .into_iter()
        .filter_map(|path| match std::fs::read_to_string(&path) {
            Ok(text) => Some(text.trim().to_owned()).filter(|t| !t.is_empty()),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "skipping unreadable rule");
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn plugin(root: &Path, name: &str, complete: bool) -> std::path::PathBuf {
        let dir = root.join(name);
        fs::create_dir_all(dir.join("skills/lint")).unwrap();
        fs::write(dir.join("skills/lint/SKILL.md"), "---\nname: Lint\n---\n").unwrap();
        fs::create_dir_all(dir.join("rules")).unwrap();
        fs::write(dir.join("rules/b.md"), "Rule B\n").unwrap();
        fs::write(dir.join("rules/a.md"), "Rule A\n").unwrap();
        fs::write(dir.join("rules/notes.txt"), "not a rule").unwrap();
        if complete {
            fs::write(dir.join(COMPLETE_MARKER), "").unwrap();
        }
        dir
    }

    #[test]
    fn only_complete_non_dot_plugins_are_loaded() {
        let root = tempfile::tempdir().unwrap();
        plugin(root.path(), "linter", true);
        plugin(root.path(), "half-copied", false);
        plugin(root.path(), ".staging", true);
        plugin(root.path(), ".previous", true);

        let plugins = load_dir(root.path());

        assert_eq!(plugins.len(), 1);
        assert_eq!(plugins[0].name, "linter");
        assert_eq!(plugins[0].skills[0].id, "lint");
        assert_eq!(plugins[0].rules, ["Rule A", "Rule B"]);
    }

    #[test]
    fn a_missing_plugins_dir_has_no_plugins() {
        let root = tempfile::tempdir().unwrap();
        assert!(load_dir(&root.path().join("plugins")).is_empty());
    }
}
