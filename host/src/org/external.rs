//! `!external {repo, ref, path, url?}`: validation, the operator's allow-list, and the
//! content-addressed cache `<org root>/.external-cache/<host__repo>/<sha>/` filled through the
//! active `resolver:git` extension.

use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};

use serde_yaml_ng::Value;
use uuid::Uuid;

use super::{OrgError, RootDir};
use crate::extensions::registry::{ExtensionHost, FetchFailure};
use crate::extensions::types::{FetchError, Source};
use crate::locks::KeyedLocks;
use crate::safefs::{RelPath, SafeFsError};

/// The cache directory under the org root.
pub const CACHE_DIR: &str = ".external-cache";
/// The marker a cache entry carries once its content is complete.
pub const COMPLETE_MARKER: &str = ".complete";
/// The resolver scheme externals are fetched with: `git://host/owner/repo#ref`.
const SCHEME: &str = "git";

/// A validated `!external` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalRef {
    /// The git host, without scheme or trailing slash.
    pub host: String,
    /// `owner/name` (more segments allowed).
    pub repo: String,
    /// A branch, tag or commit.
    pub reference: String,
    /// The file inside the repository, relative and downward only.
    pub path: RelPath,
}

impl ExternalRef {
    /// Reads and validates the tag's mapping; `default_host` applies without `url`.
    pub fn from_yaml(value: &Value, default_host: &str) -> Result<Self, OrgError> {
        let Value::Mapping(map) = value else {
            return Err(invalid("!external takes a mapping {repo, ref, path, url?}"));
        };
        let field = |name: &str| -> Result<Option<String>, OrgError> {
            match map.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
                Some(_) => Err(invalid(format!("!external {name} must be a string"))),
            }
        };
        let required = |name: &str| -> Result<String, OrgError> {
            field(name)?
                .filter(|v| !v.is_empty())
                .ok_or_else(|| invalid(format!("!external needs {name}")))
        };
        let repo = required("repo")?;
        let reference = required("ref")?;
        let path = required("path")?;
        let host = field("url")?
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| default_host.to_owned());
        Self::new(&host, &repo, &reference, &path)
    }

    pub fn new(host: &str, repo: &str, reference: &str, path: &str) -> Result<Self, OrgError> {
        let host = host
            .trim()
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_ascii_lowercase();
        let host_ok = !host.is_empty()
            && host.len() <= 253
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
            && !host.starts_with(['.', '-', ':']);
        if !host_ok {
            return Err(invalid(format!(
                "!external host {host:?} is not a host name"
            )));
        }
        let segments: Vec<&str> = repo.trim_matches('/').split('/').collect();
        let repo_ok = segments.len() >= 2
            && segments.iter().all(|s| {
                !s.is_empty()
                    && *s != "."
                    && *s != ".."
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            });
        if !repo_ok {
            return Err(invalid(format!(
                "!external repo {repo:?} is not of the form owner/name"
            )));
        }
        let ref_ok = !reference.is_empty()
            && reference.len() <= 256
            && !reference.contains("..")
            && reference
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'));
        if !ref_ok {
            return Err(invalid(format!(
                "!external ref {reference:?} must match [A-Za-z0-9_./-]+ without .."
            )));
        }
        let path = RelPath::parse(path).map_err(|_| {
            invalid(format!(
                "!external path {path:?} must be relative and stay inside the repository"
            ))
        })?;
        Ok(ExternalRef {
            host,
            repo: segments.join("/"),
            reference: reference.to_owned(),
            path,
        })
    }

    /// `host/owner/name`, what the allow-list matches.
    pub fn repo_key(&self) -> String {
        format!("{}/{}", self.host, self.repo)
    }

    /// The cache directory name: `/` → `__`, `:` → `_`.
    pub fn cache_name(&self) -> String {
        self.repo_key().replace('/', "__").replace(':', "_")
    }
}

fn invalid(message: impl Into<String>) -> OrgError {
    OrgError::Expansion(message.into())
}

/// Whether `host/repo` is allowed: an entry matches exactly, or as a prefix when it ends in `/`
/// (a trailing `*` is ignored). An empty list allows nothing.
pub fn allowed(allowlist: &[String], repo_key: &str) -> bool {
    let key = repo_key.to_ascii_lowercase();
    allowlist.iter().any(|entry| {
        let entry = entry.trim().trim_end_matches('*').to_ascii_lowercase();
        !entry.is_empty()
            && (key == entry.trim_end_matches('/')
                || (entry.ends_with('/') && key.starts_with(&entry)))
    })
}

/// A fetched external, as a directory relative to the org root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedExternal {
    pub dir: RelPath,
    pub sha: String,
}

/// Where `!external` content comes from.
pub trait ExternalSource {
    /// The host of an `!external` without `url`.
    fn default_host(&self) -> &str;
    /// Makes `reference` available under the org root and says where.
    fn fetch(&self, reference: &ExternalRef) -> Result<CachedExternal, OrgError>;
}

