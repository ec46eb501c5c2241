//! Root-confined file work: the only module that opens a path that came from a template, a
//! request or a workspace's config directory. Every operation goes through a `cap_std::fs::Dir`,
//! so `..`, absolute paths and symlinks can never reach outside the root they were given.

use std::collections::BTreeMap;
use std::io::{self, Read as _};
use std::os::fd::{AsFd as _, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use cap_std::fs::{Dir, PermissionsExt as _};
use sha2::{Digest as _, Sha256};

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

/// Collects a template directory into a [`FileTree`]. A symlink is followed only when its target
/// stays inside `root` (a symlinked directory is delivered as a directory); anything escaping
/// the root, an absolute link or a cycle is refused. `.sh`, `.py` and `.md` files get LF line
/// endings.
pub fn collect_template(root: &Path) -> Result<FileTree, SafeFsError> {
    let dir = Dir::open_ambient_dir(root, cap_std::ambient_authority())?;
    let mut tree = FileTree::new();
    let mut total = 0u64;
    walk_template(&dir, None, 0, &mut tree, &mut total)?;
    Ok(tree)
}

fn walk_template(
    root: &Dir,
    at: Option<&RelPath>,
    depth: usize,
    tree: &mut FileTree,
    total: &mut u64,
) -> Result<(), SafeFsError> {
    if depth > MAX_WALK_DEPTH {
        return Err(SafeFsError::TooLarge(format!(
            "deeper than {MAX_WALK_DEPTH} levels (a symlink cycle?) at {}",
            at.map_or("", RelPath::as_str)
        )));
    }
    let entries = match at {
        None => root.entries()?,
        Some(path) => root.read_dir(path.as_str())?,
    };
    let mut names: Vec<String> = Vec::new();
    for entry in entries {
        let entry = entry?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    for name in names {
        let path = match at {
            None => RelPath::parse(&name)?,
            Some(parent) => parent.join(&name)?,
        };
        let own = root.symlink_metadata(path.as_str())?;
        // `metadata` follows a symlink inside the root; cap-std refuses any that escapes it.
        let target = if own.file_type().is_symlink() {
            root.metadata(path.as_str())
                .map_err(|_| SafeFsError::Escapes(path.to_string()))?
        } else {
            own
        };
        if target.is_dir() {
            walk_template(root, Some(&path), depth + 1, tree, total)?;
        } else if target.is_file() {
            let mut data = root.read(path.as_str())?;
            *total += data.len() as u64;
            if tree.len() >= MAX_TREE_FILES || *total > MAX_TREE_BYTES {
                return Err(SafeFsError::TooLarge(format!(
                    "more than {MAX_TREE_FILES} files or {MAX_TREE_BYTES} bytes"
                )));
            }
            if path
                .extension()
                .is_some_and(|ext| NORMALISED_EXTENSIONS.contains(&ext))
            {
                data = normalise_line_endings(data);
            }
            let mode = if target.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            tree.insert(path, data, mode);
        } else {
            return Err(SafeFsError::NotRegular(path.to_string()));
        }
    }
    Ok(())
}

fn normalise_line_endings(data: Vec<u8>) -> Vec<u8> {
    if !data.contains(&b'\r') {
        return data;
    }
    let mut out = Vec::with_capacity(data.len());
    let mut iter = data.iter().peekable();
    while let Some(&byte) = iter.next() {
        if byte == b'\r' && iter.peek() == Some(&&b'\n') {
            continue;
        }
        out.push(byte);
    }
    out
}

/// cap-std reports a path that would leave its root (through `..`, an absolute or an escaping
/// symlink) as `PermissionDenied` "a path led outside of the filesystem".
fn escape_or(err: io::Error, path: &RelPath) -> SafeFsError {
    if err.kind() == io::ErrorKind::PermissionDenied && err.to_string().contains("outside") {
        SafeFsError::Escapes(path.to_string())
    } else {
        err.into()
    }
}

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ListedFile {
    pub path: String,
    pub size: u64,
    pub dir: bool,
}

/// Who the host makes the owner of what it creates under a [`RootDir`]: the process runtime's
/// agents run under uids of their own and must be able to read (and replace) their files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// A directory on the host that holds a workspace's files (the process runtime's `/configs`).
#[derive(Debug)]
pub struct RootDir {
    dir: Dir,
    path: PathBuf,
    /// Set: everything this handle creates is given to this owner.
    owner: Option<Owner>,
}

impl RootDir {
    /// Opens `path`, creating it first when missing.
    pub fn open_or_create(path: &Path) -> Result<Self, SafeFsError> {
        std::fs::create_dir_all(path)?;
        Self::open(path)
    }

    pub fn open(path: &Path) -> Result<Self, SafeFsError> {
        Ok(RootDir {
            dir: Dir::open_ambient_dir(path, cap_std::ambient_authority())?,
            path: path.to_path_buf(),
            owner: None,
        })
    }

    /// The same root, giving what it creates from now on to `owner` (`None`: the host keeps
    /// it).
    pub fn owned_by(mut self, owner: Option<Owner>) -> Self {
        self.owner = owner;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The root directory itself opened for reading (cap-std holds an `O_PATH` descriptor, on
    /// which `fchmod` and `fchown` fail).
    fn reopened(&self) -> io::Result<OwnedFd> {
        use nix::fcntl::{OFlag, openat};
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        Ok(openat(
            self.dir.as_fd(),
            ".",
            flags,
            nix::sys::stat::Mode::empty(),
        )?)
    }

    /// Sets the mode of the root directory itself.
    pub fn set_mode(&self, mode: u32) -> Result<(), SafeFsError> {
        let mode = nix::sys::stat::Mode::from_bits_truncate(mode);
        nix::sys::stat::fchmod(self.reopened()?, mode).map_err(io::Error::from)?;
        Ok(())
    }

    /// Gives the root and everything below it to `owner`, never following a symlink: every
    /// entry is opened relative to its parent's descriptor with `O_NOFOLLOW` and changed through
    /// its own descriptor, so a link planted anywhere in the tree (to `/etc/shadow`, say) is
    /// left as it is and nothing outside the root changes owner. Symlinks, devices, FIFOs and
    /// sockets keep their owner, and so does a regular file with more than one link (a hard
    /// link may name a file outside the root). Directories deeper than the walk limit keep
    /// theirs too.
    pub fn give_to(&self, owner: Owner) -> Result<(), SafeFsError> {
        fchown_fd(self.reopened()?.as_fd(), owner)?;
        give_tree(self.dir.as_fd(), owner, 0)?;
        Ok(())
    }

    /// Gives each directory on `path` (relative to the root) and its last component to this
    /// root's owner, never following a symlink (see [`RootDir::give_to`]); a symlink on the
    /// way ends the walk.
    fn give_path(&self, path: &Path) -> io::Result<()> {
        let Some(owner) = self.owner else {
            return Ok(());
        };
        let mut parent = self.dir.as_fd().try_clone_to_owned()?;
        for component in path.components() {
            match give(parent.as_fd(), component.as_os_str(), owner)? {
                Some(Given::Dir(fd)) => parent = fd,
                Some(Given::File) | None => break,
            }
        }
        Ok(())
    }

    /// Writes every file of `tree` (parents created; each file written to a temporary name and
    /// renamed, so a reader never sees half a file). With an owner, new directories and every
    /// written file are given to it.
    pub fn write_tree(&self, tree: &FileTree) -> Result<(), SafeFsError> {
        let mut given = std::collections::BTreeSet::new();
        for file in tree.files() {
            let path = Path::new(file.path.as_str());
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                self.dir.create_dir_all(parent)?;
                if given.insert(parent.to_path_buf()) {
                    self.give_path(parent)?;
                }
            }
            if self
                .dir
                .symlink_metadata(path)
                .is_ok_and(|m| m.file_type().is_symlink())
            {
                self.dir.remove_file(path)?;
            }
            let tmp = format!("{}.molecule-tmp", file.path);
            // A leftover of an interrupted write (or anything planted under that name) goes.
            let _ = self.dir.remove_file(&tmp);
            let mut options = cap_std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            let mut handle = self.dir.open_with(&tmp, &options)?;
            io::Write::write_all(&mut handle, &file.data)?;
            handle.set_permissions(cap_std::fs::Permissions::from_mode(file.mode))?;
            if let Some(owner) = self.owner {
                fchown_fd(handle.as_fd(), owner)?;
            }
            drop(handle);
            self.dir.rename(&tmp, &self.dir, path)?;
        }
        Ok(())
    }

    /// Removes a file or a whole directory.
    pub fn remove(&self, path: &RelPath) -> Result<(), SafeFsError> {
        let meta = self.dir.symlink_metadata(path.as_str())?;
        if meta.is_dir() {
            self.dir.remove_dir_all(path.as_str())?;
        } else {
            self.dir.remove_file(path.as_str())?;
        }
        Ok(())
    }

    /// A subdirectory as a root of its own. A symlink on the way is followed only while it stays
    /// inside this root.
    pub fn open_dir(&self, path: &RelPath) -> Result<RootDir, SafeFsError> {
        let meta = self.metadata(path)?;
        if !meta.is_dir() {
            return Err(SafeFsError::NotFound);
        }
        Ok(RootDir {
            dir: self
                .dir
                .open_dir(path.as_str())
                .map_err(|e| escape_or(e, path))?,
            path: self.path.join(path.as_str()),
            owner: self.owner,
        })
    }

    /// What `path` is once symlinks inside the root are followed; a link that leaves the root
    /// is [`SafeFsError::Escapes`].
    pub fn metadata(&self, path: &RelPath) -> Result<cap_std::fs::Metadata, SafeFsError> {
        self.dir
            .metadata(path.as_str())
            .map_err(|e| escape_or(e, path))
    }

    /// Whether `path` is a directory (after following links inside the root).
    pub fn is_dir(&self, path: &RelPath) -> bool {
        self.metadata(path).is_ok_and(|m| m.is_dir())
    }

    /// A regular file's content, at most `limit` bytes. A device, FIFO or socket is refused
    /// without being opened for reading (a FIFO would block), a symlink leaving the root is
    /// [`SafeFsError::Escapes`], and a longer file is [`SafeFsError::TooLarge`].
    pub fn read_regular(&self, path: &RelPath, limit: u64) -> Result<Vec<u8>, SafeFsError> {
        let meta = self.metadata(path)?;
        if meta.is_dir() {
            return Err(SafeFsError::NotFound);
        }
        if !meta.is_file() {
            return Err(SafeFsError::NotRegular(path.to_string()));
        }
        // Non-blocking, so a file swapped for a FIFO after the check cannot hang the open.
        let mut options = cap_std::fs::OpenOptions::new();
        options.read(true);
        cap_std::fs::OpenOptionsExt::custom_flags(&mut options, nix::libc::O_NONBLOCK);
        let file = self
            .dir
            .open_with(path.as_str(), &options)
            .map_err(|e| escape_or(e, path))?;
        if !file.metadata()?.is_file() {
            return Err(SafeFsError::NotRegular(path.to_string()));
        }
        let mut data = Vec::new();
        file.take(limit + 1).read_to_end(&mut data)?;
        if data.len() as u64 > limit {
            return Err(SafeFsError::TooLarge(format!(
                "{path} is larger than {limit} bytes"
            )));
        }
        Ok(data)
    }

    /// The tree under `at`, collected like [`collect_template`] but confined to this whole root:
    /// a symlink from `at` to a sibling directory inside the root is followed. Paths in the
    /// result are relative to `at`.
    pub fn collect(&self, at: &RelPath) -> Result<FileTree, SafeFsError> {
        let mut found = FileTree::new();
        let mut total = 0u64;
        walk_template(&self.dir, Some(at), 0, &mut found, &mut total)?;
        let prefix = format!("{at}/");
        let mut tree = FileTree::new();
        for file in found.files {
            let rel = file
                .path
                .as_str()
                .strip_prefix(&prefix)
                .ok_or(SafeFsError::InvalidPath)?;
            tree.insert(RelPath::parse(rel)?, file.data, file.mode);
        }
        Ok(tree)
    }

    /// Creates `path` and its parents; a symlink on the way must stay inside the root.
    pub fn create_dir_all(&self, path: &RelPath) -> Result<(), SafeFsError> {
        self.dir
            .create_dir_all(path.as_str())
            .map_err(|e| escape_or(e, path))?;
        self.give_path(Path::new(path.as_str()))?;
        Ok(())
    }

    /// Writes one file (not atomically; callers rename a finished directory into place).
    pub fn write(&self, path: &RelPath, data: &[u8]) -> Result<(), SafeFsError> {
        self.dir
            .write(path.as_str(), data)
            .map_err(|e| escape_or(e, path))?;
        self.give_path(Path::new(path.as_str()))?;
        Ok(())
    }

    /// Renames `from` to `to`, both inside this root. Fails when `to` is a non-empty directory.
    pub fn rename(&self, from: &RelPath, to: &RelPath) -> Result<(), SafeFsError> {
        self.dir
            .rename(from.as_str(), &self.dir, to.as_str())
            .map_err(|e| escape_or(e, to))
    }

    /// A file's content; `NotFound` for a missing file or a directory.
    pub fn read(&self, path: &RelPath) -> Result<Vec<u8>, SafeFsError> {
        let meta = self.dir.metadata(path.as_str())?;
        if !meta.is_file() {
            return Err(SafeFsError::NotFound);
        }
        let mut data = Vec::new();
        self.dir
            .open(path.as_str())?
            .take(MAX_TREE_BYTES)
            .read_to_end(&mut data)?;
        Ok(data)
    }

    /// Entries under `at` (the root when `None`) down to `depth` levels, sorted by path.
    pub fn list(&self, at: Option<&RelPath>, depth: usize) -> Result<Vec<ListedFile>, SafeFsError> {
        let mut out = Vec::new();
        self.list_into(at, depth, &mut out)?;
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    fn list_into(
        &self,
        at: Option<&RelPath>,
        depth: usize,
        out: &mut Vec<ListedFile>,
    ) -> Result<(), SafeFsError> {
        if depth == 0 {
            return Ok(());
        }
        let entries = match at {
            None => self.dir.entries()?,
            Some(path) => self.dir.read_dir(path.as_str())?,
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if SKIPPED_NAMES.contains(&name.as_str()) || name.ends_with(".molecule-tmp") {
                continue;
            }
            let path = match at {
                None => RelPath::parse(&name)?,
                Some(parent) => parent.join(&name)?,
            };
            let meta = self.dir.symlink_metadata(path.as_str())?;
            let dir = meta.is_dir();
            out.push(ListedFile {
                path: path.to_string(),
                size: if dir { 0 } else { meta.len() },
                dir,
            });
            if dir {
                self.list_into(Some(&path), depth - 1, out)?;
            }
        }
        Ok(())
    }

    /// `sha256:<hex>` of every regular file under `at`, keyed by its path relative to `at`.
    pub fn digests(&self, at: Option<&RelPath>) -> Result<BTreeMap<String, String>, SafeFsError> {
        let mut out = BTreeMap::new();
        for entry in self.list(at, MAX_WALK_DEPTH)? {
            if entry.dir {
                continue;
            }
            let path = RelPath::parse(&entry.path)?;
            let data = self.read(&path)?;
            let relative = match at {
                Some(prefix) => entry
                    .path
                    .strip_prefix(&format!("{prefix}/"))
                    .unwrap_or(&entry.path)
                    .to_owned(),
                None => entry.path,
            };
            out.insert(relative, digest(&data));
        }
        Ok(out)
    }
}

impl std::os::fd::AsFd for RootDir {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.dir.as_fd()
    }
}

/// What [`give`] changed.
enum Given {
    /// A directory, opened (`O_PATH`) so the walk can continue below it.
    Dir(OwnedFd),
    File,
}

fn fchown_fd(fd: BorrowedFd<'_>, owner: Owner) -> io::Result<()> {
    std::os::unix::fs::fchown(fd, Some(owner.uid), Some(owner.gid))
}

/// Gives the entry `name` of `parent` to `owner` without following a symlink: opened with
/// `O_PATH | O_NOFOLLOW`, checked and changed through that descriptor, so nothing can be swapped
/// in between. `None`: left alone (gone, a symlink, not a regular file or directory, or a
/// regular file with several links).
fn give(parent: BorrowedFd<'_>, name: &std::ffi::OsStr, owner: Owner) -> io::Result<Option<Given>> {
    use nix::fcntl::{OFlag, openat};
    use nix::sys::stat::{Mode, SFlag, fstat};
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = match openat(parent, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(None),
        Err(err) => return Err(err.into()),
    };
    let stat = fstat(&fd)?;
    let kind = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT;
    let is_dir = kind == SFlag::S_IFDIR;
    let single_file = kind == SFlag::S_IFREG && stat.st_nlink == 1;
    if !(is_dir || single_file) {
        return Ok(None);
    }
    nix::unistd::fchownat(
        &fd,
        "",
        Some(nix::unistd::Uid::from_raw(owner.uid)),
        Some(nix::unistd::Gid::from_raw(owner.gid)),
        nix::fcntl::AtFlags::AT_EMPTY_PATH,
    )?;
    Ok(Some(if is_dir { Given::Dir(fd) } else { Given::File }))
}

/// [`give`] for every entry below the directory `dir`, depth first, down to the walk limit.
fn give_tree(dir: BorrowedFd<'_>, owner: Owner, depth: usize) -> io::Result<()> {
    use nix::fcntl::{OFlag, openat};
    if depth >= MAX_WALK_DEPTH {
        return Ok(());
    }
    // `dir` may be an `O_PATH` descriptor; listing needs one opened for reading.
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let listing = openat(dir, ".", flags, nix::sys::stat::Mode::empty())?;
    let listing = Dir::from_std_file(std::fs::File::from(listing));
    for entry in listing.entries()? {
        let name = entry?.file_name();
        if let Some(Given::Dir(below)) = give(dir, &name, owner)? {
            give_tree(below.as_fd(), owner, depth + 1)?;
        }
    }
    Ok(())
}

/// `sha256:<hex>` of some bytes.
pub fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A path from an archive with the file's content, or `None` for a directory.
pub type TarEntry = (RelPath, Option<Vec<u8>>);

/// The regular files and directories of a tar archive (as Docker's archive API returns them),
/// refusing absolute and `..` paths.
pub fn read_tar(archive: &[u8]) -> Result<Vec<TarEntry>, SafeFsError> {
    let mut out = Vec::new();
    let mut reader = tar::Archive::new(archive);
    for entry in reader.entries()? {
        let mut entry = entry?;
        let raw = entry.path()?.to_string_lossy().into_owned();
        let Ok(path) = RelPath::parse(raw.trim_start_matches("./")) else {
            continue;
        };
        match entry.header().entry_type() {
            tar::EntryType::Directory => out.push((path, None)),
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut data = Vec::new();
                (&mut entry).take(MAX_TREE_BYTES).read_to_end(&mut data)?;
                out.push((path, Some(data)));
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Re-roots the entries of an archive Docker made of `<root>/<path>`: its entries are named after
/// the last component of what was asked for; the result is relative to `root`.
pub fn reroot(entries: Vec<TarEntry>, path: Option<&RelPath>) -> Vec<TarEntry> {
    entries
        .into_iter()
        .filter_map(|(entry, data)| {
            let rest = entry.as_str().split_once('/').map(|(_, rest)| rest);
            let full = match (path, rest) {
                (None, Some(rest)) => rest.to_owned(),
                (None, None) => return None,
                (Some(path), Some(rest)) => format!("{path}/{rest}"),
                (Some(path), None) => path.to_string(),
            };
            RelPath::parse(&full).ok().map(|p| (p, data))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn relative_paths_are_checked_at_the_edge() {
        for ok in ["a", "a/b.md", "skills/x/SKILL.md", "dir/"] {
            assert!(RelPath::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../b",
            "a//b",
            "./a",
            "a/./b",
            "a\\b",
            "a\0b",
            "/",
        ] {
            assert!(RelPath::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn templates_follow_inner_symlinks_and_refuse_escapes() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("tpl");
        std::fs::create_dir_all(root.join("shared/skills")).unwrap();
        std::fs::write(root.join("shared/skills/SKILL.md"), "a\r\nb\r\n").unwrap();
        std::fs::write(root.join("run.sh"), "echo hi\r\n").unwrap();
        std::fs::write(root.join("data.bin"), b"x\r\ny").unwrap();
        std::os::unix::fs::symlink("shared/skills", root.join("skills")).unwrap();
        let tree = collect_template(&root).unwrap();
        let get = |p: &str| {
            tree.files()
                .iter()
                .find(|f| f.path.as_str() == p)
                .unwrap_or_else(|| panic!("{p} missing from {:?}", tree.paths()))
                .data
                .clone()
        };
        assert_eq!(get("skills/SKILL.md"), b"a\nb\n");
        assert_eq!(get("shared/skills/SKILL.md"), b"a\nb\n");
        assert_eq!(get("run.sh"), b"echo hi\n");
        assert_eq!(get("data.bin"), b"x\r\ny", "binary files keep their bytes");

        std::fs::write(tmp.path().join("secret"), "s").unwrap();
        std::os::unix::fs::symlink("../secret", root.join("leak")).unwrap();
        assert!(matches!(
            collect_template(&root),
            Err(SafeFsError::Escapes(p)) if p == "leak"
        ));
        std::fs::remove_file(root.join("leak")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("abs")).unwrap();
        assert!(matches!(
            collect_template(&root),
            Err(SafeFsError::Escapes(_))
        ));
        std::fs::remove_file(root.join("abs")).unwrap();
        std::os::unix::fs::symlink(".", root.join("shared/loop")).unwrap();
        assert!(matches!(
            collect_template(&root),
            Err(SafeFsError::TooLarge(_))
        ));
    }

    fn owner_of(path: &Path) -> (u32, u32) {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::symlink_metadata(path).unwrap();
        (meta.uid(), meta.gid())
    }

    /// Changing owners needs root; the tests run as root (and so does a host that gives
    /// agents uids of their own).
    fn as_root() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test changes file owners and must run as root"
        );
    }

    #[test]
    fn giving_a_root_away_never_follows_a_link_out_of_it() {
        as_root();
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("configs");
        let outside = tmp.path().join("host-secret");
        std::fs::create_dir_all(root.join("skills/a")).unwrap();
        std::fs::write(root.join("skills/a/SKILL.md"), "x").unwrap();
        std::fs::write(&outside, "secret").unwrap();
        std::fs::create_dir(tmp.path().join("host-dir")).unwrap();
        // What an agent could plant: links to a host file and a host directory, and a hard
        // link to a host file.
        std::os::unix::fs::symlink(&outside, root.join("shadow")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("host-dir"), root.join("skills/b")).unwrap();
        std::fs::hard_link(&outside, root.join("hard")).unwrap();
        let agent = Owner {
            uid: 2_000_000_777,
            gid: 2_000_000_777,
        };

        RootDir::open(&root).unwrap().give_to(agent).unwrap();

        let mine = (agent.uid, agent.gid);
        for own in ["", "skills", "skills/a", "skills/a/SKILL.md"] {
            assert_eq!(owner_of(&root.join(own)), mine, "{own}");
        }
        for host in [
            outside.as_path(),
            &tmp.path().join("host-dir"),
            &root.join("shadow"),
            &root.join("skills/b"),
        ] {
            assert_eq!(owner_of(host), (0, 0), "{}", host.display());
        }
    }

    #[test]
    fn an_owned_root_gives_what_it_writes_to_its_owner() {
        as_root();
        let tmp = tempfile::tempdir().unwrap();
        let agent = Owner {
            uid: 2_000_000_778,
            gid: 2_000_000_778,
        };
        let root = RootDir::open_or_create(&tmp.path().join("configs"))
            .unwrap()
            .owned_by(Some(agent));
        let mut tree = FileTree::new();
        tree.insert(RelPath::parse("plugins/p/.complete").unwrap(), "", 0o644);
        tree.insert(RelPath::parse(".auth_token").unwrap(), "t", 0o600);
        root.write_tree(&tree).unwrap();
        root.create_dir_all(&RelPath::parse("plugins/.staging/q").unwrap())
            .unwrap();
        let mine = (agent.uid, agent.gid);
        for path in [
            "plugins",
            "plugins/p",
            "plugins/p/.complete",
            ".auth_token",
            "plugins/.staging",
            "plugins/.staging/q",
        ] {
            assert_eq!(owner_of(&root.path().join(path)), mine, "{path}");
        }
        let mode = std::fs::metadata(root.path().join(".auth_token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // The root itself stays as it was until it is given away.
        assert_eq!(owner_of(root.path()), (0, 0));
    }

    #[test]
    fn a_tree_round_trips_through_tar_and_a_root_dir() {
        let mut tree = FileTree::new();
        tree.insert(RelPath::parse("config.yaml").unwrap(), "name: a\n", 0o644);
        tree.insert(RelPath::parse("skills/x/SKILL.md").unwrap(), "s", 0o644);
        tree.insert(RelPath::parse(".auth_token").unwrap(), "t", 0o600);
        let tar = tree.to_tar().unwrap();
        // Docker prefixes entries with the directory name; emulate that.
        let mut prefixed = tar::Builder::new(Vec::new());
        let mut reader = tar::Archive::new(tar.as_slice());
        for entry in reader.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = format!("configs/{}", entry.path().unwrap().display());
            let mut header = entry.header().clone();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            prefixed
                .append_data(&mut header, path, data.as_slice())
                .unwrap();
        }
        let entries = reroot(read_tar(&prefixed.into_inner().unwrap()).unwrap(), None);
        assert!(entries.iter().any(
            |(p, d)| p.as_str() == "skills/x/SKILL.md" && d.as_deref() == Some(b"s".as_slice())
        ));

        let tmp = tempfile::tempdir().unwrap();
        let root = RootDir::open_or_create(&tmp.path().join("configs")).unwrap();
        root.write_tree(&tree).unwrap();
        let mode = std::fs::metadata(tmp.path().join("configs/.auth_token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let listed = root.list(None, 5).unwrap();
        assert_eq!(
            listed.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
            [
                ".auth_token",
                "config.yaml",
                "skills",
                "skills/x",
                "skills/x/SKILL.md"
            ]
        );
        assert_eq!(root.list(None, 1).unwrap().len(), 3);
        let digests = root
            .digests(Some(&RelPath::parse("skills").unwrap()))
            .unwrap();
        assert_eq!(digests["x/SKILL.md"], digest(b"s"));
        root.remove(&RelPath::parse("skills").unwrap()).unwrap();
        assert!(matches!(
            root.read(&RelPath::parse("skills/x/SKILL.md").unwrap()),
            Err(SafeFsError::NotFound)
        ));
        // A symlink planted in the root cannot redirect a read or a write outside it.
        std::os::unix::fs::symlink("/etc/hostname", tmp.path().join("configs/host")).unwrap();
        assert!(root.read(&RelPath::parse("host").unwrap()).is_err());
        let mut over = FileTree::new();
        over.insert(RelPath::parse("host").unwrap(), "mine", 0o644);
        root.write_tree(&over).unwrap();
        assert_eq!(
            root.read(&RelPath::parse("host").unwrap()).unwrap(),
            b"mine"
        );
        assert_ne!(std::fs::read("/etc/hostname").unwrap_or_default(), b"mine");
    }
}
