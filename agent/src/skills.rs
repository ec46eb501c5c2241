//! Skills: `skills/<id>/SKILL.md` files whose YAML frontmatter names and describes them.

use std::path::Path;

use serde_yaml_ng::Value;

/// The file that makes a directory a skill.
pub const SKILL_FILE: &str = "SKILL.md";

/// One skill, as shown in the agent card and the system prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skill {
    /// The directory name; unique within a loadout.
    pub id: String,
    pub name: String,
    pub description: String,
    pub tags: Vec<String>,
}

impl Skill {
    /// Builds a skill from its `SKILL.md` text. Frontmatter that is missing or malformed counts
    /// as empty, so a broken file still yields a skill named after its directory.
    pub fn from_markdown(id: &str, text: &str) -> Self {
        let front = frontmatter(text);
        let field = |key: &str| front.get(key).and_then(scalar_text);
        let tags = match front.get("tags") {
            Some(Value::Sequence(items)) => items.iter().filter_map(scalar_text).collect(),
            Some(other) => scalar_text(other).into_iter().collect(),
            None => Vec::new(),
        };
        Self {
            id: id.to_owned(),
            name: field("name").unwrap_or_else(|| id.to_owned()),
            description: field("description").unwrap_or_default(),
            tags,
        }
    }
}

/// The YAML mapping between a leading `---` line and the next `---` line, or an empty mapping.
pub fn frontmatter(text: &str) -> serde_yaml_ng::Mapping {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.split_inclusive('\n');
    if lines.next().map(str::trim_end) != Some("---") {
        return Default::default();
    }
    let mut yaml = String::new();
    for line in lines {
        if line.trim_end() == "---" {
            return match serde_yaml_ng::from_str::<Value>(&yaml) {
                Ok(Value::Mapping(map)) => map,
                _ => Default::default(),
            };
        }
        yaml.push_str(line);
    }
    // No closing line: not frontmatter at all.
    Default::default()
}

fn scalar_text(value: &Value) -> Option<String> {
    let text = match value {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => return None,
    };
    (!text.is_empty()).then_some(text)
}

/// Loads `<dir>/*/SKILL.md`, sorted by directory name. A missing `dir` has no skills; dot
/// directories and directories without `SKILL.md` are skipped, and so are unreadable files
/// (with a warning), so one bad skill never hides the others.
pub fn load_dir(dir: &Path) -> Vec<Skill> {
    sorted_subdirs(dir)
        .into_iter()
        .filter_map(|(id, path)| {
            let file = path.join(SKILL_FILE);
            match std::fs::read_to_string(&file) {
                Ok(text) => Some(Skill::from_markdown(&id, &text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    tracing::warn!(path = %file.display(), error = %e, "skipping unreadable skill");
                    None
                }
            }
        })
        .collect()
}

/// The non-dot subdirectories of `dir` as `(name, path)`, sorted by name; empty if `dir` is
/// missing or unreadable.
pub fn sorted_subdirs(dir: &Path) -> Vec<(String, std::path::PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut dirs: Vec<_> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let path = entry.path();
            (!name.starts_with('.') && path.is_dir()).then_some((name, path))
        })
        .collect();
    dirs.sort();
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frontmatter_names_describes_and_tags_a_skill() {
        let text = "---\nname: Code review\ndescription: Reviews diffs\ntags: [rust, review]\n---\n# Body\n";
        let skill = Skill::from_markdown("review", text);
        assert_eq!(
            skill,
            Skill {
                id: "review".into(),
                name: "Code review".into(),
                description: "Reviews diffs".into(),
                tags: vec!["rust".into(), "review".into()],
            }
        );
    }

    #[test]
    fn malformed_or_missing_frontmatter_counts_as_empty() {
        for text in [
            "---\nname: [unclosed\n---\nbody",
            "---\n- a list\n---\n",
            "---\nname: no closing line\n",
            "# just markdown\n",
            "",
        ] {
            assert!(frontmatter(text).is_empty(), "{text:?}");
            let skill = Skill::from_markdown("plain", text);
            assert_eq!(skill.name, "plain");
            assert_eq!(skill.description, "");
            assert!(skill.tags.is_empty());
        }
    }

    #[test]
    fn crlf_files_and_a_single_tag_string_are_accepted() {
        let skill = Skill::from_markdown("w", "---\r\nname: Win\r\ntags: solo\r\n---\r\n");
        assert_eq!(skill.name, "Win");
        assert_eq!(skill.tags, ["solo"]);
    }

    #[test]
    fn loading_a_dir_skips_dot_dirs_and_dirs_without_skill_md() {
        let dir = tempfile::tempdir().unwrap();
        for (sub, file) in [
            ("b", true),
            ("a", true),
            (".hidden", true),
            ("empty", false),
        ] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
            if file {
                std::fs::write(
                    dir.path().join(sub).join(SKILL_FILE),
                    "---\ndescription: d\n---\n",
                )
                .unwrap();
            }
        }
        let ids: Vec<_> = load_dir(dir.path()).into_iter().map(|s| s.id).collect();
        assert_eq!(ids, ["a", "b"]);
        assert!(load_dir(&dir.path().join("missing")).is_empty());
    }
}
