//! Helpers for resolvers that work with files inside the sandbox: plugin-name checks,
//! `plugin.yaml`'s `name:`, a content digest of a directory tree, and a copy that refuses links.
//!
//! They use plain `std::fs`. Inside the host the only paths that exist are the preopens
//! ([`crate::DEST`] read-write, [`crate::REGISTRY`] read-only where granted), so there is
//! nothing else to reach; natively they work on any directory, which is how they are tested.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::types::FetchError;

/// Deepest directory nesting a tree may have; deeper trees are refused as too large.
pub const MAX_DEPTH: usize = 64;

/// Checks a plugin or registry entry name: 1 to 128 characters from `A-Z a-z 0-9 . _ -`,
/// starting with a letter or digit, and no `..`. So no `/`, `\`, absolute path or parent
/// reference can ever pass.
pub fn validate_plugin_name(name: &str) -> Result<(), FetchError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(FetchError::InvalidSource(format!(
            "`{}` is not a valid plugin name (1-128 of A-Z a-z 0-9 . _ -, starting with a letter or digit, no `..`)",
            name.escape_debug()
        )))
    }
}

/// The top-level `name:` of a `plugin.yaml`, if it declares one.
///
/// This reads only that one key (plain, single- or double-quoted scalar, with an optional
/// trailing comment), which keeps a YAML parser out of every resolver component.
pub fn plugin_yaml_name(yaml: &str) -> Option<String> {
    yaml.lines().find_map(|line| {
        let value = line.strip_prefix("name:")?;
        let value = value.trim();
        let value = if let Some(rest) = value.strip_prefix('"') {
            rest.split_once('"')?.0
        } else if let Some(rest) = value.strip_prefix('\'') {
            rest.split_once('\'')?.0
        } else {
            value.split(" #").next().unwrap_or(value).trim()
        };
        (!value.is_empty()).then(|| value.to_owned())
    })
}

