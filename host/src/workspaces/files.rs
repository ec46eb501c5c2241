//! A workspace's template files (`/configs`): listed, read and written through the runtime, in
//! the running agent or, when it is stopped, in its stored files. Every successful change asks
//! the restart policy what to do with a `files-written` trigger.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::lifecycle::{self, RestartOutcome};
use super::{WorkspaceError, get_live};
use crate::extensions::types::Trigger;
use crate::runtime::{CONFIGS_ROOT, FILE_ROOTS, RuntimeError, WriteTarget};
use crate::safefs::{FileTree, ListedFile, RelPath};
use crate::services::Services;

/// Most files one replace may carry.
pub const MAX_REPLACE_FILES: usize = 200;
/// Largest single file written through the API.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;
/// The token file the host writes; never read, written or deleted through the files API.
const TOKEN_FILE: &str = ".auth_token";

/// Errors of file operations.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("{0}")]
    Invalid(&'static str),
    #[error("too many files ({0}), max 200")]
    TooMany(usize),
    #[error("the workspace token file is managed by the host")]
    Reserved,
}

impl From<crate::store::StoreError> for FilesError {
    fn from(err: crate::store::StoreError) -> Self {
        FilesError::Workspace(WorkspaceError::Store(err))
    }
}

/// The outcome of a write: where it landed and what the restart policy decided.
#[derive(Debug, Clone)]
pub struct Written {
    pub target: WriteTarget,
    pub restart: RestartOutcome,
}

fn check_root(root: Option<&str>) -> Result<&str, FilesError> {
    let root = root.unwrap_or(CONFIGS_ROOT);
    FILE_ROOTS
        .iter()
        .find(|r| **r == root)
        .copied()
        .ok_or(FilesError::Invalid(
            "root must be one of: /configs, /workspace, /home, /plugins",
        ))
}

/// Refuses the token file and any path through it: on Docker, writing `.auth_token/x` would
/// make the archive API replace the token file with a directory.
fn check_writable(path: &RelPath) -> Result<(), FilesError> {
    if path.as_str().split('/').next() == Some(TOKEN_FILE) {
        return Err(FilesError::Reserved);
    }
    Ok(())
}

fn runtime(
    svc: &Services,
) -> Result<&std::sync::Arc<dyn crate::runtime::ContainerRuntime>, FilesError> {
    svc.lifecycle
        .runtime()
        .ok_or(FilesError::Runtime(RuntimeError::Offline))
}

/// `GET /workspaces/:id/files`.
pub async fn list(
    svc: &Services,
    id: Uuid,
    root: Option<&str>,
    path: Option<&RelPath>,
    depth: usize,
) -> Result<Vec<ListedFile>, FilesError> {
    get_live(svc, id).await?;
    let root = check_root(root)?;
    if !(1..=5).contains(&depth) {
        return Err(FilesError::Invalid("depth must be 1-5"));
    }
    match runtime(svc)?.list_files(id, root, path, depth).await {
        Err(RuntimeError::NotFound) => Ok(Vec::new()),
        other => Ok(other?),
    }
}

/// `GET /workspaces/:id/files/*path`.
pub async fn read(
    svc: &Services,
    id: Uuid,
    root: Option<&str>,
    path: &RelPath,
) -> Result<Vec<u8>, FilesError> {
    get_live(svc, id).await?;
    let root = check_root(root)?;
    if root == CONFIGS_ROOT {
        check_writable(path)?;
    }
    Ok(runtime(svc)?.read_file(id, root, path).await?)
}

/// `PUT /workspaces/:id/files/*path`.
pub async fn write(
    svc: &Services,
    id: Uuid,
    path: RelPath,
    content: String,
) -> Result<Written, FilesError> {
    check_writable(&path)?;
    if content.len() > MAX_FILE_BYTES {
        return Err(FilesError::Invalid("file too large (max 1 MiB)"));
    }
    get_live(svc, id).await?;
    let mut tree = FileTree::new();
    let paths = vec![path.to_string()];
    tree.insert(path, content, 0o644);
    let target = runtime(svc)?.write_files(id, &tree).await?;
    after_change(svc, id, paths, target).await
}

/// `DELETE /workspaces/:id/files/*path`.
pub async fn delete(svc: &Services, id: Uuid, path: RelPath) -> Result<Written, FilesError> {
    check_writable(&path)?;
    get_live(svc, id).await?;
    let target = runtime(svc)?.remove_path(id, &path).await?;
    after_change(svc, id, vec![path.to_string()], target).await
}

/// `PUT /workspaces/:id/files`: writes up to 200 files in one delivery.
pub async fn replace(
    svc: &Services,
    id: Uuid,
    files: BTreeMap<String, String>,
) -> Result<Written, FilesError> {
    if files.len() > MAX_REPLACE_FILES {
        return Err(FilesError::TooMany(files.len()));
    }
    if files.is_empty() {
        return Err(FilesError::Invalid("files must not be empty"));
    }
    let mut tree = FileTree::new();
    for (raw, content) in files {
        let path = RelPath::parse(&raw).map_err(|_| FilesError::Invalid("invalid path"))?;
        check_writable(&path)?;
        if content.len() > MAX_FILE_BYTES {
            return Err(FilesError::Invalid("file too large (max 1 MiB)"));
        }
        tree.insert(path, content, 0o644);
    }
    get_live(svc, id).await?;
    let paths = tree.paths();
    let target = runtime(svc)?.write_files(id, &tree).await?;
    after_change(svc, id, paths, target).await
}

async fn after_change(
    svc: &Services,
    id: Uuid,
    paths: Vec<String>,
    target: WriteTarget,
) -> Result<Written, FilesError> {
    let restart = lifecycle::request_restart(svc, id, Trigger::FilesWritten(paths)).await?;
    Ok(Written { target, restart })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_file_and_every_path_through_it_are_reserved() {
        for reserved in [".auth_token", ".auth_token/x", ".auth_token/a/b"] {
            let path = RelPath::parse(reserved).unwrap();
            assert!(
                matches!(check_writable(&path), Err(FilesError::Reserved)),
                "{reserved}"
            );
        }
        for free in [
            ".auth_token2",
            "x/.auth_token",
            "config.yaml",
            ".auth_tokens/x",
        ] {
            assert!(
                check_writable(&RelPath::parse(free).unwrap()).is_ok(),
                "{free}"
            );
        }
    }
}
