//! The host's one symlink-refusing tree walk, for trees the host itself made on its own disk
//! (a resolver's scratch checkout, a call's destination) and must not trust: every entry is
//! read with `symlink_metadata`, never followed, and anything but a directory or a regular file
//! with a single link ends the walk.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

/// Why a strict walk stopped. Each carries the `/`-separated path of the entry relative to the
/// walk's root (empty for the root itself), so the caller can word its own error.
#[derive(Debug)]
pub enum WalkError {
    /// Listing a directory (`what` is `"listing"`) or reading an entry (`"reading"`) failed.
    Io {
        what: &'static str,
        rel: String,
        error: io::Error,
    },
    /// The entry is nested deeper than the walk allows.
    TooDeep { rel: String, max_depth: usize },
    /// A symbolic link: never followed.
    Symlink(String),
    /// A regular file with more than one link.
    HardLink(String),
    /// Neither a directory nor a regular file (a socket, a device, a FIFO).
    Special(String),
}

/// What a strict walk visits: a directory before what it holds, then its entries in name order.
#[derive(Debug)]
pub enum Entry<'a> {
    Dir {
        path: &'a Path,
        rel: &'a str,
    },
    File {
        path: &'a Path,
        rel: &'a str,
        meta: &'a fs::Metadata,
    },
}

/// Walks the tree under `root` (the root itself is not visited), calling `visit` for every
/// directory and regular file, and stops at the first entry that is a link, a special file or
/// deeper than `max_depth` (a file at `a/b/c` has depth 3), or at the first error `visit`
/// returns.
pub fn walk_strict<E: From<WalkError>>(
    root: &Path,
    max_depth: usize,
    visit: &mut impl FnMut(Entry<'_>) -> Result<(), E>,
) -> Result<(), E> {
    walk_dir(root, "", 0, max_depth, visit)
}

fn walk_dir<E: From<WalkError>>(
    dir: &Path,
    rel: &str,
    depth: usize,
    max_depth: usize,
    visit: &mut impl FnMut(Entry<'_>) -> Result<(), E>,
) -> Result<(), E> {
    let mut entries = fs::read_dir(dir)
        .and_then(|read| read.collect::<io::Result<Vec<_>>>())
        .map_err(|error| WalkError::Io {
            what: "listing",
            rel: rel.to_owned(),
            error,
        })?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let shown = entry.file_name().to_string_lossy().into_owned();
        let rel = if rel.is_empty() {
            shown
        } else {
            format!("{rel}/{shown}")
        };
        let depth = depth + 1;
        if depth > max_depth {
            return Err(WalkError::TooDeep { rel, max_depth }.into());
        }
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).map_err(|error| WalkError::Io {
            what: "reading",
            rel: rel.clone(),
            error,
        })?;
        let kind = meta.file_type();
        if kind.is_symlink() {
            return Err(WalkError::Symlink(rel).into());
        } else if kind.is_dir() {
            visit(Entry::Dir {
                path: &path,
                rel: &rel,
            })?;
            walk_dir(&path, &rel, depth, max_depth, visit)?;
        } else if kind.is_file() {
            if meta.nlink() > 1 {
                return Err(WalkError::HardLink(rel).into());
            }
            visit(Entry::File {
                path: &path,
                rel: &rel,
                meta: &meta,
            })?;
        } else {
            return Err(WalkError::Special(rel).into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(root: &Path, max_depth: usize) -> Result<Vec<String>, WalkError> {
        let mut seen = Vec::new();
        walk_strict(root, max_depth, &mut |entry| {
            seen.push(match entry {
                Entry::Dir { rel, .. } => format!("{rel}/"),
                Entry::File { rel, meta, .. } => format!("{rel} {}", meta.len()),
            });
            Ok::<_, WalkError>(())
        })?;
        Ok(seen)
    }

    #[test]
    fn a_directory_comes_before_its_entries_and_entries_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("b/c")).unwrap();
        fs::write(dir.path().join("b/c/x"), "xyz").unwrap();
        fs::write(dir.path().join("a"), "1").unwrap();
        assert_eq!(
            walk(dir.path(), 3).unwrap(),
            ["a 1", "b/", "b/c/", "b/c/x 3"]
        );
        assert!(matches!(
            walk(dir.path(), 2),
            Err(WalkError::TooDeep { rel, max_depth: 2 }) if rel == "b/c/x"
        ));
    }

    #[test]
    fn links_and_special_files_stop_the_walk_and_are_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("d")).unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("d/etc")).unwrap();
        assert!(matches!(walk(dir.path(), 8), Err(WalkError::Symlink(rel)) if rel == "d/etc"));

        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("f"), "x").unwrap();
        fs::hard_link(dir.path().join("f"), dir.path().join("g")).unwrap();
        assert!(matches!(walk(dir.path(), 8), Err(WalkError::HardLink(rel)) if rel == "f"));

        let dir = tempfile::tempdir().unwrap();
        let socket = std::os::unix::net::UnixListener::bind(dir.path().join("s")).unwrap();
        assert!(matches!(walk(dir.path(), 8), Err(WalkError::Special(rel)) if rel == "s"));
        drop(socket);
    }
}
