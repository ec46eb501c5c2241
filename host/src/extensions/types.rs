//! Domain types of the extension slots. The rest of the host uses these; only `bindings.rs`
//! converts them to and from the generated WIT types. The restart-policy types are the ones
//! the guest SDK uses too, from `molecule-policy`.

pub use molecule_policy::{
    Decision, DriftApplied, PluginInstalled, Reload, Trigger, UpdateTier, WorkspaceInfo,
};

/// How a file differs between the live plugin tree and the staged one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Added,
    Removed,
    Modified,
}

/// One changed file, by its `/`-separated path relative to the plugin root.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileChange {
    pub path: String,
    pub kind: ChangeKind,
    pub old_digest: Option<String>,
    pub new_digest: Option<String>,
}

/// The three kinds of extension slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlotKind {
    Resolver,
    Classifier,
    RestartPolicy,
}

impl SlotKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SlotKind::Resolver => "resolver",
            SlotKind::Classifier => "classifier",
            SlotKind::RestartPolicy => "restart-policy",
        }
    }

    /// The interface a component of this kind must export (without the version).
    pub fn export_interface(self) -> &'static str {
        match self {
            SlotKind::Resolver => "molecule:plugin/resolve",
            SlotKind::Classifier => "molecule:plugin/classify",
            SlotKind::RestartPolicy => "molecule:plugin/restart",
        }
    }
}

/// Where a plugin or template comes from: `scheme://location#reference`. A bare name is a
/// `local` source.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Source {
    pub scheme: String,
    pub location: String,
    pub reference: Option<String>,
}

impl Source {
    pub fn new(scheme: &str, location: &str, reference: Option<&str>) -> Self {
        Source {
            scheme: scheme.to_owned(),
            location: location.to_owned(),
            reference: reference.map(str::to_owned),
        }
    }

    /// Splits `scheme://location#reference` (a bare name is `local://name`). Only the shape is
    /// checked here; what a location may contain is the resolver's business.
    pub fn parse(raw: &str) -> Option<Source> {
        let (scheme, rest) = raw.split_once("://").unwrap_or(("local", raw));
        let (location, reference) = match rest.split_once('#') {
            Some((location, reference)) => (location, Some(reference)),
            None => (rest, None),
        };
        let scheme_ok = !scheme.is_empty()
            && scheme.len() <= 32
            && scheme
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        (scheme_ok && !location.is_empty() && reference != Some(""))
            .then(|| Source::new(scheme, location, reference))
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.scheme, self.location)?;
        match &self.reference {
            Some(reference) => write!(f, "#{reference}"),
            None => Ok(()),
        }
    }
}

/// What a successful fetch produced: the plugin's name and the exact revision fetched (a commit
/// sha or a `sha256:` content digest).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Fetched {
    pub name: String,
    pub revision: String,
}

/// A ref a remote repository advertises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteRef {
    pub name: String,
    pub revision: String,
}

/// Failures of a fetch that a resolver (or the host's side of `remote`) reports as answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "message")]
pub enum FetchError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("invalid source: {0}")]
    InvalidSource(String),
    #[error("denied: {0}")]
    Denied(String),
    #[error("upstream failed: {0}")]
    Upstream(String),
    #[error("the upstream did not answer in time")]
    Timeout,
    #[error("too large: {0}")]
    TooLarge(String),
}

impl FetchError {
    /// A short label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            FetchError::NotFound(_) => "not_found",
            FetchError::InvalidSource(_) => "invalid_source",
            FetchError::Denied(_) => "denied",
            FetchError::Upstream(_) => "upstream",
            FetchError::Timeout => "timeout",
            FetchError::TooLarge(_) => "too_large",
        }
    }

    /// The message, if the variant carries one.
    pub fn message(&self) -> Option<&str> {
        match self {
            FetchError::NotFound(m)
            | FetchError::InvalidSource(m)
            | FetchError::Denied(m)
            | FetchError::Upstream(m)
            | FetchError::TooLarge(m) => Some(m),
            FetchError::Timeout => None,
        }
    }

    /// The same error with its message passed through `f` (truncation, redaction).
    pub fn map_message(self, f: impl FnOnce(String) -> String) -> Self {
        match self {
            FetchError::NotFound(m) => FetchError::NotFound(f(m)),
            FetchError::InvalidSource(m) => FetchError::InvalidSource(f(m)),
            FetchError::Denied(m) => FetchError::Denied(f(m)),
            FetchError::Upstream(m) => FetchError::Upstream(f(m)),
            FetchError::TooLarge(m) => FetchError::TooLarge(f(m)),
            FetchError::Timeout => FetchError::Timeout,
        }
    }
}

/// Limits on what a fetch may put into its destination: total bytes of regular files, their
/// count, and the nesting depth (a file at `a/b/c` has depth 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchQuotas {
    pub max_bytes: u64,
    pub max_files: u64,
    pub max_depth: usize,
}

impl Default for FetchQuotas {
    fn default() -> Self {
        FetchQuotas {
            max_bytes: 100 * 1024 * 1024,
            max_files: 10_000,
            max_depth: 32,
        }
    }
}
