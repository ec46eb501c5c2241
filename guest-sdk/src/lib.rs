//! The guest SDK for Molecule host extensions.
//!
//! Three decisions of the host live in sandboxed WebAssembly components that operators swap at
//! runtime: **fetch resolvers**, **hot-reload classifiers** and **restart policies**. Each is a
//! world of the WIT package `molecule:plugin@0.1.1`; this crate gives each world a Rust trait
//! with sensible defaults and an export macro, so an extension is a plain type, one `impl` and
//! one macro call, and never touches generated bindings.
//!
//! ```rust,standalone_crate
//! use molecule_guest::{ChangeKind, Classifier, FileChange, Reload, changes};
//!
//! /// Edits of existing Markdown files reload live; anything else restarts the agent.
//! struct DocsAreHot;
//!
//! impl Classifier for DocsAreHot {
//!     fn classify(changes: &[FileChange]) -> Reload {
//!         let offending = changes::first_offending(changes, |c| {
//!             c.kind == ChangeKind::Modified && c.path.ends_with(".md")
//!         });
//!         match offending {
//!             None => Reload::Hot,
//!             Some(c) => Reload::cold(format!("{} is not an edited Markdown file", c.path)),
//!         }
//!     }
//! }
//!
//! molecule_guest::export_classifier!(DocsAreHot);
//! # fn main() {
//! #     let edit = FileChange::modified("docs/a.md", "sha256:1", "sha256:2");
//! #     assert_eq!(DocsAreHot::classify(&[edit]), Reload::Hot);
//! # }
//! ```
//!
//! Build it with `cargo build --target wasm32-wasip2 --release` from a `cdylib` crate; the
//! `.wasm` that comes out is a component the host accepts. The README beside this crate walks
//! through installing and activating one.
//!
//! The host runs every call in a fresh instance, so the traits have no `self`: an extension
//! keeps no state between calls. Everything here also builds natively, so the logic can be
//! unit-tested with `cargo test`; there the host imports ([`log`], [`remote`]) fall back to
//! stderr and to `Denied`.

mod bindings;
mod export;
mod types;

pub mod changes;
pub mod default_policy;
pub mod git;
pub mod log;
pub mod remote;
pub mod tree;

pub use types::{
    Change, ChangeKind, Changes, Decision, DriftApplied, FetchError, Fetched, FileChange,
    PluginInstalled, Reload, RemoteRef, Source, Trigger, UpdateTier, WorkspaceInfo,
};

/// The version of the WIT package this SDK builds against; the host reads it from the
/// component's import and export names.
pub const API_VERSION: &str = "0.1.1";

/// Where a resolver writes what it fetches: the per-call staging directory, the guest's only
/// writable preopen.
pub const DEST: &str = "/dest";

/// Where the local plugin registry appears, read-only, for a resolver granted it.
pub const REGISTRY: &str = "/registry";

/// A hot-reload classifier: can the running agent pick these file changes up, or must it
/// restart? Export an implementation with [`export_classifier!`].
///
/// The host calls it after staging a plugin update, with every file that differs between the
/// live tree and the staged one. If the component traps, overruns its deadline or answers
/// something malformed, the host treats the answer as cold.
pub trait Classifier {
    /// The default knows nothing about the files, so it says cold: claiming a hot reload is
    /// only safe for a classifier that looked.
    fn classify(changes: &[FileChange]) -> Reload {
        let count = changes.len();
        Reload::cold(format!(
            "{count} changed file(s); this classifier restarts on every change"
        ))
    }

    /// What the host calls. The default copies every change into a [`FileChange`] and asks
    /// [`Classifier::classify`]; override this one instead to read the changes where they are
    /// (the host may send thousands, and a copy costs a few allocations each).
    fn classify_changes(changes: Changes<'_>) -> Reload {
        Self::classify(&changes.to_vec())
    }
}

/// A restart policy: what to do with a running workspace when something changed. Export an
/// implementation with [`export_restart_policy!`].
///
/// The host clamps every decision (minimum delay, maximum restarts per window), and falls back
/// to [`default_policy::decide`] if the component fails.
pub trait RestartPolicy {
    /// The default is the built-in policy, [`default_policy::decide`]. Override it and call
    /// that function for the cases you do not want to change.
    fn decide(workspace: &WorkspaceInfo, trigger: &Trigger) -> Decision {
        default_policy::decide(workspace, trigger)
    }
}

/// A fetch resolver: brings plugin and template sources into [`DEST`]. Export an
/// implementation with [`export_resolver!`].
///
/// A resolver sees only its preopens: [`DEST`] read-write and, where granted, [`REGISTRY`]
/// read-only. For remote sources it asks the host through [`remote`]; it never opens a socket
/// and never sees a credential.
pub trait Resolver {
    /// The schemes this resolver serves, e.g. `&["github", "git"]`. The operator activates it
    /// in the slot `resolver:<scheme>` for one of them.
    fn schemes() -> &'static [&'static str];

    /// Writes the source's files into [`DEST`] and says what was fetched: the plugin name and
    /// the exact revision (a commit sha or a content digest).
    fn fetch(source: &Source) -> Result<Fetched, FetchError>;

    /// The current upstream revision of the source, for drift detection; writes nothing. The
    /// default declines, which tells the host this resolver cannot track drift.
    fn resolve_revision(source: &Source) -> Result<String, FetchError> {
        Err(FetchError::Denied(format!(
            "the resolver for `{}` does not report revisions, so {source} cannot be tracked for drift",
            source.scheme
        )))
    }
}

/// What the export macros expand to call. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::molecule::plugin as wit;
    pub use wit_bindgen;

    use crate::{Changes, Classifier, Resolver, RestartPolicy, Source};

    pub fn classify<T: Classifier>(changes: wit::types::PackedChanges) -> wit::types::Reload {
        T::classify_changes(Changes::packed(&changes.text, &changes.changes)).into()
    }

    pub fn decide<T: RestartPolicy>(
        workspace: wit::types::WorkspaceInfo,
        trigger: wit::types::Trigger,
    ) -> wit::types::Decision {
        T::decide(&workspace.into(), &trigger.into()).into()
    }

    pub fn schemes<T: Resolver>() -> Vec<String> {
        T::schemes().iter().map(|s| (*s).to_owned()).collect()
    }

    pub fn fetch<T: Resolver>(
        source: wit::types::Source,
    ) -> Result<wit::types::Fetched, wit::types::FetchError> {
        T::fetch(&Source::from(source))
            .map(Into::into)
            .map_err(Into::into)
    }

    pub fn resolve_revision<T: Resolver>(
        source: wit::types::Source,
    ) -> Result<String, wit::types::FetchError> {
        T::resolve_revision(&Source::from(source)).map_err(Into::into)
    }
}

// `__molecule_generate_world!`, written by build.rs with the absolute path of the WIT package.
include!(concat!(env!("OUT_DIR"), "/generate_world.rs"));
