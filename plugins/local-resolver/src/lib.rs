//! The `local` resolver: copies a plugin from the operator's registry directory, which the host
//! preopens read-only at `/registry`, into the staging directory `/dest`, with plain file APIs
//! inside the sandbox. The revision is the `sha256:` digest of the copied tree, so a changed
//! registry entry shows up as drift.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use molecule_guest::tree::{copy_tree, declared_name, tree_digest, validate_plugin_name};
use molecule_guest::{DEST, FetchError, Fetched, REGISTRY, Resolver, Source, log};

/// Exported as the component's `schemes`, `fetch` and `resolve-revision`.
#[derive(Debug)]
pub struct LocalResolver;

impl Resolver for LocalResolver {
    fn schemes() -> &'static [&'static str] {
        &["local"]
    }

    fn fetch(source: &Source) -> Result<Fetched, FetchError> {
        let fetched = fetch_into(Path::new(REGISTRY), Path::new(DEST), source)?;
        log::info(format!(
            "fetched {source} as {} at {}",
            fetched.name, fetched.revision
        ));
        Ok(fetched)
    }

    fn resolve_revision(source: &Source) -> Result<String, FetchError> {
        revision_of(Path::new(REGISTRY), source)
    }
}

molecule_guest::export_resolver!(LocalResolver);

/// Copies `registry/<location>/` into `dest` and names what was copied: the `name:` of its
/// `plugin.yaml`, else the location; the revision is the tree's digest.
pub fn fetch_into(registry: &Path, dest: &Path, source: &Source) -> Result<Fetched, FetchError> {
    let entry = registry_entry(registry, source)?;
    let revision = copy_tree(&entry, dest)?;
    // Read the name from the copy, so name and revision describe the same bytes even if the
    // registry changes underneath.
    let name = declared_name(dest)?.unwrap_or_else(|| source.location.clone());
    Ok(Fetched { name, revision })
}

/// The digest [`fetch_into`] would return, computed without copying.
pub fn revision_of(registry: &Path, source: &Source) -> Result<String, FetchError> {
    tree_digest(&registry_entry(registry, source)?)
}