/// The name `dir/plugin.yaml` declares, or `None` when there is no `plugin.yaml` or it names
/// nothing. A declared name must pass [`validate_plugin_name`]; a `plugin.yaml` that is a link
/// or not a file is refused.
pub fn declared_name(dir: &Path) -> Result<Option<String>, FetchError> {
    let path = dir.join("plugin.yaml");
    let meta = match fs::symlink_metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FetchError::io(format!("reading {}", path.display()), &e)),
    };
    if !meta.is_file() {
        return Err(FetchError::Denied(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    let text = fs::read_to_string(&path)
        .map_err(|e| FetchError::io(format!("reading {}", path.display()), &e))?;
    let name = plugin_yaml_name(&text);
    if let Some(name) = &name {
        validate_plugin_name(name)?;
    }
    Ok(name)
}

/// The content digest of the tree under `root`: `sha256:<hex>`.
///
/// The hash covers every entry in byte order of its `/`-separated relative path:
/// `D<path>\0` for a directory, `F<path>\0<size in decimal>\0<content>` for a file. Paths
/// never contain NUL and the size delimits the content, so two different trees cannot feed the
/// hash the same bytes. Links and special files are refused, never skipped.
pub fn tree_digest(root: &Path) -> Result<String, FetchError> {
    visit(root, None)
}

/// Copies the tree under `from` into the existing directory `to` and returns its
/// [`tree_digest`], computed from the bytes as they were copied. Links and special files are
/// refused (the copy stops with an error), never skipped.
pub fn copy_tree(from: &Path, to: &Path) -> Result<String, FetchError> {
    visit(from, Some(to))
}

enum Kind {
    Dir,
    File(u64),
}

fn visit(root: &Path, dest: Option<&Path>) -> Result<String, FetchError> {
    let meta = fs::symlink_metadata(root)
        .map_err(|e| FetchError::io(format!("reading {}", root.display()), &e))?;
    if !meta.is_dir() {
        return Err(FetchError::InvalidSource(format!(
            "{} is not a directory",
            root.display()
        )));
    }
    let mut entries = Vec::new();
    collect(root, "", 0, &mut entries)?;
    entries.sort_by(|a, b| a.0.cmp(&b.0));

    let mut hasher = Sha256::new();
    for (rel, kind) in &entries {
        match kind {
            Kind::Dir => {
                hasher.update(b"D");
                hasher.update(rel.as_bytes());
                hasher.update(b"\0");
                if let Some(dest) = dest {
                    let target = dest.join(rel);
                    fs::create_dir_all(&target).map_err(|e| {
                        FetchError::io(format!("creating {}", target.display()), &e)
                    })?;
                }
            }
            Kind::File(size) => {
                hasher.update(b"F");
                hasher.update(rel.as_bytes());
                hasher.update(format!("\0{size}\0").as_bytes());
                let source = root.join(rel);
                let mut input = File::open(&source)
                    .map_err(|e| FetchError::io(format!("reading {}", source.display()), &e))?;
                let copied = match dest {
                    Some(dest) => {
                        let target = dest.join(rel);
                        let mut output = File::create(&target).map_err(|e| {
                            FetchError::io(format!("writing {}", target.display()), &e)
                        })?;
                        let copied =
                            copy_hashing(&mut input, &mut output, &mut hasher).map_err(|e| {
                                FetchError::io(format!("copying {rel} into {}", dest.display()), &e)
                            })?;
                        output.flush().map_err(|e| {
                            FetchError::io(format!("writing {}", target.display()), &e)
                        })?;
                        copied
                    }
                    None => copy_hashing(&mut input, &mut io::sink(), &mut hasher)
                        .map_err(|e| FetchError::io(format!("reading {}", source.display()), &e))?,
                };
                if copied != *size {
                    return Err(FetchError::Upstream(format!(
                        "{} changed size while it was read ({size} then {copied} bytes)",
                        source.display()
                    )));
                }
            }
        }
    }
    Ok(format!("sha256:{}", hex(&hasher.finalize())))
}

/// Lists every entry under `dir` (relative to the walk's root as `prefix`), refusing links and
/// anything that is neither a file nor a directory.
fn collect(
    dir: &Path,
    prefix: &str,
    depth: usize,
    out: &mut Vec<(String, Kind)>,
) -> Result<(), FetchError> {
    if depth >= MAX_DEPTH {
        return Err(FetchError::TooLarge(format!(
            "{} is nested deeper than {MAX_DEPTH} directories",
            dir.display()
        )));
    }
    let read =
        fs::read_dir(dir).map_err(|e| FetchError::io(format!("listing {}", dir.display()), &e))?;
    for entry in read {
        let entry = entry.map_err(|e| FetchError::io(format!("listing {}", dir.display()), &e))?;
        let name = entry.file_name();
        let name = name.to_str().ok_or_else(|| {
            FetchError::InvalidSource(format!(
                "{} holds a file name that is not UTF-8",
                dir.display()
            ))
        })?;
        let rel = if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}/{name}")
        };
        let path = entry.path();
        let meta = fs::symlink_metadata(&path)
            .map_err(|e| FetchError::io(format!("reading {}", path.display()), &e))?;
        let file_type = meta.file_type();
        if file_type.is_symlink() {
            return Err(FetchError::Denied(format!(
                "{rel} is a symbolic link; plugin trees may not contain links"
            )));
        } else if file_type.is_dir() {
            collect(&path, &rel, depth + 1, out)?;
            out.push((rel, Kind::Dir));
        } else if file_type.is_file() {
            out.push((rel, Kind::File(meta.len())));
        } else {
            return Err(FetchError::Denied(format!(
                "{rel} is neither a file nor a directory"
            )));
        }
    }
    Ok(())
}

