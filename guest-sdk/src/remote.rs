//! Remote repositories, reached through the host. Only resolvers may import these.
//!
//! The host checks every URL against the extension's granted hosts before any traffic,
//! attaches credentials itself, and runs the transfer: the guest never opens a socket and
//! never sees a token. A URL outside the grant comes back as [`FetchError::Denied`].
//!
//! In a native build there is no host, so both functions answer `Denied` without doing
//! anything; keep the logic you want to unit-test in functions that take the refs as input
//! (as [`crate::git::pick_revision`] does).

use crate::types::{FetchError, RemoteRef};

/// The refs the repository at `url` advertises (what `git ls-remote` prints).
pub fn list_refs(url: &str) -> Result<Vec<RemoteRef>, FetchError> {
    if cfg!(target_arch = "wasm32") {
        crate::bindings::list_refs(url)
    } else {
        Err(not_in_host())
    }
}

/// Checks out `revision` (a full commit sha) of the repository at `url` into the destination
/// directory [`crate::DEST`]; with `subdir`, only that directory's content lands there.
pub fn checkout(url: &str, revision: &str, subdir: Option<&str>) -> Result<(), FetchError> {
    if cfg!(target_arch = "wasm32") {
        crate::bindings::checkout(url, revision, subdir)
    } else {
        Err(not_in_host())
    }
}

fn not_in_host() -> FetchError {
    FetchError::Denied("remote access exists only inside the Molecule host".to_owned())
}
