//! Environment for imported workspaces: `.env` and persona files, `${VAR}` expansion, and the
//! required-env preflight.

use std::collections::{BTreeMap, BTreeSet};

use super::template::EnvRequirement;
use crate::secrets::SecretKey;

/// `.env` and persona files larger than this are refused.
pub const MAX_ENV_FILE_BYTES: u64 = 256 * 1024;

/// Parses `KEY=VALUE` lines: `#` comments and blank lines are skipped, an `export ` prefix is
/// allowed, one pair of matching quotes around the value is removed, empty values are skipped.
/// Lines whose key is not an environment variable name are skipped and returned as the second
/// list (by line number, never with their value).
pub fn parse_dotenv(text: &str) -> (Vec<(String, String)>, Vec<usize>) {
    let mut pairs = Vec::new();
    let mut rejected = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            rejected.push(index + 1);
            continue;
        };
        let Some(key) = SecretKey::parse(key.trim()) else {
            rejected.push(index + 1);
            continue;
        };
        let value = unquote(value.trim());
        if value.is_empty() {
            continue;
        }
        pairs.push((key.as_str().to_owned(), value.to_owned()));
    }
    (pairs, rejected)
}

fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(quote) && value.ends_with(quote) {
            return &value[1..value.len() - 1];
        }
    }
    value
}

/// Whether `name` may name a persona directory: `[A-Za-z0-9_-]+`.
pub fn valid_persona_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Layers later in the list win.
pub fn layer(layers: &[&[(String, String)]]) -> BTreeMap<String, String> {
    let mut merged = BTreeMap::new();
    for layer in layers {
        for (key, value) in *layer {
            merged.insert(key.clone(), value.clone());
        }
    }
    merged
}

/// Replaces every `${NAME}` in `raw` with `lookup(NAME)`. An unset or malformed reference is an
/// error naming it.
pub fn expand_vars(raw: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("an unterminated ${{ in {raw:?}"));
        };
        let name = &after[..end];
        if SecretKey::parse(name).is_none() {
            return Err(format!("${{{name}}} is not a variable name"));
        }
        let value = lookup(name).ok_or_else(|| format!("${{{name}}} is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Whether `name` is a name the preflight considers: `^[A-Z][A-Z0-9_]{0,127}$`.
pub fn valid_requirement_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 128
        && chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// Requirements with invalid names dropped and duplicates removed; an `any_of` group that
/// contains a plainly required name is implied by it and dropped.
pub fn normalise(requirements: &[EnvRequirement]) -> Vec<EnvRequirement> {
    let plain: BTreeSet<&str> = requirements
        .iter()
        .filter_map(|r| match r {
            EnvRequirement::Name(name) if valid_requirement_name(name) => Some(name.as_str()),
            _ => None,
        })
        .collect();
    let mut out: Vec<EnvRequirement> = plain
        .iter()
        .map(|name| EnvRequirement::Name((*name).to_owned()))
        .collect();
    for requirement in requirements {
        if let EnvRequirement::AnyOf { any_of } = requirement {
            let names: Vec<String> = any_of
                .iter()
                .filter(|n| valid_requirement_name(n))
                .cloned()
                .collect();
            if names.is_empty() || names.iter().any(|n| plain.contains(n.as_str())) {
                continue;
            }
            let group = EnvRequirement::AnyOf { any_of: names };
            if !out.contains(&group) {
                out.push(group);
            }
        }
    }
    out
}

/// The requirements `available` does not satisfy, as display strings (`A` or `A|B`).
pub fn unsatisfied(
    requirements: &[EnvRequirement],
    available: impl Fn(&str) -> bool,
) -> Vec<String> {
    normalise(requirements)
        .into_iter()
        .filter_map(|r| match r {
            EnvRequirement::Name(name) => (!available(&name)).then_some(name),
            EnvRequirement::AnyOf { any_of } => {
                (!any_of.iter().any(|n| available(n))).then(|| any_of.join("|"))
            }
        })
        .collect()
}

/// A workspace whose own requirements are not met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingWorkspaceEnv {
    pub workspace: String,
    pub files_dir: Option<String>,
    pub unsatisfied_env: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotenv_lines_are_parsed_like_the_original() {
        let (pairs, rejected) = parse_dotenv(
            "# comment\n\nA=1\nexport B=\"two words\"\nC='x'\nEMPTY=\nlower=ok\nnot a pair\nD = spaced \n",
        );
        assert_eq!(
            pairs,
            vec![
                ("A".to_owned(), "1".to_owned()),
                ("B".to_owned(), "two words".to_owned()),
                ("C".to_owned(), "x".to_owned()),
                ("lower".to_owned(), "ok".to_owned()),
                ("D".to_owned(), "spaced".to_owned()),
            ]
        );
        assert_eq!(rejected, vec![8]);
    }

    #[test]
    fn later_layers_win() {
        let persona = vec![
            ("A".to_owned(), "persona".to_owned()),
            ("P".to_owned(), "p".to_owned()),
        ];
        let org = vec![
            ("A".to_owned(), "org".to_owned()),
            ("O".to_owned(), "o".to_owned()),
        ];
        let dir = vec![("A".to_owned(), "dir".to_owned())];
        let merged = layer(&[&persona, &org, &dir]);
        assert_eq!(merged["A"], "dir");
        assert_eq!(merged["P"], "p");
        assert_eq!(merged["O"], "o");
    }

    #[test]
    fn variables_expand_or_name_what_is_missing() {
        let lookup = |name: &str| (name == "HOME_DIR").then(|| "/srv/work".to_owned());
        assert_eq!(
            expand_vars("${HOME_DIR}/proj", lookup).unwrap(),
            "/srv/work/proj"
        );
        assert_eq!(expand_vars("/plain", lookup).unwrap(), "/plain");
        assert!(
            expand_vars("${NOPE}/x", lookup)
                .unwrap_err()
                .contains("NOPE")
        );
        assert!(expand_vars("${HOME_DIR", lookup).is_err());
        assert!(expand_vars("${a b}", lookup).is_err());
    }

    #[test]
    fn requirements_are_normalised_and_checked() {
        let reqs = vec![
            EnvRequirement::Name("API_KEY".into()),
            EnvRequirement::Name("API_KEY".into()),
            EnvRequirement::Name("lowercase".into()),
            EnvRequirement::AnyOf {
                any_of: vec!["API_KEY".into(), "OTHER".into()],
            },
            EnvRequirement::AnyOf {
                any_of: vec!["OPENAI_KEY".into(), "ANTHROPIC_KEY".into()],
            },
        ];
        assert_eq!(normalise(&reqs).len(), 2);
        let missing = unsatisfied(&reqs, |n| n == "ANTHROPIC_KEY");
        assert_eq!(missing, vec!["API_KEY".to_owned()]);
        let missing = unsatisfied(&reqs, |_| false);
        assert_eq!(
            missing,
            vec!["API_KEY".to_owned(), "OPENAI_KEY|ANTHROPIC_KEY".to_owned()]
        );
    }

    #[test]
    fn persona_names_are_single_safe_segments() {
        assert!(valid_persona_name("backend-lead_2"));
        for bad in ["", ".", "..", "a/b", "a.b", "x y"] {
            assert!(!valid_persona_name(bad), "{bad}");
        }
    }
}