fn copy_hashing(
    input: &mut impl Read,
    output: &mut impl Write,
    hasher: &mut Sha256,
) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        output.write_all(&buf[..n])?;
        total += n as u64;
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, content: &str) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    fn sample(root: &Path) {
        write(root, "plugin.yaml", "name: review\nversion: 1\n");
        write(root, "skills/review/SKILL.md", "# Review\n");
        write(root, "rules/a.md", "be kind\n");
    }

    #[test]
    fn names_with_separators_parents_or_absolute_paths_are_refused() {
        for bad in [
            "",
            "/etc",
            "a/b",
            "a\\b",
            "..",
            "../x",
            "a..b",
            ".hidden",
            "-x",
            "a b",
            "a\0b",
            &"x".repeat(129),
        ] {
            assert!(
                validate_plugin_name(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
        for good in ["review", "Review-2", "a.b_c", &"x".repeat(128)] {
            assert!(validate_plugin_name(good).is_ok(), "{good:?} should pass");
        }
    }

    #[test]
    fn plugin_yaml_name_reads_only_the_top_level_key() {
        assert_eq!(
            plugin_yaml_name("name: review\n").as_deref(),
            Some("review")
        );
        assert_eq!(
            plugin_yaml_name("version: 1\nname: \"quoted\" # c\n").as_deref(),
            Some("quoted")
        );
        assert_eq!(
            plugin_yaml_name("name: 'single'\n").as_deref(),
            Some("single")
        );
        assert_eq!(
            plugin_yaml_name("name: plain # comment\n").as_deref(),
            Some("plain")
        );
        assert_eq!(plugin_yaml_name("skills:\n  name: nested\n"), None);
        assert_eq!(plugin_yaml_name("name:\n"), None);
        assert_eq!(plugin_yaml_name("names: x\n"), None);
        assert_eq!(plugin_yaml_name(""), None);
    }

    #[test]
    fn declared_name_is_none_without_plugin_yaml_and_validated_with_one() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(declared_name(dir.path()).unwrap(), None);
        write(dir.path(), "plugin.yaml", "name: review\n");
        assert_eq!(
            declared_name(dir.path()).unwrap().as_deref(),
            Some("review")
        );
        write(dir.path(), "plugin.yaml", "name: ../../etc\n");
        assert!(matches!(
            declared_name(dir.path()),
            Err(FetchError::InvalidSource(_))
        ));
    }

    #[test]
    fn copy_reproduces_the_tree_and_returns_its_digest() {
        let from = tempfile::tempdir().unwrap();
        let to = tempfile::tempdir().unwrap();
        sample(from.path());
        fs::create_dir(from.path().join("empty")).unwrap();

        let copied = copy_tree(from.path(), to.path()).unwrap();

        assert_eq!(copied, tree_digest(from.path()).unwrap());
        assert_eq!(copied, tree_digest(to.path()).unwrap());
        assert!(
            copied.starts_with("sha256:") && copied.len() == 7 + 64,
            "{copied}"
        );
        assert_eq!(
            fs::read_to_string(to.path().join("skills/review/SKILL.md")).unwrap(),
            "# Review\n"
        );
        assert!(to.path().join("empty").is_dir());
    }

    #[test]
    fn digest_changes_with_content_names_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        sample(dir.path());
        let base = tree_digest(dir.path()).unwrap();
        assert_eq!(
            base,
            tree_digest(dir.path()).unwrap(),
            "the digest is deterministic"
        );

        write(dir.path(), "rules/a.md", "be kinder\n");
        let edited = tree_digest(dir.path()).unwrap();
        assert_ne!(base, edited);

        fs::rename(dir.path().join("rules/a.md"), dir.path().join("rules/b.md")).unwrap();
        let renamed = tree_digest(dir.path()).unwrap();
        assert_ne!(edited, renamed);

        fs::create_dir(dir.path().join("empty")).unwrap();
        assert_ne!(renamed, tree_digest(dir.path()).unwrap());
    }

    #[test]
    fn moving_bytes_between_a_name_and_the_content_changes_the_digest() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        write(a.path(), "x", "1");
        write(b.path(), "x1", "");
        assert_ne!(
            tree_digest(a.path()).unwrap(),
            tree_digest(b.path()).unwrap()
        );
    }

    #[test]
    fn the_digest_of_a_known_tree_is_stable() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a/b.txt", "hi");
        let mut expected = Sha256::new();
        expected.update(b"Da\0Fa/b.txt\x002\0hi");
        assert_eq!(
            tree_digest(dir.path()).unwrap(),
            format!("sha256:{}", hex(&expected.finalize()))
        );
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_are_refused_not_skipped() {
        let from = tempfile::tempdir().unwrap();
        let to = tempfile::tempdir().unwrap();
        sample(from.path());
        std::os::unix::fs::symlink("/etc/passwd", from.path().join("rules/passwd")).unwrap();

        let err = copy_tree(from.path(), to.path()).unwrap_err();

        assert!(
            matches!(&err, FetchError::Denied(m) if m.contains("rules/passwd")),
            "{err:?}"
        );
        assert!(matches!(
            tree_digest(from.path()),
            Err(FetchError::Denied(_))
        ));
        assert!(!to.path().join("rules/passwd").exists());
    }

    #[test]
    fn a_missing_or_non_directory_root_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            tree_digest(&dir.path().join("nope")),
            Err(FetchError::NotFound(_))
        ));
        write(dir.path(), "file", "x");
        assert!(matches!(
            tree_digest(&dir.path().join("file")),
            Err(FetchError::InvalidSource(_))
        ));
    }

    #[test]
    fn trees_deeper_than_the_limit_are_too_large() {
        let dir = tempfile::tempdir().unwrap();
        let deep: Vec<&str> = std::iter::repeat_n("d", MAX_DEPTH + 1).collect();
        fs::create_dir_all(dir.path().join(deep.join("/"))).unwrap();
        assert!(matches!(
            tree_digest(dir.path()),
            Err(FetchError::TooLarge(_))
        ));
    }
}
