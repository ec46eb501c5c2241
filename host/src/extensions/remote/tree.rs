//! The checked-out tree: checked against the quotas and copied into the destination with the
//! safefs strict walk, which refuses symbolic links, hard links and special files.

use crate::safefs::walk::{Entry, WalkError, walk_strict};

use super::*;

/// Checks the tree under `root` against the quotas: only directories and regular files with a
/// single link each, within the file count, total size and depth.
pub fn inspect_tree(root: &Path, quotas: &FetchQuotas) -> Result<(), FetchError> {
    walk_checked(root, None, quotas)
}

/// Copies the tree under `from` into `to` with the checks of [`inspect_tree`]. Nothing in `to`
/// is followed or overwritten: every directory is created and every file created new, so an
/// entry that already exists there (a link the guest made, say) fails the copy.
pub(super) fn copy_tree(from: &Path, to: &Path, quotas: &FetchQuotas) -> Result<(), FetchError> {
    walk_checked(from, Some(to), quotas)
}

/// The safefs strict walk under `root` with the quotas counted on the way, copying into
/// `copy_to` when given.
pub(super) fn walk_checked(
    root: &Path,
    copy_to: Option<&Path>,
    quotas: &FetchQuotas,
) -> Result<(), FetchError> {
    let (mut files, mut bytes) = (0u64, 0u64);
    walk_strict(root, quotas.max_depth, &mut |entry| {
        match entry {
            Entry::Dir { rel, .. } => {
                if let Some(to) = copy_to {
                    fs::create_dir(to.join(rel)).map_err(|e| write_error(rel, &e))?;
                }
            }
            Entry::File { path, rel, meta } => {
                files += 1;
                bytes = bytes.saturating_add(meta.len());
                over_quota(files, bytes, quotas)?;
                if let Some(to) = copy_to {
                    copy_file(path, &to.join(rel), meta.mode(), rel)?;
                }
            }
        }
        Ok(())
    })
}

impl From<WalkError> for FetchError {
    fn from(err: WalkError) -> Self {
        match err {
            WalkError::Io { what, rel, error } => tree_error(what, &rel, &error),
            WalkError::TooDeep { rel, max_depth } => {
                FetchError::TooLarge(format!("`{rel}` is nested deeper than {max_depth} levels"))
            }
            WalkError::Symlink(rel) => FetchError::Denied(format!(
                "`{rel}` is a symbolic link; links in fetched trees are refused"
            )),
            WalkError::HardLink(rel) => FetchError::Denied(format!(
                "`{rel}` is a hard link; links in fetched trees are refused"
            )),
            WalkError::Special(rel) => {
                FetchError::Denied(format!("`{rel}` is neither a regular file nor a directory"))
            }
        }
    }
}

pub(super) fn copy_file(from: &Path, to: &Path, mode: u32, rel: &str) -> Result<(), FetchError> {
    let mut input = fs::File::open(from).map_err(|e| tree_error("reading", rel, &e))?;
    let mut output = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)
        .map_err(|e| write_error(rel, &e))?;
    io::copy(&mut input, &mut output).map_err(|e| write_error(rel, &e))?;
    let mode = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
    output
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| write_error(rel, &e))?;
    Ok(())
}

pub(super) fn tree_error(what: &str, rel: &str, e: &io::Error) -> FetchError {
    FetchError::Upstream(format!("{what} `{rel}` failed ({})", e.kind()))
}

pub(super) fn write_error(rel: &str, e: &io::Error) -> FetchError {
    if e.kind() == io::ErrorKind::AlreadyExists {
        FetchError::Denied(format!(
            "`{rel}` already exists in the destination; a checkout never overwrites"
        ))
    } else {
        FetchError::Upstream(format!("writing `{rel}` failed ({})", e.kind()))
    }
}
