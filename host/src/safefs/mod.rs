//! Root-confined file work: the only module that opens a path that came from a template, a
//! request or a workspace's config directory. Every operation goes through a `cap_std::fs::Dir`,
//! so `..`, absolute paths and symlinks can never reach outside the root they were given.
//!
//! `template` collects template trees, `root` is [`RootDir`] (a workspace's files on the host,
//! and giving them to an agent's uid), `archive` reads the archives container runtimes return, and
//! `walk` is the strict, symlink-refusing walk for trees the host made itself.

mod archive;
mod root;
mod template;
#[cfg(test)]
mod tests;
pub mod walk;

use std::io;
use std::path::Path;

use sha2::{Digest as _, Sha256};

pub use archive::{TarEntry, read_tar, reroot};
pub use root::{EntryKind, Owner, RootDir};
pub use template::collect_template;

/// Names a listing never shows (tool caches and VCS metadata).
pub const SKIPPED_NAMES: &[&str] = &[".git", "__pycache__", "node_modules", ".DS_Store"];
/// How deep a template walk may go (symlinked directories count); beyond it there is a cycle.
const MAX_WALK_DEPTH: usize = 24;
/// Limits on one delivered tree.
pub const MAX_TREE_FILES: usize = 10_000;
pub const MAX_TREE_BYTES: u64 = 100 * 1024 * 1024;
/// Files whose line endings are normalised to LF on delivery (scripts break with CRLF).
const NORMALISED_EXTENSIONS: &[&str] = &["sh", "py", "md"];

/// Why a file operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum SafeFsError {
    #[error("invalid path")]
    InvalidPath,
    #[error("{0} escapes its root")]
    Escapes(String),
    #[error("not found")]
    NotFound,
    #[error("tree too large: {0}")]
    TooLarge(String),
    /// A device, FIFO or socket where a regular file or directory was expected.
    #[error("{0} is not a regular file or directory")]
    NotRegular(String),
    #[error(transparent)]
    Io(io::Error),
}

impl From<io::Error> for SafeFsError {
    fn from(err: io::Error) -> Self {
        if err.kind() == io::ErrorKind::NotFound {
            SafeFsError::NotFound
        } else {
            SafeFsError::Io(err)
        }
    }
}

/// A relative, normalised path: `/`-separated, no empty, `.` or `..` component, no leading `/`,
/// no control characters. Checked at the edge, so everything below can join it to a root.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelPath(String);

impl RelPath {
    pub fn parse(raw: &str) -> Result<Self, SafeFsError> {
        let trimmed = raw.trim_end_matches('/');
        if trimmed.is_empty()
            || trimmed.len() > 1024
            || trimmed.starts_with('/')
            || trimmed.contains('\\')
            || trimmed.chars().any(char::is_control)
            || trimmed
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == "..")
        {
            return Err(SafeFsError::InvalidPath);
        }
        Ok(RelPath(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn join(&self, child: &str) -> Result<Self, SafeFsError> {
        RelPath::parse(&format!("{}/{child}", self.0))
    }

    /// `raw` taken relative to the directory `base` (the root when `None`), with `.` and `..`
    /// resolved lexically. An absolute path, or one that climbs above the root, escapes it; an
    /// empty path is invalid. Symlinks are not resolved here: the `Dir` that opens the result
    /// refuses any that leaves the root.
    pub fn resolve(base: Option<&RelPath>, raw: &str) -> Result<Self, SafeFsError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.len() > 1024 || trimmed.chars().any(char::is_control) {
            return Err(SafeFsError::InvalidPath);
        }
        if trimmed.starts_with('/') || trimmed.contains('\\') {
            return Err(SafeFsError::Escapes(trimmed.to_owned()));
        }
        let mut parts: Vec<&str> = base.map_or_else(Vec::new, |b| b.0.split('/').collect());
        for part in trimmed.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    if parts.pop().is_none() {
                        return Err(SafeFsError::Escapes(trimmed.to_owned()));
                    }
                }
                other => parts.push(other),
            }
        }
        if parts.is_empty() {
            return Err(SafeFsError::InvalidPath);
        }
        RelPath::parse(&parts.join("/"))
    }

    /// The directory holding this path; `None` at the root.
    pub fn parent(&self) -> Option<RelPath> {
        self.0
            .rsplit_once('/')
            .map(|(parent, _)| RelPath(parent.to_owned()))
    }

    /// Whether `self` is `prefix` or lies below it.
    pub fn starts_with(&self, prefix: &RelPath) -> bool {
        self.0 == prefix.0
            || self
                .0
                .strip_prefix(&prefix.0)
                .is_some_and(|rest| rest.starts_with('/'))
    }

    fn extension(&self) -> Option<&str> {
        let name = self.0.rsplit('/').next()?;
        name.rsplit_once('.').map(|(_, ext)| ext)
    }
}

impl std::fmt::Display for RelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One file to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeFile {
    pub path: RelPath,
    pub data: Vec<u8>,
    pub mode: u32,
}

/// A set of files to deliver into a workspace's `/configs`, later entries winning.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileTree {
    files: Vec<TreeFile>,
}

impl FileTree {
    pub fn new() -> Self {
        FileTree::default()
    }

    /// Adds (or replaces) a file.
    pub fn insert(&mut self, path: RelPath, data: impl Into<Vec<u8>>, mode: u32) {
        self.files.retain(|f| f.path != path);
        self.files.push(TreeFile {
            path,
            data: data.into(),
            mode,
        });
    }

    /// The file at `path`, if the tree holds one.
    pub fn get(&self, path: &str) -> Option<&TreeFile> {
        self.files.iter().find(|f| f.path.as_str() == path)
    }

    /// Drops the file at `path` and everything below it.
    pub fn remove(&mut self, path: &str) {
        let below = format!("{path}/");
        self.files
            .retain(|f| f.path.as_str() != path && !f.path.as_str().starts_with(&below));
    }

    pub fn contains(&self, path: &str) -> bool {
        self.files.iter().any(|f| f.path.as_str() == path)
    }

    pub fn files(&self) -> &[TreeFile] {
        &self.files
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    pub fn paths(&self) -> Vec<String> {
        self.files.iter().map(|f| f.path.to_string()).collect()
    }

    /// A tar archive of the tree (directories first, so extraction needs nothing to exist).
    pub fn to_tar(&self) -> io::Result<Vec<u8>> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut dirs = std::collections::BTreeSet::new();
        for file in &self.files {
            let mut parent = Path::new(file.path.as_str()).parent();
            while let Some(dir) = parent.filter(|p| !p.as_os_str().is_empty()) {
                dirs.insert(dir.to_path_buf());
                parent = dir.parent();
            }
        }
        for dir in &dirs {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            builder.append_data(&mut header, dir, io::empty())?;
        }
        for file in &self.files {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(file.mode);
            header.set_size(file.data.len() as u64);
            builder.append_data(&mut header, file.path.as_str(), file.data.as_slice())?;
        }
        builder.into_inner()
    }
}

/// cap-std reports a path that would leave its root (through `..`, an absolute or an escaping
/// symlink) as `PermissionDenied` "a path led outside of the filesystem".
pub(super) fn escape_or(err: io::Error, path: &RelPath) -> SafeFsError {
    if err.kind() == io::ErrorKind::PermissionDenied && err.to_string().contains("outside") {
        SafeFsError::Escapes(path.to_string())
    } else {
        err.into()
    }
}

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedFile {
    pub path: String,
    pub size: u64,
    pub dir: bool,
}

/// `sha256:<hex>` of some bytes.
pub fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}
