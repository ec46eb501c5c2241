//! Template trees: a cap-std walk that follows a symlink only while it stays inside the root,
//! with quotas on files and bytes and LF line endings for scripts.

use std::path::Path;

use cap_std::fs::{Dir, PermissionsExt as _};

use super::{
    FileTree, MAX_TREE_BYTES, MAX_TREE_FILES, MAX_WALK_DEPTH, NORMALISED_EXTENSIONS, RelPath,
    SafeFsError,
};

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

pub(super) fn walk_template(
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

pub(super) fn normalise_line_endings(data: Vec<u8>) -> Vec<u8> {
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
