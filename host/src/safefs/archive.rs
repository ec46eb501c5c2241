//! Reading the tar archives container runtimes return (Docker's archive API, a Pod's `tar`).

use std::io::Read as _;

use super::{MAX_TREE_BYTES, RelPath, SafeFsError};

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
