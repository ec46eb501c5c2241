//! The plain Rust types an extension works with. They mirror `molecule:plugin/types@0.1.1`
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

impl FileChange {
    /// This change as a borrowed [`Change`].
    pub fn as_change(&self) -> Change<'_> {
        Change {
            path: &self.path,
            kind: self.kind,
            old_digest: self.old_digest.as_deref(),
            new_digest: self.new_digest.as_deref(),
        }
    }
}

/// One changed file, borrowed from the input of a classify call: looking at it copies nothing.
/// The fields mean what they mean in [`FileChange`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Change<'a> {
    pub path: &'a str,
    pub kind: ChangeKind,
    pub old_digest: Option<&'a str>,
    pub new_digest: Option<&'a str>,
}

impl Change<'_> {
    /// An owned copy.
    pub fn to_file_change(&self) -> FileChange {
        FileChange {
            path: self.path.to_owned(),
            kind: self.kind,
            old_digest: self.old_digest.map(str::to_owned),
            new_digest: self.new_digest.map(str::to_owned),
        }
    }
}

/// The changes of one classify call, in the order the host sent them. The host packs them into
/// one text and a list of spans (`molecule:plugin/types@0.1.1`, `packed-changes`); this view
/// reads them in place, so a classifier can look at thousands without a copy of each. Tests
/// build one from a slice of [`FileChange`]s with `Changes::from`.
#[derive(Debug, Clone, Copy)]
pub struct Changes<'a>(Repr<'a>);

#[derive(Debug, Clone, Copy)]
enum Repr<'a> {
    Owned(&'a [FileChange]),
    /// `packed-changes`: the text and four words per change (kind and flags, then where the
    /// path, the old digest and the new digest end).
    Packed {
        text: &'a str,
        words: &'a [u32],
    },
}

/// Words per change in `packed-changes`.
const WORDS: usize = 4;
const HAS_OLD: u32 = 1 << 8;
const HAS_NEW: u32 = 1 << 9;

impl<'a> From<&'a [FileChange]> for Changes<'a> {
    fn from(changes: &'a [FileChange]) -> Self {
        Changes(Repr::Owned(changes))
    }
}

impl<'a, const N: usize> From<&'a [FileChange; N]> for Changes<'a> {
    fn from(changes: &'a [FileChange; N]) -> Self {
        Changes(Repr::Owned(changes))
    }
}

impl<'a> Changes<'a> {
    /// The view of a `packed-changes`.
    pub(crate) fn packed(text: &'a str, words: &'a [u32]) -> Self {
        Changes(Repr::Packed { text, words })
    }

    pub fn len(&self) -> usize {
        match self.0 {
            Repr::Owned(changes) => changes.len(),
            Repr::Packed { words, .. } => words.len() / WORDS,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `index`-th change.
    ///
    /// # Panics
    ///
    /// If the host sent offsets outside its text, out of order or off a character boundary, or
    /// an unknown kind (which the host never does; the panic traps, and the host answers cold
    /// for the call).
    pub fn get(&self, index: usize) -> Option<Change<'a>> {
        match self.0 {
            Repr::Owned(changes) => changes.get(index).map(FileChange::as_change),
            Repr::Packed { text, words } => {
                let [flags, path_end, old_end, new_end] =
                    *words.get(index * WORDS..)?.first_chunk::<WORDS>()?;
                let start = match index {
                    0 => 0,
                    i => words[i * WORDS - 1],
                };
                let slice = |from: u32, to: u32| -> &'a str {
                    text.get(from as usize..to as usize)
                        .expect("the host sent a change outside the text of the call")
                };
                let kind = match flags & 0xff {
                    0 => ChangeKind::Added,
                    1 => ChangeKind::Removed,
                    2 => ChangeKind::Modified,
                    other => panic!("the host sent an unknown change kind {other}"),
                };
                Some(Change {
                    path: slice(start, path_end),
                    kind,
                    old_digest: (flags & HAS_OLD != 0).then(|| slice(path_end, old_end)),
                    new_digest: (flags & HAS_NEW != 0).then(|| slice(old_end, new_end)),
                })
            }
        }
    }

    /// The changes in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Change<'a>> + '_ {
        (0..self.len()).map(|i| self.get(i).expect("an index below len"))
    }

    /// Owned copies of every change.
    pub fn to_vec(&self) -> Vec<FileChange> {
        self.iter().map(|c| c.to_file_change()).collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_changes_read_their_part_of_the_text_and_agree_with_owned_ones() {
        let text = "skills/ä/SKILL.mdsha256:1sha256:2plugin.yamlsha256:2gone";
        let words = [
            2 | HAS_OLD | HAS_NEW,
            18,
            26,
            34,
            HAS_NEW,
            45,
            45,
            53,
            1,
            57,
            57,
            57,
        ];
        let owned = [
            FileChange::modified("skills/ä/SKILL.md", "sha256:1", "sha256:2"),
            FileChange::added("plugin.yaml", "sha256:2"),
            FileChange {
                path: "gone".into(),
                kind: ChangeKind::Removed,
                old_digest: None,
                new_digest: None,
            },
        ];
        let changes = Changes::packed(text, &words);
        assert_eq!(changes.len(), 3);
        assert_eq!(changes.to_vec(), owned);
        assert!(changes.iter().eq(Changes::from(&owned).iter()));
        assert_eq!(changes.get(3), None);
        assert!(Changes::packed("", &[]).is_empty());
    }

    #[test]
    #[should_panic(expected = "outside the text")]
    fn an_offset_off_a_character_boundary_panics() {
        Changes::packed("ä", &[2, 1, 1, 1]).get(0);
    }
}