/// The registry directory a source names, after refusing anything that is not a plain entry
/// name (so no `/`, `..` or absolute path ever reaches the filesystem) and any pin: a registry
/// entry has no history to pin to.
fn registry_entry(registry: &Path, source: &Source) -> Result<PathBuf, FetchError> {
    if let Some(reference) = &source.reference {
        return Err(FetchError::InvalidSource(format!(
            "local sources cannot be pinned (`#{reference}`): a registry entry has only its current content"
        )));
    }
    validate_plugin_name(&source.location)?;
    match fs::symlink_metadata(registry) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(FetchError::Denied(format!(
                "{} is not a directory",
                registry.display()
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(FetchError::Denied(format!(
                "no plugin registry is granted to this resolver ({} is not preopened)",
                registry.display()
            )));
        }
        Err(e) => {
            return Err(FetchError::io(
                format!("reading {}", registry.display()),
                &e,
            ));
        }
    }
    let entry = registry.join(&source.location);
    match fs::symlink_metadata(&entry) {
        Ok(meta) if meta.is_dir() => Ok(entry),
        Ok(meta) if meta.file_type().is_symlink() => Err(FetchError::Denied(format!(
            "registry entry `{}` is a symbolic link; links are refused",
            source.location
        ))),
        Ok(_) => Err(FetchError::InvalidSource(format!(
            "registry entry `{}` is not a directory",
            source.location
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(FetchError::NotFound(format!(
            "no plugin `{}` in the local registry",
            source.location
        ))),
        Err(e) => Err(FetchError::io(
            format!("reading registry entry `{}`", source.location),
            &e,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(name: &str) -> Source {
        Source::new("local", name, None)
    }

    fn registry_with_review() -> tempfile::TempDir {
        let registry = tempfile::tempdir().unwrap();
        let plugin = registry.path().join("review");
        fs::create_dir_all(plugin.join("skills/review")).unwrap();
        fs::write(plugin.join("skills/review/SKILL.md"), "# Review\n").unwrap();
        fs::write(plugin.join("rules.md"), "be kind\n").unwrap();
        registry
    }

    #[test]
    fn fetch_copies_the_entry_and_names_it_after_its_location() {
        let registry = registry_with_review();
        let dest = tempfile::tempdir().unwrap();

        let fetched = fetch_into(registry.path(), dest.path(), &local("review")).unwrap();

        assert_eq!(fetched.name, "review");
        assert_eq!(
            fetched.revision,
            revision_of(registry.path(), &local("review")).unwrap()
        );
        assert_eq!(
            fs::read_to_string(dest.path().join("skills/review/SKILL.md")).unwrap(),
            "# Review\n"
        );
        assert_eq!(
            fs::read_to_string(dest.path().join("rules.md")).unwrap(),
            "be kind\n"
        );
    }

    #[test]
    fn the_name_comes_from_plugin_yaml_when_it_declares_one() {
        let registry = registry_with_review();
        fs::write(
            registry.path().join("review/plugin.yaml"),
            "name: code-review\nversion: 2\n",
        )
        .unwrap();
        let dest = tempfile::tempdir().unwrap();

        let fetched = fetch_into(registry.path(), dest.path(), &local("review")).unwrap();

        assert_eq!(fetched.name, "code-review");
    }

    #[test]
    fn the_revision_tracks_the_content() {
        let registry = registry_with_review();
        let before = revision_of(registry.path(), &local("review")).unwrap();
        fs::write(registry.path().join("review/rules.md"), "be kinder\n").unwrap();
        let after = revision_of(registry.path(), &local("review")).unwrap();
        assert!(before.starts_with("sha256:"));
        assert_ne!(before, after);
    }

    #[test]
    fn names_that_could_leave_the_registry_are_refused_before_any_file_is_touched() {
        let registry = registry_with_review();
        let dest = tempfile::tempdir().unwrap();
        for bad in ["../review", "/etc", "review/skills", "..", "", "a\\b"] {
            let err = fetch_into(registry.path(), dest.path(), &local(bad)).unwrap_err();
            assert!(
                matches!(err, FetchError::InvalidSource(_)),
                "{bad:?}: {err:?}"
            );
        }
        assert_eq!(fs::read_dir(dest.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_missing_entry_is_not_found() {
        let registry = registry_with_review();
        let err = revision_of(registry.path(), &local("nope")).unwrap_err();
        assert!(
            matches!(&err, FetchError::NotFound(m) if m.contains("nope")),
            "{err:?}"
        );
    }

    #[test]
    fn a_missing_registry_means_none_was_granted() {
        let dir = tempfile::tempdir().unwrap();
        let err = revision_of(&dir.path().join("registry"), &local("review")).unwrap_err();
        assert!(
            matches!(&err, FetchError::Denied(m) if m.contains("no plugin registry")),
            "{err:?}"
        );
    }

    #[test]
    fn a_pinned_local_source_is_invalid() {
        let registry = registry_with_review();
        let err =
            revision_of(registry.path(), &Source::new("local", "review", Some("v1"))).unwrap_err();
        assert!(matches!(err, FetchError::InvalidSource(_)), "{err:?}");
    }

    #[cfg(unix)]
    #[test]
    fn links_in_the_entry_or_as_the_entry_are_refused() {
        let registry = registry_with_review();
        let dest = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/passwd", registry.path().join("review/passwd")).unwrap();
        std::os::unix::fs::symlink("/etc", registry.path().join("etc")).unwrap();

        let inner = fetch_into(registry.path(), dest.path(), &local("review")).unwrap_err();
        let outer = fetch_into(registry.path(), dest.path(), &local("etc")).unwrap_err();

        assert!(
            matches!(&inner, FetchError::Denied(m) if m.contains("passwd")),
            "{inner:?}"
        );
        assert!(
            matches!(&outer, FetchError::Denied(m) if m.contains("symbolic link")),
            "{outer:?}"
        );
        assert!(!dest.path().join("passwd").exists());
    }
}