/// What one import did with an external (reported to the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalReport {
    pub repo: String,
    pub reference: String,
    pub sha: String,
    /// Whether the cache already held this revision (no fetch ran).
    pub cached: bool,
}

/// The production source: the allow-list, then the active `resolver:git` extension for the
/// revision and the content, cached by revision under the org root.
#[derive(Debug)]
pub struct ResolverCache<'a> {
    pub root: &'a RootDir,
    pub allowlist: &'a [String],
    pub default_host: &'a str,
    pub extensions: Arc<ExtensionHost>,
    pub runtime: tokio::runtime::Handle,
    pub reports: Mutex<Vec<ExternalReport>>,
}

/// Serialises fills of one cache entry within this process; the rename into place settles races
/// with other processes.
fn entry_lock(path: PathBuf) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: LazyLock<KeyedLocks<PathBuf>> = LazyLock::new(KeyedLocks::default);
    LOCKS.get(path)
}

impl ExternalSource for ResolverCache<'_> {
    fn default_host(&self) -> &str {
        self.default_host
    }

    fn fetch(&self, reference: &ExternalRef) -> Result<CachedExternal, OrgError> {
        let key = reference.repo_key();
        if !allowed(self.allowlist, &key) {
            return Err(OrgError::Forbidden(format!(
                "!external {key} is not in the allow-list (org.external_allowlist)"
            )));
        }
        let location = key.clone();
        let source = Source::new(SCHEME, &location, Some(&reference.reference));
        let sha = self
            .runtime
            .block_on(self.extensions.resolve_revision(SCHEME, source))
            .map_err(|err| fetch_error(&key, err))?;
        if sha.is_empty() || sha.len() > 128 || !sha.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(OrgError::Upstream(format!(
                "!external {key}: the resolver named an unusable revision"
            )));
        }
        let parent = RelPath::parse(&format!("{CACHE_DIR}/{}", reference.cache_name()))
            .map_err(|_| invalid(format!("!external {key}: no cache name")))?;
        let dir = parent.join(&sha).expect("a valid segment");
        let marker = dir.join(COMPLETE_MARKER).expect("a valid segment");
        let complete = |root: &RootDir| root.metadata(&marker).is_ok_and(|m| m.is_file());
        let lock = entry_lock(self.root.path().join(dir.as_str()));
        let _held = lock.blocking_lock();
        let cached = complete(self.root);
        if !cached {
            self.fill(reference, &parent, &dir, &sha)?;
        }
        self.reports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(ExternalReport {
                repo: key,
                reference: reference.reference.clone(),
                sha: sha.clone(),
                cached,
            });
        Ok(CachedExternal { dir, sha })
    }
}

impl ResolverCache<'_> {
    /// Fetches `sha` into a fresh temporary directory, marks it complete and renames it into
    /// place; an incomplete leftover at `dir` is removed first. On failure nothing is left.
    fn fill(
        &self,
        reference: &ExternalRef,
        parent: &RelPath,
        dir: &RelPath,
        sha: &str,
    ) -> Result<(), OrgError> {
        let key = reference.repo_key();
        let io = |err: SafeFsError| {
            tracing::error!(repo = %key, error = %err, "writing the external cache failed");
            OrgError::Cache(format!("the external cache for {key} cannot be written"))
        };
        self.root.create_dir_all(parent).map_err(io)?;
        match self.root.remove(dir) {
            Ok(()) => {
                tracing::info!(repo = %key, sha, "an incomplete cache entry is fetched again")
            }
            Err(SafeFsError::NotFound) => {}
            Err(err) => return Err(io(err)),
        }
        let tmp = parent
            .join(&format!("{sha}.tmp.{}", Uuid::new_v4().simple()))
            .expect("a valid segment");
        self.root.create_dir_all(&tmp).map_err(io)?;
        let result = self.fetch_into(reference, &tmp, sha).and_then(|()| {
            let stamp = chrono::Utc::now().to_rfc3339();
            self.root
                .write(
                    &tmp.join(COMPLETE_MARKER).expect("a valid segment"),
                    stamp.as_bytes(),
                )
                .map_err(io)?;
            match self.root.rename(&tmp, dir) {
                Ok(()) => Ok(()),
                // Another process renamed a complete copy into place first: use it.
                Err(_)
                    if self
                        .root
                        .metadata(&dir.join(COMPLETE_MARKER).expect("a valid segment"))
                        .is_ok_and(|m| m.is_file()) =>
                {
                    Ok(())
                }
                Err(err) => Err(io(err)),
            }
        });
        if let Err(err) = self.root.remove(&tmp)
            && !matches!(err, SafeFsError::NotFound)
        {
            tracing::warn!(repo = %key, error = %err, "removing a temporary cache directory failed");
        }
        result
    }

    fn fetch_into(
        &self,
        reference: &ExternalRef,
        tmp: &RelPath,
        sha: &str,
    ) -> Result<(), OrgError> {
        let key = reference.repo_key();
        // Fetch exactly the revision that was resolved, so a ref moving meanwhile cannot put
        // other content under this sha.
        let source = Source::new(SCHEME, &key, Some(sha));
        let dest = self.root.path().join(tmp.as_str());
        let fetched = self
            .runtime
            .block_on(self.extensions.fetch(SCHEME, source, &dest))
            .map_err(|err| fetch_error(&key, err))?;
        if !fetched.revision.eq_ignore_ascii_case(sha) {
            return Err(OrgError::Upstream(format!(
                "!external {key}: the resolver fetched {} instead of {sha}",
                fetched.revision
            )));
        }
        tracing::info!(repo = %key, sha, "external fetched into the cache");
        Ok(())
    }
}

