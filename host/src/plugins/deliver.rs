//! The atomic plugin swap inside a workspace's `/configs`, composed from runtime primitives so
//! Docker and the process runtime behave alike:
//!
//! 1. stage the new tree into `plugins/.staging/<name>.<stamp>`;
//! 2. move the live copy (if any) to `plugins/.previous/<name>.<stamp>`;
//! 3. rename the staged tree to `plugins/<name>`;
//! 4. write `plugins/<name>/.complete`;
//! 5. delete the snapshot.
//!
//! Every step rolls back what the earlier ones did, so the live plugin is always either the old
//! or the new version, complete (the agent only loads directories carrying `.complete`).

use std::sync::Arc;

use uuid::Uuid;

use crate::runtime::{ContainerRuntime, RuntimeError};
use crate::safefs::{FileTree, RelPath};

/// Where a workspace's plugins live, below its configs root.
pub const PLUGINS_DIR: &str = "plugins";
/// The marker the agent requires before it loads a plugin directory.
pub const COMPLETE: &str = ".complete";
pub const STAGING: &str = "plugins/.staging";
pub const PREVIOUS: &str = "plugins/.previous";

/// Whether `listing` (of `plugins/`, at least two levels deep) holds the `.complete` marker of
/// the plugin `name`.
pub fn is_marked(listing: &[crate::safefs::ListedFile], name: &str) -> bool {
    let marker = format!("{PLUGINS_DIR}/{name}/{COMPLETE}");
    listing.iter().any(|f| f.path == marker)
}

/// A delivery step, for fault injection in tests and for error reports.
pub use crate::config::faults::DeliveryStep as Step;

/// Why a delivery failed, and what state it left.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Nothing changed: the live plugin is untouched.
    #[error("the {} step failed; the installed plugin is unchanged: {error}", step.as_str())]
    RolledBack { step: Step, error: RuntimeError },
    /// The swap failed and so did moving the previous copy back.
    #[error(
        "the swap failed ({swap}) and restoring the previous copy failed too ({restore}); the previous copy is at /configs/{previous}"
    )]
    RestoreFailed {
        swap: RuntimeError,
        restore: RuntimeError,
        previous: String,
    },
    /// The new content is live but unmarked, so the agent does not load it yet.
    #[error(
        "the new version is in place but its .complete marker could not be written ({error}); write /configs/plugins/{name}/.complete or reinstall"
    )]
    MarkerFailed { name: String, error: RuntimeError },
}

impl DeliveryError {
    /// What the caller may read: the state left behind and how to recover, without the
    /// runtime's own error text (which stays in the log).
    pub fn public(&self) -> String {
        match self {
            DeliveryError::RolledBack { step, .. } => format!(
                "the {} step failed; the installed plugin is unchanged",
                step.as_str()
            ),
            DeliveryError::RestoreFailed { previous, .. } => format!(
                "the swap failed and restoring the previous copy failed too; it is at /configs/{previous}"
            ),
            DeliveryError::MarkerFailed { name, .. } => format!(
                "the new version is in place but its .complete marker could not be written; write /configs/plugins/{name}/.complete or reinstall"
            ),
        }
    }
}

/// A fault to inject at one step (tests only; see `Config::faults`).
pub type Fault = Option<Step>;

fn injected(fault: Fault, step: Step) -> Result<(), RuntimeError> {
    if fault == Some(step) {
        return Err(RuntimeError::Failed(format!(
            "injected fault at {}",
            step.as_str()
        )));
    }
    Ok(())
}

fn rel(path: String) -> RelPath {
    RelPath::parse(&path).expect("plugin paths are built from validated names")
}

/// Swaps `tree` in as plugin `name`. `live_exists` says whether there is a live copy to keep
/// as the rollback point.
pub async fn swap(
    runtime: &Arc<dyn ContainerRuntime>,
    id: Uuid,
    name: &str,
    tree: &FileTree,
    live_exists: bool,
    fault: Fault,
) -> Result<(), DeliveryError> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ").to_string();
    let staged = rel(format!("{STAGING}/{name}.{stamp}"));
    let previous = rel(format!("{PREVIOUS}/{name}.{stamp}"));
    let live = rel(format!("plugins/{name}"));

    // 1. Stage.
    let mut staged_tree = FileTree::new();
    for file in tree.files() {
        if file.path.as_str() == COMPLETE {
            continue;
        }
        staged_tree.insert(
            staged.join(file.path.as_str()).expect("a valid path"),
            file.data.clone(),
            file.mode,
        );
    }
    let stage = async {
        injected(fault, Step::Stage)?;
        runtime.write_files(id, &staged_tree).await.map(drop)
    };
    if let Err(error) = stage.await {
        discard(runtime, id, &staged).await;
        return Err(DeliveryError::RolledBack {
            step: Step::Stage,
            error,
        });
    }

    // 2. Snapshot the live copy.
    if live_exists {
        let snapshot = async {
            injected(fault, Step::Snapshot)?;
            runtime.rename_path(id, &live, &previous).await
        };
        if let Err(error) = snapshot.await {
            discard(runtime, id, &staged).await;
            return Err(DeliveryError::RolledBack {
                step: Step::Snapshot,
                error,
            });
        }
    }

    // 3. Swap.
    let swapped = async {
        injected(fault, Step::Swap)?;
        runtime.rename_path(id, &staged, &live).await
    };
    if let Err(swap) = swapped.await {
        discard(runtime, id, &staged).await;
        if live_exists {
            // The live copy was moved away in step 2; whatever a failed rename left in its place
            // must not block the way back.
            discard(runtime, id, &live).await;
            if let Err(restore) = runtime.rename_path(id, &previous, &live).await {
                return Err(DeliveryError::RestoreFailed {
                    swap,
                    restore,
                    previous: previous.to_string(),
                });
            }
        }
        return Err(DeliveryError::RolledBack {
            step: Step::Swap,
            error: swap,
        });
    }

    // 4. Mark complete.
    let mut marker = FileTree::new();
    marker.insert(
        live.join(COMPLETE).expect("a valid path"),
        "installed\n",
        0o644,
    );
    let marked = async {
        injected(fault, Step::Marker)?;
        runtime.write_files(id, &marker).await.map(drop)
    };
    if let Err(error) = marked.await {
        return Err(DeliveryError::MarkerFailed {
            name: name.to_owned(),
            error,
        });
    }

    // 5. The snapshot is no longer needed.
    if live_exists {
        discard(runtime, id, &previous).await;
    }
    Ok(())
}

async fn discard(runtime: &Arc<dyn ContainerRuntime>, id: Uuid, path: &RelPath) {
    match runtime.remove_path(id, path).await {
        Ok(_) | Err(RuntimeError::NotFound) => {}
        Err(err) => {
            tracing::warn!(workspace_id = %id, path = %path, error = %err, "cleaning up after a plugin delivery failed; the staging sweeper will retry")
        }
    }
}
