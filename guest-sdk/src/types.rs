//! The plain Rust types an extension works with. They mirror `molecule:plugin/types@0.1.0`
//! one to one, but belong to this crate, so no generated binding ever appears in an author's code.
//! The restart-policy types come from `molecule-policy`, which the host uses too.

use std::fmt;
use std::io;

pub use molecule_policy::{
    Decision, DriftApplied, PluginInstalled, Reload, Trigger, UpdateTier, WorkspaceInfo,
};

/// Where a plugin or template comes from, parsed by the host from `scheme://location#reference`.
///
/// `github://acme/tools#v1.2` arrives as `{scheme: "github", location: "acme/tools",
/// reference: Some("v1.2")}`; a bare name `tools` as `{scheme: "local", location: "tools",
/// reference: None}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Source {
    pub scheme: String,
    pub location: String,
    pub reference: Option<String>,
}

impl Source {
    pub fn new(
        scheme: impl Into<String>,
        location: impl Into<String>,
        reference: Option<&str>,
    ) -> Self {
        Source {
            scheme: scheme.into(),
            location: location.into(),
            reference: reference.map(str::to_owned),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.location)?;
        match &self.reference {
            Some(reference) => write!(f, "#{reference}"),
            None => Ok(()),
        }
    }
}

/// What a successful fetch produced.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fetched {
    /// The plugin's name as the fetched tree declares it (`plugin.yaml`), or the last path
    /// segment of the location when it declares none.
    pub name: String,
    /// The exact revision fetched: a full commit sha, or a `sha256:` content digest.
    pub revision: String,
}

/// A failure a resolver reports instead of trapping; the host maps each kind to an HTTP answer
/// (not found → 404, invalid source → 400, denied → 422, upstream → 502, timeout → 504,
/// too large → 413).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FetchError {
    /// The source, reference or path does not exist upstream.
    NotFound(String),
    /// The source is malformed for this scheme.
    InvalidSource(String),
    /// A pinned reference is required, or the host refused the request.
    Denied(String),
    /// The upstream failed or answered something unusable.
    Upstream(String),
    /// The upstream did not answer in time.
    Timeout,
    /// The fetched tree exceeds the quotas (bytes, files, depth).
    TooLarge(String),
}

impl FetchError {
    /// Maps a filesystem error met while doing `what` (say, "reading /registry/tools") to the
    /// closest kind, keeping `what` in the message so the operator knows which step failed.
    pub fn io(what: impl fmt::Display, err: &io::Error) -> Self {
        let message = format!("{what}: {err}");
        match err.kind() {
            io::ErrorKind::NotFound => FetchError::NotFound(message),
            io::ErrorKind::PermissionDenied => FetchError::Denied(message),
            io::ErrorKind::TimedOut => FetchError::Timeout,
            io::ErrorKind::StorageFull
            | io::ErrorKind::QuotaExceeded
            | io::ErrorKind::FileTooLarge => FetchError::TooLarge(message),
            _ => FetchError::Upstream(message),
        }
    }
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::NotFound(m) => write!(f, "not found: {m}"),
            FetchError::InvalidSource(m) => write!(f, "invalid source: {m}"),
            FetchError::Denied(m) => write!(f, "denied: {m}"),
            FetchError::Upstream(m) => write!(f, "upstream error: {m}"),
            FetchError::Timeout => f.write_str("the upstream did not answer in time"),
            FetchError::TooLarge(m) => write!(f, "too large: {m}"),
        }
    }
}

impl std::error::Error for FetchError {}

/// How a file differs between the live tree and the staged one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    Added,
    Removed,
    Modified,
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChangeKind::Added => "added",
            ChangeKind::Removed => "removed",
            ChangeKind::Modified => "modified",
        })
    }
}

/// One changed file, by its `/`-separated path relative to the plugin root.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileChange {
    pub path: String,
    pub kind: ChangeKind,
    /// `sha256:<hex>` of the live file; `None` when added.
    pub old_digest: Option<String>,
    /// `sha256:<hex>` of the staged file; `None` when removed.
    pub new_digest: Option<String>,
}

impl FileChange {
    /// A file that exists only in the staged tree.
    pub fn added(path: impl Into<String>, new_digest: impl Into<String>) -> Self {
        FileChange {
            path: path.into(),
            kind: ChangeKind::Added,
            old_digest: None,
            new_digest: Some(new_digest.into()),
        }
    }

    /// A file that exists only in the live tree.
    pub fn removed(path: impl Into<String>, old_digest: impl Into<String>) -> Self {
        FileChange {
            path: path.into(),
            kind: ChangeKind::Removed,
            old_digest: Some(old_digest.into()),
            new_digest: None,
        }
    }

    /// A file present in both trees with different content.
    pub fn modified(
        path: impl Into<String>,
        old_digest: impl Into<String>,
        new_digest: impl Into<String>,
    ) -> Self {
        FileChange {
            path: path.into(),
            kind: ChangeKind::Modified,
            old_digest: Some(old_digest.into()),
            new_digest: Some(new_digest.into()),
        }
    }
}

/// A ref a remote repository advertises.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RemoteRef {
    /// e.g. `refs/tags/v1.2`, `refs/heads/main` or `HEAD`.
    pub name: String,
    /// The object the ref points at (a commit, or a tag object for an annotated tag whose
    /// peeled `^{}` entry names the commit).
    pub revision: String,
}

impl RemoteRef {
    pub fn new(name: impl Into<String>, revision: impl Into<String>) -> Self {
        RemoteRef {
            name: name.into(),
            revision: revision.into(),
        }
    }
}