/// A resolver failure as an import error: what the caller got wrong is a 400, what the upstream
/// did is a 502. Messages come from the resolver and the host's git side, which redact
/// credentials.
fn fetch_error(key: &str, err: FetchFailure) -> OrgError {
    match err {
        FetchFailure::NoResolver(scheme) => OrgError::Upstream(format!(
            "!external {key}: no resolver is active for {scheme}://"
        )),
        FetchFailure::Fetch(FetchError::NotFound(detail)) => {
            invalid(format!("!external {key}: not found upstream: {detail}"))
        }
        FetchFailure::Fetch(FetchError::InvalidSource(detail)) => {
            invalid(format!("!external {key}: {detail}"))
        }
        FetchFailure::Fetch(FetchError::Denied(detail)) => {
            OrgError::Forbidden(format!("!external {key}: refused: {detail}"))
        }
        FetchFailure::Fetch(FetchError::TooLarge(detail)) => {
            invalid(format!("!external {key}: too large: {detail}"))
        }
        FetchFailure::Fetch(FetchError::Timeout) => {
            OrgError::Upstream(format!("!external {key}: the upstream timed out"))
        }
        FetchFailure::Fetch(FetchError::Upstream(detail)) => {
            OrgError::Upstream(format!("!external {key}: upstream failed: {detail}"))
        }
        other => OrgError::Upstream(format!("!external {key}: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_validated() {
        let ok = ExternalRef::new(
            "https://git.example.com/",
            "acme/parts",
            "v1.2",
            "teams/eng.yaml",
        )
        .unwrap();
        assert_eq!(ok.repo_key(), "git.example.com/acme/parts");
        assert_eq!(ok.cache_name(), "git.example.com__acme__parts");
        for (repo, reference, path) in [
            ("acme", "main", "org.yaml"),
            ("acme/../x", "main", "org.yaml"),
            ("acme/parts", "main..x", "org.yaml"),
            ("acme/parts", "ma in", "org.yaml"),
            ("acme/parts", "$(rm)", "org.yaml"),
            ("acme/parts", "main", "../org.yaml"),
            ("acme/parts", "main", "/etc/passwd"),
            ("acme/parts", "main", "a/../../b"),
        ] {
            assert!(
                ExternalRef::new("github.com", repo, reference, path).is_err(),
                "{repo} {reference} {path} must be refused"
            );
        }
        assert!(ExternalRef::new("user@evil", "acme/parts", "main", "x.yaml").is_err());
        let port = ExternalRef::new("git.local:3000", "acme/parts", "main", "x.yaml").unwrap();
        assert_eq!(port.cache_name(), "git.local_3000__acme__parts");
    }

    #[test]
    fn the_allow_list_matches_exactly_or_by_prefix_and_is_closed_when_empty() {
        let list = vec![
            "github.com/acme/".to_owned(),
            "git.example.com/solo/repo".to_owned(),
            "git.other.com/team/*".to_owned(),
        ];
        assert!(allowed(&list, "github.com/acme/parts"));
        assert!(allowed(&list, "GitHub.com/Acme/parts"));
        assert!(!allowed(&list, "github.com/acmeevil/parts"));
        assert!(allowed(&list, "git.example.com/solo/repo"));
        assert!(!allowed(&list, "git.example.com/solo/repo2"));
        assert!(allowed(&list, "git.other.com/team/x"));
        assert!(!allowed(&[], "github.com/acme/parts"));
    }

    #[test]
    fn the_mapping_form_is_read_with_the_default_host() {
        let value: Value =
            serde_yaml_ng::from_str("{repo: acme/parts, ref: v1, path: eng.yaml}").unwrap();
        let parsed = ExternalRef::from_yaml(&value, "github.com").unwrap();
        assert_eq!(parsed.repo_key(), "github.com/acme/parts");
        let missing: Value = serde_yaml_ng::from_str("{repo: acme/parts, path: eng.yaml}").unwrap();
        assert!(ExternalRef::from_yaml(&missing, "github.com").is_err());
        let scalar: Value = serde_yaml_ng::from_str("acme/parts").unwrap();
        assert!(ExternalRef::from_yaml(&scalar, "github.com").is_err());
    }
}
