//! [`RootDir`]: a directory on the host holding a workspace's files, every operation confined by
//! cap-std, and the handing over of what it creates to an agent's uid without following links.

use std::io::{self, Read as _};
use std::os::fd::{AsFd as _, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use cap_std::fs::{Dir, PermissionsExt as _};

use super::template::walk_template;
use super::{
    FileTree, ListedFile, MAX_TREE_BYTES, MAX_WALK_DEPTH, RelPath, SKIPPED_NAMES, SafeFsError,
    TarEntry, escape_or,
};

/// What an entry of a [`RootDir`] is, its final symlink not followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File,
    Symlink,
    /// A device, FIFO or socket.
    Other,
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

    /// What `path` itself is, without following a final symlink; `None` when nothing is there.
    pub fn entry_kind(&self, path: &RelPath) -> Result<Option<EntryKind>, SafeFsError> {
        match self.dir.symlink_metadata(path.as_str()) {
            Ok(meta) => {
                let kind = meta.file_type();
                Ok(Some(if kind.is_symlink() {
                    EntryKind::Symlink
                } else if kind.is_dir() {
                    EntryKind::Dir
                } else if kind.is_file() {
                    EntryKind::File
                } else {
                    EntryKind::Other
                }))
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(escape_or(err, path)),
        }
    }

    /// The whole tree of this root, collected like [`collect_template`](super::collect_template):
    /// a symlink is followed only while it stays inside this root.
    pub fn collect_all(&self) -> Result<FileTree, SafeFsError> {
        let mut tree = FileTree::new();
        let mut total = 0u64;
        walk_template(&self.dir, None, 0, &mut tree, &mut total)?;
        Ok(tree)
    }

    /// Creates the directory `path`; fails when anything already exists there.
    pub fn create_dir(&self, path: &RelPath) -> Result<(), SafeFsError> {
        self.dir
            .create_dir(path.as_str())
            .map_err(|e| escape_or(e, path))?;
        self.give_path(Path::new(path.as_str()))?;
        Ok(())
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

    /// Every directory and regular file under `at` (the root when `None`) as archive entries
    /// named relative to the root, a file with its content: what a listing shows, down to the
    /// walk limit.
    pub fn entries(&self, at: Option<&RelPath>) -> Result<Vec<TarEntry>, SafeFsError> {
        let mut out = Vec::new();
        for entry in self.list(at, MAX_WALK_DEPTH)? {
            let path = RelPath::parse(&entry.path)?;
            let data = if entry.dir {
                None
            } else {
                Some(self.read(&path)?)
            };
            out.push((path, data));
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
